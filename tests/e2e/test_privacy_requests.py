"""Data-subject requests across every service, over real HTTP and real processes."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kernel.testing import wait_until
from services import platform
from tests.e2e.helpers import (
    admin,
    completed,
    create_agent,
    file,
    issue_invoices,
    make_contact,
    pg,
)


def dump_all(stack) -> str:
    """Every service database's data, as text, the way a backup would hold it."""
    settings = stack.settings
    return "\n".join(
        pg(
            "pg_dump", settings.database_dsn(name), "--data-only", settings.database_name(name)
        ).stdout.decode()
        for name in [*platform.SERVICES, "gateway"]
    )


def test_erasing_a_contact_reaches_every_service_and_leaves_no_plaintext(stack):
    key, _ = admin(stack)
    carol = make_contact(stack, key, "Carol Quixote")
    dave = make_contact(stack, key, "Dave Untouched")
    ticket = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={
            "subject": "Carol Quixote needs help",
            "body": "From carol: my order",
            "requester_id": carol["id"],
            # Free text staff type, as the subject and body are: gone with her too.
            "tags": ["vip-carol-quixote"],
        },
    ).json()
    stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": "Carol Quixote adds details", "on_behalf_of_requester": True},
    )
    stack.call(
        "PUT",
        f"/v1/contacts/{carol['id']}/consent",
        key=key,
        json={"marketing": True, "source": "kiosk, asked by Carol Quixote's sister"},
    )
    assert stack.call("GET", f"/v1/contacts/{carol['id']}", key=key).status_code == 200

    filed = file(
        stack,
        key,
        {
            "type": "erasure",
            "subject": {"contact_id": carol["id"]},
            "identity_check": "matched the e-mail on file",
        },
    )
    assert filed["status"] == "pending" and filed["type"] == "erasure"
    again = file(stack, key, {"type": "erasure", "subject": {"contact_id": carol["id"]}})
    # A second identical open request returns the first; once the first completed (it may
    # already have), a new one is a new request.
    first_now = stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()
    assert again["id"] == filed["id"] or first_now["status"] != "pending"

    result = completed(stack, key, filed["id"])
    assert result["status"] == "completed"
    assert set(result["services"]) == {"accounts", "tickets", "billing", "audit", "gateway"}
    assert all(answer["status"] == "done" for answer in result["services"].values())

    shown = stack.call("GET", f"/v1/contacts/{carol['id']}", key=key).json()
    assert shown["name"] == "[erased]" and shown["email"] == "[erased]"
    seen = stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key).json()
    assert seen["subject"] == "[erased]" and seen["messages"][0]["body"] == "[erased]"
    assert seen["tags"] == ["[erased]"]
    consent = stack.call("GET", f"/v1/contacts/{carol['id']}/consent", key=key).json()
    assert [c["source"] for c in consent["history"]] == ["[erased]"]
    assert stack.call("GET", f"/v1/contacts/{dave['id']}", key=key).json()["name"] == (
        "Dave Untouched"
    )

    dump = dump_all(stack)
    for value in ("Carol Quixote", "carol-quixote", carol["email"], carol["phone"]):
        assert value not in dump, f"{value!r} is still in a database dump"
    assert "Dave Untouched" in dump  # the dump is real: other contacts are there

    verified = wait_until(
        lambda: (v := stack.call("GET", "/v1/audit/verify", key=key).json())["ok"] and v,
        what="the ledger to verify",
    )
    assert verified["first_bad_seq"] is None


def test_the_receipt_verifies_with_the_audit_key_and_cites_ledger_entries(stack):
    key, _ = admin(stack)
    contact = make_contact(stack, key, "Erin Receipt")
    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    completed(stack, key, filed["id"])
    receipt = stack.call("GET", f"/v1/privacy/requests/{filed['id']}/receipt", key=key).json()
    signature = receipt.pop("signature")
    signed = json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"]))
    public.verify(base64.b64decode(signature["value"]), signed.encode())  # raises if forged
    tampered = dict(receipt, request_id=str(uuid.uuid4()))
    with pytest.raises(InvalidSignature):
        public.verify(
            base64.b64decode(signature["value"]),
            json.dumps(tampered, sort_keys=True, separators=(",", ":")).encode(),
        )
    # The key is the ledger's: the receipt's public key signs the ledger's checkpoints too.
    proof = stack.call("GET", "/v1/audit/entries/1/proof", key=stack.settings.operator_token)
    assert proof.status_code in (401, 403, 404)  # operators use their own endpoints
    cited = {answer["ledger_event_id"] for answer in receipt["services"].values()}

    def in_ledger():
        entries = stack.call(
            "GET",
            "/v1/operator/audit/entries?type=privacy_answered&limit=200",
            key=stack.settings.operator_token,
        ).json()["items"]
        return cited <= {e["event_id"] for e in entries}

    wait_until(in_ledger, what="every cited answer in the audit ledger")


