"""Billing over its own event store: accounts opened from accounts' events, plan changes, invoice
runs over simulated months (totals, tax per region, gap-free numbering), charges through the
sandbox processor (success, decline, processor error, retries with the same key), erasure under
the legal hold, and replay of the read models.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import services.billing
from kernel import privacy as privacy_protocol
from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.envelope import new_envelope
from kernel.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from kernel.stores import prepare_databases
from kernel.uow import EventSourcedStore
from services.billing import handlers, privacy
from services.billing.catalogue import Catalogue
from services.billing.events import REGISTRY
from services.billing.processor import SandboxProcessor
from services.billing.projections import PROJECTIONS
from tests.support.privacy import privacy_command

MIGRATIONS = Path(services.billing.__file__).parent / "migrations"
UTC = dt.UTC
# The simulated calendar: accounts open in March 2025, invoice runs happen on later days.
OPENED = dt.datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
APRIL_RUN = dt.datetime(2025, 4, 1, 2, 0, tzinfo=UTC)
MAY_RUN = dt.datetime(2025, 5, 3, 2, 0, tzinfo=UTC)
JULY_RUN = dt.datetime(2025, 7, 2, 2, 0, tzinfo=UTC)
AUGUST_RUN = dt.datetime(2025, 8, 1, 2, 0, tzinfo=UTC)
ADDRESS = {
    "line1": "1 Counting House Lane",
    "line2": None,
    "city": "London",
    "postcode": "EC1A 1BB",
    "country": "GB",
}
BILLING_TABLES = ("billing_accounts", "payment_methods", "invoices")


# --- the billing service's store, fed the way accounts feeds it --------------------------------


@dataclass
class Tenant:
    id: str
    admin_id: str
    agent_ids: list[str] = field(default_factory=list)


@dataclass
class Billing:
    store: EventSourcedStore
    processor: SandboxProcessor
    catalogue: Catalogue
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)

    def feed(self, type_: str, payload: dict[str, Any], at: dt.datetime, version: int = 1) -> None:
        envelope = new_envelope(
            type=type_,
            schema_version=1,
            source="accounts",
            stream_id=f"accounts-{uuid.uuid4()}",
            stream_version=version,
            tenant_id=uuid.UUID(payload["tenant_id"]),
            actor_id=None,
            payload=payload,
            occurred_at=at,
        )
        with self.store.unit_of_work() as uow:
            handlers.learn_from_accounts(uow, envelope)

    def open_tenant(
        self, company: str, region: str, seats: int = 1, at: dt.datetime = OPENED
    ) -> Tenant:
        tenant = Tenant(id=str(uuid.uuid4()), admin_id=str(uuid.uuid4()))
        self.feed(
            "tenant_created",
            {
                "tenant_id": tenant.id,
                "company": company,
                "region": region,
                "plan": "standard",
                "policy_version": "2025-01",
                "admin_agent_id": tenant.admin_id,
            },
            at,
        )
        self.feed(
            "agent_created",
            {"agent_id": tenant.admin_id, "tenant_id": tenant.id, "role": "admin"},
            at,
        )
        for _ in range(seats - 1):
            self.add_agent(tenant, at)
        tag = tenant.admin_id[:8]
        # What accounts tells billing per invoice: the company and its billing contact.
        self.contacts[tenant.id] = {
            "agent_id": tenant.admin_id,
            "name": f"Billing Admin {tag}",
            "email": f"admin.{tag}@billing.example",
            "company": company,
        }
        return tenant

    def add_agent(self, tenant: Tenant, at: dt.datetime = OPENED, role: str = "agent") -> str:
        agent_id = str(uuid.uuid4())
        self.feed("agent_created", {"agent_id": agent_id, "tenant_id": tenant.id, "role": role}, at)
        tenant.agent_ids.append(agent_id)
        return agent_id

    def deactivate(self, tenant: Tenant, agent_id: str, at: dt.datetime) -> None:
        self.feed(
            "agent_deactivated",
            {"agent_id": agent_id, "tenant_id": tenant.id},
            at,
            version=2,
        )

    def run(self, now: dt.datetime, contact=None) -> int:
        return handlers.run_invoices(
            self.store.unit_of_work, self.catalogue, contact or self.contacts.__getitem__, now
        )

    def invoices(self, tenant: Tenant) -> list[dict[str, Any]]:
        with self.store.unit_of_work() as uow:
            items = handlers.list_invoices(uow, tenant.id, 100, None)["items"]
        return sorted(items, key=lambda invoice: invoice["number"])

    def call(self, handler, *args: Any) -> Any:
        with self.store.unit_of_work() as uow:
            return handler(uow, *args)

    def priced(self, handler, *args: Any) -> Any:
        """``call`` for a handler that takes the catalogue after the unit of work."""
        with self.store.unit_of_work() as uow:
            return handler(uow, self.catalogue, *args)

    def command(self, command: str, tenant: Tenant, subject_id: str | None) -> dict[str, Any]:
        """A privacy command delivered to billing as its privacy queue delivers it; the answer
        it publishes (``privacy_answered``, for retention and the ledger)."""
        event = privacy_command(command, tenant.id, subject_id, subject_kind="agent")
        request_id = event.payload["request_id"]
        handlers_ = privacy.handlers_for(self.store.cipher, self.catalogue)
        with self.store.unit_of_work("billing") as uow:
            privacy_protocol.handle_command(uow, "billing", event, handlers_)
        [(body,)] = self.rows(
            "SELECT body FROM outbox WHERE routing_key = 'billing.privacy_answered'"
            " AND body::jsonb -> 'payload' ->> 'request_id' = %s",
            request_id,
        )
        return json.loads(body)["payload"]

    def pay(self, tenant: Tenant, invoice_id: str, processor=None) -> dict[str, Any]:
        with self.store.unit_of_work(tenant.admin_id) as uow:
            return handlers.pay_invoice(uow, processor or self.processor, tenant.id, invoice_id)

    def add_card(self, tenant: Tenant, token: str) -> dict[str, Any]:
        with self.store.unit_of_work(tenant.admin_id) as uow:
            return handlers.add_payment_method(
                uow, self.processor, tenant.id, {"processor_token": token}
            )

    def rows(self, query: str, *params: Any) -> list[tuple]:
        with self.store.db.transaction() as cur:
            cur.execute(query, params or None)
            return cur.fetchall()

    def charges(self) -> list[tuple]:
        return self.rows(
            "SELECT idempotency_key, amount, currency, status, reference FROM sandbox_charges"
            " ORDER BY idempotency_key"
        )


@pytest.fixture
def billing(world) -> Billing:
    prepare_databases(world, "billing", MIGRATIONS)
    keystore = Keystore(
        Database(world.database_dsn("billing", "keys"), maxconn=10),
        world.master_keys,
        cache_seconds=world.key_cache_seconds,
    )
    store = EventSourcedStore(
        "billing",
        Database(world.database_dsn("billing"), maxconn=10),
        REGISTRY,
        FieldCipher(keystore),
        PROJECTIONS,
    )
    return Billing(
        store,
        SandboxProcessor(Database(world.database_dsn("billing"), maxconn=5)),
        Catalogue.of(world),
    )


# --- the subscription ---------------------------------------------------------------------------


def test_accounts_events_open_an_account_on_the_default_plan_and_count_seats(billing):
    tenant = billing.open_tenant("Seat Counters Ltd", "in", seats=3)
    subscription = billing.priced(handlers.subscription, tenant.id)
    assert subscription == {
        "plan": "standard",
        "price_per_agent": 1500,
        "currency": "GBP",
        "seats": 3,
        "region": "in",
        "tax_rate": "0.18",
        "billed_until": "2025-03-01",
    }
    billing.deactivate(tenant, tenant.agent_ids[0], OPENED + dt.timedelta(days=1))
    assert billing.priced(handlers.subscription, tenant.id)["seats"] == 2

    # A redelivered tenant_created opens nothing twice.
    billing.feed(
        "tenant_created",
        {
            "tenant_id": tenant.id,
            "company": "Seat Counters Ltd",
            "region": "in",
            "plan": "standard",
            "policy_version": "2025-01",
            "admin_agent_id": tenant.admin_id,
        },
        OPENED,
    )
    assert billing.rows("SELECT count(*) FROM events WHERE type = 'billing_account_opened'") == [
        (1,)
    ]
    with pytest.raises(NotFound):
        billing.priced(handlers.subscription, str(uuid.uuid4()))


def test_a_plan_change_prices_the_next_invoice_and_an_unknown_plan_is_refused(billing):
    tenant = billing.open_tenant("Plan Changers Ltd", "uk", seats=2)
    assert billing.run(APRIL_RUN) == 1

    with pytest.raises(ValidationFailed) as refused:
        billing.priced(handlers.change_plan, tenant.id, {"plan": "platinum"})
    assert "plan" in refused.value.errors
    assert billing.priced(handlers.subscription, tenant.id)["plan"] == "standard"

    changed = billing.priced(handlers.change_plan, tenant.id, {"plan": "team"})
    assert changed["plan"] == "team" and changed["price_per_agent"] == 2900
    # April: a third agent joined; the month is billed at the new plan's price.
    billing.add_agent(tenant, dt.datetime(2025, 4, 15, tzinfo=UTC))
    assert billing.run(MAY_RUN) == 1

    march, april = billing.invoices(tenant)
    assert (march["period_start"], march["subtotal"], march["total"]) == ("2025-03-01", 3000, 3600)
    assert march["lines"] == [
        {
            "description": "standard plan, March 2025, per agent",
            "quantity": 2,
            "unit_amount": 1500,
            "amount": 3000,
        }
    ]
    assert (april["period_start"], april["period_end"]) == ("2025-04-01", "2025-05-01")
    assert april["lines"] == [
        {
            "description": "team plan, April 2025, per agent",
            "quantity": 3,
            "unit_amount": 2900,
            "amount": 8700,
        }
    ]
    assert (april["subtotal"], april["tax"], april["total"]) == (8700, 1740, 10440)


# --- the invoice run --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "region, plan, seats, subtotal, tax_rate, tax, total",
    [
        ("uk", "standard", 3, 4500, "0.20", 900, 5400),
        ("in", "team", 2, 5800, "0.18", 1044, 6844),
        ("sg", "enterprise", 4, 19600, "0.09", 1764, 21364),
    ],
)
def test_a_months_invoice_is_seats_times_price_plus_the_regions_tax(
    billing, region, plan, seats, subtotal, tax_rate, tax, total
):
    tenant = billing.open_tenant(f"Region {region} Ltd", region, seats=seats)
    billing.priced(handlers.change_plan, tenant.id, {"plan": plan})
    # Not yet due: March has not ended.
    assert billing.run(dt.datetime(2025, 3, 31, 23, 59, tzinfo=UTC)) == 0
    assert billing.run(APRIL_RUN) == 1
    assert billing.run(APRIL_RUN) == 0  # nothing is invoiced twice

    [invoice] = billing.invoices(tenant)
    assert invoice["number"] == "INV-000001"
    assert (invoice["period_start"], invoice["period_end"]) == ("2025-03-01", "2025-04-01")
    assert invoice["currency"] == "GBP"
    assert invoice["lines"][0]["quantity"] == seats
    assert (invoice["subtotal"], invoice["tax_rate"], invoice["tax"], invoice["total"]) == (
        subtotal,
        tax_rate,
        tax,
        total,
    )
    assert invoice["status"] == "issued"
    assert billing.priced(handlers.subscription, tenant.id)["billed_until"] == "2025-04-01"


# --- a tenant moved to another region ---------------------------------------------------------


def deliver(billing: Billing, envelope: Any) -> None:
    """As billing's consumer of accounts' events takes one: once per event id (its inbox)."""
    with billing.store.unit_of_work() as uow:
        if uow.first_delivery("billing.learn_from_accounts", envelope.event_id):
            handlers.learn_from_accounts(uow, envelope)


def region_changed(tenant: Tenant, region: str, previous: str) -> Any:
    return new_envelope(
        type="tenant_region_changed",
        schema_version=1,
        source="accounts",
        stream_id=f"tenant-{tenant.id}",
        stream_version=2,
        tenant_id=uuid.UUID(tenant.id),
        actor_id=None,
        payload={"tenant_id": tenant.id, "region": region, "previous_region": previous},
        metadata={"region": region},
        occurred_at=dt.datetime(2025, 4, 10, tzinfo=UTC),
    )


def test_a_tenant_moved_to_another_region_is_taxed_at_its_rate_from_then_on(billing):
    tenant = billing.open_tenant("Movers Ltd", "uk", seats=2)
    assert billing.run(APRIL_RUN) == 1  # March, taxed in uk

    moved = region_changed(tenant, "in", "uk")
    deliver(billing, moved)
    deliver(billing, moved)  # redelivered: handled once
    # The same news again under another id (a resumed move's step): nothing changes either.
    deliver(billing, region_changed(tenant, "in", "uk"))

    subscription = billing.priced(handlers.subscription, tenant.id)
    assert (subscription["region"], subscription["tax_rate"]) == ("in", "0.18")
    assert billing.rows("SELECT region FROM billing_accounts WHERE tenant_id = %s", tenant.id) == [
        ("in",)
    ]
    # One event, stamped with the new region, published with ids and region codes only.
    [(payload, metadata)] = billing.rows(
        "SELECT payload::text, metadata::text FROM events"
        " WHERE type = 'billing_account_region_changed'"
    )
    assert json.loads(payload) == {
        "tenant_id": tenant.id,
        "region": "in",
        "previous_region": "uk",
    }
    assert json.loads(metadata)["region"] == "in"
    [(body,)] = billing.rows(
        "SELECT body FROM outbox WHERE routing_key = 'billing.billing_account_region_changed'"
    )
    assert json.loads(body)["payload"] == json.loads(payload)

    assert billing.run(MAY_RUN) == 1
    march, april = billing.invoices(tenant)
    # The invoice issued before keeps its tax; April's is the new region's.
    assert (march["tax_rate"], march["subtotal"], march["tax"]) == ("0.20", 3000, 600)
    assert (april["tax_rate"], april["subtotal"], april["tax"]) == ("0.18", 3000, 540)
    # Later events of the account carry the new region too.
    [(latest,)] = billing.rows(
        "SELECT metadata::text FROM events WHERE type = 'invoice_issued'"
        " AND payload->>'tenant_id' = %s AND payload->>'number' = 'INV-000002'",
        tenant.id,
    )
    assert json.loads(latest)["region"] == "in"

    # A rebuilt read model ends in the new region as well.
    before = read_models(billing)
    billing.store.rebuild("billing", progress=False)
    assert read_models(billing) == before


def test_a_region_change_for_a_tenant_billing_has_no_account_of_is_let_go(billing):
    stranger = Tenant(id=str(uuid.uuid4()), admin_id=str(uuid.uuid4()))
    deliver(billing, region_changed(stranger, "in", "uk"))
    assert billing.rows(
        "SELECT count(*) FROM events WHERE stream_id LIKE %s", f"%{stranger.id}%"
    ) == [(0,)]


PLANS_WITH_ODD_PRICES = [
    {"name": "standard", "price_per_agent": 1500, "currency": "GBP"},
    {"name": "odd-1250", "price_per_agent": 1250, "currency": "GBP"},
    {"name": "odd-1249", "price_per_agent": 1249, "currency": "GBP"},
    {"name": "odd-1125", "price_per_agent": 1125, "currency": "GBP"},
    {"name": "odd-1503", "price_per_agent": 1503, "currency": "GBP"},
    {"name": "odd-1501", "price_per_agent": 1501, "currency": "GBP"},
]


def plans_from_the_environment(plans: list[dict[str, Any]]) -> Catalogue:
    """The catalogue of a process started with ``LEDGERDESK_BILLING_PLANS`` set to ``plans``."""
    return Catalogue.of(Settings.from_env({"LEDGERDESK_BILLING_PLANS": json.dumps(plans)}))


@pytest.mark.parametrize(
    "region, plan, tax",
    [
        ("sg", "odd-1250", 113),  # 112.5: half rounds up (half-even would give 112)
        ("sg", "odd-1249", 112),  # 112.41
        ("in", "odd-1125", 203),  # 202.5: half rounds up (half-even would give 202)
        ("uk", "odd-1503", 301),  # 300.6
        ("uk", "odd-1501", 300),  # 300.2
    ],
)
def test_tax_is_rounded_half_up_to_minor_units(billing, region, plan, tax):
    billing.catalogue = plans_from_the_environment(PLANS_WITH_ODD_PRICES)
    tenant = billing.open_tenant(f"Rounding {plan} Ltd", region)
    billing.priced(handlers.change_plan, tenant.id, {"plan": plan})
    assert billing.run(APRIL_RUN) == 1
    [invoice] = billing.invoices(tenant)
    price = int(plan.split("-")[1])
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (price, tax, price + tax)


def test_invoice_numbers_have_no_gaps_per_tenant_across_months(billing):
    first = billing.open_tenant("First Tenant Ltd", "uk")
    assert billing.run(APRIL_RUN) == 1
    assert billing.run(MAY_RUN) == 1
    # A second tenant opens in May; a missed month is caught up period after period.
    second = billing.open_tenant("Second Tenant Ltd", "sg", at=dt.datetime(2025, 5, 20, tzinfo=UTC))
    assert billing.run(JULY_RUN) == 4  # first: May, June; second: May, June
    assert billing.run(AUGUST_RUN) == 2
    assert billing.run(AUGUST_RUN) == 0

    expected = {
        first.id: ["2025-03-01", "2025-04-01", "2025-05-01", "2025-06-01", "2025-07-01"],
        second.id: ["2025-05-01", "2025-06-01", "2025-07-01"],
    }
    for tenant in (first, second):
        invoices = billing.invoices(tenant)
        starts = expected[tenant.id]
        assert [i["number"] for i in invoices] == [
            f"INV-{n:06d}" for n in range(1, len(starts) + 1)
        ]
        assert [i["period_start"] for i in invoices] == starts
        # Contiguous periods: each begins where the one before it ended.
        for before, after in zip(invoices, invoices[1:], strict=False):
            assert before["period_end"] == after["period_start"]
    assert billing.rows("SELECT count(*), count(DISTINCT (tenant_id, number)) FROM invoices") == [
        (8, 8)
    ]

    # Pages of two, oldest first, walk the first tenant's five invoices exactly once.
    walked, after = [], None
    while True:
        page = billing.call(handlers.list_invoices, first.id, 2, after)
        walked += [invoice["number"] for invoice in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert walked == [f"INV-{n:06d}" for n in range(1, 6)]


def test_two_racing_invoice_runs_cannot_both_take_a_number(billing):
    tenant = billing.open_tenant("Racing Runs Ltd", "uk")
    raced: list[int] = []

    def contact_and_race(tenant_id: str) -> dict[str, str]:
        # While the outer run is issuing, another run issues the same invoice and commits.
        if not raced:
            raced.append(billing.run(APRIL_RUN))
        return billing.contacts[tenant_id]

    # The run that lost the race issues nothing for this tenant (its write is refused and
    # logged; the run goes on with other tenants), and the winner's invoice is the only one.
    assert billing.run(APRIL_RUN, contact=contact_and_race) == 0
    assert raced == [1]
    assert billing.run(MAY_RUN) == 1
    assert [(i["number"], i["period_start"]) for i in billing.invoices(tenant)] == [
        ("INV-000001", "2025-03-01"),
        ("INV-000002", "2025-04-01"),
    ]


def test_an_invoice_names_the_company_its_address_and_the_billing_contact(billing):
    tenant = billing.open_tenant("Addressed Ltd", "uk", seats=2)
    assert billing.call(handlers.set_address, tenant.id, {"address": ADDRESS}) == {
        "address": ADDRESS
    }
    assert billing.run(APRIL_RUN) == 1
    [invoice] = billing.invoices(tenant)
    contact = billing.contacts[tenant.id]
    assert invoice["company"] == "Addressed Ltd"
    assert invoice["address"] == ADDRESS
    assert invoice["billing_contact"] == {
        "id": contact["agent_id"],
        "name": contact["name"],
        "email": contact["email"],
    }
    assert invoice["hold_until"] == "2035-04-01"  # issued 2025-04-01, kept ten years
    assert billing.call(handlers.get_invoice, tenant.id, invoice["id"]) == invoice

    # The contact's name and e-mail are personal data: ciphertext in the event store, and
    # left out of the published copy.
    [(stored,)] = billing.rows("SELECT payload::text FROM events WHERE type = 'invoice_issued'")
    [(published,)] = billing.rows(
        "SELECT body::text FROM outbox WHERE routing_key LIKE '%invoice_issued'"
    )
    for value in (contact["name"], contact["email"]):
        assert value not in stored and value not in published
    assert "$enc" in stored

    # Another tenant cannot read it, and a malformed id is simply absent.
    other = billing.open_tenant("Other Ltd", "uk")
    for tenant_id, invoice_id in ((other.id, invoice["id"]), (tenant.id, "not-a-uuid")):
        with pytest.raises(NotFound):
            billing.call(handlers.get_invoice, tenant_id, invoice_id)
    assert billing.invoices(other) == []


def test_an_invoice_run_on_the_29th_of_february_issues_its_invoices(billing):
    billing.open_tenant("Leap Day Ltd", "uk", at=dt.datetime(2027, 12, 5, tzinfo=UTC))
    assert billing.run(dt.datetime(2028, 2, 29, 2, 0, tzinfo=UTC)) == 2  # December, January
    holds = {row[0].isoformat() for row in billing.rows("SELECT hold_until FROM invoices")}
    assert holds <= {"2038-02-28", "2038-03-01"}


# --- payment methods and charges ---------------------------------------------------------------


@pytest.fixture
def invoiced(billing) -> tuple[Tenant, dict[str, Any]]:
    """A tenant with one invoice of 5400 (3 seats, standard, uk) and no payment method yet."""
    tenant = billing.open_tenant("Paying Customer Ltd", "uk", seats=3)
    assert billing.run(APRIL_RUN) == 1
    [invoice] = billing.invoices(tenant)
    assert invoice["total"] == 5400
    return tenant, invoice


def test_a_payment_method_keeps_only_brand_last4_and_expiry(billing):
    tenant = billing.open_tenant("Card Keeper Ltd", "uk")
    visa = billing.add_card(tenant, "tok_sandbox_visa")
    assert {k: v for k, v in visa.items() if k != "id"} == {
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
    }
    mastercard = billing.add_card(tenant, "tok_sandbox_mastercard")
    assert (mastercard["brand"], mastercard["last4"]) == ("mastercard", "4444")
    assert billing.call(handlers.list_payment_methods, tenant.id) == {"items": [visa, mastercard]}
    # A well-formed token the processor does not know names nothing: 404.
    with pytest.raises(NotFound) as unknown:
        billing.add_card(tenant, "tok_sandbox_nothing")
    assert unknown.value.detail == "the processor knows no such token"

    # The read model's columns: nothing that could hold a card number besides the token.
    columns = billing.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'payment_methods'"
        " ORDER BY column_name"
    )
    assert [c for (c,) in columns] == sorted(
        ["id", "tenant_id", "brand", "last4", "exp_month", "exp_year", "token", "created_at"]
    )
    [(payload,)] = billing.rows(
        "SELECT payload FROM events WHERE type = 'payment_method_added' ORDER BY position LIMIT 1"
    )
    assert set(payload) == {
        "tenant_id",
        "payment_method_id",
        "token",
        "brand",
        "last4",
        "exp_month",
        "exp_year",
    }
    everything = billing.rows(
        "SELECT coalesce(string_agg(e::text, ' '), '') FROM events e"
        " UNION ALL SELECT coalesce(string_agg(p::text, ' '), '') FROM payment_methods p"
    )
    for (text,) in everything:
        for number in ("4242424242424242", "5555555555554444", "4000000000000002"):
            assert number not in text


def test_a_successful_charge_pays_the_invoice_once(billing, invoiced):
    tenant, invoice = invoiced
    with pytest.raises(Conflict):
        billing.pay(tenant, invoice["id"])  # no payment method yet
    assert billing.charges() == []
    billing.add_card(tenant, "tok_sandbox_visa")

    paid = billing.pay(tenant, invoice["id"])
    assert paid["charge"] == "succeeded" and paid["status"] == "paid"
    [(key, amount, currency, status, reference)] = billing.charges()
    assert (key, amount, currency, status) == (
        f"invoice-{invoice['id']}-0",
        5400,
        "GBP",
        "succeeded",
    )
    assert billing.rows("SELECT paid_reference FROM invoices WHERE id = %s", invoice["id"]) == [
        (reference,)
    ]

    with pytest.raises(Conflict):
        billing.pay(tenant, invoice["id"])
    assert len(billing.charges()) == 1
    with pytest.raises(NotFound):
        billing.pay(tenant, str(uuid.uuid4()))
    other = billing.open_tenant("Not The Payer Ltd", "uk")
    billing.add_card(other, "tok_sandbox_visa")
    with pytest.raises(NotFound):
        billing.pay(other, invoice["id"])
    assert len(billing.charges()) == 1


def test_a_declined_charge_leaves_the_invoice_open_and_the_next_attempt_uses_a_new_key(
    billing, invoiced
):
    tenant, invoice = invoiced
    billing.add_card(tenant, "tok_sandbox_declined")
    declined = billing.pay(tenant, invoice["id"])
    assert declined["charge"] == "declined" and declined["status"] == "issued"
    declined_again = billing.pay(tenant, invoice["id"])
    assert declined_again["charge"] == "declined"

    billing.add_card(tenant, "tok_sandbox_mastercard")
    paid = billing.pay(tenant, invoice["id"])
    assert paid["charge"] == "succeeded" and paid["status"] == "paid"
    assert [(k, s) for k, _, _, s, _ in billing.charges()] == [
        (f"invoice-{invoice['id']}-0", "declined"),
        (f"invoice-{invoice['id']}-1", "declined"),
        (f"invoice-{invoice['id']}-2", "succeeded"),
    ]
    assert billing.rows(
        "SELECT payload->>'attempt' FROM events WHERE type = 'charge_declined' ORDER BY position"
    ) == [("0",), ("1",)]


def test_after_a_processor_error_paying_again_reuses_the_attempts_key(billing, invoiced):
    tenant, invoice = invoiced
    billing.add_card(tenant, "tok_sandbox_error")
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            billing.pay(tenant, invoice["id"])
    assert billing.charges() == []
    assert billing.rows("SELECT count(*) FROM events WHERE type = 'charge_declined'") == [(0,)]
    assert billing.call(handlers.get_invoice, tenant.id, invoice["id"])["status"] == "issued"

    billing.add_card(tenant, "tok_sandbox_visa")
    paid = billing.pay(tenant, invoice["id"])
    assert paid["status"] == "paid"
    assert [(k, s) for k, _, _, s, _ in billing.charges()] == [
        (f"invoice-{invoice['id']}-0", "succeeded")
    ]


class LosesTheAnswer:
    """The processor charges; then the caller fails before it can record the outcome."""

    def __init__(self, inner: SandboxProcessor):
        self.inner = inner

    def describe(self, token: str):
        return self.inner.describe(token)

    def charge(self, token: str, amount: int, currency: str, idempotency_key: str):
        self.inner.charge(token, amount, currency, idempotency_key)
        raise ConnectionResetError("the processor's answer was lost on the way back")


def test_a_retried_charge_with_the_same_key_charges_once(billing, invoiced):
    tenant, invoice = invoiced
    billing.add_card(tenant, "tok_sandbox_visa")
    with pytest.raises(ConnectionResetError):
        billing.pay(tenant, invoice["id"], processor=LosesTheAnswer(billing.processor))
    [(key, _, _, status, reference)] = billing.charges()
    assert (key, status) == (f"invoice-{invoice['id']}-0", "succeeded")
    # Billing recorded nothing, so the invoice is still open: the retry uses the same key and
    # the processor answers the first outcome instead of charging again.
    assert billing.call(handlers.get_invoice, tenant.id, invoice["id"])["status"] == "issued"
    paid = billing.pay(tenant, invoice["id"])
    assert paid["status"] == "paid"
    assert billing.charges() == [(key, 5400, "GBP", "succeeded", reference)]
    assert billing.rows("SELECT paid_reference FROM invoices WHERE id = %s", invoice["id"]) == [
        (reference,)
    ]
    # The processor itself: the same key never charges twice, whatever the token.
    again = billing.processor.charge("tok_sandbox_declined", 1, "GBP", key)
    assert (again.status, again.reference) == ("succeeded", reference)
    assert len(billing.charges()) == 1


def test_an_invoice_is_charged_in_its_own_currency_after_a_plan_change(billing):
    billing.catalogue = plans_from_the_environment(
        [
            {"name": "standard", "price_per_agent": 1500, "currency": "GBP"},
            {"name": "global", "price_per_agent": 1900, "currency": "USD"},
        ]
    )
    tenant = billing.open_tenant("Currency Ltd", "uk")
    assert billing.run(APRIL_RUN) == 1
    [invoice] = billing.invoices(tenant)
    assert (invoice["currency"], invoice["total"]) == ("GBP", 1800)
    billing.priced(handlers.change_plan, tenant.id, {"plan": "global"})
    billing.add_card(tenant, "tok_sandbox_visa")
    billing.pay(tenant, invoice["id"])
    [(_, amount, currency, _, _)] = billing.charges()
    assert (amount, currency) == (1800, "GBP")


# --- erasure under the legal hold -------------------------------------------------------------


def test_erasing_a_billed_agent_is_retained_until_the_hold_ends_and_the_rest_is_erased(billing):
    tenant = billing.open_tenant("Erasure Ltd", "uk", seats=2)
    never_billed = tenant.agent_ids[0]
    assert billing.run(APRIL_RUN) == 1
    assert billing.run(MAY_RUN) == 1  # the later invoice's hold ends later

    def erase(subject_id: str) -> dict[str, Any]:
        answer = billing.command("erase_subject", tenant, subject_id)
        assert (answer["command"], answer["service"]) == ("erase_subject", "billing")
        return {k: answer[k] for k in ("status", "basis", "until")}

    answer = erase(tenant.admin_id)
    assert answer == {
        "status": "retained",
        "basis": billing.catalogue.legal_basis,
        "until": "2035-05-03",
    }
    assert "10 years" in answer["basis"]
    assert billing.call(privacy.is_restricted, tenant.admin_id)
    [(basis, until)] = billing.rows(
        "SELECT basis, until FROM restrictions WHERE subject_id = %s", tenant.admin_id
    )
    assert (basis, until) == (answer["basis"], dt.date(2035, 5, 3))
    # The seat row is not held: it is gone. The invoices are held: they stay.
    assert billing.rows("SELECT 1 FROM billing_agents WHERE agent_id = %s", tenant.admin_id) == []
    assert [i["billing_contact"]["id"] for i in billing.invoices(tenant)] == [tenant.admin_id] * 2

    # Asking again answers the same; the restriction is not duplicated.
    assert erase(tenant.admin_id) == answer
    assert billing.rows("SELECT count(*) FROM restrictions") == [(1,)]

    # An agent never named on an invoice: done, and the seat row is erased.
    assert billing.rows("SELECT 1 FROM billing_agents WHERE agent_id = %s", never_billed) == [(1,)]
    done = erase(never_billed)
    assert done["status"] == "done"
    assert billing.rows("SELECT 1 FROM billing_agents WHERE agent_id = %s", never_billed) == []
    assert not billing.call(privacy.is_restricted, never_billed)
    assert erase(str(uuid.uuid4()))["status"] == "done"
    assert billing.rows("SELECT count(*) FROM restrictions") == [(1,)]


# --- replay -----------------------------------------------------------------------------------


def read_models(billing: Billing) -> dict[str, list[str]]:
    return {
        table: [
            row
            for (row,) in billing.rows(
                f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY to_jsonb(t)::text"
            )
        ]
        for table in BILLING_TABLES
    }


def test_replaying_the_store_rebuilds_identical_read_models(billing):
    first = billing.open_tenant("Replay One Ltd", "uk", seats=2)
    second = billing.open_tenant("Replay Two Ltd", "in")
    billing.call(handlers.set_address, first.id, {"address": ADDRESS})
    billing.priced(handlers.change_plan, second.id, {"plan": "enterprise"})
    billing.add_card(first, "tok_sandbox_declined")
    billing.add_card(second, "tok_sandbox_mastercard")
    assert billing.run(MAY_RUN) == 4
    first_invoices = billing.invoices(first)
    billing.pay(first, first_invoices[0]["id"])  # declined
    billing.add_card(first, "tok_sandbox_visa")
    billing.pay(first, first_invoices[0]["id"])
    billing.pay(second, billing.invoices(second)[1]["id"])

    before = read_models(billing)
    assert [len(before[t]) for t in BILLING_TABLES] == [2, 3, 4]
    applied = billing.store.rebuild("billing", progress=False)
    [(handled,)] = billing.rows("SELECT count(*) FROM events WHERE type <> 'charge_declined'")
    assert applied == handled
    assert read_models(billing) == before
