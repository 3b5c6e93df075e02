"""Request and response schemas of the HTTP API.

Requests are the services' own command schemas, from each one's contracts module, all that the
gateway may import of a service (one definition, validated at the gateway and again by the
service); responses are declared here and published in the OpenAPI document.
"""

from marshmallow import Schema, fields

from gateway.webhooks.schemas import (
    RegisterWebhookV1,
    WebhookAttemptOut,
    WebhookCreatedOut,
    WebhookDeliveryListOut,
    WebhookDeliveryOut,
    WebhookListOut,
    WebhookOut,
    WebhookSecretOut,
)
from kernel.mail.outbox import OUTCOMES as MAIL_OUTCOMES
from kernel.mail.outbox import STATUSES as MAIL_STATUSES
from kernel.platform import SENDS_MAIL
from services.accounts.contracts import (
    BREACH_CATEGORIES,
    ROLES,
    AcceptPolicyV1,
    CreateAgentV1,
    CreateContactV1,
    DeclareIncidentV1,
    FindAgentsV1,
    FindContactsV1,
    PublishPolicyV1,
    RectifyContactV1,
    SetConsentV1,
    SignUpV1,
)
from services.billing.contracts import AddPaymentMethodV1, ChangePlanV1, SetBillingAddressV1
from services.retention.contracts import (
    CHANGE_STATUSES,
    DECISIONS,
    DecideRequestV1,
    FilePrivacyRequestV1,
    SetApprovalPolicyV1,
    SetPolicyV1,
)
from services.tickets.contracts import (
    PRIORITIES,
    STATUSES,
    AddMessageV1,
    CreateTicketV1,
    FindTicketsV1,
    SearchTicketsV1,
    UpdateTicketV1,
    UploadAttachmentV1,
)

__all__ = [
    "UploadAttachmentV1",
    "AttachmentOut",
    "DecideRequestV1",
    "SetApprovalPolicyV1",
    "SetPolicyV1",
    "FilePrivacyRequestV1",
    "AddPaymentMethodV1",
    "ChangePlanV1",
    "SetBillingAddressV1",
    "AddMessageV1",
    "CreateTicketV1",
    "FindTicketsV1",
    "SearchTicketsV1",
    "UpdateTicketV1",
    "AgentCreatedOut",
    "AcceptPolicyV1",
    "CreateAgentV1",
    "CreateContactV1",
    "DeclareIncidentV1",
    "FindAgentsV1",
    "FindContactsV1",
    "PublishPolicyV1",
    "RectifyContactV1",
    "SetConsentV1",
    "SignUpV1",
    "RegisterWebhookV1",
    "WebhookAttemptOut",
    "WebhookCreatedOut",
    "WebhookDeliveryListOut",
    "WebhookDeliveryOut",
    "WebhookListOut",
    "WebhookOut",
    "WebhookSecretOut",
]


class TenantOut(Schema):
    id = fields.UUID(required=True)
    company = fields.String(required=True)
    region = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["active", "cancelled"]})
    plan = fields.String(required=True)
    destroy_after = fields.DateTime(metadata={"description": "only while cancelled"})
    support_address = fields.Email(
        metadata={
            "description": "where the tenant's customers' mail opens tickets (`GET /v1/tenant`"
            " only): the tenant id at the platform's inbound mail domain; forward the public"
            " support address to it"
        }
    )


class AgentOut(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, metadata={"enum": list(ROLES)})
    active = fields.Boolean(required=True)


class AgentCreatedOut(AgentOut):
    api_key = fields.String(
        required=True, allow_none=True, metadata={"description": "shown once, never again"}
    )


class SignUpOut(Schema):
    tenant = fields.Nested(TenantOut, required=True)
    agent = fields.Nested(AgentOut, required=True)
    api_key = fields.String(
        required=True, allow_none=True, metadata={"description": "shown once, never again"}
    )


class ApiKeyOut(Schema):
    id = fields.UUID(required=True)
    agent_id = fields.UUID(required=True)
    api_key = fields.String(
        required=True, allow_none=True, metadata={"description": "shown once, never again"}
    )


