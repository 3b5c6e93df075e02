"""Search over real HTTP, against the whole platform running as processes: what it finds and for
whom, what it refuses, what it records and never records, and how erasure and destruction reach
its index.

The index is tickets' ``search_terms``: keyed hashes under the tenant's key, never a word. The
stack's output goes to a log file, so the tests can show that a query is in no log line or span.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kernel.testing import Infrastructure, wait_until
from services.tickets import search_index
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    assert_problem,
    completed,
    create_agent,
    file,
    make_contact,
    ok,
    rows,
    stack_logging_to,
    tickets_blind_index,
    traced,
)
from tests.support import sweep


@pytest.fixture(scope="module")
def logged(infrastructure: Infrastructure, tmp_path_factory) -> Iterator[tuple[Stack, Path]]:
    log = tmp_path_factory.mktemp("search-logs") / "services.log"
    with stack_logging_to(
        infrastructure,
        log,
        # A cancelled tenant is destroyed after a few seconds, not weeks.
        LEDGERDESK_GRACE_DAYS="0.0001",
        LEDGERDESK_SCHEDULE_SECONDS="1",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
        LEDGERDESK_TRACES="console",
    ) as stack:
        yield stack, log


@pytest.fixture
def stack(logged) -> Stack:
    return logged[0]


@pytest.fixture(scope="module")
def searcher(logged) -> str:
    """An admin's key, for the requests that need nothing of their own."""
    return logged[0].sign_up()["api_key"]


def word(prefix: str) -> str:
    """A word no other ticket of the stack holds, in its normalised (lower-case) form."""
    return f"{prefix}{secrets.token_hex(4)}"


def search(stack: Stack, key: str, q: str, **params: Any) -> requests.Response:
    return stack.call("GET", "/v1/search", key=key, params={"q": q, **params})


def found(stack: Stack, key: str, q: str, **params: Any) -> list[str]:
    return [item["id"] for item in ok(search(stack, key, q, **params))["items"]]


def ticket(stack: Stack, key: str, requester: str, subject: str, body: str) -> dict[str, Any]:
    body_ = {"subject": subject, "body": body, "requester_id": requester}
    return ok(stack.call("POST", "/v1/tickets", key=key, json=body_), 201)


def note(stack: Stack, key: str, ticket_id: str, text: str, internal: bool = False) -> None:
    body = {"body": text, "internal": internal}
    ok(stack.call("POST", f"/v1/tickets/{ticket_id}/messages", key=key, json=body), 201)


def index_rows(stack: Stack, column: str, value: str) -> int:
    query = f"SELECT count(*) FROM search_terms WHERE {column} = %s"  # noqa: S608
    return rows(stack, "tickets", query, value)[0][0]


