"""Billing's commands. Card numbers never get this far: the gateway refuses any billing request
that holds one anywhere (its query included), and billing loads commands as every service does
(``kernel.commands.load_command``), which refuses one in any field before a schema runs."""

from marshmallow import fields, validate

from kernel.commands import Command


class ChangePlanV1(Command):
    """``PUT /v1/billing/subscription``."""

    plan = fields.String(required=True, validate=validate.Length(min=1, max=50))


class AddPaymentMethodV1(Command):
    """``POST /v1/billing/payment-methods``: a processor's token, never card details."""

    processor_token = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=200), validate.Regexp(r"^tok_[A-Za-z0-9_]+$")],
    )


class AddressV1(Command):
    line1 = fields.String(required=True, validate=validate.Length(min=1, max=200))
    line2 = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    city = fields.String(required=True, validate=validate.Length(min=1, max=100))
    postcode = fields.String(required=True, validate=validate.Length(min=1, max=20))
    country = fields.String(required=True, validate=validate.Length(min=2, max=2))


class SetBillingAddressV1(Command):
    """``PUT /v1/billing/address``: the billed company's address, printed on invoices."""

    address = fields.Nested(AddressV1, required=True)
