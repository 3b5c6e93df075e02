"""What the nameko adapters share: the errors that mean "not now" rather than "never", the
settings a service runs with, and the queue consumer that dead-letters what it cannot decode."""

from __future__ import annotations

import contextlib
from typing import Any

import amqp
import kombu.exceptions
import psycopg2
from nameko.messaging import QueueConsumer

from kernel import db as kdb
from kernel.config import Settings

# What publishing raises while the broker is unreachable (refused, reset, closed by a stop).
BROKER_UNREACHABLE = (OSError, kombu.exceptions.OperationalError, amqp.exceptions.ConnectionError)
# What a worker meets while PostgreSQL restarts: the request is fine, the moment is not.
DATABASE_UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError, kdb.DatabaseUnavailable)


def settings_of(container: Any) -> Settings:
    settings = container.config.get("LEDGERDESK")
    if isinstance(settings, Settings):
        return settings
    return Settings.from_env(service=container.service_name)


def redelivered(message: Any) -> bool:
    """A quorum queue counts earlier failed deliveries in ``x-delivery-count``; the broker also
    flags a message returned by a consumer that went away before acknowledging it."""
    headers = message.headers or {}
    return bool(message.delivery_info.get("redelivered") or headers.get("x-delivery-count"))


class DeadLetteringQueueConsumer(QueueConsumer):
    """nameko's queue consumer, but a body that cannot even be decoded goes to the consumer that
    received it, to be dead-lettered and counted (kombu's default acknowledges it: lost); and
    settling a message on a connection the broker just dropped does not kill the service (nameko
    ignores only amqp's own error, not the socket's): the broker returns an unsettled message of
    a dead connection to its queue by itself."""

    def ack_message(self, message: Any) -> None:
        with contextlib.suppress(*BROKER_UNREACHABLE):
            super().ack_message(message)

    def requeue_message(self, message: Any) -> None:
        with contextlib.suppress(*BROKER_UNREACHABLE):
            super().requeue_message(message)

    def get_consumers(self, consumer_cls: Any, channel: Any) -> Any:
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            undecodable = getattr(provider, "undecodable", None)
            if undecodable is not None:
                consumer.on_decode_error = undecodable
        return consumers
