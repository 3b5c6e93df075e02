"""Operations of a service in-process, against real RabbitMQ and PostgreSQL: its ops endpoints and
metrics, and a poison message's dead letter counted, listed and replayed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from kernel import deadletters, topology
from kernel.aggregate import RecordedEvent
from kernel.envelope import Envelope, EventRegistry
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.store import EventStoreDependency, store_of
from kernel.observability import Operations
from kernel.relay import OutboxRelay
from kernel.testing import queue_depth, wait_until, world_env
from kernel.tracing import Tracing
from tests.support import recorder
from tests.support.recorder import SUBSCRIPTION
from tests.support.source import source_store

QUEUE = SUBSCRIPTION.queue


class MendableRecorder:
    """The test recorder, with ops endpoints, whose poison messages fail until mended."""

    name = "recorder"

    store = EventStoreDependency(
        EventRegistry(), migrations=Path(recorder.__file__).parent / "migrations"
    )
    tracing = Tracing()
    ops = Operations()
    mended: ClassVar[bool] = False

    @consume_events(SUBSCRIPTION)
    def record(self, event: Envelope) -> None:
        if event.payload.get("poison") and not MendableRecorder.mended:
            raise recorder.PoisonMessage("fails until mended")
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("recorder.record", event.event_id):
                uow.cur.execute(
                    "INSERT INTO effects (event_id, stream_id, stream_version) VALUES (%s, %s, %s)",
                    (event.event_id, event.stream_id, event.stream_version),
                )


def thing(n: int, poison: bool = False) -> RecordedEvent:
    # The payload names a person: nothing an operator reads may show it.
    return RecordedEvent(
        "thing_happened", {"thing_id": "grace@example.com", "n": n, "poison": poison}
    )


@pytest.fixture
def start_relay(world):
    """Starts the source's relay (once its database exists); stopped after the test."""
    started: list[tuple[OutboxRelay, threading.Thread]] = []

    def start() -> OutboxRelay:
        relay = OutboxRelay(world.database_dsn("testsrc"), world.amqp_uri, idle_wait=0.2)
        thread = threading.Thread(target=relay.run, daemon=True)
        thread.start()
        started.append((relay, thread))
        return relay

    yield start
    for relay, thread in started:
        relay.stop()
        thread.join(10)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Scrape(dict):
    """Samples by (name, labels), labels given as a dict in any order."""

    def __getitem__(self, key: tuple[str, dict[str, str]]) -> float:
        name, labels = key
        return super().__getitem__((name, tuple(sorted(labels.items()))))


def scrape(port: int) -> Scrape:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return Scrape(
        ((s.name, tuple(sorted(s.labels.items()))), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def effects(container) -> int:
    db = store_of(container).db
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM effects")
        return cur.fetchone()[0]


def test_a_poison_message_is_counted_listed_and_replayed_once_mended(
    world, container_factory, start_relay, infrastructure
):
    MendableRecorder.mended = False
    labels = {"service": "recorder", "queue": QUEUE}
    before = {
        outcome: sample("ledgerdesk_messages_handled_total", outcome=outcome, **labels)
        for outcome in ("handled", "failed")
    }
    redelivered_before = sample("ledgerdesk_redeliveries_total", **labels)
    store = source_store(world)
    topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit)
    container = container_factory(MendableRecorder, world.nameko_config())
    container.start()
    port = next(d for d in container.dependencies if isinstance(d, Operations)).port
    assert port

    with store.unit_of_work() as uow:
        uow.append("thing-1", 0, [thing(1), thing(2, poison=True), thing(3)], tenant_id=None)
    poison_id = _event_id(store, 2)
    start_relay()
    wait_until(
        lambda: queue_depth(infrastructure, world, SUBSCRIPTION.dead_letter_queue) == 1,
        timeout=60,
        what="the poison message in the dead-letter queue",
    )
    wait_until(lambda: effects(container) == 2, what="the others, handled meanwhile")

    # Counted: the first delivery and each redelivery failed, then the broker set it aside.
    metrics = scrape(port)
    attempts = world.delivery_limit + 1
    assert metrics[("ledgerdesk_dead_letters", {"queue": QUEUE})] == 1
    failed = metrics[("ledgerdesk_messages_handled_total", {**labels, "outcome": "failed"})]
    handled = metrics[("ledgerdesk_messages_handled_total", {**labels, "outcome": "handled"})]
    assert (failed - before["failed"], handled - before["handled"]) == (attempts, 2)
    redelivered = metrics[("ledgerdesk_redeliveries_total", labels)] - redelivered_before
    assert redelivered == attempts - 1
    assert metrics[("ledgerdesk_outbox_lag_events", {"service": "recorder"})] == 0
    timed = {"service": "recorder", "entrypoint": "record"}
    assert metrics[("ledgerdesk_handler_seconds_count", timed)] >= attempts + 2
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": True, "database": True}

    # Listed by id, type and reason; never the body (which names someone).
    [item] = deadletters.list_dead_letters(world.amqp_uri, QUEUE)
    assert item["message_id"] == poison_id and item["queue"] == QUEUE
    assert item["event_type"] == "testsrc.thing_happened"
    assert (item["reason"], item["deaths"]) == ("delivery_limit", 1)
    assert item["dead_since"]
    assert "grace@example.com" not in json.dumps(item)
    # The command-line tool says the same, and listing moved nothing.
    listed = subprocess.run(
        [sys.executable, "-m", "kernel.deadletters", "list", "--queue", QUEUE],
        env=world_env(world),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [json.loads(line)["message_id"] for line in listed.stdout.splitlines()] == [poison_id]
    assert queue_depth(infrastructure, world, SUBSCRIPTION.dead_letter_queue) == 1

    # Replay: only the ids named, and only once the cause is mended does it take effect.
    assert deadletters.replay_dead_letters(world.amqp_uri, QUEUE, ["not-this-one"]) == 0
    MendableRecorder.mended = True
    assert deadletters.replay_dead_letters(world.amqp_uri, QUEUE + ".dead") == 1
    wait_until(lambda: effects(container) == 3, what="the replayed message's effect")
    assert deadletters.dead_letter_depths(world.amqp_uri, [QUEUE]) == {QUEUE: 0}
    assert scrape(port)[("ledgerdesk_dead_letters", {"queue": QUEUE})] == 0
    with pytest.raises(deadletters.UnknownQueue):
        deadletters.list_dead_letters(world.amqp_uri, "no.such.queue")
    container.stop()


def _event_id(store, n: int) -> str:
    with store.db.transaction() as cur:
        cur.execute("SELECT event_id FROM events WHERE (payload->>'n')::int = %s", (n,))
        return str(cur.fetchone()[0])
