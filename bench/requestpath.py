"""The request path beyond writes: a read-mostly mix, one client at a time, revocation's delay.

- mix: N clients (as many as the write run's), each sending, in a cycle of five, four reads
  (a ticket with its messages, a contact, alternating) and one new ticket; throughput and
  latency over all requests, the reads' and writes' own in the notes.
- single: one client, one kept-alive connection, the requests taking turns so that each kind
  sees the same minutes: ``/healthz`` (no authentication, no RPC: the framework's floor), an
  authenticated read of one contact, a list of 20 tickets and a new ticket; medians, and the
  authenticated read over ``/healthz``.
- revocation: an admin erases an agent through a data-subject request; accounts deactivates the
  agent as part of it. From that ``agent_deactivated`` event's ``occurred_at`` to the send time
  of the first request with the agent's key the gateway refuses (401), four pollers each sending
  every 20 ms, staggered (a request every ~5 ms). Erasure is a revocation from elsewhere than
  the gateway's own requests: the delay is how long the gateway keeps accepting a key whose
  agent accounts has already deactivated. ``occurred_at`` is stamped when the event is recorded,
  before the rest of the erasure's unit of work (the subject's key shredded, read models
  scrubbed) and its commit, so with authentication by RPC the figure is that remainder plus the
  polling's granularity, not zero. (A tenant destroyed by schedule is the other such path; it
  is not measured here: its timer runs after a grace period of days.)
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg2

from bench.harness import Context, Row, percentile
from bench.writepath import TICKET, _tenant
from kernel.testing import wait_until


class Client:
    """One kept-alive connection, the standard library's (the load generator shares the cores
    with what it measures: see bench/writepath.py)."""

    def __init__(self, url: str, key: str | None) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=30
        )
        self.headers = {"Content-Type": "application/json"}
        if key is not None:
            self.headers["Authorization"] = f"Bearer {key}"

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            self.connection.request(method, path, body, self.headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()  # the next request opens a new connection
            return 0, b""

    def close(self) -> None:
        self.connection.close()


def _tickets(url: str, key: str, contact: str, count: int) -> list[str]:
    client = Client(url, key)
    payload = json.dumps({**TICKET, "requester_id": contact}).encode()
    ids = []
    try:
        for _ in range(count):
            status, body = client.send("POST", "/v1/tickets", payload)
            assert status == 201, body
            ids.append(json.loads(body)["id"])
    finally:
        client.close()
    return ids


# --- the read-mostly mix ------------------------------------------------------------------------


def _mix(ctx: Context, clients: int, seconds: float) -> list[Row]:
    stack = ctx.stack()
    _, key, contact = _tenant(ctx)
    tickets = _tickets(stack.url, key, contact, 20)
    payload = json.dumps({**TICKET, "requester_id": contact}).encode()
    reads: list[float] = []
    writes: list[float] = []
    errors: list[int] = []

    def loop(n: int, until: float) -> None:
        client = Client(stack.url, key)
        step = n  # the clients start at different points of the cycle
        try:
            while (start := time.perf_counter()) < until:
                if step % 5 == 4:
                    status, _ = client.send("POST", "/v1/tickets", payload)
                    ok, into = status == 201, writes
                elif step % 2 == 0:
                    ticket = tickets[step % len(tickets)]
                    status, _ = client.send("GET", f"/v1/tickets/{ticket}")
                    ok, into = status == 200, reads
                else:
                    status, _ = client.send("GET", f"/v1/contacts/{contact}")
                    ok, into = status == 200, reads
                if ok:
                    into.append(time.perf_counter() - start)
                else:
                    errors.append(status)
                step += 1
        finally:
            client.close()

    def load(duration: float) -> float:
        began = time.perf_counter()
        threads = [
            threading.Thread(target=loop, args=(n, began + duration), daemon=True)
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - began

    load(1.0)  # warm-up, as the write run's
    for measured in (reads, writes, errors):
        measured.clear()
    elapsed = load(seconds)
    both = reads + writes
    size = f"{clients} clients, {seconds:.0f} s, 80 % reads"

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f}"

    return [
        Row(
            "mix",
            "throughput (requests/s)",
            len(both) / elapsed,
            "req/s",
            note=f"{size}; {len(reads) / elapsed:.1f} reads/s, {len(writes) / elapsed:.1f}"
            f" tickets/s; {len(errors)} errors",
        ),
        Row(
            "mix",
            "p50 latency",
            percentile(both, 50) * 1000,
            "ms",
            note=f"reads {ms(reads, 50)} ms, writes {ms(writes, 50)} ms",
        ),
        Row(
            "mix",
            "p99 latency",
            percentile(both, 99) * 1000,
            "ms",
            note=f"reads {ms(reads, 99)} ms, writes {ms(writes, 99)} ms",
        ),
    ]


# --- one client at a time -----------------------------------------------------------------------


def _single(ctx: Context, calls: int) -> list[Row]:
    stack = ctx.stack()
    _, key, contact = _tenant(ctx)
    _tickets(stack.url, key, contact, 20)  # a full page to list
    payload = json.dumps({**TICKET, "requester_id": contact}).encode()
    kinds: dict[str, tuple[str, str, bytes | None, int]] = {
        "/healthz": ("GET", "/healthz", None, 200),
        "authenticated read of one contact": ("GET", f"/v1/contacts/{contact}", None, 200),
        "list of 20 tickets": ("GET", "/v1/tickets?limit=20", None, 200),
        "new ticket": ("POST", "/v1/tickets", payload, 201),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    errors = 0
    client = Client(stack.url, key)
    try:
        for round_ in range(calls + 10):
            for name, (method, path, body, expected) in kinds.items():
                start = time.perf_counter()
                status, _ = client.send(method, path, body)
                took = time.perf_counter() - start
                if status != expected:
                    errors += 1
                elif round_ >= 10:  # the first rounds warm connections and caches
                    times[name].append(took)
    finally:
        client.close()
    p50 = {name: percentile(values, 50) * 1000 for name, values in times.items()}
    note = f"{calls} calls each, in turns"
    rows = [
        Row(
            "single",
            f"{name} p50",
            p50[name],
            "ms",
            target="<= 12 ms" if name == "new ticket" else "",
            met=p50[name] <= 12 if name == "new ticket" else None,
            note=f"{note}; p99 {percentile(times[name], 99) * 1000:.1f} ms"
            + (f"; {errors} errors" if name == "/healthz" else ""),
        )
        for name in kinds
    ]
    read = p50["authenticated read of one contact"]
    rows.append(
        Row(
            "single",
            "authenticated read / /healthz (p50s)",
            read,
            "ms",
            p50["/healthz"],
            "/healthz",
            "ratio <= 1.5",
            read / p50["/healthz"] <= 1.5,
        )
    )
    return rows


# --- revocation from elsewhere ------------------------------------------------------------------

POLLERS = 4
POLL_EVERY = 0.020  # each poller's period; staggered, a request every 5 ms


def _first_refusal(url: str, key: str, path: str, stop: threading.Event) -> list[float]:
    """Poll until a poller is refused; the wall-clock send times of the refused requests."""
    refused: list[float] = []

    def poll(offset: float) -> None:
        client = Client(url, key)
        next_at = time.perf_counter() + offset
        try:
            while not stop.is_set():
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at += POLL_EVERY
                sent = time.time()
                status, _ = client.send("GET", path)
                if status == 401:
                    refused.append(sent)
                    stop.set()
                    return
        finally:
            client.close()

    threads = [
        threading.Thread(target=poll, args=(n * POLL_EVERY / POLLERS,), daemon=True)
        for n in range(POLLERS)
    ]
    for thread in threads:
        thread.start()
    stop.wait(120)
    stop.set()
    for thread in threads:
        thread.join()
    return refused


def _poll_into(into: list[float], url: str, key: str, path: str, stop: threading.Event) -> None:
    into.extend(_first_refusal(url, key, path, stop))


def _deactivated_at(ctx: Context, agent_id: str) -> float:
    conn = psycopg2.connect(ctx.stack().settings.database_dsn("accounts"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:

            def occurred() -> Any:
                cur.execute(
                    "SELECT occurred_at FROM events WHERE stream_id = %s"
                    " AND type = 'agent_deactivated'",
                    (f"agent-{agent_id}",),
                )
                return cur.fetchone()

            return float(wait_until(occurred, timeout=60, what="agent_deactivated")[0].timestamp())
    finally:
        conn.close()


def _revocation(ctx: Context, repetitions: int) -> list[Row]:
    stack = ctx.stack()
    _, admin_key, contact = _tenant(ctx)
    admin = Client(stack.url, admin_key)
    delays: list[float] = []
    from_request: list[float] = []
    try:
        for _ in range(repetitions):
            agent = {
                "name": "Bench Agent",
                "email": f"agent.{uuid.uuid4().hex[:8]}@example.com",
                "role": "agent",
            }
            status, body = admin.send("POST", "/v1/agents", json.dumps(agent).encode())
            assert status == 201, body
            created = json.loads(body)
            probe = Client(stack.url, created["api_key"])
            status, body = probe.send("GET", f"/v1/contacts/{contact}")
            probe.close()
            assert status == 200, body  # the key works before it is revoked
            stop = threading.Event()
            refusals: list[float] = []
            poller = threading.Thread(
                target=_poll_into,
                args=(refusals, stack.url, created["api_key"], f"/v1/contacts/{contact}", stop),
                daemon=True,
            )
            poller.start()
            time.sleep(0.1)  # the pollers are running before the request is filed
            filed_at = time.time()
            request = {"type": "erasure", "subject": {"agent_id": created["id"]}}
            status, body = admin.send("POST", "/v1/privacy/requests", json.dumps(request).encode())
            assert status in (200, 202), body
            poller.join()
            assert refusals, "the erased agent's key was never refused"
            refused = min(refusals)
            delays.append(refused - _deactivated_at(ctx, created["id"]))
            from_request.append(refused - filed_at)
            _completed(admin, json.loads(body)["id"])
    finally:
        admin.close()
    note = (
        f"{repetitions} agents erased; from filing the request: p50"
        f" {percentile(from_request, 50) * 1000:.0f} ms, p99"
        f" {percentile(from_request, 99) * 1000:.0f} ms"
    )
    return [
        Row(
            "revocation",
            "erased agent: event to first 401, p50",
            percentile(delays, 50) * 1000,
            "ms",
            note=note,
        ),
        Row(
            "revocation",
            "erased agent: event to first 401, p99",
            percentile(delays, 99) * 1000,
            "ms",
            note=f"polled every {POLL_EVERY / POLLERS * 1000:.0f} ms; occurred_at precedes the"
            " erasure's commit",
        ),
    ]


def _completed(admin: Client, request_id: str) -> None:
    """The erasure finished through the platform (so the next one starts on a quiet stack)."""

    def done() -> bool:
        status, body = admin.send("GET", f"/v1/privacy/requests/{request_id}")
        return status == 200 and json.loads(body)["status"] != "pending"

    wait_until(done, timeout=60, interval=0.1, what=f"privacy request {request_id}")


def run(ctx: Context, sections: set[str]) -> list[Row]:
    rows: list[Row] = []
    if "single" in sections:
        rows += _single(ctx, calls=50 if ctx.quick else 300)
    if "mix" in sections:
        rows += _mix(ctx, clients=4 if ctx.quick else 16, seconds=4.0 if ctx.quick else 20.0)
    if "revocation" in sections:
        rows += _revocation(ctx, repetitions=5 if ctx.quick else 20)
    return rows
