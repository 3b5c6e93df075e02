"""Notices mailed to a tenant's own people, its agents and admins (``kernel.mail``).

Accounts owns who they are and where they are reached, so it composes and queues these mails
itself: no other service learns an agent's address for them. A notice is queued in the
caller's transaction (owed if and only if what it tells of commits), rendered there and sealed
under the recipient agent's own key, so that agent's erasure makes it unreadable wherever it
waits, and the erasure handler deletes the row (``privacy.erase_subject``); the tenant's
destruction deletes the tenant's rows.

**Once per recipient and reference.** A notice about something (``reference_id``: a privacy
request, a policy version's publication) has the Message-ID ``<kind.reference.recipient@domain>``,
ids only, unique in the outbox: queueing it again, after a redelivered event or a job resumed
after a crash, queues nothing, and a resend after the sender's crash carries the same
Message-ID. ``kind`` is therefore what tells two notices about one thing apart (a privacy
request awaiting approval, then completed: two kinds).

**Who gets one.** Active agents only, not one whose read-model row was erased, and not one whose
data is restricted (kept, not used: the same rule as ``handlers.mail_recipient``).

Transactional mail only, sent because of the recipient's role or their own account: no consent
is asked and there is no List-Unsubscribe; written by the platform, not a person, so each is
``Auto-Submitted: auto-generated`` (RFC 3834) and auto-responders leave it alone.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from kernel.crypto.fields import is_erased
from kernel.crypto.primitives import KeyShredded
from kernel.mail.message import Mail, message_id
from kernel.mail.outbox import Mailer, Owed
from kernel.uow import UnitOfWork

log = logging.getLogger(__name__)

ADMIN = "admin"
# A kind is part of the Message-ID's left side (RFC 5322 dot-atom text) and of log lines.
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Recipient:
    agent_id: str
    name: str
    email: str


def _check_kind(kind: str) -> None:
    if not _KIND.match(kind):
        raise ValueError(f"a mail kind is a short lower-case constant, not {kind!r}")


def recipients(
    uow: UnitOfWork, tenant_id: str, *, role: str | None = None, agent_id: str | None = None
) -> list[Recipient]:
    """The tenant's active, unerased, unrestricted agents (of ``role``, or the one agent)."""
    uow.cur.execute(
        "SELECT a.id, a.name, a.email FROM agents a"
        " WHERE a.tenant_id = %s AND a.active"
        " AND (%s::text IS NULL OR a.role = %s) AND (%s::uuid IS NULL OR a.id = %s::uuid)"
        " AND NOT EXISTS (SELECT 1 FROM restrictions r WHERE r.subject_id = a.id)"
        " ORDER BY a.created_at, a.id",
        (tenant_id, role, role, agent_id, agent_id),
    )
    return [
        Recipient(str(i), "" if is_erased(n) else n, e)
        for i, n, e in uow.cur.fetchall()
        if not is_erased(e)
    ]


def notice_message_id(
    kind: str, reference_id: uuid.UUID | None, recipient_id: str, domain: str
) -> str:
    """``<kind.reference.recipient@domain>``: one per recipient and reference; without a
    reference, a fresh one (nothing to be owed once only)."""
    about = reference_id if reference_id is not None else uuid.uuid4()
    return message_id(kind, f"{about}.{recipient_id}", domain)


def queue(
    uow: UnitOfWork,
    mailer: Mailer,
    tenant_id: str,
    to: Recipient,
    kind: str,
    subject: str,
    body: str,
    reference_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Queue one notice to one agent in the caller's transaction; its id, or None if this very
    notice was queued before or the agent was erased meanwhile."""
    _check_kind(kind)
    mail = Mail(
        sender=mailer.sender,
        to_name=to.name,
        to_address=to.email,
        subject=subject,
        body=body,
        message_id=notice_message_id(kind, reference_id, to.agent_id, mailer.domain),
        automatic=True,
    )
    owed = Owed(
        tenant_id=uuid.UUID(tenant_id),
        recipient_id=uuid.UUID(to.agent_id),
        key_subject_id=uuid.UUID(to.agent_id),
        kind=kind,
        reference_id=reference_id,
        mail=mail,
    )
    try:
        return mailer.enqueue(uow.cur, owed)
    except KeyShredded:  # erased since the row was read: nothing is sealed for no one
        log.info("%s notice not queued for agent %s: erased", kind, to.agent_id)
        return None


def mail_admins(
    uow: UnitOfWork,
    mailer: Mailer,
    tenant_id: str,
    kind: str,
    subject: str,
    body: str,
    reference_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Queue, in the caller's transaction, one notice per active admin of the tenant, each
    sealed under that admin's key; the ids of the mails queued now (an admin already owed this
    very notice, same kind and reference, gets no second one)."""
    _check_kind(kind)
    queued = []
    for admin in recipients(uow, tenant_id, role=ADMIN):
        mail_id = queue(uow, mailer, tenant_id, admin, kind, subject, body, reference_id)
        if mail_id is not None:
            queued.append(mail_id)
    return queued


def mail_agent(
    uow: UnitOfWork,
    mailer: Mailer,
    tenant_id: str,
    agent_id: str,
    kind: str,
    subject: str,
    body: str,
    reference_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Queue one notice to one agent of the tenant, in the caller's transaction, sealed under
    the agent's key; its id, or None (no such active agent, or already owed this notice)."""
    _check_kind(kind)
    found = recipients(uow, tenant_id, agent_id=agent_id)
    if not found:
        return None
    return queue(uow, mailer, tenant_id, found[0], kind, subject, body, reference_id)
