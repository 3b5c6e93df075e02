"""Mail in through the running stack: mail sent with smtplib to the tickets service's own SMTP
listener opens a ticket (the sender made a contact), the requester's answer to the reply mailed
out threads onto it, a re-sent mail stores nothing twice, a file round-trips, a forged
References opens a new ticket rather than append to another tenant's or requester's, unknown
and cancelled tenants are refused, bounces and auto-replies are dropped, and malformed MIME, a
mail bomb and oversize mail are refused with nothing stored."""

from __future__ import annotations

import email.policy
import email.utils
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from kernel.mail import sink
from kernel.testing import free_port, wait_until
from tests.e2e.conftest import Stack
from tests.e2e.helpers import completed, file, fresh_card, ok, rows, stack_logging_to, unique

DOMAIN = "help.example.test"
OUT_DOMAIN = "desk.example.test"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
FILE_LIMIT = 64 << 10
MESSAGE_LIMIT = 512 << 10
# Files past this on one ticket pass the parser (each file is within FILE_LIMIT) and are
# refused by the tickets worker.
TICKET_FILES_LIMIT = 3 * FILE_LIMIT


@pytest.fixture(scope="module")
def smtp() -> Iterator[sink.Sink]:
    with sink.running() as controller:
        controller.handler.port = controller.port
        yield controller.handler


@pytest.fixture(scope="module")
def services_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mail-in") / "services.log"


@pytest.fixture(scope="module")
def stack(infrastructure, smtp: sink.Sink, services_log: Path) -> Iterator[Stack]:
    port = free_port()
    with stack_logging_to(
        infrastructure,
        services_log,
        LEDGERDESK_SMTP_HOST="127.0.0.1",
        LEDGERDESK_SMTP_PORT=str(smtp.port),  # type: ignore[attr-defined]
        LEDGERDESK_MAIL_RETRY_SECONDS="0.5",
        LEDGERDESK_MAIL_FROM=f"Support Desk <support@{OUT_DOMAIN}>",
        LEDGERDESK_MAIL_IN_PORT=str(port),
        LEDGERDESK_MAIL_IN_DOMAIN=DOMAIN,
        LEDGERDESK_MAIL_IN_MAX_BYTES=str(MESSAGE_LIMIT),
        LEDGERDESK_MAIL_IN_MAX_PARTS="20",
        LEDGERDESK_MAIL_IN_MAX_DEPTH="5",
        LEDGERDESK_MAIL_IN_MAX_HEADER_BYTES="16384",
        LEDGERDESK_MAIL_IN_MAX_RECIPIENTS="2",
        LEDGERDESK_ATTACHMENT_MAX_BYTES=str(FILE_LIMIT),
        LEDGERDESK_ATTACHMENT_TICKET_BYTES=str(TICKET_FILES_LIMIT),
        # An accounts outage is noticed (and answered 451) within this.
        LEDGERDESK_RPC_TIMEOUT="3",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
    ) as running:
        running.mail_port = port  # type: ignore[attr-defined]
        yield running


# --- sending and reading ---------------------------------------------------------------------


