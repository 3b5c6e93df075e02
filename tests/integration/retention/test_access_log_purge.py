"""Access-log personal data older than its policy reads as erased; newer stays readable."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

from gateway.accesslog import access_event
from kernel.crypto import FieldCipher, Keystore
from kernel.db import Database
from kernel.envelope import EventRegistry
from kernel.nameko_adapters import prepare_databases
from kernel.signing import signer_from_config
from kernel.uow import EventSourcedStore
from services.audit.ledger import Ledger
from services.retention import schedules


def test_months_older_than_the_policy_are_purged_and_newer_ones_kept(world):
    prepare_databases(world, "audit", Path("services/audit/migrations"))
    ledger = Ledger(
        Database(world.database_dsn("audit")),
        FieldCipher(
            Keystore(Database(world.database_dsn("audit", "keys")), world.master_keys, 0.001)
        ),
        signer_from_config(world.audit_signing_key),
    )
    tenant = uuid.uuid4()
    for month, ip in ((8, "192.0.2.8"), (9, "192.0.2.9"), (11, "192.0.2.11")):
        ledger.record(
            access_event(
                tenant_id=tenant,
                actor_id=None,
                method="GET",
                route="/v1/tenant",
                resource_ids=[],
                status=200,
                ip=ip,
                user_agent=f"agent-{month}",
                trace_id=None,
                at=dt.datetime(2026, month, 15, tzinfo=dt.UTC),
                trace={},
            )
        )

    # Retention decides the cut-off: 60 days before 2026-11-22 is in September, so every month
    # before September is wholly older than the policy.
    prepare_databases(world, "retention", Path("services/retention/migrations"))
    retention = EventSourcedStore(
        "retention", Database(world.database_dsn("retention")), EventRegistry()
    )
    now = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    with retention.unit_of_work() as uow:
        cutoff = schedules.purge_access_logs(uow, now)
    assert cutoff == "2026-09-01T00:00:00+00:00"
    with retention.unit_of_work() as uow:
        assert schedules.purge_access_logs(uow, now) is None  # once per cut-off
    with retention.db.transaction() as cur:
        cur.execute("SELECT body FROM outbox WHERE routing_key = 'retention.privacy_command'")
        [(body,)] = cur.fetchall()
    assert json.loads(body)["payload"]["category"] == "access_log"

    # Audit's answer to that command.
    assert ledger.shred_months_before(dt.datetime.fromisoformat(cutoff)) == ["2026-08"]
    by_ip = {e["payload"]["user_agent"]: e["payload"]["ip"] for e in ledger.iter_entries()}
    assert by_ip["[erased]"] == "[erased]"
    assert by_ip["agent-9"] == "192.0.2.9" and by_ip["agent-11"] == "192.0.2.11"
    assert ledger.verify()["ok"]
