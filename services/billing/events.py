"""Billing's events, and how each holds what is not billing's own to keep.

- The account's address and processor tokens are the tenant's: under the tenant's own key
  (``tenant_fields``), shredded when the tenant is destroyed.
- An invoice's company, address and billing contact (an agent's name and e-mail) are under the
  invoice's own key, a child of the contact's key: the legal hold keeps invoices after the
  tenant's destruction, so they cannot be under the tenant's own key; when a hold ends, its
  invoices' keys are shredded, and the contact's when no held invoice names them. (Invoices
  issued before then hold name and e-mail under the contact's key, and company and address in
  plaintext; they open as before.)
- Published copies carry ids, states and amounts only.
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


class AccountOpenedV2(Schema):
    """Without the company: accounts owns it and tells billing per invoice (by RPC, recorded),
    so billing keeps no copy that could outlive the tenant."""

    tenant_id = fields.UUID(required=True)
    plan = fields.String(required=True)
    region = fields.String(required=True)
    billed_from = fields.Date(required=True)


def _without_company(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k != "company"}


class PlanChangedV1(Schema):
    tenant_id = fields.UUID(required=True)
    plan = fields.String(required=True)
    previous = fields.String(required=True)


class BillingAccountRegionChangedV1(Schema):
    """The tenant is hosted in ``region`` from now on (accounts said so after a move between
    region cells): invoices from now on are taxed at its rate; those issued keep theirs."""

    tenant_id = fields.UUID(required=True)
    region = fields.String(required=True)
    previous_region = fields.String(required=True)


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


class TenantDestroyedV1(Schema):
    """The tenant was destroyed: no more invoice runs, payment methods and the address gone (the
    tenant's own key is shredded); held invoices stay until their hold ends. Null request: a
    destruction asked for outside retention's requests."""

    tenant_id = fields.UUID(required=True)
    request_id = fields.UUID(required=True, allow_none=True)


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


ACCOUNT_OPENED = EventType(
    "billing_account_opened",
    {1: AccountOpenedV1, 2: AccountOpenedV2},
    upcasters={1: _without_company},
    published=True,
)
PLAN_CHANGED = EventType("plan_changed", {1: PlanChangedV1}, published=True)
ACCOUNT_REGION_CHANGED = EventType(
    "billing_account_region_changed", {1: BillingAccountRegionChangedV1}, published=True
)
# Only where these fields are stored changed (under the tenant's key), not what they mean: the
# store decrypts them on read, so the version stands.
BILLING_ADDRESS_SET = EventType(
    "billing_address_set", {1: BillingAddressSetV1}, tenant_fields=("address",)
)
PAYMENT_METHOD_ADDED = EventType(
    "payment_method_added", {1: PaymentMethodAddedV1}, tenant_fields=("token",)
)
# The same fields as ever; what changed is the key they are stored under (the invoice's own, a
# child of the contact's) and that the published copy leaves without company and address.
INVOICE_ISSUED = EventType(
    "invoice_issued",
    {1: InvoiceIssuedV1},
    personal_fields=("company", "address", "billing_contact_name", "billing_contact_email"),
    subject_field="invoice_id",
    parent_field="billing_contact_id",
    published=True,
)
TENANT_DESTROYED = EventType("tenant_destroyed", {1: TenantDestroyedV1})
INVOICE_PAID = EventType("invoice_paid", {1: InvoicePaidV1}, published=True)
CHARGE_DECLINED = EventType("charge_declined", {1: ChargeDeclinedV1}, published=True)

REGISTRY = EventRegistry(
    ACCOUNT_OPENED,
    PLAN_CHANGED,
    ACCOUNT_REGION_CHANGED,
    BILLING_ADDRESS_SET,
    PAYMENT_METHOD_ADDED,
    INVOICE_ISSUED,
    INVOICE_PAID,
    CHARGE_DECLINED,
    TENANT_DESTROYED,
)
