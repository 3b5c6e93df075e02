"""The gateway's HTTP layer: problem+json everywhere, JSON bodies, trace context from headers,
and an access-log event for every request.

A client's ``traceparent`` is continued only once the request is authenticated
(``continue_client_trace``): until then, and for the whole of an unauthenticated request, the
worker is on a trace of its own. A client's ``tracestate`` is never read. Every answer names the
trace the request was recorded under in a ``traceresponse`` header (W3C Trace Context level 2),
continued or not, so a client can always quote it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from eventlet import wsgi
from eventlet.event import Event
from marshmallow import Schema
from nameko.extensions import SharedExtension
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from gateway import accesslog, bodies, problems
from gateway.bodies import BODY_BYTES, MAX_BODY_BYTES
from gateway.edge import Edge, quota_of
from gateway.idempotency import IdempotencyStore
from gateway.pagination import PAGING
from gateway.ratelimit import RateLimited
from gateway.route import ROUTE, Route
from kernel import outbox
from kernel.cards import contains_card_number
from kernel.commands import load_command
from kernel.errors import DomainError, ValidationFailed
from kernel.groupcommit import GroupCommit
from kernel.nameko_adapters.store import store_of
from kernel.tracing import TraceHandle, valid_traceparent
from kernel.uow import EventSourcedStore

log = logging.getLogger(__name__)

IDENTITY = "ledgerdesk.identity"  # request.environ key: who the handler found the caller to be
RESOURCES = "ledgerdesk.resources"  # request.environ key: ids the request touched
BODY_LIMIT = "ledgerdesk.body_limit"  # request.environ key: the route's limit (``limit_body``)
CLIENT_TRACE = "ledgerdesk.client_trace"  # request.environ key: ``client_trace`` of the request
REQUEST_ID = "ledgerdesk.request_id"  # request.environ key: the request's id (``identify``)


class _ProblemWsgiApp(WsgiApp):
    """nameko's app, but an unknown route or method is a problem+json answer too."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        refused = refused_at_the_edge(self.server, self.url_map, request)
        if refused is not None:
            return refused(environ, start_response)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except HTTPException as exc:
            kind = problems.METHOD_NOT_ALLOWED if exc.code == 405 else problems.NO_ROUTE
            response = problems.problem(kind, exc.description or kind.title)
            if exc.code == 405:
                response.headers["Allow"] = ", ".join(exc.valid_methods or ())
            recorder = next(iter(self.server._providers), None)
            if recorder is not None:
                # No route, so no credential was checked: the client's trace is not continued,
                # and the access record has an id of its own (no worker, so no span).
                context = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"}
                answer_trace(response, context)
                recorder.record_access(request, response, context, accesslog.UNMATCHED_ROUTE)
            else:
                identify(request, response, {})
            return response(environ, start_response)
        request.path_values = values
        return provider.handle_request(request)(environ, start_response)


class ApiServer(WebServer):
    edge = Edge()

    def get_wsgi_app(self):
        return _ProblemWsgiApp(self)

    def get_wsgi_server(self, sock, wsgi_app, protocol=HttpOnlyProtocol, debug=False):
        # No per-request log line: it would carry the client's IP and the query string (which
        # may hold anything a client typed). Requests are recorded as access-log events instead.
        return wsgi.Server(
            sock, sock.getsockname(), wsgi_app, protocol=protocol, debug=debug, log_output=False
        )


