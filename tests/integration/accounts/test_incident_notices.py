"""Breach notices (services.accounts.incidents) against the real database and keystore: one
transaction records the declaration, each tenant's notice and its admins' mails (the notice
names exactly the admins mailed); a refused declaration leaves nothing; and a tenant's
destruction ends its notice's text in the read model, in a rebuild of it, and in the events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernel.crypto.fields import is_erased
from kernel.errors import NotFound, ValidationFailed
from kernel.mail.message import domain_of
from kernel.mail.outbox import Mailer
from kernel.uow import EventSourcedStore
from services.accounts import handlers, incidents, privacy

SENDER = "Ledgerdesk <notices@desk.example.test>"


@pytest.fixture
def mailer(accounts: EventSourcedStore) -> Mailer:
    assert accounts.cipher is not None
    return Mailer(accounts.cipher.keystore, SENDER, domain_of(SENDER))


def sign_up(store: EventSourcedStore, settings: Any, company: str) -> dict[str, str]:
    """A tenant with an admin, an agent and a deactivated admin: their ids."""
    with store.unit_of_work() as uow:
        signed = handlers.sign_up(
            {
                "company": company,
                "region": "uk",
                "admin": {"name": f"{company} Admin", "email": f"admin@{company}.example"},
                "age_confirmed": True,
                "accept_policy_version": settings.policy_version,
            },
            uow,
            settings,
        )
    tenant_id, admin_id = signed["tenant"]["id"], signed["agent"]["id"]
    actor = {"tenant_id": tenant_id, "agent_id": admin_id, "key_id": signed["credential"]["key_id"]}
    people = {"tenant": tenant_id, "admin": admin_id}
    for name, role in (("agent", "agent"), ("gone", "admin")):
        with store.unit_of_work() as uow:
            body = {"name": name, "email": f"{name}@{company}.example", "role": role}
            people[name] = handlers.create_agent(uow, actor, body, settings)["id"]
    with store.unit_of_work() as uow:
        handlers.deactivate_agent(uow, tenant_id, people["gone"])
    return people


def declare(store: EventSourcedStore, mailer: Mailer, *tenant_ids: str, text: str) -> dict:
    command = {
        "tenant_ids": [uuid.UUID(t) for t in tenant_ids],
        "categories": ["identity", "billing"],
        "description": text,
    }
    with store.unit_of_work("operator") as uow:
        return incidents.declare(uow, mailer, command)


def one(store: EventSourcedStore, query: str, *params: Any) -> Any:
    with store.db.transaction() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def test_a_declaration_notifies_exactly_the_admins_it_mails(accounts, world, mailer):
    first, second = sign_up(accounts, world, "alpha"), sign_up(accounts, world, "beta")
    incident = declare(accounts, mailer, first["tenant"], second["tenant"], text="Leak")

    notified = {t["tenant_id"]: t["notified_ids"] for t in incident["tenants"]}
    assert notified == {first["tenant"]: [first["admin"]], second["tenant"]: [second["admin"]]}
    mailed = one(
        accounts,
        "SELECT tenant_id::text, recipient_id::text, kind FROM mail_outbox"
        " WHERE reference_id = %s ORDER BY tenant_id",
        incident["id"],
    )
    assert sorted(mailed) == sorted(
        [
            (first["tenant"], first["admin"], "breach_notice"),
            (second["tenant"], second["admin"], "breach_notice"),
        ]
    )


def test_a_refused_declaration_stores_and_mails_nothing(accounts, world, mailer):
    known = sign_up(accounts, world, "gamma")
    before = one(
        accounts, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM mail_outbox)"
    )
    with pytest.raises(ValidationFailed) as refused:
        declare(accounts, mailer, known["tenant"], str(uuid.uuid4()), text="Leak")
    assert list(refused.value.errors) == ["tenant_ids"]
    after = one(
        accounts, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM mail_outbox)"
    )
    assert after == before


def test_the_tenants_destruction_ends_its_notice_and_a_rebuild_does_not_bring_it_back(
    accounts, world, mailer
):
    doomed, living = sign_up(accounts, world, "delta"), sign_up(accounts, world, "omega")
    text = f"Canary breach text {uuid.uuid4()}"
    incident = declare(accounts, mailer, doomed["tenant"], living["tenant"], text=text)
    with accounts.unit_of_work() as uow:
        actor = {"tenant_id": doomed["tenant"], "agent_id": doomed["admin"]}
        incidents.acknowledge(uow, actor, incident["id"])

    destroy = privacy.handlers_for(accounts.cipher)["destroy_tenant"]
    with accounts.unit_of_work("accounts") as uow:
        destroy(uow, {"request_id": str(uuid.uuid4()), "tenant_id": doomed["tenant"]})

    def state() -> tuple:
        with accounts.unit_of_work() as uow:
            operator = incidents.operator_view(uow, incident["id"])
            with pytest.raises(NotFound):
                incidents.tenant_view(uow, doomed["tenant"], incident["id"])
            kept = incidents.tenant_view(uow, living["tenant"], incident["id"])
        return operator, kept

    operator, kept = state()
    by_tenant = {t["tenant_id"]: t for t in operator["tenants"]}
    assert by_tenant[doomed["tenant"]]["notified_ids"] is None
    assert by_tenant[doomed["tenant"]]["acknowledgements"] == []
    assert kept["description"] == text and operator["description"] == text
    # The living tenant's copy is its own, under its key; the doomed one's reads as erased.
    with accounts.unit_of_work() as uow:
        [doomed_event] = [
            e
            for e in uow.load(f"incident_notice-{incident['id']}.{doomed['tenant']}")
            if e.type == "incident_notified"
        ]
    assert is_erased(doomed_event.payload["description"])
    assert one(
        accounts, "SELECT count(*) FROM incident_notices WHERE tenant_id = %s", doomed["tenant"]
    ) == [(0,)]

    accounts.rebuild("incidents")
    assert state() == (operator, kept)
    assert one(
        accounts, "SELECT count(*) FROM incident_notices WHERE tenant_id = %s", doomed["tenant"]
    ) == [(0,)]
