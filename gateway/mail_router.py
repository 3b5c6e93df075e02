"""The router's inbound mail front: mail to ``<tenant id>@<mail domain>`` handed on to the
listener of the cell holding that tenant, found in the directory (``gateway.directory``).

It keeps nothing: a mail is held in memory while its cell takes it, and the cell's answer is
the front's (a 451 from the cell stays a 451, so the relay retries). A transaction takes one
recipient: every further RCPT is answered 452, which tells the relay to send the mail again to
the rest. Answering by region (250 to a second recipient of the first one's region, 452 to
another's) would tell anyone whether two tenants share a region.

The cells' listeners see the router as their only peer, so the front limits mails per peer
itself, with the listeners' limits (``LEDGERDESK_MAIL_IN_PEER_RATE`` and ``_BURST``, 451 past
them). Logs carry reply codes, never an address.

``stop`` is graceful: the front stops accepting, answers a new transaction 421 (the relay keeps
the mail and tries later), and lets the sessions in progress finish within the router's grace
before it cuts what is left.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import threading
import time
import urllib.parse

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.directory import Directory
from kernel.config import Settings
from kernel.mail.listener import THROTTLED
from kernel.ratelimit import TokenBuckets

log = logging.getLogger("gateway.mail_router")


ONE_RECIPIENT = "452 4.5.3 One recipient per message: send the rest again"
STOPPING = "421 4.3.2 Shutting down: try again later"


class _Front:
    def __init__(
        self,
        directory: Directory,
        cells: dict[str, str],
        domain: str,
        timeout: float,
        peers: TokenBuckets,
    ):
        self.directory = directory
        self.cells = cells
        self.domain = domain
        self.timeout = timeout
        self.peers = peers
        # Connections open, counted on the front's loop and waited on by ``stop``'s thread.
        self.open = 0
        self.idle = threading.Condition()
        self.stopping = False

    def opened(self) -> None:
        with self.idle:
            self.open += 1

    def closed(self) -> None:
        with self.idle:
            self.open -= 1
            self.idle.notify_all()

    def wait_idle(self, grace: float) -> bool:
        deadline = time.monotonic() + grace
        with self.idle:
            while self.open > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True

    async def handle_MAIL(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        """A mail's start takes a token from its peer's bucket: past it, 451, so the relay
        keeps the mail and tries later."""
        if self.stopping:
            # Closed once the answer is written (a transport flushes before it closes): a
            # relay holding the connection open would keep the stop waiting for nothing.
            if server.transport is not None:
                asyncio.get_running_loop().call_soon(server.transport.close)
            return STOPPING
        peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else ""
        if not self.peers.take(str(peer)):
            log.info("mail front: 4.7.1 rate limited")
            return THROTTLED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if envelope.rcpt_tos:
            # Before any lookup: the answer is the same whoever the recipients are.
            return ONE_RECIPIENT
        local, _, domain = address.rpartition("@")
        if not local or domain.lower() != self.domain:
            return "550 5.1.1 No such mailbox here"
        loop = asyncio.get_running_loop()
        try:
            region = await loop.run_in_executor(None, self.directory.region_of, local)
            moving = region is not None and await loop.run_in_executor(
                None, self.directory.moving, local
            )
        except Exception:  # noqa: BLE001 - the directory unreachable: the relay tries again
            log.warning("mail front: directory unavailable (451)")
            return "451 4.3.0 Try again later"
        if region is None or region not in self.cells:
            return "550 5.1.1 No such mailbox here"
        if moving:
            # The tenant is between cells (services.tenant_move): the relay sends it again
            # once the move is cut over, to the tenant's new cell.
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        loop = asyncio.get_running_loop()
        # Asked again: a move may have begun (or been cut over) since RCPT, and a mail handed to
        # the cell the tenant is leaving would be lost with that cell's copy.
        local = envelope.rcpt_tos[0].rpartition("@")[0]
        try:
            region = await loop.run_in_executor(None, self.directory.region_of, local)
            moving = await loop.run_in_executor(None, self.directory.moving, local)
        except Exception:  # noqa: BLE001 - the directory unreachable: the relay tries again
            log.warning("mail front: directory unavailable (451)")
            return "451 4.3.0 Try again later"
        if moving or region is None or region not in self.cells:
            return "451 4.3.0 Try again later"
        reply = await loop.run_in_executor(
            None, self._hand_on, region, envelope.mail_from or "", list(envelope.rcpt_tos), raw
        )
        log.info("mail front: region=%s reply=%s", region, reply[:3])
        return reply

    def _hand_on(self, region: str, sender: str, recipients: list[str], raw: bytes) -> str:
        """The mail to its cell's listener; the cell's reply, or 451 if it cannot be reached."""
        parts = urllib.parse.urlsplit(self.cells[region])
        kind = smtplib.LMTP if parts.scheme == "lmtp" else smtplib.SMTP
        try:
            with kind(
                parts.hostname or "127.0.0.1", parts.port or 25, timeout=self.timeout
            ) as cell:
                refused = cell.sendmail(sender, recipients, raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, message = next(iter(exc.recipients.values()))
            return f"{code} {_text(message)}"
        except smtplib.SMTPResponseException as exc:
            return f"{exc.smtp_code} {_text(exc.smtp_error)}"
        except (OSError, smtplib.SMTPException):
            return "451 4.3.0 Try again later"
        if refused:
            # Some recipients refused after DATA (LMTP): the relay retries what a 4xx names.
            code, message = next(iter(refused.values()))
            return f"{code} {_text(message)}"
        return "250 2.0.0 OK"


class _Session(SMTP):
    """A session that tells the front when its connection opens and closes."""

    def __init__(self, handler: _Front, **kwargs: object) -> None:
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self.front = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front.opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.front.closed()


class FrontController(Controller):
    def factory(self) -> SMTP:
        return _Session(self.handler, **self.SMTP_kwargs)


def _text(message: bytes | str) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else message


def start(settings: Settings, directory: Directory, timeout: float = 60.0) -> Controller | None:
    """The front on the mail in host and port, when the router has cells' listeners to hand
    mail on to (``LEDGERDESK_CELLS_MAIL_IN``); None otherwise."""
    if not settings.cells_mail_in or not settings.mail_in_port:
        return None
    # aiosmtpd logs envelope addresses at info: silenced, as the cells' listeners do.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    domain = settings.mail_in_domain.lower()
    controller = FrontController(
        _Front(
            directory,
            settings.cells_mail_in,
            domain,
            timeout,
            TokenBuckets(settings.mail_in_peer_rate, settings.mail_in_peer_burst),
        ),
        hostname=settings.mail_in_host,
        port=settings.mail_in_port,
        data_size_limit=settings.mail_in_max_bytes,
        server_hostname=domain,
        ident="Ledgerdesk",
    )
    controller.start()
    return controller


def stop(controller: Controller, grace: float) -> bool:
    """Stop accepting, refuse new transactions, let the sessions in progress end within
    ``grace`` seconds, then stop; False when some were cut."""
    front: _Front = controller.handler
    front.stopping = True
    server = controller.server
    if server is not None:
        # Closing the listening socket leaves the connections it accepted open.
        controller.loop.call_soon_threadsafe(server.close)
    drained = front.wait_idle(grace)
    controller.stop()
    return drained
