"""A request's follow-up, driven with a clock: parts still owed are sent again with backoff,
a failed answer is asked again rather than failing the request, and the deadline fails it
with an alert."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from kernel.envelope import EventRegistry, new_envelope
from kernel.signing import signer_from_config
from kernel.stores import open_store
from services.retention import approvals, receipts, requests

SERVICES = ("accounts", "audit", "billing", "tickets")
RETENTION_MIGRATIONS = Path("services/retention/migrations")
T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TIMING = requests.Timing(deadline_days=30, retry_seconds=60)


@pytest.fixture
def retention(world):
    store = open_store(world, "retention", EventRegistry(), (), RETENTION_MIGRATIONS)
    # Completed erasures are signed: the test keeps the signer beside the store.
    store.signer = signer_from_config(world.audit_signing_key)  # type: ignore[attr-defined]
    with store.db.transaction() as cur:
        for name in SERVICES:
            cur.execute(
                "INSERT INTO services (name, categories, commands, protocol_version, announced_at)"
                " VALUES (%s, '[]', '[]', 1, now())",
                (name,),
            )
    return store


def file_erasure(store, tenant, now=T0):
    with store.unit_of_work("admin") as uow:
        filed, created = requests.file_request(
            uow,
            lambda tenant_id, subject_id: {"kind": "contact"},
            tenant,
            str(uuid.uuid4()),
            {
                "type": "erasure",
                "subject": {"contact_id": str(uuid.uuid4())},
                "identity_check": "attested",
            },
            now,
            TIMING,
        )
    assert created
    return filed


def commands_sent(store, request_id):
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT body FROM outbox WHERE stream_id = %s ORDER BY id", (f"privacy-{request_id}",)
        )
        bodies = [json.loads(b) for (b,) in cur.fetchall()]
    return [b for b in bodies if b["type"] == "privacy_command"]


def answer(store, filed, service, status, now, source=None):
    event = new_envelope(
        type="privacy_answered",
        schema_version=1,
        source=source or service,
        stream_id=f"privacy-{filed['id']}",
        stream_version=1,
        tenant_id=uuid.UUID(str(filed["tenant"])),
        actor_id=service,
        payload={
            "request_id": filed["id"],
            "command": "erase_subject",
            "service": service,
            "status": status,
            "detail": f"{status} by {service}",
        },
    )
    with store.unit_of_work() as uow:
        receipts.record_answer(uow, event, store.signer, now, TIMING)


def read(store, filed):
    with store.unit_of_work() as uow:
        return requests.get_request(uow, filed["tenant"], filed["id"])


def test_backoff_doubles_from_its_base_and_stops_at_a_day():
    timing = requests.Timing(retry_seconds=300)
    assert [timing.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [300, 600, 1200, 2400]
    assert timing.backoff(40).total_seconds() == 86400


def test_parts_still_owed_are_sent_again_with_backoff_and_only_to_them(retention):
    tenant = str(uuid.uuid4())
    filed = {**file_erasure(retention, tenant), "tenant": tenant}
    assert [c["schema_version"] for c in commands_sent(retention, filed["id"])] == [1]
    assert read(retention, filed)["services"]["tickets"]["attempts"] == 1

    with retention.unit_of_work() as uow:
        assert requests.resend_due(uow, T0 + dt.timedelta(seconds=59), TIMING) == 0
    answer(retention, filed, "accounts", "done", T0 + dt.timedelta(seconds=5))
    answer(retention, filed, "audit", "done", T0 + dt.timedelta(seconds=5))
    with retention.unit_of_work() as uow:
        assert requests.resend_due(uow, T0 + dt.timedelta(seconds=61), TIMING) == 1
    resent = commands_sent(retention, filed["id"])[-1]
    assert resent["schema_version"] == 2
    assert resent["payload"]["services"] == ["billing", "tickets"]
    assert resent["payload"]["command"] == "erase_subject"
    state = read(retention, filed)
    assert state["services"]["tickets"]["attempts"] == 2
    assert state["services"]["accounts"]["attempts"] == 1
    # The second wait is twice the first.
    assert (
        state["services"]["tickets"]["next_attempt_at"]
        == (T0 + dt.timedelta(seconds=61 + 120)).isoformat()
    )
    with retention.unit_of_work() as uow:
        assert requests.resend_due(uow, T0 + dt.timedelta(seconds=61 + 119), TIMING) == 0

    # A failure is not the end: the request stays open and the part is asked again.
    answer(retention, filed, "billing", "done", T0 + dt.timedelta(seconds=70))
    answer(retention, filed, "tickets", "failed", T0 + dt.timedelta(seconds=70))
    state = read(retention, filed)
    assert state["status"] == "pending"
    assert state["services"]["tickets"]["status"] == "failed"
    with retention.unit_of_work() as uow:
        assert requests.resend_due(uow, T0 + dt.timedelta(seconds=70 + 121), TIMING) == 1
    assert commands_sent(retention, filed["id"])[-1]["payload"]["services"] == ["tickets"]
    answer(retention, filed, "tickets", "done", T0 + dt.timedelta(seconds=200))
    done = read(retention, filed)
    assert done["status"] == "completed"
    assert all("next_attempt_at" not in part for part in done["services"].values())
    with retention.unit_of_work() as uow:
        assert requests.resend_due(uow, T0 + dt.timedelta(days=2), TIMING) == 0


def test_past_the_deadline_a_request_fails_with_an_alert(retention):
    tenant = str(uuid.uuid4())
    filed = {**file_erasure(retention, tenant), "tenant": tenant}
    answer(retention, filed, "accounts", "done", T0)
    with retention.unit_of_work() as uow:
        assert requests.mark_overdue(uow, T0 + dt.timedelta(days=29, hours=23)) == []
    with retention.unit_of_work() as uow:
        assert requests.mark_overdue(uow, T0 + dt.timedelta(days=30, seconds=1)) == [filed["id"]]
    state = read(retention, filed)
    assert state["status"] == "failed"
    assert state["services"]["tickets"]["status"] == "pending"
    with retention.db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE stream_id = %s", (f"privacy-{filed['id']}",))
        bodies = [json.loads(b) for (b,) in cur.fetchall()]
    [overdue] = [b for b in bodies if b["type"] == "privacy_request_overdue"]
    # Version 2 names the request's type, ids and states only (accounts mails the admins).
    assert overdue["schema_version"] == 2
    assert overdue["payload"] == {"request_id": filed["id"], "tenant_id": tenant, "type": "erasure"}
    # A failed request is asked no more.
    with retention.unit_of_work() as uow:
        assert requests.resend_due(uow, T0 + dt.timedelta(days=31), TIMING) == 0


def published(store, request_id, type_):
    with store.db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE stream_id = %s", (f"privacy-{request_id}",))
        bodies = [json.loads(b) for (b,) in cur.fetchall()]
    return [b for b in bodies if b["type"] == type_]


def test_a_request_completed_by_its_last_answer_is_published_once_by_ids(retention):
    """What webhooks tell a tenant's integrations: the request, its type, whom it concerned."""
    tenant = str(uuid.uuid4())
    filed = {**file_erasure(retention, tenant), "tenant": tenant}
    for service in SERVICES[:-1]:
        answer(retention, filed, service, "done", T0)
    assert published(retention, filed["id"], "privacy_request_completed") == []
    answer(retention, filed, SERVICES[-1], "done", T0)
    answer(retention, filed, SERVICES[-1], "done", T0)  # a redelivered last answer
    (completed,) = published(retention, filed["id"], "privacy_request_completed")
    assert completed["source"] == "retention" and completed["tenant_id"] == tenant
    assert completed["payload"] == {
        "request_id": filed["id"],
        "tenant_id": tenant,
        "type": "erasure",
        "subject_kind": "contact",
        "subject_id": filed["subject"]["contact_id"],
    }


