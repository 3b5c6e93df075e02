"""The audit ledger's checkpoint-age gauge against a real PostgreSQL: seconds since the newest
signed platform checkpoint, and the entries of the tenant logs none covers yet (the service
records into those), read by the function a scrape calls and
through a service's ops port."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kernel.envelope import EventRegistry, new_envelope
from kernel.nameko_adapters.store import EventStoreDependency
from kernel.observability import Operations
from kernel.stores import prepare_databases
from services.audit import gauges
from services.audit.ledger import Ledger, open_ledger
from services.audit.service import LedgerDependency

MIGRATIONS = Path("services/audit/migrations")


@pytest.fixture
def ledger(world) -> Ledger:
    prepare_databases(world, "audit", MIGRATIONS)
    return open_ledger(world)


def record(ledger: Ledger, n: int = 1) -> None:
    for _ in range(n):
        tenant = uuid.uuid4()
        ledger.logs.record(
            new_envelope(
                type="tenant_created",
                schema_version=1,
                source="accounts",
                stream_id=f"tenant-{tenant}",
                stream_version=1,
                tenant_id=tenant,
                actor_id=None,
                payload={"tenant_id": str(tenant), "region": "uk", "plan": "team"},
            )
        )


def read(ledger: Ledger, now: dt.datetime) -> tuple[float, float]:
    """(checkpoint age, unsigned entries) as a scrape at ``now`` gives them."""
    samples = {gauge.name: value for gauge, _, value in gauges.read(ledger, now)}
    return samples[gauges.CHECKPOINT_AGE.name], samples[gauges.UNSIGNED.name]


def test_the_age_of_the_newest_checkpoint_and_the_entries_none_covers(ledger):
    now = dt.datetime.now(dt.UTC)
    assert read(ledger, now) == (0.0, 0)  # nothing to sign: nothing late

    # Entries and no checkpoint yet: the wait counts from the first entry.
    record(ledger, 3)
    with ledger.db.transaction() as cur:
        cur.execute("SELECT min(recorded_at) FROM log_entries")
        (first,) = cur.fetchone()
    later = first + dt.timedelta(minutes=10)
    assert read(ledger, later) == ((later - first).total_seconds(), 3)

    checkpoint = ledger.logs.checkpoint()
    assert checkpoint is not None
    signed = dt.datetime.fromisoformat(checkpoint["signed_at"])
    assert read(ledger, signed + dt.timedelta(seconds=5)) == (5.0, 0)

    # An idle ledger signs nothing new: its checkpoint ages with nothing left unsigned...
    assert ledger.logs.checkpoint() is None
    assert read(ledger, signed + dt.timedelta(hours=2)) == (7200.0, 0)
    # ...and entries since the newest checkpoint are what a stopped signer leaves behind.
    record(ledger, 2)
    assert read(ledger, signed + dt.timedelta(hours=2)) == (7200.0, 2)
    ledger.logs.checkpoint()
    age, unsigned = read(ledger, dt.datetime.now(dt.UTC))
    assert unsigned == 0 and age < 60


class LedgerOnly:
    """Audit's database and its ledger's gauges, served on an ops port (nothing else of it)."""

    name = "audit"
    store = EventStoreDependency(EventRegistry(), migrations=MIGRATIONS)
    ledger = LedgerDependency()
    ops = Operations()


def scrape(port: int) -> dict[str, tuple[float, str]]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        family.name: (family.samples[0].value, family.documentation)
        for family in text_string_to_metric_families(text)
        if family.name.startswith("ledgerdesk_audit_")
    }


def test_a_scrape_of_audit_shows_the_checkpoint_age(world, container_factory, ledger):
    container = container_factory(LedgerOnly, world.nameko_config())
    container.start()
    port = next(d for d in container.dependencies if isinstance(d, Operations)).port

    record(ledger, 4)
    # The frozen chain's entries count too, until its own checkpoint covers them.
    frozen = new_envelope(
        type="thing_happened",
        schema_version=1,
        source="accounts",
        stream_id="thing-1",
        stream_version=1,
        tenant_id=None,
        actor_id=None,
        payload={},
    )
    ledger.record(frozen)
    metrics = scrape(port)
    assert metrics[gauges.UNSIGNED.name][0] == 5
    ledger.checkpoint()
    metrics = scrape(port)
    assert metrics[gauges.UNSIGNED.name][0] == 4
    assert metrics[gauges.CHECKPOINT_AGE.name][0] >= 0
    assert "aggregate with max" in metrics[gauges.CHECKPOINT_AGE.name][1]

    ledger.logs.checkpoint()
    metrics = scrape(port)
    assert metrics[gauges.UNSIGNED.name][0] == 0
    assert metrics[gauges.CHECKPOINT_AGE.name][0] < 60
    container.stop()
