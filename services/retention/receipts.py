"""Each service's answer to a request, and what completing it leaves: an erasure gets a receipt
signed with the platform's audit key, citing the ledger entries (the answers' event ids) that
record each step; a destruction gets its report."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from typing import Any

from kernel.envelope import Envelope
from kernel.errors import NotFound
from kernel.signing import Signer
from kernel.uow import UnitOfWork
from services.retention import sealed, tenant_exports
from services.retention.requests import Timing, completion_event, get_request
from services.retention.schedules import destruction_report

log = logging.getLogger(__name__)


def canonical(document: dict[str, Any]) -> bytes:
    """A receipt's signed bytes: sorted keys, no whitespace, UTF-8 (what a verifier recomputes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_answer(
    uow: UnitOfWork, event: Envelope, signer: Signer, now: dt.datetime, timing: Timing
) -> None:
    p = event.payload
    if p["service"] != event.source:
        # Only a service answers for itself: its events carry its name as their source, which
        # its broker user alone may publish under (services/broker_definitions.py).
        log.error(
            "answer %s names %s but came from %s: ignored",
            event.event_id,
            p["service"],
            event.source,
        )
        return
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
    if row is not None:
        uow.publish(completion_event(uow, p["request_id"]))
    if row is not None and row[1] == "destruction":
        destruction_report(uow, p["request_id"])
        # Every other service has done its part: retention's is its free text about the tenant,
        # and its exports (their keys are the tenant's too).
        sealed.destroy_tenant(uow, row[0])
        tenant_exports.forget_tenant(uow, row[0])
    if row is not None and row[1] == "erasure":
        # An export made before now may hold the subject: it ends with the erasure, at once.
        tenant_exports.end_for_erasure(uow, row[0], p["request_id"], now)
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


def get_receipt(uow: UnitOfWork, tenant_id: str, request_id: str) -> dict[str, Any]:
    get_request(uow, tenant_id, request_id)
    uow.cur.execute("SELECT receipt FROM requests WHERE id = %s", (request_id,))
    receipt = uow.cur.fetchone()[0]
    if receipt is None:
        raise NotFound("no receipt: the request is not a completed erasure")
    return receipt
