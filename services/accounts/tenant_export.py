"""Accounts' part of a tenant's whole export (``kernel.tenant_export``): its contacts, agents
and every contact's consent history, in keyset pages.

A contact's consent history is paged in the order of its contacts (their page index), each
contact's records by version, so a page costs a bounded read however many contacts and
records the tenant has.
"""

from __future__ import annotations

from typing import Any

from kernel import tenant_export
from kernel.uow import UnitOfWork

KINDS = ("contacts", "agents", "consent")

_COUNTS = {
    "contacts": "SELECT count(*) FROM contacts WHERE tenant_id = %s AND created_at < %s",
    "agents": "SELECT count(*) FROM agents WHERE tenant_id = %s AND created_at < %s",
    "consent": "SELECT count(*) FROM consents WHERE tenant_id = %s AND recorded_at < %s",
}


def count(uow: UnitOfWork, tenant_id: str, kind: str, as_of: str) -> int:
    if kind not in _COUNTS:
        raise tenant_export.unknown("accounts", kind)
    uow.cur.execute(_COUNTS[kind], (tenant_id, as_of))
    return uow.cur.fetchone()[0]


def page(
    uow: UnitOfWork, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
) -> dict[str, Any]:
    limit = tenant_export.bounded(limit)
    if kind == "contacts":
        return _contacts(uow, tenant_id, as_of, tenant_export.position(after), limit)
    if kind == "agents":
        return _agents(uow, tenant_id, as_of, tenant_export.position(after), limit)
    if kind == "consent":
        return _consent(uow, tenant_id, as_of, tenant_export.position(after, 3), limit)
    raise tenant_export.unknown("accounts", kind)


def _contacts(uow: UnitOfWork, tenant: str, as_of: str, at: list, limit: int) -> dict[str, Any]:
    uow.cur.execute(
        "SELECT id, name, email, phone, marketing, version, created_at, updated_at FROM contacts"
        " WHERE tenant_id = %s AND created_at < %s"
        " AND (created_at, id) > (%s::timestamptz, %s::uuid)"
        " ORDER BY created_at, id LIMIT %s",
        (tenant, as_of, *at, limit + 1),
    )
    return tenant_export.page_of(
        uow.cur.fetchall(),
        limit,
        lambda rows: [
            {
                "id": str(i),
                "name": n,
                "email": e,
                "phone": p,
                "marketing": m,
                "version": v,
                "created_at": c.isoformat(),
                "updated_at": u.isoformat(),
            }
            for i, n, e, p, m, v, c, u in rows
        ],
        lambda row: [row[6].isoformat(), str(row[0])],
    )


def _agents(uow: UnitOfWork, tenant: str, as_of: str, at: list, limit: int) -> dict[str, Any]:
    uow.cur.execute(
        "SELECT id, name, email, role, active, created_at, deactivated_at FROM agents"
        " WHERE tenant_id = %s AND created_at < %s"
        " AND (created_at, id) > (%s::timestamptz, %s::uuid)"
        " ORDER BY created_at, id LIMIT %s",
        (tenant, as_of, *at, limit + 1),
    )
    return tenant_export.page_of(
        uow.cur.fetchall(),
        limit,
        lambda rows: [
            {
                "id": str(i),
                "name": n,
                "email": e,
                "role": r,
                "active": a,
                "created_at": c.isoformat(),
                "deactivated_at": None if d is None else d.isoformat(),
            }
            for i, n, e, r, a, c, d in rows
        ],
        lambda row: [row[5].isoformat(), str(row[0])],
    )


def _consent(uow: UnitOfWork, tenant: str, as_of: str, at: list, limit: int) -> dict[str, Any]:
    # The first position condition lets the contacts' page index find where to start; the
    # second is the exact keyset, the contact's records included.
    uow.cur.execute(
        "SELECT c.created_at, c.id, s.version, s.marketing, s.source, s.policy_version,"
        " s.recorded_at FROM contacts c JOIN consents s ON s.contact_id = c.id"
        " WHERE c.tenant_id = %(tenant)s AND s.tenant_id = %(tenant)s"
        " AND s.recorded_at < %(as_of)s"
        " AND (c.created_at, c.id) >= (%(at)s::timestamptz, %(id)s::uuid)"
        " AND (c.created_at, c.id, s.version) > (%(at)s::timestamptz, %(id)s::uuid, %(v)s)"
        " ORDER BY c.created_at, c.id, s.version LIMIT %(n)s",
        {"tenant": tenant, "as_of": as_of, "at": at[0], "id": at[1], "v": at[2], "n": limit + 1},
    )
    return tenant_export.page_of(
        uow.cur.fetchall(),
        limit,
        lambda rows: [
            {
                "contact_id": str(contact),
                "version": version,
                "marketing": marketing,
                "source": source,
                "policy_version": policy,
                "recorded_at": recorded.isoformat(),
            }
            for _, contact, version, marketing, source, policy, recorded in rows
        ],
        lambda row: [row[0].isoformat(), str(row[1]), row[2]],
    )
