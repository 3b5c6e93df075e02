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
with what is left of their life (``kernel.queue_replacement.declare_dead_letter_queue``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import amqp
from kombu import Connection, Exchange, Queue, binding

from kernel.config import Settings
from kernel.queue_replacement import declare_dead_letter_queue

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