class ClaimedApiKeyOut(ApiKeyOut):
    revoked_key_ids = fields.List(
        fields.UUID(),
        required=True,
        metadata={"description": "the caller's keys that ended, the calling key among them"},
    )


class ContactOut(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    phone = fields.String(required=True, allow_none=True)
    marketing = fields.Boolean(required=True)
    version = fields.Integer(required=True, metadata={"description": "the ETag's value"})


class ConsentRecordOut(Schema):
    marketing = fields.Boolean(required=True)
    source = fields.String(required=True)
    policy_version = fields.String(required=True)
    recorded_at = fields.DateTime(required=True)


class ConsentSetOut(ConsentRecordOut):
    contact_id = fields.UUID(required=True)


class ConsentStateOut(Schema):
    contact_id = fields.UUID(required=True)
    marketing = fields.Boolean(required=True)
    history = fields.List(fields.Nested(ConsentRecordOut), required=True)


class PolicyOut(Schema):
    version = fields.String(required=True)
    published_at = fields.DateTime(required=True)


class PendingAgentOut(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True)


class PendingAcceptanceOut(Schema):
    version = fields.String(required=True)
    items = fields.List(fields.Nested(PendingAgentOut), required=True)


class AcceptanceOut(Schema):
    version = fields.String(required=True)
    agent_id = fields.UUID(required=True)
    accepted = fields.Boolean(required=True)


class AgentListOut(Schema):
    items = fields.List(fields.Nested(AgentOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ContactListedOut(ContactOut):
    updated_at = fields.DateTime(
        required=True, metadata={"description": "its last change: what updated_since compares"}
    )


class ContactListOut(Schema):
    items = fields.List(fields.Nested(ContactListedOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class AcknowledgementOut(Schema):
    agent_id = fields.UUID(required=True, metadata={"description": "the admin who acknowledged"})
    acknowledged_at = fields.DateTime(required=True)


class _IncidentClock(Schema):
    """The GDPR Art. 33 clock of the tenant as controller."""

    aware_at = fields.DateTime(
        required=True, metadata={"description": "when the operator became aware of the breach"}
    )
    deadline = fields.DateTime(
        required=True,
        metadata={
            "description": "aware_at + 72 hours: by then the controller notifies its supervisory"
            " authority (Art. 33(1)), or says why later"
        },
    )
    deadline_passed = fields.Boolean(required=True)


_CATEGORIES = fields.List(
    fields.String(metadata={"enum": list(BREACH_CATEGORIES)}),
    required=True,
    metadata={"description": "the categories of personal data concerned"},
)


class IncidentOut(_IncidentClock):
    """A breach as an affected tenant's admins see it."""

    id = fields.UUID(required=True)
    categories = _CATEGORIES
    description = fields.String(required=True, metadata={"description": "what happened"})
    notified_at = fields.DateTime(required=True)
    notified_ids = fields.List(
        fields.UUID(), required=True, metadata={"description": "the admins it was sent to"}
    )
    acknowledgements = fields.List(fields.Nested(AcknowledgementOut), required=True)


class IncidentListOut(Schema):
    items = fields.List(fields.Nested(IncidentOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class IncidentTenantOut(Schema):
    tenant_id = fields.UUID(required=True)
    notified_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "null: the tenant was destroyed"}
    )
    notified_ids = fields.List(fields.UUID(), required=True, allow_none=True)
    acknowledgements = fields.List(fields.Nested(AcknowledgementOut), required=True)


class DeclaredIncidentOut(_IncidentClock):
    """A breach just declared: ids, times and whom each tenant's notice went to. Not its text
    or categories (GET it for them): an answer the gateway keeps for an Idempotency-Key's
    replay would otherwise hold them under no tenant's key, past the tenants' destruction."""

    id = fields.UUID(required=True)
    declared_at = fields.DateTime(required=True)
    tenants = fields.List(fields.Nested(IncidentTenantOut), required=True)


class OperatorIncidentOut(_IncidentClock):
    """A breach as the operator declared it, and where each affected tenant stands."""

    id = fields.UUID(required=True)
    categories = fields.List(
        fields.String(metadata={"enum": list(BREACH_CATEGORIES)}),
        required=True,
        allow_none=True,
        metadata={"description": "null once every affected tenant is destroyed"},
    )
    description = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "null once every affected tenant is destroyed"},
    )
    declared_at = fields.DateTime(required=True)
    tenants = fields.List(fields.Nested(IncidentTenantOut), required=True)


class OperatorIncidentListOut(Schema):
    items = fields.List(fields.Nested(OperatorIncidentOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class TicketOut(Schema):
    id = fields.UUID(required=True)
    subject = fields.String(required=True)
    body = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": list(STATUSES)})
    priority = fields.String(required=True, metadata={"enum": list(PRIORITIES)})
    requester_id = fields.UUID(required=True)
    assignee_id = fields.UUID(required=True, allow_none=True)
    tags = fields.List(fields.String(), required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    version = fields.Integer(required=True, metadata={"description": "the ETag's value"})


class AttachmentOut(Schema):
    """A file on a ticket's message (or uploaded, to be put on one): metadata only."""

    id = fields.UUID(required=True)
    filename = fields.String(
        required=True, metadata={"description": "as uploaded, card numbers cut to the last four"}
    )
    size = fields.Integer(required=True, metadata={"description": "bytes", "minimum": 1})
    content_type = fields.String(
        required=True,
        metadata={
            "description": "what the file's first bytes show it is (png, jpeg, gif, webp, pdf,"
            " zip, plain text), else application/octet-stream; never the client's claim"
        },
    )
    sha256 = fields.String(
        required=True,
        metadata={"description": "hex SHA-256 of the bytes", "pattern": "^[0-9a-f]{64}$"},
    )


class MessageOut(Schema):
    id = fields.UUID(required=True)
    author_id = fields.UUID(required=True)
    author_kind = fields.String(required=True, metadata={"enum": ["agent", "requester"]})
    body = fields.String(required=True)
    internal = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    attachments = fields.List(fields.Nested(AttachmentOut), required=True)


class MessageAddedOut(MessageOut):
    """A message just added, with its ticket and the ticket's requester: whom it concerns."""

    ticket_id = fields.UUID(required=True)
    requester_id = fields.UUID(required=True)


class TicketDetailOut(TicketOut):
    messages = fields.List(fields.Nested(MessageOut), required=True)


class TicketListOut(Schema):
    items = fields.List(fields.Nested(TicketOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class SearchHitOut(TicketOut):
    matched_terms = fields.Integer(
        required=True,
        metadata={"description": "how many of the query's words the ticket matches", "minimum": 1},
    )


class SearchResultsOut(Schema):
    """Tickets that match more of the query's words first, then the newest."""

    items = fields.List(fields.Nested(SearchHitOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
    terms_left_out = fields.Integer(
        required=True,
        metadata={
            "description": "words of the query too common to rank by (found in more rows of"
            " the index than one search examines), left out of this search",
            "minimum": 0,
        },
    )


class PlanOut(Schema):
    name = fields.String(required=True)
    price_per_agent = fields.Integer(required=True, metadata={"description": "minor units"})
    currency = fields.String(required=True)


class PlanListOut(Schema):
    items = fields.List(fields.Nested(PlanOut), required=True)


class SubscriptionOut(Schema):
    plan = fields.String(required=True)
    price_per_agent = fields.Integer(required=True)
    currency = fields.String(required=True)
    seats = fields.Integer(required=True)
    region = fields.String(required=True)
    tax_rate = fields.String(required=True)
    billed_until = fields.Date(required=True, allow_none=True)


class AddressOut(Schema):
    line1 = fields.String(required=True)
    line2 = fields.String(required=True, allow_none=True)
    city = fields.String(required=True)
    postcode = fields.String(required=True)
    country = fields.String(required=True)


class BillingAddressOut(Schema):
    address = fields.Nested(AddressOut, required=True)


class PaymentMethodOut(Schema):
    id = fields.UUID(required=True)
    brand = fields.String(required=True)
    last4 = fields.String(required=True)
    exp_month = fields.Integer(required=True)
    exp_year = fields.Integer(required=True)


class PaymentMethodListOut(Schema):
    items = fields.List(fields.Nested(PaymentMethodOut), required=True)


class InvoiceLineOut(Schema):
    description = fields.String(required=True)
    quantity = fields.Integer(required=True)
    unit_amount = fields.Integer(required=True)
    amount = fields.Integer(required=True)


class BillingContactOut(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)


class InvoiceOut(Schema):
    id = fields.UUID(required=True)
    number = fields.String(required=True)
    period_start = fields.Date(required=True)
    period_end = fields.Date(required=True)
    currency = fields.String(required=True)
    lines = fields.List(fields.Nested(InvoiceLineOut), required=True)
    subtotal = fields.Integer(required=True)
    tax_rate = fields.String(required=True)
    tax = fields.Integer(required=True)
    total = fields.Integer(required=True)
    company = fields.String(required=True)
    address = fields.Nested(AddressOut, required=True, allow_none=True)
    billing_contact = fields.Nested(BillingContactOut, required=True)
    status = fields.String(required=True, metadata={"enum": ["issued", "paid"]})
    issued_at = fields.DateTime(required=True)
    hold_until = fields.Date(required=True)


class InvoicePaidOut(InvoiceOut):
    charge = fields.String(required=True, metadata={"enum": ["succeeded", "declined"]})


class InvoiceListOut(Schema):
    items = fields.List(fields.Nested(InvoiceOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class EntryOut(Schema):
    log = fields.String(
        required=True,
        metadata={
            "enum": ["tenant", "frozen"],
            "description": "the tenant's own log, or the single chain of earlier releases"
            " (frozen: proved with log=frozen)",
        },
    )
    seq = fields.Integer(required=True, metadata={"description": "the entry's seq in its log"})
    event_id = fields.UUID(required=True)
    at = fields.DateTime(required=True)
    type = fields.String(required=True)
    service = fields.String(required=True)
    actor_id = fields.String(required=True, allow_none=True)
    tenant_id = fields.UUID(required=True, allow_none=True)
    subject_ids = fields.List(fields.String(), required=True)
    hash = fields.String(required=True)
    prev_hash = fields.String(required=True)
    payload = fields.Dict(
        required=True,
        metadata={
            "description": "ids only; an access entry's IP and user agent read "
            '"[erased]" once their day\'s key is shredded'
        },
    )


class EntryListOut(Schema):
    items = fields.List(fields.Nested(EntryOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class HeadOut(Schema):
    seq = fields.Integer(required=True)
    hash = fields.String(required=True)


class LogsVerdictOut(Schema):
    ok = fields.Boolean(required=True)
    logs = fields.Integer(required=True, metadata={"description": "tenant logs walked"})
    entries = fields.Integer(required=True)
    bad = fields.Integer(
        required=True, metadata={"description": "logs and platform checkpoints that failed"}
    )


class VerifyOut(Schema):
    """The verification job's last run, whole (the operator's view)."""

    ok = fields.Boolean(
        required=True, allow_none=True, metadata={"description": "null before the first run"}
    )
    entries = fields.Integer(required=True, metadata={"description": "entries the run reached"})
    head = fields.Nested(HeadOut, required=True, allow_none=True)
    first_bad_seq = fields.Integer(required=True, allow_none=True)
    first_bad_node_seq = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "the first entry whose stored leaf or tree nodes are wrong"},
    )
    checkpoints = fields.Integer(required=True, metadata={"description": "checkpoints verified"})
    verified_size = fields.Integer(
        required=True, metadata={"description": "the tree size of the last checkpoint verified"}
    )
    from_zero = fields.Boolean(required=True, allow_none=True)
    started_at = fields.String(required=True, allow_none=True)
    finished_at = fields.String(required=True, allow_none=True)
    tenant_logs = fields.Nested(
        LogsVerdictOut,
        required=True,
        allow_none=True,
        metadata={"description": "the per-tenant logs; the figures above are the frozen chain's"},
    )


class TenantCheckpointOut(Schema):
    signed_at = fields.String(required=True)
    signature_ok = fields.Boolean(required=True)


class PlatformVerdictOut(Schema):
    ok = fields.Boolean(
        required=True, allow_none=True, metadata={"description": "null before the first run"}
    )
    verified_at = fields.String(required=True, allow_none=True)


class TenantLogVerifyOut(Schema):
    """The tenant's own log walked against the heads the platform checkpoints signed for it."""

    ok = fields.Boolean(required=True)
    entries = fields.Integer(required=True)
    verified = fields.Integer(
        required=True, metadata={"description": "entries up to the last signed head that held"}
    )
    first_bad_seq = fields.Integer(required=True, allow_none=True)
    signed_heads = fields.Integer(
        required=True, metadata={"description": "distinct heads of this log signed"}
    )


class TenantVerifyOut(Schema):
    """A tenant's view: its own entries, and the platform job's verdict without figures."""

    scope = fields.String(required=True, metadata={"enum": ["tenant"]})
    ok = fields.Boolean(required=True)
    entries = fields.Integer(required=True, metadata={"description": "the tenant's own"})
    included = fields.Integer(
        required=True,
        metadata={
            "description": "own entries proved included in a signed checkpoint (the latest"
            " when they were proved)"
        },
    )
    pending = fields.Integer(
        required=True,
        metadata={
            "description": "own entries not proved yet: newer than the latest checkpoint, or"
            " past what one call proves (the next call goes on)"
        },
    )
    first_bad_seq = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "in the frozen chain (the own log's is under tenant_log)"},
    )
    tenant_log = fields.Nested(TenantLogVerifyOut, required=True)
    checkpoint = fields.Nested(
        TenantCheckpointOut,
        required=True,
        allow_none=True,
        metadata={"description": "the latest platform checkpoint (before one: the frozen chain's)"},
    )
    platform = fields.Nested(PlatformVerdictOut, required=True)


class CheckpointOut(Schema):
    tree_size = fields.Integer(required=True)
    root_hash = fields.String(required=True)
    signed_at = fields.String(required=True)
    key_id = fields.String(required=True)
    public_key = fields.String(required=True, metadata={"description": "Ed25519, base64"})
    signature = fields.String(required=True, metadata={"description": "base64"})
    note = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "the checkpoint as a C2SP tlog-checkpoint signed note; null for"
            " checkpoints signed before notes"
        },
    )


class PlatformCheckpointOut(Schema):
    """Signed over the root of a tree of every tenant log's head (sorted by tenant id) and the
    frozen chain's size and root."""

    number = fields.Integer(required=True)
    logs = fields.Integer(required=True, metadata={"description": "leaves: tenant logs' heads"})
    root_hash = fields.String(required=True)
    legacy_size = fields.Integer(required=True, metadata={"description": "the frozen chain's"})
    legacy_root = fields.String(required=True)
    signed_at = fields.String(required=True)
    key_id = fields.String(required=True)
    public_key = fields.String(required=True, metadata={"description": "Ed25519, base64"})
    signature = fields.String(
        required=True, metadata={"description": "base64, over the platform checkpoint message"}
    )


class TenantLogHeadOut(Schema):
    size = fields.Integer(required=True)
    root_hash = fields.String(required=True)
    head_hash = fields.String(required=True, metadata={"description": "its last entry's hash"})


class ProofOut(Schema):
    """An entry of the tenant's own log (``log`` tenant): its path in the log's tree, then the
    log's head's path in the platform checkpoint's tree; or, of the frozen chain (``log``
    frozen), its path in that chain's checkpoint, as before."""

    log = fields.String(required=True, metadata={"enum": ["tenant", "frozen"]})
    seq = fields.Integer(required=True)
    leaf_index = fields.Integer(required=True)
    leaf_hash = fields.String(required=True)
    audit_path = fields.List(fields.String(), required=True)
    checkpoint = fields.Nested(CheckpointOut, metadata={"description": "frozen only"})
    tenant_id = fields.UUID(metadata={"description": "tenant only"})
    tenant_log = fields.Nested(TenantLogHeadOut, metadata={"description": "tenant only"})
    log_index = fields.Integer(metadata={"description": "tenant only: the head's leaf index"})
    log_path = fields.List(fields.String(), metadata={"description": "tenant only"})
    platform_checkpoint = fields.Nested(
        PlatformCheckpointOut, metadata={"description": "tenant only"}
    )


class ServiceAnswerOut(Schema):
    status = fields.String(
        required=True, metadata={"enum": ["pending", "done", "retained", "failed"]}
    )
    detail = fields.String()
    basis = fields.String(metadata={"description": "the legal basis of a retention"})
    until = fields.String(metadata={"description": "the day a legal hold ends"})
    attempts = fields.Integer(metadata={"description": "how many times the command was sent"})
    next_attempt_at = fields.DateTime(
        metadata={"description": "when an unanswered or failed part is asked again"}
    )


PRIVACY_STATUSES = ["awaiting_approval", "pending", "completed", "failed", "denied"]


class ApprovalOut(Schema):
    decision = fields.String(required=True, metadata={"enum": list(DECISIONS)})
    decided_by = fields.UUID(required=True)
    decided_at = fields.DateTime(required=True)
    reason = fields.String(required=True)


class PrivacyRequestOut(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": PRIVACY_STATUSES})
    subject = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    services = fields.Dict(
        keys=fields.String(), values=fields.Nested(ServiceAnswerOut), required=True
    )
    created_at = fields.DateTime(required=True)
    due_at = fields.DateTime(required=True)
    completed_at = fields.DateTime(required=True, allow_none=True)
    filed_by = fields.UUID()
    approval = fields.Nested(ApprovalOut, allow_none=True)


class PrivacyRequestListOut(Schema):
    items = fields.List(fields.Nested(PrivacyRequestOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ApprovalPolicyOut(Schema):
    requires_approval = fields.List(fields.String(), required=True)
    source = fields.String(required=True, metadata={"enum": ["default", "tenant"]})


POLICY_CHANGE_STATUSES = list(CHANGE_STATUSES)


class PolicyChangeApprovalOut(Schema):
    decision = fields.String(required=True, metadata={"enum": list(DECISIONS)})
    decided_by = fields.UUID(required=True)
    decided_at = fields.DateTime(required=True)
    reason = fields.String(required=True)


class ApprovalPolicyChangeOut(Schema):
    """A change that lifts or narrows a policy requiring approval: it waits for an admin other
    than its filer (who was an admin before it was filed, acting with a key the filer did not
    issue). A newer filing, or a change applied meanwhile, supersedes it."""

    id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": POLICY_CHANGE_STATUSES})
    requires_approval = fields.List(
        fields.String(), required=True, metadata={"description": "the policy once approved"}
    )
    based_on = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "the policy it was filed against"},
    )
    filed_by = fields.UUID(required=True)
    created_at = fields.DateTime(required=True)
    approval = fields.Nested(PolicyChangeApprovalOut, required=True, allow_none=True)


class ApprovalPolicyChangeListOut(Schema):
    items = fields.List(fields.Nested(ApprovalPolicyChangeOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ReceiptOut(Schema):
    class Meta:
        unknown = "include"

    receipt_version = fields.Integer(required=True)
    request_id = fields.UUID(required=True)
    services = fields.Dict(required=True)
    signature = fields.Dict(required=True)


class RegisteredServiceOut(Schema):
    name = fields.String(required=True)
    categories = fields.List(fields.String(), required=True)
    commands = fields.List(fields.String(), required=True)


class RegisteredServicesOut(Schema):
    items = fields.List(fields.Nested(RegisteredServiceOut), required=True)


class ExportOut(Schema):
    export_version = fields.Integer(required=True)
    request_id = fields.UUID(required=True)
    subject_id = fields.UUID(required=True)
    generated_at = fields.DateTime(required=True)
    services = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        required=True,
        metadata={
            "description": "each service's part: accounts (record, consent history), "
            "tickets (tickets raised, replies; never internal notes), billing (invoices "
            "naming them), audit (staff reads: who, when, what)"
        },
    )


EXPORT_STATUSES = ["queued", "building", "ready", "failed", "expired", "deleted"]


class TenantExportOut(Schema):
    id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    requested_by = fields.UUID(required=True)
    status = fields.String(
        required=True,
        metadata={
            "enum": EXPORT_STATUSES,
            "description": "queued, building, then ready (downloadable until expires_at);"
            " expired, or deleted (an erasure in the tenant completed after it was made), once"
            " its archive is gone; failed if it could not be built",
        },
    )
    percent = fields.Integer(required=True, metadata={"description": "done, 0 to 100"})
    rows_expected = fields.Integer(required=True, allow_none=True)
    rows_done = fields.Integer(required=True)
    created_at = fields.DateTime(
        required=True, metadata={"description": "also the moment the export is as of"}
    )
    started_at = fields.DateTime(required=True, allow_none=True)
    ready_at = fields.DateTime(required=True, allow_none=True)
    expires_at = fields.DateTime(required=True, allow_none=True)
    counts = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        required=True,
        allow_none=True,
        metadata={"description": "rows per kind, once ready (as the signed manifest says)"},
    )
    chunks = fields.Integer(required=True, allow_none=True)
    bytes = fields.Integer(required=True, allow_none=True, metadata={"description": "archive"})
    sha256 = fields.String(
        required=True, allow_none=True, metadata={"description": "of the whole archive"}
    )
    ended_at = fields.DateTime(required=True, allow_none=True)
    end_reason = fields.String(
        required=True, allow_none=True, metadata={"enum": ["expired", "erasure", "failed", None]}
    )
    ended_by_request = fields.UUID(
        required=True, allow_none=True, metadata={"description": "the erasure that ended it"}
    )
    attempts = fields.Integer(required=True)


class TenantExportListOut(Schema):
    items = fields.List(fields.Nested(TenantExportOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class RetentionPolicyOut(Schema):
    category = fields.String(required=True)
    days = fields.Integer(required=True)
    overridden = fields.Boolean(required=True, metadata={"description": "this tenant's own"})
    description = fields.String(required=True)


class RetentionPolicyListOut(Schema):
    items = fields.List(fields.Nested(RetentionPolicyOut), required=True)


class RetentionPeriodChangeOut(Schema):
    """A shortened period, while the tenant's approval policy names erasure: it waits for an
    admin other than its filer, by the rules a request's approval follows. A newer filing for
    the category, or a period applied meanwhile, supersedes it."""

    id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": POLICY_CHANGE_STATUSES})
    category = fields.String(required=True)
    days = fields.Integer(required=True, metadata={"description": "the period once approved"})
    based_on_days = fields.Integer(
        required=True, metadata={"description": "the period it was filed against"}
    )
    filed_by = fields.UUID(required=True)
    created_at = fields.DateTime(required=True)
    approval = fields.Nested(PolicyChangeApprovalOut, required=True, allow_none=True)


class RetentionPeriodChangeListOut(Schema):
    items = fields.List(fields.Nested(RetentionPeriodChangeOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class StatusOut(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean())


class Problem(Schema):
    type = fields.String(
        required=True,
        metadata={
            "format": "uri-reference",
            "description": "the kind of problem, one of those /docs/problems lists",
            "example": "/docs/problems#version-conflict",
        },
    )
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"description": "for validation-failed: each field and what is wrong with it"},
    )
    request_id = fields.UUID(
        required=True,
        metadata={"description": "the X-Request-Id of the answer: quote it to the operator"},
    )
    trace_id = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "pattern": "^[0-9a-f]{32}$",
            "description": "the trace the request was recorded under (null when none was)",
        },
    )


class MeOut(Schema):
    agent_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    role = fields.String(required=True, metadata={"enum": list(ROLES)})
    key_id = fields.UUID(required=True)
    key_is_own = fields.Boolean(
        required=True,
        metadata={
            "description": "false for a key another admin minted or created the agent with:"
            " it does not count as a second pair of eyes on that admin's requests until the"
            " agent claims a key of their own (POST /v1/me/api-keys)"
        },
    )
    policy_version = fields.String(
        required=True, metadata={"description": "the current policy version"}
    )
    policy_acceptance_pending = fields.Boolean(
        required=True,
        metadata={
            "description": "true until the agent accepts the current policy version"
            " (POST /v1/policies/accept); each agent who has not is mailed once when a new"
            " version is published"
        },
    )


class AuditKeyOut(Schema):
    public_key = fields.String(required=True, metadata={"description": "raw key, base64"})
    key_id = fields.String(required=True)
    verifier_key = fields.String(
        required=True, metadata={"description": "signed-note verifier key: name+id+base64"}
    )
    valid_from = fields.String(required=True, metadata={"description": "ISO-8601, inclusive"})
    valid_until = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "ISO-8601, exclusive; null: no end yet"},
    )


class PublicKeyOut(Schema):
    algorithm = fields.String(required=True, metadata={"enum": ["Ed25519"]})
    key_id = fields.String(required=True, metadata={"description": "the key signing now"})
    public_key = fields.String(
        required=True, metadata={"description": "the key signing now: raw key, base64"}
    )
    origin = fields.String(
        required=True, metadata={"description": "the ledger's name in its signed checkpoints"}
    )
    verifier_key = fields.String(
        required=True, metadata={"description": "the key signing now, as a note verifier key"}
    )
    keys = fields.List(
        fields.Nested(AuditKeyOut),
        required=True,
        metadata={"description": "every key checkpoints verify under, with its period"},
    )


# --- operations (gateway/operations.py) ---------------------------------------------------------


class ServiceHealthOut(Schema):
    ready = fields.Boolean(required=True)
    database = fields.Boolean(required=True)
    outbox_lag = fields.Integer(required=True, metadata={"description": "unpublished events"})
    outbox_oldest_seconds = fields.Float(required=True, allow_none=True)
    reachable = fields.Boolean(metadata={"description": "the service answered its health RPC"})


class OperatorHealthOut(Schema):
    services = fields.Dict(
        keys=fields.String(), values=fields.Nested(ServiceHealthOut), required=True
    )
    broker = fields.Boolean(required=True)


class DeadLetterOut(Schema):
    queue = fields.String(required=True, metadata={"description": "the consumer queue"})
    message_id = fields.String(required=True, allow_none=True)
    event_type = fields.String(required=True, allow_none=True)
    deaths = fields.Integer(required=True)
    delivery_count = fields.Integer(allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    dead_since = fields.DateTime(required=True, allow_none=True)


class DeadLetterListOut(Schema):
    items = fields.List(fields.Nested(DeadLetterOut), required=True)


class ReplayDeadLettersV1(Schema):
    ids = fields.List(fields.String(), metadata={"description": "only these message ids"})


class ReplayedOut(Schema):
    replayed = fields.Integer(required=True)


class MailOut(Schema):
    id = fields.UUID(required=True)
    service = fields.String(
        required=True,
        metadata={"enum": list(SENDS_MAIL), "description": "the service that sends it"},
    )
    kind = fields.String(required=True, metadata={"description": "`ticket_reply`: a public reply"})
    recipient_id = fields.UUID(
        required=True, metadata={"description": "whom, by id (a ticket's requester)"}
    )
    reference_id = fields.UUID(
        required=True, allow_none=True, metadata={"description": "what it carries (the message)"}
    )
    status = fields.String(
        required=True,
        metadata={
            "enum": list(MAIL_STATUSES),
            "description": "failed: refused for good (a 5xx), or still refused when the retry"
            " window closed",
        },
    )
    attempts = fields.Integer(required=True)
    last_code = fields.Integer(
        required=True, allow_none=True, metadata={"description": "the relay's last reply code"}
    )
    last_outcome = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "enum": list(MAIL_OUTCOMES),
            "description": "of the last attempt: temporary (a 4xx, no connection), permanent (a"
            " 5xx), unrecorded (its attempts never got recorded before its window closed)",
        },
    )
    created_at = fields.DateTime(required=True)
    next_attempt_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)


class MailListOut(Schema):
    items = fields.List(fields.Nested(MailOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
