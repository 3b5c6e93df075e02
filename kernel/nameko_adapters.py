"""What wires the kernel into nameko services: dependencies and entrypoints, kept thin.

- ``EventStoreDependency``: prepares the service's databases (create, migrate), hands each worker
  a narrow API to open units of work, and runs the outbox relay while the service runs.
- ``consume_events``: a durable consumer of a ``Subscription``; a handler that raises has its
  message requeued until the broker's delivery limit dead-letters it (nameko's own event
  handler acknowledges failed messages, losing them).
- ``TimedRpcProxy``: nameko RPC with a timeout on every call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import eventlet
from kombu import Queue
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider
from nameko.messaging import Consumer
from nameko.rpc import RpcProxy
from nameko.rpc import rpc as nameko_rpc

from kernel import db as kdb
from kernel import migrate, topology
from kernel.config import Settings
from kernel.crypto import FieldCipher, KeyShredded, Keystore
from kernel.envelope import Envelope, EventRegistry, MalformedEnvelope
from kernel.errors import Conflict, DomainError, ServiceUnavailable
from kernel.eventstore import ConcurrencyError
from kernel.projections import Projection
from kernel.relay import OutboxRelay
from kernel.uow import EventSourcedStore, UnitOfWork

log = logging.getLogger(__name__)


def settings_of(container: Any) -> Settings:
    settings = container.config.get("LEDGERDESK")
    return settings if isinstance(settings, Settings) else Settings.from_env()


def prepare_databases(settings: Settings, service: str, migrations: Path | None) -> None:
    """Create the service's data and keystore databases if missing and migrate both."""
    for purpose, components in (
        ("", [migrate.STORE] + ([(service, migrations)] if migrations else [])),
        ("keys", [migrate.KEYSTORE]),
    ):
        kdb.ensure_database(settings.database_url, settings.database_name(service, purpose))
        migrate.migrate(settings.database_dsn(service, purpose), components)


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
        trace = {k: data[k] for k in ("traceparent", "tracestate") if data.get(k)}
        return self._store.unit_of_work(actor_id=actor_id or data.get("actor_id"), trace=trace)


class EventStoreDependency(DependencyProvider):
    def __init__(
        self,
        registry: EventRegistry,
        projections: Sequence[Projection] = (),
        migrations: Path | None = None,
        run_relay: bool = True,
        erasure_handlers: Callable[[EventSourcedStore], Mapping[str, Any]] | None = None,
    ):
        self.registry = registry
        self.projections = projections
        self.migrations = migrations
        self.run_relay = run_relay
        self.erasure_handlers = erasure_handlers
        self.store: EventSourcedStore | None = None
        self.relay: OutboxRelay | None = None
        self._relay_thread: Any = None

    def setup(self) -> None:
        settings = settings_of(self.container)
        service = self.container.service_name
        prepare_databases(settings, service, self.migrations)
        database = kdb.Database(settings.database_dsn(service), maxconn=settings.max_workers + 5)
        keystore = Keystore(
            kdb.Database(settings.database_dsn(service, "keys"), maxconn=settings.max_workers + 5),
            settings.master_keys,
            cache_seconds=settings.key_cache_seconds,
        )
        self.store = EventSourcedStore(
            service, database, self.registry, FieldCipher(keystore), self.projections
        )
        if self.run_relay:
            self.relay = OutboxRelay(
                settings.database_dsn(service), settings.amqp_uri, settings.relay_batch_size
            )
        if self.erasure_handlers is not None:
            # In setup, so before any entrypoint takes work: a database restored from a backup
            # is brought back to "erased" before it serves anyone.
            reapply_erasures(self.store, settings, self.erasure_handlers(self.store))

    def start(self) -> None:
        if self.relay is not None:
            self._relay_thread = self.container.spawn_managed_thread(self.relay.run)

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            if self._relay_thread is not None:
                self._relay_thread.wait()

    def kill(self) -> None:
        if self.relay is not None:
            self.relay.stop()

    @property
    def cipher(self) -> FieldCipher:
        # Read by nameko's extension discovery before setup, so no assertion here: None then.
        return cast(FieldCipher, self.store.cipher if self.store is not None else None)

    def get_dependency(self, worker_ctx: Any) -> WorkerStore:
        assert self.store is not None
        return WorkerStore(self.store, worker_ctx)


