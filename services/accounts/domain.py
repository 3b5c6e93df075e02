"""Tenants, agents, contacts and policies: the rules, in plain Python.

Aggregates decide and record events; they never read databases or publish anything.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from kernel.aggregate import Aggregate
from kernel.errors import Conflict, ValidationFailed
from services.accounts.events import BREACH_CATEGORIES

DEFAULT_PLAN = "standard"


@dataclass
class Tenant(Aggregate):
    company: str = ""
    region: str = ""
    status: str = ""
    plan: str = ""
    destroy_after: dt.datetime | None = None

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

    def cancel(self, now: dt.datetime, grace: dt.timedelta) -> None:
        if self.status == "destroyed":
            raise Conflict("the tenant was destroyed")
        if self.status != "active":
            raise Conflict("the tenant is already cancelled")
        self.record("tenant_cancelled", tenant_id=self.id, destroy_after=now + grace)

    def reactivate(self, now: dt.datetime) -> None:
        if self.status != "cancelled":
            raise Conflict("the tenant is not cancelled")
        assert self.destroy_after is not None
        if now >= self.destroy_after:
            raise Conflict("the grace period is over; the tenant is being destroyed")
        self.record("tenant_reactivated", tenant_id=self.id)

    def change_region(self, region: str, allowed_regions: tuple[str, ...]) -> bool:
        """The tenant is hosted in ``region`` from now on: the cell recording it serves only
        ``allowed_regions``. False when it is there already (a move's resumed step records it
        once)."""
        if region not in allowed_regions:
            raise ValidationFailed({"region": [f"must be one of: {', '.join(allowed_regions)}"]})
        if self.status == "destroyed":
            raise Conflict("the tenant was destroyed")
        if region == self.region:
            return False
        self.record(
            "tenant_region_changed",
            tenant_id=self.id,
            region=region,
            previous_region=self.region,
        )
        return True

    def destroy(self, request_id: str) -> bool:
        """Record the destruction; False when it was recorded already (a re-applied command
        after a restore, a redelivery): destruction happens once."""
        if self.status == "destroyed":
            return False
        self.record("tenant_destroyed", tenant_id=self.id, request_id=request_id)
        return True

    def when_tenant_created(self, event: dict[str, Any]) -> None:
        self.company = event["company"]
        self.region = event["region"]
        self.plan = event["plan"]
        self.status = "active"

    def when_tenant_cancelled(self, event: dict[str, Any]) -> None:
        self.status = "cancelled"
        destroy_after = event["destroy_after"]
        self.destroy_after = (
            dt.datetime.fromisoformat(destroy_after)
            if isinstance(destroy_after, str)
            else destroy_after
        )

    def when_tenant_reactivated(self, event: dict[str, Any]) -> None:
        self.status = "active"
        self.destroy_after = None

    def when_tenant_destroyed(self, event: dict[str, Any]) -> None:
        self.status = "destroyed"
        self.destroy_after = None

    def when_tenant_region_changed(self, event: dict[str, Any]) -> None:
        self.region = event["region"]


@dataclass
class Agent(Aggregate):
    tenant_id: str = ""
    role: str = ""
    name: str = ""
    email: str = ""
    active: bool = True
    key_ids: tuple[str, ...] = ()
    accepted_versions: tuple[str, ...] = ()

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

    def issue_api_key(self, key_id: uuid.UUID, key_hash: str, issuer_id: str) -> None:
        """``issuer_id``: whom the key answers to for four eyes (see ``ApiKeyIssuedV2``)."""
        if not self.active:
            raise Conflict("the agent is deactivated")
        self.record(
            "api_key_issued",
            agent_id=self.id,
            key_id=str(key_id),
            key_hash=key_hash,
            issuer_id=issuer_id,
        )

    def revoke_api_key(self, key_id: str) -> None:
        if key_id not in self.key_ids:
            raise Conflict("no such active key")
        self.record("api_key_revoked", agent_id=self.id, key_id=key_id)

    def deactivate(self) -> None:
        if not self.active:
            raise Conflict("the agent is already deactivated")
        # Its keys stop working with this event: the key read model drops them in the same
        # transaction.
        self.record("agent_deactivated", agent_id=self.id, tenant_id=self.tenant_id)

    def accept_policy(self, version: str) -> bool:
        """Record acceptance; False when this version was already accepted (nothing recorded)."""
        if version in self.accepted_versions:
            return False
        self.record("policy_accepted", agent_id=self.id, tenant_id=self.tenant_id, version=version)
        return True

    def when_agent_created(self, event: dict[str, Any]) -> None:
        self.tenant_id = event["tenant_id"]
        self.role = event["role"]
        self.name = event["name"]
        self.email = event["email"]

    def when_api_key_issued(self, event: dict[str, Any]) -> None:
        self.key_ids = (*self.key_ids, event["key_id"])

    def when_api_key_revoked(self, event: dict[str, Any]) -> None:
        self.key_ids = tuple(k for k in self.key_ids if k != event["key_id"])

    def when_agent_deactivated(self, event: dict[str, Any]) -> None:
        self.active = False
        self.key_ids = ()

    def when_policy_accepted(self, event: dict[str, Any]) -> None:
        self.accepted_versions = (*self.accepted_versions, event["version"])


RECTIFIABLE = ("name", "email", "phone")


@dataclass
class Contact(Aggregate):
    tenant_id: str = ""
    name: str = ""
    email: str = ""
    phone: str | None = None

    @classmethod
    def create(cls, *, tenant_id: str, name: str, email: str, phone: str | None) -> Contact:
        contact = cls(id=str(uuid.uuid4()))
        contact.record(
            "contact_created",
            contact_id=contact.id,
            tenant_id=tenant_id,
            name=name,
            email=email,
            phone=phone,
        )
        return contact

    def rectify(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Record what really changed; an unchanged value is not a rectification."""
        changed = {k: v for k, v in changes.items() if k in RECTIFIABLE and getattr(self, k) != v}
        if changed:
            self.record(
                "contact_rectified", contact_id=self.id, tenant_id=self.tenant_id, **changed
            )
        return changed

    def record_consent(self, *, marketing: bool, source: str, policy_version: str) -> None:
        self.record(
            "consent_recorded",
            contact_id=self.id,
            tenant_id=self.tenant_id,
            marketing=marketing,
            source=source,
            policy_version=policy_version,
        )

    def when_contact_created(self, event: dict[str, Any]) -> None:
        self.tenant_id = event["tenant_id"]
        self.name = event["name"]
        self.email = event["email"]
        self.phone = event.get("phone")

    def when_contact_rectified(self, event: dict[str, Any]) -> None:
        for field in RECTIFIABLE:
            if field in event:
                setattr(self, field, event[field])

    def when_consent_recorded(self, event: dict[str, Any]) -> None:
        pass  # consent does not change what the contact aggregate decides


