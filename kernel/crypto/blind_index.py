"""Blind indexes: exact lookups without the value stored in plaintext.

A blind index row holds a keyed hash (HMAC-SHA-256) of a normalised value, e.g. a contact's
e-mail address, under a key of the tenant's. A lookup hashes what it is asked for the same way
and finds the rows with that digest; no one without the key can tell what value a digest is of,
nor confirm a guess.

The key of each kind of value (``contact_email``, ``ticket_tag``...) is derived (HKDF-SHA-256,
the tenant and the kind in its info) from the tenant's own subject key in the service's
keystore: the subject whose id is the tenant id, which tenant fields are encrypted under. So:

- digests of one tenant say nothing of another's (each has its own key), and digests of one
  kind cannot be joined with another's (an e-mail address indexed for a contact and for an
  agent gives two unrelated digests);
- the key lives in the keystore, apart from the data: a backup of the data holds digests no
  one can compute again without it;
- a tenant's destruction shreds that key (``Keystore.shred_tenant``): from then on no digest of
  the tenant can be computed, so whatever index rows a backup still holds match nothing.

A digest does not end with its subject's erasure by itself (the tenant's key stays): the
service deletes the subject's index rows in its erasure handler, and a rebuild of the index
replays erased values as ``ERASED``, which are never indexed.

Normalising a value (an e-mail address trimmed and lowercased, say) is the caller's: what
counts as the same value is a rule of the service's domain.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KEY_BYTES, KeyShredded, UUIDLike
from kernel.crypto.primitives import as_uuid as _uuid

# Versioned, like the associated data of the encryption keys (``kernel.crypto.primitives``).
_INFO = "ledgerdesk/v1/blind-index/{tenant}/{kind}"
DIGEST_BYTES = 32


class BlindIndex:
    """Keyed hashes of normalised values under the tenant's key of each kind."""

    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore

    def digest(
        self, tenant_id: UUIDLike, kind: str, value: str, create: bool = True
    ) -> bytes | None:
        """The digest of ``value`` (already normalised) as ``kind`` in the tenant's index.

        None when the tenant's key is gone (destroyed) or, with ``create=False``, when it has
        none yet: nothing of it is indexed then, so a lookup finds nothing. Writers pass
        ``create=True`` (the key is made on first use), readers ``create=False``.
        """
        found = self.digests(tenant_id, kind, (value,), create)
        return None if found is None else found[0]

    def digests(
        self, tenant_id: UUIDLike, kind: str, values: Iterable[str], create: bool = True
    ) -> list[bytes] | None:
        """``digest`` of each of ``values``, in order, with one derivation of the key."""
        key = self._key(tenant_id, kind, create)
        if key is None:
            return None
        return [hmac.new(key, value.encode(), hashlib.sha256).digest() for value in values]

    def _key(self, tenant_id: UUIDLike, kind: str, create: bool) -> bytes | None:
        if not kind or "/" in kind:
            raise ValueError(f"a blind index kind is a plain name, not {kind!r}")
        tenant = _uuid(tenant_id)
        try:
            tenant_key = self._keystore.subject_key(tenant, tenant, create=create)
        except KeyShredded:
            return None
        if tenant_key is None:
            return None
        return HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=None,
            info=_INFO.format(tenant=tenant, kind=kind).encode(),
        ).derive(tenant_key)
