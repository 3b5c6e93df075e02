"""Accounts' events. A version's meaning never changes: a new meaning is a new version.

Every event of a tenant carries the tenant's hosting region in its metadata, so a deployment per
region can show that no event of another region's tenant is in its store.
"""

from marshmallow import Schema, fields, validate

from kernel.envelope import EventRegistry, EventType
from kernel.mail.events import event_types as mail_event_types

ROLES = ("admin", "agent", "auditor")

# The categories of personal data a breach concerns (GDPR Art. 33(3)(a)), as this platform
# holds them: a fixed vocabulary, so the tenants' notices and their replies can be compared
# and counted, and nothing free-form travels in the field.
BREACH_CATEGORIES = (
    "identity",  # names of agents and contacts, the company
    "contact_details",  # e-mail addresses, phone numbers
    "credentials",  # API keys (their keyed hashes), webhook secrets
    "ticket_content",  # subjects, bodies, messages, tags
    "attachments",
    "billing",  # invoices, billing addresses, payment tokens
    "consent",  # consent records and how they were given
    "access_logs",  # client addresses, devices, pages
    "special_category",  # Art. 9 data a ticket's free text may hold (health, beliefs, ...)
)


class TenantCreatedV1(Schema):
    tenant_id = fields.UUID(required=True)
    company = fields.String(required=True)
    region = fields.String(required=True)
    plan = fields.String(required=True)
    policy_version = fields.String(required=True)
    admin_agent_id = fields.UUID(required=True)


class TenantCancelledV1(Schema):
    tenant_id = fields.UUID(required=True)
    destroy_after = fields.AwareDateTime(required=True)


class TenantReactivatedV1(Schema):
    tenant_id = fields.UUID(required=True)


class TenantRegionChangedV1(Schema):
    """The tenant is hosted in ``region`` from now on (moved between region cells by
    ``services.tenant_move``): the region its events, billing's tax and ``/v1/tenant`` name.
    Ids and region codes only."""

    tenant_id = fields.UUID(required=True)
    region = fields.String(required=True)
    previous_region = fields.String(required=True)


class TenantDestroyedV1(Schema):
    """The tenant's grace ran out and retention's destruction reached accounts: its key is
    shredded, and replaying its streams ends here (agents inactive, keys revoked, contacts
    gone), so a rebuilt read model cannot bring any of it back."""

    tenant_id = fields.UUID(required=True)
    request_id = fields.UUID(required=True)


class BillingContactDisclosedV1(Schema):
    """Accounts told billing who an invoice goes to (the company and its billing contact): an
    access record for the audit ledger, not stored here."""

    tenant_id = fields.UUID(required=True)
    agent_id = fields.UUID(required=True)
    disclosed_to = fields.String(required=True)


class MailAddressDisclosedV1(Schema):
    """Accounts told a service where to mail someone (tickets, a reply to its requester): an
    access record for the audit ledger, ids only, not stored here."""

    tenant_id = fields.UUID(required=True)
    subject_id = fields.UUID(required=True)
    disclosed_to = fields.String(required=True)
    # Why: the kind of mail (``ticket_reply``) and what it is about (the ticket message).
    purpose = fields.String(required=True)
    reference_id = fields.UUID(required=True, allow_none=True)


class AgentCreatedV1(Schema):
    agent_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    name = fields.String(required=True)
    email = fields.String(required=True)


class AgentDeactivatedV1(Schema):
    agent_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)


class ApiKeyIssuedV1(Schema):
    agent_id = fields.UUID(required=True)
    key_id = fields.UUID(required=True)
    # HMAC-SHA-256 of the key under the platform's secret: the key itself is never stored.
    key_hash = fields.String(required=True)


class ApiKeyIssuedV2(Schema):
    """V1 and whom the key answers to, for four eyes (``issuer_id``): a key minted for an agent
    is known to whoever minted it, so it answers to the person the minting key answered to (an
    admin's own key answers to her; a key she minted for someone else answers to her, and so
    does every key minted with it, including the key an agent is created with). A sign-up key
    and a key an agent claims for themselves (``POST /v1/me/api-keys``) answer to the agent.
    The published copy is ids only: the hash stays in accounts' store."""

    agent_id = fields.UUID(required=True)
    key_id = fields.UUID(required=True)
    key_hash = fields.String(required=True)
    # None only for keys issued before this version, whose issuer was not recorded.
    issuer_id = fields.UUID(required=True, allow_none=True)


def _issuer_unknown(payload: dict) -> dict:
    return {**payload, "issuer_id": None}


class ApiKeyRevokedV1(Schema):
    agent_id = fields.UUID(required=True)
    key_id = fields.UUID(required=True)


class PolicyAcceptedV1(Schema):
    agent_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    version = fields.String(required=True)


class ContactCreatedV1(Schema):
    contact_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    phone = fields.String(load_default=None, allow_none=True)


class ContactRectifiedV1(Schema):
    """Only the fields that changed are present."""

    contact_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    name = fields.String()
    email = fields.String()
    phone = fields.String(allow_none=True)


class ConsentRecordedV1(Schema):
    contact_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    marketing = fields.Boolean(required=True)
    source = fields.String(required=True)
    policy_version = fields.String(required=True)


class PolicyPublishedV1(Schema):
    version = fields.String(required=True)


