"""Histories for the benchmarks: a subject's tickets and messages, written through the kernel.

Each ticket is one unit of work holding its creation and up to 99 messages by its requester,
so a long history is written in few transactions while every event still goes through
validation, projection, encryption under the subject's key and the outbox.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from kernel.config import Settings
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.tickets.domain import Ticket
from services.tickets.events import REGISTRY
from services.tickets.projections import PROJECTIONS

TICKETS_MIGRATIONS = Path(__file__).resolve().parent.parent / "services/tickets/migrations"


def tickets_store(settings: Settings, prepare: bool = True) -> EventSourcedStore:
    """A tickets store on ``settings``' databases (created and migrated unless ``prepare`` is
    False, when a running service owns them)."""
    return open_store(
        settings, "tickets", REGISTRY, PROJECTIONS, TICKETS_MIGRATIONS, prepare=prepare
    )


def write_history(
    store: EventSourcedStore, tenant: str, requester: str, events: int, per_ticket: int = 100
) -> None:
    """``events`` events about ``requester``: tickets they raised and messages they wrote."""
    written = 0
    while written < events:
        ticket = Ticket.create(
            tenant_id=tenant,
            requester_id=requester,
            subject="order 1234 has not arrived",
            body="where is it?",
            priority="normal",
            tags=[],
            redactions=0,
        )
        for _ in range(min(per_ticket, events - written) - 1):
            ticket.add_message(
                author_id=requester,
                author_kind="requester",
                body="and another thing",
                internal=False,
                redactions=0,
            )
        with store.unit_of_work(requester) as uow:
            written += len(uow.save(ticket, ticket.tenant_id))


def new_requester(store: EventSourcedStore, tenant: str) -> str:
    """A contact the tickets directory knows, as accounts' event would have taught it."""
    requester = str(uuid.uuid4())
    with store.db.transaction() as cur:
        cur.execute(
            "INSERT INTO directory VALUES (%s, %s, 'contact', true, 1)", (requester, tenant)
        )
    return requester
