"""The distributed case: a three-node RabbitMQ cluster on this machine (loopback ports, quorum
queues replicated on all three). One node is stopped under load and started again: no accepted
write is lost, and clients connected to it reconnect to the surviving nodes.

Every process gets the three nodes as failover URLs (``LEDGERDESK_AMQP_URI`` holds them
``;``-separated; kombu tries them in turn). How to run it: docs/operations.md.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator

import amqp
import pytest
from kombu import Connection

from kernel import topology
from kernel.testing import Infrastructure, free_port, make_world, wait_until, world_env
from services import platform
from tests.e2e.conftest import Stack
from tests.reliability.load import (
    FAST,
    TicketLoad,
    assert_accepted_writes_kept,
    ready,
    ticket_writer,
    wait_for_progress,
)
from tests.reliability.nodes import RabbitNode, rabbit_cluster
from tests.support.recorder import SUBSCRIPTION

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RabbitNode]]:
    with rabbit_cluster(3) as nodes:
        yield nodes


@contextlib.contextmanager
def cluster_stack(nodes: list[RabbitNode], database_url: str) -> Iterator[Stack]:
    """A whole platform whose every process knows all three nodes, the first one first."""
    port = free_port()
    own = nodes[0].infrastructure(database_url)
    # An RPC in flight when its node stops waits out the timeout: at FAST's 3 s, clients and
    # relays retrying through a failover give up and retry so often that, on two cores, the
    # stack sometimes made no progress within the test's patience. This test is about moving
    # to the survivors, so it keeps the 10 s default it always ran with (before settings were
    # passed whole to spawned stacks, FAST's timeout never reached them).
    overrides = {**FAST, "LEDGERDESK_RPC_TIMEOUT": "10"}
    with make_world(own, LEDGERDESK_GATEWAY_PORT=str(port), **overrides) as world:
        vhost = world.database_prefix
        settings = world.with_overrides(
            amqp_uri=";".join(f"{node.amqp_base}/{vhost}" for node in nodes)
        )
        platform.prepare(settings)
        processes = platform.start_processes(world_env(settings))
        url = f"http://127.0.0.1:{port}"
        try:
            assert platform.wait_until_ready(url, processes, timeout=90), "no stack"
            yield Stack(settings, url, processes)
        finally:
            platform.stop_processes(processes)


def connected_nodes(watch: Infrastructure, vhost: str) -> set[str]:
    connections = watch.management("GET", "/api/connections").json()
    return {c["node"] for c in connections if c.get("vhost") == vhost}


def stop_a_node_under_load(
    stack: Stack, nodes: list[RabbitNode], victim: RabbitNode, database_url: str, patience: float
) -> None:
    watch = next(n for n in nodes if n is not victim).infrastructure(database_url)
    vhost = stack.settings.database_prefix
    quoted = urllib.parse.quote(vhost, safe="")
    # Quorum queues are replicated on every node, so losing one loses no message.
    queues = [s.queue for s in platform.subscriptions()] + [f"rpc-{s}" for s in platform.SERVICES]
    for queue in queues:
        info = watch.management("GET", f"/api/queues/{quoted}/{queue}").json()
        assert sorted(info["members"]) == sorted(n.name for n in nodes), queue
    # The first URL is everyone's first choice (the statistics lag a few seconds). On a loaded
    # machine a connection whose first attempt timed out goes on to the next URL and stays
    # there, so the first node need not hold every connection; whatever the victim holds must
    # have left it once it stops.
    first = nodes[0].name
    before = wait_until(
        lambda: (found := connected_nodes(watch, vhost)) and first in found and found,
        timeout=30,
        what=f"connections on {first}",
    )

    tenant_id, key, contact_id = ticket_writer(stack)
    with TicketLoad(stack.url, key, contact_id, clients=8) as load:
        wait_for_progress(load, 100)
        load.outcomes.phase = f"{victim.name} stopped"
        victim.stop_app()
        try:
            wait_for_progress(load, 150, timeout=patience, what="writes with a node down")

            def on_survivors() -> set[str] | None:
                found = connected_nodes(watch, vhost)
                return found if found and victim.name not in found else None

            moved = wait_until(
                on_survivors,
                timeout=60,
                what="every connection on the surviving nodes",
            )
        finally:
            victim.start_app()
        load.outcomes.phase = f"{victim.name} back"
        wait_for_progress(load, 100, timeout=120, what="writes after it returned")
        wait_until(lambda: ready(stack), timeout=60, what="readiness")
    outcomes = load.outcomes
    print(
        f"\nconnections on {sorted(before)}; {victim.name} stopped; then on {sorted(moved)}: "
        f"{outcomes.summary()}"
    )
    assert outcomes.unexpected == {}, outcomes.summary()
    assert outcomes.hangs == 0 and outcomes.refused == 0, outcomes.summary()
    assert_accepted_writes_kept(stack.settings, tenant_id, outcomes.accepted)


@pytest.mark.timeout(500)
def test_a_node_no_client_uses_stopped_under_load_loses_nothing(infrastructure, cluster):
    """Quorum queues lose a member (perhaps their leader) and carry on."""
    with cluster_stack(cluster, infrastructure.database_url) as stack:
        stop_a_node_under_load(stack, cluster, cluster[2], infrastructure.database_url, 180)


@pytest.mark.timeout(500)
def test_the_node_every_client_uses_stopped_under_load_they_move_to_the_others(
    infrastructure, cluster
):
    """Every process reconnects to a survivor and declares its queues there: the RPC queues
    are quorum queues like the consumers' (a classic one could not be declared while its node
    is away), and each caller's reply queue is transient (it went with the node)."""
    with cluster_stack(cluster, infrastructure.database_url) as stack:
        stop_a_node_under_load(stack, cluster, cluster[0], infrastructure.database_url, 30)


