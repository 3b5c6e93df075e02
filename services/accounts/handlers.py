"""Accounts' command handlers and queries: plain functions over a unit of work.

Every query takes the caller's tenant and filters by it: another tenant's row is indistinguishable
from an absent one (NotFound).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, TypeVar

import psycopg2

from kernel.aggregate import Aggregate
from kernel.config import Settings
from kernel.crypto import apikeys
from kernel.crypto.fields import is_erased
from kernel.db import keyset_page
from kernel.envelope import new_envelope
from kernel.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    VersionConflict,
    require_id,
)
from kernel.eventstore import ConcurrencyError
from kernel.uow import UnitOfWork
from services.accounts import lookups, notices
from services.accounts.domain import Agent, Contact, Policies, Tenant

A = TypeVar("A", bound=Aggregate)


# --- loading aggregates (the unit of work saves them) ----------------------------------------


def load(uow: UnitOfWork, cls: type[A], aggregate_id: str) -> A | None:
    events = uow.load(cls.stream_id_for(aggregate_id))
    return cls.from_history(aggregate_id, events) if events else None


def _tenant_region(uow: UnitOfWork, tenant_id: str) -> str:
    uow.cur.execute("SELECT region FROM tenants WHERE id = %s", (tenant_id,))
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such tenant")
    return row[0]


def _scoped(uow: UnitOfWork, cls: type[A], tenant_id: str, aggregate_id: str) -> A:
    require_id(aggregate_id, cls.__name__.lower())
    aggregate = load(uow, cls, aggregate_id)
    if aggregate is None or getattr(aggregate, "tenant_id", None) != tenant_id:
        raise NotFound(f"no such {cls.__name__.lower()}")
    return aggregate


# --- policies ---------------------------------------------------------------------------------


def ensure_first_policy(uow: UnitOfWork, settings: Settings) -> None:
    """A fresh platform starts with the configured first policy version."""
    policies = load(uow, Policies, "platform") or Policies(id="platform")
    if policies.current is None:
        policies.publish(settings.policy_version)
        uow.save(policies, None, None)


def current_policy(uow: UnitOfWork) -> dict[str, str]:
    uow.cur.execute("SELECT version, published_at FROM policies ORDER BY seq DESC LIMIT 1")
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no policy version has been published")
    return {"version": row[0], "published_at": row[1].isoformat()}


def publish_policy(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, str]:
    policies = load(uow, Policies, "platform") or Policies(id="platform")
    policies.publish(command["version"])
    [published] = uow.save(policies, None, None)
    # The agents who have not accepted it are mailed, a page at a time, after this commits.
    notices.start_policy_notices(
        uow, command["version"], published.event_id, published.occurred_at.isoformat()
    )
    return {"version": command["version"], "published_at": published.occurred_at.isoformat()}


def accept_policy(uow: UnitOfWork, identity: dict[str, str], command: dict[str, Any]) -> dict:
    current = current_policy(uow)["version"]
    if command["version"] != current:
        raise Conflict(f"only the current policy version ({current}) can be accepted")
    agent = _scoped(uow, Agent, identity["tenant_id"], identity["agent_id"])
    if agent.accept_policy(command["version"]):
        uow.save(agent, identity["tenant_id"], _tenant_region(uow, identity["tenant_id"]))
    return {"version": command["version"], "agent_id": agent.id, "accepted": True}


def policy_status(uow: UnitOfWork, tenant_id: str, agent_id: str) -> dict[str, Any]:
    """The current policy version and whether this agent's acceptance of it is pending."""
    current = current_policy(uow)["version"]
    uow.cur.execute(
        "SELECT 1 FROM policy_acceptances WHERE agent_id = %s AND tenant_id = %s AND version = %s",
        (agent_id, tenant_id, current),
    )
    return {"policy_version": current, "policy_acceptance_pending": uow.cur.fetchone() is None}


