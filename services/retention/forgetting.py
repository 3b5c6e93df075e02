"""Retention's log of forgetting: what a restored service applies again before it serves.

Every kind of forgetting retention ordered, oldest first, each entry the privacy command a
service's handlers take (``kernel.forgetting``): erasures, destructions and objections whose
command went out (completed or not: a service that answered may have been restored since);
for each subject the last restriction or lift of one (what is in force now); and per data
category the latest cut-off of its purges: the default's with each tenant's own, or each
tenant's where purges are per tenant. The latest cut-off covers every earlier purge.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.retention.requests import COMMAND_FOR

# A request's command went out: it is pending or completed, or failed after it was sent (a
# request that failed while it awaited approval never was).
_SENT = (
    "(r.status IN ('pending', 'completed') OR (r.status = 'failed'"
    " AND EXISTS (SELECT 1 FROM request_services s WHERE s.request_id = r.id)))"
)
_COLUMNS = (
    "r.id, r.type, r.tenant_id, r.subject_kind, r.subject_id, coalesce(r.decided_at, r.created_at)"
)


def forgetting_log(cur: Any) -> list[dict[str, Any]]:
    """The log, oldest first: ``{"at": ISO time, "payload": privacy command}`` each."""
    cur.execute(
        f"SELECT {_COLUMNS} FROM requests r"  # noqa: S608
        f" WHERE r.type IN ('erasure', 'destruction', 'objection') AND {_SENT}"
    )
    requests = cur.fetchall()
    cur.execute(
        f"SELECT DISTINCT ON (r.tenant_id, r.subject_id) {_COLUMNS} FROM requests r"  # noqa: S608
        f" WHERE r.type IN ('restriction', 'lift_restriction') AND {_SENT}"
        " ORDER BY r.tenant_id, r.subject_id, coalesce(r.decided_at, r.created_at) DESC, r.id DESC"
    )
    requests += cur.fetchall()
    entries: list[tuple[dt.datetime, dict[str, Any]]] = [
        (
            at,
            _payload(
                request_id,
                COMMAND_FOR[type_],
                tenant_id,
                subject_id=str(subject_id),
                subject_kind=kind,
            ),
        )
        for request_id, type_, tenant_id, kind, subject_id, at in requests
    ]
    cur.execute(
        "SELECT category, tenant_id, before, request_id, issued_at FROM purge_cutoffs"
        " ORDER BY category, tenant_id NULLS FIRST"
    )
    purges: dict[str, list[tuple]] = {}
    for row in cur.fetchall():
        purges.setdefault(row[0], []).append(row[1:])
    for category, rows in purges.items():
        entries += _purges(category, rows)
    entries.sort(key=lambda entry: entry[0])
    return [{"at": at.isoformat(), "payload": payload} for at, payload in entries]


def _purges(category: str, rows: list[tuple]) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """A category with a default cut-off is one purge of every tenant (each with a row of its
    own before its own cut-off); one without is purged per tenant."""
    if rows[0][0] is not None:
        return [
            (
                issued_at,
                _payload(request_id, "purge_category", tenant_id, category=category, before=before),
            )
            for tenant_id, before, request_id, issued_at in rows
        ]
    _, default, request_id, issued_at = rows[0]
    own = {str(tenant_id): before.isoformat() for tenant_id, before, _, _ in rows[1:]}
    at = max(row[3] for row in rows)
    return [
        (
            at,
            _payload(
                request_id, "purge_category", None, category=category, before=default, cutoffs=own
            ),
        )
    ]


def _payload(
    request_id: Any,
    command: str,
    tenant_id: Any,
    *,
    subject_id: str | None = None,
    subject_kind: str | None = None,
    category: str | None = None,
    before: dt.datetime | None = None,
    cutoffs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``privacy_command`` payload of the latest version (v3)."""
    return {
        "request_id": str(request_id),
        "command": command,
        "tenant_id": None if tenant_id is None else str(tenant_id),
        "subject_id": subject_id,
        "subject_kind": subject_kind,
        "category": category,
        "before": None if before is None else before.isoformat(),
        "services": None,
        "cutoffs": cutoffs,
    }
