"""What one ticket costs the machine: CPU in every process, broker messages, transactions.

Read around the write path's full-load run (bench/writepath.py) and divided by the tickets it
created. Three kinds of counter, each read where the stack's share of it can be told apart:

- CPU time (user + system, ``/proc/<pid>/stat``) of each platform process and its children, of
  the PostgreSQL backends connected to the stack's databases, of the PostgreSQL server's own
  processes (WAL writer, checkpointer: the whole server's) and of the RabbitMQ node (the
  broker's operating-system process, from the management API: the whole node's, every vhost).
  The last two include whatever else the machine did in the window, which the note says.
- Messages: the management API's counters of the stack's vhost (it has one of its own).
- Transactions: ``pg_stat_database.xact_commit`` of each of the stack's databases.

The two counter sources lag: a PostgreSQL backend that goes idle reports its statistics up to
10 s later, and the broker's management statistics are emitted every 5 s. So the counters are
read after the stack has been quiet for ``SETTLE`` seconds on both sides of the window; the CPU
is read at the window's edges themselves (it needs no settling). What the stack does while idle
in the settling time (a relay's poll a second, timers) is counted with the tickets; the note
gives that idle rate, measured on the same stack, so its share can be judged.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2

from bench.harness import Row

if TYPE_CHECKING:
    from kernel.testing import Infrastructure
    from tests.e2e.conftest import Stack

# PostgreSQL flushes an idle backend's statistics after 10 s (PGSTAT_IDLE_INTERVAL); the broker's
# default statistics interval is 5 s.
SETTLE = 10.5
_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")
_REPLY_QUEUE = re.compile(r"^(rpc\.reply-[a-z]+)-[0-9a-f-]{36}$")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far; None once it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: fields count from after it.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _with_descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


@dataclass
class CpuSample:
    """CPU seconds so far, per pid, grouped under the label each pid is reported by."""

    at: float
    groups: dict[str, dict[int, float]] = field(default_factory=dict)


@dataclass
class CounterSample:
    at: float
    messages: dict[str, int]
    queues: dict[str, int]
    transactions: dict[str, int]


class CostMeter:
    """Reads the counters of one running stack; ``cpu()`` and ``counters()`` are the samples."""

    def __init__(self, stack: Stack, infrastructure: Infrastructure) -> None:
        self.stack = stack
        self.infrastructure = infrastructure
        self.prefix = stack.settings.database_prefix
        self.vhost = urllib.parse.quote(self.prefix, safe="")

    def _server_dsn(self) -> str:
        return self.infrastructure.database_url

    def _postgres_pids(self) -> tuple[list[int], list[int]]:
        """The stack's backends, and the server's own processes (postmaster included)."""
        conn = psycopg2.connect(self._server_dsn())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pid, backend_type, datname FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid()"
                )
                rows = cur.fetchall()
        finally:
            conn.close()
        ours = [
            pid
            for pid, kind, name in rows
            if kind == "client backend" and name and name.startswith(self.prefix + "_")
        ]
        server = [pid for pid, kind, _ in rows if kind not in ("client backend", None)]
        if server:
            try:
                stat = (_PROC / str(server[0]) / "stat").read_text()
                server.append(int(stat[stat.rindex(")") + 2 :].split()[1]))
            except OSError:
                pass
        return ours, server

    def _broker_pids(self) -> list[int]:
        nodes = self.infrastructure.management("GET", "/api/nodes").json()
        pids = []
        for node in nodes:
            try:
                pid = int(node.get("os_pid", ""))
            except ValueError:
                continue
            if cpu_seconds(pid) is not None:  # a node of this machine
                pids.append(pid)
        return pids

    def cpu(self) -> CpuSample:
        tree = _children()
        sample = CpuSample(at=time.perf_counter())

        def add(label: str, pids: list[int]) -> None:
            group = sample.groups.setdefault(label, {})
            for pid in pids:
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    group[pid] = seconds

        for name, process in sorted(self.stack.processes.items()):
            add(name, _with_descendants(process.pid, tree))
        ours, server = self._postgres_pids()
        add("postgresql: the stack's backends", ours)
        add("postgresql: server processes (whole server)", server)
        broker: list[int] = []
        for pid in self._broker_pids():
            broker += _with_descendants(pid, tree)
        add("rabbitmq: node (whole node, every vhost)", broker)
        add("load generator (this process, not in the total)", [os.getpid()])
        return sample

    def counters(self) -> CounterSample:
        stats = self.infrastructure.management("GET", f"/api/vhosts/{self.vhost}").json()
        messages = {k: v for k, v in stats.get("message_stats", {}).items() if isinstance(v, int)}
        queues = {}
        for queue in self.infrastructure.management("GET", f"/api/queues/{self.vhost}").json():
            queues[queue["name"]] = queue.get("message_stats", {}).get("publish", 0)
        conn = psycopg2.connect(self._server_dsn())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT datname, xact_commit FROM pg_stat_database WHERE datname LIKE %s",
                    (self.prefix.replace("_", r"\_") + r"\_%",),
                )
                transactions = {name[len(self.prefix) + 1 :]: n for name, n in cur.fetchall()}
        finally:
            conn.close()
        return CounterSample(time.perf_counter(), messages, queues, transactions)


def cpu_rows(before: CpuSample, after: CpuSample, tickets: int, note: str) -> list[Row]:
    """ms of CPU per ticket, per process group and in total (the load generator apart)."""
    rows: list[Row] = []
    total = 0.0
    for label, end in after.groups.items():
        start = before.groups.get(label, {})
        # A pid seen only at the end started inside the window: all its CPU is the window's.
        # One gone by the end is lost (the stack's pools keep their connections after warm-up).
        spent = sum(seconds - start.get(pid, 0.0) for pid, seconds in end.items())
        per_ticket = spent * 1000 / tickets
        if not label.startswith("load generator"):
            total += per_ticket
        rows.append(Row("cost", f"CPU per ticket: {label}", per_ticket, "ms"))
    rows.append(
        Row(
            "cost",
            "CPU per ticket: all processes",
            total,
            "ms",
            note=f"{tickets} tickets, {after.at - before.at:.1f} s; {note}",
        )
    )
    return rows


def counter_rows(
    before: CounterSample,
    after: CounterSample,
    tickets: int,
    idle: tuple[CounterSample, CounterSample] | None,
) -> list[Row]:
    """Broker messages and database transactions per ticket."""

    def idle_share(kind: str, key: str | None = None) -> str:
        """The idle stack's rate of the counter, and what SETTLE seconds of it add per ticket."""
        if idle is None:
            return "idle rate not measured (quick run)"
        start, end = idle
        a, b = getattr(start, kind), getattr(end, kind)
        keys = [key] if key is not None else list(b)
        rate = sum(b.get(k, 0) - a.get(k, 0) for k in keys) / (end.at - start.at)
        return f"idle stack {rate:.1f}/s, of which {SETTLE:.0f} s add {rate * SETTLE / tickets:.2f}"

    rows: list[Row] = []
    for name, label in (("publish", "published"), ("deliver_get", "delivered")):
        count = after.messages.get(name, 0) - before.messages.get(name, 0)
        note = idle_share("messages", name)
        if name == "publish":
            routed: dict[str, int] = {}
            for queue, n in after.queues.items():
                # Each gateway process has a reply queue of its own: counted together.
                group = _REPLY_QUEUE.sub(r"\1-*", queue)
                routed[group] = routed.get(group, 0) + n - before.queues.get(queue, 0)
            top = sorted(((n, q) for q, n in routed.items() if n > 0), reverse=True)[:6]
            note += "; into queues: " + ", ".join(f"{q} {n / tickets:.2f}" for n, q in top)
        rows.append(
            Row("cost", f"broker messages {label} per ticket", count / tickets, "msg", note=note)
        )
    total = 0
    for name in sorted(after.transactions):
        count = after.transactions[name] - before.transactions.get(name, 0)
        total += count
        if count:
            rows.append(Row("cost", f"transactions per ticket: {name}", count / tickets, "xact"))
    rows.append(
        Row(
            "cost",
            "transactions per ticket: all databases",
            total / tickets,
            "xact",
            note=f"xact_commit; {idle_share('transactions')}",
        )
    )
    return rows
