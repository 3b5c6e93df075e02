"""Unit tests for breaches: the operator's declaration, a tenant's notice, its 72-hour clock,
acknowledgements once per admin, and the declaration command's validation."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from kernel.aggregate import RecordedEvent
from kernel.commands import load_command
from kernel.crypto.fields import ERASED
from kernel.envelope import new_envelope
from kernel.errors import ValidationFailed
from services.accounts.commands import DeclareIncidentV1
from services.accounts.domain import Incident, IncidentNotice
from services.accounts.events import BREACH_CATEGORIES, REGISTRY

NOW = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC)
INCIDENT_ID = uuid.UUID("0b9c6a4e-3f1d-4c8e-9a2b-7d5e6f708192")
TENANTS = ["5f0e1d2c-3b4a-4968-8776-655443322110", "6a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3"]
ADMINS = ["7b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"]


def declare(**changes) -> Incident:
    arguments = {
        "incident_id": INCIDENT_ID,
        "tenant_ids": TENANTS,
        "aware_at": NOW - dt.timedelta(hours=5),
        "now": NOW,
        **changes,
    }
    return Incident.declare(**arguments)


def notify(incident: Incident, tenant_id: str = TENANTS[0]) -> IncidentNotice:
    return IncidentNotice.notify(
        incident=incident,
        tenant_id=tenant_id,
        categories=["contact_details", "ticket_content"],
        description="A support export was left readable at a public address for two hours.",
        admin_ids=ADMINS,
    )


def replayed(aggregate_cls, aggregate_id, recorded):
    """The aggregate rebuilt from envelopes of what it recorded, validated by their schemas."""
    events = [
        new_envelope(
            type=e.type,
            schema_version=1,
            source="accounts",
            stream_id=aggregate_cls.stream_id_for(aggregate_id),
            stream_version=n,
            tenant_id=None,
            actor_id="operator",
            payload=REGISTRY[e.type].validate(e.payload),
        )
        for n, e in enumerate(recorded, start=1)
    ]
    return aggregate_cls.from_history(aggregate_id, events)


def test_a_declaration_records_ids_and_awareness_only():
    incident = declare()
    assert incident.pending == [
        RecordedEvent(
            "incident_declared",
            {
                "incident_id": str(INCIDENT_ID),
                "tenant_ids": TENANTS,
                "aware_at": NOW - dt.timedelta(hours=5),
            },
        )
    ]
    assert incident.tenant_ids == tuple(TENANTS)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant_ids": []}, "tenant_ids"),
        ({"tenant_ids": [TENANTS[0], TENANTS[0]]}, "tenant_ids"),
        ({"aware_at": NOW + dt.timedelta(minutes=1)}, "aware_at"),
    ],
)
def test_a_declaration_that_cannot_be_is_refused_naming_the_field(changes, field):
    with pytest.raises(ValidationFailed) as refused:
        declare(**changes)
    assert list(refused.value.errors) == [field]


def test_a_notice_carries_the_text_under_the_tenants_key_and_publishes_ids_only():
    notice = notify(declare())
    [event] = notice.pending
    assert event.type == "incident_notified"
    assert event.payload["tenant_id"] == TENANTS[0]
    assert event.payload["admin_ids"] == ADMINS
    assert notice.id == f"{INCIDENT_ID}.{TENANTS[0]}"
    assert notice.stream_id == f"incident_notice-{INCIDENT_ID}.{TENANTS[0]}"
    notified = REGISTRY["incident_notified"]
    assert set(notified.tenant_fields) == {"categories", "description"}
    assert set(notified.withheld_fields) >= {"categories", "description"}
    assert notified.published


def test_a_notice_only_for_an_affected_tenant_with_known_categories_and_some_text():
    incident = declare()
    with pytest.raises(ValueError, match="does not affect"):
        notify(incident, tenant_id=str(uuid.uuid4()))
    with pytest.raises(ValidationFailed) as refused:
        IncidentNotice.notify(
            incident=incident,
            tenant_id=TENANTS[0],
            categories=["gossip"],
            description="  ",
            admin_ids=ADMINS,
        )
    assert set(refused.value.errors) == {"categories", "description"}


def test_the_clock_runs_72_hours_from_awareness():
    incident = declare(aware_at=NOW - dt.timedelta(hours=71))
    notice = notify(incident)
    assert notice.deadline == NOW + dt.timedelta(hours=1)
    assert not notice.deadline_passed(NOW)
    assert notice.deadline_passed(NOW + dt.timedelta(hours=1))
    assert notify(declare(aware_at=NOW - dt.timedelta(hours=73))).deadline_passed(NOW)


def test_an_admin_acknowledges_once_and_a_second_time_records_nothing():
    notice = notify(declare())
    notice.pending.clear()
    assert notice.acknowledge(ADMINS[0]) is True
    assert notice.pending == [
        RecordedEvent(
            "incident_acknowledged",
            {"incident_id": str(INCIDENT_ID), "tenant_id": TENANTS[0], "agent_id": ADMINS[0]},
        )
    ]
    assert notice.acknowledge(ADMINS[0]) is False
    assert len(notice.pending) == 1
    other = str(uuid.uuid4())
    assert notice.acknowledge(other) is True
    assert notice.acknowledged_by == (ADMINS[0], other)


def test_a_notice_replayed_from_its_events_is_the_same_notice():
    incident = declare()
    notice = notify(incident)
    notice.acknowledge(ADMINS[0])
    again = replayed(IncidentNotice, notice.id, notice.pending)
    assert again.version == 2
    assert (again.incident_id, again.tenant_id, again.categories, again.acknowledged_by) == (
        str(INCIDENT_ID),
        TENANTS[0],
        ("contact_details", "ticket_content"),
        (ADMINS[0],),
    )
    assert again.deadline == incident.aware_at + dt.timedelta(hours=72)
    # Read back after the tenant's key went, its fields read as erased: nothing to show.
    erased = IncidentNotice(id=notice.id)
    erased.when_incident_notified(
        {**notice.pending[0].payload, "categories": ERASED, "description": ERASED}
    )
    assert erased.categories == ()


def command(**changes):
    return {
        "tenant_ids": TENANTS,
        "categories": ["identity"],
        "description": "What happened",
        **changes,
    }


def test_the_command_takes_the_vocabulary_and_an_aware_time_with_its_offset():
    loaded = load_command(DeclareIncidentV1, command(aware_at="2026-12-06T10:30:00+01:00"))
    assert loaded["aware_at"] == NOW.replace(minute=30, hour=9)
    assert loaded["tenant_ids"] == [uuid.UUID(t) for t in TENANTS]
    assert "aware_at" not in load_command(DeclareIncidentV1, command())
    assert set(BREACH_CATEGORIES) >= {"identity", "special_category"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"categories": ["gossip"]}, "categories"),
        ({"categories": []}, "categories"),
        ({"categories": ["identity", "identity"]}, "categories"),
        ({"tenant_ids": ["not-a-uuid"]}, "tenant_ids"),
        ({"tenant_ids": [TENANTS[0], TENANTS[0]]}, "tenant_ids"),
        ({"description": ""}, "description"),
        ({"aware_at": "2026-12-06T09:30:00"}, "aware_at"),
        ({"severity": "high"}, "severity"),
    ],
)
def test_the_command_refuses_what_is_not_a_declaration(changes, field):
    with pytest.raises(ValidationFailed) as refused:
        load_command(DeclareIncidentV1, command(**changes))
    assert field in refused.value.errors
