"""Erasure cost against the length of a subject's history: 10 events versus 10,000.

    .venv/bin/python -m bench.erasure

Builds a throwaway tickets store (a world of its own), gives requesters 10 events and 10,000
(tickets and messages), then times tickets' erasure of each: shredding one key and scrubbing
read models, never touching the events. Prints both and their ratio.
"""

from __future__ import annotations

import statistics
import time
import uuid

from bench.harness import infrastructure_from_env
from bench.history import new_requester, tickets_store, write_history
from kernel.testing import make_world
from kernel.uow import EventSourcedStore
from services.tickets import privacy


def erase_seconds(store: EventSourcedStore, tenant: str, subject: str) -> float:
    erase = privacy.handlers_for(store.cipher)["erase_subject"]
    started = time.perf_counter()
    with store.unit_of_work("retention") as uow:
        erase(uow, {"tenant_id": tenant, "subject_id": subject})
    return time.perf_counter() - started


def main() -> None:
    with make_world(infrastructure_from_env()) as settings:
        store = tickets_store(settings)
        tenant = str(uuid.uuid4())
        results = {}
        for size in (10, 10_000):
            timings = []
            for _ in range(3):
                subject = new_requester(store, tenant)
                write_history(store, tenant, subject, size)
                timings.append(erase_seconds(store, tenant, subject))
            results[size] = statistics.median(timings)
            print(
                f"erasure of a subject with {size:>6} events: {results[size] * 1000:8.1f} ms"
                " (median of 3)"
            )
        print(f"ratio 10,000 / 10: {results[10_000] / results[10]:.2f} (target: at most 1.5)")


if __name__ == "__main__":
    main()
