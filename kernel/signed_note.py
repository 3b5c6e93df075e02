"""Signed notes and transparency-log checkpoints (C2SP signed-note and tlog-checkpoint), and the
audit public key list with validity periods.

A checkpoint is a note whose text is ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` followed
by extension lines; a blank line; then one line per signature, ``— <key name>
<base64(4-byte key id || Ed25519 signature)>``. The key id is the first four bytes of
SHA-256(key name || 0x0A || 0x01 || public key), and a verifier key is written
``<name>+<hex key id>+<base64(0x01 || public key)>``. Using the standard form lets existing
transparency-log tools check the ledger's checkpoints too.

Ledgerdesk adds one extension line, ``signed-at <ISO-8601 time>``: a key's validity period is
judged by the time a checkpoint was signed, so that time must be covered by the signature.

Pure: nothing here reads settings, databases or secrets, so an auditor's verifier can use it
with the public keys alone.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ED25519 = 0x01
"""The signed-note signature type byte of Ed25519."""
SIGNED_AT = "signed-at "
"""The extension line that carries a checkpoint's time of signing."""
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_DASH = "\u2014"
_PUBLIC_KEY_SIZE = 32
_ROOT_SIZE = 32
# The spec asks verifiers to accept at least 16; a checkpoint of ours carries one.
_MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A note, checkpoint, verifier key or key list that is malformed."""


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("not base64") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_key_name(name: str) -> str:
    """``name`` if it can name a note key (non-empty, no spaces, no '+'); else NoteError."""
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteError("a key name must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian: the note key id."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def verifier_key(name: str, public_key: bytes) -> str:
    """The verifier key string ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
    check_key_name(name)
    if len(public_key) != _PUBLIC_KEY_SIZE:
        raise NoteError(f"an Ed25519 public key is {_PUBLIC_KEY_SIZE} bytes")
    return f"{name}+{key_id(name, public_key):08x}+{_b64(bytes([ED25519]) + public_key)}"


def parse_verifier_key(value: str) -> tuple[str, bytes]:
    """The key name and 32-byte Ed25519 public key of a verifier key string; NoteError if it is
    malformed, of another algorithm, or its key id does not match its name and key."""
    name, sep1, rest = value.partition("+")
    hex_id, sep2, encoded = rest.partition("+")
    if not (sep1 and sep2) or len(hex_id) != 8 or hex_id != hex_id.lower():
        raise NoteError("a verifier key looks like <name>+<8 hex digits>+<base64>")
    check_key_name(name)
    try:
        wanted = int(hex_id, 16)
    except ValueError as exc:
        raise NoteError("a verifier key's id is 8 hex digits") from exc
    raw = _b64decode(encoded)
    if len(raw) != 1 + _PUBLIC_KEY_SIZE or raw[0] != ED25519:
        raise NoteError("not an Ed25519 verifier key")
    public_key = raw[1:]
    if key_id(name, public_key) != wanted:
        raise NoteError("a verifier key's id does not match its name and key")
    return name, public_key


# --- notes --------------------------------------------------------------------------------------


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends in a newline")
    if any(c < " " and c != "\n" for c in text):
        raise NoteError("a note holds no control characters but newlines")


def sign_note(text: str, name: str, public_key: bytes, sign: Callable[[bytes], bytes]) -> str:
    """The signed note of ``text``: ``sign`` is a callable from message bytes to a 64-byte
    Ed25519 signature made by the private half of ``public_key``."""
    _check_text(text)
    check_key_name(name)
    signature = sign(text.encode("utf-8"))
    prefix = key_id(name, public_key).to_bytes(4, "big")
    return f"{text}\n{_DASH} {name} {_b64(prefix + signature)}\n"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """The text and signature lines of a signed note, without checking any signature.

    The text is separated from the signatures by the last blank line; every line after it
    must be a signature line.
    """
    if not note.endswith("\n") or "\n\n" not in note:
        raise NoteError("malformed note")
    cut = note.rindex("\n\n")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    lines = block.split("\n")[:-1]
    if not lines or len(lines) > _MAX_SIGNATURES:
        raise NoteError("malformed note")
    signatures = []
    for line in lines:
        dash, sep1, rest = line.partition(" ")
        name, sep2, encoded = rest.partition(" ")
        if dash != _DASH or not (sep1 and sep2):
            raise NoteError("malformed note")
        check_key_name(name)
        raw = _b64decode(encoded)
        if len(raw) < 5:
            raise NoteError("malformed note")
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def open_note(note: str, keys: Iterable[tuple[str, bytes]]) -> tuple[str, list[tuple[str, bytes]]]:
    """The text of ``note`` and the known keys (name, public key) whose signatures on it verify.

    As the spec says: signatures by unknown keys are ignored; a signature by a known key that
    does not verify rejects the whole note (NoteError); so does a note that no known key signed.
    """
    text, signatures = split_note(note)
    known = {(name, key_id(name, public)): (name, public) for name, public in keys}
    verified: list[tuple[str, bytes]] = []
    for sig in signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            continue
        if not verify_ed25519(key[1], text.encode("utf-8"), sig.signature):
            raise NoteError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        verified.append(key)
    if not verified:
        raise NoteError("note has no verifiable signatures")
    return text, verified


