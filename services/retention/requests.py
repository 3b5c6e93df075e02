"""Data-subject requests: filed, sent to every service as commands, followed up until each has
answered or the deadline passes.

A request is complete when every service that had announced itself when it was filed has
answered (``receipts.record_answer``); which types wait for a second admin's approval first is
the tenant's approval policy (``approvals``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernel.db import keyset_page
from kernel.envelope import Envelope, new_envelope
from kernel.errors import Conflict, NotFound, require_id
from kernel.uow import UnitOfWork
from services.retention import sealed
from services.retention.approvals import approval_policy
from services.retention.events import DECISIONS
from services.retention.four_eyes import check_four_eyes, decision_event, retention_message

COMMAND_FOR = {
    "erasure": "erase_subject",
    "restriction": "restrict_subject",
    "objection": "object_to_marketing",
    "rectification": "rectify_subject",
    "lift_restriction": "lift_restriction",
    "destruction": "destroy_tenant",
}


@dataclass(frozen=True)
class Timing:
    """How long a request may take, and how soon an unanswered part is asked again."""

    deadline_days: float = 30.0
    # An open request this close to its deadline is announced once (0: never).
    due_soon_days: float = 7.0
    retry_seconds: float = 300.0
    max_retry_seconds: float = 86400.0

    def backoff(self, attempts: int) -> dt.timedelta:
        """The wait after the ``attempts``-th send: doubling from ``retry_seconds``, capped."""
        seconds = self.retry_seconds * 2 ** min(max(attempts - 1, 0), 32)
        return dt.timedelta(seconds=min(seconds, self.max_retry_seconds))


# (tenant_id, subject_id) -> {"kind": ...}; NotFound for an id this tenant does not have.
SubjectLookup = Callable[[str, str], dict[str, Any]]


def file_request(
    uow: UnitOfWork,
    lookup: SubjectLookup,
    tenant_id: str,
    filed_by: str,
    command: dict[str, Any],
    now: dt.datetime,
    timing: Timing,
    filed_key_issuer: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record the request and send its command; returns (request, created). ``filed_key_issuer``
    is whom the filer's key answers to (see ``check_four_eyes``)."""
    kind, subject_id = _subject(command["subject"])
    described = lookup(tenant_id, subject_id)
    if described.get("kind") != kind:
        raise NotFound(f"no such {kind}")
    uow.cur.execute(
        "SELECT id FROM requests WHERE tenant_id = %s AND type = %s AND subject_id = %s"
        " AND status IN ('pending', 'awaiting_approval')",
        (tenant_id, command["type"], subject_id),
    )
    existing = uow.cur.fetchone()
    if existing is not None:
        return get_request(uow, tenant_id, str(existing[0])), False
    request_id = str(uuid.uuid4())
    waits = command["type"] in approval_policy(uow, tenant_id)["requires_approval"]
    # The legal clock runs from receipt, approval or not.
    due = now + dt.timedelta(days=timing.deadline_days)
    uow.cur.execute(
        "INSERT INTO requests (id, tenant_id, type, subject_kind, subject_id, filed_by,"
        " filed_key_issuer, identity_check_sealed, status, created_at, due_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            request_id,
            tenant_id,
            command["type"],
            kind,
            subject_id,
            filed_by,
            filed_key_issuer or filed_by,
            sealed.seal(uow.cipher, tenant_id, "identity_check", command["identity_check"]),
            "awaiting_approval" if waits else "pending",
            now,
            due,
        ),
    )
    if waits:
        # The tenant's admins are told it waits for one of them (accounts mails them).
        uow.publish(
            retention_message(
                uow,
                "privacy_request_awaiting_approval",
                f"privacy-{request_id}",
                tenant_id,
                filed_by,
                {
                    "request_id": request_id,
                    "tenant_id": tenant_id,
                    "type": command["type"],
                    "due_at": due.isoformat(),
                },
            )
        )
    else:
        _dispatch(uow, request_id, now, timing)
    return get_request(uow, tenant_id, request_id), True


