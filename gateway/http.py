"""The gateway's HTTP entrypoint: problem+json errors, JSON bodies, trace context from headers."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from eventlet.event import Event
from marshmallow import Schema, ValidationError
from nameko.web.handlers import HttpRequestHandler
from werkzeug.wrappers import Request, Response

from gateway import problems
from kernel.errors import DomainError, ValidationFailed

MAX_BODY_BYTES = 1 << 20


class ApiHandler(HttpRequestHandler):
    def __init__(self, method: str, url: str, **kwargs: Any):
        kwargs.setdefault("expected_exceptions", DomainError)
        super().__init__(method, url, **kwargs)

    def handle_request(self, request: Request) -> Response:
        # nameko's own version, but the W3C trace context joins the worker's context data,
        # which nameko carries onwards in the headers of every RPC the worker makes.
        request.shallow = False
        try:
            context_data = {
                name: request.headers[name]
                for name in ("traceparent", "tracestate")
                if request.headers.get(name)
            }
            args, kwargs = self.get_entrypoint_parameters(request)
            self.check_signature(args, kwargs)
            event = Event()
            self.container.spawn_worker(
                self,
                args,
                kwargs,
                context_data=context_data,
                handle_result=partial(self.handle_result, event),
            )
            return self.response_from_result(event.wait())
        except Exception as exc:
            return self.response_from_exception(exc)

    def response_from_exception(self, exc: BaseException) -> Response:
        return problems.from_exception(exc)


api = ApiHandler.decorator


def read_json(request: Request, schema: Schema) -> dict[str, Any]:
    """The request body, loaded by ``schema``; unknown fields are refused, never assigned."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise problems.PayloadTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > MAX_BODY_BYTES:
        raise problems.PayloadTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise problems.BadJson("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailed({"_schema": ["the body must be a JSON object"]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(exc.normalized_messages()) from None


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/json"
    )
