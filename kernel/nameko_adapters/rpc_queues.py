"""RPC queue administration: what an operator's ``prepare`` (and each service as it starts)
declares on the broker.

RPC queues (``rpc-<service>``) are quorum queues, so they survive the loss of the node that
declared them (``declare_rpc_queues`` creates them, and migrates classic ones, before services
start). Each has ``rpc-<service>.dead``, where the RPC consumer (``kernel.nameko_adapters.rpc``)
sets aside a request it cannot serve, without its body (``without_body``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import amqp
from kombu import Connection, Queue
from nameko.rpc import RPC_QUEUE_TEMPLATE, get_rpc_exchange

from kernel import deadletters, queue_replacement, topology

# Where a request waiting out a migration keeps the routing key nameko dispatches it by, and a
# request set aside the routing key it came with.
ROUTING_KEY_HEADER = queue_replacement.HELD_ROUTING_KEY_HEADER


class RpcQueueInUse(Exception):
    """A classic RPC queue still has consumers: processes of an older release still run."""


def rpc_queue(service: str, exchange: Any = None) -> Queue:
    """A service's RPC queue (nameko's name and binding) as a quorum queue: replicated on every
    node, so it outlives the node that declared it. Quorum queues are durable and shared."""
    return Queue(
        RPC_QUEUE_TEMPLATE.format(service),
        exchange=exchange if exchange is not None else get_rpc_exchange({}),
        routing_key=f"{service}.*",
        durable=True,
        auto_delete=False,
        exclusive=False,
        queue_arguments={"x-queue-type": "quorum"},
    )


def rpc_dead_letter_queue(
    service: str, limits: topology.DeadLetterLimits = topology.DEFAULT_DEAD_LETTER_LIMITS
) -> Queue:
    """Where a service's RPC consumer sets aside requests it cannot serve (a quorum queue, so a
    dead letter the broker confirmed outlives a node), reached through the default exchange,
    with the dead-letter queues' bounded life."""
    return Queue(
        RPC_QUEUE_TEMPLATE.format(service) + ".dead",
        durable=True,
        auto_delete=False,
        queue_arguments={"x-queue-type": "quorum", **limits.queue_arguments()},
    )


def declare_rpc_queues(
    amqp_uri: str,
    services: Iterable[str],
    resume: bool = True,
    dead_letters: topology.DeadLetterLimits = topology.DEFAULT_DEAD_LETTER_LIMITS,
    ssl: dict[str, Any] | None = None,
) -> list[str]:
    """Declare each service's RPC queue as a quorum queue, and its dead-letter queue
    (``rpc_dead_letter_queue``); safe to repeat, and run before any
    service starts (and by each service as it starts). A classic one left by an older release
    cannot be redeclared as quorum (PRECONDITION_FAILED), so it is replaced, losing nothing:
    the requests it holds wait in a holding queue (``<queue>.migrating``) while it is deleted
    and the quorum queue declared, then go to it with their own routing keys. A request sent in
    the moment between delete and declare finds no queue, and its caller gets an error (503)
    at once. Refuses (``RpcQueueInUse``) while old processes still consume the classic queue.
    A dead-letter queue without these ``dead_letters`` limits is replaced the same way
    (``queue_replacement.declare_dead_letter_queue``), and the requests it kept whole from older
    releases lose their bodies on the way. With ``resume``, requests a run cut short left in
    a holding queue go on too. Returns the RPC queues that were replaced."""
    replaced = []
    with Connection(amqp_uri, connect_timeout=5, ssl=ssl) as conn:
        conn.ensure_connection(max_retries=3)
        for service in services:
            queue = rpc_queue(service)
            try:
                queue(conn.channel()).declare()
            except amqp.exceptions.PreconditionFailed:
                _replace_classic_queue(conn, queue)
                queue(conn.channel()).declare()
                replaced.append(queue.name)
            if resume or queue.name in replaced:
                _requeue_held_requests(conn, queue)
            queue_replacement.declare_dead_letter_queue(
                conn, rpc_dead_letter_queue(service, dead_letters), dead_letters, resume, _emptied
            )
    return replaced


def _replace_classic_queue(conn: Connection, queue: Queue) -> None:
    try:
        queue_replacement.hold(conn, queue.name, quorum=False, keep_routing_key=True)
    except queue_replacement.QueueInUse as exc:
        raise RpcQueueInUse(
            f"{queue.name} is a classic queue still consumed by {exc.consumers} process(es) of "
            "an older release: stop them, then prepare again (docs/operations.md)"
        ) from None


def _requeue_held_requests(conn: Connection, queue: Queue) -> None:
    queue_replacement.release_held(
        conn,
        queue.name,
        queue.exchange.name,
        lambda message: message.headers.pop(ROUTING_KEY_HEADER),
    )


# What a request set aside keeps: why, from where, how often and when it was set aside, its
# method, size and content type, and ids to find its caller and trace by. Never its body (API
# keys sent to ``authenticate``, ticket text before redaction) nor any other header: it is never
# replayed (``deadletters.NotReplayable``), so a body would serve no one.
_SET_ASIDE_HEADERS = frozenset(
    {
        "x-first-death-reason",
        "x-first-death-queue",
        deadletters.DELIVERIES_HEADER,
        deadletters.BODY_BYTES_HEADER,
        deadletters.CONTENT_TYPE_HEADER,
        ROUTING_KEY_HEADER,
        "nameko.traceparent",
    }
)
_SET_ASIDE_PROPERTIES = ("message_id", "correlation_id", "type", "timestamp")
NO_BODY = {"content_type": "application/octet-stream", "content_encoding": "binary"}


def without_body(
    body: Any, properties: Mapping[str, Any], headers: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The headers and properties of a request's set-aside copy, which has no body."""
    kept = {k: v for k, v in headers.items() if k in _SET_ASIDE_HEADERS and v is not None}
    kept.setdefault(deadletters.BODY_BYTES_HEADER, len(body or b""))
    if properties.get("content_type"):
        kept.setdefault(deadletters.CONTENT_TYPE_HEADER, properties["content_type"])
    return kept, {k: properties[k] for k in _SET_ASIDE_PROPERTIES if properties.get(k) is not None}


def _emptied(message: amqp.Message) -> amqp.Message:
    """A request set aside by an older release, which kept its body, as this one sets it aside."""
    headers, properties = without_body(message.body, message.properties, message.headers or {})
    return amqp.Message(b"", application_headers=headers, delivery_mode=2, **NO_BODY, **properties)
