"""A tenant's webhook endpoints and the deliveries owed to them, in the gateway's database
(``gateway/migrations/0004_webhooks.sql``).

- An endpoint's URL and signing secret are the tenant's configuration: sealed under the
  tenant's own key in the gateway's keystore (as the idempotency records are), bound to the
  endpoint's id, so the tenant's destruction makes them unreadable, backups included, before
  ``forget_tenant`` deletes the rows. The secret is shown once, in the answer to the
  registration; it is kept encrypted, not hashed, because signing needs it.
- A delivery is written in the transaction that consumes the integration event (``fan_out``),
  one per subscribed endpoint of the event's tenant, unique per endpoint and event (a
  redelivered event owes nothing twice). It holds the webhook's ``data``, ids and states only.
- Its attempts are its log (``deliveries``): when, which status code, which outcome.
- A secret rotated (``rotate_secret``): the new one is shown once; the one it replaced is kept,
  sealed in its own column, and signs beside it until ``LEDGERDESK_WEBHOOK_SECRET_GRACE_HOURS``
  have passed (``previous_secret_until``), then is used no more and cleared
  (``expire_previous_secrets``).
- A ping (``ping``): a delivery of ``webhook.ping`` owed to one endpoint, whatever its events,
  sent and logged like any other (ids only).
- What ends the rows: deleting the endpoint (its deliveries and attempts cascade), the
  tenant's destruction, and for a finished delivery ``purge_finished`` once it is older than
  ``LEDGERDESK_WEBHOOK_LOG_DAYS``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from typing import Any

from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import Json

from gateway.webhooks import addresses, catalogue, signing
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import open_sealed, seal
from kernel.db import Database, keyset_page
from kernel.envelope import Envelope
from kernel.errors import Conflict, NotFound, ValidationFailed, require_id

# Enough for an integration per system a tenant runs; each endpoint multiplies every event.
MAX_ENDPOINTS = 20
_AAD = "ledgerdesk/v1/webhook-endpoint"
_ENDPOINT = (
    "id, url_sealed, events, created_by, created_at, secret_rotated_at,"
    " CASE WHEN previous_secret_until > now() THEN previous_secret_until END"
)
_DELIVERY = (
    "id, event_id, event_type, occurred_at, status, attempts, next_attempt_at, created_at,"
    " finished_at"
)


class Webhooks:
    """What the routes and the event consumer do with webhooks, over the gateway's database
    and keystore; ``resolver`` resolves a URL's host at registration (the system's)."""

    def __init__(
        self,
        db: Database,
        keystore: Keystore,
        policy: addresses.Policy,
        resolver: addresses.Resolver = addresses.system_resolver,
        log_period: dt.timedelta = dt.timedelta(days=30),
        secret_grace: dt.timedelta = dt.timedelta(hours=24),
    ):
        self.db = db
        self.sealed = Sealed(keystore)
        self.policy = policy
        self.resolver = resolver
        self.log_period = log_period
        self.secret_grace = secret_grace

    # --- endpoints ----------------------------------------------------------------------------

    def register(
        self, tenant_id: str, created_by: str, url: str, events: Iterable[str]
    ) -> dict[str, Any]:
        """A new endpoint, with its secret (shown this once). ``ValidationFailed`` for a URL
        whose form or addresses are refused (``addresses``), ``Conflict`` past
        ``MAX_ENDPOINTS``."""
        try:
            target = addresses.parse_url(url, self.policy)
            addresses.check(target, self.policy, self.resolver)
        except addresses.Refused as exc:
            raise ValidationFailed({"url": [str(exc)]}) from None
        names = sorted(set(events))
        unknown = [name for name in names if name not in catalogue.BY_NAME]
        if unknown or not names:
            raise ValidationFailed({"events": [f"one or more of {', '.join(catalogue.NAMES)}"]})
        endpoint_id = uuid.uuid4()
        secret = signing.new_secret()
        tenant = uuid.UUID(str(tenant_id))
        # Sealed before the transaction (the keystore is a database of its own); KeyShredded
        # if the tenant was destroyed meanwhile.
        url_sealed = self.sealed.seal(tenant, endpoint_id, "url", url)
        secret_sealed = self.sealed.seal(tenant, endpoint_id, "secret", secret)
        with self.db.transaction() as cur:
            # Registrations of one tenant take turns, so the limit holds under concurrency.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || %s))", (str(tenant),))
            cur.execute("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = %s", (tenant,))
            if cur.fetchone()[0] >= MAX_ENDPOINTS:
                raise Conflict(f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints")
            cur.execute(
                "INSERT INTO webhook_endpoints (id, tenant_id, url_sealed, secret_sealed, events,"
                " created_by) VALUES (%s, %s, %s, %s, %s, %s)"
                f" RETURNING {_ENDPOINT}",
                (
                    endpoint_id,
                    tenant,
                    url_sealed,
                    secret_sealed,
                    names,
                    uuid.UUID(str(created_by)),
                ),
            )
            row = cur.fetchone()
        return {**self._endpoint(tenant, row), "secret": secret}

    def endpoints(self, tenant_id: str, limit: int, after: list | None) -> dict[str, Any]:
        tenant = uuid.UUID(str(tenant_id))
        with self.db.read() as cur:
            rows, following = keyset_page(
                cur,
                f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE tenant_id = %s",
                [tenant],
                limit,
                after,
                lambda row: [row[4].isoformat(), str(row[0])],
            )
        return {"items": [self._endpoint(tenant, row) for row in rows], "next": following}

    def endpoint(self, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
        tenant = uuid.UUID(str(tenant_id))
        with self.db.read() as cur:
            row = _find(cur, tenant, endpoint_id)
        return self._endpoint(tenant, row)

    def delete(self, tenant_id: str, endpoint_id: str) -> None:
        """The endpoint, its deliveries (pending ones are never sent) and their log go."""
        require_id(endpoint_id, "webhook endpoint")
        with self.db.transaction() as cur:
            cur.execute(
                "DELETE FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
                (uuid.UUID(str(tenant_id)), endpoint_id),
            )
            if cur.rowcount == 0:
                raise NotFound("no such webhook endpoint")

    def rotate_secret(self, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
        """A new signing secret for the endpoint, shown this once; the one it replaces signs
        beside it for ``secret_grace`` (a previous one still in its grace is dropped: two
        secrets at most)."""
        tenant = uuid.UUID(str(tenant_id))
        with self.db.read() as cur:
            _find(cur, tenant, endpoint_id)
            cur.execute(
                "SELECT secret_sealed FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
                (tenant, endpoint_id),
            )
            current_sealed = bytes(cur.fetchone()[0])
        endpoint = uuid.UUID(endpoint_id)
        # Opened and sealed before the transaction (the keystore is a database of its own).
        current = self.sealed.open(tenant, endpoint, "secret", current_sealed)
        if current is None:
            raise NotFound("no such webhook endpoint")  # destroyed meanwhile
        secret = signing.new_secret()
        secret_sealed = self.sealed.seal(tenant, endpoint, "secret", secret)
        previous_sealed = self.sealed.seal(tenant, endpoint, "previous_secret", current)
        with self.db.transaction() as cur:
            # Only over the secret read above: a rotation that came in between wins, and this
            # one is refused rather than keep a secret no one was shown.
            cur.execute(
                "UPDATE webhook_endpoints SET secret_sealed = %s, previous_secret_sealed = %s,"
                " previous_secret_until = now() + %s, secret_rotated_at = now()"
                " WHERE tenant_id = %s AND id = %s AND secret_sealed = %s"
                " RETURNING secret_rotated_at, previous_secret_until",
                (
                    secret_sealed,
                    previous_sealed,
                    self.secret_grace,
                    tenant,
                    endpoint,
                    current_sealed,
                ),
            )
            row = cur.fetchone()
        if row is None:
            raise Conflict("the secret was rotated meanwhile: rotate again if need be")
        rotated_at, until = row
        return {
            "id": str(endpoint),
            "secret": secret,
            "rotated_at": rotated_at.isoformat(),
            "previous_secret_valid_until": until.isoformat(),
        }

    def expire_previous_secrets(self) -> int:
        """Previous secrets whose grace is over are cleared (never used after it anyway)."""
        with self.db.transaction() as cur:
            return expire_previous_secrets(cur)

    def ping(self, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
        """A ``webhook.ping`` owed to the endpoint, due now; the delivery as its log shows it."""
        tenant = uuid.UUID(str(tenant_id))
        with self.db.transaction() as cur:
            _find(cur, tenant, endpoint_id)
            cur.execute(
                "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_id,"
                " event_type, occurred_at, data, next_attempt_at)"
                " VALUES (gen_random_uuid(), %s, %s, gen_random_uuid(), %s, now(), %s, now())"
                f" RETURNING {_DELIVERY}",
                (endpoint_id, tenant, catalogue.PING, Json({"webhook_id": endpoint_id})),
            )
            row = cur.fetchone()
        return _delivery(row, [])

    def deliveries(
        self, tenant_id: str, endpoint_id: str, limit: int, after: list | None
    ) -> dict[str, Any]:
        """An endpoint's delivery log, oldest first: each delivery with its attempts."""
        tenant = uuid.UUID(str(tenant_id))
        with self.db.read() as cur:
            _find(cur, tenant, endpoint_id)
            rows, following = keyset_page(
                cur,
                f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE endpoint_id = %s",
                [endpoint_id],
                limit,
                after,
                lambda row: [row[7].isoformat(), str(row[0])],
            )
            history: dict[uuid.UUID, list[dict[str, Any]]] = {row[0]: [] for row in rows}
            if rows:
                cur.execute(
                    "SELECT delivery_id, attempt, started_at, ended_at, status_code, outcome"
                    " FROM webhook_attempts WHERE delivery_id = ANY(%s::uuid[])"
                    " ORDER BY delivery_id, attempt",
                    ([str(row[0]) for row in rows],),
                )
                for delivery, attempt, started, ended, code, outcome in cur.fetchall():
                    history[delivery].append(
                        {
                            "attempt": attempt,
                            "started_at": started.isoformat(),
                            "ended_at": ended.isoformat(),
                            "status_code": code,
                            "outcome": outcome,
                        }
                    )
        return {"items": [_delivery(row, history[row[0]]) for row in rows], "next": following}

    def _url(self, tenant: uuid.UUID, endpoint_id: uuid.UUID, sealed: bytes) -> str:
        url = self.sealed.open(tenant, endpoint_id, "url", sealed)
        if url is None:
            raise NotFound("no such webhook endpoint")  # destroyed meanwhile: rows on their way
        return url

    def _endpoint(self, tenant: uuid.UUID, row: tuple) -> dict[str, Any]:
        endpoint_id, url_sealed, events, created_by, created_at, rotated_at, until = row
        return {
            "id": str(endpoint_id),
            "url": self._url(tenant, endpoint_id, url_sealed),
            "events": list(events),
            "created_by": str(created_by),
            "created_at": created_at.isoformat(),
            "secret_rotated_at": rotated_at.isoformat() if rotated_at else None,
            "previous_secret_valid_until": until.isoformat() if until else None,
        }

    # --- deliveries ---------------------------------------------------------------------------

    def fan_out(self, envelope: Envelope) -> int:
        """A delivery for each endpoint of the event's tenant subscribed to what it becomes;
        returns how many were written (none again for a redelivered event)."""
        with self.db.transaction() as cur:
            return fan_out(cur, envelope)

    def purge_expired(self) -> int:
        """Finished deliveries older than the log's period go (``LEDGERDESK_WEBHOOK_LOG_DAYS``)."""
        with self.db.transaction() as cur:
            return purge_finished(cur, self.log_period)


