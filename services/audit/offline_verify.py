"""The auditor's offline verifier: checks a ledger export with the published public keys alone.

    ledgerdesk-audit offline EXPORT --keys KEYS [--origin ORIGIN]
        [--allow-unsigned-tail] [--expect-size N [--expect-root HEX]]

(``python -m services.audit.offline_verify`` is the same.)

EXPORT is the file (or the folder holding ``audit-export.jsonl``) that
``python -m services.audit.cli export`` wrote. KEYS is a file, or the JSON itself: either the
answer of ``GET /v1/audit/public-key`` saved as is (it names the origin), or a bare array of
``{"public_key" | "verifier_key", "valid_from", "valid_until"}`` as in
``LEDGERDESK_AUDIT_PUBLIC_KEYS``. ``--origin`` names the log when the keys do not.

It walks the hash chain once (``chain.first_bad_seq``), growing the Merkle tree as it goes
(``merkle.CompactRange``), and checks every checkpoint as the walk passes its tree size: its
signature by a listed key whose validity period holds the checkpoint's time of signing, its
origin, and its root against the entries. It needs no settings, database or secret.

A hash chain has no key, so only entries up to the newest checkpoint that holds are verified:
an export with entries after it, or with no checkpoint of tree size > 0, is refused as not
covered (``not_covered`` counts them). ``--allow-unsigned-tail`` accepts such a tail knowingly
(still reported). ``--expect-size N`` [``--expect-root HEX``] pin a checkpoint obtained
independently (an inclusion proof's, say): an export cut short, its later checkpoints dropped,
or of another tree, is refused. Once a checkpoint has a signed note, a larger one without a
note is refused (a v1 message names no log); time of signing may not go back as the tree grows.

Exit status: 0 verified; 1 tampered or not covered (the JSON on stdout names ``first_bad_seq``,
any ``bad_checkpoint`` and why it was ``refused``); 2 could not run (a file missing or
unreadable, keys or export malformed, options that do not go together).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime as dt
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

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
from services.audit.log_offline import LOG_EXPORT_FORMAT, verify_log_export

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


@dataclass(frozen=True)
class Claim:
    """What a checkpoint vouches for: its tree size and root; ``reason`` says why it vouches
    for nothing (None when its signature holds). ``signed_at`` and ``noted`` (whether it was
    checked by a signed note) order it among the others."""

    size: int
    root: bytes
    reason: str | None
    signed_at: dt.datetime | None = None
    noted: bool = False


def check_checkpoint(record: dict[str, Any], origin: str, keys: Sequence[PublicKey]) -> Claim:
    """The tree size and root a checkpoint vouches for, with no reason; or, when it vouches for
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
            return Claim(size, root, "its note is not text", noted=True)
        try:
            opened, _ = open_checkpoint(note, origin, keys)
        except NoteError as exc:
            return Claim(size, root, str(exc), noted=True)
        if (opened.tree_size, opened.root_hash) != (size, root):
            return Claim(
                size, root, "its note states another tree head than its fields", noted=True
            )
        # open_checkpoint has parsed it already: a note without a valid signed-at fails there.
        moment = parse_time(opened.signed_at, "signed-at")
        return Claim(opened.tree_size, opened.root_hash, None, moment, noted=True)
    try:
        signed_at = record["signed_at"]
        moment = parse_time(signed_at, "signed_at")
        message = v1_checkpoint_message(size, root, signed_at)
        signature = base64.b64decode(record["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error, NoteError) as exc:
        return Claim(size, root, f"malformed v1 checkpoint: {exc}")
    for key in keys:
        if key.public_key_b64 == record.get("public_key") and key.valid_at(moment):
            if verify_ed25519(key.public_key, message, signature):
                return Claim(size, root, None, moment)
            return Claim(size, root, "its signature does not verify")
    return Claim(size, root, "not signed by a listed key valid when it was signed")


def out_of_order(
    noted: bool,
    signed_at: dt.datetime,
    noted_from: int | None,
    latest: tuple[int, dt.datetime] | None,
) -> str | None:
    """Why a checkpoint whose signature holds breaks the order honest checkpoints keep, or None:
    ``noted_from`` is the tree size of the first checkpoint with a note before it, ``latest``
    the tree size and time of the newest signing among smaller trees. Shared with the server's
    verification job."""
    if not noted and noted_from is not None:
        return (
            f"it has no signed note, yet the checkpoint of tree size {noted_from} before it has one"
        )
    if latest is not None and signed_at < latest[1]:
        return (
            f"signed at {signed_at.isoformat()}, before the checkpoint of the smaller tree size"
            f" {latest[0]}"
        )
    return None


def in_order(claims: list[Claim]) -> list[Claim]:
    """The claims by tree size, each refused that breaks the order honest checkpoints keep.

    A v1 message names no log, so a v1 checkpoint of another log signed with the same key would
    verify here: once the log signs notes, a later checkpoint without one is refused. Time of
    signing never goes back as the tree grows: a leaked retired key could otherwise sign a
    larger tree and date it inside its old period.
    """
    ordered = sorted(claims, key=lambda claim: (claim.size, not claim.noted))
    noted_from: int | None = None
    latest: tuple[int, dt.datetime] | None = None  # the newest signing among smaller trees
    out: list[Claim] = []
    for size, group in itertools.groupby(ordered, key=lambda claim: claim.size):
        newest: dt.datetime | None = None
        for claim in group:
            at = claim.signed_at
            if claim.reason is None and at is not None:
                reason = out_of_order(claim.noted, at, noted_from, latest)
                if reason is not None:
                    claim = dataclasses.replace(claim, reason=reason)
            if claim.reason is None and at is not None:
                if claim.noted and noted_from is None:
                    noted_from = size
                newest = at if newest is None else max(newest, at)
            out.append(claim)
        if newest is not None and (latest is None or newest > latest[1]):
            latest = (size, newest)
    return out


def verify(
    export: Export,
    origin: str,
    keys: Sequence[PublicKey],
    *,
    allow_unsigned_tail: bool = False,
    expect_size: int | None = None,
    expect_root: bytes | None = None,
) -> dict[str, Any]:
    """Walk the chain once; check each checkpoint as the walk passes its tree size.

    ``first_bad_seq`` is where the export stops verifying: the first row that breaks the chain,
    or, for a checkpoint that fails, the first entry after the last checkpoint that held
    (every row after it is then in doubt: a chain rewritten whole still links).

    A hash chain has no key: anyone can write entries that link. So only entries up to the
    newest checkpoint that held are verified; any after it are ``not_covered`` and fail the
    export unless ``allow_unsigned_tail``, and an export no checkpoint of size > 0 covers fails
    always. ``expect_size`` (and ``expect_root``) pin a checkpoint obtained independently: an
    export cut short, its later checkpoints dropped with its entries, falls short of it.
    """
    claims = in_order([check_checkpoint(record, origin, keys) for record in export.checkpoints])
    frontier = merkle.CompactRange()
    verified_until = 0
    bad: dict[str, Any] | None = None
    position = 0
    head: dict[str, Any] | None = None
    root_at_expected: bytes | None = None

    def settle() -> bool:
        """Check the checkpoints at the current size; False once one has failed."""
        nonlocal position, verified_until, bad, root_at_expected
        if frontier.size == expect_size:
            root_at_expected = frontier.root()
        while position < len(claims) and claims[position].size == frontier.size:
            claim = claims[position]
            reason = claim.reason
            if reason is None and claim.root != frontier.root():
                reason = "its root is not the root of the entries"
            if reason is not None:
                bad = {"tree_size": claim.size, "root_hash": claim.root.hex(), "reason": reason}
                return False
            verified_until = claim.size
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
        claim = claims[position]
        bad = {
            "tree_size": claim.size,
            "root_hash": claim.root.hex(),
            "reason": claim.reason
            or f"it covers {claim.size} entries; the export holds {frontier.size}",
        }
    if bad is not None:
        first_bad = verified_until + 1 if first_bad is None else min(first_bad, verified_until + 1)
    not_covered = frontier.size - verified_until
    refused = None
    if first_bad is None:
        refused = _refusal(
            verified_until,
            not_covered,
            allow_unsigned_tail,
            expect_size,
            expect_root,
            root_at_expected,
        )
        if refused is not None and not_covered:
            first_bad = verified_until + 1
    return {
        "ok": first_bad is None and refused is None,
        "origin": origin,
        "entries": frontier.size,
        "head": head,
        "checkpoints": len(claims),
        "verified_until": verified_until,
        "not_covered": not_covered,
        "first_bad_seq": first_bad,
        "bad_checkpoint": bad,
        "refused": refused,
    }


def _refusal(
    verified_until: int,
    not_covered: int,
    allow_unsigned_tail: bool,
    expect_size: int | None,
    expect_root: bytes | None,
    root_at_expected: bytes | None,
) -> str | None:
    """Why an export whose chain and checkpoints hold still does not verify, or None."""
    if verified_until == 0:
        return f"not covered: no checkpoint of tree size > 0 signs any of its {not_covered} entries"
    if expect_size is not None and verified_until < expect_size:
        return (
            f"cut short: its newest checkpoint covers {verified_until} entries, fewer than the"
            f" expected {expect_size}"
        )
    if expect_root is not None and root_at_expected != expect_root:
        return f"another tree: its root at tree size {expect_size} is not the expected one"
    if not_covered and not allow_unsigned_tail:
        return (
            f"not covered: {not_covered} entries after the newest checkpoint"
            f" (tree size {verified_until}) are signed by none"
        )
    return None


def main(
    argv: list[str] | None = None,
    out: IO[str] | None = None,
    prog: str = "python -m services.audit.offline_verify",
) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Verify a ledger export with the audit public keys alone.",
        epilog="exit status: 0 verified; 1 tampered or not covered; 2 could not run (usage,"
        " a file missing or malformed)",
    )
    parser.add_argument("export", help="the export file, or the folder holding it")
    parser.add_argument("--keys", required=True, help="a keys file, or the JSON itself")
    parser.add_argument("--origin", help="the log's name, when the keys do not give it")
    parser.add_argument(
        "--allow-unsigned-tail",
        action="store_true",
        help="accept entries after the newest checkpoint (no signature covers them); their"
        " count is reported",
    )
    parser.add_argument(
        "--expect-size",
        type=_positive,
        metavar="N",
        help="the tree size of a checkpoint obtained independently: fail when the export's"
        " newest verified checkpoint is smaller",
    )
    parser.add_argument(
        "--expect-root",
        type=_root,
        metavar="HEX",
        help="that checkpoint's root hash: fail when the export's root at --expect-size differs",
    )
    args = parser.parse_args(argv)
    if args.expect_root is not None and args.expect_size is None:
        parser.error("--expect-root needs --expect-size")
    try:
        origin, keys = load_keys(args.keys, args.origin)
        path = export_path(args.export)
        try:
            stream = path.open(encoding="utf-8")
        except OSError as exc:
            raise CannotRun(f"cannot read the export {path}: {exc}") from exc
        with stream:
            if _first_format(stream) == LOG_EXPORT_FORMAT:
                return _verify_log(stream, origin, keys, out)
            export = read_export(stream)
            # The bar's total is the header's count: what the export claims, shown, never
            # trusted (the walk counts for itself).
            claimed = export.header.get("entries")
            bar = tqdm(
                total=claimed if isinstance(claimed, int) else None,
                unit="entry",
                desc="verify",
                disable=not sys.stderr.isatty(),
                file=sys.stderr,
            )
            export.entries = _counted(export.entries, bar)
            with bar:
                result = verify(
                    export,
                    origin,
                    keys,
                    allow_unsigned_tail=args.allow_unsigned_tail,
                    expect_size=args.expect_size,
                    expect_root=args.expect_root,
                )
    except CannotRun as exc:
        print(f"could not verify: {exc}", file=sys.stderr)
        return COULD_NOT_RUN
    except UnicodeDecodeError:
        print("could not verify: the export is not UTF-8 text", file=sys.stderr)
        return COULD_NOT_RUN
    json.dump(result, out, indent=2)
    out.write("\n")
    if not result["ok"]:
        where = []
        if result["first_bad_seq"] is not None:
            where.append(f"first bad seq {result['first_bad_seq']}")
        if result["bad_checkpoint"]:
            cp = result["bad_checkpoint"]
            where.append(f"bad checkpoint of tree size {cp['tree_size']}: {cp['reason']}")
        if result["refused"]:
            where.append(result["refused"])
        print(f"TAMPERED: {'; '.join(where)}", file=sys.stderr)
        return TAMPERED
    tail = ""
    if result["not_covered"]:
        tail = f"; {result['not_covered']} entries after it NOT covered, accepted as asked"
    print(
        f"verified: {result['entries']} entries, {result['checkpoints']} checkpoints"
        f" (signed up to entry {result['verified_until']}{tail})",
        file=sys.stderr,
    )
    return VERIFIED


def _first_format(stream: IO[str]) -> Any:
    """The format the export's first line names (the stream is left at its start)."""
    line = stream.readline()
    stream.seek(0)
    try:
        first = json.loads(line)
    except ValueError:
        return None
    return first.get("format") if isinstance(first, dict) else None


def _verify_log(stream: IO[str], origin: str, keys: tuple[PublicKey, ...], out: IO[str]) -> int:
    """A tenant log's export (``ledgerdesk-audit export-log``; ``log_offline``), same exits."""
    records = _records(stream)
    _, header = next(records)
    if not isinstance(header.get("tenant_id"), str):
        raise CannotRun("the log export's header names no tenant_id")
    heads: list[dict[str, Any]] = []
    first_entry: list[tuple[int, dict[str, Any]]] = []
    for number, record in records:
        if record.get("type") == "head":
            heads.append(record)
            continue
        first_entry.append((number, record))
        break

    def entries() -> Iterator[dict[str, Any]]:
        for number, record in itertools.chain(first_entry, records):
            if record.get("type") != "entry":
                raise CannotRun(f"line {number}: only entries may follow the first entry")
            yield record

    try:
        result = verify_log_export(header, heads, entries(), origin, keys)
    except ValueError as exc:
        raise CannotRun(f"malformed log export: {exc}") from exc
    json.dump(result, out, indent=2)
    out.write("\n")
    if not result["ok"]:
        where = [f"first bad seq {result['first_bad_seq']}"]
        if result["bad_head"]:
            where.append(
                f"bad head of size {result['bad_head']['size']}: {result['bad_head']['reason']}"
            )
        print(f"TAMPERED: {'; '.join(where)}", file=sys.stderr)
        return TAMPERED
    print(
        f"verified: tenant {result['tenant_id']}'s log, {result['entries']} entries,"
        f" {result['heads']} signed heads",
        file=sys.stderr,
    )
    return VERIFIED


def _counted(entries: Iterator[chain.StoredEntry], bar: tqdm) -> Iterator[chain.StoredEntry]:
    for entry in entries:
        yield entry
        bar.update()


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a whole number") from exc
    if number < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return number


def _root(value: str) -> bytes:
    try:
        root = bytes.fromhex(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("hex") from exc
    if len(root) != 32:
        raise argparse.ArgumentTypeError("32 bytes of hex (a SHA-256 root)")
    return root


if __name__ == "__main__":
    sys.exit(main())
