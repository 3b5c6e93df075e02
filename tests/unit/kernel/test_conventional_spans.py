"""Semantic-convention attributes on workers' spans and database spans (kernel.tracing)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kernel import tracing


def test_an_http_route_is_named_by_its_template_never_the_path_sent():
    class Handler:
        method = "PATCH"
        url = "/v1/tickets/<string:ticket_id>"

    from nameko.web.handlers import HttpRequestHandler

    handler = HttpRequestHandler.__new__(HttpRequestHandler)
    handler.method, handler.url = Handler.method, Handler.url
    attributes = tracing.scrub_attributes(tracing._conventional(handler, "gateway", "update"))
    assert attributes == {"http.request.method": "PATCH", "http.route": "/v1/tickets/{ticket_id}"}


def test_an_rpc_and_a_consumed_event_carry_theirs_and_a_timer_none():
    from nameko.rpc import Rpc
    from nameko.timer import Timer

    rpc = Rpc.__new__(Rpc)
    assert tracing._conventional(rpc, "accounts", "get_contact") == {
        "rpc.system": "nameko",
        "rpc.service": "accounts",
        "rpc.method": "get_contact",
    }

    class Consumer:
        class queue:  # noqa: N801 - a kombu Queue's one attribute read here
            name = "audit.ledger"

    assert tracing._conventional(Consumer(), "audit", "record")["messaging.destination.name"] == (
        "audit.ledger"
    )
    assert tracing._conventional(Timer.__new__(Timer), "retention", "sweep") == {}


def test_a_database_span_is_a_child_of_the_trace_it_is_in_and_never_a_root(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(tracing, "_TRACER", tracer)

    with tracing.database_span("transaction", "ldt_x_tickets"):
        pass
    assert exporter.get_finished_spans() == ()  # outside a trace: nothing

    with tracer.start_as_current_span("worker"):
        with tracing.database_span("read", "ldt_x_tickets"):
            pass
    db, worker = exporter.get_finished_spans()
    assert (db.name, db.kind, db.parent.span_id) == (
        "postgresql.read",
        SpanKind.CLIENT,
        worker.context.span_id,
    )
    assert dict(db.attributes) == {
        "db.system": "postgresql",
        "db.namespace": "ldt_x_tickets",
        "db.operation.name": "read",
    }
