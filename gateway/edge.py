"""What the gateway decides about a request before doing any work for it: who the client is
(``gateway.clientaddr``), whether that address may send another request, may try another
credential or sign up again (token buckets per address, ``gateway.ratelimit``), and whether an
unauthenticated request gets an access-log event of its own (``accesslog.UnauthenticatedBudget``).

One ``Edge`` per gateway process, shared by the HTTP server (the per-address bucket, checked
before a route's handler runs, so before the body or the credential are read) and the
service's ``Limits`` (credentials and sign-ups). Buckets are per process, like the per-key ones,
and each limiter keeps at most ``MAX_ADDRESSES`` addresses (least recently used dropped first,
coming back full), so memory stays bounded whatever the number of clients.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import eventlet
from nameko.extensions import SharedExtension
from werkzeug.wrappers import Request

from gateway import accesslog
from gateway.clientaddr import ENVIRON_KEY, TrustedProxies, client_address, limit_key
from gateway.ratelimit import Quota, RateLimited, RateLimiter
from kernel import outbox
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.store import store_of
from kernel.observability import ACCESSES_SUMMARIZED, FAILED_AUTHENTICATIONS, RATE_LIMITED

log = logging.getLogger(__name__)

MAX_ADDRESSES = 100_000

# request.environ keys: what is left of the client address's bucket, and of the API key's.
ADDRESS_QUOTA = "ledgerdesk.address_quota"
KEY_QUOTA = "ledgerdesk.key_quota"


class Edge(SharedExtension):
    def setup(self) -> None:
        settings = settings_of(self.container)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.clients = RateLimiter(
            settings.client_rate_limit, settings.client_rate_burst, max_keys=MAX_ADDRESSES
        )
        self.failures = RateLimiter(
            settings.auth_failure_rate_limit, settings.auth_failure_burst, max_keys=MAX_ADDRESSES
        )
        self.signups = RateLimiter(
            settings.signup_rate_limit, settings.signup_burst, max_keys=MAX_ADDRESSES
        )
        self.budget = accesslog.UnauthenticatedBudget(
            settings.unauthenticated_log_limit, settings.unauthenticated_log_seconds
        )
        self._unwritten: list[accesslog.Summary] = []
        self._writer: Any = None

    def start(self) -> None:
        self._writer = self.container.spawn_managed_thread(self._write_every_interval)

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.kill()
            self._writer = None

    # --- the client ---------------------------------------------------------------------------

    def client_of(self, request: Request) -> str | None:
        """The request's client address (``gateway.clientaddr``), computed once per request."""
        environ = request.environ
        if ENVIRON_KEY not in environ:
            environ[ENVIRON_KEY] = client_address(
                environ.get("REMOTE_ADDR"), request.headers, self.proxies
            )
        return environ[ENVIRON_KEY]

    def _key(self, request: Request) -> str:
        return limit_key(self.client_of(request))

    # --- limits -------------------------------------------------------------------------------

    def admit(self, request: Request) -> None:
        """A token of the client address's bucket, or ``RateLimited``: every request. What is
        left is told to the client (``QUOTA``) unless a key's bucket is told instead."""
        request.environ[ADDRESS_QUOTA] = _counted(self.clients.check, self._key(request), "client")

    def before_authentication(self, request: Request) -> None:
        """``RateLimited`` once the address's credentials were refused too often: checked
        before a credential costs a call to accounts."""
        _counted(self.failures.ensure, self._key(request), "auth_failure")

    def authentication_failed(self, request: Request, credential: str) -> None:
        FAILED_AUTHENTICATIONS.labels(credential).inc()
        self.failures.spend(self._key(request))

    def sign_up(self, request: Request) -> None:
        _counted(self.signups.check, self._key(request), "signup")

    # --- the access log of unauthenticated requests -------------------------------------------

    def written_one_by_one(self, method: str, route: str, status: int) -> bool:
        """Whether an unauthenticated request gets an access-log event of its own; if not it
        is counted into its interval's ``access_summarized`` event."""
        if self.budget.admit(method, route, status):
            return True
        ACCESSES_SUMMARIZED.inc()
        return False

    def write_summaries(self, final: bool = False) -> None:
        """Write the summaries of the intervals that ended (with ``final``, the current one's
        too) to the gateway's outbox; one that cannot be written now is tried again."""
        # Taken before the first write yields: a writer running meanwhile (the timer, another
        # entrypoint stopping) finds nothing of these to write again.
        pending, self._unwritten = [*self._unwritten, *self.budget.ended(final)], []
        for index, summary in enumerate(pending):
            try:
                with store_of(self.container).db.transaction() as cur:
                    outbox.add(cur, [accesslog.summary_event(summary)])
            except Exception as exc:  # the database is away: the next interval tries again
                log.warning("access summary not written yet: %s", type(exc).__name__)
                self._unwritten[:0] = pending[index:]
                return
            log.info(
                "access summary: %s unauthenticated requests counted, %s written one by one",
                summary.counted,
                summary.written,
            )

    def _write_every_interval(self) -> None:
        seconds = self.budget.seconds
        while True:
            # Just after each interval ends (intervals are aligned on the epoch).
            eventlet.sleep(seconds - time.time() % seconds + 0.05)
            try:
                self.write_summaries()
            except Exception:  # never let the writer die: the next interval tries again
                log.exception("access summaries not written")


def _counted(check: Any, key: str, limit: str) -> Any:
    try:
        return check(key)
    except RateLimited:
        RATE_LIMITED.labels(limit).inc()
        raise


def quota_of(request: Request) -> Quota | None:
    """The quota a request's answer tells (``RateLimit-*``): its API key's (or the operator
    token's) once the key was admitted, else its client address's."""
    return request.environ.get(KEY_QUOTA) or request.environ.get(ADDRESS_QUOTA)


class GatewayLimits:
    """What a gateway worker limits: its API key's requests (``check``), and through the
    process's ``Edge`` its client address's credentials and sign-ups."""

    def __init__(self, keys: RateLimiter, edge: Edge):
        self.keys = keys
        self.edge = edge

    def check(self, key: str, request: Request) -> None:
        request.environ[KEY_QUOTA] = _counted(self.keys.check, key, "key")

    def before_authentication(self, request: Request) -> None:
        self.edge.before_authentication(request)

    def authentication_failed(self, request: Request, credential: str) -> None:
        self.edge.authentication_failed(request, credential)

    def sign_up(self, request: Request) -> None:
        self.edge.sign_up(request)
