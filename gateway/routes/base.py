"""The pieces every route uses: who calls (``_caller``, ``_operator``), replaying an
idempotent request, and pages of a list.

Each resource's routes are a mixin of ``Routes`` (``gateway.routes.*``); ``GatewayService``
combines them and gives them their dependencies, which ``Routes`` names for the type checker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import problems
from gateway.http import IDENTITY, continue_client_trace, json_response, touched_ids
from gateway.idempotency import HEADER as IDEMPOTENCY_KEY
from gateway.idempotency import PLATFORM, fingerprint
from gateway.pagination import keyset_cursor, page_params, read_keyset
from gateway.route import ROUTE, route_of
from kernel.cards import contains_card_number
from kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Unauthorized,
    ValidationFailed,
    VersionConflict,
)
from services.retention.contracts import CHANGE_STATUSES

# Responses that carry a secret are stored for replay without it: a key, or a webhook's
# signing secret, is shown once.
SECRET_FIELDS = ("api_key", "secret")


def operator_token_matches(presented: str, expected: str) -> bool:
    """Whether a presented operator token is the configured one, in constant time.

    An empty token never matches, on either side: a process configured without an operator
    token (or with an empty one) has no operator, rather than one any bare ``Bearer`` opens.
    Digests are compared, so the time taken says nothing about the token's length either.
    """
    same = hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
    return same and bool(presented) and bool(expected)


class Routes:
    """What every route's method may use. The attributes are ``GatewayService``'s
    dependencies, named here for the type checker: an RPC proxy per service of the platform
    (created from ``kernel.platform.SERVICES``), and its own."""

    name: str
    accounts: Any
    tickets: Any
    billing: Any
    audit: Any
    retention: Any
    limits: Any
    credentials: Any
    idempotency: Any
    tracing: Any
    config: Any
    store: Any
    audit_keys: Any
    broker_probe: Any

    def _caller(self, request: Request) -> dict[str, Any]:
        """Who calls, if the route's declaration (``gateway.route.Route``) lets them: its
        roles, and whether it serves a cancelled tenant. The declaration is the only source."""
        route = route_of(request)
        if not route.roles:
            raise TypeError(f"{route.method} {route.rule} declares no roles to check")
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("a bearer API key is required")
        # An address whose keys were refused too often is refused before its key costs a read.
        self.limits.before_authentication(request)
        try:
            identity = self.credentials.authenticate(key.strip())
        except Unauthorized:
            self.limits.authentication_failed(request, "api_key")
            raise
        request.environ[IDENTITY] = identity
        continue_client_trace(self.tracing, request)
        self.limits.check(identity["key_id"], request)
        if identity["role"] not in route.roles:
            raise Forbidden(f"the {identity['role']} role may not do this")
        if identity["tenant_status"] != "active" and not route.while_cancelled:
            raise Forbidden(
                "the tenant is cancelled: only reactivation and data export (access requests"
                " and their exports) are possible"
            )
        return identity

    def _operator(self, request: Request) -> None:
        route = route_of(request)
        if not route.operator:
            raise TypeError(f"{route.method} {route.rule} does not declare the operator token")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.config["LEDGERDESK"].operator_token
        presented = scheme.lower() == "bearer" and bool(token.strip())
        if presented:
            self.limits.before_authentication(request)
        if not presented or not operator_token_matches(token.strip(), expected):
            if presented:
                self.limits.authentication_failed(request, "operator_token")
            raise Unauthorized("the operator token is required")
        request.environ[IDENTITY] = {"actor": "operator"}
        continue_client_trace(self.tracing, request)
        self.limits.check("operator", request)

    def _idempotent(
        self,
        request: Request,
        scope: str,
        produce: Callable[[], Response],
        shown_once: str | None = None,
    ):
        """The same Idempotency-Key with the same request gives the first response again.

        ``shown_once``: the first response (a success) held a secret, which is never stored, so
        a replay could only answer it without; the replay is this 409 problem instead, saying
        the change was made (a replayed failure is the failure again)."""
        key = request.headers.get(IDEMPOTENCY_KEY)
        if key is None:
            return produce()
        if contains_card_number(key):
            raise ValidationFailed({IDEMPOTENCY_KEY: ["must not hold a card number"]})
        print_ = fingerprint(request.method, request.path, request.get_data())
        stored = self.idempotency.begin(scope, key, print_)
        if stored is not None:
            if shown_once is not None and stored.status < 300:
                refused = problems.from_exception(Conflict(shown_once))
                refused.headers["Idempotent-Replayed"] = "true"
                return refused
            headers = {**stored.headers, "Idempotent-Replayed": "true"}
            return Response(stored.body, status=stored.status, headers=headers)
        try:
            response = produce()
        except DomainError as exc:
            response = problems.from_exception(exc)
        except BaseException:
            self.idempotency.abandon(scope, key)
            raise
        if response.status_code >= 500 or response.status_code in (409, 429):
            self.idempotency.abandon(scope, key)  # transient: a retry must run again
        else:
            # Sealed under the key of the tenant it belongs to (for a sign-up, the tenant it
            # created), naming everyone in it so that their erasure deletes it.
            owner = (request.environ.get(IDENTITY) or {}).get("tenant_id") or PLATFORM
            self.idempotency.complete(
                scope,
                key,
                response.status_code,
                {
                    name: value
                    for name, value in response.headers.items()
                    if name in ("Content-Type", "ETag", "Location")
                },
                _without_secrets(response.get_data()),
                owner,
                touched_ids(request, response),
            )
        return response

    @staticmethod
    def _page(request: Request, order: str = "created_at") -> tuple[int, list | None]:
        """``limit`` and the keyset position ``[created_at, id]`` a cursor carries (or, for a
        list in the order its items changed, ``order="updated_at"``, ``[updated_at, id]``).

        A cursor is a position in an order, not a promise about filters: with other filters
        than the page it came from, it gives the items those filters find after that
        position. Only a cursor of the other order is refused (409): its position means
        nothing in this one."""
        route = request.environ.get(ROUTE)
        kind = route.paging if route is not None else "changes"
        limit, cursor = page_params(request.args, kind)
        return limit, read_keyset(cursor, order) if cursor else None

    @staticmethod
    def _listing(result: dict[str, Any], order: str = "created_at") -> Response:
        after = result.get("next")
        cursor = keyset_cursor(order, *after) if after else None
        return json_response(200, {"items": result["items"], "next_cursor": cursor})


def change_status(request: Request) -> str | None:
    """The ``status`` filter of a list of changes that wait or waited for approval."""
    # An empty value is not a filter left out: like any other value, it must be a status.
    status = request.args.get("status")
    if status is not None and status not in CHANGE_STATUSES:
        raise ValidationFailed({"status": [f"one of {', '.join(CHANGE_STATUSES)}"]})
    return status


def cancelled(caller: dict[str, Any]) -> bool:
    return caller["tenant_status"] != "active"


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def utc(value: str) -> dt.datetime | None:
    """An aware time in UTC, or None: Python reads offsets and years PostgreSQL refuses, so
    what is passed on is always re-rendered, never the client's text."""
    if not _RFC3339.fullmatch(value):
        return None  # fromisoformat also reads ISO 8601's other forms, which we do not document
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return None
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(request: Request) -> int:
    raw = request.headers.get("If-Match")
    if raw is None:
        raise problems.PreconditionRequired("send If-Match with the ETag you last read")
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise VersionConflict("If-Match does not name a version of this resource")
    return int(value)


def _without_secrets(body: bytes) -> bytes:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return body
    if isinstance(data, dict) and any(field in data for field in SECRET_FIELDS):
        data = {k: (None if k in SECRET_FIELDS else v) for k, v in data.items()}
        return json.dumps(data).encode()
    return body
