"""Tickets' answers to privacy commands. A ticket's words (subject, body, tags, messages) are
under its own key, a child of its requester's: erasing the requester is one shred (their tickets
and messages go with it, with no scrub, since the read models hold ciphertext only); a closed
ticket past its period loses its own key. The digests of a ticket's tags (the blind index,
``services.tickets.lookups``) and of its words (the search index, ``search_index``) are under
the tenant's key, which stays: they are deleted with the ticket's words. Messages an agent wrote
before tickets had their own keys are under the agent's key."""

from __future__ import annotations

import uuid
from typing import Any

from kernel.aggregate import RecordedEvent
from kernel.crypto.fields import FieldCipher
from kernel.uow import UnitOfWork
from services.tickets import attachments
from services.tickets.attachment_store import AttachmentStore
from services.tickets.handlers import shown_tags

# An erased subject's directory row is pinned here: no later event about them revives it.
_FINAL = 2**31 - 1


def sweep_erased_leftovers(cur: Any) -> int:
    """Index rows of subjects already erased, deleted: a write that read a ticket's key before
    the erasure shredded it can commit its rows after the erasure's deletes ran (nothing orders
    the two), and no later erasure would come for them. Run by a timer; returns the rows."""
    cur.execute(
        "DELETE FROM search_terms s USING directory d"
        " WHERE d.version = %s AND (s.requester_id = d.subject_id OR s.author_id = d.subject_id)",
        (_FINAL,),
    )
    swept = cur.rowcount
    cur.execute(
        "DELETE FROM ticket_tag_digests g USING tickets t, directory d"
        " WHERE g.ticket_id = t.id AND t.requester_id = d.subject_id AND d.version = %s",
        (_FINAL,),
    )
    return swept + cur.rowcount


