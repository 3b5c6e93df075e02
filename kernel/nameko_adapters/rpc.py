"""``rpc``: nameko's ``@rpc`` on a quorum queue (``kernel.nameko_adapters.rpc_queues``).

Replies go where the request asks: by direct reply-to straight to the caller's channel (the
kernel's ``TimedRpcProxy``), or to a caller's reply queue, transient so that a surviving node
lets a caller declare its own again (``kernel.nameko_adapters.proxy``). A request that cannot
be served (undecodable, no reply address, not a request, an unknown method, or delivered
``LEDGERDESK_DELIVERY_LIMIT`` times already) is set aside in ``rpc-<service>.dead`` without its
body (what it was, why, and ids only) and counted, and the service keeps serving."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import amqp
import kombu.serialization
import nameko.amqp.publish
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import MalformedRequest, MethodNotFound
from nameko.rpc import Responder, Rpc, RpcConsumer, get_rpc_exchange

from kernel import broker_users, deadletters, observability, topology
from kernel.crypto.primitives import KeyShredded
from kernel.errors import ChangedMeanwhile, DomainError, ServiceUnavailable, SubjectErased
from kernel.eventstore import ConcurrencyError
from kernel.nameko_adapters.common import (
    BROKER_UNREACHABLE,
    DATABASE_UNAVAILABLE,
    DeadLetteringQueueConsumer,
    redelivered,
    settings_of,
)
from kernel.nameko_adapters.patches import PublisherHeartbeats
from kernel.nameko_adapters.proxy import DIRECT_REPLY_TO
from kernel.nameko_adapters.rpc_queues import (
    NO_BODY,
    ROUTING_KEY_HEADER,
    declare_rpc_queues,
    rpc_dead_letter_queue,
    rpc_queue,
    without_body,
)

log = logging.getLogger(__name__)


class _RpcQueueConsumer(DeadLetteringQueueConsumer):
    """``DeadLetteringQueueConsumer`` for RPC queues: a class of its own, so requests keep their
    own connection (a backlog of events never holds up a request)."""


class _UnconfirmedReplyPublisher(nameko.amqp.publish.Publisher):
    # The caller waits for a reply with a timeout and answers 503 when none comes, so a broker
    # confirm for each reply bought only a round trip on every call: 11-17% of the tickets and
    # accounts services' samples under the write-path load.
    use_confirms = False

    def publish(self, payload: Any, **kwargs: Any) -> None:
        # The broker vouches for it, as for every message of the platform (kernel.broker_users).
        kwargs.setdefault("user_id", broker_users.connection_user(self.amqp_uri))
        super().publish(payload, **kwargs)


class _Responder(Responder):
    publisher_cls = _UnconfirmedReplyPublisher


def _reply_exchange(message: Any, config: dict[str, Any]) -> Any:
    """Where a reply goes: a caller on direct reply-to (``kernel.nameko_adapters.proxy``) is
    reached through the default exchange, the only one the broker routes those names from; a
    caller with a reply queue (nameko's own proxies, and ours before direct reply-to, during a
    rolling deploy) through the RPC exchange its queue is bound to."""
    reply_to = message.properties.get("reply_to")
    if isinstance(reply_to, str) and reply_to.startswith(DIRECT_REPLY_TO):
        return ""
    return get_rpc_exchange(config)


# The broker's reply code for a mandatory message no queue took.
_NO_ROUTE = 312


def _returns(message: Any) -> int:
    """How often the broker had this message back from a consumer that did not settle it
    (``x-delivery-count``, which a quorum queue keeps)."""
    returned = (message.headers or {}).get("x-delivery-count")
    return returned if isinstance(returned, int) and returned > 0 else 0


def _answerable(message: Any) -> bool:
    """Whether nameko can reply: it needs a reply address, and answers in the request's
    content type."""
    properties = message.properties
    return isinstance(properties.get("reply_to"), str) and (
        properties.get("content_type") in kombu.serialization.registry.type_to_name
    )


class _QuorumRpcConsumer(RpcConsumer):
    """nameko's RPC consumer on a quorum queue (``rpc_queue``) instead of a classic one, whose
    replies are published without waiting for the broker's confirm.

    A request it cannot serve goes to ``rpc-<service>.dead`` (a copy the broker confirmed, then
    the original acknowledged) and is counted as ``rejected``, and the service keeps serving.
    nameko would let one without a reply address end the service, and the broker would hand it
    to the next process, and the next; one delivered ``delivery_limit`` times already has most
    likely ended a process each time (nameko acknowledges a request only once it is answered).
    A request that can be answered also gets nameko's error (``MalformedRequest``,
    ``MethodNotFound``), so its caller need not wait for its timeout."""

    queue_consumer = _RpcQueueConsumer()
    publisher_heartbeats = PublisherHeartbeats()

    def handle_message(self, body: Any, message: Any) -> None:
        if redelivered(message):
            self._count(observability.REDELIVERIES)
        unfit = self._unfit(body, message)
        if unfit is None:
            super().handle_message(body, message)
        else:
            self._dead_letter(message, *unfit)

    def undecodable(self, message: Any, exc: Exception) -> None:
        why = f"the body cannot be decoded ({type(exc).__name__})"
        error = MalformedRequest("the body cannot be decoded") if _answerable(message) else None
        self._dead_letter(message, "rejected", why, error)

    def _unfit(self, body: Any, message: Any) -> tuple[str, str, Exception | None] | None:
        """Why a request cannot be served: the broker's word for it, ours, and the error its
        caller gets (None when it cannot be answered)."""
        returned = _returns(message)
        settings = settings_of(self.container)
        if settings.broker_user_check and not broker_users.request_sender_allowed(
            message.properties.get("user_id"),
            message.delivery_info.get("exchange", ""),
            get_rpc_exchange(self.container.config).name,
            broker_users.prefix_of(
                broker_users.connection_user(settings.amqp_uri), self.container.service_name
            ),
        ):
            # Not answered: whoever put it there may not call, and hears nothing back.
            sender = message.properties.get("user_id")
            return "rejected", f"not a request a process may make (user_id {sender!r})", None
        limit = settings.delivery_limit
        if returned >= limit:
            return "delivery_limit", f"delivered {returned + 1} times (limit {limit})", None
        if not _answerable(message):
            return "rejected", "no reply address, or no content type to answer in", None
        if not (
            isinstance(body, dict)
            and isinstance(body.get("args"), list)
            and isinstance(body.get("kwargs"), dict)
        ):
            return "rejected", "not a request (args, kwargs)", MalformedRequest("not a request")
        try:
            self.get_provider_for_method(message.delivery_info["routing_key"])
        except MethodNotFound as exc:
            return "rejected", "no such method", exc
        return None

    def _dead_letter(self, message: Any, reason: str, why: str, error: Exception | None) -> None:
        queue = rpc_dead_letter_queue(self.container.service_name).name
        routing_key = message.delivery_info.get("routing_key")
        properties = message.properties
        headers, kept = without_body(
            message.body,
            {**properties, "type": routing_key, "timestamp": int(time.time())},
            {
                **(message.headers or {}),
                "x-first-death-reason": reason,
                "x-first-death-queue": self.queue.name,
                deadletters.DELIVERIES_HEADER: _returns(message) + 1,
                ROUTING_KEY_HEADER: routing_key,
            },
        )
        config = self.container.config
        try:
            with nameko.amqp.publish.get_producer(
                config[AMQP_URI_CONFIG_KEY],
                ssl=config.get(AMQP_SSL_CONFIG_KEY),
                login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
            ) as producer:
                producer.publish(
                    b"",
                    exchange="",
                    routing_key=queue,
                    mandatory=True,
                    delivery_mode=2,
                    headers=headers,
                    **NO_BODY,
                    **broker_users.stamped(config[AMQP_URI_CONFIG_KEY], kept),
                )
        except BROKER_UNREACHABLE as exc:
            # Not acknowledged: the broker gives it back with the connection, to try again.
            log.warning("request not set aside: the broker is unreachable (%s)", type(exc).__name__)
            return
        except amqp.exceptions.MessageNacked:
            # The dead-letter queue is full and refuses more (reject-publish keeps the oldest to
            # be seen). A request is never replayed (its body is not kept), so unlike an event
            # it does not wait for room: it is dropped, counted and logged, never served.
            self._count(observability.MESSAGES_HANDLED, outcome="dropped")
            log.error(
                "request %s on %s dropped: %s is full (%s)",
                properties.get("correlation_id"),
                self.queue.name,
                queue,
                why,
            )
            self.queue_consumer.ack_message(message)
            return
        except amqp.exceptions.ChannelError as exc:
            if exc.reply_code != _NO_ROUTE:
                raise
            # The dead-letter queue is being replaced (new limits): back to the RPC queue, to be
            # set aside on a later delivery, once it is there again.
            log.warning("request not set aside: %s is being replaced; requeued", queue)
            self.queue_consumer.requeue_message(message)
            return
        self._count(observability.MESSAGES_HANDLED, outcome="rejected")
        # Say what was wrong with it, never what it held.
        log.error(
            "dead-lettering request %s on %s: %s",
            properties.get("correlation_id"),
            self.queue.name,
            why,
        )
        if error is None:
            self.queue_consumer.ack_message(message)
            return
        try:
            self.handle_result(message, None, (type(error), error, None))
        except BROKER_UNREACHABLE as exc:
            # Set aside already; given back with the connection, it is set aside again.
            log.warning("error not sent: the broker is unreachable (%s)", type(exc).__name__)

    def _count(self, metric: Any, **labels: str) -> None:
        metric.labels(service=self.container.service_name, queue=self.queue.name, **labels).inc()

    def handle_result(self, message: Any, result: Any, exc_info: Any) -> Any:
        config = self.container.config
        responder = _Responder(
            config[AMQP_URI_CONFIG_KEY],
            _reply_exchange(message, config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
            message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        result, exc_info = responder.send_response(result, exc_info)
        # Acknowledged only once the reply is written: a reply the broker could not take leaves
        # the request to be delivered again.
        self.queue_consumer.ack_message(message)
        return result, exc_info

    def setup(self) -> None:
        super().setup()
        config = self.container.config
        service = self.container.service_name
        # Declared (and migrated) here too, so a service started without ``prepare`` works;
        # resuming a migration cut short is left to ``prepare``: looking for its holding queue
        # costs a channel error, logged by the broker, on every start.
        declared_here = True
        try:
            declare_rpc_queues(
                config[AMQP_URI_CONFIG_KEY],
                [service],
                resume=False,
                dead_letters=topology.DeadLetterLimits.of(settings_of(self.container)),
                ssl=config.get(AMQP_SSL_CONFIG_KEY),
            )
        except amqp.exceptions.AccessRefused:
            # A broker user of this process's own may not declare the RPC exchange (configure
            # on it would let it delete it), as the event consumers may not declare theirs: the
            # prepare job declared the queues, which need only be there.
            topology.require(
                config[AMQP_URI_CONFIG_KEY],
                [rpc_queue(service).name, rpc_dead_letter_queue(service).name],
                ssl=config.get(AMQP_SSL_CONFIG_KEY),
            )
            declared_here = False
        self.queue = rpc_queue(service, get_rpc_exchange(config))
        # Consuming would declare the exchange, the queue and its binding again, which such a
        # user may not. (kombu's attribute, set by its constructor and left out of its stubs.)
        setattr(self.queue, "no_declare", not declared_here)  # noqa: B010


class _Rpc(Rpc):
    """nameko's RPC entrypoint, but a reply that cannot be sent because the broker went away
    does not kill the service (nameko lets that error end the container, and the process with
    it). The request stays unacknowledged, so the broker delivers it again once reconnected;
    the caller, which got no reply, has had a timeout (503) meanwhile."""

    rpc_consumer = _QuorumRpcConsumer()

    def handle_result(self, message, worker_ctx, result, exc_info):
        try:
            return super().handle_result(message, worker_ctx, result, exc_info)
        except BROKER_UNREACHABLE as exc:
            log.warning(
                "reply of %s not sent: the broker is unreachable (%s)",
                worker_ctx.call_id,
                type(exc).__name__,
            )
            return result, exc_info


def rpc(method: Any) -> Any:
    """nameko's ``@rpc``: domain errors are expected outcomes, not crashes, and a write that lost
    an optimistic-concurrency race is a conflict the caller can retry."""

    @functools.wraps(method)
    def entrypoint(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except DATABASE_UNAVAILABLE:
            raise ServiceUnavailable("the database is unavailable; retry shortly") from None
        except ConcurrencyError:
            raise ChangedMeanwhile("the resource changed meanwhile; reload and retry") from None
        except KeyShredded:
            raise SubjectErased("a person this concerns has been erased") from None

    return _Rpc.decorator(expected_exceptions=DomainError)(entrypoint)
