"""Dead-letter queues against the real broker: a bounded life (a TTL and a length limit, read back
through the management API), and the upgrade of queues that older releases declared without
them, by ``prepare``, keeping what they hold (less what is past its TTL), requests set aside
whole by an older release emptied on the way."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
import uuid

import amqp
import pytest
from kombu import Connection, Queue

from kernel import deadletters, queue_replacement, topology
from kernel.nameko_adapters.rpc_queues import declare_rpc_queues, rpc_dead_letter_queue
from kernel.testing import Infrastructure, make_world, wait_until
from services import platform
from services.audit.subscriptions import LEDGER
from tests.support.recorder import SUBSCRIPTION

API_KEY = "ldk_dead-letter-canary-" + uuid.uuid4().hex
TWO_SECONDS_IN_HOURS = str(2 / 3600)


def queue_info(infrastructure: Infrastructure, vhost: str, name: str) -> dict:
    quoted = urllib.parse.quote(vhost, safe="")
    return infrastructure.management("GET", f"/api/queues/{quoted}/{name}").json()


def queue_names(infrastructure: Infrastructure, vhost: str) -> set[str]:
    quoted = urllib.parse.quote(vhost, safe="")
    return {q["name"] for q in infrastructure.management("GET", f"/api/queues/{quoted}").json()}


def depth(amqp_uri: str, queue: str) -> int:
    # The management API's figures lag by seconds; the broker's answer does not.
    with Connection(amqp_uri, connect_timeout=5) as conn:
        return conn.channel().queue_declare(queue, passive=True).message_count


def peek(amqp_uri: str, queue: str) -> list[amqp.Message]:
    """Every message of ``queue``, given back when the channel closes."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        found = []
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            found.append(message)
        channel.close()
    return found


def text(body: str | bytes) -> str:
    """py-amqp hands back a body it can decode as text, others as bytes."""
    return body.decode() if isinstance(body, bytes) else body


