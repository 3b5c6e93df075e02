"""``TimedRpcProxy``: RPC calls to nameko services with a timeout on every call, whose replies
come by RabbitMQ's direct reply-to (no reply queue); ``ReplyQueueRpcProxy``: the same over
nameko's own proxy, replies on a transient reply queue, as the kernel called before.

The services' ``rpc`` entrypoint (``kernel.nameko_adapters.rpc``) answers both: a reply to a
direct reply-to address goes through the default exchange, any other through the RPC exchange.
During a rolling deploy, then, responders go first: a responder older than this sends a direct
reply-to caller's reply where no queue takes it, and the caller times out (a 503). The bench's
``python -m bench.rpc`` measures one against the other (docs/performance.md).

``standalone_rpc``: the same direct reply-to calls outside a service's workers (a process's
start-up), declaring nothing on the broker, unlike nameko's ``ClusterRpcProxy``."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import amqp.spec
import eventlet
import eventlet.event
import eventlet.greenthread
import eventlet.semaphore
import kombu.serialization
from kombu import Connection, Queue
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    DEFAULT_TRANSPORT_OPTIONS,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import UnknownService, deserialize
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.messaging import HeaderEncoder
from nameko.rpc import (
    RPC_REPLY_QUEUE_TEMPLATE,
    RPC_REPLY_QUEUE_TTL,
    ReplyListener,
    RpcProxy,
    get_rpc_exchange,
)

from kernel import broker_users
from kernel.config import Settings
from kernel.errors import ServiceUnavailable
from kernel.nameko_adapters.common import BROKER_UNREACHABLE, settings_of
from kernel.nameko_adapters.patches import PublisherHeartbeats

log = logging.getLogger(__name__)


class _TimedServiceProxy:
    def __init__(self, proxy: Any, service: str, timeout: float):
        self._proxy = proxy
        self._service = service
        self._timeout = timeout

    def __getattr__(self, method: str) -> Any:
        remote = getattr(self._proxy, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                reply = remote.call_async(*args, **kwargs)
            except UnknownService:
                raise ServiceUnavailable(f"{self._service} is not running") from None
            except BROKER_UNREACHABLE:
                raise ServiceUnavailable("the message broker is unreachable") from None
            with eventlet.Timeout(self._timeout, False):
                return reply.result()
            raise ServiceUnavailable(f"{self._service} did not answer within {self._timeout:g}s")

        return call


class _TransientReplyListener(ReplyListener):
    """nameko's reply listener, but its queue is transient. nameko declares it durable: a
    durable classic queue lives on the node that declared it, and while that node is down it
    can be declared nowhere else (NOT_FOUND), so the caller could never listen again. A
    transient queue goes with its node, and the caller's reconnection declares it anew on a
    surviving one; replies in flight then are lost, and their callers time out (a 503)."""

    def setup(self) -> None:
        super().setup()
        self.queue = Queue(
            RPC_REPLY_QUEUE_TEMPLATE.format(self.container.service_name, self.routing_key),
            exchange=get_rpc_exchange(self.container.config),
            routing_key=self.routing_key,
            durable=False,
            auto_delete=False,
            queue_arguments={"x-expires": RPC_REPLY_QUEUE_TTL},
        )

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            self.queue_consumer.ack_message(message)
        except BROKER_UNREACHABLE as exc:
            # The reply is in hand; the broker went away before it heard the ack, and the
            # unacknowledged reply goes with the connection. Letting the error out (as nameko
            # does) ends the container, and every request of the process fails from then on.
            log.warning(
                "reply acknowledged to no one: the broker is unreachable (%s)", type(exc).__name__
            )
        reply_event = self._reply_events.pop(message.properties.get("correlation_id"), None)
        if reply_event is not None:
            reply_event.send(body)


class ReplyQueueRpcProxy(RpcProxy):
    """nameko's RPC proxy, its every call giving up after ``LEDGERDESK_RPC_TIMEOUT`` seconds,
    its replies on a transient queue: the kernel's proxy before direct reply-to, kept as the
    benchmark's baseline and as the caller of a reply queue the responder must go on serving."""

    rpc_reply_listener = _TransientReplyListener()
    publisher_heartbeats = PublisherHeartbeats()

    def get_dependency(self, worker_ctx: Any) -> _TimedServiceProxy:
        timeout = settings_of(self.container).rpc_timeout
        return _TimedServiceProxy(super().get_dependency(worker_ctx), self.target_service, timeout)


