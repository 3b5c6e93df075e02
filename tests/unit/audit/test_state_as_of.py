"""A tenant's state as of a moment, from its ledger's events: a move to another region cell
shows as the tenant's and its subscription's new region from the move on."""

from __future__ import annotations

import uuid

from services.audit.state import tenant_state


def test_a_moved_tenants_region_is_the_new_one_from_the_move_on() -> None:
    tenant = str(uuid.uuid4())

    def entry(type_: str, at: str, **payload: str) -> dict:
        return {"type": type_, "at": at, "payload": {"tenant_id": tenant, **payload}}

    before = [
        entry("tenant_created", "2026-01-01T00:00:00Z", region="uk", plan="team"),
        entry("billing_account_opened", "2026-01-01T00:00:01Z", region="uk", plan="team"),
    ]
    moved = [
        entry("tenant_region_changed", "2026-02-01T00:00:00Z", region="in", previous_region="uk"),
        entry(
            "billing_account_region_changed",
            "2026-02-01T00:00:01Z",
            region="in",
            previous_region="uk",
        ),
    ]

    assert tenant_state(before)["tenant"]["region"] == "uk"
    after = tenant_state(before + moved)
    assert (after["tenant"]["region"], after["subscription"]["region"]) == ("in", "in")
    assert after["subscription"]["plan"] == "team"
