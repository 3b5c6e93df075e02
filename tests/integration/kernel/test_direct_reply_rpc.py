"""RPC by direct reply-to against the real broker: answers and errors reach their callers, many
concurrent calls of one process each get their own reply, an unknown service and a silent one
are ``ServiceUnavailable``, a lost connection fails its calls in flight and the next call
connects again, and the responder still answers callers with a reply queue (rolling deploy).
A standalone caller (``standalone_rpc``) and a responder under a broker user that may configure
nothing on the RPC exchange, nor any reply queue, still call and answer."""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Iterator

import amqp
import eventlet
import eventlet.event
import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import dummy, entrypoint_hook

from kernel.config import Settings
from kernel.errors import NotFound, ServiceUnavailable
from kernel.nameko_adapters.proxy import (
    DIRECT_REPLY_TO,
    ReplyQueueRpcProxy,
    TimedRpcProxy,
    _DirectReplies,
    standalone_rpc,
)
from kernel.nameko_adapters.rpc import rpc
from kernel.nameko_adapters.rpc_queues import declare_rpc_queues
from kernel.testing import Infrastructure, wait_until


class Echo:
    name = "echo"

    @rpc
    def echo(self, value: object) -> object:
        return value

    @rpc
    def slowly(self, seconds: float) -> str:
        eventlet.sleep(seconds)
        return "late"

    @rpc
    def missing(self) -> None:
        raise NotFound("no such thing")


class Caller:
    name = "caller"

    echo = TimedRpcProxy("echo")
    nobody = TimedRpcProxy("nobody")
    old_echo = ReplyQueueRpcProxy("echo")

    @dummy
    def call(self, method: str, *args: object) -> object:
        return getattr(self.echo, method)(*args)

    @dummy
    def call_nobody(self) -> object:
        return self.nobody.echo(1)

    @dummy
    def call_old(self, value: object) -> object:
        return self.old_echo.echo(value)


@pytest.fixture
def config(world):
    # Long enough that a call in flight outlives closing its connection under load.
    config = world.with_overrides(rpc_timeout=20.0).nameko_config()
    config["max_workers"] = 60
    return config


@pytest.fixture
def echo(container_factory, config):
    container = container_factory(Echo, config)
    container.start()
    return container


@pytest.fixture
def caller(container_factory, config):
    container = container_factory(Caller, config)
    container.start()
    return container


def test_answers_and_domain_errors_reach_the_caller(echo, caller):
    with entrypoint_hook(caller, "call") as call:
        assert call("echo", {"n": [1, "two"]}) == {"n": [1, "two"]}
        with pytest.raises(NotFound):
            call("missing")


def _worker_call(container, method_name: str, *args: object) -> object:
    """Runs an entrypoint's method in a worker and returns its own result (nameko's
    ``entrypoint_hook`` hands concurrent calls of one method whichever result comes first)."""
    (entrypoint,) = (e for e in container.entrypoints if e.method_name == method_name)
    done = eventlet.event.Event()

    def handle_result(worker_ctx, result, exc_info):
        done.send((result, exc_info))
        return result, exc_info

    container.spawn_worker(entrypoint, args, {}, handle_result=handle_result)
    result, exc_info = done.wait()
    if exc_info is not None:
        raise exc_info[1]
    return result


def test_many_concurrent_calls_of_one_process_each_get_their_own_reply(echo, caller):
    def calls(n: int) -> list[object]:
        return [_worker_call(caller, "call", "echo", f"{n}-{i}") for i in range(10)]

    pool = eventlet.GreenPool(50)
    results = list(pool.imap(calls, range(50)))
    assert results == [[f"{n}-{i}" for i in range(10)] for n in range(50)]
    # All of them on the one connection of the container, its calls all settled.
    (replies,) = (e for e in caller.extensions if isinstance(e, _DirectReplies))
    assert replies._waiting == {}


def test_requests_ask_for_direct_reply_to_and_old_callers_keep_their_queue(echo, caller):
    # The responder's choice of exchange depends on this address: read it where it serves.
    seen: list[str] = []
    (consumer,) = (e for e in echo.extensions if type(e).__name__ == "_QuorumRpcConsumer")
    handle = consumer.handle_message

    def spy(body, message):
        seen.append(message.properties["reply_to"])
        return handle(body, message)

    consumer.handle_message = spy
    try:
        with entrypoint_hook(caller, "call") as call:
            assert call("echo", "y") == "y"
        with entrypoint_hook(caller, "call_old") as call_old:
            assert call_old("z") == "z"
    finally:
        del consumer.handle_message
    assert seen[0].startswith(DIRECT_REPLY_TO + ".")
    assert not seen[1].startswith(DIRECT_REPLY_TO)


def test_a_service_that_never_declared_its_queue_is_unavailable_at_once(caller):
    with entrypoint_hook(caller, "call_nobody") as call_nobody:
        with pytest.raises(ServiceUnavailable, match="nobody is not running"):
            call_nobody()


