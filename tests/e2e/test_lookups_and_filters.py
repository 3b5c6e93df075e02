"""Finding people and tickets over the running platform: a contact by e-mail or phone and an
agent by e-mail through blind indexes (keyed hashes under the tenant's key, never the values),
the ticket list's filters and their pages, and what a lookup leaves: an access record naming
whom it returned, and its value nowhere (no log line, span, access record, ledger entry or
database row holds it). Erasure and destruction take the index rows with them."""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.testing import Infrastructure, wait_until
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    access_log,
    admin,
    assert_problem,
    audit_holds,
    completed,
    create_agent,
    file,
    logged_line,
    ok,
    recorded_trace_ids,
    rows,
    stack_logging_to,
    traced,
)
from tests.support import sweep


@pytest.fixture(scope="module")
def logged(infrastructure: Infrastructure, tmp_path_factory) -> Iterator[tuple[Stack, Path]]:
    """A stack whose processes write their logs and exported spans to one file, with a grace
    of seconds so a cancelled tenant is destroyed within a test."""
    log = tmp_path_factory.mktemp("lookup-logs") / "services.log"
    with stack_logging_to(
        infrastructure,
        log,
        LEDGERDESK_GRACE_DAYS="0.0001",
        LEDGERDESK_SCHEDULE_SECONDS="1",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
        LEDGERDESK_TRACES="console",
        # Lists are paged one item at a time here: the point is the answers, not the limiter.
        LEDGERDESK_RATE_LIMIT="100000",
        LEDGERDESK_RATE_BURST="100000",
    ) as stack:
        yield stack, log


def query(**params: str) -> str:
    return urllib.parse.urlencode(params)


def found(stack: Stack, key: str, path: str, **params: str) -> list[str]:
    """The ids a list answers with, every page of it (limit 1: the cursors are used too)."""
    ids: list[str] = []
    cursor = ""
    while True:
        page = ok(stack.call("GET", f"{path}?{query(**params, limit='1', cursor=cursor)}", key=key))
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        cursor = page["next_cursor"]


def contact(stack: Stack, key: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"Contact {secrets.token_hex(3)}", **fields}
    return ok(stack.call("POST", "/v1/contacts", key=key, json=body), 201)


def ticket(stack: Stack, key: str, requester: str, **fields: Any) -> dict[str, Any]:
    body = {"subject": "A question", "body": "About my order", "requester_id": requester}
    return ok(stack.call("POST", "/v1/tickets", key=key, json={**body, **fields}), 201)


def patch(stack: Stack, key: str, item: dict[str, Any], path: str, **changes: Any) -> dict:
    headers = {"If-Match": f'"{item["version"]}"'}
    return ok(stack.call("PATCH", f"{path}/{item['id']}", key=key, json=changes, headers=headers))


def mailbox() -> str:
    return f"lookup-{secrets.token_hex(6)}@example.com"


# --- contacts and agents by e-mail and phone ---------------------------------------------------


def test_a_contact_is_found_by_any_spelling_of_their_email_or_phone_in_their_tenant_only(logged):
    stack, _ = logged
    key, _ = admin(stack)
    other_key, _ = admin(stack)
    email = mailbox()
    ada = contact(stack, key, email=email.upper(), phone="+44 20 7946 0958")
    twin = contact(stack, key, email=email)
    contact(stack, key, email=mailbox(), phone="020 7946 0958")
    elsewhere = contact(stack, other_key, email=email, phone="+44 20 7946 0958")

    assert found(stack, key, "/v1/contacts", email=f"  {email.title()} ") == [ada["id"], twin["id"]]
    assert found(stack, key, "/v1/contacts", phone="+44 (20) 7946-0958") == [ada["id"]]
    assert found(stack, key, "/v1/contacts", phone="+442079460958", email=email) == [ada["id"]]
    assert found(stack, key, "/v1/contacts", email=mailbox()) == []
    # Another tenant's contact with the very same address and number: never found here.
    assert found(stack, other_key, "/v1/contacts", email=email) == [elsewhere["id"]]
    assert elsewhere["id"] not in found(stack, key, "/v1/contacts", email=email)

    # A rectification replaces the index entry: the old address finds no one.
    new_email = mailbox()
    patch(stack, key, ada, "/v1/contacts", email=new_email)
    assert found(stack, key, "/v1/contacts", email=email) == [twin["id"]]
    assert found(stack, key, "/v1/contacts", email=new_email.upper()) == [ada["id"]]


