"""The OpenAPI 3 document, generated from the gateway's routes and the schemas it validates
and answers with.

Each route declares what the document says of it (``gateway.route.Route``, on its ``@api``
method), and the document is built by walking the routes of the service class: an endpoint
cannot exist undocumented, nor the document describe one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway import examples, problems, schemas
from gateway.bodies import BODY_BYTES, MAX_BODY_BYTES, MAX_JSON_DEPTH
from gateway.idempotency import MAX_KEY_CHARS
from gateway.pagination import PAGING, PATTERNS
from gateway.route import Route

ERRORS = {
    "400": f"malformed JSON, or JSON nested more than {MAX_JSON_DEPTH} levels deep",
    "401": "no or bad credentials",
    "403": "role not allowed, the tenant is cancelled, or four eyes refuse this decider",
    "404": "not found (also: another tenant's)",
    "405": "method not allowed",
    "409": "version or state conflict",
    "410": "gone: deleted for good (an export past its expiry, or ended by an erasure)",
    "413": (
        f"body too large ({BODY_BYTES >> 10} KiB; {MAX_BODY_BYTES >> 20} MiB for a ticket's or a"
        " message's text)"
    ),
    "422": "validation failed",
    "428": "If-Match is required",
    "429": "rate limited, per client address (every request, refused credentials, sign-ups) or"
    " per API key (see Retry-After)",
    "503": "a dependency is unavailable",
}
AUTH_ERRORS = ("401", "403", "429", "503")


# Every answer, a problem or not, names its request (``problems.identify``) and, once a bucket
# admitted it, what is left of the rate limit (``gateway.ratelimit.Quota``): the API key's, or
# before a key was admitted the client address's. Declared once, referred to everywhere.
HEADERS: dict[str, dict[str, Any]] = {
    problems.REQUEST_ID: {
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
        "description": "the request's id: the event_id of its access record in the audit ledger",
    },
    "RateLimit-Limit": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "requests the bucket holds when full",
    },
    "RateLimit-Remaining": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "requests left in the bucket now",
    },
    "RateLimit-Reset": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "seconds until the bucket is full again",
    },
}
IDENTIFIED = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}

# Bodies of a change that must change something: the services refuse an empty one.
AT_LEAST_ONE_FIELD = ("RectifyContactV1", "UpdateTicketV1")

TAGS = {
    "agents": "Staff of a tenant and their API keys",
    "audit": "The tenant's view of the audit ledger, with proofs",
    "billing": "Plans, subscription, invoices and payment methods (processor tokens only)",
    "contacts": "The tenant's customers, their consent",
    "incidents": "Breaches the operator notified the tenant of, and their acknowledgement",
    "mail": "The tenant's mail, sent, pending and failed, by ids",
    "me": "The caller's own identity and keys",
    "operator": "The platform operator's endpoints (the operator token)",
    "platform": "Health and this document",
    "policies": "Policy versions and their acceptance",
    "privacy": "Data subject requests and their approval policy",
    "retention": "How long each category of data is kept",
    "search": "Full-text search over the tenant's tickets",
    "signup": "Creating a tenant",
    "tenant": "The tenant itself, its cancellation and its exports",
    "tickets": "Tickets, their messages and attachments",
    "webhooks": "Signed notifications to the tenant's endpoints",
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": dict(IDENTIFIED),
        "content": {"application/problem+json": {"schema": "Problem"}},
    }


def _operation(route: Route) -> dict[str, Any]:
    success: dict[str, Any] = {"description": route.summary, "headers": dict(IDENTIFIED)}
    if route.response is not None:
        success["content"] = {route.media_type: {"schema": route.response}}
    if route.etag:
        success["headers"]["ETag"] = {
            "schema": {"type": "string"},
            "description": "the version, for If-Match",
        }
    responses: dict[str, Any] = {str(route.status): success}
    for status, response, description in route.also:
        responses[str(status)] = {
            "description": description,
            "headers": dict(IDENTIFIED),
            "content": {"application/json": {"schema": response}},
        }
    # Every request, public ones included, passes its client address's bucket first.
    errors = {str(code) for code in route.errors} | {"429"}
    if route.idempotent:
        errors.add("409")  # the key used with another request, or that request still running
    if route.listed and route.paging == "changes":
        errors.add("409")  # a cursor of the list's other order (gateway.pagination)
    if route.auth:
        errors |= set(AUTH_ERRORS)
    if route.auth == "operator":
        errors.discard("403")
    for code in sorted(errors):
        responses[code] = _problem(ERRORS[code])
    for code in ("429", *map(str, route.retry_after)):
        responses[code]["headers"] = {
            **IDENTIFIED,
            "Retry-After": {"schema": {"type": "integer"}},
        }

    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": route.path_schemas.get(name, {"type": "string"}),
        }
        for name in route.path_params
    ]
    if route.listed:
        parameters += [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": PATTERNS[route.paging]},
                "description": "the next_cursor of the previous page (empty: the first page)",
            },
        ]
    if route.query:
        # One parameter per field of the schema the route loads its query with (apispec's
        # marshmallow plugin expands it): the document and the validation are one declaration.
        parameters.append({"in": "query", "schema": getattr(schemas, route.query)})
    for name, schema in route.filters.items():
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    if route.if_match:
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "the ETag last read",
            }
        )
    if route.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    # gateway.idempotency.check_key: no control characters
                    "pattern": f"^[^\\u0000-\\u001f\\u007f]{{1,{MAX_KEY_CHARS}}}$",
                },
                "description": "the same key and body return the first response (secrets omitted)",
            }
        )
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.name,
        "tags": [route.tag],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body}},
        }
    if route.raw_body:
        operation["requestBody"] = {
            "required": True,
            "description": route.raw_body,
            # Bytes of any type; octet-stream named as well, which generators know how to send.
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("application/octet-stream", "*/*")
            },
        }
    if route.auth == "bearer":
        operation["security"] = [{"apiKey": []}]
        operation["description"] = "Roles: " + ", ".join(route.roles) + "."
    elif route.auth == "operator":
        operation["security"] = [{"operatorToken": []}]
    return operation


def _empty_is_absent(operation: dict[str, Any]) -> None:
    """A query whose schema takes an empty value for no filter (``EMPTY_IS_ABSENT``): each of
    its filters is also the empty string."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter["name"] not in PAGING:
            parameter["schema"] = {"anyOf": [parameter["schema"], {"type": "string", "const": ""}]}
            parameter["description"] = (
                parameter.get("description", "") + " (empty: no filter)"
            ).lstrip()


