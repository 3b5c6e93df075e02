"""The ledger: one gap-free, hash-chained sequence of every event and access in the platform.

Appends serialise on an advisory lock (the next seq and the previous hash must be read and
written as one step); the unique ``event_id`` makes a redelivered message a no-op. Access-log
fields that identify a person (IP, user agent) are encrypted under a key of the entry's tenant
and day before hashing (``services.audit.access_keys``): the hashes cover ciphertext, so
destroying a key erases those fields and every hash, checkpoint and proof still verifies.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg2.extras

from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.envelope import Envelope
from kernel.signed_note import PublicKey
from kernel.signing import (
    Signer,
    check_signing_key,
    checkpoint_message,
    published_keys,
    signer_from_config,
)
from services.audit import access_keys, chain, merkle, tenant_view, verification
from services.audit.access_keys import AccessLogKeys
from services.audit.ledger_reads import LedgerReads, checkpoint_sound
from services.audit.tenant_logs import TenantLogs

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


class Ledger(LedgerReads):
    """Appends, checkpoints, purges and the verification job; reads, proofs and the export
    are ``LedgerReads``'s."""

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
        # The per-tenant logs and platform checkpoints (issue 23), on the same keys and signer.
        self.logs = TenantLogs(self)

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

    # --- verification and proofs --------------------------------------------------------------

    def verify(
        self,
        *,
        from_zero: bool = True,
        batch_size: int = 5000,
        progress: verification.Progress | None = None,
    ) -> dict[str, Any]:
        """Run the verification job now and store its result
        (``services.audit.verification``): from the first entry unless ``from_zero`` is False,
        then from where the last intact run ended. Never on a request: the endpoints read the
        stored result. ``progress`` watches the walk (the command line's bar).
        """
        return verification.run(self, from_zero=from_zero, batch_size=batch_size, progress=progress)

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
