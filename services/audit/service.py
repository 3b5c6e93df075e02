"""The audit service: records every event and access into the ledger; verifies and proves."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from kernel import privacy as privacy_protocol
from kernel.config import Settings
from kernel.envelope import Envelope, EventRegistry
from kernel.errors import NotFound
from kernel.forgetting import Forgetting
from kernel.groupcommit import GroupCommit
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.rpc import rpc
from kernel.nameko_adapters.store import EventStoreDependency, store_of
from kernel.observability import StateSample, service_health
from kernel.signing import check_signing_key, published_keys, signer_from_config
from kernel.tracing import Tracing
from services.audit import gauges, privacy, tenant_export
from services.audit.ledger import Ledger
from services.audit.subscriptions import LEDGER, PRIVACY


class LedgerDependency(DependencyProvider):
    """The ledger over audit's own database and keystore (for the access log's day keys), and
    its checkpoint age and unsigned entries when the process's metrics are scraped."""

    state_gauges = gauges.GAUGES

    def setup(self) -> None:
        # Refused before anything starts (audit waits for retention's log of forgetting at
        # start): a key that is not published, or not valid now, would sign checkpoints that
        # no auditor's verifier accepts.
        settings = settings_of(self.container)
        self.signer = signer_from_config(settings.audit_signing_key)
        self.keys = published_keys(settings)
        check_signing_key(self.signer, self.keys)

    def start(self) -> None:
        store = store_of(self.container)
        assert store.cipher is not None
        settings = settings_of(self.container)
        self.ledger = Ledger(
            store.db,
            store.cipher,
            self.signer,
            settings.day_seconds,
            settings.checkpoint_seconds,
            origin=settings.audit_origin,
            keys=self.keys,
        )
        # Consuming workers share transactions: one commit for what arrives meanwhile, each
        # batch locking the head rows of the tenants it holds (ledger.logs); the single chain
        # of earlier releases is frozen and takes no appends.
        self.recorder: GroupCommit[Envelope, int | None] = GroupCommit(
            self.ledger.logs.record_many, self.ledger.logs.record
        )

    def get_dependency(self, worker_ctx: Any) -> Ledger:
        return self.ledger

    def read_state_gauges(self) -> list[StateSample]:
        ledger: Ledger | None = getattr(self, "ledger", None)  # there from start on
        return [] if ledger is None else gauges.read(ledger, dt.datetime.now(dt.UTC))


class RecorderDependency(DependencyProvider):
    """The ledger's group recorder (one per process), shared by the consuming workers."""

    def get_dependency(self, worker_ctx: Any) -> GroupCommit[Envelope, int | None]:
        # Looked up per worker: dependencies start side by side, so the ledger's may not have
        # started when this one does.
        ledger = next(d for d in self.container.dependencies if isinstance(d, LedgerDependency))
        return ledger.recorder


class AuditService:
    name = "audit"

    # The ledger is audit's store; its outbox carries only its answers to privacy commands.
    store = EventStoreDependency(
        EventRegistry(),
        migrations=Path(__file__).parent / "migrations",
        forgetting=Forgetting(lambda store, settings: privacy.handlers_for(store.db, store.cipher)),
    )
    announcement = privacy_protocol.Announcement(("access_log",))
    ledger = LedgerDependency()
    recorder = RecorderDependency()
    tracing = Tracing()

    @consume_events(LEDGER)
    def record(self, event: Envelope) -> None:
        self.recorder.submit(event)

    @timer(interval=Settings.from_env(service="audit").checkpoint_seconds)
    def sign_checkpoint(self) -> None:
        # The frozen chain's own checkpoint first, a no-op once one covers its last entry (the
        # tail recorded before the switch gets one, so its entries are provable as before).
        self.ledger.checkpoint()
        self.ledger.logs.checkpoint()

    @timer(interval=Settings.from_env(service="audit").checkpoint_seconds)
    def verify_ledger(self) -> None:
        """The verification job: from where the last intact run ended, and from the first
        entry once a day. It runs on every tick, appended to or not, so when it ran says
        nothing of anyone's activity."""
        self.ledger.scheduled_verification()

    @rpc
    def list_entries(
        self, tenant_id: str | None, filters: dict[str, Any], limit: int, after: list | None
    ) -> dict[str, Any]:
        """A page of entries after ``after`` (``[log, log id, seq]``, as ``next`` gives it)."""
        items, next_after = self.ledger.entries(
            tenant_id,
            types=filters.get("types"),
            since=_moment(filters.get("from")),
            until=_moment(filters.get("to")),
            subject_id=filters.get("subject_id"),
            after=None if not after else (str(after[0]), str(after[1]), int(after[2])),
            limit=limit,
        )
        return {"items": items, "next": None if next_after is None else list(next_after)}

    @rpc
    def verify(self) -> dict[str, Any]:
        """The verification job's last result (a request never runs one)."""
        return self.ledger.verification_report()

    @rpc
    def tenant_verify(self, tenant_id: str) -> dict[str, Any]:
        return self.ledger.tenant_report(tenant_id)

    @rpc
    def proof(self, tenant_id: str | None, seq: int, log: str = "tenant") -> dict[str, Any]:
        """Entry ``seq`` of the tenant's own log proved in the latest platform checkpoint, or
        (``log="frozen"``) of the frozen chain in its latest checkpoint, as before."""
        if log == "frozen":
            return self.ledger.proof(tenant_id, seq)
        if tenant_id is None:
            raise NotFound("no such entry")
        return self.ledger.logs.proof(uuid.UUID(tenant_id), seq)

    @rpc
    def checkpoint(self) -> dict[str, Any]:
        """Sign now what the timer signs: the frozen chain's checkpoint (None when one covers
        its end already) and a platform checkpoint (None when no log grew since the last)."""
        return {"frozen": self.ledger.checkpoint(), "platform": self.ledger.logs.checkpoint()}

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow, self.name, event, privacy.handlers_for(self.store.db, self.store.cipher)
            )

    @rpc
    def privacy_export(self, tenant_id: str, subject_id: str) -> dict[str, Any]:
        return privacy.export(self.ledger, tenant_id, subject_id)

    @rpc
    def export_count(self, tenant_id: str, kind: str, as_of: str) -> int:
        """How many of the tenant's entries its whole export takes."""
        return tenant_export.count(self.ledger, tenant_id, kind, as_of)

    @rpc
    def export_page(
        self, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
    ) -> dict[str, Any]:
        """A keyset page of the tenant's entries for its whole export (``kernel.tenant_export``)."""
        return tenant_export.page(self.ledger, tenant_id, kind, as_of, after, limit)

    @rpc
    def health(self) -> dict[str, Any]:
        return service_health(self.store.db)


def _moment(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)
