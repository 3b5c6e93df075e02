"""Billing's read models: accounts, payment methods (brand, last 4, expiry), invoices."""

from __future__ import annotations

import json

import psycopg2

from kernel.envelope import Envelope
from kernel.projections import Projection


class BillingProjection(Projection):
    name = "billing"
    tables = ("billing_accounts", "payment_methods", "invoices")
    event_types = frozenset(
        {
            "billing_account_opened",
            "plan_changed",
            "billing_address_set",
            "payment_method_added",
            "invoice_issued",
            "invoice_paid",
        }
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "billing_account_opened":
            cur.execute(
                "INSERT INTO billing_accounts (tenant_id, plan, region, company, opened_at,"
                " version) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    p["tenant_id"],
                    p["plan"],
                    p["region"],
                    p["company"],
                    event.occurred_at,
                    event.stream_version,
                ),
            )
        elif event.type == "plan_changed":
            cur.execute(
                "UPDATE billing_accounts SET plan = %s, version = %s WHERE tenant_id = %s",
                (p["plan"], event.stream_version, p["tenant_id"]),
            )
        elif event.type == "billing_address_set":
            cur.execute(
                "UPDATE billing_accounts SET address = %s, version = %s WHERE tenant_id = %s",
                (json.dumps(p["address"]), event.stream_version, p["tenant_id"]),
            )
        elif event.type == "payment_method_added":
            cur.execute(
                "INSERT INTO payment_methods (id, tenant_id, brand, last4, exp_month, exp_year,"
                " token, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    p["payment_method_id"],
                    p["tenant_id"],
                    p["brand"],
                    p["last4"],
                    p["exp_month"],
                    p["exp_year"],
                    p["token"],
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
                    p["company"],
                    None if p.get("address") is None else json.dumps(p["address"]),
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
        if event.type != "billing_account_opened" and event.type in self.event_types:
            cur.execute(
                "UPDATE billing_accounts SET version = %s WHERE tenant_id = %s",
                (event.stream_version, p["tenant_id"]),
            )


PROJECTIONS = (BillingProjection(),)
