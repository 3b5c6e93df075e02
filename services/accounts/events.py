"""Accounts' events. A version's meaning never changes: a new meaning is a new version."""

from marshmallow import Schema, fields, validate

from kernel.envelope import EventRegistry, EventType

ROLES = ("admin", "agent", "auditor")


class TenantCreatedV1(Schema):
    tenant_id = fields.UUID(required=True)
    company = fields.String(required=True)
    region = fields.String(required=True)
    plan = fields.String(required=True)
    policy_version = fields.String(required=True)
    admin_agent_id = fields.UUID(required=True)


class AgentCreatedV1(Schema):
    agent_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    name = fields.String(required=True)
    email = fields.String(required=True)


class ApiKeyIssuedV1(Schema):
    agent_id = fields.UUID(required=True)
    key_id = fields.UUID(required=True)
    # HMAC-SHA-256 of the key under the platform's secret: the key itself is never stored.
    key_hash = fields.String(required=True)


TENANT_CREATED = EventType("tenant_created", {1: TenantCreatedV1}, published=True)
AGENT_CREATED = EventType(
    "agent_created",
    {1: AgentCreatedV1},
    personal_fields=("name", "email"),
    subject_field="agent_id",
    published=True,
)
API_KEY_ISSUED = EventType("api_key_issued", {1: ApiKeyIssuedV1})

REGISTRY = EventRegistry(TENANT_CREATED, AGENT_CREATED, API_KEY_ISSUED)
