"""RPC queues against the real broker: quorum queues, the migration of classic ones left by an
older release (nothing lost), and heartbeats on pooled publisher connections that stay idle."""

from __future__ import annotations

import json
import time
import urllib.parse

import amqp
import pytest
from kombu import Connection, Exchange, Queue
from nameko.amqp.publish import Publisher

from kernel.config import Settings
from kernel.nameko_adapters import patches, rpc_queues
from kernel.nameko_adapters.rpc_queues import RpcQueueInUse, declare_rpc_queues, rpc_queue
from kernel.testing import Infrastructure, wait_until


def queue_info(infrastructure: Infrastructure, vhost: str, name: str) -> dict:
    quoted = urllib.parse.quote(vhost, safe="")
    return infrastructure.management("GET", f"/api/queues/{quoted}/{name}").json()


def queue_names(infrastructure: Infrastructure, vhost: str) -> set[str]:
    quoted = urllib.parse.quote(vhost, safe="")
    return {q["name"] for q in infrastructure.management("GET", f"/api/queues/{quoted}").json()}


def message_count(amqp_uri: str, queue: str) -> int:
    # The management API's figures lag by seconds; the broker's answer does not.
    with Connection(amqp_uri) as conn:
        return conn.channel().queue_declare(queue, passive=True).message_count


def classic_rpc_queue_with_requests(amqp_uri: str, service: str, count: int) -> None:
    """What nameko itself declares (a durable classic queue), holding ``count`` requests."""
    exchange = Exchange("nameko-rpc", type="topic", durable=True)
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        Queue(f"rpc-{service}", exchange=exchange, routing_key=f"{service}.*", durable=True)(
            channel
        ).declare()
        for n in range(count):
            message = amqp.Message(
                f'{{"args": [{n}], "kwargs": {{}}}}',
                content_type="application/json",
                reply_to=f"reply-{n}",
                correlation_id=f"call-{n}",
                application_headers={"nameko.call_id_stack": [f"gateway.{n}"]},
                delivery_mode=2,
            )
            channel.basic_publish_confirm(
                message, exchange="nameko-rpc", routing_key=f"{service}.method_{n}"
            )


def test_a_classic_rpc_queue_becomes_quorum_with_its_requests(infrastructure, world) -> None:
    classic_rpc_queue_with_requests(world.amqp_uri, "things", 5)
    vhost = world.database_prefix
    assert queue_info(infrastructure, vhost, "rpc-things")["type"] == "classic"

    assert declare_rpc_queues(world.amqp_uri, ["things", "others"]) == ["rpc-things"]

    info = queue_info(infrastructure, vhost, "rpc-things")
    assert (info["type"], info["durable"], info["auto_delete"]) == ("quorum", True, False)
    assert queue_info(infrastructure, vhost, "rpc-others")["type"] == "quorum"
    assert "rpc-things.migrating" not in queue_names(infrastructure, vhost)
    with Connection(world.amqp_uri) as conn:
        channel = conn.channel()
        got = [channel.basic_get("rpc-things", no_ack=True) for _ in range(6)]
    assert got[-1] is None
    requests = sorted(got[:-1], key=lambda m: m.properties["correlation_id"])
    for n, message in enumerate(requests):
        # What nameko dispatches and answers by: routing key, reply queue, correlation id.
        assert message.delivery_info["routing_key"] == f"things.method_{n}"
        assert message.properties["reply_to"] == f"reply-{n}"
        assert message.properties["correlation_id"] == f"call-{n}"
        assert message.headers["nameko.call_id_stack"] == [f"gateway.{n}"]
        assert rpc_queues.ROUTING_KEY_HEADER not in message.headers
        assert json.loads(message.body) == {"args": [n], "kwargs": {}}

    # Once migrated, preparing again changes nothing.
    assert declare_rpc_queues(world.amqp_uri, ["things"]) == []


def test_requests_left_in_the_holding_queue_reach_the_quorum_queue(infrastructure, world):
    """A migration interrupted after the classic queue went: the next run finishes it."""
    classic_rpc_queue_with_requests(world.amqp_uri, "things", 3)
    with Connection(world.amqp_uri) as conn:
        rpc_queues._replace_classic_queue(conn, rpc_queue("things"))
    assert "rpc-things" not in queue_names(infrastructure, world.database_prefix)

    declare_rpc_queues(world.amqp_uri, ["things"])
    assert queue_info(infrastructure, world.database_prefix, "rpc-things")["type"] == "quorum"
    assert message_count(world.amqp_uri, "rpc-things") == 3
    assert "rpc-things.migrating" not in queue_names(infrastructure, world.database_prefix)


def test_a_classic_rpc_queue_still_consumed_is_left_alone(infrastructure, world) -> None:
    classic_rpc_queue_with_requests(world.amqp_uri, "things", 2)
    with Connection(world.amqp_uri) as old_release:
        old_release.channel().basic_consume("rpc-things", callback=lambda message: None)
        with pytest.raises(RpcQueueInUse, match="rpc-things"):
            declare_rpc_queues(world.amqp_uri, ["things"])
        info = queue_info(infrastructure, world.database_prefix, "rpc-things")
        assert info["type"] == "classic"


def publisher_connections(infrastructure: Infrastructure, vhost: str) -> dict[str, int]:
    """Connection name -> negotiated heartbeat (s), for the vhost's connections."""
    return {
        c["name"]: c.get("timeout", 0)
        for c in infrastructure.management("GET", "/api/connections").json()
        if c.get("vhost") == vhost
    }


def test_an_idle_publisher_connection_keeps_beating_and_publishes_after(infrastructure, world):
    patches.use_publisher_heartbeat(1)
    try:
        queue = Queue("beats", durable=True)
        with Connection(world.amqp_uri) as conn:
            queue(conn.channel()).declare()
        publisher = Publisher(world.amqp_uri)
        publisher.publish({"n": 1}, routing_key="beats")

        def listed() -> dict[str, int]:
            patches.beat_idle_publishers()  # a 1 s heartbeat: silent, it would be closed
            return publisher_connections(infrastructure, world.database_prefix)

        opened = wait_until(
            listed,
            timeout=15,
            interval=0.25,
            what="the publisher's connection in the management API",
        )
        assert set(opened.values()) == {1}, opened

        # Idle for well over twice the heartbeat, beaten as PublisherHeartbeats does: the
        # broker keeps the connection, and the next publish goes out on it.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            patches.beat_idle_publishers()
            time.sleep(0.25)
        publisher.publish({"n": 2}, routing_key="beats")
        assert publisher_connections(infrastructure, world.database_prefix) == opened
        assert message_count(world.amqp_uri, "beats") == 2
    finally:
        patches.use_publisher_heartbeat(Settings.heartbeat)
