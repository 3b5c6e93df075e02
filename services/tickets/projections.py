"""Tickets' read models: tickets and their messages, with their words (subject, body, tags,
messages) kept encrypted as the events hold them (``kernel.crypto.fields.stored_json``): readers
open them with the ticket's key, so an erasure is a key shred and never a scrub of these tables.
Beside them, the blind index of tags (``TagIndexProjection``) and the search index
(``search_index.SearchIndexProjection``), keyed hashes which their privacy handlers delete with
the ticket."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2

from kernel.crypto.fields import is_encrypted, is_erased, stored_field, stored_json
from kernel.envelope import Envelope
from kernel.projections import KeyedProjection, Projection
from services.tickets.lookups import TICKET_TAG, normalise_tag
from services.tickets.search_index import SearchIndexProjection

# Rows go to the server as one JSON document per statement: it is written far faster
# than psycopg2 adapts parameters one by one, and ``json_populate_recordset`` types every field
# by the table's own columns (uuid, text[], timestamptz), so nothing is spelled twice. Times
# are written as ISO 8601 text, with their offset; encrypted fields as their stored form.
_rows_json = stored_json


def _sealed_tags(tags: Any) -> dict | None:
    """A ticket's tags for ``tags_sealed``. Events of releases before tags were sealed hold them
    in plaintext, which a read model never copies: such a ticket shows none until the service
    records its tags again under its key (``services.tickets.sealed``)."""
    return stored_field(tags) if is_encrypted(tags) else None


def _changes(event: Envelope, at: str) -> dict[str, Any]:
    """What an event other than ticket_created sets on its ticket's row (``at``: when it
    occurred, as ISO 8601 text)."""
    p = event.payload
    if event.type == "ticket_status_changed":
        changes: dict[str, Any] = {"status": p["status"]}
    elif event.type == "ticket_assigned":
        changes = {"assignee_id": p["assignee_id"]}
    elif event.type == "ticket_priority_changed":
        changes = {"priority": p["priority"]}
    elif event.type == "ticket_tags_changed":
        changes = {"tags_sealed": _sealed_tags(p["tags"])}
    elif event.type == "ticket_subject_changed":
        changes = {"subject": stored_field(p["subject"])}
    elif event.type == "ticket_closed":
        # The status already moved; the clock of its retention starts.
        changes = {"closed_at": at}
    else:  # message_added
        changes = {}
    changes["version"] = event.stream_version
    changes["updated_at"] = at
    return changes


def _new_ticket(event: Envelope, at: str) -> dict[str, Any]:
    """A new ticket's row. It has every column that ``_changes`` sets, so the rows of a batch,
    whatever their later events changed, keep the same keys (one INSERT takes them all)."""
    p = event.payload
    return {
        "id": p["ticket_id"],
        "tenant_id": p["tenant_id"],
        "requester_id": p["requester_id"],
        "subject": stored_field(p["subject"]),
        "body": stored_field(p["body"]),
        "status": "new",
        "priority": p["priority"],
        "assignee_id": None,
        # The plaintext ``tags`` column is retired: left to its default, empty.
        "tags_sealed": _sealed_tags(p["tags"]),
        "version": event.stream_version,
        "created_at": at,
        "updated_at": at,
        "closed_at": None,
    }


def _message(event: Envelope, at: str) -> dict[str, Any]:
    p = event.payload
    return {
        "id": p["message_id"],
        "ticket_id": p["ticket_id"],
        "tenant_id": p["tenant_id"],
        "author_id": p["author_id"],
        "author_kind": p["author_kind"],
        "body": stored_field(p["body"]),
        "internal": p["internal"],
        "created_at": at,
        "seq": event.stream_version,
    }


def _insert(cur: psycopg2.extensions.cursor, table: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` (each with the same keys) into ``table``, in one statement."""
    columns = ", ".join(rows[0])
    cur.execute(
        f"INSERT INTO {table} ({columns})"
        f" SELECT {columns} FROM json_populate_recordset(NULL::{table}, %s)",
        (_rows_json(rows),),
    )


def _update(cur: psycopg2.extensions.cursor, rows: list[dict[str, Any]]) -> None:
    """Set each row's columns on the ticket of its ``id`` (each row with the same keys)."""
    assignments = ", ".join(f"{column} = changed.{column}" for column in rows[0] if column != "id")
    cur.execute(
        f"UPDATE tickets SET {assignments}"
        " FROM json_populate_recordset(NULL::tickets, %s) AS changed"
        " WHERE tickets.id = changed.id",
        (_rows_json(rows),),
    )


def _forget_tenant(cur: psycopg2.extensions.cursor, tenant_id: str) -> None:
    cur.execute("DELETE FROM ticket_messages WHERE tenant_id = %s", (tenant_id,))
    cur.execute("DELETE FROM tickets WHERE tenant_id = %s", (tenant_id,))


