"""Replay sends a projection's statements in batches; what the projection reads stays true."""

from __future__ import annotations

import gc

import eventlet.patcher
import psycopg2
import pytest

from kernel import eventstore
from kernel.aggregate import RecordedEvent
from kernel.envelope import Envelope, new_envelope
from kernel.projections import Projection
from tests.support.source import source_store

# Real threads: the test process runs under eventlet, whose green threads would not interleave
# with a rebuild blocked in PostgreSQL.
real_threading = eventlet.patcher.original("threading")


class RunningTotal(Projection):
    """Reads its own last write on every event, so a batch that was not sent would show."""

    name = "totals"
    tables = ("totals",)
    event_types = frozenset({"thing_happened"})

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        cur.execute("SELECT coalesce(max(total), 0) FROM totals")
        total = cur.fetchone()[0] + event.payload["n"]
        cur.execute("INSERT INTO totals (n, total) VALUES (%s, %s)", (event.payload["n"], total))


@pytest.fixture
def store(world):
    store = source_store(world, projections=[RunningTotal()])
    with store.db.transaction() as cur:
        cur.execute("CREATE TABLE totals (n integer PRIMARY KEY, total integer NOT NULL)")
    return store


def append(store, count: int) -> None:
    with store.unit_of_work() as uow:
        uow.append(
            "things",
            0,
            [
                RecordedEvent("thing_happened", {"thing_id": "t", "n": n})
                for n in range(1, count + 1)
            ],
            tenant_id=None,
        )


def test_a_rebuild_reads_its_own_writes_and_matches_the_live_model(store):
    append(store, 1200)  # more than one batch of queued statements
    with store.db.transaction() as cur:
        cur.execute("SELECT n, total FROM totals ORDER BY n")
        live = cur.fetchall()
    assert store.rebuild("totals", progress=False) == 1200
    with store.db.transaction() as cur:
        cur.execute("SELECT n, total FROM totals ORDER BY n")
        assert cur.fetchall() == live
    assert live[-1] == (1200, 1200 * 1201 // 2)


def test_a_failing_statement_fails_the_rebuild_and_keeps_the_old_model(store):
    append(store, 10)
    # NOT VALID: the rows there stay, and replay's totals past 50 are refused.
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM totals")
        assert cur.fetchone()[0] == 10
        cur.execute("ALTER TABLE totals ADD CONSTRAINT small CHECK (total < 50) NOT VALID")
    with pytest.raises(psycopg2.errors.CheckViolation):
        store.rebuild("totals", progress=False)
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*), max(total) FROM totals")
        assert cur.fetchone() == (10, 55)  # rolled back whole: the model as it was


def test_events_appended_while_rebuilds_run_are_in_the_model_once(store):
    """Replay reads on a second connection, in the writing transaction's snapshot: what a writer
    appends meanwhile is either replayed or projected live after the rebuild, never lost or
    doubled."""
    append(store, 1200)
    stop, appended = real_threading.Event(), []

    def writer() -> None:
        # What a unit of work does (project at append, store the event at commit), on a
        # connection of its own: the store's pool locks are green and must stay in one thread.
        conn = psycopg2.connect(store.db.dsn)
        try:
            n = 10_000
            while not stop.is_set():
                n += 1
                event = new_envelope(
                    type="thing_happened",
                    schema_version=1,
                    source=store.source,
                    stream_id=f"more-{n}",
                    stream_version=1,
                    tenant_id=None,
                    actor_id=None,
                    payload={"thing_id": "t", "n": n, "poison": False},
                )
                with conn, conn.cursor() as cur:
                    RunningTotal().apply(cur, event)
                    eventstore.append(cur, f"more-{n}", 0, [event])
                appended.append(n)
        finally:
            conn.close()

    thread = real_threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            store.rebuild("totals", progress=False)
    finally:
        stop.set()
        thread.join()
    with store.db.transaction() as cur:
        cur.execute("SELECT n, total FROM totals ORDER BY total")
        rows = cur.fetchall()
    assert appended, "the writer appended nothing: the test proves nothing"
    assert [n for n, _ in rows] == list(range(1, 1201)) + appended
    assert rows[-1][1] == sum(n for n, _ in rows)


class CollectorWatch(RunningTotal):
    """Notes whether the cycle collector was on for each event it applies."""

    name = "watched"

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        self.seen.append(gc.isenabled())
        super().apply(cur, event)


def test_the_cycle_collector_pauses_for_a_rebuild_and_resumes_after_it(world):
    watch = CollectorWatch()
    store = source_store(world, projections=[watch])
    with store.db.transaction() as cur:
        cur.execute("CREATE TABLE totals (n integer PRIMARY KEY, total integer NOT NULL)")
    append(store, 10)
    assert gc.isenabled()

    watch.seen = []
    assert store.rebuild("watched", progress=False) == 10
    assert watch.seen == [False] * 10
    assert gc.isenabled()

    # A rebuild that fails turns it back on as well.
    with store.db.transaction() as cur:
        cur.execute("ALTER TABLE totals ADD CONSTRAINT small CHECK (total < 50) NOT VALID")
    with pytest.raises(psycopg2.errors.CheckViolation):
        store.rebuild("watched", progress=False)
    assert gc.isenabled()

    # And one in a process that had turned it off leaves it off.
    gc.disable()
    try:
        with store.db.transaction() as cur:
            cur.execute("ALTER TABLE totals DROP CONSTRAINT small")
        store.rebuild("watched", progress=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
