"""Retention's free text under the tenant's key.

A request keeps what the filing admin checked of the requester's identity and why another admin
approved or denied it: free text that may name anyone. Retention is where requests are tracked,
so it cannot wait for its own answer to a destruction: it shreds the tenant's key in its own
keystore when the tenant's destruction completes (every announced service has answered), and
again on every start (a keystore restored from a backup, tenants destroyed before this was so).
"""

from __future__ import annotations

import logging
from typing import Any

from kernel.crypto.fields import FieldCipher, stored_json
from kernel.crypto.primitives import KeyShredded
from kernel.uow import UnitOfWork

log = logging.getLogger(__name__)

FIELDS = ("identity_check", "decision_reason")


def seal(cipher: FieldCipher, tenant_id: Any, field: str, text: str | None) -> str | None:
    """``text`` encrypted under the tenant's own key, as a sealed column keeps it."""
    if text is None:
        return None
    encrypted = cipher.encrypt_fields({field: text}, (field,), tenant_id, subject_id=tenant_id)
    return stored_json(encrypted[field])


def opened(cipher: FieldCipher, tenant_id: Any, field: str, sealed: str | None) -> str | None:
    """A sealed column's text, or ``ERASED`` once the tenant's key is gone."""
    if sealed is None:
        return None
    return cipher.open_stored(tenant_id, {field: sealed})[field]


def seal_legacy(uow: UnitOfWork, limit: int = 500) -> int:
    """Move plaintext free text (rows written before it was sealed, or by an older replica)
    into the sealed columns; returns the rows sealed. A tenant whose key is gone loses it."""
    uow.cur.execute(
        "SELECT id, tenant_id, identity_check, decision_reason FROM requests"
        " WHERE identity_check IS NOT NULL OR decision_reason IS NOT NULL"
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    rows = uow.cur.fetchall()
    for request_id, tenant_id, identity_check, reason in rows:
        try:
            sealed = [
                seal(uow.cipher, tenant_id, field, text)
                for field, text in zip(FIELDS, (identity_check, reason), strict=True)
            ]
        except KeyShredded:
            sealed = [None, None]  # the tenant was destroyed: nothing of its text is kept
        uow.cur.execute(
            "UPDATE requests SET identity_check = NULL, decision_reason = NULL,"
            " identity_check_sealed = coalesce(%s, identity_check_sealed),"
            " decision_reason_sealed = coalesce(%s, decision_reason_sealed) WHERE id = %s",
            (*sealed, request_id),
        )
    if rows:
        log.info("sealed the free text of %d requests under their tenants' keys", len(rows))
    return len(rows)


def destroy_tenant(uow: UnitOfWork, tenant_id: Any) -> None:
    """Retention's own part of a tenant's destruction: its free text becomes unreadable."""
    uow.cipher.keystore.shred_tenant(tenant_id)


def reapply_destructions(uow: UnitOfWork) -> int:
    """Shred again the keys of every tenant whose destruction completed (idempotent): a
    keystore restored from a backup, or tenants destroyed before retention held their free text
    under their keys. Returns how many tenants."""
    uow.cur.execute(
        "SELECT DISTINCT tenant_id FROM requests WHERE type = 'destruction'"
        " AND status = 'completed'"
    )
    tenants = [row[0] for row in uow.cur.fetchall()]
    for tenant_id in tenants:
        destroy_tenant(uow, tenant_id)
    return len(tenants)
