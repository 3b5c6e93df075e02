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

import orjson
import psycopg2
import psycopg2.extras

from kernel.envelope import Envelope, stored_envelope


class ConcurrencyError(Exception):
    """The stream moved on since the writer read it: reload and decide again."""

    def __init__(self, stream_id: str, expected_version: int):
        self.stream_id = stream_id
        self.expected_version = expected_version
        super().__init__(f"stream {stream_id!r} is no longer at version {expected_version}")


# uuid and jsonb columns are read as text and decoded below: psycopg2 would hand each such
# value to a typecaster written in Python (uuid.UUID, json.loads), one call per value, which
# was most of a catch-up read's time.
_COLUMNS = (
    "position, event_id::text, type, schema_version, source, stream_id, stream_version,"
    " tenant_id::text, occurred_at, actor_id, trace::text, payload::text, metadata::text"
)

_json_decode = json.JSONDecoder().raw_decode


def _decode(text: str) -> Any:
    """A jsonb column's text as Python values. orjson reads it in about a third of json's time;
    a value it refuses (a number past 64 bits, which jsonb holds) is read by json, which reads
    any."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _json_decode(text)[0]


_UUID = uuid.UUID
_new = object.__new__
_set = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid_from_column(text: str) -> uuid.UUID:
    """The UUID of a uuid column's text, built as ``uuid.UUID(text)`` leaves it.

    The server wrote the text, so it is always the canonical 36 characters: ``UUID.__init__``'s
    checks and its two guarded attribute sets took half as long again as the parse, on every
    event of a catch-up.
    """
    value = _new(_UUID)
    _set(value, "int", int(text.replace("-", ""), 16))
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


def envelopes_of(rows: Sequence[Sequence[Any]]) -> list[tuple[int, Envelope]]:
    """(position, envelope) of each row ``read_all_rows`` fetched."""
    # A batch holds few tenants: one UUID each, shared (a UUID is immutable).
    tenants: dict[str, uuid.UUID] = {}
    envelopes = []
    for (
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
    ) in rows:
        if tenant_id is not None:
            tenant = tenants.get(tenant_id)
            if tenant is None:
                tenant = tenants[tenant_id] = _uuid_from_column(tenant_id)
        else:
            tenant = None
        envelopes.append(
            (
                position,
                stored_envelope(
                    _uuid_from_column(event_id),
                    type_,
                    schema_version,
                    source,
                    stream_id,
                    stream_version,
                    tenant,
                    occurred_at,
                    actor_id,
                    # Most events carry no trace or metadata: no decoder needed for those.
                    {} if trace == "{}" else _decode(trace),
                    _decode(payload),
                    {} if metadata == "{}" else _decode(metadata),
                ),
            )
        )
    return envelopes


# The savepoint is left to end with the transaction: releasing it would cost a round trip,
# and a savepoint's work commits with its transaction either way.
_APPEND_HEAD = (
    b"LOCK TABLE events IN EXCLUSIVE MODE; SAVEPOINT event_append;"
    b" INSERT INTO events (event_id, type, schema_version, source, stream_id, stream_version,"
    b" tenant_id, occurred_at, actor_id, trace, payload, metadata)"
    b" SELECT * FROM (VALUES "
)
# VALUES outside an INSERT's own list takes no types from the columns: the casts give them.
_ROW = (
    "(%s::uuid, %s::text, %s::integer, %s::text, %s::text, %s::integer, %s::uuid,"
    " %s::timestamptz, %s::text, %s::jsonb, %s::jsonb, %s::jsonb)"
)
_VERSION_CHECK = (
    ") AS appended"
    " WHERE (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = %s) = %s"
    # Positions are drawn in this order, so they follow the stream's versions.
    " ORDER BY appended.column6"
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
    rows = b",".join(
        cur.mogrify(
            _ROW,
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
            ),
        )
        for e in envelopes
    )
    check = cur.mogrify(_VERSION_CHECK, (stream_id, expected_version))
    try:
        # One round trip: the lock, a savepoint, and an insert that writes nothing unless the
        # stream is still at the expected version (checked under the lock, as before).
        cur.execute(_APPEND_HEAD + rows + check)
    except psycopg2.errors.UniqueViolation:
        # The primary key (stream_id, stream_version) is the last guard, should the check above
        # ever be bypassed (another writer not taking the lock, a manual insert).
        cur.execute("ROLLBACK TO SAVEPOINT event_append")
        raise ConcurrencyError(stream_id, expected_version) from None
    if cur.rowcount != len(envelopes):
        raise ConcurrencyError(stream_id, expected_version)


def read_stream(
    cur: psycopg2.extensions.cursor, stream_id: str, after_version: int = 0
) -> list[Envelope]:
    cur.execute(
        f"SELECT {_COLUMNS} FROM events WHERE stream_id = %s AND stream_version > %s"
        " ORDER BY stream_version",
        (stream_id, after_version),
    )
    return [envelope for _position, envelope in envelopes_of(cur.fetchall())]


def read_all(
    cur: psycopg2.extensions.cursor,
    after_position: int = 0,
    limit: int = 1000,
    tenant_id: uuid.UUID | None = None,
) -> list[tuple[int, Envelope]]:
    """Events in global order after ``after_position``: the basis of catch-up and replay."""
    return envelopes_of(read_all_rows(cur, after_position, limit, tenant_id))


def read_all_rows(
    cur: psycopg2.extensions.cursor,
    after_position: int = 0,
    limit: int = 1000,
    tenant_id: uuid.UUID | None = None,
) -> list[tuple[Any, ...]]:
    """``read_all``'s rows as the server sends them, each beginning with its position: for a
    reader that fetches the next batch while it decodes the last (``envelopes_of``)."""
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
    return cur.fetchall()


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