def test_a_name_prefix_and_changes_since_a_moment(logged):
    stack, _ = logged
    key, _ = admin(stack)
    grace = contact(stack, key, name="Grace Hopper", email=mailbox())
    graham = contact(stack, key, name="graham Bell", email=mailbox())
    ada = contact(stack, key, name="Ada Lovelace", email=mailbox())
    assert found(stack, key, "/v1/contacts", name_prefix="GRA") == [grace["id"], graham["id"]]
    assert found(stack, key, "/v1/contacts", name_prefix="gra%") == []

    listed = ok(stack.call("GET", "/v1/contacts?limit=200", key=key))["items"]
    since = next(c for c in listed if c["id"] == graham["id"])["updated_at"]
    patch(stack, key, grace, "/v1/contacts", phone="+1 555 0100")
    # In the order they changed: Graham and Ada as created, then Grace's change.
    assert found(stack, key, "/v1/contacts", updated_since=since) == [
        graham["id"],
        ada["id"],
        grace["id"],
    ]


def test_an_admin_finds_an_agent_by_email_and_an_agent_may_not(logged):
    stack, _ = logged
    key, created = admin(stack)
    email = mailbox()
    made = create_agent(stack, key, email=email)
    assert found(stack, key, "/v1/agents", email=email.upper()) == [made["id"]]
    assert found(stack, key, "/v1/agents", email=mailbox()) == []
    assert found(stack, key, "/v1/agents", email=created["agent"]["email"]) == [
        created["agent"]["id"]
    ]
    refused = stack.call("GET", f"/v1/agents?{query(email=email)}", key=made["api_key"])
    assert_problem(refused, 403)


def test_a_lookup_is_recorded_with_whom_it_found_and_its_value_is_kept_nowhere(logged):
    stack, log = logged
    key, created = admin(stack)
    email, phone = (
        mailbox(),
        f"+44 20 {secrets.randbelow(10**4):04d} {secrets.randbelow(10**4):04d}",
    )
    carol = contact(stack, key, email=email, phone=phone)
    agent = create_agent(stack, key)
    missing = f"never-{secrets.token_hex(6)}@example.com"
    user_agent = f"lookup-client-{secrets.token_hex(4)}"
    headers = {"User-Agent": user_agent}

    with access_log(stack) as tap:
        hit, hit_trace = traced(
            stack, "GET", f"/v1/contacts?{query(email=email)}", key=key, headers=headers
        )
        by_phone, phone_trace = traced(
            stack, "GET", f"/v1/contacts?{query(phone=phone)}", key=key, headers=headers
        )
        miss, miss_trace = traced(
            stack, "GET", f"/v1/contacts?{query(email=missing)}", key=key, headers=headers
        )
        of_agent, agent_trace = traced(
            stack, "GET", f"/v1/agents?{query(email=agent['email'])}", key=key, headers=headers
        )
        assert [item["id"] for item in ok(hit)["items"]] == [carol["id"]]
        assert [item["id"] for item in ok(by_phone)["items"]] == [carol["id"]]
        assert ok(miss)["items"] == []
        assert [item["id"] for item in ok(of_agent)["items"]] == [agent["id"]]
        traces = {hit_trace, phone_trace, miss_trace, agent_trace}

        published = tap.until(
            lambda events: traces <= {e["payload"]["trace_id"] for e in events},
            what="the lookups' access-log events",
        )
        events = {
            e["payload"]["trace_id"]: e for _, e in tap.events if e["payload"]["trace_id"] in traces
        }

    # Each lookup is an access record naming whom it returned, by route, never by its query.
    for trace_id, named in (
        (hit_trace, [carol["id"]]),
        (phone_trace, [carol["id"]]),
        (miss_trace, []),
        (agent_trace, [agent["id"]]),
    ):
        payload = events[trace_id]["payload"]
        assert payload["resource_ids"] == named
        assert payload["route"] in ("/v1/contacts", "/v1/agents")
        assert payload["status"] == 200
    wait_until(
        lambda: all(recorded_trace_ids(stack)[t] for t in traces),
        what="the lookups' entries in the audit ledger",
    )

    # The values looked up: in no access record, ledger entry, log line or exported span.
    logged_line(log, agent_trace)

    # Spans are exported in batches: once the lookups' are in the file, everything is.
    def with_their_spans() -> str:
        text = log.read_text(errors="replace")
        return text if all(f"0x{t}" in text for t in traces) else ""

    content = wait_until(with_their_spans, what="the lookups' spans among the exported ones")
    assert re.search(r'^\{\n\s+"name":', content, re.MULTILINE)
    values = (email, phone, missing, agent["email"])
    for value in values:
        assert value not in published
        assert urllib.parse.quote(value) not in published
        assert not audit_holds(stack, value)
        assert value not in content and urllib.parse.quote(value) not in content
    # The gateway keeps nothing of a lookup (idempotency is for writes; a GET is never stored).
    gateway_rows = sweep.find(
        [email, missing],
        (t for t in sweep.database_texts(stack.settings) if t[0][1].endswith("_gateway")),
    )
    assert gateway_rows == {}
    # A value no one has was never stored by anyone, anywhere in the platform.
    assert sweep.find([missing], sweep.database_texts(stack.settings)) == {}
    assert created["tenant"]["id"]  # the caller's tenant, whose key hashed every value


