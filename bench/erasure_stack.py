"""Section 4: full erasure across every service, against the length of the subject's history.

On the running stack: a contact (created through the gateway, so accounts and tickets know
them) gets a history of 10, 1,000 or 10,000 events (tickets they raised, messages they wrote),
written through the tickets kernel into the stack's tickets databases; the running service's
relay publishes them and audit records every one before the clock starts. Then an admin files
an erasure request and the request is read until it is ``completed``. The time is the
request's own: ``completed_at - created_at``, stamped by retention, so polling adds nothing.

``python -m bench.erasure`` is the narrower measurement (tickets' handler alone, in process).
"""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg2

from bench.harness import Context, Row, percentile
from bench.history import tickets_store, write_history
from kernel.testing import queue_depth, wait_until


def _settled(ctx: Context) -> bool:
    """Every tickets event published and every published event recorded by audit."""
    stack = ctx.stack()
    conn = psycopg2.connect(stack.settings.database_dsn("tickets"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM outbox")  # the relay deletes what it published
            pending = cur.fetchone()[0]
    finally:
        conn.close()
    return pending == 0 and queue_depth(ctx.infrastructure, stack.settings, "audit.ledger") == 0


def _contact(ctx: Context, key: str) -> str:
    stack = ctx.stack()
    response = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": "Erasure Subject", "email": f"erase.{uuid.uuid4().hex[:8]}@example.com"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _erase(ctx: Context, key: str, contact_id: str) -> float:
    stack = ctx.stack()
    filed = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key,
        json={"type": "erasure", "subject": {"contact_id": contact_id}},
    )
    assert filed.status_code in (200, 202), filed.text
    request_id = filed.json()["id"]

    def finished() -> dict | None:
        body = stack.call("GET", f"/v1/privacy/requests/{request_id}", key=key).json()
        return body if body["status"] != "pending" else None

    done = wait_until(finished, timeout=120, interval=0.1, what="the erasure to complete")
    assert done["status"] == "completed", done
    took = dt.datetime.fromisoformat(done["completed_at"]) - dt.datetime.fromisoformat(
        done["created_at"]
    )
    return took.total_seconds()


def run(ctx: Context, sections: set[str]) -> list[Row]:
    sizes = (10, 100, 1_000) if ctx.quick else (10, 1_000, 10_000)
    repeats = 2
    stack = ctx.stack()
    signed = stack.sign_up()
    key, tenant = signed["api_key"], signed["tenant"]["id"]
    store = tickets_store(stack.settings, prepare=False)
    subjects: dict[int, list[str]] = {size: [] for size in sizes}
    for size in sizes:
        for _ in range(repeats):
            contact = _contact(ctx, key)
            write_history(store, tenant, contact, size)
            subjects[size].append(contact)
    store.db.close()
    wait_until(lambda: _settled(ctx), timeout=600, interval=0.5, what="audit to catch up")

    timings: dict[int, list[float]] = {size: [] for size in sizes}
    # Interleaved, so a noisy minute on the machine does not land on one size only.
    for n in range(repeats):
        for size in sizes:
            timings[size].append(_erase(ctx, key, subjects[size][n]))

    small, large = sizes[0], sizes[-1]
    rows = [
        Row(
            "erasure",
            f"time to completed, {size:,} events (p99 of {repeats})",
            percentile(timings[size], 99) * 1000,
            "ms",
            target="p99 < 2 s",
            met=percentile(timings[size], 99) < 2.0,
            note=f"median {percentile(timings[size], 50) * 1000:.0f} ms; every service answers",
        )
        for size in sizes
    ]
    large_median = percentile(timings[large], 50)
    small_median = percentile(timings[small], 50)
    rows.append(
        Row(
            "erasure",
            f"{large:,} / {small} events (medians)",
            large_median * 1000,
            "ms",
            small_median * 1000,
            f"{small} events",
            "ratio <= 1.5",
            large_median / small_median <= 1.5,
        )
    )
    return rows
