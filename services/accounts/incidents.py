"""Personal-data breaches: the operator declares one, each affected tenant's admins are
notified, and they acknowledge it. Handlers and views over a unit of work, as ``handlers``.

Declaring is one transaction: the declaration, every affected tenant's notice (the text and
categories under that tenant's key) and the mails to its admins commit together or not at all,
so a tenant is notified if and only if the ledger says so, and an unknown tenant refuses the
whole declaration with nothing stored.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kernel.db import keyset_page
from kernel.errors import NotFound, ValidationFailed, require_id
from kernel.mail.outbox import Mailer
from kernel.uow import UnitOfWork
from services.accounts import notices
from services.accounts.domain import NOTIFICATION_WINDOW, Incident, IncidentNotice
from services.accounts.handlers import load

# The mail's kind: with the incident and the admin, its Message-ID (once per admin).
MAIL_KIND = "breach_notice"


def declare(
    uow: UnitOfWork, mailer: Mailer, command: dict[str, Any], now: dt.datetime | None = None
) -> dict[str, Any]:
    """Declare an incident (``DeclareIncidentV1``, loaded), record each affected tenant's
    notice and queue one mail to each of its admins. Returns the operator's view of it without
    the text and categories: ids, times and states, which the gateway may keep for replaying
    the answer (sealed under no tenant's key, it would outlive the tenants' destruction)."""
    now = now or _now()
    tenant_ids = [str(t) for t in command["tenant_ids"]]
    regions = _affected(uow, tenant_ids)
    incident = Incident.declare(
        incident_id=uuid.uuid4(),
        tenant_ids=tenant_ids,
        aware_at=command.get("aware_at") or now,
        now=now,
    )
    uow.save(incident, None, None)
    for tenant_id in tenant_ids:
        # Whom the mail goes to, read in this transaction as mail_admins reads it: the
        # tenant's active admins whose data is neither erased nor restricted.
        admins = [r.agent_id for r in notices.recipients(uow, tenant_id, role=notices.ADMIN)]
        notice = IncidentNotice.notify(
            incident=incident,
            tenant_id=tenant_id,
            categories=command["categories"],
            description=command["description"],
            admin_ids=admins,
        )
        uow.save(notice, tenant_id, regions[tenant_id])
        subject, body = _mail(notice)
        notices.mail_admins(
            uow, mailer, tenant_id, MAIL_KIND, subject, body, uuid.UUID(incident.id)
        )
    declared = operator_view(uow, incident.id, now)
    return {k: v for k, v in declared.items() if k not in ("categories", "description")}


def _mail(notice: IncidentNotice) -> tuple[str, str]:
    """The notice's mail: what the console shows, and where to acknowledge it."""
    deadline = notice.deadline.strftime("%Y-%m-%d %H:%M UTC")
    aware = notice.aware_at.strftime("%Y-%m-%d %H:%M UTC") if notice.aware_at else ""
    subject = f"Personal data breach notice: 72 hours end {deadline}"
    body = "\n".join(
        [
            "Ledgerdesk, your processor, has become aware of a personal data breach that"
            " affects your account.",
            "",
            f"Incident: {notice.incident_id}",
            f"Aware since: {aware}",
            f"Categories of personal data concerned: {', '.join(notice.categories)}",
            "",
            "What happened:",
            notice.description,
            "",
            "As controller, you have 72 hours from our awareness to notify your supervisory"
            f" authority (GDPR Art. 33): until {deadline}.",
            "Please acknowledge this notice in the console's Incidents view, or with"
            f" POST /v1/incidents/{notice.incident_id}/acknowledgements.",
        ]
    )
    return subject, body


def _affected(uow: UnitOfWork, tenant_ids: list[str]) -> dict[str, str]:
    """Each affected tenant's region; ValidationFailed naming the ids that are no tenant here,
    or a destroyed one (no one is left to notify, and nothing of theirs to breach)."""
    uow.cur.execute(
        "SELECT id::text, region, status FROM tenants WHERE id = ANY(%s::uuid[])", (tenant_ids,)
    )
    found = {tenant_id: (region, status) for tenant_id, region, status in uow.cur.fetchall()}
    errors = []
    unknown = [t for t in tenant_ids if t not in found]
    if unknown:
        errors.append(f"no such tenant: {', '.join(unknown)}")
    destroyed = [t for t in tenant_ids if t in found and found[t][1] == "destroyed"]
    if destroyed:
        errors.append(f"destroyed, no one to notify: {', '.join(destroyed)}")
    if errors:
        raise ValidationFailed({"tenant_ids": errors})
    return {tenant_id: region for tenant_id, (region, _) in found.items()}


def active_admins(uow: UnitOfWork, tenant_id: str) -> list[str]:
    uow.cur.execute(
        "SELECT id::text FROM agents WHERE tenant_id = %s AND role = 'admin' AND active"
        " ORDER BY created_at, id",
        (tenant_id,),
    )
    return [row[0] for row in uow.cur.fetchall()]


def acknowledge(
    uow: UnitOfWork, actor: dict[str, str], incident_id: str
) -> tuple[dict[str, Any], bool]:
    """The admin ``actor`` acknowledges their tenant's notice. Returns the notice and whether
    this call recorded it (False: the admin had acknowledged it before; nothing is recorded
    twice)."""
    tenant_id, agent_id = actor["tenant_id"], actor["agent_id"]
    require_id(incident_id, "incident")
    notice = load(uow, IncidentNotice, IncidentNotice.notice_id(incident_id, tenant_id))
    if notice is None or notice.tenant_id != tenant_id:
        raise NotFound("no such incident")
    if agent_id not in active_admins(uow, tenant_id):
        # The gateway lets only admins through; an admin deactivated since it authenticated
        # them acknowledges nothing.
        raise NotFound("no such incident")
    recorded = notice.acknowledge(agent_id)
    if recorded:
        uow.cur.execute("SELECT region FROM tenants WHERE id = %s", (tenant_id,))
        (region,) = uow.cur.fetchone() or (None,)
        uow.save(notice, tenant_id, region)
    return tenant_view(uow, tenant_id, incident_id), recorded