def send(stack: Stack, raw: bytes | EmailMessage, to: list[str], sender: str) -> tuple[int, str]:
    """Deliver ``raw`` over SMTP; the server's reply to the first refused step, or (250, ...)."""
    # CRLF line ends, as SMTP carries them (smtplib sends bytes as they are).
    data = raw.as_bytes(policy=email.policy.SMTP) if isinstance(raw, EmailMessage) else raw
    with smtplib.SMTP("127.0.0.1", stack.mail_port, timeout=30) as client:  # type: ignore[attr-defined]
        try:
            refused = client.sendmail(sender, to, data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return code, text.decode()
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        if refused:
            code, text = next(iter(refused.values()))
            return code, text.decode()
    return 250, "OK"


def mail(
    sender: str, to: str, subject: str, text: str, html: str | None = None, **headers: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain="customer.example")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


def tenant(stack: Stack) -> tuple[str, str]:
    """A new tenant's API key and its support address (from ``GET /v1/tenant``)."""
    key = stack.sign_up()["api_key"]
    address = ok(stack.call("GET", "/v1/tenant", key=key))["support_address"]
    return key, address


def tickets(stack: Stack, key: str) -> list[dict[str, Any]]:
    return ok(stack.call("GET", "/v1/tickets", key=key))["items"]


def ticket(stack: Stack, key: str, ticket_id: str) -> dict[str, Any]:
    return ok(stack.call("GET", f"/v1/tickets/{ticket_id}", key=key))


def stored(stack: Stack) -> dict[str, int]:
    """How many rows hold what mail can make, in tickets and accounts."""
    counts = {
        table: rows(stack, "tickets", f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608
        for table in (
            "tickets",
            "ticket_messages",
            "attachments",
            "attachment_chunks",
            "mail_in_received",
            "events",
        )
    }
    counts["contacts"] = rows(stack, "accounts", "SELECT count(*) FROM contacts")[0][0]
    return counts


def customer(name: str = "Jane Canary") -> tuple[str, str]:
    address = f"{unique('jane')}@customer.example"
    return address, f"{name} <{address}>"


# --- the tests -------------------------------------------------------------------------------


def test_a_mail_opens_a_ticket_and_the_answer_to_our_reply_threads(
    stack: Stack, smtp: sink.Sink, services_log: Path
):
    key, support = tenant(stack)
    tenant_id = ok(stack.call("GET", "/v1/tenant", key=key))["id"]
    assert support == f"{tenant_id}@{DOMAIN}"
    address, sender = customer()
    card, subject = fresh_card(), unique("My order")
    first = mail(
        sender,
        support,
        subject,
        f"It never came. Card {card}.",
        html="<p>It <b>never</b> came.</p><script>alert(1)</script>",
    )
    assert send(stack, first, [support], address) == (250, "OK")

    # Answered 250 only once committed: the ticket is there at once.
    [opened] = tickets(stack, key)
    assert opened["subject"] == subject and opened["status"] == "new"
    shown = ticket(stack, key, opened["id"])
    assert shown["body"] == f"It never came. Card [card ending {card[-4:]}]."
    contact = ok(stack.call("GET", f"/v1/contacts/{opened['requester_id']}", key=key))
    assert contact["email"] == address and contact["name"] == "Jane Canary"

    # A re-sent mail (same sender, same Message-ID) stores nothing again.
    before = stored(stack)
    assert send(stack, first, [support], address)[0] == 250
    assert stored(stack) == before

    # Staff reply; the mail out says where to answer; the answer threads.
    answer = unique("We are on it")
    posted = ok(
        stack.call("POST", f"/v1/tickets/{opened['id']}/messages", key=key, json={"body": answer}),
        201,
    )
    [out] = wait_until(
        lambda: [m for m in smtp.messages() if address in str(m["To"])] or None,
        timeout=30,
        what="the reply mailed out",
    )
    assert str(out["Reply-To"]) == support
    assert str(out["Message-ID"]).startswith(f"<reply.{posted['id']}.")
    # Waiting on the requester: their answer puts it back in the agents' queue.
    for status in ("open", "pending"):
        version = ticket(stack, key, opened["id"])["version"]
        ok(
            stack.call(
                "PATCH",
                f"/v1/tickets/{opened['id']}",
                key=key,
                json={"status": status},
                headers={"If-Match": f'"{version}"'},
            )
        )
    follow_up = unique("Thanks, any news?")
    back = mail(
        sender,
        str(out["Reply-To"]),
        f"Re: {out['Subject']}",
        f"{follow_up}\n\n> {answer}",
        In_Reply_To=str(out["Message-ID"]),
        References=f"{out['References']} {out['Message-ID']}",
    )
    assert send(stack, back, [support], address)[0] == 250
    assert [t["id"] for t in tickets(stack, key)] == [opened["id"]]
    messages = ticket(stack, key, opened["id"])["messages"]
    assert [m["body"].split("\n")[0] for m in messages] == [answer, follow_up]
    assert messages[1]["author_id"] == contact["id"]
    assert ticket(stack, key, opened["id"])["status"] == "open"

    text = services_log.read_text(errors="replace")
    assert "mail in" in text or "receive_mail" in text
    assert address not in text and address.split("@")[0] not in text and card not in text


def test_a_file_from_mail_is_stored_under_the_ticket_and_round_trips(stack: Stack):
    key, support = tenant(stack)
    address, sender = customer()
    msg = mail(sender, support, unique("Screenshot"), "See the picture.")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="screen 1.png")
    assert send(stack, msg, [support], address)[0] == 250
    [opened] = tickets(stack, key)
    shown = ticket(stack, key, opened["id"])
    assert shown["body"] == "See the picture."
    [message] = shown["messages"]
    [attachment] = message["attachments"]
    assert attachment["filename"] == "screen 1.png" and attachment["size"] == len(PNG)
    got = stack.call("GET", f"/v1/tickets/{opened['id']}/attachments/{attachment['id']}", key=key)
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["Content-Type"] == "image/png"
    # Sealed: the file's bytes are nowhere in the database in plaintext.
    [[sealed]] = rows(
        stack,
        "tickets",
        "SELECT ciphertext FROM attachment_chunks WHERE attachment_id = %s",
        attachment["id"],
    )
    assert PNG[:64] not in bytes(sealed)


def test_a_forged_references_opens_a_new_ticket_never_appends(stack: Stack):
    key_a, support_a = tenant(stack)
    key_b, support_b = tenant(stack)
    address, sender = customer()
    assert send(stack, mail(sender, support_a, "first", "in A"), [support_a], address)[0] == 250
    [theirs] = tickets(stack, key_a)
    root = f"<ticket.{theirs['id']}@{OUT_DOMAIN}>"

    # The same person writes to another tenant naming A's ticket: a ticket in B, A untouched.
    forged = mail(sender, support_b, "Re: first", "to B", In_Reply_To=root, References=root)
    assert send(stack, forged, [support_b], address)[0] == 250
    [in_b] = tickets(stack, key_b)
    assert in_b["subject"] == "Re: first"
    # Someone else in tenant A names the ticket: a new ticket of their own.
    other, other_sender = customer("Mallory")
    forged = mail(other_sender, support_a, "Re: first", "let me in", References=root)
    assert send(stack, forged, [support_a], other)[0] == 250
    found = tickets(stack, key_a)
    assert len(found) == 2
    assert ticket(stack, key_a, theirs["id"])["messages"] == []


def test_a_forged_from_with_a_bare_reference_opens_a_new_ticket(stack: Stack, smtp: sink.Sink):
    key, support = tenant(stack)
    address, sender = customer()
    assert send(stack, mail(sender, support, "mine", "first"), [support], address)[0] == 250
    [theirs] = tickets(stack, key)
    # Someone who knows the requester's address and the ticket's id (a bare root, as built from
    # the id alone) forges both: the reference carries no token, so it threads onto nothing.
    bare = f"<ticket.{theirs['id']}@{OUT_DOMAIN}>"
    forged = mail(sender, support, "Re: mine", "forged", In_Reply_To=bare, References=bare)
    assert send(stack, forged, [support], address)[0] == 250
    # A made-up token is no better.
    made_up = f"<ticket.{theirs['id']}.{'0' * 32}@{OUT_DOMAIN}>"
    forged = mail(sender, support, "Re: mine", "forged again", References=made_up)
    assert send(stack, forged, [support], address)[0] == 250
    assert ticket(stack, key, theirs["id"])["messages"] == []
    assert sorted(t["subject"] for t in tickets(stack, key)) == ["Re: mine", "Re: mine", "mine"]
    # The token another ticket's mail carries names that ticket only: it does not open this.
    posted = ok(
        stack.call("POST", f"/v1/tickets/{theirs['id']}/messages", key=key, json={"body": "on it"}),
        201,
    )
    [out] = wait_until(
        lambda: [m for m in smtp.messages() if address in str(m["To"])] or None,
        timeout=30,
        what="the reply mailed out",
    )
    assert str(out["Message-ID"]).startswith(f"<reply.{posted['id']}.")
    other = next(t for t in tickets(stack, key) if t["id"] != theirs["id"])
    token = str(out["Message-ID"]).split(".")[2].split("@")[0]
    moved = f"<ticket.{other['id']}.{token}@{OUT_DOMAIN}>"
    forged = mail(sender, support, "Re: other", "moved token", References=moved)
    assert send(stack, forged, [support], address)[0] == 250
    assert ticket(stack, key, other["id"])["messages"] == []


def test_unknown_and_cancelled_tenants_and_too_many_recipients_are_refused(stack: Stack):
    address, sender = customer()
    unknown = f"{'0' * 8}-0000-4000-8000-{'0' * 12}@{DOMAIN}"
    code, text = send(stack, mail(sender, unknown, "hi", "hi"), [unknown], address)
    assert (code, text[:5]) == (550, "5.1.1")
    elsewhere = f"support@other.{DOMAIN}"
    assert send(stack, mail(sender, elsewhere, "hi", "hi"), [elsewhere], address)[0] == 550

    key, support = tenant(stack)
    _, second = tenant(stack)
    _, third = tenant(stack)
    code, text = send(stack, mail(sender, support, "hi", "hi"), [support, second, third], address)
    assert (code, text[:5]) == (452, "4.5.3")

    ok(stack.call("DELETE", "/v1/tenant", key=key), 202)
    before = stored(stack)
    code, text = send(stack, mail(sender, support, "hi", "hi"), [support], address)
    assert (code, text[:5]) == (550, "5.2.1") and "cancelled" in text
    assert stored(stack) == before


def test_bounces_and_auto_replies_are_accepted_and_not_ticketed(stack: Stack):
    key, support = tenant(stack)
    address, sender = customer()
    before = stored(stack)
    bounce = mail(f"Mail Delivery System <MAILER-DAEMON@{OUT_DOMAIN}>", support, "Undelivered", "x")
    assert send(stack, bounce, [support], "")[0] == 250
    for headers in (
        {"Auto_Submitted": "auto-replied"},
        {"X_Autoreply": "yes"},
        {"Precedence": "bulk"},
        {"X_Auto_Response_Suppress": "All"},
    ):
        away = mail(sender, support, "Out of office", "I am away", **headers)
        assert send(stack, away, [support], address)[0] == 250
    report = EmailMessage()
    report["From"], report["To"], report["Subject"] = sender, support, "Delivery Status"
    report.set_content("failed")
    report.make_mixed()
    report.replace_header(
        "Content-Type", 'multipart/report; report-type=delivery-status; boundary="b"'
    )
    assert send(stack, report, [support], address)[0] == 250
    assert stored(stack) == before
    assert tickets(stack, key) == []


def _nested(depth: int) -> bytes:
    body = b"text\r\n"
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary="
            + boundary
            + b"\r\n\r\n--"
            + boundary
            + b"\r\n"
            + body
            + b"\r\n--"
            + boundary
            + b"--\r\n"
        )
    return body


