"""The billing service: thin nameko entrypoints over the handlers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from kernel import privacy as privacy_protocol
from kernel.commands import load_command
from kernel.config import Settings
from kernel.db import Database
from kernel.envelope import Envelope
from kernel.forgetting import Forgetting
from kernel.nameko_adapters.clock import Clock
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.proxy import TimedRpcProxy
from kernel.nameko_adapters.rpc import rpc
from kernel.nameko_adapters.store import EventStoreDependency
from kernel.observability import service_health
from kernel.tracing import Tracing
from services.billing import commands, handlers, privacy, tenant_export
from services.billing.catalogue import Catalogue
from services.billing.events import REGISTRY
from services.billing.processor import SandboxProcessor
from services.billing.projections import PROJECTIONS
from services.billing.subscriptions import ACCOUNTS, PRIVACY


def expire_holds(store: Any, settings: Settings) -> None:
    """Erase what legal holds no longer cover, as of today."""
    with store.unit_of_work("retention") as uow:
        privacy.expire_holds(uow, store.cipher.keystore, dt.datetime.now(dt.UTC).date())


class Prices(DependencyProvider):
    """The plans, tax rates and legal hold, from the settings the process started with."""

    def setup(self) -> None:
        self.catalogue = Catalogue.of(settings_of(self.container))

    def get_dependency(self, worker_ctx: Any) -> Catalogue:
        return self.catalogue


class Processor(DependencyProvider):
    """The payment processor adapter; the sandbox one unless a deployment wires another."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.processor = SandboxProcessor(Database(settings.database_dsn("billing"), maxconn=5))

    def get_dependency(self, worker_ctx: Any) -> SandboxProcessor:
        return self.processor


class BillingService:
    name = "billing"

    store = EventStoreDependency(
        REGISTRY,
        PROJECTIONS,
        migrations=Path(__file__).parent / "migrations",
        # Holds that ended while the service was away (or since the backup) are expired too.
        forgetting=Forgetting(
            lambda store, settings: privacy.handlers_for(store.cipher, Catalogue.of(settings)),
            own=expire_holds,
        ),
    )
    processor = Processor()
    catalogue = Prices()
    clock = Clock()
    accounts = TimedRpcProxy("accounts")
    tracing = Tracing()
    announcement = privacy_protocol.Announcement(("invoices", "payment_methods"))
    config = Config()

    @rpc
    def list_plans(self) -> dict[str, Any]:
        return handlers.list_plans(self.catalogue)

    @rpc
    def get_subscription(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.subscription(uow, self.catalogue, tenant_id)

    @rpc
    def change_plan(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.ChangePlanV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.change_plan(uow, self.catalogue, actor["tenant_id"], command)

    @rpc
    def set_address(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.SetBillingAddressV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.set_address(uow, actor["tenant_id"], command)

    @rpc
    def add_payment_method(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.AddPaymentMethodV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.add_payment_method(uow, self.processor, actor["tenant_id"], command)

    @rpc
    def list_payment_methods(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.list_payment_methods(uow, tenant_id)

    @rpc
    def list_invoices(self, tenant_id: str, limit: int, after: list | None) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.list_invoices(uow, tenant_id, limit, after)

    @rpc
    def get_invoice(self, tenant_id: str, invoice_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.get_invoice(uow, tenant_id, invoice_id)

    @rpc
    def pay_invoice(self, actor: dict[str, str], invoice_id: str) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.pay_invoice(uow, self.processor, actor["tenant_id"], invoice_id)

    @timer(interval=3600)
    def invoice_run(self) -> None:
        handlers.run_invoices(
            self.store.unit_of_work, self.catalogue, self.accounts.billing_contact, self.clock()
        )

    @timer(interval=86400)
    def expire_legal_holds(self) -> None:
        """When a hold ends, what it kept is erased (the retention schedule for billing)."""
        cipher = self.store.cipher
        with self.store.unit_of_work("retention") as uow:
            privacy.expire_holds(uow, cipher.keystore, self.clock().date())

    @consume_events(ACCOUNTS)
    def learn_from_accounts(self, event: Envelope) -> None:
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("billing.learn_from_accounts", event.event_id):
                handlers.learn_from_accounts(uow, event)

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow, self.name, event, privacy.handlers_for(self.store.cipher, self.catalogue)
            )

    @rpc
    def privacy_export(self, tenant_id: str, subject_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return privacy.export(uow, tenant_id, subject_id)

    @rpc
    def export_count(self, tenant_id: str, kind: str, as_of: str) -> int:
        """How many rows of ``kind`` a tenant's whole export takes from here."""
        with self.store.unit_of_work() as uow:
            return tenant_export.count(uow, tenant_id, kind, as_of)

    @rpc
    def export_page(
        self, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
    ) -> dict[str, Any]:
        """A keyset page of a tenant's whole export (``kernel.tenant_export``)."""
        with self.store.unit_of_work() as uow:
            return tenant_export.page(uow, tenant_id, kind, as_of, after, limit)

    @rpc
    def health(self) -> dict[str, Any]:
        return service_health(self.store.db)