class Sealed:
    """An endpoint's URL and secret under its tenant's own key (the tenant's subject key, whose
    id is the tenant's, in the gateway's keystore), each bound to its endpoint and field: a
    ciphertext moved to another row or column fails to open."""

    def __init__(self, keystore: Keystore):
        self.keystore = keystore

    def seal(self, tenant: uuid.UUID, endpoint_id: uuid.UUID, name: str, text: str) -> bytes:
        key = self.keystore.subject_key(tenant, tenant)  # raises KeyShredded once destroyed
        assert key is not None
        return seal(key, text.encode(), _aad(tenant, endpoint_id, name))

    def open(self, tenant: uuid.UUID, endpoint_id: uuid.UUID, name: str, blob: Any) -> str | None:
        """The text, or None once the tenant's key is shredded."""
        key = self.keystore.subject_key(tenant, tenant, create=False)
        if key is None:
            return None
        return open_sealed(key, bytes(blob), _aad(tenant, endpoint_id, name)).decode()


def fan_out(cur: Cursor, envelope: Envelope) -> int:
    """``MalformedPayload`` (the message is dead-lettered) for a version or a payload the
    catalogue does not read."""
    event = catalogue.of(envelope)
    if event is None or envelope.tenant_id is None:
        return 0
    cur.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, event_id, event_type,"
        " occurred_at, data, next_attempt_at)"
        " SELECT gen_random_uuid(), id, tenant_id, %s, %s, %s, %s, now()"
        " FROM webhook_endpoints WHERE tenant_id = %s AND %s = ANY(events)"
        " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        (
            envelope.event_id,
            event.name,
            envelope.occurred_at,
            Json(event.data(envelope.payload, envelope.schema_version)),
            envelope.tenant_id,
            event.name,
        ),
    )
    return cur.rowcount


