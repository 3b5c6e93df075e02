"""The accounts service: thin nameko entrypoints over the handlers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marshmallow import ValidationError
from nameko.dependency_providers import Config

from kernel.errors import ValidationFailed
from kernel.nameko_adapters import EventStoreDependency, rpc
from kernel.tracing import Tracing
from services.accounts import handlers
from services.accounts.commands import SignUpV1
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS


class AccountsService:
    name = "accounts"

    store = EventStoreDependency(
        REGISTRY, PROJECTIONS, migrations=Path(__file__).parent / "migrations"
    )
    tracing = Tracing()
    config = Config()

    @rpc
    def sign_up(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            command = SignUpV1().load(request)
        except ValidationError as exc:
            raise ValidationFailed(exc.normalized_messages()) from None
        with self.store.unit_of_work() as uow:
            return handlers.sign_up(command, uow, self.config["LEDGERDESK"])

    @rpc
    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        with self.store.unit_of_work() as uow:
            return handlers.get_tenant(uow, tenant_id)

    @rpc
    def authenticate(self, api_key: str) -> dict[str, str]:
        with self.store.unit_of_work() as uow:
            return handlers.authenticate(uow, self.config["LEDGERDESK"], api_key)

    @rpc
    def health(self) -> dict[str, bool]:
        return {"database": self.store.db.ping()}
