"""The tickets store on a real database: handlers, read models, replay, shredding, card numbers.

The store is built here exactly as the tickets service builds it, in a world of this test's own;
who exists is written straight into the ``directory`` table, which is how tickets learns of
agents and contacts from accounts' events.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import psycopg2
import pytest

from kernel import eventstore
from kernel.commands import load_command
from kernel.crypto.fields import is_encrypted, is_erased
from kernel.errors import Conflict, NotFound, ValidationFailed
from kernel.uow import EventSourcedStore
from services.tickets import commands, handlers
from services.tickets.domain import Ticket
from services.tickets.events import REGISTRY

VISA, MASTERCARD, AMEX = "4111111111111111", "5555555555554444", "378282246310005"


# --- the store and its helpers ------------------------------------------------------------------


def unknown_to_accounts(tenant_id: str, subject_id: str) -> dict[str, Any]:
    raise NotFound("no such subject")


def enrol(
    store: EventSourcedStore, tenant: str, kind: str, active: bool = True, version: int = 1
) -> str:
    subject = str(uuid.uuid4())
    with store.db.transaction() as cur:
        cur.execute(
            "INSERT INTO directory (subject_id, tenant_id, kind, active, version)"
            " VALUES (%s, %s, %s, %s, %s)",
            (subject, tenant, kind, active, version),
        )
    return subject


def create(
    store: EventSourcedStore, tenant: str, agent: str, requester: str, **changes: Any
) -> dict[str, Any]:
    request = {
        "subject": f"Subject {uuid.uuid4().hex[:8]}",
        "body": f"Body {uuid.uuid4().hex[:8]}",
        "requester_id": requester,
        **changes,
    }
    # Loaded as the service loads it: a card number in a tag is refused there.
    command = load_command(commands.CreateTicketV1, request)
    with store.unit_of_work(agent) as uow:
        return handlers.create_ticket(uow, unknown_to_accounts, tenant, command)


def update(
    store: EventSourcedStore, tenant: str, agent: str, ticket: dict[str, Any], **changes: Any
) -> dict[str, Any]:
    """The change, based on the version the read model shows now."""
    command = load_command(commands.UpdateTicketV1, changes)
    version = view(store, tenant, ticket["id"])["version"]
    with store.unit_of_work(agent) as uow:
        updated = handlers.update_ticket(
            uow, unknown_to_accounts, tenant, ticket["id"], version, command
        )
    ticket.update(updated)
    return updated


def message(
    store: EventSourcedStore, tenant: str, agent: str, ticket_id: str, body: str, **flags: Any
) -> dict[str, Any]:
    command = load_command(commands.AddMessageV1, {"body": body, **flags})
    with store.unit_of_work(agent) as uow:
        return handlers.add_message(uow, tenant, ticket_id, agent, command)


def view(store: EventSourcedStore, tenant: str, ticket_id: str) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        return handlers.get_ticket(uow, tenant, ticket_id, viewer=None)


def snapshot(store: EventSourcedStore) -> dict[str, list[dict[str, Any]]]:
    """Both read models, every column of every row, in a stable order."""
    tables = {}
    with store.db.transaction() as cur:
        for table in ("tickets", "ticket_messages"):
            cur.execute(f"SELECT * FROM {table} ORDER BY id")
            names = [d.name for d in cur.description]
            tables[table] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return tables


def opened(store: EventSourcedStore, tables: dict[str, list[dict[str, Any]]]) -> dict:
    """A snapshot with the words the read models keep encrypted opened (or erased); a ticket's
    sealed tags opened as ``tags``."""
    result = {}
    for table, rows in tables.items():
        result[table] = [
            {
                **row,
                **store.cipher.open_stored(
                    row["tenant_id"],
                    {
                        **{k: row[k] for k in ("subject", "body") if k in row},
                        **({"tags": row["tags_sealed"]} if "tags_sealed" in row else {}),
                    },
                ),
            }
            for row in rows
        ]
    return result


def scalar(store: EventSourcedStore, query: str, params: tuple | None = None) -> Any:
    with store.db.transaction() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def text_columns(dsn: str) -> list[tuple[str, str]]:
    """Every column of every table that can hold text: text, varchar, json(b), arrays."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c"
                " JOIN information_schema.tables t"
                "   ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
                " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
                "   AND c.data_type IN ('text', 'character varying', 'character', 'json',"
                "                       'jsonb', 'ARRAY')"
                " ORDER BY 1, 2"
            )
            return cur.fetchall()
    finally:
        conn.close()


