"""Tenants and agents: the rules, in plain Python."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kernel.aggregate import Aggregate
from kernel.errors import ValidationFailed

DEFAULT_PLAN = "standard"


@dataclass
class Tenant(Aggregate):
    company: str = ""
    region: str = ""
    status: str = ""
    plan: str = ""

    @classmethod
    def sign_up(
        cls,
        *,
        company: str,
        region: str,
        age_confirmed: bool,
        policy_version: str,
        allowed_regions: tuple[str, ...],
        current_policy_version: str,
        admin_agent_id: uuid.UUID,
    ) -> Tenant:
        errors: dict[str, list[str]] = {}
        if region not in allowed_regions:
            errors["region"] = [f"must be one of: {', '.join(allowed_regions)}"]
        if age_confirmed is not True:
            errors["age_confirmed"] = ["the minimum age must be confirmed"]
        if policy_version != current_policy_version:
            errors["accept_policy_version"] = [
                f"the current policy version is {current_policy_version}"
            ]
        if errors:
            raise ValidationFailed(errors)
        tenant = cls(id=str(uuid.uuid4()))
        tenant.record(
            "tenant_created",
            tenant_id=tenant.id,
            company=company,
            region=region,
            plan=DEFAULT_PLAN,
            policy_version=policy_version,
            admin_agent_id=str(admin_agent_id),
        )
        return tenant

    def when_tenant_created(self, event: dict[str, Any]) -> None:
        self.company = event["company"]
        self.region = event["region"]
        self.plan = event["plan"]
        self.status = "active"


@dataclass
class Agent(Aggregate):
    tenant_id: str = ""
    role: str = ""
    name: str = ""
    email: str = ""
    key_ids: tuple[str, ...] = ()

    @classmethod
    def create(
        cls, *, agent_id: uuid.UUID, tenant_id: str, role: str, name: str, email: str
    ) -> Agent:
        agent = cls(id=str(agent_id))
        agent.record(
            "agent_created",
            agent_id=agent.id,
            tenant_id=tenant_id,
            role=role,
            name=name,
            email=email,
        )
        return agent

    def issue_api_key(self, key_id: uuid.UUID, key_hash: str) -> None:
        self.record("api_key_issued", agent_id=self.id, key_id=str(key_id), key_hash=key_hash)

    def when_agent_created(self, event: dict[str, Any]) -> None:
        self.tenant_id = event["tenant_id"]
        self.role = event["role"]
        self.name = event["name"]
        self.email = event["email"]

    def when_api_key_issued(self, event: dict[str, Any]) -> None:
        self.key_ids = (*self.key_ids, event["key_id"])
