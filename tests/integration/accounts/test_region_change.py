"""A tenant moved to another region cell (``services.tenant_move``) has the new region recorded
by the target cell's accounts, in-process (``services.accounts.moves``): its tenant document and
read model say it, its new events carry it in ``metadata.region``, and the outbox holds the
published event (ids and region codes) for billing; recorded once however often it is asked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kernel.commands import load_command
from kernel.errors import NotFound, ValidationFailed
from kernel.uow import EventSourcedStore
from services.accounts import handlers, moves
from services.accounts.commands import SignUpV1


def rows(store: EventSourcedStore, query: str, *params: Any) -> list[tuple]:
    with store.db.transaction() as cur:
        cur.execute(query, params or None)
        return cur.fetchall()


def test_the_target_cell_records_a_moved_tenants_region_once(accounts, world):
    command = load_command(
        SignUpV1,
        {
            "company": "Movers Ltd",
            "region": "uk",
            "admin": {"name": "Mo Ver", "email": "mo@example.com"},
            "age_confirmed": True,
            "accept_policy_version": world.policy_version,
        },
    )
    with accounts.unit_of_work() as uow:
        tenant_id = handlers.sign_up(command, uow, world)["tenant"]["id"]
    # The target cell: one region, its own.
    cell = world.with_overrides(regions=("in",))

    assert moves.record_region(cell, tenant_id, "in") is True
    assert moves.record_region(cell, tenant_id, "in") is False  # a resumed step

    with accounts.unit_of_work() as uow:
        assert handlers.get_tenant(uow, tenant_id)["region"] == "in"
        contact = handlers.create_contact(
            uow, tenant_id, {"name": "C", "email": "c@example.com", "phone": None}
        )
    assert rows(accounts, "SELECT region FROM tenants WHERE id = %s", tenant_id) == [("in",)]
    [(payload, metadata)] = rows(
        accounts,
        "SELECT payload::text, metadata::text FROM events WHERE type = 'tenant_region_changed'"
        " AND tenant_id = %s",
        tenant_id,
    )
    assert json.loads(payload) == {
        "tenant_id": tenant_id,
        "region": "in",
        "previous_region": "uk",
    }
    assert json.loads(metadata)["region"] == "in"
    [(body,)] = rows(
        accounts,
        "SELECT body FROM outbox WHERE routing_key = 'accounts.tenant_region_changed'"
        " AND body::jsonb -> 'payload' ->> 'tenant_id' = %s",
        tenant_id,
    )
    assert json.loads(body)["payload"] == json.loads(payload)
    # The tenant's events from then on name the new region (the read model's, now "in").
    [(contact_metadata,)] = rows(
        accounts,
        "SELECT metadata::text FROM events WHERE stream_id = %s",
        f"contact-{contact['id']}",
    )
    assert json.loads(contact_metadata)["region"] == "in"

    # A region the cell does not serve is refused; an unknown tenant is not found.
    with pytest.raises(ValidationFailed):
        moves.record_region(cell, tenant_id, "sg")
    with pytest.raises(NotFound):
        moves.record_region(cell, "8d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "in")
    assert rows(accounts, "SELECT region FROM tenants WHERE id = %s", tenant_id) == [("in",)]
