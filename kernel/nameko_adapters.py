"""What wires the kernel into nameko services: dependencies and entrypoints, kept thin.

- ``EventStoreDependency``: prepares the service's databases (create, migrate), re-applies
  retention's log of forgetting before the service serves (``kernel.forgetting``), hands each
  worker a narrow API to open units of work, and runs the outbox relay while the service runs;
  ``store_of`` finds that store for the service's other extensions.
- ``consume_events``: a durable consumer of a ``Subscription``; a handler that raises has its
  message requeued until the broker's delivery limit dead-letters it (nameko's own event
  handler acknowledges failed messages, losing them).
- ``TimedRpcProxy``: nameko RPC with a timeout on every call.
- RPC queues (``rpc-<service>``) are quorum queues, so they survive the loss of the node that
  declared them (``declare_rpc_queues`` creates them, and migrates classic ones, before services
  start); reply queues are transient, so a surviving node lets a caller declare its own again.
  A request that cannot be served (undecodable, no reply address, not a request, an unknown
  method, or delivered ``LEDGERDESK_DELIVERY_LIMIT`` times already) is set aside in
  ``rpc-<service>.dead`` without its body (what it was, why, and ids only) and counted, and the
  service keeps serving.
- Publisher connections (RPC requests, replies) carry AMQP heartbeats like consumers do, and
  ``PublisherHeartbeats`` keeps the idle ones in kombu's pools beating.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import amqp
import eventlet
import kombu.exceptions
import kombu.pools
import kombu.serialization
import nameko.amqp.publish
import psycopg2
from kombu import Connection, Queue
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    DEFAULT_TRANSPORT_OPTIONS,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import MalformedRequest, MethodNotFound, UnknownService
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.messaging import Consumer, QueueConsumer
from nameko.rpc import (
    RPC_QUEUE_TEMPLATE,
    RPC_REPLY_QUEUE_TEMPLATE,
    RPC_REPLY_QUEUE_TTL,
    ReplyListener,
    Responder,
    Rpc,
    RpcConsumer,
    RpcProxy,
    get_rpc_exchange,
)

from kernel import db as kdb
from kernel import deadletters, migrate, observability, queue_replacement, topology
from kernel import forgetting as forgetting_log
from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded
from kernel.envelope import Envelope, EventRegistry, MalformedEnvelope, MalformedPayload
from kernel.errors import Conflict, DomainError, ServiceUnavailable
from kernel.eventstore import ConcurrencyError
from kernel.projections import Projection
from kernel.relay import OutboxRelay
from kernel.uow import EventSourcedStore, UnitOfWork

log = logging.getLogger(__name__)

# What publishing raises while the broker is unreachable (refused, reset, closed by a stop).
BROKER_UNREACHABLE = (OSError, kombu.exceptions.OperationalError, amqp.exceptions.ConnectionError)
# What a worker meets while PostgreSQL restarts: the request is fine, the moment is not.
DATABASE_UNAVAILABLE = (psycopg2.OperationalError, psycopg2.InterfaceError, kdb.DatabaseUnavailable)
# A message whose handler met the database away is tried again in-process, not returned to the
# queue: each return counts against the delivery limit, and an outage must not dead-letter
# good messages. After this many tries (about two minutes) it goes back to the queue anyway.
TRANSIENT_RETRIES = 60


def _unregister_once_while_connecting(original: Callable[..., Any]) -> Callable[..., Any]:
    """nameko's QueueConsumer, stopped while still connecting (a slow start, a reconnect),
    signals "last provider gone" once per provider, and the second signal raises ("Trying to
    re-send() an already-triggered event"), so the process exits non-zero on a clean SIGTERM.
    Once is the signal."""

    @functools.wraps(original)
    def unregister_provider(self: QueueConsumer, provider: Any) -> None:
        if not self._consumers_ready.ready():
            if not self._last_provider_unregistered.ready():
                self._last_provider_unregistered.send()
            return
        original(self, provider)

    return unregister_provider


QueueConsumer.unregister_provider = _unregister_once_while_connecting(  # type: ignore[method-assign]
    QueueConsumer.unregister_provider
)


# ------------------------------------------------------------------ publisher heartbeats

# The heartbeat pooled publisher connections ask for; ``PublisherHeartbeats`` sets it from the
# service's settings. A list so that the patched ``get_producer`` reads the current value.
_publisher_heartbeat: list[float] = [float(Settings.heartbeat)]


def use_publisher_heartbeat(seconds: float) -> None:
    """The heartbeat of publisher connections this process opens from now on."""
    _publisher_heartbeat[0] = float(seconds)


def _with_heartbeat(original: Callable[..., Any]) -> Callable[..., Any]:
    """nameko's publishers (RPC requests and replies, event dispatch, standalone proxies) take
    their connections from kombu's pools with no heartbeat: an idle one to a broker that
    vanished is found dead only when a publish on it fails. The heartbeat goes in the transport
    options because they reach py-amqp's connection and are part of the pool's key, so pools
    of heartbeat connections are never shared with callers that asked for none."""

    @contextlib.contextmanager
    def get_producer(
        amqp_uri: str,
        confirms: bool = True,
        ssl: Any = None,
        login_method: Any = None,
        transport_options: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        options = dict(
            DEFAULT_TRANSPORT_OPTIONS if transport_options is None else transport_options
        )
        options.setdefault("heartbeat", _publisher_heartbeat[0])
        with original(amqp_uri, confirms, ssl, login_method, options) as producer:
            yield producer

    return get_producer


nameko.amqp.publish.get_producer = _with_heartbeat(nameko.amqp.publish.get_producer)


def beat_idle_publishers() -> int:
    """Read what the broker sent on each idle pooled publisher connection of this process (its
    heartbeats, or its close) and send ours when due; one that is dead or missed the broker's
    beats is closed, so the next publish opens a fresh one (on another node, with failover
    URLs) instead of failing on it. Returns how many connections were checked."""
    checked = 0
    for pool in list(kombu.pools.connections.values()):
        if not pool.limit or not pool.connection.transport_options.get("heartbeat"):
            continue
        idle = []
        # Taken out of the pool while checked, so no publisher uses one meanwhile.
        with contextlib.suppress(pool.LimitExceeded):
            for _ in range(pool.limit):
                idle.append(pool.acquire(block=False))
        for connection in idle:
            try:
                if connection.connected:
                    checked += 1
                    _beat(connection)
            except Exception:  # any failure means the connection is no use: close it
                connection.collect()
            finally:
                connection.release()
    return checked


def _beat(connection: Connection) -> None:
    with contextlib.suppress(socket.timeout):
        for _ in range(100):  # an idle connection has a frame or two waiting, not a stream
            connection.drain_events(timeout=0)
    connection.heartbeat_check(rate=2)


class PublisherHeartbeats(SharedExtension):
    """Keeps the process's idle pooled publisher connections beating: the broker closes a
    connection that stays silent for two heartbeats, and nothing else reads or writes on a
    publisher connection between publishes."""

    def setup(self) -> None:
        self.heartbeat = settings_of(self.container).heartbeat
        use_publisher_heartbeat(self.heartbeat)

    def start(self) -> None:
        self.container.spawn_managed_thread(self._run)

    def _run(self) -> None:
        # Four checks per heartbeat: ours go out at least every half heartbeat.
        interval = max(0.25, self.heartbeat / 4)
        while True:
            eventlet.sleep(interval)
            try:
                beat_idle_publishers()
            except Exception:  # must not end the container: the next round tries again
                log.exception("checking idle publisher connections failed")


def settings_of(container: Any) -> Settings:
    settings = container.config.get("LEDGERDESK")
    if isinstance(settings, Settings):
        return settings
    return Settings.from_env(service=container.service_name)


def prepare_databases(settings: Settings, service: str, migrations: Path | None) -> None:
    """Create the service's data and keystore databases if missing and migrate both."""
    for purpose, components in (
        ("", [migrate.STORE] + ([(service, migrations)] if migrations else [])),
        ("keys", [migrate.KEYSTORE]),
    ):
        kdb.ensure_database(settings.database_url, settings.database_name(service, purpose))
        migrate.migrate(settings.database_dsn(service, purpose), components)


def open_store(
    settings: Settings,
    service: str,
    registry: EventRegistry,
    projections: Sequence[Projection] = (),
    migrations: Path | None = None,
    maxconn: int = 10,
    prepare: bool = True,
) -> EventSourcedStore:
    """A service's store on ``settings``' databases: its events, read models and outbox (with
    the service's ``migrations``), and its keystore; created and migrated first unless
    ``prepare`` is False (when a running service owns them)."""
    if prepare:
        prepare_databases(settings, service, migrations)
    keystore = Keystore(
        kdb.Database(settings.database_dsn(service, "keys"), maxconn=maxconn),
        settings.master_keys,
        cache_seconds=settings.key_cache_seconds,
    )
    return EventSourcedStore(
        service,
        kdb.Database(settings.database_dsn(service), maxconn=maxconn),
        registry,
        FieldCipher(keystore),
        projections,
    )


class WorkerStore:
    """What a worker sees: units of work stamped with its actor and trace, and reads."""

    def __init__(self, store: EventSourcedStore, worker_ctx: Any):
        self._store = store
        self._worker_ctx = worker_ctx

    @property
    def db(self) -> kdb.Database:
        return self._store.db

    @property
    def store(self) -> EventSourcedStore:
        return self._store

    @property
    def cipher(self) -> FieldCipher:
        """The field cipher, for privacy commands that shred a subject's key."""
        assert self._store.cipher is not None
        return self._store.cipher

    def unit_of_work(self, actor_id: str | None = None) -> UnitOfWork:
        data = self._worker_ctx.data
        # The Tracing dependency keeps the worker's traceparent here; a tracestate is never
        # stamped (kernel.tracing).
        trace = {"traceparent": data["traceparent"]} if data.get("traceparent") else {}
        return self._store.unit_of_work(actor_id=actor_id or data.get("actor_id"), trace=trace)


class EventStoreDependency(DependencyProvider):
    publisher_heartbeats = PublisherHeartbeats()

    def __init__(
        self,
        registry: EventRegistry,
        projections: Sequence[Projection] = (),
        migrations: Path | None = None,
        run_relay: bool = True,
        forgetting: forgetting_log.Forgetting | None = None,
    ):
        self.registry = registry
        self.projections = projections
        self.migrations = migrations
        self.run_relay = run_relay
        self.forgetting = forgetting
        self.store: EventSourcedStore | None = None
        self.relay: OutboxRelay | None = None
        self._relay_thread: Any = None
        self._forgotten = forgetting is None
        self._stopping = False

    def setup(self) -> None:
        settings = settings_of(self.container)
        service = self.container.service_name
        self.store = open_store(
            settings,
            service,
            self.registry,
            self.projections,
            self.migrations,
            maxconn=settings.max_workers + 5,
        )
        if self.run_relay:
            self.relay = OutboxRelay(
                settings.database_dsn(service),
                settings.amqp_uri,
                settings.relay_batch_size,
                heartbeat=settings.heartbeat,
            )
        if self.forgetting is not None:
            # In setup, so before any entrypoint takes work: a database restored from a backup
            # is brought back to what was forgotten before it serves anyone.
            self._reapply(self.forgetting, self.store, settings)

    def _reapply(
        self, forgetting: forgetting_log.Forgetting, store: EventSourcedStore, settings: Settings
    ) -> None:
        use_publisher_heartbeat(settings.heartbeat)
        handlers = forgetting.handlers(store)

        def read_log() -> list[forgetting_log.LogEntry]:
            if forgetting.log is not None:
                return forgetting.log(store)
            return forgetting_log.from_retention(settings)()

        def apply(command: dict[str, Any]) -> bool:
            handler = handlers.get(command["command"])
            if handler is None:
                return False
            with store.unit_of_work(store.source) as uow:
                handler(uow, command)
            return True

        own = forgetting.own
        forgetting_log.reapply(
            store.source,
            read_log,
            apply,
            own=None if own is None else lambda: own(store),
            stopping=lambda: self._stopping,
        )
        self._forgotten = True

    def readiness_checks(self) -> dict[str, bool]:
        """What ``/readyz`` adds: whether retention's log of forgetting has been re-applied."""
        return {} if self.forgetting is None else {"forgetting": self._forgotten}

    def start(self) -> None:
        if self.relay is not None:
            self._relay_thread = self.container.spawn_managed_thread(self.relay.run)

    def stop(self) -> None:
        self._stopping = True
        if self.relay is not None:
            self.relay.stop()
            if self._relay_thread is not None:
                self._relay_thread.wait()

    def kill(self) -> None:
        self._stopping = True
        if self.relay is not None:
            self.relay.stop()

    @property
    def cipher(self) -> FieldCipher:
        # Read by nameko's extension discovery before setup, so no assertion here: None then.
        return cast(FieldCipher, self.store.cipher if self.store is not None else None)

    def get_dependency(self, worker_ctx: Any) -> WorkerStore:
        assert self.store is not None
        return WorkerStore(self.store, worker_ctx)


def store_of(container: Any) -> EventSourcedStore:
    """The store a service's ``EventStoreDependency`` opened, for its other extensions.

    A service's extensions are set up side by side, so the store is there from their ``start``
    (or on first use), not in their ``setup``: before, this raises ``RuntimeError``.
    """
    for dependency in container.dependencies:
        if isinstance(dependency, EventStoreDependency) and dependency.store is not None:
            return dependency.store
    raise RuntimeError(f"the {container.service_name} service's store is not set up")


class _DeadLetteringQueueConsumer(QueueConsumer):
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


class _RpcQueueConsumer(_DeadLetteringQueueConsumer):
    """The same, for RPC queues: a class of its own, so requests keep their own connection (a
    backlog of events never holds up a request)."""


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

    queue_consumer = _DeadLetteringQueueConsumer()

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
        # Declared here too, so a consumer started before the platform's declare still works.
        topology.declare(
            settings.amqp_uri,
            [self.subscription],
            settings.delivery_limit,
            topology.DeadLetterLimits.of(settings),
        )
        self.queue: Queue = self.subscription.kombu_queue(settings.delivery_limit)
        super().setup()

    def _count(self, metric: Any, **labels: str) -> None:
        metric.labels(
            service=self.container.service_name, queue=self.subscription.queue, **labels
        ).inc()

    def handle_message(self, body: Any, message: Any) -> None:
        if _redelivered(message):
            self._count(observability.REDELIVERIES)
        try:
            envelope = Envelope.from_dict(body)
        except MalformedEnvelope as exc:
            self._reject(message, f"malformed envelope, fields {sorted(exc.errors)}")
            return
        if not any(topic_matches(b, envelope.routing_key) for b in self.subscription.bindings):
            self._reject(message, f"{envelope.routing_key} is not a type this queue takes")
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


def _redelivered(message: Any) -> bool:
    """A quorum queue counts earlier failed deliveries in ``x-delivery-count``; the broker also
    flags a message returned by a consumer that went away before acknowledging it."""
    headers = message.headers or {}
    return bool(message.delivery_info.get("redelivered") or headers.get("x-delivery-count"))


consume_events = DurableEventConsumer.decorator


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


class TimedRpcProxy(RpcProxy):
    """An RPC proxy whose every call gives up after ``LEDGERDESK_RPC_TIMEOUT`` seconds."""

    rpc_reply_listener = _TransientReplyListener()
    publisher_heartbeats = PublisherHeartbeats()

    def get_dependency(self, worker_ctx: Any) -> _TimedServiceProxy:
        timeout = settings_of(self.container).rpc_timeout
        return _TimedServiceProxy(super().get_dependency(worker_ctx), self.target_service, timeout)


# ------------------------------------------------------------------ RPC queues

# Where a request waiting out a migration keeps the routing key nameko dispatches it by, and a
# request set aside the routing key it came with.
_ROUTING_KEY_HEADER = queue_replacement.HELD_ROUTING_KEY_HEADER


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
    with Connection(amqp_uri, connect_timeout=5) as conn:
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
        lambda message: message.headers.pop(_ROUTING_KEY_HEADER),
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
        _ROUTING_KEY_HEADER,
        "nameko.traceparent",
    }
)
_SET_ASIDE_PROPERTIES = ("message_id", "correlation_id", "type", "timestamp")
_NO_BODY = {"content_type": "application/octet-stream", "content_encoding": "binary"}