def places_holding(dsn: str, needles: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, needle) wherever a needle's digits appear, separators or not."""
    found = []
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for table, column in text_columns(dsn):
                for needle in needles:
                    cur.execute(
                        f'SELECT count(*) FROM "{table}"'
                        f" WHERE regexp_replace(\"{column}\"::text, '[ -]', '', 'g') LIKE %s",
                        (f"%{needle}%",),
                    )
                    if cur.fetchone()[0]:
                        found.append((table, column, needle))
    finally:
        conn.close()
    return found


def busy_world(store: EventSourcedStore) -> dict[str, Any]:
    """Two tenants, several tickets through their workflow, with every kind of message."""
    tenant, other_tenant = str(uuid.uuid4()), str(uuid.uuid4())
    agent, colleague = enrol(store, tenant, "agent"), enrol(store, tenant, "agent")
    alice, bob = enrol(store, tenant, "contact"), enrol(store, tenant, "contact")
    other_agent = enrol(store, other_tenant, "agent")
    carol = enrol(store, other_tenant, "contact")

    first = create(
        store,
        tenant,
        agent,
        alice,
        subject="Alice cannot log in",
        body="Alice says the password reset mail never arrives",
        priority="high",
        tags=["login", "email"],
    )
    message(store, tenant, agent, first["id"], "Agent: have you checked spam?")
    message(store, tenant, agent, first["id"], "Agent note: looks like a bounce", internal=True)
    message(
        store, tenant, agent, first["id"], "Alice: nothing in spam", on_behalf_of_requester=True
    )
    update(store, tenant, agent, first, status="open", assignee_id=colleague)
    update(store, tenant, colleague, first, status="pending")
    update(store, tenant, colleague, first, status="open", tags=["login"])
    update(store, tenant, colleague, first, status="solved")
    update(store, tenant, colleague, first, status="closed")

    second = create(
        store, tenant, agent, bob, subject="Bob's invoice", body="Bob wants a copy of invoice 7"
    )
    message(
        store, tenant, agent, second["id"], "Bob: and the one before", on_behalf_of_requester=True
    )
    message(store, tenant, colleague, second["id"], "Colleague: sent both")
    update(store, tenant, agent, second, assignee_id=agent, priority="low")
    update(store, tenant, agent, second, assignee_id=None)

    third = create(
        store, tenant, agent, alice, subject="Alice again", body="Alice asks about her export"
    )
    message(store, tenant, agent, third["id"], "Alice: any news?", on_behalf_of_requester=True)
    update(store, tenant, agent, third, status="open")
    update(store, tenant, agent, third, status="solved")
    update(store, tenant, agent, third, status="open")

    fourth = create(
        store, other_tenant, other_agent, carol, subject="Carol's crash", body="Carol's app crashes"
    )
    message(
        store,
        other_tenant,
        other_agent,
        fourth["id"],
        "Carol: crashing",
        on_behalf_of_requester=True,
    )
    return {
        "tenant": tenant,
        "other_tenant": other_tenant,
        "agent": agent,
        "colleague": colleague,
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "tickets": [first, second, third, fourth],
    }


# --- replay -------------------------------------------------------------------------------------


