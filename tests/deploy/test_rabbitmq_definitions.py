"""deploy/rabbitmq/definitions.json is the topology the code declares: the expectations come
from services.platform.subscriptions(), kernel.topology and the RPC queues of
kernel.nameko_adapters.rpc_queues, so the file cannot drift from them, and a real broker confirms
that declaring the code's topology over the file changes nothing."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

from kernel import topology
from kernel.config import Settings
from kernel.nameko_adapters.rpc_queues import declare_rpc_queues, rpc_dead_letter_queue, rpc_queue
from kernel.testing import Infrastructure, make_world
from services import broker_definitions
from services.platform import RPC_SERVERS, subscriptions

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"


def definitions() -> dict[str, Any]:
    return json.loads(DEFINITIONS.read_text())


def expected_queues(delivery_limit: int) -> dict[str, dict[str, Any]]:
    limits = topology.DeadLetterLimits.of(Settings())
    queues: dict[str, dict[str, Any]] = {}
    for subscription in subscriptions():
        queues[subscription.queue] = subscription.kombu_queue(delivery_limit).queue_arguments
        dead = subscription.kombu_dead_letter_queue(limits)
        queues[dead.name] = dead.queue_arguments
    for service in RPC_SERVERS:
        queues[rpc_queue(service).name] = rpc_queue(service).queue_arguments
        dead = rpc_dead_letter_queue(service, limits)
        queues[dead.name] = dead.queue_arguments
    return queues


def test_the_file_is_the_one_the_code_makes() -> None:
    """``python -m services.broker_definitions --write`` after a change of the topology."""
    assert DEFINITIONS.read_text() == broker_definitions.render()


def test_every_dead_letter_queue_has_a_bounded_life_and_refuses_rather_than_drops() -> None:
    """A dead letter can hold what a service was sent (an access event's IP address, say): the
    broker drops it after the TTL. Past the length limit a quorum dead-letter queue refuses
    more, and the consumer queues dead-letter at least once, so what it refuses waits in them:
    no failure is pushed out unseen, and none is lost with a node."""
    defaults = Settings()
    queues = {q["name"]: q["arguments"] for q in definitions()["queues"]}
    dead = {name: arguments for name, arguments in queues.items() if name.endswith(".dead")}
    assert len(dead) == len(subscriptions()) + len(RPC_SERVERS)
    for name, arguments in dead.items():
        assert arguments["x-queue-type"] == "quorum", name
        assert arguments["x-message-ttl"] == defaults.dead_letter_ttl_hours * 3_600_000, name
        assert arguments["x-max-length"] == defaults.dead_letter_max_messages, name
        assert arguments["x-overflow"] == "reject-publish", name
    for subscription in subscriptions():
        arguments = queues[subscription.queue]
        assert arguments["x-dead-letter-strategy"] == "at-least-once", subscription.queue
        assert arguments["x-overflow"] == "reject-publish", subscription.queue


def expected_bindings() -> set[tuple[str, str, str]]:
    found = set()
    for subscription in subscriptions():
        for key in subscription.bindings:
            found.add((topology.EVENTS_EXCHANGE, subscription.queue, key))
        found.add(
            (topology.DEAD_LETTER_EXCHANGE, subscription.dead_letter_queue, subscription.queue)
        )
    for service in RPC_SERVERS:
        queue = rpc_queue(service)
        found.add((queue.exchange.name, queue.name, queue.routing_key))
    return found


def test_every_queue_of_the_code_is_defined_with_its_arguments() -> None:
    defined = definitions()
    queues = {q["name"]: q for q in defined["queues"]}
    assert {name: q["arguments"] for name, q in queues.items()} == expected_queues(
        Settings().delivery_limit
    )
    assert all(q["durable"] and not q["auto_delete"] for q in queues.values())
    assert {q["vhost"] for q in queues.values()} == {"/"}


def test_the_exchanges_and_bindings_are_the_codes() -> None:
    defined = definitions()
    exchanges = {e["name"]: (e["type"], e["durable"]) for e in defined["exchanges"]}
    rpc_exchange = rpc_queue("any").exchange
    assert exchanges == {
        topology.EVENTS_EXCHANGE: (topology.events_exchange.type, True),
        topology.DEAD_LETTER_EXCHANGE: (topology.dead_letter_exchange.type, True),
        rpc_exchange.name: (rpc_exchange.type, True),
    }
    bindings = [
        (b["source"], b["destination"], b["routing_key"])
        for b in defined["bindings"]
        if b["destination_type"] == "queue"
    ]
    assert len(bindings) == len(defined["bindings"]) == len(set(bindings))
    assert set(bindings) == expected_bindings()


def queues_on(infrastructure: Infrastructure, vhost: str) -> dict[str, tuple[str, dict]]:
    listed = infrastructure.management("GET", f"/api/queues/{urllib.parse.quote(vhost, safe='')}")
    return {q["name"]: (q.get("type", "classic"), q["arguments"]) for q in listed.json()}


def test_a_broker_that_loaded_the_definitions_accepts_the_codes_topology_unchanged(
    infrastructure: Infrastructure,
) -> None:
    limit = Settings().delivery_limit
    with make_world(infrastructure, LEDGERDESK_DELIVERY_LIMIT=str(limit)) as world:
        vhost = world.database_prefix  # the world's vhost has the same name
        body = {k: definitions()[k] for k in ("exchanges", "queues", "bindings", "policies")}
        infrastructure.management("POST", f"/api/definitions/{vhost}", json=body)
        loaded = queues_on(infrastructure, vhost)
        assert {name: args for name, (_, args) in loaded.items()} == expected_queues(limit)
        assert {kind for name, (kind, _) in loaded.items() if not name.endswith(".dead")} == {
            "quorum"
        }

        # A queue declared with other arguments is replaced by the code's, so this passing
        # means the file and the code agree on every argument of every queue (an RPC queue of
        # another type would be migrated, and named in the result).
        topology.declare(world.amqp_uri, subscriptions(), world.delivery_limit)
        assert declare_rpc_queues(world.amqp_uri, RPC_SERVERS) == []
        assert queues_on(infrastructure, vhost) == loaded

        # ... and a different delivery limit does change them, so the step above could fail.
        topology.declare(world.amqp_uri, subscriptions(), limit + 1)
        changed = queues_on(infrastructure, vhost)
        consumer = subscriptions()[0].queue
        assert changed[consumer][1]["x-delivery-limit"] == limit + 1
        # A dead-letter queue with other limits is replaced rather than refused: the arguments
        # compared above are what hold those to the code.


def _owner(queue: str) -> str:
    """The process whose queue it is: ``<process>.*``, or ``rpc-<service>`` and its dead letters."""
    return queue.removeprefix("rpc-").split(".")[0]


def test_each_process_has_a_user_without_a_password_and_only_its_own_queues() -> None:
    """One user per process; none may consume, bind to or delete another's queue, and only the
    gateway (the operators' dead-letter routes) reads every dead-letter queue. No password is in
    the file: the operator's own users file, imported after it, gives one."""
    loaded = definitions()
    users = {u["name"]: u for u in loaded["users"]}
    assert set(users) == {broker_definitions.user_of(p) for p in broker_definitions.PROCESSES}
    assert all(u["password_hash"] == "" and u["tags"] == [] for u in users.values())
    grants = {p["user"]: p for p in loaded["permissions"]}
    queues = [q["name"] for q in loaded["queues"]]
    for process in broker_definitions.PROCESSES:
        granted = broker_definitions.Permissions(
            **{
                k: grants[broker_definitions.user_of(process)][k]
                for k in ("configure", "write", "read")
            }
        )
        assert granted == broker_definitions.permissions(process)
        for queue in queues:
            own = _owner(queue) == process
            assert granted.allows("configure", queue) == own, (process, queue)
            assert granted.allows("write", queue) == own, (process, queue)
            reads = own or (process == "gateway" and queue.endswith(".dead"))
            assert granted.allows("read", queue) == reads, (process, queue)
        # It publishes events and RPC requests; it may neither delete the events and
        # dead-letter exchanges nor bind from them, nor forge a dead letter.
        assert granted.allows("write", topology.EVENTS_EXCHANGE)
        assert granted.allows("write", "nameko-rpc")
        for exchange in (topology.EVENTS_EXCHANGE, topology.DEAD_LETTER_EXCHANGE):
            assert not granted.allows("configure", exchange), (process, exchange)
            assert not granted.allows("read", exchange), (process, exchange)
        assert not granted.allows("write", topology.DEAD_LETTER_EXCHANGE)
        # Not a queue of another process's by a longer name.
        assert not granted.allows("read", f"x{process}.privacy")
    # On the events exchange, each publishes its own events only.
    topics = {(t["user"], t["exchange"]): t for t in loaded["topic_permissions"]}
    for process in broker_definitions.PROCESSES:
        topic = topics[(broker_definitions.user_of(process), topology.EVENTS_EXCHANGE)]
        for other in broker_definitions.PROCESSES:
            key = f"{other}.something_happened"
            assert bool(re.search(topic["write"], key)) == (other == process), (process, key)
        # It binds with its subscriptions' keys, and never with "#" unless it is audit's.
        own = [s for s in subscriptions() if s.queue.startswith(f"{process}.")]
        for key in {k for s in own for k in s.bindings}:
            assert re.search(topic["read"], key), (process, key)
        hears_all = any("#" in s.bindings for s in own)
        assert bool(re.search(topic["read"], "#")) == hears_all, process


def test_no_process_may_configure_or_bind_from_the_rpc_exchange_nor_own_a_reply_queue() -> None:
    """Every call takes its reply by direct reply-to and every RPC consumer finds its queue
    declared (kernel.nameko_adapters): no user may configure the RPC exchange, which would let it
    delete it and so end every call, nor bind from it, nor declare a reply queue of nameko's
    standalone client; each may still publish requests to it and consume its replies."""
    rpc_exchange = rpc_queue("any").exchange.name
    reply_queue = "rpc.reply-standalone_rpc_proxy-0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    loaded = definitions()
    grants = {p["user"]: p for p in loaded["permissions"]}
    topics = {(t["user"], t["exchange"]): t for t in loaded["topic_permissions"]}
    for process in broker_definitions.PROCESSES:
        user = broker_definitions.user_of(process)
        granted = broker_definitions.Permissions(
            **{k: grants[user][k] for k in ("configure", "write", "read")}
        )
        assert not granted.allows("configure", rpc_exchange), process
        assert not granted.allows("read", rpc_exchange), process
        assert granted.allows("write", rpc_exchange), process
        for operation in ("configure", "write", "read"):
            assert not granted.allows(operation, reply_queue), (process, operation)
        assert granted.allows("read", broker_definitions.DIRECT_REPLY_TO), process
        assert granted.allows("write", broker_definitions.DEFAULT_EXCHANGE), process
        # Nothing to bind with on the RPC exchange: not its own requests' key, nor a reply key.
        topic = topics[(user, rpc_exchange)]
        for key in (f"{process}.*", "#", "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"):
            assert not re.search(topic["read"], key), (process, key)


_CALL = re.compile(r"self\.(accounts|tickets|billing|audit|retention)\.([a-z_]+)")


def test_every_rpc_call_a_service_makes_is_one_its_user_may_publish() -> None:
    """The calls a service's code makes through its proxies (``self.<service>.<method>``) are in
    ``RPC_CALLS``, so none is refused in a deployment with one user per process; and a service
    may not call a method it does not use."""
    root = DEFINITIONS.parents[2]
    for process, calls in broker_definitions.RPC_CALLS.items():
        made = {
            f"{target}.{method}"
            for path in (root / "services" / process).glob("*.py")
            for target, method in _CALL.findall(path.read_text())
        }
        assert made <= set(calls), (process, made - set(calls))
        (rpc,) = [
            t for t in broker_definitions.topic_permissions(process) if t.exchange == "nameko-rpc"
        ]
        for call in calls:
            assert re.search(rpc.write, call), (process, call)
        assert not re.search(rpc.write, "accounts.issue_api_key"), process
        assert re.search(rpc.write, "retention.forgetting_log"), process
