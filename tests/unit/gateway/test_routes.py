"""Each route declares itself once: the caller checks and the OpenAPI document read the
declaration, and nameko serves exactly the routes the document is built from."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from nameko.containers import ServiceContainer
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway import schemas
from gateway.http import IDENTITY, ApiHandler, read_query
from gateway.route import ADMIN, ROUTE, Route
from gateway.service import OPENAPI, ROUTES, GatewayService
from kernel.errors import Forbidden, ValidationFailed
from services.accounts.contracts import ROLES


def test_the_routes_walked_are_the_entrypoints_nameko_serves():
    container = ServiceContainer(GatewayService, config={"AMQP_URI": "memory://"})
    served = {
        (entrypoint.method.lower(), entrypoint.url)
        for entrypoint in container.entrypoints
        if isinstance(entrypoint, ApiHandler)
    }
    assert served == {(route.method, route.rule) for route in ROUTES}


def test_the_document_has_one_operation_per_documented_route_and_no_other():
    operations = {
        (method, path) for path, methods in OPENAPI["paths"].items() for method in methods
    }
    assert operations == {(r.method, r.path) for r in ROUTES if r.documented}
    # Only the browser pages (the console's, the reference and its problem types' page) are
    # left out.
    assert {r.rule for r in ROUTES if not r.documented} == {
        "/console",
        "/console/<string:asset>",
        "/docs",
        "/docs/problems",
    }


def test_operation_ids_are_the_handlers_names_and_every_operation_has_a_tag_listed():
    operations = [op for methods in OPENAPI["paths"].values() for op in methods.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) == len(operations)
    assert all(i.isidentifier() and i == i.lower() for i in ids), ids
    listed = {tag["name"] for tag in OPENAPI["tags"]}
    assert {tag for op in operations for tag in op["tags"]} == listed
    assert next(
        op for op in OPENAPI["paths"]["/v1/tickets/{ticket_id}"].values() if op["operationId"]
    )["tags"] == ["tickets"]
    assert OPENAPI["paths"]["/v1/operator/policies"]["post"]["tags"] == ["operator"]
    assert OPENAPI["paths"]["/healthz"]["get"]["operationId"] == "healthz"


def test_every_answer_declares_the_request_id_header_and_problems_their_members():
    for path, methods in OPENAPI["paths"].items():
        for method, op in methods.items():
            for status, response in op["responses"].items():
                assert "X-Request-Id" in response["headers"], (method, path, status)
    problem = OPENAPI["components"]["schemas"]["Problem"]
    assert {"request_id", "trace_id", "type"} <= set(problem["required"])


def test_every_route_with_roles_names_roles_that_exist():
    for route in ROUTES:
        assert set(route.roles) <= set(ROLES), route.rule
    assert {r.auth for r in ROUTES} == {"bearer", "operator", None}


def test_the_path_and_its_parameters_come_from_the_rule():
    route = Route("delete", "/v1/agents/<string:agent_id>/api-keys/<string:key_id>")
    assert route.path == "/v1/agents/{agent_id}/api-keys/{key_id}"
    assert route.path_params == ("agent_id", "key_id")
    with pytest.raises(ValueError, match="no path parameter"):
        Route("get", "/v1/x/<string:a>", path_schemas={"b": {"type": "integer"}})
    with pytest.raises(ValueError, match="not both"):
        Route("get", "/v1/x", roles=ADMIN, operator=True)


# --- the caller check takes the declared roles ------------------------------------------------


class _Limits:
    def before_authentication(self, request: Request) -> None:
        pass

    def check(self, key_id: str, request: Request) -> None:
        pass


def _gateway(role: str, tenant_status: str = "active") -> Any:
    identity = {
        "key_id": "k",
        "agent_id": "a",
        "tenant_id": "t",
        "role": role,
        "tenant_status": tenant_status,
    }
    gateway = GatewayService()
    gateway.credentials = SimpleNamespace(authenticate=lambda key: identity)
    gateway.limits = _Limits()
    gateway.tracing = SimpleNamespace(continue_trace=lambda carrier: None)
    return gateway


def _request(route: Route) -> Request:
    request = Request(EnvironBuilder(headers={"Authorization": "Bearer some-key"}).get_environ())
    request.environ[ROUTE] = route
    return request


@pytest.mark.parametrize("role", ROLES)
def test_the_caller_check_enforces_the_roles_the_route_declares(role):
    route = Route("get", "/v1/x", roles=("admin", "auditor"))
    request = _request(route)
    if role in route.roles:
        assert _gateway(role)._caller(request)["role"] == role
    else:
        with pytest.raises(Forbidden, match="role may not"):
            _gateway(role)._caller(request)


def test_a_cancelled_tenant_passes_only_where_the_route_declares_it():
    with pytest.raises(Forbidden, match="cancelled"):
        _gateway("admin", "cancelled")._caller(_request(Route("get", "/v1/x", roles=ADMIN)))
    declared = Route("get", "/v1/x", roles=ADMIN, while_cancelled=True)
    assert _gateway("admin", "cancelled")._caller(_request(declared))["role"] == "admin"


def test_a_route_cannot_check_a_caller_it_does_not_declare():
    with pytest.raises(TypeError, match="declares no roles"):
        _gateway("admin")._caller(_request(Route("get", "/v1/x")))
    with pytest.raises(TypeError, match="operator token"):
        _gateway("admin")._operator(_request(Route("get", "/v1/x", roles=ADMIN)))


def test_a_route_that_declares_a_caller_must_have_checked_one_to_answer():
    handler = ApiHandler("GET", "/v1/x", roles=ADMIN)
    request = _request(handler.route)
    assert not handler._caller_checked(request)
    request.environ[IDENTITY] = {"agent_id": "a"}
    assert handler._caller_checked(request)
    assert ApiHandler("GET", "/v1/public")._caller_checked(_request(Route("get", "/v1/public")))


def _query(route: Route, query: str) -> Request:
    request = Request(EnvironBuilder(query_string=query).get_environ())
    request.environ[ROUTE] = route
    return request


def test_the_ticket_list_checks_its_query_with_the_schema_its_route_declares():
    (route,) = (r for r in ROUTES if (r.method, r.path) == ("get", "/v1/tickets"))
    assert route.query == "FindTicketsV1"
    schema = getattr(schemas, route.query)()
    request = _query(route, "status=later&assignee_id=nope&requester_id=&other=x&limit=5")
    with pytest.raises(ValidationFailed) as refused:
        read_query(request, schema)
    assert refused.value.errors == {
        "status": ["Must be one of: new, open, pending, solved, closed."],
        "assignee_id": ["Not a valid UUID."],
        # A misspelt filter is an error, not a list of everything.
        "other": ["Unknown field."],
    }
    # An empty filter is no filter, as it always was here; limit and cursor are the page's.
    request = _query(route, "status=open&requester_id=&tag=VIP&limit=5&cursor=")
    assert read_query(request, schema) == {"status": "open", "requester_id": "", "tag": "VIP"}
    with pytest.raises(ValidationFailed) as refused:
        read_query(_query(route, "tag=a&tag=b"), schema)
    assert refused.value.errors == {"tag": ["give it once"]}
    # A range that holds no time is taken (it lists nothing): the document cannot refuse it.
    moments = "created_after=2026-02-01T00:00:00Z&created_before=2026-01-01T00:00:00%2B01:00"
    assert set(read_query(_query(route, moments), schema)) == {"created_after", "created_before"}
    with pytest.raises(ValidationFailed) as refused:
        read_query(_query(route, "updated_since=0001-01-01T00:00:00%2B14:00"), schema)
    assert refused.value.errors == {"updated_since": ["Not a valid datetime."]}


def test_a_lookup_of_nothing_is_refused_not_a_list_of_everyone():
    (route,) = (r for r in ROUTES if (r.method, r.path) == ("get", "/v1/contacts"))
    schema = getattr(schemas, route.query)()
    with pytest.raises(ValidationFailed) as refused:
        read_query(_query(route, "email=&phone=&name_prefix="), schema)
    assert set(refused.value.errors) == {"email", "phone", "name_prefix"}
    too_long = "a" * 320 + "@example.com"
    with pytest.raises(ValidationFailed) as refused:
        read_query(_query(route, f"email={too_long}&phone=call-me"), schema)
    assert set(refused.value.errors) == {"email", "phone"}
    query = "email=%20Ada@Example.COM%20&phone=%2B44%2020%207946%200958"
    assert read_query(_query(route, query), schema) == {
        "email": " Ada@Example.COM ",
        "phone": "+44 20 7946 0958",
    }


def test_the_document_lists_the_query_the_route_loads():
    for route in ROUTES:
        if not route.query:
            continue
        declared = getattr(schemas, route.query)().fields
        operation = OPENAPI["paths"][route.path][route.method]
        listed = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert listed == set(declared) | ({"limit", "cursor"} if route.listed else set())
