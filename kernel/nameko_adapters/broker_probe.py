"""Whether the broker answers, asked on one connection a process keeps for it
(``kernel.observability.BrokerCheck``): a service's entrypoints that report health (the
gateway's ``/readyz`` and the operator's health view) would otherwise open, authenticate and close
a broker connection on every call, and readiness is probed every few seconds."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from kernel.nameko_adapters.common import settings_of
from kernel.observability import BrokerCheck


class BrokerProbe(DependencyProvider):
    def setup(self) -> None:
        settings = settings_of(self.container)
        self.check = BrokerCheck(
            settings.amqp_uri,
            f"{self.container.service_name} health",
            ssl=settings.amqp_ssl,
            heartbeat=settings.heartbeat,
        )
        self._beats: Any = None

    def start(self) -> None:
        self._beats = self.container.spawn_managed_thread(self.check.run_beats)

    def stop(self) -> None:
        self.kill()

    def kill(self) -> None:
        if self._beats is not None:
            self._beats.kill()
            self._beats = None
        self.check.close()

    def get_dependency(self, worker_ctx: Any) -> BrokerCheck:
        return self.check
