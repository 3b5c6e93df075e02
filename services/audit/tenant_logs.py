"""A log per tenant (issue 23): its own gap-free sequence, hash chain and Merkle tree, and a
signed platform checkpoint that commits to every log's head.

The single chain (``services.audit.ledger``) put every event of every tenant behind one lock:
the platform's serial point, and the reason a tenant's proof or verification was sized by the
platform's volume. Here:

- An append locks its tenant's head row (``log_heads``, ``FOR UPDATE``) and nothing else, so
  appends of different tenants never wait on one another; a batch that spans tenants locks their
  rows in tenant order, so two batches cannot deadlock. The same event always belongs to the same
  tenant, so the per-tenant lock is enough to make a redelivery a no-op without a gap.
- Entries with no tenant go in the log of ``chain.NIL_TENANT``.
- A platform checkpoint reads every head from one snapshot (no lock an append waits on), builds
  an RFC 6962 tree over them sorted by tenant id (``chain.log_head_leaf``), and signs its root
  together with the frozen single chain's size and root, so the chain of earlier releases stays
  committed to and verifiable (``verify_platform`` walks it).
- A tenant's verification and proofs read its own entries and nodes, and the heads of the
  checkpoints (ids and hashes: no entries of anyone else).
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg2.extras

from kernel.envelope import Envelope
from kernel.errors import NotFound, RetryLater
from kernel.signing import check_signing_key
from services.audit import access_keys, chain, merkle
from services.audit.log_offline import (
    LOG_EXPORT_FORMAT,
    platform_message,
    platform_signature_holds,
)

if TYPE_CHECKING:
    from services.audit.ledger import Ledger

# One platform checkpoint at a time (its number is the next); appends never take it.
_CHECKPOINT_LOCK = 0x1ED6E6
_LEGACY_HEAD = (
    "SELECT h.seq, ARRAY(SELECT n.hash FROM generate_series(62, 1, -1) AS lv"
    " JOIN ledger_nodes n ON n.level = lv AND n.idx = (h.seq >> lv) - 1"
    " WHERE (h.seq >> lv) & 1 = 1 ORDER BY lv DESC), h.leaf_hash"
    " FROM (SELECT seq, leaf_hash FROM ledger ORDER BY seq DESC LIMIT 1) AS h"
)


def log_of(envelope: Envelope) -> uuid.UUID:
    """The log an envelope's entry goes in: its tenant's, or the nil tenant's."""
    return chain.NIL_TENANT if envelope.tenant_id is None else uuid.UUID(str(envelope.tenant_id))


def _tree(size: int, hashes: Sequence[bytes]) -> merkle.CompactRange:
    return merkle.CompactRange(size, [bytes(h) for h in hashes])