# --- erasure and destruction take the index rows with them -------------------------------------


def test_an_erased_contact_is_found_no_more_and_leaves_no_index_row(logged):
    stack, _ = logged
    key, _ = admin(stack)
    email = mailbox()
    dora = contact(stack, key, email=email, phone="+1 555 0199")
    kept = contact(stack, key, email=mailbox())
    hers = ticket(stack, key, dora["id"], tags=["vip-dora"])
    ticket(stack, key, kept["id"], tags=["vip-dora"])
    assert found(stack, key, "/v1/contacts", email=email) == [dora["id"]]
    assert len(found(stack, key, "/v1/tickets", tag="VIP-dora")) == 2
    digests = "SELECT count(*) FROM lookup_digests WHERE subject_id = %s"
    assert rows(stack, "accounts", digests, dora["id"]) == [(2,)]
    tag_digests = "SELECT count(*) FROM ticket_tag_digests WHERE ticket_id = %s"
    assert rows(stack, "tickets", tag_digests, hers["id"]) == [(1,)]

    # A client in step up to now: the erasure is a change it will see.
    def newest(path: str) -> str:
        return max(i["updated_at"] for i in ok(stack.call("GET", path, key=key))["items"])

    contacts_since = newest("/v1/contacts?limit=200")
    tickets_since = newest("/v1/tickets?limit=200")

    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": dora["id"]}})
    assert completed(stack, key, filed["id"])["status"] == "completed"
    changed = ok(
        stack.call(
            "GET",
            f"/v1/contacts?{query(updated_since=contacts_since, limit='200')}",
            key=key,
        )
    )["items"]
    assert [(c["id"], c["name"]) for c in changed if c["id"] == dora["id"]] == [
        (dora["id"], "[erased]")
    ]
    assert hers["id"] in found(stack, key, "/v1/tickets", updated_since=tickets_since)

    assert found(stack, key, "/v1/contacts", email=email) == []
    assert found(stack, key, "/v1/contacts", phone="+15550199") == []
    assert hers["id"] not in found(stack, key, "/v1/tickets", tag="vip-dora")
    assert rows(stack, "accounts", digests, dora["id"]) == [(0,)]
    assert rows(stack, "tickets", tag_digests, hers["id"]) == [(0,)]
    assert found(stack, key, "/v1/contacts", email=kept["email"]) == [kept["id"]]


