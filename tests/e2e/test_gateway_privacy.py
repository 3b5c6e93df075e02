"""What the gateway keeps and records, over real HTTP against the whole platform: stored
responses without plaintext that erasure reaches, access records naming everyone an answer
showed, and a cancelled tenant's way to take its data out during the grace."""

from __future__ import annotations

from typing import Any

from kernel.testing import wait_until
from tests.e2e.conftest import Stack
from tests.e2e.helpers import completed, file, make_contact, rows, traced, unique


def make_ticket(stack: Stack, key: str, requester: str, words: str, **headers: str) -> dict:
    response = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": words, "body": f"{words}, in detail", "requester_id": requester},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def idempotency_table(stack: Stack) -> str:
    """The gateway's stored responses as a dump shows them: every column, bytes decoded."""
    return "\n".join(
        " ".join(bytes(v).decode("latin-1") if isinstance(v, memoryview) else str(v) for v in row)
        for row in rows(stack, "gateway", "SELECT * FROM idempotency_keys")
    )


def recorded(stack: Stack, trace_ids: set[str]) -> bool:
    found = rows(
        stack,
        "audit",
        "SELECT convert_from(content, 'UTF8')::jsonb -> 'payload' ->> 'trace_id'"
        " FROM ledger_entries_all"
        " WHERE type = 'access_logged'"
        " AND convert_from(content, 'UTF8')::jsonb -> 'payload' ->> 'trace_id' = ANY(%s)",
        list(trace_ids),
    )
    return {row[0] for row in found} == trace_ids


def who_accessed(stack: Stack, key: str, subject: str) -> dict[str, dict[str, Any]]:
    """The subject's "who accessed my data" view: its access entries, by trace id."""
    entries: dict[str, dict[str, Any]] = {}
    params: dict[str, str] = {"type": "access_logged", "limit": "200"}
    while True:
        page = stack.call("GET", f"/v1/audit/subjects/{subject}/entries", key=key, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        entries.update({e["payload"]["trace_id"]: e for e in body["items"]})
        if not body["next_cursor"]:
            return entries
        params = {**params, "cursor": body["next_cursor"]}


# --- finding 8: staff reads name everyone their answer showed -------------------------------------


def test_who_accessed_a_contact_lists_list_reads_an_update_and_the_export_download(stack):
    created = stack.sign_up()
    key, admin = created["api_key"], created["agent"]["id"]
    carol = make_contact(stack, key, "Carol Listed")
    make_contact(stack, key, "Dave Alongside")
    ticket = make_ticket(stack, key, carol["id"], "Carol's parcel")
    access = file(stack, key, {"type": "access", "subject": {"contact_id": carol["id"]}})
    assert completed(stack, key, access["id"])["status"] == "completed"

    reads = {
        "contact list": traced(stack, "GET", "/v1/contacts", key),
        "ticket list": traced(stack, "GET", "/v1/tickets", key),
        # It answers with the whole ticket, internal notes and all.
        "ticket update": traced(
            stack,
            "PATCH",
            f"/v1/tickets/{ticket['id']}",
            key,
            json={"priority": "high"},
            headers={"If-Match": f'"{ticket["version"]}"'},
        ),
        "export download": traced(stack, "GET", f"/v1/privacy/requests/{access['id']}/export", key),
    }
    for what, (response, _) in reads.items():
        assert response.status_code == 200, (what, response.text)
    traces = {what: trace for what, (_, trace) in reads.items()}
    wait_until(
        lambda: recorded(stack, set(traces.values())),
        timeout=60,
        what="the four requests' access entries in the ledger",
    )

    view = who_accessed(stack, key, carol["id"])

    missing = [what for what, trace in traces.items() if trace not in view]
    assert missing == [], f"the subject's view misses: {missing}"
    for what, trace in traces.items():
        assert view[trace]["actor_id"] == admin, what
        assert carol["id"] in view[trace]["payload"]["resource_ids"], what
    # A list names everyone on the page, and the export the person it is about.
    listed = view[traces["contact list"]]["payload"]
    assert listed["route"] == "/v1/contacts" and listed["omitted_ids"] == 0

    # The subject's export says so too: its staff reads include them.
    again = file(stack, key, {"type": "access", "subject": {"contact_id": carol["id"]}})
    document = stack.call("GET", f"/v1/privacy/requests/{again['id']}/export", key=key).json()
    routes = {r["what"] for r in document["services"]["audit"]["staff_reads"]}
    assert {
        "/v1/contacts",
        "/v1/tickets",
        "/v1/tickets/<string:ticket_id>",
        "/v1/privacy/requests/<string:request_id>/export",
    } <= routes


# --- finding 11: a cancelled tenant takes its data out during the grace --------------------------


def test_a_cancelled_tenant_files_access_requests_and_downloads_their_exports(stack):
    created = stack.sign_up()
    key = created["api_key"]
    eve = make_contact(stack, key, "Eve Leaving")
    make_ticket(stack, key, eve["id"], "Eve's last order")
    other = stack.sign_up()
    assert stack.call("DELETE", "/v1/tenant", key=key).status_code == 202

    filed = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key,
        json={"type": "access", "subject": {"contact_id": eve["id"]}},
    )
    assert filed.status_code == 202, filed.text
    request_id = filed.json()["id"]
    assert completed(stack, key, request_id)["status"] == "completed"
    listed = stack.call("GET", "/v1/privacy/requests", key=key)
    assert listed.status_code == 200 and request_id in {r["id"] for r in listed.json()["items"]}
    export = stack.call("GET", f"/v1/privacy/requests/{request_id}/export", key=key)
    assert export.status_code == 200, export.text
    document = export.json()
    assert document["subject_id"] == eve["id"]
    assert document["services"]["accounts"]["contact"]["email"] == eve["email"]
    [requested] = document["services"]["tickets"]["tickets_requested"]
    assert requested["subject"] == "Eve's last order"
    assert "stored_api_responses" in document["services"]["gateway"]

    # What is not an export stays refused, and says what is possible.
    refused = stack.call("POST", "/v1/contacts", key=key, json={"name": "X", "email": "x@x.io"})
    assert refused.status_code == 403
    assert "access requests" in refused.json()["detail"]
    for body in (
        {"type": "erasure", "subject": {"contact_id": eve["id"]}},
        {"type": "restriction", "subject": {"contact_id": eve["id"]}},
    ):
        answer = stack.call("POST", "/v1/privacy/requests", key=key, json=body)
        assert answer.status_code == 403, answer.text
        assert "only access requests" in answer.json()["detail"]

    # Strangers get nothing: no key, another tenant's key, another tenant's ids.
    path = f"/v1/privacy/requests/{request_id}/export"
    assert stack.call("GET", path).status_code == 401
    assert stack.call("GET", path, key=other["api_key"]).status_code == 404
    theirs = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=other["api_key"],
        json={"type": "access", "subject": {"contact_id": eve["id"]}},
    )
    assert theirs.status_code == 404
    assert (
        stack.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "access", "subject": {"agent_id": other["agent"]["id"]}},
        ).status_code
        == 404
    )

    # Reactivated, the tenant may do everything again.
    assert stack.call("POST", "/v1/tenant/reactivate", key=key).status_code == 200
    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": eve["id"]}})
    assert erasure["type"] == "erasure"


