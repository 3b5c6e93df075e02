"""A tenant's billing account: plan, address, payment methods, invoices. Plain Python.

Invoice numbers come from the account's own stream, so optimistic concurrency makes them gap-free
per tenant: two invoice runs racing on one account cannot both take a number.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from kernel.aggregate import Aggregate
from kernel.errors import Conflict, NotFound, ValidationFailed
from services.billing.catalogue import Plan


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def years_after(day: dt.date, years: int) -> dt.date:
    """The same day ``years`` later; 29 February becomes 28 February in a common year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


@dataclass
class BillingAccount(Aggregate):
    tenant_id: str = ""
    plan: str = ""
    region: str = ""
    address: dict | None = None
    destroyed: bool = False
    billed_until: dt.date | None = None
    invoices_issued: int = 0
    payment_methods: dict[str, str] = field(default_factory=dict)  # id -> token
    invoices: dict[str, dict] = field(default_factory=dict)  # id -> {total, paid, declines}

    @classmethod
    def open(
        cls, *, tenant_id: str, plan: str, region: str, opened_at: dt.datetime
    ) -> BillingAccount:
        account = cls(id=tenant_id)
        account.record(
            "billing_account_opened",
            tenant_id=tenant_id,
            plan=plan,
            region=region,
            billed_from=month_start(opened_at.date()).isoformat(),
        )
        return account

    def destroy(self, request_id: str | None) -> bool:
        """Close the account with its tenant; False when it was closed already (a command
        re-applied after a restore, a redelivery)."""
        if self.destroyed:
            return False
        self.record("tenant_destroyed", tenant_id=self.tenant_id, request_id=request_id)
        return True

    def _open_only(self) -> None:
        if self.destroyed:
            raise Conflict("the billing account was closed with its tenant")

    def change_plan(self, plan: str, catalogue: dict[str, Plan]) -> None:
        self._open_only()
        if plan not in catalogue:
            raise ValidationFailed({"plan": [f"must be one of: {', '.join(catalogue)}"]})
        if plan != self.plan:
            self.record("plan_changed", tenant_id=self.tenant_id, plan=plan, previous=self.plan)

    def change_region(self, region: str) -> bool:
        """The tenant is hosted in ``region`` from now on (accounts said so): the invoices
        issued from now on are taxed at its rate. False when nothing changes: the region is
        the account's already, or the account was closed with its tenant (nothing is billed
        any more, and a consumer refusing would only dead-letter the news)."""
        if self.destroyed or region == self.region:
            return False
        self.record(
            "billing_account_region_changed",
            tenant_id=self.tenant_id,
            region=region,
            previous_region=self.region,
        )
        return True

    def set_address(self, address: dict) -> None:
        self._open_only()
        self.record("billing_address_set", tenant_id=self.tenant_id, address=address)

    def add_payment_method(
        self, token: str, brand: str, last4: str, exp_month: int, exp_year: int
    ) -> str:
        self._open_only()
        method_id = str(uuid.uuid4())
        self.record(
            "payment_method_added",
            tenant_id=self.tenant_id,
            payment_method_id=method_id,
            token=token,
            brand=brand,
            last4=last4,
            exp_month=exp_month,
            exp_year=exp_year,
        )
        return method_id

    def periods_due(self, now: dt.datetime) -> list[tuple[dt.date, dt.date]]:
        """Whole calendar months ended by ``now`` and not yet invoiced (none once destroyed)."""
        if self.destroyed:
            return []
        due, start = [], self.billed_until
        assert start is not None
        while next_month(start) <= now.date():
            due.append((start, next_month(start)))
            start = next_month(start)
        return due

    def issue_invoice(
        self,
        *,
        period: tuple[dt.date, dt.date],
        plan: Plan,
        seats: int,
        tax_rate: Decimal,
        contact: dict[str, str],
        hold_years: int,
        issued_on: dt.date,
    ) -> str:
        """``contact``: the company and whom the invoice goes to, as accounts tells it."""
        self._open_only()
        if period[0] != self.billed_until:
            raise Conflict("invoices are issued period after period")
        invoice_id = str(uuid.uuid4())
        subtotal = seats * plan.price_per_agent
        tax = int((Decimal(subtotal) * tax_rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        self.record(
            "invoice_issued",
            tenant_id=self.tenant_id,
            invoice_id=invoice_id,
            number=f"INV-{self.invoices_issued + 1:06d}",
            period_start=period[0].isoformat(),
            period_end=period[1].isoformat(),
            currency=plan.currency,
            lines=[
                {
                    "description": f"{plan.name} plan, {period[0]:%B %Y}, per agent",
                    "quantity": seats,
                    "unit_amount": plan.price_per_agent,
                    "amount": subtotal,
                }
            ],
            subtotal=subtotal,
            tax_rate=str(tax_rate),
            tax=tax,
            total=subtotal + tax,
            company=contact["company"],
            address=self.address,
            billing_contact_id=contact["agent_id"],
            billing_contact_name=contact["name"],
            billing_contact_email=contact["email"],
            hold_until=years_after(issued_on, hold_years).isoformat(),
        )
        return invoice_id

    def charge_key(self, invoice_id: str) -> str:
        """One key per attempt: a retry after an error reuses it (the processor answers the
        first outcome); only a decline moves on to a new attempt."""
        invoice = self._invoice(invoice_id)
        if invoice["paid"]:
            raise Conflict("the invoice is already paid")
        return f"invoice-{invoice_id}-{invoice['declines']}"

    def record_charge(self, invoice_id: str, method_id: str, status: str, reference: str) -> None:
        invoice = self._invoice(invoice_id)
        if status == "succeeded":
            self.record(
                "invoice_paid",
                tenant_id=self.tenant_id,
                invoice_id=invoice_id,
                payment_method_id=method_id,
                amount=invoice["total"],
                reference=reference,
            )
        else:
            self.record(
                "charge_declined",
                tenant_id=self.tenant_id,
                invoice_id=invoice_id,
                payment_method_id=method_id,
                attempt=invoice["declines"],
            )

    def _invoice(self, invoice_id: str) -> dict:
        if invoice_id not in self.invoices:
            raise NotFound("no such invoice")
        return self.invoices[invoice_id]

    # --- state from events --------------------------------------------------------------------

    def when_billing_account_opened(self, event: dict[str, Any]) -> None:
        self.tenant_id = event["tenant_id"]
        self.plan = event["plan"]
        self.region = event["region"]
        self.billed_until = _date(event["billed_from"])

    def when_billing_account_region_changed(self, event: dict[str, Any]) -> None:
        self.region = event["region"]

    def when_plan_changed(self, event: dict[str, Any]) -> None:
        self.plan = event["plan"]

    def when_billing_address_set(self, event: dict[str, Any]) -> None:
        self.address = event["address"]

    def when_payment_method_added(self, event: dict[str, Any]) -> None:
        self.payment_methods[event["payment_method_id"]] = event["token"]

    def when_invoice_issued(self, event: dict[str, Any]) -> None:
        self.invoices_issued += 1
        self.billed_until = _date(event["period_end"])
        self.invoices[event["invoice_id"]] = {
            "total": event["total"],
            "currency": event["currency"],
            "paid": False,
            "declines": 0,
        }

    def when_invoice_paid(self, event: dict[str, Any]) -> None:
        self.invoices[event["invoice_id"]]["paid"] = True

    def when_charge_declined(self, event: dict[str, Any]) -> None:
        self.invoices[event["invoice_id"]]["declines"] += 1

    def when_tenant_destroyed(self, event: dict[str, Any]) -> None:
        self.destroyed = True
        self.address = None
        self.payment_methods = {}