# --- views ------------------------------------------------------------------------------------

_NOTICE = (
    "SELECT id, categories, description, aware_at, notified_ids, created_at"
    " FROM incident_notices WHERE tenant_id = %s"
)


def tenant_view(
    uow: UnitOfWork, tenant_id: str, incident_id: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    """An incident as the affected tenant's admins see it; NotFound for one that does not
    affect their tenant, as for one that does not exist."""
    require_id(incident_id, "incident")
    uow.cur.execute(_NOTICE + " AND id = %s", (tenant_id, incident_id))  # noqa: S608
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such incident")
    return _notice(uow, tenant_id, row, now or _now())


def tenant_list(uow: UnitOfWork, tenant_id: str, limit: int, after: list | None) -> dict[str, Any]:
    """The incidents affecting a tenant, in the order they were notified."""
    rows, next_after = keyset_page(
        uow.cur, _NOTICE, [tenant_id], limit, after, lambda r: [r[-1].isoformat(), str(r[0])]
    )
    now = _now()
    return {"items": [_notice(uow, tenant_id, row, now) for row in rows], "next": next_after}


def _notice(uow: UnitOfWork, tenant_id: str, row: tuple, now: dt.datetime) -> dict[str, Any]:
    incident_id, categories, description, aware_at, notified_ids, notified_at = row
    return {
        "id": str(incident_id),
        "categories": list(categories),
        "description": description,
        **_clock(aware_at, now),
        "notified_at": notified_at.isoformat(),
        "notified_ids": [str(a) for a in notified_ids],
        "acknowledgements": _acknowledgements(uow, str(incident_id), tenant_id).get(tenant_id, []),
    }


def operator_view(
    uow: UnitOfWork, incident_id: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    """An incident as the operator sees it: every affected tenant, whom it notified and who
    acknowledged. The text and categories are read from the tenants' copies: once every
    affected tenant is destroyed, they are gone here too (null)."""
    require_id(incident_id, "incident")
    uow.cur.execute(
        "SELECT id, tenant_ids, aware_at, created_at FROM incidents WHERE id = %s", (incident_id,)
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such incident")
    return _incident(uow, row, now or _now())


def operator_list(uow: UnitOfWork, limit: int, after: list | None) -> dict[str, Any]:
    rows, next_after = keyset_page(
        uow.cur,
        "SELECT id, tenant_ids, aware_at, created_at FROM incidents WHERE true",
        [],
        limit,
        after,
        lambda r: [r[-1].isoformat(), str(r[0])],
    )
    now = _now()
    return {"items": [_incident(uow, row, now) for row in rows], "next": next_after}


def _incident(uow: UnitOfWork, row: tuple, now: dt.datetime) -> dict[str, Any]:
    incident_id, tenant_ids, aware_at, declared_at = (str(row[0]), *row[1:])
    uow.cur.execute(
        "SELECT tenant_id::text, categories, description, notified_ids, created_at"
        " FROM incident_notices WHERE id = %s",
        (incident_id,),
    )
    notices = {tenant_id: rest for tenant_id, *rest in uow.cur.fetchall()}
    acknowledged = _acknowledgements(uow, incident_id)
    tenants = []
    for tenant_id in (str(t) for t in tenant_ids):
        notice = notices.get(tenant_id)
        tenants.append(
            {
                "tenant_id": tenant_id,
                # None: the tenant was destroyed since, and its notice with it.
                "notified_at": None if notice is None else notice[3].isoformat(),
                "notified_ids": None if notice is None else [str(a) for a in notice[2]],
                "acknowledgements": acknowledged.get(tenant_id, []),
            }
        )
    first = next(iter(notices.values()), None)
    return {
        "id": incident_id,
        "categories": None if first is None else list(first[0]),
        "description": None if first is None else first[1],
        **_clock(aware_at, now),
        "declared_at": declared_at.isoformat(),
        "tenants": tenants,
    }


def _acknowledgements(
    uow: UnitOfWork, incident_id: str, tenant_id: str | None = None
) -> dict[str, list[dict[str, str]]]:
    """An incident's acknowledgements by tenant (only ``tenant_id``'s, given one)."""
    uow.cur.execute(
        "SELECT tenant_id::text, agent_id, acknowledged_at FROM incident_acknowledgements"
        " WHERE incident_id = %s AND (%s::uuid IS NULL OR tenant_id = %s::uuid)"
        " ORDER BY acknowledged_at, agent_id",
        (incident_id, tenant_id, tenant_id),
    )
    by_tenant: dict[str, list[dict[str, str]]] = {}
    for tenant, agent_id, at in uow.cur.fetchall():
        by_tenant.setdefault(tenant, []).append(
            {"agent_id": str(agent_id), "acknowledged_at": at.isoformat()}
        )
    return by_tenant


def _clock(aware_at: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """The GDPR Art. 33 clock: the tenant, as controller, has 72 hours from awareness."""
    deadline = aware_at + NOTIFICATION_WINDOW
    return {
        "aware_at": aware_at.isoformat(),
        "deadline": deadline.isoformat(),
        "deadline_passed": now >= deadline,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
