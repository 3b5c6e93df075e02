"""Unit tests for kernel.tracing: no broker, spans captured in memory."""

from __future__ import annotations

import eventlet
import pytest
from nameko.rpc import Rpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kernel.envelope import Envelope
from kernel.tracing import (
    Tracing,
    current_trace_context,
    extract_from_headers,
    scrub_attributes,
    setup_tracing,
    start_span,
    valid_traceparent,
)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"

OTHER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
OTHER_SPAN_ID = 0xB7AD6B7169203331
OTHER_TRACEPARENT = f"00-{OTHER_TRACE_ID:032x}-{OTHER_SPAN_ID:016x}-01"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    # The global provider can be set only once per process; whoever sets it first,
    # this attaches our own exporter to it.
    span_exporter = InMemorySpanExporter()
    setup_tracing("ledgerdesk-tests", span_exporter=span_exporter)
    return span_exporter


@pytest.fixture(autouse=True)
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    yield exporter
    exporter.clear()


def _finished(exporter: InMemorySpanExporter, name: str):
    matching = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(matching) == 1, [s.name for s in exporter.get_finished_spans()]
    return matching[0]


def _traceparent_ids(traceparent: str) -> tuple[int, int]:
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16)


class FakeEntrypoint:
    def __init__(self, method_name: str, expected_exceptions: tuple = ()) -> None:
        self.method_name = method_name
        self.expected_exceptions = expected_exceptions


class FakeWorkerCtx:
    def __init__(self, method_name="handle", args=(), data=None, entrypoint=None) -> None:
        self.service_name = "tickets"
        self.entrypoint = entrypoint or FakeEntrypoint(method_name)
        self.args = args
        self.kwargs = {}
        self.data = dict(data or {})


def _run_worker(provider: Tracing, worker_ctx, exc: BaseException | None = None):
    """Drive a provider the way nameko's container does, around a handler body."""
    provider.worker_setup(worker_ctx)
    handle = provider.get_dependency(worker_ctx)
    inside = handle.current_trace_context()
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    provider.worker_result(worker_ctx, None, exc_info)
    provider.worker_teardown(worker_ctx)
    return inside


# ------------------------------------------------------------------------- setup


def test_setup_tracing_is_idempotent(exporter):
    first = setup_tracing("ledgerdesk-tests")
    assert setup_tracing("another-name", span_exporter=exporter) is first
    assert trace.get_tracer_provider() is first
    assert "service.name" in first.resource.attributes


def test_setup_tracing_rejects_unknown_exporter():
    with pytest.raises(ValueError):
        setup_tracing("ledgerdesk-tests", exporter="zipkin")


# ----------------------------------------------------------------------- start_span


def test_start_span_parents_on_carrier(spans):
    with start_span("child", carrier={"traceparent": TRACEPARENT}) as span:
        assert span.get_span_context().trace_id == TRACE_ID

    finished = _finished(spans, "child")
    assert finished.context.trace_id == TRACE_ID
    assert finished.parent is not None
    assert finished.parent.span_id == PARENT_SPAN_ID
    assert finished.parent.is_remote


def test_start_span_without_carrier_nests_under_current(spans):
    with start_span("outer") as outer, start_span("inner"):
        pass
    inner = _finished(spans, "inner")
    assert inner.parent.span_id == outer.get_span_context().span_id
    assert inner.context.trace_id == outer.get_span_context().trace_id


def test_start_span_with_invalid_carrier_starts_new_trace(spans):
    with start_span("outer"), start_span("fresh", carrier={"traceparent": "garbage"}):
        pass
    fresh = _finished(spans, "fresh")
    assert fresh.parent is None


