"""Sections 1 and 3: the write path through the gateway, its raw floor, and fan-out to audit.

Ours: N concurrent HTTP clients create tickets through the gateway. Each request authenticates
from the gateway's credentials projection, creates the ticket by RPC (event append, projection
and outbox in one transaction), the relay publishes it with confirms, and audit records it in
the ledger; the gateway writes an access-log event for the ledger too.

The raw floor: one process doing, per request, what the platform's own work comes down to,
with nothing in between: the same transaction in psycopg2 (events lock, version check, event
insert, read-model insert, outbox insert) and one pika publish waiting for its confirm. Beside
it the batching-relay floor: the same transaction from four threads and one relay publishing
the outbox in batches, one wait for a batch's confirms (the platform's own design, nothing else).

Fan-out: the ledger stamps ``recorded_at`` when it records an entry, and the entry keeps the
event's ``occurred_at``, so append-to-ledger latency is read from the ledger after the run:
no probe adds load while it is measured.

Cost (section "cost"): around the full-load run, what each ticket costs every process in CPU,
the broker in messages and the databases in transactions (bench/cost.py).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import amqp
import kombu
import pika
import psycopg2

from bench import cost
from bench.harness import Context, Row, cores, percentile
from kernel.stores import prepare_databases
from kernel.testing import wait_until

# Issue 19's targets: a third of the one-process raw floor through the whole platform (the floor
# does one transaction and one publish; a ticket crosses four processes and two databases).
FLOOR_RATIO_TARGET = 0.33
IDLE_SECONDS = 5.0  # the idle stack's counters, to judge what the settling time adds
TICKET = {"subject": "order 1234 has not arrived", "body": "where is it?", "priority": "normal"}


def _tenant(ctx: Context) -> tuple[str, str, str]:
    """A new tenant, its admin's key and a contact that tickets already knows."""
    stack = ctx.stack()
    signed = stack.sign_up()
    key = signed["api_key"]
    contact = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": "Bench Contact", "email": f"bench.{uuid.uuid4().hex[:8]}@example.com"},
    )
    assert contact.status_code == 201, contact.text
    contact_id = contact.json()["id"]
    conn = psycopg2.connect(stack.settings.database_dsn("tickets"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:

            def known() -> bool:
                cur.execute("SELECT 1 FROM directory WHERE subject_id = %s", (contact_id,))
                return cur.fetchone() is not None

            wait_until(known, timeout=60, what="tickets to learn of the contact")
    finally:
        conn.close()
    return signed["tenant"]["id"], key, contact_id


def _client_loop(
    url: str,
    key: str,
    body: dict[str, Any],
    until: float,
    latencies: list[float],
    errors: list[int],
    schedule: list[float] | None = None,
) -> None:
    """Create tickets until ``until``: back to back, or at the times in ``schedule``.

    With a schedule, latency counts from the planned send time, so a request delayed by a
    slow predecessor is charged its wait (no coordinated omission).

    The client is the standard library's, on one kept-alive connection, with the request's
    bytes built once: the load generator shares the machine's cores with what it measures, and
    ``requests`` cost about four times its CPU per request (docs/performance.md).
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    payload = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    planned = iter(schedule) if schedule is not None else None
    try:
        while True:
            if planned is not None:
                start = next(planned, None)
                if start is None:
                    return
                delay = start - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            else:
                start = time.perf_counter()
                if start >= until:
                    return
            try:
                connection.request("POST", "/v1/tickets", payload, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()  # the next request opens a new connection
                status = 0
            done = time.perf_counter()
            if status == 201:
                latencies.append(done - start)
            else:
                errors.append(status)
    finally:
        connection.close()


def _load(
    url: str, key: str, contact_id: str, clients: int, seconds: float, rate: float | None
) -> tuple[list[float], list[int], float]:
    body = {**TICKET, "requester_id": contact_id}
    latencies: list[float] = []
    errors: list[int] = []
    began = time.perf_counter()
    until = began + seconds
    schedules: list[list[float] | None] = [None] * clients
    if rate is not None:
        interval = 1.0 / rate
        times = [began + i * interval for i in range(int(seconds * rate))]
        schedules = [times[n::clients] for n in range(clients)]
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(url, key, body, until, latencies, errors, schedules[n]),
            daemon=True,
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - began


# --- the raw floor ------------------------------------------------------------------------------


def _floor_world(ctx: Context, name: str) -> tuple[Any, str]:
    settings = ctx.world()
    prepare_databases(settings, name, Path("services/tickets/migrations"))
    return settings, settings.database_dsn(name)


def _floor_transaction(conn: Any, tenant: str, requester: str, exchange: str) -> str:
    """The platform's own work for one ticket, in one transaction: events lock, version check,
    event, read-model row, outbox row. Returns the message body."""
    ticket, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    stream = f"Ticket-{ticket}"
    payload = {**TICKET, "ticket_id": ticket, "tenant_id": tenant, "tags": []}
    body = json.dumps({"event_id": event_id, "type": "ticket_created", "payload": payload})
    with conn.cursor() as cur:
        # The design the platform was measured against, kept as the floor: appends take no
        # table lock since store migration 0003 (bench/esappends.py compares the two).
        cur.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        cur.execute(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = %s",
            (stream,),
        )
        cur.fetchone()
        cur.execute(
            "INSERT INTO events (event_id, type, schema_version, source, stream_id,"
            " stream_version, tenant_id, occurred_at, actor_id, payload)"
            " VALUES (%s, 'ticket_created', 1, 'tickets', %s, 1, %s, now(), %s, %s)",
            (event_id, stream, tenant, requester, json.dumps(payload)),
        )
        cur.execute(
            "INSERT INTO tickets (id, tenant_id, requester_id, subject, body, status,"
            " priority, version, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, 'new', 'normal', 1, now(), now())",
            (ticket, tenant, requester, TICKET["subject"], TICKET["body"]),
        )
        cur.execute(
            "INSERT INTO outbox (event_id, stream_id, exchange, routing_key, body)"
            " VALUES (%s, %s, %s, 'tickets.ticket_created', %s)",
            (event_id, stream, exchange, body),
        )
    conn.commit()
    return body


def _declare_floor_queue(channel: Any, name: str) -> None:
    channel.exchange_declare(name, "topic", durable=True)
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(name, name, "#")


def _raw_floor(ctx: Context, seconds: float) -> float:
    """Requests per second of one process doing the same transaction and one confirmed publish."""
    settings, dsn = _floor_world(ctx, "floor")
    conn = psycopg2.connect(dsn)
    broker = pika.BlockingConnection(pika.URLParameters(settings.amqp_uri))
    channel = broker.channel()
    _declare_floor_queue(channel, "bench.floor")
    channel.confirm_delivery()
    tenant, requester = str(uuid.uuid4()), str(uuid.uuid4())
    done = 0
    until = time.perf_counter() + seconds
    began = time.perf_counter()
    try:
        while time.perf_counter() < until:
            body = _floor_transaction(conn, tenant, requester, "bench.floor")
            channel.basic_publish(
                "bench.floor",
                "tickets.ticket_created",
                body.encode(),
                pika.BasicProperties(content_type="application/json", delivery_mode=2),
                mandatory=True,
            )
            done += 1
    finally:
        broker.close()
        conn.close()
    return done / (time.perf_counter() - began)


RELAY_FLOOR_WRITERS = 4
RELAY_FLOOR_BATCH = 500


def _relay_floor(ctx: Context, seconds: float) -> tuple[float, int]:
    """Tickets per second through the same transaction from ``RELAY_FLOOR_WRITERS`` threads, and
    one relay thread that reads the outbox in batches, publishes a batch, waits for all its
    confirms at once and deletes its rows: the platform's design with nothing else in the way.
    Counted are rows confirmed and deleted in the window; also returned, the rows still waiting
    in the outbox at its end (many: the relay bounds it; few: the writers do)."""
    settings, dsn = _floor_world(ctx, "relayfloor")
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        conn = psycopg2.connect(dsn)
        tenant, requester = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            while not stop.is_set():
                _floor_transaction(conn, tenant, requester, "bench.relayfloor")
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failures.append(exc)
        finally:
            conn.close()

    conn = psycopg2.connect(dsn)
    broker = pika.BlockingConnection(pika.URLParameters(settings.amqp_uri))
    channel = broker.channel()
    _declare_floor_queue(channel, "bench.relayfloor")
    broker.close()
    # py-amqp, as the platform's relay: pika's blocking channel waits for each confirm.
    link = kombu.Connection(settings.amqp_uri, connect_timeout=5)
    link.connect()
    publisher: amqp.Connection = link.connection
    confirm = publisher.channel()
    confirm.confirm_select()
    acked = [0]
    confirm.events["basic_ack"].add(lambda tag, multiple: acked.__setitem__(0, tag))
    writers = [threading.Thread(target=write, daemon=True) for _ in range(RELAY_FLOOR_WRITERS)]
    published = relayed = 0
    began = time.perf_counter()
    for writer in writers:
        writer.start()
    try:
        while time.perf_counter() - began < seconds:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT id, routing_key, body FROM outbox ORDER BY id LIMIT %s",
                    (RELAY_FLOOR_BATCH,),
                )
                batch = cur.fetchall()
            conn.commit()
            if not batch:
                time.sleep(0.001)
                continue
            for _id, routing_key, body in batch:
                message = amqp.Message(body, content_type="application/json", delivery_mode=2)
                confirm.basic_publish(message, "bench.relayfloor", routing_key, mandatory=True)
            published += len(batch)
            while acked[0] < published:
                publisher.drain_events(timeout=30)
            with conn.cursor() as cur:
                cur.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([b[0] for b in batch],))
            conn.commit()
            relayed += len(batch)
        elapsed = time.perf_counter() - began
        stop.set()
        for writer in writers:
            writer.join()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM outbox")
            (waiting,) = cur.fetchone()
    finally:
        stop.set()
        link.release()
        conn.close()
    if failures:
        raise failures[0]
    return relayed / elapsed, waiting


# --- fan-out ------------------------------------------------------------------------------------


def _recorded(ctx: Context, tenant_id: str, expected: int) -> None:
    """Wait until audit's ledger holds ``expected`` of the tenant's tickets."""
    conn = psycopg2.connect(ctx.stack().settings.database_dsn("audit"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:

            def recorded() -> bool:
                cur.execute(
                    "SELECT count(*) FROM ledger_entries_all"
                    " WHERE type = 'ticket_created' AND tenant_id = %s",
                    (tenant_id,),
                )
                return cur.fetchone()[0] >= expected

            wait_until(recorded, timeout=300, interval=0.05, what="audit to record every ticket")
    finally:
        conn.close()


def _fanout(ctx: Context, tenant_id: str, since: dt.datetime) -> list[float]:
    """Seconds from each ticket's append (since ``since``) to its ledger entry, once every
    ticket the tenant has is recorded."""
    _recorded(ctx, tenant_id, _ticket_count(ctx, tenant_id))
    conn = psycopg2.connect(ctx.stack().settings.database_dsn("audit"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT extract(epoch FROM recorded_at - at) FROM ledger_entries_all"
                " WHERE type = 'ticket_created' AND tenant_id = %s AND at >= %s",
                (tenant_id, since),
            )
            return [float(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def run(ctx: Context, sections: set[str]) -> list[Row]:
    seconds = 4.0 if ctx.quick else 20.0
    paced_seconds = 3.0 if ctx.quick else 15.0
    clients = 4 if ctx.quick else 16
    stack = ctx.stack()
    rows: list[Row] = []
    size = f"{clients} clients, {seconds:.0f} s"

    full_tenant, key, contact = _tenant(ctx)
    half_tenant, half_key, half_contact = _tenant(ctx)
    # A short warm-up: connections, worker pools and caches are not what is measured.
    _load(stack.url, key, contact, clients, 1.0, None)
    warmed = time.perf_counter()
    # The floor runs in a world of its own, so it is also the stack's quiet time before the
    # cost counters are read (bench/cost.py: they lag by up to SETTLE seconds).
    floor = _raw_floor(ctx, seconds=min(seconds, 10.0))
    relay_floor, relay_waiting = _relay_floor(ctx, seconds=min(seconds, 10.0))
    meter = cost.CostMeter(stack, ctx.infrastructure) if "cost" in sections else None
    cost_rows: list[Row] = []
    if meter is not None:
        known = _ticket_count(ctx, full_tenant)
        _recorded(ctx, full_tenant, known)
        # (a second more for audit, which records the warm-up's last tickets after it ends)
        time.sleep(max(0.0, cost.SETTLE + 1.0 - (time.perf_counter() - warmed)))
        counted_from = meter.counters()
        cpu_from = meter.cpu()
    measured_from = dt.datetime.now(dt.UTC)
    latencies, errors, elapsed = _load(stack.url, key, contact, clients, seconds, None)
    throughput = len(latencies) / elapsed
    if meter is not None:
        # Until audit has recorded the last ticket: the work a ticket causes is all counted.
        made = _ticket_count(ctx, full_tenant)
        _recorded(ctx, full_tenant, made)
        cpu_to = meter.cpu()
        time.sleep(cost.SETTLE)
        counted_to = meter.counters()
        idle = None
        if not ctx.quick:  # (a quick run spares the time)
            time.sleep(IDLE_SECONDS)
            idle = (counted_to, meter.counters())
        tickets = made - known
        busy = os.getloadavg()[0]
        cost_rows += cost.cpu_rows(
            cpu_from,
            cpu_to,
            tickets,
            f"audit caught up {cpu_to.at - cpu_from.at - elapsed:.1f} s after the load;"
            f" load average {busy:.1f} on {cores()} cores (PostgreSQL's and RabbitMQ's"
            " whole-server rows include anything else this machine ran)",
        )
        cost_rows += cost.counter_rows(counted_from, counted_to, tickets, idle)
    half = throughput / 2
    paced_from = dt.datetime.now(dt.UTC)
    paced, paced_errors, _ = _load(stack.url, half_key, half_contact, clients, paced_seconds, half)

    if "write" in sections:
        rows += [
            Row(
                "write",
                "throughput (tickets/s)",
                throughput,
                "req/s",
                floor,
                "raw floor: psycopg2 tx + confirmed pika publish, 1 process",
                f"ratio >= {FLOOR_RATIO_TARGET}",
                throughput / floor >= FLOOR_RATIO_TARGET,
                f"{size}; {len(errors)} errors",
            ),
            Row(
                "write",
                "throughput (tickets/s) against the batching-relay floor",
                throughput,
                "req/s",
                relay_floor,
                f"batching-relay floor: {RELAY_FLOOR_WRITERS} writers + one relay,"
                " confirms waited once a batch",
                note=f"the same run; {relay_waiting} rows left unpublished at the floor's end",
            ),
            Row("write", "p50 latency at max", percentile(latencies, 50) * 1000, "ms", note=size),
            Row("write", "p95 latency at max", percentile(latencies, 95) * 1000, "ms", note=size),
            Row("write", "p99 latency at max", percentile(latencies, 99) * 1000, "ms", note=size),
            Row(
                "write",
                f"p99 latency at half max ({half:.0f}/s)",
                percentile(paced, 99) * 1000,
                "ms",
                target="< 50 ms",
                met=percentile(paced, 99) < 0.05,
                note=f"open loop, {paced_seconds:.0f} s; p50 {percentile(paced, 50) * 1000:.1f}"
                f" ms; {len(paced_errors)} errors",
            ),
        ]
    if "fanout" in sections:
        full = _fanout(ctx, full_tenant, measured_from)
        at_half = _fanout(ctx, half_tenant, paced_from)
        for label, values in (("at max load", full), ("at half load", at_half)):
            p99 = percentile(values, 99)
            rows += [
                Row("fanout", f"append to ledger p50 {label}", percentile(values, 50) * 1000, "ms"),
                Row(
                    "fanout",
                    f"append to ledger p99 {label}",
                    p99 * 1000,
                    "ms",
                    target="< 100 ms" if label == "at max load" else "",
                    met=p99 < 0.1 if label == "at max load" else None,
                ),
            ]
    return rows + cost_rows


def _ticket_count(ctx: Context, tenant_id: str) -> int:
    conn = psycopg2.connect(ctx.stack().settings.database_dsn("tickets"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tickets WHERE tenant_id = %s", (tenant_id,))
            return cur.fetchone()[0]
    finally:
        conn.close()
