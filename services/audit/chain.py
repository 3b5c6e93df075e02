"""The audit ledger's hash chain: canonical encoding, entry hashes and verification.

Each entry is stored with a gap-free sequence number (1, 2, 3, ...), its canonical content, the
previous entry's hash and its own hash. The hash covers the sequence number, the previous hash and
the content, so any edit to a stored row shows up when the chain is walked again.

What the chain alone cannot show is the loss of its tail, or a tail that was rewritten
consistently by someone who can write the table: a chain that ends early, or ends in
re-hashed rows, is still a valid chain. Signed checkpoints (``merkle`` and ``signing``) pin the
size and the Merkle root of the ledger at a moment, and are what catch those.

Pure functions only: the database layer reads rows into ``StoredEntry`` and calls these.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = bytes(32)
"""The ``prev_hash`` of entry 1: there is no previous entry, and a fixed value keeps one rule."""

# A prefix so that a ledger hash can never be mistaken for (or made to collide with) a hash
# computed for another purpose over the same bytes, such as a Merkle leaf.
_DOMAIN = b"ledgerdesk.ledger.v1\x00"
_HASH_SIZE = 32
_MAX_SEQ = 2**64 - 1


def _reject_non_finite(value: Any) -> None:
    # json.dumps(allow_nan=False) also refuses these, but its message does not say where the
    # value was; walking first gives a message that names the offending key.
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(
                f"audit content at {path} is {item!r}; only finite numbers are allowed"
            )
        if isinstance(item, Mapping):
            stack.extend((f"{path}.{key}", child) for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def canonical(content: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed and stored for ``content``.

    Sorted keys and no whitespace make the encoding independent of insertion order, and
    ``ensure_ascii=False`` keeps text as UTF-8 rather than escapes. NaN and infinities are
    refused with ``ValueError``: JSON has no spelling for them, so they could not round-trip
    to the same bytes.
    """
    _reject_non_finite(content)
    return json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def entry_hash(prev_hash: bytes, seq: int, content_bytes: bytes) -> bytes:
    """SHA-256 over the domain prefix, the 8-byte big-endian ``seq``, ``prev_hash`` and content.

    Binding ``seq`` makes a row's position part of what is hashed, so a row's hash is valid at
    its own position only, even among rows with equal contents, and renumbering a row breaks it.
    """
    if len(prev_hash) != _HASH_SIZE:
        raise ValueError(f"prev_hash must be {_HASH_SIZE} bytes, not {len(prev_hash)}")
    if not 1 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq must be between 1 and {_MAX_SEQ}, not {seq}")
    digest = hashlib.sha256(_DOMAIN)
    digest.update(seq.to_bytes(8, "big"))
    digest.update(prev_hash)
    digest.update(content_bytes)
    return digest.digest()


def leaf_hash(content_bytes: bytes) -> bytes:
    """RFC 6962 leaf hash, SHA-256(0x00 || content): the entry as a leaf of the checkpoint tree."""
    return hashlib.sha256(b"\x00" + content_bytes).digest()


@dataclass(frozen=True)
class StoredEntry:
    """One ledger row as read back from storage."""

    seq: int
    content: bytes
    prev_hash: bytes
    hash: bytes


