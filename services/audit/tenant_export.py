"""Audit's part of a tenant's whole export (``kernel.tenant_export``): the tenant's own ledger
entries, as ``GET /v1/audit/entries`` shows them (log and seq, hashes, payload opened;
access-log addresses that a purge made unreadable read as erased), those of the frozen chain
first and then its own log's, in keyset pages. Each entry's inclusion in a signed checkpoint can
then be proved through the API (its own log's in a platform checkpoint)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kernel import tenant_export
from services.audit.ledger import Ledger

KINDS = ("ledger",)


def count(ledger: Ledger, tenant_id: str, kind: str, as_of: str) -> int:
    if kind != "ledger":
        raise tenant_export.unknown("audit", kind)
    with ledger.db.read() as cur:
        cur.execute(
            "SELECT count(*) FROM ledger_entries_all WHERE tenant_id = %s AND at < %s",
            (tenant_id, as_of),
        )
        return cur.fetchone()[0]


def page(
    ledger: Ledger, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
) -> dict[str, Any]:
    if kind != "ledger":
        raise tenant_export.unknown("audit", kind)
    items, next_after = ledger.entries(
        tenant_id,
        until=dt.datetime.fromisoformat(as_of),
        after=None if not after else (str(after[0]), str(after[1]), int(after[2])),
        limit=tenant_export.bounded(limit),
    )
    return {"items": items, "next": None if next_after is None else list(next_after)}
