"""Retention's gauges against a real PostgreSQL: data-subject requests by type, state and age,
and those past their due date (the DSR-overdue gauge), read by the function a scrape calls and
through a service's ops port."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import requests as http
from prometheus_client.parser import text_string_to_metric_families

from kernel.envelope import EventRegistry, new_envelope
from kernel.nameko_adapters.store import EventStoreDependency
from kernel.observability import Operations
from kernel.signing import signer_from_config
from kernel.stores import open_store
from services.retention import gauges, receipts, requests, schedules
from services.retention.service import RequestGauges

SERVICES = ("accounts", "audit", "billing", "tickets")
RETENTION_MIGRATIONS = Path("services/retention/migrations")
T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TIMING = requests.Timing(deadline_days=30, retry_seconds=60)


@pytest.fixture
def retention(world):
    store = open_store(world, "retention", EventRegistry(), (), RETENTION_MIGRATIONS)
    store.signer = signer_from_config(world.audit_signing_key)  # type: ignore[attr-defined]
    with store.db.transaction() as cur:
        for name in SERVICES:
            cur.execute(
                "INSERT INTO services (name, categories, commands, protocol_version, announced_at)"
                " VALUES (%s, '[]', '[]', 1, now())",
                (name,),
            )
    return store


def file(store, tenant: str, type_: str, subject: str, now: dt.datetime) -> dict:
    with store.unit_of_work("admin") as uow:
        filed, created = requests.file_request(
            uow,
            lambda tenant_id, subject_id: {"kind": "contact"},
            tenant,
            str(uuid.uuid4()),
            {"type": type_, "subject": {"contact_id": subject}, "identity_check": "attested"},
            now,
            TIMING,
        )
    assert created
    return {**filed, "tenant": tenant}


def answer_all(store, request_id: str, tenant: str, now: dt.datetime) -> None:
    for service in SERVICES:
        event = new_envelope(
            type="privacy_answered",
            schema_version=1,
            source=service,
            stream_id=f"privacy-{request_id}",
            stream_version=1,
            tenant_id=uuid.UUID(tenant),
            actor_id=service,
            payload={
                "request_id": request_id,
                "command": "erase_subject",
                "service": service,
                "status": "done",
                "detail": "done",
            },
        )
        with store.unit_of_work() as uow:
            receipts.record_answer(uow, event, store.signer, now, TIMING)


def at(store, now: dt.datetime) -> dict[tuple[str, tuple[str, ...]], float]:
    """Every sample the gauges give at ``now``, by gauge name and label values."""
    with store.db.transaction() as cur:
        return {(g.name, tuple(labels)): value for g, labels, value in gauges.read(cur, now)}


def overdue(samples, type_: str) -> float:
    return samples[("ledgerdesk_privacy_requests_overdue", (type_,))]


def test_requests_by_type_state_and_age_and_those_past_their_due_date(retention):
    tenant, subject = str(uuid.uuid4()), str(uuid.uuid4())
    empty = at(retention, T0)
    # Every type and open state is there from the start, at zero: a dashboard and an alert
    # see the series exist.
    for type_ in gauges.TYPES:
        assert overdue(empty, type_) == 0
        for state in gauges.OPEN_STATES:
            assert empty[("ledgerdesk_privacy_requests_open", (type_, state))] == 0
            assert empty[("ledgerdesk_privacy_requests_oldest_seconds", (type_, state))] == 0

    erasure = file(retention, tenant, "erasure", subject, T0)
    file(retention, tenant, "restriction", str(uuid.uuid4()), T0 + dt.timedelta(days=1))
    file(retention, tenant, "restriction", str(uuid.uuid4()), T0 + dt.timedelta(days=2))
    ten_days = at(retention, T0 + dt.timedelta(days=10))
    assert ten_days[("ledgerdesk_privacy_requests_open", ("erasure", "pending"))] == 1
    assert ten_days[("ledgerdesk_privacy_requests_open", ("restriction", "pending"))] == 2
    oldest = ten_days[("ledgerdesk_privacy_requests_oldest_seconds", ("restriction", "pending"))]
    assert oldest == dt.timedelta(days=9).total_seconds()
    assert all(overdue(ten_days, type_) == 0 for type_ in gauges.TYPES)

    # Past its due date it is overdue at once, before retention's timer fails it...
    late = T0 + dt.timedelta(days=30, hours=1)
    assert overdue(at(retention, late), "erasure") == 1
    with retention.unit_of_work() as uow:
        assert requests.mark_overdue(uow, late) == [erasure["id"]]
    # ...and after: failed is not done. It is no longer open.
    failed = at(retention, late)
    assert overdue(failed, "erasure") == 1
    assert failed[("ledgerdesk_privacy_requests_open", ("erasure", "pending"))] == 0
    assert overdue(failed, "restriction") == 0  # due a day and two later

    # Filed again for the same subject: still owed until that one completes.
    again = file(retention, tenant, "erasure", subject, late)
    assert overdue(at(retention, late), "erasure") == 1
    answer_all(retention, again["id"], tenant, late + dt.timedelta(hours=1))
    assert overdue(at(retention, late + dt.timedelta(hours=2)), "erasure") == 0


def test_a_request_overdue_in_a_tenant_since_destroyed_is_owed_no_more(retention):
    tenant = str(uuid.uuid4())
    file(retention, tenant, "erasure", str(uuid.uuid4()), T0)
    late = T0 + dt.timedelta(days=31)
    with retention.unit_of_work() as uow:
        requests.mark_overdue(uow, late)
    assert overdue(at(retention, late), "erasure") == 1

    # The tenant is cancelled, its grace runs out, and every service destroys its data.
    cancelled = new_envelope(
        type="tenant_cancelled",
        schema_version=1,
        source="accounts",
        stream_id=f"tenant-{tenant}",
        stream_version=2,
        tenant_id=uuid.UUID(tenant),
        actor_id="admin",
        payload={"tenant_id": tenant, "destroy_after": late.isoformat()},
    )
    with retention.unit_of_work() as uow:
        schedules.learn_from_accounts(uow, cancelled)
    with retention.unit_of_work() as uow:
        [destroyed] = schedules.destroy_due_tenants(uow, late, TIMING)
    with retention.db.transaction() as cur:
        cur.execute(
            "SELECT id FROM requests WHERE type = 'destruction' AND tenant_id = %s", (tenant,)
        )
        (destruction,) = cur.fetchone()
    assert overdue(at(retention, late), "erasure") == 1  # not destroyed yet
    answer_all(retention, str(destruction), destroyed, late)
    assert overdue(at(retention, late + dt.timedelta(hours=1)), "erasure") == 0


class RequestsOnly:
    """Retention's database and its gauges, served on an ops port (nothing else of it)."""

    name = "retention"
    store = EventStoreDependency(EventRegistry(), migrations=RETENTION_MIGRATIONS)
    request_gauges = RequestGauges()
    ops = Operations()