def purge_finished(cur: Cursor, older_than: dt.timedelta) -> int:
    """Delete deliveries delivered or failed more than ``older_than`` ago (their attempts
    cascade); returns how many."""
    cur.execute(
        "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < now() - %s",
        (older_than,),
    )
    return cur.rowcount


def expire_previous_secrets(cur: Cursor) -> int:
    """Clear the previous secrets whose grace is over; returns how many."""
    cur.execute(
        "UPDATE webhook_endpoints SET previous_secret_sealed = NULL, previous_secret_until = NULL"
        " WHERE previous_secret_sealed IS NOT NULL AND previous_secret_until <= now()"
    )
    return cur.rowcount


# --- the privacy protocol's side --------------------------------------------------------------


def forget_tenant(cur: Cursor, tenant_id: uuid.UUID | str) -> int:
    """Delete the tenant's endpoints, and with them their deliveries and attempts; returns how
    many endpoints. (Its key is shredded first by the caller: what a backup holds of them is
    unreadable already.)"""
    tenant = uuid.UUID(str(tenant_id))
    cur.execute("DELETE FROM webhook_deliveries WHERE tenant_id = %s", (tenant,))
    cur.execute("DELETE FROM webhook_endpoints WHERE tenant_id = %s", (tenant,))
    return cur.rowcount


