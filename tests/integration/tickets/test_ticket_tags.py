"""A ticket's tags are part of its words: staff type them freely ("vip-john-smith"), so they are
held as its subject and body are, under the ticket's own key (a child of its requester's), in the
event store and in the read model, never published, and gone with the requester's erasure or
the closed ticket's purge. The API still answers with a list of strings."""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from typing import Any

import psycopg2
import pytest

from kernel import eventstore
from kernel.crypto.fields import is_encrypted
from kernel.envelope import new_envelope
from kernel.errors import Conflict
from kernel.uow import EventSourcedStore
from services.tickets import handlers, privacy, sealed
from services.tickets.domain import Ticket
from tests.integration.tickets.test_tickets_store import (
    create,
    enrol,
    snapshot,
    text_columns,
    update,
    view,
)

CANARY = "vip-canary-smith"
ERASED_TAGS = ["[erased]"]


def plaintext_places(dsn: str, needle: str) -> list[tuple[str, str]]:
    """(table, column) of every text column of the database where ``needle`` appears."""
    found = []
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for table, column in text_columns(dsn):
                cur.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s',  # noqa: S608
                    (f"%{needle}%",),
                )
                if cur.fetchone()[0]:
                    found.append((table, column))
    finally:
        conn.close()
    return found


def listed(store: EventSourcedStore, tenant: str) -> dict[str, list[str]]:
    with store.unit_of_work() as uow:
        page = handlers.list_tickets(uow, tenant, {}, 50, None)
    return {item["id"]: item["tags"] for item in page["items"]}


def published(store: EventSourcedStore, routing_key: str) -> list[dict[str, Any]]:
    with store.db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE routing_key = %s ORDER BY id", (routing_key,))
        return [json.loads(body)["payload"] for (body,) in cur.fetchall()]


def answer(store: EventSourcedStore, command: str, **fields: Any) -> dict[str, Any]:
    handler = privacy.handlers_for(store.cipher)[command]
    with store.unit_of_work("retention") as uow:
        return handler(uow, {"request_id": str(uuid.uuid4()), **fields})


def test_tags_are_sealed_in_the_store_and_the_read_model_and_never_published(store, world):
    tenant = str(uuid.uuid4())
    agent, alice = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    ticket = create(store, tenant, agent, alice, tags=[CANARY, "refund"])
    assert ticket["tags"] == ["refund", CANARY]
    changed = update(store, tenant, agent, ticket, tags=[CANARY, "escalated-canary"])
    assert changed["tags"] == ["escalated-canary", CANARY]
    untagged = create(store, tenant, agent, alice, tags=[])

    # What the API answers: a list of strings, read, listed, and after a rebuild alike.
    assert view(store, tenant, ticket["id"])["tags"] == ["escalated-canary", CANARY]
    expected = {ticket["id"]: ["escalated-canary", CANARY], untagged["id"]: []}
    assert listed(store, tenant) == expected

    # Nowhere in plaintext in tickets' database: the events, the read model, the outbox.
    dsn = world.database_dsn("tickets")
    assert plaintext_places(dsn, "canary") == []
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT type, schema_version, payload FROM events WHERE type IN"
            " ('ticket_created', 'ticket_tags_changed') ORDER BY position"
        )
        events = cur.fetchall()
    assert [(t, v) for t, v, _ in events] == [
        ("ticket_created", 1),
        ("ticket_tags_changed", 2),
        ("ticket_created", 1),
    ]
    assert all(is_encrypted(p["tags"]) for _, _, p in events)
    assert events[1][2]["requester_id"] == alice
    created = published(store, "tickets.ticket_created")
    assert len(created) == 2 and not any("tags" in p for p in created)

    before = snapshot(store)
    store.rebuild("tickets", progress=False)
    assert snapshot(store) == before
    assert listed(store, tenant) == expected
    assert plaintext_places(dsn, "canary") == []