class TenantLogs:
    """Appends, platform checkpoints, verification and proofs of the per-tenant logs, on the
    ledger's database, sealer and signer."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.db = ledger.db

    # --- writing ------------------------------------------------------------------------------

    def record(self, envelope: Envelope) -> int | None:
        """Append one entry; its seq in its tenant's log, or None when already recorded."""
        if envelope.type == "access_logged" and self._recorded(envelope.event_id):
            # A redelivery is checked before its fields are sealed, so a day destroyed since
            # cannot change it (as the frozen chain's ``Ledger.record`` did).
            return None
        return self.record_many([envelope])[0]

    def _recorded(self, event_id: uuid.UUID) -> bool:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM log_entries WHERE event_id = %s)"
                " OR EXISTS (SELECT 1 FROM ledger WHERE event_id = %s)",
                (event_id, event_id),
            )
            return bool(cur.fetchone()[0])

    def record_many(self, envelopes: Sequence[Envelope]) -> list[int | None]:
        """Append entries in order, in one transaction; for each, its seq in its tenant's log,
        or None when that event is already recorded (or earlier in ``envelopes``)."""
        if not envelopes:
            return []
        prepared = [(e, *self.ledger._content(e)) for e in envelopes]
        with self.db.transaction() as cur:
            return self.append(cur, prepared)

    def append(
        self,
        cur: Any,
        prepared: Sequence[tuple[Envelope, access_keys.Row | None, bytes]],
    ) -> list[int | None]:
        """The append on ``cur``'s transaction (its locks held until the caller commits):
        ``prepared`` are (envelope, access-log key, canonical content) as ``Ledger._content``
        makes them."""
        logs = sorted({log_of(e) for e, _, _ in prepared})
        # Heads created first (in tenant order too: a new head's insert waits on another's), then
        # locked in tenant order, and which events are in already, in one round trip.
        cur.execute(
            "INSERT INTO log_heads (tenant_id, head_hash)"
            " SELECT t, %s FROM unnest(%s::uuid[]) AS t ORDER BY t ON CONFLICT DO NOTHING;"
            " SELECT tenant_id, size, head_hash, compact_range FROM log_heads"
            " WHERE tenant_id = ANY(%s::uuid[]) ORDER BY tenant_id FOR UPDATE;",
            (chain.GENESIS, logs, logs),
        )
        heads = {
            uuid.UUID(str(t)): (_tree(size, hashes), bytes(head))
            for t, size, head, hashes in cur.fetchall()
        }
        # The frozen chain too: an event recorded there before the switch and delivered again
        # after it is in already. It takes no appends, so reading it needs no lock.
        ids = [e.event_id for e, _, _ in prepared]
        cur.execute(
            "SELECT event_id FROM log_entries WHERE event_id = ANY(%s::uuid[])"
            " UNION ALL SELECT event_id FROM ledger WHERE event_id = ANY(%s::uuid[])",
            (ids, ids),
        )
        seen = {uuid.UUID(str(r[0])) for r in cur.fetchall()}
        rows: list[tuple] = []
        nodes: list[tuple[uuid.UUID, int, int, bytes]] = []
        keys: set[access_keys.Row] = set()
        assigned: list[int | None] = []
        for envelope, key, content in prepared:
            if envelope.event_id in seen:
                assigned.append(None)
                continue
            seen.add(envelope.event_id)
            log = log_of(envelope)
            tree, prev = heads[log]
            seq = tree.size + 1
            entry_hash = chain.log_entry_hash(log, prev, seq, content)
            leaf = chain.leaf_hash(content)
            nodes.extend((log, *node) for node in tree.append(leaf))
            heads[log] = (tree, entry_hash)
            rows.append(
                (
                    log,
                    seq,
                    envelope.event_id,
                    envelope.type,
                    envelope.source,
                    envelope.actor_id,
                    _subjects(envelope),
                    envelope.occurred_at,
                    None if key is None else key[1],
                    content,
                    prev,
                    entry_hash,
                    leaf,
                )
            )
            if key:
                keys.add(key)
            assigned.append(seq)
        if keys:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO access_log_keys (tenant_id, name, ends_at) VALUES %s"
                " ON CONFLICT DO NOTHING",
                sorted(keys, key=lambda k: (str(k[0]), k[1])),
                page_size=len(keys),
            )
        if rows:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO log_entries (tenant_id, seq, event_id, type, service, actor_id,"
                " subject_ids, at, access_key, content, prev_hash, hash, leaf_hash) VALUES %s",
                rows,
                page_size=len(rows),
            )
            psycopg2.extras.execute_values(
                cur,
                "UPDATE log_heads h SET size = v.size, head_hash = v.head, compact_range ="
                " v.hashes FROM (VALUES %s) AS v(tenant_id, size, head, hashes)"
                " WHERE h.tenant_id = v.tenant_id",
                [
                    (log, tree.size, head, tree.hashes)
                    for log, (tree, head) in heads.items()
                    if tree.size
                ],
                template="(%s::uuid, %s::bigint, %s::bytea, %s::bytea[])",
            )
        if nodes:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO log_nodes (tenant_id, level, idx, hash) VALUES %s",
                nodes,
                page_size=len(nodes),
            )
        return assigned

    # --- platform checkpoints -----------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign a platform checkpoint over every log's head and the frozen chain's head; None
        when nothing changed since the last. Appends do not wait on it: the heads are read from
        one snapshot, each committed with the entries it covers."""
        with self.db.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CHECKPOINT_LOCK,))
            # Read committed, each statement after the lock: every checkpoint signed before
            # this one is seen, and each head is read with the entries it covers.
            cur.execute(
                "SELECT tenant_id, size, head_hash, compact_range FROM log_heads"
                " WHERE size > 0 ORDER BY tenant_id"
            )
            heads = [
                (uuid.UUID(str(t)), size, _tree(size, hashes).root(), bytes(head))
                for t, size, head, hashes in cur.fetchall()
            ]
            cur.execute(_LEGACY_HEAD)
            legacy = cur.fetchone()
            legacy_size, legacy_root = _legacy_root(legacy)
            cur.execute(
                "SELECT number, legacy_size FROM platform_checkpoints ORDER BY number DESC LIMIT 1"
            )
            last = cur.fetchone()
            if last is not None:
                cur.execute(
                    "SELECT tenant_id, size FROM platform_checkpoint_heads WHERE number = %s",
                    (last[0],),
                )
                before = {uuid.UUID(str(t)): size for t, size in cur.fetchall()}
                if last[1] == legacy_size and before == {h[0]: h[1] for h in heads}:
                    return None
            number = 1 if last is None else last[0] + 1
            root = merkle.root([chain.log_head_leaf(*h) for h in heads])
            now = dt.datetime.now(dt.UTC)
            signer = self.ledger.signer
            check_signing_key(signer, self.ledger.keys, now)
            signed_at = now.isoformat()
            message = platform_message(
                self.ledger.origin, number, len(heads), root, legacy_size, legacy_root, signed_at
            )
            signature = signer.sign(message)
            cur.execute(
                "INSERT INTO platform_checkpoints (number, logs, root_hash, legacy_size,"
                " legacy_root, signed_at, key_id, public_key, signature)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    number,
                    len(heads),
                    root,
                    legacy_size,
                    legacy_root,
                    signed_at,
                    signer.key_id,
                    signer.public_key_b64,
                    signature,
                ),
            )
            if heads:
                psycopg2.extras.execute_values(
                    cur,
                    "INSERT INTO platform_checkpoint_heads (number, tenant_id, size, root_hash,"
                    " head_hash) VALUES %s",
                    [(number, *h) for h in heads],
                    page_size=1000,
                )
        return _checkpoint_view(
            number,
            len(heads),
            root,
            legacy_size,
            legacy_root,
            signed_at,
            signer.key_id,
            signer.public_key_b64,
            signature,
        )

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """When the newest platform checkpoint was signed and whether it holds (its signature
        by a published key, its root over the heads stored for it); None before the first."""
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT number, signed_at FROM platform_checkpoints ORDER BY number DESC LIMIT 1"
            )
            row = cur.fetchone()
            if row is None:
                return None
            return {
                "number": row[0],
                "signed_at": row[1],
                "holds": self._checkpoint_holds(cur, row[0]),
            }

    # --- proofs -------------------------------------------------------------------------------

    def proof(self, tenant_id: uuid.UUID, seq: int) -> dict[str, Any]:
        """Entry ``seq`` of a tenant's log proved in the latest platform checkpoint that covers
        it: its audit path in the tenant's tree (O(log n) of the tenant's stored nodes), and the
        tenant's head's audit path in the checkpoint's tree of heads."""
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT leaf_hash FROM log_entries WHERE tenant_id = %s AND seq = %s",
                (tenant_id, seq),
            )
            row = cur.fetchone()
            if row is None:
                raise NotFound("no such entry")
            cur.execute(
                "SELECT number, size, root_hash, head_hash FROM platform_checkpoint_heads"
                " WHERE tenant_id = %s ORDER BY number DESC LIMIT 1",
                (tenant_id,),
            )
            head = cur.fetchone()
            if head is None or head[1] < seq:
                raise RetryLater(
                    self.ledger.checkpoint_seconds,
                    "no signed checkpoint covers this entry yet",
                )
            number, size, log_root, head_hash = head
            ranges = merkle.inclusion_ranges(seq - 1, size)
            nodes = _read_log_nodes(cur, tenant_id, merkle.nodes_of(ranges))
            path = merkle.hashes_of(ranges, nodes)
            checkpoint, leaves, index = _checkpoint_and_leaves(cur, number, tenant_id)
        return {
            "log": "tenant",
            "tenant_id": str(tenant_id),
            "seq": seq,
            "leaf_index": seq - 1,
            "leaf_hash": bytes(row[0]).hex(),
            "audit_path": [h.hex() for h in path],
            "tenant_log": {
                "size": size,
                "root_hash": bytes(log_root).hex(),
                "head_hash": bytes(head_hash).hex(),
            },
            "log_index": index,
            "log_path": [h.hex() for h in merkle.inclusion_proof(leaves, index)],
            "platform_checkpoint": checkpoint,
        }

    def proof_holds(self, proof: dict[str, Any], content: bytes) -> bool:
        """Whether ``proof`` proves ``content`` in a platform checkpoint signed by a published
        key: the entry in its log's tree, the log's head in the checkpoint's tree, the signature."""
        log = proof["tenant_log"]
        checkpoint = proof["platform_checkpoint"]
        tenant = uuid.UUID(proof["tenant_id"])
        leaf = chain.leaf_hash(content)
        log_root = bytes.fromhex(log["root_hash"])
        head_leaf = chain.log_head_leaf(
            tenant, log["size"], log_root, bytes.fromhex(log["head_hash"])
        )
        root = bytes.fromhex(checkpoint["root_hash"])
        return (
            merkle.verify_inclusion(
                leaf,
                proof["seq"] - 1,
                log["size"],
                [bytes.fromhex(h) for h in proof["audit_path"]],
                log_root,
            )
            and merkle.verify_inclusion(
                head_leaf,
                proof["log_index"],
                checkpoint["logs"],
                [bytes.fromhex(h) for h in proof["log_path"]],
                root,
            )
            and platform_signature_holds(
                self.ledger.keys,
                self.ledger.origin,
                checkpoint["number"],
                checkpoint["logs"],
                root,
                checkpoint["legacy_size"],
                bytes.fromhex(checkpoint["legacy_root"]),
                checkpoint["signed_at"],
                checkpoint["public_key"],
                base64.b64decode(checkpoint["signature"]),
            )
        )

    # --- export -------------------------------------------------------------------------------

    def export(self, tenant_id: uuid.UUID, batch_size: int = 5000) -> Iterator[dict[str, Any]]:
        """A tenant's log for the offline verifier (``services.audit.log_offline``), as records
        for JSON lines: a header, each distinct head the platform checkpoints signed for it
        (ascending size) with the first checkpoint that signed it and the head's path in that
        checkpoint's tree, then its entries up to the newest such head; from one snapshot.
        Nothing of another tenant but the hashes on those paths."""
        with self.db.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    heads = signed_heads(cur, tenant_id)
                covered = heads[-1]["size"] if heads else 0
                yield {
                    "format": LOG_EXPORT_FORMAT,
                    "origin": self.ledger.origin,
                    "tenant_id": str(tenant_id),
                    "exported_at": dt.datetime.now(dt.UTC).isoformat(),
                    "heads": len(heads),
                    "entries": covered,
                }
                yield from heads
                with conn.cursor(name="tenant_log_export") as rows:
                    rows.itersize = batch_size
                    rows.execute(
                        "SELECT seq, content, prev_hash, hash FROM log_entries"
                        " WHERE tenant_id = %s AND seq <= %s ORDER BY seq",
                        (tenant_id, covered),
                    )
                    for seq, content, prev, hash_ in rows:
                        yield {
                            "type": "entry",
                            "seq": seq,
                            "content": bytes(content).decode("utf-8"),
                            "prev_hash": bytes(prev).hex(),
                            "hash": bytes(hash_).hex(),
                        }
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    # --- verification -------------------------------------------------------------------------

    def verify_log(self, tenant_id: uuid.UUID | None) -> dict[str, Any]:
        """Verify one tenant's log (None: the nil tenant's) against every platform checkpoint
        that committed to it, reading that log's entries alone.

        The walk trusts nothing stored but the entries' contents: it checks the chain, grows the
        tree from recomputed leaves, and at each committed size checks the log's root and last
        hash against the head the checkpoint signed (whose signature and tree of heads are
        checked too). A changed entry breaks its hash; a deleted one leaves a gap (or, at the
        tail, a signed size the walk does not reach); reordered ones break the chain.
        """
        log = chain.NIL_TENANT if tenant_id is None else tenant_id
        with self.db.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    commitments, checkpoints_ok = self._commitments(cur, log)
                    # The latest checkpoint too, whether it signed this log or not: a log whose
                    # entries and signed heads were all removed shows there, as a tree of heads
                    # that no longer matches its signature.
                    cur.execute("SELECT max(number) FROM platform_checkpoints")
                    latest = cur.fetchone()[0]
                    if latest is not None and not self._checkpoint_holds(cur, latest):
                        checkpoints_ok = False
                result = _walk_log(conn, log, commitments)
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
        if not checkpoints_ok:
            result["ok"] = False
            result["first_bad_seq"] = result["first_bad_seq"] or 1
        return result

    def verify_platform(self, *, legacy: bool = True) -> dict[str, Any]:
        """Every platform checkpoint (signature, tree of heads), the frozen chain against the
        heads they signed for it (unless ``legacy`` is False: the verification job's resumed
        runs, which walk that chain from where they ended), and every tenant's log; which logs
        fail."""
        with self.db.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    cur.execute("SELECT number FROM platform_checkpoints ORDER BY number")
                    numbers = [r[0] for r in cur.fetchall()]
                    bad_checkpoints = [n for n in numbers if not self._checkpoint_holds(cur, n)]
                    cur.execute(
                        "SELECT DISTINCT legacy_size, legacy_root FROM platform_checkpoints"
                    )
                    legacy_heads = {size: bytes(root) for size, root in cur.fetchall()}
                    cur.execute(
                        "SELECT tenant_id FROM log_heads UNION"
                        " SELECT DISTINCT tenant_id FROM platform_checkpoint_heads"
                        " UNION SELECT DISTINCT tenant_id FROM log_entries ORDER BY 1"
                    )
                    logs = [uuid.UUID(str(r[0])) for r in cur.fetchall()]
                legacy_ok = _walk_legacy(conn, legacy_heads) if legacy else True
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
        results = [self.verify_log(log) for log in logs]
        bad = [r for r in results if not r["ok"]]
        return {
            "ok": not bad and not bad_checkpoints and legacy_ok,
            "logs": len(results),
            "entries": sum(r["entries"] for r in results),
            "checkpoints": len(numbers),
            "bad_checkpoints": bad_checkpoints,
            "legacy_ok": legacy_ok,
            "bad_logs": [
                {"tenant_id": r["tenant_id"], "first_bad_seq": r["first_bad_seq"]} for r in bad
            ],
        }

    def _commitments(self, cur: Any, log: uuid.UUID) -> tuple[list[tuple[int, bytes, bytes]], bool]:
        """The distinct heads the platform checkpoints signed for ``log`` (size, root, last
        hash), ascending, and whether each checkpoint that signed one holds."""
        cur.execute(
            "SELECT number, size, root_hash, head_hash FROM platform_checkpoint_heads"
            " WHERE tenant_id = %s ORDER BY number",
            (log,),
        )
        found: list[tuple[int, bytes, bytes]] = []
        holds = True
        for number, size, root, head in cur.fetchall():
            commitment = (size, bytes(root), bytes(head))
            if found and found[-1] == commitment:
                continue
            if found and size < found[-1][0]:
                holds = False  # a log never shrinks
            found.append(commitment)
            holds = holds and self._checkpoint_holds(cur, number)
        return found, holds

    def _checkpoint_holds(self, cur: Any, number: int) -> bool:
        """Whether checkpoint ``number``'s signature holds and its root is its heads' root."""
        cur.execute(
            "SELECT logs, root_hash, legacy_size, legacy_root, signed_at, public_key, signature"
            " FROM platform_checkpoints WHERE number = %s",
            (number,),
        )
        row = cur.fetchone()
        if row is None:
            return False
        logs, root, legacy_size, legacy_root, signed_at, public_key, signature = row
        cur.execute(
            "SELECT tenant_id, size, root_hash, head_hash FROM platform_checkpoint_heads"
            " WHERE number = %s ORDER BY tenant_id",
            (number,),
        )
        leaves = [
            chain.log_head_leaf(uuid.UUID(str(t)), size, bytes(r), bytes(h))
            for t, size, r, h in cur.fetchall()
        ]
        return (
            len(leaves) == logs
            and merkle.root(leaves) == bytes(root)
            and platform_signature_holds(
                self.ledger.keys,
                self.ledger.origin,
                number,
                logs,
                bytes(root),
                legacy_size,
                bytes(legacy_root),
                signed_at,
                public_key,
                bytes(signature),
            )
        )


