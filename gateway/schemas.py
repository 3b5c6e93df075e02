"""Request and response schemas of the HTTP API; requests reuse the services' command schemas."""

from marshmallow import Schema, fields

from services.accounts.commands import SignUpV1

__all__ = ["SignUpV1", "TenantOut", "AgentOut", "SignUpOut", "Problem"]


class TenantOut(Schema):
    id = fields.UUID(required=True)
    company = fields.String(required=True)
    region = fields.String(required=True)
    status = fields.String(required=True)
    plan = fields.String()


class AgentOut(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True)


class SignUpOut(Schema):
    tenant = fields.Nested(TenantOut, required=True)
    agent = fields.Nested(AgentOut, required=True)
    api_key = fields.String(required=True, metadata={"description": "shown once, never again"})


class Problem(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
