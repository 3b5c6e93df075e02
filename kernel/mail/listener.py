"""The inbound mail listener: an SMTP or LMTP server (aiosmtpd) inside a nameko service, whose
mail is handed to the service's entrypoints as workers, like an RPC call's.

A service declares two methods: ``@mail_in(RECIPIENT)`` takes the local part of an address at
``LEDGERDESK_MAIL_IN_DOMAIN`` and answers who it names (or raises ``NotFound``, ``Gone``);
``@mail_in(MESSAGE)`` takes that answer and a parsed mail (``kernel.mail.inbound``) and stores
it. The listener is thin: it checks the envelope (the domain, how many recipients), refuses
what ``inbound.parse`` refuses, drops bounces and auto-replies (counted, never logged with an
address), and turns a worker's outcome into the SMTP reply. A mail is answered 250 only once
every recipient's worker committed; any failure other than a refusal (the database, accounts
unreachable) is 451 4.3.0, so the relay tries again, and the service's idempotency record
makes the retry harmless.

Every replica of the service listens on the same port (``SO_REUSEPORT``): the kernel spreads
connections over them, as it does the gateway's. ``LEDGERDESK_MAIL_IN_PORT=0`` starts no
listener (the test worlds, which run many stacks on one machine, set it per test).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import eventlet
import eventlet.tpool
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session
from nameko.extensions import Entrypoint, SharedExtension
from prometheus_client import Counter

from kernel.errors import (
    ChangedMeanwhile,
    Conflict,
    Gone,
    NotFound,
    RetryLater,
    SubjectErased,
    ValidationFailed,
)
from kernel.mail import inbound
from kernel.nameko_adapters.common import settings_of
from kernel.ratelimit import TokenBuckets

log = logging.getLogger(__name__)

RECIPIENT = "recipient"
MESSAGE = "message"

RECEIVED = Counter(
    "ledgerdesk_mail_in_total",
    "Inbound mails, by outcome: stored (ticketed), duplicate (a re-sent mail already stored),"
    " bounce and auto-reply (accepted, dropped), refused (5xx), deferred (4xx)",
    ["outcome"],
)


class Deferred(Exception):
    """A worker failed for a reason that may pass (a dependency down): 451, try later."""


class _Controller(Controller):
    """aiosmtpd's controller, its socket shared with the other replicas (``SO_REUSEPORT``)
    and speaking LMTP when asked."""

    def __init__(self, handler: Any, lmtp: bool, **kwargs: Any):
        self.lmtp = lmtp
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return (LMTP if self.lmtp else SMTP)(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, reuse_port=True
        )


class MailInServer(SharedExtension):
    """One listener per process, shared by the service's ``mail_in`` entrypoints."""

    def __init__(self) -> None:
        super().__init__()
        # Filled by the entrypoints' setup, which nameko may run before this extension's.
        self.entrypoints: dict[str, MailInEntrypoint] = {}
        self.controller: _Controller | None = None

    def setup(self) -> None:
        self.settings = settings_of(self.container)
        self.limits = inbound.Limits.of(self.settings)
        self.domain = self.settings.mail_in_domain.lower()
        self.peers = TokenBuckets(self.settings.mail_in_peer_rate, self.settings.mail_in_peer_burst)
        self.senders = TokenBuckets(
            self.settings.mail_in_sender_rate, self.settings.mail_in_sender_burst
        )

    def register(self, entrypoint: MailInEntrypoint) -> None:
        self.entrypoints[entrypoint.kind] = entrypoint

    def start(self) -> None:
        if not self.settings.mail_in_port or self.controller is not None:
            return
        # aiosmtpd logs every session's commands and envelope addresses at info, and quotes
        # them in its warnings: its log is silenced, and the listener logs outcomes by code.
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        self.controller = _Controller(
            _Handler(self),
            lmtp=self.settings.mail_in_protocol == "lmtp",
            hostname=self.settings.mail_in_host,
            port=self.settings.mail_in_port,
            data_size_limit=self.limits.message_bytes,
            server_hostname=self.domain,
            ident="Ledgerdesk",
        )
        self.controller.start()
        log.info(
            "mail in: %s on %s:%s",
            self.settings.mail_in_protocol.upper(),
            self.settings.mail_in_host,
            self.settings.mail_in_port,
        )

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def kill(self) -> None:
        self.stop()

    def call(self, kind: str, *args: Any) -> Any:
        """Run the service's ``kind`` entrypoint as a worker and wait for its result (from the
        event loop's executor: the wait is green, the loop keeps serving other sessions)."""
        return self.entrypoints[kind].run(*args)


class MailInEntrypoint(Entrypoint):
    server = MailInServer()

    def __init__(self, kind: str, **kwargs: Any):
        self.kind = kind
        # A refusal is an answer, not a fault: logged in one line (kernel.runner).
        super().__init__(
            expected_exceptions=(NotFound, Gone, Conflict, ValidationFailed, inbound.Refused)
        )

    def setup(self) -> None:
        self.server.register(self)

    def stop(self) -> None:
        # Entrypoints stop first, before in-flight workers are waited for: no new mail is
        # taken. A session cut mid-DATA gets no reply, so its relay tries again (and a mail
        # whose worker still commits is recognised then by its idempotency record).
        self.server.stop()

    def run(self, *args: Any) -> Any:
        done: eventlet.event.Event = eventlet.event.Event()

        def handle_result(worker_ctx: Any, result: Any, exc_info: Any) -> tuple[Any, Any]:
            done.send((result, exc_info))
            return result, exc_info

        self.container.spawn_worker(self, args, {}, context_data={}, handle_result=handle_result)
        result, exc_info = done.wait()
        if exc_info is not None:
            raise exc_info[1]
        return result


