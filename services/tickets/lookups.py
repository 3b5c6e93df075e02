"""Tickets by tag, though tags are stored encrypted: a blind index (``kernel.crypto.blind_index``).

A ticket's tags are words staff type freely ("vip-john-smith"), held under the ticket's own key
like its subject and body. To find the tickets with a tag without a plaintext copy, the read
model ``ticket_tag_digests`` (``projections.TagIndexProjection``) holds a keyed hash of each
tag under the tenant's key; a lookup hashes the tag it is asked for the same way. A ticket's
digests go with it: its requester's erasure and a purge of closed tickets delete them
(``privacy``), a tenant's destruction deletes the tenant's and shreds the key.
"""

from __future__ import annotations

from kernel.crypto.blind_index import BlindIndex
from kernel.uow import UnitOfWork

TICKET_TAG = "ticket_tag"


def normalise_tag(tag: str) -> str:
    """A tag as compared: trimmed, and caseless (``VIP`` finds ``vip``)."""
    return tag.strip().casefold()


def tag_digest(uow: UnitOfWork, tenant_id: str, tag: str) -> bytes | None:
    """The digest a lookup of ``tag`` searches for; None if the tenant has no index key (none
    made yet, or the tenant was destroyed): nothing can match then."""
    index = BlindIndex(uow.cipher.keystore)
    return index.digest(tenant_id, TICKET_TAG, normalise_tag(tag), create=False)
