"""``consume_events``: a durable consumer of a ``Subscription``; a handler that raises has its
message requeued until the broker's delivery limit dead-letters it (nameko's own event handler
acknowledges failed messages, losing them)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import amqp
import eventlet
from kombu import Queue
from nameko.messaging import Consumer

from kernel import broker_users, observability, topology
from kernel.envelope import Envelope, MalformedEnvelope, MalformedPayload
from kernel.nameko_adapters.common import (
    BROKER_UNREACHABLE,
    DATABASE_UNAVAILABLE,
    DeadLetteringQueueConsumer,
    redelivered,
    settings_of,
)

log = logging.getLogger(__name__)


# A message whose handler met the database away is tried again in-process, not returned to the
# queue: each return counts against the delivery limit, and an outage must not dead-letter
# good messages. After this many tries (about two minutes) it goes back to the queue anyway.
TRANSIENT_RETRIES = 60


def topic_matches(binding: str, routing_key: str) -> bool:
    """RabbitMQ's topic rule: ``*`` stands for one word, ``#`` for zero or more."""

    def match(pattern: list[str], words: list[str]) -> bool:
        if not pattern:
            return not words
        if pattern[0] == "#":
            return any(match(pattern[1:], words[n:]) for n in range(len(words) + 1))
        return bool(words) and pattern[0] in ("*", words[0]) and match(pattern[1:], words[1:])

    return match(binding.split("."), routing_key.split("."))


class DurableEventConsumer(Consumer):
    """Consumes a subscription's quorum queue; the handler receives a validated ``Envelope``.

    A message that cannot be mended by retrying (no JSON, no valid envelope, a type the queue is
    not bound to, a payload no declared version reads) is dead-lettered at once and counted as
    ``rejected``; one whose handler fails otherwise is returned to the queue until the delivery
    limit dead-letters it."""

    queue_consumer = DeadLetteringQueueConsumer()

    def __init__(self, subscription: topology.Subscription, **kwargs: Any):
        self.subscription = subscription
        super().__init__(queue=None, requeue_on_error=True, **kwargs)

    def _reject(self, message: Any, why: str) -> None:
        self._count(observability.MESSAGES_HANDLED, outcome="rejected")
        # Say what was wrong with it, never what it held.
        log.error(
            "dead-lettering message %s on %s: %s",
            message.properties.get("message_id"),
            self.subscription.queue,
            why,
        )
        with contextlib.suppress(*BROKER_UNREACHABLE):
            message.reject(requeue=False)

    def undecodable(self, message: Any, exc: Exception) -> None:
        self._reject(message, f"the body cannot be decoded ({type(exc).__name__})")

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.check_sender = settings.broker_user_check
        # The queue's owner is the process named first in it (services/broker_definitions.py).
        owner = self.subscription.queue.split(".", 1)[0]
        self.user_prefix = broker_users.prefix_of(
            broker_users.connection_user(settings.amqp_uri), owner
        )
        if self.check_sender and self.user_prefix is None:
            log.error(
                "%s: this process's broker user is not %s, so no event's sender can be told:"
                " every event will be dead-lettered (LEDGERDESK_BROKER_USER_CHECK is on)",
                self.subscription.queue,
                broker_users.user_of(owner),
            )
        # Declared here too, so a consumer started before the platform's declare still works.
        declared_here = True
        try:
            topology.declare(
                settings.amqp_uri,
                [self.subscription],
                settings.delivery_limit,
                topology.DeadLetterLimits.of(settings),
                ssl=settings.amqp_ssl(),
            )
        except amqp.exceptions.AccessRefused:
            # A broker user of this process's own may neither declare the exchanges nor bind
            # (configure on an exchange would let it delete it): the prepare job declared them.
            topology.require(
                settings.amqp_uri,
                [self.subscription.queue, self.subscription.dead_letter_queue],
                ssl=settings.amqp_ssl(),
            )
            declared_here = False
        self.queue: Queue = self.subscription.kombu_queue(settings.delivery_limit)
        # Consuming would declare the queue and its bindings again, which such a user may not.
        # (kombu's attribute, set by its constructor and left out of its stubs.)
        setattr(self.queue, "no_declare", not declared_here)  # noqa: B010
        super().setup()

    def _count(self, metric: Any, **labels: str) -> None:
        metric.labels(
            service=self.container.service_name, queue=self.subscription.queue, **labels
        ).inc()

    def handle_message(self, body: Any, message: Any) -> None:
        if redelivered(message):
            self._count(observability.REDELIVERIES)
        try:
            envelope = Envelope.from_dict(body)
        except MalformedEnvelope as exc:
            self._reject(message, f"malformed envelope, fields {sorted(exc.errors)}")
            return
        if not any(topic_matches(b, envelope.routing_key) for b in self.subscription.bindings):
            self._reject(message, f"{envelope.routing_key} is not a type this queue takes")
            return
        if self.check_sender and not broker_users.event_sender_allowed(
            message.properties.get("user_id"), envelope.source, self.user_prefix
        ):
            # Put in the queue through the default exchange by someone else: a forgery.
            self._reject(
                message,
                f"{envelope.routing_key} published by neither {envelope.source}'s broker user"
                f" nor the gateway's (user_id {message.properties.get('user_id')!r})",
            )
            return
        super().handle_message(envelope, message)

    def handle_message_processed(self, message, result=None, exc_info=None) -> None:
        if exc_info is not None and issubclass(exc_info[0], MalformedPayload):
            self._reject(message, f"no declared version reads its payload: {exc_info[1]}")
            return
        if exc_info is not None and issubclass(exc_info[0], DATABASE_UNAVAILABLE):
            tries = getattr(message, "ledgerdesk_tries", 0) + 1
            if tries < TRANSIENT_RETRIES:
                message.ledgerdesk_tries = tries
                if tries == 1:
                    log.warning(
                        "handler for %s: database unavailable on message %s; retrying in-process",
                        self.subscription.queue,
                        message.properties.get("message_id"),
                    )
                eventlet.sleep(min(2.0, 0.1 * 2**tries))
                super().handle_message(Envelope.from_dict(message.payload), message)
                return
        if exc_info is not None:
            log.warning(
                "handler for %s failed on message %s (%s); returning it to the queue",
                self.subscription.queue,
                message.properties.get("message_id"),
                exc_info[0].__name__,
            )
        self._count(observability.MESSAGES_HANDLED, outcome="failed" if exc_info else "handled")
        super().handle_message_processed(message, result, exc_info)


consume_events = DurableEventConsumer.decorator
