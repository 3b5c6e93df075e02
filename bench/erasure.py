"""Erasure cost against the length of a subject's history: 10 events versus 10,000.

    .venv/bin/python -m bench.erasure

Builds a throwaway tickets store (its own database prefix), gives one requester 10 events and
another 10,000 (tickets and messages), then times tickets' erasure of each: shredding one key
and scrubbing read models, never touching the events. Prints both and their ratio.
"""

from __future__ import annotations

import secrets
import statistics
import time
import uuid
from pathlib import Path

from kernel.config import Settings
from kernel.crypto import FieldCipher, Keystore
from kernel.db import Database, connect, drop_database
from kernel.nameko_adapters import prepare_databases
from kernel.uow import EventSourcedStore
from services.tickets import handlers, privacy
from services.tickets.events import REGISTRY
from services.tickets.projections import PROJECTIONS


def build(settings: Settings) -> EventSourcedStore:
    prepare_databases(settings, "tickets", Path("services/tickets/migrations"))
    keystore = Keystore(Database(settings.database_dsn("tickets", "keys")), settings.master_keys)
    return EventSourcedStore(
        "tickets",
        Database(settings.database_dsn("tickets")),
        REGISTRY,
        FieldCipher(keystore),
        PROJECTIONS,
    )


def history(store: EventSourcedStore, tenant: str, agent: str, events: int) -> str:
    requester = str(uuid.uuid4())
    with store.db.transaction() as cur:
        cur.execute(
            "INSERT INTO directory VALUES (%s, %s, 'contact', true, 1)", (requester, tenant)
        )

    def nobody(t, s):
        raise AssertionError("the directory knows everyone here")

    written, ticket = 0, None
    while written < events:
        if ticket is None or written % 100 == 0:
            with store.unit_of_work(agent) as uow:
                ticket = handlers.create_ticket(
                    uow,
                    nobody,
                    tenant,
                    {
                        "subject": "order",
                        "body": "where is it",
                        "requester_id": requester,
                        "priority": "normal",
                        "tags": [],
                    },
                )
        else:
            with store.unit_of_work(agent) as uow:
                handlers.add_message(
                    uow,
                    tenant,
                    ticket["id"],
                    agent,
                    {
                        "body": "and another thing",
                        "internal": False,
                        "on_behalf_of_requester": True,
                    },
                )
        written += 1
    return requester


def erase_seconds(store: EventSourcedStore, tenant: str, subject: str) -> float:
    erase = privacy.handlers_for(store.cipher)["erase_subject"]
    started = time.perf_counter()
    with store.unit_of_work("retention") as uow:
        erase(uow, {"tenant_id": tenant, "subject_id": subject})
    return time.perf_counter() - started


def main() -> None:
    base = Settings.from_env()
    settings = base.with_overrides(database_prefix="ldbench_" + secrets.token_hex(4))
    try:
        store = build(settings)
        tenant, agent = str(uuid.uuid4()), str(uuid.uuid4())
        results = {}
        for size in (10, 10_000):
            timings = []
            for _ in range(3):
                subject = history(store, tenant, agent, size)
                timings.append(erase_seconds(store, tenant, subject))
            results[size] = statistics.median(timings)
            print(
                f"erasure of a subject with {size:>6} events: {results[size] * 1000:8.1f} ms"
                " (median of 3)"
            )
        print(f"ratio 10,000 / 10: {results[10_000] / results[10]:.2f} (target: at most 1.5)")
    finally:
        conn = connect(base.database_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (settings.database_prefix + "%",),
            )
            names = [r[0] for r in cur.fetchall()]
        conn.close()
        for name in names:
            drop_database(base.database_url, name)


if __name__ == "__main__":
    main()
