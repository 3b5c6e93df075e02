"""OpenTelemetry tracing for Ledgerdesk services.

One tracer provider per process, and one W3C trace context that follows a request
everywhere it goes:

* nameko RPC: nameko 2.14 sends a worker's ``context_data`` as AMQP headers prefixed
  ``nameko.`` and hands them to the callee as ``worker_ctx.data``. The ``Tracing``
  dependency provider therefore keeps ``traceparent`` in ``worker_ctx.data`` pointing at
  the current worker's span.
* events: our envelopes carry ``{"trace": {"traceparent": ...}}``, because an envelope may
  be relayed from an outbox long after (and far from) the worker that wrote it, so AMQP
  headers cannot be trusted to describe its origin.
* HTTP: the gateway starts every request's worker on a trace of its own, and continues a
  client's ``traceparent`` only once the request is authenticated
  (``TraceHandle.continue_trace``).

Only a ``traceparent`` of exactly the W3C Trace Context level 1 syntax is ever read
(``valid_traceparent``), wherever it comes from. ``tracestate`` is never read nor written:
Ledgerdesk has no vendor entries of its own, and a client's is free text that would be stamped
on every event the request causes, and kept for good in the audit ledger. Envelopes stored
with one still load; it is simply not carried on.

Telemetry carries context, not content: span attributes pass through
``scrub_attributes`` and exception text is redacted before it is recorded.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeGuard

from nameko.extensions import DependencyProvider
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "Tracing",
    "TraceHandle",
    "valid_traceparent",
    "current_trace_context",
    "extract_from_headers",
    "record_error",
    "scrub_attributes",
    "database_span",
    "setup_tracing",
    "start_span",
]

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_KEYS = (TRACEPARENT, TRACESTATE)
# W3C Trace Context level 1, version 00: version, trace id (not all zeros), parent span id (not
# all zeros) and flags, lowercase hex, nothing before or after. A later version is refused
# rather than read by its version 00 prefix, as the spec would allow: its added fields are
# nothing we could check, and a client has nothing to gain from sending one.
_TRACEPARENT_RE = re.compile(r"00-(?!0{32}-)[0-9a-f]{32}-(?!0{16}-)[0-9a-f]{16}-[0-9a-f]{2}")

# Only W3C TraceContext: baggage is deliberately not propagated, since it is an open
# channel for arbitrary (possibly personal) data to ride along with every call.
_PROPAGATOR = TraceContextTextMapPropagator()

# A ProxyTracer until setup_tracing runs, after which it delegates to the real provider,
# so importing this module before configuring tracing is harmless.
_TRACER = trace.get_tracer("ledgerdesk.kernel.tracing")

_setup_lock = threading.Lock()
_provider: TracerProvider | None = None
_attached_exporters: set[int] = set()


# --------------------------------------------------------------------------- setup


def setup_tracing(
    service_name: str,
    exporter: str = "none",
    span_exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process-wide tracer provider (idempotent) and return it.

    ``exporter`` is ``"none"`` (spans are created and propagated, not exported),
    ``"console"``, or ``"otlp"`` (OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``, or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, as OpenTelemetry's own variables say). It and
    ``service_name`` are fixed by the first call: OpenTelemetry refuses to replace a global
    provider. Later calls only attach ``span_exporter``
    (synchronously, via ``SimpleSpanProcessor``) so tests can observe spans.
    """
    global _provider
    if exporter not in ("none", "console", "otlp"):
        raise ValueError(f"unknown trace exporter {exporter!r}; use 'none', 'console' or 'otlp'")
    with _setup_lock:
        if _provider is None:
            existing = trace.get_tracer_provider()
            if isinstance(existing, TracerProvider):
                # Someone (another library, a test harness) got there first; adopt it
                # rather than fight over the global.
                _provider = existing
            else:
                _provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
                if exporter == "console":
                    _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
                elif exporter == "otlp":
                    # Imported only when chosen; batched, so a slow collector never holds
                    # up a worker (spans queue, and are dropped rather than block, when full).
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                        OTLPSpanExporter,
                    )

                    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
                trace.set_tracer_provider(_provider)
        else:
            name = _provider.resource.attributes.get(SERVICE_NAME)
            if name != service_name:
                log.debug("tracing already set up for %r; ignoring %r", name, service_name)
        if span_exporter is not None and id(span_exporter) not in _attached_exporters:
            _provider.add_span_processor(SimpleSpanProcessor(span_exporter))
            _attached_exporters.add(id(span_exporter))
        return _provider


