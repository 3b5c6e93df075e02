"""Billing's read models: accounts, payment methods (brand, last 4, expiry), invoices.

They keep plaintext while the tenant lives; ``tenant_destroyed`` takes the account's address and
the payment methods, so a rebuild ends there too. Invoices stay, restricted, for their legal
hold (their fields read as erased once their keys are shredded). Processor tokens are never
kept here: only the events hold them, under the tenant's key.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg2

from kernel.crypto.fields import is_erased
from kernel.envelope import Envelope
from kernel.projections import Projection


class BillingProjection(Projection):
    name = "billing"
    tables = ("billing_accounts", "payment_methods", "invoices")
    event_types = frozenset(
        {
            "billing_account_opened",
            "plan_changed",
            "billing_account_region_changed",
            "billing_address_set",
            "payment_method_added",
            "invoice_issued",
            "invoice_paid",
            "tenant_destroyed",
        }
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "billing_account_opened":
            cur.execute(
                "INSERT INTO billing_accounts (tenant_id, plan, region, opened_at, version)"
                " VALUES (%s, %s, %s, %s, %s)",
                (
                    p["tenant_id"],
                    p["plan"],
                    p["region"],
                    event.occurred_at,
                    event.stream_version,
                ),
            )
        elif event.type == "plan_changed":
            cur.execute(
                "UPDATE billing_accounts SET plan = %s, version = %s WHERE tenant_id = %s",
                (p["plan"], event.stream_version, p["tenant_id"]),
            )
        elif event.type == "billing_account_region_changed":
            cur.execute(
                "UPDATE billing_accounts SET region = %s, version = %s WHERE tenant_id = %s",
                (p["region"], event.stream_version, p["tenant_id"]),
            )
        elif event.type == "billing_address_set":
            cur.execute(
                "UPDATE billing_accounts SET address = %s, version = %s WHERE tenant_id = %s",
                (_json(p["address"]), event.stream_version, p["tenant_id"]),
            )
        elif event.type == "payment_method_added":
            cur.execute(
                "INSERT INTO payment_methods (id, tenant_id, brand, last4, exp_month, exp_year,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    p["payment_method_id"],
                    p["tenant_id"],
                    p["brand"],
                    p["last4"],
                    p["exp_month"],
                    p["exp_year"],
                    event.occurred_at,
                ),
            )
        elif event.type == "invoice_issued":
            cur.execute(
                "INSERT INTO invoices (id, tenant_id, number, period_start, period_end,"
                " currency, lines, subtotal, tax_rate, tax, total, company, address,"
                " billing_contact_id, billing_contact_name, billing_contact_email, status,"
                " issued_at, hold_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, 'issued', %s, %s)",
                (
                    p["invoice_id"],
                    p["tenant_id"],
                    p["number"],
                    p["period_start"],
                    p["period_end"],
                    p["currency"],
                    json.dumps(p["lines"]),
                    p["subtotal"],
                    p["tax_rate"],
                    p["tax"],
                    p["total"],
                    str(p["company"]),
                    _json(p.get("address")),
                    p["billing_contact_id"],
                    str(p["billing_contact_name"]),
                    str(p["billing_contact_email"]),
                    event.occurred_at,
                    p["hold_until"],
                ),
            )
        elif event.type == "invoice_paid":
            cur.execute(
                "UPDATE invoices SET status = 'paid', paid_reference = %s WHERE id = %s",
                (p["reference"], p["invoice_id"]),
            )
        elif event.type == "tenant_destroyed":
            cur.execute(
                "UPDATE billing_accounts SET address = NULL, company = NULL, destroyed_at = %s"
                " WHERE tenant_id = %s",
                (event.occurred_at, p["tenant_id"]),
            )
            cur.execute("DELETE FROM payment_methods WHERE tenant_id = %s", (p["tenant_id"],))
        if event.type != "billing_account_opened" and event.type in self.event_types:
            cur.execute(
                "UPDATE billing_accounts SET version = %s WHERE tenant_id = %s",
                (event.stream_version, p["tenant_id"]),
            )


def _json(value: Any) -> str | None:
    """An address as the jsonb column keeps it; none when absent or erased."""
    return None if value is None or is_erased(value) else json.dumps(value)


PROJECTIONS = (BillingProjection(),)
