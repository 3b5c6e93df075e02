"""The gateway: the one HTTP entry. Authenticates, scopes to the key's tenant, enforces roles,
validates, limits and calls the services; one method per endpoint, each a few lines.

The routes live by resource in ``gateway.routes``, each declaring itself on its ``@api``
decorator; this class combines them with the dependencies they use, answers the privacy
protocol for the responses the gateway stores, and serves its own health and the OpenAPI
document, which is built from its routes (``ROUTES``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

from kombu import Connection
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from werkzeug.wrappers import Request, Response

from gateway import credentials, privacy
from gateway.console import HEADERS, ConsoleRoutes
from gateway.edge import Edge, GatewayLimits
from gateway.http import GatewayStore, api, json_response
from gateway.idempotency import MIGRATIONS, IdempotencyStore
from gateway.openapi import build_spec
from gateway.operations import OperationsRoutes
from gateway.ratelimit import RateLimiter
from gateway.reference import ReferenceRoutes, render_reference
from gateway.route import Route, routes_of
from gateway.routes.accounts import AccountRoutes
from gateway.routes.attachments import AttachmentRoutes
from gateway.routes.audit import AuditRoutes
from gateway.routes.billing import BillingRoutes
from gateway.routes.exports import ExportRoutes
from gateway.routes.incidents import IncidentRoutes
from gateway.routes.mail import MailRoutes
from gateway.routes.privacy import PrivacyRoutes
from gateway.routes.retention import RetentionRoutes
from gateway.routes.search import SearchRoutes
from gateway.routes.tickets import TicketRoutes
from gateway.routes.webhooks import WebhookRoutes
from gateway.subscriptions import CREDENTIALS, PRIVACY, WEBHOOKS
from gateway.webhooks.dependency import WebhookDependency
from kernel import privacy as privacy_protocol
from kernel.envelope import Envelope, EventRegistry
from kernel.errors import DomainError, ServiceUnavailable
from kernel.forgetting import Forgetting
from kernel.nameko_adapters.broker_probe import BrokerProbe
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.proxy import TimedRpcProxy
from kernel.nameko_adapters.store import EventStoreDependency
from kernel.platform import SERVICES
from kernel.signed_note import PublicKey
from kernel.signing import published_keys
from kernel.tracing import Tracing

log = logging.getLogger(__name__)


class Limits(DependencyProvider):
    """One rate limiter per process for API keys, shared by its workers, with the process's
    per-address limits (``gateway.edge``)."""

    edge = Edge()

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)

    def get_dependency(self, worker_ctx: Any) -> GatewayLimits:
        return GatewayLimits(self.limiter, self.edge)


class AuditKeys(DependencyProvider):
    """The audit public keys and the ledger's origin, from configuration only (never the seed):
    read once at start, so a production gateway without LEDGERDESK_AUDIT_PUBLIC_KEYS does not
    start rather than fail on each request."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.keys = (settings.audit_origin, published_keys(settings))

    def get_dependency(self, worker_ctx: Any) -> tuple[str, tuple[PublicKey, ...]]:
        return self.keys