def test_a_service_that_does_not_answer_is_unavailable_after_the_timeout(container_factory, world):
    declare_rpc_queues(world.amqp_uri, ["echo"], resume=False)  # its queue, no process
    config = world.with_overrides(rpc_timeout=0.5).nameko_config()
    caller = container_factory(Caller, config)
    caller.start()
    with entrypoint_hook(caller, "call") as call:
        with pytest.raises(ServiceUnavailable, match="did not answer within 0.5s"):
            call("echo", 1)


def _close_connection_of(replies: _DirectReplies, infrastructure, vhost: str) -> None:
    """The broker closes the caller's connection, as when its node goes away."""
    assert replies._connection is not None
    port = replies._connection.connection.sock.getsockname()[1]
    quoted = urllib.parse.quote(vhost, safe="")

    def ours() -> str | None:
        for c in infrastructure.management("GET", f"/api/vhosts/{quoted}/connections").json():
            if c.get("peer_port") == port:
                return c["name"]
        return None

    name = wait_until(ours, timeout=30, interval=0.5, what="the caller's connection listed")
    infrastructure.management("DELETE", f"/api/connections/{urllib.parse.quote(name)}")


def test_a_lost_connection_fails_its_calls_in_flight_and_the_next_call_reconnects(
    echo, caller, world, infrastructure
):
    (replies,) = (e for e in caller.extensions if isinstance(e, _DirectReplies))
    assert _worker_call(caller, "call", "echo", "before") == "before"
    in_flight = eventlet.spawn(_worker_call, caller, "call", "slowly", 15)
    wait_until(lambda: replies._waiting, timeout=10, what="the call in flight")
    _close_connection_of(replies, infrastructure, world.database_prefix)
    # Its reply had nowhere to go: the caller hears so rather than waiting out the timeout.
    with pytest.raises(ServiceUnavailable, match="the message broker is unreachable"):
        in_flight.wait()
    assert _worker_call(caller, "call", "echo", "after") == "after"


def test_the_responder_still_answers_a_caller_with_a_reply_queue(echo, caller):
    with entrypoint_hook(caller, "call_old") as call_old:
        assert call_old({"old": True}) == {"old": True}


@pytest.fixture
def configures_nothing(world: Settings, infrastructure: Infrastructure) -> Iterator[Settings]:
    """The world's settings as a broker user that may publish and consume anything but configure
    (declare, delete) nothing: not the RPC exchange, nor a reply queue of its own."""
    vhost = urllib.parse.quote(world.database_prefix, safe="")
    name, password = f"{world.database_prefix}.configures-nothing", secrets.token_urlsafe(16)
    infrastructure.management("PUT", f"/api/users/{name}", json={"password": password, "tags": ""})
    try:
        infrastructure.management(
            "PUT",
            f"/api/permissions/{vhost}/{name}",
            json={"configure": "^$", "write": ".*", "read": ".*"},
        )
        base = urllib.parse.urlsplit(infrastructure.amqp_base)
        uri = (
            f"amqp://{urllib.parse.quote(name, safe='')}:{password}"
            f"@{base.hostname}:{base.port or 5672}/{world.database_prefix}"
        )
        yield world.with_overrides(amqp_uri=uri)
    finally:
        infrastructure.management("DELETE", f"/api/users/{name}")


def _queues_and_exchanges(infrastructure: Infrastructure, vhost: str) -> set[str]:
    quoted = urllib.parse.quote(vhost, safe="")
    return {
        f"{kind}:{entity['name']}"
        for kind in ("queues", "exchanges")
        for entity in infrastructure.management("GET", f"/api/{kind}/{quoted}").json()
    }


def test_a_standalone_call_declares_nothing_and_needs_no_configure_permission(
    container_factory, world, configures_nothing, infrastructure
):
    # The prepare job's part, as the administrator: the RPC exchange, echo's queues.
    declare_rpc_queues(world.amqp_uri, ["echo"], resume=False)
    before = _queues_and_exchanges(infrastructure, world.database_prefix)
    # Its RPC consumer too finds its queue rather than declaring the exchange.
    echo = container_factory(Echo, configures_nothing.nameko_config())
    echo.start()
    with standalone_rpc(configures_nothing) as rpc:
        assert rpc.echo.echo({"n": [1, "two"]}) == {"n": [1, "two"]}
        with pytest.raises(NotFound):
            rpc.echo.missing()
        with pytest.raises(ServiceUnavailable, match="nobody is not running"):
            rpc.nobody.echo(1)
    assert _queues_and_exchanges(infrastructure, world.database_prefix) == before
    # nameko's own standalone client is refused by this user: it declares the RPC exchange.
    with pytest.raises(amqp.exceptions.AccessRefused):
        with ClusterRpcProxy(configures_nothing.rpc_client_config(), timeout=5) as cluster:
            cluster.echo.echo(1)


def test_a_standalone_call_not_answered_in_time_is_unavailable(world):
    declare_rpc_queues(world.amqp_uri, ["echo"], resume=False)  # its queue, no process
    with standalone_rpc(world.with_overrides(rpc_timeout=0.5)) as rpc:
        with pytest.raises(ServiceUnavailable, match="echo did not answer within 0.5s"):
            rpc.echo.echo(1)
