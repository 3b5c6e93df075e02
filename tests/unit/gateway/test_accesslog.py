"""Unit tests for the access-log event: a valid envelope, the route not the path, bounded UA,
and every id of an answer named (v2)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from gateway.accesslog import (
    ACCESS_LOGGED,
    MAX_RESOURCE_IDS,
    MAX_USER_AGENT_CHARS,
    REGISTRY,
    access_event,
    ids_in,
    named_ids,
)
from gateway.pagination import MAX_LIMIT
from kernel.envelope import Envelope, MalformedPayload, new_envelope

TENANT = uuid.UUID("6f1c1f5e-2d4b-4c1a-9a53-2f1f3c3f9b11")
AT = dt.datetime(2026, 1, 5, 10, 0, 0, tzinfo=dt.UTC)
TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def event(**changes: Any) -> Envelope:
    arguments: dict[str, Any] = {
        "tenant_id": TENANT,
        "actor_id": "agent-1",
        "method": "GET",
        "route": "/v1/contacts/<id>",
        "resource_ids": ["c0ffee00-0000-4000-8000-000000000001"],
        "status": 200,
        "ip": "203.0.113.9",
        "user_agent": "curl/8.5.0",
        "trace_id": "a" * 32,
        "at": AT,
        "trace": {"traceparent": TRACEPARENT},
    }
    return access_event(**(arguments | changes))


def test_the_envelope_validates_and_round_trips():
    env = event()

    assert Envelope.from_dict(env.to_dict()) == env
    assert env.source == "gateway" and env.type == "access_logged" and env.schema_version == 2
    assert env.routing_key == "gateway.access_logged"
    assert env.stream_id == f"access-{env.event_id}" and env.stream_version == 1
    assert env.tenant_id == TENANT and env.actor_id == "agent-1"
    assert env.occurred_at == AT
    assert env.trace == {"traceparent": TRACEPARENT}
    assert env.payload == {
        "method": "GET",
        "route": "/v1/contacts/<id>",
        "resource_ids": ["c0ffee00-0000-4000-8000-000000000001"],
        "omitted_ids": 0,
        "status": 200,
        "ip": "203.0.113.9",
        "user_agent": "curl/8.5.0",
        "trace_id": "a" * 32,
    }


def test_the_payload_passes_its_declared_schema():
    env = event()

    assert "access_logged" in REGISTRY
    assert REGISTRY["access_logged"] is ACCESS_LOGGED and ACCESS_LOGGED.published
    ACCESS_LOGGED.validate(env.payload, env.schema_version)


def test_each_event_is_its_own_stream():
    assert event().stream_id != event().stream_id


def test_an_unauthenticated_request_has_no_tenant_actor_or_trace():
    env = event(tenant_id=None, actor_id=None, trace_id=None, trace={}, resource_ids=[])

    assert Envelope.from_dict(env.to_dict()) == env
    assert env.tenant_id is None and env.actor_id is None and env.payload["trace_id"] is None


def test_the_route_template_is_kept_and_a_raw_path_is_refused():
    env = event(method="patch", route="/v1/tickets/<id>", resource_ids=["t-1"])

    assert env.payload["route"] == "/v1/tickets/<id>"
    assert env.payload["method"] == "PATCH"
    assert "t-1" not in env.payload["route"]
    with pytest.raises(MalformedPayload) as caught:
        event(route="/v1/contacts?email=someone@example.com")
    assert list(caught.value.errors) == ["route"]
    with pytest.raises(MalformedPayload):
        event(route="/v1/contacts#frag")
    with pytest.raises(MalformedPayload):
        event(route="https://example.com/v1/contacts")


def test_the_user_agent_is_truncated_and_cleaned():
    long = event(user_agent="Mozilla/5.0 " + "x" * 5000)
    dirty = event(user_agent="evil\x00agent\r\nInjected: yes")

    assert len(long.payload["user_agent"]) == MAX_USER_AGENT_CHARS == 512
    assert long.payload["user_agent"].startswith("Mozilla/5.0 xxx")
    assert Envelope.from_dict(long.to_dict()) == long
    assert dirty.payload["user_agent"] == "evilagentInjected: yes"
    assert event(user_agent=None).payload["user_agent"] is None
    assert event(user_agent="").payload["user_agent"] is None


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:DB8::1", "2001:db8::1"),
        ("not an address", None),
        ("203.0.113.9, 10.0.0.1", None),
        (None, None),
    ],
)
def test_the_ip_is_normalised_or_recorded_as_unknown(given: str | None, recorded: str | None):
    assert event(ip=given).payload["ip"] == recorded


@pytest.mark.parametrize(
    "changes",
    [
        {"status": 42},
        {"status": "200"},
        {"method": "G E T"},
        {"trace_id": "not-a-trace-id"},
        {"resource_ids": [""]},
    ],
)
def test_an_invalid_payload_is_refused(changes: dict[str, Any]):
    with pytest.raises(MalformedPayload):
        event(**changes)


def test_a_time_without_a_zone_is_refused():
    with pytest.raises(ValueError):
        event(at=dt.datetime(2026, 1, 5, 10, 0, 0))


def ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=n + 1)) for n in range(count)]


def test_a_whole_page_of_tickets_is_named_which_v1_could_not_hold():
    # A full page of tickets names each ticket, its requester and its assignee.
    page = ids(3 * MAX_LIMIT)

    env = event(resource_ids=[], answer_ids=page)

    assert env.payload["resource_ids"] == page and env.payload["omitted_ids"] == 0
    ACCESS_LOGGED.validate(env.payload, 2)
    with pytest.raises(MalformedPayload):  # v1 keeps its meaning: at most 50
        ACCESS_LOGGED.validate({k: v for k, v in env.payload.items() if k != "omitted_ids"}, 1)


def test_ids_beyond_the_cap_are_counted_not_dropped_silently():
    env = event(resource_ids=["t-1"], answer_ids=ids(MAX_RESOURCE_IDS + 7))

    assert env.payload["resource_ids"][0] == "t-1"
    assert env.payload["resource_ids"][1:] == ids(MAX_RESOURCE_IDS - 1)
    assert env.payload["omitted_ids"] == 8
    assert MAX_RESOURCE_IDS >= 25 * MAX_LIMIT


def test_what_a_client_named_is_redacted_and_what_the_answer_named_is_not():
    # A UUID can spell a Luhn-valid card number; one a client typed in a path is redacted, the
    # id of a resource the platform itself answered with is recorded as it is.
    card_like = "41111111-1111-1111-1111-111111111111"

    env = event(resource_ids=[card_like], answer_ids=[card_like])

    assert card_like not in env.payload["resource_ids"][:1]
    assert env.payload["resource_ids"][1:] == [card_like]


def test_an_id_named_twice_is_recorded_once():
    one = "c0ffee00-0000-4000-8000-000000000001"

    assert event(resource_ids=[one, "t-1", one]).payload["resource_ids"] == [one, "t-1"]


def test_a_v1_event_reads_as_v2_with_nothing_omitted():
    payload = {k: v for k, v in event().payload.items() if k != "omitted_ids"}
    ACCESS_LOGGED.validate(payload, 1)
    stored = new_envelope(
        type="access_logged",
        schema_version=1,
        source="gateway",
        stream_id="access-1",
        stream_version=1,
        tenant_id=TENANT,
        actor_id="agent-1",
        payload=payload,
    )

    read = REGISTRY.upcast(stored)

    assert read.schema_version == 2 and read.payload == {**payload, "omitted_ids": 0}
    ACCESS_LOGGED.validate(read.payload, 2)


A, B, C, D, E = (str(uuid.UUID(int=n)) for n in range(1, 6))


def test_ids_in_finds_every_id_and_star_id_nested_breadth_first():
    answer = {
        "items": [
            {
                "id": A,
                "subject": "about Carol",
                "requester_id": B,
                "assignee_id": None,
                "messages": [{"id": E, "author_id": C}],
            },
            {"id": D, "subject": {"contact_id": B}, "filed_by": E, "version": 3},
        ],
        "next_cursor": None,
    }

    # Each item's own ids before anything nested in it; each id once.
    assert ids_in(answer) == [A, B, D, E, C]


@pytest.mark.parametrize(
    "answer",
    [
        {"id": "not-a-uuid"},
        {"tenant_id": 7},
        {"ids": [A]},  # a list of ids under a plural key: not an id field
        {"valid": A},  # not an id field
        {"email": "ada@example.com", "name": A},
        "just text",
        None,
        [],
    ],
)
def test_ids_in_names_nothing_that_is_not_an_id(answer: Any):
    assert ids_in(answer) == []


def test_ids_are_canonical_so_spellings_of_one_id_count_once():
    assert ids_in({"id": A.upper(), "contact_id": A}) == [A]
    assert named_ids([A.upper()], ["t-1"], [A, B]) == [A, "t-1", B]
