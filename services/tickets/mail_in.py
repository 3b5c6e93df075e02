"""Mail in: a mail to a tenant's support address opens a ticket, or threads onto one.

The support address is ``<tenant id>@<LEDGERDESK_MAIL_IN_DOMAIN>``: an id, which says nothing
of the tenant's company or people (a tenant forwards its own public address to it). The
listener (``kernel.mail.listener``) hands over the local part (``recipient``) and then the
parsed mail (``receive``), whose card numbers are cut already (``kernel.mail.inbound``).

Who wrote it: the sender is matched to a contact of the tenant by address, or a new contact is
made, by accounts, which owns contacts (``inbound_contact``); a restricted contact's mail is
refused (550 5.7.1: no new processing of their data), and an erased contact who writes again is
a new contact (the erasure ended what was; a new mail is new data they chose to send).

Threading: outbound replies carry ``Reply-To:`` the support address and Message-IDs built from
ids and a thread token (``services.tickets.mail``: an HMAC of the ticket and its requester
under the tenant's key); a reply's In-Reply-To and References name them. A referenced ticket is
continued only if it is this tenant's, its requester is the sender, the reference carries the
token of that ticket and requester, and it is not closed (``choose_thread``); a pending or
solved one is open again. Anything else opens a new ticket: a forged References naming another
tenant's or another requester's ticket, and a forged From with a bare or made-up reference,
since only the mails sent to the requester carry the token.

Exactly once: the mail's idempotency record (``mail_in_received``) is keyed by a keyed hash of
the sender and the Message-ID under the tenant's blind-index key, written in the transaction
that stores the ticket or message; a relay re-sending the mail finds it and is answered 250
with nothing stored again. Concurrent deliveries of one mail take turns on an advisory lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2

from kernel.commands import load_command
from kernel.crypto.blind_index import BlindIndex
from kernel.errors import (
    ChangedMeanwhile,
    Conflict,
    Gone,
    NotFound,
    RetryLater,
    SubjectErased,
    TooLarge,
    ValidationFailed,
)
from kernel.mail import inbound
from kernel.uow import UnitOfWork
from services.tickets import commands, handlers
from services.tickets import mail as mail_out
from services.tickets.attachment_store import AttachmentStore
from services.tickets.attachments import Limits
from services.tickets.commands import CHUNK_BYTES

# The blind index's kind for idempotency digests (a key of its own, joinable to no other).
DIGEST_KIND = "mail_in"

# (tenant_id, address, name) -> {"contact_id"}: accounts' answer, or NotFound (no tenant),
# Gone (cancelled), Conflict (the contact's data is restricted).
SenderLookup = Callable[[str, str, str], dict[str, Any]]


def support_address(tenant_id: str, domain: str) -> str:
    return f"{tenant_id}@{domain}"


def tenant_of(local_part: str) -> str:
    """The tenant a support address's local part names (``NotFound`` for anything else)."""
    try:
        tenant_id = str(uuid.UUID(local_part))
    except ValueError:
        raise NotFound("no such mailbox") from None
    if tenant_id != local_part.lower():  # one spelling per tenant: no braces, no urn: prefix
        raise NotFound("no such mailbox")
    return tenant_id


def check_tenant(tenant: dict[str, Any]) -> None:
    """A tenant mail may open tickets in: active (a cancelled one is ``Gone``)."""
    if tenant.get("status") == "cancelled":
        raise Gone("the tenant's account is cancelled")
    if tenant.get("status") != "active":
        raise NotFound("no such mailbox")


# --- threading -----------------------------------------------------------------------------


def referenced(references: Sequence[str], domain: str) -> list[tuple[str, str, str]]:
    """Our own Message-IDs among ``references`` (kept in order): ``("ticket", id, token)`` for
    a thread's root, ``("reply", id, token)`` for a reply's. Any other id is someone else's,
    and one of ours without its token (a bare ``<ticket.<id>@domain>``) is no proof at all."""
    found: list[tuple[str, str, str]] = []
    for ident in references:
        left, _, right = ident.strip("<>").rpartition("@")
        kind, _, value = left.partition(".")
        ident_part, _, token = value.partition(".")
        if right.lower() != domain or kind not in ("ticket", "reply") or not token:
            continue
        try:
            found.append((kind, str(uuid.UUID(ident_part)), token.lower()))
        except ValueError:
            continue
    return found


@dataclass(frozen=True)
class Candidate:
    ticket_id: str
    tenant_id: str
    requester_id: str
    status: str
    # The thread token the mail's reference to this ticket carried.
    token: str = ""


# (ticket id, requester id) -> the thread token our mails for them carry (mail.thread_token).
TokenOf = Callable[[str, str], str]