def test_current_trace_context_round_trip(spans):
    assert current_trace_context() == {}
    with start_span("producer", carrier={"traceparent": TRACEPARENT}) as span:
        carrier = current_trace_context()
    trace_id, span_id = _traceparent_ids(carrier["traceparent"])
    assert trace_id == TRACE_ID
    assert span_id == span.get_span_context().span_id

    with start_span("consumer", carrier=carrier):
        pass
    consumer = _finished(spans, "consumer")
    assert consumer.context.trace_id == TRACE_ID
    assert consumer.parent.span_id == span.get_span_context().span_id


def test_a_tracestate_is_never_carried_on():
    # Free text from whoever sent it (a card number, say), stamped on every event otherwise.
    carrier = {"traceparent": TRACEPARENT, "tracestate": "pan=4111 1111 1111 1111"}
    with start_span("s", carrier=carrier) as span:
        assert span.get_span_context().trace_id == TRACE_ID
        assert set(current_trace_context()) == {"traceparent"}


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "00-00000000000000000000000000000001-0000000000000001-ff",
    ],
)
def test_a_traceparent_of_the_level_1_syntax_is_valid(value: str):
    assert valid_traceparent(value)
    assert trace.get_current_span(extract_from_headers({"traceparent": value})).get_span_context()


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT.upper(),  # hex is lowercase
        f" {TRACEPARENT}",  # nothing around it
        f"{TRACEPARENT} ",
        f"{TRACEPARENT}\n",
        f"{TRACEPARENT}-what-follows",  # version 00 has four fields
        "cc" + TRACEPARENT[2:],  # a later version: refused, not read by its prefix
        "cc" + TRACEPARENT[2:] + "-what-follows",
        "ff" + TRACEPARENT[2:],
        f"00-{'0' * 32}-{PARENT_SPAN_ID:016x}-01",  # all-zero ids
        f"00-{TRACE_ID:032x}-{'0' * 16}-01",
        f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-1",
        f"00-{TRACE_ID:032x}"[:-1] + f"-{PARENT_SPAN_ID:016x}-01",  # 31 hex digits
        f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}"[:-1] + "-01",  # 15
        f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-0g",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,00-4bf92f3577b34da6",
        "pan=4111 1111 1111 1111",
        "",
        None,
        42,
    ],
)
def test_anything_else_is_dropped_and_a_new_trace_started(value: object):
    assert not valid_traceparent(value)
    headers = {"traceparent": value, "tracestate": "pan=4111 1111 1111 1111"}
    context = extract_from_headers({k: v for k, v in headers.items() if isinstance(v, str)})
    assert not trace.get_current_span(context).get_span_context().is_valid
    with start_span("fresh", carrier={"traceparent": value}) as span:  # type: ignore[dict-item]
        assert span.get_span_context().trace_id != TRACE_ID
        assert set(current_trace_context()) == {"traceparent"}


def test_exception_is_recorded_with_error_status(spans):
    with pytest.raises(ValueError), start_span("boom"):
        raise ValueError("no such ticket for alice@example.com")

    finished = _finished(spans, "boom")
    assert finished.status.status_code is StatusCode.ERROR
    events = [e for e in finished.events if e.name == "exception"]
    assert len(events) == 1
    assert events[0].attributes["exception.type"] == "ValueError"
    # The message is kept for debugging, but not the address it quoted.
    assert "no such ticket" in events[0].attributes["exception.message"]
    assert "alice@example.com" not in events[0].attributes["exception.message"]
    assert "alice@example.com" not in events[0].attributes["exception.stacktrace"]
    assert "alice@example.com" not in (finished.status.description or "")


def test_start_span_scrubs_attributes(spans):
    attrs = {"ticket_id": "t-42", "requester": "bob@example.org", "api_key": "abc"}
    with start_span("scrubbed", attributes=attrs):
        pass
    assert dict(_finished(spans, "scrubbed").attributes) == {"ticket_id": "t-42"}


# ----------------------------------------------------------------------- scrubbing


