"""Mail out through the running stack, to a real SMTP server (aiosmtpd) on a free loopback
port: a public reply reaches the requester with the headers a provider expects, a second reply
threads on the first, an internal note is not mailed, a 4xx is retried until delivered, a 5xx is
recorded as failed, an erased requester's queued mail is deleted, and no address reaches the
services' log."""

from __future__ import annotations

import email.utils
import re
from collections import deque
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from kernel.mail import sink
from kernel.testing import wait_until
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
    unique,
)


@pytest.fixture(scope="module")
def smtp() -> Iterator[sink.Sink]:
    with sink.running() as controller:
        controller.handler.port = controller.port
        yield controller.handler


@pytest.fixture(scope="module")
def services_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mail") / "services.log"


@pytest.fixture(scope="module")
def stack(infrastructure, smtp: sink.Sink, services_log: Path) -> Iterator[Stack]:
    with stack_logging_to(
        infrastructure,
        services_log,
        LEDGERDESK_SMTP_HOST="127.0.0.1",
        LEDGERDESK_SMTP_PORT=str(smtp.port),  # type: ignore[attr-defined]
        LEDGERDESK_SMTP_TIMEOUT_SECONDS="5",
        LEDGERDESK_MAIL_RETRY_SECONDS="0.5",
        LEDGERDESK_MAIL_FROM="Support Desk <support@desk.example.test>",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
    ) as running:
        yield running


def open_ticket(stack: Stack, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    contact = make_contact(stack, key, "Jane Canary")
    subject = unique("Refund for order")
    ticket = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": subject, "body": "please help", "requester_id": contact["id"]},
    )
    return contact, ok(ticket, 201)


def reply(stack: Stack, key: str, ticket: dict, body: str, internal: bool = False) -> dict:
    response = stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": body, "internal": internal},
    )
    return ok(response, 201)


def mails_to(smtp: sink.Sink, address: str) -> list[EmailMessage]:
    return [m for m in smtp.messages() if address in str(m["To"])]


def arrived(smtp: sink.Sink, address: str, count: int) -> list[EmailMessage]:
    return wait_until(
        lambda: mails_to(smtp, address) if len(mails_to(smtp, address)) >= count else None,
        timeout=30,
        what=f"{count} mails to the requester",
    )


def outbox(stack: Stack, message_id: str) -> tuple:
    found = rows(
        stack,
        "tickets",
        "SELECT status, attempts, last_code, sealed IS NULL FROM mail_outbox"
        " WHERE reference_id = %s",
        message_id,
    )
    return found[0] if found else ()


def test_a_public_reply_is_mailed_and_the_next_one_threads(stack: Stack, smtp: sink.Sink):
    key = stack.sign_up()["api_key"]
    contact, ticket = open_ticket(stack, key)
    first_text, note_text = unique("We have refunded you"), unique("internal: check fraud")
    first = reply(stack, key, ticket, first_text)
    reply(stack, key, ticket, note_text, internal=True)
    [mail] = arrived(smtp, contact["email"], 1)

    assert email.utils.parseaddr(str(mail["To"]))[1] == contact["email"]
    assert str(mail["From"]) == "Support Desk <support@desk.example.test>"
    assert str(mail["Subject"]) == f"Re: {ticket['subject']}"
    assert mail["Date"] is not None
    # Built from ids and the thread's token (the same on every mail of this ticket to them).
    root = str(mail["In-Reply-To"])
    found = re.fullmatch(rf"<ticket\.{ticket['id']}\.([0-9a-f]{{32}})@desk\.example\.test>", root)
    assert found is not None
    token = found.group(1)
    assert str(mail["Message-ID"]) == f"<reply.{first['id']}.{token}@desk.example.test>"
    assert str(mail["References"]) == root
    # Written by a person, and transactional: no Auto-Submitted, no List-Unsubscribe.
    assert mail["Auto-Submitted"] is None and mail["List-Unsubscribe"] is None
    assert first_text in mail.get_content()
    # Answers come back to the tenant's support address, an id at the inbound domain.
    tenant_id = ok(stack.call("GET", "/v1/tenant", key=key))["id"]
    assert str(mail["Reply-To"]) == f"{tenant_id}@{stack.settings.mail_in_domain}"

    second = reply(stack, key, ticket, unique("Anything else?"))
    mails = arrived(smtp, contact["email"], 2)
    [threaded] = [m for m in mails if str(m["Message-ID"]) != str(mail["Message-ID"])]
    assert str(threaded["Message-ID"]) == f"<reply.{second['id']}.{token}@desk.example.test>"
    assert str(threaded["In-Reply-To"]) == str(mail["Message-ID"])
    assert str(threaded["References"]).split() == [root, str(mail["Message-ID"])]

    # The internal note was never mailed: two mails, neither carrying it.
    assert not any(note_text in m.get_content() for m in mails_to(smtp, contact["email"]))
    assert len(mails_to(smtp, contact["email"])) == 2
    # Sent: the sealed text is gone from the row, which keeps ids and states only.
    assert outbox(stack, first["id"]) == ("sent", 1, 250, True)


