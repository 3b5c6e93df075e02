"""The search route, as the gateway declares and reads it: the document shows its query from the
schema the gateway loads it with, and a cursor is a position in the search's own order."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway import schemas
from gateway.http import read_query
from gateway.pagination import keyset_cursor, search_cursor
from gateway.routes.search import _position
from gateway.service import OPENAPI, ROUTES
from kernel.errors import ValidationFailed


def _request(query: str) -> Request:
    return Request(EnvironBuilder(query_string=query).get_environ())


def test_the_document_shows_the_query_the_gateway_loads():
    (route,) = (r for r in ROUTES if r.path == "/v1/search")
    assert route.roles == ("admin", "agent") and route.listed
    parameters = {p["name"]: p for p in OPENAPI["paths"]["/v1/search"]["get"]["parameters"]}
    assert set(parameters) == {"q", "status", "limit", "cursor"}
    assert parameters["q"]["required"] is True
    assert parameters["q"]["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": "^[^\\u0000]{1,200}$",  # the gateway refuses NUL in a URL
    }
    assert parameters["status"]["required"] is False
    assert "closed" in parameters["status"]["schema"]["enum"]
    responses = OPENAPI["paths"]["/v1/search"]["get"]["responses"]
    assert {"200", "401", "403", "422", "429", "503"} == set(responses)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("", {"q"}),
        ("q=ab", {"q"}),
        ("q=%2A%2A", {"q"}),
        ("q=refund&status=lost", {"status"}),
        ("q=refund&q=order", {"q"}),
        ("q=refund&order=newest", {"order"}),
    ],
)
def test_the_query_is_refused_naming_the_field(query, fields):
    with pytest.raises(ValidationFailed) as refused:
        read_query(_request(query), schemas.SearchTicketsV1())
    assert set(refused.value.errors) == fields


def test_limit_and_cursor_are_the_pages_not_the_query():
    request = _request("q=refund&status=open&limit=5")
    assert read_query(request, schemas.SearchTicketsV1()) == {"q": "refund", "status": "open"}
    assert _position(request) == (5, None)


def test_a_cursor_is_a_position_in_the_searchs_order():
    at = "2026-01-02T03:04:05.000006+00:00"
    ticket = "8a0c1b8e-3f7a-4d55-9d2c-1f1d9a6b2c11"
    cursor = search_cursor(2, at, ticket)
    assert _position(_request(f"q=x&cursor={cursor}")) == (50, ["2", at, ticket])
    for forged in (
        keyset_cursor("created_at", at, ticket),  # a list's cursor: no place in the ranking
        cursor.replace("2.", "0.", 1),
        cursor[:-1],
        "2.yesterday." + ticket.replace("-", ""),
    ):
        with pytest.raises(ValidationFailed) as refused:
            _position(_request(f"cursor={forged}"))
        assert list(refused.value.errors) == ["cursor"], forged
    with pytest.raises(ValidationFailed) as refused:
        _position(_request("limit=201"))
    assert list(refused.value.errors) == ["limit"]
