"""The OpenAPI 3 document, generated from the schemas the gateway validates and answers with.

One table lists every endpoint; a test checks the table against the gateway's routes, so an
endpoint cannot exist undocumented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway import schemas
from gateway.bodies import BODY_BYTES, MAX_BODY_BYTES, MAX_JSON_DEPTH

ERRORS = {
    "400": f"malformed JSON, or JSON nested more than {MAX_JSON_DEPTH} levels deep",
    "401": "no or bad credentials",
    "403": "role not allowed, the tenant is cancelled, or four eyes refuse this decider",
    "404": "not found (also: another tenant's)",
    "405": "method not allowed",
    "409": "version or state conflict",
    "413": (
        f"body too large ({BODY_BYTES >> 10} KiB; {MAX_BODY_BYTES >> 20} MiB for a ticket's or a"
        " message's text)"
    ),
    "422": "validation failed",
    "428": "If-Match is required",
    "429": "rate limited, per client address (every request, refused credentials, sign-ups) or"
    " per API key (see Retry-After)",
    "503": "a dependency is unavailable",
}
AUTH_ERRORS = ("401", "403", "429", "503")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    status: str
    response: str | None
    auth: str | None = "bearer"  # "bearer", "operator" or None
    roles: tuple[str, ...] = ()
    body: str | None = None
    errors: tuple[str, ...] = ()
    list_params: bool = False
    if_match: bool = False
    idempotent: bool = False
    etag: bool = False
    path_params: tuple[str, ...] = field(default=())
    filters: tuple[str, ...] = field(default=())
    # Other successful answers: (status, response schema, description).
    also: tuple[tuple[str, str, str], ...] = field(default=())


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "post",
        "/v1/signup",
        "Sign up a tenant with its first admin",
        "201",
        "SignUpOut",
        auth=None,
        body="SignUpV1",
        errors=("400", "413", "422", "429", "503"),
        idempotent=True,
    ),
    Endpoint(
        "get",
        "/v1/tenant",
        "The caller's tenant (also while cancelled)",
        "200",
        "TenantOut",
        roles=("admin", "agent", "auditor"),
    ),
    Endpoint(
        "delete",
        "/v1/tenant",
        "Cancel the tenant; destroyed after the grace period",
        "202",
        "TenantOut",
        roles=("admin",),
        errors=("409",),
    ),
    Endpoint(
        "post",
        "/v1/tenant/reactivate",
        "Reactivate a cancelled tenant during its grace",
        "200",
        "TenantOut",
        roles=("admin",),
        errors=("409", "422"),
        idempotent=True,
    ),
    Endpoint(
        "post",
        "/v1/agents",
        "Create an agent and its first API key",
        "201",
        "AgentCreatedOut",
        roles=("admin",),
        body="CreateAgentV1",
        errors=("400", "413", "422"),
        idempotent=True,
    ),
    Endpoint(
        "get",
        "/v1/agents",
        "List the tenant's agents",
        "200",
        "AgentListOut",
        roles=("admin",),
        errors=("422",),
        list_params=True,
    ),
    Endpoint(
        "get",
        "/v1/agents/{agent_id}",
        "One agent",
        "200",
        "AgentOut",
        roles=("admin",),
        errors=("404",),
        path_params=("agent_id",),
    ),
    Endpoint(
        "delete",
        "/v1/agents/{agent_id}",
        "Deactivate an agent; its keys stop at once",
        "200",
        "AgentOut",
        roles=("admin",),
        errors=("404", "409"),
        path_params=("agent_id",),
    ),
    Endpoint(
        "post",
        "/v1/agents/{agent_id}/api-keys",
        "Issue another API key for an agent",
        "201",
        "ApiKeyOut",
        roles=("admin",),
        errors=("404", "409", "422"),
        idempotent=True,
        path_params=("agent_id",),
    ),
    Endpoint(
        "delete",
        "/v1/agents/{agent_id}/api-keys/{key_id}",
        "Revoke an API key",
        "204",
        None,
        roles=("admin",),
        errors=("404", "409"),
        path_params=("agent_id", "key_id"),
    ),
    Endpoint(
        "post",
        "/v1/contacts",
        "Create a contact (an end customer)",
        "201",
        "ContactOut",
        roles=("admin", "agent"),
        body="CreateContactV1",
        errors=("400", "413", "422"),
        idempotent=True,
        etag=True,
    ),
    Endpoint(
        "get",
        "/v1/contacts",
        "List the tenant's contacts",
        "200",
        "ContactListOut",
        roles=("admin", "agent"),
        errors=("422",),
        list_params=True,
    ),
    Endpoint(
        "get",
        "/v1/contacts/{contact_id}",
        "One contact",
        "200",
        "ContactOut",
        roles=("admin", "agent"),
        errors=("404",),
        etag=True,
        path_params=("contact_id",),
    ),
    Endpoint(
        "patch",
        "/v1/contacts/{contact_id}",
        "Rectify a contact",
        "200",
        "ContactOut",
        roles=("admin", "agent"),
        body="RectifyContactV1",
        errors=("400", "404", "409", "413", "422", "428"),
        if_match=True,
        etag=True,
        path_params=("contact_id",),
    ),
    Endpoint(
        "put",
        "/v1/contacts/{contact_id}/consent",
        "Record marketing consent",
        "200",
        "ConsentSetOut",
        roles=("admin", "agent"),
        body="SetConsentV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("contact_id",),
    ),
    Endpoint(
        "get",
        "/v1/contacts/{contact_id}/consent",
        "Consent now and its full history",
        "200",
        "ConsentStateOut",
        roles=("admin", "agent"),
        errors=("404",),
        path_params=("contact_id",),
    ),
    Endpoint(
        "post",
        "/v1/tickets",
        "Open a ticket for a requester (a contact)",
        "201",
        "TicketOut",
        roles=("admin", "agent"),
        body="CreateTicketV1",
        errors=("400", "413", "422"),
        idempotent=True,
        etag=True,
    ),
    Endpoint(
        "get",
        "/v1/tickets",
        "List tickets; filter by status, assignee, requester",
        "200",
        "TicketListOut",
        roles=("admin", "agent"),
        errors=("422",),
        list_params=True,
        filters=("status", "assignee_id", "requester_id"),
    ),
    Endpoint(
        "get",
        "/v1/tickets/{ticket_id}",
        "One ticket with its messages",
        "200",
        "TicketDetailOut",
        roles=("admin", "agent"),
        errors=("404",),
        etag=True,
        path_params=("ticket_id",),
    ),
    Endpoint(
        "patch",
        "/v1/tickets/{ticket_id}",
        "Change status, priority, assignee or tags",
        "200",
        "TicketDetailOut",
        roles=("admin", "agent"),
        body="UpdateTicketV1",
        errors=("400", "404", "409", "413", "422", "428"),
        if_match=True,
        etag=True,
        path_params=("ticket_id",),
    ),
    Endpoint(
        "post",
        "/v1/tickets/{ticket_id}/messages",
        "Add a public reply or an internal note",
        "201",
        "MessageAddedOut",
        roles=("admin", "agent"),
        body="AddMessageV1",
        errors=("400", "404", "409", "413", "422"),
        idempotent=True,
        path_params=("ticket_id",),
    ),
    Endpoint(
        "get",
        "/v1/billing/plans",
        "The plan catalogue",
        "200",
        "PlanListOut",
        roles=("admin",),
        errors=("422",),
    ),
    Endpoint(
        "get",
        "/v1/billing/subscription",
        "The tenant's plan, seats and tax",
        "200",
        "SubscriptionOut",
        roles=("admin",),
        errors=("404", "422"),
    ),
    Endpoint(
        "put",
        "/v1/billing/subscription",
        "Change plan",
        "200",
        "SubscriptionOut",
        roles=("admin",),
        body="ChangePlanV1",
        errors=("400", "404", "409", "413", "422"),
    ),
    Endpoint(
        "put",
        "/v1/billing/address",
        "The billed company's address, for invoices",
        "200",
        "BillingAddressOut",
        roles=("admin",),
        body="SetBillingAddressV1",
        errors=("400", "404", "409", "413", "422"),
    ),
    Endpoint(
        "post",
        "/v1/billing/payment-methods",
        "Add a payment method by processor token (card numbers are refused)",
        "201",
        "PaymentMethodOut",
        roles=("admin",),
        body="AddPaymentMethodV1",
        errors=("400", "404", "409", "413", "422"),
        idempotent=True,
    ),
    Endpoint(
        "get",
        "/v1/billing/payment-methods",
        "Payment methods: brand, last 4, expiry",
        "200",
        "PaymentMethodListOut",
        roles=("admin",),
        errors=("422",),
    ),
    Endpoint(
        "get",
        "/v1/billing/invoices",
        "Invoices, oldest first",
        "200",
        "InvoiceListOut",
        roles=("admin",),
        errors=("422",),
        list_params=True,
    ),
    Endpoint(
        "get",
        "/v1/billing/invoices/{invoice_id}",
        "One invoice",
        "200",
        "InvoiceOut",
        roles=("admin",),
        errors=("404", "422"),
        path_params=("invoice_id",),
    ),
    Endpoint(
        "post",
        "/v1/billing/invoices/{invoice_id}/pay",
        "Charge the newest payment method for an invoice",
        "200",
        "InvoicePaidOut",
        roles=("admin",),
        errors=("404", "409", "422"),
        idempotent=True,
        path_params=("invoice_id",),
    ),
    Endpoint(
        "get",
        "/v1/audit/entries",
        "Ledger entries of the tenant, in ledger order",
        "200",
        "EntryListOut",
        roles=("admin", "auditor"),
        errors=("422",),
        list_params=True,
        filters=("from", "to", "type", "subject_id"),
    ),
    Endpoint(
        "get",
        "/v1/audit/subjects/{subject_id}/entries",
        "Who touched this person's data: every entry naming them",
        "200",
        "EntryListOut",
        roles=("admin", "auditor"),
        errors=("404", "422"),
        list_params=True,
        path_params=("subject_id",),
        filters=("from", "to", "type"),
    ),
    Endpoint(
        "get",
        "/v1/audit/verify",
        "The tenant's own entries checked against the latest signed checkpoint (those not"
        " proved before, a bounded number per call), and the platform verification job's"
        " verdict (no platform-wide figures)",
        "200",
        "TenantVerifyOut",
        roles=("admin", "auditor"),
    ),
    Endpoint(
        "get",
        "/v1/audit/entries/{seq}/proof",
        "An inclusion proof against the latest signed checkpoint; 409 with Retry-After"
        " until a checkpoint covers the entry",
        "200",
        "ProofOut",
        roles=("admin", "auditor"),
        errors=("404", "409"),
        path_params=("seq",),
    ),
    Endpoint(
        "get",
        "/v1/operator/audit/entries",
        "Ledger entries of every tenant (operator)",
        "200",
        "EntryListOut",
        auth="operator",
        errors=("422",),
        list_params=True,
        filters=("from", "to", "type", "subject_id"),
    ),
    Endpoint(
        "get",
        "/v1/operator/audit/verify",
        "The verification job's last run over the whole ledger (operator)",
        "200",
        "VerifyOut",
        auth="operator",
    ),
    Endpoint(
        "post",
        "/v1/privacy/requests",
        "File an access, erasure, rectification, restriction or objection request for a subject;"
        " while the tenant is cancelled, access requests only",
        "202",
        "PrivacyRequestOut",
        roles=("admin",),
        body="FilePrivacyRequestV1",
        errors=("400", "404", "413", "422"),
    ),
    Endpoint(
        "get",
        "/v1/privacy/requests",
        "This tenant's requests, oldest first; filter by status (also while cancelled)",
        "200",
        "PrivacyRequestListOut",
        roles=("admin",),
        errors=("422",),
        list_params=True,
        filters=("status",),
    ),
    Endpoint(
        "post",
        "/v1/privacy/requests/{request_id}/approve",
        "Approve a request that waits for approval: not by the admin who filed it (409), nor"
        " with a key the filer issued, and only by an admin since before it was filed (403);"
        " while the tenant is cancelled, access requests only",
        "200",
        "PrivacyRequestOut",
        roles=("admin",),
        body="DecideRequestV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("request_id",),
    ),
    Endpoint(
        "post",
        "/v1/privacy/requests/{request_id}/deny",
        "Deny a request that waits for approval, with the reason (same rules as approving);"
        " while the tenant is cancelled, access requests only",
        "200",
        "PrivacyRequestOut",
        roles=("admin",),
        body="DecideRequestV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("request_id",),
    ),
    Endpoint(
        "get",
        "/v1/privacy/approval-policy",
        "The request types that wait for a second admin's approval",
        "200",
        "ApprovalPolicyOut",
        roles=("admin",),
    ),
    Endpoint(
        "put",
        "/v1/privacy/approval-policy",
        "Set the request types that wait for a second admin's approval: widening the policy"
        " applies at once (200, the policy); lifting or narrowing a policy that requires"
        " approval is a change another admin must approve (202, the change)",
        "200",
        "ApprovalPolicyOut",
        roles=("admin",),
        body="SetApprovalPolicyV1",
        errors=("400", "413", "422"),
        also=(
            (
                "202",
                "ApprovalPolicyChangeOut",
                "the change waits for another admin's approval",
            ),
        ),
    ),
    Endpoint(
        "get",
        "/v1/privacy/approval-policy/changes",
        "Changes of the approval policy that waited or wait for approval, oldest first",
        "200",
        "ApprovalPolicyChangeListOut",
        roles=("admin",),
        errors=("422",),
        list_params=True,
        filters=("status",),
    ),
    Endpoint(
        "get",
        "/v1/privacy/approval-policy/changes/{change_id}",
        "A change of the approval policy",
        "200",
        "ApprovalPolicyChangeOut",
        roles=("admin",),
        errors=("404",),
        path_params=("change_id",),
    ),
    Endpoint(
        "post",
        "/v1/privacy/approval-policy/changes/{change_id}/approve",
        "Approve a waiting change of the approval policy, which then applies: not by its filer,"
        " nor with a key the filer issued, and only by an admin since before it was filed (403);"
        " 409 when it no longer waits (decided, or superseded by a newer change)",
        "200",
        "ApprovalPolicyChangeOut",
        roles=("admin",),
        body="DecideRequestV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("change_id",),
    ),
    Endpoint(
        "post",
        "/v1/privacy/approval-policy/changes/{change_id}/deny",
        "Deny a waiting change of the approval policy, with the reason (same rules as approving)",
        "200",
        "ApprovalPolicyChangeOut",
        roles=("admin",),
        body="DecideRequestV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("change_id",),
    ),
    Endpoint(
        "get",
        "/v1/privacy/requests/{request_id}",
        "A request and every service's answer (also while cancelled)",
        "200",
        "PrivacyRequestOut",
        roles=("admin",),
        errors=("404",),
        path_params=("request_id",),
    ),
    Endpoint(
        "get",
        "/v1/privacy/requests/{request_id}/export",
        "An access request's export: everything every service holds about the subject (also"
        " while cancelled, during the grace)",
        "200",
        "ExportOut",
        roles=("admin",),
        errors=("404",),
        path_params=("request_id",),
    ),
    Endpoint(
        "get",
        "/v1/privacy/requests/{request_id}/receipt",
        "A completed erasure's receipt, signed with the audit key",
        "200",
        "ReceiptOut",
        roles=("admin", "auditor"),
        errors=("404",),
        path_params=("request_id",),
    ),
    Endpoint(
        "get",
        "/v1/retention/policies",
        "Retention periods per data category",
        "200",
        "RetentionPolicyListOut",
        roles=("admin",),
    ),
    Endpoint(
        "put",
        "/v1/retention/policies/{category}",
        "Set this tenant's period: lengthening it applies at once (200, the period); shortening"
        " it while the approval policy names erasure is a change another admin must approve"
        " (202, the change)",
        "200",
        "RetentionPolicyOut",
        roles=("admin",),
        body="SetPolicyV1",
        errors=("400", "404", "413", "422"),
        path_params=("category",),
        also=(
            (
                "202",
                "RetentionPeriodChangeOut",
                "the change waits for another admin's approval",
            ),
        ),
    ),
    Endpoint(
        "get",
        "/v1/retention/period-changes",
        "Shortened periods that waited or wait for approval, oldest first",
        "200",
        "RetentionPeriodChangeListOut",
        roles=("admin",),
        errors=("422",),
        list_params=True,
        filters=("status",),
    ),
    Endpoint(
        "get",
        "/v1/retention/period-changes/{change_id}",
        "A shortened period that waits or waited for approval",
        "200",
        "RetentionPeriodChangeOut",
        roles=("admin",),
        errors=("404",),
        path_params=("change_id",),
    ),
    Endpoint(
        "post",
        "/v1/retention/period-changes/{change_id}/approve",
        "Approve a shortened period, which then applies: not by its filer, nor with a key the"
        " filer issued, and only by an admin since before it was filed, with a key issued before"
        " it (403); 409 when it no longer waits",
        "200",
        "RetentionPeriodChangeOut",
        roles=("admin",),
        body="DecideRequestV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("change_id",),
    ),
    Endpoint(
        "post",
        "/v1/retention/period-changes/{change_id}/deny",
        "Deny a shortened period, with the reason (same rules as approving)",
        "200",
        "RetentionPeriodChangeOut",
        roles=("admin",),
        body="DecideRequestV1",
        errors=("400", "404", "409", "413", "422"),
        path_params=("change_id",),
    ),
    Endpoint(
        "get",
        "/v1/operator/privacy/services",
        "The services retention waits for, and their data categories (operator)",
        "200",
        "RegisteredServicesOut",
        auth="operator",
    ),
    Endpoint(
        "get",
        "/v1/policies/current",
        "The current policy version",
        "200",
        "PolicyOut",
        auth=None,
        errors=("404", "503"),
    ),
    Endpoint(
        "post",
        "/v1/operator/policies",
        "Publish a new policy version (operator)",
        "201",
        "PolicyOut",
        auth="operator",
        body="PublishPolicyV1",
        errors=("400", "409", "413", "422"),
        idempotent=True,
    ),
    Endpoint(
        "get",
        "/v1/policies/pending-acceptance",
        "Agents who have not accepted the current version",
        "200",
        "PendingAcceptanceOut",
        roles=("admin",),
        errors=("404",),
    ),
    Endpoint(
        "post",
        "/v1/policies/accept",
        "Accept the current policy version",
        "200",
        "AcceptanceOut",
        roles=("admin", "agent", "auditor"),
        body="AcceptPolicyV1",
        errors=("400", "404", "409", "413", "422"),
    ),
    Endpoint("get", "/healthz", "The process is up", "200", "StatusOut", auth=None),
    Endpoint(
        "get",
        "/readyz",
        "The broker and the services' databases are reachable",
        "200",
        "StatusOut",
        auth=None,
        errors=("503",),
    ),
    Endpoint("get", "/v1/openapi.json", "This document", "200", None, auth=None),
    Endpoint(
        "get",
        "/metrics",
        "Prometheus metrics of this process (the operator token; the ops port needs none)",
        "200",
        None,
        auth="operator",
    ),
    Endpoint(
        "get",
        "/v1/operator/health",
        "Every service's readiness and outbox lag, and the broker (operator)",
        "200",
        "OperatorHealthOut",
        auth="operator",
    ),
    Endpoint(
        "get",
        "/v1/operator/dead-letters",
        "Dead letters of every consumer queue, or of ?queue= (ids and reasons only; operator)",
        "200",
        "DeadLetterListOut",
        auth="operator",
        errors=("404", "422"),
        filters=("queue",),
    ),
    Endpoint(
        "post",
        "/v1/operator/dead-letters/{queue}/replay",
        "Move dead letters (all, or those in ids) back into their queue (operator)",
        "200",
        "ReplayedOut",
        auth="operator",
        body="ReplayDeadLettersV1",
        errors=("400", "404", "413", "422"),
        path_params=("queue",),
    ),
    Endpoint(
        "get",
        "/v1/me",
        "Who the key belongs to: agent, tenant and role, and whether the key is the agent's own",
        "200",
        "MeOut",
        roles=("admin", "agent", "auditor"),
    ),
    Endpoint(
        "post",
        "/v1/me/api-keys",
        "Claim a key of your own: it answers to you alone, and every key you held ends",
        "201",
        "ClaimedApiKeyOut",
        roles=("admin", "agent", "auditor"),
    ),
    Endpoint(
        "get",
        "/v1/audit/public-key",
        "The platform's audit public keys (with validity periods and the ledger's origin),"
        " which sign receipts and checkpoints",
        "200",
        "PublicKeyOut",
        roles=("admin", "auditor"),
    ),
)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": "Problem"}},
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.response:
        success["content"] = {"application/json": {"schema": endpoint.response}}
    if endpoint.etag:
        success["headers"] = {
            "ETag": {"schema": {"type": "string"}, "description": "the version, for If-Match"}
        }
    if endpoint.path == "/v1/openapi.json":
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    if endpoint.path == "/metrics":
        success["content"] = {"text/plain": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {endpoint.status: success}
    for status, response, description in endpoint.also:
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": response}},
        }
    # Every request, public ones included, passes its client address's bucket first.
    errors = set(endpoint.errors) | {"429"}
    if endpoint.auth:
        errors |= set(AUTH_ERRORS)
    if endpoint.auth == "operator":
        errors.discard("403")
    for code in sorted(errors):
        responses[code] = _problem(ERRORS[code])
    if "429" in responses:
        responses["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    if endpoint.path == "/v1/audit/entries/{seq}/proof":
        responses["409"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}

    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1} if name == "seq" else {"type": "string"},
        }
        for name in endpoint.path_params
    ]
    if endpoint.list_params:
        parameters += [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "the next_cursor of the previous page",
            },
        ]
    for name in endpoint.filters:
        schema: dict[str, Any] = {"type": "string"}
        if name == "status" and endpoint.path.startswith(
            ("/v1/privacy/approval-policy/", "/v1/retention/period-changes")
        ):
            schema["enum"] = schemas.POLICY_CHANGE_STATUSES
        elif name == "status" and endpoint.path.startswith("/v1/privacy/"):
            schema["enum"] = schemas.PRIVACY_STATUSES
        elif name == "status":
            schema["enum"] = ["new", "open", "pending", "solved", "closed"]
        elif name in ("from", "to"):
            schema["format"] = "date-time"
        elif name not in ("type", "queue"):
            schema["format"] = "uuid"
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    if endpoint.if_match:
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "the ETag last read",
            }
        )
    if endpoint.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": "the same key and body return the first response (secrets omitted)",
            }
        )
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": f"{endpoint.method}_{endpoint.path.strip('/').replace('/', '_')}",
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": endpoint.body}},
        }
    if endpoint.auth == "bearer":
        operation["security"] = [{"apiKey": []}]
        operation["description"] = "Roles: " + ", ".join(endpoint.roles) + "."
    elif endpoint.auth == "operator":
        operation["security"] = [{"operatorToken": []}]
    return operation


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="Ledgerdesk API",
        version="1",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "A multi-tenant helpdesk whose privacy promises are kept by code. A W3C"
                " traceparent header is continued once the request is authenticated (never for"
                " sign-up or an unauthenticated request); tracestate is ignored. Every answer"
                " names the trace it was recorded under in a traceresponse header."
            )
        },
    )
    spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("operatorToken", {"type": "http", "scheme": "bearer"})
    names = {e.body for e in ENDPOINTS} | {e.response for e in ENDPOINTS} | {"Problem"}
    names |= {response for e in ENDPOINTS for _, response, _ in e.also}
    for name in sorted(n for n in names if n):
        if name not in spec.components.schemas:  # nested ones register themselves first
            spec.components.schema(name, schema=getattr(schemas, name))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method] = _operation(endpoint)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
