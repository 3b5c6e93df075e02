"""The accounts service: thin nameko entrypoints over the handlers.

Callers pass the tenant they act for (the gateway takes it from the authenticated key); every
handler scopes its reads and writes to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from kernel import privacy as privacy_protocol
from kernel.commands import load_command
from kernel.envelope import Envelope
from kernel.eventstore import ConcurrencyError
from kernel.forgetting import Forgetting
from kernel.mail.dependency import MailDependency
from kernel.mail.entrypoints import MailOutboxEntrypoints
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.rpc import rpc
from kernel.nameko_adapters.store import EventStoreDependency, NewReadModels, store_of
from kernel.observability import service_health
from kernel.tracing import Tracing
from services.accounts import (
    commands,
    handlers,
    inbound,
    incidents,
    notices,
    privacy,
    tenant_export,
)
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS
from services.accounts.subscriptions import PRIVACY, RETENTION
from services.retention.contracts import MESSAGES as RETENTION_MESSAGES


class FirstPolicy(DependencyProvider):
    """Publishes the configured first policy version when the platform has none."""

    def start(self) -> None:
        store = store_of(self.container)
        try:
            with store.unit_of_work() as uow:
                handlers.ensure_first_policy(uow, settings_of(self.container))
        except ConcurrencyError:
            pass  # another replica published it first


class AccountsService(MailOutboxEntrypoints):
    name = "accounts"

    store = EventStoreDependency(
        REGISTRY,
        PROJECTIONS,
        migrations=Path(__file__).parent / "migrations",
        forgetting=Forgetting(lambda store, settings: privacy.handlers_for(store.cipher)),
    )
    first_policy = FirstPolicy()
    # The blind index of people came with migration 0005: filled once from the events.
    new_read_models = NewReadModels("lookups")
    announcement = privacy_protocol.Announcement(("agent_identity", "contact_identity", "consent"))
    tracing = Tracing()
    config = Config()
    # Notices to agents and admins (services.accounts.notices), sent by a thread of each
    # process (kernel.mail).
    mailer = MailDependency()

    @property
    def settings(self):
        return self.config["LEDGERDESK"]

    # --- tenants ------------------------------------------------------------------------------

    @rpc
    def sign_up(self, request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.SignUpV1, request)
        with self.store.unit_of_work() as uow:
            return handlers.sign_up(command, uow, self.settings)

    @rpc
    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            tenant = handlers.get_tenant(uow, tenant_id)
        # Where its customers' mail opens tickets (services.tickets.mail_in): an id at the
        # inbound domain, naming no one.
        return {**tenant, "support_address": f"{tenant_id}@{self.settings.mail_in_domain}"}

    @rpc
    def cancel_tenant(self, actor: dict[str, str]) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.cancel_tenant(uow, actor["tenant_id"], self.settings)

    @rpc
    def reactivate_tenant(self, actor: dict[str, str]) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.reactivate_tenant(uow, actor["tenant_id"])

    # --- agents and keys ----------------------------------------------------------------------

    # The gateway authenticates from its own projection of these (``gateway.credentials``):
    # one key as it stands, for a key issued elsewhere than through the API, and every key
    # that authenticates someone, page by page, for a rebuild.

    @rpc
    def credential(self, key_id: str) -> dict[str, Any] | None:
        with self.store.unit_of_work() as uow:
            return handlers.credential(uow, key_id)

    @rpc
    def credentials_page(self, after: str | None, limit: int) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.credentials_page(uow, after, limit)

    @rpc
    def create_agent(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.CreateAgentV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.create_agent(uow, actor, command, self.settings)

    @rpc
    def get_agent(self, tenant_id: str, agent_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.get_agent(uow, tenant_id, agent_id)

    @rpc
    def list_agents(
        self, tenant_id: str, limit: int, after: list | None, query: dict | None = None
    ) -> dict[str, Any]:
        filters = load_command(commands.FindAgentsV1, query or {})
        with self.store.unit_of_work() as uow:
            return handlers.list_agents(uow, tenant_id, limit, after, filters)

    @rpc
    def deactivate_agent(self, actor: dict[str, str], agent_id: str) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.deactivate_agent(uow, actor["tenant_id"], agent_id)

    @rpc
    def issue_api_key(self, actor: dict[str, str], agent_id: str) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.issue_api_key(uow, actor, agent_id, self.settings)

    @rpc
    def claim_api_key(self, actor: dict[str, str]) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.claim_api_key(uow, actor, self.settings)

    @rpc
    def revoke_api_key(self, actor: dict[str, str], agent_id: str, key_id: str) -> None:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            handlers.revoke_api_key(uow, actor["tenant_id"], agent_id, key_id)

    @rpc
    def describe_subject(self, tenant_id: str, subject_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.describe_subject(uow, tenant_id, subject_id)

    @rpc
    def billing_contact(self, tenant_id: str) -> dict[str, str]:
        with self.store.unit_of_work() as uow:
            return handlers.billing_contact(uow, tenant_id)

    @rpc
    def mail_recipient(
        self,
        tenant_id: str,
        subject_id: str,
        asked_by: str,
        purpose: str,
        reference_id: str | None = None,
    ) -> dict[str, str]:
        with self.store.unit_of_work() as uow:
            return handlers.mail_recipient(
                uow, tenant_id, subject_id, asked_by, purpose, reference_id
            )

    # --- contacts and consent -----------------------------------------------------------------

    @rpc
    def inbound_contact(self, tenant_id: str, address: str, name: str) -> dict[str, Any]:
        """Who sent tickets an inbound mail: a contact found by address, or made for it."""
        with self.store.unit_of_work("mail-in") as uow:
            return inbound.inbound_contact(uow, tenant_id, address, name)

    @rpc
    def create_contact(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.CreateContactV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.create_contact(uow, actor["tenant_id"], command)

    @rpc
    def get_contact(self, tenant_id: str, contact_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.get_contact(uow, tenant_id, contact_id)

    @rpc
    def list_contacts(
        self, tenant_id: str, limit: int, after: list | None, query: dict | None = None
    ) -> dict[str, Any]:
        filters = load_command(commands.FindContactsV1, query or {})
        with self.store.unit_of_work() as uow:
            return handlers.list_contacts(uow, tenant_id, limit, after, filters)

    @rpc
    def rectify_contact(
        self, actor: dict[str, str], contact_id: str, expected_version: int, request: dict
    ) -> dict[str, Any]:
        changes = load_command(commands.RectifyContactV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.rectify_contact(
                uow, actor["tenant_id"], contact_id, expected_version, changes
            )

    @rpc
    def rectify_subject(
        self, actor: dict[str, str], contact_id: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        changes = load_command(commands.RectifyContactV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.rectify_subject(uow, actor["tenant_id"], contact_id, changes)

    @rpc
    def set_consent(
        self, actor: dict[str, str], contact_id: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        command = load_command(commands.SetConsentV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.set_consent(uow, actor["tenant_id"], contact_id, command)

    @rpc
    def get_consent(self, tenant_id: str, contact_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.get_consent(uow, tenant_id, contact_id)

    # --- policies -----------------------------------------------------------------------------

    @rpc
    def current_policy(self) -> dict[str, str]:
        with self.store.unit_of_work() as uow:
            return handlers.current_policy(uow)

    @rpc
    def publish_policy(self, request: dict[str, Any]) -> dict[str, str]:
        command = load_command(commands.PublishPolicyV1, request)
        with self.store.unit_of_work("operator") as uow:
            return handlers.publish_policy(uow, command)

    @rpc
    def accept_policy(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.AcceptPolicyV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.accept_policy(uow, actor, command)

    @rpc
    def policy_status(self, tenant_id: str, agent_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.policy_status(uow, tenant_id, agent_id)

    @timer(interval=notices.POLICY_POLL_SECONDS)
    def mail_policy_notices(self) -> None:
        """Work through a published version's mailing, a page per transaction, until done."""
        while True:
            with self.store.unit_of_work(self.name) as uow:
                looked_at = notices.work_policy_notices(uow, self.mailer, self.settings.console_url)
            if not looked_at:
                return

    @consume_events(RETENTION)
    def privacy_request_notice(self, event: Envelope) -> None:
        """A privacy request awaiting approval, completed or failed: the tenant's admins are
        mailed, once per delivery (the inbox) and once per request and state (the mail)."""
        event_type = RETENTION_MESSAGES[event.type]
        # A version not declared, or a payload it does not read: dead-lettered, not guessed.
        event_type.validate(event.payload, event.schema_version)
        payload, _ = event_type.upcast(dict(event.payload), event.schema_version)
        with self.store.unit_of_work(self.name) as uow:
            if uow.first_delivery("accounts.privacy_request_notice", event.event_id):
                notices.privacy_request_update(
                    uow, self.mailer, self.settings.console_url, event.type, payload
                )

    @rpc
    def pending_acceptance(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.pending_acceptance(uow, tenant_id)

    # --- personal-data breaches ---------------------------------------------------------------

    @rpc
    def declare_incident(self, request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.DeclareIncidentV1, request)
        with self.store.unit_of_work("operator") as uow:
            return incidents.declare(uow, self.mailer, command)

    @rpc
    def operator_incident(self, incident_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return incidents.operator_view(uow, incident_id)

    @rpc
    def operator_incidents(self, limit: int, after: list | None) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return incidents.operator_list(uow, limit, after)

    @rpc
    def tenant_incident(self, tenant_id: str, incident_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return incidents.tenant_view(uow, tenant_id, incident_id)

    @rpc
    def tenant_incidents(self, tenant_id: str, limit: int, after: list | None) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return incidents.tenant_list(uow, tenant_id, limit, after)

    @rpc
    def acknowledge_incident(self, actor: dict[str, str], incident_id: str) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            notice, recorded = incidents.acknowledge(uow, actor, incident_id)
            return {**notice, "recorded": recorded}

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow, self.name, event, privacy.handlers_for(self.store.cipher)
            )

    # --- operations ---------------------------------------------------------------------------

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