def _without_body(
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
    headers, properties = _without_body(message.body, message.properties, message.headers or {})
    return amqp.Message(b"", application_headers=headers, delivery_mode=2, **_NO_BODY, **properties)


class _UnconfirmedReplyPublisher(nameko.amqp.publish.Publisher):
    # The caller waits for a reply with a timeout and answers 503 when none comes, so a broker
    # confirm for each reply bought only a round trip on every call: 11-17% of the tickets and
    # accounts services' samples under the write-path load.
    use_confirms = False


class _Responder(Responder):
    publisher_cls = _UnconfirmedReplyPublisher


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
        if _redelivered(message):
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
        limit = settings_of(self.container).delivery_limit
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
        headers, kept = _without_body(
            message.body,
            {**properties, "type": routing_key, "timestamp": int(time.time())},
            {
                **(message.headers or {}),
                "x-first-death-reason": reason,
                "x-first-death-queue": self.queue.name,
                deadletters.DELIVERIES_HEADER: _returns(message) + 1,
                _ROUTING_KEY_HEADER: routing_key,
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
                    **_NO_BODY,
                    **kept,
                )
        except BROKER_UNREACHABLE as exc:
            # Not acknowledged: the broker gives it back with the connection, to try again.
            log.warning("request not set aside: the broker is unreachable (%s)", type(exc).__name__)
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
            get_rpc_exchange(config),
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
        # Declared (and migrated) here too, so a service started without ``prepare`` works;
        # resuming a migration cut short is left to ``prepare``: looking for its holding queue
        # costs a channel error, logged by the broker, on every start.
        declare_rpc_queues(
            self.container.config["AMQP_URI"],
            [self.container.service_name],
            resume=False,
            dead_letters=topology.DeadLetterLimits.of(settings_of(self.container)),
        )
        self.queue = rpc_queue(self.container.service_name, get_rpc_exchange(self.container.config))


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
            raise Conflict("the resource changed meanwhile; reload and retry") from None
        except KeyShredded:
            raise Conflict("a person this concerns has been erased") from None

    return _Rpc.decorator(expected_exceptions=DomainError)(entrypoint)
