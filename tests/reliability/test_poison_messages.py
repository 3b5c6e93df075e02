"""Bad messages on every service's queue: a body that is not JSON, JSON that is not an envelope,
an envelope of a type nobody declared, and one of a known type in a version nobody knows. Each is
dead-lettered to ``<queue>.dead`` and counted, and every service keeps serving: the whole
platform still completes an erasure (which crosses every privacy queue and the answers queue)
and records it in the ledger.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import uuid

import pytest
import requests
from kombu import Connection, Exchange, Producer

from kernel.testing import Infrastructure, queue_depth, wait_until
from services import platform
from tests.e2e.conftest import Stack, running_stack

pytestmark = pytest.mark.reliability

# The audit ledger records every event of every service, whatever its type or version (so a new
# service is covered unchanged): for it, only a message that is no envelope at all is bad.
RECORDS_ANY_EVENT = {"audit.ledger"}


def envelope(source: str, type_: str, version: int) -> dict:
    stream = f"Poison-{uuid.uuid4()}"
    return {
        "envelope_version": 1,
        "event_id": str(uuid.uuid4()),
        "type": type_,
        "schema_version": version,
        "source": source,
        "stream_id": stream,
        "stream_version": 1,
        "tenant_id": str(uuid.uuid4()),
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "actor_id": None,
        "payload": {"tenant_id": str(uuid.uuid4())},
        "trace": {},
        "metadata": {},
    }


def known_type(binding: str) -> tuple[str, str]:
    """A (source, type) the queue's consumer handles, from its bindings."""
    source, _, type_ = binding.partition(".")
    return ("accounts" if source in ("*", "#") else source, type_ or "service_announced")


def poison(subscription) -> list[tuple[str, bytes]]:
    """(what, body) of each bad message for this queue."""
    source, type_ = known_type(subscription.bindings[0])
    bad = [
        ("not json", b"{this is not json"),
        ("not an envelope", json.dumps({"hello": "world"}).encode()),
    ]
    if subscription.queue not in RECORDS_ANY_EVENT:
        bad += [
            ("unknown type", json.dumps(envelope(source, "ghost_appeared", 1)).encode()),
            ("unknown version", json.dumps(envelope(source, type_, 99)).encode()),
        ]
    return bad


def publish_raw(amqp_uri: str, queue: str, body: bytes) -> None:
    """Straight to the queue (default exchange), as a buggy or hostile publisher would."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        producer = Producer(conn.channel(), exchange=Exchange(""))
        producer.publish(
            body,
            routing_key=queue,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=str(uuid.uuid4()),
        )


def consumers(infrastructure: Infrastructure, stack: Stack, queue: str) -> int:
    vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")
    info = infrastructure.management("GET", f"/api/queues/{vhost}/{queue}").json()
    return int(info.get("consumers", 0))


def refused_count(stack: Stack, service: str, queue: str) -> float:
    """The service's own count of messages it refused on ``queue``, from its /metrics: rejected
    at once (cannot be read), or failed (returned until the delivery limit dead-letters them:
    the consumers of other services' events read the fields they need without checking the
    version, so a payload in an unknown version fails there rather than being refused)."""
    total = 0.0
    # The gateway runs as several processes (gateway-1, gateway-2, ...) sharing its queue.
    for name, process in stack.processes.items():
        if name != service and not name.startswith(f"{service}-"):
            continue
        port = process.ops_port  # type: ignore[attr-defined]
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("ledgerdesk_messages_handled_total{") and f'queue="{queue}"' in line:
                if 'outcome="rejected"' in line or 'outcome="failed"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(300)
def test_bad_messages_on_every_queue_are_dead_lettered_and_services_keep_serving(
    infrastructure,
):
    with running_stack(infrastructure) as stack:
        subscriptions = platform.subscriptions()
        owners = {s.queue: s.queue.partition(".")[0] for s in subscriptions}
        sent: dict[str, list[str]] = {}
        for subscription in subscriptions:
            for what, body in poison(subscription):
                publish_raw(stack.settings.amqp_uri, subscription.queue, body)
                sent.setdefault(subscription.queue, []).append(what)

        def dead_lettered(queue: str) -> bool:
            depth = queue_depth(infrastructure, stack.settings, f"{queue}.dead")
            return depth >= len(sent[queue])

        for queue, whats in sent.items():
            wait_until(
                lambda q=queue: dead_lettered(q),
                timeout=60,
                interval=0.5,
                what=f"{len(whats)} bad messages ({', '.join(whats)}) in {queue}.dead",
            )
        for queue, whats in sent.items():
            assert queue_depth(infrastructure, stack.settings, f"{queue}.dead") == len(whats)
            # Nothing stuck behind them (the services' own events keep flowing meanwhile).
            wait_until(
                lambda q=queue: queue_depth(infrastructure, stack.settings, q) == 0,
                timeout=60,
                interval=0.5,
                what=f"{queue} to drain",
            )
            # The management API's consumer count is a statistic the broker emits every few
            # seconds: one read just after start can predate the consumer. A lost consumer stays
            # at zero past the wait.
            wait_until(
                lambda q=queue: consumers(infrastructure, stack, q) >= 1,
                timeout=30,
                interval=0.5,
                what=f"{queue} to keep its consumer",
            )
            assert refused_count(stack, owners[queue], queue) >= len(whats), queue

        # Still serving: an erasure crosses every privacy queue, the answers queue and the ledger.
        signup = stack.sign_up()
        key = signup["api_key"]
        contact = stack.call(
            "POST", "/v1/contacts", key=key, json={"name": "Pat Poison", "email": "p@example.com"}
        ).json()
        filed = stack.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "erasure", "subject": {"contact_id": contact["id"]}},
        )
        assert filed.status_code == 202, filed.text

        def completed():
            body = stack.call("GET", f"/v1/privacy/requests/{filed.json()['id']}", key=key).json()
            return body if body["status"] == "completed" else None

        result = wait_until(completed, timeout=90, what="the erasure to complete")
        assert {a["status"] for a in result["services"].values()} <= {"done", "retained"}
        assert set(result["services"]) >= {"accounts", "tickets", "billing", "audit"}