def test_a_destroyed_tenants_index_rows_are_gone_and_their_key_shredded(logged):
    stack, _ = logged
    key, created = admin(stack)
    tenant_id = created["tenant"]["id"]
    doomed = contact(stack, key, email=mailbox(), phone="+1 555 0142")
    ticket(stack, key, doomed["id"], tags=["doomed-tag"])
    count = "SELECT count(*) FROM {} WHERE tenant_id = %s"
    # The contact's address and number, and the admin's address.
    assert rows(stack, "accounts", count.format("lookup_digests"), tenant_id) == [(3,)]
    assert rows(stack, "tickets", count.format("ticket_tag_digests"), tenant_id) == [(1,)]

    assert stack.call("DELETE", "/v1/tenant", key=key).status_code == 202
    wait_until(
        lambda: stack.call("GET", "/v1/tenant", key=key).status_code == 401,
        timeout=60,
        what="the destroyed tenant's keys to stop working",
    )
    for service, table in (("accounts", "lookup_digests"), ("tickets", "ticket_tag_digests")):
        wait_until(
            lambda service=service, table=table: (
                rows(stack, service, count.format(table), tenant_id) == [(0,)]
            ),
            what=f"{service}'s index rows of the destroyed tenant to go",
        )
        # The key every digest of the tenant was made with, and could be checked against.
        shredded = "SELECT wrapped_key IS NULL FROM tenant_keys WHERE tenant_id = %s"
        assert rows(stack, service, shredded, tenant_id, purpose="keys") == [(True,)]


# --- the ticket list's filters and pages -------------------------------------------------------


def test_tickets_are_narrowed_by_every_filter_and_paged_with_them(logged):
    stack, _ = logged
    key, created = admin(stack)
    me = created["agent"]["id"]
    alice, bob = contact(stack, key, email=mailbox()), contact(stack, key, email=mailbox())
    t1 = ticket(stack, key, alice["id"], priority="high", tags=["vip"])
    t2 = ticket(stack, key, bob["id"], priority="low")
    t3 = ticket(stack, key, alice["id"], priority="high", tags=["VIP", "refund"])
    t4 = ticket(stack, key, bob["id"], tags=["refund"])
    t2 = patch(stack, key, t2, "/v1/tickets", assignee_id=me)
    t3 = patch(stack, key, t3, "/v1/tickets", status="open")
    every = [t["id"] for t in (t1, t2, t3, t4)]

    assert found(stack, key, "/v1/tickets") == every
    assert found(stack, key, "/v1/tickets", tag="vip") == [t1["id"], t3["id"]]
    assert found(stack, key, "/v1/tickets", tag="Refund", priority="high") == [t3["id"]]
    assert found(stack, key, "/v1/tickets", priority="low") == [t2["id"]]
    assert found(stack, key, "/v1/tickets", status="open") == [t3["id"]]
    assert found(stack, key, "/v1/tickets", assignee_id=me) == [t2["id"]]
    assert found(stack, key, "/v1/tickets", requester_id=alice["id"]) == [t1["id"], t3["id"]]
    assert found(
        stack, key, "/v1/tickets", created_after=t2["created_at"], created_before=t4["created_at"]
    ) == [t2["id"], t3["id"]]
    assert found(stack, key, "/v1/tickets", updated_after=t3["updated_at"]) == [t3["id"]]
    assert found(stack, key, "/v1/tickets", updated_before=t2["updated_at"]) == [
        t1["id"],
        t4["id"],
    ]
    # Empty values are no filter, as they always were here.
    assert found(stack, key, "/v1/tickets", status="", tag="", updated_since="") == every

    # A cursor is a position: with other filters it goes on with what they find after it.
    first = ok(stack.call("GET", f"/v1/tickets?{query(tag='vip', limit='1')}", key=key))
    assert [i["id"] for i in first["items"]] == [t1["id"]]
    rest = ok(
        stack.call(
            "GET", f"/v1/tickets?{query(tag='refund', cursor=first['next_cursor'])}", key=key
        )
    )
    assert [i["id"] for i in rest["items"]] == [t3["id"], t4["id"]]
    # ... but not in another order: updated_since pages as tickets changed.
    other_order = stack.call(
        "GET",
        f"/v1/tickets?{query(updated_since=t1['created_at'], cursor=first['next_cursor'])}",
        key=key,
    )
    # A well-formed position, in the other order: a conflict with the request's order.
    assert "another order" in assert_problem(other_order, 409)["detail"]


