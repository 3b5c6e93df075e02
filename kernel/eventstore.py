"""The event store on PostgreSQL: streams with optimistic concurrency and a global order.

All functions take an open cursor: the caller's transaction (the unit of work) decides what
commits together. Appends take no table lock, so writers of different streams and tenants
proceed together; two writers of one stream meet on the primary key (stream_id,
stream_version), and the loser gets ``ConcurrencyError``.

The global order is (``tx_order``, ``position``), a ``Cursor``. ``position`` is drawn at insert
and commits out of order, so it cannot be a catch-up reader's mark on its own. ``tx_order`` is
the appending transaction's id, raised to the highest ``tx_order`` already committed (an event
sorts after everything its writer could have read, its own stream's earlier versions included).
A catch-up read returns only events whose ``tx_order`` is below the oldest transaction still
running in its snapshot (``pg_snapshot_xmin``): every transaction below has ended, and any event
still to commit has a ``tx_order`` at least that high, so a reader that asks for what comes
after its last cursor never skips an event that commits late, nor reads one twice. The price:
a transaction left open anywhere on the server holds catch-up readers back until it ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import orjson
import psycopg2
import psycopg2.extras

from kernel.envelope import Envelope, stored_envelope
from kernel.errors import TenantMoving


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
    "tx_order, position, event_id::text, type, schema_version, source, stream_id, stream_version,"
    " tenant_id::text, occurred_at, actor_id, trace::text, payload::text, metadata::text"
)

_json_decode = json.JSONDecoder().raw_decode


class Cursor(NamedTuple):
    """An event's place in the global order, and a catch-up reader's mark: read on after it."""

    tx_order: int
    position: int


START = Cursor(0, 0)
# Where a rebuild replays from: before START. A tenant moved in from another region cell
# (services.tenant_move) brings its history with ``tx_order`` -1, below every live reader's
# cursor (live readers start at START and never apply it again: the read models came with it),
# but a rebuild must fold it in with the rest.
REPLAY_START = Cursor(-1, 0)

# The oldest transaction still running when the statement's snapshot was taken: every
# transaction below it has ended, and none can start below it.
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


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
# A Cursor built without NamedTuple's generated __new__: half its cost, on every event read.
_new_tuple = tuple.__new__


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


def envelopes_of(rows: Sequence[Sequence[Any]]) -> list[tuple[Cursor, Envelope]]:
    """(cursor, envelope) of each row ``read_all_rows`` fetched."""
    # A batch holds few tenants: one UUID each, shared (a UUID is immutable).
    tenants: dict[str, uuid.UUID] = {}
    envelopes = []
    for (
        tx_order,
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
                _new_tuple(Cursor, (tx_order, position)),
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
    b"SAVEPOINT event_append;"
    b" INSERT INTO events (event_id, type, schema_version, source, stream_id, stream_version,"
    b" tenant_id, occurred_at, actor_id, trace, payload, metadata, tx_order)"
    # One value for the whole append (an InitPlan, run once): this transaction's id, raised to
    # the highest committed (the top of events_order, one index page). Raised, because the id is
    # drawn at the transaction's first write (a read model's row, an inbox row), perhaps long
    # before: an event appended after reading another's must still sort after it.
    b" SELECT *, (SELECT greatest(pg_current_xact_id()::text::bigint,"
    b" (SELECT coalesce(max(tx_order), 0) FROM events))) FROM (VALUES "
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
# A concurrent append to the stream: the version it inserts was taken first (the primary key),
# or, between two units of work each appending to two streams in opposite orders, each waits
# on the other's version and the server ends one of them.
_LOST_RACE = (psycopg2.errors.UniqueViolation, psycopg2.errors.DeadlockDetected)
# Raised by the events' fence (store migration 0005) for a tenant being moved between cells.
_FENCED = "LD001"
# Seconds a client is asked to wait while its tenant moves: a move's window is seconds to minutes.
MOVING_RETRY_AFTER = 5


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
        # One round trip: a savepoint, and an insert that writes nothing unless the stream is at
        # the expected version as far as committed events tell.
        cur.execute(_APPEND_HEAD + rows + check)
    except _LOST_RACE:
        # A writer of the same stream not yet committed passes that check too: the primary key
        # (stream_id, stream_version) makes this insert wait for it, and fail if it commits.
        cur.execute("ROLLBACK TO SAVEPOINT event_append")
        raise ConcurrencyError(stream_id, expected_version) from None
    except psycopg2.Error as exc:
        if exc.pgcode == _FENCED:
            raise TenantMoving(MOVING_RETRY_AFTER) from None
        raise
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
    after: Cursor = START,
    limit: int = 1000,
    tenant_id: uuid.UUID | None = None,
    settled: bool = True,
) -> list[tuple[Cursor, Envelope]]:
    """Events in global order after ``after``: the basis of catch-up and replay.

    ``settled``: only events no commit can still precede, so that reading on after the last
    cursor returned never skips or repeats one (a catch-up reader). False: every event the
    transaction's snapshot sees, for a reader that reads the whole store in one REPEATABLE READ
    snapshot (a rebuild); read so across snapshots, it would skip the events that commit late.
    """
    return envelopes_of(read_all_rows(cur, after, limit, tenant_id, settled))


def read_all_rows(
    cur: psycopg2.extensions.cursor,
    after: Cursor = START,
    limit: int = 1000,
    tenant_id: uuid.UUID | None = None,
    settled: bool = True,
) -> list[tuple[Any, ...]]:
    """``read_all``'s rows as the server sends them, each beginning with its cursor's two
    values: for a reader that fetches the next batch while it decodes the last
    (``envelopes_of``)."""
    if tenant_id is None:
        query = f"SELECT {_COLUMNS} FROM events WHERE (tx_order, position) > (%s, %s)"
        params: tuple[Any, ...] = (after[0], after[1], limit)
    else:
        query = (
            f"SELECT {_COLUMNS} FROM events WHERE tenant_id = %s"
            " AND (tx_order, position) > (%s, %s)"
        )
        params = (tenant_id, after[0], after[1], limit)
    query += " ORDER BY tx_order, position LIMIT %s"
    if settled:
        # The next rows in order, then those of them below the horizon (computed once, an
        # InitPlan): put in the scan's own condition, the horizon's unknown value made the
        # planner expect few rows and sort a bitmap scan's instead of reading the index in order.
        query = f"SELECT * FROM ({query}) AS next WHERE tx_order < (SELECT {_HORIZON})"
    cur.execute(query, params)
    return cur.fetchall()


def cursor_of(row: Sequence[Any]) -> Cursor:
    """The cursor of a row ``read_all_rows`` fetched."""
    return Cursor(row[0], row[1])


def iter_all(
    cur: psycopg2.extensions.cursor,
    after: Cursor = START,
    batch_size: int = 1000,
    settled: bool = True,
) -> Iterator[tuple[Cursor, Envelope]]:
    """Every event after ``after`` in global order, a batch at a time (see ``read_all``)."""
    while True:
        batch = read_all(cur, after, batch_size, settled=settled)
        if not batch:
            return
        yield from batch
        after = batch[-1][0]


def all_settled(cur: psycopg2.extensions.cursor) -> bool:
    """Whether a catch-up read now sees every committed event: no transaction older than one
    that appended is still running (on the whole server, whatever it does)."""
    cur.execute(f"SELECT NOT EXISTS (SELECT FROM events WHERE tx_order >= {_HORIZON})")
    return cur.fetchone()[0]


def head_position(cur: psycopg2.extensions.cursor) -> int:
    cur.execute("SELECT coalesce(max(position), 0) FROM events")
    return cur.fetchone()[0]
