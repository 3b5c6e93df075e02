"""The RPCs every mail-sending service answers, over its ``mail_outbox``: a mixin of the
service's nameko class (it has the ``store`` of ``kernel.nameko_adapters.store``). The services
that send mail are listed once, in ``kernel.platform.SENDS_MAIL``; the gateway asks each."""

from __future__ import annotations

from typing import Any

from kernel.mail.outbox import listing, tenant_page
from kernel.nameko_adapters.rpc import rpc


class MailOutboxEntrypoints:
    store: Any

    @rpc
    def mail_outbox(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The mails queued, sent or failed of every tenant (ids, states, codes): the
        operators' view."""
        with self.store.db.read() as cur:
            return listing(cur, status, limit)

    @rpc
    def tenant_mail(
        self, tenant_id: str, status: str | None, limit: int, after: list | None
    ) -> dict[str, Any]:
        """One page of a tenant's mails, oldest first (``GET /v1/mail``): ids, states, codes
        and times, never an address or a text."""
        with self.store.db.read() as cur:
            return tenant_page(cur, tenant_id, status, limit, after)
