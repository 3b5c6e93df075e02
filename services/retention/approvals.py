"""Four eyes on privacy work: the rule every decision follows (``check_four_eyes``), the
tenant's approval policy (which request types wait for a second admin), and changes to that
policy, which wait for one themselves when they would lift it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kernel.db import keyset_page
from kernel.envelope import Envelope, new_envelope
from kernel.errors import Conflict, Forbidden, NotFound, require_id
from kernel.uow import UnitOfWork
from services.retention import sealed
from services.retention.events import DECISIONS, MESSAGES


def check_four_eyes(
    decider: dict[str, Any],
    filed_by: Any,
    filed_key_issuer: Any,
    filed_at: dt.datetime,
    what: str,
) -> None:
    """Refuse a decision the filer could have made alone. ``decider`` is the authenticated
    caller as accounts describes it (ids and times only): ``agent_id``, ``key_issuer_id`` (whom
    the acting key answers to: an admin who mints a key for another, or creates them, holds it
    too), ``key_issued_at`` and ``admin_since``. The people behind the decision (the decider,
    whom their key answers to) must not be the people behind the filing (the filer, whom the
    filer's key answered to); the decider must have been an admin before it was filed (an
    admin created after it was filed is one its filer could have created to approve it), and
    must act with a key issued before it was filed."""
    behind_filing = {str(filed_by), str(filed_key_issuer or filed_by)}
    if decider["agent_id"] == str(filed_by):
        raise Conflict(f"the admin who filed {what} cannot decide it; another admin must")
    if decider.get("key_issuer_id") is None:
        # A caller described by a gateway of an older release: refused rather than let through.
        raise Forbidden("whom the caller's key answers to is not known: decide again later")
    behind_decision = {decider["agent_id"], str(decider["key_issuer_id"])}
    if behind_decision & behind_filing:
        raise Forbidden(
            f"this key was issued by the admin who filed {what} (or the filing was made with a"
            " key this admin issued): another admin must decide it with a key of their own"
        )
    since = decider.get("admin_since")
    if since is None or dt.datetime.fromisoformat(since) >= filed_at:
        raise Forbidden(
            f"only an admin who was already an admin when {what} was filed may decide it"
        )
    issued = decider.get("key_issued_at")
    if issued is None or dt.datetime.fromisoformat(issued) >= filed_at:
        # A key claimed after the filing may have been claimed for it, by whoever kept a copy
        # of the key it replaced: the agent finds their keys ended only afterwards.
        raise Forbidden(
            f"this key was issued after {what} was filed: decide it with a key you held before"
        )


def retention_message(
    uow: UnitOfWork, type_: str, stream_id: str, tenant_id: str, actor_id: str, payload: dict
) -> Envelope:
    """One of retention's messages (``events.MESSAGES``), in its latest version, checked."""
    event_type = MESSAGES[type_]
    event_type.validate(payload)
    return new_envelope(
        type=type_,
        schema_version=event_type.latest,
        source="retention",
        stream_id=stream_id,
        stream_version=1,
        tenant_id=uuid.UUID(tenant_id),
        actor_id=actor_id,
        payload=payload,
        trace=uow.trace,
    )