def test_bad_mail_is_refused_with_a_clear_reply_and_nothing_stored(stack: Stack):
    key, support = tenant(stack)
    address, sender = customer()
    head = f"From: {sender}\r\nTo: {support}\r\nSubject: bad\r\nMessage-ID: <{unique('m')}@x>\r\n"
    many = EmailMessage()
    many["From"], many["To"], many["Subject"] = sender, support, "many"
    many.set_content("many parts")
    for n in range(30):
        many.add_attachment(f"part {n}".encode(), maintype="text", subtype="plain")
    big_file = mail(sender, support, "big file", "attached")
    big_file.add_attachment(b"\0" * (FILE_LIMIT + 1), maintype="application", subtype="zip")
    cases: list[tuple[str, bytes | EmailMessage, str]] = [
        (
            "malformed MIME",
            (
                head + 'Content-Type: multipart/mixed; boundary="zz"\r\n\r\nno parts here\r\n'
            ).encode(),
            "554 5.6.0",
        ),
        ("many parts", many, "554 5.6.0"),
        ("deep nesting", head.encode() + b"MIME-Version: 1.0\r\n" + _nested(12), "554 5.6.0"),
        ("huge headers", (head + "X-Pad: a\r\n" * 3000 + "\r\nhi\r\n").encode(), "552 5.3.4"),
        ("oversize file", big_file, "552 5.3.4"),
        ("oversize mail", (head + "\r\n" + ("a" * 78 + "\r\n") * 7000).encode(), "552"),
    ]
    before = stored(stack)
    for name, raw, expected in cases:
        code, text = send(stack, raw, [support], address)
        assert f"{code} {text}".startswith(expected), (name, code, text)
    assert stored(stack) == before
    assert tickets(stack, key) == []


