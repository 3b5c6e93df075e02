"""A tenant's state as of a moment, rebuilt from the ledger's events alone.

The ledger holds what services publish (ids and states, never words), so the state is ids,
roles, statuses and plans: what an auditor needs to ask "what was true then?".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def tenant_state(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "tenant": {},
        "agents": {},
        "contacts": {},
        "tickets": {},
        "subscription": {},
    }
    for entry in entries:
        apply(state, entry["type"], entry["payload"], entry["at"])
    return {
        "tenant": state["tenant"],
        "agents": sorted(state["agents"].values(), key=lambda a: a["id"]),
        "contacts": sorted(state["contacts"].values(), key=lambda c: c["id"]),
        "tickets": sorted(state["tickets"].values(), key=lambda t: t["id"]),
        "subscription": state["subscription"],
    }


def apply(state: dict[str, Any], type_: str, p: dict[str, Any], at: str) -> None:
    if type_ == "tenant_created":
        state["tenant"] = {
            "id": p["tenant_id"],
            "region": p["region"],
            "plan": p["plan"],
            "status": "active",
            "created_at": at,
        }
    elif type_ == "tenant_cancelled":
        state["tenant"].update(status="cancelled", destroy_after=p["destroy_after"])
    elif type_ == "tenant_reactivated":
        state["tenant"].update(status="active")
        state["tenant"].pop("destroy_after", None)
    elif type_ == "agent_created":
        state["agents"][p["agent_id"]] = {"id": p["agent_id"], "role": p["role"], "active": True}
    elif type_ == "agent_deactivated":
        state["agents"].setdefault(p["agent_id"], {"id": p["agent_id"]})["active"] = False
    elif type_ == "contact_created":
        state["contacts"][p["contact_id"]] = {"id": p["contact_id"], "marketing": False}
    elif type_ == "consent_recorded":
        contact = state["contacts"].setdefault(p["contact_id"], {"id": p["contact_id"]})
        contact["marketing"] = p["marketing"]
    elif type_ == "ticket_created":
        state["tickets"][p["ticket_id"]] = {
            "id": p["ticket_id"],
            "requester_id": p["requester_id"],
            "status": "new",
            "priority": p.get("priority"),
            "assignee_id": None,
        }
    elif type_ == "ticket_status_changed":
        state["tickets"].setdefault(p["ticket_id"], {"id": p["ticket_id"]})["status"] = p["status"]
    elif type_ == "ticket_assigned":
        ticket = state["tickets"].setdefault(p["ticket_id"], {"id": p["ticket_id"]})
        ticket["assignee_id"] = p["assignee_id"]
    elif type_ == "billing_account_opened":
        state["subscription"] = {"plan": p["plan"], "region": p["region"]}
    elif type_ == "plan_changed":
        state["subscription"]["plan"] = p["plan"]
    # A tenant moved to another region cell (services.tenant_move): its region from then on.
    elif type_ == "tenant_region_changed":
        state["tenant"]["region"] = p["region"]
    elif type_ == "billing_account_region_changed":
        state["subscription"]["region"] = p["region"]
