"""Accounts' commands, validated before any handler runs. Unknown fields are refused."""

from marshmallow import ValidationError, fields, pre_load, validate, validates_schema

from kernel.commands import Command, StrictBoolean, UtcDateTime
from services.accounts.events import BREACH_CATEGORIES, ROLES

PHONE = validate.Regexp(r"^\+?[0-9][0-9 ().-]{3,31}$", error="not a phone number")


class SignUpAdmin(Command):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=320))


class SignUpV1(Command):
    """``POST /v1/signup``."""

    company = fields.String(required=True, validate=validate.Length(min=1, max=200))
    region = fields.String(required=True, validate=validate.Length(min=1, max=20))
    admin = fields.Nested(SignUpAdmin, required=True)
    # Only true signs a tenant up (the domain refuses anything else): the document says so.
    age_confirmed = StrictBoolean(required=True, metadata={"enum": [True]})
    accept_policy_version = fields.String(required=True, validate=validate.Length(min=1, max=50))


class ChangeTenantRegionV1(Command):
    """The tenant mover's, in the target cell after its cut-over (``services.accounts.moves``):
    no HTTP route."""

    tenant_id = fields.UUID(required=True)
    region = fields.String(required=True, validate=validate.Length(min=1, max=20))


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


class DeclareIncidentV1(Command):
    """``POST /v1/operator/incidents``: a personal-data breach, as the operator declares it."""

    tenant_ids = fields.List(
        fields.UUID(),
        required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "the affected tenants, each once; an unknown one refuses all"},
    )
    categories = fields.List(
        fields.String(validate=validate.OneOf(BREACH_CATEGORIES)),
        required=True,
        validate=validate.Length(min=1, max=len(BREACH_CATEGORIES)),
        metadata={"description": "the categories of personal data concerned"},
    )
    description = fields.String(
        required=True,
        validate=validate.Length(min=1, max=5000),
        metadata={
            "description": "what happened, its likely consequences and the measures taken"
            " (sent to the affected tenants' admins; under each tenant's key)"
        },
    )
    aware_at = UtcDateTime(
        metadata={
            "description": "when the operator became aware of it (default: now); the 72 hours"
            " run from here"
        }
    )

    @validates_schema
    def each_once(self, data, **kwargs):
        for field in ("tenant_ids", "categories"):
            values = data.get(field) or []
            if len(set(values)) != len(values):
                raise ValidationError("each once", field)


# --- queries: what a list may be narrowed to (the query string of ``GET`` on a list) ---------
#
# An empty value is refused, not taken for no filter: ``?email=`` that listed everyone would be
# the bulk read a lookup is there to avoid. The values are personal data: the gateway passes
# them to accounts, and nothing logs, traces or stores them (a lookup keeps only their keyed
# hash, and only in the index it searches).

_EMAIL_LOOKUP = fields.Email(
    validate=validate.Length(max=320),
    metadata={
        "description": "exactly this e-mail address, whatever its case and surrounding spaces"
        " (found through a keyed hash, never stored)"
    },
)


class _Lookup(Command):
    @pre_load
    def trimmed(self, data, **kwargs):
        """A value copied with spaces around it is the same value."""
        if isinstance(data, dict):
            return {
                k: v.strip() if isinstance(v, str) and k in ("email", "phone") else v
                for k, v in data.items()
            }
        return data


class FindContactsV1(_Lookup):
    """``GET /v1/contacts``: a lookup by e-mail or phone, a name prefix, changes since a moment."""

    email = _EMAIL_LOOKUP
    phone = fields.String(
        validate=PHONE,
        metadata={
            "description": "exactly this phone number, compared as its digits after a leading +"
            " (found through a keyed hash, never stored)"
        },
    )
    name_prefix = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "names that start with this, whatever their case"},
    )
    updated_since = UtcDateTime(
        metadata={
            "description": "contacts created or changed at or after this time, in the order they"
            " changed (for a client that keeps a copy in step)"
        }
    )


class FindAgentsV1(_Lookup):
    """``GET /v1/agents``: a lookup by e-mail."""

    email = _EMAIL_LOOKUP