def test_scrub_attributes_drops_emails_and_secrets():
    attrs = {
        "ticket_id": "3f2c7a1e-8b4d-4c2a-9e1f-0a1b2c3d4e5f",
        "tenant": "acme",
        "attempt": 3,
        "latency_ms": 12.5,
        "retry": True,
        "tags": ["billing", "vip"],
        "requester": "Alice <alice@example.com>",
        "cc": "bob@example.org",
        "api_key": "short",
        "X-Api-Key": "k",
        "access_token": "t",
        "client_secret": "s",
        "password": "hunter2",
        "Authorization": "Bearer abc.def.ghi",
        "header": "Bearer abcdef123456",
        "leaked": "sk_live_51HabcdefGHIJKL",
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
        "opaque": "Zx8Qm2Lp9Rt4Vw7Yb1Nc5Kd3",
        "body": "Printer",
        "note_text": "printer on fire since monday",
        "payload": {"ticket": 1},
        "raw": b"bytes",
        "missing": None,
    }
    assert scrub_attributes(attrs) == {
        "ticket_id": "3f2c7a1e-8b4d-4c2a-9e1f-0a1b2c3d4e5f",
        "tenant": "acme",
        "attempt": 3,
        "latency_ms": 12.5,
        "retry": True,
        "tags": ("billing", "vip"),
    }


def test_scrub_attributes_filters_sequences():
    assert scrub_attributes({"ids": ["t-1", "eve@example.com", "t-2"]}) == {"ids": ("t-1", "t-2")}
    assert scrub_attributes({"ids": ["eve@example.com"]}) == {}
    assert scrub_attributes(None) == {}


# ------------------------------------------------------------------------- headers


def test_extract_from_headers_is_case_insensitive(spans):
    ctx = extract_from_headers({"TraceParent": TRACEPARENT, "Content-Type": "json"})
    span_context = trace.get_current_span(ctx).get_span_context()
    assert span_context.trace_id == TRACE_ID
    assert span_context.span_id == PARENT_SPAN_ID
    assert not trace.get_current_span(extract_from_headers({})).get_span_context().is_valid


# ------------------------------------------------------------------ nameko provider


def test_provider_parents_on_worker_ctx_data_and_rewrites_it(spans):
    provider = Tracing()
    worker_ctx = FakeWorkerCtx(
        method_name="assign",
        data={"traceparent": TRACEPARENT, "tracestate": "vendor=abc", "tenant": "acme"},
        entrypoint=Rpc(),
    )
    worker_ctx.entrypoint.method_name = "assign"

    provider.worker_setup(worker_ctx)
    current = trace.get_current_span()
    assert current.get_span_context().trace_id == TRACE_ID
    outgoing = dict(worker_ctx.data)
    provider.worker_result(worker_ctx, "ok", None)
    provider.worker_teardown(worker_ctx)

    span = _finished(spans, "tickets.assign")
    assert span.kind is SpanKind.SERVER
    assert span.context.trace_id == TRACE_ID
    assert span.parent.span_id == PARENT_SPAN_ID
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes) == {
        "nameko.service": "tickets",
        "nameko.method": "assign",
        "nameko.entrypoint": "Rpc",
        "rpc.system": "nameko",
        "rpc.service": "tickets",
        "rpc.method": "assign",
    }
    # Downstream RPC calls made by this worker carry the worker's own span.
    assert _traceparent_ids(outgoing["traceparent"]) == (TRACE_ID, span.context.span_id)
    assert "tracestate" not in outgoing  # whoever sent it, it goes no further
    assert outgoing["tenant"] == "acme"
    # The worker's context was detached at teardown.
    assert not trace.get_current_span().get_span_context().is_valid


