"""What a tenant sees of verification: its own log verified against the heads the platform
checkpoints signed for it (``TenantLogs.verify_log``: its entries alone, whatever the others
write), and its entries in the frozen single chain of earlier releases proved included in that
chain's signed checkpoint, a bounded number per call, with the progress kept between calls
(``tenant_verifications``).

In the frozen chain, a call proves only the tenant's entries after the last one it proved, up to
the latest signed checkpoint, at most ``PROOFS_PER_CALL`` of them, and saves how far it got; the
report gives the totals and how many are still pending (newer than the checkpoint, or not
reached yet: the next call goes on). So that part costs O(limit x log n) whatever the tenant had
written. The walk of its own log costs O(its own entries): others' writes never lengthen it.

An entry proved against an earlier checkpoint stays proved: the platform's verification job
checks every later checkpoint's root over the whole tree it rebuilt from the entries, so a
later root that holds is consistent with the earlier one, and an entry edited after it was
proved is that job's finding (``platform.ok`` false in this report), not this view's. An entry
that failed its proof stays counted, and the first such seq stays in the report.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel.db import Database
from services.audit import chain, verification

if TYPE_CHECKING:
    from services.audit.ledger import Ledger

# At about 75 us an entry (content hashed, path read and checked), a call holds a worker for
# some 1.5 s at most, however many entries the tenant has.
PROOFS_PER_CALL = 20_000

_PROGRESS = "verified_size, last_seq, included, failed, first_bad_seq"


@dataclass
class Progress:
    verified_size: int = 0
    last_seq: int = 0
    included: int = 0
    failed: int = 0
    first_bad_seq: int | None = None


def report(
    ledger: Ledger, tenant_id: str, *, limit: int = PROOFS_PER_CALL, batch_size: int = 1000
) -> dict[str, Any]:
    """Verify the tenant's own log, prove up to ``limit`` more of its entries in the frozen
    chain, save that progress, and report both."""
    checkpoint = ledger.latest_checkpoint()
    signed = False
    if checkpoint is not None:
        tree_size, root_hash, signed_at, _key_id, public_key, signature, note = checkpoint
        signed = ledger.signature_holds(
            tree_size, bytes(root_hash), signed_at, public_key, bytes(signature), note
        )
    progress = _advance(
        ledger,
        tenant_id,
        # Nothing is proved against a checkpoint whose signature does not hold: the entries
        # stay pending, and the report says the checkpoint is at fault.
        (checkpoint[0], bytes(checkpoint[1])) if checkpoint is not None and signed else None,
        limit,
        batch_size,
    )
    with ledger.db.transaction() as cur:
        cur.execute(
            "SELECT count(*) FROM ledger WHERE tenant_id = %s AND seq > %s",
            (tenant_id, progress.last_seq),
        )
        pending = cur.fetchone()[0]
    frozen_ok = not progress.failed and (checkpoint is None or signed)
    # The tenant's own log, walked whole: its entries and the heads the platform checkpoints
    # signed for it, nobody else's entries (``TenantLogs.verify_log``).
    log = ledger.logs.verify_log(uuid.UUID(tenant_id))
    latest = ledger.logs.latest_checkpoint()
    platform = ledger.verification_report()
    frozen_verdict = verification.frozen_verdict(ledger.db)
    log_pending = log["entries"] - log["verified_size"]
    if latest is not None:
        shown = {"signed_at": latest["signed_at"], "signature_ok": latest["holds"]}
    elif checkpoint is not None:
        shown = {"signed_at": checkpoint[2], "signature_ok": signed}
    else:
        shown = None
    return {
        "scope": "tenant",
        "ok": frozen_ok and log["ok"] and frozen_verdict is not False,
        "entries": progress.included + progress.failed + pending + log["entries"],
        "included": progress.included + log["verified_size"],
        "pending": pending + (log_pending if log["ok"] else 0),
        "first_bad_seq": progress.first_bad_seq,
        "tenant_log": {
            "ok": log["ok"],
            "entries": log["entries"],
            "verified": log["verified_size"],
            "first_bad_seq": log["first_bad_seq"],
            "signed_heads": log["checkpoints"],
        },
        "checkpoint": shown,
        # The job's verdict on the frozen chain, which the tenant's entries of earlier releases
        # are in: the other tenants' logs are none of this tenant's business.
        "platform": {"ok": frozen_verdict, "verified_at": platform["finished_at"]},
    }


def forget(db: Database, tenant_id: uuid.UUID | str) -> int:
    """Delete a tenant's progress (with the tenant); how many rows went (0 or 1)."""
    with db.transaction() as cur:
        cur.execute("DELETE FROM tenant_verifications WHERE tenant_id = %s", (str(tenant_id),))
        return cur.rowcount