def _subjects(envelope: Envelope) -> list[str]:
    from services.audit.ledger import subjects_of

    return subjects_of(envelope)


def _legacy_root(row: tuple | None) -> tuple[int, bytes]:
    if row is None:
        return 0, merkle.EMPTY_ROOT
    size, nodes, leaf = row
    hashes = [bytes(h) for h in nodes or ()]
    if size & 1:
        hashes.append(bytes(leaf))
    return size, merkle.CompactRange(size, hashes).root()


def _checkpoint_view(
    number: int,
    logs: int,
    root: bytes,
    legacy_size: int,
    legacy_root: bytes,
    signed_at: str,
    key_id: str,
    public_key: str,
    signature: bytes,
) -> dict[str, Any]:
    return {
        "number": number,
        "logs": logs,
        "root_hash": root.hex(),
        "legacy_size": legacy_size,
        "legacy_root": legacy_root.hex(),
        "signed_at": signed_at,
        "key_id": key_id,
        "public_key": public_key,
        "signature": base64.b64encode(signature).decode(),
    }


def signed_heads(
    cur: Any,
    tenant_id: uuid.UUID,
    *,
    after_size: int = 0,
    before: dt.datetime | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Each distinct head the platform checkpoints signed for a tenant's log (ascending size,
    after ``after_size``, signed before ``before``), with the first checkpoint that signed it
    and the head's audit path in that checkpoint's tree of heads: what ties the log to a
    signed root, for the offline verifier (``log_offline``) and the tenant's export."""
    cur.execute(
        "SELECT DISTINCT ON (h.size) h.number, h.size, h.root_hash, h.head_hash"
        " FROM platform_checkpoint_heads h JOIN platform_checkpoints c USING (number)"
        " WHERE h.tenant_id = %s AND h.size > %s"
        " AND (%s::timestamptz IS NULL OR c.signed_at::timestamptz < %s::timestamptz)"
        " ORDER BY h.size, h.number LIMIT %s",
        (tenant_id, after_size, before, before, limit),
    )
    heads = []
    for number, size, root, head in cur.fetchall():
        checkpoint, leaves, index = _checkpoint_and_leaves(cur, number, tenant_id)
        heads.append(
            {
                "type": "head",
                "size": size,
                "root_hash": bytes(root).hex(),
                "head_hash": bytes(head).hex(),
                "log_index": index,
                "log_path": [h.hex() for h in merkle.inclusion_proof(leaves, index)],
                "checkpoint": checkpoint,
            }
        )
    return heads