def reapply_erasures(
    store: EventSourcedStore, settings: Settings, handlers: Mapping[str, Any]
) -> int:
    """Apply retention's log of completed erasures and destructions again (all idempotent:
    shredding a shredded key and scrubbing a scrubbed row change nothing). Returns how many."""
    from nameko.standalone.rpc import ClusterRpcProxy

    try:
        with ClusterRpcProxy({"AMQP_URI": settings.amqp_uri}, timeout=settings.rpc_timeout) as rpc:
            log_entries = rpc.retention.erasure_log()
    except Exception as exc:  # retention down or absent: say so loudly, do not block startup
        log.warning(
            "%s could not read retention's erasure log (%s): erasures were not re-applied",
            store.source,
            type(exc).__name__,
        )
        return 0
    applied = 0
    for entry in log_entries:
        handler = handlers.get(entry["command"])
        if handler is None:
            continue
        with store.unit_of_work(store.source) as uow:
            handler(uow, entry)
        applied += 1
    if applied:
        log.info("%s re-applied %d erasures from retention's log", store.source, applied)
    return applied


class DurableEventConsumer(Consumer):
    """Consumes a subscription's quorum queue; the handler receives a validated ``Envelope``."""

    def __init__(self, subscription: topology.Subscription, **kwargs: Any):
        self.subscription = subscription
        super().__init__(queue=None, requeue_on_error=True, **kwargs)

    def setup(self) -> None:
        settings = settings_of(self.container)
        # Declared here too, so a consumer started before the platform's declare still works.
        topology.declare(settings.amqp_uri, [self.subscription], settings.delivery_limit)
        self.queue: Queue = self.subscription.kombu_queue(settings.delivery_limit)
        super().setup()

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            envelope = Envelope.from_dict(body)
        except MalformedEnvelope as exc:
            # Retrying cannot mend it: dead-letter at once, and say which fields, not the data.
            log.error(
                "dead-lettering a malformed message %s on %s: fields %s",
                message.properties.get("message_id"),
                self.subscription.queue,
                sorted(exc.errors),
            )
            message.reject(requeue=False)
            return
        super().handle_message(envelope, message)

    def handle_message_processed(self, message, result=None, exc_info=None) -> None:
        if exc_info is not None:
            log.warning(
                "handler for %s failed on message %s (%s); returning it to the queue",
                self.subscription.queue,
                message.properties.get("message_id"),
                exc_info[0].__name__,
            )
        super().handle_message_processed(message, result, exc_info)


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
            with eventlet.Timeout(self._timeout, False):
                return reply.result()
            raise ServiceUnavailable(f"{self._service} did not answer within {self._timeout:g}s")

        return call


class TimedRpcProxy(RpcProxy):
    """An RPC proxy whose every call gives up after ``LEDGERDESK_RPC_TIMEOUT`` seconds."""

    def get_dependency(self, worker_ctx: Any) -> _TimedServiceProxy:
        timeout = settings_of(self.container).rpc_timeout
        return _TimedServiceProxy(super().get_dependency(worker_ctx), self.target_service, timeout)


def rpc(method: Any) -> Any:
    """nameko's ``@rpc``: domain errors are expected outcomes, not crashes, and a write that lost
    an optimistic-concurrency race is a conflict the caller can retry."""

    @functools.wraps(method)
    def entrypoint(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ConcurrencyError:
            raise Conflict("the resource changed meanwhile; reload and retry") from None
        except KeyShredded:
            raise Conflict("a person this concerns has been erased") from None

    return nameko_rpc(expected_exceptions=DomainError)(entrypoint)
