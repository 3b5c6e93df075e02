"""Keyed hashes under a tenant's key: finding a value without storing it.

An index that must find a value (a word of a ticket, say) without holding it keeps a keyed hash
of it: HMAC-SHA-256 under a key of the tenant's. Whoever holds the index alone cannot tell what
a digest is of, nor confirm a guess; a search hashes what it is asked for the same way and
compares digests.

The key of each kind of value is derived (HKDF-SHA-256, the tenant and the kind in its info)
from the tenant's own subject key in the service's keystore, the subject whose id is the tenant
id. So digests of one tenant say nothing of another's, digests of one kind cannot be joined
with another's, a backup of the data holds digests no one can compute again without the
keystore, and a tenant's destruction (``Keystore.shred_tenant``) leaves no key that could:
whatever digests remain anywhere match nothing from then on.

A digest does not end with its subject's erasure (the tenant's key stays): the service deletes
the subject's rows, and a rebuild of the index replays erased values as ``ERASED``, which are
never hashed. Normalising a value (what counts as the same word) is the caller's.
"""

from __future__ import annotations

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

    def digests(
        self, tenant_id: UUIDLike, kind: str, values: Iterable[str], create: bool = True
    ) -> list[bytes] | None:
        """The digest of each of ``values`` as ``kind`` in the tenant's index, in order.

        None when the tenant's key is gone (destroyed) or, with ``create=False``, when it has
        none yet: nothing of the tenant is indexed then, so nothing can match. Writers pass
        ``create=True`` (the key is made on first use), readers ``create=False``.
        """
        key = self.key(tenant_id, kind, create)
        if key is None:
            return None
        return [hmac.digest(key, value.encode(), "sha256") for value in values]

    def key(self, tenant_id: UUIDLike, kind: str, create: bool = True) -> bytes | None:
        """The HMAC key of ``kind`` in the tenant's index (None as for ``digests``), for a
        caller that hashes a great many values with ``hmac.digest`` itself."""
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
