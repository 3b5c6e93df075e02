"""Section 8: the audit ledger at scale (issue 17): verification with many checkpoints, and
inclusion proofs in a large ledger.

- Verification: a ledger of N entries with C checkpoints spread evenly (100,000 and 1,000;
  ``--quick`` 5,000 and 50). Ours: ``Ledger.verify`` from the first entry (one walk: the chain,
  every leaf, the compact range grown as it goes, each checkpoint's signature and root when the
  walk reaches its size, the stored nodes compared). Baseline: the same rows read the same way
  with one chained hashlib SHA-256 each, the floor of any verifier that reads the ledger. The
  two take turns, twice each. A resumed run over the last 1% appended is a row of its own
  (figures only), and so is the verification as it was before issue 17 (every checkpoint's
  root recomputed from every leaf), over the leaves already in memory, i.e. its hashing alone.
- Proofs: a ledger of 1,000,000 entries (``--quick`` 20,000) and one checkpoint of all of it.
  Ours: ``Ledger.proof`` of random entries (O(log n) stored nodes read, the path folded).
  Baseline: the entry's row read and its content hashed alone (a point read, the floor of
  any proof). In turn, 200 each. The proof as it was before (every leaf hash read, the path
  computed from all of them) is measured on 3 entries, figures only.
- Concurrent appends (issue 23): 1, 4 and 16 tenants writing at once, a thread each, groups of
  10 entries a transaction (``--quick`` 2,000 entries a run, else 20,000). Ours: each tenant's
  own log (``Ledger.logs.record_many``, its head row locked). Baseline: the single chain as it
  was (``Ledger.record_many``, one advisory lock for the platform), kept callable for this. The
  two take turns on the same database.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from pathlib import Path

from bench.harness import Context, Row, percentile
from kernel.envelope import Envelope, new_envelope
from kernel.stores import prepare_databases
from services.audit import chain, merkle
from services.audit.ledger import Ledger, open_ledger

AUDIT_MIGRATIONS = Path(__file__).resolve().parent.parent / "services/audit/migrations"
BATCH = 2_000  # entries per record_many while the ledger is built


def _envelopes(n: int, tenants: list[uuid.UUID]) -> list[Envelope]:
    return [
        new_envelope(
            type="ticket_status_changed",
            schema_version=1,
            source="tickets",
            stream_id=f"Ticket-{uuid.uuid4()}",
            stream_version=2,
            tenant_id=tenants[i % len(tenants)],
            actor_id=str(uuid.uuid4()),
            payload={"ticket_id": str(uuid.uuid4()), "status": "open", "n": i},
        )
        for i in range(n)
    ]


def _build(ledger: Ledger, entries: int, checkpoints: int) -> None:
    """``entries`` recorded in batches, a checkpoint signed after every entries/checkpoints."""
    tenants = [uuid.uuid4() for _ in range(20)]
    every = entries // checkpoints if checkpoints else entries + 1
    recorded = 0
    while recorded < entries:
        step = min(BATCH, entries - recorded)
        if checkpoints:
            step = min(step, every - recorded % every)
        ledger.record_many(_envelopes(step, tenants))
        recorded += step
        if checkpoints and recorded % every == 0:
            ledger.checkpoint()


def _read_and_hash(ledger: Ledger) -> float:
    """Seconds to read every row's content as the walk does and chain one SHA-256 over each."""
    began = time.perf_counter()
    digest = b""
    with ledger.db.connection() as conn, conn.cursor(name="plain_pass") as cur:
        cur.itersize = 5000
        cur.execute("SELECT content FROM ledger ORDER BY seq")
        for (content,) in cur:
            digest = hashlib.sha256(digest + bytes(content)).digest()
    return time.perf_counter() - began


def _before_verify_hashing(ledger: Ledger) -> tuple[float, int]:
    """The checkpoint part of the verification before issue 17: each checkpoint's root from
    every leaf up to it, over leaf hashes already in memory (its reads left out)."""
    with ledger.db.transaction() as cur:
        cur.execute("SELECT leaf_hash FROM ledger ORDER BY seq")
        leaves = [bytes(r[0]) for r in cur.fetchall()]
        cur.execute("SELECT tree_size FROM checkpoints ORDER BY tree_size")
        sizes = [r[0] for r in cur.fetchall()]
    began = time.perf_counter()
    for size in sizes:
        merkle.root(leaves[:size])
    return time.perf_counter() - began, len(sizes)


def _before_proof(ledger: Ledger, seq: int) -> float:
    """The proof before issue 17: every leaf hash up to the checkpoint read, the path from all."""
    began = time.perf_counter()
    with ledger.db.transaction() as cur:
        cur.execute("SELECT max(tree_size) FROM checkpoints")
        size = cur.fetchone()[0]
        cur.execute("SELECT leaf_hash FROM ledger WHERE seq <= %s ORDER BY seq", (size,))
        leaves = [bytes(r[0]) for r in cur.fetchall()]
    merkle.inclusion_proof(leaves, seq - 1)
    return time.perf_counter() - began


def _point_read(ledger: Ledger, seq: int) -> float:
    began = time.perf_counter()
    with ledger.db.transaction() as cur:
        cur.execute("SELECT content FROM ledger WHERE seq = %s", (seq,))
        chain.leaf_hash(bytes(cur.fetchone()[0]))
    return time.perf_counter() - began


GROUP = 10  # entries a transaction in the concurrent appends


