"""The operator token check: an empty token, configured or presented, never matches."""

from __future__ import annotations

import pytest

from gateway.routes.base import operator_token_matches

TOKEN = "uE3rT7yW1qZ9xC5vB2nM8kL4jH6gF0dS"


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        ("", ""),  # an unset token and a bare "Authorization: Bearer"
        ("", TOKEN),
        (TOKEN, ""),
        (TOKEN[:-1], TOKEN),
        (TOKEN + "x", TOKEN),
        (TOKEN.lower(), TOKEN),
    ],
)
def test_only_the_configured_non_empty_token_matches(presented: str, expected: str):
    assert operator_token_matches(presented, expected) is False


def test_the_configured_token_matches():
    assert operator_token_matches(TOKEN, TOKEN) is True
