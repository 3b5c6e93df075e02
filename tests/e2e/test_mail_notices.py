"""Notices by mail through the running stack, to a real SMTP server (aiosmtpd) on a free loopback
port: a policy change mails each agent who has not accepted it, once, and GET /v1/me says the
acceptance is pending until the agent accepts; a privacy request awaiting approval, then
completed, mails the tenant's admins and no other tenant's; an erased admin's queued notice is
deleted."""

from __future__ import annotations

import email.utils
import secrets
from collections import deque
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from kernel.mail import sink
from kernel.testing import wait_until
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    completed,
    create_agent,
    file,
    make_contact,
    ok,
    require_approval,
    rows,
    sign_up,
    stack_logging_to,
)

DOMAIN = "desk.example.test"
CONSOLE = "https://desk.example.test/console"


@pytest.fixture(scope="module")
def smtp() -> Iterator[sink.Sink]:
    with sink.running() as controller:
        controller.handler.port = controller.port
        yield controller.handler


@pytest.fixture(scope="module")
def stack(infrastructure, smtp: sink.Sink, tmp_path_factory) -> Iterator[Stack]:
    with stack_logging_to(
        infrastructure,
        tmp_path_factory.mktemp("notices") / "services.log",
        LEDGERDESK_SMTP_HOST="127.0.0.1",
        LEDGERDESK_SMTP_PORT=str(smtp.port),  # type: ignore[attr-defined]
        LEDGERDESK_SMTP_TIMEOUT_SECONDS="5",
        LEDGERDESK_MAIL_RETRY_SECONDS="0.5",
        LEDGERDESK_MAIL_FROM=f"Ledgerdesk <notices@{DOMAIN}>",
        LEDGERDESK_CONSOLE_URL=CONSOLE,
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
    ) as running:
        yield running


def address(name: str) -> str:
    return f"{name}.{secrets.token_hex(4)}@example.com"


def tenant(stack: Stack, admin_email: str) -> dict[str, Any]:
    return sign_up(stack, admin={"name": "Notice Admin", "email": admin_email})


def mails_to(smtp: sink.Sink, to: str, prefix: str = "") -> list[EmailMessage]:
    return [
        m
        for m in smtp.messages()
        if email.utils.parseaddr(str(m["To"]))[1] == to
        and str(m["Message-ID"]).startswith(f"<{prefix}")
    ]


def arrived(smtp: sink.Sink, to: str, prefix: str, count: int = 1) -> list[EmailMessage]:
    return wait_until(
        lambda: mails_to(smtp, to, prefix) if len(mails_to(smtp, to, prefix)) >= count else None,
        timeout=30,
        what=f"{count} {prefix} mails to {to}",
    )


def me(stack: Stack, key: str) -> dict[str, Any]:
    return ok(stack.call("GET", "/v1/me", key=key))


def outbox(stack: Stack, kind: str, tenants: list[str]) -> list[tuple]:
    """The mails of ``kind`` to these tenants' people (other tests' tenants share the stack)."""
    return rows(
        stack,
        "accounts",
        "SELECT recipient_id::text, status FROM mail_outbox WHERE kind = %s"
        " AND tenant_id = ANY(%s::uuid[])",
        kind,
        tenants,
    )


def test_a_policy_change_mails_the_agents(stack: Stack, smtp: sink.Sink):
    first, second = address("first.admin"), address("other.admin")
    owner = tenant(stack, first)
    key = owner["api_key"]
    agent_address, gone_address = address("agent"), address("gone")
    agent = create_agent(stack, key, email=agent_address)
    gone = create_agent(stack, key, email=gone_address)
    ok(stack.call("DELETE", f"/v1/agents/{gone['id']}", key=key))
    other = tenant(stack, second)
    assert me(stack, key)["policy_acceptance_pending"] is False  # accepted at sign-up

    version = f"2027-{secrets.token_hex(3)}"
    published = stack.call(
        "POST",
        "/v1/operator/policies",
        key=stack.settings.operator_token,
        json={"version": version},
    )
    assert published.status_code == 201, published.text
    assert me(stack, key) == {
        **me(stack, key),
        "policy_version": version,
        "policy_acceptance_pending": True,
    }
    # Signed up after, accepting it: owes nothing, and is not mailed.
    late_address = address("late")
    tenant(stack, late_address)

    owed = {
        first: owner["agent"]["id"],
        agent_address: agent["id"],
        second: other["agent"]["id"],
    }
    for to, agent_id in owed.items():
        [mail] = arrived(smtp, to, "policy_version.")
        assert str(mail["Message-ID"]).endswith(f".{agent_id}@{DOMAIN}>")
        assert str(mail["From"]) == f"Ledgerdesk <notices@{DOMAIN}>"
        assert mail["Date"] is not None and version in str(mail["Subject"])
        # A machine's notice, transactional: Auto-Submitted, no List-Unsubscribe.
        assert str(mail["Auto-Submitted"]) == "auto-generated"
        assert mail["List-Unsubscribe"] is None
        assert "POST /v1/policies/accept" in mail.get_content()
    # The mailing ended, every mail went, and no one was mailed twice.
    wait_until(
        lambda: rows(
            stack,
            "accounts",
            "SELECT 1 FROM policy_notice_jobs WHERE version = %s AND status = 'done'",
            version,
        ),
        timeout=30,
        what="the mailing to end",
    )
    tenants = [owner["tenant"]["id"], other["tenant"]["id"]]
    wait_until(
        lambda: all(status == "sent" for _, status in outbox(stack, "policy_version", tenants)),
        timeout=30,
        what="every policy notice sent",
    )
    assert sorted(r for r, _ in outbox(stack, "policy_version", tenants)) == sorted(owed.values())
    for to in owed:
        assert len(mails_to(smtp, to, "policy_version.")) == 1
    assert mails_to(smtp, gone_address) == [] and mails_to(smtp, late_address) == []
    # The ledger is told that each went, to whom by id.
    wait_until(
        lambda: (
            len(
                rows(
                    stack,
                    "audit",
                    "SELECT 1 FROM ledger_entries_all"
                    " WHERE type = 'mail_sent' AND service = 'accounts'"
                    " AND tenant_id = ANY(%s::uuid[])"
                    " AND strpos(encode(content, 'escape'), 'policy_version') > 0",
                    tenants,
                )
            )
            == len(owed)
        ),
        timeout=60,
        what="the ledger to record the mails",
    )

    accepted = stack.call("POST", "/v1/policies/accept", key=key, json={"version": version})
    assert accepted.status_code == 200, accepted.text
    assert me(stack, key)["policy_acceptance_pending"] is False
    assert me(stack, agent["api_key"])["policy_acceptance_pending"] is True