def _concurrent_appends(ledger: Ledger, writers: int, total: int, per_tenant: bool) -> float:
    """Entries/s with ``writers`` tenants appending at once, a thread each, until ``total``."""
    tenants = [uuid.uuid4() for _ in range(writers)]
    per_writer = total // writers
    work = [[_envelopes(GROUP, [tenant]) for _ in range(per_writer // GROUP)] for tenant in tenants]
    append = ledger.logs.record_many if per_tenant else ledger.record_many
    start = threading.Barrier(writers + 1)

    def write(groups: list[list[Envelope]]) -> None:
        start.wait()
        for group in groups:
            append(group)

    threads = [threading.Thread(target=write, args=(groups,)) for groups in work]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return sum(len(g) for groups in work for g in groups) / elapsed


def appends(ctx: Context) -> list[Row]:
    """Ledger appends/s with 1, 4 and 16 tenants at once: a log per tenant against the single
    chain, in turn on one database."""
    total = 2_000 if ctx.quick else 20_000
    settings = ctx.world(LEDGERDESK_KEY_CACHE_SECONDS="30")
    prepare_databases(settings, "audit", AUDIT_MIGRATIONS)
    ledger = open_ledger(settings)
    # Warm the pool and both paths' first inserts, so neither pays for the other's start.
    ledger.record_many(_envelopes(GROUP, [uuid.uuid4()]))
    ledger.logs.record_many(_envelopes(GROUP, [uuid.uuid4()]))
    rows: list[Row] = []
    for writers in (1, 4, 16):
        ours = single = 0.0
        for turn in range(2):
            order = (True, False) if turn % 2 == 0 else (False, True)
            for per_tenant in order:
                rate = _concurrent_appends(ledger, writers, total // 2, per_tenant)
                if per_tenant:
                    ours += rate / 2
                else:
                    single += rate / 2
        rows.append(
            Row(
                "ledger",
                f"appends, {writers} tenant{'s' if writers > 1 else ''} at once",
                ours,
                "entries/s",
                single,
                "the single chain (one lock for every tenant)",
                note=f"a log per tenant; {total:,} entries, groups of {GROUP}, a thread per"
                " tenant; twice each, in turn",
            )
        )
    ledger.logs.checkpoint()
    verdict = ledger.logs.verify_platform()
    assert verdict["ok"], verdict
    return rows


def run(ctx: Context, sections: set[str]) -> list[Row]:
    entries, checkpoints = (5_000, 50) if ctx.quick else (100_000, 1_000)
    proof_entries = 20_000 if ctx.quick else 1_000_000
    rows: list[Row] = appends(ctx)

    settings = ctx.world(LEDGERDESK_KEY_CACHE_SECONDS="30")
    prepare_databases(settings, "audit", AUDIT_MIGRATIONS)
    ledger = open_ledger(settings)
    _build(ledger, entries, checkpoints)

    ours = plain = 0.0
    for n in range(2):
        for step in ("ours", "plain") if n % 2 == 0 else ("plain", "ours"):
            if step == "plain":
                plain += _read_and_hash(ledger)
                continue
            began = time.perf_counter()
            verdict = ledger.verify()
            ours += time.perf_counter() - began
            assert verdict["ok"] and verdict["entries"] == entries, verdict
            assert verdict["checkpoints"] == checkpoints, verdict
    rows.append(
        Row(
            "ledger",
            "verification from zero",
            2 * entries / ours,
            "entries/s",
            2 * entries / plain,
            "the same rows read, one chained hashlib SHA-256 each",
            note=f"{entries:,} entries + {checkpoints:,} checkpoints; twice each, in turn;"
            f" {ours / 2:.2f} s a run",
        )
    )
    appended = entries // 100
    _build(ledger, appended, 1)
    began = time.perf_counter()
    verdict = ledger.verify(from_zero=False)
    resumed = time.perf_counter() - began
    assert verdict["ok"] and not verdict["from_zero"], verdict
    rows.append(
        Row(
            "ledger",
            "verification resumed",
            resumed * 1000,
            "ms",
            note=f"{appended:,} entries and 1 checkpoint appended to {entries:,}",
        )
    )
    before, signed = _before_verify_hashing(ledger)
    rows.append(
        Row(
            "ledger",
            "verification before issue 17, its checkpoint hashing alone",
            before,
            "s",
            note=f"{signed:,} roots each from every leaf, leaves in memory, reads not counted",
        )
    )

    settings = ctx.world(LEDGERDESK_KEY_CACHE_SECONDS="30")
    prepare_databases(settings, "audit", AUDIT_MIGRATIONS)
    big = open_ledger(settings)
    _build(big, proof_entries, 1)
    rng = random.Random(17)
    proof_ms: list[float] = []
    read_ms: list[float] = []
    for n in range(200):
        seq = rng.randint(1, proof_entries)
        for step in ("proof", "read") if n % 2 == 0 else ("read", "proof"):
            if step == "read":
                read_ms.append(_point_read(big, seq) * 1000)
                continue
            began = time.perf_counter()
            proof = big.proof(None, seq)
            proof_ms.append((time.perf_counter() - began) * 1000)
            assert len(proof["audit_path"]) <= proof_entries.bit_length()
    for q in (50, 99):
        rows.append(
            Row(
                "ledger",
                f"inclusion proof p{q}",
                percentile(proof_ms, q),
                "ms",
                percentile(read_ms, q),
                "the entry's row read and hashed alone",
                note=f"{proof_entries:,} entries, 1 checkpoint; 200 random entries, in turn",
            )
        )
    old = [_before_proof(big, rng.randint(1, proof_entries)) * 1000 for _ in range(3)]
    rows.append(
        Row(
            "ledger",
            "inclusion proof before issue 17 (every leaf read)",
            percentile(old, 50),
            "ms",
            note=f"{proof_entries:,} entries; median of 3",
        )
    )
    return rows
