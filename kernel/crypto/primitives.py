"""The primitives under every key and field: AES-256-GCM with a random 12-byte nonce in front of
the ciphertext, key wrapping, the associated data that keeps each use apart, and the errors of
``kernel.crypto``."""

from __future__ import annotations

import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
# Versioned prefixes keep the associated data of the five uses of AES-GCM apart.
_AAD_TENANT = "ledgerdesk/v1/tenant-key/{tenant}"
_AAD_SUBJECT = "ledgerdesk/v1/subject-key/{tenant}/{subject}"
_AAD_CHILD = "ledgerdesk/v1/child-key/{tenant}/{parent}/{subject}"
_AAD_FIELD = "ledgerdesk/v1/field/{tenant}/{subject}/{field}"
_AAD_CHUNK = "ledgerdesk/v1/chunk/{tenant}/{subject}/{blob}/{seq}"

UUIDLike = UUID | str


class CryptoError(Exception):
    """Base class of the errors raised here."""


class KeyShredded(CryptoError):
    """The subject or its tenant was erased: nothing may be encrypted for it any more."""


class TamperedCiphertext(CryptoError):
    """A ciphertext or wrapped key failed authentication, or an encrypted value is malformed.

    This is never raised for an erased key (that reads as ``ERASED``); it means the data was
    altered, moved to another field, subject or tenant, or a configured key is wrong.
    """


class MasterKeyMissing(CryptoError):
    """A tenant key is wrapped under a master key id that is not configured."""


class WrongTenant(CryptoError, ValueError):
    """A subject's key was asked for under a tenant the subject does not belong to."""


def wrap_key(kek: bytes, key: bytes, aad: bytes) -> bytes:
    """Encrypt ``key`` under the key-encryption key ``kek``; returns nonce || ciphertext."""
    return seal(kek, key, aad)


def unwrap_key(kek: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a ``wrap_key`` blob; raises ``TamperedCiphertext`` if it fails authentication."""
    key = open_sealed(kek, blob, aad)
    if len(key) != KEY_BYTES:
        raise TamperedCiphertext("a wrapped key does not hold a 256-bit key")
    return key


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a fresh random nonce, returned in front of the ciphertext."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Reverse ``seal``; raises ``TamperedCiphertext`` on any authentication failure."""
    blob = bytes(blob)
    if len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise TamperedCiphertext("ciphertext is too short to be genuine")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise TamperedCiphertext(
            "ciphertext failed authentication: it was altered or moved, or the key is wrong"
        ) from None


def tenant_key_aad(tenant_id: UUID) -> bytes:
    return _AAD_TENANT.format(tenant=tenant_id).encode()


def subject_key_aad(tenant_id: UUID, subject_id: UUID) -> bytes:
    return _AAD_SUBJECT.format(tenant=tenant_id, subject=subject_id).encode()


def child_key_aad(tenant_id: UUID, parent_id: UUID, subject_id: UUID) -> bytes:
    return _AAD_CHILD.format(tenant=tenant_id, parent=parent_id, subject=subject_id).encode()


def field_aad(tenant_id: UUID, subject_id: UUID, field: str) -> bytes:
    # Tenant and subject have a fixed textual form, so a field name holding "/" stays unambiguous.
    return _AAD_FIELD.format(tenant=tenant_id, subject=subject_id, field=field).encode()


def chunk_aad(tenant_id: UUID, subject_id: UUID, blob_id: UUID, seq: int) -> bytes:
    # A chunk is bound to its file and its place in it: moved, swapped or reordered, it fails.
    return _AAD_CHUNK.format(tenant=tenant_id, subject=subject_id, blob=blob_id, seq=seq).encode()


def as_uuid(value: UUIDLike) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