# The gateway refuses NUL in the URL and in a body's text (PostgreSQL text holds none): every
# string the document describes says so, keeping its lengths in the same pattern.
def _without_nul(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _without_nul(item)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if (kind == "string" or (isinstance(kind, list) and "string" in kind)) and not (
        {"pattern", "enum", "format", "const"} & set(node)
    ):
        low, high = node.get("minLength", 0), node.get("maxLength", "")
        node["pattern"] = f"^[^\\u0000]{{{low},{high}}}$"
    for value in node.values():
        _without_nul(value)


def build_spec(
    routes: Iterable[Route], regions: Iterable[str] = (), plans: Iterable[str] = ()
) -> dict[str, Any]:
    """The document of ``routes`` (``gateway.route.routes_of`` the gateway's service class):
    those declared ``documented``, with every schema they name. ``regions`` and ``plans``, the
    deployment's (``Settings.regions``, ``Settings.billing_plans``), are the ones a sign-up and
    a change of plan may name."""
    documented = [route for route in routes if route.documented]
    for route in documented:
        if not route.summary:
            raise ValueError(f"{route.method} {route.rule}: a documented route needs a summary")
        if not route.name.isidentifier():
            raise ValueError(f"{route.method} {route.rule}: no operationId (see routes_of)")
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Ledgerdesk API",
        version="1",
        openapi_version="3.1.0",
        plugins=[plugin],
        # Relative: the document is served by the gateway it describes, at whatever address.
        servers=[{"url": "/", "description": "the gateway that serves this document"}],
        tags=[
            {"name": tag, **({"description": TAGS[tag]} if tag in TAGS else {})}
            for tag in sorted({route.tag for route in documented})
        ],
        info={
            "description": (
                "A multi-tenant helpdesk whose privacy promises are kept by code. A W3C"
                " traceparent header is continued once the request is authenticated (never for"
                " sign-up or an unauthenticated request); tracestate is ignored. Every answer"
                " names the trace it was recorded under in a traceresponse header."
            )
        },
    )
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("operatorToken", {"type": "http", "scheme": "bearer"})
    names = {"Problem", *(r.body for r in documented)}
    names |= {r.response for r in documented if isinstance(r.response, str)}
    names |= {response for r in documented for _, response, _ in r.also}
    for name in sorted(n for n in names if n):
        if name not in spec.components.schemas:  # nested ones register themselves first
            spec.components.schema(name, schema=getattr(schemas, name))
    paths: dict[str, dict[str, Any]] = {}
    for route in documented:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    # A schema's rules across its fields (exactly one of two, this one only with that one),
    # which the marshmallow plugin cannot see, stated by the schema class as JSON_SCHEMA.
    converter = plugin.converter
    assert converter is not None
    for key, name in converter.refs.items():
        extra = getattr(key[0], "JSON_SCHEMA", None)
        if extra and name in document["components"]["schemas"]:
            document["components"]["schemas"][name].update(extra)
    components = document["components"]["schemas"]
    regions, plans = list(regions), list(plans)
    if regions and "SignUpV1" in components:
        components["SignUpV1"]["properties"]["region"]["enum"] = regions
    if plans and "ChangePlanV1" in components:
        components["ChangePlanV1"]["properties"]["plan"]["enum"] = plans
    for name in AT_LEAST_ONE_FIELD:
        if name in components:
            components[name]["minProperties"] = 1
    for route in documented:
        if route.query and getattr(getattr(schemas, route.query), "EMPTY_IS_ABSENT", False):
            _empty_is_absent(document["paths"][route.path][route.method])
    _without_nul(document["paths"])
    _without_nul(document["components"]["schemas"])
    _add_examples(document)
    return document


def _problem_example(status: int, components: dict[str, Any]) -> dict[str, Any]:
    kind = next(k for k in problems.KINDS if k.status == status)
    shown = examples.example(components["Problem"], components)
    shown.update(type=kind.type, title=kind.title, status=status, detail=ERRORS[str(status)])
    if status == 422:
        shown["errors"] = {"email": ["Not a valid email address."]}
    else:
        shown.pop("errors", None)
    return shown


def _add_examples(document: dict[str, Any]) -> None:
    """An example for every request body and answer (``gateway.examples``); bytes have none."""
    components = document["components"]["schemas"]
    for operations in document["paths"].values():
        for operation in operations.values():
            answers = operation["responses"].items()
            bodies = [(None, operation.get("requestBody", {}))] + list(answers)
            for status, body in bodies:
                for media_type, content in body.get("content", {}).items():
                    if media_type == "application/problem+json" and status is not None:
                        content["example"] = _problem_example(int(status), components)
                    elif "schema" in content:
                        shown = examples.example(content["schema"], components)
                        if shown is not None:
                            content["example"] = shown