def _take_all(amqp_uri: str, queue: str, taken: list[str] | None = None) -> list[str]:
    """Every message in ``queue``, appended to ``taken`` as it comes (taken without an ack, a
    message is the caller's even if a later get fails)."""
    taken = [] if taken is None else taken
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            taken.append(message.body.decode() if isinstance(message.body, bytes) else message.body)
        channel.close()
    return taken


@pytest.mark.timeout(400)
def test_dead_letters_outlive_their_leader_stopping_while_their_full_queue_refuses_them(
    infrastructure, cluster
):
    """At-least-once dead-lettering on a cluster: what a full dead-letter queue refused waits in
    its consumer queue, the node leading both queues stops, and once there is room every dead
    letter arrives, none dropped, none twice (at-most-once would lose them on the way)."""
    # The broker tries refused dead letters again after this long (three minutes by default).
    for node in cluster:
        for key in (
            "dead_letter_worker_publisher_confirm_timeout",
            "dead_letter_worker_publisher_confirm_timeout_ms",
        ):
            node.ctl("eval", f"application:set_env(rabbit, {key}, 2000).")
    leader, survivor = cluster[0], cluster[1]
    own = leader.infrastructure(infrastructure.database_url)
    with make_world(own, LEDGERDESK_DEAD_LETTER_MAX_MESSAGES="3") as world:
        vhost = world.database_prefix
        on_leader, on_survivor = f"{leader.amqp_base}/{vhost}", f"{survivor.amqp_base}/{vhost}"
        limits = topology.DeadLetterLimits.of(world)
        # Declared through the first node, which leads both queues.
        topology.declare(on_leader, [SUBSCRIPTION], world.delivery_limit, limits)
        bodies = [f"failing {n}" for n in range(10)]
        with Connection(on_leader, connect_timeout=5) as conn:
            channel = conn.default_channel
            channel.confirm_select()
            for body in bodies:
                channel.basic_publish_confirm(amqp.Message(body), "", SUBSCRIPTION.queue)
            # A handler failing for good: rejected without requeue, so dead-lettered at once.
            while (message := channel.basic_get(SUBSCRIPTION.queue, no_ack=False)) is not None:
                channel.basic_reject(message.delivery_tag, requeue=False)
        taken: list[str] = []
        leader.stop_app()
        try:

            def all_arrived() -> bool:
                try:
                    _take_all(on_survivor, SUBSCRIPTION.dead_letter_queue, taken)
                except amqp.exceptions.InternalError:
                    # "noproc": the survivors are still electing the queue's new leader, a
                    # moment a client rides out by asking again.
                    return False
                return len(taken) >= len(bodies)

            wait_until(all_arrived, timeout=120, interval=1, what="every dead letter")
        finally:
            leader.start_app()
        assert sorted(taken) == sorted(bodies)
        assert _take_all(on_survivor, SUBSCRIPTION.queue) == []
