"""Section 2: our event store against the ``eventsourcing`` library's PostgreSQL recorder.

Both run on the same PostgreSQL server, each in a database of its own, with the same workload
and payload bytes:

- appends: 4 writers, each running commands that append 1-10 events (a seeded random draw, the
  same draw for both) to a new or an existing stream of its own, one transaction per command;
- catch-up: one reader reads the whole store from the start in batches of 1,000, through each
  library's own catch-up API (ours builds ``Envelope`` objects, the peer ``Notification``).

The two take turns (rounds of appends, alternating who goes first; the reads batch by batch):
on a shared machine one minute can be several times slower than the next, and a store
measured whole before the other would be compared with another minute, not with the other
store. A whole read of 100,000 events takes seconds, long enough for the load to change under
it, so the two readers advance together, a batch each in turn, and each batch is timed alone.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from psycopg2.extensions import parse_dsn

from bench.harness import Context, Row
from kernel import eventstore, migrate
from kernel.db import Database, ensure_database
from kernel.envelope import Envelope, new_envelope

WRITERS = 4
BATCH = 1000  # events per catch-up read
PAYLOAD = {
    "subject": "order 1234 has not arrived",
    "body": "where is it? " * 8,
    "priority": "normal",
    "tags": ["shipping", "vip"],
}
TOPIC = "bench.events:TicketTouched"


def workload(writers: int, commands: int, seed: int = 9) -> list[list[tuple[int, int]]]:
    """Per writer, its commands as (stream index, events to append); -1 starts a new stream."""
    rng = random.Random(seed)
    plans = []
    for _ in range(writers):
        plan, streams = [], 0
        for _ in range(commands):
            if streams == 0 or rng.random() < 0.3:
                plan.append((-1, rng.randint(1, 10)))
                streams += 1
            else:
                plan.append((rng.randrange(streams), rng.randint(1, 10)))
        plans.append(plan)
    return plans


def _envelopes(stream: str, after: int, count: int, tenant: uuid.UUID) -> list[Envelope]:
    return [
        new_envelope(
            type="ticket_touched",
            schema_version=1,
            source="bench",
            stream_id=stream,
            stream_version=after + n,
            tenant_id=tenant,
            actor_id="bench",
            payload={**PAYLOAD, "n": after + n},
        )
        for n in range(1, count + 1)
    ]


class Ours:
    name = "ours"

    def __init__(self, dsn: str):
        migrate.migrate(dsn, [migrate.STORE])
        self.db = Database(dsn, maxconn=WRITERS + 1)
        self.tenant = uuid.uuid4()

    def new_stream(self) -> str:
        return f"Bench-{uuid.uuid4()}"

    def append(self, stream: str, after: int, count: int) -> None:
        envelopes = _envelopes(stream, after, count, self.tenant)
        with self.db.transaction() as cur:
            eventstore.append(cur, stream, after, envelopes)

    def catch_up(self) -> int:
        return sum(self.catch_up_batches())

    def catch_up_batches(self) -> Iterator[int]:
        """The whole store through ``iter_all``, pausing after each batch (its count)."""
        read = 0
        with self.db.transaction() as cur:
            # Whatever runs elsewhere on a shared server may hold the catch-up horizon back a
            # moment: the reader starts once it has passed every append, so it reads them all.
            while not eventstore.all_settled(cur):
                time.sleep(0.01)
            for _cursor, _envelope in eventstore.iter_all(cur, eventstore.START, BATCH):
                read += 1
                if read == BATCH:
                    yield read
                    read = 0
        yield read

    def close(self) -> None:
        self.db.close()


class Peer:
    name = "eventsourcing"

    def __init__(self, dsn: str):
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        params = parse_dsn(dsn)
        self.datastore = PostgresDatastore(
            dbname=params["dbname"],
            host=params.get("host", "127.0.0.1"),
            port=params.get("port", "5432"),
            user=params.get("user", "postgres"),
            password=params.get("password", ""),
            pool_size=WRITERS + 1,
        )
        self.recorder = PostgresApplicationRecorder(self.datastore)
        self.recorder.create_table()

    def new_stream(self) -> uuid.UUID:
        return uuid.uuid4()

    def append(self, stream: Any, after: int, count: int) -> None:
        from eventsourcing.persistence import StoredEvent

        self.recorder.insert_events(
            [
                StoredEvent(
                    originator_id=stream,
                    originator_version=after + n,
                    topic=TOPIC,
                    state=json.dumps({**PAYLOAD, "n": after + n}).encode(),
                )
                for n in range(1, count + 1)
            ]
        )

    def catch_up(self) -> int:
        return sum(self.catch_up_batches())

    def catch_up_batches(self) -> Iterator[int]:
        """The whole store through ``select_notifications``, pausing after each batch."""
        start = 0
        while True:
            batch = self.recorder.select_notifications(start, BATCH, inclusive_of_start=False)
            if not batch:
                return
            start = batch[-1].id
            yield len(batch)

    def close(self) -> None:
        self.datastore.close()


def _appends(store: Ours | Peer, plans: list[list[tuple[int, int]]]) -> tuple[int, float]:
    """Run every writer's plan at once; returns (events appended, seconds)."""
    counts = [0] * len(plans)

    def writer(n: int) -> None:
        streams: list[tuple[Any, int]] = []
        for index, count in plans[n]:
            if index < 0:
                streams.append((store.new_stream(), 0))
                index = len(streams) - 1
            stream, version = streams[index]
            store.append(stream, version, count)
            streams[index] = (stream, version + count)
            counts[n] += count

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(plans))]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - began