class IncidentDeclaredV1(Schema):
    """The operator declared a personal-data breach affecting these tenants, aware of it since
    ``aware_at``. Ids and times only: what happened is in each tenant's notice."""

    incident_id = fields.UUID(required=True)
    tenant_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1))
    aware_at = fields.AwareDateTime(required=True)


class IncidentNotifiedV1(Schema):
    """A tenant's copy of an incident, sent to its active admins (``admin_ids``, by mail and in
    the console). The categories and the operator's text are under the tenant's key and left
    out of the published copy: the ledger sees who was notified, not what was said."""

    incident_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    categories = fields.List(
        fields.String(validate=validate.OneOf(BREACH_CATEGORIES)),
        required=True,
        validate=validate.Length(min=1),
    )
    description = fields.String(required=True)
    aware_at = fields.AwareDateTime(required=True)
    admin_ids = fields.List(fields.UUID(), required=True)


class IncidentAcknowledgedV1(Schema):
    """An admin of the tenant acknowledged its notice of the incident."""

    incident_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    agent_id = fields.UUID(required=True)


def _personal(name, schema, subject_field, fields=("name", "email", "phone")):
    return EventType(
        name,
        {1: schema},
        personal_fields=fields,
        subject_field=subject_field,
        published=True,
    )


# The company is the tenant's own: under the tenant's key (shredded with the tenant), and left
# out of the published copy. Its meaning is unchanged (readers of the store decrypt it), so
# the version is too.
TENANT_CREATED = EventType(
    "tenant_created", {1: TenantCreatedV1}, tenant_fields=("company",), published=True
)
TENANT_CANCELLED = EventType("tenant_cancelled", {1: TenantCancelledV1}, published=True)
TENANT_REACTIVATED = EventType("tenant_reactivated", {1: TenantReactivatedV1}, published=True)
TENANT_DESTROYED = EventType("tenant_destroyed", {1: TenantDestroyedV1})
TENANT_REGION_CHANGED = EventType(
    "tenant_region_changed", {1: TenantRegionChangedV1}, published=True
)
AGENT_CREATED = _personal("agent_created", AgentCreatedV1, "agent_id", ("name", "email"))
AGENT_DEACTIVATED = EventType("agent_deactivated", {1: AgentDeactivatedV1}, published=True)
API_KEY_ISSUED = EventType(
    "api_key_issued",
    {1: ApiKeyIssuedV1, 2: ApiKeyIssuedV2},
    upcasters={1: _issuer_unknown},
    published=True,
    unpublished_fields=("key_hash",),
)
API_KEY_REVOKED = EventType("api_key_revoked", {1: ApiKeyRevokedV1}, published=True)
POLICY_ACCEPTED = EventType("policy_accepted", {1: PolicyAcceptedV1}, published=True)
CONTACT_CREATED = _personal("contact_created", ContactCreatedV1, "contact_id")
CONTACT_RECTIFIED = _personal("contact_rectified", ContactRectifiedV1, "contact_id")
# How the consent was given is free text ("kiosk at the Leeds store, asked by Dana"): under the
# contact's key, so their erasure reaches it, and left out of the published copy (the ledger is
# permanent). Its meaning is unchanged, only how it is held and what the published copy carries,
# so the version is too: readers of the store decrypt it (events of older releases hold it in
# plaintext, and still read), and the one consumer of the published event, audit's replay of a
# tenant's state, reads the contact and the consent's value, never its source.
CONSENT_RECORDED = EventType(
    "consent_recorded",
    {1: ConsentRecordedV1},
    personal_fields=("source",),
    subject_field="contact_id",
    published=True,
)
POLICY_PUBLISHED = EventType("policy_published", {1: PolicyPublishedV1}, published=True)
INCIDENT_DECLARED = EventType("incident_declared", {1: IncidentDeclaredV1}, published=True)
INCIDENT_NOTIFIED = EventType(
    "incident_notified",
    {1: IncidentNotifiedV1},
    tenant_fields=("categories", "description"),
    published=True,
)
INCIDENT_ACKNOWLEDGED = EventType(
    "incident_acknowledged", {1: IncidentAcknowledgedV1}, published=True
)

REGISTRY = EventRegistry(
    TENANT_CREATED,
    TENANT_CANCELLED,
    TENANT_REACTIVATED,
    TENANT_DESTROYED,
    TENANT_REGION_CHANGED,
    AGENT_CREATED,
    AGENT_DEACTIVATED,
    API_KEY_ISSUED,
    API_KEY_REVOKED,
    POLICY_ACCEPTED,
    CONTACT_CREATED,
    CONTACT_RECTIFIED,
    CONSENT_RECORDED,
    POLICY_PUBLISHED,
    INCIDENT_DECLARED,
    INCIDENT_NOTIFIED,
    INCIDENT_ACKNOWLEDGED,
)

BILLING_CONTACT_DISCLOSED = REGISTRY.register(
    EventType("billing_contact_disclosed", {1: BillingContactDisclosedV1})
)

MAIL_ADDRESS_DISCLOSED = REGISTRY.register(
    EventType("mail_address_disclosed", {1: MailAddressDisclosedV1})
)

# What the audit ledger learns of each notice the sender settles (kernel.mail, notices): ids only.
MAIL_SENT, MAIL_FAILED = (REGISTRY.register(t) for t in mail_event_types())
