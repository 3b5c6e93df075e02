"""Load for the fault tests: clients writing tickets through the gateway, and the checks that
every write the gateway accepted (201) reached the tickets projection and the audit ledger
exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import requests

from kernel.config import Settings
from kernel.testing import Infrastructure, wait_until, world_env
from services import platform
from tests.e2e.conftest import Stack, running_stack

# A client gives up after this long: an answer that takes longer counts as a hang.
CLIENT_TIMEOUT = 20.0


@dataclass
class Outcomes:
    """What the clients saw: answers by status, accepted ticket ids, failures to get an answer."""

    statuses: collections.Counter = field(default_factory=collections.Counter)
    accepted: list[str] = field(default_factory=list)
    hangs: int = 0  # no answer within CLIENT_TIMEOUT
    refused: int = 0  # connection refused or reset: a gateway process that was killed
    # Which fault was under way when an answer that is a bug came, and what it said.
    phase: str = "steady"
    bugs: collections.Counter = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, ticket_id: str | None = None, detail: str = "") -> None:
        with self.lock:
            self.statuses[status] += 1
            if ticket_id is not None:
                self.accepted.append(ticket_id)
            if status not in (201, 503):
                self.bugs[(self.phase, status, detail[:120])] += 1

    @property
    def unexpected(self) -> dict[int, int]:
        """Answers that are bugs: any 5xx but 503 (and any 4xx, for requests that are valid)."""
        return {s: n for s, n in self.statuses.items() if s not in (201, 503)}

    def summary(self) -> str:
        return (
            f"statuses {dict(sorted(self.statuses.items()))}, accepted {len(self.accepted)}, "
            f"hangs {self.hangs}, refused connections {self.refused}"
            + (f", unexpected answers {dict(self.bugs)}" if self.bugs else "")
        )


class TicketLoad:
    """``clients`` threads creating tickets until ``total`` were accepted or ``stop()``."""

    def __init__(
        self, url: str, key: str, requester_id: str, clients: int = 8, total: int | None = None
    ):
        self.url = url
        self.key = key
        self.requester_id = requester_id
        self.total = total
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        self._sequence = iter(range(10**9))
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> TicketLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT + 5)

    def join(self, timeout: float) -> None:
        """Wait for ``total`` accepted writes (then the clients stop by themselves)."""
        wait_until(self._done, timeout=timeout, interval=0.5, what=f"{self.total} accepted writes")
        self.stop()

    def _done(self) -> bool:
        return self.total is not None and len(self.outcomes.accepted) >= self.total

    def accepted(self) -> int:
        return len(self.outcomes.accepted)

    def _client(self) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.key}"}
        while not self._stop.is_set() and not self._done():
            n = next(self._sequence)
            body = {"subject": f"load ticket {n}", "body": "printer on fire", "priority": "normal"}
            body["requester_id"] = self.requester_id
            try:
                response = session.post(
                    f"{self.url}/v1/tickets", json=body, headers=headers, timeout=CLIENT_TIMEOUT
                )
            except requests.Timeout:
                with self.outcomes.lock:
                    self.outcomes.hangs += 1
                continue
            except requests.ConnectionError:
                with self.outcomes.lock:
                    self.outcomes.refused += 1
                session = requests.Session()
                # Nothing listens for a moment (a gateway restarting): do not spin on it.
                self._stop.wait(0.1)
                continue
            if response.status_code == 201:
                self.outcomes.record(201, response.json()["id"])
            else:
                self.outcomes.record(response.status_code, detail=response.text)


def wait_for_progress(load: TicketLoad, more: int, timeout: float = 120, what: str = "") -> int:
    """Wait until ``more`` writes beyond the current count were accepted; returns the count."""
    target = load.accepted() + more
    wait_until(
        lambda: load.accepted() >= target,
        timeout=timeout,
        interval=0.2,
        what=what or f"{more} more accepted writes ({load.outcomes.summary()})",
    )
    return load.accepted()


def _query(dsn: str, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, tuple(args))
            return cur.fetchall()
    finally:
        conn.close()


def projected_tickets(settings: Settings, tenant_id: str) -> collections.Counter:
    rows = _query(
        settings.database_dsn("tickets"),
        "SELECT id::text FROM tickets WHERE tenant_id = %s",
        (tenant_id,),
    )
    return collections.Counter(row[0] for row in rows)


def created_events(settings: Settings, tenant_id: str) -> collections.Counter:
    rows = _query(
        settings.database_dsn("tickets"),
        "SELECT stream_id FROM events WHERE type = 'ticket_created' AND tenant_id = %s",
        (tenant_id,),
    )
    return collections.Counter(row[0].partition("-")[2] for row in rows)


def ledger_tickets(settings: Settings, tenant_id: str) -> collections.Counter:
    rows = _query(
        settings.database_dsn("audit"),
        "SELECT convert_from(content, 'UTF8')::jsonb #>> '{payload,ticket_id}'"
        " FROM ledger_entries_all"
        " WHERE type = 'ticket_created' AND tenant_id = %s",
        (tenant_id,),
    )
    return collections.Counter(row[0] for row in rows)


def assert_accepted_writes_kept(
    settings: Settings, tenant_id: str, accepted: list[str], timeout: float = 180
) -> None:
    """Every accepted ticket is in the projection, the event store and the ledger, once each.

    The ledger is fed asynchronously (outbox, relay, broker), so it is waited for; the
    projection commits with the write, so it must hold every accepted ticket at once.
    """
    assert len(set(accepted)) == len(accepted), "the gateway gave one id to two writes"
    wanted = set(accepted)
    projected = projected_tickets(settings, tenant_id)
    missing = wanted - set(projected)
    assert not missing, f"{len(missing)} accepted tickets are not in the projection"
    assert all(projected[t] == 1 for t in wanted)
    events = created_events(settings, tenant_id)
    assert all(events[t] == 1 for t in wanted), "an accepted ticket has no or two events"

    wait_until(
        lambda: wanted <= set(ledger_tickets(settings, tenant_id)),
        timeout=timeout,
        interval=0.5,
        what="every accepted ticket in the audit ledger",
    )
    ledger = ledger_tickets(settings, tenant_id)
    missing = wanted - set(ledger)
    assert not missing, f"{len(missing)} of {len(wanted)} accepted tickets are not in the ledger"
    twice = {t: n for t, n in ledger.items() if n != 1}
    assert not twice, f"{len(twice)} tickets are in the ledger more than once"
    # Tickets that were created but not acknowledged (a 503 after the commit) may exist too;
    # what the gateway accepted is a subset of what was stored, never more.
    assert set(ledger) <= set(events)


def rss_kib(pid: int) -> int:
    """The resident set of a process, from /proc (KiB)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError(f"no VmRSS for process {pid}")


