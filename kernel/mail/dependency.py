"""The mail sender in a thread of a nameko service's own (it never takes a worker), over the
service's store: its database and keystore (``kernel.mail.sender``)."""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.extensions import DependencyProvider

from kernel.mail.message import domain_of
from kernel.mail.outbox import Mailer
from kernel.mail.sender import MailSender
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.store import store_of


class MailDependency(DependencyProvider):
    def setup(self) -> None:
        self.settings = settings_of(self.container)
        self.domain = domain_of(self.settings.mail_from)
        self.sender: MailSender | None = None
        self._thread: Any = None

    def start(self) -> None:
        store = store_of(self.container)
        assert store.cipher is not None
        self.sender = MailSender.of(
            self.container.service_name,
            store.db,
            store.cipher.keystore,
            self.settings,
            sleep=eventlet.sleep,
        )
        self._thread = self.container.spawn_managed_thread(self.sender.run)

    def stop(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self._thread is not None:
            # A mail being sent finishes within the SMTP timeout's steps; then the thread ends.
            with eventlet.Timeout(self.settings.smtp_timeout_seconds * 4 + 1, False):
                self._thread.wait()
            self._thread.kill()
            self._thread = None

    def kill(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None

    def get_dependency(self, worker_ctx: Any) -> Mailer:
        store = store_of(self.container)
        assert store.cipher is not None
        return Mailer(store.cipher.keystore, self.settings.mail_from, self.domain)
