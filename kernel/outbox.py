"""The transactional outbox: a message leaves only if the transaction that made it commits."""

from __future__ import annotations

import json
from collections.abc import Sequence

import psycopg2.extras

from kernel.envelope import Envelope
from kernel.topology import EVENTS_EXCHANGE


def add(
    cur: psycopg2.extensions.cursor,
    envelopes: Sequence[Envelope],
    exchange: str = EVENTS_EXCHANGE,
) -> None:
    """Queue envelopes for the relay, in the caller's transaction.

    Called after the event append, so each stream's outbox ids follow its versions: a unit of
    work appends version n+1 only once version n has committed (or in the same transaction), and
    the relay's ``ORDER BY id`` keeps each stream's order. Ids of different streams commit out
    of order, which is why the relay reads every unpublished row, never after a mark.
    """
    if not envelopes:
        return
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO outbox (event_id, stream_id, exchange, routing_key, body) VALUES %s"
        " ON CONFLICT (event_id) DO NOTHING",
        [
            (e.event_id, e.stream_id, exchange, e.routing_key, json.dumps(e.to_dict()))
            for e in envelopes
        ],
    )


def pending_count(cur: psycopg2.extensions.cursor) -> int:
    """Messages not yet confirmed by the broker: the relay deletes the rows it published."""
    cur.execute("SELECT count(*) FROM outbox")
    return cur.fetchone()[0]
