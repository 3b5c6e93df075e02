"""The tickets service: thin nameko entrypoints over the handlers."""

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
from kernel.envelope import Envelope
from kernel.forgetting import Forgetting
from kernel.mail import listener
from kernel.mail.dependency import MailDependency
from kernel.mail.entrypoints import MailOutboxEntrypoints
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.proxy import TimedRpcProxy
from kernel.nameko_adapters.rpc import rpc
from kernel.nameko_adapters.store import EventStoreDependency, NewReadModels, store_of
from kernel.observability import service_health
from kernel.tracing import Tracing
from services.tickets import (
    attachments,
    chunk_store,
    commands,
    handlers,
    mail,
    mail_in,
    privacy,
    sealed,
    search,
    tenant_export,
)
from services.tickets.attachment_store import AttachmentStore
from services.tickets.events import REGISTRY
from services.tickets.projections import PROJECTIONS
from services.tickets.subscriptions import ACCOUNTS, PRIVACY


class SealedTags(DependencyProvider):
    """On start: the tags an older release wrote in plaintext recorded again under their
    tickets' keys (see ``sealed``)."""

    def start(self) -> None:
        store = store_of(self.container)
        sealed.seal_all(lambda: store.unit_of_work(self.container.service_name))


class ChunkStoreChoice(DependencyProvider):
    """On setup: where attachments' chunks live (LEDGERDESK_ATTACHMENT_STORE), a configured
    bucket checked to exist, so a wrong endpoint or bucket stops the start rather than the first
    upload or erasure."""

    def setup(self) -> None:
        chunk_store.configure(settings_of(self.container))