def choose_thread(
    candidates: Sequence[Candidate], tenant_id: str, requester_id: str, token_of: TokenOf
) -> str | None:
    """The first referenced ticket this mail may continue: this tenant's, raised by this
    sender, referred to with the token only mails to this requester about this ticket carry,
    not closed (a closed ticket is final; the mail opens a new one). None: a new ticket."""
    for candidate in candidates:
        if (
            candidate.tenant_id == tenant_id
            and candidate.requester_id == requester_id
            and candidate.status != "closed"
            and candidate.token
            and hmac.compare_digest(candidate.token, token_of(candidate.ticket_id, requester_id))
        ):
            return candidate.ticket_id
    return None


def _candidates(uow: UnitOfWork, refs: list[tuple[str, str, str]]) -> list[Candidate]:
    """The tickets ``refs`` name, in their order, each with the token it came with, whatever
    their tenant (``choose_thread`` decides)."""
    replies = [value for kind, value, _ in refs if kind == "reply"]
    of_reply: dict[str, str] = {}
    if replies:
        uow.cur.execute(
            "SELECT id, ticket_id FROM ticket_messages WHERE id = ANY(%s::uuid[])", (replies,)
        )
        of_reply = {str(m): str(t) for m, t in uow.cur.fetchall()}
    pairs = [
        (value if kind == "ticket" else of_reply.get(value, ""), token)
        for kind, value, token in refs
    ]
    ordered = [pair for pair in dict.fromkeys(pairs) if pair[0]]
    if not ordered:
        return []
    uow.cur.execute(
        "SELECT id, tenant_id, requester_id, status FROM tickets"
        " WHERE id = ANY(%s::uuid[]) AND erased_at IS NULL",
        (list({t for t, _ in ordered}),),
    )
    found = {str(r[0]): (str(r[1]), str(r[2]), r[3]) for r in uow.cur}
    return [Candidate(t, *found[t], token=token) for t, token in ordered if t in found]


# --- storing -------------------------------------------------------------------------------


def receive(
    uow: UnitOfWork,
    sender_lookup: SenderLookup,
    subject_lookup: handlers.SubjectLookup,
    tenant_id: str,
    mail: dict[str, Any],
    limits: Limits,
    domain: str,
) -> dict[str, Any]:
    """Store a parsed mail (``inbound.Inbound.as_rpc``) for ``tenant_id``: a new ticket or a
    message on the one it answers, its files on it. ``{"outcome": "stored"|"duplicate",
    "ticket_id", "message_id"}``; a refusal raises ``inbound.Refused`` with nothing stored."""
    digest = BlindIndex(uow.cipher.keystore).digest(
        tenant_id, DIGEST_KIND, f"{mail['sender']}\n{mail['message_id']}"
    )
    if digest is None:  # the tenant's key is gone: destroyed
        raise NotFound("no such mailbox")
    uow.cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 0))", (digest.hex(),))
    uow.cur.execute(
        "SELECT ticket_id, message_id FROM mail_in_received WHERE tenant_id = %s AND digest = %s",
        (tenant_id, psycopg2.Binary(digest)),
    )
    row = uow.cur.fetchone()
    if row is not None:
        return {
            "outcome": "duplicate",
            "ticket_id": str(row[0]),
            "message_id": None if row[1] is None else str(row[1]),
        }
    files = [(str(name), bytes(content)) for name, content in mail["files"]]
    # Everything that can refuse the mail is checked before accounts is asked: accounts makes
    # a new sender's contact in a transaction of its own, which a refusal here would not undo.
    with _as_refusal():
        check(mail, files, limits)
    try:
        contact = sender_lookup(tenant_id, mail["sender"], mail["sender_name"])
    except ValidationFailed:
        # Parsed as an address, yet not one a contact may have: permanent, not a retry.
        raise inbound.Refused(550, "5.1.7", "the sender's address is not one we accept") from None
    contact_id = str(contact["contact_id"])
    keystore = uow.cipher.keystore
    thread = choose_thread(
        _candidates(uow, referenced(mail["references"], domain)),
        tenant_id,
        contact_id,
        lambda ticket_id, requester_id: mail_out.thread_token(
            keystore, tenant_id, ticket_id, requester_id
        ),
    )
    # What can still refuse it (a thread's attachments past their total, a ticket's requester
    # restricted) concerns a ticket this contact raised: a contact accounts had already.
    with _as_refusal():
        if thread is None:
            ticket_id, message_id = _open_ticket(
                uow, subject_lookup, tenant_id, contact_id, mail, files, limits
            )
        else:
            ticket_id = thread
            message_id = _add_reply(
                uow, tenant_id, ticket_id, contact_id, mail["text"], files, limits
            )
            _reopen(uow, tenant_id, ticket_id)
    uow.cur.execute(
        "INSERT INTO mail_in_received (tenant_id, digest, ticket_id, requester_id, message_id)"
        " VALUES (%s, %s, %s, %s, %s)",
        (tenant_id, psycopg2.Binary(digest), ticket_id, contact_id, message_id),
    )
    return {"outcome": "stored", "ticket_id": ticket_id, "message_id": message_id}


