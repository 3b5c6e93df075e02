"""Tickets' commands, validated before any handler runs. Unknown fields are refused."""

from typing import Any, ClassVar

from marshmallow import ValidationError, fields, pre_load, validate, validates_schema

from kernel.commands import (
    CARD_NUMBERS_REDACTED,
    SPACES,
    Command,
    StrictBoolean,
    UtcDateTime,
)
from services.tickets import terms
from services.tickets.events import PRIORITIES, STATUSES

# A tag is a label: like every other field, a card number in it refuses the command.
# No comma, no space of any kind (SPACES: not \s, which reads differently in the document's
# pattern dialect), no NUL: the one pattern for the document and the validation.
TAG_PATTERN = rf"^[^,\u0000{SPACES}\ufeff]+$"
_TAG_RULES = [validate.Length(min=1, max=50), validate.Regexp(TAG_PATTERN)]
TAG = fields.String(validate=_TAG_RULES)


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
    """``PATCH /v1/tickets/{id}``: any of status, priority, assignee (null unassigns), tags,
    subject."""

    status = fields.String(validate=validate.OneOf(("open", "pending", "solved", "closed")))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    assignee_id = fields.UUID(allow_none=True)
    tags = fields.List(TAG, validate=validate.Length(max=20))
    # As at creation: a card number pasted here is cut to its last four digits.
    subject = fields.String(
        validate=validate.Length(min=1, max=500), metadata=CARD_NUMBERS_REDACTED
    )

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError(
                "status, priority, assignee_id, tags or subject must be given", "_schema"
            )


# An upload goes to tickets in chunks of at most this many bytes, each its own RPC (a message
# on the broker), each sealed and stored as one row; a download comes back the same way.
CHUNK_BYTES = 256 << 10
# What a message's list of attachments may hold at most, whatever the setting says.
MAX_ATTACHMENT_IDS = 100
MAX_FILENAME_CHARS = 255


def _filename(value: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValidationError("may not hold control characters")
    if "/" in value or "\\" in value:
        raise ValidationError("a name, not a path: no / or \\")
    if value.strip() in ("", ".", ".."):
        raise ValidationError("must name a file")


class UploadAttachmentV1(Command):
    """``POST /v1/tickets/{id}/attachments``: the query; the body is the file's bytes."""

    # What customers name their files: a card number in it is cut to its last four digits.
    filename = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=MAX_FILENAME_CHARS), _filename],
        metadata={
            **CARD_NUMBERS_REDACTED,
            # _filename's rules: no control character, no / or \, not blank, . or ..
            "pattern": rf"^(?![{SPACES}]*\.{{0,2}}[{SPACES}]*$)[^\u0000-\u001f\u007f/\\]"
            + f"{{1,{MAX_FILENAME_CHARS}}}$",
            "description": "the file's name, as it is to be offered for download",
        },
    )


class AddMessageV1(Command):
    """``POST /v1/tickets/{id}/messages``."""

    body = fields.String(
        required=True, validate=validate.Length(min=1, max=100_000), metadata=CARD_NUMBERS_REDACTED
    )
    internal = StrictBoolean(load_default=False)
    # A public reply written by staff for the requester (e.g. from an e-mail they sent).
    on_behalf_of_requester = StrictBoolean(load_default=False)
    # Files uploaded to the ticket first (``POST /v1/tickets/{id}/attachments``), not yet on a
    # message; how many one message may carry is a setting (LEDGERDESK_ATTACHMENTS_PER_MESSAGE).
    attachment_ids = fields.List(
        fields.UUID(),
        load_default=list,
        validate=validate.Length(max=MAX_ATTACHMENT_IDS),
        metadata={"description": "attachments uploaded to this ticket, to put on the message"},
    )

    # What ``notes_are_staff_only`` checks, as the OpenAPI document states it.
    JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "not": {
            "required": ["internal", "on_behalf_of_requester"],
            "properties": {"internal": {"const": True}, "on_behalf_of_requester": {"const": True}},
        }
    }

    @validates_schema
    def notes_are_staff_only(self, data, **kwargs):
        if data.get("internal") and data.get("on_behalf_of_requester"):
            raise ValidationError("a requester's message cannot be an internal note", "internal")


def _moment(description: str) -> UtcDateTime:
    return UtcDateTime(metadata={"description": description + " (RFC 3339, with its offset)"})


class FindTicketsV1(Command):
    """``GET /v1/tickets``: what the list may be narrowed to, all given at once applying.

    Time ranges are half-open: ``*_after`` is at or after, ``*_before`` strictly before, so
    consecutive ranges neither overlap nor leave a gap. ``updated_since`` also pages the list
    in the order tickets changed, so a client that keeps a copy in step goes on from its last
    cursor (a ticket changed meanwhile comes again, later), where the other filters page in the
    order tickets were created. An empty value is no filter, as it always was here: clients
    build the URL from empty form fields.
    """

    status = fields.String(validate=validate.OneOf(STATUSES))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    assignee_id = fields.UUID()
    requester_id = fields.UUID()
    tag = fields.String(
        validate=_TAG_RULES,
        metadata={
            "description": "tickets with this tag, whatever its case (found through a keyed"
            " hash: tags are stored encrypted)"
        },
    )
    created_after = _moment("created at or after this time")
    created_before = _moment("created before this time")
    updated_after = _moment("last changed at or after this time")
    updated_before = _moment("last changed before this time")
    updated_since = _moment(
        "changed at or after this time, paged in the order they changed, for a client that"
        " keeps a copy in step"
    )

    # The OpenAPI document says so of every filter (gateway.openapi): an empty value is none.
    EMPTY_IS_ABSENT: ClassVar[bool] = True

    @pre_load
    def empty_is_absent(self, data, **kwargs):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data

    # A range that holds no time (its end not after its start) lists nothing, as filters that
    # no ticket meets together do: refusing it would be a rule across parameters the OpenAPI
    # document cannot state, so a client keeping to the document could be refused.


def _searchable(query: str) -> None:
    refusal = terms.query_refusal(query)
    if refusal is not None:
        raise ValidationError(refusal)


class SearchTicketsV1(Command):
    """``GET /v1/search``: the words to find, and what the results may be narrowed to.

    A query is never kept: it is hashed under the tenant's key to look the index up, and goes
    into no event, log line, span or access record (``services.tickets.search``).
    """

    q = fields.String(
        required=True,
        validate=_searchable,
        metadata={
            "description": f"words to find in subjects, bodies and messages (internal notes for"
            f" staff), each by its first letters ({terms.MIN_LETTERS} or more); at most"
            f" {terms.MAX_QUERY_WORDS} words, {terms.MAX_QUERY_CHARS} characters. Tickets that"
            " match more of the words come first, then the newest",
            "minLength": 1,
            "maxLength": terms.MAX_QUERY_CHARS,
        },
    )
    status = fields.String(
        validate=validate.OneOf(STATUSES), metadata={"description": "only tickets in this status"}
    )
