"""Ed25519 signatures over ledger checkpoints (tree size, Merkle root, time of signing).

A checkpoint signed by the audit service pins how long the ledger was and what it held at a
moment; anyone holding the public key can later check that the ledger still contains it.
"""

from __future__ import annotations

import base64
import datetime as dt

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kernel.config import DEV_AUDIT_SIGNING_KEY, ConfigurationError, Settings
from kernel.signed_note import (
    PublicKey,
    checkpoint_text,
    short_key_id,
    sign_note,
    v1_checkpoint_message,
)

# dev-insecure: the configuration's development seed, for local runs and tests only. Anyone can
# sign checkpoints with it; production refuses it (LEDGERDESK_AUDIT_SIGNING_KEY).
DEV_SIGNING_SEED = DEV_AUDIT_SIGNING_KEY

_SEED_SIZE = 32
_PUBLIC_KEY_SIZE = 32


def checkpoint_message(tree_size: int, root_hash: bytes, signed_at: str) -> bytes:
    """The v1 checkpoint message (``kernel.signed_note.v1_checkpoint_message``)."""
    return v1_checkpoint_message(tree_size, root_hash, signed_at)


class Signer:
    """Signs with the Ed25519 key derived from a 32-byte seed."""

    __slots__ = ("_private_key", "key_id", "public_key", "public_key_b64")

    def __init__(self, seed: bytes):
        if len(seed) != _SEED_SIZE:
            raise ValueError(f"an Ed25519 seed must be {_SEED_SIZE} bytes, not {len(seed)}")
        self._private_key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        # A short stable name for the key, so a stored checkpoint says which key signed it and a
        # rotated key can be told apart without comparing whole public keys.
        self.key_id: str = short_key_id(public)
        self.public_key: bytes = public
        self.public_key_b64: str = base64.b64encode(public).decode("ascii")

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private_key.sign(message)

    def sign_checkpoint(self, origin: str, tree_size: int, root_hash: bytes, signed_at: str) -> str:
        """The checkpoint as a signed note (C2SP tlog-checkpoint), signed under ``origin``."""
        text = checkpoint_text(origin, tree_size, root_hash, signed_at)
        return sign_note(text, origin, self.public_key, self.sign)

    def __repr__(self) -> str:
        # Never the seed: a Signer may end up in a log line or a traceback.
        return f"Signer(key_id={self.key_id!r})"


def verify_signature(public_key_b64: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by the given key.

    A malformed public key gives False rather than an error: the key usually comes from a
    stored checkpoint, and a verifier reports a bad checkpoint instead of failing on it.
    """
    try:
        public = base64.b64decode(public_key_b64, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return False
    if len(public) != _PUBLIC_KEY_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def signer_from_config(value: str) -> Signer:
    """A Signer from a configured seed: base64 of exactly 32 bytes, nothing around it.

    Not stripped: what the configuration checked is what signs (whitespace is refused there).
    Raises ValueError with a message that says what is wrong but never repeats the value,
    which is a secret.
    """
    try:
        seed = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        # Not chained: the decoder's error could quote the seed.
        raise ValueError("the audit signing seed is not valid base64") from None
    if len(seed) != _SEED_SIZE:
        raise ValueError(
            f"the audit signing seed must be base64 of {_SEED_SIZE} bytes, not {len(seed)} bytes"
        )
    return Signer(seed)


def is_dev_seed(value: str) -> bool:
    """Whether ``value`` is the development seed, so production configuration can refuse it."""
    try:
        return base64.b64decode(value, validate=True) == base64.b64decode(DEV_SIGNING_SEED)
    except ValueError:  # binascii.Error is a ValueError
        return False


_DEV_PUBLIC_KEY = Signer(base64.b64decode(DEV_SIGNING_SEED)).public_key


def published_keys(settings: Settings) -> tuple[PublicKey, ...]:
    """The audit public keys checkpoints and receipts are checked against, with their validity
    periods: ``LEDGERDESK_AUDIT_PUBLIC_KEYS``. Unset, development derives the one key from the
    signing seed, valid since the epoch; production refuses to guess, so that a process that
    publishes or checks keys (the gateway) never needs the seed."""
    if settings.audit_public_keys is not None:
        if settings.environment == "production" and any(
            key.public_key == _DEV_PUBLIC_KEY for key in settings.audit_public_keys
        ):
            # Its seed is in the repository: anyone could sign checkpoints and receipts that
            # auditors would then accept.
            raise ConfigurationError(
                "production refuses the development key in LEDGERDESK_AUDIT_PUBLIC_KEYS"
            )
        return settings.audit_public_keys
    if settings.environment == "production":
        raise ConfigurationError(
            "production needs LEDGERDESK_AUDIT_PUBLIC_KEYS (the audit public keys and when each"
            " is valid)"
        )
    return (PublicKey(signer_from_config(settings.audit_signing_key).public_key),)


def check_signing_key(
    signer: Signer, keys: tuple[PublicKey, ...], now: dt.datetime | None = None
) -> PublicKey:
    """The entry of ``keys`` under which ``signer`` signs now; ConfigurationError if none.

    A checkpoint verifies only under a key whose period holds its time of signing, so a
    signer whose key is not published, or not valid now, would sign checkpoints that fail.
    """
    moment = now or dt.datetime.now(dt.UTC)
    for key in keys:
        if key.public_key == signer.public_key and key.valid_at(moment):
            return key
    if any(key.public_key == signer.public_key for key in keys):
        raise ConfigurationError(
            f"the audit signing key {signer.key_id} is not valid now"
            " (see its period in LEDGERDESK_AUDIT_PUBLIC_KEYS)"
        )
    raise ConfigurationError(
        f"the audit signing key {signer.key_id} is not in LEDGERDESK_AUDIT_PUBLIC_KEYS"
    )
