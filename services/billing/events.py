"""Billing's events. Invoices name the billed company and its billing contact (an agent): the
contact's name and e-mail are personal data, encrypted under the agent's key.
"""

from marshmallow import Schema, fields

from kernel.envelope import EventRegistry, EventType


class AccountOpenedV1(Schema):
    tenant_id = fields.UUID(required=True)
    plan = fields.String(required=True)
    region = fields.String(required=True)
    company = fields.String(required=True)
    # The first period starts here; periods are calendar months (UTC).
    billed_from = fields.Date(required=True)


class PlanChangedV1(Schema):
    tenant_id = fields.UUID(required=True)
    plan = fields.String(required=True)
    previous = fields.String(required=True)


class Address(Schema):
    line1 = fields.String(required=True)
    line2 = fields.String(load_default=None, allow_none=True)
    city = fields.String(required=True)
    postcode = fields.String(required=True)
    country = fields.String(required=True)


class BillingAddressSetV1(Schema):
    tenant_id = fields.UUID(required=True)
    address = fields.Nested(Address, required=True)


class PaymentMethodAddedV1(Schema):
    tenant_id = fields.UUID(required=True)
    payment_method_id = fields.UUID(required=True)
    # The processor's token: never a card number (refused before it gets here).
    token = fields.String(required=True)
    brand = fields.String(required=True)
    last4 = fields.String(required=True)
    exp_month = fields.Integer(required=True)
    exp_year = fields.Integer(required=True)


class InvoiceLine(Schema):
    description = fields.String(required=True)
    quantity = fields.Integer(required=True)
    unit_amount = fields.Integer(required=True)
    amount = fields.Integer(required=True)


class InvoiceIssuedV1(Schema):
    tenant_id = fields.UUID(required=True)
    invoice_id = fields.UUID(required=True)
    number = fields.String(required=True)
    period_start = fields.Date(required=True)
    period_end = fields.Date(required=True)
    currency = fields.String(required=True)
    lines = fields.List(fields.Nested(InvoiceLine), required=True)
    subtotal = fields.Integer(required=True)
    tax_rate = fields.String(required=True)
    tax = fields.Integer(required=True)
    total = fields.Integer(required=True)
    company = fields.String(required=True)
    address = fields.Nested(Address, required=True, allow_none=True)
    billing_contact_id = fields.UUID(required=True)
    billing_contact_name = fields.String(required=True)
    billing_contact_email = fields.String(required=True)
    hold_until = fields.Date(required=True)


class InvoicePaidV1(Schema):
    tenant_id = fields.UUID(required=True)
    invoice_id = fields.UUID(required=True)
    payment_method_id = fields.UUID(required=True)
    amount = fields.Integer(required=True)
    reference = fields.String(required=True)


class ChargeDeclinedV1(Schema):
    tenant_id = fields.UUID(required=True)
    invoice_id = fields.UUID(required=True)
    payment_method_id = fields.UUID(required=True)
    attempt = fields.Integer(required=True)


ACCOUNT_OPENED = EventType("billing_account_opened", {1: AccountOpenedV1}, published=True)
PLAN_CHANGED = EventType("plan_changed", {1: PlanChangedV1}, published=True)
BILLING_ADDRESS_SET = EventType("billing_address_set", {1: BillingAddressSetV1})
PAYMENT_METHOD_ADDED = EventType("payment_method_added", {1: PaymentMethodAddedV1})
INVOICE_ISSUED = EventType(
    "invoice_issued",
    {1: InvoiceIssuedV1},
    personal_fields=("billing_contact_name", "billing_contact_email"),
    subject_field="billing_contact_id",
    published=True,
)
INVOICE_PAID = EventType("invoice_paid", {1: InvoicePaidV1}, published=True)
CHARGE_DECLINED = EventType("charge_declined", {1: ChargeDeclinedV1}, published=True)

REGISTRY = EventRegistry(
    ACCOUNT_OPENED,
    PLAN_CHANGED,
    BILLING_ADDRESS_SET,
    PAYMENT_METHOD_ADDED,
    INVOICE_ISSUED,
    INVOICE_PAID,
    CHARGE_DECLINED,
)
