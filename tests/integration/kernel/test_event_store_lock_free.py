"""Appends without a table lock: catch-up readers still read every event once, in one order.

Writers of different tenants and streams append at once, one of them holding its transaction
open while later ones commit; a reader catches up in a loop meanwhile. Writers of one stream
still meet on its versions.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg2
import pytest

from kernel import eventstore, migrate
from kernel.db import Database, ensure_database
from kernel.envelope import Envelope, new_envelope
from kernel.eventstore import ConcurrencyError, Cursor
from tests.support.settling import PATIENCE, settle
from tests.support.source import source_store


def events(stream: str, after: int, count: int, tenant: uuid.UUID | None) -> list[Envelope]:
    return [
        new_envelope(
            type="thing_happened",
            schema_version=1,
            source="testsrc",
            stream_id=stream,
            stream_version=after + n,
            tenant_id=tenant,
            actor_id=None,
            payload={"thing_id": stream, "n": after + n},
        )
        for n in range(1, count + 1)
    ]


def stored_order(store) -> list[tuple[Cursor, uuid.UUID]]:
    with store.db.transaction() as cur:
        cur.execute("SELECT tx_order, position, event_id FROM events ORDER BY tx_order, position")
        return [(Cursor(t, p), e) for t, p, e in cur.fetchall()]


class CatchUp:
    """A reader catching up in a loop on a thread of its own, as a subscriber would."""

    def __init__(self, store, tenant_id: uuid.UUID | None = None):
        self.store, self.tenant_id = store, tenant_id
        self.seen: list[tuple[Cursor, Envelope]] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> CatchUp:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def read_once(self) -> int:
        after = self.seen[-1][0] if self.seen else eventstore.START
        with self.store.db.transaction() as cur:
            batch = eventstore.read_all(cur, after, 37, tenant_id=self.tenant_id)
        self.seen.extend(batch)
        return len(batch)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if not self.read_once():
                    time.sleep(0.005)  # nothing new: leave the cores to the writers a moment
        except BaseException as exc:  # failed in the test's thread, by ``finish``
            self.failure = exc

    def finish(self) -> list[tuple[Cursor, Envelope]]:
        """Stop the loop, then read what is left once everything has settled."""
        self.stop.set()
        if self.thread.ident is not None:
            self.thread.join()
        if self.failure is not None:
            raise self.failure
        settle(self.store)
        while self.read_once():
            pass
        return self.seen


def test_many_tenants_append_at_once_and_a_catch_up_reader_gets_every_event_once(world):
    store = source_store(world, maxconn=30)
    tenants = [uuid.uuid4() for _ in range(8)]
    per_writer, streams_each = 30, 4
    slow_appended, others_went_on = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    held: list[Envelope] = []

    def write(n: int) -> None:
        tenant = tenants[n]
        versions = [0] * streams_each
        try:
            for i in range(per_writer):
                s = i % streams_each
                batch = events(f"t{n}-s{s}", versions[s], 1 + i % 3, tenant)
                with store.db.transaction() as cur:
                    eventstore.append(cur, f"t{n}-s{s}", versions[s], batch)
                versions[s] += len(batch)
                if n == 0 and i == per_writer // 2:
                    others_went_on.set()
        except BaseException as exc:
            failures.append(exc)

    def slow() -> None:
        """Appends early, commits late: its position is below many committed before it."""
        with store.db.transaction() as cur:
            held.extend(events("slow", 0, 2, tenants[0]))
            eventstore.append(cur, "slow", 0, held)
            slow_appended.set()
            assert others_went_on.wait(PATIENCE)
            time.sleep(0.2)  # a few reads more, while it is still open

    with CatchUp(store) as reader:
        slow_thread = threading.Thread(target=slow)
        slow_thread.start()
        assert slow_appended.wait(PATIENCE)
        threads = [threading.Thread(target=write, args=(n,)) for n in range(len(tenants))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        slow_thread.join()
        seen = reader.finish()
    assert not failures, failures

    stored = stored_order(store)
    expected = sum(1 + i % 3 for i in range(per_writer)) * len(tenants)
    assert len(stored) == expected + 2
    # Every event, once, in the store's one order: nothing skipped, nothing read twice.
    assert [(cursor, envelope.event_id) for cursor, envelope in seen] == stored
    cursors = [cursor for cursor, _ in seen]
    assert cursors == sorted(set(cursors))
    # The slow writer's events committed after events drawn after them were committed: the
    # reader would have skipped them had it read by position.
    slow_positions = {cursor.position for cursor, e in seen if e.stream_id == "slow"}
    assert len(slow_positions) == 2
    assert sum(1 for cursor, _ in seen if cursor.position > max(slow_positions)) > 0
    # Each stream's versions in order.
    by_stream: dict[str, list[int]] = {}
    for _, envelope in seen:
        by_stream.setdefault(envelope.stream_id, []).append(envelope.stream_version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_stream.values())


def test_an_open_append_holds_back_only_what_could_be_read_past_it(world):
    """While a transaction that appended is open, later commits wait in the reader's view;
    once it commits, its events come first, then theirs, each once."""
    store = source_store(world)
    with store.db.transaction() as cur:
        eventstore.append(cur, "before", 0, events("before", 0, 3, None))
    settle(store)
    reader = CatchUp(store)
    reader.read_once()
    assert [e.stream_id for _, e in reader.seen] == ["before"] * 3

    with store.db.connection() as slow:
        with slow.cursor() as cur:
            eventstore.append(cur, "slow", 0, events("slow", 0, 1, None))
        for n in range(5):
            with store.db.transaction() as cur:
                eventstore.append(cur, f"later-{n}", 0, events(f"later-{n}", 0, 2, None))
        # Committed, visible, and later in the order than the open append: not read yet.
        with store.db.transaction() as cur:
            cur.execute("SELECT count(*) FROM events WHERE stream_id LIKE 'later-%%'")
            assert cur.fetchone()[0] == 10
        reader.read_once()
        assert [e.stream_id for _, e in reader.seen] == ["before"] * 3
        slow.commit()
    seen = reader.finish()
    streams = [e.stream_id for _, e in seen]
    assert streams == ["before"] * 3 + ["slow"] + [f"later-{n}" for n in range(5) for _ in "ab"]
    assert [(c, e.event_id) for c, e in seen] == stored_order(store)


def test_an_event_sorts_after_one_its_writer_read_though_its_transaction_is_older(world):
    """A transaction's id is drawn at its first write (a read model's row, an inbox row): a
    writer that began first and appends version 2 after another committed version 1 still
    comes after it in the order."""
    store = source_store(world)
    with store.db.connection() as early:
        with early.cursor() as cur:
            cur.execute("SELECT pg_current_xact_id()")  # draws this transaction's id now
        with store.db.transaction() as cur:
            eventstore.append(cur, "s", 0, events("s", 0, 1, None))
        with early.cursor() as cur:
            assert eventstore.stream_version(cur, "s") == 1
            eventstore.append(cur, "s", 1, events("s", 1, 1, None))
        early.commit()
    settle(store)
    with store.db.transaction() as cur:
        read = eventstore.read_all(cur)
    assert [e.stream_version for _, e in read] == [1, 2]
    assert [(c, e.event_id) for c, e in read] == stored_order(store)


def test_a_tenants_catch_up_reads_its_own_events_once_while_others_write(world):
    store = source_store(world, maxconn=20)
    mine, other = uuid.uuid4(), uuid.uuid4()

    def write(tenant: uuid.UUID, prefix: str) -> None:
        for i in range(25):
            with store.db.transaction() as cur:
                eventstore.append(cur, f"{prefix}-{i}", 0, events(f"{prefix}-{i}", 0, 2, tenant))

    with CatchUp(store, tenant_id=mine) as reader:
        threads = [
            threading.Thread(target=write, args=(tenant, f"{tenant}-{w}"))
            for tenant in (mine, other)
            for w in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seen = reader.finish()
    assert {e.tenant_id for _, e in seen} == {mine}
    mine_stored = [
        (cursor, event_id)
        for cursor, event_id in stored_order(store)
        if str(event_id) in {str(e.event_id) for _, e in seen}
    ]
    assert [(c, e.event_id) for c, e in seen] == mine_stored
    assert len(seen) == 3 * 25 * 2


def test_writers_racing_on_one_stream_get_conflicts_and_no_version_twice(world):
    """Each writer reloads and retries on a conflict: every append lands once, at the next
    version, and every lost race was a ConcurrencyError."""
    store = source_store(world, maxconn=20)
    writers, appends_each = 8, 10
    barrier = threading.Barrier(writers)
    conflicts = [0] * writers
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            done = 0
            while done < appends_each:
                with store.db.connection() as conn:
                    try:
                        with conn.cursor() as cur:
                            version = eventstore.stream_version(cur, "shared")
                            eventstore.append(
                                cur, "shared", version, events("shared", version, 2, None)
                            )
                        conn.commit()
                        done += 1
                    except ConcurrencyError:
                        conn.rollback()
                        conflicts[n] += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT stream_version, count(*) FROM events WHERE stream_id = 'shared'"
            " GROUP BY stream_version ORDER BY stream_version"
        )
        rows = cur.fetchall()
    assert rows == [(v, 1) for v in range(1, writers * appends_each * 2 + 1)]
    assert sum(conflicts) > 0  # they did race


def test_many_writers_at_one_version_exactly_one_wins(world):
    store = source_store(world, maxconn=30)
    writers = 20
    barrier = threading.Barrier(writers)
    outcomes: list[str] = []

    def write(n: int) -> None:
        batch = events("one", 0, 3, None)
        barrier.wait()
        try:
            with store.db.transaction() as cur:
                eventstore.append(cur, "one", 0, batch)
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * (writers - 1) + ["won"]
    with store.db.transaction() as cur:
        assert [e.stream_version for e in eventstore.read_stream(cur, "one")] == [1, 2, 3]


def test_two_writers_crossing_two_streams_one_conflict_no_deadlock_error(world):
    """Each appends to a and b in opposite orders: each waits on the other's version, the server
    ends one wait, and that writer sees a ConcurrencyError; the other commits both."""
    store = source_store(world)
    first_in, outcomes = threading.Barrier(2), {}

    def write(name: str, streams: tuple[str, str]) -> None:
        with store.db.connection() as conn:
            try:
                with conn.cursor() as cur:
                    eventstore.append(cur, streams[0], 0, events(streams[0], 0, 1, None))
                    first_in.wait()
                    eventstore.append(cur, streams[1], 0, events(streams[1], 0, 1, None))
                conn.commit()
                outcomes[name] = "committed"
            except ConcurrencyError:
                conn.rollback()
                outcomes[name] = "conflict"
            except psycopg2.Error as exc:
                conn.rollback()
                outcomes[name] = type(exc).__name__

    threads = [
        threading.Thread(target=write, args=("x", ("a", "b"))),
        threading.Thread(target=write, args=("y", ("b", "a"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["committed", "conflict"]
    with store.db.transaction() as cur:
        assert eventstore.stream_version(cur, "a") == eventstore.stream_version(cur, "b") == 1


def test_events_stored_before_the_migration_read_first_in_their_old_order(world, tmp_path):
    """A store migrated from the locked design: its rows keep tx_order 0 and read before every
    later one, in position order (their commit order then)."""
    name = world.database_name("es_upgrade")
    ensure_database(world.database_url, name)
    dsn = world.database_dsn("es_upgrade")
    before = tmp_path / "store"
    before.mkdir()
    for old in sorted(migrate.STORE[1].glob("000[12]_*.sql")):
        (before / old.name).write_text(old.read_text())
    migrate.migrate(dsn, [(migrate.STORE[0], before)])
    db = Database(dsn, maxconn=2)
    try:
        with db.transaction() as cur:
            for n in (1, 2):
                cur.execute(
                    "INSERT INTO events (event_id, type, schema_version, source, stream_id,"
                    " stream_version, occurred_at, payload)"
                    " VALUES (%s, 'thing_happened', 1, 'testsrc', 'old', %s, now(), %s)",
                    (str(uuid.uuid4()), n, f'{{"thing_id": "old", "n": {n}}}'),
                )
        applied = migrate.migrate(dsn, [migrate.STORE])
        assert applied[0] == "kernel.store/0003_events_without_the_table_lock.sql"
        with db.transaction() as cur:
            eventstore.append(cur, "new", 0, events("new", 0, 1, None))
        with db.transaction() as cur:
            cur.execute("SELECT tx_order FROM events WHERE stream_id = 'old'")
            assert cur.fetchall() == [(0,), (0,)]
            read = list(eventstore.iter_all(cur, batch_size=1, settled=False))
        assert [(e.stream_id, e.stream_version) for _, e in read] == [
            ("old", 1),
            ("old", 2),
            ("new", 1),
        ]
        assert read[0][0] == Cursor(0, 1) and read[1][0] == Cursor(0, 2)
        assert read[2][0].tx_order > 0
    finally:
        db.close()


@pytest.mark.parametrize("settled", [True, False])
def test_a_reader_in_one_snapshot_reads_it_whole_either_way(world, settled):
    store = source_store(world)
    for n in range(4):
        with store.db.transaction() as cur:
            eventstore.append(cur, f"r-{n}", 0, events(f"r-{n}", 0, 2, None))
    settle(store)
    with store.db.transaction() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        read = list(eventstore.iter_all(cur, batch_size=3, settled=settled))
    assert [(c, e.event_id) for c, e in read] == stored_order(store)


def test_a_writer_of_the_release_before_cannot_store_a_stream_out_of_turn(world):
    """During a rolling upgrade, an old-release writer inserts without a tx_order (and takes the
    table lock, as it always did). Its transaction's id drawn early, it appends version 2 after
    a new writer committed version 1: the row still sorts after version 1, for good."""
    store = source_store(world)
    envelope = events("s", 1, 1, None)[0]
    with store.db.connection() as old:
        with old.cursor() as cur:
            cur.execute("SELECT pg_current_xact_id()")  # its id, drawn before the new writer's
        with store.db.transaction() as cur:
            eventstore.append(cur, "s", 0, events("s", 0, 1, None))
        with old.cursor() as cur:
            cur.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            cur.execute(
                "INSERT INTO events (event_id, type, schema_version, source, stream_id,"
                " stream_version, tenant_id, occurred_at, actor_id, trace, payload, metadata)"
                " VALUES (%s, %s, 1, 'testsrc', 's', 2, NULL, now(), NULL, '{}', '{}', '{}')",
                (envelope.event_id, envelope.type),
            )
        old.commit()
    settle(store)
    with store.db.transaction() as cur:
        read = eventstore.read_all(cur)
    assert [e.stream_version for _, e in read] == [1, 2]
    assert [(c, e.event_id) for c, e in read] == stored_order(store)
