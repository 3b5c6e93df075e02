"""Exact lookups of people: a contact by e-mail address or phone number, an agent by e-mail
address, through a blind index (``kernel.crypto.blind_index``).

The read model ``lookup_digests`` (``projections.LookupsProjection``) holds one keyed hash per
person and kind of value, under the tenant's key: never the value. A lookup normalises what it
is asked for as the index normalised what it holds, hashes it, and finds the people with that
digest. Erasing a person deletes their rows (``privacy.erase_subject``); a tenant's destruction
deletes its rows and shreds the key no digest can be computed without.
"""

from __future__ import annotations

from collections.abc import Callable

from kernel.crypto.blind_index import BlindIndex
from kernel.uow import UnitOfWork

# The kinds of value indexed, each hashed under a key of its own (so no two can be joined).
CONTACT_EMAIL = "contact_email"
CONTACT_PHONE = "contact_phone"
AGENT_EMAIL = "agent_email"

_DIGITS = frozenset("0123456789")


def normalise_email(value: str) -> str:
    """An e-mail address as compared: trimmed and lowercased (``Ada@Example.COM `` is
    ``ada@example.com``)."""
    return value.strip().lower()


def normalise_phone(value: str) -> str:
    """A phone number as compared: its digits, after a leading ``+`` if it has one
    (``+44 (20) 7946-0958`` is ``+442079460958``)."""
    text = value.strip()
    return ("+" if text.startswith("+") else "") + "".join(c for c in text if c in _DIGITS)


NORMALISE: dict[str, Callable[[str], str]] = {
    CONTACT_EMAIL: normalise_email,
    CONTACT_PHONE: normalise_phone,
    AGENT_EMAIL: normalise_email,
}


def lookup_digest(uow: UnitOfWork, tenant_id: str, kind: str, value: str) -> bytes | None:
    """The digest a lookup of ``value`` as ``kind`` searches for; None if the tenant has no
    index key (none was ever made, or the tenant was destroyed): nothing can match then."""
    index = BlindIndex(uow.cipher.keystore)
    return index.digest(tenant_id, kind, NORMALISE[kind](value), create=False)


# The condition a list query adds for one lookup (parameters: tenant id, kind, digest): people
# of the list's table (its ``id``) with that digest.
MATCHING = (
    " AND id IN (SELECT subject_id FROM lookup_digests"
    " WHERE tenant_id = %s AND kind = %s AND digest = %s)"
)
