"""``eventstore.append`` in one round trip keeps what the step-by-step append promised."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from kernel import eventstore
from kernel.envelope import new_envelope
from kernel.eventstore import ConcurrencyError
from tests.support.settling import settle
from tests.support.source import source_store


def envelopes(stream: str, after: int, count: int, tenant: uuid.UUID | None = None):
    return [
        new_envelope(
            type="thing_happened",
            schema_version=1,
            source="testsrc",
            stream_id=stream,
            stream_version=after + n,
            tenant_id=tenant,
            actor_id=None if n % 2 else "agent-1",
            payload={"thing_id": "t", "n": n, "text": 'it\'s 100% "quoted" %s'},
            metadata={"n": n},
        )
        for n in range(1, count + 1)
    ]


def test_an_append_stores_every_field_and_positions_follow_versions(world):
    store = source_store(world)
    tenant = uuid.uuid4()
    written = envelopes("s-1", 0, 25, tenant)
    with store.db.transaction() as cur:
        eventstore.append(cur, "s-1", 0, written)
    settle(store)
    with store.db.transaction() as cur:
        read = eventstore.read_all(cur, limit=100)
    assert [e for _, e in read] == written
    positions = [cursor.position for cursor, _ in read]
    assert positions == sorted(positions)


def test_a_stale_version_writes_nothing_and_leaves_the_transaction_usable(world):
    store = source_store(world)
    with store.db.transaction() as cur:
        eventstore.append(cur, "s-2", 0, envelopes("s-2", 0, 2))
    with store.db.transaction() as cur:
        with pytest.raises(ConcurrencyError):
            eventstore.append(cur, "s-2", 1, envelopes("s-2", 1, 3))
        with pytest.raises(ConcurrencyError):
            eventstore.append(cur, "s-2", 0, envelopes("s-2", 0, 1))
        # The same transaction goes on: the right version appends.
        eventstore.append(cur, "s-2", 2, envelopes("s-2", 2, 1))
    with store.db.transaction() as cur:
        assert eventstore.stream_version(cur, "s-2") == 3


def test_a_unique_violation_is_a_conflict_and_the_transaction_goes_on(world):
    store = source_store(world)
    [first] = envelopes("s-3", 0, 1)
    with store.db.transaction() as cur:
        eventstore.append(cur, "s-3", 0, [first])
    # The version check passes (another stream), the insert hits a unique key: the last guard.
    clash = dataclasses.replace(first, stream_id="s-4")
    with store.db.transaction() as cur:
        with pytest.raises(ConcurrencyError):
            eventstore.append(cur, "s-4", 0, [clash])
        eventstore.append(cur, "s-4", 0, envelopes("s-4", 0, 1))
    with store.db.transaction() as cur:
        assert eventstore.stream_version(cur, "s-4") == 1
        assert eventstore.stream_version(cur, "s-3") == 1