def handlers_for(cipher: FieldCipher | None) -> dict[str, Any]:
    assert cipher is not None, "privacy handlers need the service's keystore"

    def erase_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        tenant, subject = str(command["tenant_id"]), str(command["subject_id"])
        shredded = cipher.keystore.shred_subject(subject, tenant)
        uow.cur.execute(
            "UPDATE directory SET active = false, version = %s WHERE subject_id = %s",
            (_FINAL, subject),
        )
        # Their tickets now read as erased: a change for a client keeping a copy in step
        # (``updated_since``), which sees them again and drops their words.
        uow.cur.execute(
            "UPDATE tickets SET updated_at = now() WHERE requester_id = %s AND tenant_id = %s",
            (subject, tenant),
        )
        # The digests of their tickets' tags are under the tenant's key, which stays: deleted,
        # so no tag finds their tickets again (a rebuild reads those tags as erased).
        uow.cur.execute(
            "DELETE FROM ticket_tag_digests d USING tickets t"
            " WHERE d.ticket_id = t.id AND t.requester_id = %s AND t.tenant_id = %s",
            (subject, tenant),
        )
        # So are the search index's of the tickets they requested, and of messages under their
        # own key (written before tickets had keys): a rebuild reads those words as erased.
        uow.cur.execute(
            "DELETE FROM search_terms WHERE requester_id = %s AND tenant_id = %s",
            (subject, tenant),
        )
        indexed = uow.cur.rowcount
        uow.cur.execute(
            "DELETE FROM search_terms WHERE author_id = %s AND tenant_id = %s", (subject, tenant)
        )
        indexed += uow.cur.rowcount
        # Their tickets' files are under the shredded key: their chunks are deleted too, so no
        # ciphertext is left for a key a keystore backup might still hold.
        files = AttachmentStore(uow.cur, cipher).forget_requester(tenant, subject)
        # Mail to them, queued or settled: unreadable already (sealed under their tickets'
        # keys), deleted so not even the ids of what they were sent stay.
        uow.cur.execute(
            "DELETE FROM mail_outbox WHERE recipient_id = %s AND tenant_id = %s", (subject, tenant)
        )
        mails = uow.cur.rowcount
        # What their mail in was recognised by (keyed hashes, ids): deleted with them.
        uow.cur.execute(
            "DELETE FROM mail_in_received WHERE requester_id = %s AND tenant_id = %s",
            (subject, tenant),
        )
        return {
            "status": "done",
            "detail": f"{'subject key shredded' if shredded else 'no key held'}; the tickets"
            " they requested and their words there read as erased, their tags' digests deleted;"
            f" {indexed} search index rows deleted; {files} attachments deleted;"
            f" {mails} mails deleted",
        }

    def purge_category(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("category") != "closed_tickets":
            return {"status": "done", "detail": "tickets holds nothing of this category"}
        tenant = str(command["tenant_id"])
        uow.cur.execute(
            "UPDATE tickets SET erased_at = now(), updated_at = now()"
            " WHERE tenant_id = %s AND status = 'closed'"
            " AND closed_at < %s AND erased_at IS NULL RETURNING id",
            (tenant, command["before"]),
        )
        ids = [str(row[0]) for row in uow.cur.fetchall()]
        # Their tags' and words' digests go with their words (a rebuild reads those as erased).
        uow.cur.execute("DELETE FROM ticket_tag_digests WHERE ticket_id = ANY(%s::uuid[])", (ids,))
        uow.cur.execute("DELETE FROM search_terms WHERE ticket_id = ANY(%s::uuid[])", (ids,))
        AttachmentStore(uow.cur, cipher).forget_tickets(tenant, ids)
        # Mail still owed about them is sealed under their keys: deleted with them.
        uow.cur.execute("DELETE FROM mail_outbox WHERE key_subject_id = ANY(%s::uuid[])", (ids,))
        uow.cur.execute("DELETE FROM mail_in_received WHERE ticket_id = ANY(%s::uuid[])", (ids,))
        # A rebuilt read model no longer marks tickets purged before (no event records a
        # purge), so the keys actually destroyed are counted, not the tickets selected.
        shredded = cipher.keystore.shred_subjects(ids, tenant) if ids else 0
        return {"status": "done", "detail": f"{shredded} closed tickets' keys shredded"}

    def restrict_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        uow.cur.execute(
            "INSERT INTO restrictions (subject_id, tenant_id) VALUES (%s, %s)"
            " ON CONFLICT (subject_id) DO NOTHING",
            (command["subject_id"], command["tenant_id"]),
        )
        return {"status": "done", "detail": "kept; no new tickets for this requester"}

    def lift_restriction(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        uow.cur.execute("DELETE FROM restrictions WHERE subject_id = %s", (command["subject_id"],))
        return {"status": "done", "detail": "restriction lifted"}

    def destroy_tenant(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        tenant = str(command["tenant_id"])
        # Recorded once, on a stream of the tenant's own: the projection deletes its tickets
        # and messages with the event, and does again on every replay.
        stream = f"tenant-{tenant}"
        history = uow.load(stream)
        if not any(event.type == "tenant_destroyed" for event in history):
            destroyed = {"tenant_id": tenant, "request_id": str(command["request_id"])}
            uow.append(
                stream,
                len(history),
                [RecordedEvent("tenant_destroyed", destroyed)],
                tenant_id=uuid.UUID(tenant),
            )
        subjects = cipher.keystore.shred_tenant(tenant)
        # Learned from accounts' events and commands, not from this store: deleted here. The
        # tag digests and the search index went with the event (the projections); a tenant
        # tickets never recorded leaves none either, and their key went with the tenant's.
        # Mail to the tenant's people too: sealed under keys gone with the tenant's.
        for table in (
            "directory",
            "restrictions",
            "ticket_tag_digests",
            "search_terms",
            "mail_outbox",
            "mail_in_received",
        ):
            uow.cur.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))  # noqa: S608
        # Attachments are in no event: deleted here, chunks and all.
        AttachmentStore(uow.cur, cipher).forget_tenant(tenant)
        return {"status": "done", "detail": f"tenant key shredded ({subjects} subject keys)"}

    return {
        "destroy_tenant": destroy_tenant,
        "erase_subject": erase_subject,
        "purge_category": purge_category,
        "restrict_subject": restrict_subject,
        "lift_restriction": lift_restriction,
    }


def export(uow: UnitOfWork, tenant_id: str, subject_id: str) -> dict[str, Any]:
    """Tickets a person raised with the replies they could see, and what they wrote. Internal
    notes are staff's own: never part of the messages to them."""
    uow.cur.execute(
        "SELECT id, subject, body, tags_sealed, status, created_at FROM tickets"
        " WHERE requester_id = %s AND tenant_id = %s ORDER BY created_at",
        (subject_id, tenant_id),
    )
    tickets = []
    opened = uow.cipher.open_stored
    for ticket_id, subject, body, tags, status, created in uow.cur.fetchall():
        words = opened(tenant_id, {"subject": subject, "body": body, "tags": tags})
        uow.cur.execute(
            "SELECT id, author_kind, body, created_at FROM ticket_messages"
            " WHERE ticket_id = %s AND NOT internal ORDER BY seq",
            (ticket_id,),
        )
        messages = uow.cur.fetchall()
        # The files on the replies they could see, their content included (base64).
        files = attachments.exported(uow, tenant_id, [str(m[0]) for m in messages])
        tickets.append(
            {
                "id": str(ticket_id),
                "subject": words["subject"],
                "body": words["body"],
                # Staff's labels on their ticket may say something of them ("vip-jo-smith").
                "tags": shown_tags(words),
                "status": status,
                "created_at": created.isoformat(),
                "messages": [
                    {
                        "from": kind,
                        "body": opened(tenant_id, {"body": text})["body"],
                        "at": at.isoformat(),
                        "attachments": files.get(str(message_id), []),
                    }
                    for message_id, kind, text, at in messages
                ],
            }
        )
    uow.cur.execute(
        "SELECT ticket_id, body, created_at FROM ticket_messages"
        " WHERE author_id = %s AND tenant_id = %s AND author_kind = 'agent' ORDER BY created_at",
        (subject_id, tenant_id),
    )
    written = [
        {"ticket_id": str(t), "body": opened(tenant_id, {"body": b})["body"], "at": a.isoformat()}
        for t, b, a in uow.cur.fetchall()
    ]
    return {"tickets_requested": tickets, "messages_written_as_staff": written}
