"""Processes killed with SIGKILL at the worst moments: nothing lost, no effect twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from kernel import topology
from kernel.aggregate import RecordedEvent
from kernel.db import Database
from kernel.relay import OutboxRelay
from kernel.testing import wait_until, world_env
from tests.support.recorder import SUBSCRIPTION
from tests.support.source import source_store

pytestmark = pytest.mark.reliability


def thing(n: int) -> RecordedEvent:
    return RecordedEvent("thing_happened", {"thing_id": "t", "n": n})


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_recorder(env: dict[str, str]) -> subprocess.Popen:
    return start(["kernel.runner", "tests.support.recorder:RecorderService"], env)


def counts(db: Database) -> tuple[int, int, int]:
    with db.transaction() as cur:
        cur.execute("SELECT count(*), count(DISTINCT event_id) FROM effects")
        effects, distinct = cur.fetchone()
        cur.execute("SELECT count(*) FROM duplicates")
        return effects, distinct, cur.fetchone()[0]


def recorder_db(world) -> Database:
    database = wait_until(
        lambda: _try_connect(world.database_dsn("recorder")), what="the recorder's database"
    )
    wait_until(lambda: _has_effects_table(database), what="the recorder's migrations")
    return database


def _try_connect(dsn: str) -> Database | None:
    try:
        return Database(dsn, maxconn=2)
    except Exception:
        return None


def _has_effects_table(database: Database) -> bool:
    with database.transaction() as cur:
        cur.execute("SELECT to_regclass('effects') IS NOT NULL")
        return cur.fetchone()[0]


def test_relay_killed_between_publish_and_mark_loses_nothing(world):
    store = source_store(world)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    env = world_env(world)
    recorder = start_recorder(env)
    try:
        total, batch = 600, 200
        for i in range(total):
            with store.unit_of_work() as uow:
                uow.append(f"thing-{i}", 0, [thing(i)], tenant_id=None)

        # The second batch is confirmed by the broker, then the process dies before marking it.
        crashing = start(
            ["kernel.relay", "testsrc"],
            {
                **env,
                "LEDGERDESK_FAULTS": "relay.after_publish:2",
                "LEDGERDESK_RELAY_BATCH_SIZE": str(batch),
            },
        )
        assert crashing.wait(60) == -signal.SIGKILL
        with store.db.transaction() as cur:
            cur.execute("SELECT count(*) FROM outbox")
            assert cur.fetchone()[0] == total - batch  # batch 2 went out but is not deleted

        survivor = start(["kernel.relay", "testsrc"], env)
        try:
            db = recorder_db(world)
            wait_until(
                lambda: counts(db)[0] + counts(db)[2] >= total + batch,
                timeout=90,
                what="every message, the re-published batch included",
            )
            effects, distinct, duplicates = counts(db)
            assert (effects, distinct) == (total, total)
            assert duplicates == batch  # the re-published batch arrived and had no effect
        finally:
            survivor.terminate()
            survivor.wait(20)
    finally:
        recorder.terminate()
        recorder.wait(30)


def test_consumer_killed_five_times_while_ten_thousand_events_flow(world):
    store = source_store(world, maxconn=8)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    env = world_env(world)
    relay = OutboxRelay(world.database_dsn("testsrc"), world.amqp_uri, idle_wait=0.2)
    relay_thread = threading.Thread(target=relay.run, daemon=True)
    relay_thread.start()
    writers, transactions, per_transaction = 4, 500, 5
    total = writers * transactions * per_transaction

    def write(w: int) -> None:
        for i in range(transactions):
            with store.unit_of_work() as uow:
                uow.append(
                    f"w{w}-{i}", 0, [thing(n) for n in range(per_transaction)], tenant_id=None
                )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    recorder = start_recorder(env)
    kills = 0
    try:
        db = recorder_db(world)
        seen = 0
        while kills < 5:
            seen = wait_until(
                lambda s=seen: (c := counts(db)[0]) >= s + 300 and c,
                timeout=60,
                what="progress before the next kill",
            )
            recorder.send_signal(signal.SIGKILL)
            recorder.wait(10)
            kills += 1
            recorder = start_recorder(env)
        for t in threads:
            t.join()
        wait_until(lambda: counts(db)[0] >= total, timeout=180, what="all 10,000 effects")
        effects, distinct, duplicates = counts(db)
        assert kills == 5
        assert (effects, distinct) == (total, total), f"{duplicates} duplicates absorbed"
        with store.db.transaction() as cur:
            cur.execute("SELECT count(*) FROM outbox")
            assert cur.fetchone()[0] == 0
    finally:
        recorder.terminate()
        recorder.wait(30)
        relay.stop()
        relay_thread.join(10)
