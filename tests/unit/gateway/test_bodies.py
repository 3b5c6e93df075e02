"""How deep client JSON nests, found without parsing it (``gateway.bodies``)."""

from __future__ import annotations

import json

import pytest

from gateway.bodies import _STRING, MAX_JSON_DEPTH, TooDeep, loads, nesting_depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("42", 0),
        ('"[[[{{{"', 0),  # brackets in a string are text
        ('"\\\\"', 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}], "c": {}}', 4),
        ('{"a": "\\"[[[", "b": ["]]]"]}', 2),  # an escaped quote does not end the string
        ("[" * 100_000, 100_000),
        ('{"a":' * 100_000, 100_000),
        ("]]][[", 0),  # invalid: refused by the parser at its first character
    ],
)
def test_nesting_depth(text: str, depth: int):
    assert nesting_depth(text) == depth


def test_loads_refuses_more_than_the_limit_and_parses_up_to_it():
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH

    assert loads(at_limit.encode()) == json.loads(at_limit)
    with pytest.raises(TooDeep):
        loads(("[" + at_limit + "]").encode())
    with pytest.raises(TooDeep):
        loads(b"[" * 100_000)  # json.loads: RecursionError


def test_loads_reads_bytes_as_json_loads_does():
    document = {"name": "Zoë", "tags": ["a"]}
    for encoding in ("utf-8", "utf-16", "utf-8-sig"):
        assert loads(json.dumps(document, ensure_ascii=False).encode(encoding)) == document
    with pytest.raises(ValueError):
        loads(b"{")


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ('"' + '\\"' * 5000, 0),  # an unterminated string of escaped quotes
        ('{"a": "' + '\\"' * 5000, 6),
    ],
)
def test_an_unterminated_string_is_cut_out_in_one_match(text: str, start: int):
    # One match from its opening quote to the end of the text: were the closing quote required,
    # the search would start again at every quote inside and run to the end each time, a cost
    # that grows with the square of the body (seconds for 64 KiB, before any authentication).
    last = list(_STRING.finditer(text))[-1]
    assert (last.start(), last.end()) == (start, len(text))
    with pytest.raises(ValueError):
        loads(text)