# Where a direct reply-to request asks its reply to go: RabbitMQ hands a reply published to the
# default exchange under this name (with the suffix the broker adds) straight to the consumer
# of the channel that sent the request, with no reply queue in between.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class _DirectReplies(SharedExtension):
    """The calls of one container on one connection and one channel: requests are published on
    the channel that consumes ``amq.rabbitmq.reply-to`` (the broker requires both on the same
    channel, and the consumer in no-ack mode), and replies are matched to their callers by
    correlation id, as nameko's reply listener does with its one queue.

    One green thread reads the connection (replies, confirms, returns, the broker's
    heartbeats); workers write their requests under a lock, because eventlet lets one reader
    and one writer use a socket at a time, and a frame must not be cut by another's.

    Requests are published mandatory in confirm mode, but nobody waits for the confirm: an
    unroutable request (no service ever declared its queue) comes back as a return and its
    caller hears ``ServiceUnavailable`` at once, as before; a refused one (a nack) too. The
    reply is what the caller waits for, with its timeout.

    A connection lost (a broker node gone) takes the replies of its calls in flight with it:
    their callers hear "unreachable" at once rather than waiting out the timeout, and the next
    call, or the reading thread, connects again, trying each failover URL in turn."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = eventlet.semaphore.Semaphore()
        self._connection: Connection | None = None
        self._channel: Any = None
        self._waiting: dict[str, eventlet.event.Event] = {}
        self._unconfirmed: dict[int, str] = {}
        self._published = 0
        self._stopping = False

    def setup(self) -> None:
        config = self.container.config
        settings = settings_of(self.container)
        self._uri = config[AMQP_URI_CONFIG_KEY]
        self._ssl = config.get(AMQP_SSL_CONFIG_KEY)
        self._login_method = config.get(LOGIN_METHOD_CONFIG_KEY)
        self._serializer = config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER)
        self._exchange = get_rpc_exchange(config).name
        self._heartbeat = settings.heartbeat

    def start(self) -> None:
        self._stopping = False
        self.container.spawn_managed_thread(self._read)

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            lost = self._drop(self._connection)
        self._fail(lost, "the caller is stopping")

    def kill(self) -> None:
        self.stop()

    def call(
        self, service: str, method: str, args: Any, kwargs: Any, headers: dict, timeout: float
    ) -> Any:
        """Publish a request and wait for its reply, at most ``timeout`` seconds."""
        correlation_id = str(uuid.uuid4())
        content_type, content_encoding, body = kombu.serialization.dumps(
            {"args": args, "kwargs": kwargs}, self._serializer
        )
        message = amqp.Message(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            reply_to=DIRECT_REPLY_TO,
            correlation_id=correlation_id,
            # The broker vouches for it: the responder takes requests of the platform's users only.
            user_id=broker_users.connection_user(self._uri),
            application_headers=headers,
            delivery_mode=2,
        )
        waiting = eventlet.event.Event()
        began = time.monotonic()
        # The timeout bounds the whole call: waiting for the lock behind another caller's
        # connection attempt included, so a broker out of reach is a prompt 503.
        if not self._lock.acquire(timeout=timeout):
            raise ServiceUnavailable("the message broker is unreachable")
        try:
            try:
                channel = self._connect()
                self._waiting[correlation_id] = waiting
                self._published += 1
                self._unconfirmed[self._published] = correlation_id
                # Not ``basic_publish``: it may read the socket (for a "connection blocked"
                # notice), and only the reading thread reads it.
                channel.send_method(
                    amqp.spec.Basic.Publish,
                    "Bssbb",
                    (0, self._exchange, f"{service}.{method}", True, False),
                    message,
                )
            except BROKER_UNREACHABLE + (amqp.exceptions.AMQPError,):
                lost = self._drop(self._connection)
                failed = True
            else:
                failed = False
        finally:
            self._lock.release()
        if failed:
            self._fail(lost, "the message broker is unreachable")
            raise ServiceUnavailable("the message broker is unreachable")
        try:
            with eventlet.Timeout(max(0.0, timeout - (time.monotonic() - began)), False):
                reply = waiting.wait()
                error = reply.get("error")
                if error:
                    raise deserialize(error)
                return reply["result"]
        finally:
            self._waiting.pop(correlation_id, None)
        raise ServiceUnavailable(f"{service} did not answer within {timeout:g}s")

    def _connect(self) -> Any:
        """The channel, connected first if need be (with the lock held)."""
        if self._channel is not None:
            return self._channel
        connection = Connection(
            self._uri,
            heartbeat=self._heartbeat,
            ssl=self._ssl,
            login_method=self._login_method,
            transport_options=dict(DEFAULT_TRANSPORT_OPTIONS),
        )
        try:
            # Each failover URL once, without kombu's default pauses of seconds between them.
            connection.ensure_connection(
                max_retries=max(1, len(connection.alt) or 1),
                interval_start=0,
                interval_step=0.1,
                interval_max=0.2,
            )
            channel = connection.channel()
            channel.events["basic_return"].add(self._returned)
            channel.events["basic_ack"].add(self._acked)
            channel.events["basic_nack"].add(self._nacked)
            channel.confirm_select()
            channel.basic_consume(DIRECT_REPLY_TO, no_ack=True, callback=self._replied)
        except BaseException:
            with contextlib.suppress(Exception):
                connection.collect()
            raise
        self._connection, self._channel, self._published = connection, channel, 0
        return channel

    def _drop(self, connection: Connection | None) -> dict[str, eventlet.event.Event]:
        """Forget ``connection`` if it is still the current one (with the lock held), and
        return the calls it leaves without a reply."""
        if connection is None or connection is not self._connection:
            return {}
        lost, self._waiting = self._waiting, {}
        self._unconfirmed.clear()
        self._connection = self._channel = None
        with contextlib.suppress(Exception):
            connection.collect()
        return lost

    @staticmethod
    def _fail(lost: dict[str, eventlet.event.Event], why: str) -> None:
        for waiting in lost.values():
            if not waiting.ready():
                waiting.send_exception(ServiceUnavailable(why))

    def _read(self) -> None:
        # Four looks a heartbeat: ours go out at least every half heartbeat, as the broker
        # expects, and a broker that went silent is noticed within two of its own.
        interval = max(0.25, self._heartbeat / 4)
        checked = time.monotonic()
        while not self._stopping:
            connection = self._connection
            if connection is None:
                try:
                    with self._lock:
                        self._connect()
                except Exception as exc:
                    log.warning("RPC replies: no broker to connect to (%s)", type(exc).__name__)
                    eventlet.sleep(1.0)
                continue
            try:
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=interval)
                # Also while replies stream in without a pause for the wait to run out.
                if time.monotonic() - checked >= interval:
                    checked = time.monotonic()
                    with self._lock:
                        if connection is self._connection:
                            connection.heartbeat_check(rate=2)
            except Exception as exc:  # any failure means the connection is no use
                if self._stopping:
                    return
                log.warning("RPC replies: connection lost (%s)", type(exc).__name__)
                with self._lock:
                    lost = self._drop(connection)
                self._fail(lost, "the message broker is unreachable")

    def _replied(self, message: Any) -> None:
        waiting = self._waiting.pop(message.properties.get("correlation_id"), None)
        if waiting is None:
            return  # its caller gave up (timeout) already
        try:
            reply = kombu.serialization.loads(
                message.body,
                message.properties.get("content_type"),
                message.properties.get("content_encoding"),
            )
        except Exception as exc:
            log.error("RPC reply cannot be decoded (%s)", type(exc).__name__)
            waiting.send_exception(ServiceUnavailable("the reply could not be read"))
            return
        if isinstance(reply, dict):
            waiting.send(reply)
        else:
            waiting.send_exception(ServiceUnavailable("the reply could not be read"))

    def _returned(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        waiting = self._waiting.pop(message.properties.get("correlation_id"), None)
        if waiting is not None:
            service = routing_key.split(".", 1)[0]
            waiting.send_exception(ServiceUnavailable(f"{service} is not running"))

    def _settled(self, tag: int, multiple: bool) -> list[str]:
        if not multiple:
            settled = self._unconfirmed.pop(tag, None)
            return [] if settled is None else [settled]
        done = [t for t in self._unconfirmed if t <= tag]
        return [self._unconfirmed.pop(t) for t in done]

    def _acked(self, tag: int, multiple: bool) -> None:
        self._settled(tag, multiple)

    def _nacked(self, tag: int, multiple: bool) -> None:
        for correlation_id in self._settled(tag, multiple):
            waiting = self._waiting.pop(correlation_id, None)
            if waiting is not None:
                waiting.send_exception(ServiceUnavailable("the message broker refused the request"))


class _DirectServiceProxy:
    def __init__(self, replies: _DirectReplies, worker_ctx: Any, service: str, timeout: float):
        self._replies = replies
        self._worker_ctx = worker_ctx
        self._service = service
        self._timeout = timeout

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            headers = _HEADERS.get_message_headers(self._worker_ctx)
            return self._replies.call(self._service, method, args, kwargs, headers, self._timeout)

        return call


_HEADERS = HeaderEncoder()


class TimedRpcProxy(DependencyProvider):
    """An RPC proxy whose every call gives up after ``LEDGERDESK_RPC_TIMEOUT`` seconds
    (``ServiceUnavailable``), its replies coming by RabbitMQ's direct reply-to: one connection
    and channel per container, whatever the number of proxies and workers (``_DirectReplies``).
    A service that never declared its queue, or a broker out of reach, is ``ServiceUnavailable``
    at once, as with nameko's proxy."""

    replies = _DirectReplies()

    def __init__(self, target_service: str) -> None:
        self.target_service = target_service

    def get_dependency(self, worker_ctx: Any) -> _DirectServiceProxy:
        timeout = settings_of(self.container).rpc_timeout
        return _DirectServiceProxy(self.replies, worker_ctx, self.target_service, timeout)


