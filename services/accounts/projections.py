"""Accounts' read models: tenants, agents and keys, contacts and consent, policies.

Each applies ``tenant_destroyed`` to what it keeps of the tenant, so a replay ends where the
destruction left it: the company erased, agents inactive with their keys revoked, contacts,
consents, policy acceptances, lookup digests and its notices of incidents gone.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from kernel.crypto.fields import ERASED, is_erased
from kernel.envelope import Envelope
from kernel.projections import KeyedProjection, Projection
from services.accounts.lookups import AGENT_EMAIL, CONTACT_EMAIL, CONTACT_PHONE, NORMALISE


class TenantsProjection(Projection):
    name = "tenants"
    tables = ("tenants",)
    event_types = frozenset(
        {
            "tenant_created",
            "tenant_cancelled",
            "tenant_reactivated",
            "tenant_destroyed",
            "tenant_region_changed",
        }
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "tenant_created":
            cur.execute(
                "INSERT INTO tenants (id, company, region, status, plan, created_at, version)"
                " VALUES (%s, %s, %s, 'active', %s, %s, %s)",
                (
                    p["tenant_id"],
                    str(p["company"]),
                    p["region"],
                    p["plan"],
                    event.occurred_at,
                    event.stream_version,
                ),
            )
        elif event.type == "tenant_cancelled":
            cur.execute(
                "UPDATE tenants SET status = 'cancelled', destroy_after = %s, version = %s"
                " WHERE id = %s",
                (p["destroy_after"], event.stream_version, p["tenant_id"]),
            )
        elif event.type == "tenant_reactivated":
            cur.execute(
                "UPDATE tenants SET status = 'active', destroy_after = NULL, version = %s"
                " WHERE id = %s",
                (event.stream_version, p["tenant_id"]),
            )
        elif event.type == "tenant_region_changed":
            cur.execute(
                "UPDATE tenants SET region = %s, version = %s WHERE id = %s",
                (p["region"], event.stream_version, p["tenant_id"]),
            )
        elif event.type == "tenant_destroyed":
            cur.execute(
                "UPDATE tenants SET status = 'destroyed', company = %s, destroy_after = NULL,"
                " version = %s WHERE id = %s",
                (ERASED, event.stream_version, p["tenant_id"]),
            )


class AgentsProjection(Projection):
    name = "agents"
    tables = ("agents", "api_keys")
    event_types = frozenset(
        {
            "agent_created",
            "api_key_issued",
            "api_key_revoked",
            "agent_deactivated",
            "tenant_destroyed",
        }
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "agent_created":
            cur.execute(
                "INSERT INTO agents (id, tenant_id, role, name, email, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    p["agent_id"],
                    p["tenant_id"],
                    p["role"],
                    str(p["name"]),
                    str(p["email"]),
                    event.occurred_at,
                ),
            )
        elif event.type == "api_key_issued":
            cur.execute(
                "INSERT INTO api_keys (key_hash, key_id, agent_id, issued_at, issuer_id)"
                " VALUES (%s, %s, %s, %s, %s)",
                (p["key_hash"], p["key_id"], p["agent_id"], event.occurred_at, p.get("issuer_id")),
            )
        elif event.type == "api_key_revoked":
            cur.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (event.occurred_at, p["key_id"]),
            )
        elif event.type == "agent_deactivated":
            cur.execute(
                "UPDATE agents SET active = false, deactivated_at = %s WHERE id = %s",
                (event.occurred_at, p["agent_id"]),
            )
            cur.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE agent_id = %s AND revoked_at IS NULL",
                (event.occurred_at, p["agent_id"]),
            )
        elif event.type == "tenant_destroyed":
            cur.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE revoked_at IS NULL AND agent_id IN"
                " (SELECT id FROM agents WHERE tenant_id = %s)",
                (event.occurred_at, p["tenant_id"]),
            )
            cur.execute(
                "UPDATE agents SET name = %s, email = %s, active = false,"
                " deactivated_at = coalesce(deactivated_at, %s) WHERE tenant_id = %s",
                (ERASED, ERASED, event.occurred_at, p["tenant_id"]),
            )


class ContactsProjection(Projection):
    name = "contacts"
    tables = ("contacts", "consents")
    event_types = frozenset(
        {"contact_created", "contact_rectified", "consent_recorded", "tenant_destroyed"}
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "contact_created":
            cur.execute(
                "INSERT INTO contacts (id, tenant_id, name, email, phone, version, created_at,"
                " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    p["contact_id"],
                    p["tenant_id"],
                    str(p["name"]),
                    str(p["email"]),
                    None if p.get("phone") is None else str(p["phone"]),
                    event.stream_version,
                    event.occurred_at,
                    event.occurred_at,
                ),
            )
        elif event.type == "contact_rectified":
            changes = {k: p[k] for k in ("name", "email", "phone") if k in p}
            assignments = ", ".join(f"{column} = %s" for column in changes)
            cur.execute(
                f"UPDATE contacts SET {assignments}, version = %s, updated_at = %s"  # noqa: S608
                " WHERE id = %s",
                (
                    *(None if v is None else str(v) for v in changes.values()),
                    event.stream_version,
                    event.occurred_at,
                    p["contact_id"],
                ),
            )
        elif event.type == "consent_recorded":
            cur.execute(
                "INSERT INTO consents (contact_id, tenant_id, marketing, source, policy_version,"
                " recorded_at, version) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    p["contact_id"],
                    p["tenant_id"],
                    p["marketing"],
                    # Plaintext here, as the contact's name is: scrubbed by their erasure, and
                    # a replay after it reads the event's source as erased.
                    str(p["source"]),
                    p["policy_version"],
                    event.occurred_at,
                    event.stream_version,
                ),
            )
            cur.execute(
                "UPDATE contacts SET marketing = %s, version = %s, updated_at = %s WHERE id = %s",
                (p["marketing"], event.stream_version, event.occurred_at, p["contact_id"]),
            )
        elif event.type == "tenant_destroyed":
            cur.execute("DELETE FROM consents WHERE tenant_id = %s", (p["tenant_id"],))
            cur.execute("DELETE FROM contacts WHERE tenant_id = %s", (p["tenant_id"],))


class PoliciesProjection(Projection):
    name = "policies"
    tables = ("policies", "policy_acceptances")
    event_types = frozenset({"policy_published", "policy_accepted", "tenant_destroyed"})

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "policy_published":
            cur.execute(
                "INSERT INTO policies (version, published_at, seq) VALUES (%s, %s, %s)",
                (p["version"], event.occurred_at, event.stream_version),
            )
        elif event.type == "policy_accepted":
            cur.execute(
                "INSERT INTO policy_acceptances (agent_id, tenant_id, version, accepted_at)"
                " VALUES (%s, %s, %s, %s)",
                (p["agent_id"], p["tenant_id"], p["version"], event.occurred_at),
            )
        elif event.type == "tenant_destroyed":
            cur.execute("DELETE FROM policy_acceptances WHERE tenant_id = %s", (p["tenant_id"],))


class IncidentsProjection(Projection):
    """Breaches: the operator's declarations, each tenant's notice (its text and categories in
    plaintext, as an agent's name is: deleted with the tenant) and acknowledgements."""

    name = "incidents"
    tables = ("incidents", "incident_notices", "incident_acknowledgements")
    event_types = frozenset(
        {"incident_declared", "incident_notified", "incident_acknowledged", "tenant_destroyed"}
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "incident_declared":
            cur.execute(
                "INSERT INTO incidents (id, tenant_ids, aware_at, created_at)"
                " VALUES (%s, %s::uuid[], %s, %s)",
                (
                    p["incident_id"],
                    [str(t) for t in p["tenant_ids"]],
                    p["aware_at"],
                    event.occurred_at,
                ),
            )
        elif event.type == "incident_notified":
            # Replayed after the tenant's key went, both read as erased; the tenant_destroyed
            # that follows deletes the row.
            categories = p["categories"]
            cur.execute(
                "INSERT INTO incident_notices (id, tenant_id, categories, description, aware_at,"
                " notified_ids, created_at) VALUES (%s, %s, %s, %s, %s, %s::uuid[], %s)",
                (
                    p["incident_id"],
                    p["tenant_id"],
                    [str(c) for c in categories] if isinstance(categories, list) else [],
                    str(p["description"]),
                    p["aware_at"],
                    [str(a) for a in p["admin_ids"]],
                    event.occurred_at,
                ),
            )
        elif event.type == "incident_acknowledged":
            cur.execute(
                "INSERT INTO incident_acknowledgements (incident_id, tenant_id, agent_id,"
                " acknowledged_at) VALUES (%s, %s, %s, %s)",
                (p["incident_id"], p["tenant_id"], p["agent_id"], event.occurred_at),
            )
        elif event.type == "tenant_destroyed":
            cur.execute("DELETE FROM incident_notices WHERE tenant_id = %s", (p["tenant_id"],))
            cur.execute(
                "DELETE FROM incident_acknowledgements WHERE tenant_id = %s", (p["tenant_id"],)
            )


class LookupsProjection(KeyedProjection):
    """The blind index of people (``services.accounts.lookups``): per person and kind, the keyed
    hash of their normalised e-mail address or phone number under the tenant's key. A
    rectification replaces the digest; a value that reads as erased (a replay after an erasure,
    or after the tenant's key went) is never indexed."""

    name = "lookups"
    tables = ("lookup_digests",)
    event_types = frozenset(
        {"agent_created", "contact_created", "contact_rectified", "tenant_destroyed"}
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        if event.type == "tenant_destroyed":
            cur.execute("DELETE FROM lookup_digests WHERE tenant_id = %s", (p["tenant_id"],))
        elif event.type == "agent_created":
            self._index(cur, p["tenant_id"], p["agent_id"], AGENT_EMAIL, p["email"])
        else:  # a contact created, or rectified (only the fields that changed are present)
            for kind, field in ((CONTACT_EMAIL, "email"), (CONTACT_PHONE, "phone")):
                if field in p:
                    self._index(cur, p["tenant_id"], p["contact_id"], kind, p[field])

    def _index(
        self,
        cur: psycopg2.extensions.cursor,
        tenant_id: str,
        subject_id: str,
        kind: str,
        value: Any,
    ) -> None:
        digest = None
        if value is not None and not is_erased(value):
            digest = self.blind_index.digest(tenant_id, kind, NORMALISE[kind](str(value)))
        if digest is None:  # no value, an erased one, or the tenant's key is gone
            cur.execute(
                "DELETE FROM lookup_digests WHERE subject_id = %s AND kind = %s",
                (subject_id, kind),
            )
            return
        cur.execute(
            "INSERT INTO lookup_digests (subject_id, kind, tenant_id, digest)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (subject_id, kind) DO UPDATE SET digest = EXCLUDED.digest",
            (subject_id, kind, tenant_id, psycopg2.Binary(digest)),
        )


PROJECTIONS = (
    TenantsProjection(),
    AgentsProjection(),
    ContactsProjection(),
    PoliciesProjection(),
    LookupsProjection(),
    IncidentsProjection(),
)
