"""Billing's handlers: plain functions over a unit of work, a clock value and adapters."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from kernel.envelope import Envelope
from kernel.errors import Conflict, NotFound, ServiceUnavailable, require_id
from kernel.uow import UnitOfWork
from services.billing.catalogue import DEFAULT_PLAN, Catalogue
from services.billing.domain import BillingAccount
from services.billing.processor import PaymentProcessor, ProcessorError, UnknownToken

log = logging.getLogger(__name__)

# tenant_id -> {"agent_id", "name", "email", "company"}: whom an invoice goes to, as accounts
# (their owner) tells it; billing keeps them on the invoice only.
ContactLookup = Callable[[str], dict[str, str]]


def load_account(uow: UnitOfWork, tenant_id: str) -> BillingAccount:
    events = uow.load(BillingAccount.stream_id_for(tenant_id))
    if not events:
        raise NotFound("no billing account for this tenant yet")
    return BillingAccount.from_history(tenant_id, events)


# --- from accounts' events --------------------------------------------------------------------


def learn_from_accounts(uow: UnitOfWork, event: Envelope) -> None:
    p = event.payload
    if event.type == "tenant_created":
        if uow.load(BillingAccount.stream_id_for(p["tenant_id"])):
            return
        account = BillingAccount.open(
            tenant_id=p["tenant_id"],
            plan=p.get("plan") or DEFAULT_PLAN,
            region=p["region"],
            opened_at=event.occurred_at,
        )
        uow.save(account, account.tenant_id, account.region)
    elif event.type == "tenant_region_changed":
        stream = uow.load(BillingAccount.stream_id_for(p["tenant_id"]))
        if not stream:
            # Accounts' events of a tenant come in order on one queue: its account is opened
            # by the tenant_created before this. Only a tenant moved in with no account (one
            # whose sign-up billing never learned of) gets here; its account, when opened,
            # takes the tenant_created's region.
            log.warning("tenant_region_changed for a tenant without a billing account")
            return
        account = BillingAccount.from_history(p["tenant_id"], stream)
        if account.change_region(p["region"]):
            uow.save(account, account.tenant_id, account.region)
    elif event.type in ("agent_created", "agent_deactivated"):
        uow.cur.execute(
            "INSERT INTO billing_agents (agent_id, tenant_id, active, version)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (agent_id) DO UPDATE"
            " SET active = EXCLUDED.active, version = EXCLUDED.version"
            " WHERE billing_agents.version < EXCLUDED.version",
            (p["agent_id"], p["tenant_id"], event.type == "agent_created", event.stream_version),
        )


# --- plans and subscription -------------------------------------------------------------------


def list_plans(catalogue: Catalogue) -> dict[str, Any]:
    return {"items": [plan.view() for plan in catalogue.plans.values()]}


def seats(uow: UnitOfWork, tenant_id: str) -> int:
    uow.cur.execute(
        "SELECT count(*) FROM billing_agents WHERE tenant_id = %s AND active", (tenant_id,)
    )
    return max(1, uow.cur.fetchone()[0])


def subscription(uow: UnitOfWork, catalogue: Catalogue, tenant_id: str) -> dict[str, Any]:
    account = load_account(uow, tenant_id)
    plan = catalogue.plans[account.plan]
    return {
        "plan": plan.name,
        "price_per_agent": plan.price_per_agent,
        "currency": plan.currency,
        "seats": seats(uow, tenant_id),
        "region": account.region,
        "tax_rate": str(catalogue.tax_rates.get(account.region, 0)),
        "billed_until": account.billed_until.isoformat() if account.billed_until else None,
    }


def change_plan(
    uow: UnitOfWork, catalogue: Catalogue, tenant_id: str, command: dict[str, Any]
) -> dict[str, Any]:
    account = load_account(uow, tenant_id)
    account.change_plan(command["plan"], catalogue.plans)
    uow.save(account, account.tenant_id, account.region)
    return subscription(uow, catalogue, tenant_id)


def set_address(uow: UnitOfWork, tenant_id: str, command: dict[str, Any]) -> dict[str, Any]:
    account = load_account(uow, tenant_id)
    account.set_address(command["address"])
    uow.save(account, account.tenant_id, account.region)
    return {"address": command["address"]}


# --- payment methods and charges --------------------------------------------------------------


def add_payment_method(
    uow: UnitOfWork, processor: PaymentProcessor, tenant_id: str, command: dict[str, Any]
) -> dict[str, Any]:
    account = load_account(uow, tenant_id)
    try:
        card = processor.describe(command["processor_token"])
    except UnknownToken:
        # A well-formed reference to nothing: as an id that names no record would be.
        raise NotFound("the processor knows no such token") from None
    method_id = account.add_payment_method(
        command["processor_token"], card.brand, card.last4, card.exp_month, card.exp_year
    )
    uow.save(account, account.tenant_id, account.region)
    return {
        "id": method_id,
        "brand": card.brand,
        "last4": card.last4,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
    }


def list_payment_methods(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    uow.cur.execute(
        "SELECT id, brand, last4, exp_month, exp_year FROM payment_methods"
        " WHERE tenant_id = %s ORDER BY created_at, id",
        (tenant_id,),
    )
    return {
        "items": [
            {"id": str(i), "brand": b, "last4": l4, "exp_month": m, "exp_year": y}
            for i, b, l4, m, y in uow.cur.fetchall()
        ]
    }


def pay_invoice(
    uow: UnitOfWork, processor: PaymentProcessor, tenant_id: str, invoice_id: str
) -> dict[str, Any]:
    """Charge the newest payment method. A processor error leaves the attempt open: paying
    again reuses its idempotency key, so the processor never charges twice."""
    require_id(invoice_id, "invoice")
    account = load_account(uow, tenant_id)
    if not account.payment_methods:
        raise Conflict("add a payment method first")
    key = account.charge_key(invoice_id)
    method_id, token = list(account.payment_methods.items())[-1]
    invoice = account.invoices[invoice_id]
    try:
        # The invoice's own currency: the plan may have changed (or gone) since it was issued.
        outcome = processor.charge(token, invoice["total"], invoice["currency"], key)
    except ProcessorError:
        raise ServiceUnavailable("the payment processor failed; retry the payment") from None
    account.record_charge(invoice_id, method_id, outcome.status, outcome.reference)
    uow.save(account, account.tenant_id, account.region)
    return get_invoice(uow, tenant_id, invoice_id) | {"charge": outcome.status}


# --- invoices ---------------------------------------------------------------------------------


def run_invoices(
    uow_factory: Callable[[], UnitOfWork],
    catalogue: Catalogue,
    contact: ContactLookup,
    now: dt.datetime,
) -> int:
    """Issue every invoice due by ``now``, one unit of work per invoice; returns how many."""
    with uow_factory() as uow:
        uow.cur.execute(
            "SELECT tenant_id FROM billing_accounts WHERE destroyed_at IS NULL ORDER BY tenant_id"
        )
        tenants = [str(row[0]) for row in uow.cur.fetchall()]
    issued = 0
    for tenant_id in tenants:
        try:
            issued += _invoice_tenant(uow_factory, catalogue, contact, now, tenant_id)
        except Exception as exc:  # one tenant's trouble must not stop everyone's invoices
            log.error("invoice run for tenant %s stopped: %s", tenant_id, type(exc).__name__)
    return issued


def _invoice_tenant(
    uow_factory: Callable[[], UnitOfWork],
    catalogue: Catalogue,
    contact: ContactLookup,
    now: dt.datetime,
    tenant_id: str,
) -> int:
    issued = 0
    while True:
        with uow_factory() as uow:
            account = load_account(uow, tenant_id)
            due = account.periods_due(now)
            if not due:
                return issued
            account.issue_invoice(
                period=due[0],
                plan=catalogue.plans[account.plan],
                seats=seats(uow, tenant_id),
                tax_rate=catalogue.tax_rate(account.region),
                contact=contact(tenant_id),
                hold_years=catalogue.legal_hold_years,
                issued_on=now.date(),
            )
            uow.save(account, account.tenant_id, account.region)
            issued += 1


_INVOICE_COLUMNS = (
    "id, number, period_start, period_end, currency, lines, subtotal, tax_rate, tax, total,"
    " company, address, billing_contact_id, billing_contact_name, billing_contact_email,"
    " status, issued_at, hold_until"
)


def _invoice_row(row: tuple) -> dict[str, Any]:
    (
        i,
        number,
        start,
        end,
        currency,
        lines,
        subtotal,
        rate,
        tax,
        total,
        company,
        address,
        contact_id,
        contact_name,
        contact_email,
        status,
        issued_at,
        hold_until,
    ) = row
    return {
        "id": str(i),
        "number": number,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "currency": currency,
        "lines": lines,
        "subtotal": subtotal,
        "tax_rate": str(rate),
        "tax": tax,
        "total": total,
        "company": company,
        "address": address,
        "billing_contact": {"id": str(contact_id), "name": contact_name, "email": contact_email},
        "status": status,
        "issued_at": issued_at.isoformat(),
        "hold_until": hold_until.isoformat(),
    }


def get_invoice(uow: UnitOfWork, tenant_id: str, invoice_id: str) -> dict[str, Any]:
    require_id(invoice_id, "invoice")
    uow.cur.execute(
        f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE id = %s AND tenant_id = %s",
        (invoice_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such invoice")
    return _invoice_row(row)


def list_invoices(
    uow: UnitOfWork, tenant_id: str, limit: int, after: list | None
) -> dict[str, Any]:
    query = f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if after:
        query += " AND (issued_at, id) > (%s::timestamptz, %s::uuid)"
        params.extend(after)
    query += " ORDER BY issued_at, id LIMIT %s"
    params.append(limit + 1)
    uow.cur.execute(query, params)
    rows = uow.cur.fetchall()
    items = [_invoice_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "next": [items[-1]["issued_at"], items[-1]["id"]] if more else None}
