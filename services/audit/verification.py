"""The ledger's verification job: one walk over the stored entries, off the request path.

The walk reads each entry's stored content once, in seq order, and trusts nothing else that is
stored: it checks the hash chain, recomputes each leaf and grows the Merkle tree's compact range
itself (never reading the stored tree nodes into it, since whoever can rewrite the tables could
rewrite those too), and when it reaches a checkpoint's tree size it checks that checkpoint's
signature and root against the tree it built. Its cost is O(entries + checkpoints x log n).

Alongside, it compares the stored leaf hashes and tree nodes (what proofs and checkpoints are
served from) with the ones it recomputed, and reports the first entry where they disagree.

A run that finds everything intact stores the compact range where it ended, and the next run
(``from_zero=False``, the service's timer) starts there, so each run costs only what was
appended since. That run trusts the prefix it does not read again; a run from zero (the
command line, and the timer once a day) reads everything. After a run that did not find the
ledger intact, every run starts from zero until one does.

The result is stored (``ledger_verifications``) and is what the verify endpoints report.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from kernel.db import Database
from kernel.signed_note import NoteError, parse_time
from services.audit import chain, merkle
from services.audit.offline_verify import out_of_order

if TYPE_CHECKING:
    from services.audit.ledger import Ledger


class Progress(Protocol):
    """Who watches a run (the command line's bar): told how many entries the walk will read,
    counted in the walk's own snapshot, then how many it has read so far, as it goes and once
    more where it stopped (short of the total when it found a break)."""

    def start(self, total: int) -> None: ...

    def reached(self, entries: int) -> None: ...


# One run at a time, whichever replica's timer (or the command line) starts it.
_VERIFY_LOCK = 0x1ED6E5
# Entries between two yields to the other green threads of the process (a monkey-patched
# time.sleep(0) is a switch): the recording consumers must not wait for a whole run.
_YIELD_EVERY = 1000

_REPORT = (
    "ok, entries, head_hash, first_bad_seq, first_bad_node_seq, checkpoints, verified_size,"
    " from_zero, started_at, finished_at, compact_range, logs_ok, logs, log_entries, bad_logs"
)


def run(
    ledger: Ledger, *, from_zero: bool, batch_size: int = 5000, progress: Progress | None = None
) -> dict[str, Any]:
    """Verify the ledger and store the result; the result. When another run holds the job's
    lock, nothing is done and the last stored result is returned. ``progress`` is told the
    number of entries to walk (one count more, so only when someone watches) and the walk's
    advance."""
    started_at = dt.datetime.now(dt.UTC)
    with ledger.db.connection() as conn:
        try:
            with conn.cursor() as cur:
                # One snapshot for the entries, the nodes and the checkpoints: a checkpoint signed
                # meanwhile is either wholly in it, with every entry it covers, or not at all.
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_VERIFY_LOCK,))
                if not cur.fetchone()[0]:
                    conn.rollback()
                    return latest(ledger.db)
                walk = _Walk.resumed(cur) if not from_zero else None
                checkpoints = _checkpoints(cur, walk.verified_size if walk else 0)
                if walk is not None and any(c[0] <= walk.tree.size for c in checkpoints):
                    walk = None  # a checkpoint inside the trusted prefix: read it all again
                if walk is None:
                    walk = _Walk()
                    checkpoints = _checkpoints(cur, 0)
                start = walk.tree.size
                if progress is not None:
                    cur.execute("SELECT count(*) FROM ledger WHERE seq > %s", (start,))
                    progress.start(cur.fetchone()[0])
            walk.run(ledger, conn, checkpoints, batch_size, progress)
            if progress is not None:
                progress.reached(walk.tree.size - start)
            # The tenant logs and the platform checkpoints, whole, on every run: each log is
            # walked on its own connection (the job's lock is still held on this one). The
            # frozen chain against the heads platform checkpoints signed for it, on a run from
            # zero only: a resumed run trusts that chain's prefix as its own walk does.
            logs = ledger.logs.verify_platform(legacy=walk.from_zero)
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO ledger_verifications (started_at, from_zero, ok, entries,"
                    " head_hash, first_bad_seq, first_bad_node_seq, checkpoints, verified_size,"
                    " compact_range, logs_ok, logs, log_entries, bad_logs)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    f" RETURNING {_REPORT}",
                    (
                        started_at,
                        walk.from_zero,
                        walk.ok,
                        walk.tree.size,
                        walk.head_hash,
                        walk.first_bad,
                        walk.first_bad_node,
                        walk.checkpoints,
                        walk.verified_size,
                        walk.tree.hashes if walk.ok else [],
                        logs["ok"],
                        logs["logs"],
                        logs["entries"],
                        len(logs["bad_logs"]) + len(logs["bad_checkpoints"]),
                    ),
                )
                report = _report(cur.fetchone())
            conn.commit()
            return report
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise


def latest(db: Database) -> dict[str, Any]:
    """The last run's result; before the first run, ``ok`` and the times are None."""
    with db.transaction() as cur:
        cur.execute(f"SELECT {_REPORT} FROM ledger_verifications ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
    if row is None:
        return {
            "ok": None,
            "entries": 0,
            "head": None,
            "first_bad_seq": None,
            "first_bad_node_seq": None,
            "checkpoints": 0,
            "verified_size": 0,
            "from_zero": None,
            "started_at": None,
            "finished_at": None,
            "tenant_logs": None,
        }
    return _report(row)


def frozen_verdict(db: Database) -> bool | None:
    """The last run's verdict on the frozen chain alone (None before the first run): what a
    tenant's report shows as the platform's, since another tenant's log is none of its business
    (a tenant's own log is checked in its report, ``TenantLogs.verify_log``)."""
    with db.transaction() as cur:
        cur.execute("SELECT ok FROM ledger_verifications ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
    return None if row is None else row[0]


def last_from_zero(db: Database) -> dt.datetime | None:
    """When the last run from the first entry ended (the timer runs one a day)."""
    with db.transaction() as cur:
        cur.execute("SELECT max(finished_at) FROM ledger_verifications WHERE from_zero")
        return cur.fetchone()[0]


def _report(row: tuple) -> dict[str, Any]:
    ok, entries, head_hash, bad, bad_node, checkpoints, verified, zero, started, finished = row[:10]
    logs_ok, logs, log_entries, bad_logs = row[11:]
    return {
        # The frozen chain's walk and the tenant logs' both; the figures below are the frozen
        # chain's, the logs' are under tenant_logs (None for runs before the logs were walked).
        "ok": ok and logs_ok is not False,
        "entries": entries,
        "head": None if head_hash is None else {"seq": entries, "hash": bytes(head_hash).hex()},
        "first_bad_seq": bad,
        "first_bad_node_seq": bad_node,
        "checkpoints": checkpoints,
        "verified_size": verified,
        "from_zero": zero,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "tenant_logs": None
        if logs_ok is None
        else {"ok": logs_ok, "logs": logs, "entries": log_entries, "bad": bad_logs},
    }


def _checkpoints(cur: Any, after: int) -> list[tuple[int, bytes, str, str, bytes, str | None]]:
    cur.execute(
        "SELECT tree_size, root_hash, signed_at, public_key, signature, note FROM checkpoints"
        " WHERE tree_size > %s ORDER BY tree_size",
        (after,),
    )
    return [
        (size, bytes(root), at, key, bytes(sig), note) for size, root, at, key, sig, note in cur
    ]


class _Walk:
    """Where a walk stands: the tree it built, the last hash of the chain, what it verified."""

    def __init__(
        self,
        tree: merkle.CompactRange | None = None,
        prev: bytes = chain.GENESIS,
        verified_size: int = 0,
        checkpoints: int = 0,
    ):
        self.tree = tree or merkle.CompactRange()
        self.from_zero = tree is None
        self.prev = prev
        self.head_hash: bytes | None = None if tree is None else prev
        self.verified_size = verified_size
        self.checkpoints = checkpoints
        self.first_bad: int | None = None
        self.first_bad_node: int | None = None
        # The order checkpoints keep (see offline_verify.out_of_order): the first with a note,
        # and the newest signing so far.
        self.noted_from: int | None = None
        self.latest: tuple[int, dt.datetime] | None = None

    @classmethod
    def resumed(cls, cur: Any) -> _Walk | None:
        """Where the last run ended, if it found the ledger intact (else None: from zero)."""
        cur.execute(
            "SELECT ok, entries, head_hash, verified_size, checkpoints, compact_range"
            " FROM ledger_verifications ORDER BY id DESC LIMIT 1"
        )
        row = cur.fetchone()
        if row is None or not row[0] or not row[1]:
            return None
        _, entries, head_hash, verified_size, checkpoints, hashes = row
        tree = merkle.CompactRange(entries, [bytes(h) for h in hashes])
        walk = cls(tree, bytes(head_hash), verified_size, checkpoints)
        if verified_size:
            # The prefix kept the order, so the checkpoint it ended at holds what order needs:
            # the newest signing, and whether notes had begun.
            cur.execute(
                "SELECT signed_at, note IS NOT NULL FROM checkpoints WHERE tree_size = %s",
                (verified_size,),
            )
            found = cur.fetchone()
            if found is None:
                return None
            try:
                walk.latest = (verified_size, parse_time(found[0], "signed_at"))
            except NoteError:
                return None
            walk.noted_from = verified_size if found[1] else None
        return walk

    @property
    def ok(self) -> bool:
        return self.first_bad is None and self.first_bad_node is None

    def _in_order(self, size: int, signed_at: str, noted: bool) -> bool:
        """Whether a checkpoint whose signature holds keeps the order; if so, it moves it on."""
        try:
            moment = parse_time(signed_at, "signed_at")
        except NoteError:
            return False
        if out_of_order(noted, moment, self.noted_from, self.latest) is not None:
            return False
        if noted and self.noted_from is None:
            self.noted_from = size
        self.latest = (size, moment)
        return True

    def run(
        self,
        ledger: Ledger,
        conn: Any,
        checkpoints: list[tuple[int, bytes, str, str, bytes, str | None]],
        batch_size: int,
        progress: Progress | None = None,
    ) -> None:
        pending = list(reversed(checkpoints))  # the next one to reach is last
        start = self.tree.size
        with (
            conn.cursor(name="ledger_verify") as rows,
            conn.cursor(name="ledger_verify_nodes") as stored_nodes,
        ):
            rows.itersize = stored_nodes.itersize = batch_size
            rows.execute(
                "SELECT seq, content, prev_hash, hash, leaf_hash FROM ledger WHERE seq > %s"
                " ORDER BY seq",
                (start,),
            )
            stored_nodes.execute(
                "SELECT level, idx, hash FROM ledger_nodes WHERE ((idx + 1) << level) > %s"
                " ORDER BY ((idx + 1) << level), level",
                (start,),
            )
            nodes: Iterator[tuple[int, int, bytes]] = iter(stored_nodes)
            for walked, (seq, content, prev_hash, hash_, leaf_hash) in enumerate(rows, 1):
                if walked % _YIELD_EVERY == 0:
                    time.sleep(0)
                    if progress is not None:
                        progress.reached(walked)
                if seq != self.tree.size + 1:
                    self.first_bad = self.tree.size + 1  # a gap, or a row out of order
                    break
                content = bytes(content)
                leaf = chain.leaf_hash(content)
                completed = self.tree.append(leaf)
                if self.first_bad_node is None and not _agree(leaf, leaf_hash, completed, nodes):
                    self.first_bad_node = seq
                self.head_hash = bytes(hash_)
                while pending and pending[-1][0] == seq:
                    size, root, signed_at, public_key, signature, note = pending.pop()
                    holds = ledger.signature_holds(
                        size, root, signed_at, public_key, signature, note
                    ) and self._in_order(size, signed_at, note is not None)
                    if not (holds and self.tree.root() == root):
                        # The chain may have been rewritten whole; this checkpoint narrows where.
                        self.first_bad = self.verified_size + 1
                        return
                    self.verified_size = size
                    self.checkpoints += 1
                if bytes(prev_hash) != self.prev or bytes(hash_) != chain.entry_hash(
                    self.prev, seq, content
                ):
                    self.first_bad = seq
                    break
                self.prev = bytes(hash_)
        if pending:
            # A signed size the walk did not reach (a cut tail) or reached through a broken
            # chain: nothing after the last checkpoint that held is vouched for.
            bad = self.verified_size + 1
            self.first_bad = bad if self.first_bad is None else min(self.first_bad, bad)


def _agree(
    leaf: bytes,
    stored_leaf: bytes,
    completed: list[tuple[int, int, bytes]],
    stored: Iterator[tuple[int, int, bytes]],
) -> bool:
    """Whether the stored leaf hash and the nodes this entry completed are the recomputed ones."""
    if bytes(stored_leaf) != leaf:
        return False
    for node in completed:
        found = next(stored, None)
        if found is None or (found[0], found[1], bytes(found[2])) != node:
            return False
    return True
