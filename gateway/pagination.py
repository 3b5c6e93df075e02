"""List pagination: ``?limit=`` and an opaque ``?cursor=`` naming where the next page starts.

A cursor is URL-safe base64 (no padding) of compact JSON: a flat object of string or integer
values. It is not signed, so a client can forge one; decoding therefore admits nothing but that
shape, and services must treat the values as untrusted query parameters (bound, never spliced
into SQL), exactly as they would a filter.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from gateway import bodies
from kernel.errors import ValidationFailed

PAGING = ("limit", "cursor")  # the query parameters of every list; the rest are its filters
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Far beyond any real position; bounds the work a hostile cursor can cause before it is refused.
MAX_CURSOR_CHARS = 2048
_LIMIT = re.compile(r"[0-9]{1,4}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def page_params(args: Mapping[str, str]) -> tuple[int, dict[str, Any] | None]:
    """``(limit, position)`` from the query; position is None for the first page."""
    raw_limit = args.get("limit")
    if raw_limit is None:
        limit = DEFAULT_LIMIT
    else:
        # Digits only: int() would also take " 7", "+7" and "٧", none of which we document.
        limit = int(raw_limit) if _LIMIT.fullmatch(raw_limit) else 0
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed({"limit": [f"must be an integer from 1 to {MAX_LIMIT}"]})
    cursor = args.get("cursor")
    # An empty cursor is what a client sends when it builds the URL from no cursor at all.
    return limit, decode_cursor(cursor) if cursor else None


def order_of(query: Mapping[str, str]) -> str:
    """The order a list is paged in: as its items were created, or, given ``updated_since``, as
    they changed (a client that keeps a copy in step goes on from its last cursor, and an item
    changed meanwhile comes again, later). A cursor names its order (``Routes._page``)."""
    return "updated_at" if query.get("updated_since") else "created_at"


def encode_cursor(position: Mapping[str, Any]) -> str:
    """The cursor for ``position``; only what :func:`decode_cursor` would accept is encodable."""
    if not _valid_position(position):
        raise ValueError("a cursor position is a flat mapping of str keys to str or int values")
    text = json.dumps(dict(position), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    cursor = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError("a cursor position this large would be refused when it came back")
    return cursor


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The position a cursor names; anything not made by :func:`encode_cursor` is refused."""
    if len(cursor) > MAX_CURSOR_CHARS or not _BASE64URL.fullmatch(cursor):
        raise _bad_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        # A position is flat: anything nested deeper is refused before it is parsed (a cursor
        # of 1,500 "[" would otherwise exhaust the parser's recursion).
        position = bodies.loads(raw.decode("utf-8"), max_depth=1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor() from None
    if not _valid_position(position):
        raise _bad_cursor()
    return position


def _valid_position(position: Any) -> bool:
    return isinstance(position, Mapping) and all(
        isinstance(key, str) and _valid_value(value) for key, value in position.items()
    )


def _valid_value(value: Any) -> bool:
    # The values end up as query parameters: a NUL is refused by PostgreSQL and an integer
    # beyond bigint overflows it, either of which would surface as a 500 instead of a 422.
    if isinstance(value, str):
        return "\x00" not in value
    # bool is an int to Python, but not a value a position holds.
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and _BIGINT_MIN <= value <= _BIGINT_MAX
    )


def _bad_cursor() -> ValidationFailed:
    # One message whatever was wrong: the client has nothing to learn about the format.
    return ValidationFailed({"cursor": ["not a valid cursor; use a next_cursor as given"]})
