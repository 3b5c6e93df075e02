"""Unit tests for kernel.envelope: envelope validation, round trips, event types and upcasting."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import pytest
from marshmallow import Schema, fields

from kernel.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    EnvelopeSchema,
    EventRegistry,
    EventType,
    MalformedEnvelope,
    MalformedPayload,
    new_envelope,
    stored_envelope,
)

EVENT_ID = uuid.UUID("0b9c3f5e-7a1d-4c2b-9e8f-1a2b3c4d5e6f")
TENANT_ID = uuid.UUID("5f0e2d1c-3b4a-4968-8776-a5b4c3d2e1f0")
OCCURRED_AT = dt.datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=dt.UTC)


def valid_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "envelope_version": 1,
        "event_id": str(EVENT_ID),
        "type": "ticket_opened",
        "schema_version": 1,
        "source": "tickets",
        "stream_id": "ticket-42",
        "stream_version": 3,
        "tenant_id": str(TENANT_ID),
        "occurred_at": "2026-03-04T05:06:07.890123+00:00",
        "actor_id": "agent-7",
        "trace": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        "payload": {"subject": "printer on fire", "priority": 2},
        "metadata": {"causation_id": "abc"},
    }
    data.update(changes)
    return data


def without(*names: str) -> dict[str, Any]:
    data = valid_dict()
    for name in names:
        del data[name]
    return data


class SpyEnvelope(Envelope):
    """Records every construction, to show a malformed envelope is never built."""

    built: list[SpyEnvelope] = []

    def __init__(self, **kwargs: Any):
        SpyEnvelope.built.append(self)
        super().__init__(**kwargs)


@pytest.fixture(autouse=True)
def _reset_spy():
    SpyEnvelope.built.clear()
    yield
    SpyEnvelope.built.clear()


# --- a valid envelope ------------------------------------------------------------------------


def test_from_dict_builds_typed_fields():
    envelope = Envelope.from_dict(valid_dict())

    assert envelope.event_id == EVENT_ID
    assert envelope.tenant_id == TENANT_ID
    assert envelope.occurred_at == OCCURRED_AT
    assert envelope.occurred_at.utcoffset() == dt.timedelta(0)
    assert envelope.type == "ticket_opened"
    assert envelope.schema_version == 1
    assert envelope.stream_id == "ticket-42"
    assert envelope.stream_version == 3
    assert envelope.actor_id == "agent-7"
    assert envelope.payload == {"subject": "printer on fire", "priority": 2}
    assert envelope.metadata == {"causation_id": "abc"}
    assert envelope.envelope_version == ENVELOPE_VERSION
    assert envelope.routing_key == "tickets.ticket_opened"


def test_optional_fields_default_to_empty_and_nullable_fields_accept_none():
    data = without("trace", "metadata")
    data["tenant_id"] = None
    data["actor_id"] = None

    envelope = Envelope.from_dict(data)

    assert envelope.trace == {}
    assert envelope.metadata == {}
    assert envelope.tenant_id is None
    assert envelope.actor_id is None


def test_an_offset_other_than_utc_is_kept_as_the_same_instant():
    envelope = Envelope.from_dict(valid_dict(occurred_at="2026-03-04T07:06:07.890123+02:00"))

    assert envelope.occurred_at == OCCURRED_AT


def test_to_dict_from_dict_round_trip_through_json():
    original = new_envelope(
        type="ticket_opened",
        schema_version=2,
        source="tickets",
        stream_id="ticket-42",
        stream_version=7,
        tenant_id=TENANT_ID,
        actor_id="agent-7",
        payload={"subject": "hello", "tags": ["a", "b"], "nested": {"x": 1}},
        trace={"traceparent": "tp", "tracestate": "ts"},
        metadata={"causation_id": "c1"},
        occurred_at=OCCURRED_AT,
    )

    wire = json.loads(json.dumps(original.to_dict()))
    restored = Envelope.from_dict(wire)

    assert restored == original
    assert wire["event_id"] == str(original.event_id)
    assert wire["tenant_id"] == str(TENANT_ID)
    assert wire["envelope_version"] == ENVELOPE_VERSION
    assert dt.datetime.fromisoformat(wire["occurred_at"]) == OCCURRED_AT


def test_round_trip_with_null_tenant_and_actor():
    original = new_envelope(
        type="system_started",
        schema_version=1,
        source="ops",
        stream_id="system",
        stream_version=1,
        tenant_id=None,
        actor_id=None,
        payload={},
        occurred_at=OCCURRED_AT,
    )

    wire = original.to_dict()

    assert wire["tenant_id"] is None
    assert wire["actor_id"] is None
    assert Envelope.from_dict(wire) == original


def test_new_envelope_stamps_a_fresh_id_and_an_aware_time_and_copies_dicts():
    trace = {"traceparent": "tp"}
    metadata = {"m": 1}
    before = dt.datetime.now(dt.UTC)

    first = new_envelope(
        type="t",
        schema_version=1,
        source="s",
        stream_id="x",
        stream_version=1,
        tenant_id=None,
        actor_id=None,
        payload={},
        trace=trace,
        metadata=metadata,
    )
    second = new_envelope(
        type="t",
        schema_version=1,
        source="s",
        stream_id="x",
        stream_version=1,
        tenant_id=None,
        actor_id=None,
        payload={},
    )

    assert first.event_id != second.event_id
    assert first.event_id.version == 4
    assert first.occurred_at.tzinfo is not None
    assert before <= first.occurred_at <= dt.datetime.now(dt.UTC)
    assert first.trace == {"traceparent": "tp"} and first.trace is not trace
    assert first.metadata == {"m": 1} and first.metadata is not metadata
    assert second.trace == {} and second.metadata == {}


def test_an_envelope_from_the_store_is_the_envelope_the_constructor_builds():
    built = Envelope.from_dict(valid_dict())
    fields = {f.name: getattr(built, f.name) for f in dataclasses.fields(Envelope)}
    del fields["envelope_version"]
    stored = stored_envelope(**fields)

    assert type(stored) is Envelope
    assert stored == built and repr(stored) == repr(built)
    # The same attributes in the same order: a field added to Envelope must be added there too.
    assert list(vars(stored).items()) == list(vars(built).items())
    assert stored.to_dict() == built.to_dict()
    assert dataclasses.replace(stored, stream_version=4).stream_version == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.type = "other"  # type: ignore[misc]


# --- malformed envelopes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "envelope_version",
        "event_id",
        "type",
        "schema_version",
        "source",
        "stream_id",
        "stream_version",
        "tenant_id",
        "occurred_at",
        "actor_id",
        "payload",
    ],
)
def test_a_missing_required_field_is_named(field: str):
    with pytest.raises(MalformedEnvelope) as info:
        SpyEnvelope.from_dict(without(field))

    assert info.value.errors == {field: ["Missing data for required field."]}
    assert SpyEnvelope.built == []


def test_every_problem_is_reported_at_once():
    data = without("event_id", "payload")
    data["stream_version"] = 0
    data["surprise"] = True

    with pytest.raises(MalformedEnvelope) as info:
        SpyEnvelope.from_dict(data)

    assert set(info.value.errors) == {"event_id", "payload", "stream_version", "surprise"}
    assert info.value.errors["surprise"] == ["Unknown field."]
    assert SpyEnvelope.built == []


def test_an_unknown_field_is_refused():
    with pytest.raises(MalformedEnvelope) as info:
        SpyEnvelope.from_dict(valid_dict(extra="x"))

    assert info.value.errors == {"extra": ["Unknown field."]}
    assert SpyEnvelope.built == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "not-a-uuid"),
        ("event_id", 12),
        ("tenant_id", "tenant-1"),
        ("type", 5),
        ("type", "TicketOpened"),
        ("type", "1ticket"),
        ("type", "a" * 65),
        ("source", "Tickets"),
        ("source", ""),
        ("stream_id", ""),
        ("stream_id", "s" * 201),
        ("stream_id", ["ticket-1"]),
        ("schema_version", 0),
        ("schema_version", "one"),
        ("envelope_version", 2),
        ("envelope_version", "v1"),
        ("occurred_at", "yesterday"),
        ("occurred_at", 1_700_000_000),
        ("actor_id", 7),
        ("payload", ["not", "a", "dict"]),
        ("payload", "text"),
        ("payload", None),
        ("trace", {"traceparent": 1}),
        ("metadata", "m"),
    ],
)
def test_a_field_of_the_wrong_type_or_shape_is_named(field: str, value: Any):
    with pytest.raises(MalformedEnvelope) as info:
        SpyEnvelope.from_dict(valid_dict(**{field: value}))

    assert list(info.value.errors) == [field]
    assert info.value.errors[field]
    assert SpyEnvelope.built == []


@pytest.mark.parametrize("value", [0, -1, "x", None, True, "", [1]])
def test_a_bad_stream_version_is_refused(value: Any):
    with pytest.raises(MalformedEnvelope) as info:
        SpyEnvelope.from_dict(valid_dict(stream_version=value))

    assert list(info.value.errors) == ["stream_version"]
    assert SpyEnvelope.built == []


def test_stream_version_zero_says_why():
    with pytest.raises(MalformedEnvelope) as info:
        Envelope.from_dict(valid_dict(stream_version=0))

    assert info.value.errors == {"stream_version": ["Must be greater than or equal to 1."]}


def test_a_fractional_stream_version_is_refused():
    with pytest.raises(MalformedEnvelope):
        Envelope.from_dict(valid_dict(stream_version=1.5))


def test_a_naive_occurred_at_is_refused():
    with pytest.raises(MalformedEnvelope) as info:
        Envelope.from_dict(valid_dict(occurred_at="2026-03-04T05:06:07"))

    assert list(info.value.errors) == ["occurred_at"]


@pytest.mark.parametrize("data", [None, [], ["a"], "envelope", b"{}", 42, ("a", 1)])
def test_a_non_mapping_is_refused_before_validation(data: Any):
    with pytest.raises(MalformedEnvelope) as info:
        SpyEnvelope.from_dict(data)

    assert info.value.errors == {"_schema": ["an envelope is a JSON object"]}
    assert SpyEnvelope.built == []


def test_malformed_envelope_is_a_value_error_with_the_errors_in_its_message():
    error = MalformedEnvelope({"stream_version": ["bad"]})

    assert isinstance(error, ValueError)
    assert error.errors == {"stream_version": ["bad"]}
    assert "stream_version" in str(error)


def test_a_valid_dict_builds_exactly_one_envelope():
    envelope = SpyEnvelope.from_dict(valid_dict())

    assert SpyEnvelope.built == [envelope]
    assert isinstance(envelope, SpyEnvelope)


def test_envelope_schema_refuses_unknown_fields_by_itself():
    assert EnvelopeSchema().validate(valid_dict(extra=1)) == {"extra": ["Unknown field."]}
    assert EnvelopeSchema().validate(valid_dict()) == {}


# --- event types -----------------------------------------------------------------------------


class NoteV1(Schema):
    text = fields.String(required=True)


class NoteV2(Schema):
    body = fields.String(required=True)
    language = fields.String(required=True)


class NoteV3(Schema):
    body = fields.String(required=True)
    language = fields.String(required=True)
    pinned = fields.Boolean(required=True)


def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {"body": payload["text"], "language": "en"}


def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "pinned": False}


NOTE_V2 = EventType("note_added", {1: NoteV1, 2: NoteV2}, upcasters={1: v1_to_v2})
NOTE_V3 = EventType(
    "note_added", {1: NoteV1, 2: NoteV2, 3: NoteV3}, upcasters={1: v1_to_v2, 2: v2_to_v3}
)


def note_envelope(schema_version: int, payload: dict[str, Any], type: str = "note_added"):
    return new_envelope(
        type=type,
        schema_version=schema_version,
        source="tickets",
        stream_id="ticket-1",
        stream_version=4,
        tenant_id=TENANT_ID,
        actor_id="agent-1",
        payload=payload,
        occurred_at=OCCURRED_AT,
    )


def test_latest_is_the_highest_declared_version():
    assert NOTE_V2.latest == 2
    assert NOTE_V3.latest == 3
    assert EventType("x", {1: NoteV1}).latest == 1


def test_validate_defaults_to_the_latest_version():
    assert NOTE_V2.validate({"body": "hi", "language": "fr"}) == {"body": "hi", "language": "fr"}

    with pytest.raises(MalformedPayload) as info:
        NOTE_V2.validate({"text": "hi"})

    assert info.value.errors == {
        "body": ["Missing data for required field."],
        "language": ["Missing data for required field."],
        "text": ["Unknown field."],
    }


def test_validate_an_explicit_old_version():
    assert NOTE_V2.validate({"text": "hi"}, version=1) == {"text": "hi"}


def test_the_latest_version_refuses_unknown_fields():
    with pytest.raises(MalformedPayload) as info:
        NOTE_V2.validate({"body": "hi", "language": "en", "secret": "x"})

    assert info.value.errors == {"secret": ["Unknown field."]}


def test_an_old_version_drops_unknown_fields():
    assert NOTE_V2.validate({"text": "hi", "legacy": 1}, version=1) == {"text": "hi"}


def test_payload_of_the_wrong_type_raises_malformed_payload_naming_the_field():
    with pytest.raises(MalformedPayload) as info:
        NOTE_V2.validate({"body": 12, "language": "en"})

    assert info.value.errors == {"body": ["Not a valid string."]}
    assert isinstance(info.value, ValueError)
    assert "note_added v2" in str(info.value)


def test_validate_an_unknown_version():
    with pytest.raises(MalformedPayload) as info:
        NOTE_V2.validate({"body": "hi", "language": "en"}, version=9)

    assert info.value.errors == {"schema_version": ["unknown version"]}
    assert "note_added v9" in str(info.value)


def test_event_type_upcasts_step_by_step_to_the_latest():
    assert NOTE_V3.upcast({"text": "hi"}, 1) == (
        {"body": "hi", "language": "en", "pinned": False},
        3,
    )
    assert NOTE_V3.upcast({"body": "hi", "language": "de"}, 2) == (
        {"body": "hi", "language": "de", "pinned": False},
        3,
    )
    latest = {"body": "hi", "language": "de", "pinned": True}
    assert NOTE_V3.upcast(latest, 3) == (latest, 3)


def test_personal_fields_need_a_subject_field():
    with pytest.raises(ValueError, match="agent_named: personal fields need a subject_field"):
        EventType("agent_named", {1: NoteV1}, personal_fields=("name",))


def test_personal_fields_with_a_subject_field_are_kept():
    event_type = EventType(
        "agent_named", {1: NoteV1}, personal_fields=("name", "email"), subject_field="agent_id"
    )

    assert event_type.personal_fields == ("name", "email")
    assert event_type.subject_field == "agent_id"
    assert event_type.published is False


# --- the registry ----------------------------------------------------------------------------


def test_registry_upcasts_a_v1_envelope_to_v2():
    registry = EventRegistry(NOTE_V2)
    old = note_envelope(1, {"text": "printer on fire"})

    upcast = registry.upcast(old)

    assert upcast.schema_version == 2
    assert upcast.payload == {"body": "printer on fire", "language": "en"}
    assert NOTE_V2.validate(upcast.payload) == upcast.payload
    # Everything but the payload and its version is untouched, and so is the original.
    assert upcast.event_id == old.event_id
    assert upcast.stream_version == old.stream_version
    assert upcast.occurred_at == old.occurred_at
    assert old.schema_version == 1
    assert old.payload == {"text": "printer on fire"}


def test_registry_upcasts_across_several_versions():
    registry = EventRegistry(NOTE_V3)

    upcast = registry.upcast(note_envelope(1, {"text": "x"}))

    assert (upcast.schema_version, upcast.payload) == (
        3,
        {"body": "x", "language": "en", "pinned": False},
    )


def test_registry_leaves_latest_and_unknown_types_alone():
    registry = EventRegistry(NOTE_V2)
    latest = note_envelope(2, {"body": "b", "language": "en"})
    unknown = note_envelope(1, {"anything": 1}, type="something_else")

    assert registry.upcast(latest) is latest
    assert registry.upcast(unknown) is unknown


def test_registering_a_type_with_a_missing_upcaster_raises():
    broken = EventType("note_added", {1: NoteV1, 2: NoteV2, 3: NoteV3}, upcasters={1: v1_to_v2})
    registry = EventRegistry()

    with pytest.raises(ValueError, match="note_added v2 has no upcaster to v3"):
        registry.register(broken)

    assert "note_added" not in registry


def test_the_constructor_refuses_a_type_without_upcasters():
    with pytest.raises(ValueError, match="note_added v1 has no upcaster to v2"):
        EventRegistry(EventType("note_added", {1: NoteV1, 2: NoteV2}))


def test_registry_lookup():
    registry = EventRegistry()

    assert registry.register(NOTE_V2) is NOTE_V2
    assert "note_added" in registry
    assert "other" not in registry
    assert registry["note_added"] is NOTE_V2
    with pytest.raises(KeyError):
        registry["other"]


@pytest.mark.parametrize("made", [uuid.uuid4, uuid.uuid1, lambda: uuid.UUID(int=0)])
def test_a_uuid_read_from_its_column_is_the_uuid_the_constructor_makes(made):
    from kernel.eventstore import _uuid_from_column

    expected = made()
    read = _uuid_from_column(str(expected))
    assert read == expected and hash(read) == hash(expected)
    assert (str(read), read.version, read.is_safe) == (
        str(expected),
        expected.version,
        uuid.UUID(str(expected)).is_safe,
    )
    assert {read: 1}[expected] == 1
    with pytest.raises(TypeError):
        read.int = 1  # as immutable as any UUID


def test_a_stored_payload_reads_the_same_whatever_decoder_reads_it():
    from kernel.eventstore import _decode

    text = json.dumps({"n": 2**70, "x": 1.5, "s": "é\u2028", "l": [None, True]})
    assert _decode(text) == json.loads(text)  # past 64 bits: json's decoder, not orjson's
    small = json.dumps({"n": 2**40, "nested": {"a": [1, 2]}, "s": "ü"})
    assert _decode(small) == json.loads(small)


def test_tenant_fields_are_encrypted_and_hidden_with_personal_fields():
    event_type = EventType(
        "member_joined",
        {1: NoteV1},
        personal_fields=("name",),
        subject_field="agent_id",
        tenant_fields=("company", "address"),
    )
    assert event_type.encrypted_fields == ("name", "company", "address")
    assert EventType("noted", {1: NoteV1}).encrypted_fields == ()


def test_a_field_cannot_be_both_personal_and_a_tenant_field():
    with pytest.raises(ValueError, match="personal and tenant"):
        EventType(
            "member_joined",
            {1: NoteV1},
            personal_fields=("name", "company"),
            subject_field="agent_id",
            tenant_fields=("company",),
        )
