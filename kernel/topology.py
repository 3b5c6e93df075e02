"""The broker topology, defined once: exchanges, consumer queues, bindings and dead letters.

Every event goes to one topic exchange with the routing key ``<source>.<type>``. A consumer
queue is a quorum queue with a delivery limit: a message whose handler keeps failing is
requeued by the consumer until the broker dead-letters it to ``<queue>.dead``. Queues are
declared before anything is published (``declare``), because RabbitMQ confirms and then drops a
message that no queue is bound to.

A dead letter has a bounded life (``DeadLetterLimits``): the broker drops it after
``LEDGERDESK_DEAD_LETTER_TTL_HOURS``, and the oldest once a queue holds
``LEDGERDESK_DEAD_LETTER_MAX_MESSAGES``. RabbitMQ refuses to redeclare a queue with other
arguments, so a dead-letter queue declared without these limits (or with others) is replaced:
its messages wait in ``<queue>.migrating`` while it is deleted and declared again, then go back
with what is left of their life (``declare_dead_letter_queue``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import amqp
from kombu import Connection, Exchange, Queue, binding

from kernel.config import Settings

log = logging.getLogger(__name__)

EVENTS_EXCHANGE = "ledgerdesk.events"
DEAD_LETTER_EXCHANGE = "ledgerdesk.dead-letter"

events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
dead_letter_exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)


@dataclass(frozen=True)
class DeadLetterLimits:
    """How long a dead-letter queue keeps a message, and how many it keeps at most."""

    ttl_ms: int
    max_messages: int

    @classmethod
    def of(cls, settings: Settings) -> DeadLetterLimits:
        return cls(
            round(settings.dead_letter_ttl_hours * 3_600_000), settings.dead_letter_max_messages
        )

    def queue_arguments(self) -> dict[str, Any]:
        # drop-head: past the limit the oldest goes, so the newest failures stay to be seen.
        # Classic and quorum queues (RabbitMQ 3.10+) both take these three.
        return {
            "x-message-ttl": self.ttl_ms,
            "x-max-length": self.max_messages,
            "x-overflow": "drop-head",
        }

    def remaining(self, message: amqp.Message) -> int | None:
        """Milliseconds of life left to a dead letter being moved (0: none), by the time it was
        set aside; None when that time is unknown."""
        since = dead_since(message)
        if since is None:
            return None
        lived = (dt.datetime.now(dt.UTC) - since).total_seconds() * 1000
        return max(0, self.ttl_ms - round(lived))


DEFAULT_DEAD_LETTER_LIMITS = DeadLetterLimits.of(Settings())


def dead_since(message: amqp.Message) -> dt.datetime | None:
    """When a message was set aside: its latest death the broker recorded (``x-death``), else
    its ``timestamp`` (an RPC consumer stamps the requests it sets aside)."""
    deaths = [d for d in (message.headers or {}).get("x-death") or () if isinstance(d, dict)]
    when = deaths[0].get("time") if deaths else message.properties.get("timestamp")
    if isinstance(when, dt.datetime):
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    if isinstance(when, int | float):
        return dt.datetime.fromtimestamp(when, dt.UTC)
    return None


@dataclass(frozen=True)
class Subscription:
    """A consumer's durable queue and the routing keys (``source.type``, ``#``) bound to it."""

    queue: str
    bindings: tuple[str, ...]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    def kombu_queue(self, delivery_limit: int) -> Queue:
        return Queue(
            self.queue,
            bindings=[binding(events_exchange, routing_key=key) for key in self.bindings],
            durable=True,
            auto_delete=False,
            queue_arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                "x-dead-letter-routing-key": self.queue,
            },
        )

    def kombu_dead_letter_queue(
        self, limits: DeadLetterLimits = DEFAULT_DEAD_LETTER_LIMITS
    ) -> Queue:
        """A classic queue: the broker dead-letters into it, at most once."""
        return Queue(
            self.dead_letter_queue,
            exchange=dead_letter_exchange,
            routing_key=self.queue,
            durable=True,
            auto_delete=False,
            queue_arguments=limits.queue_arguments(),
        )


def declare(
    amqp_uri: str,
    subscriptions: Iterable[Subscription],
    delivery_limit: int,
    dead_letters: DeadLetterLimits = DEFAULT_DEAD_LETTER_LIMITS,
    resume: bool = False,
) -> None:
    """Declare exchanges, queues, bindings and dead-letter queues; safe to repeat. A dead-letter
    queue with other arguments is replaced, its messages kept (``declare_dead_letter_queue``);
    with ``resume``, messages a replacement cut short left waiting go back too."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        events_exchange(channel).declare()
        dead_letter_exchange(channel).declare()
        for subscription in subscriptions:
            declare_dead_letter_queue(
                conn, subscription.kombu_dead_letter_queue(dead_letters), dead_letters, resume
            )
            subscription.kombu_queue(delivery_limit)(channel).declare()
        channel.close()


# ------------------------------------------------------------------ replacing a queue

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
        move_messages(channel, queue, "", lambda message: holding, keep_routing_key)
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
    unbind: tuple[str, str] | None = None,
) -> int:
    """Move what waits in ``queue``'s holding queue on (through ``exchange``), then delete the
    holding queue if it is empty; first unbound from ``unbind`` (exchange, routing key), which
    the queue itself is bound to again. Returns how many were taken."""
    holding = holding_queue(queue)
    channel = conn.channel()
    try:
        channel.queue_declare(holding, passive=True)
    except amqp.exceptions.NotFound:
        return 0
    if unbind is not None:
        channel.queue_unbind(holding, *unbind)
    moved = move_messages(channel, holding, exchange, routing_key, False, copy)
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
    quorum = (getattr(queue, "queue_arguments", None) or {}).get("x-queue-type") == "quorum"
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
            hold(conn, queue.name, quorum, keep_routing_key=False)
            queue(conn.channel()).declare()
            replaced = True
        # Unbound before the move: from now on the broker's dead letters reach the queue only.
        taken = release_held(
            conn,
            queue.name,
            "",
            lambda message: queue.name,
            still_alive,
            (exchange, queue.routing_key) if exchange else None,
        )
    if taken:
        log.info("%d dead letter(s) moved back into %s, with their limits", taken, queue.name)
    return replaced
