"""Two replicas of one consumer on the same queue, one stopped with SIGTERM in the middle of a
burst and started again: every message has its effect exactly once, and both replicas worked."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import requests
from prometheus_client.parser import text_string_to_metric_families

from kernel import topology
from kernel.aggregate import RecordedEvent
from kernel.db import Database
from kernel.relay import OutboxRelay
from kernel.testing import free_port, wait_until, world_env
from tests.support.recorder import SUBSCRIPTION
from tests.support.source import source_store

STREAMS, PER_STREAM = 10, 100
TOTAL = STREAMS * PER_STREAM


def start_replica(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel.runner", "tests.support.recorder:RecorderService"],
        env={**env, "LEDGERDESK_OPS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def handled(port: int) -> float:
    """What this replica's metrics say it handled (its own count, not the queue's)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ledgerdesk_messages_handled_total"
        and sample.labels.get("outcome") == "handled"
    )


def ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def counts(db: Database) -> tuple[int, int]:
    with db.transaction() as cur:
        cur.execute("SELECT count(*), count(DISTINCT event_id) FROM effects")
        return cur.fetchone()


def test_two_replicas_and_a_sigterm_mid_burst_lose_nothing_and_repeat_nothing(world):
    store = source_store(world)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    env = world_env(world)
    first, first_port = start_replica(env)
    second, second_port = start_replica(env)
    relay = OutboxRelay(world.database_dsn("testsrc"), world.amqp_uri, idle_wait=0.2)
    relay_thread = threading.Thread(target=relay.run, daemon=True)
    try:
        wait_until(lambda: ready(first_port) and ready(second_port), timeout=60, what="replicas")
        recorder_db = Database(world.database_dsn("recorder"), maxconn=2)
        for s in range(STREAMS):
            with store.unit_of_work() as uow:
                events = [
                    RecordedEvent("thing_happened", {"thing_id": f"s{s}", "n": n})
                    for n in range(PER_STREAM)
                ]
                uow.append(f"burst-{s}", 0, events, tenant_id=None)
        relay_thread.start()

        wait_until(lambda: counts(recorder_db)[0] >= TOTAL // 10, timeout=60, what="the burst")
        first.send_signal(signal.SIGTERM)
        # Counted as the signal goes: the other replica goes on meanwhile and may well finish
        # the burst while this one stops.
        assert counts(recorder_db)[0] < TOTAL, "the burst ended before the SIGTERM"
        # Graceful: in-flight handlers finish and the process exits by itself, cleanly.
        assert first.wait(30) == 0
        first, first_port = start_replica(env)

        wait_until(lambda: counts(recorder_db)[0] >= TOTAL, timeout=120, what="every effect")
        assert counts(recorder_db) == (TOTAL, TOTAL)
        # Competing consumers: the replica that ran throughout did only part of the work.
        assert 0 < handled(second_port) < TOTAL
    finally:
        relay.stop()
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
        for process in (first, second):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if relay_thread.is_alive():
            relay_thread.join(10)