def publish(amqp_uri: str, exchange: str, routing_key: str, messages: list[amqp.Message]) -> None:
    """With confirms and ``mandatory``: once this returns, the broker holds each in a queue."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        conn.connect()
        channel = conn.connection.channel()
        channel.confirm_select()
        for message in messages:
            channel.basic_publish_confirm(message, exchange, routing_key, mandatory=True)


def limits_of(info: dict) -> dict:
    return {k: info["arguments"].get(k) for k in ("x-message-ttl", "x-max-length", "x-overflow")}


def test_dead_letter_queues_carry_a_ttl_and_a_length_limit(infrastructure) -> None:
    with make_world(infrastructure, LEDGERDESK_DEAD_LETTER_MAX_MESSAGES="3") as world:
        limits = topology.DeadLetterLimits.of(world)
        topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit, limits)
        declare_rpc_queues(world.amqp_uri, ["things"], dead_letters=limits)

        expected = {
            "x-message-ttl": 48 * 3_600_000,
            "x-max-length": 3,
            "x-overflow": "reject-publish",
        }
        for name in (SUBSCRIPTION.dead_letter_queue, "rpc-things.dead"):
            info = queue_info(infrastructure, world.database_prefix, name)
            assert (info["type"], limits_of(info)) == ("quorum", expected), name

        # Past the limit more is refused (the publisher's confirm is a nack): the oldest stay.
        # A quorum queue checks its length before it takes a message, so it may hold one more.
        for name in (SUBSCRIPTION.dead_letter_queue, "rpc-things.dead"):
            accepted = 0
            with pytest.raises(amqp.exceptions.MessageNacked):
                for n in range(10):
                    publish(world.amqp_uri, "", name, [amqp.Message(f"dead {n}")])
                    accepted += 1
            assert accepted in (3, 4), (name, accepted)
            kept = [text(m.body) for m in peek(world.amqp_uri, name)]
            assert kept == [f"dead {n}" for n in range(accepted)], name


def test_a_dead_letter_its_full_queue_refuses_waits_in_the_consumer_queue(infrastructure) -> None:
    """At-least-once dead-lettering: the consumer queue keeps a message its dead-letter queue
    refused, counted as awaiting dead-lettering (the broker tries again every
    ``dead_letter_worker_publisher_confirm_timeout``, three minutes by default: the cluster
    test, tests/reliability/test_rabbitmq_cluster.py, sees them move once there is room)."""
    with make_world(infrastructure, LEDGERDESK_DEAD_LETTER_MAX_MESSAGES="2") as world:
        limits = topology.DeadLetterLimits.of(world)
        topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit, limits)
        info = queue_info(infrastructure, world.database_prefix, SUBSCRIPTION.queue)
        assert info["arguments"]["x-dead-letter-strategy"] == "at-least-once"
        sent = 10
        messages = [amqp.Message(f"m{n}") for n in range(sent)]
        publish(world.amqp_uri, "", SUBSCRIPTION.queue, messages)
        with Connection(world.amqp_uri, connect_timeout=5) as conn:
            channel = conn.channel()
            # A handler failing for good: rejected without requeue, so dead-lettered at once.
            while (message := channel.basic_get(SUBSCRIPTION.queue, no_ack=False)) is not None:
                channel.basic_reject(message.delivery_tag, requeue=False)
            channel.close()

        def awaiting() -> int:
            # The management API's figures lag by seconds: asked until they add up.
            found = queue_info(infrastructure, world.database_prefix, SUBSCRIPTION.queue)
            return found.get("messages_dlx") or 0

        # The quorum queue checks its length before it takes a message, and the dead-letter
        # worker keeps a few in flight, so it may take one or two past the limit; never all.
        wait_until(
            lambda: awaiting() + depth(world.amqp_uri, SUBSCRIPTION.dead_letter_queue) == sent,
            timeout=30,
            interval=1,
            what="every message dead-lettered or kept, none lost",
        )
        dead = depth(world.amqp_uri, SUBSCRIPTION.dead_letter_queue)
        assert 2 <= dead < sent
        assert awaiting() == sent - dead > 0
        assert depth(world.amqp_uri, SUBSCRIPTION.queue) == 0  # none handed to a consumer again


def test_a_dead_letter_older_than_the_ttl_is_gone(infrastructure) -> None:
    with make_world(infrastructure, LEDGERDESK_DEAD_LETTER_TTL_HOURS=TWO_SECONDS_IN_HOURS) as world:
        limits = topology.DeadLetterLimits.of(world)
        assert limits.ttl_ms == 2000
        topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit, limits)
        declare_rpc_queues(world.amqp_uri, ["things"], dead_letters=limits)
        publish(
            world.amqp_uri, topology.DEAD_LETTER_EXCHANGE, SUBSCRIPTION.queue, [amqp.Message("x")]
        )
        publish(world.amqp_uri, "", "rpc-things.dead", [amqp.Message("y")])

        # Confirmed, so each was in its queue; nothing consumes them, and the broker drops them.
        for queue in (SUBSCRIPTION.dead_letter_queue, "rpc-things.dead"):
            wait_until(
                lambda q=queue: depth(world.amqp_uri, q) == 0, timeout=30, what=f"{queue} empty"
            )


# ------------------------------------------------------------------ the upgrade


def old_event_dead_letters(
    amqp_uri: str, subscription: topology.Subscription, delivery_limit: int
) -> list[str]:
    """``<queue>.dead`` as older releases declared it (no arguments), holding three messages the
    broker dead-lettered (rejected by a consumer) and one forged to have died 30 days ago."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        topology.events_exchange(channel).declare()
        topology.dead_letter_exchange(channel).declare()
        Queue(
            subscription.dead_letter_queue,
            exchange=topology.dead_letter_exchange,
            routing_key=subscription.queue,
            durable=True,
        )(channel).declare()
        # The consumer queue as it was: dead-lettering at most once.
        current = subscription.kombu_queue(delivery_limit)
        older = {
            k: v
            for k, v in current.queue_arguments.items()
            if k not in ("x-dead-letter-strategy", "x-overflow")
        }
        Queue(current.name, bindings=current.bindings, durable=True, queue_arguments=older)(
            channel
        ).declare()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    publish(
        amqp_uri,
        "",
        subscription.queue,
        [amqp.Message(json.dumps({"n": n}), message_id=ids[n], delivery_mode=2) for n in range(3)],
    )
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        for _ in ids:
            message = wait_until(lambda: channel.basic_get(subscription.queue), what="a message")
            channel.basic_reject(message.delivery_tag, requeue=False)
    wait_until(lambda: depth(amqp_uri, subscription.dead_letter_queue) == 3, what="3 dead letters")
    long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=30)
    death = {"queue": subscription.queue, "reason": "rejected", "count": 1, "time": long_ago}
    publish(
        amqp_uri,
        "",
        subscription.dead_letter_queue,
        [amqp.Message("{}", message_id="long-dead", application_headers={"x-death": [death]})],
    )
    return ids


