"""The outbox of mail: ``mail_outbox`` in the sending service's database (its own migration
creates it: tickets' ``0008_mail_outbox.sql``), one row per mail.

- **Written** in the transaction that makes the mail owed (a public reply's event), so a mail
  is queued if and only if what it tells of committed. A row is unique by Message-ID: queueing
  the same mail twice (a retried command) queues it once.
- **Sealed**: the rendered message with its envelope sender and recipients is one AES-GCM
  ciphertext under the key of ``key_subject_id`` in the service's keystore (for a ticket's
  reply, the ticket's key, a child of its requester's), bound to the tenant, the row and the
  column. Erasing the recipient shreds that key: a queued mail can no longer be opened, and the
  service's erasure handler deletes the row too. No address, subject or text is in any other
  column: the row holds ids, the Message-ID (ids only), states, codes and times.
- **Ends**: the sealed text is dropped when the mail is sent or fails for good; the row itself
  goes ``LEDGERDESK_MAIL_KEEP_DAYS`` after that (``purge_finished``), and with the recipient's
  erasure or the tenant's destruction.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg2.extensions import cursor as Cursor

from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import open_sealed, seal
from kernel.db import keyset_page
from kernel.mail.message import Mail

_AAD = "ledgerdesk/v1/mail-outbox"
# A mail's states, and what its last attempt came to (``kernel.mail.smtp``'s outcomes, and
# ``unrecorded`` for a mail whose attempts never got recorded before its window closed).
STATUSES = ("pending", "sent", "failed")
OUTCOMES = ("sent", "temporary", "permanent", "unrecorded")


def _aad(tenant: uuid.UUID, mail_id: uuid.UUID) -> bytes:
    return f"{_AAD}/{tenant}/{mail_id}/sealed".encode()


@dataclass(frozen=True)
class Owed:
    """A mail to queue: whom (by id), under whose key, of which kind, about what."""

    tenant_id: uuid.UUID
    recipient_id: uuid.UUID
    key_subject_id: uuid.UUID
    kind: str
    reference_id: uuid.UUID | None
    mail: Mail
    # The parent of ``key_subject_id``'s key, when it is a child key (a ticket's requester).
    key_parent_id: uuid.UUID | None = None


def seal_mail(keystore: Keystore, owed: Owed, mail_id: uuid.UUID) -> bytes:
    """The sealed envelope and message; ``KeyShredded`` if the key's subject was erased."""
    key = keystore.subject_key(owed.tenant_id, owed.key_subject_id, parent_id=owed.key_parent_id)
    assert key is not None
    envelope = {
        "from": _address(owed.mail.sender),
        "to": [owed.mail.to_address],
        "data": base64.b64encode(owed.mail.render()).decode(),
    }
    return seal(key, json.dumps(envelope).encode(), _aad(owed.tenant_id, mail_id))


def open_mail(
    keystore: Keystore, tenant: uuid.UUID, key_subject: uuid.UUID, mail_id: uuid.UUID, blob: Any
) -> tuple[str, list[str], bytes] | None:
    """(envelope sender, recipients, message bytes), or None once the key is shredded."""
    key = keystore.subject_key(tenant, key_subject, create=False)
    if key is None:
        return None
    envelope = json.loads(open_sealed(key, bytes(blob), _aad(tenant, mail_id)))
    return envelope["from"], list(envelope["to"]), base64.b64decode(envelope["data"])


def enqueue(cur: Cursor, keystore: Keystore, owed: Owed) -> uuid.UUID | None:
    """Queue a mail in the caller's transaction; its id, or None if that very Message-ID is
    already queued or was sent (the same mail is owed once)."""
    mail_id = uuid.uuid4()
    sealed = seal_mail(keystore, owed, mail_id)
    cur.execute(
        "INSERT INTO mail_outbox (id, tenant_id, recipient_id, key_subject_id, kind,"
        " reference_id, message_id, sealed, next_attempt_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (message_id) DO NOTHING RETURNING id",
        (
            mail_id,
            owed.tenant_id,
            owed.recipient_id,
            owed.key_subject_id,
            owed.kind,
            owed.reference_id,
            owed.mail.message_id,
            sealed,
        ),
    )
    row = cur.fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class Mailer:
    """What a worker queues mail with: the keystore that seals it, who mail is from and the
    domain of its Message-IDs."""

    keystore: Keystore
    sender: str
    domain: str

    def enqueue(self, cur: Cursor, owed: Owed) -> uuid.UUID | None:
        return enqueue(cur, self.keystore, owed)


def purge_finished(cur: Cursor, keep: dt.timedelta) -> int:
    """Delete sent and failed mails' rows older than ``keep``; how many."""
    cur.execute(
        "DELETE FROM mail_outbox WHERE status <> 'pending' AND finished_at < now() - %s", (keep,)
    )
    return cur.rowcount


def listing(cur: Cursor, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Mails by state, newest first: ids, states, codes and times (what an operator sees)."""
    cur.execute(
        "SELECT id, tenant_id, recipient_id, kind, reference_id, message_id, status, attempts,"
        " last_code, last_outcome, created_at, finished_at, next_attempt_at FROM mail_outbox"
        " WHERE %s::text IS NULL OR status = %s ORDER BY created_at DESC, id LIMIT %s",
        (status, status, limit),
    )
    names = (
        "id",
        "tenant_id",
        "recipient_id",
        "kind",
        "reference_id",
        "message_id",
        "status",
        "attempts",
        "last_code",
        "last_outcome",
        "created_at",
        "finished_at",
        "next_attempt_at",
    )
    return [_rendered(names, row) for row in cur.fetchall()]


# What a tenant's admin sees of a mail: ids, states, codes and times; never the Message-ID's
# domain, the envelope or the text (the sealed column is never read here).
_TENANT_COLUMNS = (
    "id",
    "kind",
    "recipient_id",
    "reference_id",
    "status",
    "attempts",
    "last_code",
    "last_outcome",
    "created_at",
    "next_attempt_at",
    "finished_at",
)


def tenant_page(
    cur: Cursor, tenant_id: str, status: str | None, limit: int, after: list | None
) -> dict[str, Any]:
    """One page of a tenant's mails, oldest first, optionally of one state:
    ``{"items", "next"}`` as every keyset list (``kernel.db.keyset_page``)."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"a mail's status is one of {STATUSES}, not {status!r}")
    rows, following = keyset_page(
        cur,
        f"SELECT {', '.join(_TENANT_COLUMNS)} FROM mail_outbox"
        " WHERE tenant_id = %s AND (%s::text IS NULL OR status = %s)",
        [uuid.UUID(str(tenant_id)), status, status],
        limit,
        after,
        lambda row: [row[8].isoformat(), str(row[0])],
    )
    return {"items": [_rendered(_TENANT_COLUMNS, row) for row in rows], "next": following}


def _rendered(names: tuple[str, ...], row: tuple) -> dict[str, Any]:
    return {
        name: value.isoformat()
        if isinstance(value, dt.datetime)
        else str(value)
        if isinstance(value, uuid.UUID)
        else value
        for name, value in zip(names, row, strict=True)
    }


def _address(sender: str) -> str:
    from email.utils import parseaddr

    return parseaddr(sender)[1]
