"""Access-log IPs and user agents are kept for their tenant's period (its own override, or the
default) and end within a day of it: retention sends one purge carrying each tenant's cut-off,
and audit destroys the keys of the tenant's days wholly older than that. Clocks are the test's.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from gateway.accesslog import access_event
from kernel import privacy as protocol
from kernel.envelope import Envelope, EventRegistry
from kernel.signing import signer_from_config
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.audit import privacy as audit_privacy
from services.audit.ledger import Ledger
from services.retention import schedules

DAY = 86400
ERASED = "[erased]"


@pytest.fixture
def audit(world) -> EventSourcedStore:
    return open_store(world, "audit", EventRegistry(), (), Path("services/audit/migrations"))


@pytest.fixture
def ledger(world, audit) -> Ledger:
    signer = signer_from_config(world.audit_signing_key)
    return Ledger(audit.db, audit.cipher, signer, DAY, origin=world.audit_origin)


@pytest.fixture
def retention(world) -> EventSourcedStore:
    return open_store(
        world, "retention", EventRegistry(), (), Path("services/retention/migrations")
    )


def record_access(ledger: Ledger, tenant: uuid.UUID | None, at: dt.datetime) -> Envelope:
    envelope = access_event(
        tenant_id=tenant,
        actor_id=None,
        method="GET",
        route="/v1/tenant",
        resource_ids=[],
        status=200,
        ip="192.0.2.10",
        user_agent=f"agent of {tenant} at {at.isoformat()}",
        trace_id=None,
        at=at,
        trace={},
    )
    assert ledger.record(envelope) is not None
    return envelope


def set_period(retention: EventSourcedStore, tenant: uuid.UUID | None, days: int) -> None:
    with retention.db.transaction() as cur:
        cur.execute(
            "INSERT INTO policies (category, tenant_id, days) VALUES ('access_log', %s, %s)"
            " ON CONFLICT (category, tenant_id) DO UPDATE SET days = EXCLUDED.days",
            (tenant, days),
        )


class Schedule:
    """Retention's schedule run at a moment of the test's choosing, its purge commands then
    delivered to audit as audit's privacy queue would."""

    def __init__(self, retention: EventSourcedStore, audit: EventSourcedStore):
        self.retention = retention
        self.audit = audit
        self.delivered: set[str] = set()
        self.sent: list[Envelope] = []

    def run(self, now: dt.datetime) -> dict | None:
        with self.retention.unit_of_work("retention") as uow:
            sent = schedules.purge_access_logs(uow, now, DAY)
        with self.retention.db.transaction() as cur:
            cur.execute(
                "SELECT body FROM outbox WHERE routing_key = 'retention.privacy_command'"
                " ORDER BY id"
            )
            commands = [Envelope.from_dict(json.loads(body)) for (body,) in cur.fetchall()]
        for command in commands:
            if str(command.event_id) in self.delivered:
                continue
            self.delivered.add(str(command.event_id))
            self.sent.append(command)
            with self.audit.unit_of_work("audit") as uow:
                protocol.handle_command(
                    uow,
                    "audit",
                    command,
                    audit_privacy.handlers_for(self.audit.db, self.audit.cipher),
                )
        return sent


def readable(ledger: Ledger, *envelopes: Envelope) -> list[bool]:
    """For each access, whether its IP and user agent read as recorded (else erased)."""
    entries = {e["event_id"]: e["payload"] for e in ledger.iter_entries()}
    found = []
    for envelope in envelopes:
        payload = entries[str(envelope.event_id)]
        if payload["user_agent"] == ERASED:
            assert payload["ip"] == ERASED
            found.append(False)
        else:
            assert payload["user_agent"] == envelope.payload["user_agent"]
            found.append(True)
    return found


def test_a_tenants_override_purges_its_log_at_its_period_and_not_another_tenants(
    ledger, audit, retention
):
    short, other = uuid.uuid4(), uuid.uuid4()
    set_period(retention, short, 10)  # the default stays 60 days
    at = dt.datetime(2026, 3, 10, 15, 0, tzinfo=dt.UTC)
    mine, theirs = record_access(ledger, short, at), record_access(ledger, other, at)
    next_day = record_access(ledger, short, at + dt.timedelta(days=1))
    schedule = Schedule(retention, audit)

    # Ten days on, the day is not yet wholly ten days old: kept (within a day of its period).
    schedule.run(dt.datetime(2026, 3, 20, 23, 0, tzinfo=dt.UTC))
    assert readable(ledger, mine, theirs, next_day) == [True, True, True]

    # Once it is, that tenant's day goes; the other tenant's entry of the same day stays.
    sent = schedule.run(dt.datetime(2026, 3, 21, 0, 0, 1, tzinfo=dt.UTC))
    assert sent == {
        "before": "2026-01-20T00:00:00+00:00",
        "cutoffs": {str(short): "2026-03-11T00:00:00+00:00"},
    }
    assert readable(ledger, mine, theirs, next_day) == [False, True, True]
    # One command of the latest version carried both the default's cut-off and the tenant's.
    command = schedule.sent[-1]
    assert (command.schema_version, command.tenant_id) == (3, None)
    assert command.payload["category"] == "access_log"
    assert command.payload["cutoffs"] == {str(short): "2026-03-11T00:00:00+00:00"}
    # Nothing moved within the same day: no second command.
    assert schedule.run(dt.datetime(2026, 3, 21, 18, 0, tzinfo=dt.UTC)) is None

    # The other tenant's goes at the default's sixty days.
    schedule.run(dt.datetime(2026, 5, 9, 23, 0, tzinfo=dt.UTC))
    assert readable(ledger, theirs) == [True]
    schedule.run(dt.datetime(2026, 5, 10, 0, 0, tzinfo=dt.UTC))
    assert readable(ledger, theirs) == [False]
    assert ledger.verify()["ok"] is True


def test_nothing_outlives_its_period_by_more_than_a_day_nor_goes_before_it(
    ledger, audit, retention
):
    short, longer, default = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    periods = {short: 2, longer: 6, default: 4, None: 4}
    set_period(retention, None, 4)
    set_period(retention, short, 2)
    set_period(retention, longer, 6)
    first = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    # At the very start of a day, in its middle and at its very end, two days running.
    moments = [
        first + dt.timedelta(days=day, seconds=offset)
        for day in (0, 1)
        for offset in (0, 1, DAY // 2, DAY - 1)
    ]
    entries = [
        (tenant, at, record_access(ledger, tenant, at)) for tenant in periods for at in moments
    ]
    schedule = Schedule(retention, audit)
    now = first + dt.timedelta(days=1)
    while now <= first + dt.timedelta(days=9):
        schedule.run(now)
        found = readable(ledger, *(envelope for _, _, envelope in entries))
        for (tenant, at, _), kept in zip(entries, found, strict=True):
            period = dt.timedelta(days=periods[tenant])
            if now - at < period:
                assert kept, (tenant, at, now)
            elif now - at >= period + dt.timedelta(days=1):
                assert not kept, (tenant, at, now)
        now += dt.timedelta(hours=1)
    assert not any(readable(ledger, *(envelope for _, _, envelope in entries)))
    assert ledger.verify()["ok"] is True