def _dispatch(uow: UnitOfWork, request_id: str, now: dt.datetime, timing: Timing) -> None:
    """Send a request on its way: one part per announced service, stored before the command
    leaves (an access request is complete at once: its export is gathered when read)."""
    uow.cur.execute("SELECT type FROM requests WHERE id = %s", (request_id,))
    if uow.cur.fetchone()[0] == "access":
        uow.cur.execute(
            "INSERT INTO request_services (request_id, service, status, detail)"
            " SELECT %s, name, 'done', 'included in the export' FROM services",
            (request_id,),
        )
        uow.cur.execute(
            "UPDATE requests SET status = 'completed', completed_at = %s WHERE id = %s",
            (now, request_id),
        )
        uow.publish(completion_event(uow, request_id))
        return
    uow.cur.execute(
        "INSERT INTO request_services (request_id, service, status, attempts, last_sent_at,"
        " next_attempt_at) SELECT %s, name, 'pending', 1, %s, %s FROM services",
        (request_id, now, now + timing.backoff(1)),
    )
    uow.publish(_command(uow, request_id))


def completion_event(uow: UnitOfWork, request_id: str) -> Envelope:
    """``privacy_request_completed``: the request, its type and whom it concerned, by id (a
    tenant's webhooks tell its integrations, which may hold copies to erase too)."""
    uow.cur.execute(
        "SELECT tenant_id, type, subject_kind, subject_id FROM requests WHERE id = %s",
        (request_id,),
    )
    tenant_id, type_, kind, subject_id = uow.cur.fetchone()
    return retention_message(
        uow,
        "privacy_request_completed",
        f"privacy-{request_id}",
        str(tenant_id),
        "retention",
        {
            "request_id": str(request_id),
            "tenant_id": str(tenant_id),
            "type": type_,
            "subject_kind": kind,
            "subject_id": str(subject_id),
        },
    )


def _command(uow: UnitOfWork, request_id: str, services: list[str] | None = None) -> Envelope:
    """The request's command: to every service (v1), or again to those named (v2)."""
    uow.cur.execute(
        "SELECT tenant_id, type, subject_kind, subject_id, filed_by FROM requests WHERE id = %s",
        (request_id,),
    )
    tenant_id, type_, kind, subject_id, filed_by = uow.cur.fetchone()
    payload = {
        "request_id": request_id,
        "command": COMMAND_FOR[type_],
        "tenant_id": str(tenant_id),
        "subject_id": str(subject_id),
        "subject_kind": kind,
    }
    return new_envelope(
        type="privacy_command",
        schema_version=1 if services is None else 2,
        source="retention",
        stream_id=f"privacy-{request_id}",
        stream_version=1,
        tenant_id=tenant_id,
        actor_id=str(filed_by),
        payload=payload if services is None else {**payload, "services": services},
        trace=uow.trace,
    )


def decide(
    uow: UnitOfWork,
    tenant_id: str,
    request_id: str,
    decider: dict[str, Any],
    decision: str,
    reason: str,
    now: dt.datetime,
    timing: Timing,
) -> dict[str, Any]:
    """Approve (the request is sent) or deny (it ends, with the reason kept) a request that
    waits for approval. Four eyes (``check_four_eyes``): not the filer, not through a key the
    filer issued, and an admin since before it was filed."""
    if decision not in DECISIONS:
        raise ValueError(f"a decision is 'approved' or 'denied', not {decision!r}")
    get_request(uow, tenant_id, request_id)
    uow.cur.execute(
        "SELECT status, filed_by, filed_key_issuer, created_at FROM requests"
        " WHERE id = %s FOR UPDATE",
        (request_id,),
    )
    status, filed_by, filed_key_issuer, filed_at = uow.cur.fetchone()
    if status != "awaiting_approval":
        raise Conflict(f"the request is {status}, not awaiting approval")
    check_four_eyes(decider, filed_by, filed_key_issuer, filed_at, "a request")
    admin_id = decider["agent_id"]
    sealed_reason = sealed.seal(uow.cipher, tenant_id, "decision_reason", reason)
    uow.cur.execute(
        "UPDATE requests SET decision = %s, decided_by = %s, decided_at = %s,"
        " decision_reason_sealed = %s, status = %s, completed_at = %s WHERE id = %s",
        (
            decision,
            admin_id,
            now,
            sealed_reason,
            "pending" if decision == "approved" else "denied",
            None if decision == "approved" else now,
            request_id,
        ),
    )
    uow.publish(
        decision_event(
            uow,
            f"privacy_request_{decision}",
            f"privacy-{request_id}",
            tenant_id,
            decider,
            sealed_reason,
            {"request_id": request_id, "decision": decision},
        )
    )
    if decision == "approved":
        _dispatch(uow, request_id, now, timing)
    return get_request(uow, tenant_id, request_id)


