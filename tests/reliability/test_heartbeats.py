"""Every process talks to RabbitMQ with AMQP heartbeats on, so a dead connection is noticed in
seconds (twice the heartbeat), not when TCP gives up minutes later.

Connections are read from the broker's management API (the heartbeat it negotiated, the
client's port) and tied to the process that holds them through /proc. The stack runs with a
short heartbeat, so that idling past twice of it takes seconds.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.testing import Infrastructure, wait_until
from tests.e2e.conftest import Stack, running_stack

pytestmark = pytest.mark.reliability

# Short, so that idling past twice of it takes seconds; not shorter, since nameko's consumers
# beat only when a one-second wait for messages runs out (at 2 s the broker drops them).
HEARTBEAT = 4


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(infrastructure, LEDGERDESK_HEARTBEAT=str(HEARTBEAT)) as running:
        # One request, so the gateway's RPC publisher and reply listener are connected too.
        running.sign_up()
        yield running


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def broker_view(infrastructure: Infrastructure, stack: Stack) -> list[dict[str, Any]]:
    """The stack's connections, each with its process and whether a channel on it consumes."""
    vhost = stack.settings.database_prefix
    connections = [
        c
        for c in infrastructure.management("GET", "/api/connections").json()
        if c.get("vhost") == vhost
    ]
    quoted = urllib.parse.quote(vhost, safe="")
    channels = infrastructure.management("GET", f"/api/vhosts/{quoted}/channels").json()
    consuming = {
        details.get("name")
        for ch in channels
        if ch.get("consumer_count", 0) > 0
        # The broker sends an empty list while it has not filled the details in yet.
        and isinstance(details := ch.get("connection_details"), dict)
    }
    owners = {port: name for name, p in stack.processes.items() for port in local_ports(p.pid)}
    for connection in connections:
        connection["process"] = owners.get(connection.get("peer_port"))
        connection["consumes"] = connection["name"] in consuming
        connection["relay"] = "relay" in str(
            (connection.get("client_properties") or {}).get("connection_name", "")
        )
    return connections


def test_every_process_consumes_and_relays_with_heartbeats(infrastructure, stack):
    def settled() -> list[dict[str, Any]] | None:
        view = broker_view(infrastructure, stack)
        owners = {c["process"] for c in view if c["consumes"]}
        return view if owners >= set(stack.processes) else None

    view = wait_until(settled, timeout=60, interval=1, what="a consumer in every process")
    long_lived = [c for c in view if c["consumes"] or c["relay"]]
    # One relay per database is active (the gateway's processes share one): its connection too.
    relaying = {str(c["process"]).partition("-")[0] for c in long_lived if c["relay"]}
    assert relaying >= {name.partition("-")[0] for name in stack.processes}
    silent = {(c["process"], c["name"]) for c in long_lived if not c.get("timeout")}
    assert not silent, f"connections without heartbeats: {silent}"
    assert all(0 < c["timeout"] <= 60 for c in long_lived)
    print(f"\nheartbeats (s) by process: { {c['process']: c['timeout'] for c in long_lived} }")


def test_every_connection_has_a_heartbeat(infrastructure, stack):
    view = wait_until(
        lambda: broker_view(infrastructure, stack), timeout=30, what="the stack's connections"
    )
    silent = {(c["process"], c["name"]) for c in view if not c.get("timeout")}
    assert not silent, f"connections without heartbeats: {silent}"
    # The services' own, from their settings (the gateway's relay keeps a default of its own).
    assert {c["timeout"] for c in view if not c["relay"]} == {HEARTBEAT}


def test_idle_publisher_connections_outlive_twice_the_heartbeat_and_carry_requests(
    infrastructure, stack
):
    """Between requests nothing is published, and the broker closes a connection silent for
    two heartbeats: the services beat their idle pooled publisher connections, so none is
    closed, and the first request after the pause is answered on them."""
    stack.sign_up()  # the gateway's request publisher and accounts' reply publisher are open
    # The management API lists a new connection within its statistics interval (5 s).
    time.sleep(6)

    def names(opened_before: float) -> dict[str, str]:
        # The readiness and health probes' connections are left out: used only when probed, a
        # probe that finds its connection closed opens another (kernel.observability). So are
        # the test's own (no process of the stack holds them).
        found = {}
        for c in broker_view(infrastructure, stack):
            label = str((c.get("client_properties") or {}).get("connection_name") or "")
            if label.endswith((" readiness", " health")) or c["process"] is None:
                continue
            if c.get("connected_at", 0) / 1000 < opened_before:
                found[c["name"]] = f"{c['process']} {label}"
        return found

    before = names(time.time() - 3)
    time.sleep(3 * HEARTBEAT)
    # ... and a closed one for a few seconds more.
    time.sleep(6)
    after = names(time.time())
    closed = {name: owner for name, owner in before.items() if name not in after}
    assert not closed, f"closed while idle: {closed}"
    started = time.monotonic()
    stack.sign_up()
    print(f"\nfirst request after {3 * HEARTBEAT + 12} s idle: {time.monotonic() - started:.2f} s")