def test_a_scrape_of_retention_shows_the_gauges(world, container_factory, retention):
    container = container_factory(RequestsOnly, world.nameko_config())
    container.start()
    port = next(d for d in container.dependencies if isinstance(d, Operations)).port
    # Filed 31 days ago (the clock a scrape uses is the real one): open, and past its due date.
    filed_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
    file(retention, str(uuid.uuid4()), "objection", str(uuid.uuid4()), filed_at)

    text = http.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for name in ("ledgerdesk_privacy_requests_open", "ledgerdesk_privacy_requests_overdue")
        for s in families[name].samples
    }
    assert samples[("ledgerdesk_privacy_requests_overdue", (("type", "objection"),))] == 1
    assert samples[("ledgerdesk_privacy_requests_overdue", (("type", "erasure"),))] == 0
    pending = (("state", "pending"), ("type", "objection"))
    assert samples[("ledgerdesk_privacy_requests_open", pending)] == 1
    oldest = families["ledgerdesk_privacy_requests_oldest_seconds"].samples
    [objection] = [s for s in oldest if dict(s.labels) == dict(pending)]
    assert objection.value >= dt.timedelta(days=31).total_seconds()
    assert "aggregate with max" in families["ledgerdesk_privacy_requests_overdue"].documentation
    container.stop()
