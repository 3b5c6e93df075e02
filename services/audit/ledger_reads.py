"""Reading the ledger: entries as the API shows them, inclusion and consistency proofs from
the stored tree nodes in O(log n) reads, and the export an auditor verifies offline with the
published keys alone (``services.audit.offline_verify``). A mixin of ``Ledger``, which holds
the database, the cipher and the published keys these read with."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

from kernel.crypto.fields import FieldCipher
from kernel.db import Database
from kernel.errors import NotFound, RetryLater
from kernel.signed_note import NoteError, PublicKey, open_checkpoint, parse_time
from kernel.signing import checkpoint_message, verify_signature
from services.audit import merkle
from services.audit.offline_verify import EXPORT_FORMAT

_NODES = (
    "SELECT 0, seq - 1, leaf_hash FROM ledger WHERE seq = ANY(%s::bigint[])"
    " UNION ALL SELECT n.level, n.idx, n.hash FROM ledger_nodes n"
    " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)"
    " ON n.level = w.level AND n.idx = w.idx"
)
_COLUMNS = (
    "log, log_id, seq, event_id, type, service, tenant_id, actor_id, subject_ids, at, content,"
    " prev_hash, hash"
)
NIL = "00000000-0000-0000-0000-000000000000"
# A place in the listing's order: the log ("frozen" or "tenant"), the log's id, a seq in it.
Position = tuple[str, str, int]


class LedgerReads:
    db: Database
    cipher: FieldCipher
    origin: str
    checkpoint_seconds: float

    # --- reading ------------------------------------------------------------------------------

    def checkpoint_status(self, now: dt.datetime) -> tuple[float, int]:
        """Seconds since the newest platform checkpoint was signed (before the first, since the
        first entry of any tenant log was recorded; 0 while they are empty), and the entries no
        checkpoint covers yet: the tenant logs' beyond the heads the newest platform checkpoint
        signed, and the frozen chain's beyond its last checkpoint (nothing once it was signed
        up to its end). One statement, so all come from one snapshot."""
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT (SELECT signed_at FROM platform_checkpoints ORDER BY number DESC LIMIT 1),"
                " (SELECT min(recorded_at) FROM log_entries WHERE seq = 1),"
                " (SELECT coalesce(sum(size), 0) FROM log_heads),"
                " (SELECT coalesce(sum(size), 0) FROM platform_checkpoint_heads WHERE number ="
                "   (SELECT max(number) FROM platform_checkpoints)),"
                " (SELECT coalesce(max(seq), 0) FROM ledger)"
                "  - (SELECT coalesce(max(tree_size), 0) FROM checkpoints)"
            )
            signed_at, first, heads, covered, frozen_unsigned = cur.fetchone()
        since = dt.datetime.fromisoformat(signed_at) if signed_at is not None else first
        age = 0.0 if since is None else max((now - since).total_seconds(), 0.0)
        return age, int(heads - covered + max(frozen_unsigned, 0))

    def view(self, row: tuple) -> dict[str, Any]:
        log, log_id, seq, event_id, type_, service, tenant_id, actor_id, subjects, at = row[:10]
        content, prev, hash_ = row[10:]
        envelope = json.loads(bytes(content))
        return {
            # Which log the entry is in, and its seq there: the frozen single chain's (entries
            # recorded before the per-tenant logs) or its tenant's own log.
            "log": log,
            "seq": seq,
            "event_id": str(event_id),
            "at": at.isoformat(),
            "type": type_,
            "service": service,
            "actor_id": actor_id,
            "tenant_id": None if tenant_id is None else str(tenant_id),
            "subject_ids": list(subjects),
            "hash": bytes(hash_).hex(),
            "prev_hash": bytes(prev).hex(),
            "payload": self.cipher.decrypt_fields(envelope["payload"]),
        }

    def entries(
        self,
        tenant_id: str | None,
        *,
        types: list[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        subject_id: str | None = None,
        after: Position | None = None,
        after_seq: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], Position | None]:
        """A page of entries in the listing's order (the frozen chain, then each log in turn)
        after ``after`` (a position as this returns for the next page; ``after_seq`` alone, a
        seq of the frozen chain); the page and the position after it, or None at the end."""
        position = after if after is not None else ("frozen", NIL, after_seq)
        log, log_id, seq = position
        query = (
            f"SELECT {_COLUMNS} FROM ledger_entries_all"
            " WHERE (log, log_id, seq) > (%s, %s::uuid, %s)"
        )
        params: list[Any] = [log, str(log_id), seq]
        if tenant_id is not None:
            query += " AND tenant_id = %s"
            params.append(tenant_id)
        if types:
            query += " AND type = ANY(%s)"
            params.append(types)
        if since is not None:
            query += " AND at >= %s"
            params.append(since)
        if until is not None:
            query += " AND at < %s"
            params.append(until)
        if subject_id is not None:
            query += " AND subject_ids @> ARRAY[%s]::text[]"
            params.append(subject_id)
        query += " ORDER BY log, log_id, seq LIMIT %s"
        params.append(limit + 1)
        with self.db.transaction() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        items = [self.view(r) for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit and items else None
        return items, (None if last is None else (last[0], str(last[1]), last[2]))

    def iter_entries(self, tenant_id: str | None = None, **filters: Any) -> Iterator[dict]:
        after: Position | None = None
        while True:
            items, after = self.entries(tenant_id, after=after, limit=1000, **filters)
            yield from items
            if after is None:
                return

    def count(self) -> int:
        """Every entry: the frozen chain's and the tenant logs'."""
        with self.db.transaction() as cur:
            cur.execute("SELECT (SELECT count(*) FROM ledger) + (SELECT count(*) FROM log_entries)")
            return cur.fetchone()[0]

    # --- proofs ---------------------------------------------------------------------------------

    def prove_leaves(
        self, cur: Any, leaves: Sequence[tuple[int, bytes]], tree_size: int, root: bytes
    ) -> list[tuple[int, bool]]:
        """For each (seq, leaf hash recomputed from its content), whether it is proved included
        in the tree of ``tree_size`` with ``root``, from the stored nodes, in one round trip."""
        paths = {seq: merkle.inclusion_ranges(seq - 1, tree_size) for seq, _ in leaves}
        wanted = {(0, seq - 1) for seq in paths}
        nodes = read_nodes(cur, wanted.union(*(merkle.nodes_of(r) for r in paths.values())))
        proved = []
        for seq, leaf in leaves:
            try:
                path = merkle.hashes_of(paths[seq], nodes)
            except KeyError:
                path = []
            # The leaf read back must be the content's hash too: it is what every other
            # entry's proof is built from.
            ok = nodes.get((0, seq - 1)) == leaf and merkle.verify_inclusion(
                leaf, seq - 1, tree_size, path, root
            )
            proved.append((seq, ok))
        return proved

    def latest_checkpoint(self) -> tuple | None:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT tree_size, root_hash, signed_at, key_id, public_key, signature, note"
                " FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
            )
            return cur.fetchone()

    def proof(self, tenant_id: str | None, seq: int) -> dict[str, Any]:
        """The inclusion proof of entry ``seq`` against the latest signed checkpoint, from
        O(log n) stored nodes. Never signs one on demand: a checkpoint's tree size is the
        platform's volume, and signing at a caller's request would let it read that volume at
        a moment of its choosing. Until a checkpoint covers the entry, ``RetryLater``.
        """
        with self.db.transaction() as cur:
            cur.execute("SELECT tenant_id, leaf_hash FROM ledger WHERE seq = %s", (seq,))
            row = cur.fetchone()
        if row is None or (tenant_id is not None and str(row[0]) != tenant_id):
            raise NotFound("no such entry")
        checkpoint = self.latest_checkpoint()
        if checkpoint is None or checkpoint[0] < seq:
            raise RetryLater(
                self.checkpoint_seconds,
                "no signed checkpoint covers this entry yet; one is signed every"
                f" {self.checkpoint_seconds:g} s",
            )
        tree_size, root_hash, signed_at, key_id, public_key, signature, note = checkpoint
        ranges = merkle.inclusion_ranges(seq - 1, tree_size)
        with self.db.transaction() as cur:
            nodes = read_nodes(cur, merkle.nodes_of(ranges))
        path = merkle.hashes_of(ranges, nodes)
        return {
            "log": "frozen",
            "seq": seq,
            "leaf_index": seq - 1,
            "leaf_hash": bytes(row[1]).hex(),
            "audit_path": [node.hex() for node in path],
            "checkpoint": self._checkpoint_view(
                tree_size, bytes(root_hash), signed_at, key_id, public_key, bytes(signature), note
            ),
        }

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 6962 2.1.2, from O(log n) stored nodes."""
        ranges = merkle.consistency_ranges(old_size, new_size)
        with self.db.transaction() as cur:
            cur.execute("SELECT coalesce(max(seq), 0) FROM ledger")
            if cur.fetchone()[0] < new_size:
                raise NotFound("the ledger is not that long")
            nodes = read_nodes(cur, merkle.nodes_of(ranges))
        return merkle.hashes_of(ranges, nodes)

    @staticmethod
    def _checkpoint_view(
        tree_size, root, signed_at, key_id, public_key, signature, note
    ) -> dict[str, Any]:
        return {
            "tree_size": tree_size,
            "root_hash": root.hex(),
            "signed_at": signed_at,
            "key_id": key_id,
            "public_key": public_key,
            "signature": base64.b64encode(signature).decode(),
            # None for checkpoints signed before notes were.
            "note": note,
        }

    # --- export -------------------------------------------------------------------------------

    def export(self, batch_size: int = 5000) -> Iterator[dict[str, Any]]:
        """The ledger for an auditor's offline verifier, as records for JSON lines: a header,
        every checkpoint (ascending tree size), then the entries (ascending seq) up to the
        newest checkpoint's tree size.

        Checkpoints come first so that the verifier can check each one as its walk of the
        entries passes its size, in one pass. One snapshot is read throughout, so no
        checkpoint covers more entries than the export holds (unless rows were deleted). Entries
        after the newest checkpoint are left out: a hash chain has no key, so nothing would
        vouch for them, and the verifier refuses an export that holds any. The command line
        signs a checkpoint first so that the export reaches the head.
        """
        with self.db.connection() as conn:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute(
                    "SELECT tree_size, root_hash, signed_at, key_id, public_key, signature,"
                    " note FROM checkpoints ORDER BY tree_size"
                )
                checkpoints = cur.fetchall()
                covered = checkpoints[-1][0] if checkpoints else 0
                cur.execute("SELECT count(*) FROM ledger WHERE seq <= %s", (covered,))
                count = cur.fetchone()[0]
            yield {
                "format": EXPORT_FORMAT,
                "origin": self.origin,
                "exported_at": dt.datetime.now(dt.UTC).isoformat(),
                "checkpoints": len(checkpoints),
                "entries": count,
                "tree_size": covered,
            }
            for tree_size, root, signed_at, key_id, public_key, signature, note in checkpoints:
                yield {
                    "type": "checkpoint",
                    **self._checkpoint_view(
                        tree_size,
                        bytes(root),
                        signed_at,
                        key_id,
                        public_key,
                        bytes(signature),
                        note,
                    ),
                }
            with conn.cursor(name="ledger_export") as cur:
                cur.itersize = batch_size
                cur.execute(
                    "SELECT seq, content, prev_hash, hash FROM ledger WHERE seq <= %s ORDER BY seq",
                    (covered,),
                )
                for seq, content, prev, hash_ in cur:
                    yield {
                        "type": "entry",
                        "seq": seq,
                        # The canonical bytes are UTF-8 JSON; as text they read as such and
                        # encode back to the same bytes.
                        "content": bytes(content).decode("utf-8"),
                        "prev_hash": bytes(prev).hex(),
                        "hash": bytes(hash_).hex(),
                    }


