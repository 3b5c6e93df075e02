"""Routes to billing: plans, the subscription, payment methods and invoices. Every request is
refused if it holds anything like a card number, before its caller is checked.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import RESOURCES, api, json_response, read_json, refuse_card_numbers
from gateway.route import ADMIN
from gateway.routes.base import Routes


class BillingRoutes(Routes):
    """Mixed into the gateway service: what billing answers."""

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
