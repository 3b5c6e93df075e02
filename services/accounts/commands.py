"""Accounts' commands, validated before any handler runs. Unknown fields are refused."""

from marshmallow import ValidationError, fields, validate, validates_schema

from kernel.commands import Command, StrictBoolean
from services.accounts.events import ROLES

PHONE = validate.Regexp(r"^\+?[0-9][0-9 ().-]{3,31}$", error="not a phone number")


class SignUpAdmin(Command):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=320))


class SignUpV1(Command):
    """``POST /v1/signup``."""

    company = fields.String(required=True, validate=validate.Length(min=1, max=200))
    region = fields.String(required=True, validate=validate.Length(min=1, max=20))
    admin = fields.Nested(SignUpAdmin, required=True)
    age_confirmed = StrictBoolean(required=True)
    accept_policy_version = fields.String(required=True, validate=validate.Length(min=1, max=50))


class CreateAgentV1(Command):
    """``POST /v1/agents``."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=320))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class CreateContactV1(Command):
    """``POST /v1/contacts``."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=320))
    phone = fields.String(load_default=None, allow_none=True, validate=PHONE)


class RectifyContactV1(Command):
    """``PATCH /v1/contacts/{id}``: the fields to correct."""

    name = fields.String(validate=validate.Length(min=1, max=200))
    email = fields.Email(validate=validate.Length(max=320))
    phone = fields.String(allow_none=True, validate=PHONE)

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("name, email or phone must be given", "_schema")


class SetConsentV1(Command):
    """``PUT /v1/contacts/{id}/consent``."""

    marketing = StrictBoolean(required=True)
    source = fields.String(required=True, validate=validate.Length(min=1, max=100))


class AcceptPolicyV1(Command):
    """``POST /v1/policies/accept``."""

    version = fields.String(required=True, validate=validate.Length(min=1, max=50))


class PublishPolicyV1(Command):
    """``POST /v1/operator/policies``."""

    version = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=50), validate.Regexp(r"^[A-Za-z0-9._-]+$")],
    )
