"""The tickets API over real HTTP, against the whole platform running as processes.

Each test makes its own tenants. Tickets learns of agents and contacts from accounts' events and
asks accounts when it has not heard of someone yet, so a ticket can name a contact created the
moment before.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from kombu import Connection, Queue, binding

from kernel import topology
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.testing import wait_until
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import (
    assert_problem,
    create_agent,
    create_contact,
    rows,
    sign_up,
    unique,
)

VISA, MASTERCARD, AMEX = "4111111111111111", "5555555555554444", "378282246310005"
TICKET_FIELDS = {
    "id",
    "subject",
    "body",
    "status",
    "priority",
    "requester_id",
    "assignee_id",
    "tags",
    "created_at",
    "updated_at",
    "version",
}
MESSAGE_FIELDS = {
    "id",
    "author_id",
    "author_kind",
    "body",
    "internal",
    "created_at",
    "attachments",
}


# --- helpers ------------------------------------------------------------------------------------


def tenant(stack: Stack) -> dict[str, str]:
    """A new tenant: its admin's key and id, accepting whatever policy version is current."""
    created = sign_up(stack)
    return {
        "key": created["api_key"],
        "tenant_id": created["tenant"]["id"],
        "admin_id": created["agent"]["id"],
    }


def open_ticket(stack: Stack, key: str, requester: str, **changes: Any) -> dict[str, Any]:
    body = {
        "subject": unique("Subject"),
        "body": unique("Body"),
        "requester_id": requester,
        **changes,
    }
    response = stack.call("POST", "/v1/tickets", key=key, json=body)
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert response.headers["ETag"] == f'"{ticket["version"]}"'
    return ticket


def patch(stack: Stack, key: str, ticket_id: str, etag: str | None, **changes: Any):
    headers = {} if etag is None else {"If-Match": etag}
    return stack.call("PATCH", f"/v1/tickets/{ticket_id}", key=key, json=changes, headers=headers)


def get(stack: Stack, key: str, ticket_id: str):
    return stack.call("GET", f"/v1/tickets/{ticket_id}", key=key)


def post_message(stack: Stack, key: str, ticket_id: str, body: str, **flags: Any):
    return stack.call(
        "POST", f"/v1/tickets/{ticket_id}/messages", key=key, json={"body": body, **flags}
    )


def listing(stack: Stack, key: str, **params: Any) -> list[str]:
    """The ids of every ticket a filtered list shows, following cursors to the end."""
    ids: list[str] = []
    query: dict[str, Any] = dict(params)
    while True:
        response = stack.call("GET", "/v1/tickets", key=key, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        for item in page["items"]:
            assert set(item) == TICKET_FIELDS
        ids.extend(item["id"] for item in page["items"])
        if page["next_cursor"] is None:
            return ids
        query["cursor"] = page["next_cursor"]


def text_columns(cur) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t"
        "   ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        "   AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb',"
        "                       'ARRAY')"
        " ORDER BY 1, 2"
    )
    return cur.fetchall()


def places_holding(dsn: str, needles: list[str]) -> tuple[list[tuple[str, str]], list[tuple]]:
    """The text columns scanned, and (table, column, needle) wherever a needle's digits appear
    with or without space and dash separators."""
    conn = psycopg2.connect(dsn)
    found = []
    try:
        with conn, conn.cursor() as cur:
            columns = text_columns(cur)
            for table, column in columns:
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
    return columns, found


def digits_only_runs(text: str) -> str:
    return text.replace(" ", "").replace("-", "")


class Observer:
    """A queue bound to some routing keys before anything happens; drained by polling."""

    def __init__(self, stack: Stack, routing_keys: list[str]):
        self.queue = Queue(
            unique("e2e.tickets-observer"),
            bindings=[binding(topology.events_exchange, routing_key=k) for k in routing_keys],
            durable=False,
            auto_delete=False,
        )
        self.connection = Connection(stack.settings.amqp_uri)
        self.simple = self.connection.SimpleQueue(self.queue)
        self.received: list[tuple[str, dict[str, Any]]] = []

    def until(self, enough: Callable[[list[tuple[str, dict[str, Any]]]], bool]) -> list:
        def probe() -> bool:
            while True:
                try:
                    message = self.simple.get_nowait()
                except self.simple.Empty:
                    return enough(self.received)
                message.ack()
                raw = message.body
                raw = raw.decode() if isinstance(raw, bytes) else raw
                self.received.append((raw, json.loads(raw)))

        wait_until(probe, timeout=30, what="the tickets events on the broker")
        return self.received

    def close(self) -> None:
        self.queue(self.connection.channel()).delete()
        self.simple.close()
        self.connection.close()


