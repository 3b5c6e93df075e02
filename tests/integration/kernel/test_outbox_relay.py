"""Outbox, relay, topology and consumers against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from kombu import Connection

from kernel import migrate, topology
from kernel.aggregate import RecordedEvent
from kernel.db import connect, ensure_database
from kernel.relay import OutboxRelay
from kernel.testing import queue_depth, wait_until
from tests.support.recorder import SUBSCRIPTION, RecorderService
from tests.support.source import source_store


def thing(n: int, poison: bool = False) -> RecordedEvent:
    return RecordedEvent("thing_happened", {"thing_id": "t", "n": n, "poison": poison})


@pytest.fixture
def relay_thread(world):
    relays: list[tuple[OutboxRelay, threading.Thread]] = []

    def start(service: str = "testsrc") -> OutboxRelay:
        relay = OutboxRelay(world.database_dsn(service), world.amqp_uri, idle_wait=0.2)
        thread = threading.Thread(target=relay.run, daemon=True)
        thread.start()
        relays.append((relay, thread))
        return relay

    yield start
    for relay, thread in relays:
        relay.stop()
        thread.join(10)


def counts(db) -> tuple[int, int, int]:
    with db.transaction() as cur:
        cur.execute("SELECT count(*), count(DISTINCT event_id) FROM effects")
        effects, distinct = cur.fetchone()
        cur.execute("SELECT count(*) FROM duplicates")
        return effects, distinct, cur.fetchone()[0]


def recorder(container_factory, world):
    container = container_factory(RecorderService, world.nameko_config())
    container.start()
    return container


def test_concurrent_writers_lose_nothing_and_duplicate_no_effect(
    world, container_factory, relay_thread
):
    """8 writers x 500 transactions while the relay runs: every event is handled once."""
    writers, transactions = 8, 500
    store = source_store(world, maxconn=writers + 4)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    container = recorder(container_factory, world)
    relay = relay_thread()

    def write(w: int) -> None:
        for i in range(transactions):
            with store.unit_of_work() as uow:
                uow.append(f"writer{w}-{i}", 0, [thing(i)], tenant_id=None)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    recorder_db = _recorder_db(container)
    total = writers * transactions
    wait_until(lambda: counts(recorder_db)[0] >= total, timeout=120, what="all effects")
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM outbox")
        unpublished = cur.fetchone()[0]
    effects, distinct, _ = counts(recorder_db)
    assert (effects, distinct, unpublished) == (total, total, 0)
    assert relay.stats.failed == 0 and relay.stats.published == total


def _recorder_db(container):
    for dependency in container.dependencies:
        if getattr(dependency, "store", None) is not None:
            return dependency.store.db
    raise AssertionError("the recorder has no store")


def test_redelivered_message_has_no_second_effect(world, container_factory, relay_thread):
    """The same outbox row published twice (as after a relay crash) is handled once."""
    store = source_store(world)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    container = recorder(container_factory, world)
    with store.unit_of_work() as uow:
        uow.append("thing-1", 0, [thing(1)], tenant_id=None)
    with store.db.transaction() as cur:
        cur.execute("SELECT event_id, stream_id, exchange, routing_key, body FROM outbox")
        row = cur.fetchone()
    relay_thread()
    recorder_db = _recorder_db(container)
    wait_until(lambda: counts(recorder_db)[0] == 1, what="the first effect")
    with store.db.transaction() as cur:
        # As if the relay's delete never committed: the row is there to publish again.
        cur.execute(
            "INSERT INTO outbox (event_id, stream_id, exchange, routing_key, body)"
            " VALUES (%s, %s, %s, %s, %s)",
            row,
        )
    wait_until(lambda: counts(recorder_db)[2] == 1, what="the duplicate to be absorbed")
    assert counts(recorder_db) == (1, 1, 1)


def test_a_failing_handler_is_retried_then_dead_lettered_and_others_flow(
    world, container_factory, relay_thread, infrastructure
):
    store = source_store(world)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    container = recorder(container_factory, world)
    with store.unit_of_work() as uow:
        uow.append("thing-1", 0, [thing(1), thing(2, poison=True), thing(3)], tenant_id=None)
    with store.unit_of_work() as uow:
        uow.append("thing-2", 0, [thing(4)], tenant_id=None)
    relay_thread()
    recorder_db = _recorder_db(container)
    wait_until(
        lambda: queue_depth(infrastructure, world, SUBSCRIPTION.dead_letter_queue) == 1,
        timeout=60,
        what="the poison message in the dead-letter queue",
    )
    wait_until(lambda: counts(recorder_db)[0] == 3, what="the three good effects")
    assert counts(recorder_db) == (3, 3, 0)
    dead = infrastructure.management(
        "POST",
        f"/api/queues/{world.database_prefix}/{SUBSCRIPTION.dead_letter_queue}/get",
        json={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"},
    ).json()[0]
    # The broker counted the attempts: the delivery limit, then the dead letter.
    death = dead["properties"]["headers"]["x-death"][0]
    assert (death["queue"], death["reason"]) == (SUBSCRIPTION.queue, "delivery_limit")
    # Bounded: the first delivery and one redelivery per unit of the limit, then no more.
    assert RecorderService.poison_attempts[dead["properties"]["message_id"]] == (
        world.delivery_limit + 1
    )
    assert '"poison": true' in dead["payload"]


def test_an_event_no_queue_is_bound_to_is_an_error_and_stays_in_the_outbox(
    world, relay_thread, caplog
):
    store = source_store(world)
    topology.declare(world.amqp_uri, [], world.delivery_limit)  # the exchange, but no queue
    with store.unit_of_work() as uow:
        [event] = uow.append("thing-1", 0, [thing(1)], tenant_id=None)
    relay = relay_thread()
    wait_until(lambda: relay.stats.failed >= 1, what="the relay to report the unroutable event")
    with store.db.transaction() as cur:
        cur.execute("SELECT event_id, attempts, last_error FROM outbox")
        event_id, attempts, last_error = cur.fetchone()
    assert event_id == event.event_id and attempts >= 1
    assert "unroutable" in last_error and "testsrc.thing_happened" in last_error
    assert any(str(event.event_id) in r.getMessage() for r in caplog.records)

    # Once a queue is bound, the same row goes out: nothing was lost meanwhile.
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    wait_until(lambda: relay.stats.published == 1, timeout=40, what="the retried publish")
    assert queue_depth_now(world, SUBSCRIPTION.queue) == 1


def queue_depth_now(world, queue: str) -> int:
    """Messages ready in ``queue``, as the broker counts them now (the management API's figures
    lag by seconds)."""
    with Connection(world.amqp_uri, connect_timeout=5) as conn:
        return conn.channel().queue_declare(queue, passive=True).message_count


def outbox_rows(store) -> list[tuple]:
    with store.db.transaction() as cur:
        cur.execute("SELECT event_id, body FROM outbox")
        return cur.fetchall()


def test_a_confirmed_message_leaves_nothing_in_the_outbox(world, relay_thread):
    """What the broker confirmed is deleted from the outbox, body and all: a published copy (the
    gateway's access events carry IP addresses and user agents) never outlives its publication."""
    store = source_store(world)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    canary = "outbox-canary-7d1f"
    with store.unit_of_work() as uow:
        published = uow.append(
            "thing-1",
            0,
            [RecordedEvent("thing_happened", {"thing_id": canary, "n": n}) for n in range(3)],
            tenant_id=None,
        )
    assert len(outbox_rows(store)) == 3 and canary in outbox_rows(store)[0][1]

    relay = relay_thread()
    wait_until(lambda: relay.stats.published == 3, what="the broker's confirms")
    # The messages are in the queue: the broker has them, the outbox has nothing of them.
    assert queue_depth_now(world, SUBSCRIPTION.queue) == 3
    assert outbox_rows(store) == []
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT count(*) FROM events WHERE event_id = ANY(%s)",
            ([e.event_id for e in published],),
        )
        assert cur.fetchone()[0] == 3  # the event store keeps its history; only the copy goes