def first_bad_seq(entries: Iterable[StoredEntry]) -> int | None:
    """The first sequence number at which the ledger does not verify, or None if it all does.

    ``entries`` are walked in stored order (as read ``ORDER BY seq``). Rules, checked in this
    order for each row, with ``expected`` starting at 1 and ``prev`` at ``GENESIS``:

    1. ``row.seq`` must equal ``expected``; otherwise ``expected`` is reported (a gap reports the
       missing number, a duplicate or out-of-order row reports the number that should be there).
    2. ``row.prev_hash`` must equal ``prev`` (the hash of the last verified row); otherwise
       ``row.seq`` is reported.
    3. ``row.hash`` must equal ``entry_hash(row.prev_hash, row.seq, row.content)``; otherwise
       ``row.seq`` is reported.

    The result ``s`` means rows ``1 .. s-1`` form a valid chain and row ``s`` (or its absence)
    breaks it. It is the first place a verifier can *prove* tampering, which is not always the
    row that was touched. For each kind of tampering of a ledger of ``n`` rows:

    - Modification of row ``k``'s content (or hash, or prev_hash): ``k``. If the hash of ``k``
      was also recomputed to match, row ``k`` verifies and ``k + 1`` is reported, because its
      ``prev_hash`` still names the old hash. If every row from ``k`` to ``n`` was recomputed,
      or ``k == n`` with its hash recomputed, the chain verifies (None): checkpoints catch it.
    - Deletion of row ``k < n``: ``k``, the missing number. Deletion of the last rows
      (truncation) gives None: a shorter chain is still a chain, and only a checkpoint with a
      larger tree size shows that rows are missing.
    - Insertion after the end (a row ``n + 1``) with a ``prev_hash`` or hash that is not the
      honest one: ``n + 1``. A row appended with correct hashes is indistinguishable from a
      legitimate append by the chain alone; the writer's access is what guards that.
    - Insertion in the middle by renumbering (new row at ``k``, old rows ``k .. n`` shifted to
      ``k + 1 .. n + 1``): ``k`` if the inserted row's hashes are wrong; if the inserted row was
      forged with correct hashes over row ``k - 1``, it verifies and ``k + 1`` is reported, the
      first shifted row, whose stored hashes bind it to its old number and predecessor.
      Inserting with a duplicate number instead of renumbering reports the number after the
      first copy (rule 1).
    - Reordering, i.e. swapping rows ``i < j`` (their contents and hashes, or their sequence
      numbers): ``i``. The row now at ``i`` carries a ``prev_hash`` made for position ``j``, or
      (when only contents were swapped) a hash that does not match its content.
    """
    expected = 1
    prev = GENESIS
    for row in entries:
        if row.seq != expected:
            return expected
        if row.prev_hash != prev:
            return row.seq
        if row.hash != entry_hash(row.prev_hash, row.seq, row.content):
            return row.seq
        prev = row.hash
        expected += 1
    return None


# --- the per-tenant logs (issue 23) -------------------------------------------------------------
#
# Each tenant's log has its own chain from GENESIS. Its hashes bind the log's tenant as well as
# the position, under a domain of their own, so an entry's hash is valid in its own log only: a
# row moved into another tenant's log, or a frozen-chain hash replayed, breaks there.

NIL_TENANT = uuid.UUID(int=0)
"""The log of the entries with no tenant (platform events)."""

_LOG_DOMAIN = b"ledgerdesk.tenant-log.v1\x00"
_HEAD_DOMAIN = b"ledgerdesk.log-head.v1\x00"


def log_entry_hash(tenant_id: uuid.UUID, prev_hash: bytes, seq: int, content_bytes: bytes) -> bytes:
    """SHA-256 over the log domain, the tenant's 16 bytes, the 8-byte ``seq``, ``prev_hash`` and
    the content: ``entry_hash`` for a tenant's log."""
    if len(prev_hash) != _HASH_SIZE:
        raise ValueError(f"prev_hash must be {_HASH_SIZE} bytes, not {len(prev_hash)}")
    if not 1 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq must be between 1 and {_MAX_SEQ}, not {seq}")
    digest = hashlib.sha256(_LOG_DOMAIN)
    digest.update(tenant_id.bytes)
    digest.update(seq.to_bytes(8, "big"))
    digest.update(prev_hash)
    digest.update(content_bytes)
    return digest.digest()


def log_head_leaf(tenant_id: uuid.UUID, size: int, root: bytes, head_hash: bytes) -> bytes:
    """A tenant log's head as a leaf of the platform checkpoint's tree (RFC 6962 leaf hash of
    the domain, the tenant, the size, the log's Merkle root and its chain's last hash)."""
    return leaf_hash(_HEAD_DOMAIN + tenant_id.bytes + size.to_bytes(8, "big") + root + head_hash)