# --- create, read, list -------------------------------------------------------------------------


def test_create_a_ticket_for_a_contact_made_a_moment_ago_and_read_it(stack):
    me = tenant(stack)
    requester = create_contact(stack, me["key"])["id"]
    ticket = open_ticket(
        stack,
        me["key"],
        requester,
        subject="Printer on fire",
        body="Flames, mostly.",
        priority="urgent",
        tags=["hardware", "fire", "hardware"],
    )
    assert set(ticket) >= TICKET_FIELDS - {"updated_at"}
    assert ticket["subject"] == "Printer on fire" and ticket["status"] == "new"
    assert ticket["priority"] == "urgent" and ticket["tags"] == ["fire", "hardware"]
    assert ticket["requester_id"] == requester and ticket["assignee_id"] is None
    assert ticket["version"] == 1 and uuid.UUID(ticket["id"])

    read = get(stack, me["key"], ticket["id"])
    assert read.status_code == 200 and read.headers["ETag"] == '"1"'
    shown = read.json()
    assert set(shown) == TICKET_FIELDS | {"messages"} and shown["messages"] == []
    assert {k: shown[k] for k in ticket} == ticket

    plain = open_ticket(stack, me["key"], requester)
    assert plain["priority"] == "normal" and plain["tags"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"body": "b", "requester_id": "{contact}"}, "subject"),
        ({"subject": "s", "body": "b", "requester_id": "nope"}, "requester_id"),
        (
            {"subject": "s", "body": "b", "requester_id": "{contact}", "priority": "asap"},
            "priority",
        ),
        ({"subject": "s", "body": "b", "requester_id": "{contact}", "status": "open"}, "status"),
        ({"subject": "s", "body": "b", "requester_id": "{contact}", "tags": ["a b"]}, "tags"),
    ],
)
def test_a_malformed_ticket_is_refused(stack, body, field):
    me = tenant(stack)
    requester = create_contact(stack, me["key"])["id"]
    body = {k: (requester if v == "{contact}" else v) for k, v in body.items()}
    refused = stack.call("POST", "/v1/tickets", key=me["key"], json=body)
    assert field in assert_problem(refused, 422)["errors"]
    assert listing(stack, me["key"]) == []


def test_list_filters_by_status_assignee_and_requester_and_pages_by_cursor(stack):
    me = tenant(stack)
    alice, bob = create_contact(stack, me["key"])["id"], create_contact(stack, me["key"])["id"]
    helper = create_agent(stack, me["key"])["id"]
    made = [open_ticket(stack, me["key"], r) for r in (alice, bob, alice, bob, alice)]
    ids = [t["id"] for t in made]
    for ticket in (made[1], made[3]):
        assert patch(stack, me["key"], ticket["id"], '"1"', assignee_id=helper).status_code == 200
    assert patch(stack, me["key"], ids[2], '"1"', status="open").status_code == 200

    assert listing(stack, me["key"]) == ids  # oldest first
    assert listing(stack, me["key"], status="new") == [ids[0], ids[1], ids[3], ids[4]]
    assert listing(stack, me["key"], status="open") == [ids[2]]
    assert listing(stack, me["key"], status="closed") == []
    assert listing(stack, me["key"], assignee_id=helper) == [ids[1], ids[3]]
    assert listing(stack, me["key"], requester_id=alice) == [ids[0], ids[2], ids[4]]
    assert listing(stack, me["key"], requester_id=bob, assignee_id=helper) == [ids[1], ids[3]]
    assert listing(stack, me["key"], requester_id=alice, assignee_id=helper) == []
    assert listing(stack, me["key"], requester_id=alice, status="open") == [ids[2]]

    first = stack.call("GET", "/v1/tickets", key=me["key"], params={"limit": 2}).json()
    assert [t["id"] for t in first["items"]] == ids[:2] and first["next_cursor"]
    for limit in (1, 2, 3, 5):
        assert listing(stack, me["key"], limit=limit) == ids
    assert listing(stack, me["key"], limit=2, requester_id=alice) == [ids[0], ids[2], ids[4]]
    shown = stack.call("GET", "/v1/tickets", key=me["key"], params={"limit": 5}).json()
    assert shown["next_cursor"] is None and len(shown["items"]) == 5

    for params in (
        {"status": "reopened"},
        {"assignee_id": "nobody"},
        {"requester_id": "x"},
        {"cursor": "not-a-cursor"},
        {"limit": 0},
    ):
        answer = stack.call("GET", "/v1/tickets", key=me["key"], params=params)
        assert_problem(answer, 422)


