"""A mail as a relay and a mail client expect it: Date, Message-ID, From, To, Subject, and for
notices ``Auto-Submitted: auto-generated`` (RFC 3834, so auto-responders do not answer them);
threading by ``In-Reply-To`` and ``References`` (RFC 5322, 3.6.4).

Message-IDs are built from ids only (``<kind.id@domain>``): the same mail gets the same
Message-ID however often it is sent, so a resend after a crash is recognisably the same
message (a receiving system or a client dedups it), and no Message-ID says anything of anyone.
"""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

# Mail clients and relays fold longer lines; a thread's References keep its root and its
# latest messages, enough for any client to thread (RFC 5322 allows trimming the middle).
MAX_REFERENCES = 10


def domain_of(sender: str) -> str:
    """The domain of an address such as ``Name <user@example.org>``: Message-IDs' right side."""
    _, address = email.utils.parseaddr(sender)
    domain = address.rpartition("@")[2]
    if not domain:
        raise ValueError("the sender's address has no domain")
    return domain.lower()


def one_line(text: str) -> str:
    """A header's words on one line: any run of whitespace, line breaks and Unicode line
    separators included, becomes one space. A subject or a name a client typed with a line
    break in it would otherwise make the header unrenderable (the email package refuses it,
    which is what keeps headers from being injected), and with it the reply that owes the
    mail."""
    return " ".join(text.split())


def message_id(kind: str, ident: str, domain: str) -> str:
    """``<kind.ident@domain>`` from ids only; the same arguments give the same id."""
    return f"<{kind}.{ident}@{domain}>"


@dataclass(frozen=True)
class Mail:
    """What a mail says: composed by the service, rendered once (``render``) and sealed."""

    sender: str
    to_name: str
    to_address: str
    subject: str
    body: str
    message_id: str
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    # A notice written by the platform, not a person: Auto-Submitted (RFC 3834).
    automatic: bool = False
    # Bulk or marketing mail only: the one-click unsubscribe (RFC 8058). Transactional mail
    # (a reply, a notice of one's own request) has none: there is no list to leave.
    unsubscribe: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def render(self, when: float | None = None) -> bytes:
        """The message's bytes (CRLF line ends, as SMTP carries them)."""
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["Date"] = email.utils.formatdate(when, localtime=False)
        msg["Message-ID"] = self.message_id
        msg["From"] = self.sender
        msg["To"] = Address(display_name=one_line(self.to_name), addr_spec=self.to_address)
        msg["Subject"] = one_line(self.subject)
        if self.in_reply_to:
            msg["In-Reply-To"] = self.in_reply_to
        references = list(self.references)
        if len(references) > MAX_REFERENCES:
            references = references[:1] + references[-(MAX_REFERENCES - 1) :]
        if references:
            msg["References"] = " ".join(references)
        if self.automatic:
            msg["Auto-Submitted"] = "auto-generated"
        if self.unsubscribe:
            msg["List-Unsubscribe"] = f"<{self.unsubscribe}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for name, value in self.extra_headers.items():
            msg[name] = value
        msg.set_content(self.body)
        return msg.as_bytes()
