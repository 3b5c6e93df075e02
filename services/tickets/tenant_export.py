"""Tickets' part of a tenant's whole export (``kernel.tenant_export``): its tickets as the API
shows them (without their messages), every message, internal notes included (the tenant's
own), and the messages' attachments (a kind of files: each row names one, whose bytes are
asked for a chunk at a time, ``file_chunk``), in keyset pages.

Words are opened here, a page's keys loaded at once; a ticket whose key went (its requester's
erasure, the closed-ticket period) reads as erased. Messages are paged in the order of their
tickets (the tickets' page index), each ticket's by sequence, so a page costs a bounded read.
"""

from __future__ import annotations

from typing import Any

from kernel import tenant_export
from kernel.uow import UnitOfWork
from services.tickets import attachments
from services.tickets.handlers import _TICKET_COLUMNS, _stored_words, _ticket_row

KINDS = ("tickets", "messages", "attachments")

_COUNTS = {
    "tickets": "SELECT count(*) FROM tickets WHERE tenant_id = %s AND created_at < %s",
    "messages": "SELECT count(*) FROM ticket_messages WHERE tenant_id = %s AND created_at < %s",
}


def count(uow: UnitOfWork, tenant_id: str, kind: str, as_of: str) -> int:
    if kind == "attachments":
        return attachments.store_of(uow).count_exported(tenant_id, as_of)
    if kind not in _COUNTS:
        raise tenant_export.unknown("tickets", kind)
    uow.cur.execute(_COUNTS[kind], (tenant_id, as_of))
    return uow.cur.fetchone()[0]


def page(
    uow: UnitOfWork, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
) -> dict[str, Any]:
    limit = tenant_export.bounded(limit)
    if kind == "tickets":
        return _tickets(uow, tenant_id, as_of, tenant_export.position(after), limit)
    if kind == "messages":
        return _messages(uow, tenant_id, as_of, tenant_export.position(after, 3), limit)
    if kind == "attachments":
        return _attachments(uow, tenant_id, as_of, tenant_export.position(after), limit)
    raise tenant_export.unknown("tickets", kind)


def file_chunk(uow: UnitOfWork, tenant_id: str, kind: str, file_id: str, seq: int) -> str:
    """Chunk ``seq`` of a file an export's page named, base64; not found once erased."""
    if kind != "attachments":
        raise tenant_export.unknown("tickets", kind)
    return attachments.chunk(uow, tenant_id, file_id, seq)


def _attachments(uow: UnitOfWork, tenant: str, as_of: str, at: list, limit: int) -> dict:
    found = attachments.store_of(uow).exported_page(tenant, as_of, at, limit + 1)

    def render(rows: list[tuple]) -> list[dict[str, Any]]:
        return [
            {
                **attachment.shown(),
                "ticket_id": attachment.ticket_id,
                "message_id": attachment.message_id,
                "chunks": attachment.chunks,
                "path": tenant_export.file_path("attachments", attachment.id),
            }
            for attachment, _ in rows
            if not attachment.erased
        ]

    return tenant_export.page_of(found, limit, render, lambda row: [row[1].isoformat(), row[0].id])


def _tickets(uow: UnitOfWork, tenant: str, as_of: str, at: list, limit: int) -> dict[str, Any]:
    uow.cur.execute(
        f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE tenant_id = %s AND created_at < %s"  # noqa: S608
        " AND (created_at, id) > (%s::timestamptz, %s::uuid) ORDER BY created_at, id LIMIT %s",
        (tenant, as_of, *at, limit + 1),
    )

    def render(rows: list[tuple]) -> list[dict[str, Any]]:
        words = uow.cipher.open_stored_rows(tenant, [_stored_words(r) for r in rows])
        return [_ticket_row(r, w) for r, w in zip(rows, words, strict=True)]

    return tenant_export.page_of(
        uow.cur.fetchall(), limit, render, lambda row: [row[8].isoformat(), str(row[0])]
    )


def _messages(uow: UnitOfWork, tenant: str, as_of: str, at: list, limit: int) -> dict[str, Any]:
    # The first position condition lets the tickets' page index find where to start; the
    # second is the exact keyset, the ticket's messages included.
    uow.cur.execute(
        "SELECT t.created_at, t.id, m.seq, m.id, m.author_id, m.author_kind, m.body, m.internal,"
        " m.created_at FROM tickets t JOIN ticket_messages m ON m.ticket_id = t.id"
        " WHERE t.tenant_id = %(tenant)s AND m.tenant_id = %(tenant)s"
        " AND m.created_at < %(as_of)s"
        " AND (t.created_at, t.id) >= (%(at)s::timestamptz, %(id)s::uuid)"
        " AND (t.created_at, t.id, m.seq) > (%(at)s::timestamptz, %(id)s::uuid, %(seq)s)"
        " ORDER BY t.created_at, t.id, m.seq LIMIT %(n)s",
        {"tenant": tenant, "as_of": as_of, "at": at[0], "id": at[1], "seq": at[2], "n": limit + 1},
    )

    def render(rows: list[tuple]) -> list[dict[str, Any]]:
        bodies = uow.cipher.open_stored_rows(tenant, [{"body": r[6]} for r in rows])
        return [
            {
                "id": str(message),
                "ticket_id": str(ticket),
                "seq": seq,
                "author_id": str(author),
                "author_kind": kind,
                "body": body["body"],
                "internal": internal,
                "created_at": created.isoformat(),
            }
            for (_, ticket, seq, message, author, kind, _, internal, created), body in zip(
                rows, bodies, strict=True
            )
        ]

    return tenant_export.page_of(
        uow.cur.fetchall(), limit, render, lambda row: [row[0].isoformat(), str(row[1]), row[2]]
    )