def test_a_repeated_creation_with_its_idempotency_key_makes_one_ticket(stack):
    me = tenant(stack)
    requester = create_contact(stack, me["key"])["id"]
    body = {"subject": "Once", "body": "only once", "requester_id": requester}
    headers = {"Idempotency-Key": unique("ticket")}
    first = stack.call("POST", "/v1/tickets", key=me["key"], json=body, headers=headers)
    replay = stack.call("POST", "/v1/tickets", key=me["key"], json=body, headers=headers)
    assert first.status_code == replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    assert listing(stack, me["key"]) == [first.json()["id"]]
    changed = stack.call(
        "POST", "/v1/tickets", key=me["key"], json={**body, "body": "other"}, headers=headers
    )
    assert "Idempotency-Key" in assert_problem(changed, 409)["detail"]
    message_headers = {"Idempotency-Key": unique("message")}
    for _ in range(2):
        answer = stack.call(
            "POST",
            f"/v1/tickets/{first.json()['id']}/messages",
            key=me["key"],
            json={"body": "just once"},
            headers=message_headers,
        )
        assert answer.status_code == 201, answer.text
    assert len(get(stack, me["key"], first.json()["id"]).json()["messages"]) == 1


def test_two_agents_with_one_idempotency_key_write_two_messages(stack):
    me = tenant(stack)
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"])
    colleague = create_agent(stack, me["key"], "agent")
    # A message's author is its caller: the same key and body from another agent is their own
    # message, not a replay of the first.
    headers = {"Idempotency-Key": unique("message")}
    path = f"/v1/tickets/{ticket['id']}/messages"
    answers = [
        stack.call("POST", path, key=key, json={"body": "on it"}, headers=headers)
        for key in (me["key"], colleague["api_key"], me["key"])
    ]
    assert [a.status_code for a in answers] == [201, 201, 201], answers[1].text
    assert "Idempotent-Replayed" not in answers[1].headers
    assert answers[2].headers["Idempotent-Replayed"] == "true"
    assert answers[2].json() == answers[0].json()
    messages = get(stack, me["key"], ticket["id"]).json()["messages"]
    assert [m["author_id"] for m in messages] == [me["admin_id"], colleague["id"]]


