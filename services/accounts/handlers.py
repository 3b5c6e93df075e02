"""Accounts' command handlers: plain functions of (command, unit of work, settings)."""

from __future__ import annotations

import uuid
from typing import Any

from kernel.config import Settings
from kernel.errors import NotFound, Unauthorized
from kernel.uow import UnitOfWork
from services.accounts import apikeys
from services.accounts.domain import Agent, Tenant


def sign_up(command: dict[str, Any], uow: UnitOfWork, settings: Settings) -> dict[str, Any]:
    admin_id = uuid.uuid4()
    tenant = Tenant.sign_up(
        company=command["company"],
        region=command["region"],
        age_confirmed=command["age_confirmed"],
        policy_version=command["accept_policy_version"],
        allowed_regions=settings.regions,
        current_policy_version=settings.policy_version,
        admin_agent_id=admin_id,
    )
    tenant_uuid = uuid.UUID(tenant.id)
    admin = Agent.create(
        agent_id=admin_id,
        tenant_id=tenant.id,
        role="admin",
        name=command["admin"]["name"],
        email=command["admin"]["email"],
    )
    api_key = apikeys.generate()
    admin.issue_api_key(uuid.uuid4(), apikeys.keyed_hash(settings.api_key_secret, api_key))
    uow.actor_id = admin.id
    uow.append(tenant.stream_id, 0, tenant.pending, tenant_id=tenant_uuid)
    uow.append(admin.stream_id, 0, admin.pending, tenant_id=tenant_uuid)
    return {
        "tenant": tenant_view(tenant),
        "agent": {"id": admin.id, "name": admin.name, "email": admin.email, "role": admin.role},
        "api_key": api_key,
    }


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "company": tenant.company,
        "region": tenant.region,
        "status": tenant.status,
        "plan": tenant.plan,
    }


def get_tenant(uow: UnitOfWork, tenant_id: str) -> dict[str, Any]:
    uow.cur.execute(
        "SELECT id, company, region, status, plan FROM tenants WHERE id = %s", (tenant_id,)
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such tenant")
    return dict(zip(("id", "company", "region", "status", "plan"), map(str, row), strict=True))


def authenticate(uow: UnitOfWork, settings: Settings, api_key: str) -> dict[str, str]:
    """The agent and tenant a key belongs to; the same error for unknown, revoked or inactive."""
    if not api_key.startswith(apikeys.PREFIX):
        raise Unauthorized("invalid credentials")
    key_hash = apikeys.keyed_hash(settings.api_key_secret, api_key)
    uow.cur.execute(
        "SELECT k.key_hash, a.id, a.tenant_id, a.role FROM api_keys k"
        " JOIN agents a ON a.id = k.agent_id"
        " WHERE k.key_hash = %s AND k.revoked_at IS NULL AND a.active",
        (key_hash,),
    )
    row = uow.cur.fetchone()
    if row is None or not apikeys.matches(settings.api_key_secret, api_key, row[0]):
        raise Unauthorized("invalid credentials")
    return {"agent_id": str(row[1]), "tenant_id": str(row[2]), "role": row[3]}
