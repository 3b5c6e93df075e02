"""Operations of the whole stack as processes: every process's ops endpoints, the gateway's
operator views, AMQP heartbeats on every connection, and JSON log lines without personal data."""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kernel.testing import (
    Infrastructure,
    client_traceparent,
    free_port,
    make_world,
    wait_until,
    world_env,
)
from services import platform
from tests.e2e.conftest import Stack


@pytest.fixture(scope="module")
def ops_stack(infrastructure: Infrastructure, tmp_path_factory) -> Iterator[tuple[Stack, Path]]:
    """A stack of its own, one gateway process, each process logging to ``<logs>/<name>.log``."""
    logs = tmp_path_factory.mktemp("ops-logs")
    port = free_port()
    with make_world(
        infrastructure, LEDGERDESK_GATEWAY_PORT=str(port), LEDGERDESK_GATEWAY_PROCESSES="1"
    ) as settings:
        platform.prepare(settings)
        processes = platform.start_processes(world_env(settings), log_dir=logs)
        url = f"http://127.0.0.1:{port}"
        try:
            assert platform.wait_until_ready(url, processes, timeout=60), "no stack"
            yield Stack(settings, url, processes), logs
        finally:
            platform.stop_processes(processes)
        assert all(p.returncode == 0 for p in processes.values()), "a process did not stop"


def ops(stack: Stack, name: str, path: str) -> requests.Response:
    port = stack.processes[name].ops_port  # type: ignore[attr-defined]
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=15)


def test_every_process_serves_health_readiness_and_metrics(ops_stack):
    stack, _ = ops_stack
    admin_key = stack.sign_up()["api_key"]
    for name in stack.processes:
        assert ops(stack, name, "/healthz").json() == {"status": "ok"}, name
        ready = ops(stack, name, "/readyz")
        assert ready.status_code == 200, (name, ready.text)
        # Every process, the gateway's too, serves once it re-applied retention's log.
        expected = {"broker": True, "database": True, "forgetting": True}
        if name.startswith("gateway"):
            expected["credentials"] = True  # its keys can be checked
        assert ready.json()["checks"] == expected, name
        metrics = ops(stack, name, "/metrics").text
        service = "gateway" if name.startswith("gateway") else name
        assert f'ledgerdesk_outbox_lag_events{{service="{service}"}}' in metrics, name
    # Gauges read at scrape time, per consumer queue; counters per handled message.
    audit = ops(stack, "audit", "/metrics").text
    assert 'ledgerdesk_dead_letters{queue="audit.ledger"} 0.0' in audit
    # And what the services' own extensions read: the ledger's checkpoint age, the privacy
    # requests by type and state and those past their due date.
    assert "ledgerdesk_audit_checkpoint_age_seconds " in audit
    assert "ledgerdesk_audit_unsigned_entries " in audit
    retention = ops(stack, "retention", "/metrics").text
    assert 'ledgerdesk_privacy_requests_overdue{type="erasure"} 0.0' in retention
    assert 'ledgerdesk_privacy_requests_open{state="pending",type="erasure"} 0.0' in retention
    wait_until(
        lambda: (
            'ledgerdesk_messages_handled_total{outcome="handled",queue="audit.ledger"'
            in ops(stack, "audit", "/metrics").text
        ),
        what="audit's handled-message counter",
    )
    assert 'ledgerdesk_handler_seconds_count{entrypoint="sign_up",service="accounts"}' in (
        ops(stack, "accounts", "/metrics").text
    )
    # The gateway's API port serves its metrics too, requests by route template and status,
    # to the operator only: they are the platform's volume, for no tenant or stranger to watch.
    assert stack.call("GET", "/metrics").status_code == 401
    assert stack.call("GET", "/metrics", key=admin_key).status_code == 401
    api = stack.call("GET", "/metrics", key=stack.settings.operator_token)
    assert api.headers["Content-Type"].startswith("text/plain")
    assert (
        'ledgerdesk_http_requests_total{method="POST",route="/v1/signup",status="201"}' in api.text
    )