def test_words_of_subjects_messages_and_notes_are_found_notes_by_staff_only(stack):
    created = stack.sign_up()
    key = created["api_key"]
    agent_key = create_agent(stack, key, "agent")["api_key"]
    auditor_key = create_agent(stack, key, "auditor")["api_key"]
    subject_word, reply_word, note_word = word("quokka"), word("marzipan"), word("lemming")
    contact = make_contact(stack, key, "Quinn Searcher")
    first = ticket(stack, key, contact["id"], f"Printer {subject_word} jammed", "It jams.")
    note(stack, key, first["id"], f"The toner smells of {reply_word}")
    note(stack, key, first["id"], f"Suspect {note_word} sabotage", internal=True)

    for staff in (key, agent_key):
        assert found(stack, staff, subject_word) == [first["id"]]
        assert found(stack, staff, reply_word) == [first["id"]]
        assert found(stack, staff, note_word) == [first["id"]]  # admins and agents read notes
    # The auditor reads no ticket, so finds none: not by a note's word, not by any other.
    for q in (note_word, subject_word):
        assert_problem(search(stack, auditor_key, q), 403)

    # By its first letters, three or more, whatever the case.
    assert found(stack, key, subject_word[:3].upper()) == [first["id"]]
    assert found(stack, key, reply_word[:4]) == [first["id"]]

    # Ranked: more of the query's words first, then the newest.
    second = ticket(stack, key, contact["id"], f"{subject_word} again", f"{reply_word} too")
    third = ticket(stack, key, contact["id"], f"{subject_word} once more", "nothing else")
    answer = ok(search(stack, key, f"{subject_word} {reply_word}"))
    ranked = [(item["id"], item["matched_terms"]) for item in answer["items"]]
    assert ranked == [(second["id"], 2), (first["id"], 2), (third["id"], 1)]
    assert answer["terms_left_out"] == 0 and answer["next_cursor"] is None
    item = answer["items"][0]
    assert item["subject"] == f"{subject_word} again" and item["requester_id"] == contact["id"]
    # Page by page, on that order.
    page = ok(search(stack, key, f"{subject_word} {reply_word}", limit=2))
    assert [i["id"] for i in page["items"]] == [second["id"], first["id"]]
    rest = ok(search(stack, key, f"{subject_word} {reply_word}", cursor=page["next_cursor"]))
    assert [i["id"] for i in rest["items"]] == [third["id"]] and rest["next_cursor"] is None
    # Narrowed to a status.
    patched = stack.call(
        "PATCH",
        f"/v1/tickets/{third['id']}",
        key=key,
        json={"status": "open"},
        headers={"If-Match": f'"{third["version"]}"'},
    )
    assert ok(patched)["status"] == "open"
    assert found(stack, key, subject_word, status="open") == [third["id"]]

    # A new subject: its words are found, the old subject's no longer.
    renamed_word = word("wallaby")
    current = stack.call("GET", f"/v1/tickets/{first['id']}", key=key)
    renamed = stack.call(
        "PATCH",
        f"/v1/tickets/{first['id']}",
        key=key,
        json={"subject": f"Printer {renamed_word}"},
        headers={"If-Match": current.headers["ETag"]},
    )
    assert ok(renamed)["subject"] == f"Printer {renamed_word}"
    assert found(stack, key, renamed_word) == [first["id"]]
    assert first["id"] not in found(stack, key, subject_word)
    assert found(stack, key, reply_word) == [second["id"], first["id"]]  # its reply stays

    # Another tenant never finds them, nor they its words.
    other = stack.sign_up()
    other_contact = make_contact(stack, other["api_key"], "Otto Other")
    theirs = ticket(stack, other["api_key"], other_contact["id"], f"{subject_word}", "theirs")
    assert found(stack, other["api_key"], f"{subject_word} {reply_word} {note_word}") == [
        theirs["id"]
    ]
    assert theirs["id"] not in found(stack, key, subject_word)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "refund " * 40}, "q"),  # over 200 characters
        ({"q": "ab cd e"}, "q"),  # only words shorter than 3 letters
        ({"q": "*"}, "q"),  # a wildcard alone
        ({"q": '"" * ? % _ | & -'}, "q"),  # operators alone
        ({"q": " ".join(f"word{n}" for n in range(9))}, "q"),  # too many words
        ({"q": "refund", "status": "lost"}, "status"),
        ({"q": "refund", "limit": "201"}, "limit"),
        ({"q": "refund", "limit": "0"}, "limit"),
        ({"q": "refund", "cursor": "not-a-cursor"}, "cursor"),
        ({"q": "refund", "sort": "newest"}, "sort"),
        ({"q": "card 4111 1111 1111 1111"}, "q"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_never_echoing_the_query(
    stack, searcher, params, field
):
    refused = assert_problem(stack.call("GET", "/v1/search", key=searcher, params=params), 422)
    assert set(refused["errors"]) == {field}, refused
    if params.get("q", "").strip() and field == "q":
        assert params["q"].strip() not in json.dumps(refused)
    assert "4111" not in json.dumps(refused)


def test_a_query_is_stored_nowhere_and_its_access_record_names_the_tickets_returned(logged):
    stack, log = logged
    created = stack.sign_up()
    key = created["api_key"]
    contact = make_contact(stack, key, "Rhea Recorded")
    match = word("pangolin")
    hit = ticket(stack, key, contact["id"], f"A {match} in the warehouse", "Send help")
    canary = word("zqcanary")  # in the query only: matches nothing

    response, trace = traced(stack, "GET", "/v1/search", key, params={"q": f"{match} {canary}"})
    assert [i["id"] for i in ok(response)["items"]] == [hit["id"]]

    def access_record() -> dict[str, Any] | None:
        found_ = rows(
            stack,
            "audit",
            "SELECT convert_from(content, 'UTF8')::jsonb -> 'payload' FROM ledger_entries_all"
            " WHERE type = 'access_logged'"
            " AND convert_from(content, 'UTF8')::jsonb -> 'payload' ->> 'trace_id' = %s",
            trace,
        )
        return found_[0][0] if found_ else None

    record = wait_until(access_record, timeout=60, what="the search's access entry in the ledger")
    assert record["route"] == "/v1/search" and record["status"] == 200
    # The tickets it returned, and whose they are.
    assert {hit["id"], contact["id"]} <= set(record["resource_ids"])
    # The gateway's request line was written (the log is the one searched below).
    wait_until(lambda: trace in log.read_text(errors="replace"), what="the request's log line")

    # Not in any log line or exported span, any row of any database (the ledger, the gateway's
    # idempotency store and outbox, tickets' index), nor any queue.
    everywhere = [*sweep.database_texts(stack.settings), *sweep.file_texts([log])]
    assert sweep.find([canary, match], everywhere) == {}
    # The sweep sees what is there: the contact's name, in accounts' read model.
    assert sweep.find(["Rhea Recorded"], sweep.database_texts(stack.settings))


def test_an_erased_requesters_tickets_no_longer_match_and_leave_no_index_row(stack):
    created = stack.sign_up()
    key = created["api_key"]
    erin = make_contact(stack, key, "Erin Erased")
    fred = make_contact(stack, key, "Fred Kept")
    shared = word("armadillo")
    hers = ticket(stack, key, erin["id"], f"{shared} in the garden", "Erin writes")
    note(stack, key, hers["id"], f"{shared} again, internal", internal=True)
    his = ticket(stack, key, fred["id"], f"{shared} on the roof", "Fred writes")
    assert sorted(found(stack, key, shared)) == sorted([hers["id"], his["id"]])
    assert index_rows(stack, "requester_id", erin["id"]) > 0

    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": erin["id"]}})
    done = completed(stack, key, filed["id"])
    assert done["status"] == "completed" and done["services"]["tickets"]["status"] == "done"

    assert found(stack, key, shared) == [his["id"]]
    assert found(stack, key, "erin") == []
    assert index_rows(stack, "requester_id", erin["id"]) == 0
    assert index_rows(stack, "ticket_id", hers["id"]) == 0
    assert index_rows(stack, "requester_id", fred["id"]) > 0


def test_a_destroyed_tenants_index_rows_are_gone_and_its_key_with_them(stack):
    created = stack.sign_up()
    key, tenant = created["api_key"], created["tenant"]["id"]
    contact = make_contact(stack, key, "Dora Doomed")
    doomed_word = word("narwhal")
    ticket(stack, key, contact["id"], f"{doomed_word} ticket", "to be destroyed")
    assert found(stack, key, doomed_word)
    assert index_rows(stack, "tenant_id", tenant) > 0
    with tickets_blind_index(stack) as blind:
        before = search_index.digests(blind, tenant, [doomed_word], create=False)
        assert before is not None
        digest = before[0]
        held = rows(stack, "tickets", "SELECT count(*) FROM search_terms WHERE digest = %s", digest)
        assert held[0][0] == 1  # its subject; a positive control for the digest computed here

        assert stack.call("DELETE", "/v1/tenant", key=key).status_code == 202
        wait_until(
            lambda: (
                index_rows(stack, "tenant_id", tenant) == 0
                and rows(
                    stack,
                    "tickets",
                    "SELECT wrapped_key IS NULL FROM tenant_keys WHERE tenant_id = %s",
                    tenant,
                    purpose="keys",
                )
                == [(True,)]
            ),
            timeout=90,
            what="the tenant's destruction in tickets",
        )
        # No row of it is left, and no digest of it can be computed again, by anyone.
        assert search_index.digests(blind, tenant, [doomed_word], create=False) is None
        assert search_index.digests(blind, tenant, [doomed_word], create=True) is None
        left = rows(stack, "tickets", "SELECT count(*) FROM search_terms WHERE digest = %s", digest)
        assert left[0][0] == 0
