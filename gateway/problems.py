"""Errors are part of the API: one table from exception to problem+json (RFC 9457)."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from gateway.ratelimit import RateLimited
from kernel import errors

log = logging.getLogger(__name__)


class BadJson(errors.DomainError):
    pass


class PayloadTooLarge(errors.DomainError):
    pass


class PreconditionRequired(errors.DomainError):
    """A write that must name the version it was based on did not (no If-Match)."""


# exception type -> (status, title); the first match wins, so subclasses come first.
PROBLEMS: list[tuple[type[BaseException], int, str]] = [
    (BadJson, 400, "Malformed JSON"),
    (errors.Unauthorized, 401, "Unauthorized"),
    (errors.Forbidden, 403, "Forbidden"),
    (errors.NotFound, 404, "Not found"),
    (errors.Conflict, 409, "Conflict"),
    (errors.Gone, 410, "Gone"),
    (PayloadTooLarge, 413, "Payload too large"),
    (errors.TooLarge, 413, "Payload too large"),
    # Werkzeug's, when a handler reads a body past the route's limit (``http.limit_body``).
    (RequestEntityTooLarge, 413, "Payload too large"),
    (PreconditionRequired, 428, "Precondition required"),
    (errors.ValidationFailed, 422, "Validation failed"),
    (RateLimited, 429, "Too many requests"),
    (errors.ServiceUnavailable, 503, "Service unavailable"),
]


def problem(
    status: int,
    title: str,
    detail: str = "",
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail or title,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/problem+json"
    )


def from_exception(exc: BaseException) -> Response:
    for exc_type, status, title in PROBLEMS:
        if isinstance(exc, exc_type):
            detail = getattr(exc, "detail", "") or title
            if status == 401:
                return problem(status, title, detail, headers={"WWW-Authenticate": "Bearer"})
            if isinstance(exc, RateLimited | errors.RetryLater):
                return problem(status, title, detail, headers={"Retry-After": str(exc.retry_after)})
            return problem(status, title, detail, errors=getattr(exc, "errors", None))
    # A bug: the client learns nothing of the internals; the log keeps the type, not the data.
    # The frames say where; the message is left out, as it may quote request data.
    log.error(
        "unhandled %s in the gateway at\n%s",
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return problem(500, "Internal server error", "an unexpected error occurred")