def old_rpc_dead_letters(amqp_uri: str, service: str) -> list[str]:
    """``rpc-<service>.dead`` as the previous release declared and filled it: a quorum queue
    without limits, holding requests whole (here an ``authenticate`` call with its API key)."""
    queue = f"rpc-{service}.dead"
    with Connection(amqp_uri, connect_timeout=5) as conn:
        Queue(queue, durable=True, queue_arguments={"x-queue-type": "quorum"})(
            conn.channel()
        ).declare()
    calls = [str(uuid.uuid4()) for _ in range(2)]
    body = json.dumps({"args": [API_KEY], "kwargs": {}})
    publish(
        amqp_uri,
        "",
        queue,
        [
            amqp.Message(
                body,
                content_type="application/json",
                correlation_id=call,
                type=f"{service}.authenticate",
                delivery_mode=2,
                application_headers={
                    "x-first-death-reason": "rejected",
                    "x-first-death-queue": f"rpc-{service}",
                    deadletters.DELIVERIES_HEADER: 1,
                    "x-ledgerdesk-rpc-routing-key": f"{service}.authenticate",
                    "nameko.call_id_stack": [f"gateway.api.{call}"],
                },
            )
            for call in calls
        ],
    )
    return calls


def test_prepare_gives_old_dead_letter_queues_their_limits_keeping_their_messages(
    infrastructure,
) -> None:
    with make_world(infrastructure) as world:
        vhost = world.database_prefix
        kept = old_event_dead_letters(world.amqp_uri, LEDGER, world.delivery_limit)
        calls = old_rpc_dead_letters(world.amqp_uri, "accounts")
        assert limits_of(queue_info(infrastructure, vhost, LEDGER.dead_letter_queue)) == {
            "x-message-ttl": None,
            "x-max-length": None,
            "x-overflow": None,
        }

        platform.prepare(world)

        expected = topology.DeadLetterLimits.of(world).queue_arguments()
        for name in (LEDGER.dead_letter_queue, "rpc-accounts.dead"):
            assert queue_info(infrastructure, vhost, name)["arguments"] == expected, name
        # The consumer queue an older release declared dead-letters at least once now.
        ledger = queue_info(infrastructure, vhost, LEDGER.queue)["arguments"]
        assert ledger["x-dead-letter-strategy"] == "at-least-once"
        assert not {
            n
            for n in queue_names(infrastructure, vhost)
            if n.endswith((".migrating", ".replacing"))
        }

        # The broker's dead letters are all there, as they were (the one past the TTL is not),
        # each with what is left of its two days, and still listed and replayable.
        events = peek(world.amqp_uri, LEDGER.dead_letter_queue)
        assert sorted(m.properties["message_id"] for m in events) == sorted(kept)
        for message in events:
            assert message.headers["x-death"][0]["reason"] == "rejected"
            assert 0 < int(message.properties["expiration"]) <= expected["x-message-ttl"]
        listed = deadletters.list_dead_letters(world.amqp_uri, LEDGER.queue)
        assert {item["message_id"] for item in listed} == set(kept)
        assert deadletters.replay_dead_letters(world.amqp_uri, LEDGER.queue, [kept[0]]) == 1
        [replayed] = [m for m in peek(world.amqp_uri, LEDGER.queue)]
        assert "expiration" not in replayed.properties  # a life afresh in the live queue

        # The requests are there too, without what they carried.
        requests = peek(world.amqp_uri, "rpc-accounts.dead")
        assert sorted(m.properties["correlation_id"] for m in requests) == sorted(calls)
        for message in requests:
            assert text(message.body) == ""
            assert API_KEY not in json.dumps(message.headers, default=str)
            assert message.properties["type"] == "accounts.authenticate"
            assert message.headers[deadletters.BODY_BYTES_HEADER] == len(
                json.dumps({"args": [API_KEY], "kwargs": {}})
            )
            assert message.headers[deadletters.CONTENT_TYPE_HEADER] == "application/json"
            assert "nameko.call_id_stack" not in message.headers

        # Once upgraded, preparing again moves nothing.
        platform.prepare(world)
        assert depth(world.amqp_uri, LEDGER.dead_letter_queue) == 2
        assert depth(world.amqp_uri, "rpc-accounts.dead") == 2


