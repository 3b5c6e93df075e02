"""Recording the ledger in batches (``Ledger.record_many``, ``kernel.groupcommit``) against a real
PostgreSQL: one gap-free chain whatever the mix of batches, single appends and redeliveries;
a redelivery is skipped, never recorded twice; an entry that fails takes no neighbour with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid

import pytest

from kernel.groupcommit import GroupCommit
from kernel.stores import prepare_databases
from services.audit import chain
from services.audit.ledger import Ledger, open_ledger
from tests.integration.audit.test_ledger import (
    BASE,
    END_OF_DAY_ONE,
    MIGRATIONS,
    by_event_id,
    days_of_accesses,
    mixed,
    rows,
    things,
)


@pytest.fixture
def ledger(world) -> Ledger:
    prepare_databases(world, "audit", MIGRATIONS)
    return open_ledger(world)


def chain_is_whole(ledger: Ledger, expected: int) -> None:
    stored = rows(ledger)
    assert sorted(stored) == list(range(1, expected + 1))
    assert ledger.verify()["ok"] is True
    assert ledger.verify()["entries"] == expected


def test_a_batch_is_one_stretch_of_the_chain_in_order(ledger):
    first = things(3)
    assert [ledger.record(e) for e in first] == [1, 2, 3]
    batch = mixed(12, [uuid.uuid4(), uuid.uuid4()])
    assert ledger.record_many(batch) == list(range(4, 16))
    assert ledger.record(things(1, BASE + dt.timedelta(days=1))[0]) == 16
    stored = rows(ledger)
    assert [stored[seq].event_id for seq in range(4, 16)] == [e.event_id for e in batch]
    chain_is_whole(ledger, 16)
    assert ledger.checkpoint()["tree_size"] == 16
    assert ledger.verify()["ok"] is True


def test_redeliveries_in_a_batch_are_skipped_without_a_gap(ledger):
    envelopes = things(6)
    assert ledger.record_many(envelopes[:3]) == [1, 2, 3]
    before = rows(ledger)
    # Already recorded, repeated inside the batch, and a forged copy of a recorded id.
    forged = dataclasses.replace(envelopes[1], payload={"thing_id": "x", "n": 99})
    batch = [envelopes[0], envelopes[3], envelopes[3], forged, envelopes[4], envelopes[5]]
    assert ledger.record_many(batch) == [None, 4, None, None, 5, 6]
    stored = rows(ledger)
    assert {seq: stored[seq] for seq in before} == before
    chain_is_whole(ledger, 6)
    assert ledger.record_many([]) == []
    assert ledger.record_many(envelopes) == [None] * 6
    assert ledger.count() == 6


def test_access_events_are_encrypted_in_batches_and_their_days_purged(ledger):
    tenant = uuid.uuid4()
    days = days_of_accesses(ledger, tenant)  # recorded one by one
    ledger.purge_access_log(END_OF_DAY_ONE)
    count = ledger.count()
    # A batch holding a redelivery of a purged day's access and new ones of a live day.
    fresh = [
        dataclasses.replace(e, event_id=uuid.uuid4(), payload=dict(e.payload)) for e in days["two"]
    ]
    assert ledger.record_many([days["one"][0], *fresh])[0] is None
    assert ledger.count() == count + len(fresh)
    seen = by_event_id(ledger, tenant)
    for envelope in fresh:
        assert seen[str(envelope.event_id)]["payload"]["ip"] == envelope.payload["ip"]
    assert seen[str(days["one"][0].event_id)]["payload"]["ip"] == "[erased]"
    # A batch's keys are listed once each, and purged with their day.
    with ledger.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM access_log_keys WHERE tenant_id = %s", (tenant,))
        assert cur.fetchone() == (2,)
    ledger.purge_access_log(END_OF_DAY_ONE + dt.timedelta(days=1))
    assert by_event_id(ledger, tenant)[str(fresh[0].event_id)]["payload"]["ip"] == "[erased]"
    chain_is_whole(ledger, ledger.count())


def test_concurrent_group_recording_and_single_appends_give_one_chain(ledger):
    recorder = GroupCommit(ledger.record_many, ledger.record)
    shared = things(30)
    own = [things(20, BASE + dt.timedelta(days=w + 1)) for w in range(8)]
    results: list[list[tuple[uuid.UUID, int | None]]] = [[] for _ in own]

    def write(w: int) -> None:
        # Half the writers go through the recorder, the others append alone: both take the
        # ledger's lock, so they interleave as two audit processes would.
        record = recorder.submit if w % 2 == 0 else ledger.record
        for envelope in shared[w % 3 :: 3] + own[w]:
            results[w].append((envelope.event_id, record(envelope)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(len(own))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    recorded = [(eid, seq) for result in results for eid, seq in result if seq is not None]
    expected = {e.event_id for e in shared} | {e.event_id for batch in own for e in batch}
    assert {eid for eid, _ in recorded} == expected
    assert len(recorded) == len(expected)  # each event won exactly once
    assert sorted(seq for _, seq in recorded) == list(range(1, len(expected) + 1))
    assert recorder.pending() == 0
    chain_is_whole(ledger, len(expected))


def test_an_entry_that_fails_fails_alone(ledger):
    good = things(4)
    bad = dataclasses.replace(good[0], event_id=uuid.uuid4(), payload={"n": float("nan")})
    recorder = GroupCommit(ledger.record_many, ledger.record)
    outcomes: dict[uuid.UUID, object] = {}
    gate = threading.Event()

    def slow_many(envelopes):
        gate.wait(10)  # holds the first batch so the others queue up behind it
        return ledger.record_many(envelopes)

    recorder._write_many = slow_many  # type: ignore[method-assign]

    def send(envelope) -> None:
        try:
            outcomes[envelope.event_id] = recorder.submit(envelope)
        except Exception as exc:  # the one that fails is checked below
            outcomes[envelope.event_id] = exc

    threads = [threading.Thread(target=send, args=(e,)) for e in [good[0], bad, *good[1:]]]
    threads[0].start()
    while recorder.pending():
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
    while recorder.pending() < len(threads) - 1:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(30)

    assert isinstance(outcomes[bad.event_id], ValueError)
    assert sorted(outcomes[e.event_id] for e in good) == [1, 2, 3, 4]  # type: ignore[type-var]
    chain_is_whole(ledger, 4)


@pytest.mark.parametrize("size", [1, 7])
def test_batches_are_bounded(ledger, size):
    recorder = GroupCommit(ledger.record_many, ledger.record, max_batch=size)
    seen: list[int] = []
    many = ledger.record_many

    def counting(envelopes):
        seen.append(len(envelopes))
        return many(envelopes)

    recorder._write_many = counting  # type: ignore[method-assign]
    threads = [threading.Thread(target=recorder.submit, args=(e,)) for e in things(20, BASE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(seen) == 20 and max(seen) <= size
    chain_is_whole(ledger, 20)


def test_the_services_recorder_on_the_tenant_logs_gives_each_log_whole_and_each_event_once(
    ledger,
):
    """What the audit service runs since the switch: a group commit over ``ledger.logs``, with
    single appends beside it (another audit process), redeliveries, and events already in the
    frozen chain (recorded there before the switch, delivered again after it)."""
    tenants = [uuid.uuid4() for _ in range(3)]
    before_switch = mixed(6, tenants)
    assert None not in [ledger.record(e) for e in before_switch]  # the frozen chain
    recorder = GroupCommit(ledger.logs.record_many, ledger.logs.record)
    shared = mixed(30, tenants)
    own = [mixed(20, tenants) for _ in range(6)]
    results: list[list[tuple[uuid.UUID, int | None]]] = [[] for _ in own]

    def write(w: int) -> None:
        record = recorder.submit if w % 2 == 0 else ledger.logs.record
        for envelope in before_switch[w % 2 :: 2] + shared[w % 3 :: 3] + own[w]:
            results[w].append((envelope.event_id, record(envelope)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(len(own))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    won = [(eid, seq) for result in results for eid, seq in result if seq is not None]
    expected = {e.event_id for e in shared} | {e.event_id for batch in own for e in batch}
    assert {eid for eid, _ in won} == expected  # nothing of the frozen chain recorded again
    assert len(won) == len(expected)  # each event won exactly once
    assert recorder.pending() == 0
    with ledger.db.transaction() as cur:
        cur.execute(
            "SELECT tenant_id, array_agg(seq ORDER BY seq) FROM log_entries GROUP BY tenant_id"
        )
        per_log = dict(cur.fetchall())
    # Tenants' logs, and the nil tenant's for the events of none (mixed's third kind).
    assert set(tenants[:2]) | {chain.NIL_TENANT} == set(per_log)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in per_log.values())
    assert sum(len(seqs) for seqs in per_log.values()) == len(expected)
    ledger.logs.checkpoint()
    assert ledger.logs.verify_platform()["ok"] is True
    assert ledger.count() == len(expected) + len(before_switch)