def _checkpoint_and_leaves(
    cur: Any, number: int, tenant_id: uuid.UUID
) -> tuple[dict[str, Any], list[bytes], int]:
    cur.execute(
        "SELECT number, logs, root_hash, legacy_size, legacy_root, signed_at, key_id,"
        " public_key, signature FROM platform_checkpoints WHERE number = %s",
        (number,),
    )
    n, logs, root, legacy_size, legacy_root, signed_at, key_id, public_key, sig = cur.fetchone()
    view = _checkpoint_view(
        n,
        logs,
        bytes(root),
        legacy_size,
        bytes(legacy_root),
        signed_at,
        key_id,
        public_key,
        bytes(sig),
    )
    cur.execute(
        "SELECT tenant_id, size, root_hash, head_hash FROM platform_checkpoint_heads"
        " WHERE number = %s ORDER BY tenant_id",
        (number,),
    )
    leaves: list[bytes] = []
    index = -1
    for i, (t, size, r, h) in enumerate(cur.fetchall()):
        t = uuid.UUID(str(t))
        if t == tenant_id:
            index = i
        leaves.append(chain.log_head_leaf(t, size, bytes(r), bytes(h)))
    return view, leaves, index


def _read_log_nodes(
    cur: Any, tenant_id: uuid.UUID, wanted: set[merkle.Node]
) -> dict[merkle.Node, bytes]:
    leaves = [idx + 1 for level, idx in wanted if level == 0]
    inner = [(level, idx) for level, idx in wanted if level > 0]
    cur.execute(
        "SELECT 0, seq - 1, leaf_hash FROM log_entries"
        " WHERE tenant_id = %s AND seq = ANY(%s::bigint[])"
        " UNION ALL SELECT n.level, n.idx, n.hash FROM log_nodes n"
        " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)"
        " ON n.tenant_id = %s AND n.level = w.level AND n.idx = w.idx",
        (tenant_id, leaves, [n[0] for n in inner], [n[1] for n in inner], tenant_id),
    )
    return {(level, idx): bytes(h) for level, idx, h in cur.fetchall()}


