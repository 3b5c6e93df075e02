"""Four eyes: the rule every decision on another admin's filing follows (``check_four_eyes``),
the messages that record decisions, and the life of a change that waits for a second admin
(filed, superseded, approved or denied), shared by every kind of such change: a lifted approval
policy (``approvals``) and a shortened retention period (``periods``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ChangeKind:
    """One kind of change that waits for a second admin: its table, the columns that say what
    it changes and what it was filed against (``columns``, shown by ``show``), how the filing
    and decision are named (``what``; messages ``<messages>_filed``, ``_approved``,
    ``_denied``) and the stream its messages go to."""

    table: str
    columns: tuple[str, ...]
    show: Callable[..., dict[str, Any]]
    what: str
    messages: str
    stream: str

    def stream_of(self, tenant_id: str) -> str:
        return f"{self.stream}-{tenant_id}"


def lock_changes(uow: UnitOfWork, tenant_id: str) -> None:
    """A tenant's changes take turns, every kind together: a change approved while another is
    applied must see what the other left (and a period shortened while erasure's approval is
    being required must see that requirement)."""
    uow.cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('approval-policy:' || %s, 0))",
        (tenant_id,),
    )


def supersede(uow: UnitOfWork, kind: ChangeKind, tenant_id: str, **scope: Any) -> None:
    """A change still waiting was filed against what is: whatever is filed or applied since
    supersedes it (``scope``: within one category, say)."""
    where = "".join(f" AND {column} = %s" for column in scope)
    uow.cur.execute(
        f"UPDATE {kind.table} SET status = 'superseded'"
        f" WHERE tenant_id = %s AND status = 'awaiting_approval'{where}",
        (tenant_id, *scope.values()),
    )


def file_change(
    uow: UnitOfWork,
    kind: ChangeKind,
    actor: dict[str, Any],
    values: dict[str, Any],
    now: dt.datetime,
) -> dict[str, Any]:
    """Record a change that waits, with who stands behind it, and tell the ledger."""
    tenant_id = actor["tenant_id"]
    change_id = str(uuid.uuid4())
    columns = ", ".join(kind.columns)
    marks = ", ".join(["%s"] * len(kind.columns))
    uow.cur.execute(
        f"INSERT INTO {kind.table} (id, tenant_id, {columns}, filed_by, filed_key_issuer,"
        f" status, created_at) VALUES (%s, %s, {marks}, %s, %s, 'awaiting_approval', %s)",
        (
            change_id,
            tenant_id,
            *(values[column] for column in kind.columns),
            actor["agent_id"],
            actor.get("key_issuer_id") or actor["agent_id"],
            now,
        ),
    )
    uow.publish(
        retention_message(
            uow,
            f"{kind.messages}_filed",
            kind.stream_of(tenant_id),
            tenant_id,
            actor["agent_id"],
            {
                "change_id": change_id,
                "tenant_id": tenant_id,
                "filed_by": actor["agent_id"],
                **kind.show(*(values[column] for column in kind.columns)),
            },
        )
    )
    return get_change(uow, kind, tenant_id, change_id)


def decide_change(
    uow: UnitOfWork,
    kind: ChangeKind,
    tenant_id: str,
    change_id: str,
    decider: dict[str, Any],
    decision: str,
    reason: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Approve or deny a waiting change by ``check_four_eyes``; returns its ``columns``' values
    for the caller to apply when approved. The reason is kept sealed under the tenant's key."""
    if decision not in DECISIONS:
        raise ValueError(f"a decision is 'approved' or 'denied', not {decision!r}")
    get_change(uow, kind, tenant_id, change_id)
    lock_changes(uow, tenant_id)
    uow.cur.execute(
        f"SELECT status, filed_by, filed_key_issuer, created_at, {', '.join(kind.columns)}"
        f" FROM {kind.table} WHERE id = %s FOR UPDATE",
        (change_id,),
    )
    status, filed_by, filed_key_issuer, filed_at, *values = uow.cur.fetchone()
    if status != "awaiting_approval":
        raise Conflict(f"the change is {status}, not awaiting approval")
    check_four_eyes(decider, filed_by, filed_key_issuer, filed_at, kind.what)
    sealed_reason = sealed.seal(uow.cipher, tenant_id, "decision_reason", reason)
    uow.cur.execute(
        f"UPDATE {kind.table} SET status = %s, decided_by = %s, decided_at = %s,"
        " decision_reason_sealed = %s WHERE id = %s",
        (decision, decider["agent_id"], now, sealed_reason, change_id),
    )
    uow.publish(
        decision_event(
            uow,
            f"{kind.messages}_{decision}",
            kind.stream_of(tenant_id),
            tenant_id,
            decider,
            sealed_reason,
            {"change_id": change_id, "decision": decision},
        )
    )
    return dict(zip(kind.columns, values, strict=True))


_TAIL = "status, filed_by, created_at, decided_by, decided_at, decision_reason_sealed, tenant_id"


def get_change(uow: UnitOfWork, kind: ChangeKind, tenant_id: str, change_id: str) -> dict[str, Any]:
    require_id(change_id, "change")
    uow.cur.execute(
        f"SELECT id, {', '.join(kind.columns)}, {_TAIL} FROM {kind.table}"
        " WHERE id = %s AND tenant_id = %s",
        (change_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such change")
    return _render(uow, kind, row)


def list_changes(
    uow: UnitOfWork,
    kind: ChangeKind,
    tenant_id: str,
    status: str | None,
    limit: int,
    after: list | None,
) -> dict[str, Any]:
    query = f"SELECT id, {', '.join(kind.columns)}, {_TAIL} FROM {kind.table} WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if status:
        query += " AND status = %s"
        params.append(status)
    created = len(kind.columns) + 3
    rows, next_after = keyset_page(
        uow.cur, query, params, limit, after, lambda row: [row[created].isoformat(), str(row[0])]
    )
    return {"items": [_render(uow, kind, row) for row in rows], "next": next_after}


def _render(uow: UnitOfWork, kind: ChangeKind, row: tuple) -> dict[str, Any]:
    own = len(kind.columns)
    change_id, values = row[0], row[1 : 1 + own]
    status, filed_by, created, decided_by, decided_at, reason, tenant = row[1 + own :]
    return {
        "id": str(change_id),
        "status": status,
        **kind.show(*values),
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