class TicketsService(MailOutboxEntrypoints):
    name = "tickets"

    store = EventStoreDependency(
        REGISTRY,
        PROJECTIONS,
        migrations=Path(__file__).parent / "migrations",
        forgetting=Forgetting(lambda store, settings: privacy.handlers_for(store.cipher)),
    )
    accounts = TimedRpcProxy("accounts")
    tracing = Tracing()
    announcement = privacy_protocol.Announcement(("ticket_text", "message_text"))
    sealed_tags = SealedTags()
    chunks = ChunkStoreChoice()
    # The blind index of tags came with migration 0005, the search index with 0006: each
    # filled once from the events.
    new_read_models = NewReadModels("ticket_tags", "tickets_search")
    config = Config()
    # Public replies mailed to requesters, sent by a thread of each process (kernel.mail).
    mailer = MailDependency()

    def _lookup(self, tenant_id: str, subject_id: str) -> dict[str, Any]:
        return self.accounts.describe_subject(tenant_id, subject_id)

    @rpc
    def create_ticket(self, actor: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
        command = load_command(commands.CreateTicketV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.create_ticket(uow, self._lookup, actor["tenant_id"], command)

    @rpc
    def get_ticket(self, actor: dict[str, str], ticket_id: str) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.get_ticket(uow, actor["tenant_id"], ticket_id, actor["agent_id"])

    @rpc
    def list_tickets(
        self, tenant_id: str, query: dict[str, str], limit: int, after: list | None
    ) -> dict[str, Any]:
        filters = load_command(commands.FindTicketsV1, query)
        with self.store.unit_of_work() as uow:
            return handlers.list_tickets(uow, tenant_id, filters, limit, after)

    @rpc
    def search_tickets(
        self, actor: dict[str, str], query: dict[str, str], limit: int, after: list | None
    ) -> dict[str, Any]:
        loaded = load_command(commands.SearchTicketsV1, query)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return search.search_tickets(uow, actor, loaded, limit, after)

    @rpc
    def update_ticket(
        self, actor: dict[str, str], ticket_id: str, expected_version: int, request: dict
    ) -> dict[str, Any]:
        changes = load_command(commands.UpdateTicketV1, request)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return handlers.update_ticket(
                uow, self._lookup, actor["tenant_id"], ticket_id, expected_version, changes
            )

    @rpc
    def add_message(
        self, actor: dict[str, str], ticket_id: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        command = load_command(commands.AddMessageV1, request)
        tenant_id = actor["tenant_id"]
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            added = handlers.add_message(
                uow, tenant_id, ticket_id, actor["agent_id"], command, self._limits().per_message
            )
            # In the reply's own transaction: mailed if and only if it is recorded.
            mail.mail_reply(
                uow, self.mailer, self._recipient, tenant_id, added, self._support(tenant_id)
            )
            return added

    def _support(self, tenant_id: str) -> str:
        return mail_in.support_address(tenant_id, self.config["LEDGERDESK"].mail_in_domain)

    # --- mail in: the listener's workers (kernel.mail.listener, services.tickets.mail_in)

    @listener.mail_in(listener.RECIPIENT)
    def mail_recipient_tenant(self, local_part: str) -> str:
        """The tenant a support address names, if it takes mail."""
        tenant_id = mail_in.tenant_of(local_part)
        mail_in.check_tenant(self.accounts.get_tenant(tenant_id))
        return tenant_id

    @listener.mail_in(listener.MESSAGE)
    def receive_mail(self, tenant_id: str, received: dict[str, Any]) -> dict[str, Any]:
        with self.store.unit_of_work("mail-in") as uow:
            return mail_in.receive(
                uow,
                self._sender,
                self._lookup,
                tenant_id,
                received,
                self._limits(),
                self.mailer.domain,
            )

    def _sender(self, tenant_id: str, address: str, name: str) -> dict[str, Any]:
        return self.accounts.inbound_contact(tenant_id, address, name)

    @timer(interval=Settings.from_env(service="tickets").schedule_seconds)
    def forget_received_mail(self) -> None:
        """Idempotency records past LEDGERDESK_MAIL_IN_DEDUP_DAYS."""
        settings = self.config["LEDGERDESK"]
        with self.store.unit_of_work(self.name) as uow:
            mail_in.forget_expired(
                uow.cur,
                dt.timedelta(seconds=settings.mail_in_dedup_days * settings.day_seconds),
            )

    def _recipient(self, tenant_id: str, subject_id: str, reference_id: str) -> dict[str, str]:
        return self.accounts.mail_recipient(
            tenant_id, subject_id, self.name, mail.KIND, reference_id
        )

    # --- attachments: uploaded and downloaded a chunk per call (services.tickets.attachments)

    def _limits(self) -> attachments.Limits:
        return attachments.Limits.of(self.config["LEDGERDESK"])

    @rpc
    def begin_attachment(self, actor: dict[str, str], ticket_id: str) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return attachments.begin_upload(
                uow, actor["tenant_id"], ticket_id, actor["agent_id"], self._limits()
            )

    @rpc
    def put_attachment_chunk(
        self, actor: dict[str, str], attachment_id: str, seq: int, data: str
    ) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return attachments.put_chunk(
                uow, actor["tenant_id"], attachment_id, seq, data, self._limits()
            )

    @rpc
    def finish_attachment(
        self, actor: dict[str, str], attachment_id: str, query: dict[str, Any]
    ) -> dict[str, Any]:
        loaded = load_command(commands.UploadAttachmentV1, query)
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return attachments.finish_upload(uow, actor["tenant_id"], attachment_id, loaded)

    @rpc
    def discard_attachment(self, actor: dict[str, str], attachment_id: str) -> None:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            attachments.discard_upload(uow, actor["tenant_id"], attachment_id)

    @rpc
    def attachment_for_download(
        self, actor: dict[str, str], ticket_id: str, attachment_id: str
    ) -> dict[str, Any]:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return attachments.for_download(uow, actor["tenant_id"], ticket_id, attachment_id)

    @rpc
    def attachment_chunk(self, actor: dict[str, str], attachment_id: str, seq: int) -> str:
        with self.store.unit_of_work(actor["agent_id"]) as uow:
            return attachments.chunk(uow, actor["tenant_id"], attachment_id, seq)

    @timer(interval=Settings.from_env(service="tickets").schedule_seconds)
    def purge_unattached_attachments(self) -> None:
        """Uploads no message named within a day (of LEDGERDESK_DAY_SECONDS)."""
        with self.store.unit_of_work(self.name) as uow:
            AttachmentStore(uow.cur, uow.cipher).purge_unattached(
                self.config["LEDGERDESK"].day_seconds
            )

    @timer(interval=Settings.from_env(service="tickets").schedule_seconds)
    def sweep_erased_leftovers(self) -> None:
        """Index rows a write committed after its subject's erasure (privacy.sweep_...)."""
        with self.store.unit_of_work(self.name) as uow:
            privacy.sweep_erased_leftovers(uow.cur)

    @consume_events(ACCOUNTS)
    def learn_from_accounts(self, event: Envelope) -> None:
        with self.store.unit_of_work() as uow:
            if uow.first_delivery("tickets.learn_from_accounts", event.event_id):
                handlers.learn_subject(uow, event)

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow, self.name, event, privacy.handlers_for(self.store.cipher)
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
    def export_file_chunk(self, tenant_id: str, kind: str, file_id: str, seq: int) -> str:
        """A chunk of a file named by a page of a whole export (``kernel.tenant_export``)."""
        with self.store.unit_of_work() as uow:
            return tenant_export.file_chunk(uow, tenant_id, kind, file_id, seq)

    @timer(interval=Settings.from_env(service="tickets").schedule_seconds)
    def seal_plaintext_tags(self) -> None:
        """What an older replica writes in plaintext during a rolling upgrade."""
        sealed.seal_all(lambda: self.store.unit_of_work(self.name), plaintext_only=True)

    @rpc
    def health(self) -> dict[str, Any]:
        return service_health(self.store.db)
