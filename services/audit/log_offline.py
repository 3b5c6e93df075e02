"""A tenant log's export (``ledgerdesk-audit export-log``) verified offline, with the published
keys alone: no database, no seed.

The export is JSON lines: a header (``LOG_EXPORT_FORMAT``, the origin, the tenant), then each
distinct head the platform checkpoints signed for the log (ascending size) with the checkpoint
that signed it first and the head's audit path in that checkpoint's tree of heads, then the
log's entries up to the newest such head. The walk checks each head's path and checkpoint
signature (a published key, valid when it signed), then the log's chain (``log_entry_hash``,
which binds the tenant), grows its Merkle tree from the contents, and at each signed size checks
the root and the last hash against the head. The platform's other logs are not in the export
and are not needed: a head's path is all that ties this log to the signed root.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from kernel.signed_note import NoteError, PublicKey, parse_time, verify_ed25519
from services.audit import chain, merkle

LOG_EXPORT_FORMAT = "ledgerdesk-tenant-log-export/1"


def platform_message(
    origin: str,
    number: int,
    logs: int,
    root: bytes,
    legacy_size: int,
    legacy_root: bytes,
    signed_at: str,
) -> bytes:
    """What a platform checkpoint's signature covers: a domain line, then one field a line."""
    return (
        "ledgerdesk platform checkpoint v1\n"
        f"{origin}\n{number}\n{logs}\n{root.hex()}\n{legacy_size}\n{legacy_root.hex()}\n"
        f"{signed_at}\n"
    ).encode()


def platform_signature_holds(
    keys: Sequence[PublicKey],
    origin: str,
    number: int,
    logs: int,
    root: bytes,
    legacy_size: int,
    legacy_root: bytes,
    signed_at: str,
    public_key: str,
    signature: bytes,
) -> bool:
    """Whether a platform checkpoint is signed by a published key valid when it was signed (the
    published keys, never the one stored beside it)."""
    try:
        moment = parse_time(signed_at, "signed_at")
    except NoteError:
        return False
    key = next((k for k in keys if k.public_key_b64 == public_key and k.valid_at(moment)), None)
    message = platform_message(origin, number, logs, root, legacy_size, legacy_root, signed_at)
    return key is not None and verify_ed25519(key.public_key, message, signature)


def head_holds(
    tenant_id: uuid.UUID, head: dict[str, Any], origin: str, keys: Sequence[PublicKey]
) -> str | None:
    """Why a head record does not hold (its path to the checkpoint's root, the checkpoint's
    signature), or None when it does."""
    try:
        checkpoint = head["checkpoint"]
        leaf = chain.log_head_leaf(
            tenant_id,
            int(head["size"]),
            bytes.fromhex(head["root_hash"]),
            bytes.fromhex(head["head_hash"]),
        )
        root = bytes.fromhex(checkpoint["root_hash"])
        path = [bytes.fromhex(h) for h in head["log_path"]]
        in_tree = merkle.verify_inclusion(
            leaf, int(head["log_index"]), int(checkpoint["logs"]), path, root
        )
        signed = platform_signature_holds(
            keys,
            origin,
            int(checkpoint["number"]),
            int(checkpoint["logs"]),
            root,
            int(checkpoint["legacy_size"]),
            bytes.fromhex(checkpoint["legacy_root"]),
            str(checkpoint["signed_at"]),
            str(checkpoint["public_key"]),
            base64.b64decode(checkpoint["signature"], validate=True),
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        return "malformed"
    if not in_tree:
        return "the head's path does not lead to the checkpoint's root"
    if not signed:
        return "the checkpoint is not signed by a published key valid when it was signed"
    return None


def verify_log_export(
    header: dict[str, Any],
    heads: list[dict[str, Any]],
    entries: Iterator[dict[str, Any]],
    origin: str,
    keys: Sequence[PublicKey],
) -> dict[str, Any]:
    """The verdict on a tenant log's export (see the module's docstring)."""
    tenant = uuid.UUID(str(header["tenant_id"]))
    result: dict[str, Any] = {
        "ok": False,
        "tenant_id": str(tenant),
        "entries": 0,
        "heads": len(heads),
        "verified_until": 0,
        "first_bad_seq": None,
        "bad_head": None,
    }
    sizes = [h.get("size") for h in heads]
    whole = [s for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0]
    if whole != sizes or whole != sorted(set(whole)):
        result["bad_head"] = {"size": None, "reason": "heads not in ascending size"}
        result["first_bad_seq"] = 1
        return result
    for head in heads:
        reason = head_holds(tenant, head, origin, keys)
        if reason is not None:
            result["bad_head"] = {"size": head["size"], "reason": reason}
            result["first_bad_seq"] = 1
            return result
    pending: dict[int, dict[str, Any]] = {h["size"]: h for h in heads}
    tree = merkle.CompactRange()
    prev = chain.GENESIS
    for record in entries:
        seq = record.get("seq")
        try:
            content = str(record["content"]).encode("utf-8")
            prev_hash = bytes.fromhex(record["prev_hash"])
            hash_ = bytes.fromhex(record["hash"])
        except (KeyError, ValueError):
            result["first_bad_seq"] = tree.size + 1
            return result
        if seq != tree.size + 1 or prev_hash != prev:
            result["first_bad_seq"] = tree.size + 1
            return result
        if hash_ != chain.log_entry_hash(tenant, prev, seq, content):
            result["first_bad_seq"] = seq
            return result
        tree.append(chain.leaf_hash(content))
        prev = hash_
        signed = pending.pop(seq) if seq in pending else None
        if signed is not None:
            if tree.root().hex() != signed["root_hash"] or prev.hex() != signed["head_hash"]:
                # Rewritten with fresh hashes: the signed head narrows where.
                result["first_bad_seq"] = result["verified_until"] + 1
                result["bad_head"] = {"size": seq, "reason": "the log does not match its head"}
                result["entries"] = tree.size
                return result
            result["verified_until"] = seq
    result["entries"] = tree.size
    if pending:
        # A signed size the walk never reached: the tail was cut.
        result["first_bad_seq"] = result["verified_until"] + 1
        return result
    if tree.size > result["verified_until"]:
        result["first_bad_seq"] = result["verified_until"] + 1  # entries no head vouches for
        return result
    result["ok"] = True
    return result
