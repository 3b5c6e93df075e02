"""Retention's commands: data-subject requests as an admin files them."""

from typing import Any, ClassVar

from marshmallow import ValidationError, fields, validate, validates_schema

from kernel.commands import Command, JsonInteger
from services.accounts.contracts import RectifyContactV1

REQUEST_TYPES = (
    "access",
    "erasure",
    "rectification",
    "restriction",
    "objection",
    "lift_restriction",
)


class SubjectV1(Command):
    contact_id = fields.UUID()
    agent_id = fields.UUID()
    # What ``exactly_one`` checks, as the OpenAPI document states it (gateway.openapi).
    JSON_SCHEMA: ClassVar[dict[str, Any]] = {"minProperties": 1, "maxProperties": 1}

    @validates_schema
    def exactly_one(self, data, **kwargs):
        if len(data) != 1:
            raise ValidationError("name exactly one of contact_id or agent_id", "_schema")


class FilePrivacyRequestV1(Command):
    """``POST /v1/privacy/requests``."""

    type = fields.String(required=True, validate=validate.OneOf(REQUEST_TYPES))
    subject = fields.Nested(SubjectV1, required=True)
    changes = fields.Nested(RectifyContactV1, load_default=None, allow_none=True)
    # What the admin checked to be sure the request comes from the person (recorded as said).
    identity_check = fields.String(
        load_default="attested by the filing admin", validate=validate.Length(min=1, max=500)
    )
    # What ``changes_for_rectification`` checks, as the OpenAPI document states it.
    JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"type": {"const": "rectification"}}},
        "then": {
            "required": ["changes"],
            "properties": {"changes": {"type": "object"}, "subject": {"required": ["contact_id"]}},
        },
        "else": {"properties": {"changes": {"type": "null"}}},
    }

    @validates_schema
    def changes_for_rectification(self, data, **kwargs):
        if data["type"] == "rectification":
            if not data.get("changes"):
                raise ValidationError("a rectification names its changes", "changes")
            if "contact_id" not in data["subject"]:
                raise ValidationError("only a contact's record is rectified here", "subject")
        elif data.get("changes") is not None:
            raise ValidationError("changes belong to a rectification only", "changes")


class SetPolicyV1(Command):
    """``PUT /v1/retention/policies/{category}``: this tenant's period, in days."""

    days = JsonInteger(required=True, validate=validate.Range(min=1, max=36500))


class DecideRequestV1(Command):
    """``POST /v1/privacy/requests/{id}/approve`` and ``/deny``: the reason is kept with it."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


# A correction applies at once: holding it for approval would keep the corrected personal data
# in retention's database while it waits.
APPROVABLE_TYPES = tuple(t for t in REQUEST_TYPES if t != "rectification")


class SetApprovalPolicyV1(Command):
    """``PUT /v1/privacy/approval-policy``: the request types that wait for a second admin."""

    requires_approval = fields.List(
        fields.String(validate=validate.OneOf(APPROVABLE_TYPES)), required=True
    )