def test_rebuilding_by_replay_gives_exactly_the_same_read_model(store):
    made = busy_world(store)
    before = snapshot(store)
    assert len(before["tickets"]) == 4 and len(before["ticket_messages"]) == 7

    first = view(store, made["tenant"], made["tickets"][0]["id"])
    assert (first["status"], first["assignee_id"], first["tags"]) == (
        "closed",
        made["colleague"],
        ["login"],
    )
    assert [m["author_kind"] for m in first["messages"]] == ["agent", "agent", "requester"]

    applied = store.rebuild("tickets", progress=False)
    with store.db.transaction() as cur:
        head = eventstore.head_position(cur)
        cur.execute("SELECT position FROM projection_state WHERE name = 'tickets'")
        assert cur.fetchone()[0] == head
    assert applied == head  # every tickets event is a read-model event

    after = snapshot(store)
    for table in ("tickets", "ticket_messages"):
        assert len(after[table]) == len(before[table])
        for old, new in zip(before[table], after[table], strict=True):
            assert new == old, table
    # And a second replay is as good as the first.
    store.rebuild("tickets", progress=False)
    assert snapshot(store) == before


def test_replay_after_a_requester_is_shredded_erases_only_their_words(store):
    made = busy_world(store)
    first, second, third, fourth = made["tickets"]
    before = opened(store, snapshot(store))

    assert store.cipher.keystore.shred_subject(made["alice"])
    # Erased before any replay: the read model holds ciphertext, so the shred is the erasure.
    assert opened(store, snapshot(store)) != before
    store.rebuild("tickets", progress=False)
    after = opened(store, snapshot(store))

    alices = {first["id"], third["id"]}
    old_tickets = {str(r["id"]): r for r in before["tickets"]}
    for row in after["tickets"]:
        old = old_tickets[str(row["id"])]
        if str(row["id"]) in alices:
            assert (row["subject"], row["body"], row["tags"]) == ("[erased]",) * 3
            assert {**row, **{k: old[k] for k in ("subject", "body", "tags")}} == old
        else:
            assert row == old
    old_messages = {str(r["id"]): r for r in before["ticket_messages"]}
    erased = 0
    for row in after["ticket_messages"]:
        old = old_messages[str(row["id"])]
        if str(row["ticket_id"]) in alices:
            # Her tickets' words go with her, the agents' replies there included: they are
            # under the ticket's key, a child of hers.
            assert row["body"] == "[erased]"
            assert {**row, "body": old["body"]} == old
            erased += 1
        else:
            assert row == old
    assert erased == sum(1 for r in before["ticket_messages"] if str(r["ticket_id"]) in alices)
    assert erased > 2
    assert len(after["ticket_messages"]) == len(before["ticket_messages"])

    # The stream itself reads as erased, and work on her tickets goes on.
    with store.unit_of_work() as uow:
        history = uow.load(Ticket.stream_id_for(first["id"]))
    assert is_erased(history[0].payload["subject"]) and is_erased(history[0].payload["body"])
    # Nothing new can be written under an erased person's ticket; its status still moves.
    with pytest.raises(Conflict):
        message(store, made["tenant"], made["agent"], third["id"], "Agent: done, closing")
    update(store, made["tenant"], made["agent"], third, status="solved")
    shown = view(store, made["tenant"], third["id"])
    assert shown["status"] == "solved" and shown["subject"] == "[erased]"
    assert all(m["body"] == "[erased]" for m in shown["messages"])
    assert view(store, made["tenant"], second["id"])["subject"] == "Bob's invoice"
    assert view(store, made["other_tenant"], fourth["id"])["body"] == "Carol's app crashes"