def pending_acceptance(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    current = current_policy(uow)["version"]
    uow.cur.execute(
        "SELECT a.id, a.name, a.email, a.role FROM agents a"
        " WHERE a.tenant_id = %s AND a.active AND NOT EXISTS ("
        "   SELECT 1 FROM policy_acceptances p WHERE p.agent_id = a.id AND p.version = %s)"
        " ORDER BY a.created_at, a.id",
        (tenant_id, current),
    )
    items = [{"id": str(i), "name": n, "email": e, "role": r} for i, n, e, r in uow.cur.fetchall()]
    return {"version": current, "items": items}


# --- tenants ----------------------------------------------------------------------------------


def sign_up(command: dict[str, Any], uow: UnitOfWork, settings: Settings) -> dict[str, Any]:
    admin_id = uuid.uuid4()
    tenant = Tenant.sign_up(
        company=command["company"],
        region=command["region"],
        age_confirmed=command["age_confirmed"],
        policy_version=command["accept_policy_version"],
        allowed_regions=settings.regions,
        current_policy_version=current_policy(uow)["version"],
        admin_agent_id=admin_id,
    )
    admin = Agent.create(
        agent_id=admin_id,
        tenant_id=tenant.id,
        role="admin",
        name=command["admin"]["name"],
        email=command["admin"]["email"],
    )
    api_key = _issue_key(admin, settings, admin.id, tenant.region)
    admin.accept_policy(command["accept_policy_version"])
    uow.actor_id = admin.id
    uow.save(tenant, tenant.id, tenant.region)
    uow.save(admin, tenant.id, tenant.region)
    return {
        "tenant": tenant_view(tenant),
        "agent": agent_view(admin),
        "api_key": api_key,
        "credential": credential(uow, admin.key_ids[-1]),
    }


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    view = {
        "id": tenant.id,
        "company": tenant.company,
        "region": tenant.region,
        "status": tenant.status,
        "plan": tenant.plan,
    }
    if tenant.destroy_after is not None:
        view["destroy_after"] = _iso(tenant.destroy_after)
    return view


def get_tenant(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    tenant = load(uow, Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    return tenant_view(tenant)


def cancel_tenant(uow: UnitOfWork, tenant_id: str, settings: Settings) -> dict[str, Any]:
    tenant = load(uow, Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    tenant.cancel(_now(), dt.timedelta(days=settings.grace_days))
    uow.save(tenant, tenant.id, tenant.region)
    return {**tenant_view(tenant), "credential": tenant_credential(uow, tenant.id)}


def change_tenant_region(uow: UnitOfWork, command: dict[str, Any], settings: Settings) -> bool:
    """The tenant is hosted in the command's region from now on; False when it was already
    (recorded by an earlier run of the same step). Its event carries the new region in its
    metadata, as every event of the tenant's from now on (``_tenant_region`` reads it back)."""
    tenant_id = str(command["tenant_id"])
    tenant = load(uow, Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    if not tenant.change_region(command["region"], settings.regions):
        return False
    uow.save(tenant, tenant.id, tenant.region)
    return True


def reactivate_tenant(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    tenant = load(uow, Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    tenant.reactivate(_now())
    uow.save(tenant, tenant.id, tenant.region)
    return {**tenant_view(tenant), "credential": tenant_credential(uow, tenant.id)}


# --- agents and keys --------------------------------------------------------------------------


def _issue_key(agent: Agent, settings: Settings, issuer_id: str, region: str) -> str:
    # The region in the key routes it, unlooked-up, to the cell holding the tenant: a cell's
    # own region (a tenant moved in from another cell has it from the move's
    # tenant_region_changed on; one moved before that event existed kept its sign-up's), else
    # the tenant's, on a platform serving several.
    if len(settings.regions) == 1:
        region = settings.regions[0]
    api_key = apikeys.generate(region)
    agent.issue_api_key(
        uuid.uuid4(), apikeys.keyed_hash(settings.api_key_secret, api_key), issuer_id
    )
    return api_key


def key_issuer(uow: UnitOfWork, key_id: str, agent_id: str) -> str:
    """Whom a key answers to for four eyes: the person, besides its agent, who may hold it (its
    agent when no one else does, or for keys issued before the issuer was recorded). A revoked
    key answers to no one: a request it authenticated just before it ended acts no further."""
    uow.cur.execute(
        "SELECT coalesce(issuer_id, agent_id) FROM api_keys"
        " WHERE key_id = %s AND agent_id = %s AND revoked_at IS NULL",
        (key_id, agent_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise Unauthorized("invalid credentials")
    return str(row[0])


def own_key(uow: UnitOfWork, actor: dict[str, str]) -> str:
    """The caller's id, when the calling key answers to the caller alone; refused otherwise.

    A key that creates an agent or mints a key is seen by two people when another admin made
    it: its agent, who uses it, and whoever made it and may keep a copy. The new key would
    answer to both, which one issuer cannot say, so such a key makes none: its agent claims a
    key of her own first (``claim_api_key``)."""
    if key_issuer(uow, actor["key_id"], actor["agent_id"]) != actor["agent_id"]:
        raise Forbidden(
            "this key was made by another admin: claim a key of your own"
            " (POST /v1/me/api-keys) before creating agents or minting keys"
        )
    return actor["agent_id"]


def agent_view(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "email": agent.email,
        "role": agent.role,
        "active": agent.active,
    }


def create_agent(
    uow: UnitOfWork, actor: dict[str, str], command: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """A new agent and the key it starts with. The creating admin sees that key, so it answers
    to her, like any key one admin mints for another: until the new agent claims a key of
    their own (``claim_api_key``), nothing they do counts as a second pair of eyes on their
    creator's requests."""
    tenant_id = actor["tenant_id"]
    region = _tenant_region(uow, tenant_id)
    issuer_id = own_key(uow, actor)
    agent = Agent.create(
        agent_id=uuid.uuid4(),
        tenant_id=tenant_id,
        role=command["role"],
        name=command["name"],
        email=command["email"],
    )
    api_key = _issue_key(agent, settings, issuer_id, region)
    uow.save(agent, tenant_id, region)
    return {
        **agent_view(agent),
        "api_key": api_key,
        "credential": credential(uow, agent.key_ids[-1]),
    }


def get_agent(uow: UnitOfWork, tenant_id: str, agent_id: str) -> dict[str, Any]:
    return agent_view(_scoped(uow, Agent, tenant_id, agent_id))


def list_agents(
    uow: UnitOfWork,
    tenant_id: str,
    limit: int,
    after: list | None,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A page of the tenant's agents; ``filters`` (``FindAgentsV1``, loaded): ``email``."""
    query = "SELECT id, name, email, role, active, created_at FROM agents WHERE tenant_id = %s"
    params: list[Any] = [tenant_id]
    if filters and "email" in filters:
        digest = lookups.lookup_digest(uow, tenant_id, lookups.AGENT_EMAIL, filters["email"])
        if digest is None:
            return {"items": [], "next": None}
        query += lookups.MATCHING
        params += [tenant_id, lookups.AGENT_EMAIL, psycopg2.Binary(digest)]
    rows, next_after = keyset_page(
        uow.cur, query, params, limit, after, lambda row: [row[-1].isoformat(), str(row[0])]
    )
    items = [
        {"id": str(i), "name": n, "email": e, "role": r, "active": a} for i, n, e, r, a, _ in rows
    ]
    return {"items": items, "next": next_after}


def deactivate_agent(uow: UnitOfWork, tenant_id: str, agent_id: str) -> dict[str, Any]:
    agent = _scoped(uow, Agent, tenant_id, agent_id)
    agent.deactivate()
    uow.save(agent, tenant_id, _tenant_region(uow, tenant_id))
    return agent_view(agent)


def issue_api_key(
    uow: UnitOfWork, actor: dict[str, str], agent_id: str, settings: Settings
) -> dict[str, Any]:
    """A new key for an agent. The admin who mints it sees it, so it answers to her: she cannot
    approve her own requests with it. Only a key of her own mints (``own_key``)."""
    issuer_id = own_key(uow, actor)
    agent = _scoped(uow, Agent, actor["tenant_id"], agent_id)
    region = _tenant_region(uow, actor["tenant_id"])
    api_key = _issue_key(agent, settings, issuer_id, region)
    key_id = agent.key_ids[-1]
    uow.save(agent, actor["tenant_id"], region)
    return {
        "id": key_id,
        "agent_id": agent.id,
        "api_key": api_key,
        "credential": credential(uow, key_id),
    }


def revoke_api_key(uow: UnitOfWork, tenant_id: str, agent_id: str, key_id: str) -> None:
    agent = _scoped(uow, Agent, tenant_id, agent_id)
    if key_id not in agent.key_ids:
        raise NotFound("no such key")
    agent.revoke_api_key(key_id)
    uow.save(agent, tenant_id, _tenant_region(uow, tenant_id))


def claim_api_key(uow: UnitOfWork, actor: dict[str, str], settings: Settings) -> dict[str, Any]:
    """A key of the caller's own in place of every key they hold: the new key answers to them
    alone, and the calling key and all their others end, so a copy kept by whoever minted one
    stops working. Whoever holds a copy of a key can claim with it too, but then the agent's own
    keys stop working, which they notice, and the ledger shows the claim."""
    agent = _scoped(uow, Agent, actor["tenant_id"], actor["agent_id"])
    if actor["key_id"] not in agent.key_ids:
        # Ended since the gateway authenticated it (a claim that came first, a revocation).
        raise Unauthorized("invalid credentials")
    ended = list(agent.key_ids)
    region = _tenant_region(uow, actor["tenant_id"])
    api_key = _issue_key(agent, settings, agent.id, region)
    for key_id in ended:
        agent.revoke_api_key(key_id)
    uow.save(agent, actor["tenant_id"], region)
    return {
        "id": agent.key_ids[-1],
        "agent_id": agent.id,
        "api_key": api_key,
        "revoked_key_ids": ended,
        "credential": credential(uow, agent.key_ids[-1]),
    }


# What the gateway authenticates with, from its own projection (``gateway.credentials``): a
# key's keyed hash and whom it answers to, its agent's role and state, its tenant's status and
# that status's version (the tenant stream's), so that updates arriving out of order keep the
# newest. The key itself is never stored anywhere.
_CREDENTIAL = (
    "SELECT k.key_hash, k.key_id, k.agent_id, a.tenant_id, a.role, a.active, a.created_at,"
    " k.revoked_at IS NULL, coalesce(k.issuer_id, k.agent_id), k.issued_at, t.status, t.version"
    " FROM api_keys k JOIN agents a ON a.id = k.agent_id JOIN tenants t ON t.id = a.tenant_id"
)


def _credential(row: tuple) -> dict[str, Any]:
    (key_hash, key_id, agent_id, tenant_id, role, agent_active, created_at, key_active) = row[:8]
    issuer_id, issued_at, tenant_status, tenant_version = row[8:]
    return {
        # An ended key's hash goes to no one: nothing needs it.
        "key_hash": key_hash if key_active and agent_active else None,
        "key_id": str(key_id),
        "key_active": key_active,
        "key_issuer_id": str(issuer_id),
        "key_issued_at": issued_at.isoformat(),
        "agent_id": str(agent_id),
        "agent_active": agent_active,
        "role": role,
        # An agent's role is set when it is created (no route changes it): a promotion would
        # have to record when it happened, and this would read that.
        "admin_since": created_at.isoformat() if role == "admin" else None,
        "tenant_id": str(tenant_id),
        "tenant_status": tenant_status,
        "tenant_version": tenant_version,
    }


def credential(uow: UnitOfWork, key_id: str) -> dict[str, Any] | None:
    """One key's credential as it stands (revoked ones too, which the gateway records as
    such); None for a key accounts has never issued."""
    require_id(key_id, "key")
    uow.cur.execute(_CREDENTIAL + " WHERE k.key_id = %s", (key_id,))  # noqa: S608
    row = uow.cur.fetchone()
    return None if row is None else _credential(row)


def credentials_page(uow: UnitOfWork, after: str | None, limit: int) -> dict[str, Any]:
    """The keys that authenticate someone, in key id order from ``after``: the gateway's rebuild
    of its projection. ``next`` is the key id to continue from, None at the end."""
    if after is not None:
        require_id(after, "key")
    limit = max(1, min(int(limit), 1000))
    uow.cur.execute(
        _CREDENTIAL  # noqa: S608
        + " WHERE k.revoked_at IS NULL AND a.active AND t.status <> 'destroyed'"
        " AND (%s::uuid IS NULL OR k.key_id > %s::uuid) ORDER BY k.key_id LIMIT %s",
        (after, after, limit),
    )
    items = [_credential(row) for row in uow.cur.fetchall()]
    return {"items": items, "next": items[-1]["key_id"] if len(items) == limit else None}


def tenant_credential(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    """A tenant's status and its version, for the gateway's projection."""
    uow.cur.execute("SELECT status, version FROM tenants WHERE id = %s", (tenant_id,))
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such tenant")
    return {"tenant_id": tenant_id, "tenant_status": row[0], "tenant_version": row[1]}


def describe_subject(uow: UnitOfWork, tenant_id: str, subject_id: str) -> dict[str, Any]:
    """Whether an id is an agent or a contact of this tenant, and active: for other services
    that have not yet heard of it through events."""
    require_id(subject_id, "subject")
    uow.cur.execute(
        "SELECT 'agent', active FROM agents WHERE id = %s AND tenant_id = %s"
        " UNION ALL SELECT 'contact', true FROM contacts WHERE id = %s AND tenant_id = %s",
        (subject_id, tenant_id, subject_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such subject")
    return {"kind": row[0], "active": row[1]}


def billing_contact(uow: UnitOfWork, tenant_id: str) -> dict[str, str]:
    """Who an invoice goes to: the company and its first active admin. Billing asks the owner
    rather than keep its own copy, and the disclosure is recorded for the audit ledger."""
    uow.cur.execute(
        "SELECT a.id, a.name, a.email, t.company FROM agents a JOIN tenants t ON t.id = a.tenant_id"
        " WHERE a.tenant_id = %s AND a.role = 'admin' AND a.active AND t.status <> 'destroyed'"
        " ORDER BY a.created_at, a.id LIMIT 1",
        (tenant_id,),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no active admin")
    agent_id = str(row[0])
    uow.publish(
        new_envelope(
            type="billing_contact_disclosed",
            schema_version=1,
            source="accounts",
            stream_id=Tenant.stream_id_for(tenant_id),
            stream_version=1,
            tenant_id=uuid.UUID(tenant_id),
            actor_id="billing",
            payload={"tenant_id": tenant_id, "agent_id": agent_id, "disclosed_to": "billing"},
            trace=uow.trace,
        )
    )
    return {"agent_id": agent_id, "name": row[1], "email": row[2], "company": row[3]}


def mail_recipient(
    uow: UnitOfWork,
    tenant_id: str,
    subject_id: str,
    asked_by: str,
    purpose: str,
    reference_id: str | None,
) -> dict[str, str]:
    """Where to mail an agent or contact of this tenant, for a service about to queue a mail
    (tickets' replies): the owner answers rather than every sender keep a copy, and the
    disclosure is recorded for the audit ledger (ids only). ``NotFound`` for no such person,
    an erased or deactivated one, or one whose data is restricted (no new processing)."""
    require_id(subject_id, "subject")
    uow.cur.execute(
        "SELECT name, email FROM contacts WHERE id = %s AND tenant_id = %s"
        " UNION ALL SELECT name, email FROM agents WHERE id = %s AND tenant_id = %s AND active",
        (subject_id, tenant_id, subject_id, tenant_id),
    )
    row = uow.cur.fetchone()
    uow.cur.execute("SELECT 1 FROM restrictions WHERE subject_id = %s", (subject_id,))
    if row is None or is_erased(row[1]) or uow.cur.fetchone() is not None:
        raise NotFound("no address to mail")
    uow.publish(
        new_envelope(
            type="mail_address_disclosed",
            schema_version=1,
            source="accounts",
            stream_id=f"subject-{subject_id}",
            stream_version=1,
            tenant_id=uuid.UUID(tenant_id),
            actor_id=asked_by,
            payload={
                "tenant_id": tenant_id,
                "subject_id": subject_id,
                "disclosed_to": asked_by,
                "purpose": purpose,
                "reference_id": reference_id,
            },
            trace=uow.trace,
        )
    )
    return {"name": "" if is_erased(row[0]) else row[0], "email": row[1]}


# --- contacts and consent ---------------------------------------------------------------------


def contact_view(contact: Contact, marketing: bool | None = None) -> dict[str, Any]:
    view = {
        "id": contact.id,
        "name": contact.name,
        "email": contact.email,
        "phone": contact.phone,
        "version": contact.version,
    }
    if marketing is not None:
        view["marketing"] = marketing
    return view


def create_contact(uow: UnitOfWork, tenant_id: str, command: dict[str, Any]) -> dict[str, Any]:
    region = _tenant_region(uow, tenant_id)
    contact = Contact.create(
        tenant_id=tenant_id,
        name=command["name"],
        email=command["email"],
        phone=command.get("phone"),
    )
    uow.save(contact, tenant_id, region)
    return contact_view(contact, marketing=False)


def get_contact(uow: UnitOfWork, tenant_id: str, contact_id: str) -> dict[str, Any]:
    contact = _scoped(uow, Contact, tenant_id, contact_id)
    return contact_view(contact, marketing=_marketing(uow, contact.id))


def list_contacts(
    uow: UnitOfWork,
    tenant_id: str,
    limit: int,
    after: list | None,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A page of the tenant's contacts, narrowed by ``filters`` (``FindContactsV1``, loaded):
    ``email`` and ``phone`` through the blind index (``lookups``), ``name_prefix`` on the read
    model's names, ``updated_since`` in the order they changed (``after`` is then a position
    in that order)."""
    filters = filters or {}
    query = (
        "SELECT id, name, email, phone, marketing, version, created_at, updated_at FROM contacts"
        " WHERE tenant_id = %s"
    )
    params: list[Any] = [tenant_id]
    for kind, field in ((lookups.CONTACT_EMAIL, "email"), (lookups.CONTACT_PHONE, "phone")):
        if field in filters:
            digest = lookups.lookup_digest(uow, tenant_id, kind, filters[field])
            if digest is None:
                return {"items": [], "next": None}
            query += lookups.MATCHING
            params += [tenant_id, kind, psycopg2.Binary(digest)]
    if "name_prefix" in filters:
        # The prefix is matched as text: its % and _ are not wildcards (nothing scans for them).
        query += " AND lower(name) LIKE lower(%s) ESCAPE '\\'"
        params.append(_escaped(filters["name_prefix"]) + "%")
    order = "created_at"
    if "updated_since" in filters:
        query += " AND updated_at >= %s"
        params.append(filters["updated_since"])
        order = "updated_at"
    at = 6 if order == "created_at" else 7
    rows, next_after = keyset_page(
        uow.cur,
        query,
        params,
        limit,
        after,
        lambda row: [row[at].isoformat(), str(row[0])],
        order=order,
    )
    items = [
        {
            "id": str(i),
            "name": n,
            "email": e,
            "phone": p,
            "marketing": m,
            "version": v,
            "updated_at": u.isoformat(),
        }
        for i, n, e, p, m, v, _, u in rows
    ]
    return {"items": items, "next": next_after}


def _escaped(text: str) -> str:
    """``text`` for a LIKE pattern, its wildcards and the escape itself taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def rectify_subject(
    uow: UnitOfWork, tenant_id: str, contact_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """A rectification request's correction: applied to the latest version, whatever it is."""
    contact = _scoped(uow, Contact, tenant_id, contact_id)
    contact.rectify(changes)
    uow.save(contact, tenant_id, _tenant_region(uow, tenant_id))
    return contact_view(contact, marketing=_marketing(uow, contact.id))


def rectify_contact(
    uow: UnitOfWork,
    tenant_id: str,
    contact_id: str,
    expected_version: int,
    changes: dict[str, Any],
) -> dict[str, Any]:
    contact = _scoped(uow, Contact, tenant_id, contact_id)
    if contact.version != expected_version:
        raise VersionConflict(
            f"the contact is at version {contact.version}, not {expected_version}"
        )
    contact.rectify(changes)
    try:
        uow.save(contact, tenant_id, _tenant_region(uow, tenant_id))
    except ConcurrencyError:
        raise VersionConflict("the contact changed meanwhile; reload and retry") from None
    return contact_view(contact, marketing=_marketing(uow, contact.id))


def set_consent(
    uow: UnitOfWork, tenant_id: str, contact_id: str, command: dict[str, Any]
) -> dict[str, Any]:
    contact = _scoped(uow, Contact, tenant_id, contact_id)
    uow.cur.execute("SELECT 1 FROM restrictions WHERE subject_id = %s", (contact.id,))
    if command["marketing"] and uow.cur.fetchone() is not None:
        raise Conflict("the contact's data is restricted: no marketing")
    policy_version = current_policy(uow)["version"]
    contact.record_consent(
        marketing=command["marketing"], source=command["source"], policy_version=policy_version
    )
    [recorded] = uow.save(contact, tenant_id, _tenant_region(uow, tenant_id))
    return {
        "contact_id": contact.id,
        "marketing": command["marketing"],
        "source": command["source"],
        "policy_version": policy_version,
        "recorded_at": recorded.occurred_at.isoformat(),
    }


def get_consent(uow: UnitOfWork, tenant_id: str, contact_id: str) -> dict[str, Any]:
    contact = _scoped(uow, Contact, tenant_id, contact_id)
    uow.cur.execute(
        "SELECT marketing, source, policy_version, recorded_at FROM consents"
        " WHERE contact_id = %s AND tenant_id = %s ORDER BY version",
        (contact.id, tenant_id),
    )
    history = [
        {"marketing": m, "source": s, "policy_version": p, "recorded_at": r.isoformat()}
        for m, s, p, r in uow.cur.fetchall()
    ]
    return {
        "contact_id": contact.id,
        "marketing": history[-1]["marketing"] if history else False,
        "history": history,
    }


# --- helpers ----------------------------------------------------------------------------------


def _marketing(uow: UnitOfWork, contact_id: str) -> bool:
    uow.cur.execute("SELECT marketing FROM contacts WHERE id = %s", (contact_id,))
    row = uow.cur.fetchone()
    return bool(row and row[0])


def _page(
    uow: UnitOfWork, query: str, tenant_id: str, limit: int, after: list | None
) -> tuple[list[tuple], list | None]:
    """A page of ``query``'s rows (id first, created_at last) for ``tenant_id``."""
    return keyset_page(
        uow.cur, query, [tenant_id], limit, after, lambda row: [row[-1].isoformat(), str(row[0])]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat()
