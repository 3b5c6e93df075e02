"""Audit's part of a tenant's whole export (``kernel.tenant_export``): the tenant's own ledger
entries, as ``GET /v1/audit/entries`` shows them (log and seq, hashes, payload opened;
access-log addresses that a purge made unreadable read as erased), those of the frozen chain
first and then its own log's, in keyset pages. Each entry's inclusion in a signed checkpoint can
then be proved through the API (its own log's in a platform checkpoint); ``ledger_heads`` are the
heads the platform checkpoints signed for its own log, each with the checkpoint and its path
there, so the file's entries check against signed roots offline (``log_offline``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kernel import tenant_export
from services.audit.ledger import Ledger
from services.audit.tenant_logs import signed_heads

KINDS = ("ledger", "ledger_heads")


def count(ledger: Ledger, tenant_id: str, kind: str, as_of: str) -> int:
    if kind == "ledger_heads":
        with ledger.db.read() as cur:
            cur.execute(
                "SELECT count(DISTINCT h.size) FROM platform_checkpoint_heads h"
                " JOIN platform_checkpoints c USING (number)"
                " WHERE h.tenant_id = %s AND c.signed_at::timestamptz < %s",
                (tenant_id, as_of),
            )
            return cur.fetchone()[0]
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
    if kind == "ledger_heads":
        # The heads of its own log signed before the export's moment, each with the platform
        # checkpoint that signed it and its path there (as ``ledgerdesk-audit export-log``).
        bounded = tenant_export.bounded(limit)
        with ledger.db.read() as cur:
            heads = signed_heads(
                cur,
                uuid.UUID(tenant_id),
                after_size=int(after[0]) if after else 0,
                before=dt.datetime.fromisoformat(as_of),
                limit=bounded + 1,
            )
        items = heads[:bounded]
        more = len(heads) > bounded and items
        return {"items": items, "next": [items[-1]["size"]] if more else None}
    if kind != "ledger":
        raise tenant_export.unknown("audit", kind)
    items, next_after = ledger.entries(
        tenant_id,
        until=dt.datetime.fromisoformat(as_of),
        after=None if not after else (str(after[0]), str(after[1]), int(after[2])),
        limit=tenant_export.bounded(limit),
    )
    return {"items": items, "next": None if next_after is None else list(next_after)}
