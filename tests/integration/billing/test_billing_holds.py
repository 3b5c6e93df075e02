"""Legal holds: destruction keeps held invoices (restricted), and the hold's end erases them."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from kernel.crypto import is_erased
from kernel.envelope import new_envelope
from kernel.nameko_adapters import open_store
from kernel.uow import EventSourcedStore
from services.billing import handlers, privacy
from services.billing.events import REGISTRY
from services.billing.processor import SandboxProcessor
from services.billing.projections import PROJECTIONS


def billing_store(world) -> EventSourcedStore:
    return open_store(world, "billing", REGISTRY, PROJECTIONS, Path("services/billing/migrations"))


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
    contact = {"agent_id": admin, "name": "Ada Lovelace", "email": "ada@example.com"}
    issued = handlers.run_invoices(
        store.unit_of_work, lambda t: contact, dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    )
    assert issued == 2  # September and October
    with store.unit_of_work() as uow:
        method = handlers.add_payment_method(
            uow, SandboxProcessor(store.db), tenant, {"processor_token": "tok_sandbox_visa"}
        )
        answer = privacy.destroy_tenant(uow, tenant)
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
        assert privacy.destroy_tenant(uow, tenant)["status"] == "done"
