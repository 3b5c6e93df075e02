"""What the audit ledger learns of mail: that a mail went, or failed for good, to whom by id,
of which kind, about what (ids), never its address, subject or text. A sending service
registers these types (``EVENT_TYPES``) in its registry; the sender publishes them through the
service's outbox in the transaction that records the outcome."""

from __future__ import annotations

from marshmallow import Schema, fields

from kernel.envelope import EventType


class MailSentV1(Schema):
    mail_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    # Whom, by id: the recipient's address stays sealed in the sending service.
    recipient_id = fields.UUID(required=True)
    # What kind of mail (``ticket_reply``) and what it is about (the ticket message's id).
    kind = fields.String(required=True)
    reference_id = fields.UUID(required=True, allow_none=True)
    attempts = fields.Integer(required=True)


class MailFailedV1(MailSentV1):
    """Refused for good (a 5xx), or temporarily refused until the retry window closed."""

    # The relay's last reply code, if it gave one.
    code = fields.Integer(required=True, allow_none=True)
    outcome = fields.String(required=True)


MAIL_SENT = "mail_sent"
MAIL_FAILED = "mail_failed"


def event_types() -> tuple[EventType, EventType]:
    """Fresh types for a service's registry (a registry owns the types registered in it)."""
    return (
        EventType(MAIL_SENT, {1: MailSentV1}, published=True),
        EventType(MAIL_FAILED, {1: MailFailedV1}, published=True),
    )
