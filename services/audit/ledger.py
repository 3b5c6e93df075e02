"""The ledger: one gap-free, hash-chained sequence of every event and access in the platform.

Appends serialise on an advisory lock (the next seq and the previous hash must be read and
written as one step); the unique ``event_id`` makes a redelivered message a no-op. Access-log
fields that identify a person (IP, user agent) are encrypted under a key of the entry's tenant
and day before hashing (``services.audit.access_keys``): the hashes cover ciphertext, so
destroying a key erases those fields and every hash, checkpoint and proof still verifies.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg2.extras

from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.envelope import Envelope
from kernel.errors import NotFound, RetryLater
from kernel.signed_note import NoteError, PublicKey, open_checkpoint, parse_time
from kernel.signing import (
    Signer,
    check_signing_key,
    checkpoint_message,
    published_keys,
    signer_from_config,
    verify_signature,
)
from services.audit import access_keys, chain, merkle, tenant_view, verification
from services.audit.access_keys import AccessLogKeys
from services.audit.offline_verify import EXPORT_FORMAT

# Payload keys that name a person whose data an entry touches.
PERSON_KEYS = (
    "agent_id",
    "contact_id",
    "requester_id",
    "assignee_id",
    "author_id",
    "billing_contact_id",
    "admin_agent_id",
)
_LEDGER_LOCK = 0x1ED6E4
# The head, its leaf and the stored nodes of the compact range of the tree up to it (largest
# first): what the next entry's nodes and a checkpoint's root are computed from, in O(log n).
_HEAD = (
    " SELECT h.seq, h.hash, h.leaf_hash,"
    " ARRAY(SELECT n.hash FROM generate_series(62, 1, -1) AS lv"
    " JOIN ledger_nodes n ON n.level = lv AND n.idx = (h.seq >> lv) - 1"
    " WHERE (h.seq >> lv) & 1 = 1 ORDER BY lv DESC)"
)
_HEAD_ROW = (
    " LEFT JOIN (SELECT seq, hash, leaf_hash FROM ledger ORDER BY seq DESC LIMIT 1) AS h ON true"
)
_NODES = (
    "SELECT 0, seq - 1, leaf_hash FROM ledger WHERE seq = ANY(%s::bigint[])"
    " UNION ALL SELECT n.level, n.idx, n.hash FROM ledger_nodes n"
    " JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)"
    " ON n.level = w.level AND n.idx = w.idx"
)
_COLUMNS = (
    "seq, event_id, type, service, tenant_id, actor_id, subject_ids, at, content, prev_hash, hash"
)


def subjects_of(envelope: Envelope) -> list[str]:
    found: set[str] = set()
    payload = envelope.payload
    for key in PERSON_KEYS:
        if payload.get(key):
            found.add(str(payload[key]))
    for key in ("subject_ids", "resource_ids"):
        for value in payload.get(key) or ():
            try:
                found.add(str(uuid.UUID(str(value))))
            except ValueError:
                continue
    if envelope.actor_id:
        try:
            found.add(str(uuid.UUID(envelope.actor_id)))
        except ValueError:
            pass
    return sorted(found)


class Ledger:
    def __init__(
        self,
        db: Database,
        cipher: FieldCipher,
        signer: Signer,
        day_seconds: int = 86400,
        checkpoint_seconds: float = 60.0,
        *,
        origin: str,
        keys: tuple[PublicKey, ...] | None = None,
    ):
        self.db = db
        self.cipher = cipher
        self.signer = signer
        self.sealer = AccessLogKeys(cipher, day_seconds)
        # The published keys checkpoints are verified against; by default the signer's alone.
        # The origin has no default: notes signed under another name would not verify.
        self.keys = keys if keys is not None else (PublicKey(signer.public_key),)
        self.origin = origin
        self.day_seconds = day_seconds
        # How often checkpoints are signed: what a caller waiting for one is told to wait.
        self.checkpoint_seconds = checkpoint_seconds

    # --- writing ------------------------------------------------------------------------------

    def record(self, envelope: Envelope) -> int | None:
        """Append one entry; None when this event is already in the ledger."""
        if envelope.type == "access_logged" and self._recorded(envelope.event_id):
            # A redelivery is checked first here, so a day destroyed since cannot change it.
            return None
        key, content_bytes = self._content(envelope)
        with self.db.transaction() as cur:
            # Lock and read the head, the tree's compact range and whether this event is in
            # already, in one round trip. Under the lock nothing else appends, so a redelivery
            # found here inserts nothing, and a seq not inserted leaves no gap.
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s);"
                + _HEAD
                + ", EXISTS (SELECT 1 FROM ledger WHERE event_id = %s)"
                " FROM (SELECT 1) AS one" + _HEAD_ROW,
                (_LEDGER_LOCK, envelope.event_id),
            )
            *head, present = cur.fetchone()
            if present:
                return None
            tree, prev = _tree_and_prev(*head)
            seq = tree.size + 1
            leaf = chain.leaf_hash(content_bytes)
            nodes = tree.append(leaf)
            row = self._row(
                envelope,
                seq,
                key,
                content_bytes,
                prev,
                chain.entry_hash(prev, seq, content_bytes),
                leaf,
            )
            # The key's row first and the nodes the entry completes after it, in one round trip
            # of plain inserts (a statement with a CTE costs more to plan than to run here).
            cur.execute(
                (f"{access_keys.REMEMBER}; " if key else "")
                + "INSERT INTO ledger (seq, event_id, type, service, tenant_id,"
                " actor_id, subject_ids, at, access_key, content, prev_hash, hash, leaf_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                + (
                    "; INSERT INTO ledger_nodes (level, idx, hash) VALUES "
                    + ", ".join(["(%s, %s, %s)"] * len(nodes))
                    if nodes
                    else ""
                ),
                (*(key or ()), *row, *(value for node in nodes for value in node)),
            )
            return seq

    def record_many(self, envelopes: Sequence[Envelope]) -> list[int | None]:
        """Append entries in order in one transaction (one lock, one commit); for each, its seq,
        or None when that event is already in the ledger (or earlier in ``envelopes``).

        All or nothing: if any entry fails, none is recorded and the error is raised, so a
        caller can fall back to ``record`` one by one to find the entry at fault.
        """
        if not envelopes:
            return []
        # Encrypted before the lock is taken, so the lock is held for the statements alone. A
        # redelivered access event is encrypted for nothing here but never written: the check
        # under the lock below skips it, so a day destroyed since cannot change its entry.
        prepared = [(e, *self._content(e)) for e in envelopes]
        with self.db.transaction() as cur:
            # The lock, the head and which of these events are already recorded, in one round
            # trip. Under the lock nothing else appends, so what is missing here is missing at
            # commit, and the chain is built without gaps; a conflict on event_id (which the
            # lock rules out) would fail the whole insert rather than leave a hole in the chain.
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s);"
                + _HEAD
                + ", ARRAY(SELECT event_id FROM ledger WHERE event_id = ANY(%s::uuid[]))"
                " FROM (SELECT 1) AS one" + _HEAD_ROW,
                (_LEDGER_LOCK, [e.event_id for e in envelopes]),
            )
            *head, present = cur.fetchone()
            seen = {uuid.UUID(str(event_id)) for event_id in present}
            tree, prev = _tree_and_prev(*head)
            seq = tree.size
            rows: list[tuple] = []
            nodes: list[tuple[int, int, bytes]] = []
            keys: set[access_keys.Row] = set()
            assigned: list[int | None] = []
            for envelope, key, content_bytes in prepared:
                if envelope.event_id in seen:
                    assigned.append(None)
                    continue
                seen.add(envelope.event_id)
                seq += 1
                entry_hash = chain.entry_hash(prev, seq, content_bytes)
                leaf = chain.leaf_hash(content_bytes)
                nodes.extend(tree.append(leaf))
                rows.append(self._row(envelope, seq, key, content_bytes, prev, entry_hash, leaf))
                if key:
                    keys.add(key)
                assigned.append(seq)
                prev = entry_hash
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
                    "INSERT INTO ledger (seq, event_id, type, service, tenant_id, actor_id,"
                    " subject_ids, at, access_key, content, prev_hash, hash, leaf_hash) VALUES %s",
                    rows,
                    page_size=len(rows),
                )
            if nodes:
                psycopg2.extras.execute_values(
                    cur,
                    "INSERT INTO ledger_nodes (level, idx, hash) VALUES %s",
                    nodes,
                    page_size=len(nodes),
                )
        return assigned

    def _content(self, envelope: Envelope) -> tuple[access_keys.Row | None, bytes]:
        """The entry's access-log key (access entries only) and canonical content, access-log
        fields encrypted under that key."""
        content = envelope.to_dict()
        key = None
        if envelope.type == "access_logged":
            content["payload"], key = self.sealer.seal(envelope, content["payload"])
        return key, chain.canonical(content)

    @staticmethod
    def _row(
        envelope: Envelope,
        seq: int,
        key: access_keys.Row | None,
        content: bytes,
        prev: bytes,
        entry_hash: bytes,
        leaf: bytes,
    ) -> tuple:
        return (
            seq,
            envelope.event_id,
            envelope.type,
            envelope.source,
            envelope.tenant_id,
            envelope.actor_id,
            subjects_of(envelope),
            envelope.occurred_at,
            None if key is None else key[1],
            content,
            prev,
            entry_hash,
            leaf,
        )

    def _recorded(self, event_id: uuid.UUID) -> bool:
        with self.db.transaction() as cur:
            cur.execute("SELECT 1 FROM ledger WHERE event_id = %s", (event_id,))
            return cur.fetchone() is not None

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the tree of every entry so far; None when nothing was added since the last.

        The root comes from the O(log n) stored nodes of the tree's compact range. The ledger's
        lock is held until the checkpoint is committed, so any snapshot that holds an entry
        signed after it also holds the checkpoint (the verification walk relies on that).
        """
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s);"
                + _HEAD
                + ", (SELECT coalesce(max(tree_size), 0) FROM checkpoints)"
                " FROM (SELECT 1) AS one" + _HEAD_ROW,
                (_LEDGER_LOCK,),
            )
            *head, last = cur.fetchone()
            tree, _ = _tree_and_prev(*head)
            if tree.size <= last:
                return None
            root = tree.root()
            now = dt.datetime.now(dt.UTC)
            # Signed only while the key is valid: a checkpoint signed outside its key's period
            # would fail every verification, so a key past its end stops signing instead.
            check_signing_key(self.signer, self.keys, now)
            signed_at = now.isoformat()
            signature = self.signer.sign(checkpoint_message(tree.size, root, signed_at))
            note = self.signer.sign_checkpoint(self.origin, tree.size, root, signed_at)
            cur.execute(
                "INSERT INTO checkpoints (tree_size, root_hash, signed_at, key_id, public_key,"
                " signature, note) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    tree.size,
                    root,
                    signed_at,
                    self.signer.key_id,
                    self.signer.public_key_b64,
                    signature,
                    note,
                ),
            )
        return self._checkpoint_view(
            tree.size,
            root,
            signed_at,
            self.signer.key_id,
            self.signer.public_key_b64,
            signature,
            note,
        )

    def signature_holds(
        self,
        tree_size: int,
        root: bytes,
        signed_at: str,
        public_key: str,
        signature: bytes,
        note: str | None,
    ) -> bool:
        """Whether a stored checkpoint is signed by a published key valid when it was signed:
        the one place that knows how a checkpoint's signatures are checked."""
        return checkpoint_sound(
            self.keys, self.origin, tree_size, root, signed_at, public_key, signature, note
        )

    def purge_access_log(
        self, before: dt.datetime, cutoffs: Mapping[uuid.UUID, dt.datetime] | None = None
    ) -> int:
        """Erase the IPs and user agents of every day that ended before its tenant's cut-off
        (``cutoffs``, else ``before``); returns the keys destroyed just now."""
        return access_keys.purge(self.db, self.cipher.keystore, before, cutoffs or {})

    def destroy_tenant_access_log(self, tenant_id: uuid.UUID) -> int:
        """Erase the IPs and user agents of every entry of a tenant's access log, for good."""
        return access_keys.destroy_tenant(self.db, self.cipher.keystore, tenant_id)

    # --- reading ------------------------------------------------------------------------------

    def view(self, row: tuple) -> dict[str, Any]:
        seq, event_id, type_, service, tenant_id, actor_id, subjects, at, content, prev, hash_ = row
        envelope = json.loads(bytes(content))
        return {
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
        after_seq: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int | None]:
        query = f"SELECT {_COLUMNS} FROM ledger WHERE seq > %s"
        params: list[Any] = [after_seq]
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
        query += " ORDER BY seq LIMIT %s"
        params.append(limit + 1)
        with self.db.transaction() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        items = [self.view(r) for r in rows[:limit]]
        return items, (items[-1]["seq"] if len(rows) > limit and items else None)

    def iter_entries(self, tenant_id: str | None = None, **filters: Any) -> Iterator[dict]:
        after = 0
        while True:
            items, _ = self.entries(tenant_id, after_seq=after, limit=1000, **filters)
            if not items:
                return
            yield from items
            after = items[-1]["seq"]

    def count(self) -> int:
        with self.db.transaction() as cur:
            cur.execute("SELECT count(*) FROM ledger")
            return cur.fetchone()[0]

    # --- verification and proofs --------------------------------------------------------------

    def verify(self, *, from_zero: bool = True, batch_size: int = 5000) -> dict[str, Any]:
        """Run the verification job now and store its result
        (``services.audit.verification``): from the first entry unless ``from_zero`` is False,
        then from where the last intact run ended. Never on a request: the endpoints read the
        stored result.
        """
        return verification.run(self, from_zero=from_zero, batch_size=batch_size)

    def scheduled_verification(self) -> dict[str, Any]:
        """The timer's run: from where the last intact run ended, and from the first entry
        when the last such run is more than a day old."""
        last = verification.last_from_zero(self.db)
        stale = last is None or dt.datetime.now(dt.UTC) - last > dt.timedelta(
            seconds=self.day_seconds
        )
        return self.verify(from_zero=stale)

    def verification_report(self) -> dict[str, Any]:
        """The last verification run's result, as stored; a run of nothing before the first."""
        return verification.latest(self.db)

    def tenant_report(
        self, tenant_id: str, limit: int = tenant_view.PROOFS_PER_CALL
    ) -> dict[str, Any]:
        """What a tenant may see of verification (``services.audit.tenant_view``): its own
        entries proved included in a signed checkpoint, at most ``limit`` more per call, and
        the platform job's verdict and time. No platform-wide count, head or tree size:
        another tenant's writes change nothing here until they are signed into a checkpoint,
        and even then only when.
        """
        return tenant_view.report(self, tenant_id, limit=limit)

    def prove_leaves(
        self, cur: Any, leaves: Sequence[tuple[int, bytes]], tree_size: int, root: bytes
    ) -> list[tuple[int, bool]]:
        """For each (seq, leaf hash recomputed from its content), whether it is proved included
        in the tree of ``tree_size`` with ``root``, from the stored nodes, in one round trip."""
        paths = {seq: merkle.inclusion_ranges(seq - 1, tree_size) for seq, _ in leaves}
        wanted = {(0, seq - 1) for seq in paths}
        nodes = _read_nodes(cur, wanted.union(*(merkle.nodes_of(r) for r in paths.values())))
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
            nodes = _read_nodes(cur, merkle.nodes_of(ranges))
        path = merkle.hashes_of(ranges, nodes)
        return {
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
            nodes = _read_nodes(cur, merkle.nodes_of(ranges))
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


def open_ledger(settings: Settings) -> Ledger:
    """The ledger on ``settings``' audit databases, outside the service (the auditor's command
    line, tests, benchmarks); the databases must exist."""
    keystore = Keystore(Database(settings.database_dsn("audit", "keys")), settings.master_keys)
    return Ledger(
        Database(settings.database_dsn("audit")),
        FieldCipher(keystore),
        signer_from_config(settings.audit_signing_key),
        settings.day_seconds,
        settings.checkpoint_seconds,
        origin=settings.audit_origin,
        keys=published_keys(settings),
    )


def _tree_and_prev(
    seq: int | None, hash_: bytes | None, leaf: bytes | None, nodes: list[bytes] | None
) -> tuple[merkle.CompactRange, bytes]:
    """The tree up to the head (from its stored compact range) and the head's hash."""
    if seq is None:
        return merkle.CompactRange(), chain.GENESIS
    hashes = [bytes(h) for h in nodes or ()]
    if seq & 1:  # an odd size ends in a lone leaf: the head's own
        hashes.append(bytes(leaf or b""))
    return merkle.CompactRange(seq, hashes), bytes(hash_ or b"")


def _read_nodes(cur: Any, wanted: set[merkle.Node]) -> dict[merkle.Node, bytes]:
    """The stored hashes of ``wanted`` nodes (leaves from the ledger, the rest from the tree),
    in one round trip; a node not stored is missing from the answer."""
    leaves = [idx + 1 for level, idx in wanted if level == 0]
    inner = [(level, idx) for level, idx in wanted if level > 0]
    cur.execute(_NODES, (leaves, [n[0] for n in inner], [n[1] for n in inner]))
    return {(level, idx): bytes(hash_) for level, idx, hash_ in cur.fetchall()}