def test_a_malformed_message_is_dead_lettered_at_once(world, container_factory, infrastructure):
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    recorder(container_factory, world)
    infrastructure.management(
        "POST",
        f"/api/exchanges/{world.database_prefix}/{topology.EVENTS_EXCHANGE}/publish",
        json={
            "properties": {"content_type": "application/json"},
            "routing_key": "testsrc.thing_happened",
            "payload": '{"type": "thing_happened"}',
            "payload_encoding": "string",
        },
    )
    wait_until(
        lambda: queue_depth(infrastructure, world, SUBSCRIPTION.dead_letter_queue) == 1,
        what="the malformed message in the dead-letter queue",
    )


def test_the_store_migration_deletes_the_rows_an_older_relay_kept(world, tmp_path):
    """A database whose relay marked published rows (``published_at``) and kept them: upgrading
    deletes those and keeps the rows still to publish."""
    dsn = world.database_dsn("testsrc")
    ensure_database(world.database_url, world.database_name("testsrc"))
    component, folder = migrate.STORE
    (tmp_path / "0001_event_store.sql").write_text((folder / "0001_event_store.sql").read_text())
    migrate.migrate(dsn, [(component, tmp_path)])
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO outbox (event_id, stream_id, exchange, routing_key, body,"
                " published_at) VALUES (%s, 's', 'x', 'k', %s, %s)",
                [
                    (uuid.uuid4(), "kept by an older relay", dt.datetime.now(dt.UTC)),
                    (uuid.uuid4(), "still to publish", None),
                ],
            )
        applied = migrate.migrate(dsn, [migrate.STORE])
        assert applied[0] == "kernel.store/0002_outbox_keeps_no_published_row.sql"
        with conn, conn.cursor() as cur:
            cur.execute("SELECT body FROM outbox")
            assert cur.fetchall() == [("still to publish",)]
    finally:
        conn.close()
