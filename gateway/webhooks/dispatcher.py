"""Sends what ``webhook_deliveries`` owes: claims due rows, sends each, records the attempt.

- **Claimed** with ``FOR UPDATE SKIP LOCKED`` in a short transaction that counts the attempt
  and pushes ``next_attempt_at`` past a lease (the timeout and a margin): gateway processes
  share the table and never send one delivery at once, no transaction stays open while a
  receiver answers, and a process that dies mid-send leaves its claims due again when their
  lease ends. Delivery is at least once: a receiver dedups on ``Ledgerdesk-Event-Id``.
- **Checked** again before each attempt: the URL's form and every address of its host
  (``addresses``), then sent to one of those very addresses (``sender``), signed
  (``signing``) with a fresh timestamp, under the endpoint's secret and, for the grace after a
  rotation, the one it replaced too.
- **Recorded** in one transaction, only while the claim is still this attempt's (the endpoint
  may have been deleted meanwhile, or the lease run out): the attempt's row (times, status
  code, outcome) and the delivery's next state. A failure is due again after a wait that
  doubles from ``LEDGERDESK_WEBHOOK_RETRY_SECONDS`` up to an hour, until
  ``LEDGERDESK_WEBHOOK_RETRY_HOURS`` after the event came; then the delivery is ``failed``
  (dead-lettered) and stays in the log.

Log lines name ids, types, attempts and outcomes: never a URL (its query can hold a token), a
secret, or a body.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any

import eventlet
from eventlet.greenpool import GreenPool
from prometheus_client import Counter

from gateway.webhooks import addresses, catalogue, sender, signing
from gateway.webhooks.store import Sealed
from kernel.config import Settings
from kernel.crypto.keystore import Keystore
from kernel.db import Database

log = logging.getLogger(__name__)

# Attempts by outcome, and deliveries given up on: no tenant, endpoint or URL in a label.
ATTEMPTS = Counter(
    "ledgerdesk_webhook_attempts", "Webhook delivery attempts, by outcome", ["outcome"]
)
FAILED = Counter(
    "ledgerdesk_webhook_deliveries_failed",
    "Webhook deliveries marked failed: the retry window closed, or the secret is gone",
)

USER_AGENT = "Ledgerdesk-Webhooks/1"
# Deliveries sent at once per gateway process, and how often it looks for due ones.
CONCURRENCY = 8
POLL_SECONDS = 0.5
# Beyond the timeout, before a claim is presumed dead and its delivery due again.
LEASE_MARGIN = dt.timedelta(seconds=30)
MAX_WAIT = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Schedule:
    """When a failed delivery is tried again: ``first``, doubling, at most an hour apart (and
    never past the window), until ``window`` after the event came; then never."""

    first: dt.timedelta
    window: dt.timedelta

    @classmethod
    def of(cls, settings: Settings) -> Schedule:
        return cls(
            dt.timedelta(seconds=settings.webhook_retry_seconds),
            dt.timedelta(hours=settings.webhook_retry_hours),
        )

    def wait(self, attempts: int) -> dt.timedelta:
        """The wait after the ``attempts``-th attempt failed."""
        return min(self.first * 2 ** min(max(attempts - 1, 0), 40), MAX_WAIT)

    def next_attempt(
        self, created_at: dt.datetime, attempts: int, now: dt.datetime
    ) -> dt.datetime | None:
        """When to try again after ``attempts`` failed ones, or None: the window is closed.
        The last attempt falls on the window's end."""
        deadline = created_at + self.window
        if now >= deadline:
            return None
        return min(now + self.wait(attempts), deadline)


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    tenant_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    occurred_at: dt.datetime
    data: Any
    attempt: int
    url_sealed: bytes
    secret_sealed: bytes
    # The secret a rotation replaced, while its grace lasts (then None).
    previous_secret_sealed: bytes | None = None