def test_a_temporary_refusal_is_retried_until_delivered(stack: Stack, smtp: sink.Sink):
    key = stack.sign_up()["api_key"]
    contact, ticket = open_ticket(stack, key)
    smtp.refusals[contact["email"].lower()] = deque(["451 4.3.0 try again later"] * 2)
    sent = reply(stack, key, ticket, unique("retried reply"))
    [mail] = arrived(smtp, contact["email"], 1)
    assert str(mail["Message-ID"]).startswith(f"<reply.{sent['id']}.")
    wait_until(lambda: (outbox(stack, sent["id"]) or ("",))[0] == "sent", timeout=10, what="sent")
    assert outbox(stack, sent["id"]) == ("sent", 3, 250, True)


def test_a_permanent_refusal_is_recorded_as_failed(stack: Stack, smtp: sink.Sink):
    key = stack.sign_up()["api_key"]
    contact, ticket = open_ticket(stack, key)
    smtp.refusals[contact["email"].lower()] = deque(["550 5.1.1 no such mailbox"] * 5)
    sent = reply(stack, key, ticket, unique("bounced reply"))
    wait_until(
        lambda: (outbox(stack, sent["id"]) or ("",))[0] == "failed", timeout=30, what="failed"
    )
    assert outbox(stack, sent["id"]) == ("failed", 1, 550, True)
    assert mails_to(smtp, contact["email"]) == []
    # Not retried: four refusals are still unused.
    assert len(smtp.refusals[contact["email"].lower()]) == 4


def listed(stack: Stack, key: str, query: str = "") -> dict[str, Any]:
    return ok(stack.call("GET", f"/v1/mail{query}", key=key))


def test_a_failed_mail_is_shown_to_its_tenants_admins_by_ids(stack: Stack, smtp: sink.Sink):
    key = stack.sign_up()["api_key"]
    contact, ticket = open_ticket(stack, key)
    smtp.refusals[contact["email"].lower()] = deque(["550 5.1.1 no such mailbox"])
    bounced = reply(stack, key, ticket, unique("bounced reply"))
    [failed] = wait_until(
        lambda: listed(stack, key, "?status=failed")["items"] or None, timeout=30, what="failed"
    )
    delivered = reply(stack, key, ticket, unique("delivered reply"))
    assert failed == {
        "id": failed["id"],
        "service": "tickets",
        "kind": "ticket_reply",
        "recipient_id": contact["id"],
        "reference_id": bounced["id"],
        "status": "failed",
        "attempts": 1,
        "last_code": 550,
        "last_outcome": "permanent",
        "created_at": failed["created_at"],
        "next_attempt_at": None,
        "finished_at": failed["finished_at"],
    }
    assert failed["finished_at"] is not None
    wait_until(lambda: listed(stack, key, "?status=sent")["items"], timeout=30, what="sent")
    # Both, a page each, oldest first; no address anywhere in the answers.
    first = stack.call("GET", "/v1/mail?limit=1", key=key)
    second = listed(stack, key, f"?limit=1&cursor={ok(first)['next_cursor']}")
    assert [m["reference_id"] for m in ok(first)["items"] + second["items"]] == [
        bounced["id"],
        delivered["id"],
    ]
    assert second["next_cursor"] is None
    assert contact["email"] not in first.text
    # Another tenant sees none of it; an agent may not look.
    other = stack.sign_up()["api_key"]
    assert listed(stack, other) == {"items": [], "next_cursor": None}
    agent = create_agent(stack, key)["api_key"]
    assert_problem(stack.call("GET", "/v1/mail", key=agent), 403)
    assert_problem(stack.call("GET", "/v1/mail?status=lost", key=key), 422)
    # An empty status is a value like any other, not the filter left out.
    assert_problem(stack.call("GET", "/v1/mail?status=", key=key), 422)


def test_an_erased_requesters_queued_mail_is_deleted(stack: Stack, smtp: sink.Sink):
    key = stack.sign_up()["api_key"]
    contact, ticket = open_ticket(stack, key)
    # Refused for now, so the mail waits in the outbox when the erasure comes.
    smtp.refusals[contact["email"].lower()] = deque(["451 4.3.0 later"] * 1000)
    sent = reply(stack, key, ticket, unique("never delivered"))
    wait_until(lambda: (outbox(stack, sent["id"]) or (0, 0))[1] >= 1, timeout=30, what="tried")
    assert outbox(stack, sent["id"])[0] == "pending"
    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, filed["id"])["status"] == "completed"
    assert outbox(stack, sent["id"]) == ()
    # It was sealed under the ticket's key, a child of the requester's, which is shredded.
    [[parent, wrapped]] = rows(
        stack,
        "tickets",
        "SELECT c.parent_id, p.wrapped_key FROM subject_keys c"
        " JOIN subject_keys p ON p.subject_id = c.parent_id WHERE c.subject_id = %s",
        ticket["id"],
        purpose="keys",
    )
    assert str(parent) == contact["id"] and wrapped is None
    smtp.refusals.pop(contact["email"].lower())
    assert mails_to(smtp, contact["email"]) == []


def test_no_address_reaches_the_services_log(stack: Stack, smtp: sink.Sink, services_log: Path):
    key = stack.sign_up()["api_key"]
    contact, ticket = open_ticket(stack, key)
    reply(stack, key, ticket, unique("logged?"))
    arrived(smtp, contact["email"], 1)
    wait_until(
        lambda: "mail " in services_log.read_text(errors="replace"), timeout=10, what="a mail line"
    )
    text = services_log.read_text(errors="replace")
    assert contact["email"] not in text
    assert contact["email"].split("@")[0] not in text
