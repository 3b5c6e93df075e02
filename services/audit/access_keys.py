"""The access log's keys: an entry's IP and user agent are under a key of its tenant and day.

``access_logged`` entries are encrypted before they are hashed, under a key of the entry's
tenant (a platform pseudo-tenant for requests without one) for the day it happened in, days
being ``LEDGERDESK_DAY_SECONDS`` long from the epoch. The hashes cover ciphertext, so destroying
a key erases those fields while every hash, checkpoint and proof still verifies. A purge
destroys the keys of the days that ended before each tenant's cut-off, so no entry outlives its
tenant's period by more than a day; a tenant's destruction destroys all of its days at once
(they are subjects of its keystore tenant).

Entries recorded before (with ``ledger.month``) are under one key per calendar month that every
tenant shares: a purge destroys such a month once it ended before the cut-off of any tenant
with entries in it, and a tenant's destruction destroys the months holding its entries; the
other tenants' entries of those months go with them, early rather than late.

Each key is listed in ``access_log_keys`` (entries' tenant, key name, end) when its first entry
is recorded, so a purge reads one row per tenant and day rather than the ledger.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded
from kernel.db import Database
from kernel.envelope import Envelope

ACCESS_FIELDS = ("ip", "user_agent")
# The keystore tenant of requests made without a tenant (sign-up, unauthenticated calls).
PLATFORM = uuid.uuid5(uuid.NAMESPACE_URL, "ledgerdesk:audit:access-log-platform")
# The keystore tenant of the calendar-month keys of entries recorded before day keys.
ACCESS_LOG_MONTHS = uuid.uuid5(uuid.NAMESPACE_URL, "ledgerdesk:audit:access-log-months")
_DAYS = uuid.uuid5(uuid.NAMESPACE_URL, "ledgerdesk:audit:access-log-days")
_MONTH = re.compile(r"^[0-9]{4}-[0-9]{2}$")

# Adds a key's row the first time one of its entries is recorded (in the entry's transaction).
REMEMBER = (
    "INSERT INTO access_log_keys (tenant_id, name, ends_at) VALUES (%s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
Row = tuple[uuid.UUID | None, str, dt.datetime]


def day_of(moment: dt.datetime, day_seconds: int) -> tuple[str, dt.datetime]:
    """The name of the day ``moment`` falls in (its start and length, ISO 8601) and its end."""
    begins = dt.datetime.fromtimestamp(int(moment.timestamp()) // day_seconds * day_seconds, dt.UTC)
    name = f"{begins:%Y-%m-%dT%H:%M:%SZ}/PT{day_seconds}S"
    return name, begins + dt.timedelta(seconds=day_seconds)


def key_of(tenant_id: uuid.UUID | None, name: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The keystore tenant and subject of the key named ``name`` of the entries of a tenant."""
    if _MONTH.match(name):
        return ACCESS_LOG_MONTHS, uuid.uuid5(ACCESS_LOG_MONTHS, name)
    owner = tenant_id or PLATFORM
    return owner, uuid.uuid5(_DAYS, f"{owner}/{name}")


class AccessLogKeys:
    """Seals access entries' fields as they are recorded."""

    def __init__(self, cipher: FieldCipher, day_seconds: int):
        self.cipher = cipher
        self.day_seconds = day_seconds

    def seal(self, envelope: Envelope, payload: dict[str, Any]) -> tuple[dict[str, Any], Row]:
        """The payload with its access fields under the key of the entry's tenant and day (or
        dropped, when that key is gone already), and the key's row."""
        name, ends_at = day_of(envelope.occurred_at, self.day_seconds)
        owner, subject = key_of(envelope.tenant_id, name)
        try:
            sealed = self.cipher.encrypt_fields(payload, ACCESS_FIELDS, owner, subject)
        except KeyShredded:
            # Its day is past its period already, or its tenant destroyed: erased on arrival.
            sealed = {**payload, **dict.fromkeys(ACCESS_FIELDS, None)}
        return sealed, (envelope.tenant_id, name, ends_at)


def purge(
    db: Database,
    keystore: Keystore,
    before: dt.datetime,
    cutoffs: Mapping[uuid.UUID, dt.datetime],
) -> int:
    """Destroy the keys of the days (and months) that ended before their tenant's cut-off
    (``cutoffs``, else ``before``); returns how many keys were destroyed just now. Idempotent:
    keys destroyed before are passed over."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT k.tenant_id, k.name FROM access_log_keys k"
            " LEFT JOIN unnest(%s::uuid[], %s::timestamptz[]) AS own (tenant_id, before)"
            " ON own.tenant_id = k.tenant_id"
            " WHERE k.ends_at <= coalesce(own.before, %s)",
            (list(cutoffs), list(cutoffs.values()), before),
        )
        due = cur.fetchall()
    return _shred(keystore, due)


def destroy_tenant(db: Database, keystore: Keystore, tenant_id: uuid.UUID) -> int:
    """Destroy every key of a tenant's access log: its days, with its keystore tenant, and the
    shared months that hold its entries. Returns the keys destroyed."""
    destroyed = keystore.shred_tenant(tenant_id)
    with db.transaction() as cur:
        cur.execute(
            "SELECT tenant_id, name FROM access_log_keys WHERE tenant_id = %s AND name ~ %s",
            (tenant_id, _MONTH.pattern),
        )
        months = cur.fetchall()
    return destroyed + _shred(keystore, months)


def _shred(keystore: Keystore, rows: Iterable[tuple[uuid.UUID | None, str]]) -> int:
    subjects: dict[uuid.UUID, set[uuid.UUID]] = {}
    for tenant_id, name in rows:
        owner, subject = key_of(tenant_id, name)
        subjects.setdefault(owner, set()).add(subject)
    return sum(keystore.shred_subjects(ids, owner) for owner, ids in sorted(subjects.items()))
