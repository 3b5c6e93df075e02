"""Retention's log of forgetting: every kind of forgetting it ordered, oldest first, as the
commands a restored service applies again (``kernel.forgetting``): erasures, destructions and
objections that went out, the restriction or lift in force per subject, and each category's
latest purge cut-offs, which never move back."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from kernel import forgetting as kernel_forgetting
from kernel.envelope import EventRegistry, new_envelope
from kernel.stores import open_store
from services.retention import approvals, requests, schedules
from services.retention.forgetting import forgetting_log

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TIMING = requests.Timing()
DAY = 86400


@pytest.fixture
def retention(world):
    store = open_store(
        world, "retention", EventRegistry(), (), Path("services/retention/migrations")
    )
    with store.db.transaction() as cur:
        for name in ("accounts", "tickets"):
            cur.execute(
                "INSERT INTO services (name, categories, commands, protocol_version, announced_at)"
                " VALUES (%s, '[]', '[]', 1, now())",
                (name,),
            )
    return store


def file(store, tenant: str, type_: str, contact: str, at: dt.datetime) -> dict:
    with store.unit_of_work("admin") as uow:
        filed, created = requests.file_request(
            uow,
            lambda tenant_id, subject_id: {"kind": "contact"},
            tenant,
            str(uuid.uuid4()),
            {"type": type_, "subject": {"contact_id": contact}, "identity_check": "attested"},
            at,
            TIMING,
        )
    assert created
    return filed


def admin(since: dt.datetime) -> dict:
    """An admin who decides, as the gateway describes the caller: one who has been an admin
    since the day before ``since``, with a key of their own."""
    agent = str(uuid.uuid4())
    return {
        "agent_id": agent,
        "key_id": str(uuid.uuid4()),
        "key_issuer_id": agent,
        "key_issued_at": (since - dt.timedelta(days=1)).isoformat(),
        "admin_since": (since - dt.timedelta(days=1)).isoformat(),
    }


def log_of(store) -> list[dict]:
    with store.db.transaction() as cur:
        entries = forgetting_log(cur)
    # Every entry is a command a handler takes as it is.
    commands = kernel_forgetting.commands(entries)
    return [{**c, "at": c["issued_at"]} for c in commands]


def test_the_log_holds_every_kind_of_forgetting_in_the_order_it_went_out(retention):
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    erased, restricted, lifted, objecting, waiting, denied = (str(uuid.uuid4()) for _ in range(6))
    minute = dt.timedelta(minutes=1)
    file(retention, tenant, "erasure", erased, T0)
    file(retention, tenant, "restriction", lifted, T0 + minute)
    file(retention, tenant, "restriction", restricted, T0 + 2 * minute)
    file(retention, tenant, "lift_restriction", lifted, T0 + 3 * minute)
    file(retention, tenant, "objection", objecting, T0 + 4 * minute)
    file(retention, tenant, "access", objecting, T0 + 5 * minute)  # not forgetting
    # Requests that never went out: one awaiting approval, one denied.
    with retention.unit_of_work("admin") as uow:
        approvals.set_approval_policy(uow, tenant, ["erasure"])
    file(retention, tenant, "erasure", waiting, T0 + 6 * minute)
    no = file(retention, tenant, "erasure", denied, T0 + 7 * minute)
    with retention.unit_of_work("other-admin") as uow:
        requests.decide(uow, tenant, no["id"], admin(T0), "denied", "not them", T0, TIMING)
    # A destruction that ran; closed tickets and access-log purges of both tenants.
    with retention.db.transaction() as cur:
        cur.execute(
            "INSERT INTO schedules (tenant_id, kind, due_at, status)"
            " VALUES (%s, 'destruction', %s, 'waiting')",
            (other, T0),
        )
    with retention.unit_of_work("retention") as uow:
        schedules.destroy_due_tenants(uow, T0 + 8 * minute, TIMING)
    with retention.unit_of_work("retention") as uow:
        schedules.learn_ticket_closed(
            uow,
            new_envelope(
                type="ticket_closed",
                schema_version=1,
                source="tickets",
                stream_id="ticket-1",
                stream_version=4,
                tenant_id=uuid.UUID(tenant),
                actor_id=None,
                payload={"ticket_id": str(uuid.uuid4()), "tenant_id": tenant},
                occurred_at=T0 - dt.timedelta(days=800),
            ),
        )
    with retention.unit_of_work("retention") as uow:
        assert schedules.expire_closed_tickets(uow, T0 + 9 * minute, DAY) == {tenant: 1}
    with retention.db.transaction() as cur:
        cur.execute(
            "INSERT INTO policies (category, tenant_id, days) VALUES ('access_log', %s, 10)",
            (tenant,),
        )
    with retention.unit_of_work("retention") as uow:
        assert schedules.purge_access_logs(uow, T0 + 10 * minute, DAY)

    log = log_of(retention)
    assert [(e["command"], e["subject_id"] and str(e["subject_id"])) for e in log] == [
        ("erase_subject", erased),
        ("restrict_subject", restricted),
        ("lift_restriction", lifted),  # the restriction it lifted is not in force: not here
        ("object_to_marketing", objecting),
        ("destroy_tenant", other),
        ("purge_category", None),
        ("purge_category", None),
    ]
    assert all(e["tenant_id"] == uuid.UUID(tenant) for e in log[:4])
    tickets, access = log[5], log[6]
    assert (tickets["category"], str(tickets["tenant_id"])) == ("closed_tickets", tenant)
    assert tickets["before"] == (T0 + 9 * minute - dt.timedelta(days=730)).isoformat()
    assert (access["category"], access["tenant_id"]) == ("access_log", None)
    assert access["before"] == "2026-09-23T00:00:00+00:00"  # 60 days, to the day
    assert access["cutoffs"] == {uuid.UUID(tenant): "2026-11-12T00:00:00+00:00"}
    assert [e["at"] for e in log] == sorted(e["at"] for e in log)


def test_a_purge_cut_off_in_the_log_never_moves_back(retention):
    """A tenant that lengthens its period gets later purges with an earlier cut-off; what its
    earlier purges took is still what a restored service must take again."""
    tenant = str(uuid.uuid4())

    def set_days(days: int) -> None:
        with retention.db.transaction() as cur:
            cur.execute(
                "INSERT INTO policies (category, tenant_id, days) VALUES ('access_log', %s, %s)"
                " ON CONFLICT (category, tenant_id) DO UPDATE SET days = EXCLUDED.days",
                (tenant, days),
            )

    def purge(now: dt.datetime) -> dict | None:
        with retention.unit_of_work("retention") as uow:
            return schedules.purge_access_logs(uow, now, DAY)

    purge(T0)  # on the default: 60 days
    set_days(90)  # longer: its own cut-off is earlier, but the default's purge took more
    assert purge(T0 + dt.timedelta(days=1)) == {
        "before": "2026-09-24T00:00:00+00:00",
        "cutoffs": {tenant: "2026-08-25T00:00:00+00:00"},
    }
    [access] = log_of(retention)
    assert access["cutoffs"] == {uuid.UUID(tenant): "2026-09-23T00:00:00+00:00"}
    set_days(5)
    purge(T0 + dt.timedelta(days=1))
    [access] = log_of(retention)
    assert access["cutoffs"] == {uuid.UUID(tenant): "2026-11-18T00:00:00+00:00"}
    set_days(30)
    assert purge(T0 + dt.timedelta(days=2)) == {
        "before": "2026-09-25T00:00:00+00:00",
        "cutoffs": {tenant: "2026-10-25T00:00:00+00:00"},
    }
    [access] = log_of(retention)
    assert access["before"] == "2026-09-25T00:00:00+00:00"
    assert access["cutoffs"] == {uuid.UUID(tenant): "2026-11-18T00:00:00+00:00"}
