"""Projections: read models kept in step with the event store, and rebuilt from it by replay."""

from __future__ import annotations

import sys
from collections.abc import Callable

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

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        raise NotImplementedError

    def reset(self, cur: psycopg2.extensions.cursor) -> None:
        if self.tables:
            cur.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, self.tables)))
            )

    def handles(self, event: Envelope) -> bool:
        return event.type in self.event_types


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
        with bar:
            while True:
                batch = eventstore.read_all(cur, position, batch_size)
                if not batch:
                    break
                for _position, stored in batch:
                    if projection.handles(stored):
                        projection.apply(cur, prepare(stored))
                        applied += 1
                position = batch[-1][0]
                bar.update(position - bar.n)
        cur.execute(
            "INSERT INTO projection_state (name, position, rebuilt_at) VALUES (%s, %s, now())"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, rebuilt_at = now()",
            (projection.name, position),
        )
    return applied
