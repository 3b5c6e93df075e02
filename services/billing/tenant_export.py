"""Billing's part of a tenant's whole export (``kernel.tenant_export``): its invoices as the
API shows them, in keyset pages of the invoices' page index (issue time, id)."""

from __future__ import annotations

from typing import Any

from kernel import tenant_export
from kernel.uow import UnitOfWork
from services.billing.handlers import _INVOICE_COLUMNS, _invoice_row

KINDS = ("invoices",)


def count(uow: UnitOfWork, tenant_id: str, kind: str, as_of: str) -> int:
    if kind != "invoices":
        raise tenant_export.unknown("billing", kind)
    uow.cur.execute(
        "SELECT count(*) FROM invoices WHERE tenant_id = %s AND issued_at < %s", (tenant_id, as_of)
    )
    return uow.cur.fetchone()[0]


def page(
    uow: UnitOfWork, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
) -> dict[str, Any]:
    if kind != "invoices":
        raise tenant_export.unknown("billing", kind)
    limit = tenant_export.bounded(limit)
    at = tenant_export.position(after)
    uow.cur.execute(
        f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE tenant_id = %s AND issued_at < %s"  # noqa: S608
        " AND (issued_at, id) > (%s::timestamptz, %s::uuid) ORDER BY issued_at, id LIMIT %s",
        (tenant_id, as_of, *at, limit + 1),
    )
    return tenant_export.page_of(
        uow.cur.fetchall(),
        limit,
        lambda rows: [_invoice_row(r) for r in rows],
        lambda row: [row[16].isoformat(), str(row[0])],
    )
