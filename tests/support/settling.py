"""Waiting for the event store's catch-up horizon (``kernel.eventstore``) in tests.

A catch-up read returns only events below the oldest transaction still running on the server,
and other sessions (other tests, other people's) may hold it back a moment.
"""

from __future__ import annotations

import time

from kernel import eventstore
from kernel.uow import EventSourcedStore

# How long to wait for what must happen before giving up: a hang, not a timing.
PATIENCE = 120.0


def settled_now(store: EventSourcedStore) -> bool:
    """Whether a catch-up read begun now sees every event committed so far."""
    with store.db.connection() as conn:
        try:
            with conn.cursor() as cur:
                return eventstore.all_settled(cur)
        finally:
            conn.rollback()


def settle(store: EventSourcedStore) -> None:
    """Until a catch-up read sees every event committed so far."""
    deadline = time.monotonic() + PATIENCE
    while not settled_now(store):
        assert time.monotonic() < deadline, "the catch-up horizon never passed the appends"
        time.sleep(0.02)
