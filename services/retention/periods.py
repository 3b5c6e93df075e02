"""Changing a tenant's retention periods, under four eyes where erasure needs them.

Shortening a period purges data on a schedule: a closed ticket's words, or the access log's
addresses, go sooner, which is an erasure in effect. So while a tenant's approval policy names
erasure, a shortened period is a change that waits for another admin (``four_eyes``);
lengthening a period applies at once. Every period that applies is an entry in the ledger
(``retention_period_changed``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kernel.envelope import Envelope
from kernel.errors import NotFound
from kernel.uow import UnitOfWork
from services.retention import four_eyes
from services.retention.approvals import approval_policy
from services.retention.schedules import CATEGORIES, policies


def _show(category: str, days: int, based_on_days: int) -> dict[str, Any]:
    return {"category": category, "days": days, "based_on_days": based_on_days}


PERIOD_CHANGES = four_eyes.ChangeKind(
    table="retention_period_changes",
    columns=("category", "days", "based_on_days"),
    show=_show,
    what="a retention period change",
    messages="retention_period_change",
    stream="retention-periods",
)


def change_period(
    uow: UnitOfWork, actor: dict[str, Any], category: str, days: int, now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """An admin's new period for a category; returns (result, applied): the period as it now
    is, or the change that waits for another admin."""
    if category not in CATEGORIES:
        raise NotFound("no such data category")
    tenant_id = actor["tenant_id"]
    four_eyes.lock_changes(uow, tenant_id)
    before = _period(uow, tenant_id, category)
    current = before["days"]
    four_eyes.supersede(uow, PERIOD_CHANGES, tenant_id, category=category)
    if days >= current or "erasure" not in approval_policy(uow, tenant_id)["requires_approval"]:
        applied = _write(uow, tenant_id, category, days)
        if days != current or not before["overridden"]:
            uow.publish(_changed(uow, tenant_id, actor["agent_id"], category, days, None))
        return applied, True
    values = {"category": category, "days": days, "based_on_days": current}
    return four_eyes.file_change(uow, PERIOD_CHANGES, actor, values, now), False


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
    values = four_eyes.decide_change(
        uow, PERIOD_CHANGES, tenant_id, change_id, decider, decision, reason, now
    )
    if decision == "approved":
        category, days = values["category"], values["days"]
        _write(uow, tenant_id, category, days)
        uow.publish(_changed(uow, tenant_id, decider["agent_id"], category, days, change_id))
    return get_change(uow, tenant_id, change_id)


def get_change(uow: UnitOfWork, tenant_id: str, change_id: str) -> dict[str, Any]:
    return four_eyes.get_change(uow, PERIOD_CHANGES, tenant_id, change_id)


def list_changes(
    uow: UnitOfWork, tenant_id: str, status: str | None, limit: int, after: list | None
) -> dict[str, Any]:
    return four_eyes.list_changes(uow, PERIOD_CHANGES, tenant_id, status, limit, after)


def _period(uow: UnitOfWork, tenant_id: str, category: str) -> dict[str, Any]:
    return next(p for p in policies(uow, tenant_id)["items"] if p["category"] == category)


def _write(uow: UnitOfWork, tenant_id: str, category: str, days: int) -> dict[str, Any]:
    uow.cur.execute(
        "INSERT INTO policies (category, tenant_id, days) VALUES (%s, %s, %s)"
        " ON CONFLICT (category, tenant_id) DO UPDATE SET days = EXCLUDED.days",
        (category, tenant_id, days),
    )
    return _period(uow, tenant_id, category)


def _changed(
    uow: UnitOfWork,
    tenant_id: str,
    actor_id: str,
    category: str,
    days: int,
    change_id: str | None,
) -> Envelope:
    return four_eyes.retention_message(
        uow,
        "retention_period_changed",
        PERIOD_CHANGES.stream_of(tenant_id),
        tenant_id,
        actor_id,
        {"tenant_id": tenant_id, "category": category, "days": days, "change_id": change_id},
    )
