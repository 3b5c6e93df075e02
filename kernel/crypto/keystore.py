"""``Keystore``: tenant and subject keys in the keystore database, with a short in-process cache.

The keystore is a database of its own, apart from the events, so a data backup holds no usable
key (``kernel.crypto`` says how the levels of keys nest).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.crypto.keycache import Entry, KeyCache
from kernel.crypto.primitives import (
    KEY_BYTES,
    CryptoError,
    KeyShredded,
    MasterKeyMissing,
    TamperedCiphertext,
    UUIDLike,
    WrongTenant,
    child_key_aad,
    subject_key_aad,
    tenant_key_aad,
    unwrap_key,
    wrap_key,
)
from kernel.crypto.primitives import as_uuid as _uuid
from kernel.db import Database

log = logging.getLogger(__name__)

# A subject's key with what opens it: its parent's wrapped key (for a child) and its tenant's.
_SELECT_SUBJECTS = """SELECT s.subject_id, s.tenant_id, s.wrapped_key, s.parent_id, p.wrapped_key,
                             t.master_key_id, t.wrapped_key
                        FROM subject_keys s
                        JOIN tenant_keys t ON t.tenant_id = s.tenant_id
                        LEFT JOIN subject_keys p ON p.subject_id = s.parent_id"""


class Keystore:
    """Tenant and subject keys in the keystore database, with a short in-process cache.

    The cache holds unwrapped subject keys for ``cache_seconds``. Shredding clears this
    process's entries at once, a parent's children and a tenant's subjects included; other
    processes may go on using a cached key until its entry expires, so ``cache_seconds`` bounds
    how long an erasure takes to reach every process. That holds for children too: a child's
    key cached elsewhere before its parent was shredded lives at most ``cache_seconds`` longer,
    and any load after the shred finds the parent's key gone.
    """

    def __init__(
        self,
        db: Database,
        master_keys: Mapping[str, bytes],
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` times the cache (seconds, monotonic): tests hand one they move."""
        if not master_keys:
            raise ValueError("at least one master key is required")
        for kid, key in master_keys.items():
            if not kid or len(key) != KEY_BYTES:
                raise ValueError(f"master key {kid!r} must have an id and be 32 bytes")
        self._db = db
        self._master_keys = dict(master_keys)
        self._current_kid = next(iter(self._master_keys))
        self._cache = KeyCache(cache_seconds, clock)

    @property
    def current_master_key_id(self) -> str:
        return self._current_kid

    # -- keys ------------------------------------------------------------------------------

    def subject_key(
        self,
        tenant_id: UUIDLike,
        subject_id: UUIDLike,
        create: bool = True,
        parent_id: UUIDLike | None = None,
    ) -> bytes | None:
        """The subject's 32-byte data key, created (with its tenant key) on first use.

        With ``parent_id`` the subject is a child of that subject: a new key is wrapped under
        the parent's key (the parent, a top-level subject of the same tenant, gets its own key
        first if it has none), and an existing subject must have that very parent. Without
        ``parent_id`` an existing subject's key is returned whatever its parent, and a new
        subject is top-level.

        Returns None if the subject, its parent or its tenant was erased, or with
        ``create=False`` if no key exists. With ``create=True`` such an erasure raises
        ``KeyShredded``. A subject or parent of another tenant raises ``WrongTenant``; a parent
        that is itself a child, or a subject that exists with another parent (or none), raises
        ``ValueError``.
        """
        tenant, subject = _uuid(tenant_id), _uuid(subject_id)
        parent = None if parent_id is None else _uuid(parent_id)
        if parent == subject:
            raise ValueError(f"subject {subject} cannot be its own parent")
        entry = self._cache.get(subject)
        if entry is None:
            shreds_seen = self._cache.shreds_seen()
            entry = self._load(tenant, subject, create, parent)
            if entry is None:
                return None
            self._cache.put(subject, entry, shreds_seen)
        if entry.tenant_id != tenant:
            raise WrongTenant(f"subject {subject} does not belong to tenant {tenant}")
        if entry.key is None:
            if create:
                raise KeyShredded(
                    f"subject {subject} of tenant {tenant} was erased, or its parent or tenant"
                )
            return None
        if parent is not None and entry.parent_id != parent:
            raise ValueError(
                f"subject {subject} exists with parent {entry.parent_id}, not {parent}"
            )
        return entry.key

    def _load(self, tenant: UUID, subject: UUID, create: bool, parent: UUID | None) -> Entry | None:
        if create and parent is not None:
            if self._cache.enabled and self._cache.get(parent) is None:
                # Loaded (created top-level if need be) and cached for the next children: a
                # requester's tickets come in runs. A parent that cannot be used is left to the
                # full path below, which refuses the child with the right error.
                with contextlib.suppress(KeyShredded, WrongTenant, ValueError):
                    self.subject_key(tenant, parent)
            created = self._create_child(tenant, subject, parent)
            if created is not None:
                return created
        with self._db.transaction() as cur:
            row = self._select_subject(cur, subject)
            if row is None:
                if not create:
                    state = self._select_tenant(cur, tenant)
                    if state is not None and state[1] is None:
                        return Entry(tenant, None, 0.0)  # no subject of it can ever get a key
                    return None
                row = self._create_subject(cur, tenant, subject, parent)
        return self._entry_of(subject, row)

    def _entry_of(self, subject: UUID, row: tuple) -> Entry:
        """The cache entry of a subject's row as ``_select_subject`` reads it."""
        owner, wrapped_subject, owner_parent, wrapped_parent, kid, wrapped_tenant = row
        erased = wrapped_subject is None or wrapped_tenant is None
        if erased or (owner_parent is not None and wrapped_parent is None):
            return Entry(owner, None, 0.0, owner_parent)
        tenant_key = self._unwrap_tenant_key(owner, kid, wrapped_tenant)
        if owner_parent is None:
            key = unwrap_key(tenant_key, wrapped_subject, subject_key_aad(owner, subject))
        else:
            parent_key = unwrap_key(
                tenant_key, wrapped_parent, subject_key_aad(owner, owner_parent)
            )
            key = unwrap_key(
                parent_key, wrapped_subject, child_key_aad(owner, owner_parent, subject)
            )
        return Entry(owner, key, 0.0, owner_parent)

    def _create_child(self, tenant: UUID, subject: UUID, parent: UUID) -> Entry | None:
        """A new child key in one statement when the parent's key is in this process's cache;
        None when that is not so, or the child exists, or the parent or tenant was erased or
        does not fit (the full path then decides what it is and says why).

        A new ticket's key is created on every ticket, so this is on the write path: the full
        path spends seven round trips on it (begin, four reads and locks, the insert, commit).
        The cached parent key is the key itself (a key never changes, it is only destroyed), and
        the statement checks under the parent row's FOR SHARE lock that it is still there, as
        the full path does, so a shred committed elsewhere is seen here, and one that comes
        later waits for this child and then makes it unreadable with its parent.
        """
        parent_entry = self._cache.get(parent)
        if (
            parent_entry is None
            or parent_entry.key is None
            or parent_entry.tenant_id != tenant
            or parent_entry.parent_id is not None
        ):
            return None
        key = os.urandom(KEY_BYTES)
        wrapped = wrap_key(parent_entry.key, key, child_key_aad(tenant, parent, subject))
        with self._db.connection() as conn:
            # One statement in its own transaction: no BEGIN and COMMIT round trips around it.
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        """WITH parent AS (
                               SELECT p.subject_id FROM subject_keys p
                                 JOIN tenant_keys t ON t.tenant_id = p.tenant_id
                                WHERE p.subject_id = %(parent)s AND p.tenant_id = %(tenant)s
                                  AND p.parent_id IS NULL AND p.wrapped_key IS NOT NULL
                                  AND t.wrapped_key IS NOT NULL
                                  FOR SHARE OF p)
                           INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key, parent_id)
                           SELECT %(subject)s, %(tenant)s, %(wrapped)s, subject_id FROM parent
                           ON CONFLICT (subject_id) DO NOTHING""",
                        {
                            "parent": parent,
                            "tenant": tenant,
                            "subject": subject,
                            "wrapped": wrapped,
                        },
                    )
                    inserted = cur.rowcount == 1
            finally:
                if not conn.closed:
                    conn.autocommit = False
        if not inserted:
            return None
        log.debug("created subject key for %s in tenant %s", subject, tenant)
        return Entry(tenant, key, 0.0, parent)

    def preload(self, subject_ids: Iterable[UUIDLike]) -> None:
        """Load the keys of the subjects this process has not cached, in one round trip, so
        opening a page of rows (each under its own key) costs one query, not one per row.
        Subjects without a key are left to ``subject_key``; nothing is created."""
        if not self._cache.enabled:
            return
        missing = {s for s in map(_uuid, subject_ids) if self._cache.get(s) is None}
        if not missing:
            return
        shreds_seen = self._cache.shreds_seen()
        with self._db.transaction() as cur:
            cur.execute(
                _SELECT_SUBJECTS + " WHERE s.subject_id = ANY(%s::uuid[])",
                ([str(s) for s in missing],),
            )
            rows = cur.fetchall()
        for subject, *row in rows:
            self._cache.put(subject, self._entry_of(subject, tuple(row)), shreds_seen)

    @staticmethod
    def _select_subject(cur, subject: UUID) -> tuple | None:
        cur.execute(_SELECT_SUBJECTS + " WHERE s.subject_id = %s", (subject,))
        row = cur.fetchone()
        return None if row is None else row[1:]

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

    def _create_subject(self, cur, tenant: UUID, subject: UUID, parent: UUID | None) -> tuple:
        kid, wrapped_tenant = self._ensure_tenant(cur, tenant)
        if wrapped_tenant is None:
            raise KeyShredded(f"tenant {tenant} was erased; subject {subject} gets no key")
        tenant_key = self._unwrap_tenant_key(tenant, kid, wrapped_tenant)
        if parent is None:
            wrapped = wrap_key(tenant_key, os.urandom(KEY_BYTES), subject_key_aad(tenant, subject))
        else:
            parent_key = self._lock_parent(cur, tenant, tenant_key, parent, subject)
            wrapped = wrap_key(
                parent_key, os.urandom(KEY_BYTES), child_key_aad(tenant, parent, subject)
            )
        cur.execute(
            """INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key, parent_id)
               VALUES (%s, %s, %s, %s) ON CONFLICT (subject_id) DO NOTHING""",
            (subject, tenant, wrapped, parent),
        )
        if cur.rowcount:
            log.debug("created subject key for %s in tenant %s", subject, tenant)
        row = self._select_subject(cur, subject)
        if row is None:  # only if the winner's row vanished, which tombstones never do
            raise CryptoError(f"subject key for {subject} disappeared while being created")
        return row

    def _lock_parent(
        self, cur, tenant: UUID, tenant_key: bytes, parent: UUID, child: UUID
    ) -> bytes:
        """The parent's key, created top-level if it has none, its row locked until commit.

        FOR SHARE conflicts with the UPDATE that shreds the parent (the foreign key's own KEY
        SHARE lock does not), so a shred either waits for this child to be committed, and then
        makes it unreadable, or commits first and is seen here: a child is never created under
        a parent key that is being destroyed.
        """
        select = (
            "SELECT tenant_id, parent_id, wrapped_key FROM subject_keys"
            " WHERE subject_id = %s FOR SHARE"
        )
        cur.execute(select, (parent,))
        row = cur.fetchone()
        if row is None:
            wrapped = wrap_key(tenant_key, os.urandom(KEY_BYTES), subject_key_aad(tenant, parent))
            cur.execute(
                """INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key)
                   VALUES (%s, %s, %s) ON CONFLICT (subject_id) DO NOTHING""",
                (parent, tenant, wrapped),
            )
            if cur.rowcount:
                log.debug("created subject key for %s in tenant %s", parent, tenant)
            cur.execute(select, (parent,))
            row = cur.fetchone()
            if row is None:  # tombstones are never deleted either
                raise CryptoError(f"subject key for {parent} disappeared while being created")
        owner, grandparent, wrapped_parent = row
        if owner != tenant:
            raise WrongTenant(f"subject {parent} does not belong to tenant {tenant}")
        if grandparent is not None:
            raise ValueError(
                f"subject {parent} is itself a child: subject keys nest one level only"
            )
        if wrapped_parent is None:
            raise KeyShredded(f"subject {parent} was erased; its child {child} gets no key")
        return unwrap_key(tenant_key, wrapped_parent, subject_key_aad(tenant, parent))

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
        Shredding a parent makes all its children unreadable in the same one-row update: their
        keys are wrapped under the parent's, which is gone; their rows are left as they are.
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
        self._cache.forget_subjects({subject})
        if destroyed:
            log.info("shredded subject key of %s", subject)
        return destroyed

    def shred_subjects(self, subject_ids: Iterable[UUIDLike], tenant_id: UUIDLike) -> int:
        """Destroy the keys of many subjects of one tenant at once; returns how many keys were
        destroyed. Idempotent, and all or nothing.

        Like ``shred_subject`` with a tenant: ids that have no key yet get a tombstone, and a
        parent's children become unreadable with it. An id of another tenant raises
        ``WrongTenant`` before anything is destroyed.
        """
        tenant = _uuid(tenant_id)
        subjects = sorted({_uuid(s) for s in subject_ids})
        if not subjects:
            return 0
        # Rows are locked in id order, so two bulk shreds over the same ids cannot deadlock.
        destroy = """UPDATE subject_keys SET wrapped_key = NULL, shredded_at = now()
                      WHERE subject_id IN (
                            SELECT subject_id FROM subject_keys
                             WHERE subject_id = ANY(%s) AND tenant_id = %s
                               AND wrapped_key IS NOT NULL
                             ORDER BY subject_id FOR UPDATE)"""
        with self._db.transaction() as cur:
            self._ensure_tenant(cur, tenant)
            cur.execute(
                "SELECT subject_id FROM subject_keys"
                " WHERE subject_id = ANY(%s) AND tenant_id <> %s LIMIT 1",
                (subjects, tenant),
            )
            stranger = cur.fetchone()
            if stranger is not None:
                raise WrongTenant(f"subject {stranger[0]} does not belong to tenant {tenant}")
            # Existing keys go first, before any tombstone is inserted: a child being created
            # holds its parent's row FOR SHARE and then inserts its own row, so taking the
            # parent's lock before a tombstone that child would wait on avoids a deadlock.
            cur.execute(destroy, (subjects, tenant))
            count = cur.rowcount
            cur.execute(
                """INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key, shredded_at)
                   SELECT id, %s, NULL, now() FROM unnest(%s::uuid[]) AS id ORDER BY id
                   ON CONFLICT (subject_id) DO NOTHING""",
                (tenant, subjects),
            )
            # A key committed by a concurrent first use between the two statements above made
            # its tombstone a no-op; this statement's fresh snapshot sees it and destroys it.
            cur.execute(destroy, (subjects, tenant))
            count += cur.rowcount
        self._cache.forget_subjects(set(subjects))
        log.info("shredded %d subject keys of tenant %s", count, tenant)
        return count

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
        self._cache.forget_tenant(tenant)
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