def _walk_log(
    conn: Any, log: uuid.UUID, commitments: list[tuple[int, bytes, bytes]]
) -> dict[str, Any]:
    pending = defaultdict(list)
    for size, root, head in commitments:
        pending[size].append((root, head))
    tree = merkle.CompactRange()
    prev = chain.GENESIS
    first_bad: int | None = None
    first_bad_node: int | None = None
    verified = 0
    with (
        conn.cursor(name="tenant_log_verify") as rows,
        conn.cursor(name="tenant_log_verify_nodes") as stored_nodes,
    ):
        rows.itersize = stored_nodes.itersize = 5000
        rows.execute(
            "SELECT seq, content, prev_hash, hash, leaf_hash FROM log_entries"
            " WHERE tenant_id = %s ORDER BY seq",
            (log,),
        )
        # The stored nodes (what proofs are served from) in the order entries complete them.
        stored_nodes.execute(
            "SELECT level, idx, hash FROM log_nodes WHERE tenant_id = %s"
            " ORDER BY ((idx + 1) << level), level",
            (log,),
        )
        nodes = iter(stored_nodes)
        for seq, content, prev_hash, hash_, stored_leaf in rows:
            if seq != tree.size + 1:
                first_bad = tree.size + 1  # a gap, or a row out of place
                break
            content = bytes(content)
            if bytes(prev_hash) != prev or bytes(hash_) != chain.log_entry_hash(
                log, prev, seq, content
            ):
                first_bad = seq
                break
            leaf = chain.leaf_hash(content)
            completed = tree.append(leaf)
            if first_bad_node is None and not _stored_agree(
                leaf, bytes(stored_leaf), completed, nodes
            ):
                first_bad_node = seq
            prev = bytes(hash_)
            for root, head in pending.pop(seq, ()):
                if tree.root() != root or prev != head:
                    # The chain may have been rewritten whole; the signed head narrows where.
                    first_bad = verified + 1
                    break
                verified = seq
            if first_bad is not None:
                break
    if pending and first_bad is None:
        first_bad = verified + 1  # a signed size the walk did not reach: a cut tail
    return {
        "tenant_id": str(log),
        "ok": first_bad is None and first_bad_node is None,
        "entries": tree.size,
        "verified_size": verified,
        "first_bad_seq": first_bad,
        "first_bad_node_seq": first_bad_node,
        "checkpoints": len(commitments),
    }


