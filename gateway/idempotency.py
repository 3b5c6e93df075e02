"""``Idempotency-Key`` on POST: the same key with the same request gets the first response.

The gateway's flow for a POST carrying the header:

1. ``begin(scope, key, fingerprint(...))``: a ``StoredResponse`` is replayed as it is; ``None``
   means this request owns the key and goes ahead.
2. ``complete(...)`` with the response once it is final (2xx, and 4xx the same request would
   get again), or ``abandon(...)`` when a retry could succeed (5xx, 503, a timeout), so the
   client's retry runs the request instead of replaying a failure.

Rows live in the gateway's own database (``MIGRATIONS``) and expire with the TTL. A response
is kept sealed under its tenant's key in the gateway's keystore, bound to its row, and the row
names the ids the response concerns: ``forget_subject`` (an erasure) deletes the rows naming
someone, ``forget_tenant`` (a destruction, after the tenant's key is shredded) a tenant's rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import Json

from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded, open_sealed, seal
from kernel.db import Database
from kernel.errors import Conflict, ValidationFailed

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 200
# The owner of responses no tenant owns (the operator's, a sign-up that created no tenant): a
# pseudo-tenant of the gateway's keystore whose key is never shredded, so its rows end with the TTL.
PLATFORM = uuid.UUID(int=0)
_AAD = "ledgerdesk/v1/idempotency-response"
# A row can vanish between our conflicting insert and our read (abandoned, purged); each retry
# then finds the key free or taken again, so a handful of attempts only runs out under abuse.
_ATTEMPTS = 5


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) of the request; each part is length-prefixed so none can bleed into another."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode("utf-8", "surrogatepass"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> None:
    """Refuse a key we could not store faithfully (PostgreSQL text holds no NUL)."""
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ValidationFailed({HEADER: [f"must be 1 to {MAX_KEY_CHARS} characters"]})
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValidationFailed({HEADER: ["must not contain control characters"]})


class IdempotencyStore:
    """Remembered responses, per scope (a tenant id, a tenant and agent for a request whose
    effect is the caller's (``actor_scope``), ``"signup"`` or ``"operator"``) and key.

    ``ttl`` is how long a response is replayed; after it the key is free again. ``lease`` is how
    long a request may stay in progress before its owner is presumed dead (a crash between
    ``begin`` and ``complete``) and the key is free again, rather than refused for the whole
    ``ttl``; it must comfortably exceed the slowest request. ``keystore`` is the gateway's: a
    response is sealed under its tenant's subject key (subject id = tenant id), which the
    tenant's destruction shreds.
    """

    def __init__(
        self,
        db: Database,
        keystore: Keystore,
        ttl: timedelta = timedelta(hours=24),
        lease: timedelta = timedelta(minutes=5),
    ):
        if ttl <= timedelta(0) or lease <= timedelta(0):
            raise ValueError("ttl and lease must be positive")
        self.db = db
        self.keystore = keystore
        self.ttl = ttl
        self.lease = min(lease, ttl)

    def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        """None when the caller now owns the key; the first response when there is one.

        Raises ``Conflict`` for a key used with another request, and while the first request
        with this key is still in progress. A response whose tenant key is gone
        (the tenant was destroyed) is no longer there: the key is free again.
        """
        _check_scope(scope)
        check_key(key)
        for _ in range(_ATTEMPTS):
            with self.db.transaction() as cur:
                # Concurrent inserts of one key queue on the primary key: exactly one inserts,
                # the others wait for its commit and then see its row.
                cur.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING RETURNING true",
                    (scope, key, fingerprint),
                )
                if cur.fetchone():
                    return None
                # FOR UPDATE: of several requests finding the row stale, one replaces it and
                # the others, re-reading after its commit, see a fresh row in progress.
                cur.execute(
                    "SELECT fingerprint, status, headers, body, sealed_body, tenant_id,"
                    " created_at < now() - %s"
                    " OR (status IS NULL AND created_at < now() - %s)"
                    " FROM idempotency_keys WHERE scope = %s AND key = %s FOR UPDATE",
                    (self.ttl, self.lease, scope, key),
                )
                row = cur.fetchone()
                if row is None:
                    continue
                stored_fingerprint, status, headers, body, sealed, tenant, stale = row
                if not stale and sealed is not None:
                    body = self._open(tenant, scope, key, bytes(sealed))
                    stale = body is None
                if stale:
                    cur.execute(
                        "UPDATE idempotency_keys SET fingerprint = %s, status = NULL,"
                        " headers = NULL, body = NULL, sealed_body = NULL, tenant_id = NULL,"
                        " subject_ids = NULL, created_at = now(), completed_at = NULL"
                        " WHERE scope = %s AND key = %s",
                        (fingerprint, scope, key),
                    )
                    return None
                if stored_fingerprint != fingerprint:
                    # The key is taken: a conflict with what it names, not a malformed request.
                    raise Conflict("this Idempotency-Key was already used with a different request")
                if status is None:
                    raise Conflict("a request with this Idempotency-Key is in progress")
                return StoredResponse(status, dict(headers), bytes(body))
        raise Conflict("a request with this Idempotency-Key is in progress")

    def complete(
        self,
        scope: str,
        key: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        tenant_id: uuid.UUID | str,
        subject_ids: Iterable[str] = (),
    ) -> bool:
        """Record the response to replay, sealed under ``tenant_id``'s key and naming
        ``subject_ids`` (those that are UUIDs); False if the row was no longer ours to complete,
        or the tenant's key is gone."""
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        tenant = uuid.UUID(str(tenant_id))
        named = sorted({str(u) for u in map(_uuid_or_none, subject_ids) if u is not None})
        try:
            sealed = self._seal(tenant, scope, key, bytes(body))
        except KeyShredded:
            # The tenant was destroyed meanwhile: nothing of it may be written any more.
            self.abandon(scope, key)
            log.info("a response was not kept for replay: its tenant's key is gone")
            return False
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE idempotency_keys SET status = %s, headers = %s, sealed_body = %s,"
                " tenant_id = %s, subject_ids = %s::uuid[], completed_at = now()"
                " WHERE scope = %s AND key = %s AND status IS NULL",
                (status, Json(dict(headers)), sealed, tenant, named, scope, key),
            )
            recorded = cur.rowcount == 1
        if not recorded:
            # Outlived its lease or was abandoned: the client got its response, but a retry
            # will run the request again. Neither scope nor key is logged: both identify.
            log.warning("an idempotent request finished after losing its key; not recorded")
        return recorded

    def abandon(self, scope: str, key: str) -> None:
        """Free an in-progress key, so the client's retry runs the request again."""
        with self.db.transaction() as cur:
            cur.execute(
                "DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND status IS NULL",
                (scope, key),
            )

    def purge_expired(self) -> int:
        """Delete rows past the TTL; returns how many."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM idempotency_keys WHERE created_at < now() - %s", (self.ttl,))
            return cur.rowcount

    def _seal(self, tenant: uuid.UUID, scope: str, key: str, body: bytes) -> bytes:
        data_key = self.keystore.subject_key(tenant, tenant)
        assert data_key is not None  # create=True raises KeyShredded instead
        return seal(data_key, body, _aad(tenant, scope, key))

    def _open(self, tenant: uuid.UUID, scope: str, key: str, sealed: bytes) -> bytes | None:
        data_key = self.keystore.subject_key(tenant, tenant, create=False)
        if data_key is None:
            return None
        # A body moved to another row, scope or tenant fails here (TamperedCiphertext).
        return open_sealed(data_key, sealed, _aad(tenant, scope, key))


# --- the privacy protocol's side: what erasure, destruction and export see -------------------


def forget_subject(cur: Cursor, tenant_id: uuid.UUID | str, subject_id: uuid.UUID | str) -> int:
    """Delete the tenant's rows that name the subject; returns how many. Rows of the previous
    release (plaintext ``body``, nothing named) go when their text holds the subject's id."""
    tenant, subject = str(uuid.UUID(str(tenant_id))), str(uuid.UUID(str(subject_id)))
    cur.execute(
        "DELETE FROM idempotency_keys WHERE (tenant_id = %s AND subject_ids @> ARRAY[%s]::uuid[])"
        " OR scope = %s"
        " OR (body IS NOT NULL AND scope IN (%s, 'signup')"
        " AND position(convert_to(%s, 'UTF8') IN body) > 0)",
        (tenant, subject, actor_scope(tenant, subject), tenant, subject),
    )
    return cur.rowcount