@dataclass
class Policies(Aggregate):
    """The platform's policy versions, one stream for the whole deployment."""

    versions: tuple[str, ...] = ()

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        return "policies"

    @property
    def current(self) -> str | None:
        return self.versions[-1] if self.versions else None

    def publish(self, version: str) -> None:
        if version in self.versions:
            raise Conflict(f"policy version {version} was already published")
        self.record("policy_published", version=version)

    def when_policy_published(self, event: dict[str, Any]) -> None:
        self.versions = (*self.versions, event["version"])


# --- personal-data breaches -------------------------------------------------------------------

# Art. 33(1): the controller (the tenant) notifies its supervisory authority within 72 hours of
# becoming aware. The platform, their processor, tells them without undue delay (Art. 33(2)),
# and starts their clock from when the operator became aware: the earliest the tenant could be.
NOTIFICATION_WINDOW = dt.timedelta(hours=72)


@dataclass
class Incident(Aggregate):
    """A personal-data breach as the operator declares it: which tenants it affects and when
    the operator became aware of it. What happened and which categories it concerns are in
    each affected tenant's own copy (``IncidentNotice``), under that tenant's key: the
    operator's text may describe people, and a tenant's destruction must end it."""

    tenant_ids: tuple[str, ...] = ()
    aware_at: dt.datetime | None = None

    @classmethod
    def declare(
        cls,
        *,
        incident_id: uuid.UUID,
        tenant_ids: list[str],
        aware_at: dt.datetime,
        now: dt.datetime,
    ) -> Incident:
        errors: dict[str, list[str]] = {}
        if not tenant_ids:
            errors["tenant_ids"] = ["at least one affected tenant"]
        elif len(set(tenant_ids)) != len(tenant_ids):
            errors["tenant_ids"] = ["each tenant once"]
        if aware_at > now:
            errors["aware_at"] = ["cannot be in the future"]
        if errors:
            raise ValidationFailed(errors)
        incident = cls(id=str(incident_id))
        incident.record(
            "incident_declared",
            incident_id=incident.id,
            tenant_ids=list(tenant_ids),
            aware_at=aware_at,
        )
        return incident

    def when_incident_declared(self, event: dict[str, Any]) -> None:
        self.tenant_ids = tuple(str(t) for t in event["tenant_ids"])
        self.aware_at = _moment(event["aware_at"])