class _StandaloneContainer:
    """What ``_DirectReplies`` reads of a container, for a caller outside any service's: its
    config and a way to run its reading thread."""

    def __init__(self, settings: Settings) -> None:
        self.config = settings.nameko_config()
        self.service_name = "standalone"
        self.threads: list[eventlet.greenthread.GreenThread] = []

    def spawn_managed_thread(self, run: Callable[[], None]) -> eventlet.greenthread.GreenThread:
        thread = eventlet.spawn(run)
        self.threads.append(thread)
        return thread


class _StandaloneServices:
    def __init__(self, replies: _DirectReplies, timeout: float) -> None:
        self._replies = replies
        self._timeout = timeout

    def __getattr__(self, service: str) -> _StandaloneService:
        return _StandaloneService(self._replies, service, self._timeout)


class _StandaloneService:
    def __init__(self, replies: _DirectReplies, service: str, timeout: float) -> None:
        self._replies = replies
        self._service = service
        self._timeout = timeout

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._replies.call(self._service, method, args, kwargs, {}, self._timeout)

        return call


@contextlib.contextmanager
def standalone_rpc(settings: Settings) -> Iterator[_StandaloneServices]:
    """RPC calls from outside a service's workers (a process's start-up, before its own
    container serves), as ``TimedRpcProxy`` makes them: ``rpc.<service>.<method>(...)``,
    replies by direct reply-to, each call giving up after ``LEDGERDESK_RPC_TIMEOUT`` seconds
    (``ServiceUnavailable``, as for a service not running or a broker out of reach). nameko's
    standalone client would declare the RPC exchange and a reply queue, which a process's own
    broker user may not (services/broker_definitions.py); this declares nothing."""
    container = _StandaloneContainer(settings)
    replies = _DirectReplies()
    replies.container = container
    replies.setup()
    replies.start()
    try:
        yield _StandaloneServices(replies, settings.rpc_timeout)
    finally:
        replies.stop()
        for thread in container.threads:
            thread.kill()