def mail_in(kind: str) -> Callable:
    """``@mail_in(RECIPIENT)`` or ``@mail_in(MESSAGE)`` on a service's method."""
    return MailInEntrypoint.decorator(kind)


# Conflicts a retry may not meet (a lost race, a state that comes about by itself, a person
# erased meanwhile, whose mail is then a new contact's): the relay keeps the mail and retries.
_PASSING = (RetryLater, ChangedMeanwhile, SubjectErased)
TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
THROTTLED = "451 4.7.1 Too many messages, please try again later"
# A policy refusal's text is fixed: its reason may be a person's (a restricted contact's data
# takes no new processing, Art. 18), which the sender, whoever they are, is not told.
POLICY_REFUSED = "550 5.7.1 Message refused"


def reply_for(exc: BaseException) -> str:
    """The SMTP reply a worker's failure earns: a refusal for good, or 451 to try later. The
    texts are fixed per reply, never an exception's own: a refusal for a limit or a defect
    names it (``inbound.Refused``), nothing else is repeated."""
    if isinstance(exc, inbound.Refused):
        return POLICY_REFUSED if exc.status == "5.7.1" else exc.reply
    if isinstance(exc, NotFound):
        return "550 5.1.1 No such mailbox here"
    if isinstance(exc, Gone):
        return "550 5.2.1 This helpdesk no longer accepts mail: its account is cancelled"
    if isinstance(exc, _PASSING):
        return TRY_LATER
    if isinstance(exc, Conflict):
        return POLICY_REFUSED
    if isinstance(exc, ValidationFailed):  # the mail's content, which a retry cannot change
        return "554 5.6.0 The mail could not be stored as a ticket"
    return TRY_LATER


class _Handler:
    """aiosmtpd's hooks: the envelope checked here, the rest by the service's workers."""

    def __init__(self, server: MailInServer):
        self.server = server

    async def _call(self, kind: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.server.call, kind, *args)

    async def _parse(self, raw: bytes, sender: str) -> inbound.Inbound:
        """``inbound.parse`` off the loop, in an OS thread (eventlet's pool): a mail's parsing
        is CPU work, which on the loop (or in a green thread) would hold every other session
        and the process's workers until it ended."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, eventlet.tpool.execute, inbound.parse, raw, sender, self.server.limits
        )

    async def handle_MAIL(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        """A mail's start takes a token from its peer's bucket and its sender's: past either,
        451, so the relay keeps the mail and tries later (a bounce's null sender shares one)."""
        peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else ""
        # Addresses are kept in memory as digests only: a bucket's key names no one in a dump.
        sender = hashlib.sha256(address.lower().encode()).hexdigest()
        # The sender's first: one address's flood then spends none of the relay's budget.
        if not self.server.senders.take(sender) or not self.server.peers.take(str(peer)):
            RECEIVED.labels("deferred").inc()
            log.info("mail in deferred: 4.7.1 rate limited")
            return THROTTLED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if len(envelope.rcpt_tos) >= self.server.limits.recipients:
            return f"452 4.5.3 Too many recipients (at most {self.server.limits.recipients})"
        local, _, domain = address.rpartition("@")
        if not local or domain.lower() != self.server.domain:
            return "550 5.1.1 No such mailbox here"
        try:
            key = await self._call(RECIPIENT, local.lower())
        except Exception as exc:  # noqa: BLE001 - every failure becomes its SMTP reply
            return reply_for(exc)
        envelope.rcpt_tos.append(address)
        # Whom each accepted address names, in the order of rcpt_tos.
        keys = getattr(envelope, "ledgerdesk_keys", [])
        keys.append(key)
        envelope.ledgerdesk_keys = keys  # type: ignore[attr-defined]
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        keys: list[Any] = getattr(envelope, "ledgerdesk_keys", [])
        content = envelope.original_content or envelope.content or b""
        raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        sender = envelope.mail_from or ""
        try:
            mail = await self._parse(raw, sender)
        except inbound.Refused as refused:
            RECEIVED.labels("refused").inc()
            log.info("mail in refused: %s %s", refused.status, type(refused).__name__)
            return self._each(server, keys, refused.reply)
        if mail.automatic:
            RECEIVED.labels(mail.automatic).inc()
            log.info("mail in dropped: %s", mail.automatic)
            return self._each(server, keys, f"250 2.0.0 Accepted, not ticketed ({mail.automatic})")
        replies = []
        for key in keys:
            try:
                outcome = await self._call(MESSAGE, key, mail.as_rpc())
            except Exception as exc:  # noqa: BLE001 - every failure becomes its SMTP reply
                reply = reply_for(exc)
                RECEIVED.labels("refused" if reply.startswith("5") else "deferred").inc()
                log.info("mail in not stored: %s (%s)", reply[:9], type(exc).__name__)
                replies.append(reply)
                continue
            RECEIVED.labels(outcome.get("outcome", "stored")).inc()
            replies.append("250 2.0.0 Accepted")
        if isinstance(server, LMTP):
            return "\r\n".join(replies)  # LMTP: one reply per recipient, in order
        # SMTP has one reply for all: a failure for any is the mail's (a retry re-delivers to
        # those stored already, which their idempotency record answers).
        failed = [r for r in replies if not r.startswith("2")]
        temporary = [r for r in failed if r.startswith("4")]
        return (temporary or failed or replies)[0]

    @staticmethod
    def _each(server: SMTP, keys: list[Any], reply: str) -> str:
        if isinstance(server, LMTP):
            return "\r\n".join(reply for _ in keys) or reply
        return reply
