"""The audit service: records every event and access into the ledger; verifies and proves."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer

from kernel import privacy as privacy_protocol
from kernel.config import Settings
from kernel.envelope import Envelope, EventRegistry
from kernel.groupcommit import GroupCommit
from kernel.nameko_adapters import EventStoreDependency, consume_events, rpc, settings_of
from kernel.observability import service_health
from kernel.signing import signer_from_config
from kernel.tracing import Tracing
from services.audit.ledger import Ledger
from services.audit.subscriptions import LEDGER, PRIVACY


class LedgerDependency(DependencyProvider):
    """The ledger over audit's own database and keystore (for the month keys)."""

    def start(self) -> None:
        store = next(
            d for d in self.container.dependencies if isinstance(d, EventStoreDependency)
        ).store
        assert store is not None and store.cipher is not None
        signer = signer_from_config(settings_of(self.container).audit_signing_key)
        self.ledger = Ledger(store.db, store.cipher, signer)
        # Consuming workers share transactions: one lock and one commit for what arrives meanwhile.
        self.recorder: GroupCommit[Envelope, int | None] = GroupCommit(
            self.ledger.record_many, self.ledger.record
        )

    def get_dependency(self, worker_ctx: Any) -> Ledger:
        return self.ledger


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
    store = EventStoreDependency(EventRegistry(), migrations=Path(__file__).parent / "migrations")
    announcement = privacy_protocol.Announcement(("access_log",))
    ledger = LedgerDependency()
    recorder = RecorderDependency()
    tracing = Tracing()

    @consume_events(LEDGER)
    def record(self, event: Envelope) -> None:
        self.recorder.submit(event)

    @timer(interval=Settings.from_env().checkpoint_seconds)
    def sign_checkpoint(self) -> None:
        self.ledger.checkpoint()

    @rpc
    def list_entries(
        self, tenant_id: str | None, filters: dict[str, Any], limit: int, after_seq: int
    ) -> dict[str, Any]:
        items, next_after = self.ledger.entries(
            tenant_id,
            types=filters.get("types"),
            since=_moment(filters.get("from")),
            until=_moment(filters.get("to")),
            subject_id=filters.get("subject_id"),
            after_seq=after_seq,
            limit=limit,
        )
        return {"items": items, "next": next_after}

    @rpc
    def verify(self) -> dict[str, Any]:
        return self.ledger.verify()

    @rpc
    def proof(self, tenant_id: str | None, seq: int) -> dict[str, Any]:
        return self.ledger.proof(tenant_id, seq)

    @rpc
    def checkpoint(self) -> dict[str, Any] | None:
        return self.ledger.checkpoint()

    @rpc
    def shred_month(self, month: str) -> bool:
        return self.ledger.shred_month(month)

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow,
                self.name,
                event,
                {
                    "erase_subject": _ids_only,
                    "destroy_tenant": _ids_only,
                    "purge_category": self._purge,
                },
            )

    def _purge(self, uow: Any, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("category") != "access_log" or not command.get("before"):
            return {"status": "done", "detail": "audit holds nothing of that category"}
        months = self.ledger.shred_months_before(dt.datetime.fromisoformat(command["before"]))
        return {"status": "done", "detail": f"{len(months)} months of access-log fields erased"}

    @rpc
    def privacy_export(self, tenant_id: str, subject_id: str) -> dict[str, Any]:
        """Who read this person's data, when, and what: the staff reads the ledger records."""
        reads = []
        for entry in self.ledger.iter_entries(
            tenant_id, subject_id=subject_id, types=["access_logged", "ticket_viewed"]
        ):
            if entry["actor_id"] == subject_id:
                continue  # their own requests are not staff reads
            payload = entry["payload"]
            reads.append(
                {
                    "who": entry["actor_id"],
                    "when": entry["at"],
                    "what": payload.get("route") or f"ticket {payload.get('ticket_id')}",
                    "resources": payload.get("resource_ids") or [payload.get("ticket_id")],
                }
            )
        return {"staff_reads": reads}

    @rpc
    def health(self) -> dict[str, Any]:
        return service_health(self.store.db)


def _ids_only(uow: Any, command: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "done",
        "detail": "the ledger holds identifiers only; access-log IPs and user agents go with "
        "their month's key",
    }


def _moment(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)
