"""What a webhook says (an allow-list of the event's ids and states) and when a failed one is
tried again."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from gateway.subscriptions import WEBHOOKS
from gateway.webhooks import catalogue
from gateway.webhooks.dispatcher import MAX_WAIT, Schedule
from kernel.envelope import MalformedPayload, new_envelope
from services.retention.events import MESSAGES as RETENTION_MESSAGES
from services.tickets.events import REGISTRY as TICKET_EVENTS

TENANT = uuid.uuid4()


def envelope(source: str, type_: str, payload: dict) -> object:
    return new_envelope(
        type=type_,
        schema_version=1,
        source=source,
        stream_id=f"x-{uuid.uuid4()}",
        stream_version=1,
        tenant_id=TENANT,
        actor_id=None,
        payload=payload,
    )


def test_a_ticket_event_becomes_ids_and_states_even_if_it_carried_words():
    ticket, requester = str(uuid.uuid4()), str(uuid.uuid4())
    # As stored, not as published: words a webhook must never carry, whatever a later version
    # of the event holds.
    created = envelope(
        "tickets",
        "ticket_created",
        {
            "ticket_id": ticket,
            "tenant_id": str(TENANT),
            "requester_id": requester,
            "subject": "Refund for Jane Doe",
            "body": "jane@example.com wants her money back",
            "priority": "high",
            "tags": ["vip-jane"],
            "redactions": 0,
        },
    )
    event = catalogue.of(created)
    assert event is not None and event.name == "ticket.created"
    assert event.data(created.payload) == {
        "ticket_id": ticket,
        "requester_id": requester,
        "priority": "high",
        "status": "new",
    }


def test_a_message_event_names_the_message_never_its_text():
    payload = {
        "ticket_id": str(uuid.uuid4()),
        "tenant_id": str(TENANT),
        "message_id": str(uuid.uuid4()),
        "author_id": str(uuid.uuid4()),
        "author_kind": "agent",
        "internal": True,
        "requester_id": str(uuid.uuid4()),
        "redactions": 0,
        "body": "call Jane on +44 20 7946 0000",
    }
    data = catalogue.of(envelope("tickets", "message_added", payload)).data(payload)
    assert set(data) == {"ticket_id", "message_id", "author_id", "author_kind", "internal"}


def test_events_no_webhook_is_built_from_are_none():
    assert catalogue.of(envelope("tickets", "ticket_priority_changed", {})) is None
    assert catalogue.of(envelope("accounts", "contact_created", {})) is None


def test_the_subscription_is_bound_to_exactly_the_catalogues_events():
    assert set(WEBHOOKS.bindings) == set(catalogue.BY_ROUTING_KEY)
    assert len(catalogue.NAMES) == len(set(catalogue.NAMES))


def test_the_body_is_the_same_bytes_for_the_same_delivery():
    args = ("e-1", "ticket.assigned", "2026-01-01T00:00:00+00:00", str(TENANT), {"b": 1, "a": 2})
    first = catalogue.body(*args)
    assert first == catalogue.body(*args)
    assert json.loads(first) == {
        "id": "e-1",
        "type": "ticket.assigned",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "tenant_id": str(TENANT),
        "data": {"a": 2, "b": 1},
    }


def test_retries_double_up_to_an_hour_and_end_with_the_window():
    schedule = Schedule(dt.timedelta(seconds=30), dt.timedelta(hours=24))
    waits = [schedule.wait(n).total_seconds() for n in range(1, 11)]
    assert waits[:4] == [30, 60, 120, 240]
    assert max(waits) == MAX_WAIT.total_seconds()

    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert schedule.next_attempt(created, 1, created) == created + dt.timedelta(seconds=30)
    # The last attempt falls on the window's end, and after it there is none.
    late = created + dt.timedelta(hours=23, minutes=50)
    end = created + dt.timedelta(hours=24)
    assert schedule.next_attempt(created, 12, late) == end
    assert schedule.next_attempt(created, 13, end) is None


def test_a_day_of_retries_is_a_few_dozen_attempts_not_thousands():
    schedule = Schedule(dt.timedelta(seconds=30), dt.timedelta(hours=24))
    created = now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    attempts = 1
    while (due := schedule.next_attempt(created, attempts, now)) is not None:
        now, attempts = due, attempts + 1
    assert now == created + dt.timedelta(hours=24)
    assert 20 <= attempts <= 40


def test_a_version_or_a_payload_the_catalogue_does_not_read_is_refused_not_guessed():
    event = catalogue.BY_NAME["ticket.assigned"]
    payload = {"ticket_id": str(uuid.uuid4()), "tenant_id": str(TENANT), "assignee_id": None}
    assert event.data(payload, 1) == {"ticket_id": payload["ticket_id"], "assignee_id": None}
    with pytest.raises(MalformedPayload, match="not read here"):
        event.data(payload, 99)
    with pytest.raises(MalformedPayload, match="assignee_id"):
        event.data({"ticket_id": payload["ticket_id"]}, 1)


def test_the_catalogue_reads_every_version_its_sources_publish():
    """A source that adds a version must teach the catalogue (and what the version means for
    a receiver) first: until then its events are dead-lettered, not sent half-read."""
    registries = {"tickets": TICKET_EVENTS, "retention": RETENTION_MESSAGES}
    for event in catalogue.EVENTS:
        source, _, type_ = event.routing_key.partition(".")
        declared = registries[source][type_]
        assert declared.published, event.routing_key
        assert set(declared.schemas) == set(event.versions), event.routing_key
        for version, schema in declared.schemas.items():
            assert set(event.fields) <= set(schema().fields), (event.routing_key, version)