def test_operator_health_and_dead_letter_endpoints(ops_stack, infrastructure):
    stack, _ = ops_stack
    token = stack.settings.operator_token
    assert stack.call("GET", "/v1/operator/health").status_code == 401
    health = stack.call("GET", "/v1/operator/health", key=token)
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["broker"] is True
    assert set(body["services"]) == set(platform.SERVICES)
    for name, service in body["services"].items():
        assert service["ready"] and service["database"], name
        assert isinstance(service["outbox_lag"], int), name
        assert service["outbox_oldest_seconds"] is None or service["outbox_oldest_seconds"] >= 0

    # The broker is asked on one kept connection per gateway process, however often.
    for _ in range(6):
        assert stack.call("GET", "/v1/operator/health", key=token).json()["broker"] is True
        assert stack.call("GET", "/readyz").json()["checks"]["broker"] is True
    vhost = stack.settings.database_prefix

    def health_connections() -> int:
        return sum(
            1
            for c in infrastructure.management("GET", "/api/connections").json()
            if c.get("vhost") == vhost
            and (c.get("client_properties") or {}).get("connection_name") == "gateway health"
        )

    wait_until(lambda: health_connections() >= 1, timeout=30, what="the kept connection listed")
    assert health_connections() <= stack.settings.gateway_processes

    assert stack.call("GET", "/v1/operator/dead-letters").status_code == 401
    listed = stack.call("GET", "/v1/operator/dead-letters", key=token)
    assert listed.status_code == 200 and listed.json() == {"items": []}
    one = stack.call("GET", "/v1/operator/dead-letters?queue=tickets.accounts", key=token)
    assert one.json() == {"items": []}
    replay = "/v1/operator/dead-letters/tickets.accounts/replay"
    assert stack.call("POST", replay, key=token).json() == {"replayed": 0}
    assert stack.call("POST", replay, key=token, json={"ids": ["x"]}).json() == {"replayed": 0}
    # Only a platform queue: nothing is ever published into another.
    unknown = stack.call("POST", "/v1/operator/dead-letters/amq.rabbitmq.log/replay", key=token)
    assert unknown.status_code == 404
    # Requests an RPC queue set aside are listed, never replayed: their callers have gone.
    requests_ = stack.call("GET", "/v1/operator/dead-letters?queue=rpc-tickets", key=token)
    assert requests_.status_code == 200 and requests_.json() == {"items": []}
    refused = stack.call("POST", "/v1/operator/dead-letters/rpc-tickets/replay", key=token)
    assert refused.status_code == 409, refused.text
    assert "never replayed" in refused.json()["detail"]


def test_consumer_and_relay_connections_have_heartbeats(ops_stack, infrastructure):
    """Every connection that waits on the broker (consumers, RPC replies, each process's outbox
    relay) negotiated the configured heartbeat, so a dead peer is noticed in seconds. nameko's
    pooled publisher connections keep none: nothing would answer the broker's heartbeats on
    them while idle, and a dead one is found, and replaced, when it is next used."""
    stack, _ = ops_stack
    vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")

    def waiting() -> dict[str, int]:
        connections = infrastructure.management("GET", f"/api/vhosts/{vhost}/connections").json()
        channels = infrastructure.management("GET", f"/api/vhosts/{vhost}/channels").json()
        consuming = {
            channel["connection_details"]["name"]
            for channel in channels
            # A channel closing as we look has no connection details left (an empty list).
            if isinstance(channel.get("connection_details"), dict) and channel.get("consumer_count")
        }
        relays = {
            c["name"]
            for c in connections
            if str(c.get("user_provided_name", "")).startswith("ledgerdesk relay ")
        }
        found = {c["name"]: c["timeout"] for c in connections if c["name"] in consuming | relays}
        # A consumer and a relay per process (the broker's statistics lag a little).
        return found if len(consuming) >= len(stack.processes) == len(relays) else {}

    found = wait_until(waiting, timeout=30, what="every process's consumers and relay")
    assert set(found.values()) == {stack.settings.heartbeat}


def test_logs_are_json_lines_with_trace_ids_and_no_personal_data(ops_stack):
    stack, logs = ops_stack
    mark = secrets.token_hex(4)
    person = {"name": f"Zoë Quinn-{mark}", "email": f"zoe.{mark}@example.org"}
    contact = {"name": f"Ólafur Árnason-{mark}", "email": f"olafur.{mark}@example.net"}
    key = stack.sign_up(admin=person)["api_key"]
    assert stack.call("POST", "/v1/contacts", key=key, json=contact).status_code == 201
    trace_id, header = client_traceparent()
    missing = stack.call(
        "GET",
        f"/v1/contacts/{uuid.uuid4()}",
        key=key,
        headers={"traceparent": header},
    )
    assert missing.status_code == 404

    def accounts_line() -> dict | None:
        for line in (logs / "accounts.log").read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("trace_id") == trace_id:
                    return record
        return None

    # Logged inside the accounts worker that answered: the request's trace id is on the line.
    record = wait_until(accounts_line, timeout=15, what="the accounts line of the traced request")
    assert record["service"] == "accounts" and record["level"] in ("INFO", "WARNING")
    assert len(record["span_id"]) == 16

    lines = [
        (path.name, line)
        for path in sorted(logs.glob("*.log"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert len({name for name, _ in lines}) == len(stack.processes)
    for name, line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "service", "logger", "message"} <= set(record), (name, line)
        for value in (*person.values(), *contact.values()):
            assert value not in line, f"{name} logged a personal value"