def test_provider_prefers_envelope_trace_for_event_consumers(spans):
    provider = Tracing()
    envelope = {
        "type": "ticket.created",
        "tenant_id": "acme",
        "data": {"subject": "help", "requester": "carol@example.com"},
        "trace": {"traceparent": TRACEPARENT},
    }
    # Headers describe whoever relayed the event; the envelope describes its origin.
    worker_ctx = FakeWorkerCtx(
        method_name="on_ticket_created",
        args=(envelope,),
        data={"traceparent": OTHER_TRACEPARENT, "tracestate": "relay=1"},
    )
    _run_worker(provider, worker_ctx)

    span = _finished(spans, "tickets.on_ticket_created")
    assert span.kind is SpanKind.CONSUMER
    assert span.context.trace_id == TRACE_ID
    assert span.parent.span_id == PARENT_SPAN_ID
    # Nothing from the payload became an attribute.
    assert set(span.attributes) == {"nameko.service", "nameko.method", "nameko.entrypoint"}
    assert _traceparent_ids(worker_ctx.data["traceparent"]) == (TRACE_ID, span.context.span_id)
    # The relay's tracestate must not be attributed to the envelope's trace.
    assert "tracestate" not in worker_ctx.data


def test_provider_without_incoming_context_starts_a_new_trace(spans):
    provider = Tracing()
    worker_ctx = FakeWorkerCtx(method_name="tick", args=({"no": "trace"},))
    with start_span("unrelated"):
        # Even with something current, a worker without a carrier is a new root.
        _run_worker(provider, worker_ctx)
    span = _finished(spans, "tickets.tick")
    assert span.parent is None
    assert _traceparent_ids(worker_ctx.data["traceparent"])[1] == span.context.span_id


def test_provider_records_worker_exceptions(spans):
    provider = Tracing()
    worker_ctx = FakeWorkerCtx(method_name="fail", data={"traceparent": TRACEPARENT})
    try:
        raise RuntimeError("db down for dave@example.com")
    except RuntimeError as exc:
        _run_worker(provider, worker_ctx, exc)

    span = _finished(spans, "tickets.fail")
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    assert "dave@example.com" not in event.attributes["exception.message"]


def test_provider_expected_exception_is_recorded_without_error_status(spans):
    provider = Tracing()
    worker_ctx = FakeWorkerCtx(
        entrypoint=FakeEntrypoint("get", expected_exceptions=(KeyError,)),
    )
    _run_worker(provider, worker_ctx, KeyError("t-9"))

    span = _finished(spans, "tickets.get")
    assert span.status.status_code is StatusCode.UNSET
    assert [e.name for e in span.events] == ["exception"]


def test_dependency_stamps_envelopes_with_current_context(spans):
    provider = Tracing()
    worker_ctx = FakeWorkerCtx(method_name="create", data={"traceparent": TRACEPARENT})
    provider.worker_setup(worker_ctx)
    handle = provider.get_dependency(worker_ctx)
    try:
        with start_span("write_outbox") as inner:
            stamped = handle.current_trace_context()
        # A greenthread spawned by the handler starts with an empty context; the
        # handle falls back to the worker's span there.
        from_spawned = eventlet.spawn(handle.current_trace_context).wait()
        from_worker = handle.current_trace_context()
    finally:
        provider.worker_teardown(worker_ctx)

    worker_span = _finished(spans, "tickets.create")
    assert _traceparent_ids(stamped["traceparent"]) == (TRACE_ID, inner.get_span_context().span_id)
    assert _traceparent_ids(from_spawned["traceparent"]) == (TRACE_ID, worker_span.context.span_id)
    assert from_worker == from_spawned


