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

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from kernel import faults
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


# --- a new policy version, to every agent who has not accepted it ---------------------------

POLICY_KIND = "policy_version"
# Agents mailed per transaction: a publication reaches every tenant's agents, and no
# transaction holds more than a page of them (nor a page's sealing) at once.
POLICY_PAGE = 200
# How often a process looks for a mailing under way (one indexed query when there is none).
POLICY_POLL_SECONDS = 2.0


def start_policy_notices(
    uow: UnitOfWork, version: str, reference_id: uuid.UUID, published_at: str
) -> None:
    """Record, in the publication's transaction, that the agents are owed a mail of this
    version; an earlier version's mailing still under way stops (agents are asked to accept
    the current version only)."""
    uow.cur.execute(
        "UPDATE policy_notice_jobs SET status = 'superseded', after_agent = NULL,"
        " finished_at = now() WHERE status = 'running'"
    )
    uow.cur.execute(
        "INSERT INTO policy_notice_jobs (version, reference_id, published_at)"
        " VALUES (%s, %s, %s) ON CONFLICT (version) DO NOTHING",
        (version, reference_id, published_at),
    )


def policy_mail(version: str, published_at: dt.datetime, console_url: str) -> tuple[str, str]:
    """The subject and text of a policy version's notice: the same for every agent."""
    subject = f"Ledgerdesk policy version {version}: please review and accept it"
    body = (
        f"A new version of the Ledgerdesk policies, {version}, was published on"
        f" {published_at.date().isoformat()}, and you have not accepted it yet.\n\n"
        f"Please read it and accept it: POST /v1/policies/accept with"
        f' {{"version": "{version}"}}, with your own API key. Until you do,'
        " GET /v1/me answers policy_acceptance_pending: true.\n\n"
        f"The console: {console_url}\n\n"
        "This is an automatic notice about your account, sent once for each policy version.\n"
    )
    return subject, body


def work_policy_notices(
    uow: UnitOfWork, mailer: Mailer, console_url: str, page: int = POLICY_PAGE
) -> int | None:
    """One page of the oldest policy mailing under way, in the caller's transaction: the mails
    of the next ``page`` agents (by id, across tenants) and the position after them commit
    together, so a crash repeats or loses no page. Returns the agents looked at (0: the mailing
    is done), or None when no mailing is under way (or another process holds it)."""
    uow.cur.execute(
        "SELECT version, reference_id, published_at, after_agent FROM policy_notice_jobs"
        " WHERE status = 'running' ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    job = uow.cur.fetchone()
    if job is None:
        return None
    version, reference_id, published_at, after = job
    # Agents who existed when it was published: the mail announces a change to them. One
    # created later learns it from GET /v1/me (policy_acceptance_pending), not by mail.
    uow.cur.execute(
        "SELECT a.id, a.tenant_id, a.name, a.email, a.active AND t.status <> 'destroyed'"
        " AND NOT EXISTS (SELECT 1 FROM policy_acceptances p"
        "   WHERE p.agent_id = a.id AND p.version = %s)"
        " AND NOT EXISTS (SELECT 1 FROM restrictions r WHERE r.subject_id = a.id)"
        " FROM agents a JOIN tenants t ON t.id = a.tenant_id"
        " WHERE (%s::uuid IS NULL OR a.id > %s::uuid) AND a.created_at <= %s"
        " ORDER BY a.id LIMIT %s",
        (version, after, after, published_at, page),
    )
    rows = uow.cur.fetchall()
    if not rows:
        uow.cur.execute(
            "UPDATE policy_notice_jobs SET status = 'done', after_agent = NULL,"
            " finished_at = now() WHERE version = %s",
            (version,),
        )
        log.info("policy version %s: every agent who owed an acceptance was mailed", version)
        return 0
    subject, body = policy_mail(version, published_at, console_url)
    mailed = 0
    for agent_id, tenant_id, name, address, owed in rows:
        if not owed or is_erased(address):
            continue
        to = Recipient(str(agent_id), "" if is_erased(name) else name, address)
        if queue(uow, mailer, str(tenant_id), to, POLICY_KIND, subject, body, reference_id):
            mailed += 1
    # The page's mails are queued and its position not yet recorded: a crash here commits
    # neither (tests/reliability kill the process at this point).
    faults.point("policy_notices.page_queued")
    uow.cur.execute(
        "UPDATE policy_notice_jobs SET after_agent = %s, mailed = mailed + %s WHERE version = %s",
        (rows[-1][0], mailed, version),
    )
    return len(rows)


# --- privacy requests' updates, to the tenant's admins ----------------------------------------

# Retention's event for each state a tenant's admins are told of, and how the mail says it.
PRIVACY_STATES = {
    "privacy_request_awaiting_approval": (
        "awaiting_approval",
        "is awaiting approval: another admin must approve or deny it before anything is done",
    ),
    "privacy_request_completed": (
        "completed",
        "is completed: every service has answered it",
    ),
    "privacy_request_due_soon": (
        "due_soon",
        "nears its due date and is not completed yet: approve or deny it if it awaits approval,"
        " or see which service still owes an answer",
    ),
    "privacy_request_overdue": (
        "failed",
        "failed: it passed its due date (overdue) before it was completed; file it again",
    ),
}
PRIVACY_KINDS = tuple(f"privacy_request_{state}" for state, _ in PRIVACY_STATES.values())


def privacy_request_update(
    uow: UnitOfWork,
    mailer: Mailer,
    console_url: str,
    event_type: str,
    payload: dict[str, Any],
) -> list[uuid.UUID]:
    """Mail the tenant's admins that a privacy request changed state or nears its deadline
    (retention's event, read and upcast by the caller): by its id, type and state, with a link
    to the console, never whom it concerns. Once per request and state (the Message-ID),
    however often the event comes."""
    state, words = PRIVACY_STATES[event_type]
    request_id = uuid.UUID(str(payload["request_id"]))
    kind_of_request = payload.get("type") or "privacy"
    subject = f"Privacy request {request_id} ({kind_of_request}): {state.replace('_', ' ')}"
    due = payload.get("due_at")
    body = (
        f"The {kind_of_request} request {request_id} {words}.\n\n"
        f"Request: {request_id}\nType: {kind_of_request}\nState: {state}\n"
        + (f"Now: {payload['status']}\n" if payload.get("status") else "")
        + (f"Due: {due}\n" if due else "")
        + f"\nSee it in the console, Privacy requests: {console_url}#privacy\n\n"
        "This is an automatic notice to the tenant's admins.\n"
    )
    return mail_admins(
        uow,
        mailer,
        str(payload["tenant_id"]),
        f"privacy_request_{state}",
        subject,
        body,
        reference_id=request_id,
    )
