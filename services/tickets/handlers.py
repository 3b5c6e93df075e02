"""Tickets' command handlers and queries: plain functions over a unit of work.

Card numbers are cut to their last four digits here, before any text reaches an event, a read
model, the outbox or a log line. Every query filters by the caller's tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg2

from kernel.cards import redact_card_numbers
from kernel.crypto.fields import ERASED, is_erased
from kernel.crypto.primitives import KeyShredded
from kernel.db import keyset_page
from kernel.envelope import Envelope, new_envelope
from kernel.errors import Conflict, NotFound, ValidationFailed, VersionConflict, require_id
from kernel.uow import UnitOfWork
from services.tickets.attachment_store import AttachmentStore
from services.tickets.domain import Ticket
from services.tickets.lookups import tag_digest

# (tenant_id, subject_id) -> {"kind": "agent"|"contact", "active": bool}, or NotFound: asks
# accounts when tickets has not yet heard of a subject (its events may still be on their way).
SubjectLookup = Callable[[str, str], dict[str, Any]]


def load_ticket(uow: UnitOfWork, tenant_id: str, ticket_id: str) -> Ticket:
    require_id(ticket_id, "ticket")
    events = uow.load(Ticket.stream_id_for(ticket_id))
    ticket = Ticket.from_history(ticket_id, events) if events else None
    if ticket is None or ticket.tenant_id != tenant_id:
        raise NotFound("no such ticket")
    return ticket


def member(
    uow: UnitOfWork,
    lookup: SubjectLookup,
    tenant_id: str,
    subject_id: str,
    kind: str,
    field: str,
) -> None:
    """Refuse a requester or assignee who is not an active member of this tenant: one this
    tenant does not have is not found (404, as an id in the path naming nothing would be; a
    well-formed id is all the document can promise), a deactivated or restricted one a
    conflict with their state (409)."""
    # The directory entry and the restriction in one round trip; a row even with no entry.
    uow.cur.execute(
        "SELECT d.tenant_id, d.kind, d.active,"
        " EXISTS (SELECT 1 FROM restrictions WHERE subject_id = %s)"
        " FROM (SELECT 1) AS one LEFT JOIN directory d ON d.subject_id = %s",
        (subject_id, subject_id),
    )
    row = uow.cur.fetchone()
    restricted = row[3]
    if row[0] is not None:
        known = {"tenant_id": str(row[0]), "kind": row[1], "active": row[2]}
    else:
        try:
            known = {"tenant_id": tenant_id, **lookup(tenant_id, subject_id)}
        except NotFound:
            known = None
    noun = "contact" if kind == "contact" else "agent"
    if known is None or known["tenant_id"] != tenant_id or known["kind"] != kind:
        raise NotFound(f"{field}: no such {noun} in this tenant")
    if not known["active"]:
        raise Conflict(f"{field}: the {noun} is deactivated")
    if restricted:
        raise Conflict(f"{field}: the {noun}'s data is restricted: no new processing")


def create_ticket(
    uow: UnitOfWork, lookup: SubjectLookup, tenant_id: str, command: dict[str, Any]
) -> dict[str, Any]:
    requester_id = str(command["requester_id"])
    member(uow, lookup, tenant_id, requester_id, "contact", "requester_id")
    subject, cut_subject = redact_card_numbers(command["subject"])
    body, cut_body = redact_card_numbers(command["body"])
    ticket = Ticket.create(
        tenant_id=tenant_id,
        requester_id=requester_id,
        subject=subject,
        body=body,
        priority=command["priority"],
        tags=command["tags"],
        redactions=cut_subject + cut_body,
    )
    redactions = cut_subject + cut_body
    [created] = uow.save(
        ticket,
        ticket.tenant_id,
        metadata={"card_numbers_redacted": redactions} if redactions else None,
    )
    return view_from_event(created, ticket)


def view_from_event(created: Envelope, ticket: Ticket) -> dict[str, Any]:
    p = created.payload
    return {
        "id": ticket.id,
        "subject": p["subject"],
        "body": p["body"],
        "status": ticket.status,
        "priority": ticket.priority,
        "requester_id": ticket.requester_id,
        "assignee_id": ticket.assignee_id,
        "tags": list(p["tags"]),
        "created_at": created.occurred_at.isoformat(),
        "updated_at": created.occurred_at.isoformat(),
        "version": ticket.version,
    }


def update_ticket(
    uow: UnitOfWork,
    lookup: SubjectLookup,
    tenant_id: str,
    ticket_id: str,
    expected_version: int,
    changes: dict[str, Any],
) -> dict[str, Any]:
    ticket = load_ticket(uow, tenant_id, ticket_id)
    if ticket.version != expected_version:
        raise VersionConflict(f"the ticket is at version {ticket.version}, not {expected_version}")
    if "assignee_id" in changes:
        assignee = changes["assignee_id"]
        if assignee is not None:
            member(uow, lookup, tenant_id, str(assignee), "agent", "assignee_id")
        ticket.assign(None if assignee is None else str(assignee))
    if "priority" in changes:
        ticket.prioritise(changes["priority"])
    if "tags" in changes:
        ticket.tag(changes["tags"])
    redactions = 0
    if "subject" in changes:
        subject, redactions = redact_card_numbers(changes["subject"])
        ticket.retitle(subject, redactions)
    if "status" in changes:
        ticket.move_to(changes["status"])
    try:
        uow.save(
            ticket,
            ticket.tenant_id,
            metadata={"card_numbers_redacted": redactions} if redactions else None,
        )
    except KeyShredded:
        # Tags and the subject are written under the ticket's key here, and it went with its
        # requester (or the ticket was purged).
        raise Conflict(
            "the requester of this ticket was erased; its tags and subject cannot change"
        ) from None
    return get_ticket(uow, tenant_id, ticket_id, viewer=None)


def add_message(
    uow: UnitOfWork,
    tenant_id: str,
    ticket_id: str,
    agent_id: str,
    command: dict[str, Any],
    attachments_per_message: int = 0,
) -> dict[str, Any]:
    ticket = load_ticket(uow, tenant_id, ticket_id)
    attachment_ids = [str(i) for i in command.get("attachment_ids") or ()]
    if len(attachment_ids) > attachments_per_message:
        raise ValidationFailed(
            {"attachment_ids": [f"a message may carry at most {attachments_per_message} files"]}
        )
    body, redactions = redact_card_numbers(command["body"])
    by_requester = command["on_behalf_of_requester"]
    author_id = ticket.requester_id if by_requester else agent_id
    message_id = ticket.add_message(
        author_id=author_id,
        author_kind="requester" if by_requester else "agent",
        body=body,
        internal=command["internal"],
        redactions=redactions,
    )
    try:
        [added] = uow.save(
            ticket,
            ticket.tenant_id,
            metadata={"card_numbers_redacted": redactions} if redactions else None,
        )
    except KeyShredded:
        # The ticket's key went with its requester's erasure: nothing new is written under it.
        raise Conflict(
            "the requester of this ticket was erased; it takes no new messages"
        ) from None
    store = AttachmentStore(uow.cur, uow.cipher)
    store.attach(tenant_id, ticket.id, message_id, attachment_ids)
    attached = store.of_messages(tenant_id, [message_id]).get(message_id, [])
    return {
        "id": message_id,
        # Whom the message concerns: the gateway's records of this answer (its access log,
        # a stored response to replay) name them, so the requester's erasure reaches them.
        "ticket_id": ticket.id,
        "requester_id": ticket.requester_id,
        "author_id": author_id,
        "author_kind": "requester" if by_requester else "agent",
        "body": added.payload["body"],
        "internal": command["internal"],
        "created_at": added.occurred_at.isoformat(),
        "attachments": [a.shown() for a in attached],
    }


def get_ticket(
    uow: UnitOfWork, tenant_id: str, ticket_id: str, viewer: str | None
) -> dict[str, Any]:
    """A ticket with its messages; a staff viewer's read is recorded for the audit ledger."""
    require_id(ticket_id, "ticket")
    uow.cur.execute(
        f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = %s AND tenant_id = %s",
        (ticket_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such ticket")
    ticket = _ticket_row(row, uow.cipher.open_stored(tenant_id, _stored_words(row)))
    uow.cur.execute(
        "SELECT id, author_id, author_kind, body, internal, created_at FROM ticket_messages"
        " WHERE ticket_id = %s ORDER BY seq",
        (ticket_id,),
    )
    ticket["messages"] = [
        {
            "id": str(i),
            "author_id": str(a),
            "author_kind": k,
            "body": uow.cipher.open_stored(tenant_id, {"body": b})["body"],
            "internal": n,
            "created_at": c.isoformat(),
        }
        for i, a, k, b, n, c in uow.cur.fetchall()
    ]
    # Each message's files, their metadata only (the bytes are a download of their own).
    files = AttachmentStore(uow.cur, uow.cipher).of_messages(
        tenant_id, [m["id"] for m in ticket["messages"]]
    )
    for message in ticket["messages"]:
        message["attachments"] = [a.shown() for a in files.get(message["id"], [])]
    if viewer is not None:
        subjects = sorted({ticket["requester_id"], *(m["author_id"] for m in ticket["messages"])})
        uow.publish(
            new_envelope(
                type="ticket_viewed",
                schema_version=1,
                source="tickets",
                stream_id=f"ticket-{ticket_id}",
                stream_version=ticket["version"],
                tenant_id=uuid.UUID(tenant_id),
                actor_id=viewer,
                payload={
                    "ticket_id": str(ticket_id),
                    "tenant_id": tenant_id,
                    "agent_id": viewer,
                    "subject_ids": subjects,
                },
                trace=uow.trace,
            )
        )
    return ticket


# The time filters of the list (``FindTicketsV1``): a column, and how it compares. Ranges are
# half-open, at or after to strictly before; ``updated_since`` is at or after (and pages in
# the order tickets changed).
_MOMENTS = (
    ("created_after", "created_at >= %s"),
    ("created_before", "created_at < %s"),
    ("updated_after", "updated_at >= %s"),
    ("updated_before", "updated_at < %s"),
    ("updated_since", "updated_at >= %s"),
)


def list_tickets(
    uow: UnitOfWork,
    tenant_id: str,
    filters: dict[str, Any],
    limit: int,
    after: list | None,
) -> dict[str, Any]:
    """A page of the tenant's tickets narrowed by ``filters`` (``FindTicketsV1``, loaded), all
    applying at once: in the order they were created, or with ``updated_since`` in the order
    they changed (``after`` is then a position in that order)."""
    query = f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    for column in ("status", "priority", "assignee_id", "requester_id"):
        if filters.get(column):
            query += f" AND {column} = %s"
            params.append(str(filters[column]))
    for name, condition in _MOMENTS:
        if name in filters:
            query += f" AND {condition}"
            params.append(filters[name])
    if "tag" in filters:
        digest = tag_digest(uow, tenant_id, filters["tag"])
        if digest is None:
            return {"items": [], "next": None}
        query += (
            " AND id IN (SELECT ticket_id FROM ticket_tag_digests"
            " WHERE tenant_id = %s AND digest = %s)"
        )
        params += [tenant_id, psycopg2.Binary(digest)]
    order, at = ("updated_at", 9) if "updated_since" in filters else ("created_at", 8)
    rows, next_after = keyset_page(
        uow.cur,
        query,
        params,
        limit,
        after,
        lambda row: [row[at].isoformat(), str(row[0])],
        order=order,
    )
    # One keystore round trip for the page: each ticket's words are under a key of its own.
    words = uow.cipher.open_stored_rows(tenant_id, [_stored_words(r) for r in rows])
    items = [_ticket_row(r, w) for r, w in zip(rows, words, strict=True)]
    return {"items": items, "next": next_after}


_TICKET_COLUMNS = (
    "id, subject, body, status, priority, requester_id, assignee_id, tags_sealed, created_at,"
    " updated_at, version"
)


def _stored_words(row: tuple) -> dict[str, str | None]:
    """A ticket row's encrypted columns (``_TICKET_COLUMNS``), as ``open_stored`` takes them:
    under the names of the event fields they were sealed as."""
    return {"subject": row[1], "body": row[2], "tags": row[7]}


def shown_tags(words: dict[str, Any]) -> list[str]:
    """A ticket's tags as the API shows them: a list of strings, ``["[erased]"]`` once the
    ticket's key is gone (as its subject reads ``"[erased]"``). A ticket whose tags an older
    release wrote in plaintext and were not sealed yet has none to show."""
    tags = words["tags"]
    if tags is None:
        return [ERASED] if is_erased(words["subject"]) else []
    return [ERASED] if is_erased(tags) else list(tags)


def _ticket_row(row: tuple, words: dict[str, Any]) -> dict[str, Any]:
    """A ticket row (``_TICKET_COLUMNS``) with its words opened."""
    (i, _, _, status, priority, requester, assignee, _, created, updated, version) = row
    return {
        "id": str(i),
        "subject": words["subject"],
        "body": words["body"],
        "status": status,
        "priority": priority,
        "requester_id": str(requester),
        "assignee_id": None if assignee is None else str(assignee),
        "tags": shown_tags(words),
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
        "version": version,
    }


# --- what tickets knows of accounts ------------------------------------------------------------


def learn_subject(uow: UnitOfWork, event: Envelope) -> None:
    """Keep the directory from accounts' events; an older event never undoes a newer one."""
    p = event.payload
    if event.type == "agent_created":
        subject_id, kind, active = p["agent_id"], "agent", True
    elif event.type == "agent_deactivated":
        subject_id, kind, active = p["agent_id"], "agent", False
    elif event.type == "contact_created":
        subject_id, kind, active = p["contact_id"], "contact", True
    else:
        return
    uow.cur.execute(
        "INSERT INTO directory (subject_id, tenant_id, kind, active, version)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (subject_id) DO UPDATE SET active = EXCLUDED.active,"
        " version = EXCLUDED.version WHERE directory.version < EXCLUDED.version",
        (subject_id, p["tenant_id"], kind, active, event.stream_version),
    )
