"""Unit tests for the gateway's problem+json mapping and JSON body reading (no server)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from marshmallow import Schema, fields
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from gateway import problems
from gateway.bodies import MAX_JSON_DEPTH, UPLOAD_BODY_BYTES
from gateway.http import (
    BODY_BYTES,
    MAX_BODY_BYTES,
    ApiHandler,
    client_trace,
    json_response,
    limit_body,
    read_json,
)
from kernel import errors
from kernel.envelope import MalformedEnvelope
from services.accounts.commands import SignUpV1


def body(response: Response) -> dict[str, Any]:
    return json.loads(response.get_data())


# --- problems --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "title", "kind"),
    [
        (problems.BadJson("the body is not valid JSON"), 400, "Malformed JSON", "malformed-json"),
        (errors.Forbidden("agents may not do that"), 403, "Forbidden", "forbidden"),
        (errors.NotFound("no such ticket"), 404, "Not found", "not-found"),
        (errors.Conflict("the ticket is closed"), 409, "Conflict", "state-conflict"),
        (errors.VersionConflict("stale version"), 409, "Version conflict", "version-conflict"),
        (problems.PayloadTooLarge("too big"), 413, "Payload too large", "payload-too-large"),
        (
            errors.ServiceUnavailable("accounts did not answer"),
            503,
            "Service unavailable",
            "service-unavailable",
        ),
    ],
)
def test_each_domain_error_maps_to_its_status_and_kind(
    exc: errors.DomainError, status: int, title: str, kind: str
):
    response = problems.from_exception(exc)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert body(response) == {
        "type": f"/docs/problems#{kind}",
        "title": title,
        "status": status,
        "detail": exc.detail,
    }
    assert "WWW-Authenticate" not in response.headers


def test_unauthorized_is_401_with_a_bearer_challenge():
    response = problems.from_exception(errors.Unauthorized("a bearer API key is required"))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert body(response) == {
        "type": "/docs/problems#unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "a bearer API key is required",
    }


def test_validation_failed_is_422_with_its_errors():
    exc = errors.ValidationFailed({"region": ["must be one of: uk"], "admin": {"email": ["bad"]}})

    response = problems.from_exception(exc)

    assert response.status_code == 422
    assert body(response) == {
        "type": "/docs/problems#validation-failed",
        "title": "Validation failed",
        "status": 422,
        "detail": "the request is not valid",
        "errors": {"region": ["must be one of: uk"], "admin": {"email": ["bad"]}},
    }


def test_an_empty_detail_falls_back_to_the_title():
    assert body(problems.from_exception(errors.NotFound()))["detail"] == "Not found"


def test_an_error_that_came_back_over_rpc_maps_the_same_way():
    from nameko.exceptions import deserialize, serialize

    received = deserialize(json.loads(json.dumps(serialize(errors.Conflict("v3 expected")))))

    response = problems.from_exception(received)

    assert (response.status_code, body(response)["detail"]) == (409, "v3 expected")


def test_retry_later_over_rpc_is_a_409_that_says_when_to_retry():
    from nameko.exceptions import deserialize, serialize

    sent = errors.RetryLater(60.0, "no signed checkpoint covers this entry yet")
    received = deserialize(json.loads(json.dumps(serialize(sent))))

    response = problems.from_exception(received)

    assert response.status_code == 409
    assert response.headers["Retry-After"] == "60"
    assert body(response)["detail"] == "no signed checkpoint covers this entry yet"


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("password=hunter2 at db.internal:5432"),
        KeyError("alice@example.com"),
        MalformedEnvelope({"payload": ["secret detail"]}),
        errors.DomainError("an unmapped domain error"),
    ],
)
def test_anything_else_is_a_500_that_reveals_nothing(exc: BaseException, caplog):
    with caplog.at_level(logging.ERROR, logger="gateway.problems"):
        response = problems.from_exception(exc)

    assert response.status_code == 500
    assert body(response) == {
        "type": "/docs/problems#internal-error",
        "title": "Internal server error",
        "status": 500,
        "detail": "an unexpected error occurred",
    }
    for secret in ("hunter2", "alice@example.com", "secret detail", "unmapped"):
        assert secret not in response.get_data(as_text=True)
    assert [record.getMessage().split(" at\n")[0] for record in caplog.records] == [
        f"unhandled {type(exc).__name__} in the gateway"
    ]


def test_the_500_log_keeps_the_type_not_the_data(caplog):
    with caplog.at_level(logging.ERROR, logger="gateway.problems"):
        problems.from_exception(RuntimeError("alice@example.com"))

    assert "RuntimeError" in caplog.text
    assert "alice@example.com" not in caplog.text


def test_the_problem_table_lists_subclasses_before_their_bases():
    types = [exc_type for exc_type, _ in problems.PROBLEMS]
    for i, earlier in enumerate(types):
        for later in types[i + 1 :]:
            assert not issubclass(later, earlier), f"{later.__name__} is shadowed by {earlier}"


def test_problem_helper_with_headers_and_errors():
    response = problems.problem(
        problems.RATE_LIMITED, errors={"x": []}, headers={"Retry-After": "3"}
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert body(response) == {
        "type": "/docs/problems#rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": "Too many requests",
        "errors": {"x": []},
    }


def test_every_kind_has_its_own_type_and_every_mapped_kind_is_listed():
    types = [kind.type for kind in problems.KINDS]
    assert len(set(types)) == len(types)
    assert {kind for _, kind in problems.PROBLEMS} <= set(problems.KINDS)


def test_a_version_conflict_over_rpc_stays_a_version_conflict():
    from nameko.exceptions import deserialize, serialize

    sent = errors.VersionConflict("the ticket is at version 3, not 2")
    received = deserialize(json.loads(json.dumps(serialize(sent))))

    assert body(problems.from_exception(received))["type"] == "/docs/problems#version-conflict"


def test_identify_names_the_request_in_the_header_and_in_a_problem_only():
    failed = problems.from_exception(errors.NotFound("no such ticket"))
    problems.identify(failed, "0b0e8f4e-5b8f-4f57-9d0e-1d2c3b4a5f60", "ab" * 16)
    assert failed.headers["X-Request-Id"] == "0b0e8f4e-5b8f-4f57-9d0e-1d2c3b4a5f60"
    assert body(failed)["request_id"] == "0b0e8f4e-5b8f-4f57-9d0e-1d2c3b4a5f60"
    assert body(failed)["trace_id"] == "ab" * 16

    ok = Response(json.dumps({"id": "x"}), content_type="application/json")
    problems.identify(ok, "0b0e8f4e-5b8f-4f57-9d0e-1d2c3b4a5f60", None)
    assert ok.headers["X-Request-Id"] == "0b0e8f4e-5b8f-4f57-9d0e-1d2c3b4a5f60"
    assert json.loads(ok.get_data()) == {"id": "x"}


def test_api_handler_answers_exceptions_with_problems():
    handler = ApiHandler("POST", "/v1/things")

    assert handler.expected_exceptions is errors.DomainError
    response = handler.response_from_exception(errors.Forbidden("no"))
    assert (response.status_code, body(response)["title"]) == (403, "Forbidden")
    assert handler.response_from_exception(ValueError("x")).status_code == 500


def test_json_response():
    response = json_response(201, {"id": "t-1"}, headers={"Location": "/v1/tenant"})

    assert response.status_code == 201
    assert response.mimetype == "application/json"
    assert response.headers["Location"] == "/v1/tenant"
    assert json.loads(response.get_data()) == {"id": "t-1"}


# --- read_json -------------------------------------------------------------------------------


class Thing(Schema):
    name = fields.String(required=True)
    count = fields.Integer(load_default=1)

    class Meta:
        unknown = "raise"


def post(data: bytes | str | None = None, **kwargs: Any) -> Request:
    return EnvironBuilder(
        method="POST", path="/v1/things", data=data, content_type="application/json", **kwargs
    ).get_request()


class ExplodingStream(io.RawIOBase):
    """A body that must never be read."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise AssertionError("the body was read")


