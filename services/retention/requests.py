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
from typing import Any

from kernel.envelope import Envelope, new_envelope
from kernel.errors import NotFound, require_id
from kernel.signing import Signer
from kernel.uow import UnitOfWork


def canonical(document: dict[str, Any]) -> bytes:
    """A receipt's signed bytes: sorted keys, no whitespace, UTF-8 (what a verifier recomputes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


COMMAND_FOR = {
    "erasure": "erase_subject",
    "restriction": "restrict_subject",
    "objection": "object_to_marketing",
    "rectification": "rectify_subject",
    "lift_restriction": "lift_restriction",
}
DUE_DAYS = 30

# (tenant_id, subject_id) -> {"kind": ...}; NotFound for an id this tenant does not have.
SubjectLookup = Callable[[str, str], dict[str, Any]]


def file_request(
    uow: UnitOfWork,
    lookup: SubjectLookup,
    tenant_id: str,
    filed_by: str,
    command: dict[str, Any],
    now: dt.datetime,
) -> tuple[dict[str, Any], bool]:
    """Record the request and send its command; returns (request, created)."""
    kind, subject_id = _subject(command["subject"])
    described = lookup(tenant_id, subject_id)
    if described.get("kind") != kind:
        raise NotFound(f"no such {kind}")
    uow.cur.execute(
        "SELECT id FROM requests WHERE tenant_id = %s AND type = %s AND subject_id = %s"
        " AND status = 'pending'",
        (tenant_id, command["type"], subject_id),
    )
    existing = uow.cur.fetchone()
    if existing is not None:
        return get_request(uow, tenant_id, str(existing[0])), False
    request_id = str(uuid.uuid4())
    uow.cur.execute(
        "INSERT INTO requests (id, tenant_id, type, subject_kind, subject_id, filed_by,"
        " identity_check, status, created_at, due_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s)",
        (
            request_id,
            tenant_id,
            command["type"],
            kind,
            subject_id,
            filed_by,
            command["identity_check"],
            now,
            now + dt.timedelta(days=DUE_DAYS),
        ),
    )
    if command["type"] == "access":
        # Nothing changes anywhere: the export is gathered from every service when read.
        uow.cur.execute(
            "INSERT INTO request_services (request_id, service, status, detail)"
            " SELECT %s, name, 'done', 'included in the export' FROM services",
            (request_id,),
        )
        uow.cur.execute(
            "UPDATE requests SET status = 'completed', completed_at = %s WHERE id = %s",
            (now, request_id),
        )
        return get_request(uow, tenant_id, request_id), True
    uow.cur.execute(
        "INSERT INTO request_services (request_id, service, status)"
        " SELECT %s, name, 'pending' FROM services",
        (request_id,),
    )
    uow.publish(
        new_envelope(
            type="privacy_command",
            schema_version=1,
            source="retention",
            stream_id=f"privacy-{request_id}",
            stream_version=1,
            tenant_id=uuid.UUID(tenant_id),
            actor_id=filed_by,
            payload={
                "request_id": request_id,
                "command": COMMAND_FOR[command["type"]],
                "tenant_id": tenant_id,
                "subject_id": subject_id,
                "subject_kind": kind,
            },
            trace=uow.trace,
        )
    )
    return get_request(uow, tenant_id, request_id), True


def _subject(subject: dict[str, Any]) -> tuple[str, str]:
    if subject.get("contact_id"):
        return "contact", str(subject["contact_id"])
    return "agent", str(subject["agent_id"])


def get_request(uow: UnitOfWork, tenant_id: str, request_id: str) -> dict[str, Any]:
    require_id(request_id, "request")
    uow.cur.execute(
        "SELECT id, type, status, subject_kind, subject_id, created_at, due_at, completed_at"
        " FROM requests WHERE id = %s AND tenant_id = %s",
        (request_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such request")
    rid, type_, status, kind, subject, created, due, completed = row
    uow.cur.execute(
        "SELECT service, status, detail, basis, until FROM request_services"
        " WHERE request_id = %s ORDER BY service",
        (request_id,),
    )
    services = {
        name: {
            k: v
            for k, v in (("status", st), ("detail", d or ""), ("basis", b), ("until", u))
            if v is not None
        }
        for name, st, d, b, u in uow.cur.fetchall()
    }
    return {
        "id": str(rid),
        "type": type_,
        "status": status,
        "subject": {f"{kind}_id": str(subject)},
        "services": services,
        "created_at": created.isoformat(),
        "due_at": due.isoformat(),
        "completed_at": completed.isoformat() if completed else None,
    }


def record_answer(uow: UnitOfWork, event: Envelope, signer: Signer, now: dt.datetime) -> None:
    p = event.payload
    # Answers to one request take turns: two last answers recorded side by side would each see
    # the other still pending, and nobody would complete the request.
    uow.cur.execute("SELECT 1 FROM requests WHERE id = %s FOR UPDATE", (p["request_id"],))
    if uow.cur.fetchone() is None:
        return  # not a tracked request (a schedule's purge, say): the ledger has the answer
    uow.cur.execute(
        "INSERT INTO request_services (request_id, service, status, detail, basis, until,"
        " answer_event_id, answered_at) SELECT %s, %s, %s, %s, %s, %s, %s, %s"
        " WHERE EXISTS (SELECT 1 FROM requests WHERE id = %s)"
        " ON CONFLICT (request_id, service) DO UPDATE SET status = EXCLUDED.status,"
        " detail = EXCLUDED.detail, basis = EXCLUDED.basis, until = EXCLUDED.until,"
        " answer_event_id = EXCLUDED.answer_event_id, answered_at = EXCLUDED.answered_at",
        (
            p["request_id"],
            p["service"],
            p["status"],
            p.get("detail"),
            p.get("basis"),
            p.get("until"),
            event.event_id,
            event.occurred_at,
            p["request_id"],
        ),
    )
    uow.cur.execute(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER"
        " (WHERE status = 'failed') FROM request_services WHERE request_id = %s",
        (p["request_id"],),
    )
    pending, failed = uow.cur.fetchone()
    if pending:
        return
    uow.cur.execute(
        "UPDATE requests SET status = %s, completed_at = %s WHERE id = %s AND status = 'pending'"
        " RETURNING tenant_id, type",
        ("failed" if failed else "completed", now, p["request_id"]),
    )
    row = uow.cur.fetchone()
    if row is not None and row[1] == "destruction":
        from services.retention.schedules import destruction_report

        destruction_report(uow, p["request_id"])
    if row is not None and row[1] == "erasure" and not failed:
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


def mark_overdue(uow: UnitOfWork, now: dt.datetime) -> list[str]:
    """Requests past their due date turn failed; each one raises an alert event."""
    uow.cur.execute(
        "UPDATE requests SET status = 'failed', completed_at = %s"
        " WHERE status = 'pending' AND due_at < %s RETURNING id, tenant_id",
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