class GatewayStore(SharedExtension):
    """What the gateway's entrypoints share of its own database: the idempotency records and
    the outbox of access-log events.

    The database and its keystore are the service's store (an ``EventStoreDependency``, which
    creates and migrates them, runs their one outbox relay and re-applies erasures at start);
    it is looked up on first use, since a service's extensions are set up side by side.
    """

    def setup(self) -> None:
        self._idempotency: IdempotencyStore | None = None
        self._access_log: GroupCommit[Any, None] | None = None

    # Methods, not properties: nameko reads every attribute of an extension when it binds it,
    # before anything is set up.
    def store(self) -> EventSourcedStore:
        return store_of(self.container)

    def idempotency(self) -> IdempotencyStore:
        if self._idempotency is None:
            store = self.store()
            assert store.cipher is not None
            self._idempotency = IdempotencyStore(store.db, store.cipher.keystore)
        return self._idempotency

    def record_access(self, envelope: Any) -> None:
        if self._access_log is None:
            # Concurrent requests share the access-log transaction (one commit for those that
            # finish meanwhile); each still returns only once its own record is committed.
            self._access_log = GroupCommit(self._record_accesses, self._record_access)
        self._access_log.submit(envelope)

    def _record_accesses(self, envelopes: Sequence[Any]) -> list[None]:
        with self.store().db.transaction() as cur:
            outbox.add(cur, envelopes)
        return [None] * len(envelopes)

    def _record_access(self, envelope: Any) -> None:
        with self.store().db.transaction() as cur:
            outbox.add(cur, [envelope])


class ApiHandler(HttpRequestHandler):
    server = ApiServer()
    gateway_store = GatewayStore()

    def __init__(
        self,
        method: str,
        url: str,
        max_body_bytes: int = BODY_BYTES,
        expected_exceptions: Any = DomainError,
        **declared: Any,
    ):
        # Everything else the route says of itself (gateway.route.Route): its roles, what it
        # takes and answers. The caller checks and the OpenAPI document read it from here.
        self.route = Route(method.lower(), url, **declared)
        self.max_body_bytes = max_body_bytes
        super().__init__(method, url, expected_exceptions=expected_exceptions)

    def handle_request(self, request: Request) -> Response:
        # nameko's own version, but the worker starts a trace of its own (its context data
        # holds no client header: nameko would carry it onwards in every RPC the worker makes);
        # the handler continues the client's once it has authenticated the request.
        request.shallow = False
        worker_data: dict[str, Any] = {}
        try:
            limit_body(request, self.max_body_bytes)
            context_data: dict[str, str] = {}
            request.environ[CLIENT_TRACE] = client_trace(request)
            request.environ[ROUTE] = self.route
            if _holds_nul([dict(request.args), getattr(request, "path_values", None) or {}]):
                # PostgreSQL refuses NUL in text: a query or path holding one is the client's
                # mistake, not a server error.
                raise ValidationFailed({"_schema": ["the URL may not contain NUL characters"]})
            args, kwargs = self.get_entrypoint_parameters(request)
            self.check_signature(args, kwargs)
            event = Event()
            self.container.spawn_worker(
                self,
                args,
                kwargs,
                context_data=context_data,
                handle_result=partial(self._handle_result, event, worker_data),
            )
            response = self.response_from_result(event.wait())
            if response.status_code < 400 and not self._caller_checked(request):
                raise Unchecked(f"{self.route.method} {self.route.rule} answered unchecked")
        except Exception as exc:
            response = self.response_from_exception(exc)
        answer_trace(response, worker_data)
        self.record_access(request, response, worker_data, self.url)
        return response

    def _caller_checked(self, request: Request) -> bool:
        """Whether a route that declares who may call it found out who did: a route cannot
        declare roles (or the operator token) and answer without checking them."""
        return self.route.auth is None or IDENTITY in request.environ

    def stop(self) -> None:
        # While the database is still there: what this interval counted is not lost.
        try:
            self.server.edge.write_summaries(final=True)
        finally:
            super().stop()

    def _handle_result(self, event, worker_data, worker_ctx, result, exc_info):
        worker_data.update(worker_ctx.data)
        event.send(result, exc_info)
        return result, exc_info

    def response_from_exception(self, exc: BaseException) -> Response:
        return problems.from_exception(exc)

    def record_access(
        self, request: Request, response: Response, worker_data: dict, route: str
    ) -> None:
        request_id, trace_id = identify(request, response, worker_data)
        identity = request.environ.get(IDENTITY) or {}
        if not identity and not self.server.edge.written_one_by_one(
            request.method, route, response.status_code
        ):
            return  # counted into this interval's access summary (gateway.accesslog)
        traceparent = worker_data.get("traceparent") or ""
        try:
            envelope = accesslog.access_event(
                event_id=request_id,
                tenant_id=identity.get("tenant_id"),
                actor_id=identity.get("agent_id") or identity.get("actor"),
                method=request.method,
                route=route,
                resource_ids=requested_ids(request),
                answer_ids=answer_ids(response),
                status=response.status_code,
                ip=self.server.edge.client_of(request),
                user_agent=request.headers.get("User-Agent"),
                trace_id=trace_id,
                at=dt.datetime.now(dt.UTC),
                trace={"traceparent": traceparent} if trace_id else {},
            )
            self.gateway_store.record_access(envelope)
            # One line per request, for operators: the route template, never the raw path or
            # query, and no client address (that is in the access-log event, encrypted later).
            log.info("%s %s -> %s trace=%s", request.method, route, response.status_code, trace_id)
        except Exception as exc:  # the answer stands; the log says which request lost its record
            log.error(
                "access-log event for %s %s (status %s) not recorded: %s",
                request.method,
                route,
                response.status_code,
                type(exc).__name__,
            )