def test_an_admin_on_invoices_is_retained_by_billing_and_erased_elsewhere(stack):
    """billing's answer is the one reported exception when invoices name the subject."""
    key, created = admin(stack)
    admin_id = created["agent"]["id"]
    other_admin = create_agent(stack, key, "admin", name="Second Admin")
    wait_until(
        lambda: stack.call("GET", "/v1/billing/subscription", key=key).status_code == 200,
        what="the billing account",
    )
    # An invoice naming the first admin: the billing run, as its timer would call it.
    assert issue_invoices(stack) >= 1

    second_key = other_admin["api_key"]
    filed = file(stack, second_key, {"type": "erasure", "subject": {"agent_id": admin_id}})
    result = completed(stack, second_key, filed["id"])
    assert result["status"] == "completed"
    held = result["services"]["billing"]
    assert held["status"] == "retained"
    assert "tax and accounting law" in held["basis"] and held["until"] > "2035"
    others = {n: a["status"] for n, a in result["services"].items() if n != "billing"}
    assert set(others.values()) == {"done"}
    # The erased admin's key stopped working: they were deactivated as part of the erasure.
    assert stack.call("GET", "/v1/tenant", key=key).status_code == 401


def test_restriction_objection_and_rectification(stack):
    key, _ = admin(stack)
    contact = make_contact(stack, key, "Fay Restricted")
    restricted = completed(
        stack,
        key,
        file(stack, key, {"type": "restriction", "subject": {"contact_id": contact["id"]}})["id"],
    )
    assert restricted["status"] == "completed"
    refused = stack.call(
        "PUT",
        f"/v1/contacts/{contact['id']}/consent",
        key=key,
        json={"marketing": True, "source": "web form"},
    )
    assert refused.status_code == 409
    no_ticket = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": "x", "body": "y", "requester_id": contact["id"]},
    )
    # Restricted: a conflict with the contact's state, not a malformed request.
    assert no_ticket.status_code == 409
    assert stack.call("GET", f"/v1/contacts/{contact['id']}", key=key).status_code == 200

    objected = completed(
        stack,
        key,
        file(stack, key, {"type": "objection", "subject": {"contact_id": contact["id"]}})["id"],
    )
    assert objected["status"] == "completed"
    consent = stack.call("GET", f"/v1/contacts/{contact['id']}/consent", key=key).json()
    assert consent["marketing"] is False and consent["history"][-1]["source"] == "objection"

    rectified = completed(
        stack,
        key,
        file(
            stack,
            key,
            {
                "type": "rectification",
                "subject": {"contact_id": contact["id"]},
                "changes": {"name": "Fay Rectified"},
            },
        )["id"],
    )
    assert rectified["status"] == "completed"
    assert stack.call("GET", f"/v1/contacts/{contact['id']}", key=key).json()["name"] == (
        "Fay Rectified"
    )


def test_requests_are_validated_and_tenant_scoped(stack):
    key_a, _ = admin(stack)
    key_b, _ = admin(stack)
    contact = make_contact(stack, key_a, "Gus Scoped")
    for body in (
        {"type": "erasure", "subject": {}},
        {"type": "deletion", "subject": {"contact_id": contact["id"]}},
        {"type": "erasure", "subject": {"contact_id": contact["id"], "agent_id": contact["id"]}},
        {"type": "rectification", "subject": {"contact_id": contact["id"]}},
    ):
        assert stack.call("POST", "/v1/privacy/requests", key=key_a, json=body).status_code == 422
    other = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key_b,
        json={"type": "erasure", "subject": {"contact_id": contact["id"]}},
    )
    assert other.status_code == 404
    filed = file(stack, key_a, {"type": "restriction", "subject": {"contact_id": contact["id"]}})
    assert stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key_b).status_code == 404
    assert stack.call("GET", f"/v1/privacy/requests/{uuid.uuid4()}", key=key_a).status_code == 404


