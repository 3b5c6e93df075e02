"""Unit tests for ?limit= and ?cursor= parsing and the opaque cursor's round trip."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.pagination import (
    DEFAULT_LIMIT,
    MAX_CURSOR_CHARS,
    decode_cursor,
    encode_cursor,
    page_params,
)
from kernel.errors import ValidationFailed


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


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


def test_a_cursor_round_trips_str_and_int_values():
    position = {"after": "2026-01-05T10:00:00.123456+00:00|0b3e6c1e-6f0a-4f43-9d8a-0c5b7c1d2e3f"}
    position |= {"seq": 9_223_372_036_854_775_807, "neg": -3, "name": "Zoë ✓"}

    cursor = encode_cursor(position)

    assert decode_cursor(cursor) == position
    assert page_params({"limit": "10", "cursor": cursor}) == (10, position)


def test_a_cursor_is_url_safe_without_padding_and_deterministic():
    for n in range(1, 20):
        cursor = encode_cursor({"after": "x" * n, "?": "/+&="})
        assert all(c.isalnum() or c in "-_" for c in cursor)
        assert "=" not in cursor
    assert encode_cursor({"a": 1, "b": "2"}) == encode_cursor({"b": "2", "a": 1})


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "%%%",
        "a",  # a length no base64 can have
        b64(b"\xff\xfe\xfd"),  # not UTF-8
        b64(b"{not json"),
        b64(b'["a", 1]'),  # not an object
        b64(b'"after"'),
        b64(b'{"after": {"$gt": ""}}'),  # nesting could smuggle an operator
        b64(b'{"after": ["a"]}'),
        b64(b'{"after": 1.5}'),
        b64(b'{"after": NaN}'),
        b64(b'{"after": null}'),
        b64(b'{"after": true}'),
        b64(b'{"after": 9223372036854775808}'),  # beyond bigint
        b64(json.dumps({"after": "a\u0000b"}).encode()),  # PostgreSQL text holds no NUL
        b64(b'{"after": "x"}') + "==",  # padding is not part of the format
        b64(b'{"after": "x"}')[:-1] + "+",  # the standard alphabet is not ours
        "A" * (MAX_CURSOR_CHARS + 1),
        # As deep as a cursor's length allows: the parser would run out of recursion (a 500).
        b64(b"[" * 1500),
        b64(b'{"a":' * 300),
    ],
)
def test_garbage_cursors_are_a_validation_error_on_cursor(cursor: str):
    with pytest.raises(ValidationFailed) as caught:
        page_params({"cursor": cursor})

    assert list(caught.value.errors) == ["cursor"]


def test_a_forged_but_well_formed_cursor_decodes_to_plain_values_only():
    forged = b64(json.dumps({"after": "'; DROP TABLE tickets; --"}).encode())

    assert decode_cursor(forged) == {"after": "'; DROP TABLE tickets; --"}


@pytest.mark.parametrize(
    "position",
    [{"a": 1.5}, {"a": None}, {"a": True}, {"a": {"b": 1}}, {"a": [1]}, {1: "a"}, {"a": 2**63}],
)
def test_only_what_decodes_can_be_encoded(position):
    with pytest.raises(ValueError):
        encode_cursor(position)


def test_an_empty_position_round_trips():
    assert decode_cursor(encode_cursor({})) == {}