def check(mail: dict[str, Any], files: list[tuple[str, bytes]], limits: Limits) -> None:
    """What would refuse the mail as a new ticket, before anyone is asked who sent it: the
    commands it becomes (as the handlers will validate them), the files' names, sizes, number
    and total (a new ticket holds nothing yet). Raises what the handlers would."""
    load_command(
        commands.CreateTicketV1,
        {"subject": mail["subject"], "body": mail["text"], "requester_id": str(uuid.uuid4())},
    )
    load_command(commands.AddMessageV1, {"body": mail["text"], "on_behalf_of_requester": True})
    for filename, content in files:
        load_command(commands.UploadAttachmentV1, {"filename": filename})
        if not content:
            raise ValidationFailed({"body": ["the file is empty"]})
        if len(content) > limits.file_bytes:
            raise TooLarge(f"a file may be at most {limits.file_bytes} bytes")
    if len(files) > limits.per_message:
        raise ValidationFailed(
            {"attachment_ids": [f"a message may carry at most {limits.per_message} files"]}
        )
    if sum(len(content) for _, content in files) > limits.ticket_bytes:
        raise TooLarge(
            f"a ticket's attachments may be at most {limits.ticket_bytes} bytes together"
        )


@contextlib.contextmanager
def _as_refusal() -> Iterator[None]:
    """The handlers' refusals as the SMTP reply they earn."""
    try:
        yield
    except TooLarge as exc:
        raise inbound.too_big(str(exc)) from None
    except ValidationFailed as exc:
        raise inbound.Refused(550, "5.7.1", _first_error(exc)) from None
    except (RetryLater, ChangedMeanwhile, SubjectErased):
        raise  # may pass: the listener answers 451, and the relay tries again
    except Conflict as exc:
        raise inbound.Refused(550, "5.7.1", str(exc)) from None


def _open_ticket(
    uow: UnitOfWork,
    subject_lookup: handlers.SubjectLookup,
    tenant_id: str,
    contact_id: str,
    mail: dict[str, Any],
    files: list[tuple[str, bytes]],
    limits: Limits,
) -> tuple[str, str | None]:
    command = load_command(
        commands.CreateTicketV1,
        {"subject": mail["subject"], "body": mail["text"], "requester_id": contact_id},
    )
    created = handlers.create_ticket(uow, subject_lookup, tenant_id, command)
    ticket_id = str(created["id"])
    if not files:
        return ticket_id, None
    # A ticket's first words are no message: the mail's files go on one of their own, from
    # the requester, in the same transaction.
    count = len(files)
    note = f"{count} file{'s' if count != 1 else ''} sent with the mail that opened this ticket"
    return ticket_id, _add_reply(uow, tenant_id, ticket_id, contact_id, note, files, limits)


def _add_reply(
    uow: UnitOfWork,
    tenant_id: str,
    ticket_id: str,
    contact_id: str,
    text: str,
    files: list[tuple[str, bytes]],
    limits: Limits,
) -> str:
    store = AttachmentStore(uow.cur, uow.cipher)
    ids = [_store_file(store, tenant_id, ticket_id, contact_id, f, limits) for f in files]
    command = load_command(
        commands.AddMessageV1,
        {"body": text, "on_behalf_of_requester": True, "attachment_ids": ids},
    )
    added = handlers.add_message(uow, tenant_id, ticket_id, contact_id, command, limits.per_message)
    return str(added["id"])


def _reopen(uow: UnitOfWork, tenant_id: str, ticket_id: str) -> None:
    """The requester answered: a ticket waiting on them (pending) or solved is open again, so
    it is back in the agents' queue."""
    ticket = handlers.load_ticket(uow, tenant_id, ticket_id)
    if ticket.status in ("pending", "solved"):
        ticket.move_to("open")
        uow.save(ticket, ticket.tenant_id)


def _store_file(
    store: AttachmentStore,
    tenant_id: str,
    ticket_id: str,
    contact_id: str,
    file: tuple[str, bytes],
    limits: Limits,
) -> str:
    """A mail's file through the uploads' own path: sealed chunks under the ticket's key, the
    same limits, the type sniffed from its bytes, the name checked as an upload's is."""
    filename, content = file
    load_command(commands.UploadAttachmentV1, {"filename": filename})
    attachment_id = store.begin(tenant_id, ticket_id, contact_id, contact_id)
    for seq, start in enumerate(range(0, len(content), CHUNK_BYTES)):
        store.append(
            tenant_id,
            attachment_id,
            seq,
            content[start : start + CHUNK_BYTES],
            limits.file_bytes,
            limits.ticket_bytes,
        )
    store.finish(tenant_id, attachment_id, filename)
    return attachment_id


def _first_error(exc: ValidationFailed) -> str:
    errors = getattr(exc, "errors", None) or {}
    for messages in errors.values():
        if messages:
            return str(messages[0] if isinstance(messages, list) else messages)
    return "the mail could not be stored"


def forget_expired(cur: Any, older_than: dt.timedelta) -> int:
    """Idempotency records past the window a relay re-sends in."""
    cur.execute("DELETE FROM mail_in_received WHERE received_at < now() - %s", (older_than,))
    return int(cur.rowcount)
