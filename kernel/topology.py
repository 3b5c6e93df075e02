"""The broker topology, defined once: exchanges, consumer queues, bindings and dead letters.

Every event goes to one topic exchange with the routing key ``<source>.<type>``. A consumer
queue is a quorum queue with a delivery limit: a message whose handler keeps failing is
requeued by the consumer until the broker dead-letters it to ``<queue>.dead``. Queues are
declared before anything is published (``declare``), because RabbitMQ confirms and then drops a
message that no queue is bound to.

Dead-lettering is at least once: the consumer queue keeps a message until the dead-letter queue
(a quorum queue too, replicated like it) has confirmed its copy, so neither a node lost in
between nor a full dead-letter queue drops it (RabbitMQ's ``at-least-once`` dead-letter
strategy, which needs ``reject-publish`` overflow on the consumer queue; RabbitMQ 3.10+).

A dead letter has a bounded life (``DeadLetterLimits``): the broker drops it after
``LEDGERDESK_DEAD_LETTER_TTL_HOURS``; a queue holding ``LEDGERDESK_DEAD_LETTER_MAX_MESSAGES``
refuses more (``reject-publish``): what it refuses waits in its consumer queue, counted as
awaiting dead-lettering, until the operator has made room, so the oldest failures are never
pushed out unseen. RabbitMQ refuses to redeclare a queue with other arguments, so a queue
declared with older ones (or other limits) is replaced: its messages wait in
``<queue>.migrating`` while it is deleted and declared again, then go back (a dead letter with
what is left of its life: ``kernel.queue_replacement.declare_dead_letter_queue``; a consumer
queue, ``declare_consumer_queue``, only while no process consumes it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import amqp
from kombu import Connection, Exchange, Queue, binding

from kernel.config import Settings
from kernel.queue_replacement import declare_consumer_queue, declare_dead_letter_queue

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
        # reject-publish: past the limit a dead letter is refused, and with at-least-once
        # dead-lettering it waits in its consumer queue rather than pushing out an older one.
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": self.ttl_ms,
            "x-max-length": self.max_messages,
            "x-overflow": "reject-publish",
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
                # Kept until the dead-letter queue confirmed its copy (the module's docstring).
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )

    def kombu_dead_letter_queue(
        self, limits: DeadLetterLimits = DEFAULT_DEAD_LETTER_LIMITS
    ) -> Queue:
        """A quorum queue the broker dead-letters into, at least once."""
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
    ssl: dict[str, Any] | None = None,
) -> None:
    """Declare exchanges, queues, bindings and dead-letter queues; safe to repeat. A dead-letter
    queue with other arguments is replaced, its messages kept (``declare_dead_letter_queue``);
    with ``resume``, messages a replacement cut short left waiting go back too."""
    with Connection(amqp_uri, connect_timeout=5, ssl=ssl) as conn:
        channel = conn.channel()
        events_exchange(channel).declare()
        dead_letter_exchange(channel).declare()
        for subscription in subscriptions:
            declare_dead_letter_queue(
                conn, subscription.kombu_dead_letter_queue(dead_letters), dead_letters, resume
            )
            declare_consumer_queue(conn, subscription.kombu_queue(delivery_limit), resume)
        channel.close()


class TopologyMissing(Exception):
    """A queue a process needs is not on the broker, and its broker user may not declare it."""


def require(amqp_uri: str, queues: Iterable[str], ssl: dict[str, Any] | None = None) -> None:
    """Every one of ``queues`` exists (passive declares, which need no permission), or
    ``TopologyMissing``: what a process checks instead of declaring when its broker user may
    not declare exchanges or bind (one user per process, services/broker_definitions.py), the
    prepare job having declared the topology."""
    with Connection(amqp_uri, connect_timeout=5, ssl=ssl) as conn:
        for name in queues:
            channel = conn.channel()
            try:
                channel.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                raise TopologyMissing(
                    f"queue {name} is not declared and this broker user may not declare it:"
                    " run the prepare job (ledgerdesk prepare) first"
                ) from None
            channel.close()
