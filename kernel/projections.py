"""Projections: read models kept in step with the event store, and rebuilt from it by replay."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import psycopg2
from psycopg2 import sql
from tqdm import tqdm

from kernel import eventstore
from kernel.db import Database
from kernel.envelope import Envelope


class Projection:
    """A read model. Subclasses name their tables and apply events with plaintext payloads.

    ``apply`` runs in the transaction that appends the event, so the read model is never behind
    the store; ``rebuild`` replays the whole store into emptied tables.
    """

    name: str = ""
    tables: tuple[str, ...] = ()
    event_types: frozenset[str] = frozenset()
    # True: ``apply`` receives personal fields as stored, still encrypted, and the read model
    # keeps them so (readers open them with the service's cipher). Such a read model never holds
    # plaintext, so erasing a subject is one key shred, whatever the length of its history.
    ciphertext: bool = False

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        raise NotImplementedError

    def reset(self, cur: psycopg2.extensions.cursor) -> None:
        if self.tables:
            cur.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, self.tables)))
            )

    def handles(self, event: Envelope) -> bool:
        return event.type in self.event_types

    def apply_batch(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        """Replay's way in: ``events`` in store order, each one the projection handles.

        One by one through ``apply`` unless a projection knows better: an override may write a
        batch in fewer statements, provided it leaves the read model exactly as ``apply`` one
        event at a time would.
        """
        for event in events:
            self.apply(cur, event)


class _BatchedWrites:
    """The cursor a projection replays into: its statements go to the server in batches.

    Replay applies every event with a statement or two, and one round trip each was most of its
    time. Queued statements are sent joined as one; touching anything but ``execute`` (a fetch,
    ``rowcount``) sends the queue first, so what it reads is the last statement's result, as
    it would be unbatched. An error surfaces at the batch, and the rebuild rolls back whole.
    """

    def __init__(self, cur: psycopg2.extensions.cursor, limit: int = 500):
        self._cur = cur
        self._limit = limit
        self._queued: list[bytes] = []

    def execute(self, query: Any, params: Any = None) -> None:
        self._queued.append(self._cur.mogrify(query, params))
        if len(self._queued) >= self._limit:
            self.flush()

    def flush(self) -> None:
        if self._queued:
            self._cur.execute(b";\n".join(self._queued))
            self._queued.clear()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._cur, name)


def rebuild(
    db: Database,
    projection: Projection,
    prepare: Callable[[Envelope], Envelope],
    progress: bool | None = None,
    batch_size: int = 2000,
) -> int:
    """Empty the projection and replay every event into it, in one transaction.

    ``prepare`` decrypts and upcasts each stored event (erased fields read as erased, so replay
    goes on past shredded subjects). TRUNCATE's lock makes readers wait for the commit, so
    none sees a half-built read model.
    Returns the number of events applied.
    """
    show = sys.stderr.isatty() if progress is None else progress
    applied = 0
    with db.transaction() as cur:
        projection.reset(cur)
        total = eventstore.head_position(cur)
        bar = tqdm(total=total, desc=f"rebuild {projection.name}", unit="ev", disable=not show)
        position = 0
        batched = _BatchedWrites(cur)
        # A projection sees a cursor: the batching is replay's business, not the projection's.
        writes = cast(psycopg2.extensions.cursor, batched)
        with bar:
            while True:
                batch = eventstore.read_all(cur, position, batch_size)
                if not batch:
                    break
                events = [prepare(stored) for _, stored in batch if projection.handles(stored)]
                projection.apply_batch(writes, events)
                applied += len(events)
                position = batch[-1][0]
                batched.flush()
                bar.update(position - bar.n)
        cur.execute(
            "INSERT INTO projection_state (name, position, rebuilt_at) VALUES (%s, %s, now())"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, rebuilt_at = now()",
            (projection.name, position),
        )
    return applied