def _catch_ups(stores: list[Ours | Peer]) -> dict[str, tuple[int, float]]:
    """Both stores read whole, a batch each in turn (who goes first alternating); returns
    (events read, seconds) per store, the seconds being the sum of its own batches' times."""
    readers = {store.name: store.catch_up_batches() for store in stores}
    totals = {name: (0, 0.0) for name in readers}
    turn = 0
    while readers:
        names = list(readers) if turn % 2 == 0 else list(readers)[::-1]
        for name in names:
            began = time.perf_counter()
            try:
                count = next(readers[name])
            except StopIteration:
                count = 0
                del readers[name]
            read, seconds = totals[name]
            totals[name] = (read + count, seconds + time.perf_counter() - began)
        turn += 1
    return totals


def _fill(store: Ours | Peer, total: int, already: int) -> None:
    """Top the store up to ``total`` events in streams of 1,000 (not measured)."""
    left = total - already
    while left > 0:
        count = min(1000, left)
        store.append(store.new_stream(), 0, count)
        left -= count


def run(ctx: Context, sections: set[str]) -> list[Row]:
    rounds = 2 if ctx.quick else 4
    commands = 20 if ctx.quick else 100  # per writer and round
    catch_up_size = 10_000 if ctx.quick else 100_000
    settings = ctx.world()
    stores: list[Ours | Peer] = []
    for kind in (Ours, Peer):
        ensure_database(settings.database_url, settings.database_name(f"es_{kind.name}"))
        stores.append(kind(settings.database_dsn(f"es_{kind.name}")))
    totals = {
        store.name: {"appended": 0.0, "seconds": 0.0, "read": 0.0, "read_seconds": 0.0}
        for store in stores
    }
    try:
        # Rounds in turn, the first to go alternating, so neither store gets the quiet
        # minutes of a shared machine.
        for n in range(rounds):
            plans = workload(WRITERS, commands, seed=n)
            for store in stores if n % 2 == 0 else stores[::-1]:
                appended, seconds = _appends(store, plans)
                totals[store.name]["appended"] += appended
                totals[store.name]["seconds"] += seconds
        for store in stores:
            _fill(store, catch_up_size, int(totals[store.name]["appended"]))
        for _ in range(2):
            for name, (read, seconds) in _catch_ups(stores).items():
                assert read == catch_up_size, f"{name} read {read} of {catch_up_size}"
                totals[name]["read"] += read
                totals[name]["read_seconds"] += seconds
    finally:
        for store in stores:
            store.close()
    results = {
        name: {
            "append": t["appended"] / t["seconds"],
            "read": t["read"] / t["read_seconds"],
            "appended": t["appended"],
        }
        for name, t in totals.items()
    }
    ours, peer = results["ours"], results["eventsourcing"]
    size = (
        f"{WRITERS} writers x {rounds} rounds x {commands} commands of 1-10 events"
        f" ({int(ours['appended']):,}), rounds in turn"
    )
    return [
        Row(
            "eventstore",
            "append throughput",
            ours["append"],
            "events/s",
            peer["append"],
            "eventsourcing 9.5 PostgresApplicationRecorder",
            "ratio >= 1",
            ours["append"] >= peer["append"],
            size,
        ),
        Row(
            "eventstore",
            f"catch-up read of {catch_up_size:,} events",
            ours["read"],
            "events/s",
            peer["read"],
            "eventsourcing select_notifications",
            "ratio >= 1",
            ours["read"] >= peer["read"],
            "batches of 1,000, each timed, in turn; twice",
        ),
    ]