class Dispatcher:
    """Claims, sends and records deliveries (see the module): ``run`` until ``stop``, or
    ``run_once`` for one round. ``resolver`` and ``tls`` are the system's unless given."""

    def __init__(
        self,
        db: Database,
        keystore: Keystore,
        policy: addresses.Policy,
        schedule: Schedule,
        timeout: float,
        resolver: addresses.Resolver = addresses.system_resolver,
        tls: ssl.SSLContext | None = None,
        concurrency: int = CONCURRENCY,
    ):
        self.db = db
        self.sealed = Sealed(keystore)
        self.policy = policy
        self.schedule = schedule
        self.timeout = timeout
        self.lease = dt.timedelta(seconds=timeout) + LEASE_MARGIN
        self.resolver = resolver
        self.tls = tls
        self.pool = GreenPool(concurrency)
        self._running = False

    @classmethod
    def of(cls, db: Database, keystore: Keystore, settings: Settings) -> Dispatcher:
        return cls(
            db,
            keystore,
            addresses.Policy(settings.webhook_allow_http, settings.webhook_allow_private),
            Schedule.of(settings),
            settings.webhook_timeout_seconds,
        )

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self._running = True
        while self._running:
            try:
                claimed = self.claim(self.pool.free())
            except Exception as exc:  # the database away: look again shortly
                log.warning("webhook deliveries not claimed: %s", type(exc).__name__)
                claimed = []
            for delivery in claimed:
                self.pool.spawn_n(self._deliver_logged, delivery)
            if not claimed:
                eventlet.sleep(POLL_SECONDS)
            else:
                eventlet.sleep(0)

    def stop(self) -> None:
        """No more claims; the attempts under way end within the timeout (an unrecorded one is
        sent again once its lease ends)."""
        self._running = False
        with eventlet.Timeout(self.timeout + 1, False):
            self.pool.waitall()

    def run_once(self) -> int:
        """Claim what is due (up to the pool's size), send it, and wait for the outcomes."""
        claimed = self.claim(self.pool.free())
        for delivery in claimed:
            self.pool.spawn_n(self._deliver_logged, delivery)
        self.pool.waitall()
        return len(claimed)

    # --- one delivery -------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Claimed]:
        if limit <= 0:
            return []
        with self.db.transaction() as cur:
            # A delivery whose attempts were never recorded (its sender died each time) is
            # not retried past its window either: a lease after it, the last attempt (due on
            # the window's end) has had its chance.
            cur.execute(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,"
                " finished_at = now() WHERE id IN (SELECT id FROM webhook_deliveries"
                "  WHERE status = 'pending' AND next_attempt_at <= now()"
                "  AND created_at < now() - %s FOR UPDATE SKIP LOCKED)",
                (self.schedule.window + self.lease,),
            )
            if cur.rowcount:
                FAILED.inc(cur.rowcount)
                log.warning(
                    "%s webhook deliveries failed unrecorded past their window", cur.rowcount
                )
            cur.execute(
                "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                " next_attempt_at = now() + %s"
                " FROM webhook_endpoints e"
                " WHERE d.id IN (SELECT id FROM webhook_deliveries"
                "  WHERE status = 'pending' AND next_attempt_at <= now()"
                "  ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " AND e.id = d.endpoint_id"
                " RETURNING d.id, d.endpoint_id, d.tenant_id, d.event_id, d.event_type,"
                " d.occurred_at, d.data, d.attempts, e.url_sealed, e.secret_sealed,"
                " CASE WHEN e.previous_secret_until > now() THEN e.previous_secret_sealed END",
                (self.lease, limit),
            )
            return [Claimed(*row) for row in cur.fetchall()]

    def deliver(self, claimed: Claimed) -> sender.Result:
        """One attempt: checked, signed, sent and recorded; its result."""
        started = dt.datetime.now(dt.UTC)
        result, final, refusal = self._attempt(claimed)
        state = self.record(claimed, result, started, dt.datetime.now(dt.UTC), final)
        ATTEMPTS.labels(outcome=result.outcome).inc()
        if state == "failed":
            FAILED.inc()
        log.info(
            "webhook delivery %s (event %s, %s) to endpoint %s, attempt %s: %s%s%s -> %s",
            claimed.delivery_id,
            claimed.event_id,
            claimed.event_type,
            claimed.endpoint_id,
            claimed.attempt,
            result.outcome,
            f" {result.status_code}" if result.status_code is not None else "",
            f" ({refusal})" if refusal else "",
            state or "not recorded: the endpoint is gone or the claim ran out",
        )
        return result

    def _deliver_logged(self, claimed: Claimed) -> None:
        try:
            self.deliver(claimed)
        except Exception as exc:  # left claimed: due again once its lease ends
            log.error(
                "webhook delivery %s, attempt %s, failed unrecorded: %s",
                claimed.delivery_id,
                claimed.attempt,
                type(exc).__name__,
            )

    def _attempt(self, claimed: Claimed) -> tuple[sender.Result, bool, str | None]:
        """The result, whether it is final whatever it is, and why an address was refused."""
        tenant, endpoint = claimed.tenant_id, claimed.endpoint_id
        url = self.sealed.open(tenant, endpoint, "url", claimed.url_sealed)
        secret = self.sealed.open(tenant, endpoint, "secret", claimed.secret_sealed)
        if url is None or secret is None:
            return sender.Result(sender.SECRET_GONE), True, None
        previous = (
            None
            if claimed.previous_secret_sealed is None
            else self.sealed.open(
                tenant, endpoint, "previous_secret", claimed.previous_secret_sealed
            )
        )
        deadline = time.monotonic() + self.timeout
        try:
            # Again at every attempt, and the connection goes to an address checked here.
            destination = addresses.check(
                addresses.parse_url(url, self.policy), self.policy, self.resolver, self.timeout
            )
        except addresses.Refused as refused:
            return sender.Result(sender.ADDRESS_REFUSED), False, str(refused)
        body = catalogue.body(
            str(claimed.event_id),
            claimed.event_type,
            claimed.occurred_at.isoformat(),
            str(tenant),
            claimed.data,
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            signing.EVENT_ID_HEADER: str(claimed.event_id),
            signing.EVENT_TYPE_HEADER: claimed.event_type,
            signing.ATTEMPT_HEADER: str(claimed.attempt),
            signing.SIGNATURE_HEADER: signing.signature_header(
                secret, int(time.time()), body, *([previous] if previous else [])
            ),
        }
        remaining = max(deadline - time.monotonic(), 0.1)
        return sender.post(destination, headers, body, remaining, self.tls), False, None

    def record(
        self,
        claimed: Claimed,
        result: sender.Result,
        started: dt.datetime,
        ended: dt.datetime,
        final: bool = False,
    ) -> str | None:
        """The attempt and the delivery's next state, if the claim is still this attempt's;
        returns that state (pending, delivered, failed) or None."""
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT now(), created_at FROM webhook_deliveries"
                " WHERE id = %s AND attempts = %s AND status = 'pending' FOR UPDATE",
                (claimed.delivery_id, claimed.attempt),
            )
            row = cur.fetchone()
            if row is None:
                return None
            now, created_at = row
            if result.delivered:
                status, due = "delivered", None
            else:
                due = (
                    None if final else self.schedule.next_attempt(created_at, claimed.attempt, now)
                )
                status = "pending" if due is not None else "failed"
            cur.execute(
                "UPDATE webhook_deliveries SET status = %s, next_attempt_at = %s,"
                " finished_at = CASE WHEN %s = 'pending' THEN NULL ELSE now() END"
                " WHERE id = %s",
                (status, due, status, claimed.delivery_id),
            )
            cur.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, ended_at,"
                " status_code, outcome) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    claimed.delivery_id,
                    claimed.attempt,
                    started,
                    ended,
                    result.status_code,
                    result.outcome,
                ),
            )
            return status