def test_an_access_request_is_published_as_completed_when_filed(retention):
    tenant = str(uuid.uuid4())
    with retention.unit_of_work("admin") as uow:
        filed, _ = requests.file_request(
            uow,
            lambda tenant_id, subject_id: {"kind": "agent"},
            tenant,
            str(uuid.uuid4()),
            {"type": "access", "subject": {"agent_id": str(uuid.uuid4())}, "identity_check": "x"},
            T0,
            TIMING,
        )
    (completed,) = published(retention, filed["id"], "privacy_request_completed")
    assert completed["payload"]["type"] == "access"
    assert completed["payload"]["subject_kind"] == "agent"


def test_a_request_that_waits_for_approval_is_published_as_awaiting_it_by_ids(retention):
    """What the tenant's admins are mailed about: a request one of them must decide."""
    tenant = str(uuid.uuid4())
    with retention.unit_of_work("admin") as uow:
        approvals.set_approval_policy(uow, tenant, ["erasure"])
    filed = file_erasure(retention, tenant)
    assert filed["status"] == "awaiting_approval"
    assert commands_sent(retention, filed["id"]) == []
    (waiting,) = published(retention, filed["id"], "privacy_request_awaiting_approval")
    assert waiting["schema_version"] == 1
    assert waiting["payload"] == {
        "request_id": filed["id"],
        "tenant_id": tenant,
        "type": "erasure",
        "due_at": (T0 + dt.timedelta(days=30)).isoformat(),
    }
    # A request that needs no approval is not announced as waiting.
    other = file_erasure(retention, str(uuid.uuid4()))
    assert published(retention, other["id"], "privacy_request_awaiting_approval") == []