class TicketsProjection(Projection):
    name = "tickets"
    ciphertext = True
    tables = ("tickets", "ticket_messages")
    event_types = frozenset(
        {
            "ticket_created",
            "ticket_status_changed",
            "ticket_closed",
            "ticket_assigned",
            "ticket_priority_changed",
            "ticket_tags_changed",
            "ticket_subject_changed",
            "message_added",
            "tenant_destroyed",
        }
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        # The statements replay's apply_batch writes, for a batch of one.
        at = event.occurred_at.isoformat()
        if event.type == "tenant_destroyed":
            _forget_tenant(cur, event.payload["tenant_id"])
            return
        if event.type == "ticket_created":
            _insert(cur, "tickets", [_new_ticket(event, at)])
            return
        if event.type == "message_added":
            _insert(cur, "ticket_messages", [_message(event, at)])
        _update(cur, [{"id": event.payload["ticket_id"], **_changes(event, at)}])

    def apply_batch(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        """The batch folded in memory, then written in a few statements.

        Every event sets whole columns (the last value wins) and a ticket's events come in its
        stream's order, so a ticket created in the batch is inserted once as its last event left
        it, and an older ticket gets the columns its events set, once. Replay of one statement
        per event was bound by the server's statement count. A tenant's destruction ends a
        fold: what came before it is written, then the tenant's rows are deleted.
        """
        start = 0
        for end, event in enumerate(events):
            if event.type == "tenant_destroyed":
                self._fold(cur, events[start:end])
                _forget_tenant(cur, event.payload["tenant_id"])
                start = end + 1
        self._fold(cur, events[start:])

    def _fold(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        created: dict[str, dict[str, Any]] = {}
        changed: dict[str, dict[str, Any]] = {}
        messages: list[dict[str, Any]] = []
        for event in events:
            at = event.occurred_at.isoformat()
            if event.type == "ticket_created":
                created[event.payload["ticket_id"]] = _new_ticket(event, at)
                continue
            if event.type == "message_added":
                messages.append(_message(event, at))
            ticket_id = event.payload["ticket_id"]
            row = created.get(ticket_id)
            if row is None:
                row = changed.setdefault(ticket_id, {})
            row.update(_changes(event, at))
        if created:
            _insert(cur, "tickets", list(created.values()))
        if messages:
            _insert(cur, "ticket_messages", messages)
        # Older tickets that had the same columns set take one UPDATE together.
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for ticket_id, changes in changed.items():
            by_columns.setdefault(tuple(changes), []).append({"id": ticket_id, **changes})
        for rows in by_columns.values():
            _update(cur, rows)


class TagIndexProjection(KeyedProjection):
    """The blind index of tags (``services.tickets.lookups``): per ticket, a keyed hash of each
    of its tags under the tenant's key. It opens a ticket's tags with the ticket's key to hash
    them, so what reads as erased (the requester erased, the ticket purged) is never indexed,
    by a replay either; tags an older release wrote in plaintext are not indexed until the
    service records them again under the ticket's key (``services.tickets.sealed``)."""

    name = "ticket_tags"
    ciphertext = True
    tables = ("ticket_tag_digests",)
    event_types = frozenset({"ticket_created", "ticket_tags_changed", "tenant_destroyed"})

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "tenant_destroyed":
            cur.execute("DELETE FROM ticket_tag_digests WHERE tenant_id = %s", (p["tenant_id"],))
            return
        if event.type == "ticket_tags_changed":
            cur.execute("DELETE FROM ticket_tag_digests WHERE ticket_id = %s", (p["ticket_id"],))
        digests = self._digests(p)
        if digests:
            cur.execute(
                "INSERT INTO ticket_tag_digests (ticket_id, tenant_id, digest)"
                " SELECT %s, %s, unnest(%s::bytea[]) ON CONFLICT DO NOTHING",
                (p["ticket_id"], p["tenant_id"], [psycopg2.Binary(d) for d in digests]),
            )

    def apply_batch(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        """``apply`` for each, the tickets' keys loaded in one round trip first."""
        self.keyed_cipher.keystore.preload(
            e.payload["ticket_id"]
            for e in events
            if e.type != "tenant_destroyed" and is_encrypted(e.payload["tags"])
        )
        for event in events:
            self.apply(cur, event)

    def _digests(self, payload: dict[str, Any]) -> list[bytes]:
        tags = payload["tags"]
        if not is_encrypted(tags):
            return []  # plaintext from an older release: indexed once sealed
        opened = self.keyed_cipher.decrypt_fields({"tags": tags}, payload["tenant_id"])["tags"]
        if is_erased(opened) or not opened:
            return []
        values = sorted({normalise_tag(tag) for tag in opened})
        return self.blind_index.digests(payload["tenant_id"], TICKET_TAG, values) or []


PROJECTIONS = (TicketsProjection(), TagIndexProjection(), SearchIndexProjection())