def decision_event(
    uow: UnitOfWork,
    type_: str,
    stream_id: str,
    tenant_id: str,
    decider: dict[str, Any],
    sealed_reason: str | None,
    payload: dict[str, Any],
) -> Envelope:
    """Who decided, with which key (and whom it answers to), and why: the reason as retention
    keeps it, sealed under the tenant's key, so the ledger holds it and the tenant's destruction
    still makes it unreadable there."""
    return retention_message(
        uow,
        type_,
        stream_id,
        tenant_id,
        decider["agent_id"],
        {
            **payload,
            "tenant_id": tenant_id,
            "decided_by": decider["agent_id"],
            "key_id": decider["key_id"],
            "key_issuer_id": decider["key_issuer_id"],
            "reason_sealed": sealed_reason,
        },
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
    """An admin's change of the tenant's approval policy; returns (result, applied).

    Widening it (or leaving it as it is) applies at once. Lifting or narrowing a policy that
    requires approval would let one admin undo the four eyes and then file alone, so it becomes
    a change that waits for another admin (``decide_policy_change``); the result is then that
    change. A newer filing supersedes a change still waiting, as does any change applied."""
    tenant_id = actor["tenant_id"]
    wanted = sorted(set(types))
    lock_policy(uow, tenant_id)
    current = approval_policy(uow, tenant_id)["requires_approval"]
    if set(current) <= set(wanted):
        _supersede_changes(uow, tenant_id)
        applied = set_approval_policy(uow, tenant_id, wanted)
        if wanted != current:
            uow.publish(_policy_changed(uow, tenant_id, actor["agent_id"], wanted, None))
        return applied, True
    _supersede_changes(uow, tenant_id)
    change_id = str(uuid.uuid4())
    uow.cur.execute(
        "INSERT INTO approval_policy_changes (id, tenant_id, types, based_on, filed_by,"
        " filed_key_issuer, status, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'awaiting_approval', %s)",
        (
            change_id,
            tenant_id,
            wanted,
            current,
            actor["agent_id"],
            actor.get("key_issuer_id") or actor["agent_id"],
            now,
        ),
    )
    uow.publish(
        retention_message(
            uow,
            "approval_policy_change_filed",
            f"approval-policy-{tenant_id}",
            tenant_id,
            actor["agent_id"],
            {
                "change_id": change_id,
                "tenant_id": tenant_id,
                "filed_by": actor["agent_id"],
                "requires_approval": wanted,
                "based_on": current,
            },
        )
    )
    return get_policy_change(uow, tenant_id, change_id), False


def decide_policy_change(
    uow: UnitOfWork,
    tenant_id: str,
    change_id: str,
    decider: dict[str, Any],
    decision: str,
    reason: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Approve (the policy becomes the change's) or deny a waiting change, by the rules a
    request's decision follows (``check_four_eyes``). A change still waiting was filed against
    the policy as it is: any change applied since, or filed since, superseded it."""
    if decision not in DECISIONS:
        raise ValueError(f"a decision is 'approved' or 'denied', not {decision!r}")
    get_policy_change(uow, tenant_id, change_id)
    lock_policy(uow, tenant_id)
    uow.cur.execute(
        "SELECT status, filed_by, filed_key_issuer, created_at, types"
        " FROM approval_policy_changes WHERE id = %s FOR UPDATE",
        (change_id,),
    )
    status, filed_by, filed_key_issuer, filed_at, types = uow.cur.fetchone()
    if status != "awaiting_approval":
        raise Conflict(f"the change is {status}, not awaiting approval")
    check_four_eyes(decider, filed_by, filed_key_issuer, filed_at, "a policy change")
    sealed_reason = sealed.seal(uow.cipher, tenant_id, "decision_reason", reason)
    uow.cur.execute(
        "UPDATE approval_policy_changes SET status = %s, decided_by = %s, decided_at = %s,"
        " decision_reason_sealed = %s WHERE id = %s",
        (decision, decider["agent_id"], now, sealed_reason, change_id),
    )
    uow.publish(
        decision_event(
            uow,
            f"approval_policy_change_{decision}",
            f"approval-policy-{tenant_id}",
            tenant_id,
            decider,
            sealed_reason,
            {"change_id": change_id, "decision": decision},
        )
    )
    if decision == "approved":
        set_approval_policy(uow, tenant_id, list(types))
        uow.publish(_policy_changed(uow, tenant_id, decider["agent_id"], sorted(types), change_id))
    return get_policy_change(uow, tenant_id, change_id)


def lock_policy(uow: UnitOfWork, tenant_id: str) -> None:
    """Changes of one tenant's policy take turns: a change approved while another is applied
    must see the policy the other left."""
    uow.cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('approval-policy:' || %s, 0))",
        (tenant_id,),
    )


def _supersede_changes(uow: UnitOfWork, tenant_id: str) -> None:
    uow.cur.execute(
        "UPDATE approval_policy_changes SET status = 'superseded'"
        " WHERE tenant_id = %s AND status = 'awaiting_approval'",
        (tenant_id,),
    )


def _policy_changed(
    uow: UnitOfWork, tenant_id: str, actor_id: str, types: list[str], change_id: str | None
) -> Envelope:
    return retention_message(
        uow,
        "approval_policy_changed",
        f"approval-policy-{tenant_id}",
        tenant_id,
        actor_id,
        {"tenant_id": tenant_id, "requires_approval": types, "change_id": change_id},
    )


_CHANGE_COLUMNS = (
    "id, types, based_on, status, filed_by, created_at, decided_by, decided_at,"
    " decision_reason_sealed, tenant_id"
)


def get_policy_change(uow: UnitOfWork, tenant_id: str, change_id: str) -> dict[str, Any]:
    require_id(change_id, "change")
    uow.cur.execute(
        f"SELECT {_CHANGE_COLUMNS} FROM approval_policy_changes WHERE id = %s AND tenant_id = %s",
        (change_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such change")
    return _render_change(uow, row)


def list_policy_changes(
    uow: UnitOfWork, tenant_id: str, status: str | None, limit: int, after: list | None
) -> dict[str, Any]:
    query = f"SELECT {_CHANGE_COLUMNS} FROM approval_policy_changes WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if status:
        query += " AND status = %s"
        params.append(status)
    rows, next_after = keyset_page(
        uow.cur, query, params, limit, after, lambda row: [row[5].isoformat(), str(row[0])]
    )
    return {"items": [_render_change(uow, row) for row in rows], "next": next_after}


def _render_change(uow: UnitOfWork, row: tuple) -> dict[str, Any]:
    cid, types, based_on, status, filed_by, created, decided_by, decided_at, reason, tenant = row
    return {
        "id": str(cid),
        "status": status,
        "requires_approval": sorted(types),
        "based_on": sorted(based_on),
        "filed_by": str(filed_by),
        "created_at": created.isoformat(),
        "approval": None
        if decided_by is None
        else {
            "decision": status,
            "decided_by": str(decided_by),
            "decided_at": decided_at.isoformat(),
            "reason": sealed.opened(uow.cipher, tenant, "decision_reason", reason),
        },
    }
