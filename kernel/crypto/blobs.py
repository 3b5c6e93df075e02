"""``BlobCipher``: the chunks of a file (an attachment) sealed under a subject's key.

Fields (``kernel.crypto.fields``) are JSON values inside payloads; a file is bytes, too large
for one value, stored as chunks in rows of their own. Each chunk is AES-256-GCM under the
subject's key (for an attachment, its ticket's, a child of the requester's), its associated data
naming tenant, subject, file and position (``primitives.chunk_aad``): a chunk moved to another
file or place fails to open. Erasing the subject (or its parent, or its tenant) leaves every
chunk unreadable, as it leaves the subject's fields; the rows are deleted as well, so no
ciphertext lingers for a key that a backup of the keystore might still hold.
"""

from __future__ import annotations

from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded, UUIDLike, chunk_aad, open_sealed, seal
from kernel.crypto.primitives import as_uuid as _uuid


class BlobCipher:
    """Seals and opens the chunks of files, each under the key of the subject it belongs to."""

    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore

    def seal_chunk(
        self,
        tenant_id: UUIDLike,
        subject_id: UUIDLike,
        blob_id: UUIDLike,
        seq: int,
        data: bytes,
        parent_id: UUIDLike | None = None,
    ) -> bytes:
        """``data`` sealed as chunk ``seq`` of file ``blob_id``; raises ``KeyShredded`` once
        the subject, its parent or its tenant is erased."""
        tenant, subject = _uuid(tenant_id), _uuid(subject_id)
        key = self._keystore.subject_key(tenant, subject, create=True, parent_id=parent_id)
        if key is None:
            raise KeyShredded(f"subject {subject} of tenant {tenant} was erased")
        return seal(key, data, chunk_aad(tenant, subject, _uuid(blob_id), seq))

    def open_chunk(
        self, tenant_id: UUIDLike, subject_id: UUIDLike, blob_id: UUIDLike, seq: int, sealed: bytes
    ) -> bytes | None:
        """The chunk's bytes, or None once the subject's key is gone. ``TamperedCiphertext``
        for a chunk altered or moved."""
        tenant, subject = _uuid(tenant_id), _uuid(subject_id)
        key = self._keystore.subject_key(tenant, subject, create=False)
        if key is None:
            return None
        return open_sealed(key, sealed, chunk_aad(tenant, subject, _uuid(blob_id), seq))
