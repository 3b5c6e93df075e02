"""What a dead letter keeps and how long it has left: pure functions, no broker."""

from __future__ import annotations

import datetime as dt
import json

import amqp

from kernel import deadletters, topology
from kernel.nameko_adapters import rpc_queues

LIMITS = topology.DeadLetterLimits(ttl_ms=60_000, max_messages=10)


def test_a_request_set_aside_keeps_why_what_and_ids_but_no_body_or_other_header() -> None:
    body = json.dumps({"args": ["ldk_secret"], "kwargs": {"note": "ticket text"}}).encode()
    old = amqp.Message(
        body,
        content_type="application/json",
        correlation_id="call-1",
        message_id="m-1",
        reply_to="reply-queue",
        type="accounts.authenticate",
        timestamp=1_700_000_000,
        application_headers={
            "x-first-death-reason": "rejected",
            "x-first-death-queue": "rpc-accounts",
            deadletters.DELIVERIES_HEADER: 2,
            rpc_queues.ROUTING_KEY_HEADER: "accounts.authenticate",
            "nameko.traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
            "nameko.call_id_stack": ["gateway.api.1"],
            "nameko.authorization": "Bearer ldk_secret",
        },
    )

    copy = rpc_queues._emptied(old)

    assert copy.body == b""
    assert "ldk_secret" not in repr(copy.properties)
    assert copy.properties["application_headers"] == {
        "x-first-death-reason": "rejected",
        "x-first-death-queue": "rpc-accounts",
        deadletters.DELIVERIES_HEADER: 2,
        rpc_queues.ROUTING_KEY_HEADER: "accounts.authenticate",
        "nameko.traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        deadletters.BODY_BYTES_HEADER: len(body),
        deadletters.CONTENT_TYPE_HEADER: "application/json",
    }
    kept = {k: v for k, v in copy.properties.items() if k != "application_headers"}
    assert kept == {
        "content_type": "application/octet-stream",
        "content_encoding": "binary",
        "delivery_mode": 2,
        "correlation_id": "call-1",
        "message_id": "m-1",
        "type": "accounts.authenticate",
        "timestamp": 1_700_000_000,
    }
    # Emptied twice, it says the same: the size is the original request's.
    assert rpc_queues._emptied(copy).properties == copy.properties


def test_the_life_left_counts_from_the_latest_death_or_the_timestamp() -> None:
    now = dt.datetime.now(dt.UTC)
    died = amqp.Message(
        "{}",
        application_headers={
            "x-death": [
                {"time": (now - dt.timedelta(seconds=20)).replace(tzinfo=None), "count": 1},
                {"time": (now - dt.timedelta(days=3)).replace(tzinfo=None), "count": 1},
            ]
        },
    )
    left = LIMITS.remaining(died)
    assert left is not None and 30_000 < left <= 40_000

    stamped = amqp.Message(b"", timestamp=int((now - dt.timedelta(minutes=5)).timestamp()))
    assert LIMITS.remaining(stamped) == 0
    assert LIMITS.remaining(amqp.Message(b"")) is None  # unknown: it gets a whole life


def test_the_queue_arguments_are_the_settings() -> None:
    assert LIMITS.queue_arguments() == {
        "x-queue-type": "quorum",
        "x-message-ttl": 60_000,
        "x-max-length": 10,
        "x-overflow": "reject-publish",
    }
    assert topology.DEFAULT_DEAD_LETTER_LIMITS == topology.DeadLetterLimits(48 * 3_600_000, 10_000)
