"""The access log: one ``gateway.access_logged`` event per request, for the audit service.

Unauthenticated requests (no credential, a refused one, an unknown route, a public endpoint)
are not what a tenant audits, and anyone can send them by the million: past
``LEDGERDESK_UNAUTHENTICATED_LOG_LIMIT`` of them in an interval of
``LEDGERDESK_UNAUTHENTICATED_LOG_SECONDS`` a gateway process counts them instead
(``UnauthenticatedBudget``) and writes one ``gateway.access_summarized`` event when the interval
ends: counts by method, route template and status, and no address or user agent.

The event says who did what to which resources, not what was sent: it carries the route
template (``/v1/contacts/<id>``) and the ids matched, never the raw path or its query string,
where search terms and other personal data end up. Its ``resource_ids`` name everyone whose data
the answer held (``ids_in`` of the response, with the path's ids and those the handler names),
so a subject's "who accessed my data" view and export see list reads and updates too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from marshmallow import Schema, fields, validate

from gateway.pagination import MAX_LIMIT
from kernel.cards import redact_card_numbers
from kernel.envelope import Envelope, EventRegistry, EventType, new_envelope

SOURCE = "gateway"
MAX_USER_AGENT_CHARS = 512
# What ``route`` is for a request that matched no rule (a 404 or 405 from routing).
UNMATCHED_ROUTE = "<unmatched>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# v2's bound on the ids one request names: a page is at most MAX_LIMIT items, and no item of any
# list the API gives names more than a handful of ids (a ticket: itself, requester, assignee).
MAX_RESOURCE_IDS = 25 * MAX_LIMIT
_UUID_CHARS = 36
# Rows (method, route, status) one access summary holds at most.
MAX_SUMMARY_ROWS = 500
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class AccessLoggedV1(Schema):
    method = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{1,16}$"))
    # A template or the unmatched marker: no "?" or "#", so no query string slips in.
    route = fields.String(
        required=True,
        validate=validate.Regexp(rf"^(/[^?#\s]{{0,499}}|{re.escape(UNMATCHED_ROUTE)})$"),
    )
    resource_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)),
        required=True,
        validate=validate.Length(max=50),
    )
    status = fields.Integer(required=True, strict=True, validate=validate.Range(min=100, max=599))
    # ip and user_agent are personal data. They are not declared ``personal_fields``: those are
    # stripped from published copies, and the audit service needs them; it encrypts them under
    # its own keys on receipt, so they can be shredded like any other personal data.
    ip = fields.IP(required=True, allow_none=True)
    user_agent = fields.String(
        required=True, allow_none=True, validate=validate.Length(max=MAX_USER_AGENT_CHARS)
    )
    trace_id = fields.String(
        required=True, allow_none=True, validate=validate.Regexp(r"^[0-9a-f]{32}$")
    )


class AccessLoggedV2(AccessLoggedV1):
    """Names every id of the answer: up to ``MAX_RESOURCE_IDS`` (v1: 50), and how many more
    there were (``omitted_ids``, 0 unless a single answer named more than that)."""

    resource_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)),
        required=True,
        validate=validate.Length(max=MAX_RESOURCE_IDS),
    )
    omitted_ids = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))


ACCESS_LOGGED = EventType(
    "access_logged",
    {1: AccessLoggedV1, 2: AccessLoggedV2},
    # A v1 event named every id its request touched that it recorded, and omitted none.
    upcasters={1: lambda payload: {**payload, "omitted_ids": 0}},
    published=True,
)


class SummaryRowV1(Schema):
    method = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{1,16}$"))
    route = fields.String(
        required=True,
        validate=validate.Regexp(rf"^(/[^?#\s]{{0,499}}|{re.escape(UNMATCHED_ROUTE)})$"),
    )
    status = fields.Integer(required=True, strict=True, validate=validate.Range(min=100, max=599))
    count = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class AccessSummarizedV1(Schema):
    """The unauthenticated requests of one interval of one gateway process that were counted
    rather than written one by one: a new event, not a version of ``access_logged``, since it
    stands for many requests and names no one."""

    started_at = fields.DateTime(required=True)
    ended_at = fields.DateTime(required=True)
    # Unauthenticated requests of the interval that have an access_logged event of their own.
    written = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    # Those counted here; ``requests`` breaks them down (up to MAX_SUMMARY_ROWS rows, so a
    # count may exceed the rows' sum).
    counted = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    requests = fields.List(
        fields.Nested(SummaryRowV1), required=True, validate=validate.Length(max=MAX_SUMMARY_ROWS)
    )


ACCESS_SUMMARIZED = EventType("access_summarized", {1: AccessSummarizedV1}, published=True)
REGISTRY = EventRegistry(ACCESS_LOGGED, ACCESS_SUMMARIZED)
# A method outside these is summarised as OTHER: the rows a client can make stay bounded.
_SUMMARY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def access_event(
    *,
    event_id: UUID | None = None,
    tenant_id: UUID | None,
    actor_id: str | None,
    method: str,
    route: str,
    resource_ids: Iterable[str],
    answer_ids: Iterable[str] = (),
    status: int,
    ip: str | None,
    user_agent: str | None,
    trace_id: str | None,
    at: datetime,
    trace: dict[str, str],
) -> Envelope:
    """The event for one request, its payload validated (``MalformedPayload`` if not); its id
    is the request's (``event_id``, the ``X-Request-Id`` its answer carried) where given.

    ``resource_ids`` are what the request named (its path, say): whatever a client typed may
    hold a card number, so they pass the redactor. ``answer_ids`` are the ids of the platform's
    own resources its answer held (``ids_in``): generated by the services, recorded as they are,
    since a random id the redactor took for a card number would leave its subject unnamed.
    """
    named = named_ids((redact_card_numbers(str(r))[0] for r in resource_ids), answer_ids)
    payload: dict[str, Any] = {
        "method": method.upper(),
        "route": route,
        "resource_ids": named[:MAX_RESOURCE_IDS],
        "omitted_ids": max(0, len(named) - MAX_RESOURCE_IDS),
        "status": status,
        "ip": _address(ip),
        "user_agent": _user_agent(user_agent),
        "trace_id": trace_id,
    }
    # Validated for its errors only: the payload sent stays plain JSON (the schema would load
    # ``ip`` as an address object).
    ACCESS_LOGGED.validate(payload)
    envelope = new_envelope(
        event_id=event_id,
        type=ACCESS_LOGGED.name,
        schema_version=ACCESS_LOGGED.latest,
        source=SOURCE,
        stream_id="access-pending",
        stream_version=1,
        tenant_id=tenant_id,
        actor_id=actor_id,
        payload=payload,
        trace=trace,
        occurred_at=at,
    )
    # Each request is a stream of one event, named after it, so it can be found by its id.
    return dataclasses.replace(envelope, stream_id=f"access-{envelope.event_id}")


def ids_in(document: Any) -> list[str]:
    """Every UUID held under a key ``id`` or ``*_id`` anywhere in a JSON document, canonical,
    once each, breadth first: an item's own ids and its people come before those of what it
    nests (a ticket's requester before its messages), so the front of a long list is the part
    that matters most."""
    found: dict[str, None] = {}
    pending: deque[Any] = deque([document])
    while pending:
        item = pending.popleft()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str):
                    if len(value) == _UUID_CHARS and (key == "id" or key.endswith("_id")):
                        # The services answer with canonical ids; anything else is parsed.
                        canonical = value if _CANONICAL.fullmatch(value) else canonical_id(value)
                        if canonical is not None:
                            found[canonical] = None
                elif isinstance(value, dict | list):
                    pending.append(value)
        elif isinstance(item, list):
            pending.extend(item)
    return list(found)


def canonical_id(value: str) -> str | None:
    """The canonical text of a UUID, or None for anything else."""
    try:
        return str(UUID(value))
    except ValueError:
        return None


def named_ids(*groups: Iterable[str]) -> list[str]:
    """The ids of several sources in order, once each (a UUID in any spelling counts once)."""
    merged: dict[str, None] = {}
    for group in groups:
        for value in group:
            merged.setdefault(canonical_id(value) or value)
    return list(merged)


def _address(ip: str | None) -> str | None:
    # Whoever passes it may have taken it from a proxy header, which can hold anything: an
    # address that does not parse is recorded as unknown rather than losing the whole event.
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        return None


def _user_agent(user_agent: str | None) -> str | None:
    if not user_agent:
        return None
    # Control characters have no place in a log line, and a NUL would not fit in a jsonb column.
    # Whatever a client typed may hold a card number: never stored whole, here either.
    cleaned = redact_card_numbers(_CONTROL.sub("", user_agent))[0]
    return cleaned[:MAX_USER_AGENT_CHARS] or None


@dataclasses.dataclass(frozen=True)
class Summary:
    """What one interval counted (``UnauthenticatedBudget``)."""

    started_at: datetime
    ended_at: datetime
    written: int
    counted: int
    requests: dict[tuple[str, str, int], int]


class UnauthenticatedBudget:
    """At most ``limit`` unauthenticated requests per interval of ``seconds`` are written one
    by one; the others are counted by (method, route template, status) until the interval
    ends, in memory bounded by ``MAX_SUMMARY_ROWS`` rows. Intervals are aligned on the epoch,
    so every process's intervals are the same ones. Nothing about the client is kept."""

    def __init__(self, limit: int, seconds: float, clock: Callable[[], float] = time.time):
        if limit < 0 or not seconds > 0:
            raise ValueError("limit must be at least 0 and seconds positive")
        self.limit = limit
        self.seconds = float(seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._interval = self._interval_of(clock())
        self._written = 0
        self._counted = 0
        self._rows: Counter[tuple[str, str, int]] = Counter()
        self._ended: list[Summary] = []

    def admit(self, method: str, route: str, status: int) -> bool:
        """True if this request is to be written one by one; else it has been counted."""
        with self._lock:
            self._roll(self._clock())
            if self._written < self.limit:
                self._written += 1
                return True
            self._counted += 1
            method = method.upper() if method.upper() in _SUMMARY_METHODS else "OTHER"
            key = (method, route, status)
            if key in self._rows or len(self._rows) < MAX_SUMMARY_ROWS:
                self._rows[key] += 1
            return False

    def ended(self, final: bool = False) -> list[Summary]:
        """The summaries of the intervals that ended (with ``final``, the current one too)
        that counted anything; each is handed out once."""
        with self._lock:
            self._roll(self._clock(), final)
            ended, self._ended = self._ended, []
            return ended

    def _interval_of(self, now: float) -> int:
        return math.floor(now / self.seconds)

    def _roll(self, now: float, final: bool = False) -> None:
        interval = self._interval_of(now)
        if interval == self._interval and not final:
            return
        if self._counted:
            ends = min((self._interval + 1) * self.seconds, max(now, self._interval * self.seconds))
            self._ended.append(
                Summary(
                    started_at=datetime.fromtimestamp(self._interval * self.seconds, UTC),
                    ended_at=datetime.fromtimestamp(ends, UTC),
                    written=self._written,
                    counted=self._counted,
                    requests=dict(self._rows),
                )
            )
        if interval != self._interval:
            self._interval, self._written = interval, 0
        self._counted = 0
        self._rows = Counter()


def summary_event(summary: Summary) -> Envelope:
    """The ``access_summarized`` event of one interval's summary, validated."""
    payload: dict[str, Any] = {
        "started_at": summary.started_at.isoformat(),
        "ended_at": summary.ended_at.isoformat(),
        "written": summary.written,
        "counted": summary.counted,
        "requests": [
            {"method": method, "route": route, "status": status, "count": count}
            for (method, route, status), count in sorted(summary.requests.items())
        ],
    }
    ACCESS_SUMMARIZED.validate(payload)
    envelope = new_envelope(
        type=ACCESS_SUMMARIZED.name,
        schema_version=ACCESS_SUMMARIZED.latest,
        source=SOURCE,
        stream_id="access-summary-pending",
        stream_version=1,
        tenant_id=None,
        actor_id=None,
        payload=payload,
        trace={},
        occurred_at=summary.ended_at,
    )
    return dataclasses.replace(envelope, stream_id=f"access-summary-{envelope.event_id}")
