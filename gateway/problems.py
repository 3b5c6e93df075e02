"""Errors are part of the API: one table from exception to problem+json (RFC 9457)."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Kind:
    """One kind of problem: its ``type`` URI is ``TYPE_BASE#slug`` (``/docs/problems`` lists
    them all), so a client tells a version conflict from a state conflict without reading the
    text, and the page says what to do about each."""

    slug: str
    status: int
    title: str
    meaning: str

    @property
    def type(self) -> str:
        return f"{TYPE_BASE}#{self.slug}"


# A reference relative to the gateway (RFC 9457, 3.1.1): the page is served by every gateway,
# whatever its host name, and names no one else's.
TYPE_BASE = "/docs/problems"

MALFORMED_JSON = Kind(
    "malformed-json",
    400,
    "Malformed JSON",
    "The body is not JSON, or nests too deeply. Fix the request; do not retry it as it is.",
)
UNAUTHORIZED = Kind(
    "unauthorized",
    401,
    "Unauthorized",
    (
        "No credential, or one that is unknown, revoked or expired. Send a valid API key "
        "as a bearer token."
    ),
)
FORBIDDEN = Kind(
    "forbidden",
    403,
    "Forbidden",
    (
        "The credential is valid but its role may not do this, the tenant is cancelled, "
        "or four eyes refuse this decider."
    ),
)
NOT_FOUND = Kind(
    "not-found",
    404,
    "Not found",
    "No such resource, or it belongs to another tenant: the two are the same answer on purpose.",
)
NO_ROUTE = Kind(
    "no-route",
    404,
    "Not Found",
    "No endpoint at this path: check the path against the OpenAPI document.",
)
METHOD_NOT_ALLOWED = Kind(
    "method-not-allowed",
    405,
    "Method Not Allowed",
    "The path exists but not with this method; the Allow header lists those it has.",
)
VERSION_CONFLICT = Kind(
    "version-conflict",
    409,
    "Version conflict",
    (
        "The If-Match version is not the current one: someone changed the resource since "
        "you read it. Read it again, reapply your change and send the new ETag."
    ),
)
STATE_CONFLICT = Kind(
    "state-conflict",
    409,
    "Conflict",
    (
        "The resource's state does not allow this change (a closed ticket, a tenant "
        "already cancelled, a decision already made). Retrying the same request gives the "
        "same answer."
    ),
)
NOT_YET = Kind(
    "not-yet",
    409,
    "Not yet",
    (
        "What the request needs comes about by itself (an export still being written, "
        "say). Retry after the Retry-After seconds."
    ),
)
GONE = Kind(
    "gone",
    410,
    "Gone",
    (
        "It existed and is deleted for good (an export past its expiry, or ended by an "
        "erasure). Do not ask for it again."
    ),
)
PAYLOAD_TOO_LARGE = Kind(
    "payload-too-large",
    413,
    "Payload too large",
    "The body, or a file, is larger than the limit the detail names.",
)
VALIDATION_FAILED = Kind(
    "validation-failed",
    422,
    "Validation failed",
    (
        "The request is well-formed but a field is not valid; ``errors`` names each field "
        "and what is wrong with it."
    ),
)
PRECONDITION_REQUIRED = Kind(
    "precondition-required",
    428,
    "Precondition required",
    "This write must name the version it is based on: send If-Match with the ETag you last read.",
)
RATE_LIMITED = Kind(
    "rate-limited",
    429,
    "Too many requests",
    "Over the rate limit of your client address or API key. Wait the Retry-After seconds.",
)
INTERNAL_ERROR = Kind(
    "internal-error",
    500,
    "Internal server error",
    (
        "A fault of the platform's. Report the request_id to the operator, who can find "
        "the request by it."
    ),
)
SERVICE_UNAVAILABLE = Kind(
    "service-unavailable",
    503,
    "Service unavailable",
    "A dependency did not answer in time. Retry later, after Retry-After seconds where given.",
)

# The region router's own (gateway.router): a request no cell should be sent, and a cell's
# answer the router could not read.
BAD_REQUEST = Kind(
    "bad-request",
    400,
    "Bad request",
    "The request breaks HTTP (a malformed or repeated header, a malformed chunked body): the"
    " router sent it to no region. Fix the request; retrying it as it is fails again.",
)
BAD_GATEWAY = Kind(
    "bad-gateway",
    502,
    "Bad gateway",
    "The region's cell answered something the router could not read. Retry later; report the"
    " request_id if it persists.",
)

KINDS: tuple[Kind, ...] = (
    MALFORMED_JSON,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    NO_ROUTE,
    METHOD_NOT_ALLOWED,
    VERSION_CONFLICT,
    STATE_CONFLICT,
    NOT_YET,
    GONE,
    PAYLOAD_TOO_LARGE,
    VALIDATION_FAILED,
    PRECONDITION_REQUIRED,
    RATE_LIMITED,
    INTERNAL_ERROR,
    SERVICE_UNAVAILABLE,
    BAD_REQUEST,
    BAD_GATEWAY,
)

# exception type -> kind; the first match wins, so subclasses come first.
PROBLEMS: list[tuple[type[BaseException], Kind]] = [
    (BadJson, MALFORMED_JSON),
    (errors.Unauthorized, UNAUTHORIZED),
    (errors.Forbidden, FORBIDDEN),
    (errors.NotFound, NOT_FOUND),
    (errors.VersionConflict, VERSION_CONFLICT),
    (errors.RetryLater, NOT_YET),
    (errors.Conflict, STATE_CONFLICT),
    (errors.Gone, GONE),
    (PayloadTooLarge, PAYLOAD_TOO_LARGE),
    (errors.TooLarge, PAYLOAD_TOO_LARGE),
    # Werkzeug's, when a handler reads a body past the route's limit (``http.limit_body``).
    (RequestEntityTooLarge, PAYLOAD_TOO_LARGE),
    (PreconditionRequired, PRECONDITION_REQUIRED),
    (errors.ValidationFailed, VALIDATION_FAILED),
    (RateLimited, RATE_LIMITED),
    (errors.ServiceUnavailable, SERVICE_UNAVAILABLE),
]

# The headers every answer carries: the request's own id (the id of its access record in the
# audit ledger, where the operator finds it) and the trace it was recorded under.
REQUEST_ID = "X-Request-Id"


def problem(
    kind: Kind,
    detail: str = "",
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": kind.type,
        "title": kind.title,
        "status": kind.status,
        "detail": detail or kind.title,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(
        json.dumps(body),
        status=kind.status,
        headers=headers,
        content_type="application/problem+json",
    )


def identify(response: Response, request_id: str, trace_id: str | None) -> None:
    """Name the request in its answer: the ``X-Request-Id`` header on every answer, and
    ``request_id`` and ``trace_id`` in a problem's body, so a client can quote what the
    operator can look up."""
    response.headers[REQUEST_ID] = request_id
    if response.mimetype != "application/problem+json" or response.is_streamed:
        return
    try:
        body = json.loads(response.get_data())
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(body, dict):
        body["request_id"] = request_id
        body["trace_id"] = trace_id
        response.set_data(json.dumps(body))


def from_exception(exc: BaseException) -> Response:
    for exc_type, kind in PROBLEMS:
        if isinstance(exc, exc_type):
            detail = getattr(exc, "detail", "") or kind.title
            if kind is UNAUTHORIZED:
                return problem(kind, detail, headers={"WWW-Authenticate": "Bearer"})
            if isinstance(exc, RateLimited) and exc.limit:
                headers = {"Retry-After": str(exc.retry_after), **exc.quota.headers()}
                return problem(kind, detail, headers=headers)
            if isinstance(exc, RateLimited | errors.RetryLater | errors.TenantMoving):
                return problem(kind, detail, headers={"Retry-After": str(exc.retry_after)})
            return problem(kind, detail, errors=getattr(exc, "errors", None))
    # A bug: the client learns nothing of the internals; the log keeps the type, not the data.
    # The frames say where; the message is left out, as it may quote request data.
    log.error(
        "unhandled %s in the gateway at\n%s",
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return problem(INTERNAL_ERROR, "an unexpected error occurred")