def _advance(
    ledger: Ledger,
    tenant_id: str,
    checkpoint: tuple[int, bytes] | None,
    limit: int,
    batch_size: int,
) -> Progress:
    """The tenant's progress after proving what this call may; when another call for the
    tenant holds its row, that call's last saved progress, with nothing proved here (so two
    calls never prove, nor count, the same entries)."""
    with ledger.db.transaction() as cur:
        # Its own short transaction: an insert racing another call's waits only for that insert.
        cur.execute(
            "INSERT INTO tenant_verifications (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (tenant_id,),
        )
    with ledger.db.connection() as conn:
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT {_PROGRESS} FROM tenant_verifications WHERE tenant_id = %s"
                    " FOR UPDATE SKIP LOCKED",
                    (tenant_id,),
                )
                row = cur.fetchone()
                if row is None:
                    conn.rollback()
                    cur.execute(
                        f"SELECT {_PROGRESS} FROM tenant_verifications WHERE tenant_id = %s",
                        (tenant_id,),
                    )
                    found = cur.fetchone()
                    conn.commit()
                    return Progress(*found) if found else Progress()
                progress = Progress(*row)
                if checkpoint is not None and checkpoint[0] > progress.last_seq:
                    _prove(ledger, conn, tenant_id, progress, checkpoint, limit, batch_size)
                    cur.execute(
                        "UPDATE tenant_verifications SET verified_size = %s, last_seq = %s,"
                        " included = %s, failed = %s, first_bad_seq = %s, checked_at = %s"
                        " WHERE tenant_id = %s",
                        (
                            progress.verified_size,
                            progress.last_seq,
                            progress.included,
                            progress.failed,
                            progress.first_bad_seq,
                            dt.datetime.now(dt.UTC),
                            tenant_id,
                        ),
                    )
            conn.commit()
            return progress
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise


def _prove(
    ledger: Ledger,
    conn: Any,
    tenant_id: str,
    progress: Progress,
    checkpoint: tuple[int, bytes],
    limit: int,
    batch_size: int,
) -> None:
    """Prove the tenant's next entries (at most ``limit``) against ``checkpoint``, in place."""
    tree_size, root = checkpoint
    read = 0
    with conn.cursor(name="tenant_entries") as rows, conn.cursor() as nodes_cur:
        rows.itersize = batch_size
        rows.execute(
            "SELECT seq, content FROM ledger WHERE tenant_id = %s AND seq > %s AND seq <= %s"
            " ORDER BY seq LIMIT %s",
            (tenant_id, progress.last_seq, tree_size, limit),
        )
        while batch := rows.fetchmany(batch_size):
            read += len(batch)
            leaves = [(seq, chain.leaf_hash(bytes(content))) for seq, content in batch]
            for seq, ok in ledger.prove_leaves(nodes_cur, leaves, tree_size, root):
                if ok:
                    progress.included += 1
                else:
                    progress.failed += 1
                    if progress.first_bad_seq is None:
                        progress.first_bad_seq = seq
            progress.last_seq = batch[-1][0]
            # A switch to the process's other green threads (recording, heartbeats) per batch.
            time.sleep(0)
    if read < limit:
        # Every entry of the tenant up to the checkpoint is proved: the next call starts there.
        progress.last_seq = tree_size
    progress.verified_size = tree_size
