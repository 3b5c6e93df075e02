"""Tags an older release wrote in plaintext, recorded again under their tickets' keys.

Before tags were sealed, ``ticket_created`` and ``ticket_tags_changed`` (version 1) held them in
plaintext, and the read model kept them in its ``tags`` column. That column cannot be encrypted in
SQL (the keys live in another database, under a master key from configuration), so migration
0004 emptied it, and the read model never copies plaintext tags from an event. Each such ticket's
tags, read from its events, are recorded here once more as a ``ticket_tags_changed`` under the
ticket's key: the read model, and every rebuild after, then holds them sealed. A ticket whose key
is gone (its requester erased, or purged closed) has nothing left to seal: its tags read as
erased. What the older release appended keeps its plaintext: the event store is append-only.

This runs when the service starts, and on a timer for what an older replica writes into the
plaintext column during a rolling upgrade.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from kernel.crypto.primitives import KeyShredded
from kernel.uow import UnitOfWork
from services.tickets import handlers

log = logging.getLogger(__name__)

_FIRST = str(uuid.UUID(int=0))


def seal_batch(
    uow: UnitOfWork, after: str = _FIRST, limit: int = 200, plaintext_only: bool = False
) -> tuple[int, str | None]:
    """Seal the tags of up to ``limit`` tickets with an id past ``after``: (how many were
    sealed, the last id looked at, or None when no ticket is left past it).

    ``plaintext_only`` looks only at rows an older replica wrote plaintext tags into; without
    it, also at tickets whose tags were never sealed (those include tickets whose key is gone,
    which stay unsealed: hence the id to go on from).
    """
    unsealed = "tags <> '{}'" if plaintext_only else "(tags_sealed IS NULL OR tags <> '{}')"
    # Locked, and skipped when locked: a ticket being written is sealed by a later pass, and
    # this pass's appends can never lose a race with its writer.
    uow.cur.execute(
        f"SELECT id, tenant_id FROM tickets WHERE {unsealed} AND id > %s"  # noqa: S608
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (after, limit),
    )
    rows = [(str(i), str(t)) for i, t in uow.cur.fetchall()]
    if not rows:
        return 0, None
    uow.cur.execute(
        "UPDATE tickets SET tags = DEFAULT WHERE id = ANY(%s::uuid[]) AND tags <> '{}'",
        ([i for i, _ in rows],),
    )
    keystore = uow.cipher.keystore
    keystore.preload(i for i, _ in rows)
    sealed = 0
    for ticket_id, tenant_id in rows:
        if keystore.subject_key(tenant_id, ticket_id, create=False) is None:
            continue  # erased: nothing can be written under its key, nor read
        ticket = handlers.load_ticket(uow, tenant_id, ticket_id)
        ticket.seal_tags()
        try:
            uow.save(ticket, ticket.tenant_id)
        except KeyShredded:
            continue  # erased since the look above
        sealed += 1
    return sealed, rows[-1][0]


def seal_all(
    unit_of_work: Callable[[], UnitOfWork], plaintext_only: bool = False, limit: int = 200
) -> int:
    """Every ticket's plaintext tags sealed, a batch per unit of work; returns how many."""
    after: str | None = _FIRST
    total = 0
    while after is not None:
        with unit_of_work() as uow:
            sealed, after = seal_batch(uow, after, limit, plaintext_only)
        total += sealed
    if total:
        log.info("sealed the tags of %d tickets under their keys", total)
    return total