def _stored_agree(
    leaf: bytes,
    stored_leaf: bytes,
    completed: list[tuple[int, int, bytes]],
    stored: Any,
) -> bool:
    """Whether the stored leaf hash and the nodes this entry completed are the recomputed ones."""
    if stored_leaf != leaf:
        return False
    for node in completed:
        found = next(stored, None)
        if found is None or (found[0], found[1], bytes(found[2])) != node:
            return False
    return True


def _walk_legacy(conn: Any, heads: dict[int, bytes]) -> bool:
    """Whether the frozen single chain is whole and its tree has each root signed for it."""
    tree = merkle.CompactRange()
    prev = chain.GENESIS
    if heads.get(0, merkle.EMPTY_ROOT) != merkle.EMPTY_ROOT:
        return False
    with conn.cursor(name="legacy_verify") as rows:
        rows.itersize = 5000
        rows.execute("SELECT seq, content, prev_hash, hash FROM ledger ORDER BY seq")
        for seq, content, prev_hash, hash_ in rows:
            content = bytes(content)
            if seq != tree.size + 1 or bytes(prev_hash) != prev:
                return False
            if bytes(hash_) != chain.entry_hash(prev, seq, content):
                return False
            tree.append(chain.leaf_hash(content))
            prev = bytes(hash_)
            if seq in heads and heads[seq] != tree.root():
                return False
    return all(size <= tree.size for size in heads)
