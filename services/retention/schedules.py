"""The retention schedule: clocks started by events, commands sent when they run out.

A cancelled tenant is destroyed when its grace ends (``destroy_after`` comes with the
cancellation) unless it was reactivated. Periods (``policies``: a default per data category, a
tenant's own override) count in days of ``LEDGERDESK_DAY_SECONDS``: a closed ticket's words go
once its tenant's period has run since it closed; the access log's IPs and user agents are kept
under a key per tenant and day, each destroyed once the whole day is older than its tenant's
period (60 days by default), so none outlives its period by more than a day.

Each purge's cut-off is kept per category and tenant (``purge_cutoffs``), the latest ever sent:
what a restored service must purge again (``services.retention.forgetting``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from kernel.envelope import Envelope, new_envelope
from kernel.uow import UnitOfWork
from services.retention.requests import Timing
from services.retention.sealed import seal


def learn_from_accounts(uow: UnitOfWork, event: Envelope) -> None:
    p = event.payload
    if event.type == "tenant_cancelled":
        uow.cur.execute(
            "INSERT INTO schedules (tenant_id, kind, due_at, status)"
            " VALUES (%s, 'destruction', %s, 'waiting') ON CONFLICT (tenant_id, kind) DO UPDATE"
            " SET due_at = EXCLUDED.due_at, status = 'waiting', request_id = NULL"
            " WHERE schedules.status <> 'running'",
            (p["tenant_id"], p["destroy_after"]),
        )
    elif event.type == "tenant_reactivated":
        uow.cur.execute(
            "UPDATE schedules SET status = 'cancelled' WHERE tenant_id = %s"
            " AND kind = 'destruction' AND status = 'waiting'",
            (p["tenant_id"],),
        )


def learn_ticket_closed(uow: UnitOfWork, event: Envelope) -> None:
    p = event.payload
    uow.cur.execute(
        "INSERT INTO closed_tickets (ticket_id, tenant_id, closed_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (ticket_id) DO NOTHING",
        (p["ticket_id"], p["tenant_id"], event.occurred_at),
    )


def period(days: int, day_seconds: int) -> dt.timedelta:
    return dt.timedelta(seconds=days * day_seconds)


def day_start(moment: dt.datetime, day_seconds: int) -> dt.datetime:
    """The start of the day (of ``day_seconds``, counted from the epoch) ``moment`` falls in."""
    return dt.datetime.fromtimestamp(int(moment.timestamp()) // day_seconds * day_seconds, dt.UTC)


def expire_closed_tickets(uow: UnitOfWork, now: dt.datetime, day_seconds: int) -> dict[str, int]:
    """For every tenant with closed tickets past its period (its own, or the default), send
    the purge of closed tickets before its cut-off; returns {tenant: tickets} sent for."""
    uow.cur.execute(
        "SELECT o.tenant_id, coalesce(t.days, d.days)"
        " FROM (SELECT DISTINCT tenant_id FROM closed_tickets WHERE purged_at IS NULL) o"
        " JOIN policies d ON d.category = 'closed_tickets' AND d.tenant_id IS NULL"
        " LEFT JOIN policies t ON t.category = 'closed_tickets' AND t.tenant_id = o.tenant_id"
    )
    sent = {}
    for tenant_id, days in uow.cur.fetchall():
        cutoff = now - period(days, day_seconds)
        uow.cur.execute(
            "UPDATE closed_tickets SET purged_at = %s WHERE tenant_id = %s AND purged_at IS NULL"
            " AND closed_at < %s",
            (now, tenant_id, cutoff),
        )
        if not uow.cur.rowcount:
            continue
        sent[str(tenant_id)] = uow.cur.rowcount
        request_id = str(uuid.uuid4())
        _keep_cutoff(uow, "closed_tickets", tenant_id, cutoff, request_id, now)
        uow.publish(_purge(request_id, "closed_tickets", str(tenant_id), cutoff))
    return sent


def destroy_due_tenants(uow: UnitOfWork, now: dt.datetime, timing: Timing) -> list[str]:
    """Start the destruction of every tenant whose grace has run out; returns their ids."""
    uow.cur.execute(
        "SELECT tenant_id FROM schedules WHERE kind = 'destruction' AND status = 'waiting'"
        " AND due_at <= %s FOR UPDATE SKIP LOCKED",
        (now,),
    )
    started = []
    for (tenant_id,) in uow.cur.fetchall():
        request_id = str(uuid.uuid4())
        uow.cur.execute(
            "INSERT INTO requests (id, tenant_id, type, subject_kind, subject_id, filed_by,"
            " identity_check_sealed, status, created_at, due_at)"
            " VALUES (%s, %s, 'destruction', 'tenant', %s, %s, %s, 'pending', %s, %s)",
            (
                request_id,
                tenant_id,
                tenant_id,
                tenant_id,
                seal(uow.cipher, tenant_id, "identity_check", "the grace period ran out"),
                now,
                now + dt.timedelta(days=timing.deadline_days),
            ),
        )
        uow.cur.execute(
            "INSERT INTO request_services (request_id, service, status, attempts, last_sent_at,"
            " next_attempt_at) SELECT %s, name, 'pending', 1, %s, %s FROM services",
            (request_id, now, now + timing.backoff(1)),
        )
        uow.cur.execute(
            "UPDATE schedules SET status = 'running', request_id = %s WHERE tenant_id = %s"
            " AND kind = 'destruction'",
            (request_id, tenant_id),
        )
        uow.publish(_command(request_id, "destroy_tenant", str(tenant_id), str(tenant_id)))
        started.append(str(tenant_id))
    return started


def purge_access_logs(uow: UnitOfWork, now: dt.datetime, day_seconds: int) -> dict[str, Any] | None:
    """Send the purge of the access log's days wholly older than each tenant's period (its own
    override, or the default): one command, the default's cut-off and each overriding tenant's
    own (``privacy_command`` v3). Cut-offs fall on day boundaries, so it goes once a day, when
    one moves past what earlier purges reached. Returns what was sent, or None."""
    uow.cur.execute("SELECT tenant_id, days FROM policies WHERE category = 'access_log'")
    periods = dict(uow.cur.fetchall())
    default = day_start(now - period(periods.pop(None), day_seconds), day_seconds)
    own = {
        str(tenant): day_start(now - period(days, day_seconds), day_seconds)
        for tenant, days in periods.items()
    }
    uow.cur.execute(
        "SELECT tenant_id, before FROM purge_cutoffs WHERE category = 'access_log' FOR UPDATE"
    )
    rows = uow.cur.fetchall()
    covered = next((before for tenant, before in rows if tenant is None), None)
    reached = {str(tenant): before for tenant, before in rows if tenant is not None}
    if covered is not None and default <= covered:
        if all(cutoff <= reached.get(t, covered) for t, cutoff in own.items()):
            return None
    request_id = str(uuid.uuid4())
    _keep_cutoff(uow, "access_log", None, default, request_id, now)
    for tenant, cutoff in own.items():
        # Until its first own cut-off, a tenant's log went with the default's.
        kept = max(cutoff, reached.get(tenant, covered) or cutoff)
        _keep_cutoff(uow, "access_log", tenant, kept, request_id, now)
    # A tenant back on the default (its override gone) goes with the default's from now on.
    for former in set(reached) - set(own):
        _keep_cutoff(uow, "access_log", former, default, request_id, now)
    uow.publish(_purge(request_id, "access_log", None, default, own))
    return {"before": default.isoformat(), "cutoffs": {t: c.isoformat() for t, c in own.items()}}


def _keep_cutoff(
    uow: UnitOfWork,
    category: str,
    tenant_id: Any,
    before: dt.datetime,
    request_id: str,
    now: dt.datetime,
) -> None:
    """Remember a purge's cut-off for this category and tenant: the latest ever sent."""
    uow.cur.execute(
        "INSERT INTO purge_cutoffs (category, tenant_id, before, request_id, issued_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (category, tenant_id) DO UPDATE"
        " SET before = greatest(purge_cutoffs.before, EXCLUDED.before),"
        " request_id = EXCLUDED.request_id, issued_at = EXCLUDED.issued_at",
        (category, tenant_id, before, request_id, now),
    )