# --------------------------------------------------------------------- propagation


def current_trace_context(context: Context | None = None) -> dict[str, str]:
    """The current (or given) context as W3C headers; ``{}`` when there is no span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def valid_traceparent(value: Any) -> TypeGuard[str]:
    """True for a ``traceparent`` of exactly the W3C Trace Context level 1 syntax."""
    return isinstance(value, str) and _TRACEPARENT_RE.fullmatch(value) is not None


def _clean_carrier(carrier: Any) -> dict[str, str]:
    """A valid ``traceparent`` alone: carriers come off the wire and may hold anything, and a
    ``tracestate`` is never carried on (see the module's docstring)."""
    if not isinstance(carrier, Mapping):
        return {}
    traceparent = carrier.get(TRACEPARENT)
    return {TRACEPARENT: traceparent} if valid_traceparent(traceparent) else {}


def _extract(carrier: Mapping[str, str]) -> Context:
    # Extract into an empty context: a carrier without a (valid) traceparent must
    # start a new trace, not silently adopt whatever happens to be current.
    return _PROPAGATOR.extract(_clean_carrier(carrier), context=Context())


def extract_from_headers(headers: Any) -> Context:
    """Parent context from HTTP headers (a werkzeug ``Headers`` or any mapping).

    Names are matched case-insensitively, as HTTP requires.
    """
    items = headers.items() if hasattr(headers, "items") else headers
    lowered: dict[str, str] = {}
    for key, value in items:
        name = str(key).lower()
        # First occurrence wins; a repeated traceparent is malformed anyway.
        if name in _TRACE_KEYS and name not in lowered:
            lowered[name] = value
    return _extract(lowered)


# ------------------------------------------------------------------------ scrubbing

_EMAIL_RE = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+\.[A-Za-z]{2,}")
_BEARER_RE = re.compile(r"\b(bearer|basic)\s+\S+", re.IGNORECASE)
# Well-known credential shapes: JWTs and vendor key prefixes.
_SECRET_RE = re.compile(
    r"\beyJ[\w-]{5,}\.[\w-]{5,}(\.[\w-]*)?"
    r"|\b(sk|pk|rk)_(live|test)_\w{8,}"
    r"|\bsk-[\w-]{20,}"
    r"|\b(ghp|gho|ghs|ghu|glpat|xox[abposr])[_-][A-Za-z0-9_-]{8,}"
    r"|\bAKIA[0-9A-Z]{12,}"
    r"|\bAIza[\w-]{20,}"
)
# What an identifier looks like: no whitespace, no '@', nothing that reads as prose.
# Route templates (``/v1/tickets/{ticket_id}``) are identifiers too: never a path as sent.
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9/][A-Za-z0-9_.:/#{}-]*")
_MAX_IDENTIFIER_LEN = 100
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

# Key fragments that mark a credential or personal data whatever the value looks like.
_SENSITIVE_KEY_FRAGMENTS = (
    "key",
    "token",
    "secret",
    "passw",
    "pwd",
    "authorization",
    "cookie",
    "credential",
    "signature",
    "private",
    "email",
    "e_mail",
    "phone",
)
# Last key segments that name content (ticket bodies, messages) rather than context.
_CONTENT_KEY_SEGMENTS = frozenset(
    {"body", "subject", "content", "message", "payload", "description", "comment", "text"}
)


def _sensitive_key(key: str) -> bool:
    lowered = key.lower()
    if any(fragment in lowered for fragment in _SENSITIVE_KEY_FRAGMENTS):
        return True
    return re.split(r"[._\-]", lowered)[-1] in _CONTENT_KEY_SEGMENTS


def _looks_random(value: str) -> bool:
    """A long unbroken mix of upper, lower and digits reads as a key, not an id."""
    return (
        len(value) >= 24
        and value.isalnum()
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


def _safe_scalar(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return True
    if not isinstance(value, str):
        # dicts, bytes, objects: payloads, and OTel could not store them anyway.
        return False
    if _UUID_RE.fullmatch(value):
        return True
    if (
        len(value) > _MAX_IDENTIFIER_LEN
        or not _IDENTIFIER_RE.fullmatch(value)
        or _EMAIL_RE.search(value)
        or _BEARER_RE.search(value)
        or _SECRET_RE.search(value)
    ):
        return False
    return not _looks_random(value)


def scrub_attributes(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep only attributes that are context (ids, numbers, short identifiers).

    Drops keys that name secrets or personal/content fields, and values that look like
    e-mail addresses, bearer tokens, API keys, free text or structured payloads. A
    dropped attribute is simply absent: a placeholder would still reveal that the
    field was present.
    """
    clean: dict[str, Any] = {}
    for key, value in (attrs or {}).items():
        if not isinstance(key, str) or _sensitive_key(key):
            continue
        if isinstance(value, list | tuple):
            kept = tuple(item for item in value if _safe_scalar(item))
            # OTel sequences must be homogeneous.
            if kept and len({type(item) for item in kept}) == 1:
                clean[key] = kept
        elif _safe_scalar(value):
            clean[key] = value
    return clean


def _redact_text(text: str) -> str:
    text = _EMAIL_RE.sub("<email>", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} <redacted>", text)
    return _SECRET_RE.sub("<secret>", text)


def record_error(span: Span, exc: BaseException, *, set_status: bool = True) -> None:
    """Record ``exc`` on ``span`` with redacted text, and mark the span as failed.

    Exception messages routinely quote the input that broke them (an address, a
    token), so message and stacktrace are redacted, and the status description is
    the exception type only.
    """
    if not span.is_recording():
        return
    span.record_exception(
        exc,
        attributes={
            "exception.message": _redact_text(str(exc)),
            "exception.stacktrace": _redact_text("".join(traceback.format_exception(exc))),
        },
    )
    if set_status:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


# -------------------------------------------------------------------------- spans


@contextmanager
def start_span(
    name: str,
    carrier: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """Start a span, make it current, and yield it.

    The parent comes from ``carrier`` (W3C headers) when given, else from the current
    context. Attributes are scrubbed. An ``Exception`` escaping the block is recorded
    and sets an error status, then propagates.
    """
    parent = _extract(carrier) if carrier is not None else None
    span = _TRACER.start_span(
        name, context=parent, kind=kind, attributes=scrub_attributes(attributes)
    )
    # OTel's own exception handling is off: it would record the raw message.
    with trace.use_span(
        span, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield span
        except Exception as exc:
            # Not BaseException: GreenletExit (a killed worker) or KeyboardInterrupt
            # are shutdowns, not failures of the traced work.
            record_error(span, exc)
            raise


# ------------------------------------------------------------------ nameko provider


@contextmanager
def database_span(operation: str, namespace: str) -> Iterator[None]:
    """A CLIENT span around one use of a database (a transaction, or a read of one statement),
    with the semantic conventions' ``db.*`` attributes: the system, the database's name and the
    kind of use. Never a statement: its text is code, but its parameters are data, and the
    span stays the same whatever the query. Only inside a trace: the loops that poll a database
    outside any request (the relay, the mail sender) would otherwise start a trace per poll."""
    if not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    with start_span(
        f"postgresql.{operation}",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.namespace": namespace,
            "db.operation.name": operation,
        },
    ):
        yield


def _conventional(entrypoint: Any, service: str, method: str) -> dict[str, str]:
    """OpenTelemetry's semantic-convention attributes of a worker's span: ``rpc.*`` for an RPC,
    ``http.*`` for an HTTP request (its route template, never the path as sent), ``messaging.*``
    for an event consumed from a queue; none for a timer."""
    from nameko.rpc import Rpc
    from nameko.web.handlers import HttpRequestHandler

    if isinstance(entrypoint, Rpc):
        return {"rpc.system": "nameko", "rpc.service": service, "rpc.method": method}
    if isinstance(entrypoint, HttpRequestHandler):
        route = getattr(entrypoint, "route", None)
        template = getattr(route, "path", None) or _PATH_PARAMETER.sub(r"{\1}", entrypoint.url)
        return {"http.request.method": entrypoint.method.upper(), "http.route": template}
    queue = getattr(getattr(entrypoint, "queue", None), "name", None)
    if isinstance(queue, str):
        return {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
        }
    return {}


_PATH_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _entrypoint_kind(entrypoint: Any) -> SpanKind:
    """SERVER for request/response entrypoints (rpc, http), CONSUMER otherwise."""
    # Imported lazily: werkzeug and the rpc machinery are only needed inside services.
    from nameko.rpc import Rpc
    from nameko.web.handlers import HttpRequestHandler

    if isinstance(entrypoint, Rpc | HttpRequestHandler):
        return SpanKind.SERVER
    return SpanKind.CONSUMER


class TraceHandle:
    """What a service sees as its ``Tracing`` dependency."""

    def __init__(self, provider: Tracing, worker_ctx: Any) -> None:
        self._provider = provider
        self._worker_ctx = worker_ctx

    def current_trace_context(self) -> dict[str, str]:
        """W3C headers for stamping envelopes (``envelope["trace"]``).

        Falls back to the worker's span when the caller is in a greenthread the
        handler spawned: new greenlets start with an empty context.
        """
        carrier = current_trace_context()
        if carrier:
            return carrier
        span = self._provider.worker_span(self._worker_ctx)
        if span is None:
            return {}
        return current_trace_context(trace.set_span_in_context(span, Context()))

    def continue_trace(self, carrier: Mapping[str, str]) -> bool:
        """Make the rest of this worker's work part of the trace ``carrier`` names (a client's
        ``traceparent``, once the gateway knows who sent it).

        A span is started under that parent, linked to the worker's own span (which started a
        trace of its own and holds what was done before), and made current: the RPCs the
        worker makes from now on, and the events they cause, carry the carrier's trace id.
        False, and nothing changes, without a valid ``traceparent`` or when the worker has
        already continued one.
        """
        return self._provider.continue_trace(self._worker_ctx, carrier)


@dataclass
class _Worker:
    name: str
    span: Span
    token: object
    attributes: dict[str, Any]
    # The span and context token of ``TraceHandle.continue_trace``, once called.
    continued: tuple[Span, object] | None = None


class Tracing(DependencyProvider):
    """Give every worker a span, parented on the trace it arrived with.

    Works under eventlet because nameko runs each worker (setup, handler, teardown)
    in one greenthread, and greenlets each have their own ``contextvars`` context,
    which is where OpenTelemetry keeps the current span.
    """

    def __init__(self) -> None:
        # Keyed by id(): nameko's WorkerContext is hashable but test doubles may not
        # be; the entry lives only from worker_setup to worker_teardown.
        self._workers: dict[int, _Worker] = {}

    def get_dependency(self, worker_ctx: Any) -> TraceHandle:
        return TraceHandle(self, worker_ctx)

    def worker_span(self, worker_ctx: Any) -> Span | None:
        """The worker's current span: the one that continued a trace, if any."""
        entry = self._workers.get(id(worker_ctx))
        if entry is None:
            return None
        return entry.continued[0] if entry.continued else entry.span

    def continue_trace(self, worker_ctx: Any, carrier: Mapping[str, str]) -> bool:
        entry = self._workers.get(id(worker_ctx))
        clean = _clean_carrier(carrier)
        if entry is None or entry.continued is not None or not clean:
            return False
        parent = _extract(clean)
        span = _TRACER.start_span(
            entry.name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=entry.attributes,
            links=[Link(entry.span.get_span_context())],
        )
        ctx = trace.set_span_in_context(span, parent)
        entry.continued = (span, otel_context.attach(ctx))
        _set_outgoing(worker_ctx, ctx)
        return True

    def _incoming_carrier(self, worker_ctx: Any, kind: SpanKind) -> dict[str, str]:
        if kind is SpanKind.CONSUMER:
            args = getattr(worker_ctx, "args", None) or ()
            envelope = args[0] if args else None
            trace_of = (
                envelope.get("trace")
                if isinstance(envelope, Mapping)
                else getattr(envelope, "trace", None)
            )
            if trace_of:
                # The envelope is authoritative for events: it was stamped where the
                # event was produced, whereas AMQP headers describe the relay.
                carrier = _clean_carrier(trace_of)
                if carrier:
                    return carrier
        return _clean_carrier(getattr(worker_ctx, "data", None))

    def worker_setup(self, worker_ctx: Any) -> None:
        entrypoint = worker_ctx.entrypoint
        method = entrypoint.method_name
        service = worker_ctx.service_name
        kind = _entrypoint_kind(entrypoint)
        parent = _extract(self._incoming_carrier(worker_ctx, kind))

        # Names and types only: arguments are payloads and never become attributes.
        attributes = {
            "nameko.service": service,
            "nameko.method": method,
            "nameko.entrypoint": type(entrypoint).__name__,
            **_conventional(entrypoint, service, method),
        }
        call_id = getattr(worker_ctx, "call_id", None)
        if isinstance(call_id, str):
            attributes["nameko.call_id"] = call_id

        name = f"{service}.{method}"
        scrubbed = scrub_attributes(attributes)
        span = _TRACER.start_span(name, context=parent, kind=kind, attributes=scrubbed)
        ctx = trace.set_span_in_context(span, parent)
        token = otel_context.attach(ctx)
        self._workers[id(worker_ctx)] = _Worker(name, span, token, scrubbed)
        _set_outgoing(worker_ctx, ctx)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        if not exc_info:
            return
        span = self.worker_span(worker_ctx)
        exc = exc_info[1]
        if span is None or not isinstance(exc, BaseException):
            return
        # Expected exceptions (validation, not-found) are the caller's fault: record
        # them, but do not mark this service's span as failed.
        expected = getattr(worker_ctx.entrypoint, "expected_exceptions", ()) or ()
        record_error(span, exc, set_status=not isinstance(exc, expected))

    def worker_teardown(self, worker_ctx: Any) -> None:
        entry = self._workers.pop(id(worker_ctx), None)
        if entry is None:
            return
        if entry.continued is not None:
            continued, continued_token = entry.continued
            continued.end()
            otel_context.detach(continued_token)  # type: ignore[arg-type]
        entry.span.end()
        otel_context.detach(entry.token)  # type: ignore[arg-type]


def _set_outgoing(worker_ctx: Any, ctx: Context) -> None:
    # RPC proxies read worker_ctx.context_data when they send, so anything the worker calls
    # becomes a child of the span in ``ctx``. Stale keys are removed so an outgoing call never
    # claims a parent that is not ours, and never carries a tracestate.
    outgoing = current_trace_context(ctx)
    for key in _TRACE_KEYS:
        if key in outgoing:
            worker_ctx.data[key] = outgoing[key]
        else:
            worker_ctx.data.pop(key, None)
