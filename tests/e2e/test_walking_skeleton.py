"""The whole stack as processes: signup over HTTP, the tenant over HTTP, the event on RabbitMQ."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest
import requests
from kombu import Connection, Queue, binding

from kernel import topology
from kernel.testing import free_port, world_env
from services import platform


@pytest.fixture
def stack(world):
    settings = world.with_overrides(gateway_port=free_port())
    platform.prepare(settings)
    processes = platform.start_processes(world_env(settings))
    url = f"http://127.0.0.1:{settings.gateway_port}"
    try:
        assert platform.wait_until_ready(url, processes, timeout=60), "the stack did not start"
        yield settings, url
    finally:
        platform.stop_processes(processes)
    assert all(p.returncode == 0 for p in processes.values()), "a service did not stop cleanly"


SIGNUP = {
    "company": "Acme Support Ltd",
    "region": "uk",
    "admin": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "age_confirmed": True,
    "accept_policy_version": "2026-01",
}


def test_signup_then_tenant_then_tenant_created_on_the_broker(stack):
    settings, url = stack
    # A test consumer's queue, bound before anything is published.
    observed = Queue(
        "e2e.observer",
        bindings=[binding(topology.events_exchange, routing_key="accounts.tenant_created")],
        durable=True,
    )
    with Connection(settings.amqp_uri) as conn:
        observed(conn.channel()).declare()

    trace_id = secrets.token_hex(16)
    response = requests.post(
        f"{url}/v1/signup",
        json=SIGNUP,
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    tenant = created["tenant"]
    assert tenant == {
        "id": tenant["id"],
        "company": "Acme Support Ltd",
        "region": "uk",
        "status": "active",
        "plan": "standard",
    }
    assert created["agent"]["role"] == "admin" and created["agent"]["email"] == "ada@example.com"
    assert len(created["api_key"]) >= 40

    me = requests.get(
        f"{url}/v1/tenant", headers={"Authorization": f"Bearer {created['api_key']}"}, timeout=10
    )
    assert me.status_code == 200 and me.json() == tenant

    with Connection(settings.amqp_uri) as conn:
        queue = conn.SimpleQueue(observed)
        message = queue.get(timeout=30)
        message.ack()
        envelope = json.loads(message.body)
        queue.close()
    assert envelope["type"] == "tenant_created" and envelope["source"] == "accounts"
    assert envelope["tenant_id"] == tenant["id"]
    assert envelope["payload"]["tenant_id"] == tenant["id"]
    assert uuid.UUID(envelope["payload"]["admin_agent_id"]) == uuid.UUID(created["agent"]["id"])
    # Integration events carry ids, not personal data.
    assert "ada@example.com" not in message.body and "Ada Lovelace" not in message.body
    # One trace from the HTTP request through RPC into the event.
    assert envelope["trace"]["traceparent"].split("-")[1] == trace_id


def test_the_api_front_answers_with_problems_and_its_spec(stack):
    _, url = stack
    assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "broker": True,
        "accounts": True,
    }
    spec = requests.get(f"{url}/v1/openapi.json", timeout=5).json()
    assert spec["openapi"].startswith("3.") and {"/v1/signup", "/v1/tenant"} <= set(spec["paths"])

    unauthenticated = requests.get(f"{url}/v1/tenant", timeout=5)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["Content-Type"] == "application/problem+json"
    bad_key = requests.get(
        f"{url}/v1/tenant", headers={"Authorization": "Bearer ldk_nope"}, timeout=5
    )
    assert bad_key.status_code == 401

    refused = requests.post(
        f"{url}/v1/signup", json={**SIGNUP, "region": "us", "age_confirmed": False}, timeout=10
    )
    assert refused.status_code == 422
    assert set(refused.json()["errors"]) == {"region", "age_confirmed"}

    malformed = requests.post(
        f"{url}/v1/signup", data=b"{nope", headers={"Content-Type": "application/json"}, timeout=5
    )
    assert malformed.status_code == 400 and malformed.json()["status"] == 400

    unknown_field = requests.post(f"{url}/v1/signup", json={**SIGNUP, "plan": "free"}, timeout=5)
    assert unknown_field.status_code == 422 and "plan" in unknown_field.json()["errors"]
