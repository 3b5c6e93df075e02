"""List pagination: ``?limit=`` and a ``?cursor=`` naming where the next page starts.

A cursor is a position in a list's order, written so that the OpenAPI document can say exactly
which strings are cursors (``PATTERNS``, one per kind of list) and every string of that form is
one: a position the client made up is as good as one it was given, and pages from there. A
cursor is not signed and names nothing secret; its values are parsed into integers, times and
UUIDs, never passed on as text, so a forged one cannot reach SQL as anything but a bound value.

- ``keyset``, the lists in the order their items were created:
  ``c.<microseconds since 1970>.<the last item's id, 32 hex digits>``; ``changes``, the lists
  that may also be paged in the order their items changed (``updated_since``), those and
  ``u.<microseconds>.<id>``. A cursor of the other order than the request's is refused (409).
- ``search``, a search's ranking: ``<terms matched>.<microseconds>.<id>``.
- ``ledger``, the audit ledger's order (the frozen single chain, then each tenant log in turn):
  the last entry's sequence number in the frozen chain, or ``t.<its log's id, 32 hex
  digits>.<its sequence number there>``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping

from kernel.errors import Conflict, ValidationFailed

PAGING = ("limit", "cursor")  # the query parameters of every list; the rest are its filters
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_LIMIT = re.compile(r"[0-9]{1,4}")
# 16 digits of microseconds reach the year 2286; 9 of terms matched are more than a query holds.
_MICROS, _ID = r"[0-9]{1,16}", r"[0-9a-f]{32}"
PATTERNS = {
    "keyset": rf"^(?:c\.{_MICROS}\.{_ID})?$",
    "changes": rf"^(?:[cu]\.{_MICROS}\.{_ID})?$",
    "search": rf"^(?:[1-9][0-9]{{0,8}}\.{_MICROS}\.{_ID})?$",
    "ledger": rf"^(?:[0-9]{{0,18}}|t\.{_ID}\.[0-9]{{1,18}})$",
}
ORDERS = {"created_at": "c", "updated_at": "u"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FORMATS = {kind: re.compile(pattern) for kind, pattern in PATTERNS.items()}


def page_params(args: Mapping[str, str], kind: str = "keyset") -> tuple[int, str | None]:
    """``(limit, cursor)`` from the query; the cursor is None for the first page, and otherwise
    of the form ``PATTERNS[kind]`` (anything else is refused)."""
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
    if not cursor:
        return limit, None
    if not _FORMATS[kind].fullmatch(cursor):
        raise _bad_cursor()
    return limit, cursor


def order_of(query: Mapping[str, str]) -> str:
    """The order a list is paged in: as its items were created, or, given ``updated_since``, as
    they changed (a client that keeps a copy in step goes on from its last cursor, and an item
    changed meanwhile comes again, later). A cursor names its order."""
    return "updated_at" if query.get("updated_since") else "created_at"


def keyset_cursor(order: str, moment: str, row_id: str) -> str:
    """The cursor after the item ``row_id`` at ``moment`` (ISO 8601) in ``order``."""
    return f"{ORDERS[order]}.{_micros(moment)}.{uuid.UUID(row_id).hex}"


def read_keyset(cursor: str, order: str) -> list[str]:
    """The position ``[moment, id]`` of a keyset cursor (``page_params``'s), in ``order``."""
    letter, micros, row_id = cursor.split(".")
    if letter != ORDERS[order]:
        # Well formed, but a position in the other order: it means nothing in this one.
        raise Conflict(
            "a cursor of this list in another order (updated_since pages as items changed, the"
            " list without it as they were created): start without one"
        )
    return [_moment(micros), str(uuid.UUID(row_id))]


def search_cursor(matched: int, moment: str, row_id: str) -> str:
    return f"{int(matched)}.{_micros(moment)}.{uuid.UUID(row_id).hex}"


def read_search(cursor: str) -> list[str]:
    """The position ``[matched, moment, id]`` of a search's cursor (``page_params``'s)."""
    matched, micros, row_id = cursor.split(".")
    return [str(int(matched)), _moment(micros), str(uuid.UUID(row_id))]


_NIL = "00000000-0000-0000-0000-000000000000"


def ledger_cursor(position: list) -> str:
    """The cursor after ``[log, log id, seq]`` (audit's ``next``)."""
    log, log_id, seq = position
    if log == "frozen":
        return str(int(seq))  # as before the tenant logs: cursors given then still page
    return f"t.{uuid.UUID(str(log_id)).hex}.{int(seq)}"


def read_ledger(cursor: str | None) -> list | None:
    """The position ``[log, log id, seq]`` of a ledger cursor (``page_params``'s); None first."""
    if not cursor:
        return None
    if cursor.startswith("t."):
        _, log_id, seq = cursor.split(".")
        return ["tenant", str(uuid.UUID(log_id)), int(seq)]
    return ["frozen", _NIL, int(cursor)]


def _micros(moment: str) -> int:
    delta = dt.datetime.fromisoformat(moment).astimezone(dt.UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment(micros: str) -> str:
    # Re-rendered, never the client's text: PostgreSQL reads this form and no other is sent.
    return (_EPOCH + dt.timedelta(microseconds=int(micros))).isoformat()


def _bad_cursor() -> ValidationFailed:
    # One message whatever was wrong: the client has nothing to learn about the format.
    return ValidationFailed({"cursor": ["not a valid cursor; use a next_cursor as given"]})