def list_requests(
    uow: UnitOfWork, tenant_id: str, status: str | None, limit: int, after: list | None
) -> dict[str, Any]:
    query = f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if status:
        query += " AND status = %s"
        params.append(status)
    rows, next_after = keyset_page(
        uow.cur, query, params, limit, after, lambda row: [row[5].isoformat(), str(row[0])]
    )
    return {"items": _render_requests(uow, rows), "next": next_after}


def _subject(subject: dict[str, Any]) -> tuple[str, str]:
    if subject.get("contact_id"):
        return "contact", str(subject["contact_id"])
    return "agent", str(subject["agent_id"])


_REQUEST_COLUMNS = (
    "id, type, status, subject_kind, subject_id, created_at, due_at, completed_at,"
    " filed_by, decision, decided_by, decided_at, decision_reason_sealed, tenant_id"
)


def get_request(uow: UnitOfWork, tenant_id: str, request_id: str) -> dict[str, Any]:
    require_id(request_id, "request")
    uow.cur.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = %s AND tenant_id = %s",
        (request_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such request")
    return _render_requests(uow, [row])[0]


def _render_requests(uow: UnitOfWork, rows: list[tuple]) -> list[dict[str, Any]]:
    """Requests as the API shows them, with every service's answer: one query for a whole page."""
    answers: dict[Any, dict[str, Any]] = {row[0]: {} for row in rows}
    if rows:
        uow.cur.execute(
            "SELECT request_id, service, status, detail, basis, until, attempts, next_attempt_at"
            " FROM request_services WHERE request_id = ANY(%s) ORDER BY request_id, service",
            ([row[0] for row in rows],),
        )
        statuses = {row[0]: row[2] for row in rows}
        for request_id, name, st, d, b, u, attempts, next_at in uow.cur.fetchall():
            answer: dict[str, Any] = {"status": st, "detail": d or ""}
            answer.update({k: v for k, v in (("basis", b), ("until", u)) if v is not None})
            if attempts:
                answer["attempts"] = attempts
            if st in ("pending", "failed") and next_at is not None:
                if statuses[request_id] == "pending":
                    answer["next_attempt_at"] = next_at.isoformat()
            answers[request_id][name] = answer
    return [_render_request(uow, row, answers[row[0]]) for row in rows]


def _render_request(uow: UnitOfWork, row: tuple, services: dict[str, Any]) -> dict[str, Any]:
    rid, type_, status, kind, subject, created, due, completed, filed_by = row[:9]
    decision, decided_by, decided_at, reason, tenant_id = row[9:]
    return {
        "id": str(rid),
        "type": type_,
        "status": status,
        "subject": {f"{kind}_id": str(subject)},
        "services": services,
        "created_at": created.isoformat(),
        "due_at": due.isoformat(),
        "completed_at": completed.isoformat() if completed else None,
        "filed_by": str(filed_by),
        "approval": None
        if decision is None
        else {
            "decision": decision,
            "decided_by": str(decided_by),
            "decided_at": decided_at.isoformat(),
            "reason": sealed.opened(uow.cipher, tenant_id, "decision_reason", reason),
        },
    }


def export_subject(uow: UnitOfWork, tenant_id: str, request_id: str) -> tuple[str, list[str]]:
    """The subject of an access request and the services to gather its export from."""
    request = get_request(uow, tenant_id, request_id)
    if request["type"] != "access":
        raise NotFound("no export: the request is not an access request")
    return next(iter(request["subject"].values())), sorted(request["services"])


def erasure_log(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Every completed erasure and destruction, oldest first: what a restored service applies
    again before it serves."""
    uow.cur.execute(
        "SELECT id, type, tenant_id, subject_kind, subject_id FROM requests"
        " WHERE type IN ('erasure', 'destruction') AND status = 'completed'"
        " ORDER BY completed_at, id"
    )
    return [
        {
            "request_id": str(rid),
            "command": "erase_subject" if type_ == "erasure" else "destroy_tenant",
            "tenant_id": str(tenant),
            "subject_kind": kind,
            "subject_id": str(subject),
        }
        for rid, type_, tenant, kind, subject in uow.cur.fetchall()
    ]


def resend_due(uow: UnitOfWork, now: dt.datetime, timing: Timing) -> int:
    """Send each open request's command again to the services that still owe an answer (or
    answered ``failed``) once their backoff has passed; returns the commands sent. Durable
    queues keep a command for a service that is down; this covers one that was lost, dead-
    lettered after its delivery limit, or failed for a reason that may pass."""
    uow.cur.execute(
        "SELECT rs.request_id, rs.service, rs.attempts FROM request_services rs"
        " JOIN requests r ON r.id = rs.request_id"
        " WHERE r.status = 'pending' AND rs.status IN ('pending', 'failed')"
        " AND rs.next_attempt_at <= %s ORDER BY rs.request_id, rs.service"
        " FOR UPDATE OF rs SKIP LOCKED",
        (now,),
    )
    due: dict[str, list[tuple[str, int]]] = {}
    for request_id, service, attempts in uow.cur.fetchall():
        due.setdefault(str(request_id), []).append((service, attempts))
    for request_id, parts in due.items():
        for service, attempts in parts:
            uow.cur.execute(
                "UPDATE request_services SET attempts = %s, last_sent_at = %s,"
                " next_attempt_at = %s WHERE request_id = %s AND service = %s",
                (attempts + 1, now, now + timing.backoff(attempts + 1), request_id, service),
            )
        uow.publish(_command(uow, request_id, [service for service, _ in parts]))
    return len(due)


def announce_due_soon(uow: UnitOfWork, now: dt.datetime, timing: Timing) -> list[str]:
    """Open requests within ``due_soon_days`` of their deadline, each announced once
    (``privacy_request_due_soon``, ids and states: the tenant's admins are mailed while it can
    still be approved, or a service's answer seen to)."""
    if timing.due_soon_days <= 0:
        return []
    uow.cur.execute(
        "UPDATE requests SET due_soon_at = %s"
        " WHERE status IN ('pending', 'awaiting_approval') AND due_soon_at IS NULL"
        " AND due_at <= %s AND due_at >= %s"
        " RETURNING id, tenant_id, type, status, due_at",
        (now, now + dt.timedelta(days=timing.due_soon_days), now),
    )
    due_soon = uow.cur.fetchall()
    for request_id, tenant_id, type_, status, due_at in due_soon:
        uow.publish(
            retention_message(
                uow,
                "privacy_request_due_soon",
                f"privacy-{request_id}",
                str(tenant_id),
                "retention",
                {
                    "request_id": str(request_id),
                    "tenant_id": str(tenant_id),
                    "type": type_,
                    "status": status,
                    "due_at": due_at.isoformat(),
                },
            )
        )
    return [str(row[0]) for row in due_soon]


def mark_overdue(uow: UnitOfWork, now: dt.datetime) -> list[str]:
    """Requests past their due date turn failed; each one raises an alert event."""
    uow.cur.execute(
        "UPDATE requests SET status = 'failed', completed_at = %s"
        " WHERE status IN ('pending', 'awaiting_approval') AND due_at < %s"
        " RETURNING id, tenant_id, type",
        (now, now),
    )
    overdue = uow.cur.fetchall()
    for request_id, tenant_id, type_ in overdue:
        uow.publish(
            retention_message(
                uow,
                "privacy_request_overdue",
                f"privacy-{request_id}",
                str(tenant_id),
                "retention",
                {"request_id": str(request_id), "tenant_id": str(tenant_id), "type": type_},
            )
        )
    return [str(r[0]) for r in overdue]