def forget_tenant(cur: Cursor, tenant_id: uuid.UUID | str) -> int:
    """Delete every row of the tenant: its scope's, and the sign-up that created it (owned by
    it, or, from the previous release, holding its id); returns how many."""
    tenant = str(uuid.UUID(str(tenant_id)))
    cur.execute(
        "DELETE FROM idempotency_keys WHERE scope = %s OR tenant_id = %s"
        " OR (body IS NOT NULL AND scope = 'signup'"
        " AND position(convert_to(%s, 'UTF8') IN body) > 0)",
        (tenant, tenant, tenant),
    )
    return cur.rowcount


def naming(cur: Cursor, tenant_id: uuid.UUID | str, subject_id: uuid.UUID | str) -> list[Any]:
    """When and with which status each of the tenant's live rows naming the subject was kept."""
    tenant, subject = str(uuid.UUID(str(tenant_id))), str(uuid.UUID(str(subject_id)))
    cur.execute(
        "SELECT status, created_at FROM idempotency_keys"
        " WHERE tenant_id = %s AND subject_ids @> ARRAY[%s]::uuid[] ORDER BY created_at",
        (tenant, subject),
    )
    return cur.fetchall()


def _aad(tenant: uuid.UUID, scope: str, key: str) -> bytes:
    # JSON keeps the parts apart whatever a client puts in its key.
    return json.dumps([_AAD, str(tenant), scope, key]).encode()


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def actor_scope(tenant_id: str, agent_id: str) -> str:
    """The scope of a request whose effect is its caller's own (an admin's acknowledgement, a
    message its author writes): another caller's same key is another request."""
    return f"{tenant_id}:{agent_id}"


def _check_scope(scope: str) -> None:
    if not scope:
        raise ValueError("an idempotency scope (tenant id, 'signup' or 'operator') is required")
