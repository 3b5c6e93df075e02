"""Data-subject requests: filed, fanned out as commands, tracked to every service's answer.

A request is complete when every service that had announced itself when it was filed has
answered; an erasure then gets a receipt signed with the platform's audit key, citing the
ledger entries (the answers' event ids) that record each step.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernel.db import keyset_page
from kernel.envelope import Envelope, new_envelope
from kernel.errors import Conflict, Forbidden, NotFound, require_id
from kernel.signing import Signer
from kernel.uow import UnitOfWork
from services.retention import sealed
from services.retention.events import MESSAGES


def canonical(document: dict[str, Any]) -> bytes:
    """A receipt's signed bytes: sorted keys, no whitespace, UTF-8 (what a verifier recomputes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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
            # The legal clock runs from receipt, approval or not.
            now + dt.timedelta(days=timing.deadline_days),
        ),
    )
    if not waits:
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
        return
    uow.cur.execute(
        "INSERT INTO request_services (request_id, service, status, attempts, last_sent_at,"
        " next_attempt_at) SELECT %s, name, 'pending', 1, %s, %s FROM services",
        (request_id, now, now + timing.backoff(1)),
    )
    uow.publish(_command(uow, request_id))


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


def _message(
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


def _decision_event(
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
    return _message(
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
    if decision not in ("approved", "denied"):
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
        _decision_event(
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
    _lock_policy(uow, tenant_id)
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
        _message(
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
    if decision not in ("approved", "denied"):
        raise ValueError(f"a decision is 'approved' or 'denied', not {decision!r}")
    get_policy_change(uow, tenant_id, change_id)
    _lock_policy(uow, tenant_id)
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
        _decision_event(
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


def _lock_policy(uow: UnitOfWork, tenant_id: str) -> None:
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
    return _message(
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


def record_answer(
    uow: UnitOfWork, event: Envelope, signer: Signer, now: dt.datetime, timing: Timing
) -> None:
    p = event.payload
    # Answers to one request take turns: two last answers recorded side by side would each see
    # the other still pending, and nobody would complete the request.
    uow.cur.execute("SELECT 1 FROM requests WHERE id = %s FOR UPDATE", (p["request_id"],))
    if uow.cur.fetchone() is None:
        return  # not a tracked request (a schedule's purge, say): the ledger has the answer
    uow.cur.execute(
        "SELECT attempts FROM request_services WHERE request_id = %s AND service = %s",
        (p["request_id"], p["service"]),
    )
    sent = uow.cur.fetchone()
    # A failure is asked again after its backoff; any other answer is final.
    retry_at = now + timing.backoff(sent[0] if sent else 1) if p["status"] == "failed" else None
    uow.cur.execute(
        "INSERT INTO request_services (request_id, service, status, detail, basis, until,"
        " answer_event_id, answered_at, next_attempt_at)"
        " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s"
        " WHERE EXISTS (SELECT 1 FROM requests WHERE id = %s)"
        " ON CONFLICT (request_id, service) DO UPDATE SET status = EXCLUDED.status,"
        " detail = EXCLUDED.detail, basis = EXCLUDED.basis, until = EXCLUDED.until,"
        " answer_event_id = EXCLUDED.answer_event_id, answered_at = EXCLUDED.answered_at,"
        " next_attempt_at = EXCLUDED.next_attempt_at",
        (
            p["request_id"],
            p["service"],
            p["status"],
            p.get("detail"),
            p.get("basis"),
            p.get("until"),
            event.event_id,
            event.occurred_at,
            retry_at,
            p["request_id"],
        ),
    )
    uow.cur.execute(
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'failed')) FROM request_services"
        " WHERE request_id = %s",
        (p["request_id"],),
    )
    (open_parts,) = uow.cur.fetchone()
    if open_parts:
        return  # failed parts are retried until the deadline, which fails the request
    uow.cur.execute(
        "UPDATE requests SET status = 'completed', completed_at = %s"
        " WHERE id = %s AND status = 'pending' RETURNING tenant_id, type",
        (now, p["request_id"]),
    )
    row = uow.cur.fetchone()
    if row is not None and row[1] == "destruction":
        from services.retention.schedules import destruction_report

        destruction_report(uow, p["request_id"])
        # Every other service has done its part: retention's is its free text about the tenant.
        sealed.destroy_tenant(uow, row[0])
    if row is not None and row[1] == "erasure":
        receipt = make_receipt(uow, str(row[0]), p["request_id"], signer)
        uow.cur.execute(
            "UPDATE requests SET receipt = %s WHERE id = %s",
            (canonical(receipt).decode(), p["request_id"]),
        )


def make_receipt(uow: UnitOfWork, tenant_id: str, request_id: str, signer: Signer) -> dict:
    """What every service did, signed: an auditor checks it against the ledger entries cited
    (the answers' event ids), with the audit public key, without trusting this database."""
    request = get_request(uow, tenant_id, request_id)
    uow.cur.execute(
        "SELECT service, answer_event_id FROM request_services WHERE request_id = %s",
        (request_id,),
    )
    cited = {service: str(event_id) for service, event_id in uow.cur.fetchall()}
    body = {
        "receipt_version": 1,
        "request_id": request_id,
        "tenant_id": tenant_id,
        "subject": request["subject"],
        "completed_at": request["completed_at"],
        "services": {
            name: {**answer, "ledger_event_id": cited[name]}
            for name, answer in request["services"].items()
        },
    }
    signature = signer.sign(canonical(body))
    return {
        **body,
        "signature": {
            "algorithm": "Ed25519",
            "key_id": signer.key_id,
            "public_key": signer.public_key_b64,
            "value": base64.b64encode(signature).decode(),
            "signed": "the canonical JSON of this receipt without its signature",
        },
    }


def export_subject(uow: UnitOfWork, tenant_id: str, request_id: str) -> tuple[str, list[str]]:
    """The subject of an access request and the services to gather its export from."""
    request = get_request(uow, tenant_id, request_id)
    if request["type"] != "access":
        raise NotFound("no export: the request is not an access request")
    return next(iter(request["subject"].values())), sorted(request["services"])


def get_receipt(uow: UnitOfWork, tenant_id: str, request_id: str) -> dict[str, Any]:
    get_request(uow, tenant_id, request_id)
    uow.cur.execute("SELECT receipt FROM requests WHERE id = %s", (request_id,))
    receipt = uow.cur.fetchone()[0]
    if receipt is None:
        raise NotFound("no receipt: the request is not a completed erasure")
    return receipt


def register_service(uow: UnitOfWork, event: Envelope) -> None:
    p = event.payload
    uow.cur.execute(
        "INSERT INTO services (name, categories, commands, protocol_version, announced_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
        " categories = EXCLUDED.categories, commands = EXCLUDED.commands,"
        " protocol_version = EXCLUDED.protocol_version, announced_at = EXCLUDED.announced_at",
        (
            p["service"],
            json.dumps(p["categories"]),
            json.dumps(p["commands"]),
            p["protocol_version"],
            event.occurred_at,
        ),
    )


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


def registered_services(uow: UnitOfWork) -> list[dict[str, Any]]:
    uow.cur.execute("SELECT name, categories, commands FROM services ORDER BY name")
    return [{"name": n, "categories": c, "commands": m} for n, c, m in uow.cur.fetchall()]


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


def mark_overdue(uow: UnitOfWork, now: dt.datetime) -> list[str]:
    """Requests past their due date turn failed; each one raises an alert event."""
    uow.cur.execute(
        "UPDATE requests SET status = 'failed', completed_at = %s"
        " WHERE status IN ('pending', 'awaiting_approval') AND due_at < %s"
        " RETURNING id, tenant_id",
        (now, now),
    )
    overdue = uow.cur.fetchall()
    for request_id, tenant_id in overdue:
        uow.publish(
            new_envelope(
                type="privacy_request_overdue",
                schema_version=1,
                source="retention",
                stream_id=f"privacy-{request_id}",
                stream_version=2,
                tenant_id=tenant_id,
                actor_id="retention",
                payload={"request_id": str(request_id), "tenant_id": str(tenant_id)},
            )
        )
    return [str(r[0]) for r in overdue]