# --- checkpoints --------------------------------------------------------------------------------

_V1_HEADER = b"ledgerdesk-checkpoint-v1\n"


def short_key_id(public_key: bytes) -> str:
    """The first 16 hex digits of SHA-256(public key): the name Ledgerdesk has always shown for
    an audit key (in receipts and the first checkpoints), kept beside the note key id."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def v1_checkpoint_message(tree_size: int, root_hash: bytes, signed_at: str) -> bytes:
    """The bytes signed for a checkpoint before signed notes, one field per line.

    ``b"ledgerdesk-checkpoint-v1\\n<tree_size>\\n<root hex>\\n<signed_at>\\n"``. Checkpoints
    go on being signed this way too, beside their note, so that inclusion proofs keep the
    meaning their ``signature`` field always had. Line breaks in ``signed_at`` are refused,
    since they would let two different checkpoints encode to the same bytes.
    """
    if tree_size < 0:
        raise ValueError(f"tree_size must not be negative, not {tree_size}")
    if len(root_hash) != _ROOT_SIZE:
        raise ValueError(f"root_hash must be {_ROOT_SIZE} bytes, not {len(root_hash)}")
    if not signed_at or any(c in signed_at for c in "\r\n"):
        raise ValueError("signed_at must be a non-empty single line")
    return b"".join(
        (
            _V1_HEADER,
            str(tree_size).encode("ascii"),
            b"\n",
            root_hash.hex().encode("ascii"),
            b"\n",
            signed_at.encode("utf-8"),
            b"\n",
        )
    )


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    @property
    def signed_at(self) -> str | None:
        """The time of signing its ``signed-at`` line gives, or None without one."""
        for line in self.extensions:
            if line.startswith(SIGNED_AT):
                return line[len(SIGNED_AT) :]
        return None


def checkpoint_text(
    origin: str, tree_size: int, root_hash: bytes, signed_at: str | None = None
) -> str:
    """The note text of a checkpoint, with a ``signed-at`` extension line when given."""
    if not origin or "\n" in origin:
        raise NoteError("an origin is one non-empty line")
    if tree_size < 0:
        raise NoteError("a tree size is not negative")
    if len(root_hash) != _ROOT_SIZE:
        raise NoteError(f"a root hash is {_ROOT_SIZE} bytes")
    lines = [origin, str(tree_size), _b64(root_hash)]
    if signed_at is not None:
        if not signed_at or "\n" in signed_at:
            raise NoteError("signed_at is one non-empty line")
        lines.append(SIGNED_AT + signed_at)
    text = "\n".join(lines) + "\n"
    _check_text(text)
    return text


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from its note text (already opened); NoteError if it is not one."""
    _check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise NoteError("a checkpoint is at least three non-empty lines")
    origin, size, encoded, *extensions = lines
    if not size.isdigit() or not size.isascii() or (size != "0" and size.startswith("0")):
        raise NoteError("a checkpoint's tree size is a decimal without leading zeros")
    root = _b64decode(encoded)
    if len(root) != _ROOT_SIZE or _b64(root) != encoded:
        raise NoteError(f"a checkpoint's root hash is base64 of {_ROOT_SIZE} bytes")
    return Checkpoint(origin, int(size), root, tuple(extensions))


# --- public keys with validity periods ----------------------------------------------------------


