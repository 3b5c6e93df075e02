"""Changing a tenant's retention periods, under four eyes where erasure needs them.

Shortening a period purges data on a schedule: a closed ticket's words, or the access log's
addresses, go sooner, which is an erasure in effect. So while a tenant's approval policy names
erasure, a shortened period is a change that waits for another admin, decided by the rules a
request's decision follows (``approvals.check_four_eyes``); lengthening a period applies at
once. Every period that applies is an entry in the ledger (``retention_period_changed``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kernel.db import keyset_page
from kernel.envelope import Envelope
from kernel.errors import Conflict, NotFound, require_id
from kernel.uow import UnitOfWork
from services.retention import sealed
from services.retention.approvals import (
    approval_policy,
    check_four_eyes,
    decision_event,
    lock_policy,
    retention_message,
)
from services.retention.events import DECISIONS
from services.retention.schedules import CATEGORIES, policies


def change_period(
    uow: UnitOfWork, actor: dict[str, Any], category: str, days: int, now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """An admin's new period for a category; returns (result, applied): the period as it now
    is, or the change that waits for another admin."""
    if category not in CATEGORIES:
        raise NotFound("no such data category")
    tenant_id = actor["tenant_id"]
    # The same turn as approval policy changes: a period shortened alone must not slip in
    # while erasure's approval is being required.
    lock_policy(uow, tenant_id)
    before = _period(uow, tenant_id, category)
    current = before["days"]
    _supersede(uow, tenant_id, category)
    if days >= current or "erasure" not in approval_policy(uow, tenant_id)["requires_approval"]:
        applied = _write(uow, tenant_id, category, days)
        if days != current or not before["overridden"]:
            uow.publish(_changed(uow, tenant_id, actor["agent_id"], category, days, None))
        return applied, True
    change_id = str(uuid.uuid4())
    uow.cur.execute(
        "INSERT INTO retention_period_changes (id, tenant_id, category, days, based_on_days,"
        " filed_by, filed_key_issuer, status, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, 'awaiting_approval', %s)",
        (
            change_id,
            tenant_id,
            category,
            days,
            current,
            actor["agent_id"],
            actor.get("key_issuer_id") or actor["agent_id"],
            now,
        ),
    )
    uow.publish(
        retention_message(
            uow,
            "retention_period_change_filed",
            _stream(tenant_id),
            tenant_id,
            actor["agent_id"],
            {
                "change_id": change_id,
                "tenant_id": tenant_id,
                "filed_by": actor["agent_id"],
                "category": category,
                "days": days,
                "based_on_days": current,
            },
        )
    )
    return get_change(uow, tenant_id, change_id), False


def decide_change(
    uow: UnitOfWork,
    tenant_id: str,
    change_id: str,
    decider: dict[str, Any],
    decision: str,
    reason: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Approve (the period becomes the change's) or deny a waiting change."""
    if decision not in DECISIONS:
        raise ValueError(f"a decision is 'approved' or 'denied', not {decision!r}")
    get_change(uow, tenant_id, change_id)
    lock_policy(uow, tenant_id)
    uow.cur.execute(
        "SELECT status, filed_by, filed_key_issuer, created_at, category, days"
        " FROM retention_period_changes WHERE id = %s FOR UPDATE",
        (change_id,),
    )
    status, filed_by, filed_key_issuer, filed_at, category, days = uow.cur.fetchone()
    if status != "awaiting_approval":
        raise Conflict(f"the change is {status}, not awaiting approval")
    check_four_eyes(decider, filed_by, filed_key_issuer, filed_at, "a retention period change")
    sealed_reason = sealed.seal(uow.cipher, tenant_id, "decision_reason", reason)
    uow.cur.execute(
        "UPDATE retention_period_changes SET status = %s, decided_by = %s, decided_at = %s,"
        " decision_reason_sealed = %s WHERE id = %s",
        (decision, decider["agent_id"], now, sealed_reason, change_id),
    )
    uow.publish(
        decision_event(
            uow,
            f"retention_period_change_{decision}",
            _stream(tenant_id),
            tenant_id,
            decider,
            sealed_reason,
            {"change_id": change_id, "decision": decision},
        )
    )
    if decision == "approved":
        _write(uow, tenant_id, category, days)
        uow.publish(_changed(uow, tenant_id, decider["agent_id"], category, days, change_id))
    return get_change(uow, tenant_id, change_id)


_COLUMNS = (
    "id, category, days, based_on_days, status, filed_by, created_at, decided_by, decided_at,"
    " decision_reason_sealed, tenant_id"
)


def get_change(uow: UnitOfWork, tenant_id: str, change_id: str) -> dict[str, Any]:
    require_id(change_id, "change")
    uow.cur.execute(
        f"SELECT {_COLUMNS} FROM retention_period_changes WHERE id = %s AND tenant_id = %s",
        (change_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such change")
    return _render(uow, row)


def list_changes(
    uow: UnitOfWork, tenant_id: str, status: str | None, limit: int, after: list | None
) -> dict[str, Any]:
    query = f"SELECT {_COLUMNS} FROM retention_period_changes WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if status:
        query += " AND status = %s"
        params.append(status)
    rows, next_after = keyset_page(
        uow.cur, query, params, limit, after, lambda row: [row[6].isoformat(), str(row[0])]
    )
    return {"items": [_render(uow, row) for row in rows], "next": next_after}


def _render(uow: UnitOfWork, row: tuple) -> dict[str, Any]:
    cid, category, days, based_on, status, filed_by, created, decider, decided, reason, tenant = row
    return {
        "id": str(cid),
        "status": status,
        "category": category,
        "days": days,
        "based_on_days": based_on,
        "filed_by": str(filed_by),
        "created_at": created.isoformat(),
        "approval": None
        if decider is None
        else {
            "decision": status,
            "decided_by": str(decider),
            "decided_at": decided.isoformat(),
            "reason": sealed.opened(uow.cipher, tenant, "decision_reason", reason),
        },
    }


def _period(uow: UnitOfWork, tenant_id: str, category: str) -> dict[str, Any]:
    return next(p for p in policies(uow, tenant_id)["items"] if p["category"] == category)


def _write(uow: UnitOfWork, tenant_id: str, category: str, days: int) -> dict[str, Any]:
    uow.cur.execute(
        "INSERT INTO policies (category, tenant_id, days) VALUES (%s, %s, %s)"
        " ON CONFLICT (category, tenant_id) DO UPDATE SET days = EXCLUDED.days",
        (category, tenant_id, days),
    )
    return _period(uow, tenant_id, category)


def _supersede(uow: UnitOfWork, tenant_id: str, category: str) -> None:
    uow.cur.execute(
        "UPDATE retention_period_changes SET status = 'superseded'"
        " WHERE tenant_id = %s AND category = %s AND status = 'awaiting_approval'",
        (tenant_id, category),
    )


def _stream(tenant_id: str) -> str:
    return f"retention-periods-{tenant_id}"


def _changed(
    uow: UnitOfWork,
    tenant_id: str,
    actor_id: str,
    category: str,
    days: int,
    change_id: str | None,
) -> Envelope:
    return retention_message(
        uow,
        "retention_period_changed",
        _stream(tenant_id),
        tenant_id,
        actor_id,
        {"tenant_id": tenant_id, "category": category, "days": days, "change_id": change_id},
    )