api = ApiHandler.decorator


class Unchecked(Exception):
    """A bug: a route answered without checking the caller its declaration names (a 500)."""


def refused_at_the_edge(server: ApiServer, url_map: Any, request: Request) -> Response | None:
    """A 429 when the client's address is over its bucket (``gateway.edge``), before a route's
    handler runs: its body and credential are never read. Access-logged like any answer."""
    try:
        server.edge.admit(request)
        return None
    except RateLimited as exc:
        response = problems.from_exception(exc)
    recorder = next(iter(server._providers), None)
    if recorder is not None:
        try:
            provider, _ = url_map.bind_to_environ(request.environ).match()
            route = provider.url
        except HTTPException:
            route = accesslog.UNMATCHED_ROUTE
        # A refused request continues no one's trace.
        recorder.record_access(request, response, {}, route)
    else:
        identify(request, response, {})
    return response


def requested_ids(request: Request) -> list[str]:
    """The ids a request named: its path's, and those its handler added (``RESOURCES``)."""
    return [
        *map(str, (getattr(request, "path_values", None) or {}).values()),
        *map(str, request.environ.get(RESOURCES, ())),
    ]


def answer_ids(response: Response) -> list[str]:
    """Every id a JSON answer holds (``accesslog.ids_in``): a read of a list names everyone on
    the page, an update everyone in the resource it returns, whatever the endpoint. A problem
    (an error) is ``application/problem+json`` and names no one."""
    if response.mimetype != "application/json" or response.is_streamed:
        return []
    try:
        return accesslog.ids_in(json.loads(response.get_data()))
    except (ValueError, UnicodeDecodeError):
        return []


def touched_ids(request: Request, response: Response) -> list[str]:
    """Whom and what a request touched: the ids it named and those its answer holds."""
    return accesslog.named_ids(requested_ids(request), answer_ids(response))


def refuse_card_numbers(request: Request, data: Any = None) -> None:
    """422 for a request holding anything like a card number, anywhere, without echoing it."""
    if contains_card_number([dict(request.args), data]):
        raise ValidationFailed(
            {"_schema": ["a value looks like a card number: send a processor token instead"]}
        )


def client_trace(request: Request) -> dict[str, str]:
    """The trace context a request's client asked to continue: its ``traceparent`` if it has
    exactly one, of the W3C level 1 syntax (``kernel.tracing.valid_traceparent``); else none.
    Its ``tracestate`` is never taken."""
    values = request.headers.getlist("traceparent")
    # Its trace id is 32 hex digits of the client's choosing: 16 of them glued to letters
    # read as a card number (kernel.cards), which the access log would keep for good.
    if len(values) == 1 and valid_traceparent(values[0]) and not contains_card_number(values[0]):
        return {"traceparent": values[0]}
    return {}


def identify(
    request: Request, response: Response, worker_data: dict[str, Any]
) -> tuple[uuid.UUID, str | None]:
    """The request's id and trace id, named in its answer (``problems.identify``): the id is
    the one its access record gets, so the operator finds the request in the ledger by it."""
    request_id = request.environ.setdefault(REQUEST_ID, uuid.uuid4())
    traceparent = worker_data.get("traceparent") or ""
    trace_id = traceparent.split("-")[1] if valid_traceparent(traceparent) else None
    problems.identify(response, str(request_id), trace_id)
    quota = quota_of(request)
    if quota is not None and "RateLimit-Limit" not in response.headers:
        # A 429 already told the bucket that refused; anything else, what is left.
        response.headers.update(quota.headers())
    return request_id, trace_id


