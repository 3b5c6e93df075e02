"""Crypto-shredding: personal fields are encrypted under a per-subject key that can be destroyed.

Three levels of keys, each AES-256-GCM with a random 12-byte nonce prepended to the ciphertext:

* master keys (from configuration, never stored) wrap one key per tenant;
* the tenant key wraps one key per subject (a person whose data the events hold);
* the subject key encrypts chosen top-level fields of event payloads.

Erasing a subject destroys its wrapped key; erasing a tenant destroys the tenant key, which makes
every subject key under it unreadable at once. Events are never rewritten: after erasure their
encrypted fields decrypt to ``ERASED``, so replays and projection rebuilds keep working.

Only top-level payload fields are encrypted and decrypted. The associated data binds the
top-level field name, so an encrypted value nested inside a dict or list is not supported: it is
neither produced by ``encrypt_fields`` nor opened by ``decrypt_fields``.

A top-level dict with a ``$enc`` key is taken for an encrypted value, so commands must not let
callers put such a dict into a payload: a malformed one makes ``decrypt_fields`` raise.

Nothing here logs key material or plaintext; log lines carry ids only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.db import Database

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
# Versioned prefixes keep the associated data of the three uses of AES-GCM apart.
_AAD_TENANT = "ledgerdesk/v1/tenant-key/{tenant}"
_AAD_SUBJECT = "ledgerdesk/v1/subject-key/{tenant}/{subject}"
_AAD_FIELD = "ledgerdesk/v1/field/{tenant}/{subject}/{field}"
_ENC_VERSION = 1
_ENC_KEYS = frozenset({"$enc", "tenant", "subject", "ct"})
# Above this many cached keys, expired entries are dropped (and, failing that, all of them).
_CACHE_LIMIT = 100_000

UUIDLike = UUID | str


class Erased(str):
    """The value of a field whose key was destroyed; JSON-dumps as the string ``"[erased]"``."""

    __slots__ = ()

    def __new__(cls) -> Erased:
        return super().__new__(cls, "[erased]")

    def __repr__(self) -> str:
        return "ERASED"

    def __reduce__(self) -> tuple[type[Erased], tuple[()]]:
        return (Erased, ())


ERASED = Erased()


def is_erased(value: Any) -> bool:
    """True only for the erased marker, not for a string that happens to read ``[erased]``."""
    return isinstance(value, Erased)


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


def field_aad(tenant_id: UUID, subject_id: UUID, field: str) -> bytes:
    # Tenant and subject have a fixed textual form, so a field name holding "/" stays unambiguous.
    return _AAD_FIELD.format(tenant=tenant_id, subject=subject_id, field=field).encode()


def _uuid(value: UUIDLike) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


@dataclass(frozen=True, slots=True)
class _Entry:
    tenant_id: UUID
    key: bytes | None  # None: the subject or its tenant was erased, which is permanent
    expires: float


class Keystore:
    """Tenant and subject keys in the keystore database, with a short in-process cache.

    The cache holds unwrapped subject keys for ``cache_seconds``. Shredding clears this
    process's entries at once; other processes may go on using a cached key until its entry
    expires, so ``cache_seconds`` bounds how long an erasure takes to reach every process.
    """

    def __init__(
        self, db: Database, master_keys: Mapping[str, bytes], cache_seconds: float = 30.0
    ) -> None:
        if not master_keys:
            raise ValueError("at least one master key is required")
        for kid, key in master_keys.items():
            if not kid or len(key) != KEY_BYTES:
                raise ValueError(f"master key {kid!r} must have an id and be 32 bytes")
        self._db = db
        self._master_keys = dict(master_keys)
        self._current_kid = next(iter(self._master_keys))
        self._cache_seconds = max(0.0, float(cache_seconds))
        self._cache: dict[UUID, _Entry] = {}
        self._lock = threading.Lock()

    @property
    def current_master_key_id(self) -> str:
        return self._current_kid

    # -- the cache -------------------------------------------------------------------------

    def _cached(self, subject_id: UUID) -> _Entry | None:
        with self._lock:
            entry = self._cache.get(subject_id)
            if entry is not None and entry.expires <= time.monotonic():
                del self._cache[subject_id]
                return None
            return entry

    def _remember(self, subject_id: UUID, tenant_id: UUID, key: bytes | None) -> None:
        if self._cache_seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache = {s: e for s, e in self._cache.items() if e.expires > now}
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
            self._cache[subject_id] = _Entry(tenant_id, key, now + self._cache_seconds)

    def _forget_tenant(self, tenant_id: UUID) -> None:
        with self._lock:
            for subject_id in [s for s, e in self._cache.items() if e.tenant_id == tenant_id]:
                del self._cache[subject_id]

    # -- keys ------------------------------------------------------------------------------

    def subject_key(
        self, tenant_id: UUIDLike, subject_id: UUIDLike, create: bool = True
    ) -> bytes | None:
        """The subject's 32-byte data key, created (with its tenant key) on first use.

        Returns None if the subject or its tenant was erased, or with ``create=False`` if no
        key exists. With ``create=True`` an erased subject or tenant raises ``KeyShredded``.
        """
        tenant, subject = _uuid(tenant_id), _uuid(subject_id)
        entry = self._cached(subject)
        if entry is None:
            entry = self._load(tenant, subject, create)
            if entry is None:
                return None
            self._remember(subject, entry.tenant_id, entry.key)
        if entry.tenant_id != tenant:
            raise WrongTenant(f"subject {subject} does not belong to tenant {tenant}")
        if entry.key is None:
            if create:
                raise KeyShredded(f"subject {subject} of tenant {tenant} was erased")
            return None
        return entry.key

    def _load(self, tenant: UUID, subject: UUID, create: bool) -> _Entry | None:
        with self._db.transaction() as cur:
            row = self._select_subject(cur, subject)
            if row is None:
                if not create:
                    state = self._select_tenant(cur, tenant)
                    if state is not None and state[1] is None:
                        return _Entry(tenant, None, 0.0)  # no subject of it can ever get a key
                    return None
                row = self._create_subject(cur, tenant, subject)
        owner, wrapped_subject, kid, wrapped_tenant = row
        if wrapped_subject is None or wrapped_tenant is None:
            return _Entry(owner, None, 0.0)
        tenant_key = self._unwrap_tenant_key(owner, kid, wrapped_tenant)
        key = unwrap_key(tenant_key, wrapped_subject, subject_key_aad(owner, subject))
        return _Entry(owner, key, 0.0)

    @staticmethod
    def _select_subject(cur, subject: UUID) -> tuple | None:
        cur.execute(
            """SELECT s.tenant_id, s.wrapped_key, t.master_key_id, t.wrapped_key
                 FROM subject_keys s JOIN tenant_keys t USING (tenant_id)
                WHERE s.subject_id = %s""",
            (subject,),
        )
        return cur.fetchone()

    @staticmethod
    def _select_tenant(cur, tenant: UUID, lock: bool = False) -> tuple | None:
        # FOR SHARE holds off a concurrent shred_tenant until this transaction ends, so a subject
        # key is never created under a tenant key that is being destroyed.
        cur.execute(
            "SELECT master_key_id, wrapped_key FROM tenant_keys WHERE tenant_id = %s"
            + (" FOR SHARE" if lock else ""),
            (tenant,),
        )
        return cur.fetchone()

    def _ensure_tenant(self, cur, tenant: UUID) -> tuple:
        row = self._select_tenant(cur, tenant, lock=True)
        if row is None:
            wrapped = wrap_key(
                self._master_keys[self._current_kid],
                AESGCM.generate_key(bit_length=256),
                tenant_key_aad(tenant),
            )
            # A concurrent first use may insert first; then ours is dropped and theirs is read.
            cur.execute(
                """INSERT INTO tenant_keys (tenant_id, master_key_id, wrapped_key)
                   VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO NOTHING""",
                (tenant, self._current_kid, wrapped),
            )
            if cur.rowcount:
                log.info("created tenant key for %s", tenant)
            row = self._select_tenant(cur, tenant, lock=True)
            if row is None:  # tenant rows are never deleted, so only a broken keystore lands here
                raise CryptoError(f"tenant key for {tenant} disappeared while being created")
        return row

    def _create_subject(self, cur, tenant: UUID, subject: UUID) -> tuple:
        kid, wrapped_tenant = self._ensure_tenant(cur, tenant)
        if wrapped_tenant is None:
            raise KeyShredded(f"tenant {tenant} was erased; subject {subject} gets no key")
        tenant_key = self._unwrap_tenant_key(tenant, kid, wrapped_tenant)
        wrapped = wrap_key(tenant_key, os.urandom(KEY_BYTES), subject_key_aad(tenant, subject))
        cur.execute(
            """INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key)
               VALUES (%s, %s, %s) ON CONFLICT (subject_id) DO NOTHING""",
            (subject, tenant, wrapped),
        )
        if cur.rowcount:
            log.info("created subject key for %s in tenant %s", subject, tenant)
        row = self._select_subject(cur, subject)
        if row is None:  # only if the winner's row vanished, which tombstones never do
            raise CryptoError(f"subject key for {subject} disappeared while being created")
        return row

    def _unwrap_tenant_key(self, tenant: UUID, kid: str, wrapped: bytes) -> bytes:
        master = self._master_keys.get(kid)
        if master is None:
            raise MasterKeyMissing(
                f"the key of tenant {tenant} is wrapped under master key {kid!r}, which is not "
                "configured; add it to LEDGERDESK_MASTER_KEY after the current key"
            )
        try:
            return unwrap_key(master, wrapped, tenant_key_aad(tenant))
        except TamperedCiphertext:
            raise TamperedCiphertext(
                f"the key of tenant {tenant} does not open under master key {kid!r}: the "
                "configured key is wrong or the keystore row was altered"
            ) from None

    # -- erasure ---------------------------------------------------------------------------

    def shred_subject(self, subject_id: UUIDLike, tenant_id: UUIDLike | None = None) -> bool:
        """Destroy the subject's key; True if a key was destroyed. Idempotent.

        With ``tenant_id``, a subject that has no key yet gets a tombstone, so none can be
        created for it later (without it there is no tenant to file the tombstone under).
        """
        subject = _uuid(subject_id)
        tenant = None if tenant_id is None else _uuid(tenant_id)
        with self._db.transaction() as cur:
            if tenant is not None:
                self._ensure_tenant(cur, tenant)
                cur.execute(
                    """INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key, shredded_at)
                       VALUES (%s, %s, NULL, now()) ON CONFLICT (subject_id) DO NOTHING""",
                    (subject, tenant),
                )
            cur.execute(
                """UPDATE subject_keys SET wrapped_key = NULL, shredded_at = now()
                    WHERE subject_id = %s AND wrapped_key IS NOT NULL RETURNING tenant_id""",
                (subject,),
            )
            destroyed = cur.fetchone() is not None
        with self._lock:
            self._cache.pop(subject, None)
        if destroyed:
            log.info("shredded subject key of %s", subject)
        return destroyed

    def shred_tenant(self, tenant_id: UUIDLike) -> int:
        """Destroy the tenant key and every subject key under it; returns the subject keys
        destroyed. A tenant without a key yet is recorded as erased, so it never gets one."""
        tenant = _uuid(tenant_id)
        with self._db.transaction() as cur:
            cur.execute(
                """INSERT INTO tenant_keys (tenant_id, master_key_id, wrapped_key, shredded_at)
                   VALUES (%s, NULL, NULL, now())
                   ON CONFLICT (tenant_id) DO UPDATE
                      SET wrapped_key = NULL,
                          shredded_at = coalesce(tenant_keys.shredded_at, now())""",
                (tenant,),
            )
            cur.execute(
                """UPDATE subject_keys SET wrapped_key = NULL, shredded_at = now()
                    WHERE tenant_id = %s AND wrapped_key IS NOT NULL""",
                (tenant,),
            )
            count = cur.rowcount
        self._forget_tenant(tenant)
        log.info("shredded tenant key of %s and %d subject keys", tenant, count)
        return count

    # -- rotation --------------------------------------------------------------------------

    def rotate_master_key(self, batch_size: int = 500) -> int:
        """Re-wrap every live tenant key still under an older master key with the current one.

        Subject keys and events are untouched. Raises ``MasterKeyMissing`` before changing
        anything if a live tenant key is wrapped under a master key id that is not configured.
        Returns the number of tenant keys re-wrapped.
        """
        current = self._master_keys[self._current_kid]
        with self._db.transaction() as cur:
            cur.execute(
                """SELECT DISTINCT master_key_id FROM tenant_keys
                    WHERE wrapped_key IS NOT NULL AND master_key_id <> %s""",
                (self._current_kid,),
            )
            unknown = sorted(k for (k,) in cur.fetchall() if k not in self._master_keys)
        if unknown:
            raise MasterKeyMissing(
                f"tenant keys are wrapped under master key ids {unknown}, which are not "
                "configured; add them to LEDGERDESK_MASTER_KEY after the current key to rotate"
            )
        older = [kid for kid in self._master_keys if kid != self._current_kid]
        rotated = 0
        while older:
            with self._db.transaction() as cur:
                cur.execute(
                    """SELECT tenant_id, master_key_id, wrapped_key FROM tenant_keys
                        WHERE wrapped_key IS NOT NULL AND master_key_id = ANY(%s)
                        ORDER BY tenant_id LIMIT %s FOR UPDATE""",
                    (older, batch_size),
                )
                rows = cur.fetchall()
                for tenant, kid, wrapped in rows:
                    key = self._unwrap_tenant_key(tenant, kid, wrapped)
                    cur.execute(
                        """UPDATE tenant_keys SET master_key_id = %s, wrapped_key = %s
                            WHERE tenant_id = %s""",
                        (self._current_kid, wrap_key(current, key, tenant_key_aad(tenant)), tenant),
                    )
            rotated += len(rows)
            if len(rows) < batch_size:
                break
        log.info("re-wrapped %d tenant keys under master key %r", rotated, self._current_kid)
        return rotated


def is_encrypted(value: Any) -> bool:
    """True for a value produced by ``FieldCipher.encrypt_fields`` (a dict holding ``$enc``)."""
    return isinstance(value, dict) and "$enc" in value


def _parse_encrypted(value: dict) -> tuple[UUID, UUID, bytes]:
    if set(value) != _ENC_KEYS or value["$enc"] != _ENC_VERSION:
        raise TamperedCiphertext("malformed encrypted value")
    try:
        tenant, subject = UUID(value["tenant"]), UUID(value["subject"])
        blob = base64.b64decode(value["ct"], validate=True)
    except (TypeError, ValueError, AttributeError, binascii.Error):
        raise TamperedCiphertext("malformed encrypted value") from None
    return tenant, subject, blob


class FieldCipher:
    """Encrypts chosen top-level payload fields under a subject key, and reads them back."""

    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore

    @property
    def keystore(self) -> Keystore:
        """The keystore, for privacy commands that shred a subject or a tenant."""
        return self._keystore

    def encrypt_fields(
        self,
        payload: dict,
        fields: Iterable[str],
        tenant_id: UUIDLike,
        subject_id: UUIDLike,
    ) -> dict:
        """A copy of ``payload`` with each named field that is present and not None encrypted.

        Raises ``KeyShredded`` if the subject or tenant was erased.
        """
        tenant, subject = _uuid(tenant_id), _uuid(subject_id)
        names = [f for f in dict.fromkeys(fields) if payload.get(f) is not None]
        result = dict(payload)
        if not names:
            return result
        for name in names:
            if is_encrypted(payload[name]) or is_erased(payload[name]):
                raise ValueError(f"field {name!r} is already encrypted or erased")
        key = self._keystore.subject_key(tenant, subject, create=True)
        if key is None:  # create=True raises instead; kept for keystores that return None
            raise KeyShredded(f"subject {subject} of tenant {tenant} was erased")
        for name in names:
            plaintext = json.dumps(payload[name], ensure_ascii=False, separators=(",", ":"))
            blob = seal(key, plaintext.encode(), field_aad(tenant, subject, name))
            result[name] = {
                "$enc": _ENC_VERSION,
                "tenant": str(tenant),
                "subject": str(subject),
                "ct": base64.b64encode(blob).decode("ascii"),
            }
        return result

    def decrypt_fields(self, payload: dict, tenant_id: UUIDLike | None = None) -> dict:
        """A copy of ``payload`` with every top-level encrypted value opened, or ``ERASED``.

        An erased key never raises. ``TamperedCiphertext`` means an altered or moved value;
        given ``tenant_id`` (the event's tenant), values claiming another tenant count as such.
        """
        expected = None if tenant_id is None else _uuid(tenant_id)
        keys: dict[UUID, bytes | None] = {}
        result = dict(payload)
        for name, value in payload.items():
            if not is_encrypted(value):
                continue
            tenant, subject, blob = _parse_encrypted(value)
            if expected is not None and tenant != expected:
                raise TamperedCiphertext(f"field {name!r} holds a value of another tenant")
            if subject not in keys:
                try:
                    keys[subject] = self._keystore.subject_key(tenant, subject, create=False)
                except WrongTenant:
                    raise TamperedCiphertext(
                        f"field {name!r} claims tenant {tenant}, which subject {subject} is not of"
                    ) from None
                if keys[subject] is None:
                    log.debug("subject %s has no key: reading its fields as erased", subject)
            key = keys[subject]
            if key is None:
                result[name] = ERASED
                continue
            plaintext = open_sealed(key, blob, field_aad(tenant, subject, name))
            result[name] = json.loads(plaintext)
        return result

    @staticmethod
    def subjects_in(payload: dict) -> set[UUID]:
        """The subjects whose encrypted fields sit at the top level of ``payload``."""
        return {_parse_encrypted(v)[1] for v in payload.values() if is_encrypted(v)}