def test_replicas_starting_at_once_upgrade_a_queue_once_and_lose_nothing(world) -> None:
    """Every consumer declares its queues as it starts: replicas meeting an old dead-letter
    queue together replace it one at a time (the broker's exclusive queue is the lock)."""
    with Connection(world.amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        topology.dead_letter_exchange(channel).declare()
        Queue(
            SUBSCRIPTION.dead_letter_queue,
            exchange=topology.dead_letter_exchange,
            routing_key=SUBSCRIPTION.queue,
            durable=True,
        )(channel).declare()
    publish(
        world.amqp_uri,
        topology.DEAD_LETTER_EXCHANGE,
        SUBSCRIPTION.queue,
        [amqp.Message(str(n), delivery_mode=2) for n in range(500)],
    )
    limits = topology.DeadLetterLimits.of(world)
    failures: list[BaseException] = []

    def start() -> None:
        try:
            topology.declare(world.amqp_uri, [SUBSCRIPTION], world.delivery_limit, limits)
        except BaseException as exc:  # reported below, from the test's own thread
            failures.append(exc)

    replicas = [threading.Thread(target=start) for _ in range(4)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(120)
    assert failures == []
    assert sorted(
        int(m.body) for m in peek(world.amqp_uri, SUBSCRIPTION.dead_letter_queue)
    ) == list(range(500))


@pytest.mark.parametrize("kind", ["classic", "quorum"])
def test_dead_letters_a_replacement_cut_short_left_waiting_go_on_at_the_next_prepare(
    infrastructure, world, kind
) -> None:
    limits = topology.DeadLetterLimits.of(world)
    if kind == "classic":
        queue = SUBSCRIPTION.kombu_dead_letter_queue(limits)
        old = Queue(
            queue.name, exchange=queue.exchange, routing_key=queue.routing_key, durable=True
        )
    else:
        queue = rpc_dead_letter_queue("things", limits)
        old = Queue(queue.name, durable=True, queue_arguments={"x-queue-type": "quorum"})
    with Connection(world.amqp_uri, connect_timeout=5) as conn:
        topology.dead_letter_exchange(conn.channel()).declare()
        old(conn.channel()).declare()
    publish(world.amqp_uri, "", queue.name, [amqp.Message("held", delivery_mode=2)])
    # Cut short once the old queue went: its messages wait in the holding queue.
    with Connection(world.amqp_uri, connect_timeout=5) as conn:
        queue_replacement.hold(conn, queue.name, quorum=kind == "quorum", keep_routing_key=False)
    assert queue.name not in queue_names(infrastructure, world.database_prefix)

    with Connection(world.amqp_uri, connect_timeout=5) as conn:
        assert not queue_replacement.declare_dead_letter_queue(conn, queue, limits, resume=True)
    assert [text(m.body) for m in peek(world.amqp_uri, queue.name)] == ["held"]
    assert f"{queue.name}.migrating" not in queue_names(infrastructure, world.database_prefix)
