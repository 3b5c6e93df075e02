"""What retention publishes about requests and approvals, for the audit ledger, the gateway's
webhooks and accounts' notices to admins: messages it does not store (its requests and policy
changes are rows, not event streams). A version's meaning never
changes: a new meaning is a new version. Each payload is checked against its schema when sent."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from kernel.envelope import EventRegistry, EventType
from services.retention.commands import APPROVABLE_TYPES

DECISIONS = ("approved", "denied")
# Every kind of request retention tracks: those filed through the API, a lifted restriction,
# and a tenant's destruction after its grace.
REQUEST_TYPES = (
    "access",
    "erasure",
    "rectification",
    "restriction",
    "objection",
    "lift_restriction",
    "destruction",
)
SUBJECT_KINDS = ("contact", "agent", "tenant")


class PrivacyRequestDecidedV1(Schema):
    request_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    decided_by = fields.UUID(required=True)


class PrivacyRequestDecidedV2(PrivacyRequestDecidedV1):
    """V1 and what was decided, with which key and whom that key answers to (an admin who
    mints a key for another holds it too), and why: the reason as retention keeps it, sealed
    under the tenant's key, so the tenant's destruction makes it unreadable in the ledger too."""

    decision = fields.String(required=True, validate=validate.OneOf(DECISIONS))
    # None in entries upcast from v1, which did not record them.
    key_id = fields.UUID(required=True, allow_none=True)
    key_issuer_id = fields.UUID(required=True, allow_none=True)
    reason_sealed = fields.String(required=True, allow_none=True)


class PrivacyRequestCompletedV1(Schema):
    """Every service that had to answer a request has answered (an access request: at once, its
    export is gathered when read). Ids and states only: whom it concerned by id, never how."""

    request_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf(REQUEST_TYPES))
    subject_kind = fields.String(required=True, validate=validate.OneOf(SUBJECT_KINDS))
    subject_id = fields.UUID(required=True)


class PrivacyRequestAwaitingApprovalV1(Schema):
    """Filed, and waiting for a second admin to approve or deny it (the tenant's approval
    policy): nothing is sent until then, and the legal clock runs from filing (``due_at``).
    Ids and states only (the tenant's admins are told, by mail, to decide it)."""

    request_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf(REQUEST_TYPES))
    due_at = fields.AwareDateTime(required=True)


OPEN_STATUSES = ("awaiting_approval", "pending")


class PrivacyRequestDueSoonV1(Schema):
    """An open request is within ``LEDGERDESK_PRIVACY_DUE_SOON_DAYS`` of its deadline: still
    awaiting approval, or still owed an answer. Announced once per request."""

    request_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf(REQUEST_TYPES))
    status = fields.String(required=True, validate=validate.OneOf(OPEN_STATUSES))
    due_at = fields.AwareDateTime(required=True)


class PrivacyRequestOverdueV1(Schema):
    """A request passed its due date before every service answered (or before a second admin
    decided it) and failed: an alert, and the end of the request."""

    request_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)


class PrivacyRequestOverdueV2(PrivacyRequestOverdueV1):
    """V1 and the request's type, so a notice can name it without asking retention."""

    # None in copies upcast from v1, which did not carry it.
    type = fields.String(required=True, allow_none=True, validate=validate.OneOf(REQUEST_TYPES))


def _type_unknown(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "type": None}


class ApprovalPolicyChangeFiledV1(Schema):
    """A change lifting or narrowing a policy that requires approval: it waits for another
    admin."""

    change_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    filed_by = fields.UUID(required=True)
    requires_approval = fields.List(
        fields.String(validate=validate.OneOf(APPROVABLE_TYPES)), required=True
    )
    based_on = fields.List(fields.String(validate=validate.OneOf(APPROVABLE_TYPES)), required=True)


class ApprovalPolicyChangeDecidedV1(Schema):
    change_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    decided_by = fields.UUID(required=True)
    decision = fields.String(required=True, validate=validate.OneOf(DECISIONS))
    key_id = fields.UUID(required=True)
    key_issuer_id = fields.UUID(required=True)
    reason_sealed = fields.String(required=True)