def test_the_event_store_holds_words_only_as_ciphertext(store):
    made = busy_world(store)
    words = [
        "Alice cannot log in",
        "password reset mail",
        "have you checked spam",
        "looks like a bounce",
        "nothing in spam",
        "Bob's invoice",
        "Colleague: sent both",
        "Carol's app crashes",
    ]
    with store.db.transaction() as cur:
        cur.execute("SELECT type, payload, payload::text, metadata::text FROM events")
        rows = cur.fetchall()
        cur.execute("SELECT routing_key, body FROM outbox")
        outbox = cur.fetchall()
    assert rows
    for type_, payload, raw, metadata in rows:
        for word in words:
            assert word not in raw and word not in metadata
        personal = REGISTRY[type_].personal_fields
        for field in personal:
            assert is_encrypted(payload[field]), (type_, field)
        for field, value in payload.items():
            if field not in personal:
                assert not is_encrypted(value)
    # Published copies leave without the words, not even encrypted.
    assert {key for key, _ in outbox} >= {
        "tickets.ticket_created",
        "tickets.message_added",
        "tickets.ticket_status_changed",
        "tickets.ticket_closed",
        "tickets.ticket_assigned",
    }
    for routing_key, body in outbox:
        envelope = json.loads(body)
        assert not {"subject", "body", "tags"} & set(envelope["payload"]), routing_key
        assert "$enc" not in body
        for word in words:
            assert word not in body
    # Nor do the read models: they keep the events' ciphertext, which the handlers open.
    for table, rows in snapshot(store).items():
        for row in rows:
            for word in words:
                assert word not in str(row), table
    # The read model opened gives back what was written.
    assert view(store, made["tenant"], made["tickets"][1]["id"])["body"] == (
        "Bob wants a copy of invoice 7"
    )


# --- membership -----------------------------------------------------------------------------------


def test_requesters_and_assignees_must_be_active_members_of_the_tenant(store):
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    agent = enrol(store, tenant, "agent")
    contact = enrol(store, tenant, "contact")
    gone = enrol(store, tenant, "agent", active=False)
    foreign_contact, foreign_agent = enrol(store, other, "contact"), enrol(store, other, "agent")
    strangers = [str(uuid.uuid4()), foreign_contact, agent]
    for requester in strangers:
        with pytest.raises(NotFound) as caught:
            create(store, tenant, agent, requester)
        assert caught.value.detail.startswith("requester_id:")
    ticket = create(store, tenant, agent, contact)
    for assignee in (str(uuid.uuid4()), foreign_agent, contact):
        with pytest.raises(NotFound) as caught:
            update(store, tenant, agent, dict(ticket), assignee_id=assignee)
        assert caught.value.detail.startswith("assignee_id:")
    with pytest.raises(Conflict) as caught:  # a member, deactivated
        update(store, tenant, agent, dict(ticket), assignee_id=gone)
    assert caught.value.detail == "assignee_id: the agent is deactivated"
    assert scalar(store, "SELECT count(*) FROM events WHERE type <> 'ticket_created'") == 0

    # Accounts' answer counts when the directory has not yet heard of someone.
    newcomer = str(uuid.uuid4())

    def accounts_knows(tenant_id: str, subject_id: str) -> dict[str, Any]:
        if (tenant_id, subject_id) == (tenant, newcomer):
            return {"kind": "contact", "active": True}
        raise NotFound("no such subject")

    command = commands.CreateTicketV1().load(
        {"subject": "s", "body": "b", "requester_id": newcomer}
    )
    with store.unit_of_work(agent) as uow:
        assert handlers.create_ticket(uow, accounts_knows, tenant, command)["requester_id"] == (
            newcomer
        )
    with store.unit_of_work(agent) as uow, pytest.raises(NotFound):
        handlers.create_ticket(uow, accounts_knows, other, command)


def test_another_tenants_ticket_is_not_found(store):
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    agent, stranger = enrol(store, tenant, "agent"), enrol(store, other, "agent")
    ticket = create(store, tenant, agent, enrol(store, tenant, "contact"))
    attempts = [
        lambda uow: handlers.get_ticket(uow, other, ticket["id"], viewer=stranger),
        lambda uow: handlers.update_ticket(
            uow, unknown_to_accounts, other, ticket["id"], 1, {"status": "open"}
        ),
        lambda uow: handlers.add_message(
            uow,
            other,
            ticket["id"],
            stranger,
            {"body": "hi", "internal": False, "on_behalf_of_requester": False},
        ),
    ]
    for attempt in attempts:
        with store.unit_of_work(stranger) as uow, pytest.raises(NotFound):
            attempt(uow)
    with store.unit_of_work() as uow:
        listed = handlers.list_tickets(uow, other, {}, 50, None)
    assert listed == {"items": [], "next": None}
    assert scalar(store, "SELECT count(*) FROM outbox WHERE routing_key LIKE '%viewed'") == 0
    assert view(store, tenant, ticket["id"])["version"] == 1


