"""kernel.mail.listener in a nameko container, spoken to with smtplib over SMTP and LMTP: the
envelope checks, each worker's outcome as its SMTP reply (a refusal 5xx, any other failure 451
so the relay retries), LMTP's reply per recipient, and automatic mail dropped before a worker."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any, ClassVar

import pytest

from kernel.config import Settings
from kernel.errors import ChangedMeanwhile, Conflict, Gone, NotFound, RetryLater, SubjectErased
from kernel.mail.inbound import Refused
from kernel.mail.listener import MESSAGE, RECIPIENT, mail_in
from kernel.testing import free_port

DOMAIN = "in.example.test"
# Conflicts that may pass, as a worker meets them (the last two as the RPC wrapper turns a lost
# race and a shredded key into them).
PASSING: dict[str, Exception] = {
    "t-later": RetryLater(5),
    "t-raced": ChangedMeanwhile("the resource changed meanwhile; reload and retry"),
    "t-erased": SubjectErased("a person this concerns has been erased"),
}


class Desk:
    """Recipients: ``t-*`` are tenants, ``gone`` is cancelled, ``down`` fails; mail for
    ``t-down`` fails to store, for ``t-full`` is refused."""

    name = "desk"
    stored: ClassVar[list[tuple[str, str]]] = []

    @mail_in(RECIPIENT)
    def recipient(self, local: str) -> str:
        if local == "gone":
            raise Gone("cancelled")
        if local == "down":
            raise RuntimeError("the directory is unreachable")
        if not local.startswith("t-"):
            raise NotFound("no such mailbox")
        return local

    @mail_in(MESSAGE)
    def message(self, key: str, mail: dict[str, Any]) -> dict[str, Any]:
        if key == "t-down":
            raise RuntimeError("the database is unreachable")
        if key == "t-full":
            raise Refused(552, "5.3.4", "the ticket's files are full")
        if key in PASSING:
            raise PASSING[key]
        if key == "t-restricted":
            raise Conflict("the contact's data is restricted")
        if key == "t-refused":
            raise Refused(550, "5.7.1", "the requester of this ticket is restricted")
        Desk.stored.append((key, mail["subject"]))
        return {"outcome": "stored"}


@pytest.fixture(params=["smtp", "lmtp"])
def listener(request, container_factory) -> tuple[str, int]:
    port = free_port()
    settings = Settings().with_overrides(
        mail_in_port=port,
        mail_in_domain=DOMAIN,
        mail_in_protocol=request.param,
        mail_in_max_recipients=3,
    )
    container = container_factory(Desk, settings.nameko_config())
    container.start()
    Desk.stored.clear()
    return request.param, port


def client(protocol: str, port: int) -> smtplib.SMTP:
    return (smtplib.LMTP if protocol == "lmtp" else smtplib.SMTP)("127.0.0.1", port, timeout=20)


def mail(subject: str = "hello", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane <jane@customer.example>"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("words")
    return msg.as_bytes(policy=SMTP)


def rcpt(protocol: str, port: int, address: str) -> tuple[int, bytes]:
    with client(protocol, port) as smtp:
        smtp.ehlo()
        smtp.mail("jane@customer.example")
        return smtp.rcpt(address)


def deliver(protocol: str, port: int, to: list[str], data: bytes, sender: str = "j@c.example"):
    """The replies to DATA: one per recipient for LMTP (smtplib's LMTP reads only the first),
    one for SMTP."""
    with client(protocol, port) as smtp:
        smtp.ehlo()
        smtp.mail(sender)
        for address in to:
            assert smtp.rcpt(address)[0] == 250
        smtp.putcmd("data")
        assert smtp.getreply()[0] == 354
        smtp.send(data + b".\r\n")
        return [smtp.getreply() for _ in (to if protocol == "lmtp" else to[:1])]


def test_the_envelope_is_checked_and_each_recipient_answered(listener):
    protocol, port = listener
    assert rcpt(protocol, port, f"t-1@{DOMAIN}")[0] == 250
    assert rcpt(protocol, port, f"t-1@{DOMAIN.upper()}")[0] == 250
    assert rcpt(protocol, port, "t-1@elsewhere.example") == (550, b"5.1.1 No such mailbox here")
    assert rcpt(protocol, port, f"nobody@{DOMAIN}") == (550, b"5.1.1 No such mailbox here")
    code, text = rcpt(protocol, port, f"gone@{DOMAIN}")
    assert (code, text[:5]) == (550, b"5.2.1") and b"cancelled" in text
    assert rcpt(protocol, port, f"down@{DOMAIN}") == (
        451,
        b"4.3.0 Temporary failure, please try again later",
    )
    with client(protocol, port) as smtp:
        smtp.ehlo()
        smtp.mail("jane@customer.example")
        assert [smtp.rcpt(f"t-{n}@{DOMAIN}")[0] for n in range(4)] == [250, 250, 250, 452]


def test_a_mail_is_stored_for_each_recipient_and_answered_after(listener):
    protocol, port = listener
    replies = deliver(protocol, port, [f"t-a@{DOMAIN}", f"t-b@{DOMAIN}"], mail())
    assert {code for code, _ in replies} == {250}
    assert sorted(Desk.stored) == [("t-a", "hello"), ("t-b", "hello")]


def test_a_failed_store_is_a_temporary_failure_and_a_refusal_permanent(listener):
    protocol, port = listener
    to = [f"t-ok@{DOMAIN}", f"t-down@{DOMAIN}", f"t-full@{DOMAIN}"]
    replies = deliver(protocol, port, to, mail())
    if protocol == "lmtp":  # one reply per recipient, in order
        assert [code for code, _ in replies] == [250, 451, 552]
        assert replies[2][1] == b"5.3.4 the ticket's files are full"
    else:  # one reply: the temporary failure wins, so the relay retries all of it
        assert replies == [(451, b"4.3.0 Temporary failure, please try again later")]
    assert Desk.stored == [("t-ok", "hello")]


def test_bounces_auto_replies_and_bad_mime_reach_no_worker(listener):
    protocol, port = listener
    to = [f"t-1@{DOMAIN}"]
    assert deliver(protocol, port, to, mail("bounce"), sender="")[0][0] == 250
    away = mail("away", Auto_Submitted="auto-replied")
    assert deliver(protocol, port, to, away)[0][0] == 250
    bad = b"From: j@c.example\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\nx\r\n"
    [(code, text)] = deliver(protocol, port, to, bad)
    assert code == 554 and text.startswith(b"5.6.0 malformed MIME")
    assert Desk.stored == []


def test_a_policy_refusal_says_no_reason_and_a_passing_conflict_is_retried(listener):
    protocol, port = listener
    for key in ("t-restricted", "t-refused"):
        [(code, text)] = deliver(protocol, port, [f"{key}@{DOMAIN}"], mail())
        # Whoever sent it learns nothing of whose data is restricted (Art. 18).
        assert (code, text) == (550, b"5.7.1 Message refused"), key
    for key in PASSING:
        [(code, text)] = deliver(protocol, port, [f"{key}@{DOMAIN}"], mail())
        assert (code, text) == (451, b"4.3.0 Temporary failure, please try again later"), key
    assert Desk.stored == []


@pytest.fixture
def throttled(container_factory) -> int:
    port = free_port()
    settings = Settings().with_overrides(
        mail_in_port=port,
        mail_in_domain=DOMAIN,
        # Two mails per sender, three per peer, and (for the test's length) no refill to speak of.
        mail_in_sender_rate=0.001,
        mail_in_sender_burst=2,
        mail_in_peer_rate=0.001,
        mail_in_peer_burst=3,
    )
    container_factory(Desk, settings.nameko_config()).start()
    Desk.stored.clear()
    return port


def test_a_sender_and_a_peer_past_their_rate_are_asked_to_retry_later(throttled):
    def start(sender: str) -> tuple[int, bytes]:
        with client("smtp", throttled) as smtp:
            smtp.ehlo()
            return smtp.mail(sender)

    assert start("flood@customer.example") == (250, b"OK")
    assert start("Flood@Customer.Example") == (250, b"OK")  # one address, however spelt
    throttled_reply = (451, b"4.7.1 Too many messages, please try again later")
    assert start("flood@customer.example") == throttled_reply
    # Another sender has a bucket of their own; the peer's (this test's address) now runs out.
    assert start("other@customer.example") == (250, b"OK")
    assert start("third@customer.example") == throttled_reply
    # A refused MAIL leaves no envelope: the session's RCPT is out of sequence.
    with client("smtp", throttled) as smtp:
        smtp.ehlo()
        assert smtp.mail("fourth@customer.example")[0] == 451
        assert smtp.rcpt(f"t-a@{DOMAIN}")[0] == 503
    assert Desk.stored == []