def checkpoint_sound(
    keys: tuple[PublicKey, ...],
    origin: str,
    tree_size: int,
    root_hash: bytes,
    signed_at: str,
    public_key: str,
    signature: bytes,
    note: str | None,
) -> bool:
    """Whether a stored checkpoint is signed by a published key valid when it was signed: its
    v1 signature, and its note when it has one (which must state the same tree head).

    The published keys, never the one stored beside the checkpoint: whoever can rewrite the
    tables could store a key of their own there too.
    """
    try:
        moment = parse_time(signed_at, "signed_at")
    except NoteError:
        return False
    key = next((k for k in keys if k.public_key_b64 == public_key and k.valid_at(moment)), None)
    message = checkpoint_message(tree_size, root_hash, signed_at)
    if key is None or not verify_signature(key.public_key_b64, message, signature):
        return False
    if note is None:
        return True
    try:
        opened, _ = open_checkpoint(note, origin, keys)
    except NoteError:
        return False
    return (opened.tree_size, opened.root_hash, opened.signed_at) == (
        tree_size,
        root_hash,
        signed_at,
    )


def read_nodes(cur: Any, wanted: set[merkle.Node]) -> dict[merkle.Node, bytes]:
    """The stored hashes of ``wanted`` nodes (leaves from the ledger, the rest from the tree),
    in one round trip; a node not stored is missing from the answer."""
    leaves = [idx + 1 for level, idx in wanted if level == 0]
    inner = [(level, idx) for level, idx in wanted if level > 0]
    cur.execute(_NODES, (leaves, [n[0] for n in inner], [n[1] for n in inner]))
    return {(level, idx): bytes(hash_) for level, idx, hash_ in cur.fetchall()}