def _purge(
    request_id: str,
    category: str,
    tenant_id: str | None,
    before: dt.datetime,
    cutoffs: dict[str, dt.datetime] | None = None,
) -> Envelope:
    """A ``purge_category`` command: of one tenant, or of every tenant (each named in
    ``cutoffs`` before its own moment, the others before ``before``)."""
    command = _command(request_id, "purge_category", tenant_id, None)
    command.payload.update(
        category=category,
        before=before.isoformat(),
        services=None,
        cutoffs=None if cutoffs is None else {t: c.isoformat() for t, c in cutoffs.items()},
    )
    return dataclasses.replace(command, schema_version=3)


def destruction_report(uow: UnitOfWork, request_id: str) -> None:
    """Record in the audit ledger what each service did with a destroyed tenant."""
    uow.cur.execute(
        "SELECT r.tenant_id, s.service, s.status, s.answer_event_id FROM requests r"
        " JOIN request_services s ON s.request_id = r.id WHERE r.id = %s",
        (request_id,),
    )
    rows = uow.cur.fetchall()
    if not rows:
        return
    tenant_id = str(rows[0][0])
    uow.cur.execute("UPDATE schedules SET status = 'done' WHERE request_id = %s", (request_id,))
    uow.publish(
        new_envelope(
            type="tenant_destroyed",
            schema_version=1,
            source="retention",
            stream_id=f"privacy-{request_id}",
            stream_version=2,
            tenant_id=uuid.UUID(tenant_id),
            actor_id="retention",
            payload={
                "request_id": request_id,
                "tenant_id": tenant_id,
                "services": {
                    service: {"status": status, "answer_event_id": str(answer)}
                    for _, service, status, answer in rows
                },
            },
        )
    )


CATEGORIES = {
    "access_log": "IP addresses and user agents in the access log",
    "closed_tickets": "closed tickets' text: subject, body and messages",
}


def policies(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    """Each category's effective period for this tenant: its own override or the default."""
    uow.cur.execute(
        "SELECT category, days, tenant_id IS NOT NULL FROM policies"
        " WHERE tenant_id = %s OR tenant_id IS NULL ORDER BY category, tenant_id NULLS LAST",
        (tenant_id,),
    )
    effective: dict[str, dict[str, Any]] = {}
    for category, days, overridden in uow.cur.fetchall():
        effective.setdefault(
            category,
            {
                "category": category,
                "days": days,
                "overridden": overridden,
                "description": CATEGORIES.get(category, ""),
            },
        )
    return {"items": sorted(effective.values(), key=lambda p: p["category"])}


def _command(
    request_id: str, command: str, tenant_id: str | None, subject_id: str | None
) -> Envelope:
    payload: dict[str, Any] = {
        "request_id": request_id,
        "command": command,
        "tenant_id": tenant_id,
        "subject_id": subject_id,
        "subject_kind": "tenant" if subject_id else None,
    }
    return new_envelope(
        type="privacy_command",
        schema_version=1,
        source="retention",
        stream_id=f"privacy-{request_id}",
        stream_version=1,
        tenant_id=uuid.UUID(tenant_id) if tenant_id else None,
        actor_id="retention",
        payload=payload,
    )
