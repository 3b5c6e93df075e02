"""``EventStoreDependency``: prepares the service's databases (create, migrate), re-applies
retention's log of forgetting before the service serves (``kernel.forgetting``), hands each
worker a narrow API to open units of work, and runs the outbox relay while the service runs;
``store_of`` finds that store for the service's other extensions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from nameko.extensions import DependencyProvider

from kernel import db as kdb
from kernel import forgetting as forgetting_log
from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.envelope import EventRegistry
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.patches import PublisherHeartbeats, use_publisher_heartbeat
from kernel.projections import Projection
from kernel.relay import OutboxRelay
from kernel.stores import open_store
from kernel.uow import EventSourcedStore, UnitOfWork


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
                ssl=settings.amqp_ssl(),
            )
        if self.forgetting is not None:
            # In setup, so before any entrypoint takes work: a database restored from a backup
            # is brought back to what was forgotten before it serves anyone.
            self._reapply(self.forgetting, self.store, settings)

    def _reapply(
        self, forgetting: forgetting_log.Forgetting, store: EventSourcedStore, settings: Settings
    ) -> None:
        use_publisher_heartbeat(settings.heartbeat)
        handlers = forgetting.handlers(store, settings)

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
            own=None if own is None else lambda: own(store, settings),
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


class NewReadModels(DependencyProvider):
    """On start: each named read model built by replay if the service's database never built
    it (``EventSourcedStore.rebuild(only_if_new=True)``): a read model a migration added cannot
    be filled by SQL when it needs the keystore (a blind index), so the first process of the
    release to start fills it, and every process after finds it built."""

    def __init__(self, *names: str):
        self.names = names

    def start(self) -> None:
        store = store_of(self.container)
        for name in self.names:
            store.rebuild(name, progress=False, only_if_new=True)


def store_of(container: Any) -> EventSourcedStore:
    """The store a service's ``EventStoreDependency`` opened, for its other extensions.

    A service's extensions are set up side by side, so the store is there from their ``start``
    (or on first use), not in their ``setup``: before, this raises ``RuntimeError``.
    """
    for dependency in container.dependencies:
        if isinstance(dependency, EventStoreDependency) and dependency.store is not None:
            return dependency.store
    raise RuntimeError(f"the {container.service_name} service's store is not set up")
