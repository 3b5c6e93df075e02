"""``Idempotency-Key`` on POST: the same key with the same request gets the first response.

The gateway's flow for a POST carrying the header:

1. ``begin(scope, key, fingerprint(...))``: a ``StoredResponse`` is replayed as it is; ``None``
   means this request owns the key and goes ahead.
2. ``complete(...)`` with the response once it is final (2xx, and 4xx the same request would
   get again), or ``abandon(...)`` when a retry could succeed (5xx, 503, a timeout), so the
   client's retry runs the request instead of replaying a failure.

Rows live in the gateway's own database (``MIGRATIONS``); see the migration for why they must
expire.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from psycopg2.extras import Json

from kernel.db import Database
from kernel.errors import Conflict, ValidationFailed

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 200
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
    """Remembered responses, per scope (a tenant id, or ``"signup"``) and key.

    ``ttl`` is how long a response is replayed; after it the key is free again. ``lease`` is how
    long a request may stay in progress before its owner is presumed dead (a crash between
    ``begin`` and ``complete``) and the key is free again, rather than refused for the whole
    ``ttl``; it must comfortably exceed the slowest request.
    """

    def __init__(
        self,
        db: Database,
        ttl: timedelta = timedelta(hours=24),
        lease: timedelta = timedelta(minutes=5),
    ):
        if ttl <= timedelta(0) or lease <= timedelta(0):
            raise ValueError("ttl and lease must be positive")
        self.db = db
        self.ttl = ttl
        self.lease = min(lease, ttl)

    def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        """None when the caller now owns the key; the first response when there is one.

        Raises ``ValidationFailed`` for a key used with another request, ``Conflict`` while the
        first request with this key is still in progress.
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
                    "SELECT fingerprint, status, headers, body,"
                    " created_at < now() - %s"
                    " OR (status IS NULL AND created_at < now() - %s)"
                    " FROM idempotency_keys WHERE scope = %s AND key = %s FOR UPDATE",
                    (self.ttl, self.lease, scope, key),
                )
                row = cur.fetchone()
                if row is None:
                    continue
                stored_fingerprint, status, headers, body, stale = row
                if stale:
                    cur.execute(
                        "UPDATE idempotency_keys SET fingerprint = %s, status = NULL,"
                        " headers = NULL, body = NULL, created_at = now(), completed_at = NULL"
                        " WHERE scope = %s AND key = %s",
                        (fingerprint, scope, key),
                    )
                    return None
                if stored_fingerprint != fingerprint:
                    raise ValidationFailed({HEADER: ["already used with a different request"]})
                if status is None:
                    raise Conflict("a request with this Idempotency-Key is in progress")
                return StoredResponse(status, dict(headers), bytes(body))
        raise Conflict("a request with this Idempotency-Key is in progress")

    def complete(
        self, scope: str, key: str, status: int, headers: dict[str, str], body: bytes
    ) -> bool:
        """Record the response to replay; False if the row was no longer ours to complete."""
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE idempotency_keys SET status = %s, headers = %s, body = %s,"
                " completed_at = now() WHERE scope = %s AND key = %s AND status IS NULL",
                (status, Json(dict(headers)), bytes(body), scope, key),
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
        """Delete rows past the TTL (bodies may hold personal data); returns how many."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM idempotency_keys WHERE created_at < now() - %s", (self.ttl,))
            return cur.rowcount


def _check_scope(scope: str) -> None:
    if not scope:
        raise ValueError("an idempotency scope (tenant id or 'signup') is required")