def test_an_open_request_nearing_its_deadline_is_announced_once_by_ids(retention):
    """What the tenant's admins are mailed while the request can still be seen to."""
    timing = requests.Timing(deadline_days=30, due_soon_days=7, retry_seconds=60)
    tenant = str(uuid.uuid4())
    filed = {**file_erasure(retention, tenant), "tenant": tenant}
    done = {**file_erasure(retention, tenant), "tenant": tenant}
    for service in SERVICES:
        answer(retention, done, service, "done", T0)  # completed: nothing to announce
    with retention.unit_of_work() as uow:
        assert requests.announce_due_soon(uow, T0 + dt.timedelta(days=22, hours=23), timing) == []
    with retention.unit_of_work() as uow:
        soon = requests.announce_due_soon(uow, T0 + dt.timedelta(days=23, hours=1), timing)
    assert soon == [filed["id"]]
    with retention.unit_of_work() as uow:  # the next follow-up: announced already
        assert requests.announce_due_soon(uow, T0 + dt.timedelta(days=25), timing) == []
    (announced,) = published(retention, filed["id"], "privacy_request_due_soon")
    assert announced["payload"] == {
        "request_id": filed["id"],
        "tenant_id": tenant,
        "type": "erasure",
        "status": "pending",
        "due_at": (T0 + dt.timedelta(days=30)).isoformat(),
    }
    assert published(retention, done["id"], "privacy_request_due_soon") == []
    # Never, when the setting says so.
    never = requests.Timing(deadline_days=30, due_soon_days=0)
    late = file_erasure(retention, str(uuid.uuid4()))
    with retention.unit_of_work() as uow:
        assert requests.announce_due_soon(uow, T0 + dt.timedelta(days=29), never) == []
    assert published(retention, late["id"], "privacy_request_due_soon") == []


def test_an_answer_in_another_services_name_is_ignored(retention):
    """Tickets may publish ``tickets.privacy_answered``; saying in it that billing is done does
    not answer for billing, whose part stays owed."""
    tenant = str(uuid.uuid4())
    filed = {**file_erasure(retention, tenant), "tenant": tenant}
    answer(retention, filed, "billing", "done", T0, source="tickets")
    assert read(retention, filed)["services"]["billing"]["status"] == "pending"
    answer(retention, filed, "billing", "done", T0)
    assert read(retention, filed)["services"]["billing"]["status"] == "done"
