"""Section esappends: event-store appends with 1, 4 and 16 tenants writing at once (issue 23).

Each tenant is a writer thread with a connection of its own, appending 2 events per command
to its own streams, one transaction per command, as a unit of work does. Two designs in the
same run, on the same database, taking turns (who goes first alternating, twice each):

- ours: ``kernel.eventstore.append`` as it is, no table lock; writers of different streams
  meet nowhere but on the server's own resources (the WAL, the indexes' pages, the cores);
- today's design: the same append with ``LOCK TABLE events IN EXCLUSIVE MODE`` in front of it,
  in the same round trip, as the append sent it until store migration 0003: every append, of
  any tenant, waits for the one before it to commit.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg2

from bench.harness import Context, Row, cores
from kernel import eventstore, migrate
from kernel.db import connect, ensure_database
from kernel.envelope import Envelope, new_envelope

TENANTS = (1, 4, 16)
EVENTS_PER_COMMAND = 2
STREAMS_PER_WRITER = 5
PAYLOAD = {
    "subject": "order 1234 has not arrived",
    "body": "where is it? " * 8,
    "priority": "normal",
}
_LOCK = b"LOCK TABLE events IN EXCLUSIVE MODE; "


class _LockedFirst:
    """A cursor whose first statement goes with the table lock in front: the append as it was
    sent before (lock, savepoint and insert in one round trip)."""

    def __init__(self, cur: psycopg2.extensions.cursor):
        self._cur = cur
        self._locked = False

    def execute(self, query: Any, params: Any = None) -> None:
        if not self._locked:
            self._locked = True
            query = _LOCK + (query if isinstance(query, bytes) else query.encode())
        self._cur.execute(query, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def _envelopes(tenant: uuid.UUID, stream: str, after: int) -> list[Envelope]:
    return [
        new_envelope(
            type="ticket_touched",
            schema_version=1,
            source="bench",
            stream_id=stream,
            stream_version=after + n,
            tenant_id=tenant,
            actor_id="bench",
            payload={**PAYLOAD, "n": after + n},
        )
        for n in range(1, EVENTS_PER_COMMAND + 1)
    ]


def _run(dsn: str, tenants: int, commands: int, locked: bool) -> tuple[int, float]:
    """``tenants`` writers at once, ``commands`` each; (events appended, seconds)."""
    connections = [connect(dsn) for _ in range(tenants)]
    ready = threading.Barrier(tenants + 1)
    appended = [0] * tenants
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        conn, tenant = connections[n], uuid.uuid4()
        streams = [[f"Ticket-{uuid.uuid4()}", 0] for _ in range(STREAMS_PER_WRITER)]
        ready.wait()
        try:
            for i in range(commands):
                stream = streams[i % STREAMS_PER_WRITER]
                envelopes = _envelopes(tenant, stream[0], stream[1])
                with conn, conn.cursor() as cur:
                    target = _LockedFirst(cur) if locked else cur
                    eventstore.append(target, stream[0], stream[1], envelopes)  # type: ignore[arg-type]
                stream[1] += len(envelopes)
                appended[n] += len(envelopes)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(tenants)]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
    finally:
        for conn in connections:
            conn.close()
    if failures:
        raise failures[0]
    return sum(appended), seconds


def run(ctx: Context, sections: set[str]) -> list[Row]:
    # Commands per configuration, shared among its writers: each row appends the same events.
    total = 480 if ctx.quick else 3_200
    rounds = 2
    settings = ctx.world()
    ensure_database(settings.database_url, settings.database_name("esappends"))
    dsn = settings.database_dsn("esappends")
    migrate.migrate(dsn, [migrate.STORE])
    rows = []
    for tenants in TENANTS:
        commands = total // tenants
        figures = {False: [0, 0.0], True: [0, 0.0]}
        for n in range(rounds):
            for locked in (False, True) if n % 2 == 0 else (True, False):
                events, seconds = _run(dsn, tenants, commands, locked)
                figures[locked][0] += events
                figures[locked][1] += seconds
        ours, today = (figures[k][0] / figures[k][1] for k in (False, True))
        print(
            f"esappends: {tenants} tenant(s): {ours:,.0f} events/s without the lock,"
            f" {today:,.0f} with it",
            flush=True,
        )
        rows.append(
            Row(
                "esappends",
                f"appends, {tenants} tenant{'s' if tenants > 1 else ''} writing at once",
                ours,
                "events/s",
                today,
                "today's design: LOCK TABLE events IN EXCLUSIVE MODE before the insert",
                "",
                None,
                f"{tenants} x {commands:,} commands of {EVENTS_PER_COMMAND} events, a connection"
                f" each; {rounds} rounds in turn; {cores()} cores shared with the database",
            )
        )
    return rows
