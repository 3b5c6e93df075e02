"""The access log: one ``gateway.access_logged`` event per request, for the audit service.

The event says who did what to which resources, not what was sent: it carries the route
template (``/v1/contacts/<id>``) and the ids matched, never the raw path or its query string,
where search terms and other personal data end up.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from marshmallow import Schema, fields, validate

from kernel.cards import redact_card_numbers
from kernel.envelope import Envelope, EventRegistry, EventType, new_envelope

SOURCE = "gateway"
MAX_USER_AGENT_CHARS = 512
# What ``route`` is for a request that matched no rule (a 404 or 405 from routing).
UNMATCHED_ROUTE = "<unmatched>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


ACCESS_LOGGED = EventType("access_logged", {1: AccessLoggedV1}, published=True)
REGISTRY = EventRegistry(ACCESS_LOGGED)


def access_event(
    *,
    tenant_id: UUID | None,
    actor_id: str | None,
    method: str,
    route: str,
    resource_ids: list[str],
    status: int,
    ip: str | None,
    user_agent: str | None,
    trace_id: str | None,
    at: datetime,
    trace: dict[str, str],
) -> Envelope:
    """The event for one request, its payload validated (``MalformedPayload`` if not)."""
    payload: dict[str, Any] = {
        "method": method.upper(),
        "route": route,
        "resource_ids": [redact_card_numbers(str(r))[0] for r in resource_ids],
        "status": status,
        "ip": _address(ip),
        "user_agent": _user_agent(user_agent),
        "trace_id": trace_id,
    }
    # Validated for its errors only: the payload sent stays plain JSON (the schema would load
    # ``ip`` as an address object).
    ACCESS_LOGGED.validate(payload)
    envelope = new_envelope(
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