def test_tags_read_as_erased_with_the_requester_or_the_closed_tickets_purge(store):
    tenant = str(uuid.uuid4())
    agent = enrol(store, tenant, "agent")
    alice, bob = enrol(store, tenant, "contact"), enrol(store, tenant, "contact")
    hers = create(store, tenant, agent, alice, tags=[CANARY])
    his = create(store, tenant, agent, bob, tags=["bob-canary"])
    kept = create(store, tenant, agent, bob, tags=["kept"])

    assert answer(store, "erase_subject", tenant_id=tenant, subject_id=alice)["status"] == "done"
    shown = view(store, tenant, hers["id"])
    assert (shown["subject"], shown["tags"]) == ("[erased]", ERASED_TAGS)
    assert listed(store, tenant)[hers["id"]] == ERASED_TAGS
    # Nothing new is written under an erased requester's ticket; its status still moves.
    with pytest.raises(Conflict):
        update(store, tenant, agent, hers, tags=["new"])
    assert update(store, tenant, agent, hers, status="open")["tags"] == ERASED_TAGS

    update(store, tenant, agent, his, status="open")
    update(store, tenant, agent, his, status="solved")
    update(store, tenant, agent, his, status="closed")
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    purged = answer(
        store, "purge_category", tenant_id=tenant, category="closed_tickets", before=tomorrow
    )
    assert purged["detail"] == "1 closed tickets' keys shredded"
    assert view(store, tenant, his["id"])["tags"] == ERASED_TAGS

    expected = {hers["id"]: ERASED_TAGS, his["id"]: ERASED_TAGS, kept["id"]: ["kept"]}
    assert listed(store, tenant) == expected
    store.rebuild("tickets", progress=False)
    assert listed(store, tenant) == expected


# --- tags an older release wrote in plaintext ------------------------------------------------


def legacy_ticket(store: EventSourcedStore, tenant: str, requester: str, tags: list[str]) -> str:
    """A ticket as a release before tags were sealed wrote it: ``ticket_created`` with its subject
    and body under the ticket's key and its tags in plaintext, then a v1 tag change."""
    ticket_id = str(uuid.uuid4())
    stream = Ticket.stream_id_for(ticket_id)
    created = store.cipher.encrypt_fields(
        {
            "ticket_id": ticket_id,
            "tenant_id": tenant,
            "requester_id": requester,
            "subject": "An old ticket",
            "body": "From before",
            "priority": "normal",
            "tags": [],
            "redactions": 0,
        },
        ("subject", "body"),
        tenant,
        ticket_id,
        parent_id=requester,
    )
    changed = {"ticket_id": ticket_id, "tenant_id": tenant, "tags": tags}
    events = [
        new_envelope(
            type=type_,
            schema_version=1,
            source="tickets",
            stream_id=stream,
            stream_version=n,
            tenant_id=uuid.UUID(tenant),
            actor_id=None,
            payload=payload,
        )
        for n, (type_, payload) in enumerate(
            [("ticket_created", created), ("ticket_tags_changed", changed)], start=1
        )
    ]
    with store.db.transaction() as cur:
        eventstore.append(cur, stream, 0, events)
    return ticket_id


def test_tags_an_older_release_wrote_in_plaintext_are_sealed_on_start(store, world):
    tenant = str(uuid.uuid4())
    agent, alice, bob = (
        enrol(store, tenant, "agent"),
        enrol(store, tenant, "contact"),
        enrol(store, tenant, "contact"),
    )
    old = legacy_ticket(store, tenant, alice, ["old-canary"])
    gone = legacy_ticket(store, tenant, bob, ["gone-canary"])
    # A row an older replica wrote during the upgrade: tags in the plaintext column.
    during = create(store, tenant, agent, alice, tags=["during"])
    store.rebuild("tickets", progress=False)  # the read model of the plaintext events
    with store.db.transaction() as cur:
        cur.execute("UPDATE tickets SET tags = '{during-canary}' WHERE id = %s", (during["id"],))
    assert store.cipher.keystore.shred_subject(bob, tenant)

    # The read model never copies plaintext tags: unsealed, they read as none until sealed.
    assert listed(store, tenant)[old] == []
    units = functools.partial(store.unit_of_work, "tickets")
    # In batches of one, past the erased requester's ticket, whose key is gone.
    assert sealed.seal_all(units, limit=1) == 2
    assert sealed.seal_all(units) == 0

    expected = {old: ["old-canary"], gone: ERASED_TAGS, during["id"]: ["during"]}
    assert listed(store, tenant) == expected
    store.rebuild("tickets", progress=False)
    assert listed(store, tenant) == expected
    # The read model and the outbox hold none of them; only the events the older release
    # appended still do (append-only: they cannot be rewritten).
    assert plaintext_places(world.database_dsn("tickets"), "canary") == [("events", "payload")]
    with store.unit_of_work() as uow:
        history = uow.load(Ticket.stream_id_for(old))
    assert [(e.type, e.schema_version, e.payload["tags"]) for e in history] == [
        ("ticket_created", 1, []),
        ("ticket_tags_changed", 2, ["old-canary"]),  # the v1 change, upcast
        ("ticket_tags_changed", 2, ["old-canary"]),  # sealed under the ticket's key
    ]
    assert history[1].payload["requester_id"] is None
    assert history[2].payload["requester_id"] == alice
