"""Section ``export``: a tenant's whole export on the running stack, its throughput and the
exporting process's memory.

Two tenants get tickets written through the tickets kernel into the stack's databases (each
ticket under a key of its own, with one message from its requester, as in life): a small one
(a tenth, at least 2,000: full pages of every kind) and a large one (100,000 tickets; 5,000
with ``--quick``). The running services
publish them and audit records every one before the clock starts, so the ledger part holds an
entry per event. Then each tenant's admin asks for its export and it is read until ready.

- Throughput: rows written into the archive per second of the build (the export's own
  ``started_at`` to ``ready_at``), against the floor of any export: the same rows read straight
  from the databases by one cursor per table and written as JSON lines into a ZIP in this
  process (no RPC, nothing opened, nothing sealed).
- Memory: the rise of retention's resident set (``/proc/<pid>/status``, sampled every 20 ms)
  from before the first export to the peak during each, the large tenant's against the small
  one's: flat in the tenant's size is a ratio near 1.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
import zipfile
from pathlib import Path

import orjson
import psycopg2

from bench.harness import Context, Row
from bench.history import tickets_store
from kernel.testing import queue_depth, wait_until
from kernel.uow import EventSourcedStore
from services.tickets.domain import Ticket

_PER_UNIT = 200  # tickets per unit of work while seeding


def seed(store: EventSourcedStore, tenant: str, tickets: int) -> None:
    """``tickets`` tickets of ``tenant``, a hundred per requester, each with one message."""
    requesters = [str(uuid.uuid4()) for _ in range(max(1, tickets // 100))]
    for start in range(0, tickets, _PER_UNIT):
        with store.unit_of_work(requesters[0]) as uow:
            for n in range(start, min(tickets, start + _PER_UNIT)):
                requester = requesters[n % len(requesters)]
                ticket = Ticket.create(
                    tenant_id=tenant,
                    requester_id=requester,
                    subject=f"order {n} has not arrived",
                    body="where is it? it was due on Monday and the tracking page says nothing",
                    priority="normal",
                    tags=["late", "courier"],
                    redactions=0,
                )
                ticket.add_message(
                    author_id=requester,
                    author_kind="requester",
                    body="and another thing: the box was damaged last time",
                    internal=False,
                    redactions=0,
                )
                uow.save(ticket, tenant)


def _settled(ctx: Context) -> bool:
    """Every tickets event published and every published event recorded by audit."""
    stack = ctx.stack()
    conn = psycopg2.connect(stack.settings.database_dsn("tickets"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM outbox")
            pending = cur.fetchone()[0]
    finally:
        conn.close()
    return pending == 0 and queue_depth(ctx.infrastructure, stack.settings, "audit.ledger") == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRss:
    """The highest resident set of a process while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = _rss_kib(pid)
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_kib(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _export(ctx: Context, key: str) -> dict:
    stack = ctx.stack()
    started = stack.call("POST", "/v1/tenant/exports", key=key)
    assert started.status_code == 202, started.text
    export_id = started.json()["id"]

    def ready() -> dict | None:
        body = stack.call("GET", f"/v1/tenant/exports/{export_id}", key=key).json()
        assert body["status"] in ("queued", "building", "ready"), body
        return body if body["status"] == "ready" else None

    return wait_until(ready, timeout=3600, interval=0.2, what="the export to be ready")


class _Discard:
    """A write-only stream that keeps nothing: the floor's archive goes nowhere."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_FLOOR = (
    ("accounts", "SELECT row_to_json(t)::text FROM contacts t WHERE tenant_id = %s"),
    ("accounts", "SELECT row_to_json(t)::text FROM agents t WHERE tenant_id = %s"),
    ("accounts", "SELECT row_to_json(t)::text FROM consents t WHERE tenant_id = %s"),
    ("tickets", "SELECT row_to_json(t)::text FROM tickets t WHERE tenant_id = %s"),
    ("tickets", "SELECT row_to_json(t)::text FROM ticket_messages t WHERE tenant_id = %s"),
    ("billing", "SELECT row_to_json(t)::text FROM invoices t WHERE tenant_id = %s"),
    ("audit", "SELECT seq, content FROM log_entries t WHERE tenant_id = %s ORDER BY seq"),
)


def plain_dump(ctx: Context, tenant: str) -> tuple[int, float]:
    """The floor: (rows, seconds) of reading the tenant's rows by one cursor per table and
    writing them as JSON lines into a ZIP, in this process."""
    settings = ctx.stack().settings
    rows = 0
    began = time.perf_counter()
    with zipfile.ZipFile(_Discard(), "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for n, (service, query) in enumerate(_FLOOR):
            conn = psycopg2.connect(settings.database_dsn(service))
            try:
                with (
                    conn,
                    conn.cursor(name="floor") as cur,
                    z.open(f"{n}.jsonl", "w", force_zip64=True) as out,
                ):
                    cur.itersize = 5000
                    cur.execute(query, (tenant,))
                    for row in cur:
                        line = (
                            row[0]
                            if len(row) == 1
                            else orjson.dumps(
                                {"seq": row[0], "content": bytes(row[1]).decode()}
                            ).decode()
                        )
                        out.write(line.encode() + b"\n")
                        rows += 1
            finally:
                conn.close()
    return rows, time.perf_counter() - began


def run(ctx: Context, sections: set[str]) -> list[Row]:
    large = 5_000 if ctx.quick else 100_000
    # At least two full pages of every kind, so both exports run at the same page size.
    small = max(large // 10, 2_000)
    stack = ctx.stack()
    tenants = {size: stack.sign_up() for size in (small, large)}
    store = tickets_store(stack.settings, prepare=False)
    try:
        for size, signed in tenants.items():
            seed(store, signed["tenant"]["id"], size)
    finally:
        store.db.close()
    wait_until(lambda: _settled(ctx), timeout=3600, interval=0.5, what="audit to catch up")

    pid = stack.processes["retention"].pid
    before = _rss_kib(pid)
    results: dict[int, tuple[dict, int]] = {}
    for size in (small, large):
        with PeakRss(pid) as rss:
            export = _export(ctx, tenants[size]["api_key"])
        results[size] = (export, rss.peak - before)

    def rate(export: dict) -> tuple[int, float]:
        seconds = (
            dt.datetime.fromisoformat(export["ready_at"])
            - dt.datetime.fromisoformat(export["started_at"])
        ).total_seconds()
        return sum(export["counts"].values()), seconds

    rows, seconds = rate(results[large][0])
    floor_rows, floor_seconds = plain_dump(ctx, tenants[large]["tenant"]["id"])
    large_rise, small_rise = results[large][1] / 1024, results[small][1] / 1024
    archive_mib = results[large][0]["bytes"] / 2**20
    return [
        Row(
            "export",
            f"tenant export throughput, {large:,} tickets ({rows:,} rows)",
            rows / seconds,
            "rows/s",
            floor_rows / floor_seconds,
            "one SQL cursor per table into a ZIP, nothing opened or sealed",
            "ratio >= 0.1",
            rows / seconds >= 0.1 * floor_rows / floor_seconds,
            note=f"{seconds:.1f} s to ready; archive {archive_mib:.1f} MiB",
        ),
        Row(
            "export",
            f"exporting process's peak RSS rise, {large:,} tickets",
            large_rise,
            "MiB",
            small_rise,
            f"the same for {small:,} tickets",
            "ratio <= 1.5 (flat in the tenant's size)",
            large_rise <= 1.5 * max(small_rise, 1.0),
            note=f"archive {archive_mib:.1f} MiB; retention's RSS before: {before / 1024:.0f} MiB",
        ),
    ]
