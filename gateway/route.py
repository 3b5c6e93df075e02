"""What a route declares about itself: who may call it, what it takes and answers, and what the
OpenAPI document says of it.

A route is declared once, on its method (``@api("GET", "/v1/agents", roles=ADMIN, ...)``,
``gateway.http.ApiHandler``): the caller checks (``gateway.routes.base.Routes._caller``) take
its roles from the declaration, and the OpenAPI document (``gateway.openapi``) is built by
walking the gateway's routes. There is no second list to keep in step.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from werkzeug.wrappers import Request

from services.accounts.contracts import ROLES

ADMIN: tuple[str, ...] = ("admin",)
STAFF: tuple[str, ...] = ("admin", "agent")
ANYONE: tuple[str, ...] = ROLES
AUDIT: tuple[str, ...] = ("admin", "auditor")

ROUTE = "ledgerdesk.route"  # request.environ key: the declaration of the route that matched

# Query parameters' schemas, for ``filters``.
TEXT: dict[str, Any] = {"type": "string"}
UUID: dict[str, Any] = {"type": "string", "format": "uuid"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
POSITIVE: dict[str, Any] = {"type": "integer", "minimum": 1}


def one_of(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@dataclass(frozen=True)
class Route:
    """One HTTP route of the gateway, as declared on its method.

    ``roles`` (a bearer API key of one of these roles) or ``operator`` (the operator token)
    say who may call it; neither, anyone. The rest is what the OpenAPI document shows:
    ``summary`` (the success answer's description too), ``status`` and ``response`` (a schema
    of ``gateway.schemas`` by name, or an inline JSON schema with ``media_type``), ``body``,
    the problems it may answer besides those every request may (``errors``), other successful
    answers (``also``: status, schema, description), the query parameters (``listed`` for
    ``limit`` and ``cursor``, of the kind ``paging`` names; ``query``, a schema of
    ``gateway.schemas`` by name that the route loads them with, ``gateway.http.read_query``,
    or ``filters`` by name), path parameters whose schema is not a string (``path_schemas``;
    the parameters themselves come from the rule), and the headers it reads or writes
    (``if_match``, ``idempotent``, ``etag``, ``retry_after``).
    ``raw_body`` describes a body of bytes of any type instead of ``body``'s JSON.
    ``documented=False`` keeps a route out of the document (the console's pages).
    """

    method: str  # lower case, as OpenAPI writes it
    rule: str  # werkzeug's
    summary: str = ""
    status: int = 200
    response: str | dict[str, Any] | None = None
    media_type: str = "application/json"
    roles: tuple[str, ...] = ()
    operator: bool = False
    while_cancelled: bool = False
    body: str | None = None
    # A body that is not JSON but bytes of any type (an upload), read as a stream.
    raw_body: str | None = None
    errors: tuple[int, ...] = ()
    also: tuple[tuple[int, str, str], ...] = ()
    listed: bool = False
    # The kind of cursor the list pages with (``gateway.pagination.PATTERNS``).
    paging: str = "keyset"
    query: str | None = None
    filters: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    path_schemas: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    if_match: bool = False
    idempotent: bool = False
    etag: bool = False
    retry_after: tuple[int, ...] = ()
    documented: bool = True
    # The handler's method name (``routes_of`` sets it): the OpenAPI operationId, which a
    # generated client turns into a function name.
    name: str = ""

    def __post_init__(self) -> None:
        if self.roles and self.operator:
            raise ValueError(f"{self.rule}: roles or the operator token, not both")
        if self.query and self.filters:
            raise ValueError(f"{self.rule}: a query schema or filters, not both")
        unknown = set(self.path_schemas) - set(self.path_params)
        if unknown:
            raise ValueError(f"{self.rule}: no path parameter {', '.join(sorted(unknown))}")

    @property
    def path(self) -> str:
        """The rule as OpenAPI writes a path: ``/v1/agents/{agent_id}``."""
        return _PARAMETER.sub(r"{\1}", self.rule)

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PARAMETER.findall(self.rule))

    @property
    def tag(self) -> str:
        """The resource the route is about, which groups it in the document: the first segment
        after ``/v1`` (``tickets`` for ``/v1/tickets/{id}/messages``), ``operator`` for the
        operator's routes, and ``platform`` for the gateway's own (health, the document)."""
        segments = [s for s in self.path.split("/") if s]
        if len(segments) < 2 or segments[0] != "v1" or segments[1] == "openapi.json":
            return "platform"
        return segments[1]

    @property
    def auth(self) -> str | None:
        """``bearer`` (an API key), ``operator`` (the operator token) or None (anyone)."""
        if self.roles:
            return "bearer"
        return "operator" if self.operator else None


def route_of(request: Request) -> Route:
    """The declaration of the route a request matched (``gateway.http.ApiHandler``)."""
    return request.environ[ROUTE]


def routes_of(service_cls: type) -> Iterator[Route]:
    """Every route of a service class, its mixins' included, in the order of their paths."""
    from gateway.http import ApiHandler  # the handler imports this module

    found = [
        replace(entrypoint.route, name=name)
        for name, method in inspect.getmembers(service_cls, inspect.isfunction)
        for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ())
        if isinstance(entrypoint, ApiHandler)
    ]
    yield from sorted(found, key=lambda route: (route.path, route.method))
