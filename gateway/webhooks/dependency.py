"""The gateway's webhooks dependency: the endpoints and the delivery log for its routes and
its event consumer, and the dispatcher that sends what is due, in a thread of the process's own
(it never takes one of the workers that serve requests)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from nameko.extensions import DependencyProvider

from gateway.http import GatewayStore
from gateway.webhooks import addresses
from gateway.webhooks.dispatcher import Dispatcher
from gateway.webhooks.store import Webhooks
from kernel.nameko_adapters.common import settings_of

log = logging.getLogger(__name__)


class WebhookDependency(DependencyProvider):
    gateway_store = GatewayStore()

    def setup(self) -> None:
        self.settings = settings_of(self.container)
        self.policy = addresses.Policy(
            self.settings.webhook_allow_http, self.settings.webhook_allow_private
        )
        self._webhooks: Webhooks | None = None
        self.dispatcher: Dispatcher | None = None
        self._thread: Any = None

    def start(self) -> None:
        store = self.gateway_store.store()
        assert store.cipher is not None
        self.dispatcher = Dispatcher.of(store.db, store.cipher.keystore, self.settings)
        self._thread = self.container.spawn_managed_thread(self.dispatcher.run)

    def stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self._thread is not None:
            self._thread.kill()
            self._thread = None

    def kill(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None

    def webhooks(self) -> Webhooks:
        if self._webhooks is None:
            store = self.gateway_store.store()
            assert store.cipher is not None
            # A finished delivery stays in the log for days of LEDGERDESK_DAY_SECONDS.
            period = dt.timedelta(
                seconds=self.settings.webhook_log_days * self.settings.day_seconds
            )
            self._webhooks = Webhooks(
                store.db,
                store.cipher.keystore,
                self.policy,
                log_period=period,
                secret_grace=dt.timedelta(hours=self.settings.webhook_secret_grace_hours),
            )
        return self._webhooks

    def get_dependency(self, worker_ctx: Any) -> Webhooks:
        return self.webhooks()
