"""Unit tests for ?limit= and ?cursor= parsing, and the cursors' round trips: a cursor is a
string of the form the OpenAPI document gives (``PATTERNS``), and every string of that form is
one."""

from __future__ import annotations

import re
import uuid

import pytest

from gateway.pagination import (
    DEFAULT_LIMIT,
    PATTERNS,
    keyset_cursor,
    ledger_cursor,
    page_params,
    read_keyset,
    read_ledger,
    read_search,
    search_cursor,
)
from kernel.errors import Conflict, ValidationFailed

AT = "2026-01-05T10:00:00.123456+00:00"
ROW = "0b3e6c1e-6f0a-4f43-9d8a-0c5b7c1d2e3f"


def test_no_parameters_is_the_first_page_at_the_default_limit():
    assert page_params({}) == (DEFAULT_LIMIT, None)
    assert page_params({"cursor": ""}) == (DEFAULT_LIMIT, None)


@pytest.mark.parametrize(("raw", "limit"), [("1", 1), ("50", 50), ("200", 200), ("007", 7)])
def test_a_limit_from_1_to_200_is_taken(raw: str, limit: int):
    assert page_params({"limit": raw}) == (limit, None)


@pytest.mark.parametrize(
    "raw", ["0", "201", "-1", "", "ten", "5.0", " 5", "+5", "1e2", "٥", "9" * 50]
)
def test_any_other_limit_is_refused(raw: str):
    with pytest.raises(ValidationFailed) as caught:
        page_params({"limit": raw})

    assert list(caught.value.errors) == ["limit"]
    assert caught.value.errors["limit"] == ["must be an integer from 1 to 200"]


def test_a_keyset_cursor_round_trips_its_position_in_its_order():
    cursor = keyset_cursor("created_at", AT, ROW)

    assert re.fullmatch(PATTERNS["keyset"], cursor)
    assert page_params({"limit": "10", "cursor": cursor}) == (10, cursor)
    assert read_keyset(cursor, "created_at") == [AT, ROW]
    changed = keyset_cursor("updated_at", "2026-01-05T11:00:00+01:00", ROW)
    assert re.fullmatch(PATTERNS["changes"], changed)
    assert not re.fullmatch(PATTERNS["keyset"], changed)
    assert read_keyset(changed, "updated_at") == ["2026-01-05T10:00:00+00:00", ROW]


def test_a_cursor_of_the_other_order_is_a_conflict():
    with pytest.raises(Conflict):
        read_keyset(keyset_cursor("updated_at", AT, ROW), "created_at")
    with pytest.raises(Conflict):
        read_keyset(keyset_cursor("created_at", AT, ROW), "updated_at")


def test_search_and_ledger_cursors_round_trip():
    cursor = search_cursor(3, AT, ROW)
    assert re.fullmatch(PATTERNS["search"], cursor)
    assert read_search(page_params({"cursor": cursor}, "search")[1]) == ["3", AT, ROW]
    nil = "00000000-0000-0000-0000-000000000000"
    frozen = ledger_cursor(["frozen", nil, 42])
    assert frozen == "42"  # as before the tenant logs: a cursor given then still pages
    assert read_ledger(page_params({"cursor": frozen}, "ledger")[1]) == ["frozen", nil, 42]
    tenant = ledger_cursor(["tenant", ROW, 7])
    assert read_ledger(page_params({"cursor": tenant}, "ledger")[1]) == [
        "tenant",
        str(uuid.UUID(ROW)),
        7,
    ]
    assert read_ledger(None) is None


@pytest.mark.parametrize(
    ("kind", "cursor"),
    [
        ("keyset", "not a cursor!"),
        ("keyset", "%%%"),
        ("keyset", "u.1767607200000000.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),  # no updated order
        ("keyset", "c.1767607200000000.0b3e6c1e-6f0a-4f43-9d8a-0c5b7c1d2e3f"),
        ("keyset", "c.12345678901234567.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),  # past 2286
        ("keyset", "c.-1.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),
        ("changes", "x.1.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),
        ("search", "0.1.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),  # no ticket matches no word
        ("search", "c.1.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),  # a list's cursor
        ("ledger", "12a"),
        ("ledger", "9" * 19),  # beyond bigint
        ("ledger", "c.1.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f"),
        ("ledger", "t.0b3e6c1e6f0a4f439d8a0c5b7c1d2e3f."),  # no seq
        ("ledger", "t.0b3e6c1e-6f0a-4f43-9d8a-0c5b7c1d2e3f.1"),
    ],
)
def test_anything_not_of_the_lists_form_is_a_validation_error_on_cursor(kind, cursor):
    assert not re.fullmatch(PATTERNS[kind], cursor)
    with pytest.raises(ValidationFailed) as caught:
        page_params({"cursor": cursor}, kind)

    assert list(caught.value.errors) == ["cursor"]


def test_a_made_up_cursor_of_the_right_form_is_a_position_like_any_other():
    # Not signed: a client may start anywhere, and what it names is parsed, never passed on.
    assert read_keyset("c.0.00000000000000000000000000000000", "created_at") == [
        "1970-01-01T00:00:00+00:00",
        "00000000-0000-0000-0000-000000000000",
    ]
    assert read_keyset("c.9999999999999999.ffffffffffffffffffffffffffffffff", "created_at")
