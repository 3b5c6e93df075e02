"""Accounts' read models: tenants, agents and API keys."""

from __future__ import annotations

import psycopg2

from kernel.envelope import Envelope
from kernel.projections import Projection


class TenantsProjection(Projection):
    name = "tenants"
    tables = ("tenants",)
    event_types = frozenset({"tenant_created"})

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        cur.execute(
            "INSERT INTO tenants (id, company, region, status, plan, created_at, version)"
            " VALUES (%s, %s, %s, 'active', %s, %s, %s)",
            (
                p["tenant_id"],
                p["company"],
                p["region"],
                p["plan"],
                event.occurred_at,
                event.stream_version,
            ),
        )


class AgentsProjection(Projection):
    name = "agents"
    tables = ("agents", "api_keys")
    event_types = frozenset({"agent_created", "api_key_issued"})

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
                "INSERT INTO api_keys (key_hash, key_id, agent_id, issued_at)"
                " VALUES (%s, %s, %s, %s)",
                (p["key_hash"], p["key_id"], p["agent_id"], event.occurred_at),
            )


PROJECTIONS = (TenantsProjection(), AgentsProjection())
