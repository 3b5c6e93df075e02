"""Closed tickets past their retention period lose their words, with a clock the test moves:
retention learns when each ticket closed, sends the purge when the tenant's period (its own or
the default) runs out, and tickets shreds those tickets' keys. Open tickets, recent ones and the
requester's other data stay."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from kernel import privacy as protocol
from kernel.envelope import Envelope, EventRegistry
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.retention import schedules
from services.tickets import privacy
from services.tickets.events import REGISTRY
from services.tickets.projections import PROJECTIONS
from tests.integration.tickets.test_tickets_store import create, enrol, message, update, view

DAY = 86400


@pytest.fixture
def tickets(world):
    return open_store(world, "tickets", REGISTRY, PROJECTIONS, Path("services/tickets/migrations"))


@pytest.fixture
def retention(world):
    return open_store(
        world, "retention", EventRegistry(), (), Path("services/retention/migrations")
    )


def outbox(store: EventSourcedStore, routing_key: str) -> list[Envelope]:
    with store.db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE routing_key = %s ORDER BY id", (routing_key,))
        return [Envelope.from_dict(json.loads(body)) for (body,) in cur.fetchall()]


def closed_ticket(store, tenant, agent, requester):
    ticket = create(store, tenant, agent, requester)
    message(store, tenant, agent, ticket["id"], "Agent: we are on it")
    message(store, tenant, agent, ticket["id"], "Thanks!", on_behalf_of_requester=True)
    for status in ("open", "solved", "closed"):
        update(store, tenant, agent, ticket, status=status)
    return ticket


def run_purges(tickets: EventSourcedStore, retention: EventSourcedStore) -> None:
    """Deliver retention's purge commands to tickets, as its privacy queue would."""
    handlers = privacy.handlers_for(tickets.cipher)
    for command in outbox(retention, "retention.privacy_command"):
        with tickets.unit_of_work("tickets") as uow:
            protocol.handle_command(uow, "tickets", command, handlers)


def test_closed_tickets_past_the_period_read_as_erased_and_nothing_else_does(tickets, retention):
    store = tickets
    tenant, other_tenant = str(uuid.uuid4()), str(uuid.uuid4())
    agent, alice = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    other_agent = enrol(store, other_tenant, "agent")
    other_requester = enrol(store, other_tenant, "contact")
    old = closed_ticket(store, tenant, agent, alice)
    still_open = create(store, tenant, agent, alice, subject="Alice, still open")
    other = closed_ticket(store, other_tenant, other_agent, other_requester)
    # The other tenant keeps closed tickets 30 days, not the default two years.
    with retention.db.transaction() as cur:
        cur.execute(
            "INSERT INTO policies (category, tenant_id, days) VALUES ('closed_tickets', %s, 30)",
            (other_tenant,),
        )

    for event in outbox(store, "tickets.ticket_closed"):
        with retention.unit_of_work() as uow:
            schedules.learn_ticket_closed(uow, event)
    now = dt.datetime.now(dt.UTC)

    # Periods count in days of LEDGERDESK_DAY_SECONDS: here a minute, so 30 days are 30 minutes.
    with retention.unit_of_work("retention") as uow:
        assert schedules.expire_closed_tickets(uow, now + dt.timedelta(minutes=29), 60) == {}
    with retention.unit_of_work("retention") as uow:
        assert schedules.expire_closed_tickets(uow, now + dt.timedelta(minutes=31), 60) == {
            other_tenant: 1
        }
    run_purges(store, retention)
    assert view(store, other_tenant, other["id"])["subject"] == "[erased]"
    assert view(store, tenant, old["id"])["subject"] == old["subject"]

    with retention.unit_of_work("retention") as uow:
        assert schedules.expire_closed_tickets(uow, now + dt.timedelta(days=731), DAY) == {
            tenant: 1
        }
    with retention.unit_of_work("retention") as uow:  # once per ticket
        assert schedules.expire_closed_tickets(uow, now + dt.timedelta(days=800), DAY) == {}
    run_purges(store, retention)

    gone = view(store, tenant, old["id"])
    assert (gone["subject"], gone["body"], gone["status"]) == ("[erased]", "[erased]", "closed")
    assert [m["body"] for m in gone["messages"]] == ["[erased]", "[erased]"]
    # The requester is not erased: her open ticket reads, and she can raise a new one.
    assert view(store, tenant, still_open["id"])["subject"] == "Alice, still open"
    assert create(store, tenant, agent, alice, subject="Alice again")["subject"] == "Alice again"
    # A replay cannot bring the words back.
    store.rebuild("tickets", progress=False)
    assert view(store, tenant, old["id"])["body"] == "[erased]"
    assert view(store, tenant, still_open["id"])["subject"] == "Alice, still open"
    # Tickets answered each purge; a second delivery of the same command does nothing more.
    answers = outbox(store, "tickets.privacy_answered")
    assert [a.payload["detail"] for a in answers] == [
        "1 closed tickets' keys shredded",
        "1 closed tickets' keys shredded",
    ]
    run_purges(store, retention)
    assert len(outbox(store, "tickets.privacy_answered")) == 2
    # The rebuilt read model forgot which tickets were purged; a later purge finds them again
    # but destroys nothing and says so.
    purge = privacy.handlers_for(store.cipher)["purge_category"]
    with store.unit_of_work("retention") as uow:
        answer = purge(
            uow,
            {
                "tenant_id": tenant,
                "category": "closed_tickets",
                "before": (now + dt.timedelta(days=1)).isoformat(),
            },
        )
    assert answer["detail"] == "0 closed tickets' keys shredded"
    assert view(store, tenant, still_open["id"])["subject"] == "Alice, still open"
