"""The event store against real PostgreSQL: concurrency, streams, global order, catch-up."""

from __future__ import annotations

import threading
import uuid

import pytest

from kernel import eventstore
from kernel.aggregate import RecordedEvent
from kernel.envelope import new_envelope
from kernel.errors import TenantMoving
from kernel.eventstore import ConcurrencyError
from tests.support.settling import settle, settled_now
from tests.support.source import source_store


def thing(n: int) -> RecordedEvent:
    return RecordedEvent("thing_happened", {"thing_id": "t", "n": n})


def test_many_concurrent_appends_at_one_version_exactly_one_wins(world):
    store = source_store(world, maxconn=40)
    with store.unit_of_work() as uow:
        uow.append("thing-1", 0, [thing(0)], tenant_id=None)
    writers, barrier = 30, threading.Barrier(30)
    outcomes: list[str] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            with store.unit_of_work() as uow:
                uow.append("thing-1", 1, [thing(i), thing(i)], tenant_id=None)
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert outcomes.count("won") == 1
    assert outcomes.count("conflict") == writers - 1
    with store.db.transaction() as cur:
        versions = [e.stream_version for e in eventstore.read_stream(cur, "thing-1")]
    assert versions == [1, 2, 3]  # no gap, no duplicate


def test_primary_key_is_the_last_guard(world):
    store = source_store(world)
    with store.unit_of_work() as uow:
        [event] = uow.append("thing-2", 0, [thing(0)], tenant_id=None)
    with store.db.transaction() as cur, pytest.raises(Exception) as caught:
        cur.execute(
            "INSERT INTO events (event_id, type, schema_version, source, stream_id,"
            " stream_version, occurred_at, payload) VALUES (%s, 'x', 1, 's', 'thing-2', 1,"
            " now(), '{}')",
            (uuid.uuid4(),),
        )
    assert "events_pkey" in str(caught.value)


def test_a_stale_expected_version_is_a_conflict_and_nothing_is_written(world):
    store = source_store(world)
    with store.unit_of_work() as uow:
        uow.append("thing-3", 0, [thing(0)], tenant_id=None)
    with pytest.raises(ConcurrencyError), store.unit_of_work() as uow:
        uow.append("thing-3", 0, [thing(1)], tenant_id=None)
    with store.db.transaction() as cur:
        assert eventstore.stream_version(cur, "thing-3") == 1
        cur.execute("SELECT count(*) FROM outbox")
        assert cur.fetchone()[0] == 1  # only the first event's message


def test_events_are_immutable(world):
    store = source_store(world)
    with store.unit_of_work() as uow:
        uow.append("thing-4", 0, [thing(0)], tenant_id=None)
    for statement in ("UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"):
        with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
            cur.execute(statement)


def test_only_the_tenant_named_for_removal_loses_its_events(world):
    store = source_store(world)
    moved, staying = uuid.uuid4(), uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.append("thing-m", 0, [thing(0), thing(1)], tenant_id=moved)
        uow.append("thing-s", 0, [thing(0)], tenant_id=staying)
    # A plain DELETE of the tenant's rows is refused, as any other.
    with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
        cur.execute("DELETE FROM events WHERE tenant_id = %s", (moved,))
    # Named, but no move fenced it (a session-wide SET, a role's default): refused.
    with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
        cur.execute("SET LOCAL ledgerdesk.removing_tenant = %s", (str(moved),))
        cur.execute("DELETE FROM events WHERE tenant_id = %s", (moved,))
    with store.db.transaction() as cur:
        cur.execute("INSERT INTO tenant_fences (tenant_id) VALUES (%s)", (moved,))
    # Naming one fenced tenant removes that tenant's rows only: the other's are still refused.
    with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
        cur.execute("SET LOCAL ledgerdesk.removing_tenant = %s", (str(moved),))
        cur.execute("DELETE FROM events")
    with store.db.transaction() as cur:
        cur.execute("SET LOCAL ledgerdesk.removing_tenant = %s", (str(moved),))
        cur.execute("DELETE FROM events WHERE tenant_id = %s", (moved,))
        assert cur.rowcount == 2
    with store.db.transaction() as cur:
        cur.execute("SELECT tenant_id, count(*) FROM events GROUP BY tenant_id")
        assert [(str(t), n) for t, n in cur.fetchall()] == [(str(staying), 1)]
    # SET LOCAL ended with its transaction: the next one is refused again.
    with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
        cur.execute("DELETE FROM events WHERE tenant_id = %s", (staying,))
    # Updates are never allowed, named or not.
    with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
        cur.execute("SET LOCAL ledgerdesk.removing_tenant = %s", (str(staying),))
        cur.execute("UPDATE events SET type = 'x' WHERE tenant_id = %s", (staying,))


