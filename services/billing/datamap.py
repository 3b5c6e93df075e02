"""What billing keeps, beside its migrations: the data map's declaration (kernel.datamap)."""

from kernel.datamap import (
    End,
    Held,
    ServiceMap,
    Table,
    When,
    operational,
    personal,
    pseudonym,
    secret,
)
from services.billing.events import REGISTRY

_PRIVACY = "services.billing.privacy"
_PROJECTIONS = "services.billing.projections"
_MIGRATION = "services/billing/migrations/0002_destruction_and_keys.sql"
# Destruction is the tenant_destroyed event, which the read model applies (a rebuild too).
DESTROYED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PROJECTIONS}:BillingProjection.apply"
)
HOLD = End(
    When.LEGAL_HOLD,
    "kept, restricted, until the hold ends; then deleted",
    f"{_PRIVACY}:expire_holds",
)

DATA_MAP = ServiceMap(
    service="billing",
    summary="plans, subscriptions, invoices (kept under a legal hold) and payment methods as"
    " processor tokens; never a card number",
    tables=(
        Table(
            "billing_accounts",
            "a tenant's billing account",
            (
                pseudonym("tenant_id"),
                operational("plan"),
                operational("region"),
                personal(
                    "company",
                    Held.PLAINTEXT,
                    End(
                        When.RETIRED, "emptied, never written: the company is accounts'", _MIGRATION
                    ),
                ),
                personal(
                    "address",
                    Held.PLAINTEXT,
                    End(
                        When.DESTRUCTION,
                        "set to NULL by tenant_destroyed",
                        f"{_PROJECTIONS}:BillingProjection.apply",
                    ),
                ),
                operational("opened_at"),
                operational("version"),
                operational("destroyed_at"),
            ),
            ends=(End(When.KEPT, "scrubbed: the account's tombstone"),),
        ),
        Table(
            "payment_methods",
            "payment methods as the processor's tokens: brand, last four digits, expiry",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                operational("brand"),
                operational("last4"),
                operational("exp_month"),
                operational("exp_year"),
                secret(
                    "token",
                    Held.PLAINTEXT,
                    End(
                        When.RETIRED, "emptied, never written: tokens are in the events", _MIGRATION
                    ),
                ),
                operational("created_at"),
            ),
            ends=(DESTROYED,),
        ),
        Table(
            "invoices",
            "issued invoices, kept for the legal period",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                operational("number"),
                operational("period_start"),
                operational("period_end"),
                operational("currency"),
                operational("lines"),
                operational("subtotal"),
                operational("tax_rate"),
                operational("tax"),
                operational("total"),
                personal("company", Held.PLAINTEXT, HOLD),
                personal("address", Held.PLAINTEXT, HOLD),
                pseudonym("billing_contact_id"),
                personal("billing_contact_name", Held.PLAINTEXT, HOLD),
                personal("billing_contact_email", Held.PLAINTEXT, HOLD),
                operational("status"),
                operational("issued_at"),
                operational("hold_until"),
                operational("paid_reference"),
            ),
            ends=(HOLD,),
        ),
        Table(
            "billing_agents",
            "seats: which agents are active, by id",
            (
                pseudonym("agent_id"),
                pseudonym("tenant_id"),
                operational("active"),
                operational("version"),
            ),
            ends=(
                End(
                    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PRIVACY}:destroy_tenant"
                ),
                End(When.ERASURE, "deleted", f"{_PRIVACY}:erase_subject"),
            ),
        ),
        Table(
            "restrictions",
            "data kept under a legal hold: used for nothing but the legal obligation",
            (
                pseudonym("subject_id"),
                operational("basis"),
                operational("until"),
                operational("restricted_at"),
            ),
            ends=(HOLD,),
        ),
        Table(
            "sandbox_charges",
            "the sandbox processor's own record of charges (a real processor keeps this)",
            (
                operational("idempotency_key"),
                operational("amount"),
                operational("currency"),
                operational("status"),
                operational("reference"),
                operational("charged_at"),
            ),
            ends=(End(When.KEPT, "amounts and references, no one's data"),),
        ),
    ),
    registries=(REGISTRY,),
    event_fields={
        "billing_account_opened": {"plan": operational("plan"), "region": operational("region")},
        "plan_changed": {"plan": operational("plan"), "previous": operational("previous")},
        "billing_account_region_changed": {
            "region": operational("region"),
            "previous_region": operational("previous_region"),
        },
        "payment_method_added": {
            "brand": operational("brand"),
            "last4": operational("last4", "the last four digits, as processors show them"),
        },
        "invoice_issued": {
            "number": operational("number"),
            "currency": operational("currency"),
            "lines.description": operational("lines.description", "the plan's line"),
            "tax_rate": operational("tax_rate"),
        },
        "invoice_paid": {"reference": operational("reference", "the processor's reference")},
    },
)