def test_a_client_in_step_sees_a_change_made_while_it_pages(logged):
    stack, _ = logged
    key, _ = admin(stack)
    requester = contact(stack, key, email=mailbox())["id"]
    made = [ticket(stack, key, requester) for _ in range(3)]
    since = made[0]["created_at"]
    page = ok(stack.call("GET", f"/v1/tickets?{query(updated_since=since, limit='2')}", key=key))
    assert [i["id"] for i in page["items"]] == [made[0]["id"], made[1]["id"]]
    changed = patch(stack, key, made[0], "/v1/tickets", priority="urgent")
    rest = ok(
        stack.call(
            "GET",
            f"/v1/tickets?{query(updated_since=since, cursor=page['next_cursor'])}",
            key=key,
        )
    )
    # The ticket changed behind the cursor comes again, after the others: never missed.
    assert [(i["id"], i["priority"]) for i in rest["items"]] == [
        (made[2]["id"], "normal"),
        (changed["id"], "urgent"),
    ]
    created_order = stack.call("GET", f"/v1/tickets?{query(cursor=page['next_cursor'])}", key=key)
    assert "another order" in assert_problem(created_order, 409)["detail"]


# --- bad input ---------------------------------------------------------------------------------

LONG_EMAIL = "a" * 320 + "@example.com"
BAD = [
    ("/v1/contacts", {"email": "not-an-address"}, "email"),
    ("/v1/contacts", {"email": ""}, "email"),
    ("/v1/contacts", {"email": LONG_EMAIL}, "email"),
    ("/v1/contacts", {"phone": "call me maybe"}, "phone"),
    ("/v1/contacts", {"phone": ""}, "phone"),
    ("/v1/contacts", {"name_prefix": "x" * 201}, "name_prefix"),
    ("/v1/contacts", {"updated_since": "yesterday"}, "updated_since"),
    ("/v1/contacts", {"emial": "typo@example.com"}, "emial"),
    ("/v1/agents", {"email": "nobody"}, "email"),
    ("/v1/tickets", {"status": "later"}, "status"),
    ("/v1/tickets", {"priority": "extreme"}, "priority"),
    ("/v1/tickets", {"assignee_id": "me"}, "assignee_id"),
    ("/v1/tickets", {"tag": "two,tags"}, "tag"),
    ("/v1/tickets", {"tag": "t" * 51}, "tag"),
    ("/v1/tickets", {"created_after": "2026-13-01T00:00:00Z"}, "created_after"),
    ("/v1/tickets", {"created_before": "2026-01-01"}, "created_before"),
    ("/v1/tickets", {"updated_since": "0001-01-01T00:00:00+14:00"}, "updated_since"),
    ("/v1/tickets", {"colour": "red"}, "colour"),
]


@pytest.fixture(scope="module")
def admin_key(logged) -> str:
    return admin(logged[0])[0]


def test_a_range_that_holds_no_time_lists_nothing(logged, admin_key):
    # Not a 422: a rule across two parameters no OpenAPI document can state.
    stack = logged[0]
    requester = contact(stack, admin_key, email=f"{secrets.token_hex(4)}@example.com")
    made = ticket(stack, admin_key, requester["id"])
    moment = made["updated_at"]
    assert made["id"] in found(stack, admin_key, "/v1/tickets", updated_after=moment)
    empty = found(stack, admin_key, "/v1/tickets", updated_after=moment, updated_before=moment)
    assert empty == []


@pytest.mark.parametrize("path, params, field", BAD, ids=[f"{p}-{f}" for p, _, f in BAD])
def test_bad_input_is_a_422_naming_the_field(logged, admin_key, path, params, field):
    stack, key = logged[0], admin_key
    response = stack.call("GET", f"{path}?{query(**params)}", key=key)
    assert set(assert_problem(response, 422)["errors"]) == {field}
    for value in params.values():
        if "@" in value:
            assert value not in response.text  # a refused address is not echoed either


def test_a_filter_given_twice_is_refused(logged, admin_key):
    stack, key = logged[0], admin_key
    response = stack.call("GET", "/v1/tickets?tag=a&tag=b", key=key)
    assert assert_problem(response, 422)["errors"] == {"tag": ["give it once"]}
