"""The auditor's offline verifier: checks a ledger export with the published public keys alone.

    python -m services.audit.offline_verify EXPORT --keys KEYS [--origin ORIGIN]

EXPORT is the file (or the folder holding ``audit-export.jsonl``) that
``python -m services.audit.cli export`` wrote. KEYS is a file, or the JSON itself: either the
answer of ``GET /v1/audit/public-key`` saved as is (it names the origin), or a bare array of
``{"public_key" | "verifier_key", "valid_from", "valid_until"}`` as in
``LEDGERDESK_AUDIT_PUBLIC_KEYS``. ``--origin`` names the log when the keys do not.

It walks the hash chain once (``chain.first_bad_seq``), growing the Merkle tree as it goes
(``merkle.CompactRange``), and checks every checkpoint as the walk passes its tree size: its
signature by a listed key whose validity period holds the checkpoint's time of signing, its
origin, and its root against the entries. It needs no settings, database or secret.

Exit status: 0 verified; 1 tampered (the JSON on stdout names ``first_bad_seq`` and any
``bad_checkpoint``); 2 could not run (a file missing or unreadable, keys or export malformed).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kernel.signed_note import (
    NoteError,
    PublicKey,
    open_checkpoint,
    parse_key_list,
    parse_time,
    v1_checkpoint_message,
    verify_ed25519,
)
from services.audit import chain, merkle

EXPORT_FORMAT = "ledgerdesk-audit-export/1"
EXPORT_FILE = "audit-export.jsonl"
VERIFIED, TAMPERED, COULD_NOT_RUN = 0, 1, 2


class CannotRun(Exception):
    """The verifier cannot say either way: input missing, unreadable or malformed."""


# --- inputs -------------------------------------------------------------------------------------


def load_keys(source: str, origin: str | None) -> tuple[str, tuple[PublicKey, ...]]:
    """The origin and keys from a file or inline JSON (see the module's docstring)."""
    text = source
    if not source.lstrip().startswith(("[", "{")):
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CannotRun(f"cannot read the keys file {source}: {exc}") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CannotRun("the keys are not JSON") from exc
    items: Any = raw
    if isinstance(raw, dict):
        origin = origin or raw.get("origin")
        items = raw.get("keys")
    if isinstance(items, list):
        items = [
            {k: v for k, v in item.items() if k != "key_id"} if isinstance(item, dict) else item
            for item in items
        ]
    names = {
        item["verifier_key"].partition("+")[0]
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and isinstance(item.get("verifier_key"), str)
    }
    if origin is None and len(names) == 1:
        origin = names.pop()
    if not isinstance(origin, str) or not origin:
        raise CannotRun("the keys do not name the log: give --origin")
    try:
        return origin, parse_key_list(items, origin)
    except NoteError as exc:
        raise CannotRun(f"malformed keys: {exc}") from exc


def export_path(path: str) -> Path:
    found = Path(path)
    return found / EXPORT_FILE if found.is_dir() else found


@dataclass
class Export:
    header: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    entries: Iterator[chain.StoredEntry]


def _records(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CannotRun(f"line {number} is not JSON") from exc
        if not isinstance(record, dict):
            raise CannotRun(f"line {number} is not a JSON object")
        yield number, record


def _entry(number: int, record: dict[str, Any]) -> chain.StoredEntry:
    try:
        seq, content = record["seq"], record["content"]
        prev_hash, hash_ = bytes.fromhex(record["prev_hash"]), bytes.fromhex(record["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CannotRun(f"line {number} is not an entry (seq, content, prev_hash, hash)") from exc
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(content, str):
        raise CannotRun(f"line {number}: seq is a number and content a string")
    try:
        return chain.StoredEntry(seq, content.encode("utf-8"), prev_hash, hash_)
    except UnicodeEncodeError as exc:
        raise CannotRun(f"line {number}: content is not text") from exc


def read_export(stream: IO[str]) -> Export:
    """The header and checkpoints, read first; the entries, streamed as the walk asks."""
    records = _records(stream)
    first = next(records, None)
    if first is None or first[1].get("format") != EXPORT_FORMAT:
        raise CannotRun(f"not a ledger export (its first line names no {EXPORT_FORMAT})")
    checkpoints: list[dict[str, Any]] = []
    pending: tuple[int, dict[str, Any]] | None = None
    for number, record in records:
        if record.get("type") == "checkpoint":
            checkpoints.append(record)
            continue
        pending = (number, record)
        break

    def entries() -> Iterator[chain.StoredEntry]:
        rest = records if pending is None else _chain_of(pending, records)
        for number, record in rest:
            if record.get("type") != "entry":
                # Checkpoints precede the entries: one here could not be checked in one pass.
                raise CannotRun(f"line {number}: only entries may follow the first entry")
            yield _entry(number, record)

    return Export(first[1], checkpoints, entries())


def _chain_of(
    first: tuple[int, dict[str, Any]], rest: Iterator[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    yield first
    yield from rest


# --- checking -----------------------------------------------------------------------------------


def check_checkpoint(
    record: dict[str, Any], origin: str, keys: Sequence[PublicKey]
) -> tuple[int, bytes, str | None]:
    """The tree size and root a checkpoint vouches for, and None; or, when it vouches for
    nothing (bad signature, unknown key, key not valid when it was signed), its claimed size,
    root and the reason. A checkpoint with a note is checked by its note (C2SP tlog-checkpoint);
    one signed before notes by its v1 message.
    """
    try:
        size, root = int(record["tree_size"]), bytes.fromhex(record["root_hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CannotRun("a checkpoint without tree_size and root_hash") from exc
    note = record.get("note")
    if note is not None:
        if not isinstance(note, str):
            return size, root, "its note is not text"
        try:
            opened, _ = open_checkpoint(note, origin, keys)
        except NoteError as exc:
            return size, root, str(exc)
        if (opened.tree_size, opened.root_hash) != (size, root):
            return size, root, "its note states another tree head than its fields"
        return opened.tree_size, opened.root_hash, None
    try:
        signed_at = record["signed_at"]
        moment = parse_time(signed_at, "signed_at")
        message = v1_checkpoint_message(size, root, signed_at)
        signature = base64.b64decode(record["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error, NoteError) as exc:
        return size, root, f"malformed v1 checkpoint: {exc}"
    for key in keys:
        if key.public_key_b64 == record.get("public_key") and key.valid_at(moment):
            if verify_ed25519(key.public_key, message, signature):
                return size, root, None
            return size, root, "its signature does not verify"
    return size, root, "not signed by a listed key valid when it was signed"


def verify(export: Export, origin: str, keys: Sequence[PublicKey]) -> dict[str, Any]:
    """Walk the chain once; check each checkpoint as the walk passes its tree size.

    ``first_bad_seq`` is where the export stops verifying: the first row that breaks the chain,
    or, for a checkpoint that fails, the first entry after the last checkpoint that held
    (every row after it is then in doubt: a chain rewritten whole still links).
    """
    claims = sorted(
        (check_checkpoint(record, origin, keys) for record in export.checkpoints),
        key=lambda claim: claim[0],
    )
    frontier = merkle.CompactRange()
    verified_until = 0
    bad: dict[str, Any] | None = None
    position = 0
    head: dict[str, Any] | None = None

    def settle() -> bool:
        """Check the checkpoints at the current size; False once one has failed."""
        nonlocal position, verified_until, bad
        while position < len(claims) and claims[position][0] == frontier.size:
            size, root, reason = claims[position]
            if reason is None and root != frontier.root():
                reason = "its root is not the root of the entries"
            if reason is not None:
                bad = {"tree_size": size, "root_hash": root.hex(), "reason": reason}
                return False
            verified_until = size
            position += 1
        return True

    def walked() -> Iterator[chain.StoredEntry]:
        nonlocal head
        if not settle():
            return
        for entry in export.entries:
            yield entry
            # Reached only once first_bad_seq has accepted the entry: checkpoints are checked
            # over a chain that links.
            frontier.append(chain.leaf_hash(entry.content))
            head = {"seq": entry.seq, "hash": entry.hash.hex()}
            if not settle():
                return

    first_bad = chain.first_bad_seq(walked())
    if bad is None and first_bad is None and position < len(claims):
        size, root, reason = claims[position]
        bad = {
            "tree_size": size,
            "root_hash": root.hex(),
            "reason": reason or f"it covers {size} entries; the export holds {frontier.size}",
        }
    if bad is not None:
        first_bad = verified_until + 1 if first_bad is None else min(first_bad, verified_until + 1)
    return {
        "ok": first_bad is None,
        "origin": origin,
        "entries": frontier.size,
        "head": head,
        "checkpoints": len(claims),
        "verified_until": verified_until,
        "first_bad_seq": first_bad,
        "bad_checkpoint": bad,
    }


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m services.audit.offline_verify",
        description="Verify a ledger export with the audit public keys alone.",
    )
    parser.add_argument("export", help="the export file, or the folder holding it")
    parser.add_argument("--keys", required=True, help="a keys file, or the JSON itself")
    parser.add_argument("--origin", help="the log's name, when the keys do not give it")
    args = parser.parse_args(argv)
    try:
        origin, keys = load_keys(args.keys, args.origin)
        path = export_path(args.export)
        try:
            stream = path.open(encoding="utf-8")
        except OSError as exc:
            raise CannotRun(f"cannot read the export {path}: {exc}") from exc
        with stream:
            result = verify(read_export(stream), origin, keys)
    except CannotRun as exc:
        print(f"could not verify: {exc}", file=sys.stderr)
        return COULD_NOT_RUN
    except UnicodeDecodeError:
        print("could not verify: the export is not UTF-8 text", file=sys.stderr)
        return COULD_NOT_RUN
    json.dump(result, out, indent=2)
    out.write("\n")
    if not result["ok"]:
        where = f"first bad seq {result['first_bad_seq']}"
        if result["bad_checkpoint"]:
            cp = result["bad_checkpoint"]
            where += f"; bad checkpoint of tree size {cp['tree_size']}: {cp['reason']}"
        print(f"TAMPERED: {where}", file=sys.stderr)
        return TAMPERED
    print(
        f"verified: {result['entries']} entries, {result['checkpoints']} checkpoints"
        f" (signed up to entry {result['verified_until']})",
        file=sys.stderr,
    )
    return VERIFIED


if __name__ == "__main__":
    sys.exit(main())
