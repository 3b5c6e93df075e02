"""Replay writes tickets' read models a batch at a time (folded in memory, a few statements per
batch): whatever the batches' boundaries, the read model is the one live projection built."""

from __future__ import annotations

import functools
import uuid

import pytest

from kernel import eventstore
from kernel.projections import rebuild
from kernel.uow import EventSourcedStore
from services.tickets import privacy, sealed
from tests.integration.tickets.test_ticket_tags import legacy_ticket
from tests.integration.tickets.test_tickets_store import (
    busy_world,
    create,
    enrol,
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


def destroy(store: EventSourcedStore, tenant: str) -> dict:
    destroy_tenant = privacy.handlers_for(store.cipher)["destroy_tenant"]
    with store.unit_of_work("tickets") as uow:
        return destroy_tenant(uow, {"tenant_id": tenant, "request_id": str(uuid.uuid4())})


@pytest.mark.parametrize("batch_size", [1, 3, 2000])
def test_a_destroyed_tenants_tickets_do_not_come_back_on_a_rebuild(store, batch_size):
    made = busy_world(store)
    tenant, other = made["tenant"], made["other_tenant"]
    assert destroy(store, tenant)["status"] == "done"
    # A ticket of the other tenant changes after the destruction: replay keeps that too.
    fourth = made["tickets"][3]
    update(store, other, made["carol"], fourth, status="open")
    message(store, other, made["carol"], fourth["id"], "Carol: still crashing")
    live = snapshot(store)
    assert {row["tenant_id"] for t in live.values() for row in t} == {uuid.UUID(other)}

    projection = store.projection("tickets")
    rebuild(store.db, projection, store.upcast, progress=False, batch_size=batch_size)
    assert snapshot(store) == live
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM directory WHERE tenant_id = %s", (tenant,))
        assert cur.fetchone()[0] == 0

    destroy(store, tenant)  # applied again (a restore, a redelivery): one destruction on record
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM events WHERE type = 'tenant_destroyed'")
        assert cur.fetchone()[0] == 1


@pytest.mark.parametrize("batch_size", [1, 2, 5, 2000])
def test_tags_an_older_release_wrote_replay_sealed_in_any_batches(store, batch_size):
    """Plaintext tags of an older release's events are never copied, in any batch's fold; the
    ticket's sealed tags recorded after them win, as they did live."""
    interleaved(store)
    tenant = str(uuid.uuid4())
    alice = enrol(store, tenant, "contact")
    old = legacy_ticket(store, tenant, alice, ["old-tag"])
    store.rebuild("tickets", progress=False)
    assert sealed.seal_all(functools.partial(store.unit_of_work, "tickets")) == 1
    live = snapshot(store)
    [row] = [r for r in live["tickets"] if str(r["id"]) == old]
    assert row["tags"] == [] and row["tags_sealed"].startswith('{"$enc"')

    projection = store.projection("tickets")
    rebuild(store.db, projection, store.upcast, progress=False, batch_size=batch_size)
    assert snapshot(store) == live
