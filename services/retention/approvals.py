"""The tenant's approval policy: which request types wait for a second admin. Widening it
applies at once; lifting or narrowing it would let one admin undo the four eyes and then file
alone, so it is a change that waits for another admin itself (``four_eyes``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kernel.envelope import Envelope
from kernel.uow import UnitOfWork
from services.retention import four_eyes


def _show(types: list[str], based_on: list[str]) -> dict[str, Any]:
    return {"requires_approval": sorted(types), "based_on": sorted(based_on)}


POLICY_CHANGES = four_eyes.ChangeKind(
    table="approval_policy_changes",
    columns=("types", "based_on"),
    show=_show,
    what="a policy change",
    messages="approval_policy_change",
    stream="approval-policy",
)


def approval_policy(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    uow.cur.execute(
        "SELECT types, tenant_id IS NOT NULL FROM approval_policies"
        " WHERE tenant_id = %s OR tenant_id IS NULL ORDER BY tenant_id NULLS LAST LIMIT 1",
        (tenant_id,),
    )
    types, overridden = uow.cur.fetchone()
    return {"requires_approval": sorted(types), "source": "tenant" if overridden else "default"}


def set_approval_policy(uow: UnitOfWork, tenant_id: str, types: list[str]) -> dict[str, Any]:
    """Write the tenant's policy as it is: no four eyes here (see ``change_approval_policy``)."""
    uow.cur.execute(
        "INSERT INTO approval_policies (tenant_id, types) VALUES (%s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET types = EXCLUDED.types",
        (tenant_id, sorted(set(types))),
    )
    return approval_policy(uow, tenant_id)


def change_approval_policy(
    uow: UnitOfWork, actor: dict[str, Any], types: list[str], now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """An admin's change of the tenant's approval policy; returns (result, applied): the policy
    as it now is, or the change that waits for another admin. A newer filing supersedes a
    change still waiting, as does any change applied."""
    tenant_id = actor["tenant_id"]
    wanted = sorted(set(types))
    four_eyes.lock_changes(uow, tenant_id)
    current = approval_policy(uow, tenant_id)["requires_approval"]
    four_eyes.supersede(uow, POLICY_CHANGES, tenant_id)
    if set(current) <= set(wanted):
        applied = set_approval_policy(uow, tenant_id, wanted)
        if wanted != current:
            uow.publish(_policy_changed(uow, tenant_id, actor["agent_id"], wanted, None))
        return applied, True
    values = {"types": wanted, "based_on": current}
    return four_eyes.file_change(uow, POLICY_CHANGES, actor, values, now), False


def decide_policy_change(
    uow: UnitOfWork,
    tenant_id: str,
    change_id: str,
    decider: dict[str, Any],
    decision: str,
    reason: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Approve (the policy becomes the change's) or deny a waiting change."""
    values = four_eyes.decide_change(
        uow, POLICY_CHANGES, tenant_id, change_id, decider, decision, reason, now
    )
    if decision == "approved":
        types = sorted(values["types"])
        set_approval_policy(uow, tenant_id, types)
        uow.publish(_policy_changed(uow, tenant_id, decider["agent_id"], types, change_id))
    return get_policy_change(uow, tenant_id, change_id)


def get_policy_change(uow: UnitOfWork, tenant_id: str, change_id: str) -> dict[str, Any]:
    return four_eyes.get_change(uow, POLICY_CHANGES, tenant_id, change_id)


def list_policy_changes(
    uow: UnitOfWork, tenant_id: str, status: str | None, limit: int, after: list | None
) -> dict[str, Any]:
    return four_eyes.list_changes(uow, POLICY_CHANGES, tenant_id, status, limit, after)


def _policy_changed(
    uow: UnitOfWork, tenant_id: str, actor_id: str, types: list[str], change_id: str | None
) -> Envelope:
    return four_eyes.retention_message(
        uow,
        "approval_policy_changed",
        POLICY_CHANGES.stream_of(tenant_id),
        tenant_id,
        actor_id,
        {"tenant_id": tenant_id, "requires_approval": types, "change_id": change_id},
    )
