"""Legal holds: destruction keeps held invoices (restricted), and the hold's end erases them."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from kernel.config import Settings
from kernel.crypto.fields import is_erased
from kernel.db import Database
from kernel.envelope import new_envelope
from kernel.errors import Conflict
from kernel.stores import open_store
from kernel.uow import EventSourcedStore, UnitOfWork
from services.billing import handlers, privacy
from services.billing.catalogue import Catalogue
from services.billing.events import REGISTRY
from services.billing.processor import SandboxProcessor
from services.billing.projections import PROJECTIONS


def billing_store(world) -> EventSourcedStore:
    return open_store(world, "billing", REGISTRY, PROJECTIONS, Path("services/billing/migrations"))


def destroy(
    world: Settings, store: EventSourcedStore, uow: UnitOfWork, tenant: str
) -> dict[str, Any]:
    """Billing's answer to a tenant's destruction, as its privacy queue runs the command."""
    destroy_tenant = privacy.handlers_for(store.cipher, Catalogue.of(world))["destroy_tenant"]
    return destroy_tenant(uow, {"request_id": str(uuid.uuid4()), "tenant_id": tenant})


def accounts_event(type_: str, tenant: str, occurred_at: dt.datetime, **payload):
    return new_envelope(
        type=type_,
        schema_version=1,
        source="accounts",
        stream_id=f"x-{uuid.uuid4()}",
        stream_version=1,
        tenant_id=uuid.UUID(tenant),
        actor_id=None,
        payload={"tenant_id": tenant, **payload},
        occurred_at=occurred_at,
    )


def test_destruction_keeps_held_invoices_restricted_and_their_end_erases_them(world):
    store = billing_store(world)
    tenant, admin = str(uuid.uuid4()), str(uuid.uuid4())
    opened = dt.datetime(2026, 9, 10, tzinfo=dt.UTC)
    with store.unit_of_work() as uow:
        handlers.learn_from_accounts(
            uow,
            accounts_event(
                "tenant_created",
                tenant,
                opened,
                company="Acme",
                region="uk",
                plan="standard",
                policy_version="2026-01",
                admin_agent_id=admin,
            ),
        )
        handlers.learn_from_accounts(
            uow, accounts_event("agent_created", tenant, opened, agent_id=admin, role="admin")
        )
    contact = {
        "agent_id": admin,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "company": "Acme",
    }
    issued = handlers.run_invoices(
        store.unit_of_work,
        Catalogue.of(world),
        lambda t: contact,
        dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
    )
    assert issued == 2  # September and October
    with store.unit_of_work() as uow:
        method = handlers.add_payment_method(
            uow, SandboxProcessor(store.db), tenant, {"processor_token": "tok_sandbox_visa"}
        )
        answer = destroy(world, store, uow, tenant)
    assert answer["status"] == "retained" and answer["until"] == "2036-11-02"
    assert "tax and accounting law" in answer["basis"]
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM payment_methods WHERE id = %s", (method["id"],))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM invoices WHERE tenant_id = %s", (tenant,))
        assert cur.fetchone()[0] == 2
        cur.execute("SELECT until FROM restrictions WHERE subject_id = %s", (tenant,))
        assert cur.fetchone()[0] == dt.date(2036, 11, 2)

    keystore = store.cipher.keystore
    with store.unit_of_work() as uow:
        assert privacy.expire_holds(uow, keystore, dt.date(2036, 11, 1)) == 0
    with store.unit_of_work() as uow:
        assert privacy.expire_holds(uow, keystore, dt.date(2036, 11, 2)) == 2
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM invoices")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM restrictions")
        assert cur.fetchone()[0] == 0
    # The contact's key went with the last held invoice: the events now read as erased.
    with store.unit_of_work() as uow:
        issued_events = [
            e for e in uow.load(f"billingaccount-{tenant}") if e.type == "invoice_issued"
        ]
    assert len(issued_events) == 2
    assert all(is_erased(e.payload["billing_contact_name"]) for e in issued_events)


def test_destroying_a_tenant_without_invoices_is_done(world):
    store = billing_store(world)
    tenant = str(uuid.uuid4())
    with store.unit_of_work() as uow:
        handlers.learn_from_accounts(
            uow,
            accounts_event(
                "tenant_created",
                tenant,
                dt.datetime.now(dt.UTC),
                company="Acme",
                region="sg",
                plan="standard",
                policy_version="2026-01",
                admin_agent_id=str(uuid.uuid4()),
            ),
        )
    with store.unit_of_work() as uow:
        answer = destroy(world, store, uow, tenant)
    assert answer["status"] == "done"


# --- what billing keeps of a tenant, and what its destruction leaves --------------------------

COMPANY = "Canary Quill Trading Ltd"
ADDRESS = {
    "line1": "7 Canary Wharf Passage",
    "line2": None,
    "city": "Larkton",
    "postcode": "LK1 9QQ",
    "country": "GB",
}
TOKEN = "tok_sandbox_visa"


def open_account(
    store: EventSourcedStore, company: str, opened: dt.datetime, address: dict = ADDRESS
) -> tuple[str, dict]:
    """A tenant with an address, a card, and two invoices (September and October 2026)."""
    tenant, admin = str(uuid.uuid4()), str(uuid.uuid4())
    with store.unit_of_work() as uow:
        handlers.learn_from_accounts(
            uow,
            accounts_event(
                "tenant_created",
                tenant,
                opened,
                company=company,
                region="uk",
                plan="standard",
                policy_version="2026-01",
                admin_agent_id=admin,
            ),
        )
        handlers.learn_from_accounts(
            uow, accounts_event("agent_created", tenant, opened, agent_id=admin, role="admin")
        )
    with store.unit_of_work(admin) as uow:
        handlers.set_address(uow, tenant, {"address": address})
        handlers.add_payment_method(
            uow, SandboxProcessor(store.db), tenant, {"processor_token": TOKEN}
        )
    contact = {
        "agent_id": admin,
        "name": "Quill Admin",
        "email": "quill.admin@canary.example",
        "company": company,
    }
    issued = handlers.run_invoices(
        store.unit_of_work,
        Catalogue.of(Settings()),  # the default plans, rates and hold
        lambda t: contact,
        dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
    )
    assert issued == 2
    return tenant, contact


def dump(store: EventSourcedStore) -> dict[str, str]:
    """Every table of billing's database as text, events' payloads and the outbox's bodies
    included: what a backup holds."""
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [name for (name,) in cur.fetchall()]
        texts = {}
        for table in tables:
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")  # noqa: S608
            texts[table] = cur.fetchone()[0]
    return texts


def holding(texts: dict[str, str], value: str) -> set[str]:
    return {table for table, text in texts.items() if value in text}


def test_billing_stores_addresses_tokens_and_invoice_details_encrypted_and_publishes_ids(world):
    store = billing_store(world)
    open_account(store, COMPANY, dt.datetime(2026, 9, 10, tzinfo=dt.UTC))
    texts = dump(store)
    for secret in (COMPANY, ADDRESS["line1"], TOKEN, "Quill Admin", "quill.admin@canary"):
        assert "events" not in holding(texts, secret), secret
        assert "outbox" not in holding(texts, secret), secret
    # No read model keeps the token; the company is on the invoices only.
    assert holding(texts, TOKEN) <= {"sandbox_charges"}
    assert holding(texts, COMPANY) == {"invoices"}
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT body::json->'payload' FROM outbox WHERE routing_key = 'billing.invoice_issued'"
        )
        published = [payload for (payload,) in cur.fetchall()]
    assert len(published) == 2
    for payload in published:
        assert not {"company", "address", "billing_contact_name", "billing_contact_email"} & set(
            payload
        )
        assert {"tenant_id", "invoice_id", "number", "total", "billing_contact_id"} <= set(payload)


def test_a_destroyed_tenant_leaves_only_its_held_invoices_and_a_rebuild_keeps_it_so(world):
    store = billing_store(world)
    tenant, contact = open_account(store, COMPANY, dt.datetime(2026, 9, 10, tzinfo=dt.UTC))
    other, other_contact = open_account(
        store,
        "Surviving Wren Ltd",
        dt.datetime(2026, 9, 10, tzinfo=dt.UTC),
        {**ADDRESS, "line1": "1 Wren Row"},
    )
    with store.unit_of_work("billing") as uow:
        answer = destroy(world, store, uow, tenant)
    assert answer["status"] == "retained" and answer["until"] == "2036-11-02"

    def left() -> dict[str, str]:
        texts = dump(store)
        assert holding(texts, COMPANY) == {"invoices"}
        assert holding(texts, ADDRESS["line1"]) == {"invoices"}
        assert not holding(texts, TOKEN) - {"sandbox_charges"}
        return texts

    left()
    store.rebuild("billing", progress=False)
    left()
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT destroyed_at IS NOT NULL, address, company FROM billing_accounts"
            " WHERE tenant_id = %s",
            (tenant,),
        )
        assert cur.fetchone() == (True, None, None)
        cur.execute("SELECT count(*) FROM payment_methods WHERE tenant_id = %s", (tenant,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM payment_methods WHERE tenant_id = %s", (other,))
        assert cur.fetchone()[0] == 1

    # The account's own events read as erased; the held invoices' still open.
    with store.unit_of_work() as uow:
        history = {e.type: e for e in uow.load(f"billingaccount-{tenant}")}
    assert is_erased(history["billing_address_set"].payload["address"])
    assert is_erased(history["payment_method_added"].payload["token"])
    assert history["invoice_issued"].payload["company"] == COMPANY
    # Nothing more is billed, and nothing can be added.
    contacts = {tenant: contact, other: other_contact}
    run = handlers.run_invoices(
        store.unit_of_work,
        Catalogue.of(world),
        contacts.__getitem__,
        dt.datetime(2027, 3, 2, tzinfo=dt.UTC),
    )
    assert run == 4  # the other tenant's November to February; none for the destroyed one
    with pytest.raises(Conflict), store.unit_of_work() as uow:
        handlers.set_address(uow, tenant, {"address": ADDRESS})

    # The hold's end takes the invoices, their keys, and the tenant's key with them.
    keystore = store.cipher.keystore
    with store.unit_of_work() as uow:
        assert privacy.expire_holds(uow, keystore, dt.date(2036, 11, 2)) == 2 + 2
    texts = dump(store)
    assert not holding(texts, COMPANY) and not holding(texts, ADDRESS["line1"])
    with store.unit_of_work() as uow:
        issued = [e for e in uow.load(f"billingaccount-{tenant}") if e.type == "invoice_issued"]
    assert all(is_erased(e.payload["company"]) for e in issued)
    keys = Database(world.database_dsn("billing", "keys"))
    try:
        with keys.transaction() as cur:
            cur.execute(
                "SELECT tenant_id::text, wrapped_key IS NULL FROM tenant_keys"
                " WHERE tenant_id IN (%s, %s)",
                (tenant, other),
            )
            assert dict(cur.fetchall()) == {tenant: True, other: False}
    finally:
        keys.close()


def test_a_destruction_applied_again_records_one_destruction(world):
    store = billing_store(world)
    tenant, _ = open_account(store, COMPANY, dt.datetime(2026, 9, 10, tzinfo=dt.UTC))
    for _ in range(2):
        with store.unit_of_work("billing") as uow:
            destroy(world, store, uow, tenant)
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM events WHERE type = 'tenant_destroyed'")
        assert cur.fetchone()[0] == 1
