"""Where the time goes: pyinstrument over the in-process parts of the measured paths.

    .venv/bin/python -m bench.profile ticket|append|read|rebuild|ledger|search [--size N]

- ``ticket``: tickets' unit of work for one created ticket (the service's share of the write
  path: directory check, validation, projection, encryption, append, outbox, commit);
- ``append`` and ``read``: the event store's appends (1-10 events each) and catch-up read;
- ``rebuild``: the tickets projection replayed from its store;
- ``ledger``: audit's ``Ledger.record`` one entry at a time, ``Ledger.record_many`` ten at a
  time, then ``Ledger.verify``;
- ``search``: tickets' ``search_tickets`` as the RPC runs it, over the search section's 300
  queries, in its world with N tickets in the tenant and 10 N in the database.

Each builds a throwaway world (its own databases) and prints pyinstrument's call tree, the
findings behind docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pyinstrument import Profiler

from bench import eventstore as es
from bench import search as bench_search
from bench.harness import infrastructure_from_env
from bench.history import new_requester, tickets_store, write_history
from kernel import eventstore
from kernel.config import Settings
from kernel.db import ensure_database
from kernel.stores import prepare_databases
from kernel.testing import make_world
from services.audit.ledger import open_ledger
from services.tickets import handlers

AUDIT_MIGRATIONS = Path(__file__).resolve().parent.parent / "services/audit/migrations"


def _profiled(label: str, count: int, work: Callable[[], object]) -> None:
    profiler = Profiler()
    began = time.perf_counter()
    profiler.start()
    work()
    profiler.stop()
    print(f"{label}: {count / (time.perf_counter() - began):,.0f}/s")
    print(profiler.output_text(unicode=False, color=False))


def ticket(settings: Settings, size: int) -> None:
    store = tickets_store(settings)
    tenant = str(uuid.uuid4())
    requester = new_requester(store, tenant)
    command = {
        "subject": "order 1234 has not arrived",
        "body": "where is it?",
        "requester_id": requester,
        "priority": "normal",
        "tags": [],
    }

    def unknown(tenant_id: str, subject_id: str) -> dict:
        raise AssertionError("the directory knows the requester")

    def work() -> None:
        for _ in range(size):
            with store.unit_of_work(requester) as uow:
                handlers.create_ticket(uow, unknown, tenant, command)

    _profiled("tickets created", size, work)


def append(settings: Settings, size: int) -> None:
    ensure_database(settings.database_url, settings.database_name("es_ours"))
    store = es.Ours(settings.database_dsn("es_ours"))
    plan = es.workload(1, size)
    _profiled("appends", size, lambda: es._appends(store, plan))


def read(settings: Settings, size: int) -> None:
    ensure_database(settings.database_url, settings.database_name("es_ours"))
    store = es.Ours(settings.database_dsn("es_ours"))
    es._fill(store, size, 0)
    _profiled("events read", size, store.catch_up)


def rebuild(settings: Settings, size: int) -> None:
    store = tickets_store(settings)
    tenant = str(uuid.uuid4())
    for _ in range(max(1, size // 100)):
        write_history(store, tenant, new_requester(store, tenant), 100)
    _profiled("events replayed", size, lambda: store.rebuild("tickets", progress=False))


def ledger(settings: Settings, size: int) -> None:
    store = tickets_store(settings)
    tenant = str(uuid.uuid4())
    for _ in range(max(1, size // 100)):
        write_history(store, tenant, new_requester(store, tenant), 100)
    prepare_databases(settings, "audit", AUDIT_MIGRATIONS)
    book = open_ledger(settings)
    with store.db.transaction() as cur:
        sample = [e for _, e in eventstore.read_all(cur, limit=size, settled=False)]
    # Half one per transaction, half in batches of ten (what audit's consumer, which holds up
    # to ten unacknowledged messages, hands its group recorder when it is behind).
    single, grouped = sample[: len(sample) // 2], sample[len(sample) // 2 :]
    _profiled("entries recorded one by one", len(single), lambda: [book.record(e) for e in single])
    _profiled(
        "entries recorded in batches of 10",
        len(grouped),
        lambda: [book.record_many(grouped[i : i + 10]) for i in range(0, len(grouped), 10)],
    )
    book.checkpoint()
    _profiled("entries verified", len(sample), book.verify)


def search(settings: Settings, size: int) -> None:
    plan = bench_search.Size(size, 10 * size, 300)
    texts, queries = plan.texts_and_queries()
    built = bench_search.build(settings, texts, plan.database)
    actor = {"tenant_id": built.tenant, "agent_id": str(uuid.uuid4()), "role": "agent"}
    for _, q in queries[: bench_search.WARM_UP]:
        bench_search.our_search(built.store, actor, q)
    timed = [q for _, q in queries[bench_search.WARM_UP :]]
    _profiled(
        "searches",
        len(timed),
        lambda: [bench_search.our_search(built.store, actor, q) for q in timed],
    )


TARGETS = {
    "ticket": ticket,
    "append": append,
    "read": read,
    "rebuild": rebuild,
    "ledger": ledger,
    "search": search,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args(argv)
    random.seed(9)
    with make_world(infrastructure_from_env(), LEDGERDESK_KEY_CACHE_SECONDS="30") as settings:
        TARGETS[args.target](settings, args.size)


if __name__ == "__main__":
    main()
