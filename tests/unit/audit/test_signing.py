"""Unit tests for checkpoint signing: the message format, Ed25519 round trips and key parsing."""

from __future__ import annotations

import base64
import hashlib

import pytest

from kernel.signing import (
    DEV_SIGNING_SEED,
    Signer,
    checkpoint_message,
    is_dev_seed,
    signer_from_config,
    verify_signature,
)

ROOT = hashlib.sha256(b"some root").digest()
SIGNED_AT = "2026-03-01T12:00:00Z"


def test_checkpoint_message_format() -> None:
    message = checkpoint_message(42, ROOT, SIGNED_AT)
    assert message == (
        b"ledgerdesk-checkpoint-v1\n42\n" + ROOT.hex().encode() + b"\n2026-03-01T12:00:00Z\n"
    )


@pytest.mark.parametrize(
    ("tree_size", "root_hash", "signed_at"),
    [
        (-1, ROOT, SIGNED_AT),
        (1, ROOT[:31], SIGNED_AT),
        (1, ROOT, ""),
        (1, ROOT, "2026-03-01\n99"),
    ],
)
def test_checkpoint_message_refuses_ambiguous_fields(
    tree_size: int, root_hash: bytes, signed_at: str
) -> None:
    with pytest.raises(ValueError):
        checkpoint_message(tree_size, root_hash, signed_at)


def test_sign_and_verify_round_trip() -> None:
    signer = signer_from_config(DEV_SIGNING_SEED)
    message = checkpoint_message(3, ROOT, SIGNED_AT)
    signature = signer.sign(message)
    assert len(signature) == 64
    assert verify_signature(signer.public_key_b64, message, signature)


def test_tampered_message_or_signature_fails() -> None:
    signer = Signer(bytes(range(32)))
    message = checkpoint_message(3, ROOT, SIGNED_AT)
    signature = signer.sign(message)
    assert not verify_signature(
        signer.public_key_b64, checkpoint_message(4, ROOT, SIGNED_AT), signature
    )
    assert not verify_signature(signer.public_key_b64, message + b"x", signature)
    tampered = bytes([signature[0] ^ 0x01]) + signature[1:]
    assert not verify_signature(signer.public_key_b64, message, tampered)
    assert not verify_signature(signer.public_key_b64, message, signature[:-1])


def test_another_key_or_a_malformed_key_fails() -> None:
    signer = Signer(bytes(range(32)))
    other = Signer(bytes(32))
    message = checkpoint_message(3, ROOT, SIGNED_AT)
    signature = signer.sign(message)
    assert not verify_signature(other.public_key_b64, message, signature)
    assert not verify_signature("not base64!", message, signature)
    assert not verify_signature(base64.b64encode(bytes(31)).decode(), message, signature)


def test_key_id_is_stable_and_derived_from_the_public_key() -> None:
    first = Signer(bytes(range(32)))
    again = signer_from_config(base64.b64encode(bytes(range(32))).decode())
    raw = base64.b64decode(first.public_key_b64)
    assert len(raw) == 32
    assert first.key_id == again.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert first.public_key_b64 == again.public_key_b64
    assert Signer(bytes(32)).key_id != first.key_id


def test_dev_seed_is_the_readable_marked_constant() -> None:
    assert base64.b64decode(DEV_SIGNING_SEED) == b"ledgerdesk-dev-insecure-audit-k!"
    assert is_dev_seed(DEV_SIGNING_SEED)
    assert not is_dev_seed(base64.b64encode(bytes(32)).decode())
    assert not is_dev_seed("not base64!")


def test_repr_does_not_show_the_seed() -> None:
    signer = signer_from_config(DEV_SIGNING_SEED)
    assert DEV_SIGNING_SEED not in repr(signer)
    assert signer.key_id in repr(signer)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "not valid base64"),
        ("", "32 bytes, not 0 bytes"),
        (base64.b64encode(bytes(16)).decode(), "32 bytes, not 16 bytes"),
        (base64.b64encode(bytes(64)).decode(), "32 bytes, not 64 bytes"),
    ],
)
def test_bad_seed_gives_a_clear_error(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        signer_from_config(value)


def test_signer_refuses_a_seed_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Signer(b"short")