def _find(cur: Cursor, tenant: uuid.UUID, endpoint_id: str) -> tuple:
    require_id(endpoint_id, "webhook endpoint")
    cur.execute(
        f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
        (tenant, endpoint_id),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound("no such webhook endpoint")  # another tenant's too
    return row


def _delivery(row: tuple, history: list[dict[str, Any]]) -> dict[str, Any]:
    (
        delivery_id,
        event_id,
        event_type,
        occurred_at,
        status,
        attempts,
        next_attempt_at,
        created_at,
        finished_at,
    ) = row
    last = history[-1] if history else None
    return {
        "id": str(delivery_id),
        "event_id": str(event_id),
        "event_type": event_type,
        "occurred_at": occurred_at.isoformat(),
        "status": status,
        "attempts": attempts,
        "status_code": last["status_code"] if last else None,
        "outcome": last["outcome"] if last else None,
        "created_at": created_at.isoformat(),
        "next_attempt_at": next_attempt_at.isoformat() if next_attempt_at else None,
        "finished_at": finished_at.isoformat() if finished_at else None,
        "history": history,
    }


def _aad(tenant: uuid.UUID, endpoint_id: uuid.UUID | str, name: str) -> bytes:
    return json.dumps([_AAD, str(tenant), str(endpoint_id), name]).encode()