# --- card numbers -------------------------------------------------------------------------------


def test_card_numbers_are_cut_to_their_last_four_digits_everywhere(store, world, caplog):
    caplog.set_level(logging.DEBUG)
    tenant = str(uuid.uuid4())
    agent, contact = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")

    ticket = create(
        store,
        tenant,
        agent,
        contact,
        subject="Card 4111 1111 1111 1111 declined",
        body=f"Tried 5555-5555-5555-4444 and {AMEX} yesterday",
    )
    assert ticket["subject"] == "Card [card ending 1111] declined"
    assert ticket["body"] == "Tried [card ending 4444] and [card ending 0005] yesterday"
    written = message(
        store,
        tenant,
        agent,
        ticket["id"],
        f"Amex 3782 822463 10005, visa 4111-1111-1111-1111, mc {MASTERCARD}",
    )
    assert written["body"] == (
        "Amex [card ending 0005], visa [card ending 1111], mc [card ending 4444]"
    )
    requester = message(
        store, tenant, agent, ticket["id"], f"my card is {VISA}", on_behalf_of_requester=True
    )
    assert requester["body"] == "my card is [card ending 1111]"
    plain = message(store, tenant, agent, ticket["id"], "order 1234567890123 (not a card)")
    assert plain["body"] == "order 1234567890123 (not a card)"

    with store.db.transaction() as cur:
        cur.execute("SELECT type, payload, metadata FROM events ORDER BY position")
        events = cur.fetchall()
    assert [(t, m.get("card_numbers_redacted")) for t, _, m in events] == [
        ("ticket_created", 3),
        ("message_added", 3),
        ("message_added", 1),
        ("message_added", None),
    ]
    assert [p["redactions"] for _, p, _ in events] == [3, 3, 1, 0]

    shown = view(store, tenant, ticket["id"])
    assert "[card ending 1111]" in shown["subject"]
    assert "[card ending 4444]" in shown["body"] and "[card ending 0005]" in shown["body"]
    assert [m["body"] for m in shown["messages"]] == [
        written["body"],
        requester["body"],
        plain["body"],
    ]

    needles = [VISA, MASTERCARD, AMEX]
    for purpose in ("", "keys"):
        assert places_holding(world.database_dsn("tickets", purpose), needles) == []
    scanned = {table for table, _ in text_columns(world.database_dsn("tickets"))}
    assert {"events", "outbox", "tickets", "ticket_messages"} <= scanned
    logged = caplog.text.replace(" ", "").replace("-", "")
    assert all(n not in logged for n in needles)

    # A replay reads the already-cut text: no number comes back.
    store.rebuild("tickets", progress=False)
    assert view(store, tenant, ticket["id"]) == shown
    assert places_holding(world.database_dsn("tickets"), needles) == []


def test_a_card_number_in_a_tag_is_refused_or_never_stored(store, world):
    tenant = str(uuid.uuid4())
    agent, contact = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    ticket = create(store, tenant, agent, contact)
    attempts = [
        lambda: create(store, tenant, agent, contact, tags=[VISA]),
        lambda: create(store, tenant, agent, contact, tags=["5555-5555-5555-4444"]),
        lambda: update(store, tenant, agent, ticket, tags=["vip", AMEX]),
    ]
    for attempt in attempts:
        try:
            attempt()
        except ValidationFailed:
            pass  # refusing is as good as never storing
    assert places_holding(world.database_dsn("tickets"), [VISA, MASTERCARD, AMEX]) == []
