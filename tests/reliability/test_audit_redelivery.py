"""The audit service killed with SIGKILL while events stream in: after every restart the broker
redelivers what was in flight, and the ledger still holds each event exactly once, numbered
1..N without a gap, with a chain and checkpoints that verify.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from kernel import topology
from kernel.aggregate import RecordedEvent
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.relay import OutboxRelay
from kernel.signing import signer_from_config
from kernel.stores import prepare_databases
from kernel.testing import queue_depth, wait_until, world_env
from services.audit.ledger import Ledger
from services.audit.subscriptions import LEDGER, SUBSCRIPTIONS
from tests.support.source import source_store

pytestmark = pytest.mark.reliability

MIGRATIONS = Path("services/audit/migrations")
WRITERS, TRANSACTIONS, PER_TRANSACTION = 3, 200, 5
TOTAL = WRITERS * TRANSACTIONS * PER_TRANSACTION  # 3,000 events
KILLS = 3
PROGRESS_BETWEEN_KILLS = 300


def start(service: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "kernel.runner", service],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def start_audit(env: dict[str, str], log: Path) -> subprocess.Popen:
    return start("services.audit.service:AuditService", env, log)


def ledger_count(db: Database) -> int:
    """How many of the test's events the ledger holds (audit records its own events too)."""
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM log_entries WHERE type = 'thing_happened'")
        return cur.fetchone()[0]


def redeliveries(infrastructure, world) -> int:
    vhost = urllib.parse.quote(world.database_prefix, safe="")
    info = infrastructure.management("GET", f"/api/queues/{vhost}/{LEDGER.queue}").json()
    return int((info.get("message_stats") or {}).get("redeliver", 0))


def test_audit_killed_three_times_mid_stream_records_every_event_exactly_once(
    world, infrastructure, tmp_path
):
    store = source_store(world, maxconn=8)
    prepare_databases(world, "audit", MIGRATIONS)
    topology.declare(world.amqp_uri, SUBSCRIPTIONS, world.delivery_limit)
    audit_db = Database(world.database_dsn("audit"), maxconn=4)
    # Checkpoints every second, so some are signed between (and during) the kills too.
    env = {**world_env(world), "LEDGERDESK_CHECKPOINT_SECONDS": "1"}
    log = tmp_path / "audit.log"

    # Audit serves only once it has re-applied retention's log of forgetting: retention runs.
    prepare_databases(world, "retention", Path("services/retention/migrations"))
    retention = start("services.retention.service:RetentionService", env, tmp_path / "ret.log")

    relay = OutboxRelay(world.database_dsn("testsrc"), world.amqp_uri, idle_wait=0.2)
    relay_thread = threading.Thread(target=relay.run, daemon=True)
    relay_thread.start()

    def write(w: int) -> None:
        for i in range(TRANSACTIONS):
            with store.unit_of_work() as uow:
                events = [
                    RecordedEvent("thing_happened", {"thing_id": f"w{w}-{i}", "n": n})
                    for n in range(PER_TRANSACTION)
                ]
                uow.append(f"w{w}-{i}", 0, events, tenant_id=None)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in writers:
        t.start()
    audit = start_audit(env, log)
    counts_after_kills: list[int] = []
    try:
        seen = 0
        while len(counts_after_kills) < KILLS:
            seen = wait_until(
                lambda s=seen: (c := ledger_count(audit_db)) >= s + PROGRESS_BETWEEN_KILLS and c,
                timeout=60,
                what=f"ledger progress before kill {len(counts_after_kills) + 1}",
            )
            audit.send_signal(signal.SIGKILL)
            assert audit.wait(10) == -signal.SIGKILL
            counts_after_kills.append(ledger_count(audit_db))
            audit = start_audit(env, log)
        for t in writers:
            t.join(60)

        wait_until(
            lambda: (
                ledger_count(audit_db) >= TOTAL
                and queue_depth(infrastructure, world, LEDGER.queue) == 0
            ),
            timeout=90,
            what="every event in the ledger and the audit queue drained",
        )

        # Every kill happened mid-stream, with events still to come.
        assert len(counts_after_kills) == KILLS
        assert all(c < TOTAL for c in counts_after_kills), counts_after_kills
        with store.db.transaction() as cur:
            cur.execute("SELECT event_id FROM events WHERE type = 'thing_happened'")
            written = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT count(*) FROM outbox")
            assert cur.fetchone()[0] == 0
        assert len(written) == TOTAL
        with audit_db.transaction() as cur:
            cur.execute("SELECT event_id FROM log_entries WHERE type = 'thing_happened'")
            things = [row[0] for row in cur.fetchall()]
            cur.execute(
                "SELECT event_id, type, service FROM log_entries WHERE type <> 'thing_happened'"
            )
            others = cur.fetchall()
            # Each tenant's log, gap-free from 1.
            cur.execute(
                "SELECT min(seq), max(seq), count(*), count(DISTINCT event_id) FROM log_entries"
                " GROUP BY tenant_id"
            )
            per_log = cur.fetchall()
            cur.execute("SELECT count(*) FROM ledger")
            assert cur.fetchone()[0] == 0  # the frozen chain takes nothing
        assert len(things) == TOTAL
        assert set(things) == written  # each event once: nothing lost, nothing twice
        # The rest are the audit service's own announcements (one per start), also once each
        # (its relay deleted them from its outbox once published).
        assert {(t, s) for _, t, s in others} == {("service_announced", "audit")}
        assert len(others) == len({e for e, _, _ in others}) <= KILLS + 1
        assert per_log and all(
            (low, high, distinct) == (1, count, count) for low, high, count, distinct in per_log
        )  # gap-free 1..N in each log
        assert sum(count for _, _, count, _ in per_log) == TOTAL + len(others)
        # The kills left messages unacknowledged, which the broker then delivered again.
        wait_until(
            lambda: redeliveries(infrastructure, world) > 0,
            timeout=30,
            interval=0.5,
            what="the broker's count of redelivered messages (its statistics lag a few seconds)",
        )
        # Nothing was given up on: redelivery stayed within the delivery limit.
        assert queue_depth(infrastructure, world, LEDGER.dead_letter_queue) == 0

        keystore = Keystore(Database(world.database_dsn("audit", "keys")), world.master_keys)
        ledger = Ledger(
            audit_db,
            FieldCipher(keystore),
            signer_from_config(world.audit_signing_key),
            origin=world.audit_origin,
        )
        result = ledger.logs.verify_platform()
        assert (result["ok"], result["entries"]) == (True, TOTAL + len(others))
        assert result["checkpoints"] >= 1 and result["bad_logs"] == []
    finally:
        for process in (audit, retention):
            process.terminate()
            process.wait(30)
        relay.stop()
        relay_thread.join(10)
        for t in writers:
            t.join(60)
