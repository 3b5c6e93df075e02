"""The whole stack as processes: signup over HTTP, the tenant over HTTP, the event on RabbitMQ."""

from __future__ import annotations

import json
import secrets
import uuid

from kombu import Connection, Queue, binding

from kernel import topology


def test_signup_then_tenant_then_tenant_created_on_the_broker(stack):
    # A test consumer's queue, bound before anything is published.
    observed = Queue(
        "e2e.observer",
        bindings=[binding(topology.events_exchange, routing_key="accounts.tenant_created")],
        durable=True,
    )
    with Connection(stack.settings.amqp_uri) as conn:
        observed(conn.channel()).declare()

    trace_id = secrets.token_hex(16)
    response = stack.call(
        "POST",
        "/v1/signup",
        json={
            "company": "Acme Support Ltd",
            "region": "uk",
            "admin": {"name": "Ada Lovelace", "email": "ada@example.com"},
            "age_confirmed": True,
            "accept_policy_version": "2026-01",
        },
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert response.status_code == 201, response.text
    # A sign-up is not authenticated: its trace is the gateway's own, not the one sent.
    served = response.headers["traceresponse"].split("-")[1]
    assert served != trace_id
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

    me = stack.call("GET", "/v1/tenant", key=created["api_key"])
    support_address = f"{tenant['id']}@{stack.settings.mail_in_domain}"
    assert me.status_code == 200 and me.json() == {**tenant, "support_address": support_address}

    with Connection(stack.settings.amqp_uri) as conn:
        queue = conn.SimpleQueue(observed)
        message = queue.get(timeout=30)
        message.ack()
        envelope = json.loads(message.body)
        queue.close()
    assert envelope["type"] == "tenant_created" and envelope["source"] == "accounts"
    assert envelope["tenant_id"] == tenant["id"]
    assert envelope["metadata"]["region"] == "uk"
    assert envelope["payload"]["tenant_id"] == tenant["id"]
    assert uuid.UUID(envelope["payload"]["admin_agent_id"]) == uuid.UUID(created["agent"]["id"])
    # Integration events carry ids, not personal data.
    assert "ada@example.com" not in message.body and "Ada Lovelace" not in message.body
    # One trace from the HTTP request through RPC into the event.
    assert envelope["trace"]["traceparent"].split("-")[1] == served


def test_the_api_front_answers_with_problems_and_its_spec(stack):
    assert stack.call("GET", "/healthz").json() == {"status": "ok"}
    ready = stack.call("GET", "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "broker": True,
        "credentials": True,
        "accounts": True,
        "tickets": True,
        "billing": True,
        "audit": True,
        "retention": True,
    }
    spec = stack.call("GET", "/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.") and {"/v1/signup", "/v1/tenant"} <= set(spec["paths"])

    unauthenticated = stack.call("GET", "/v1/tenant")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["Content-Type"] == "application/problem+json"
    assert stack.call("GET", "/v1/tenant", key="ldk_nope").status_code == 401

    refused = stack.call(
        "POST",
        "/v1/signup",
        json={
            "company": "Acme",
            "region": "us",
            "admin": {"name": "A", "email": "a@example.com"},
            "age_confirmed": False,
            "accept_policy_version": "2026-01",
        },
    )
    assert refused.status_code == 422
    assert set(refused.json()["errors"]) == {"region", "age_confirmed"}

    malformed = stack.call(
        "POST", "/v1/signup", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["status"] == 400
    unknown_route = stack.call("GET", "/v1/nothing-here")
    assert unknown_route.status_code == 404
    assert unknown_route.headers["Content-Type"] == "application/problem+json"


def test_a_nul_character_in_a_url_is_the_clients_mistake_not_a_server_error(stack):
    key = stack.sign_up()["api_key"]
    for path in ("/v1/audit/entries?type=a%00b", "/v1/contacts/%00", "/v1/tickets?status=%00"):
        response = stack.call("GET", path, key=key)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
