"""``FieldCipher``: chosen top-level payload fields encrypted under a subject's key, read back as
``ERASED`` once that key is gone, and the stored form of an encrypted field in a read model.

Only top-level payload fields are encrypted and decrypted. The associated data binds the
top-level field name, so an encrypted value nested inside a dict or list is not supported: it is
neither produced by ``encrypt_fields`` nor opened by ``decrypt_fields``.

A top-level dict with a ``$enc`` key is taken for an encrypted value, so commands must not let
callers put such a dict into a payload: a malformed one makes ``decrypt_fields`` raise.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

import orjson

from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import (
    KeyShredded,
    TamperedCiphertext,
    UUIDLike,
    WrongTenant,
    field_aad,
    open_sealed,
    seal,
)
from kernel.crypto.primitives import as_uuid as _uuid

log = logging.getLogger(__name__)

_ENC_VERSION = 1
_ENC_KEYS = frozenset({"$enc", "tenant", "subject", "ct"})


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


# How a ciphertext read model keeps an encrypted field in a text column: its JSON, compact,
# keys sorted. A read model writes its rows as one JSON document (``stored_json``) and passes
# each encrypted field as it is (``stored_field``): PostgreSQL's ``json_populate_recordset``
# puts a nested object's text, verbatim, into a text column, so every field is encoded once,
# inside the document. Encoding each field on its own first was a third of a rebuild's work,
# and json's encoder most of the rest: orjson writes the same bytes (an encrypted field is
# ASCII) in a tenth of the time.
def stored_json(document: Any) -> str:
    """``document`` as JSON text, its encrypted fields in their stored form."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


def stored_field(value: Any) -> dict:
    """An encrypted field for a ciphertext read model's row (see ``stored_json``)."""
    if not is_encrypted(value):
        raise ValueError("only an encrypted value is kept in a ciphertext read model")
    return value


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
        parent_id: UUIDLike | None = None,
    ) -> dict:
        """A copy of ``payload`` with each named field that is present and not None encrypted.

        With ``parent_id`` the subject's key is a child of that subject's key (see
        ``Keystore.subject_key``), so erasing the parent erases these fields too. The encrypted
        value is the same either way: reading it needs no parent.

        Raises ``KeyShredded`` if the subject, its parent or its tenant was erased.
        """
        tenant, subject = _uuid(tenant_id), _uuid(subject_id)
        names = [f for f in dict.fromkeys(fields) if payload.get(f) is not None]
        result = dict(payload)
        if not names:
            return result
        for name in names:
            if is_encrypted(payload[name]) or is_erased(payload[name]):
                raise ValueError(f"field {name!r} is already encrypted or erased")
        key = self._keystore.subject_key(tenant, subject, create=True, parent_id=parent_id)
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

    def open_stored(self, tenant_id: UUIDLike, columns: Mapping[str, str | None]) -> dict[str, Any]:
        """Personal fields a ciphertext read model keeps (``stored_json`` of an event's field,
        under that field's name), opened, or ``ERASED`` once their key is gone."""
        return self.decrypt_fields(_stored_payload(columns), tenant_id=tenant_id)

    def open_stored_rows(
        self, tenant_id: UUIDLike, rows: Sequence[Mapping[str, str | None]]
    ) -> list[dict[str, Any]]:
        """``open_stored`` for each of ``rows``, the keys of all of them loaded at once."""
        payloads = [_stored_payload(columns) for columns in rows]
        self._keystore.preload(s for payload in payloads for s in self.subjects_in(payload))
        return [self.decrypt_fields(payload, tenant_id=tenant_id) for payload in payloads]

    @staticmethod
    def subjects_in(payload: dict) -> set[UUID]:
        """The subjects whose encrypted fields sit at the top level of ``payload``."""
        return {_parse_encrypted(v)[1] for v in payload.values() if is_encrypted(v)}


def _stored_payload(columns: Mapping[str, str | None]) -> dict[str, Any]:
    return {
        name: json.loads(text) if text is not None and text.startswith("{") else text
        for name, text in columns.items()
    }
