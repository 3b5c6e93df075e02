"""The event store on PostgreSQL: streams with optimistic concurrency and a global order.

All functions take an open cursor: the caller's transaction (the unit of work) decides what
commits together. ``append`` takes the table's EXCLUSIVE lock, so it belongs at the end of a
transaction, just before the commit: positions then become visible in commit order, and a
catch-up reader reading ``position > last_seen`` never skips an event that commits late.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2
import psycopg2.extras

from kernel.envelope import Envelope


class ConcurrencyError(Exception):
    """The stream moved on since the writer read it: reload and decide again."""

    def __init__(self, stream_id: str, expected_version: int):
        self.stream_id = stream_id
        self.expected_version = expected_version
        super().__init__(f"stream {stream_id!r} is no longer at version {expected_version}")


_COLUMNS = (
    "position, event_id, type, schema_version, source, stream_id, stream_version, tenant_id,"
    " occurred_at, actor_id, trace, payload, metadata"
)


def _row_to_envelope(row: Sequence[Any]) -> tuple[int, Envelope]:
    (
        position,
        event_id,
        type_,
        schema_version,
        source,
        stream_id,
        stream_version,
        tenant_id,
        occurred_at,
        actor_id,
        trace,
        payload,
        metadata,
    ) = row
    return position, Envelope(
        event_id=event_id,
        type=type_,
        schema_version=schema_version,
        source=source,
        stream_id=stream_id,
        stream_version=stream_version,
        tenant_id=tenant_id,
        occurred_at=occurred_at,
        actor_id=actor_id,
        trace=trace,
        payload=payload,
        metadata=metadata,
    )


def stream_version(cur: psycopg2.extensions.cursor, stream_id: str) -> int:
    cur.execute(
        "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = %s", (stream_id,)
    )
    return cur.fetchone()[0]


def append(
    cur: psycopg2.extensions.cursor,
    stream_id: str,
    expected_version: int,
    envelopes: Sequence[Envelope],
) -> None:
    """Append ``envelopes`` (versions expected+1, expected+2, ...) or raise ConcurrencyError."""
    if not envelopes:
        return
    for offset, envelope in enumerate(envelopes, start=1):
        if envelope.stream_id != stream_id or envelope.stream_version != expected_version + offset:
            raise ValueError("envelopes must continue the stream from the expected version")
    cur.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    if stream_version(cur, stream_id) != expected_version:
        raise ConcurrencyError(stream_id, expected_version)
    cur.execute("SAVEPOINT event_append")
    try:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO events (event_id, type, schema_version, source, stream_id,"
            " stream_version, tenant_id, occurred_at, actor_id, trace, payload, metadata)"
            " VALUES %s",
            [
                (
                    e.event_id,
                    e.type,
                    e.schema_version,
                    e.source,
                    e.stream_id,
                    e.stream_version,
                    e.tenant_id,
                    e.occurred_at,
                    e.actor_id,
                    json.dumps(e.trace),
                    json.dumps(e.payload),
                    json.dumps(e.metadata),
                )
                for e in envelopes
            ],
        )
    except psycopg2.errors.UniqueViolation:
        # The primary key (stream_id, stream_version) is the last guard, should the check above
        # ever be bypassed (another writer not taking the lock, a manual insert).
        cur.execute("ROLLBACK TO SAVEPOINT event_append")
        raise ConcurrencyError(stream_id, expected_version) from None
    cur.execute("RELEASE SAVEPOINT event_append")


def read_stream(
    cur: psycopg2.extensions.cursor, stream_id: str, after_version: int = 0
) -> list[Envelope]:
    cur.execute(
        f"SELECT {_COLUMNS} FROM events WHERE stream_id = %s AND stream_version > %s"
        " ORDER BY stream_version",
        (stream_id, after_version),
    )
    return [_row_to_envelope(row)[1] for row in cur.fetchall()]


def read_all(
    cur: psycopg2.extensions.cursor,
    after_position: int = 0,
    limit: int = 1000,
    tenant_id: uuid.UUID | None = None,
) -> list[tuple[int, Envelope]]:
    """Events in global order after ``after_position``: the basis of catch-up and replay."""
    if tenant_id is None:
        cur.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > %s ORDER BY position LIMIT %s",
            (after_position, limit),
        )
    else:
        cur.execute(
            f"SELECT {_COLUMNS} FROM events WHERE tenant_id = %s AND position > %s"
            " ORDER BY position LIMIT %s",
            (tenant_id, after_position, limit),
        )
    return [_row_to_envelope(row) for row in cur.fetchall()]


def iter_all(
    cur: psycopg2.extensions.cursor, after_position: int = 0, batch_size: int = 1000
) -> Iterator[tuple[int, Envelope]]:
    position = after_position
    while True:
        batch = read_all(cur, position, batch_size)
        if not batch:
            return
        yield from batch
        position = batch[-1][0]


def head_position(cur: psycopg2.extensions.cursor) -> int:
    cur.execute("SELECT coalesce(max(position), 0) FROM events")
    return cur.fetchone()[0]
