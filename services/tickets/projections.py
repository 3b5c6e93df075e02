"""Tickets' read models: tickets and their messages."""

from __future__ import annotations

import psycopg2

from kernel.envelope import Envelope
from kernel.projections import Projection


class TicketsProjection(Projection):
    name = "tickets"
    tables = ("tickets", "ticket_messages")
    event_types = frozenset(
        {
            "ticket_created",
            "ticket_status_changed",
            "ticket_closed",
            "ticket_assigned",
            "ticket_priority_changed",
            "ticket_tags_changed",
            "message_added",
        }
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "ticket_created":
            cur.execute(
                "INSERT INTO tickets (id, tenant_id, requester_id, subject, body, status,"
                " priority, tags, version, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, 'new', %s, %s, %s, %s, %s)",
                (
                    p["ticket_id"],
                    p["tenant_id"],
                    p["requester_id"],
                    str(p["subject"]),
                    str(p["body"]),
                    p["priority"],
                    list(p["tags"]),
                    event.stream_version,
                    event.occurred_at,
                    event.occurred_at,
                ),
            )
            return
        if event.type == "message_added":
            cur.execute(
                "INSERT INTO ticket_messages (id, ticket_id, tenant_id, author_id, author_kind,"
                " body, internal, created_at, seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    p["message_id"],
                    p["ticket_id"],
                    p["tenant_id"],
                    p["author_id"],
                    p["author_kind"],
                    str(p["body"]),
                    p["internal"],
                    event.occurred_at,
                    event.stream_version,
                ),
            )
            column, value = None, None
        elif event.type == "ticket_status_changed":
            column, value = "status", p["status"]
        elif event.type == "ticket_assigned":
            column, value = "assignee_id", p["assignee_id"]
        elif event.type == "ticket_priority_changed":
            column, value = "priority", p["priority"]
        elif event.type == "ticket_tags_changed":
            column, value = "tags", list(p["tags"])
        else:  # ticket_closed: the status already moved; only the version does
            column, value = None, None
        assignment = f"{column} = %s, " if column else ""
        cur.execute(
            f"UPDATE tickets SET {assignment}version = %s, updated_at = %s WHERE id = %s",
            (
                *((value,) if column else ()),
                event.stream_version,
                event.occurred_at,
                p["ticket_id"],
            ),
        )


PROJECTIONS = (TicketsProjection(),)
