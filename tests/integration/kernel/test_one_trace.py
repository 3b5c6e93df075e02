"""One trace: an HTTP request through the gateway, the RPC it makes and the event it causes,
seen by an in-memory span exporter with the gateway and two services in this process (and
retention, whose log of forgetting a service re-applies before it serves)."""

from __future__ import annotations

import secrets

import requests
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.service import GatewayService
from kernel import topology
from kernel.testing import free_port, wait_until
from kernel.tracing import setup_tracing
from services.accounts.service import AccountsService
from services.retention.service import RetentionService
from services.tickets.service import TicketsService
from services.tickets.subscriptions import SUBSCRIPTIONS


def test_request_rpc_and_event_share_one_trace(world, container_factory):
    exporter = InMemorySpanExporter()
    setup_tracing("ledgerdesk-tests", span_exporter=exporter)
    port = free_port()
    config = world.with_overrides(gateway_port=port).nameko_config()
    topology.declare(world.amqp_uri, SUBSCRIPTIONS, world.delivery_limit)
    containers = [
        container_factory(cls, config)
        for cls in (RetentionService, AccountsService, TicketsService, GatewayService)
    ]
    for container in containers:
        container.start()

    trace_id = secrets.token_hex(16)
    response = requests.post(
        f"http://127.0.0.1:{port}/v1/signup",
        json={
            "company": "Acme",
            "region": "uk",
            "admin": {"name": "Ada Lovelace", "email": "ada@example.com"},
            "age_confirmed": True,
            "accept_policy_version": "2026-01",
        },
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    # A sign-up is not authenticated: the gateway starts a trace of its own, and says which.
    assert response.headers["traceresponse"].split("-")[1] != trace_id
    trace_id = response.headers["traceresponse"].split("-")[1]

    def ours() -> dict[str, SpanKind]:
        spans = {
            s.name: s.kind
            for s in exporter.get_finished_spans()
            if format(s.context.trace_id, "032x") == trace_id
        }
        return spans if "tickets.learn_from_accounts" in spans else {}

    spans = wait_until(ours, timeout=30, what="the event's consumer span in the request's trace")
    # The gateway's endpoint, the accounts RPC it called, and the consumer of the event that
    # accounts' outbox relayed later: one trace id across all three.
    assert spans["gateway.sign_up"] == SpanKind.SERVER
    assert spans["accounts.sign_up"] == SpanKind.SERVER
    assert spans["tickets.learn_from_accounts"] == SpanKind.CONSUMER
    for container in reversed(containers):
        container.stop()
