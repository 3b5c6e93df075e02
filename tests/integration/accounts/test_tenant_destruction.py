"""A destroyed tenant stays destroyed: its destruction is an event in accounts' store, so a
projection rebuild ends where the destruction left it, and its company name, held under the
tenant's key, is unreadable everywhere accounts keeps it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernel.uow import EventSourcedStore
from services.accounts import handlers, privacy
from services.accounts.projections import PROJECTIONS

TABLES = ("tenants", "agents", "api_keys", "contacts", "consents", "policy_acceptances")


def sign_up(store: EventSourcedStore, settings: Any, company: str) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        signed = handlers.sign_up(
            {
                "company": company,
                "region": "uk",
                "admin": {"name": f"{company} Admin", "email": "admin@canary.example"},
                "age_confirmed": True,
                "accept_policy_version": settings.policy_version,
            },
            uow,
            settings,
        )
    tenant_id = signed["tenant"]["id"]
    with store.unit_of_work() as uow:
        agent = handlers.create_agent(
            uow,
            {
                "tenant_id": tenant_id,
                "agent_id": signed["agent"]["id"],
                "key_id": signed["credential"]["key_id"],
            },
            {"name": "Second Agent", "email": "agent@canary.example", "role": "agent"},
            settings,
        )
        contact = handlers.create_contact(
            uow, tenant_id, {"name": "Carol Contact", "email": "carol@canary.example"}
        )
        handlers.set_consent(
            uow, tenant_id, contact["id"], {"marketing": True, "source": "web form"}
        )
    keys = [signed["credential"]["key_id"], agent["credential"]["key_id"]]
    return {"tenant_id": tenant_id, "keys": keys}


def destroy(store: EventSourcedStore, tenant_id: str) -> dict[str, Any]:
    destroy_tenant = privacy.handlers_for(store.cipher)["destroy_tenant"]
    command = {"request_id": str(uuid.uuid4()), "tenant_id": tenant_id}
    with store.unit_of_work("accounts") as uow:
        return destroy_tenant(uow, command)


def authenticates(store: EventSourcedStore, settings: Any, key_id: str) -> bool:
    """Whether the key's credential, as the gateway's projection learns it, lets it in."""
    with store.unit_of_work() as uow:
        credential = handlers.credential(uow, key_id)
    return (
        credential is not None
        and credential["key_active"]
        and credential["agent_active"]
        and credential["tenant_status"] != "destroyed"
    )


def everything(store: EventSourcedStore) -> str:
    """Every event payload and read-model row, as text: what a backup of accounts holds."""
    with store.db.transaction() as cur:
        parts = []
        for table in ("events", *TABLES):
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")  # noqa: S608
            parts.append(cur.fetchone()[0])
    return "\n".join(parts)


def state(store: EventSourcedStore, tenant_id: str) -> dict[str, Any]:
    with store.db.transaction() as cur:
        cur.execute("SELECT status, company FROM tenants WHERE id = %s", (tenant_id,))
        tenant = cur.fetchone()
        cur.execute(
            "SELECT count(*) FILTER (WHERE active), count(*) FROM agents WHERE tenant_id = %s",
            (tenant_id,),
        )
        agents = cur.fetchone()
        cur.execute(
            "SELECT count(*) FROM api_keys k JOIN agents a ON a.id = k.agent_id"
            " WHERE a.tenant_id = %s AND k.revoked_at IS NULL",
            (tenant_id,),
        )
        live_keys = cur.fetchone()[0]
        counts = {}
        for table in ("contacts", "consents", "policy_acceptances"):
            cur.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant_id,))  # noqa: S608
            counts[table] = cur.fetchone()[0]
    return {"tenant": tenant, "active_agents": agents[0], "live_keys": live_keys, **counts}


DESTROYED = {
    "tenant": ("destroyed", "[erased]"),
    "active_agents": 0,
    "live_keys": 0,
    "contacts": 0,
    "consents": 0,
    "policy_acceptances": 0,
}


def test_a_rebuild_after_destruction_brings_back_no_agent_key_or_contact(accounts, world):
    doomed = sign_up(accounts, world, "Doomed Canary Works")
    kept = sign_up(accounts, world, "Surviving Lark Works")
    assert destroy(accounts, doomed["tenant_id"])["status"] == "done"
    assert state(accounts, doomed["tenant_id"]) == DESTROYED

    for projection in PROJECTIONS:
        accounts.rebuild(projection.name, progress=False)

    assert state(accounts, doomed["tenant_id"]) == DESTROYED
    assert not any(authenticates(accounts, world, key) for key in doomed["keys"])
    assert all(authenticates(accounts, world, key) for key in kept["keys"])
    assert state(accounts, kept["tenant_id"])["tenant"] == ("active", "Surviving Lark Works")
    with accounts.unit_of_work() as uow:
        assert handlers.get_tenant(uow, doomed["tenant_id"])["status"] == "destroyed"


def test_the_company_of_a_destroyed_tenant_is_nowhere_in_accounts(accounts, world):
    doomed = sign_up(accounts, world, "Doomed Canary Works")
    sign_up(accounts, world, "Surviving Lark Works")
    assert "Doomed Canary Works" in everything(accounts)  # the read model, while it lives
    destroy(accounts, doomed["tenant_id"])
    for projection in PROJECTIONS:
        accounts.rebuild(projection.name, progress=False)
    dump = everything(accounts)
    assert "Doomed Canary Works" not in dump
    assert "Surviving Lark Works" in dump  # the living tenant's read model keeps its own


def test_destroying_twice_records_one_destruction(accounts, world):
    doomed = sign_up(accounts, world, "Twice Destroyed Ltd")
    destroy(accounts, doomed["tenant_id"])
    destroy(accounts, doomed["tenant_id"])  # a redelivered or re-applied command
    with accounts.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM events WHERE type = 'tenant_destroyed'")
        assert cur.fetchone()[0] == 1
    assert destroy(accounts, str(uuid.uuid4()))["status"] == "done"  # a tenant never seen


def test_billing_is_told_the_company_and_contact_and_the_disclosure_is_recorded(accounts, world):
    tenant = sign_up(accounts, world, "Invoiced Finch Ltd")
    with accounts.unit_of_work() as uow:
        contact = handlers.billing_contact(uow, tenant["tenant_id"])
    assert contact["company"] == "Invoiced Finch Ltd"
    assert contact["name"] == "Invoiced Finch Ltd Admin"
    with accounts.db.transaction() as cur:
        cur.execute(
            "SELECT body::json->'payload' FROM outbox"
            " WHERE routing_key = 'accounts.billing_contact_disclosed'"
        )
        [(payload,)] = cur.fetchall()
    assert payload == {
        "tenant_id": tenant["tenant_id"],
        "agent_id": contact["agent_id"],
        "disclosed_to": "billing",
    }
    destroy(accounts, tenant["tenant_id"])
    with pytest.raises(Exception, match="no active admin"), accounts.unit_of_work() as uow:
        handlers.billing_contact(uow, tenant["tenant_id"])
