"""The event envelope: how every event is stored, published and consumed.

The envelope itself is versioned (``envelope_version``); the payload's meaning is versioned per
event type (``schema_version``) and declared with :class:`EventType`. An event's meaning never
changes: a new meaning is a new version, and an upcaster lifts old payloads when they are read.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

ENVELOPE_VERSION = 1


class MalformedEnvelope(ValueError):
    """A message or row is not a valid envelope; ``errors`` says which fields and why."""

    def __init__(self, errors: Mapping[str, Any]):
        self.errors = dict(errors)
        super().__init__(f"malformed event envelope: {self.errors}")


class MalformedPayload(ValueError):
    def __init__(self, event_type: str, version: int, errors: Mapping[str, Any]):
        self.errors = dict(errors)
        super().__init__(f"malformed payload for {event_type} v{version}: {self.errors}")


class EnvelopeSchema(Schema):
    class Meta:
        unknown = RAISE

    envelope_version = fields.Integer(required=True, validate=validate.Equal(ENVELOPE_VERSION))
    event_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$"))
    schema_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    source = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_-]{0,63}$"))
    stream_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    stream_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    tenant_id = fields.UUID(required=True, allow_none=True)
    # A time without a zone is ambiguous: refused, not guessed.
    occurred_at = fields.AwareDateTime(required=True)
    actor_id = fields.String(required=True, allow_none=True)
    trace = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    payload = fields.Dict(keys=fields.String(), required=True)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)


_SCHEMA = EnvelopeSchema()


@dataclass(frozen=True)
class Envelope:
    event_id: uuid.UUID
    type: str
    schema_version: int
    source: str
    stream_id: str
    stream_version: int
    tenant_id: uuid.UUID | None
    occurred_at: dt.datetime
    actor_id: str | None
    payload: dict[str, Any]
    trace: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    envelope_version: int = ENVELOPE_VERSION

    @property
    def routing_key(self) -> str:
        return f"{self.source}.{self.type}"

    def to_dict(self) -> dict[str, Any]:
        return _SCHEMA.dump(self)

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        """Validate completely before anything is built: a bad envelope is never half-processed."""
        if not isinstance(data, Mapping):
            raise MalformedEnvelope({"_schema": ["an envelope is a JSON object"]})
        try:
            loaded = _SCHEMA.load(data)
        except ValidationError as exc:
            raise MalformedEnvelope(exc.normalized_messages()) from None
        return cls(**loaded)


_new = object.__new__
_set = object.__setattr__


def stored_envelope(
    event_id: uuid.UUID,
    type: str,
    schema_version: int,
    source: str,
    stream_id: str,
    stream_version: int,
    tenant_id: uuid.UUID | None,
    occurred_at: dt.datetime,
    actor_id: str | None,
    trace: dict[str, str],
    payload: dict[str, Any],
    metadata: dict[str, Any],
) -> Envelope:
    """An envelope from values the event store hands back: equal in every way to
    ``Envelope(...)`` with the same fields, built without running its ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__``, thirteen calls per
    envelope, which was a catch-up read's largest cost after decoding the row. The store's rows
    were validated on the way in, so nothing is skipped but the calls.
    """
    envelope = _new(Envelope)
    # The same keys in the same order as __init__ would leave them.
    _set(
        envelope,
        "__dict__",
        {
            "event_id": event_id,
            "type": type,
            "schema_version": schema_version,
            "source": source,
            "stream_id": stream_id,
            "stream_version": stream_version,
            "tenant_id": tenant_id,
            "occurred_at": occurred_at,
            "actor_id": actor_id,
            "payload": payload,
            "trace": trace,
            "metadata": metadata,
            "envelope_version": ENVELOPE_VERSION,
        },
    )
    return envelope


# --- declared event types -------------------------------------------------------------------


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@functools.cache
def _schema(schema_cls: type[Schema], unknown: Literal["exclude", "raise"]) -> Schema:
    # Building a schema costs more than loading a payload with it, and loading keeps no state.
    return schema_cls(unknown=unknown)


@dataclass(frozen=True)
class EventType:
    """One event type: a schema per version and upcasters from each old version to the next."""

    name: str
    schemas: Mapping[int, type[Schema]]
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)
    # Payload fields holding the subject's personal data, encrypted under the key of the subject
    # whose id is in ``subject_field``.
    personal_fields: tuple[str, ...] = ()
    subject_field: str | None = None
    # When set, the key of ``subject_field``'s id is a child of this field's id's key: erasing
    # the parent erases it too, in one shred (a ticket's words under its requester, say).
    parent_field: str | None = None
    # Payload fields that belong to the tenant itself (its company name, its billing address),
    # encrypted under the tenant's own subject key (the subject whose id is the tenant id), so
    # destroying the tenant, or shredding that one key, makes them unreadable.
    tenant_fields: tuple[str, ...] = ()
    # Published events also leave through the outbox, without their personal or tenant fields.
    published: bool = False
    # Fields kept in the store as they are but left out of published copies too: what only the
    # owner may hold (an API key's keyed hash), on an event the ledger must still see.
    unpublished_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.personal_fields and not self.subject_field:
            raise ValueError(f"{self.name}: personal fields need a subject_field")
        both = set(self.personal_fields) & set(self.tenant_fields)
        if both:
            # One value has one key: under two, shredding either would not be enough.
            raise ValueError(f"{self.name}: {sorted(both)} cannot be personal and tenant fields")

    @functools.cached_property
    def encrypted_fields(self) -> tuple[str, ...]:
        """Every field stored encrypted, and left out of published copies (read on every
        append: computed once)."""
        return self.personal_fields + self.tenant_fields

    @functools.cached_property
    def withheld_fields(self) -> tuple[str, ...]:
        """Every field a published copy leaves out."""
        return self.encrypted_fields + self.unpublished_fields

    @property
    def latest(self) -> int:
        return max(self.schemas)

    def validate(self, payload: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
        version = self.latest if version is None else version
        schema_cls = self.schemas.get(version)
        if schema_cls is None:
            raise MalformedPayload(self.name, version, {"schema_version": ["unknown version"]})
        try:
            return _schema(schema_cls, EXCLUDE if version < self.latest else RAISE).load(payload)
        except ValidationError as exc:
            raise MalformedPayload(self.name, version, exc.normalized_messages()) from None

    def upcast(self, payload: dict[str, Any], version: int) -> tuple[dict[str, Any], int]:
        while version < self.latest:
            payload = self.upcasters[version](payload)
            version += 1
        return payload, version


class EventRegistry:
    """The event types a service knows, by name."""

    def __init__(self, *types: EventType):
        self._types: dict[str, EventType] = {}
        for event_type in types:
            self.register(event_type)

    def register(self, event_type: EventType) -> EventType:
        for version in event_type.schemas:
            if version < event_type.latest and version not in event_type.upcasters:
                raise ValueError(f"{event_type.name} v{version} has no upcaster to v{version + 1}")
        self._types[event_type.name] = event_type
        return event_type

    def __getitem__(self, name: str) -> EventType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def types(self) -> list[EventType]:
        """Every type registered, in the order registered (the data map walks them)."""
        return list(self._types.values())

    def upcast(self, envelope: Envelope) -> Envelope:
        event_type = self._types.get(envelope.type)
        if event_type is None or envelope.schema_version >= event_type.latest:
            return envelope
        payload, version = event_type.upcast(dict(envelope.payload), envelope.schema_version)
        return _replace(envelope, payload=payload, schema_version=version)


def _replace(envelope: Envelope, **changes: Any) -> Envelope:
    from dataclasses import replace

    return replace(envelope, **changes)


def new_envelope(
    *,
    event_id: uuid.UUID | None = None,
    type: str,
    schema_version: int,
    source: str,
    stream_id: str,
    stream_version: int,
    tenant_id: uuid.UUID | None,
    actor_id: str | None,
    payload: dict[str, Any],
    trace: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
) -> Envelope:
    if occurred_at is not None and occurred_at.utcoffset() is None:
        raise ValueError("occurred_at must carry a time zone")
    return Envelope(
        event_id=event_id or uuid.uuid4(),
        type=type,
        schema_version=schema_version,
        source=source,
        stream_id=stream_id,
        stream_version=stream_version,
        tenant_id=tenant_id,
        occurred_at=occurred_at or dt.datetime.now(dt.UTC),
        actor_id=actor_id,
        payload=payload,
        trace=dict(trace or {}),
        metadata=dict(metadata or {}),
    )
