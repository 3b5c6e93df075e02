"""Which integration events a tenant's webhooks may be told of, and what each one says.

A webhook event is built from the integration event by an allow-list of its payload's fields
(``WebhookEvent.fields``): ids and states, never a copy of the payload. The published copies
already leave without the encrypted fields (a ticket's subject and body, a message's body, its
tags), and the allow-list keeps it so even if a later version of an event carried more: a field
reaches a receiver only once it is named here.

The body a receiver gets::

    {"id": "<the integration event's id>", "type": "ticket.created",
     "occurred_at": "2026-01-01T12:00:00+00:00", "tenant_id": "...",
     "data": {"ticket_id": "...", "requester_id": "...", "priority": "normal", "status": "new"}}

``id`` is the same on every attempt and in the ``Ledgerdesk-Event-Id`` header: a receiver
dedups on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernel.envelope import Envelope, MalformedPayload


@dataclass(frozen=True)
class WebhookEvent:
    name: str  # what a tenant subscribes to and a receiver sees as ``type``
    routing_key: str  # the integration event it is built from (``<source>.<type>``)
    description: str
    fields: tuple[str, ...]  # copied from the event's payload, every one required
    constants: Mapping[str, Any] = field(default_factory=dict)  # said by the event's type
    # The versions of the integration event read here: a version not listed is refused
    # (dead-lettered, to be replayed once the catalogue knows it), never guessed at.
    versions: tuple[int, ...] = (1,)

    def data(self, payload: Mapping[str, Any], version: int = 1) -> dict[str, Any]:
        """The webhook's ``data``: the named fields of the event's payload, and the constants.
        ``MalformedPayload`` for a version not read here, or a named field missing."""
        event_type = self.routing_key.partition(".")[2]
        if version not in self.versions:
            raise MalformedPayload(event_type, version, {"schema_version": ["not read here"]})
        missing = {name: ["missing"] for name in self.fields if name not in payload}
        if missing:
            raise MalformedPayload(event_type, version, missing)
        return {**{name: _plain(payload[name]) for name in self.fields}, **self.constants}


EVENTS: tuple[WebhookEvent, ...] = (
    WebhookEvent(
        "ticket.created",
        "tickets.ticket_created",
        "a ticket was opened: its id, requester and priority",
        ("ticket_id", "requester_id", "priority"),
        {"status": "new"},
    ),
    WebhookEvent(
        "ticket.status_changed",
        "tickets.ticket_status_changed",
        "a ticket's status changed (closing one included): the previous and the new",
        ("ticket_id", "previous", "status"),
    ),
    WebhookEvent(
        "ticket.assigned",
        "tickets.ticket_assigned",
        "a ticket was assigned (or unassigned: assignee_id null)",
        ("ticket_id", "assignee_id"),
    ),
    WebhookEvent(
        "ticket.message_added",
        "tickets.message_added",
        "a reply or an internal note was added: ids and whether it is internal, never its text",
        ("ticket_id", "message_id", "author_id", "author_kind", "internal"),
        versions=(1, 2),
    ),
    WebhookEvent(
        "privacy_request.completed",
        "retention.privacy_request_completed",
        "every service answered a data-subject request: its type and whom it concerned, by id",
        ("request_id", "type", "subject_kind", "subject_id"),
        {"status": "completed"},
    ),
    WebhookEvent(
        "privacy_request.failed",
        "retention.privacy_request_overdue",
        "a data-subject request passed its deadline unanswered and failed",
        ("request_id",),
        {"status": "failed"},
        versions=(1, 2),
    ),
)
NAMES: tuple[str, ...] = tuple(event.name for event in EVENTS)
# What ``POST /v1/webhooks/{id}/pings`` sends: to that endpoint only, whatever its events; its
# ``data`` is ``{"webhook_id": ...}``. Not subscribed to, so not among ``NAMES``.
PING = "webhook.ping"
DELIVERED: tuple[str, ...] = (*NAMES, PING)
BY_ROUTING_KEY: dict[str, WebhookEvent] = {event.routing_key: event for event in EVENTS}
BY_NAME: dict[str, WebhookEvent] = {event.name: event for event in EVENTS}


def of(envelope: Envelope) -> WebhookEvent | None:
    """The webhook event an integration event becomes, if any."""
    return BY_ROUTING_KEY.get(envelope.routing_key)


def body(event_id: str, event_type: str, occurred_at: str, tenant_id: str, data: Any) -> bytes:
    """The bytes a receiver gets (and the signature covers): compact JSON, keys sorted, so
    every attempt of a delivery sends the same bytes."""
    document = {
        "id": event_id,
        "type": event_type,
        "occurred_at": occurred_at,
        "tenant_id": tenant_id,
        "data": data,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    # Published payloads are JSON already; a UUID or a time from a test's envelope is not.
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