def test_read_json_loads_through_the_schema():
    assert read_json(post(b'{"name": "printer"}'), Thing()) == {"name": "printer", "count": 1}


def test_read_json_with_the_sign_up_command():
    command = {
        "company": "Acme",
        "region": "uk",
        "admin": {"name": "Ada", "email": "ada@example.com"},
        "age_confirmed": True,
        "accept_policy_version": "2026-01",
    }
    request = EnvironBuilder(method="POST", json=command).get_request()

    assert read_json(request, SignUpV1()) == command


@pytest.mark.parametrize("raw", [b"{", b'{"name": }', b"{'name': 'x'}", b"\xff\xfe\x00", b"nul"])
def test_malformed_json_is_a_400(raw: bytes):
    with pytest.raises(problems.BadJson) as info:
        read_json(post(raw), Thing())

    response = problems.from_exception(info.value)
    assert response.status_code == 400
    assert body(response)["detail"] == "the body is not valid JSON"


@pytest.mark.parametrize(
    "raw", [b"", b"null", b"[]", b'[{"name": "x"}]', b'"name"', b"42", b"true"]
)
def test_a_body_that_is_not_an_object_is_a_422(raw: bytes):
    with pytest.raises(errors.ValidationFailed) as info:
        read_json(post(raw), Thing())

    assert info.value.errors == {"_schema": ["the body must be a JSON object"]}
    assert problems.from_exception(info.value).status_code == 422


