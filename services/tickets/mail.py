"""Public replies mailed to the ticket's requester (``kernel.mail``).

A public reply written by staff is queued in the transaction that records it: the message is
rendered there (the ticket's subject and the reply's text, opened in memory) and sealed under
the ticket's key, a child of the requester's, so the requester's erasure, or the ticket's purge,
makes it unreadable wherever it waits. The address is asked of accounts, which owns it, when the
reply is written (``mail_recipient``, recorded there for the audit ledger): the sealed copy is
what the sender needs, so sending never depends on accounts being up, and a retry sends the
same bytes. Internal notes and what a requester wrote (an agent typing it in on their behalf)
are never mailed.

Threading (RFC 5322, 3.6.4): every mail of a ticket refers to the ticket's own root Message-ID
(``<ticket.<id>.<token>@domain>``, never sent itself, as a thread's anchor); a reply's
In-Reply-To is the ticket's previous public reply (``<reply.<id>.<token>@domain>``) or the
root, its References the root and the replies before it, so mail clients thread the whole
conversation. Message-IDs are built from ids and the thread token only: an HMAC of the ticket
and its requester under the tenant's key (``thread_token``), without which an answer threads
onto nothing (``services.tickets.mail_in``).
Transactional mail only: no marketing, so no consent check and no List-Unsubscribe; a reply is
written by a person, so it is not ``Auto-Submitted``. Its ``Reply-To`` is the tenant's support
address (an id at the inbound domain, no one's name), so the requester's answer comes back in
and threads by these Message-IDs (``services.tickets.mail_in``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from kernel.crypto.blind_index import BlindIndex
from kernel.crypto.fields import is_erased
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded
from kernel.errors import NotFound
from kernel.mail.message import Mail, message_id
from kernel.mail.outbox import Mailer, Owed
from kernel.uow import UnitOfWork

log = logging.getLogger(__name__)

KIND = "ticket_reply"

# (tenant_id, subject_id, reference_id) -> {"name", "email"}, or NotFound: accounts' answer.
RecipientLookup = Callable[[str, str, str], dict[str, str]]


# The blind index's kind for thread tokens: a key of its own, joinable to no other digest.
TOKEN_KIND = "mail_thread"
# 128 bits of the HMAC, in hex: unguessable, and short enough for a Message-ID.
TOKEN_CHARS = 32


def thread_token(keystore: Keystore, tenant_id: str, ticket_id: str, requester_id: str) -> str:
    """What proves a mail answers one of ours: an HMAC of the ticket and its requester under
    the tenant's key (``TOKEN_KIND``), which only the mails sent to that requester carry. A
    destroyed tenant has no key: its token is no one's ("")."""
    digest = BlindIndex(keystore).digest(tenant_id, TOKEN_KIND, f"{ticket_id}\n{requester_id}")
    return "" if digest is None else digest.hex()[:TOKEN_CHARS]


def thread_root(ticket_id: str, token: str, domain: str) -> str:
    return message_id("ticket", f"{ticket_id}.{token}", domain)


def reply_id(message: str, token: str, domain: str) -> str:
    return message_id("reply", f"{message}.{token}", domain)


def mail_reply(
    uow: UnitOfWork,
    mailer: Mailer,
    recipient: RecipientLookup,
    tenant_id: str,
    added: dict[str, Any],
    reply_to: str | None = None,
) -> uuid.UUID | None:
    """Queue the mail of a message just added (``handlers.add_message``'s answer) if it is a
    public reply by staff; the mail's id, or None when nothing is owed or no one can get it.
    ``reply_to``: the tenant's support address, where an answer comes back in
    (``services.tickets.mail_in``)."""
    if added["internal"] or added["author_kind"] != "agent":
        return None
    ticket_id = str(added["ticket_id"])
    requester_id, message = str(added["requester_id"]), str(added["id"])
    try:
        to = recipient(tenant_id, requester_id, message)
    except NotFound:
        # Erased, restricted, or no longer a contact: the reply stands, no mail goes.
        log.info("reply %s of ticket %s not mailed: no address to mail", message, ticket_id)
        return None
    uow.cur.execute(
        "SELECT subject FROM tickets WHERE id = %s AND tenant_id = %s", (ticket_id, tenant_id)
    )
    [stored_subject] = uow.cur.fetchone()
    subject = uow.cipher.open_stored(tenant_id, {"subject": stored_subject})["subject"]
    # The public replies before this one, oldest first: the thread this mail continues.
    uow.cur.execute(
        "SELECT id FROM ticket_messages WHERE ticket_id = %s AND id <> %s AND NOT internal"
        " AND author_kind = 'agent' ORDER BY seq",
        (ticket_id, message),
    )
    token = thread_token(uow.cipher.keystore, tenant_id, ticket_id, requester_id)
    earlier = [reply_id(str(row[0]), token, mailer.domain) for row in uow.cur.fetchall()]
    root = thread_root(ticket_id, token, mailer.domain)
    mail = Mail(
        sender=mailer.sender,
        to_name=to.get("name") or "",
        to_address=to["email"],
        subject=f"Re: {'your request' if is_erased(subject) else subject}",
        body=added["body"],
        message_id=reply_id(message, token, mailer.domain),
        in_reply_to=earlier[-1] if earlier else root,
        references=[root, *earlier],
        extra_headers={"Reply-To": reply_to} if reply_to else {},
    )
    owed = Owed(
        tenant_id=uuid.UUID(tenant_id),
        recipient_id=uuid.UUID(requester_id),
        key_subject_id=uuid.UUID(ticket_id),
        key_parent_id=uuid.UUID(requester_id),
        kind=KIND,
        reference_id=uuid.UUID(message),
        mail=mail,
    )
    try:
        return mailer.enqueue(uow.cur, owed)
    except KeyShredded:  # erased between the reply and now: nothing is sealed for no one
        return None
