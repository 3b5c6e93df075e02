"""Replacing a queue declared with other arguments, losing none of its messages.

RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED). To change them,
the queue's messages wait in ``<queue>.migrating`` (``hold``) while it is deleted and declared
again, then move on (``release_held``); each message is acknowledged only once the broker
confirmed its copy (``move_messages``), so a crash duplicates and never loses. One process at a
time replaces a queue (``replacing``).

A dead-letter queue declared without its limits (or with others) is replaced by
``declare_dead_letter_queue``, which ``kernel.topology.declare`` and
``kernel.nameko_adapters.rpc_queues.declare_rpc_queues`` call; the latter also turns the classic
RPC queues of an older release into quorum queues through ``hold`` and ``release_held``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import amqp
from kombu import Connection, Queue

if TYPE_CHECKING:
    # Only a type here: kernel.topology imports this module to declare dead-letter queues.
    from kernel.topology import DeadLetterLimits

log = logging.getLogger(__name__)

# Where a message waiting out a queue's replacement keeps the routing key it came with (an RPC
# request is dispatched by it). The name is older than its general use: messages a replacement
# cut short left waiting carry it.
HELD_ROUTING_KEY_HEADER = "x-ledgerdesk-rpc-routing-key"
# How long a process waits for another to finish replacing a queue.
REPLACING_WAIT_SECONDS = 120.0


class QueueInUse(Exception):
    """A queue to be replaced still has consumers."""

    def __init__(self, queue: str, consumers: int):
        super().__init__(f"{queue} is still consumed by {consumers} process(es)")
        self.queue = queue
        self.consumers = consumers


def holding_queue(queue: str) -> str:
    return f"{queue}.migrating"


def move_messages(
    channel: Any,
    source: str,
    exchange: str,
    routing_key: Callable[[amqp.Message], str],
    keep_routing_key: bool,
    copy: Callable[[amqp.Message], amqp.Message | None] | None = None,
    user_id: str | None = None,
) -> int:
    """Move every message of ``source`` with its body and properties (or what ``copy`` makes of
    it; None drops it), each acknowledged only after the broker confirmed its copy (a crash
    between the two duplicates, never loses). Returns how many were taken."""
    moved = 0
    while True:
        try:
            message = channel.basic_get(source, no_ack=False)
        except amqp.exceptions.NotFound:
            return moved
        if message is None:
            return moved
        headers = message.properties["application_headers"] = dict(message.headers or {})
        if keep_routing_key:
            headers[HELD_ROUTING_KEY_HEADER] = message.delivery_info["routing_key"]
        key = routing_key(message)
        # Its first publisher's ``user_id``, which the broker refuses from the mover: the copy
        # carries the mover's own, or none (kernel.broker_users).
        message.properties.pop("user_id", None)
        if user_id is not None:
            message.properties["user_id"] = user_id
        moving: amqp.Message | None = amqp.Message(message.body, **message.properties)
        if copy is not None:
            moving = copy(moving)
        if moving is not None:
            channel.basic_publish_confirm(
                moving, exchange=exchange, routing_key=key, mandatory=True
            )
        channel.basic_ack(message.delivery_tag)
        moved += 1


def hold(conn: Connection, queue: str, quorum: bool, keep_routing_key: bool) -> None:
    """Move every message of ``queue`` into its holding queue, then delete ``queue``; refuses
    (``QueueInUse``) while it has consumers. A classic queue is deleted only if nothing came in
    since the move (else the move goes on); a quorum queue cannot be deleted "if empty", so what
    reaches it between the move and the delete is lost, and logged."""
    holding = holding_queue(queue)
    channel = conn.channel()
    # Classic: a quorum queue cannot be deleted "if empty", and this one lives for moments.
    channel.queue_declare(holding, durable=True, auto_delete=False)
    while True:
        try:
            _, _, consumers = channel.queue_declare(queue, passive=True)
        except amqp.exceptions.NotFound:
            return  # another process replaced it meanwhile
        if consumers:
            raise QueueInUse(queue, consumers)
        move_messages(
            channel, queue, "", lambda message: holding, keep_routing_key, user_id=conn.userid
        )
        if quorum:
            lost = channel.queue_delete(queue)
            if lost:
                log.warning("%d message(s) reached %s while it was replaced: lost", lost, queue)
            return
        try:
            # Only if nothing came in since the move, and no consumer appeared.
            channel.queue_delete(queue, if_unused=True, if_empty=True)
            return
        except (amqp.exceptions.PreconditionFailed, amqp.exceptions.NotFound):
            channel = conn.channel()


def release_held(
    conn: Connection,
    queue: str,
    exchange: str,
    routing_key: Callable[[amqp.Message], str],
    copy: Callable[[amqp.Message], amqp.Message | None] | None = None,
    unbind: Sequence[tuple[str, str]] = (),
) -> int:
    """Move what waits in ``queue``'s holding queue on (through ``exchange``), then delete the
    holding queue if it is empty; first unbound from ``unbind`` (exchange, routing key pairs),
    which the queue itself is bound to again. Returns how many were taken."""
    holding = holding_queue(queue)
    channel = conn.channel()
    try:
        channel.queue_declare(holding, passive=True)
    except amqp.exceptions.NotFound:
        return 0
    for source, key in unbind:
        channel.queue_unbind(holding, source, key)
    moved = move_messages(channel, holding, exchange, routing_key, False, copy, conn.userid)
    with contextlib.suppress(amqp.exceptions.PreconditionFailed, amqp.exceptions.NotFound):
        channel.queue_delete(holding, if_empty=True)
    return moved


@contextlib.contextmanager
def replacing(conn: Connection, queue: str) -> Iterator[None]:
    """One process at a time replaces ``queue``; the others wait. The lock is an exclusive queue:
    the broker gives it to one connection and frees it when that connection closes, so a
    process that dies holding it holds up no one."""
    deadline = time.monotonic() + REPLACING_WAIT_SECONDS
    while True:
        channel = conn.channel()
        try:
            channel.queue_declare(f"{queue}.replacing", exclusive=True)
            break
        except amqp.exceptions.ResourceLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield
    finally:
        with contextlib.suppress(*conn.connection_errors, *conn.channel_errors):
            channel.queue_delete(f"{queue}.replacing")


def declare_dead_letter_queue(
    conn: Connection,
    queue: Queue,
    limits: DeadLetterLimits,
    resume: bool = False,
    copy: Callable[[amqp.Message], amqp.Message | None] | None = None,
) -> bool:
    """Declare a dead-letter queue with its limits. One declared with other arguments (older
    releases declared none) is replaced, losing nothing it holds: its messages wait in
    ``<queue>.migrating`` meanwhile, and the broker's dead letters for it go there too while
    there is no queue. Each goes back with what is left of its life (one past it is dropped:
    that is what the limit is for), made by ``copy`` first when given. With ``resume``, messages
    a replacement cut short left waiting go back too. Returns whether it was replaced."""
    try:
        queue(conn.channel()).declare()
        if not resume:
            return False
    except amqp.exceptions.PreconditionFailed:
        pass
    exchange = queue.exchange.name if queue.exchange is not None else ""

    def still_alive(message: amqp.Message) -> amqp.Message | None:
        made = copy(message) if copy is not None else message
        left = None if made is None else limits.remaining(made)
        if made is None or left == 0:
            return None
        if left is not None:
            made.properties["expiration"] = str(left)
        return made

    replaced = False
    with replacing(conn, queue.name):
        try:
            queue(conn.channel()).declare()  # another process may have replaced it meanwhile
        except amqp.exceptions.PreconditionFailed:
            channel = conn.channel()
            channel.queue_declare(holding_queue(queue.name), durable=True, auto_delete=False)
            if exchange:
                channel.queue_bind(holding_queue(queue.name), exchange, queue.routing_key)
            # Deleted whatever reaches it after the move, which works for a classic queue (older
            # releases') and a quorum one alike: the holding queue, bound like it, got a copy.
            hold(conn, queue.name, quorum=True, keep_routing_key=False)
            queue(conn.channel()).declare()
            replaced = True
        # Unbound before the move: from now on the broker's dead letters reach the queue only.
        taken = release_held(
            conn,
            queue.name,
            "",
            lambda message: queue.name,
            still_alive,
            [(exchange, queue.routing_key)] if exchange else [],
        )
    if taken:
        log.info("%d dead letter(s) moved back into %s, with their limits", taken, queue.name)
    return replaced


def declare_consumer_queue(conn: Connection, queue: Queue, resume: bool = False) -> bool:
    """Declare an event consumer queue with its bindings. One declared with other arguments (an
    older release's, before at-least-once dead-lettering) is replaced, losing nothing: a holding
    queue bound like it takes what is published meanwhile, its messages wait there while it is
    deleted and declared again, then go back (an event published meanwhile may arrive twice;
    consumers drop what their inbox has seen). Refuses (``QueueInUse``) while processes consume
    the old queue, whose arguments theirs would no longer match. With ``resume``, messages a
    replacement cut short left waiting go back too. Returns whether it was replaced."""
    try:
        queue(conn.channel()).declare()
        if not resume:
            return False
    except amqp.exceptions.PreconditionFailed:
        pass
    bound = [(b.exchange.name, b.routing_key) for b in queue.bindings]
    replaced = False
    with replacing(conn, queue.name):
        try:
            queue(conn.channel()).declare()  # another process may have replaced it meanwhile
        except amqp.exceptions.PreconditionFailed:
            channel = conn.channel()
            channel.queue_declare(holding_queue(queue.name), durable=True, auto_delete=False)
            for source, key in bound:
                channel.queue_bind(holding_queue(queue.name), source, key)
            hold(conn, queue.name, quorum=True, keep_routing_key=False)
            queue(conn.channel()).declare()
            replaced = True
        taken = release_held(conn, queue.name, "", lambda message: queue.name, unbind=bound)
    if replaced:
        log.info("%s replaced with its current arguments; %d message(s) kept", queue.name, taken)
    return replaced
