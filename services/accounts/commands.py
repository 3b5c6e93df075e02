"""Accounts' commands, validated before any handler runs."""

from marshmallow import RAISE, Schema, fields, validate


class StrictBoolean(fields.Boolean):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class SignUpAdmin(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=320))


class SignUpV1(Schema):
    """``POST /v1/signup``; ``version`` 1."""

    class Meta:
        unknown = RAISE

    company = fields.String(required=True, validate=validate.Length(min=1, max=200))
    region = fields.String(required=True, validate=validate.Length(min=1, max=20))
    admin = fields.Nested(SignUpAdmin, required=True)
    # Only a JSON boolean: "yes" or 1 is not an attestation.
    age_confirmed = StrictBoolean(required=True)
    accept_policy_version = fields.String(required=True, validate=validate.Length(min=1, max=50))