def test_a_fenced_tenant_gets_no_event_but_the_movers_import(world):
    """While a tenant moves between cells nothing appends to its history, however the write
    arrives (``TenantMoving``, a 503 with Retry-After at the gateway); other tenants write on,
    and the mover's import, naming the tenant, passes."""
    store = source_store(world)
    fenced, other = uuid.uuid4(), uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.append("thing-f", 0, [thing(0)], tenant_id=fenced)
    with store.db.transaction() as cur:
        cur.execute("INSERT INTO tenant_fences (tenant_id) VALUES (%s)", (fenced,))

    with pytest.raises(TenantMoving) as refused, store.unit_of_work() as uow:
        uow.append("thing-f", 1, [thing(1)], tenant_id=fenced)
    assert refused.value.retry_after == eventstore.MOVING_RETRY_AFTER
    with store.unit_of_work() as uow:
        uow.append("thing-o", 0, [thing(0)], tenant_id=other)
    with store.db.transaction() as cur:
        cur.execute("SET LOCAL ledgerdesk.moving_tenant = %s", (str(fenced),))
        cur.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, type, source,"
            " schema_version, tenant_id, occurred_at, payload, tx_order)"
            " VALUES (%s, 'thing-i', 1, 'thing_happened', 'test', 1, %s, now(), '{}', -1)",
            (str(uuid.uuid4()), fenced),
        )

    with store.db.transaction() as cur:
        cur.execute("DELETE FROM tenant_fences WHERE tenant_id = %s", (fenced,))
    with store.unit_of_work() as uow:
        uow.append("thing-f", 1, [thing(1)], tenant_id=fenced)
    with store.db.transaction() as cur:
        cur.execute("SELECT stream_id, count(*) FROM events GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [("thing-f", 2), ("thing-i", 1), ("thing-o", 1)]


def test_catch_up_in_global_order_never_skips_a_late_commit(world):
    """A reader follows its last cursor while writers commit concurrently."""
    store = source_store(world, maxconn=40)
    writers, per_writer = 6, 40
    done = threading.Event()
    seen: list[eventstore.Cursor] = []

    def write(w: int) -> None:
        for i in range(per_writer):
            with store.unit_of_work() as uow:
                uow.append(f"w{w}-{i}", 0, [thing(i)], tenant_id=None)

    def read() -> None:
        position = eventstore.START
        while True:
            # Settled first: then this read sees every event, and an empty one means the end.
            finished = done.is_set() and settled_now(store)
            with store.db.transaction() as cur:
                batch = eventstore.read_all(cur, position, 50)
            for pos, _ in batch:
                seen.append(pos)
            if batch:
                position = batch[-1][0]
            elif finished:
                return

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()

    with store.db.transaction() as cur:
        cur.execute("SELECT tx_order, position FROM events ORDER BY tx_order, position")
        stored = [eventstore.Cursor(*row) for row in cur.fetchall()]
    assert len(stored) == writers * per_writer
    assert seen == stored  # every event, once, in order


def test_reading_a_stream_and_the_envelope_it_gives(world):
    store = source_store(world)
    tenant = uuid.uuid4()
    with store.unit_of_work(
        actor_id="agent-7", trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    ) as uow:
        uow.append("thing-5", 0, [thing(1), thing(2)], tenant_id=tenant)
    with store.unit_of_work() as uow:
        events = uow.load("thing-5")
    assert [(e.stream_version, e.payload["n"]) for e in events] == [(1, 1), (2, 2)]
    assert all(e.tenant_id == tenant and e.actor_id == "agent-7" for e in events)
    assert events[0].trace["traceparent"].startswith("00-" + "a" * 32)
    assert events[0].source == "testsrc" and events[0].routing_key == "testsrc.thing_happened"


def test_every_reader_gives_back_exactly_the_envelopes_appended(world):
    """Rows are decoded by the store itself (uuid and jsonb read as text): every kind of value
    comes back equal and of the type the envelope declares."""
    store = source_store(world)
    tenant = uuid.uuid4()
    payloads = [
        {},
        {"text": "{}", "empty": {}, "none": None, "flag": False, "n": -7, "x": 2.5},
        {"nested": {"list": [1, "two", [3.0], {"k": None}]}, "unicode": "é \u2603 \U0001f600"},
        {"quote": 'a "b" \\ c\n\td', "big": 2**53 + 1},
    ]
    appended = [
        new_envelope(
            type="thing_happened",
            schema_version=1,
            source="testsrc",
            stream_id="odd-values",
            stream_version=n,
            tenant_id=None if n % 2 else tenant,
            actor_id=None if n == 1 else f"agent-{n}",
            payload=payload,
            trace={} if n < 3 else {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
            metadata={} if n == 2 else {"causation": {"id": str(uuid.uuid4()), "n": [n]}},
        )
        for n, payload in enumerate(payloads, start=1)
    ]
    with store.db.transaction() as cur:
        eventstore.append(cur, "odd-values", 0, appended)
    settle(store)
    with store.db.transaction() as cur:
        everything = [envelope for _, envelope in eventstore.read_all(cur)]
        one_by_one = [envelope for _, envelope in eventstore.iter_all(cur, batch_size=1)]
        stream = eventstore.read_stream(cur, "odd-values")
        later = eventstore.read_stream(cur, "odd-values", after_version=2)
        tenants = [envelope for _, envelope in eventstore.read_all(cur, tenant_id=tenant)]
    assert everything == one_by_one == stream == appended
    assert later == appended[2:]
    assert tenants == [e for e in appended if e.tenant_id == tenant]
    for envelope in everything:
        assert type(envelope.event_id) is uuid.UUID
        assert envelope.tenant_id is None or type(envelope.tenant_id) is uuid.UUID
        assert envelope.occurred_at.utcoffset() is not None
    # Each envelope has dicts of its own, even where the stored value was the same '{}'.
    assert everything[0].trace is not everything[1].trace
    assert everything[0].payload is not everything[0].trace