def test_a_service_that_is_down_gets_its_command_when_it_returns(stack):
    key, _ = admin(stack)
    contact = make_contact(stack, key, "Hal Waiting")
    stack.stop("tickets")
    try:
        filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})

        def others_answered():
            body = stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()
            answered = [n for n, a in body["services"].items() if a["status"] != "pending"]
            return body if set(answered) == {"accounts", "billing", "audit", "gateway"} else None

        waiting = wait_until(others_answered, what="every service but tickets to answer")
        assert waiting["status"] == "pending"
        assert waiting["services"]["tickets"]["status"] == "pending"
        # While it is open, the same request again is the same request (200, not a new 202).
        again = stack.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "erasure", "subject": {"contact_id": contact["id"]}},
        )
        assert again.status_code == 200 and again.json()["id"] == filed["id"]
    finally:
        stack.start("tickets")
    result = completed(stack, key, filed["id"])
    assert result["status"] == "completed"
    assert result["services"]["tickets"]["status"] == "done"


def test_retention_policies_have_defaults_and_tenant_overrides(stack):
    key, _ = admin(stack)
    other, _ = admin(stack)
    policies = stack.call("GET", "/v1/retention/policies", key=key).json()["items"]
    assert {p["category"]: (p["days"], p["overridden"]) for p in policies} == {
        "access_log": (60, False),
        "closed_tickets": (730, False),
    }
    changed = stack.call("PUT", "/v1/retention/policies/access_log", key=key, json={"days": 30})
    assert changed.status_code == 200 and changed.json()["days"] == 30
    mine = {
        p["category"]: p
        for p in stack.call("GET", "/v1/retention/policies", key=key).json()["items"]
    }
    assert mine["access_log"]["days"] == 30 and mine["access_log"]["overridden"] is True
    theirs = {
        p["category"]: p
        for p in stack.call("GET", "/v1/retention/policies", key=other).json()["items"]
    }
    assert theirs["access_log"]["days"] == 60  # an override is the tenant's own
    assert (
        stack.call("PUT", "/v1/retention/policies/nothing", key=key, json={"days": 3}).status_code
        == 404
    )
    for bad in ({"days": 0}, {"days": "30"}, {"days": 30, "extra": 1}):
        assert (
            stack.call("PUT", "/v1/retention/policies/access_log", key=key, json=bad).status_code
            == 422
        )


def test_an_access_request_exports_everything_about_the_subject_and_nothing_else(stack):
    key, created = admin(stack)
    agent_id = created["agent"]["id"]
    jo = make_contact(stack, key, "Jo Export")
    kim = make_contact(stack, key, "Kim Other")
    ticket = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": "Jo's parcel", "body": "where is it", "requester_id": jo["id"]},
    ).json()
    stack.call(
        "POST", f"/v1/tickets/{ticket['id']}/messages", key=key, json={"body": "It ships tomorrow"}
    )
    stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": "staff only: Jo was rude", "internal": True},
    )
    stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": "Kim's thing", "body": "kim", "requester_id": kim["id"]},
    )
    stack.call(
        "PUT",
        f"/v1/contacts/{jo['id']}/consent",
        key=key,
        json={"marketing": True, "source": "checkout"},
    )
    assert stack.call("GET", f"/v1/contacts/{jo['id']}", key=key).status_code == 200
    assert stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key).status_code == 200

    filed = file(stack, key, {"type": "access", "subject": {"contact_id": jo["id"]}})
    assert completed(stack, key, filed["id"])["status"] == "completed"

    def exported():
        doc = stack.call("GET", f"/v1/privacy/requests/{filed['id']}/export", key=key).json()
        reads = doc["services"]["audit"]["staff_reads"]
        return doc if any(r["who"] == agent_id for r in reads) else None

    doc = wait_until(exported, what="the staff reads to reach the ledger and the export")
    services = doc["services"]
    assert services["accounts"]["contact"]["email"] == jo["email"]
    assert [c["source"] for c in services["accounts"]["marketing_consent"]["history"]] == [
        "checkout"
    ]
    [requested] = services["tickets"]["tickets_requested"]
    assert requested["subject"] == "Jo's parcel"
    assert [m["body"] for m in requested["messages"]] == ["It ships tomorrow"]
    reads = services["audit"]["staff_reads"]
    assert {r["who"] for r in reads} == {agent_id}
    assert any("/v1/contacts/" in r["what"] for r in reads)
    assert services["billing"]["invoices"] == []
    text = json.dumps(doc)
    assert "Kim Other" not in text and kim["email"] not in text and "Jo was rude" not in text
    # An export is an access request's: another request has none.
    erasure = file(stack, key, {"type": "restriction", "subject": {"contact_id": kim["id"]}})
    assert (
        stack.call("GET", f"/v1/privacy/requests/{erasure['id']}/export", key=key).status_code
        == 404
    )