class ApprovalPolicyChangedV1(Schema):
    """The tenant's policy as it now is: widened at once, or a change approved
    (``change_id``)."""

    tenant_id = fields.UUID(required=True)
    requires_approval = fields.List(
        fields.String(validate=validate.OneOf(APPROVABLE_TYPES)), required=True
    )
    change_id = fields.UUID(required=True, allow_none=True)


class RetentionPeriodChangeFiledV1(Schema):
    """A change shortening a retention period while erasure needs approval: it waits for
    another admin."""

    change_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    filed_by = fields.UUID(required=True)
    category = fields.String(required=True)
    days = fields.Integer(required=True)
    based_on_days = fields.Integer(required=True)


class RetentionPeriodChangedV1(Schema):
    """A tenant's period for a category as it now is: lengthened (or shortened where erasure
    needs no approval) at once, or a change approved (``change_id``)."""

    tenant_id = fields.UUID(required=True)
    category = fields.String(required=True)
    days = fields.Integer(required=True)
    change_id = fields.UUID(required=True, allow_none=True)


EXPORT_END_REASONS = ("expired", "erasure", "failed")


class TenantExportRequestedV1(Schema):
    """An admin asked for the tenant's whole export (``services.retention.tenant_exports``)."""

    export_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    requested_by = fields.UUID(required=True)


class TenantExportReadyV1(TenantExportRequestedV1):
    """The archive is complete and signed: how many rows of each kind it holds, its size and
    SHA-256. Counts and ids, never a row."""

    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    archive_bytes = fields.Integer(required=True)
    archive_sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))


class TenantExportEndedV1(Schema):
    """The archive's bytes are gone and its key shredded: it expired, an erasure in the tenant
    (``request_id``) completed after it was made, or it could not be built."""

    export_id = fields.UUID(required=True)
    tenant_id = fields.UUID(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(EXPORT_END_REASONS))
    request_id = fields.UUID(required=True, allow_none=True)


def _decided(decision: str):
    def upcast(payload: dict[str, Any]) -> dict[str, Any]:
        return {
            **payload,
            "decision": decision,
            "key_id": None,
            "key_issuer_id": None,
            "reason_sealed": None,
        }

    return upcast


MESSAGES = EventRegistry(
    *(
        EventType(
            f"privacy_request_{decision}",
            {1: PrivacyRequestDecidedV1, 2: PrivacyRequestDecidedV2},
            upcasters={1: _decided(decision)},
            published=True,
        )
        for decision in DECISIONS
    ),
    EventType("privacy_request_completed", {1: PrivacyRequestCompletedV1}, published=True),
    EventType(
        "privacy_request_awaiting_approval",
        {1: PrivacyRequestAwaitingApprovalV1},
        published=True,
    ),
    EventType("privacy_request_due_soon", {1: PrivacyRequestDueSoonV1}, published=True),
    EventType(
        "privacy_request_overdue",
        {1: PrivacyRequestOverdueV1, 2: PrivacyRequestOverdueV2},
        upcasters={1: _type_unknown},
        published=True,
    ),
    EventType("approval_policy_change_filed", {1: ApprovalPolicyChangeFiledV1}, published=True),
    *(
        EventType(
            f"approval_policy_change_{decision}",
            {1: ApprovalPolicyChangeDecidedV1},
            published=True,
        )
        for decision in DECISIONS
    ),
    EventType("approval_policy_changed", {1: ApprovalPolicyChangedV1}, published=True),
    EventType("retention_period_change_filed", {1: RetentionPeriodChangeFiledV1}, published=True),
    *(
        # A decision on a period change says what a decision on a policy change says.
        EventType(
            f"retention_period_change_{decision}",
            {1: ApprovalPolicyChangeDecidedV1},
            published=True,
        )
        for decision in DECISIONS
    ),
    EventType("retention_period_changed", {1: RetentionPeriodChangedV1}, published=True),
    EventType("tenant_export_requested", {1: TenantExportRequestedV1}, published=True),
    EventType("tenant_export_ready", {1: TenantExportReadyV1}, published=True),
    EventType("tenant_export_ended", {1: TenantExportEndedV1}, published=True),
)
