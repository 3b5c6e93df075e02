"""Attachments' handlers: an upload in chunks, its download a chunk at a time, and the limits.

The gateway streams a client's body to tickets in chunks (``begin_upload``, ``put_chunk``
each, ``finish_upload``), so neither process holds a whole file nor does one broker message
carry one; a download is the same in reverse (``for_download``, then ``chunk``). The store
(``attachment_store``) seals each chunk under the ticket's key.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from kernel.cards import redact_card_numbers
from kernel.crypto.primitives import KeyShredded
from kernel.errors import Conflict, NotFound, TooLarge, ValidationFailed, require_id
from kernel.uow import UnitOfWork
from services.tickets.attachment_store import Attachment, AttachmentStore
from services.tickets.handlers import load_ticket


@dataclass(frozen=True)
class Limits:
    """The settings' limits (LEDGERDESK_ATTACHMENT_MAX_BYTES, _ATTACHMENTS_PER_MESSAGE,
    _ATTACHMENT_TICKET_BYTES)."""

    file_bytes: int
    per_message: int
    ticket_bytes: int

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(
            settings.attachment_max_bytes,
            settings.attachments_per_message,
            settings.attachment_ticket_bytes,
        )


def store_of(uow: UnitOfWork) -> AttachmentStore:
    return AttachmentStore(uow.cur, uow.cipher)


_ERASED = "the requester of this ticket was erased; it takes no new attachments"


def begin_upload(
    uow: UnitOfWork, tenant_id: str, ticket_id: str, agent_id: str, limits: Limits
) -> dict[str, Any]:
    ticket = load_ticket(uow, tenant_id, ticket_id)
    if ticket.status == "closed":
        raise Conflict("a closed ticket is final")
    if uow.cipher.keystore.subject_key(tenant_id, ticket.id, create=False) is None:
        raise Conflict(_ERASED)
    store = store_of(uow)
    if store.ticket_bytes(tenant_id, ticket.id) >= limits.ticket_bytes:
        raise TooLarge(
            f"a ticket's attachments may be at most {limits.ticket_bytes} bytes together"
        )
    return {"id": store.begin(tenant_id, ticket.id, ticket.requester_id, agent_id)}


def put_chunk(
    uow: UnitOfWork, tenant_id: str, attachment_id: str, seq: int, data: str, limits: Limits
) -> dict[str, Any]:
    """Chunk ``seq`` (base64, as RPC arguments are JSON) of an upload under way."""
    require_id(attachment_id, "upload")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValidationFailed({"chunk": ["not base64"]}) from None
    try:
        size = store_of(uow).append(
            tenant_id, attachment_id, int(seq), raw, limits.file_bytes, limits.ticket_bytes
        )
    except KeyShredded:
        raise Conflict(_ERASED) from None
    return {"size": size}


def finish_upload(
    uow: UnitOfWork, tenant_id: str, attachment_id: str, query: dict[str, Any]
) -> dict[str, Any]:
    """The upload complete, under its name (card numbers cut to their last four digits)."""
    require_id(attachment_id, "upload")
    filename, _ = redact_card_numbers(query["filename"])
    try:
        return store_of(uow).finish(tenant_id, attachment_id, filename.strip()).shown()
    except KeyShredded:
        raise Conflict(_ERASED) from None


def discard_upload(uow: UnitOfWork, tenant_id: str, attachment_id: str) -> None:
    require_id(attachment_id, "upload")
    store_of(uow).discard(tenant_id, attachment_id)


def for_download(
    uow: UnitOfWork, tenant_id: str, ticket_id: str, attachment_id: str
) -> dict[str, Any]:
    """What a download needs before its bytes: the metadata, how many chunks, and the
    requester (whom the access record names). Not found once erased or purged."""
    require_id(ticket_id, "ticket")
    attachment = _readable(uow, tenant_id, attachment_id)
    if attachment.ticket_id != ticket_id:
        raise NotFound("no such attachment")
    return {
        **attachment.shown(),
        "ticket_id": attachment.ticket_id,
        "requester_id": attachment.requester_id,
        "chunks": attachment.chunks,
    }


def chunk(uow: UnitOfWork, tenant_id: str, attachment_id: str, seq: int) -> str:
    """Chunk ``seq`` of a complete attachment, base64."""
    attachment = _readable(uow, tenant_id, attachment_id)
    data = store_of(uow).chunk(attachment, int(seq))
    if data is None:
        raise NotFound("no such attachment")
    return base64.b64encode(data).decode("ascii")


def _readable(uow: UnitOfWork, tenant_id: str, attachment_id: str) -> Attachment:
    attachment = store_of(uow).get(tenant_id, attachment_id)
    if attachment is None or attachment.state != "stored" or attachment.erased:
        raise NotFound("no such attachment")
    return attachment


# What one subject's export carries of their files' bytes: the export is one JSON document
# in one RPC reply (and the broker's messages have a size limit), so past this the files are
# listed, not carried, and the admin answering the request downloads them by their ids.
EXPORT_INLINE_BYTES = 8 << 20


def exported(uow: UnitOfWork, tenant_id: str, message_ids: list[str]) -> dict[str, list[dict]]:
    """Each message's attachments for a subject's export: metadata, and the content (base64)
    while the export's budget (``EXPORT_INLINE_BYTES``) lasts; a file past it is named with
    ``content_base64`` null and ``content_omitted`` saying why."""
    store = store_of(uow)
    found: dict[str, list[dict]] = {}
    budget = EXPORT_INLINE_BYTES
    for message_id, attachments in store.of_messages(tenant_id, message_ids).items():
        for attachment in attachments:
            if attachment.erased:
                continue
            shown: dict[str, Any] = attachment.shown()
            if attachment.size > budget:
                shown["content_base64"] = None
                shown["content_omitted"] = (
                    "larger than what one export carries: download it by its id"
                )
            else:
                budget -= attachment.size
                shown["content_base64"] = base64.b64encode(_content(store, attachment)).decode(
                    "ascii"
                )
            found.setdefault(message_id, []).append(shown)
    return found


def _content(store: AttachmentStore, attachment: Attachment) -> bytes:
    """A file's bytes, whole: a chunk that will not open fails the export rather than carry a
    file whose size and digest no longer match it."""
    parts = []
    for seq in range(attachment.chunks):
        data = store.chunk(attachment, seq)
        if data is None:
            raise RuntimeError(f"attachment {attachment.id} chunk {seq} could not be read")
        parts.append(data)
    return b"".join(parts)