def answer_trace(response: Response, worker_data: dict[str, Any]) -> None:
    """Name the trace a request was recorded under: ``traceresponse``, as the worker left it."""
    traceparent = worker_data.get("traceparent")
    if valid_traceparent(traceparent):
        response.headers["traceresponse"] = traceparent


def continue_client_trace(tracing: TraceHandle, request: Request) -> None:
    """Once a request is authenticated: what its worker does from now on is part of the trace
    its client sent, if any (``TraceHandle.continue_trace``)."""
    carrier = request.environ.get(CLIENT_TRACE)
    if carrier:
        tracing.continue_trace(carrier)


def limit_body(request: Request, limit: int) -> None:
    """Refuse (413) a body declared larger than ``limit``, before anything reads it, and let
    ``read_json`` refuse one that turns out larger (one without a length)."""
    request.environ[BODY_LIMIT] = limit
    # Werkzeug cuts a body without a length at the maximum, silently: one byte more than the
    # limit is read, so a body past it is seen to be.
    request.max_content_length = limit + 1
    if request.content_length is not None and request.content_length > limit:
        raise problems.PayloadTooLarge(f"the body may be at most {limit} bytes")


def read_json(request: Request, schema: Schema, refuse_cards: bool = False) -> dict[str, Any]:
    """The request body, loaded as the services load it (``kernel.commands.load_command``):
    unknown fields are refused, never assigned, and so is a card number in any field but those
    its schema says are redacted.

    The body is at most the route's limit (``limit_body``), and JSON nested deeper than
    ``bodies.MAX_JSON_DEPTH`` is refused (400) before it is parsed.

    With ``refuse_cards`` (billing) a card-number-like value anywhere, the query and a body
    that is not JSON included, is refused before anything else reads the request.
    """
    limit = request.environ.get(BODY_LIMIT, MAX_BODY_BYTES)
    length = request.content_length
    if length is not None and length > limit:
        raise problems.PayloadTooLarge(f"the body may be at most {limit} bytes")
    try:
        raw = request.get_data()
    except RequestEntityTooLarge:
        raise problems.PayloadTooLarge(f"the body may be at most {limit} bytes") from None
    if len(raw) > limit:
        raise problems.PayloadTooLarge(f"the body may be at most {limit} bytes")
    try:
        data = bodies.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        if refuse_cards:
            refuse_card_numbers(request, raw.decode("utf-8", "replace"))
        if isinstance(exc, bodies.TooDeep):
            raise problems.BadJson(
                f"the body nests more than {bodies.MAX_JSON_DEPTH} levels deep"
            ) from None
        raise problems.BadJson("the body is not valid JSON") from None
    if refuse_cards:
        refuse_card_numbers(request, data)
    if _holds_nul(data):
        # PostgreSQL text cannot hold NUL, and no name or address needs one.
        raise ValidationFailed({"_schema": ["text may not contain NUL characters"]})
    if not isinstance(data, dict):
        raise ValidationFailed({"_schema": ["the body must be a JSON object"]})
    return load_command(schema, data)


def read_query(request: Request, schema: Schema) -> dict[str, str]:
    """The query's filters (every parameter but ``limit`` and ``cursor``), checked with the
    service's own query schema (the route's ``query``) as a body is with its command's schema:
    422 naming each parameter that is unknown (a misspelt filter would otherwise list
    everything, unfiltered), given twice, invalid or holding a card number. Returned as given:
    the service loads them again with the same schema.

    The values may be personal data (an e-mail address looked up): they go to the service and
    nowhere else, since no log line, span or access record of the gateway holds a query.
    """
    args = request.args
    given = {name: value for name, value in args.items() if name not in PAGING}
    repeated = {name: ["give it once"] for name in given if len(args.getlist(name)) > 1}
    if repeated:
        raise ValidationFailed(repeated)
    load_command(schema, given)
    return given


def _holds_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/json"
    )