def test_schema_errors_are_a_422_naming_the_fields():
    with pytest.raises(errors.ValidationFailed) as info:
        read_json(post(b'{"count": "many", "owner": "eve"}'), Thing())

    assert info.value.errors == {
        "name": ["Missing data for required field."],
        "count": ["Not a valid integer."],
        "owner": ["Unknown field."],
    }
    response = problems.from_exception(info.value)
    assert response.status_code == 422
    assert body(response)["errors"] == info.value.errors


def test_a_sign_up_with_an_unknown_field_is_refused():
    request = EnvironBuilder(
        method="POST",
        json={
            "company": "Acme",
            "region": "uk",
            "admin": {"name": "Ada", "email": "ada@example.com"},
            "age_confirmed": "yes",
            "accept_policy_version": "2026-01",
            "plan": "enterprise",
        },
    ).get_request()

    with pytest.raises(errors.ValidationFailed) as info:
        read_json(request, SignUpV1())

    assert info.value.errors == {
        "age_confirmed": ["Not a valid boolean."],
        "plan": ["Unknown field."],
    }


def test_a_declared_oversized_body_is_a_413_before_it_is_read():
    environ = EnvironBuilder(method="POST", data=b"{}").get_environ()
    environ["CONTENT_LENGTH"] = str(MAX_BODY_BYTES + 1)
    environ["wsgi.input"] = ExplodingStream()

    with pytest.raises(problems.PayloadTooLarge) as info:
        read_json(Request(environ), Thing())

    assert info.value.detail == f"the body may be at most {MAX_BODY_BYTES} bytes"
    assert problems.from_exception(info.value).status_code == 413


def test_a_real_oversized_body_is_a_413():
    raw = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'

    with pytest.raises(problems.PayloadTooLarge):
        read_json(post(raw), Thing())


def test_an_oversized_body_without_a_length_is_a_413():
    raw = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    environ = EnvironBuilder(method="POST", input_stream=io.BytesIO(raw)).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True  # a server that delimits chunked bodies itself
    request = Request(environ)
    assert request.content_length is None

    with pytest.raises(problems.PayloadTooLarge):
        read_json(request, Thing())


def test_a_body_of_exactly_the_limit_is_read():
    padding = MAX_BODY_BYTES - len(b'{"name": ""}')
    raw = b'{"name": "' + b"x" * padding + b'"}'
    assert len(raw) == MAX_BODY_BYTES

    assert read_json(post(raw), Thing())["name"] == "x" * padding


def test_read_json_refuses_a_card_number_as_the_services_do_naming_the_field():
    # The gateway loads commands with the services' own check (kernel.commands.load_command),
    # which runs before the schema: the card is the one complaint, the missing fields wait.
    sign_up = {"company": "Acme", "admin": {"name": "Ada 4111.1111.1111.1111"}}
    request = EnvironBuilder(method="POST", json=sign_up).get_request()

    with pytest.raises(errors.ValidationFailed) as info:
        read_json(request, SignUpV1())

    response = problems.from_exception(info.value)
    assert response.status_code == 422
    assert body(response)["errors"] == {
        "admin": {"name": ["looks like a card number: card numbers are never stored"]}
    }
    assert "1111" not in response.get_data(as_text=True)


