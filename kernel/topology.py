"""The broker topology, defined once: exchanges, consumer queues, bindings and dead letters.

Every event goes to one topic exchange with the routing key ``<source>.<type>``. A consumer
queue is a quorum queue with a delivery limit: a message whose handler keeps failing is
requeued by the consumer until the broker dead-letters it to ``<queue>.dead``. Queues are
declared before anything is published (``declare``), because RabbitMQ confirms and then drops a
message that no queue is bound to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kombu import Connection, Exchange, Queue, binding

EVENTS_EXCHANGE = "ledgerdesk.events"
DEAD_LETTER_EXCHANGE = "ledgerdesk.dead-letter"

events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
dead_letter_exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)


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

    def kombu_dead_letter_queue(self) -> Queue:
        return Queue(
            self.dead_letter_queue,
            exchange=dead_letter_exchange,
            routing_key=self.queue,
            durable=True,
            auto_delete=False,
        )


def declare(amqp_uri: str, subscriptions: Iterable[Subscription], delivery_limit: int) -> None:
    """Declare exchanges, queues, bindings and dead-letter queues; safe to repeat."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        events_exchange(channel).declare()
        dead_letter_exchange(channel).declare()
        for subscription in subscriptions:
            subscription.kombu_dead_letter_queue()(channel).declare()
            subscription.kombu_queue(delivery_limit)(channel).declare()
        channel.close()
