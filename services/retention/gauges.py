"""Data-subject requests as an operator's gauges see them, read from retention's database when
scraped (``kernel.observability``'s state gauges): how many wait in each state and for how long,
and how many are past their due date.

Labels are the request's type and state, both from closed lists: never a tenant, subject or
request id. Every replica of retention reads the same database, so each reports the same
values: aggregate with ``max``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kernel.observability import StateSample, state_gauge
from services.retention.requests import COMMAND_FOR

# Every type a request can have: those an admin files, and the destructions schedules start.
TYPES: tuple[str, ...] = ("access", *COMMAND_FOR)
# A request not ended yet: waiting for a second admin's decision, or for the services' answers.
OPEN_STATES: tuple[str, ...] = ("awaiting_approval", "pending")

OPEN = state_gauge(
    "ledgerdesk_privacy_requests_open",
    "Data-subject requests not ended yet, by type and state: awaiting_approval (a second"
    " admin's decision), pending (services' answers)",
    ("type", "state"),
)
OLDEST = state_gauge(
    "ledgerdesk_privacy_requests_oldest_seconds",
    "Age of the oldest data-subject request not ended yet, by type and state (0 when none)",
    ("type", "state"),
)
OVERDUE = state_gauge(
    "ledgerdesk_privacy_requests_overdue",
    "Data-subject requests past their due date (LEDGERDESK_PRIVACY_DEADLINE_DAYS after filing)"
    " and not completed, by type: still open, or failed at the deadline until a later request"
    " of the same type for the same subject completes or the tenant is destroyed",
    ("type",),
)
GAUGES = (OPEN, OLDEST, OVERDUE)

# A request failed at its deadline stays owed to its subject: it counts until one filed again
# for the same subject completes, or the tenant's destruction ends everything it held. Only
# ``mark_overdue`` fails a request, so a failed request is one that ran out of time.
_OVERDUE = (
    "SELECT r.type, count(*) FROM requests r"
    " WHERE r.due_at < %(now)s AND r.status IN ('awaiting_approval', 'pending', 'failed')"
    " AND NOT EXISTS (SELECT 1 FROM requests later WHERE later.tenant_id = r.tenant_id"
    " AND later.type = r.type AND later.subject_id = r.subject_id"
    " AND later.status = 'completed' AND later.created_at > r.created_at)"
    " AND NOT EXISTS (SELECT 1 FROM requests d WHERE d.tenant_id = r.tenant_id"
    " AND d.type = 'destruction' AND d.status = 'completed')"
    " GROUP BY r.type"
)


def read(cur: Any, now: dt.datetime) -> list[StateSample]:
    """Every gauge's samples at ``now``: each type and open state, zero when there is none, so
    a dashboard and an alert see the series exist."""
    cur.execute(
        "SELECT type, status, count(*), EXTRACT(EPOCH FROM %(now)s - min(created_at))::float8"
        " FROM requests WHERE status IN ('awaiting_approval', 'pending') GROUP BY type, status",
        {"now": now},
    )
    waiting = {(type_, state): (count, oldest) for type_, state, count, oldest in cur.fetchall()}
    cur.execute(_OVERDUE, {"now": now})
    overdue = dict(cur.fetchall())
    types = sorted({*TYPES, *(t for t, _ in waiting), *overdue})
    samples: list[StateSample] = []
    for type_ in types:
        for state in OPEN_STATES:
            count, oldest = waiting.get((type_, state), (0, 0.0))
            samples.append((OPEN, (type_, state), count))
            samples.append((OLDEST, (type_, state), max(oldest, 0.0)))
        samples.append((OVERDUE, (type_,), overdue.get(type_, 0)))
    return samples