# --- bounded input: nesting and per-route body limits ----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b'{"a":' * 100_000, b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}"],
    ids=["brackets", "objects", "just-too-deep"],
)
def test_json_nested_too_deep_is_a_400_problem_before_it_is_parsed(raw: bytes):
    with pytest.raises(problems.BadJson) as info:
        read_json(post(raw), Thing())

    response = problems.from_exception(info.value)
    assert response.status_code == 400
    assert body(response)["detail"] == f"the body nests more than {MAX_JSON_DEPTH} levels deep"


def test_json_nested_as_deep_as_allowed_reaches_the_schema():
    nested = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)

    with pytest.raises(errors.ValidationFailed) as info:
        read_json(post(b'{"name": ' + nested + b"}"), Thing())

    assert info.value.errors == {"name": ["Not a valid string."]}


def test_a_too_deep_billing_body_holding_a_card_is_refused_for_the_card():
    raw = b"[" * 100_000 + b'"4111 1111 1111 1111"'

    with pytest.raises(errors.ValidationFailed) as info:
        read_json(post(raw), Thing(), refuse_cards=True)

    assert "card number" in info.value.errors["_schema"][0]


def test_a_route_reads_no_more_than_its_own_limit():
    # Every route but those taking a ticket's text has the small limit: a body past it is a 413
    # before it is read, and one that only turns out larger (chunked) is a 413 when read.
    environ = EnvironBuilder(method="POST", data=b"{}").get_environ()
    environ["CONTENT_LENGTH"] = str(BODY_BYTES + 1)
    environ["wsgi.input"] = ExplodingStream()
    with pytest.raises(problems.PayloadTooLarge) as info:
        limit_body(Request(environ), BODY_BYTES)
    assert info.value.detail == f"the body may be at most {BODY_BYTES} bytes"

    raw = b'{"name": "' + b"x" * BODY_BYTES + b'"}'
    environ = EnvironBuilder(method="POST", input_stream=io.BytesIO(raw)).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    request = Request(environ)
    limit_body(request, BODY_BYTES)
    with pytest.raises(problems.PayloadTooLarge):
        read_json(request, Thing())


def test_a_handler_reading_past_the_limit_itself_gets_a_413_not_a_500():
    # An Idempotency-Key fingerprint, say, reads the body with request.get_data().
    response = problems.from_exception(RequestEntityTooLarge())

    assert response.status_code == 413
    assert body(response)["title"] == "Payload too large"


def test_the_ticket_routes_keep_the_large_limit_and_every_other_route_the_small_one():
    from gateway.service import GatewayService

    limits = {
        (entry.method, entry.url): entry.max_body_bytes
        for entry in (
            getattr(GatewayService, name).nameko_entrypoints
            for name in dir(GatewayService)
            if hasattr(getattr(GatewayService, name), "nameko_entrypoints")
        )
        for entry in entry
        if isinstance(entry, ApiHandler)
    }
    large = {url for (_, url), limit in limits.items() if limit == MAX_BODY_BYTES}
    assert large == {"/v1/tickets", "/v1/tickets/<string:ticket_id>/messages"}
    # An upload is read a chunk at a time and bounded by its own setting, not by this limit.
    uploads = {url for (_, url), limit in limits.items() if limit == UPLOAD_BODY_BYTES}
    assert uploads == {"/v1/tickets/<string:ticket_id>/attachments"}
    assert set(limits.values()) == {BODY_BYTES, MAX_BODY_BYTES, UPLOAD_BODY_BYTES}


# --- trace headers ---------------------------------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("headers", "taken"),
    [
        ([("traceparent", TRACEPARENT), ("tracestate", "pan=4111 1111 1111 1111")], TRACEPARENT),
        ([("tracestate", "pan=4111 1111 1111 1111")], None),
        ([("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)], None),  # which one?
        ([("traceparent", f" {TRACEPARENT}")], None),
        ([("traceparent", "cc" + TRACEPARENT[2:] + "-more")], None),
        # 16 digits glued to letters: a card number to the access log's redactor.
        ([("traceparent", f"00-4111111111111111{'a' * 16}-00f067aa0ba902b7-01")], None),
    ],
)
def test_only_an_exact_traceparent_is_taken_from_a_client_never_a_tracestate(headers, taken):
    request = EnvironBuilder(method="GET", headers=headers).get_request()

    assert client_trace(request) == ({"traceparent": taken} if taken else {})