def test_a_cancelled_tenant_s_access_request_held_for_approval_can_be_approved(stack):
    created = stack.sign_up()
    key = created["api_key"]
    second = stack.call(
        "POST",
        "/v1/agents",
        key=key,
        json={"name": "Second Admin", "email": f"{unique('second')}@example.com", "role": "admin"},
    )
    assert second.status_code == 201, second.text
    other_admin = stack.claim_key(second.json()["api_key"])
    policy = {"requires_approval": ["access", "erasure"]}
    assert stack.call("PUT", "/v1/privacy/approval-policy", key=key, json=policy).ok
    fay = make_contact(stack, key, "Fay Held")
    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": fay["id"]}})
    assert stack.call("DELETE", "/v1/tenant", key=key).status_code == 202

    access = file(stack, key, {"type": "access", "subject": {"contact_id": fay["id"]}})
    assert access["status"] == "awaiting_approval"
    approved = stack.call(
        "POST",
        f"/v1/privacy/requests/{access['id']}/approve",
        key=other_admin,
        json={"reason": "the customer is leaving and takes its data"},
    )
    assert approved.status_code == 200, approved.text
    assert completed(stack, key, access["id"])["status"] == "completed"
    export = stack.call("GET", f"/v1/privacy/requests/{access['id']}/export", key=key)
    assert export.status_code == 200 and export.json()["subject_id"] == fay["id"]
    # The erasure filed before the cancellation waits: deciding it is not an export.
    held = stack.call(
        "POST",
        f"/v1/privacy/requests/{erasure['id']}/approve",
        key=other_admin,
        json={"reason": "tidy up"},
    )
    assert held.status_code == 403 and "only access requests" in held.json()["detail"]


# --- finding 2: stored responses hold no plaintext, and erasure reaches them ----------------------


def test_stored_responses_hold_no_plaintext_and_go_with_the_erasure_of_whom_they_name(stack):
    created = stack.sign_up()
    key = created["api_key"]
    name, words = unique("Zed Canary"), unique("zed-canary-words")
    contact_key, ticket_key, message_key = (unique("idem") for _ in range(3))
    zed = make_contact(stack, key, name, **{"Idempotency-Key": contact_key})
    ticket = make_ticket(stack, key, zed["id"], words, **{"Idempotency-Key": ticket_key})
    reply = stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": f"{words} reply"},
        headers={"Idempotency-Key": message_key},
    )
    assert reply.status_code == 201, reply.text
    kept = make_contact(stack, key, "Yan Kept", **{"Idempotency-Key": unique("idem")})

    # An auditor dumping the gateway's database finds no name, e-mail or ticket text.
    dumped = idempotency_table(stack)
    for canary in (name, zed["email"], words, "Yan Kept", kept["email"]):
        assert canary not in dumped
    # A message names its ticket's requester, so the requester's erasure reaches it too.
    assert reply.json()["requester_id"] == zed["id"]
    # The owner's retry (the same body) still gets the first answer; another tenant's same key
    # is its own.
    replay = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": name, "email": zed["email"], "phone": zed["phone"]},
        headers={"Idempotency-Key": contact_key},
    )
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == zed
    stranger = stack.sign_up()["api_key"]
    theirs = stack.call(
        "POST",
        "/v1/contacts",
        key=stranger,
        json={"name": name, "email": zed["email"], "phone": zed["phone"]},
        headers={"Idempotency-Key": contact_key},
    )
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != zed["id"]

    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": zed["id"]}})
    result = completed(stack, key, erasure["id"])

    assert result["status"] == "completed"
    assert result["services"]["gateway"]["status"] == "done"
    assert result["services"]["gateway"]["detail"] == "3 stored API responses naming them deleted"
    tenant = created["tenant"]["id"]
    left = rows(
        stack,
        "gateway",
        "SELECT count(*) FILTER (WHERE %s = ANY(subject_ids)), count(*) FROM idempotency_keys"
        " WHERE tenant_id = %s",
        zed["id"],
        tenant,
    )
    # Zed's three are gone; Yan's stays until its day is up.
    assert left == [(0, 1)]