def test_context_is_per_greenthread_under_eventlet(spans):
    """Interleaved workers each see their own span (contextvars per greenlet)."""
    provider = Tracing()
    seen: dict[str, list[int]] = {}

    def worker(name: str, traceparent: str) -> None:
        worker_ctx = FakeWorkerCtx(method_name=name, data={"traceparent": traceparent})
        provider.worker_setup(worker_ctx)
        try:
            observed = []
            for _ in range(3):
                # Yield to the other worker between observations.
                eventlet.sleep(0)
                observed.append(trace.get_current_span().get_span_context().trace_id)
            seen[name] = observed
        finally:
            provider.worker_teardown(worker_ctx)

    threads = [
        eventlet.spawn(worker, "first", TRACEPARENT),
        eventlet.spawn(worker, "second", OTHER_TRACEPARENT),
    ]
    for thread in threads:
        thread.wait()

    assert seen == {"first": [TRACE_ID] * 3, "second": [OTHER_TRACE_ID] * 3}
    assert _finished(spans, "tickets.first").context.trace_id == TRACE_ID
    assert _finished(spans, "tickets.second").context.trace_id == OTHER_TRACE_ID
    # Nothing leaked into the spawning greenthread.
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_worker_continues_a_trace_only_when_told_to(spans):
    # The gateway's workers start a trace of their own; once the request is authenticated the
    # gateway continues the client's, and everything after is in it.
    provider = Tracing()
    worker_ctx = FakeWorkerCtx(method_name="create_ticket", entrypoint=Rpc())
    worker_ctx.entrypoint.method_name = "create_ticket"
    provider.worker_setup(worker_ctx)
    handle = provider.get_dependency(worker_ctx)
    before = dict(worker_ctx.data)
    own_trace = trace.get_current_span().get_span_context().trace_id
    assert own_trace != TRACE_ID

    assert not handle.continue_trace({"traceparent": "00-garbage", "tracestate": "a=b"})
    assert worker_ctx.data == before
    assert handle.continue_trace({"traceparent": TRACEPARENT, "tracestate": "pan=4111"})
    continued = trace.get_current_span().get_span_context()
    assert continued.trace_id == TRACE_ID
    assert _traceparent_ids(worker_ctx.data["traceparent"]) == (TRACE_ID, continued.span_id)
    assert "tracestate" not in worker_ctx.data
    assert _traceparent_ids(handle.current_trace_context()["traceparent"])[0] == TRACE_ID
    # Once only: a second parent would split the worker's work over two traces.
    assert not handle.continue_trace({"traceparent": OTHER_TRACEPARENT})
    provider.worker_teardown(worker_ctx)

    own, joined = (s for s in spans.get_finished_spans() if s.name == "tickets.create_ticket")
    if own.context.trace_id == TRACE_ID:
        own, joined = joined, own
    assert own.context.trace_id == own_trace and own.parent is None
    assert joined.context.trace_id == TRACE_ID and joined.parent.span_id == PARENT_SPAN_ID
    assert [link.context.span_id for link in joined.links] == [own.context.span_id]
    assert not trace.get_current_span().get_span_context().is_valid


def test_an_event_stored_with_a_tracestate_still_loads_and_continues_its_trace_without_it(spans):
    # Events written before tracestate was dropped carry one: they load as before, and their
    # consumers continue the trace, but the state goes no further.
    stored = {
        "envelope_version": 1,
        "event_id": "4a4f5c8e-0b7e-4f57-9a84-1a4f1b2c3d4e",
        "type": "ticket_created",
        "schema_version": 1,
        "source": "tickets",
        "stream_id": "ticket-1",
        "stream_version": 1,
        "tenant_id": None,
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "actor_id": None,
        "trace": {"traceparent": TRACEPARENT, "tracestate": "pan=4111 1111 1111 1111"},
        "payload": {},
    }
    envelope = Envelope.from_dict(stored)
    assert envelope.trace["tracestate"] == "pan=4111 1111 1111 1111"

    provider = Tracing()
    worker_ctx = FakeWorkerCtx(method_name="on_ticket_created", args=(envelope,))
    _run_worker(provider, worker_ctx)

    span = _finished(spans, "tickets.on_ticket_created")
    assert span.context.trace_id == TRACE_ID and span.parent.span_id == PARENT_SPAN_ID
    assert "tracestate" not in worker_ctx.data
    assert not span.context.trace_state