def contacts_of(stack: Stack, key: str, address: str) -> list[dict[str, Any]]:
    return ok(stack.call("GET", "/v1/contacts", key=key, params={"email": address}))["items"]


def test_a_refused_mail_from_a_new_address_leaves_no_contact(stack: Stack):
    key, support = tenant(stack)
    address, sender = customer()
    # Each file within the per-file limit, together past the ticket's: the parser passes it,
    # the tickets worker refuses it.
    heavy = mail(sender, support, "four files", "attached")
    for n in range(4):
        heavy.add_attachment(
            bytes([n]) * (FILE_LIMIT - 1024), maintype="application", subtype="zip"
        )
    before = stored(stack)
    code, text = send(stack, heavy, [support], address)
    assert (code, text[:5]) == (552, "5.3.4") and "together" in text
    assert stored(stack) == before
    assert contacts_of(stack, key, address) == []
    # The same sender's next mail, one accepted, makes the contact: the lookup is by address.
    assert send(stack, mail(sender, support, "one file less", "hi"), [support], address)[0] == 250
    assert len(contacts_of(stack, key, address)) == 1


def test_a_restricted_sender_is_refused_and_an_erased_one_is_a_new_contact(stack: Stack):
    key, support = tenant(stack)
    address, sender = customer()
    assert send(stack, mail(sender, support, "one", "first"), [support], address)[0] == 250
    [first] = tickets(stack, key)
    requester = first["requester_id"]

    restriction = file(stack, key, {"type": "restriction", "subject": {"contact_id": requester}})
    assert completed(stack, key, restriction["id"])["status"] == "completed"
    before = stored(stack)
    code, text = send(stack, mail(sender, support, "two", "again"), [support], address)
    # Refused, and not told why: that a person's data is restricted is theirs (Art. 18).
    assert (code, text) == (550, "5.7.1 Message refused")
    assert stored(stack) == before

    def records() -> list:
        query = "SELECT ticket_id FROM mail_in_received WHERE requester_id = %s"
        return rows(stack, "tickets", query, requester)

    assert [str(r[0]) for r in records()] == [first["id"]]
    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": requester}})
    assert completed(stack, key, erasure["id"])["status"] == "completed"
    assert records() == []  # what recognised their mail went with them
    assert send(stack, mail(sender, support, "three", "new me"), [support], address)[0] == 250
    newest = [t for t in tickets(stack, key) if t["id"] != first["id"]]
    assert [t["subject"] for t in newest] == ["three"]
    assert newest[0]["requester_id"] != requester


def test_an_accounts_outage_is_answered_451_and_the_retry_stores_once(stack: Stack):
    key, support = tenant(stack)
    address, sender = customer()
    msg = mail(sender, support, unique("During the outage"), "hello?")
    before = stored(stack)
    stack.stop("accounts")
    try:
        code, text = send(stack, msg, [support], address)
        assert (code, text[:5]) == (451, "4.3.0")
        assert stored(stack) == before
    finally:
        stack.start("accounts")
    # The relay tries again until it is answered 250, then again (its 250 lost): one ticket.
    wait_until(lambda: send(stack, msg, [support], address)[0] == 250, timeout=60, what="250")
    assert send(stack, msg, [support], address)[0] == 250
    assert [t["subject"] for t in tickets(stack, key)] == [str(msg["Subject"])]