class Credentials(DependencyProvider):
    """The credentials projection (``gateway.credentials``) over the gateway's database, and
    this process's view of whether accounts' news of credentials is being read."""

    gateway_store = GatewayStore()

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.freshness = credentials.Freshness(settings.credentials_lag_seconds, self.queue_counts)
        self._secret = settings.api_key_secret
        self._heartbeat = settings.heartbeat
        self._projection: credentials.CredentialProjection | None = None
        self._broker: Connection | None = None

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.release()
            self._broker = None

    def get_dependency(self, worker_ctx: Any) -> credentials.CredentialProjection:
        if self._projection is None:
            self._projection = credentials.CredentialProjection(
                self.gateway_store.store().db, self._secret, self.freshness
            )
        return self._projection

    def readiness_checks(self) -> dict[str, bool]:
        """What this process's ``/readyz`` adds: whether it can check keys now."""
        if self._projection is None:
            try:
                self.get_dependency(None)
            except RuntimeError:  # the store is not set up yet
                return {"credentials": False}
        assert self._projection is not None
        return {"credentials": self._projection.trusted()}

    def queue_counts(self) -> tuple[int, int, int]:
        """Messages waiting in the credentials queue, its consumers, and the messages in its
        dead-letter queue (passive declares, on a connection kept for them and opened again
        after a failure)."""
        try:
            if self._broker is None:
                self._broker = Connection(
                    self.container.config["AMQP_URI"],
                    connect_timeout=2,
                    heartbeat=self._heartbeat,
                    ssl=self.container.config.get("AMQP_SSL"),
                )
            # Checked every second: heartbeats go out as the broker expects.
            self._broker.heartbeat_check()
            channel = self._broker.default_channel
            _, waiting, consumers = channel.queue_declare(CREDENTIALS.queue, passive=True)
        except BaseException:
            if self._broker is not None:
                self._broker.release()
                self._broker = None
            raise
        return waiting, consumers, self._dead_letters()

    def _dead_letters(self) -> int:
        """Messages in the credentials queue's dead-letter queue, 0 when it cannot be seen: a
        classic queue, it is out of reach while its node is down (NOT_FOUND closes the
        channel, so it has one of its own), and freshness must not hang on it."""
        assert self._broker is not None
        channel = self._broker.channel()
        try:
            _, dead, _ = channel.queue_declare(CREDENTIALS.dead_letter_queue, passive=True)
            return dead
        except Exception:  # out of reach: no dead letters known
            return 0
        finally:
            with contextlib.suppress(Exception):
                channel.close()


class Idempotency(DependencyProvider):
    gateway_store = GatewayStore()

    def get_dependency(self, worker_ctx: Any) -> IdempotencyStore:
        return self.gateway_store.idempotency()