# The load runs with these: no rate limit in the way, and an RPC to a dead service gives up
# quickly (a 503), so clients are not all parked on one.
FAST = {
    "LEDGERDESK_RATE_LIMIT": "1000000",
    "LEDGERDESK_RATE_BURST": "1000000",
    "LEDGERDESK_RPC_TIMEOUT": "3",
}


@contextlib.contextmanager
def fast_stack(infrastructure: Infrastructure, **overrides: str) -> Iterator[Stack]:
    with running_stack(infrastructure, **{**FAST, **overrides}) as stack:
        yield stack


def kill(stack: Stack, name: str) -> None:
    process = stack.processes.pop(name)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL


def restart(stack: Stack, name: str) -> None:
    if name.startswith("gateway-"):
        stack.processes.update(
            platform.start_processes(
                world_env(stack.settings), gateway_processes=int(name[8:]), only=(name,)
            )
        )
    else:
        stack.start(name)


def ready(stack: Stack) -> bool:
    try:
        return stack.call("GET", "/readyz").status_code == 200
    except OSError:
        return False


def ticket_writer(stack: Stack) -> tuple[str, str, str]:
    """A tenant, its admin's key, and a contact that tickets already knows of."""
    signup = stack.sign_up()
    key = signup["api_key"]
    contact = stack.call(
        "POST", "/v1/contacts", key=key, json={"name": "Load Tester", "email": "load@example.com"}
    )
    assert contact.status_code == 201, contact.text
    contact_id = contact.json()["id"]
    # Tickets learns of contacts from accounts' events: the first ticket waits for that.
    wait_until(
        lambda: (
            stack.call(
                "POST",
                "/v1/tickets",
                key=key,
                json={"subject": "first", "body": "hello", "requester_id": contact_id},
            ).status_code
            == 201
        ),
        what="tickets to know the contact",
    )
    return signup["tenant"]["id"], key, contact_id
