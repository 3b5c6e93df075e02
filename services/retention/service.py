"""The retention service: data-subject requests fanned out to every announced service.

Unlike the other services it has no ``privacy.py``: it sends the privacy commands and tracks
the answers rather than answering them (``privacy_handlers`` is empty, and says why), and what
it keeps of a destroyed tenant is sealed under the tenant's key (``sealed``).
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.timer import Timer, timer

from kernel.commands import load_command
from kernel.config import Settings
from kernel.envelope import Envelope, EventRegistry
from kernel.errors import ServiceUnavailable
from kernel.forgetting import Forgetting, LogEntry
from kernel.nameko_adapters.clock import Clock
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.proxy import TimedRpcProxy
from kernel.nameko_adapters.rpc import rpc
from kernel.nameko_adapters.store import EventStoreDependency, store_of
from kernel.observability import StateSample, service_health
from kernel.privacy import Handler
from kernel.signing import Signer, signer_from_config
from kernel.tracing import Tracing
from kernel.uow import EventSourcedStore
from services.retention import (
    approvals,
    export_job,
    forgetting,
    gauges,
    periods,
    receipts,
    registry,
    requests,
    schedules,
    sealed,
    tenant_exports,
)
from services.retention.commands import (
    DecideRequestV1,
    FilePrivacyRequestV1,
    SetApprovalPolicyV1,
    SetPolicyV1,
)
from services.retention.subscriptions import ANSWERS, REGISTRY, TENANTS, TICKETS


def privacy_handlers() -> dict[str, Handler]:
    """Retention's own answers to privacy commands: none. It tracks the commands rather than
    answering them; its own share of a destruction (the tenant's key, which seals its free text)
    is shredded when the destruction completes and again on start (``SealedFreeText``). The log
    is still read at start, from its own database, so its readiness means the same as others'."""
    return {}


def own_forgetting_log(store: EventSourcedStore) -> list[LogEntry]:
    with store.db.transaction() as cur:
        return forgetting.forgetting_log(cur)


class ReceiptSigner(DependencyProvider):
    """The platform's audit key signs erasure receipts, as it signs ledger checkpoints."""

    def setup(self) -> None:
        self.signer = signer_from_config(settings_of(self.container).audit_signing_key)

    def get_dependency(self, worker_ctx: Any) -> Signer:
        return self.signer


class RequestTiming(DependencyProvider):
    """The deadline and retry backoff of data-subject requests, from configuration."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.timing = requests.Timing(
            deadline_days=settings.privacy_deadline_days,
            due_soon_days=settings.privacy_due_soon_days,
            retry_seconds=settings.privacy_retry_seconds,
        )

    def get_dependency(self, worker_ctx: Any) -> requests.Timing:
        return self.timing


class RequestGauges(DependencyProvider):
    """Data-subject requests by type, state and age, and those past their due date, read from
    retention's database when the process's metrics are scraped (``services.retention.gauges``)."""

    state_gauges = gauges.GAUGES

    def read_state_gauges(self) -> list[StateSample]:
        with store_of(self.container).db.transaction() as cur:
            return gauges.read(cur, dt.datetime.now(dt.UTC))


class SealedFreeText(DependencyProvider):
    """On start: the keys of destroyed tenants shredded again in retention's keystore, then
    any free text still in plaintext sealed under its tenant's key (see ``sealed``)."""

    def start(self) -> None:
        store = store_of(self.container)
        with store.unit_of_work(self.container.service_name) as uow:
            sealed.reapply_destructions(uow)
        while True:
            with store.unit_of_work(self.container.service_name) as uow:
                if not sealed.seal_legacy(uow):
                    break


class Exports(DependencyProvider):
    """How long a builder's claim on a tenant's export lasts and a ready archive is kept
    (configuration), and whether this process is stopping (its builder then lets go)."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.lease_seconds = settings.export_lease_seconds
        self.ttl_seconds = settings.export_ttl_seconds
        self.stopping = False

    def get_dependency(self, worker_ctx: Any) -> Exports:
        return self


class BuilderTimer(Timer):
    """nameko's timer, but stopping it first tells a running export builder to let go of its
    claim between two pages: nameko waits for the worker before it stops anything else, and
    an export of a large tenant takes minutes (``export_job``)."""

    def stop(self) -> None:
        for dependency in self.container.dependencies:
            if isinstance(dependency, Exports):
                dependency.stopping = True
        super().stop()


class RetentionService:
    name = "retention"

    store = EventStoreDependency(
        EventRegistry(),
        migrations=Path(__file__).parent / "migrations",
        # Its log read from its own database (it cannot ask itself); see privacy_handlers.
        forgetting=Forgetting(lambda store, settings: privacy_handlers(), log=own_forgetting_log),
    )
    sealed_free_text = SealedFreeText()
    accounts = TimedRpcProxy("accounts")
    # The owners of a tenant's whole export's rows, besides accounts.
    tickets = TimedRpcProxy("tickets")
    billing = TimedRpcProxy("billing")
    audit = TimedRpcProxy("audit")
    exports = Exports()
    signer = ReceiptSigner()
    clock = Clock()
    timing = RequestTiming()
    request_gauges = RequestGauges()
    tracing = Tracing()
    config = Config()

    @rpc
    def file_request(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(FilePrivacyRequestV1, request)
        if command["type"] == "rectification":
            # The corrected values go straight to their owner; the command only says "done".
            self.accounts.rectify_subject(
                actor, str(command["subject"]["contact_id"]), command["changes"]
            )
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            filed, created = requests.file_request(
                uow,
                self.accounts.describe_subject,
                actor["tenant_id"],
                actor["agent_id"],
                command,
                self.clock(),
                self.timing,
                actor.get("key_issuer_id"),
            )
        return {**filed, "created": created}

    @rpc
    def get_request(self, tenant_id: str, request_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return requests.get_request(uow, tenant_id, request_id)

    @rpc
    def list_requests(
        self, tenant_id: str, status: str | None, limit: int, after: list | None
    ) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return requests.list_requests(uow, tenant_id, status, limit, after)

    @rpc
    def decide_request(
        self, actor: dict[str, str], request_id: str, decision: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        command = load_command(DecideRequestV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return requests.decide(
                uow,
                actor["tenant_id"],
                request_id,
                actor,
                decision,
                command["reason"],
                self.clock(),
                self.timing,
            )

    @rpc
    def approval_policy(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return approvals.approval_policy(uow, tenant_id)

    @rpc
    def change_approval_policy(
        self, actor: dict[str, Any], request: dict[str, Any]
    ) -> dict[str, Any]:
        """The policy as it now is, or, for a change that waits for another admin, the change
        (``applied`` says which). Named anew so a caller of the old ``set_approval_policy``,
        which applied every change at once, fails rather than being answered in a new shape."""
        command = load_command(SetApprovalPolicyV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            result, applied = approvals.change_approval_policy(
                uow, actor, command["requires_approval"], self.clock()
            )
        return {"applied": applied, "result": result}

    @rpc
    def get_policy_change(self, tenant_id: str, change_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return approvals.get_policy_change(uow, tenant_id, change_id)

    @rpc
    def list_policy_changes(
        self, tenant_id: str, status: str | None, limit: int, after: list | None
    ) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return approvals.list_policy_changes(uow, tenant_id, status, limit, after)

    @rpc
    def decide_policy_change(
        self, actor: dict[str, Any], change_id: str, decision: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        command = load_command(DecideRequestV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return approvals.decide_policy_change(
                uow, actor["tenant_id"], change_id, actor, decision, command["reason"], self.clock()
            )

    @rpc
    def export(
        self, tenant_id: str, request_id: str, caller_answers: list[str] | None = None
    ) -> dict[str, Any]:
        """One JSON document: what every service holds about the subject, gathered now (so no
        copy of it is kept here), each part under the service that holds it. A part of
        ``caller_answers`` is left ``None`` for the caller to fill in: the gateway, which asks
        for the export while serving a download, would otherwise be asked back by RPC from
        inside that request, and enough downloads at once would take every worker it has."""
        with self.store.unit_of_work() as uow:
            subject_id, services = requests.export_subject(uow, tenant_id, request_id)
        document: dict[str, Any] = {s: None for s in services if s in (caller_answers or ())}
        # Its own proxies (direct reply-to): a standalone client would declare the RPC exchange
        # and a reply queue, which retention's broker user may not.
        exporters = {
            "accounts": self.accounts,
            "tickets": self.tickets,
            "billing": self.billing,
            "audit": self.audit,
        }
        for service in (s for s in services if s not in document):
            if service not in exporters:
                raise ServiceUnavailable(f"{service} did not answer; retry")
            # A call not answered in time, or to a service not running, is ServiceUnavailable.
            document[service] = exporters[service].privacy_export(tenant_id, subject_id)
        return {
            "export_version": 1,
            "request_id": request_id,
            "subject_id": subject_id,
            "generated_at": self.clock().isoformat(),
            "services": document,
        }

    @rpc
    def get_receipt(self, tenant_id: str, request_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return receipts.get_receipt(uow, tenant_id, request_id)

    @rpc
    def policies(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return schedules.policies(uow, tenant_id)

    @rpc
    def change_retention_period(
        self, actor: dict[str, Any], category: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        """The period as it now is, or the change that waits for another admin (``applied``
        says which). Named anew so a caller of the old ``set_policy``, which applied every
        period at once, fails rather than being answered in a new shape."""
        command = load_command(SetPolicyV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            result, applied = periods.change_period(
                uow, actor, category, command["days"], self.clock()
            )
        return {"applied": applied, "result": result}

    @rpc
    def get_period_change(self, tenant_id: str, change_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return periods.get_change(uow, tenant_id, change_id)

    @rpc
    def list_period_changes(
        self, tenant_id: str, status: str | None, limit: int, after: list | None
    ) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return periods.list_changes(uow, tenant_id, status, limit, after)

    @rpc
    def decide_period_change(
        self, actor: dict[str, Any], change_id: str, decision: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        command = load_command(DecideRequestV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return periods.decide_change(
                uow, actor["tenant_id"], change_id, actor, decision, command["reason"], self.clock()
            )

    @rpc
    def erasure_log(self) -> list[dict[str, Any]]:
        """Completed erasures and destructions: what processes of the previous release ask."""
        with self.store.unit_of_work() as uow:
            return requests.erasure_log(uow)

    @rpc
    def forgetting_log(self) -> list[dict[str, Any]]:
        """Every kind of forgetting on record: what a starting service applies again."""
        with self.store.db.transaction() as cur:
            return forgetting.forgetting_log(cur)

    @rpc
    def registered_services(self) -> list[dict[str, Any]]:
        with self.store.unit_of_work() as uow:
            return registry.registered_services(uow)

    @consume_events(REGISTRY)
    def service_announced(self, event: Envelope) -> None:
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("retention.registry", event.event_id):
                registry.register_service(uow, event)

    @consume_events(ANSWERS)
    def privacy_answered(self, event: Envelope) -> None:
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("retention.answers", event.event_id):
                receipts.record_answer(uow, event, self.signer, self.clock(), self.timing)

    @consume_events(TENANTS)
    def tenant_clock(self, event: Envelope) -> None:
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("retention.tenants", event.event_id):
                schedules.learn_from_accounts(uow, event)

    @consume_events(TICKETS)
    def ticket_clock(self, event: Envelope) -> None:
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("retention.tickets", event.event_id):
                schedules.learn_ticket_closed(uow, event)

    @timer(interval=Settings.from_env(service="retention").schedule_seconds)
    def run_schedules(self) -> None:
        """Destroy tenants whose grace ran out; purge access logs and closed tickets past
        their policies."""
        with self.store.unit_of_work("retention") as uow:
            schedules.destroy_due_tenants(uow, self.clock(), self.timing)
        day_seconds = self.config["LEDGERDESK"].day_seconds
        with self.store.unit_of_work("retention") as uow:
            schedules.purge_access_logs(uow, self.clock(), day_seconds)
        with self.store.unit_of_work("retention") as uow:
            schedules.expire_closed_tickets(uow, self.clock(), day_seconds)

    @timer(interval=Settings.from_env(service="retention").schedule_seconds)
    def follow_up_requests(self) -> None:
        """Ask again whoever still owes an answer; announce what nears its deadline; fail what
        is past it (alert)."""
        with self.store.unit_of_work("retention") as uow:
            requests.resend_due(uow, self.clock(), self.timing)
        with self.store.unit_of_work("retention") as uow:
            requests.announce_due_soon(uow, self.clock(), self.timing)
        with self.store.unit_of_work("retention") as uow:
            requests.mark_overdue(uow, self.clock())
        with self.store.unit_of_work("retention") as uow:
            # What an older replica wrote in plaintext during a rolling upgrade.
            sealed.seal_legacy(uow)

    # --- a tenant's whole export (tenant_exports, export_job) ------------------------------------

    @rpc
    def start_tenant_export(self, actor: dict[str, str]) -> dict[str, Any]:
        """A new export of the caller's tenant, or the one already under way (``created``)."""
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            export, created = tenant_exports.start(
                uow, actor["tenant_id"], actor["agent_id"], self.clock()
            )
        return {**export, "created": created}

    @rpc
    def get_tenant_export(self, tenant_id: str, export_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return tenant_exports.get(uow, tenant_id, export_id)

    @rpc
    def list_tenant_exports(self, tenant_id: str, limit: int, after: list | None) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return tenant_exports.list_exports(uow, tenant_id, limit, after)

    @rpc
    def tenant_export_chunk(self, tenant_id: str, export_id: str, seq: int) -> str:
        """One chunk of a ready archive, opened, as base64 (the gateway streams them)."""
        with self.store.unit_of_work() as uow:
            data = tenant_exports.chunk(uow, tenant_id, export_id, seq)
        return base64.b64encode(data).decode("ascii")

    @BuilderTimer.decorator(interval=1)
    def build_tenant_exports(self) -> None:
        """Build the oldest export waiting for a builder, if any (one at a time per process)."""
        export_job.run_next(
            export_job.Job(
                store=self.store,
                services={
                    "accounts": self.accounts,
                    "tickets": self.tickets,
                    "billing": self.billing,
                    "audit": self.audit,
                },
                signer=self.signer,
                clock=self.clock,
                lease_seconds=self.exports.lease_seconds,
                ttl_seconds=self.exports.ttl_seconds,
                stopping=lambda: self.exports.stopping,
            )
        )

    @timer(interval=1)
    def end_tenant_exports(self) -> None:
        """Exports past their expiry, made before a completed erasure, or of a destroyed
        tenant: their bytes deleted and keys shredded (a timer of its own, so that a long
        build never holds an expiry back)."""
        now = self.clock()
        with self.store.unit_of_work("retention") as uow:
            tenant_exports.expire_due(uow, now)
        with self.store.unit_of_work("retention") as uow:
            tenant_exports.end_erased(uow, now)
        with self.store.unit_of_work("retention") as uow:
            tenant_exports.forget_destroyed(uow)

    @rpc
    def health(self) -> dict[str, Any]:
        return service_health(self.store.db)