@dataclass
class IncidentNotice(Aggregate):
    """One affected tenant's notice of an incident: the categories, what happened, the clock,
    whom it was sent to and which of the tenant's admins acknowledged it. Its id is
    ``notice_id(incident, tenant)``: one stream per tenant, so the tenant's events stay the
    tenant's, and its text and categories are under the tenant's key."""

    incident_id: str = ""
    tenant_id: str = ""
    categories: tuple[str, ...] = ()
    description: str = ""
    aware_at: dt.datetime | None = None
    notified_ids: tuple[str, ...] = ()
    acknowledged_by: tuple[str, ...] = ()

    @staticmethod
    def notice_id(incident_id: str, tenant_id: str) -> str:
        return f"{incident_id}.{tenant_id}"

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        return f"incident_notice-{aggregate_id}"

    @classmethod
    def notify(
        cls,
        *,
        incident: Incident,
        tenant_id: str,
        categories: list[str],
        description: str,
        admin_ids: list[str],
    ) -> IncidentNotice:
        """The notice as sent to ``admin_ids``, the tenant's active admins."""
        if tenant_id not in incident.tenant_ids:
            raise ValueError(f"incident {incident.id} does not affect tenant {tenant_id}")
        errors: dict[str, list[str]] = {}
        unknown = sorted(set(categories) - set(BREACH_CATEGORIES))
        if not categories or unknown:
            errors["categories"] = [f"one or more of: {', '.join(BREACH_CATEGORIES)}"]
        if not description.strip():
            errors["description"] = ["say what happened"]
        if errors:
            raise ValidationFailed(errors)
        notice = cls(id=cls.notice_id(incident.id, tenant_id))
        notice.record(
            "incident_notified",
            incident_id=incident.id,
            tenant_id=tenant_id,
            categories=list(categories),
            description=description,
            aware_at=incident.aware_at,
            admin_ids=list(admin_ids),
        )
        return notice

    @property
    def deadline(self) -> dt.datetime:
        """When the tenant's 72 hours to notify its supervisory authority end."""
        assert self.aware_at is not None, "a notice is recorded with its aware_at"
        return self.aware_at + NOTIFICATION_WINDOW

    def deadline_passed(self, now: dt.datetime) -> bool:
        return now >= self.deadline

    def acknowledge(self, agent_id: str) -> bool:
        """Record that an admin of the tenant has read the notice; False when they had
        already (nothing recorded): an acknowledgement is once per admin."""
        if agent_id in self.acknowledged_by:
            return False
        self.record(
            "incident_acknowledged",
            incident_id=self.incident_id,
            tenant_id=self.tenant_id,
            agent_id=agent_id,
        )
        return True

    def when_incident_notified(self, event: dict[str, Any]) -> None:
        self.incident_id = str(event["incident_id"])
        self.tenant_id = str(event["tenant_id"])
        # Read back after the tenant's key went, both read as erased (a str): nothing to show.
        categories = event["categories"]
        self.categories = tuple(categories) if isinstance(categories, list) else ()
        self.description = str(event["description"])
        self.aware_at = _moment(event["aware_at"])
        self.notified_ids = tuple(str(a) for a in event["admin_ids"])

    def when_incident_acknowledged(self, event: dict[str, Any]) -> None:
        self.acknowledged_by = (*self.acknowledged_by, str(event["agent_id"]))


def _moment(value: dt.datetime | str) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value