def test_a_privacy_request_awaiting_approval_and_completed_mails_the_tenants_admins(
    stack: Stack, smtp: sink.Sink
):
    first, second, stranger = address("filer"), address("approver"), address("stranger")
    owner = tenant(stack, first)
    key = owner["api_key"]
    approver = create_agent(stack, key, "admin", name="Second Admin", email=second)
    approver_key = stack.claim_key(approver["api_key"])
    tenant(stack, stranger)
    require_approval(stack, key, ["erasure"])
    contact = make_contact(stack, key, "Quentin Quiet")

    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert filed["status"] == "awaiting_approval"
    request_id = filed["id"]
    admins = {first: owner["agent"]["id"], second: approver["id"]}
    for to, admin_id in admins.items():
        [mail] = arrived(smtp, to, "privacy_request_awaiting_approval.")
        assert str(mail["Message-ID"]) == (
            f"<privacy_request_awaiting_approval.{request_id}.{admin_id}@{DOMAIN}>"
        )
        assert request_id in str(mail["Subject"]) and "erasure" in str(mail["Subject"])
        assert f"{CONSOLE}#privacy" in mail.get_content()

    approved = stack.call(
        "POST",
        f"/v1/privacy/requests/{request_id}/approve",
        key=approver_key,
        json={"reason": "identity verified"},
    )
    assert approved.status_code == 200, approved.text
    assert completed(stack, key, request_id)["status"] == "completed"
    for to in admins:
        [mail] = arrived(smtp, to, "privacy_request_completed.")
        assert request_id in str(mail["Subject"])
        assert "State: completed" in mail.get_content()
    # Ids, type and state only: nothing of whom it concerned, in any notice.
    for to in admins:
        for mail in mails_to(smtp, to, "privacy_request_"):
            text = mail.as_string()
            assert contact["email"] not in text and "Quentin" not in text
            assert contact["id"] not in text
        assert len(mails_to(smtp, to, "privacy_request_")) == 2
    assert mails_to(smtp, stranger, "privacy_request_") == []
    # The tenant's admins see them in their mail list, by ids, beside tickets' replies.
    listing = stack.call("GET", "/v1/mail", key=key)
    notices = [m for m in ok(listing)["items"] if m["service"] == "accounts"]
    assert sorted((m["kind"], m["recipient_id"], m["reference_id"]) for m in notices) == sorted(
        (f"privacy_request_{state}", admin_id, request_id)
        for state in ("awaiting_approval", "completed")
        for admin_id in admins.values()
    )
    assert first not in listing.text and second not in listing.text


def test_an_erased_admins_queued_notice_is_deleted(stack: Stack, smtp: sink.Sink):
    doomed, kept = address("doomed"), address("kept")
    owner = tenant(stack, doomed)
    key = owner["api_key"]
    doomed_id = owner["agent"]["id"]
    colleague = create_agent(stack, key, "admin", email=kept)
    colleague_key = stack.claim_key(colleague["api_key"])
    # Refused for now, so her notice waits in the outbox when her erasure comes.
    smtp.refusals[doomed.lower()] = deque(["451 4.3.0 later"] * 1000)
    contact = make_contact(stack, key, "Rita Reader")
    access = file(stack, key, {"type": "access", "subject": {"contact_id": contact["id"]}})
    arrived(smtp, kept, "privacy_request_completed.")

    def hers() -> list[tuple]:
        return rows(
            stack,
            "accounts",
            "SELECT status, attempts FROM mail_outbox WHERE recipient_id = %s",
            doomed_id,
        )

    wait_until(lambda: hers() and hers()[0][1] >= 1, timeout=30, what="her notice tried")
    assert hers()[0][0] == "pending"

    erasure = file(stack, colleague_key, {"type": "erasure", "subject": {"agent_id": doomed_id}})
    assert completed(stack, colleague_key, erasure["id"])["status"] == "completed"
    assert hers() == []
    # Her key, which sealed it, is shredded.
    [[wrapped]] = rows(
        stack,
        "accounts",
        "SELECT wrapped_key FROM subject_keys WHERE subject_id = %s",
        doomed_id,
        purpose="keys",
    )
    assert wrapped is None
    smtp.refusals.pop(doomed.lower())
    assert mails_to(smtp, doomed) == []
    # Her colleague is told of both requests; she, erased, of neither.
    arrived(smtp, kept, "privacy_request_completed.", 2)
    assert {access["id"], erasure["id"]} <= {
        str(m["Message-ID"]).split(".")[1] for m in mails_to(smtp, kept, "privacy_request_")
    }
