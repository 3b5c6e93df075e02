"""Tickets' commands, validated before any handler runs. Unknown fields are refused."""

from marshmallow import ValidationError, fields, validate, validates_schema

from kernel.commands import CARD_NUMBERS_REDACTED, Command, StrictBoolean
from services.tickets.events import PRIORITIES

# A tag is a label: like every other field, a card number in it refuses the command.
TAG = fields.String(validate=[validate.Length(min=1, max=50), validate.Regexp(r"^[^\s,]+$")])


class CreateTicketV1(Command):
    """``POST /v1/tickets``."""

    # What customers write: a card number pasted here is cut to its last four digits.
    subject = fields.String(
        required=True, validate=validate.Length(min=1, max=500), metadata=CARD_NUMBERS_REDACTED
    )
    body = fields.String(
        required=True, validate=validate.Length(min=1, max=100_000), metadata=CARD_NUMBERS_REDACTED
    )
    requester_id = fields.UUID(required=True)
    priority = fields.String(load_default="normal", validate=validate.OneOf(PRIORITIES))
    tags = fields.List(TAG, load_default=list, validate=validate.Length(max=20))


class UpdateTicketV1(Command):
    """``PATCH /v1/tickets/{id}``: any of status, priority, assignee (null unassigns), tags."""

    status = fields.String(validate=validate.OneOf(("open", "pending", "solved", "closed")))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    assignee_id = fields.UUID(allow_none=True)
    tags = fields.List(TAG, validate=validate.Length(max=20))

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("status, priority, assignee_id or tags must be given", "_schema")


class AddMessageV1(Command):
    """``POST /v1/tickets/{id}/messages``."""

    body = fields.String(
        required=True, validate=validate.Length(min=1, max=100_000), metadata=CARD_NUMBERS_REDACTED
    )
    internal = StrictBoolean(load_default=False)
    # A public reply written by staff for the requester (e.g. from an e-mail they sent).
    on_behalf_of_requester = StrictBoolean(load_default=False)

    @validates_schema
    def notes_are_staff_only(self, data, **kwargs):
        if data.get("internal") and data.get("on_behalf_of_requester"):
            raise ValidationError("a requester's message cannot be an internal note", "internal")
