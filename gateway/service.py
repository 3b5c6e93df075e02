"""The gateway: the one HTTP entry. Authenticates, scopes to the key's tenant, enforces roles,
validates, limits and calls the services; one method per endpoint, each a few lines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Connection
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from werkzeug.wrappers import Request, Response

from gateway import privacy, problems, schemas
from gateway.console import ConsoleRoutes
from gateway.edge import Edge, GatewayLimits
from gateway.http import (
    IDENTITY,
    MAX_BODY_BYTES,
    RESOURCES,
    GatewayStore,
    api,
    continue_client_trace,
    json_response,
    read_json,
    refuse_card_numbers,
    touched_ids,
)
from gateway.idempotency import HEADER as IDEMPOTENCY_KEY
from gateway.idempotency import MIGRATIONS, PLATFORM, IdempotencyStore, fingerprint
from gateway.openapi import build_spec
from gateway.operations import OperationsRoutes
from gateway.pagination import encode_cursor, page_params
from gateway.ratelimit import RateLimiter
from gateway.route import (
    ADMIN,
    ANYONE,
    AUDIT,
    POSITIVE,
    STAFF,
    TEXT,
    TIME,
    UUID,
    Route,
    one_of,
    route_of,
    routes_of,
)
from gateway.schemas import POLICY_CHANGE_STATUSES as CHANGE_STATUSES
from gateway.schemas import PRIVACY_STATUSES
from gateway.subscriptions import PRIVACY
from kernel import privacy as privacy_protocol
from kernel.cards import contains_card_number
from kernel.envelope import Envelope, EventRegistry
from kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from kernel.forgetting import Forgetting
from kernel.nameko_adapters.common import settings_of
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.proxy import TimedRpcProxy
from kernel.nameko_adapters.store import EventStoreDependency
from kernel.signed_note import PublicKey, current_key, short_key_id, verifier_key
from kernel.signing import published_keys
from kernel.tracing import Tracing
from services.tickets.contracts import STATUSES as TICKET_STATUSES

# Responses that carry a secret are stored for replay without it: a key is shown once.
SECRET_FIELDS = ("api_key",)


def operator_token_matches(presented: str, expected: str) -> bool:
    """Whether a presented operator token is the configured one, in constant time.

    An empty token never matches, on either side: a process configured without an operator
    token (or with an empty one) has no operator, rather than one any bare ``Bearer`` opens.
    Digests are compared, so the time taken says nothing about the token's length either.
    """
    same = hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
    return same and bool(presented) and bool(expected)


class Limits(DependencyProvider):
    """One rate limiter per process for API keys, shared by its workers, with the process's
    per-address limits (``gateway.edge``)."""

    edge = Edge()

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)

    def get_dependency(self, worker_ctx: Any) -> GatewayLimits:
        return GatewayLimits(self.limiter, self.edge)


class AuditKeys(DependencyProvider):
    """The audit public keys and the ledger's origin, from configuration only (never the seed):
    read once at start, so a production gateway without LEDGERDESK_AUDIT_PUBLIC_KEYS does not
    start rather than fail on each request."""

    def setup(self) -> None:
        settings = settings_of(self.container)
        self.keys = (settings.audit_origin, published_keys(settings))

    def get_dependency(self, worker_ctx: Any) -> tuple[str, tuple[PublicKey, ...]]:
        return self.keys


class Idempotency(DependencyProvider):
    gateway_store = GatewayStore()

    def get_dependency(self, worker_ctx: Any) -> IdempotencyStore:
        return self.gateway_store.idempotency()


class GatewayService(ConsoleRoutes, OperationsRoutes):
    name = "gateway"

    # The gateway's own database: idempotency records and the access-log outbox; no events of
    # its own. Its keystore holds the tenant keys that seal stored responses.
    store = EventStoreDependency(
        EventRegistry(),
        migrations=MIGRATIONS,
        forgetting=Forgetting(lambda store, settings: privacy.erasure_handlers(store)),
    )
    announcement = privacy_protocol.Announcement(privacy.CATEGORIES)
    accounts = TimedRpcProxy("accounts")
    tickets = TimedRpcProxy("tickets")
    billing = TimedRpcProxy("billing")
    audit = TimedRpcProxy("audit")
    retention = TimedRpcProxy("retention")
    limits = Limits()
    audit_keys = AuditKeys()
    idempotency = Idempotency()
    tracing = Tracing()
    config = Config()

    # --- the pieces every endpoint uses -------------------------------------------------------

    def _caller(self, request: Request) -> dict[str, Any]:
        """Who calls, if the route's declaration (``gateway.route.Route``) lets them: its
        roles, and whether it serves a cancelled tenant. The declaration is the only source."""
        route = route_of(request)
        if not route.roles:
            raise TypeError(f"{route.method} {route.rule} declares no roles to check")
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("a bearer API key is required")
        # An address whose keys were refused too often is refused before its key costs a call.
        self.limits.before_authentication(request)
        try:
            identity = self.accounts.authenticate(key.strip())
        except Unauthorized:
            self.limits.authentication_failed(request, "api_key")
            raise
        request.environ[IDENTITY] = identity
        continue_client_trace(self.tracing, request)
        self.limits.check(identity["key_id"])
        if identity["role"] not in route.roles:
            raise Forbidden(f"the {identity['role']} role may not do this")
        if identity["tenant_status"] != "active" and not route.while_cancelled:
            raise Forbidden(
                "the tenant is cancelled: only reactivation and data export (access requests"
                " and their exports) are possible"
            )
        return identity

    def _operator(self, request: Request) -> None:
        route = route_of(request)
        if not route.operator:
            raise TypeError(f"{route.method} {route.rule} does not declare the operator token")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.config["LEDGERDESK"].operator_token
        presented = scheme.lower() == "bearer" and bool(token.strip())
        if presented:
            self.limits.before_authentication(request)
        if not presented or not operator_token_matches(token.strip(), expected):
            if presented:
                self.limits.authentication_failed(request, "operator_token")
            raise Unauthorized("the operator token is required")
        request.environ[IDENTITY] = {"actor": "operator"}
        continue_client_trace(self.tracing, request)
        self.limits.check("operator")

    def _idempotent(self, request: Request, scope: str, produce: Callable[[], Response]):
        """The same Idempotency-Key with the same request gives the first response again."""
        key = request.headers.get(IDEMPOTENCY_KEY)
        if key is None:
            return produce()
        if contains_card_number(key):
            raise ValidationFailed({IDEMPOTENCY_KEY: ["must not hold a card number"]})
        print_ = fingerprint(request.method, request.path, request.get_data())
        stored = self.idempotency.begin(scope, key, print_)
        if stored is not None:
            headers = {**stored.headers, "Idempotent-Replayed": "true"}
            return Response(stored.body, status=stored.status, headers=headers)
        try:
            response = produce()
        except DomainError as exc:
            response = problems.from_exception(exc)
        except BaseException:
            self.idempotency.abandon(scope, key)
            raise
        if response.status_code >= 500 or response.status_code in (409, 429):
            self.idempotency.abandon(scope, key)  # transient: a retry must run again
        else:
            # Sealed under the key of the tenant it belongs to (for a sign-up, the tenant it
            # created), naming everyone in it so that their erasure deletes it.
            owner = (request.environ.get(IDENTITY) or {}).get("tenant_id") or PLATFORM
            self.idempotency.complete(
                scope,
                key,
                response.status_code,
                {
                    name: value
                    for name, value in response.headers.items()
                    if name in ("Content-Type", "ETag", "Location")
                },
                _without_secrets(response.get_data()),
                owner,
                touched_ids(request, response),
            )
        return response

    @staticmethod
    def _page(request: Request) -> tuple[int, list | None]:
        """``limit`` and the keyset position ``[created_at, id]`` a cursor carries."""
        limit, cursor = page_params(request.args)
        if not cursor:
            return limit, None
        created_at, _, row_id = str(cursor.get("after", "")).partition("|")
        moment = _utc(created_at)
        try:
            row = uuid.UUID(row_id)
        except ValueError:
            moment = None
        if moment is None:
            raise ValidationFailed({"cursor": ["not a cursor this list gave out"]})
        # Re-rendered, not passed on: Python reads forms PostgreSQL would refuse.
        return limit, [moment.isoformat(), str(row)]

    @staticmethod
    def _listing(result: dict[str, Any]) -> Response:
        after = result.get("next")
        cursor = encode_cursor({"after": "|".join(after)}) if after else None
        return json_response(200, {"items": result["items"], "next_cursor": cursor})

    # --- tenants ------------------------------------------------------------------------------

    @api(
        "POST",
        "/v1/signup",
        summary="Sign up a tenant with its first admin",
        status=201,
        response="SignUpOut",
        body="SignUpV1",
        errors=(400, 413, 422, 429, 503),
        idempotent=True,
    )
    def sign_up(self, request: Request) -> Response:
        # Per client address, before the body is read: a sign-up creates a tenant and its keys.
        self.limits.sign_up(request)
        command = read_json(request, schemas.SignUpV1())

        def produce() -> Response:
            created = self.accounts.sign_up(command)
            request.environ[IDENTITY] = {
                "tenant_id": created["tenant"]["id"],
                "agent_id": created["agent"]["id"],
            }
            request.environ[RESOURCES] = [created["tenant"]["id"], created["agent"]["id"]]
            return json_response(201, created)

        return self._idempotent(request, "signup", produce)

    @api(
        "GET",
        "/v1/me",
        roles=ANYONE,
        summary=(
            "Who the key belongs to: agent, tenant and role, and whether the key is the agent's own"
        ),
        response="MeOut",
    )
    def me(self, request: Request) -> Response:
        """Who the key belongs to, so a client (the console) can offer what the role may do."""
        caller = self._caller(request)
        return json_response(
            200,
            {
                **{k: caller[k] for k in ("agent_id", "tenant_id", "role", "key_id")},
                "key_is_own": caller.get("key_issuer_id") == caller["agent_id"],
            },
        )

    @api(
        "POST",
        "/v1/me/api-keys",
        roles=ANYONE,
        summary="Claim a key of your own: it answers to you alone, and every key you held ends",
        status=201,
        response="ClaimedApiKeyOut",
    )
    def claim_api_key(self, request: Request) -> Response:
        """A key of the caller's own in place of all they hold. Not replayable by an
        Idempotency-Key: the calling key ends with the call, so a retry cannot authenticate."""
        caller = self._caller(request)
        claimed = self.accounts.claim_api_key(caller)
        request.environ[RESOURCES] = [caller["agent_id"]]
        return json_response(201, claimed)

    @api(
        "GET",
        "/v1/tenant",
        roles=ANYONE,
        while_cancelled=True,
        summary="The caller's tenant (also while cancelled)",
        response="TenantOut",
    )
    def get_tenant(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.get_tenant(caller["tenant_id"]))

    @api(
        "DELETE",
        "/v1/tenant",
        roles=ADMIN,
        summary="Cancel the tenant; destroyed after the grace period",
        status=202,
        response="TenantOut",
        errors=(409,),
    )
    def cancel_tenant(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(202, self.accounts.cancel_tenant(caller))

    @api(
        "POST",
        "/v1/tenant/reactivate",
        roles=ADMIN,
        while_cancelled=True,
        summary="Reactivate a cancelled tenant during its grace",
        response="TenantOut",
        errors=(409, 422),
        idempotent=True,
    )
    def reactivate_tenant(self, request: Request) -> Response:
        caller = self._caller(request)
        return self._idempotent(
            request,
            caller["tenant_id"],
            lambda: json_response(200, self.accounts.reactivate_tenant(caller)),
        )

    # --- agents and keys ----------------------------------------------------------------------

    @api(
        "POST",
        "/v1/agents",
        roles=ADMIN,
        summary="Create an agent and its first API key",
        status=201,
        response="AgentCreatedOut",
        body="CreateAgentV1",
        errors=(400, 413, 422),
        idempotent=True,
    )
    def create_agent(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.CreateAgentV1())

        def produce() -> Response:
            agent = self.accounts.create_agent(caller, command)
            request.environ[RESOURCES] = [agent["id"]]
            return json_response(201, agent)

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/agents",
        roles=ADMIN,
        summary="List the tenant's agents",
        response="AgentListOut",
        errors=(422,),
        listed=True,
    )
    def list_agents(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        return self._listing(self.accounts.list_agents(caller["tenant_id"], limit, after))

    @api(
        "GET",
        "/v1/agents/<string:agent_id>",
        roles=ADMIN,
        summary="One agent",
        response="AgentOut",
        errors=(404,),
    )
    def get_agent(self, request: Request, agent_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.get_agent(caller["tenant_id"], agent_id))

    @api(
        "DELETE",
        "/v1/agents/<string:agent_id>",
        roles=ADMIN,
        summary="Deactivate an agent; its keys stop at once",
        response="AgentOut",
        errors=(404, 409),
    )
    def deactivate_agent(self, request: Request, agent_id: str) -> Response:
        caller = self._caller(request)
        if agent_id == caller["agent_id"]:
            raise Conflict("an admin cannot deactivate their own account")
        return json_response(200, self.accounts.deactivate_agent(caller, agent_id))

    @api(
        "POST",
        "/v1/agents/<string:agent_id>/api-keys",
        roles=ADMIN,
        summary="Issue another API key for an agent",
        status=201,
        response="ApiKeyOut",
        errors=(404, 409, 422),
        idempotent=True,
    )
    def issue_api_key(self, request: Request, agent_id: str) -> Response:
        caller = self._caller(request)
        return self._idempotent(
            request,
            caller["tenant_id"],
            lambda: json_response(201, self.accounts.issue_api_key(caller, agent_id)),
        )

    @api(
        "DELETE",
        "/v1/agents/<string:agent_id>/api-keys/<string:key_id>",
        roles=ADMIN,
        summary="Revoke an API key",
        status=204,
        errors=(404, 409),
    )
    def revoke_api_key(self, request: Request, agent_id: str, key_id: str) -> Response:
        caller = self._caller(request)
        self.accounts.revoke_api_key(caller, agent_id, key_id)
        return Response(status=204)

    # --- contacts and consent -----------------------------------------------------------------

    @api(
        "POST",
        "/v1/contacts",
        roles=STAFF,
        summary="Create a contact (an end customer)",
        status=201,
        response="ContactOut",
        body="CreateContactV1",
        errors=(400, 413, 422),
        idempotent=True,
        etag=True,
    )
    def create_contact(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.CreateContactV1())

        def produce() -> Response:
            contact = self.accounts.create_contact(caller, command)
            request.environ[RESOURCES] = [contact["id"]]
            return json_response(201, contact, {"ETag": _etag(contact["version"])})

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/contacts",
        roles=STAFF,
        summary="List the tenant's contacts",
        response="ContactListOut",
        errors=(422,),
        listed=True,
    )
    def list_contacts(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        return self._listing(self.accounts.list_contacts(caller["tenant_id"], limit, after))

    @api(
        "GET",
        "/v1/contacts/<string:contact_id>",
        roles=STAFF,
        summary="One contact",
        response="ContactOut",
        errors=(404,),
        etag=True,
    )
    def get_contact(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        contact = self.accounts.get_contact(caller["tenant_id"], contact_id)
        return json_response(200, contact, {"ETag": _etag(contact["version"])})

    @api(
        "PATCH",
        "/v1/contacts/<string:contact_id>",
        roles=STAFF,
        summary="Rectify a contact",
        response="ContactOut",
        body="RectifyContactV1",
        errors=(400, 404, 409, 413, 422, 428),
        if_match=True,
        etag=True,
    )
    def rectify_contact(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.RectifyContactV1())
        version = _if_match(request)
        contact = self.accounts.rectify_contact(caller, contact_id, version, command)
        return json_response(200, contact, {"ETag": _etag(contact["version"])})

    @api(
        "PUT",
        "/v1/contacts/<string:contact_id>/consent",
        roles=STAFF,
        summary="Record marketing consent",
        response="ConsentSetOut",
        body="SetConsentV1",
        errors=(400, 404, 409, 413, 422),
    )
    def set_consent(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.SetConsentV1())
        return json_response(200, self.accounts.set_consent(caller, contact_id, command))

    @api(
        "GET",
        "/v1/contacts/<string:contact_id>/consent",
        roles=STAFF,
        summary="Consent now and its full history",
        response="ConsentStateOut",
        errors=(404,),
    )
    def get_consent(self, request: Request, contact_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.get_consent(caller["tenant_id"], contact_id))

    # --- tickets ------------------------------------------------------------------------------

    @api(
        "POST",
        "/v1/tickets",
        max_body_bytes=MAX_BODY_BYTES,
        roles=STAFF,
        summary="Open a ticket for a requester (a contact)",
        status=201,
        response="TicketOut",
        body="CreateTicketV1",
        errors=(400, 413, 422),
        idempotent=True,
        etag=True,
    )
    def create_ticket(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.CreateTicketV1())

        def produce() -> Response:
            ticket = self.tickets.create_ticket(caller, command)
            request.environ[RESOURCES] = [ticket["id"], ticket["requester_id"]]
            return json_response(201, ticket, {"ETag": _etag(ticket["version"])})

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/tickets",
        roles=STAFF,
        summary="List tickets; filter by status, assignee, requester",
        response="TicketListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(TICKET_STATUSES), "assignee_id": UUID, "requester_id": UUID},
    )
    def list_tickets(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        filters = _ticket_filters(request)
        return self._listing(self.tickets.list_tickets(caller["tenant_id"], filters, limit, after))

    @api(
        "GET",
        "/v1/tickets/<string:ticket_id>",
        roles=STAFF,
        summary="One ticket with its messages",
        response="TicketDetailOut",
        errors=(404,),
        etag=True,
    )
    def get_ticket(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        ticket = self.tickets.get_ticket(caller, ticket_id)
        request.environ[RESOURCES] = [ticket["requester_id"]]
        return json_response(200, ticket, {"ETag": _etag(ticket["version"])})

    @api(
        "PATCH",
        "/v1/tickets/<string:ticket_id>",
        roles=STAFF,
        summary="Change status, priority, assignee or tags",
        response="TicketDetailOut",
        body="UpdateTicketV1",
        errors=(400, 404, 409, 413, 422, 428),
        if_match=True,
        etag=True,
    )
    def update_ticket(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.UpdateTicketV1())
        version = _if_match(request)
        ticket = self.tickets.update_ticket(caller, ticket_id, version, command)
        return json_response(200, ticket, {"ETag": _etag(ticket["version"])})

    @api(
        "POST",
        "/v1/tickets/<string:ticket_id>/messages",
        max_body_bytes=MAX_BODY_BYTES,
        roles=STAFF,
        summary="Add a public reply or an internal note",
        status=201,
        response="MessageAddedOut",
        body="AddMessageV1",
        errors=(400, 404, 409, 413, 422),
        idempotent=True,
    )
    def add_message(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.AddMessageV1())
        return self._idempotent(
            request,
            caller["tenant_id"],
            lambda: json_response(201, self.tickets.add_message(caller, ticket_id, command)),
        )

    # --- billing: every request is refused if it holds anything like a card number ----------

    def _billing_caller(self, request: Request) -> dict[str, Any]:
        refuse_card_numbers(request)
        return self._caller(request)

    @api(
        "GET",
        "/v1/billing/plans",
        roles=ADMIN,
        summary="The plan catalogue",
        response="PlanListOut",
        errors=(422,),
    )
    def list_plans(self, request: Request) -> Response:
        self._billing_caller(request)
        return json_response(200, self.billing.list_plans())

    @api(
        "GET",
        "/v1/billing/subscription",
        roles=ADMIN,
        summary="The tenant's plan, seats and tax",
        response="SubscriptionOut",
        errors=(404, 422),
    )
    def get_subscription(self, request: Request) -> Response:
        caller = self._billing_caller(request)
        return json_response(200, self.billing.get_subscription(caller["tenant_id"]))

    @api(
        "PUT",
        "/v1/billing/subscription",
        roles=ADMIN,
        summary="Change plan",
        response="SubscriptionOut",
        body="ChangePlanV1",
        errors=(400, 404, 409, 413, 422),
    )
    def change_plan(self, request: Request) -> Response:
        caller = self._billing_caller(request)
        command = read_json(request, schemas.ChangePlanV1(), refuse_cards=True)
        return json_response(200, self.billing.change_plan(caller, command))

    @api(
        "PUT",
        "/v1/billing/address",
        roles=ADMIN,
        summary="The billed company's address, for invoices",
        response="BillingAddressOut",
        body="SetBillingAddressV1",
        errors=(400, 404, 409, 413, 422),
    )
    def set_billing_address(self, request: Request) -> Response:
        caller = self._billing_caller(request)
        command = read_json(request, schemas.SetBillingAddressV1(), refuse_cards=True)
        return json_response(200, self.billing.set_address(caller, command))

    @api(
        "POST",
        "/v1/billing/payment-methods",
        roles=ADMIN,
        summary="Add a payment method by processor token (card numbers are refused)",
        status=201,
        response="PaymentMethodOut",
        body="AddPaymentMethodV1",
        errors=(400, 404, 409, 413, 422),
        idempotent=True,
    )
    def add_payment_method(self, request: Request) -> Response:
        caller = self._billing_caller(request)
        command = read_json(request, schemas.AddPaymentMethodV1(), refuse_cards=True)

        def produce() -> Response:
            method = self.billing.add_payment_method(caller, command)
            request.environ[RESOURCES] = [method["id"]]
            return json_response(201, method)

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/billing/payment-methods",
        roles=ADMIN,
        summary="Payment methods: brand, last 4, expiry",
        response="PaymentMethodListOut",
        errors=(422,),
    )
    def list_payment_methods(self, request: Request) -> Response:
        caller = self._billing_caller(request)
        return json_response(200, self.billing.list_payment_methods(caller["tenant_id"]))

    @api(
        "GET",
        "/v1/billing/invoices",
        roles=ADMIN,
        summary="Invoices, oldest first",
        response="InvoiceListOut",
        errors=(422,),
        listed=True,
    )
    def list_invoices(self, request: Request) -> Response:
        caller = self._billing_caller(request)
        limit, after = self._page(request)
        return self._listing(self.billing.list_invoices(caller["tenant_id"], limit, after))

    @api(
        "GET",
        "/v1/billing/invoices/<string:invoice_id>",
        roles=ADMIN,
        summary="One invoice",
        response="InvoiceOut",
        errors=(404, 422),
    )
    def get_invoice(self, request: Request, invoice_id: str) -> Response:
        caller = self._billing_caller(request)
        return json_response(200, self.billing.get_invoice(caller["tenant_id"], invoice_id))

    @api(
        "POST",
        "/v1/billing/invoices/<string:invoice_id>/pay",
        roles=ADMIN,
        summary="Charge the newest payment method for an invoice",
        response="InvoicePaidOut",
        errors=(404, 409, 422),
        idempotent=True,
    )
    def pay_invoice(self, request: Request, invoice_id: str) -> Response:
        caller = self._billing_caller(request)
        return self._idempotent(
            request,
            caller["tenant_id"],
            lambda: json_response(200, self.billing.pay_invoice(caller, invoice_id)),
        )

    # --- audit --------------------------------------------------------------------------------

    def _ledger_filters(self, request: Request) -> tuple[dict[str, Any], int, int]:
        limit, cursor = page_params(request.args)
        after = str((cursor or {}).get("after", "0"))
        if not after.isdigit():
            raise ValidationFailed({"cursor": ["not a cursor this list gave out"]})
        filters: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name in ("from", "to"):
            if request.args.get(name):
                moment = _utc(request.args[name])
                if moment is None:
                    errors[name] = ["an RFC 3339 time with its offset"]
                else:
                    filters[name] = moment.isoformat()
        if request.args.get("type"):
            filters["types"] = request.args["type"].split(",")
        if request.args.get("subject_id"):
            try:
                filters["subject_id"] = str(uuid.UUID(request.args["subject_id"]))
            except ValueError:
                errors["subject_id"] = ["not a valid UUID"]
        if errors:
            raise ValidationFailed(errors)
        return filters, limit, int(after)

    def _ledger_page(self, tenant_id: str | None, request: Request, **extra: Any) -> Response:
        filters, limit, after = self._ledger_filters(request)
        result = self.audit.list_entries(tenant_id, {**filters, **extra}, limit, after)
        cursor = encode_cursor({"after": str(result["next"])}) if result["next"] else None
        return json_response(200, {"items": result["items"], "next_cursor": cursor})

    @api(
        "GET",
        "/v1/audit/entries",
        roles=AUDIT,
        summary="Ledger entries of the tenant, in ledger order",
        response="EntryListOut",
        errors=(422,),
        listed=True,
        filters={"from": TIME, "to": TIME, "type": TEXT, "subject_id": UUID},
    )
    def audit_entries(self, request: Request) -> Response:
        caller = self._caller(request)
        return self._ledger_page(caller["tenant_id"], request)

    @api(
        "GET",
        "/v1/audit/subjects/<string:subject_id>/entries",
        roles=AUDIT,
        summary="Who touched this person's data: every entry naming them",
        response="EntryListOut",
        errors=(404, 422),
        listed=True,
        filters={"from": TIME, "to": TIME, "type": TEXT},
    )
    def audit_subject(self, request: Request, subject_id: str) -> Response:
        """Who touched this person's data, and when: every entry that names them."""
        caller = self._caller(request)
        try:
            subject = str(uuid.UUID(subject_id))
        except ValueError:
            raise NotFound("no such subject") from None
        return self._ledger_page(caller["tenant_id"], request, subject_id=subject)

    @api(
        "GET",
        "/v1/audit/verify",
        roles=AUDIT,
        summary=(
            "The tenant's own entries checked against the latest signed checkpoint (those not"
            " proved before, a bounded number per call), and the platform verification job's"
            " verdict (no platform-wide figures)"
        ),
        response="TenantVerifyOut",
    )
    def audit_verify(self, request: Request) -> Response:
        """A tenant's own entries and the platform job's verdict; never platform figures."""
        caller = self._caller(request)
        return json_response(200, self.audit.tenant_verify(caller["tenant_id"]))

    @api(
        "GET",
        "/v1/audit/entries/<string:seq>/proof",
        roles=AUDIT,
        summary=(
            "An inclusion proof against the latest signed checkpoint; 409 with Retry-After until a"
            " checkpoint covers the entry"
        ),
        response="ProofOut",
        errors=(404, 409),
        path_schemas={"seq": POSITIVE},
        retry_after=(409,),
    )
    def audit_proof(self, request: Request, seq: str) -> Response:
        caller = self._caller(request)
        if not seq.isdigit() or not 0 < int(seq) < 2**63:
            raise NotFound("no such entry")
        return json_response(200, self.audit.proof(caller["tenant_id"], int(seq)))

    @api(
        "GET",
        "/v1/audit/public-key",
        roles=AUDIT,
        summary=(
            "The platform's audit public keys (with validity periods and the ledger's origin),"
            " which sign receipts and checkpoints"
        ),
        response="PublicKeyOut",
    )
    def audit_public_key(self, request: Request) -> Response:
        """The keys receipts and checkpoints must be signed with, to check them against (the key
        a receipt carries proves only that someone signed it), each with its validity period,
        and the ledger's origin. The top-level key is the one signing now, as before lists."""
        self._caller(request)
        origin, keys = self.audit_keys
        current = current_key(keys, dt.datetime.now(dt.UTC))
        return json_response(
            200,
            {
                "algorithm": "Ed25519",
                "key_id": short_key_id(current.public_key),
                "public_key": current.public_key_b64,
                "origin": origin,
                "verifier_key": verifier_key(origin, current.public_key),
                "keys": [
                    {
                        **key.as_json(),
                        "key_id": short_key_id(key.public_key),
                        "verifier_key": verifier_key(origin, key.public_key),
                    }
                    for key in keys
                ],
            },
        )

    @api(
        "GET",
        "/v1/operator/audit/entries",
        operator=True,
        summary="Ledger entries of every tenant (operator)",
        response="EntryListOut",
        errors=(422,),
        listed=True,
        filters={"from": TIME, "to": TIME, "type": TEXT, "subject_id": UUID},
    )
    def operator_audit_entries(self, request: Request) -> Response:
        self._operator(request)
        return self._ledger_page(None, request)

    @api(
        "GET",
        "/v1/operator/audit/verify",
        operator=True,
        summary="The verification job's last run over the whole ledger (operator)",
        response="VerifyOut",
    )
    def operator_audit_verify(self, request: Request) -> Response:
        self._operator(request)
        return json_response(200, self.audit.verify())

    # --- privacy requests ---------------------------------------------------------------------

    @api(
        "POST",
        "/v1/privacy/requests",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "File an access, erasure, rectification, restriction or objection request for a"
            " subject; while the tenant is cancelled, access requests only"
        ),
        status=202,
        response="PrivacyRequestOut",
        body="FilePrivacyRequestV1",
        errors=(400, 404, 413, 422),
    )
    def file_privacy_request(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.FilePrivacyRequestV1())
        if _cancelled(caller) and command["type"] != "access":
            raise Forbidden(
                "the tenant is cancelled: only access requests (a data export) can be filed"
                " until it is reactivated"
            )
        filed = self.retention.file_request(caller, command)
        created = filed.pop("created")
        request.environ[RESOURCES] = [filed["id"], *filed["subject"].values()]
        return json_response(202 if created else 200, filed)

    @api(
        "GET",
        "/v1/privacy/requests",
        roles=ADMIN,
        while_cancelled=True,
        summary="This tenant's requests, oldest first; filter by status (also while cancelled)",
        response="PrivacyRequestListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(PRIVACY_STATUSES)},
    )
    def list_privacy_requests(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        status = request.args.get("status") or None
        if status is not None and status not in schemas.PRIVACY_STATUSES:
            raise ValidationFailed({"status": [f"one of {', '.join(schemas.PRIVACY_STATUSES)}"]})
        return self._listing(
            self.retention.list_requests(caller["tenant_id"], status, limit, after)
        )

    @api(
        "POST",
        "/v1/privacy/requests/<string:request_id>/approve",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "Approve a request that waits for approval: not by the admin who filed it (409), nor"
            " with a key the filer issued, and only by an admin since before it was filed (403);"
            " while the tenant is cancelled, access requests only"
        ),
        response="PrivacyRequestOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def approve_privacy_request(self, request: Request, request_id: str) -> Response:
        return self._decide(request, request_id, "approved")

    @api(
        "POST",
        "/v1/privacy/requests/<string:request_id>/deny",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "Deny a request that waits for approval, with the reason (same rules as approving);"
            " while the tenant is cancelled, access requests only"
        ),
        response="PrivacyRequestOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def deny_privacy_request(self, request: Request, request_id: str) -> Response:
        return self._decide(request, request_id, "denied")

    def _decide(self, request: Request, request_id: str, decision: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.DecideRequestV1())
        # An access request a cancelled tenant's policy holds for approval must be decidable,
        # or its export could never be had during the grace.
        if _cancelled(caller):
            held = self.retention.get_request(caller["tenant_id"], request_id)
            if held["type"] != "access":
                raise Forbidden(
                    "the tenant is cancelled: only access requests can be decided until it is"
                    " reactivated"
                )
        decided = self.retention.decide_request(caller, request_id, decision, command)
        request.environ[RESOURCES] = [decided["id"], *decided["subject"].values()]
        return json_response(200, decided)

    @api(
        "GET",
        "/v1/privacy/approval-policy",
        roles=ADMIN,
        summary="The request types that wait for a second admin's approval",
        response="ApprovalPolicyOut",
    )
    def approval_policy(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.approval_policy(caller["tenant_id"]))

    @api(
        "PUT",
        "/v1/privacy/approval-policy",
        roles=ADMIN,
        summary=(
            "Set the request types that wait for a second admin's approval: widening the policy"
            " applies at once (200, the policy); lifting or narrowing a policy that requires"
            " approval is a change another admin must approve (202, the change)"
        ),
        response="ApprovalPolicyOut",
        body="SetApprovalPolicyV1",
        errors=(400, 413, 422),
        also=((202, "ApprovalPolicyChangeOut", "the change waits for another admin's approval"),),
    )
    def set_approval_policy(self, request: Request) -> Response:
        """200 with the policy when it applies at once (widening it); 202 with the change when
        it lifts or narrows a policy that requires approval: another admin decides that."""
        caller = self._caller(request)
        command = read_json(request, schemas.SetApprovalPolicyV1())
        changed = self.retention.change_approval_policy(caller, command)
        if not changed["applied"]:
            request.environ[RESOURCES] = [changed["result"]["id"]]
        return json_response(200 if changed["applied"] else 202, changed["result"])

    @api(
        "GET",
        "/v1/privacy/approval-policy/changes",
        roles=ADMIN,
        summary="Changes of the approval policy that waited or wait for approval, oldest first",
        response="ApprovalPolicyChangeListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(CHANGE_STATUSES)},
    )
    def list_policy_changes(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        status = self._change_status(request)
        return self._listing(
            self.retention.list_policy_changes(caller["tenant_id"], status, limit, after)
        )

    @staticmethod
    def _change_status(request: Request) -> str | None:
        status = request.args.get("status") or None
        if status is not None and status not in schemas.POLICY_CHANGE_STATUSES:
            raise ValidationFailed(
                {"status": [f"one of {', '.join(schemas.POLICY_CHANGE_STATUSES)}"]}
            )
        return status

    @api(
        "GET",
        "/v1/privacy/approval-policy/changes/<string:change_id>",
        roles=ADMIN,
        summary="A change of the approval policy",
        response="ApprovalPolicyChangeOut",
        errors=(404,),
    )
    def get_policy_change(self, request: Request, change_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_policy_change(caller["tenant_id"], change_id))

    @api(
        "POST",
        "/v1/privacy/approval-policy/changes/<string:change_id>/approve",
        roles=ADMIN,
        summary=(
            "Approve a waiting change of the approval policy, which then applies: not by its"
            " filer, nor with a key the filer issued, and only by an admin since before it was"
            " filed (403); 409 when it no longer waits (decided, or superseded by a newer change)"
        ),
        response="ApprovalPolicyChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def approve_policy_change(self, request: Request, change_id: str) -> Response:
        return self._decide_change(request, change_id, "approved")

    @api(
        "POST",
        "/v1/privacy/approval-policy/changes/<string:change_id>/deny",
        roles=ADMIN,
        summary=(
            "Deny a waiting change of the approval policy, with the reason (same rules as"
            " approving)"
        ),
        response="ApprovalPolicyChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def deny_policy_change(self, request: Request, change_id: str) -> Response:
        return self._decide_change(request, change_id, "denied")

    def _decide_change(self, request: Request, change_id: str, decision: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.DecideRequestV1())
        decided = self.retention.decide_policy_change(caller, change_id, decision, command)
        request.environ[RESOURCES] = [decided["id"]]
        return json_response(200, decided)

    @api(
        "GET",
        "/v1/privacy/requests/<string:request_id>",
        roles=ADMIN,
        while_cancelled=True,
        summary="A request and every service's answer (also while cancelled)",
        response="PrivacyRequestOut",
        errors=(404,),
    )
    def get_privacy_request(self, request: Request, request_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_request(caller["tenant_id"], request_id))

    @api(
        "GET",
        "/v1/privacy/requests/<string:request_id>/export",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "An access request's export: everything every service holds about the subject (also"
            " while cancelled, during the grace)"
        ),
        response="ExportOut",
        errors=(404,),
    )
    def get_privacy_export(self, request: Request, request_id: str) -> Response:
        caller = self._caller(request)
        document = self.retention.export(caller["tenant_id"], request_id, [self.name])
        if self.name in document["services"]:  # the gateway's own part, from its own store
            with self.store.unit_of_work() as uow:
                document["services"][self.name] = privacy.export(
                    uow, caller["tenant_id"], document["subject_id"], self.idempotency.ttl
                )
        return json_response(200, document)

    @api(
        "GET",
        "/v1/privacy/requests/<string:request_id>/receipt",
        roles=AUDIT,
        summary="A completed erasure's receipt, signed with the audit key",
        response="ReceiptOut",
        errors=(404,),
    )
    def get_privacy_receipt(self, request: Request, request_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_receipt(caller["tenant_id"], request_id))

    @api(
        "GET",
        "/v1/retention/policies",
        roles=ADMIN,
        summary="Retention periods per data category",
        response="RetentionPolicyListOut",
    )
    def retention_policies(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.policies(caller["tenant_id"]))

    @api(
        "PUT",
        "/v1/retention/policies/<string:category>",
        roles=ADMIN,
        summary=(
            "Set this tenant's period: lengthening it applies at once (200, the period);"
            " shortening it while the approval policy names erasure is a change another admin must"
            " approve (202, the change)"
        ),
        response="RetentionPolicyOut",
        body="SetPolicyV1",
        errors=(400, 404, 413, 422),
        also=((202, "RetentionPeriodChangeOut", "the change waits for another admin's approval"),),
    )
    def set_retention_policy(self, request: Request, category: str) -> Response:
        """200 with the period when it applies at once; 202 with the change when it shortens a
        period while erasure needs approval: another admin decides that."""
        caller = self._caller(request)
        command = read_json(request, schemas.SetPolicyV1())
        changed = self.retention.change_retention_period(caller, category, command)
        if not changed["applied"]:
            request.environ[RESOURCES] = [changed["result"]["id"]]
        return json_response(200 if changed["applied"] else 202, changed["result"])

    @api(
        "GET",
        "/v1/retention/period-changes",
        roles=ADMIN,
        summary="Shortened periods that waited or wait for approval, oldest first",
        response="RetentionPeriodChangeListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(CHANGE_STATUSES)},
    )
    def list_period_changes(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        status = self._change_status(request)
        return self._listing(
            self.retention.list_period_changes(caller["tenant_id"], status, limit, after)
        )

    @api(
        "GET",
        "/v1/retention/period-changes/<string:change_id>",
        roles=ADMIN,
        summary="A shortened period that waits or waited for approval",
        response="RetentionPeriodChangeOut",
        errors=(404,),
    )
    def get_period_change(self, request: Request, change_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_period_change(caller["tenant_id"], change_id))

    @api(
        "POST",
        "/v1/retention/period-changes/<string:change_id>/approve",
        roles=ADMIN,
        summary=(
            "Approve a shortened period, which then applies: not by its filer, nor with a key the"
            " filer issued, and only by an admin since before it was filed, with a key issued"
            " before it (403); 409 when it no longer waits"
        ),
        response="RetentionPeriodChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def approve_period_change(self, request: Request, change_id: str) -> Response:
        return self._decide_period_change(request, change_id, "approved")

    @api(
        "POST",
        "/v1/retention/period-changes/<string:change_id>/deny",
        roles=ADMIN,
        summary="Deny a shortened period, with the reason (same rules as approving)",
        response="RetentionPeriodChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def deny_period_change(self, request: Request, change_id: str) -> Response:
        return self._decide_period_change(request, change_id, "denied")

    def _decide_period_change(self, request: Request, change_id: str, decision: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.DecideRequestV1())
        decided = self.retention.decide_period_change(caller, change_id, decision, command)
        request.environ[RESOURCES] = [decided["id"]]
        return json_response(200, decided)

    @api(
        "GET",
        "/v1/operator/privacy/services",
        operator=True,
        summary="The services retention waits for, and their data categories (operator)",
        response="RegisteredServicesOut",
    )
    def privacy_services(self, request: Request) -> Response:
        self._operator(request)
        return json_response(200, {"items": self.retention.registered_services()})

    # --- policies -----------------------------------------------------------------------------

    @api(
        "GET",
        "/v1/policies/current",
        summary="The current policy version",
        response="PolicyOut",
        errors=(404, 503),
    )
    def current_policy(self, request: Request) -> Response:
        return json_response(200, self.accounts.current_policy())

    @api(
        "POST",
        "/v1/operator/policies",
        operator=True,
        summary="Publish a new policy version (operator)",
        status=201,
        response="PolicyOut",
        body="PublishPolicyV1",
        errors=(400, 409, 413, 422),
        idempotent=True,
    )
    def publish_policy(self, request: Request) -> Response:
        self._operator(request)
        command = read_json(request, schemas.PublishPolicyV1())
        return self._idempotent(
            request, "operator", lambda: json_response(201, self.accounts.publish_policy(command))
        )

    @api(
        "GET",
        "/v1/policies/pending-acceptance",
        roles=ADMIN,
        summary="Agents who have not accepted the current version",
        response="PendingAcceptanceOut",
        errors=(404,),
    )
    def pending_acceptance(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.pending_acceptance(caller["tenant_id"]))

    @api(
        "POST",
        "/v1/policies/accept",
        roles=ANYONE,
        summary="Accept the current policy version",
        response="AcceptanceOut",
        body="AcceptPolicyV1",
        errors=(400, 404, 409, 413, 422),
    )
    def accept_policy(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.AcceptPolicyV1())
        return json_response(200, self.accounts.accept_policy(caller, command))

    # --- the privacy protocol: the gateway keeps stored responses -----------------------------

    @consume_events(PRIVACY)
    def privacy_command(self, event: Envelope) -> None:
        with self.store.unit_of_work(self.name) as uow:
            privacy_protocol.handle_command(
                uow, self.name, event, privacy.handlers_for(self.store.cipher.keystore)
            )

    # --- operations ---------------------------------------------------------------------------

    @timer(interval=3600)
    def purge_idempotency_records(self) -> None:
        """Stored responses hold personal data: they go when their replay window closes."""
        self.idempotency.purge_expired()

    @api("GET", "/v1/openapi.json", summary="This document", response={"type": "object"})
    def openapi(self, request: Request) -> Response:
        return json_response(200, OPENAPI)

    @api("GET", "/healthz", summary="The process is up", response="StatusOut")
    def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    @api(
        "GET",
        "/readyz",
        summary="The broker and the services' databases are reachable",
        response="StatusOut",
        errors=(503,),
    )
    def readyz(self, request: Request) -> Response:
        checks: dict[str, Any] = {"broker": self._broker_reachable()}
        for name in ("accounts", "tickets", "billing", "audit", "retention"):
            try:
                checks[name] = getattr(self, name).health()["database"]
            except (DomainError, ServiceUnavailable):
                checks[name] = False
        ready = all(checks.values())
        return json_response(
            200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks}
        )

    def _broker_reachable(self) -> bool:
        try:
            with Connection(self.config["AMQP_URI"], connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # any failure to connect means "not ready", whatever its type
            return False


ROUTES: tuple[Route, ...] = tuple(routes_of(GatewayService))
OPENAPI = build_spec(ROUTES)


def _cancelled(caller: dict[str, Any]) -> bool:
    return caller["tenant_status"] != "active"


def _utc(value: str) -> dt.datetime | None:
    """An aware time in UTC, or None: Python reads offsets and years PostgreSQL refuses, so
    what is passed on is always re-rendered, never the client's text."""
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return None
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def _ticket_filters(request: Request) -> dict[str, str]:
    filters = {
        k: request.args[k] for k in ("status", "assignee_id", "requester_id") if request.args.get(k)
    }
    errors: dict[str, list[str]] = {}
    if filters.get("status") not in (None, *TICKET_STATUSES):
        errors["status"] = [f"must be one of: {', '.join(TICKET_STATUSES)}"]
    for key in ("assignee_id", "requester_id"):
        if key in filters:
            try:
                uuid.UUID(filters[key])
            except ValueError:
                errors[key] = ["not a valid UUID"]
    if errors:
        raise ValidationFailed(errors)
    return filters


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match(request: Request) -> int:
    raw = request.headers.get("If-Match")
    if raw is None:
        raise problems.PreconditionRequired("send If-Match with the ETag you last read")
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise Conflict("If-Match does not name a version of this resource")
    return int(value)


def _without_secrets(body: bytes) -> bytes:
    import json

    try:
        data = json.loads(body or b"null")
    except ValueError:
        return body
    if isinstance(data, dict) and any(field in data for field in SECRET_FIELDS):
        data = {k: (None if k in SECRET_FIELDS else v) for k, v in data.items()}
        return json.dumps(data).encode()
    return body