class GatewayService(
    AccountRoutes,
    IncidentRoutes,
    TicketRoutes,
    AttachmentRoutes,
    SearchRoutes,
    BillingRoutes,
    AuditRoutes,
    PrivacyRoutes,
    RetentionRoutes,
    ExportRoutes,
    WebhookRoutes,
    MailRoutes,
    ConsoleRoutes,
    ReferenceRoutes,
    OperationsRoutes,
):
    """The routes of every resource (``gateway.routes``), and the dependencies they share."""

    name = "gateway"

    # Readiness and the operator's health view ask the broker on one kept connection.
    broker_probe = BrokerProbe()

    # The gateway's own database: idempotency records and the access-log outbox; no events of
    # its own. Its keystore holds the tenant keys that seal stored responses.
    store = EventStoreDependency(
        EventRegistry(),
        migrations=MIGRATIONS,
        forgetting=Forgetting(
            lambda store, settings: privacy.erasure_handlers(store),
            own=credentials.bring_in_line_at_start,
        ),
    )
    announcement = privacy_protocol.Announcement(privacy.CATEGORIES)
    # And an RPC proxy per service of the platform, named as the service (below the class).
    limits = Limits()
    credentials = Credentials()
    audit_keys = AuditKeys()
    idempotency = Idempotency()
    webhooks = WebhookDependency()
    tracing = Tracing()
    config = Config()

    # --- the privacy protocol: the gateway keeps stored responses -----------------------------

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow, self.name, event, privacy.handlers_for(self.store.cipher.keystore)
            )

    # --- the credentials projection ------------------------------------------------------------

    @consume_events(CREDENTIALS)
    def learn_credentials(self, event: Envelope) -> None:
        """Accounts' news of keys, agents and tenants made elsewhere than through this API (or
        by a route whose process died before it applied them): merged, so order and
        repetition change nothing."""
        self.credentials.apply_news(credentials.apply_event, event, self.accounts.credential)

    @timer(interval=1)
    def watch_credentials(self) -> None:
        """Whether accounts' news of credentials is being read: a timer of its own, so that
        a long rebuild or reconciliation never leaves the observation to age."""
        self.credentials.freshness.check()

    @timer(interval=5)
    def keep_credentials(self) -> None:
        """A rebuild when one is asked for, and a reconciliation with accounts every hour (every
        minute while the credentials queue has dead letters), by one process at a time."""
        every = (
            credentials.RECONCILE_WITH_DEAD_LETTERS
            if self.credentials.freshness.dead_letters
            else credentials.RECONCILE_EVERY
        )
        try:
            self.credentials.rebuild_if_needed(self.accounts.credentials_page)
            self.credentials.reconcile_if_due(
                self.accounts.credentials_page, self.accounts.credential, every
            )
        except ServiceUnavailable as exc:
            # Tried again at the next tick; meanwhile keys are refused if it matters.
            log.warning("credentials not brought in line with accounts: %s", exc)

    # --- webhooks -----------------------------------------------------------------------------

    @consume_events(WEBHOOKS)
    def owe_webhooks(self, event: Envelope) -> None:
        """A delivery for each of the tenant's endpoints subscribed to what the event becomes,
        written before the message is acknowledged; the dispatcher sends them."""
        self.webhooks.fan_out(event)

    @timer(interval=60)
    def purge_webhook_log(self) -> None:
        """Finished deliveries leave the log once older than its period, and rotated-out
        secrets go once their grace is over."""
        self.webhooks.purge_expired()
        self.webhooks.expire_previous_secrets()

    # --- operations ---------------------------------------------------------------------------

    @timer(interval=3600)
    def purge_idempotency_records(self) -> None:
        """Stored responses hold personal data: they go when their replay window closes."""
        self.idempotency.purge_expired()

    @api("GET", "/v1/openapi.json", summary="This document", response={"type": "object"})
    def openapi(self, request: Request) -> Response:
        return json_response(200, document(*self._deployment()))

    @api("GET", "/docs", documented=False)
    def docs_page(self, request: Request) -> Response:
        """The API reference, the document as a page (``gateway.reference``)."""
        return Response(
            reference(*self._deployment()),
            headers=HEADERS,
            content_type="text/html; charset=utf-8",
        )

    def _deployment(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What the document names of this deployment: its regions, its plans."""
        settings = self.config["LEDGERDESK"]
        return tuple(settings.regions), tuple(plan.name for plan in settings.billing_plans)

    @api("GET", "/healthz", summary="The process is up", response="StatusOut")
    def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    @api(
        "GET",
        "/readyz",
        summary="The broker and the services' databases are reachable, and the credentials"
        " projection is built and in step",
        response="StatusOut",
        errors=(503,),
    )
    def readyz(self, request: Request) -> Response:
        checks: dict[str, Any] = {
            "broker": self.broker_probe(),
            # Keys are refused (503) until the projection is built and accounts' news of
            # credentials is being read: not ready to serve either.
            "credentials": self.credentials.trusted(),
        }
        for name in SERVICES:
            try:
                checks[name] = getattr(self, name).health()["database"]
            except (DomainError, ServiceUnavailable):
                checks[name] = False
        ready = all(checks.values())
        return json_response(
            200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks}
        )


for _service in SERVICES:
    setattr(GatewayService, _service, TimedRpcProxy(_service))

ROUTES: tuple[Route, ...] = tuple(routes_of(GatewayService))


@functools.cache
def document(regions: tuple[str, ...] = (), plans: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OpenAPI document of the gateway's routes, for a deployment of these regions and
    plans."""
    return build_spec(ROUTES, regions, plans)


@functools.cache
def reference(regions: tuple[str, ...] = (), plans: tuple[str, ...] = ()) -> str:
    return render_reference(document(regions, plans))


OPENAPI = document()  # as built, without a deployment's regions