def test_a_replayed_ticket_creation_carries_its_etag(stack):
    me = tenant(stack)
    body = {
        "subject": "Once",
        "body": "only once",
        "requester_id": create_contact(stack, me["key"])["id"],
    }
    headers = {"Idempotency-Key": unique("ticket")}
    first = stack.call("POST", "/v1/tickets", key=me["key"], json=body, headers=headers)
    replay = stack.call("POST", "/v1/tickets", key=me["key"], json=body, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.headers.get("ETag") == first.headers["ETag"] == '"1"'


# --- the workflow -------------------------------------------------------------------------------


def test_the_status_workflow_with_etags(stack):
    me = tenant(stack)
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"])
    tid, etag = ticket["id"], '"1"'

    for illegal in ("pending", "solved", "closed"):
        assert_problem(patch(stack, me["key"], tid, etag, status=illegal), 409)
    assert_problem(patch(stack, me["key"], tid, etag, status="new"), 422)
    assert_problem(patch(stack, me["key"], tid, etag), 422)  # an empty PATCH
    assert_problem(patch(stack, me["key"], tid, None, status="open"), 428)
    assert get(stack, me["key"], tid).json()["version"] == 1

    version = 1
    for target in ("open", "pending", "open", "solved", "open", "solved", "closed"):
        answer = patch(stack, me["key"], tid, etag, status=target)
        assert answer.status_code == 200, (target, answer.text)
        version += 2 if target == "closed" else 1  # closing also records ticket_closed
        assert answer.json()["status"] == target and answer.json()["version"] == version
        assert answer.headers["ETag"] == f'"{version}"'
        stale = patch(stack, me["key"], tid, etag, priority="high")
        assert_problem(stale, 409)
        etag = answer.headers["ETag"]
        if target == "pending":
            for illegal in ("solved", "closed"):
                assert_problem(patch(stack, me["key"], tid, etag, status=illegal), 409)
            # The status it has: no transition, nothing recorded, the version stays.
            same = patch(stack, me["key"], tid, etag, status="pending")
            assert same.status_code == 200 and same.headers["ETag"] == etag

    for change in ({"status": "open"}, {"status": "pending"}, {"priority": "low"}, {"tags": ["x"]}):
        assert_problem(patch(stack, me["key"], tid, etag, **change), 409)
    assert_problem(post_message(stack, me["key"], tid, "too late"), 409)
    same = patch(stack, me["key"], tid, f"W/{etag}", status="closed")
    assert same.status_code == 200 and same.json()["version"] == version
    assert_problem(patch(stack, me["key"], tid, '"banana"', status="closed"), 409)

    final = get(stack, me["key"], tid)
    assert final.json()["status"] == "closed" and final.headers["ETag"] == etag
    assert final.json()["messages"] == [] and final.json()["priority"] == "normal"


def test_priority_tags_and_assignment_change_with_if_match(stack):
    me = tenant(stack)
    helper = create_agent(stack, me["key"])["id"]
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"], tags=["a"])
    answer = patch(
        stack,
        me["key"],
        ticket["id"],
        '"1"',
        priority="high",
        tags=["zeta", "alpha", "zeta"],
        assignee_id=helper,
    )
    assert answer.status_code == 200, answer.text
    changed = answer.json()
    assert (changed["priority"], changed["tags"], changed["assignee_id"]) == (
        "high",
        ["alpha", "zeta"],
        helper,
    )
    assert changed["version"] == 4
    cleared = patch(stack, me["key"], ticket["id"], '"4"', assignee_id=None)
    assert cleared.status_code == 200 and cleared.json()["assignee_id"] is None
    assert cleared.headers["ETag"] == '"5"'
    unchanged = patch(stack, me["key"], ticket["id"], '"5"', tags=["alpha", "zeta"])
    assert unchanged.status_code == 200 and unchanged.headers["ETag"] == '"5"'


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_patches_on_one_version_one_wins_nothing_lost(stack, round_):
    me = tenant(stack)
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"])
    changes = {"status": {"status": "open"}, "priority": {"priority": "urgent"}}
    start = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def send(name: str) -> None:
        start.wait()
        answers[name] = patch(stack, me["key"], ticket["id"], '"1"', **changes[name])

    threads = [threading.Thread(target=send, args=(name,)) for name in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 2, "a request did not finish"
    assert sorted(r.status_code for r in answers.values()) == [200, 409], {
        n: (r.status_code, r.text) for n, r in answers.items()
    }
    [winner] = [n for n, r in answers.items() if r.status_code == 200]
    [loser] = [n for n, r in answers.items() if r.status_code == 409]
    assert_problem(answers[loser], 409)

    now = get(stack, me["key"], ticket["id"])
    shown = now.json()
    assert now.headers["ETag"] == '"2"' == answers[winner].headers["ETag"]
    assert (shown["status"], shown["priority"]) == {
        "status": ("open", "normal"),
        "priority": ("new", "urgent"),
    }[winner]

    # The loser reloads and tries again: both changes stand.
    retried = patch(stack, me["key"], ticket["id"], now.headers["ETag"], **changes[loser])
    assert retried.status_code == 200, retried.text
    final = get(stack, me["key"], ticket["id"]).json()
    assert (final["status"], final["priority"], final["version"]) == ("open", "urgent", 3)


# --- messages -----------------------------------------------------------------------------------


def test_public_internal_and_requester_messages(stack):
    me = tenant(stack)
    requester = create_contact(stack, me["key"])["id"]
    colleague = create_agent(stack, me["key"])
    ticket = open_ticket(stack, me["key"], requester)
    other = open_ticket(stack, me["key"], requester)

    public = post_message(stack, me["key"], ticket["id"], "We are looking into it.")
    assert public.status_code == 201, public.text
    # A new message also says whom it concerns: its ticket and the ticket's requester.
    assert set(public.json()) == MESSAGE_FIELDS | {"ticket_id", "requester_id"}
    assert (public.json()["ticket_id"], public.json()["requester_id"]) == (ticket["id"], requester)
    assert public.json()["author_id"] == me["admin_id"]
    assert public.json()["author_kind"] == "agent" and public.json()["internal"] is False

    note = post_message(stack, colleague["api_key"], ticket["id"], "Known bug #12", internal=True)
    assert note.status_code == 201, note.text
    assert note.json()["internal"] is True and note.json()["author_id"] == colleague["id"]

    reply = post_message(
        stack, me["key"], ticket["id"], "Thanks, any update?", on_behalf_of_requester=True
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["author_kind"] == "requester" and reply.json()["author_id"] == requester
    assert reply.json()["internal"] is False

    for flags, field in (
        ({"internal": True, "on_behalf_of_requester": True}, "internal"),
        ({"internal": "yes"}, "internal"),
        ({"author_id": me["admin_id"]}, "author_id"),
    ):
        refused = post_message(stack, me["key"], ticket["id"], "x", **flags)
        assert field in assert_problem(refused, 422)["errors"]
    assert "body" in assert_problem(post_message(stack, me["key"], ticket["id"], ""), 422)["errors"]

    shown = get(stack, me["key"], ticket["id"])
    assert shown.headers["ETag"] == '"4"'  # each message is an event on the ticket
    messages = shown.json()["messages"]
    assert [m["id"] for m in messages] == [
        public.json()["id"],
        note.json()["id"],
        reply.json()["id"],
    ]
    # As they were answered, less whom they concern (the ticket says that once).
    assert messages == [
        {k: v for k, v in m.json().items() if k not in ("ticket_id", "requester_id")}
        for m in (public, note, reply)
    ]
    assert get(stack, me["key"], other["id"]).json()["messages"] == []

    # A message moved the version on: a PATCH based on the older ETag is stale.
    assert_problem(patch(stack, me["key"], ticket["id"], '"1"', status="open"), 409)


def test_concurrent_messages_are_each_stored_or_refused_never_lost(stack):
    me = tenant(stack)
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"])
    writers = 5
    start = threading.Barrier(writers)
    answers: dict[int, Any] = {}

    def send(n: int) -> None:
        start.wait()
        answers[n] = post_message(stack, me["key"], ticket["id"], f"reply {n}")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == writers, "a request did not finish"
    # Without If-Match a message may still lose the race on the ticket's stream: a 409 the
    # client can retry. Never a 5xx, and every 201 is really stored.
    assert {r.status_code for r in answers.values()} <= {201, 409}
    stored = [r.json()["id"] for r in answers.values() if r.status_code == 201]
    assert stored
    shown = get(stack, me["key"], ticket["id"]).json()
    assert sorted(m["id"] for m in shown["messages"]) == sorted(stored)
    assert shown["version"] == 1 + len(stored)


# --- who may be a requester or an assignee ------------------------------------------------------


def test_requesters_and_assignees_from_elsewhere_are_refused(stack):
    me, them = tenant(stack), tenant(stack)
    mine, theirs = create_contact(stack, me["key"])["id"], create_contact(stack, them["key"])["id"]
    their_agent = create_agent(stack, them["key"])["id"]

    for requester in (theirs, me["admin_id"], str(uuid.uuid4())):
        refused = stack.call(
            "POST",
            "/v1/tickets",
            key=me["key"],
            json={"subject": "s", "body": "b", "requester_id": requester},
        )
        assert assert_problem(refused, 404)["detail"].startswith("requester_id:")

    ticket = open_ticket(stack, me["key"], mine)
    for assignee in (their_agent, mine, theirs, str(uuid.uuid4())):
        refused = patch(stack, me["key"], ticket["id"], '"1"', assignee_id=assignee)
        assert assert_problem(refused, 404)["detail"].startswith("assignee_id:")
    assert listing(stack, me["key"]) == [ticket["id"]]
    assert get(stack, me["key"], ticket["id"]).json()["version"] == 1


def test_a_deactivated_agent_cannot_be_assigned(stack):
    me = tenant(stack)
    leaver = create_agent(stack, me["key"])["id"]
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"])
    # Assignable while active.
    assert patch(stack, me["key"], ticket["id"], '"1"', assignee_id=leaver).status_code == 200
    assert patch(stack, me["key"], ticket["id"], '"2"', assignee_id=None).status_code == 200

    gone = stack.call("DELETE", f"/v1/agents/{leaver}", key=me["key"])
    assert gone.status_code == 200, gone.text

    # Tickets hears of it from accounts' agent_deactivated event.
    def heard() -> bool:
        found = rows(stack, "tickets", "SELECT active FROM directory WHERE subject_id = %s", leaver)
        return found == [(False,)]

    wait_until(heard, what="tickets learning of the deactivation")
    refused = patch(stack, me["key"], ticket["id"], '"3"', assignee_id=leaver)
    assert assert_problem(refused, 409)["detail"] == "assignee_id: the agent is deactivated"
    assert get(stack, me["key"], ticket["id"]).json()["assignee_id"] is None


def test_an_erased_requester_gets_a_client_error_not_a_server_error(stack):
    me = tenant(stack)
    requester = create_contact(stack, me["key"])["id"]
    ticket = open_ticket(stack, me["key"], requester)
    # What an erasure does to tickets: the requester's key is destroyed in its keystore.
    keys = Database(stack.settings.database_dsn("tickets", "keys"))
    try:
        assert Keystore(keys, stack.settings.master_keys).shred_subject(requester)
    finally:
        keys.close()
    # The ticket's words were under a key that went with the requester's: nothing new is
    # written there, by staff either (409), while its status can still move.
    staff = post_message(stack, me["key"], ticket["id"], "Agent reply after the erasure")
    assert staff.status_code == 409, staff.text

    as_requester = post_message(
        stack, me["key"], ticket["id"], "from the erased", on_behalf_of_requester=True
    )
    again = stack.call(
        "POST",
        "/v1/tickets",
        key=me["key"],
        json={"subject": "s", "body": "b", "requester_id": requester},
    )
    for answer in (as_requester, again):
        assert answer.status_code in (404, 409, 422), answer.text


# --- tenants and roles --------------------------------------------------------------------------


def test_another_tenants_ticket_answers_exactly_like_a_missing_one(stack):
    me, them = tenant(stack), tenant(stack)
    mine = create_contact(stack, me["key"])["id"]
    ticket = open_ticket(stack, me["key"], mine)
    assert post_message(stack, me["key"], ticket["id"], "hello").status_code == 201
    their_ticket = open_ticket(stack, them["key"], create_contact(stack, them["key"])["id"])
    before = get(stack, me["key"], ticket["id"]).json()

    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/tickets/{id}", {}),
        ("PATCH", "/v1/tickets/{id}", {"json": {"status": "open"}, "headers": {"If-Match": '"2"'}}),
        (
            "PATCH",
            "/v1/tickets/{id}",
            {"json": {"assignee_id": them["admin_id"]}, "headers": {"If-Match": '"2"'}},
        ),
        ("POST", "/v1/tickets/{id}/messages", {"json": {"body": "hi"}}),
        ("POST", "/v1/tickets/{id}/messages", {"json": {"body": "hi", "internal": True}}),
        (
            "POST",
            "/v1/tickets/{id}/messages",
            {"json": {"body": "hi", "on_behalf_of_requester": True}},
        ),
    ]
    for method, path, kwargs in attempts:
        theirs = stack.call(method, path.format(id=ticket["id"]), key=them["key"], **kwargs)
        missing = stack.call(method, path.format(id=uuid.uuid4()), key=them["key"], **kwargs)
        garbage = stack.call(method, path.format(id="no-such-id"), key=them["key"], **kwargs)
        told = assert_problem(theirs, 404)
        assert told == assert_problem(missing, 404) == assert_problem(garbage, 404)
        assert theirs.headers.get("ETag") is None

    # Lists never show another tenant's tickets, whatever the filter.
    assert listing(stack, them["key"]) == [their_ticket["id"]]
    assert listing(stack, them["key"], requester_id=mine) == []
    assert listing(stack, them["key"], assignee_id=me["admin_id"]) == []
    assert listing(stack, them["key"], status="new") == [their_ticket["id"]]
    assert listing(stack, me["key"]) == [ticket["id"]]
    # And nothing they tried changed it.
    assert get(stack, me["key"], ticket["id"]).json() == before


def test_the_auditor_role_may_not_touch_tickets(stack):
    me = tenant(stack)
    auditor = create_agent(stack, me["key"], role="auditor")["api_key"]
    ticket = open_ticket(stack, me["key"], create_contact(stack, me["key"])["id"])
    requests_ = [
        (
            "POST",
            "/v1/tickets",
            {"json": {"subject": "s", "body": "b", "requester_id": me["admin_id"]}},
        ),
        ("GET", "/v1/tickets", {}),
        ("GET", f"/v1/tickets/{ticket['id']}", {}),
        ("GET", f"/v1/tickets/{uuid.uuid4()}", {}),
        (
            "PATCH",
            f"/v1/tickets/{ticket['id']}",
            {"json": {"status": "open"}, "headers": {"If-Match": '"1"'}},
        ),
        ("POST", f"/v1/tickets/{ticket['id']}/messages", {"json": {"body": "hi"}}),
    ]
    for method, path, kwargs in requests_:
        assert_problem(stack.call(method, path, key=auditor, **kwargs), 403)
    unchanged = get(stack, me["key"], ticket["id"]).json()
    assert unchanged["version"] == 1 and unchanged["messages"] == []


# --- what leaves on the broker ------------------------------------------------------------------


def test_published_ticket_events_and_views_carry_ids_only(stack):
    kinds = [
        "ticket_created",
        "ticket_viewed",
        "message_added",
        "ticket_status_changed",
        "ticket_closed",
        "ticket_assigned",
    ]
    observer = Observer(stack, [f"tickets.{kind}" for kind in kinds])
    try:
        me = tenant(stack)
        requester = create_contact(stack, me["key"])["id"]
        helper = create_agent(stack, me["key"])
        words = [
            unique("Secret subject"),
            unique("Secret body"),
            unique("Secret reply"),
            f"vip-{secrets.token_hex(4)}",
        ]
        ticket = open_ticket(
            stack, me["key"], requester, subject=words[0], body=words[1], tags=[words[3]]
        )
        tid = ticket["id"]
        message = post_message(
            stack, helper["api_key"], tid, words[2], on_behalf_of_requester=False
        ).json()
        shown = get(stack, me["key"], tid)
        assert shown.status_code == 200
        etag = shown.headers["ETag"]
        for change in (
            {"assignee_id": helper["id"], "status": "open"},
            {"status": "solved"},
            {"status": "closed"},
        ):
            answer = patch(stack, me["key"], tid, etag, **change)
            assert answer.status_code == 200, answer.text
            etag = answer.headers["ETag"]

        def complete(received) -> bool:
            types = [e["type"] for _, e in received if e["payload"].get("ticket_id") == tid]
            return (
                all(kind in types for kind in kinds) and types.count("ticket_status_changed") == 3
            )

        received = [(r, e) for r, e in observer.until(complete) if e["payload"]["ticket_id"] == tid]
    finally:
        observer.close()

    by_type: dict[str, list[dict[str, Any]]] = {}
    for raw, envelope in received:
        for word in words:
            assert word not in raw, envelope["type"]
        assert "$enc" not in raw
        assert envelope["source"] == "tickets" and envelope["tenant_id"] == me["tenant_id"]
        assert not {"subject", "body", "tags"} & set(envelope["payload"]), envelope["type"]
        by_type.setdefault(envelope["type"], []).append(envelope)

    [created] = by_type["ticket_created"]
    assert set(created["payload"]) == {
        "ticket_id",
        "tenant_id",
        "requester_id",
        "priority",
        "redactions",
    }
    assert created["payload"]["requester_id"] == requester
    [added] = by_type["message_added"]
    assert set(added["payload"]) == {
        "ticket_id",
        "tenant_id",
        "message_id",
        "author_id",
        "author_kind",
        "internal",
        "redactions",
        "requester_id",
    }
    assert added["schema_version"] == 2
    assert added["payload"]["message_id"] == message["id"]
    assert added["payload"]["author_id"] == helper["id"]
    [viewed] = by_type["ticket_viewed"]
    assert viewed["payload"] == {
        "ticket_id": tid,
        "tenant_id": me["tenant_id"],
        "agent_id": me["admin_id"],
        "subject_ids": sorted([requester, helper["id"]]),
    }
    assert viewed["actor_id"] == me["admin_id"]
    assert [e["payload"]["status"] for e in by_type["ticket_status_changed"]] == [
        "open",
        "solved",
        "closed",
    ]
    assert set(by_type["ticket_closed"][0]["payload"]) == {"ticket_id", "tenant_id"}
    assert by_type["ticket_assigned"][0]["payload"]["assignee_id"] == helper["id"]


# --- card numbers -------------------------------------------------------------------------------


def test_card_numbers_are_cut_to_the_last_four_and_found_nowhere(infrastructure, capfd):
    """A stack of its own, started here so its processes write to this test's captured fds."""
    needles = [VISA, MASTERCARD, AMEX]
    with running_stack(infrastructure) as own:
        observer = Observer(own, ["#"])
        try:
            me = tenant(own)
            requester = create_contact(own, me["key"])["id"]
            created = own.call(
                "POST",
                "/v1/tickets",
                key=me["key"],
                headers={"Idempotency-Key": unique("card")},
                json={
                    "subject": "Card 4111 1111 1111 1111 was charged twice",
                    "body": f"Also tried 5555-5555-5555-4444 and {AMEX}.",
                    "requester_id": requester,
                },
            )
            assert created.status_code == 201, created.text
            ticket = created.json()
            assert ticket["subject"] == "Card [card ending 1111] was charged twice"
            assert ticket["body"] == "Also tried [card ending 4444] and [card ending 0005]."
            tid = ticket["id"]
            note = post_message(
                own, me["key"], tid, f"Amex 3782 822463 10005 / visa {VISA}", internal=True
            )
            assert note.status_code == 201, note.text
            assert note.json()["body"] == "Amex [card ending 0005] / visa [card ending 1111]"
            reply = post_message(
                own,
                me["key"],
                tid,
                "my mastercard: 5555 5555 5555 4444",
                on_behalf_of_requester=True,
            )
            assert reply.json()["body"] == "my mastercard: [card ending 4444]"

            shown = get(own, me["key"], tid).json()
            assert shown["subject"] == ticket["subject"] and shown["body"] == ticket["body"]
            assert [m["body"] for m in shown["messages"]] == [
                note.json()["body"],
                reply.json()["body"],
            ]
            listed = own.call("GET", "/v1/tickets", key=me["key"]).json()["items"]
            assert [t["body"] for t in listed] == [ticket["body"]]

            data = psycopg2.connect(own.settings.database_dsn("tickets"))
            try:
                with data, data.cursor() as cur:
                    cur.execute(
                        "SELECT type, metadata, payload->'redactions' FROM events"
                        " WHERE stream_id = %s ORDER BY stream_version",
                        (f"ticket-{tid}",),
                    )
                    events = cur.fetchall()
            finally:
                data.close()
            assert [(t, m.get("card_numbers_redacted"), r) for t, m, r in events] == [
                ("ticket_created", 3, 3),
                ("message_added", 2, 2),
                ("message_added", 1, 1),
            ]

            # Let the relays publish everything, then read what the broker carried.
            def published(received) -> bool:
                types = {e["type"] for _, e in received if e["source"] == "tickets"}
                return {"ticket_created", "message_added", "ticket_viewed"} <= types

            carried = observer.until(published)
            for raw, _ in carried:
                assert all(n not in digits_only_runs(raw) for n in needles)

            for service, purpose in (
                ("tickets", ""),
                ("tickets", "keys"),
                ("accounts", ""),
                ("gateway", ""),
            ):
                columns, found = places_holding(
                    own.settings.database_dsn(service, purpose), needles
                )
                assert found == [], (service, purpose)
                if purpose == "":
                    assert ("outbox", "body") in columns, service
        finally:
            observer.close()
    out, err = capfd.readouterr()
    logged = digits_only_runs(out + err)
    # The services' logs were captured here (tickets' relay says when it became active)...
    assert '"service":"tickets","logger":"kernel.relay","message":"relayactivefor' in logged
    # ...and none of them holds a full number.
    assert all(n not in logged for n in needles)


def test_a_card_number_in_a_tag_is_refused_or_never_stored(stack):
    me = tenant(stack)
    requester = create_contact(stack, me["key"])["id"]
    ticket = open_ticket(stack, me["key"], requester)
    created = stack.call(
        "POST",
        "/v1/tickets",
        key=me["key"],
        json={"subject": "s", "body": "b", "requester_id": requester, "tags": [VISA]},
    )
    changed = patch(stack, me["key"], ticket["id"], '"1"', tags=["5555-5555-5555-4444"])
    for answer in (created, changed):
        assert answer.status_code in (200, 201, 422), answer.text
        assert all(n not in digits_only_runs(answer.text) for n in (VISA, MASTERCARD))
    for service in ("tickets", "gateway"):
        _, found = places_holding(stack.settings.database_dsn(service), [VISA, MASTERCARD])
        assert found == [], service


def test_a_card_number_in_a_ticket_url_is_recorded_nowhere(stack):
    me = tenant(stack)
    for path in ("/v1/tickets/{n}", "/v1/tickets/{n}/messages"):
        for method, kwargs in (
            ("GET", {}),
            ("PATCH", {"json": {"status": "open"}, "headers": {"If-Match": '"1"'}}),
            ("POST", {"json": {"body": "hi"}}),
        ):
            url = path.format(n="4111-1111-1111-1111")
            answer = stack.call(method, url, key=me["key"], **kwargs)
            assert answer.status_code in (404, 405), (method, url, answer.text)
    _, found = places_holding(stack.settings.database_dsn("gateway"), [VISA])
    assert found == []