def parse_time(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise NoteError(f"{what} is an ISO-8601 time with its offset")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise NoteError(f"{what} is an ISO-8601 time with its offset") from exc
    if moment.tzinfo is None:
        raise NoteError(f"{what} needs its offset, e.g. 2026-11-01T00:00:00+00:00")
    return moment


@dataclass(frozen=True)
class PublicKey:
    """An audit public key and when it may sign: from ``valid_from`` (inclusive) until
    ``valid_until`` (exclusive; None: no end yet)."""

    public_key: bytes
    valid_from: dt.datetime = EPOCH
    valid_until: dt.datetime | None = None

    @property
    def public_key_b64(self) -> str:
        return _b64(self.public_key)

    def valid_at(self, moment: dt.datetime) -> bool:
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)

    def as_json(self) -> dict[str, str | None]:
        return {
            "public_key": self.public_key_b64,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": None if self.valid_until is None else self.valid_until.isoformat(),
        }


def parse_key_list(raw: str | Sequence[object], origin: str | None = None) -> tuple[PublicKey, ...]:
    """The key list, from JSON text or already decoded: an array of objects, each with
    ``public_key`` (base64 of the 32-byte Ed25519 key) or ``verifier_key`` (the note form),
    ``valid_from`` and ``valid_until`` (ISO-8601 with offset; ``valid_until`` may be null).

    A verifier key's name must be ``origin`` when one is given: the key is then bound to this
    log. Errors say what is wrong and where, never repeating a whole key.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise NoteError("the key list is not JSON") from exc
    if not isinstance(raw, list) or not raw:
        raise NoteError("the key list is a non-empty JSON array")
    keys = []
    for i, item in enumerate(raw):
        where = f"key {i}"
        if not isinstance(item, dict):
            raise NoteError(f"{where} is not an object")
        unknown = set(item) - {"public_key", "verifier_key", "valid_from", "valid_until"}
        if unknown:
            raise NoteError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
        if "verifier_key" in item:
            if not isinstance(item["verifier_key"], str):
                raise NoteError(f"{where}: verifier_key is a string")
            try:
                name, public = parse_verifier_key(item["verifier_key"])
            except NoteError as exc:
                raise NoteError(f"{where}: {exc}") from exc
            if origin is not None and name != origin:
                raise NoteError(f"{where}: its verifier key names {name!r}, not {origin!r}")
            if "public_key" in item and item["public_key"] != _b64(public):
                raise NoteError(f"{where}: public_key and verifier_key differ")
        else:
            encoded = item.get("public_key")
            if not isinstance(encoded, str):
                raise NoteError(f"{where} needs public_key (base64) or verifier_key")
            try:
                public = _b64decode(encoded.strip())
            except NoteError as exc:
                raise NoteError(f"{where}: public_key is not base64") from exc
            if len(public) != _PUBLIC_KEY_SIZE:
                raise NoteError(f"{where}: public_key is base64 of {_PUBLIC_KEY_SIZE} bytes")
        if "valid_from" not in item or "valid_until" not in item:
            raise NoteError(f"{where} needs valid_from and valid_until (null: no end)")
        valid_from = parse_time(item["valid_from"], f"{where}: valid_from")
        valid_until = (
            None
            if item["valid_until"] is None
            else parse_time(item["valid_until"], f"{where}: valid_until")
        )
        if valid_until is not None and valid_until <= valid_from:
            raise NoteError(f"{where}: valid_until must be after valid_from")
        keys.append(PublicKey(public, valid_from, valid_until))
    return tuple(keys)


def current_key(keys: Sequence[PublicKey], now: dt.datetime) -> PublicKey:
    """The key that signs now: of those valid now the one valid from latest, else the newest."""
    valid = [k for k in keys if k.valid_at(now)] or list(keys)
    return max(valid, key=lambda k: k.valid_from)


def open_checkpoint(
    note: str, origin: str, keys: Sequence[PublicKey]
) -> tuple[Checkpoint, PublicKey]:
    """The checkpoint of a signed note, and the key that vouches for it.

    The note must be signed under the name ``origin`` by one of ``keys`` whose validity
    period holds the checkpoint's ``signed-at`` time, and its origin line must be ``origin``.
    Raises NoteError saying why not.
    """
    text, verified = open_note(note, [(origin, k.public_key) for k in keys])
    checkpoint = parse_checkpoint(text)
    if checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is of log {checkpoint.origin!r}, not {origin!r}")
    if checkpoint.signed_at is None:
        raise NoteError("the checkpoint has no signed-at line")
    signed_at = parse_time(checkpoint.signed_at, "signed-at")
    signers = {public for _, public in verified}
    for key in keys:
        if key.public_key in signers and key.valid_at(signed_at):
            return checkpoint, key
    raise NoteError(
        f"signed at {checkpoint.signed_at}, outside the validity period of the key that signed it"
    )
