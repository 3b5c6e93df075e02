"""Section 5: projection rebuild, ledger append and ledger verification.

- Rebuild: tickets' read models replayed from a store of N events (tickets' read models keep
  the words encrypted, so replay upcasts and decrypts nothing). Baseline: reading the same
  events in the same batches without applying them, the floor of any replay. Each runs twice,
  in turn.
- Ledger append: the same events recorded one by one by audit's ``Ledger.record`` (each its own
  transaction, as audit records them from the queue), then one signed checkpoint.
- Verification: ``Ledger.verify`` (read, recompute the chain and every leaf, check the signed
  checkpoint's Merkle root) against a plain hashlib pass over the same bytes: the same rows
  read the same way, one chained SHA-256 each. The rate of the hashing alone, over bytes
  already in memory, is in the note: no verifier that reads the ledger can reach it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

from bench.harness import Context, Row
from bench.history import new_requester, tickets_store, write_history
from kernel import eventstore
from kernel.stores import prepare_databases
from services.audit.ledger import Ledger, open_ledger

AUDIT_MIGRATIONS = Path(__file__).resolve().parent.parent / "services/audit/migrations"


def _hashlib_pass(ledger: Ledger) -> tuple[float, float]:
    """Entries/s of the plainest verifier: read each row's bytes as ``verify`` does and chain
    one SHA-256 over them; and of the hashing alone, over bytes already in memory."""
    began = time.perf_counter()
    digest, contents = b"", []
    with ledger.db.connection() as conn, conn.cursor(name="plain_pass") as cur:
        cur.itersize = 5000
        cur.execute("SELECT content FROM ledger ORDER BY seq")
        for (content,) in cur:
            content = bytes(content)
            digest = hashlib.sha256(digest + content).digest()
            contents.append(content)
    plain_seconds = time.perf_counter() - began
    began = time.perf_counter()
    digest = b""
    for content in contents:
        digest = hashlib.sha256(digest + content).digest()
    memory_seconds = time.perf_counter() - began
    return len(contents) / plain_seconds, len(contents) / memory_seconds


def run(ctx: Context, sections: set[str]) -> list[Row]:
    events = 2_000 if ctx.quick else 20_000
    entries = 1_000 if ctx.quick else 5_000
    settings = ctx.world(LEDGERDESK_KEY_CACHE_SECONDS="30")
    store = tickets_store(settings)
    tenant = str(uuid.uuid4())
    # Many subjects, as in life.
    per_subject = 100
    for _ in range(events // per_subject):
        write_history(store, tenant, new_requester(store, tenant), per_subject)

    def read_alone() -> int:
        read = 0
        with store.db.transaction() as cur:
            # What a rebuild reads: its snapshot whole (nothing writes meanwhile).
            position = eventstore.START
            while batch := eventstore.read_all(cur, position, 2000, settled=False):
                read += len(batch)
                position = batch[-1][0]
        return read

    # Twice each, in turn (who goes first alternating): a single pass of each would compare
    # two different minutes of a shared machine.
    read = applied = 0
    read_seconds = rebuild_seconds = 0.0
    for n in range(2):
        for step in ("read", "rebuild") if n % 2 == 0 else ("rebuild", "read"):
            began = time.perf_counter()
            if step == "read":
                read += read_alone()
                read_seconds += time.perf_counter() - began
            else:
                applied += store.rebuild("tickets", progress=False)
                rebuild_seconds += time.perf_counter() - began

    prepare_databases(settings, "audit", AUDIT_MIGRATIONS)
    ledger = open_ledger(settings)
    with store.db.transaction() as cur:
        sample = [e for _, e in eventstore.read_all(cur, limit=entries, settled=False)]
    began = time.perf_counter()
    for envelope in sample:
        ledger.record(envelope)
    append_seconds = time.perf_counter() - began
    ledger.checkpoint()

    began = time.perf_counter()
    verdict = ledger.verify()
    verify_seconds = time.perf_counter() - began
    assert verdict["ok"] and verdict["entries"] == len(sample), verdict

    plain_rate, memory_rate = _hashlib_pass(ledger)
    rebuild_rate = applied / rebuild_seconds
    verify_rate = len(sample) / verify_seconds
    return [
        Row(
            "replay",
            "tickets projection rebuild",
            rebuild_rate,
            "events/s",
            read / read_seconds,
            "read_all alone, no apply",
            ">= 20,000 events/s",
            rebuild_rate >= 20_000,
            f"{events:,} events, {events // per_subject} subjects; twice each, in turn",
        ),
        Row(
            "replay",
            "audit ledger append",
            len(sample) / append_seconds,
            "entries/s",
            note=f"{len(sample):,} entries, one transaction each",
        ),
        Row(
            "replay",
            "audit ledger full verification",
            verify_rate,
            "entries/s",
            plain_rate,
            "the same rows read, one chained hashlib SHA-256 each",
            "ratio >= 0.25",
            verify_rate / plain_rate >= 0.25,
            f"{len(sample):,} entries + 1 checkpoint; hashlib alone in memory {memory_rate:,.0f}/s",
        ),
    ]
