"""Audit public keys configured as production has them (``LEDGERDESK_AUDIT_PUBLIC_KEYS``): the
key signing now, and the next one announced ahead of its period."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# The next key, published ahead of its period, as an operator announces a rotation.
NEXT = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
NEXT_FROM = "2099-01-01T00:00:00+00:00"
EPOCH = "1970-01-01T00:00:00+00:00"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def configured_keys(seed: str) -> list[dict[str, Any]]:
    """The key of ``seed`` signing until the next one's period, and the next one."""
    current = raw_public(Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed)))
    return [
        {"public_key": b64(current), "valid_from": EPOCH, "valid_until": NEXT_FROM},
        {"public_key": b64(raw_public(NEXT)), "valid_from": NEXT_FROM, "valid_until": None},
    ]
