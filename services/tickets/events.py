"""Tickets' events. A ticket's subject, body, tags and messages are encrypted under the ticket's
own key, a child of its requester's key: erasing the requester erases every ticket of theirs in
one shred, and a closed ticket past its retention period is erased alone. (Events written before
version 2 of ``message_added`` hold a message under its writer's key; they still open.)

Tags are words too: staff type them freely ("vip-john-smith"). ``ticket_created`` keeps its
version, since only how its tags are stored changed, not what they mean (readers of the store
decrypt them; events of older releases hold them in plaintext and still read).
``ticket_tags_changed`` needed the requester, whose key is the parent of the ticket's: that is its
version 2.

Published copies leave without those fields: other services learn ids, never words.
"""

from marshmallow import Schema, fields, validate

from kernel.envelope import EventRegistry, EventType
from kernel.mail.events import event_types as mail_event_types

STATUSES = ("new", "open", "pending", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")


class TenantDestroyedV1(Schema):
    """The tenant was destroyed: its tickets and messages leave the read models, and a replay
    removes them again, so a rebuild cannot bring them back (their words are unreadable anyway:
    the tenant's key is gone)."""

    tenant_id = fields.UUID(required=True)
    request_id = fields.UUID(required=True)


class TicketCreatedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    requester_id = fields.UUID(required=True)
    subject = fields.String(required=True)
    body = fields.String(required=True)
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    tags = fields.List(fields.String(), required=True)
    # How many card numbers were cut down to their last four digits before storing.
    redactions = fields.Integer(required=True)


class TicketStatusChangedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    previous = fields.String(required=True, validate=validate.OneOf(STATUSES))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))


class TicketClosedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)


class TicketAssignedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    assignee_id = fields.UUID(required=True, allow_none=True)


class TicketPriorityChangedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))


class TicketTagsChangedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    tags = fields.List(fields.String(), required=True)


class TicketTagsChangedV2(TicketTagsChangedV1):
    """Adds the ticket's requester, whose key is the parent of the ticket key the tags are
    encrypted under (null for a change upcast from version 1, whose tags are in plaintext)."""

    requester_id = fields.UUID(required=True, allow_none=True)


class TicketSubjectChangedV1(Schema):
    """A ticket's subject changed: under the ticket's key, as at creation (its requester is
    the parent of that key)."""

    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    requester_id = fields.UUID(required=True)
    subject = fields.String(required=True)
    # How many card numbers were cut down to their last four digits before storing.
    redactions = fields.Integer(required=True)


class MessageAddedV1(Schema):
    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    message_id = fields.UUID(required=True)
    author_id = fields.UUID(required=True)
    author_kind = fields.String(required=True, validate=validate.OneOf(("agent", "requester")))
    body = fields.String(required=True)
    # Internal notes are for staff only: never part of "messages to you" in a requester's export.
    internal = fields.Boolean(required=True)
    redactions = fields.Integer(required=True)


class MessageAddedV2(MessageAddedV1):
    """Adds the ticket's requester, whose key is the parent of the ticket key the body is
    encrypted under (null for a message upcast from version 1)."""

    requester_id = fields.UUID(required=True, allow_none=True)


TICKET_CREATED = EventType(
    "ticket_created",
    {1: TicketCreatedV1},
    personal_fields=("subject", "body", "tags"),
    subject_field="ticket_id",
    parent_field="requester_id",
    published=True,
)
TICKET_STATUS_CHANGED = EventType(
    "ticket_status_changed", {1: TicketStatusChangedV1}, published=True
)
TICKET_CLOSED = EventType("ticket_closed", {1: TicketClosedV1}, published=True)
TICKET_ASSIGNED = EventType("ticket_assigned", {1: TicketAssignedV1}, published=True)
TICKET_PRIORITY_CHANGED = EventType("ticket_priority_changed", {1: TicketPriorityChangedV1})
TICKET_TAGS_CHANGED = EventType(
    "ticket_tags_changed",
    {1: TicketTagsChangedV1, 2: TicketTagsChangedV2},
    upcasters={1: lambda payload: {**payload, "requester_id": None}},
    personal_fields=("tags",),
    subject_field="ticket_id",
    parent_field="requester_id",
)
TICKET_SUBJECT_CHANGED = EventType(
    "ticket_subject_changed",
    {1: TicketSubjectChangedV1},
    personal_fields=("subject",),
    subject_field="ticket_id",
    parent_field="requester_id",
)
MESSAGE_ADDED = EventType(
    "message_added",
    {1: MessageAddedV1, 2: MessageAddedV2},
    upcasters={1: lambda payload: {**payload, "requester_id": None}},
    personal_fields=("body",),
    subject_field="ticket_id",
    parent_field="requester_id",
    published=True,
)

TENANT_DESTROYED = EventType("tenant_destroyed", {1: TenantDestroyedV1})

REGISTRY = EventRegistry(
    TENANT_DESTROYED,
    TICKET_CREATED,
    TICKET_STATUS_CHANGED,
    TICKET_CLOSED,
    TICKET_ASSIGNED,
    TICKET_PRIORITY_CHANGED,
    TICKET_TAGS_CHANGED,
    TICKET_SUBJECT_CHANGED,
    MESSAGE_ADDED,
)


class TicketViewedV1(Schema):
    """A staff member read a ticket: an access record for the audit ledger, not stored here."""

    ticket_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    agent_id = fields.UUID(required=True)
    # Whose personal data the read showed: the requester and every message author.
    subject_ids = fields.List(fields.UUID(), required=True)


TICKET_VIEWED = REGISTRY.register(EventType("ticket_viewed", {1: TicketViewedV1}))

# What the audit ledger learns of each mail the sender settles (kernel.mail): ids only.
MAIL_SENT, MAIL_FAILED = (REGISTRY.register(t) for t in mail_event_types())
