"""Replay writes tickets' read models a batch at a time (folded in memory, a few statements per
batch): whatever the batches' boundaries, the read model is the one live projection built."""

from __future__ import annotations

import pytest

from kernel import eventstore
from kernel.projections import rebuild
from kernel.uow import EventSourcedStore
from tests.integration.tickets.test_tickets_store import (
    busy_world,
    create,
    message,
    snapshot,
    update,
)


def interleaved(store: EventSourcedStore) -> None:
    """The busy world, then tickets' events interleaved, as they come in life: a batch holds
    new tickets and changes to older ones, several to the same ticket, of different columns."""
    made = busy_world(store)
    tenant, agent, colleague = made["tenant"], made["agent"], made["colleague"]
    first, second, third, _ = made["tickets"]
    fifth = create(store, tenant, agent, made["bob"], subject="Fifth", body="A fifth", tags=[])
    message(store, tenant, agent, second["id"], "Agent: one more thing")
    update(store, tenant, agent, fifth, priority="urgent", assignee_id=colleague)
    update(store, tenant, agent, second, status="open", tags=["billing", "vip"])
    message(store, tenant, colleague, fifth["id"], "Colleague: on it", internal=True)
    update(store, tenant, agent, third, assignee_id=agent)
    update(store, tenant, agent, second, assignee_id=colleague, priority="high")
    update(store, tenant, agent, fifth, assignee_id=None, tags=["after"])
    message(store, tenant, agent, third["id"], "Agent: closing soon")
    update(store, tenant, agent, third, status="solved")
    update(store, tenant, agent, third, status="closed")
    assert first["status"] == "closed"


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 2000])
def test_replay_in_any_batches_gives_the_read_model_live_projection_built(store, batch_size):
    interleaved(store)
    live = snapshot(store)
    assert len(live["tickets"]) == 5
    assert {row["closed_at"] is not None for row in live["tickets"]} == {True, False}

    projection = store.projection("tickets")
    applied = rebuild(store.db, projection, store.upcast, progress=False, batch_size=batch_size)
    with store.db.transaction() as cur:
        assert applied == eventstore.head_position(cur) > 40  # every event is a tickets event
    assert snapshot(store) == live
