"""Requests that wait for a second admin's approval, and the list of a tenant's requests."""

from __future__ import annotations

import uuid

from kernel.testing import wait_until
from tests.e2e.helpers import (
    admin,
    completed,
    file,
    make_contact,
    require_approval,
    rows,
    second_admin,
)


def ledger_types(stack, key):
    entries = stack.call("GET", "/v1/audit/entries?limit=200", key=key).json()["items"]
    return [e["type"] for e in entries]


def test_a_request_waits_for_another_admins_approval_then_runs(stack):
    key, _ = admin(stack)
    other = second_admin(stack, key)
    assert stack.call("GET", "/v1/privacy/approval-policy", key=key).json() == {
        "requires_approval": [],
        "source": "default",
    }
    assert require_approval(stack, key, ["erasure"]) == {
        "requires_approval": ["erasure"],
        "source": "tenant",
    }
    contact = make_contact(stack, key, "Ivy Approved")
    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert filed["status"] == "awaiting_approval"
    assert filed["services"] == {} and filed["approval"] is None
    # Nothing was sent: the contact still reads as herself.
    assert stack.call("GET", f"/v1/contacts/{contact['id']}", key=key).json()["name"] == (
        "Ivy Approved"
    )
    # Filed twice while it waits: the same request.
    again = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key,
        json={"type": "erasure", "subject": {"contact_id": contact["id"]}},
    )
    assert again.status_code == 200 and again.json()["id"] == filed["id"]
    # Four eyes: the filer cannot approve their own request.
    own = stack.call(
        "POST", f"/v1/privacy/requests/{filed['id']}/approve", key=key, json={"reason": "ok"}
    )
    assert own.status_code == 409, own.text
    # A reason is required.
    assert (
        stack.call(
            "POST", f"/v1/privacy/requests/{filed['id']}/approve", key=other, json={}
        ).status_code
        == 422
    )
    approved = stack.call(
        "POST",
        f"/v1/privacy/requests/{filed['id']}/approve",
        key=other,
        json={"reason": "identity checked against the signed letter"},
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["approval"]["decision"] == "approved"
    assert body["approval"]["reason"] == "identity checked against the signed letter"
    assert body["status"] == "pending"
    result = completed(stack, key, filed["id"])
    assert result["status"] == "completed"
    assert {a["status"] for a in result["services"].values()} <= {"done", "retained"}
    # Decided once: a second decision is a conflict.
    late = stack.call(
        "POST", f"/v1/privacy/requests/{filed['id']}/deny", key=other, json={"reason": "late"}
    )
    assert late.status_code == 409
    wait_until(
        lambda: "privacy_request_approved" in ledger_types(stack, key),
        what="the approval in the ledger",
    )


def test_a_denied_request_sends_nothing_and_keeps_its_reason(stack):
    key, _ = admin(stack)
    other = second_admin(stack, key)
    require_approval(stack, key, ["erasure", "restriction"])
    contact = make_contact(stack, key, "Jon Denied")
    filed = file(stack, key, {"type": "restriction", "subject": {"contact_id": contact["id"]}})
    assert filed["status"] == "awaiting_approval"
    denied = stack.call(
        "POST",
        f"/v1/privacy/requests/{filed['id']}/deny",
        key=other,
        json={"reason": "the requester could not prove who they are"},
    )
    assert denied.status_code == 200, denied.text
    body = denied.json()
    assert body["status"] == "denied" and body["completed_at"] is not None
    assert body["approval"]["decision"] == "denied"
    assert body["approval"]["reason"] == "the requester could not prove who they are"
    assert body["services"] == {}
    # No command went out: tickets never recorded a restriction for this contact.
    query = "SELECT count(*) FROM restrictions WHERE subject_id = %s"
    assert rows(stack, "tickets", query, contact["id"]) == [(0,)]

    # The ledger has the decision and who made it, never the reason's text.
    def denial_recorded():
        entries = stack.call("GET", "/v1/audit/entries?type=privacy_request_denied", key=key).json()
        return entries if any(filed["id"] in str(e) for e in entries["items"]) else None

    entries = wait_until(denial_recorded, what="the denial in the ledger")
    assert "could not prove" not in str(entries)
    # Once denied, the same request may be filed again (it is no longer open).
    again = file(stack, key, {"type": "restriction", "subject": {"contact_id": contact["id"]}})
    assert again["id"] != filed["id"] and again["status"] == "awaiting_approval"


def test_rectification_cannot_wait_for_approval_and_policy_input_is_checked(stack):
    key, _ = admin(stack)
    for bad in (
        {"requires_approval": ["rectification"]},
        {"requires_approval": ["deletion"]},
        {"requires_approval": "erasure"},
        {},
    ):
        response = stack.call("PUT", "/v1/privacy/approval-policy", key=key, json=bad)
        assert response.status_code == 422, (bad, response.text)
    agent = stack.call(
        "POST",
        "/v1/agents",
        key=key,
        json={
            "name": "Kit Agent",
            "email": f"kit.{uuid.uuid4().hex[:6]}@example.com",
            "role": "agent",
        },
    ).json()["api_key"]
    assert stack.call("GET", "/v1/privacy/approval-policy", key=agent).status_code == 403
    assert stack.call("GET", "/v1/privacy/requests", key=agent).status_code == 403


def test_the_list_of_requests_pages_filters_and_is_tenant_scoped(stack):
    key, _ = admin(stack)
    other_key, _ = admin(stack)
    require_approval(stack, key, ["erasure"])
    contacts = [make_contact(stack, key, f"Lee Listed {n}") for n in range(3)]
    erasures = [
        file(stack, key, {"type": "erasure", "subject": {"contact_id": c["id"]}}) for c in contacts
    ]
    access = file(stack, key, {"type": "access", "subject": {"contact_id": contacts[0]["id"]}})
    first = stack.call("GET", "/v1/privacy/requests?limit=2", key=key).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = stack.call(
        "GET", f"/v1/privacy/requests?limit=2&cursor={first['next_cursor']}", key=key
    ).json()
    ids = [r["id"] for r in first["items"] + rest["items"]]
    assert ids == [*(e["id"] for e in erasures), access["id"]]
    assert rest["next_cursor"] is None
    waiting = stack.call("GET", "/v1/privacy/requests?status=awaiting_approval", key=key).json()
    assert [r["id"] for r in waiting["items"]] == [e["id"] for e in erasures]
    # A page shows each request as reading it alone does, every service's answer included.
    done = completed(stack, key, access["id"])
    assert done["services"]
    listed = stack.call("GET", "/v1/privacy/requests?status=completed", key=key).json()["items"]
    assert listed == [done]
    for item in waiting["items"]:
        assert item == stack.call("GET", f"/v1/privacy/requests/{item['id']}", key=key).json()
    assert stack.call("GET", "/v1/privacy/requests?status=bogus", key=key).status_code == 422
    assert stack.call("GET", "/v1/privacy/requests?status=", key=key).status_code == 422
    assert stack.call("GET", "/v1/privacy/requests", key=other_key).json()["items"] == []
    assert (
        stack.call(
            "POST",
            f"/v1/privacy/requests/{erasures[0]['id']}/deny",
            key=other_key,
            json={"reason": "not yours"},
        ).status_code
        == 404
    )
