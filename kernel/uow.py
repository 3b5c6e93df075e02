"""The unit of work: one transaction holding appends, read-model updates, outbox and inbox.

Handlers are plain functions that take the unit of work first, then what they act on: ids
from the caller's identity, the loaded command, collaborators such as a payment processor
(``handlers.change_plan(uow, tenant_id, command)``; accounts' ``sign_up(command, uow,
settings)`` is the one that puts the command first). Whatever they do through the unit of work
commits together or not at all: events, projections, messages for other services, and the
record that an incoming message was handled.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg2

from kernel import eventstore, inbox, outbox
from kernel.aggregate import Aggregate, RecordedEvent
from kernel.db import Database
from kernel.envelope import Envelope, EventRegistry, EventType, new_envelope
from kernel.projections import Projection, rebuild
from kernel.topology import EVENTS_EXCHANGE

if TYPE_CHECKING:
    from kernel.crypto.fields import FieldCipher


class EventSourcedStore:
    """Everything one service needs to write and read its events; built once per process."""

    def __init__(
        self,
        source: str,
        db: Database,
        registry: EventRegistry,
        cipher: FieldCipher | None = None,
        projections: Sequence[Projection] = (),
    ):
        self.source = source
        self.db = db
        self.registry = registry
        self.cipher = cipher
        # Each as this store applies it: one that needs the store's keys gets its own copy.
        self.projections = [projection.bound(cipher) for projection in projections]

    def unit_of_work(
        self, actor_id: str | None = None, trace: dict[str, str] | None = None
    ) -> UnitOfWork:
        return UnitOfWork(self, actor_id=actor_id, trace=trace or {})

    def prepare(self, stored: Envelope) -> Envelope:
        """A stored event as handlers see it: personal fields decrypted (or erased), upcast."""
        payload = stored.payload
        if self.cipher is not None:
            payload = self.cipher.decrypt_fields(payload, tenant_id=stored.tenant_id)
        return self.registry.upcast(dataclasses.replace(stored, payload=payload))

    def upcast(self, stored: Envelope) -> Envelope:
        """A stored event upcast, its personal fields left encrypted (for ciphertext read
        models)."""
        return self.registry.upcast(stored)

    def projection(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise KeyError(f"{self.source} has no projection {name!r}")

    def rebuild(
        self, name: str, progress: bool | None = None, only_if_new: bool = False
    ) -> int | None:
        """Replay the store into the read model ``name`` (``kernel.projections.rebuild``);
        ``only_if_new``: only if this database never built it."""
        projection = self.projection(name)
        prepare = self.upcast if projection.ciphertext else self.prepare
        return rebuild(self.db, projection, prepare, progress=progress, only_if_new=only_if_new)


class UnitOfWork:
    def __init__(self, store: EventSourcedStore, actor_id: str | None, trace: dict[str, str]):
        self._store = store
        self.actor_id = actor_id
        self.trace = trace
        self._conn: psycopg2.extensions.connection | None = None
        self._conn_cm: Any = None
        self.cur: psycopg2.extensions.cursor
        self._appends: list[tuple[str, int, list[Envelope]]] = []
        self._messages: list[tuple[str, Envelope]] = []

    def __enter__(self) -> UnitOfWork:
        self._conn_cm = self._store.db.connection()
        self._conn = self._conn_cm.__enter__()
        self.cur = self._conn.cursor()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        finally:
            self.cur.close()
            self._conn_cm.__exit__(exc_type, exc, tb)

    # --- reading ------------------------------------------------------------------------------

    def load(self, stream_id: str) -> list[Envelope]:
        """A stream's events, decrypted and upcast, including what this unit already appended."""
        stored = eventstore.read_stream(self.cur, stream_id)
        pending = [e for s, _, es in self._appends if s == stream_id for e in es]
        return [self._store.prepare(e) for e in stored + pending]

    # --- writing ------------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[RecordedEvent],
        tenant_id: uuid.UUID | None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Envelope]:
        """Validate, project and queue events; they are stored at commit.

        Returns the envelopes as handlers see them (plaintext payloads).
        """
        plain: list[Envelope] = []
        stored: list[Envelope] = []
        for offset, recorded in enumerate(events, start=1):
            event_type = self._store.registry[recorded.type]
            payload = event_type.validate(recorded.payload)
            envelope = new_envelope(
                type=recorded.type,
                schema_version=event_type.latest,
                source=self._store.source,
                stream_id=stream_id,
                stream_version=expected_version + offset,
                tenant_id=tenant_id,
                actor_id=self.actor_id,
                payload=_jsonable(payload),
                trace=self.trace,
                metadata=metadata,
            )
            plain.append(envelope)
            encrypted = self._encrypted(event_type, envelope, tenant_id)
            for projection in self._store.projections:
                if projection.handles(envelope):
                    projection.apply(self.cur, encrypted if projection.ciphertext else envelope)
            stored.append(encrypted)
            if event_type.published:
                hidden = event_type.withheld_fields
                public = {k: v for k, v in envelope.payload.items() if k not in hidden}
                self._messages.append(
                    (EVENTS_EXCHANGE, dataclasses.replace(envelope, payload=public))
                )
        self._appends.append((stream_id, expected_version, stored))
        return plain

    def save(
        self,
        aggregate: Aggregate,
        tenant_id: str | uuid.UUID | None,
        region: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Envelope]:
        """Append what ``aggregate`` recorded since it was loaded (stored at commit, as
        ``append``) and move it to its new version, so it can record and be saved again.

        ``region`` is the tenant's hosting region, kept in each event's metadata with
        ``metadata``. Returns the envelopes as handlers see them.
        """
        if region:
            metadata = {**(metadata or {}), "region": region}
        stored = self.append(
            aggregate.stream_id,
            aggregate.version,
            aggregate.pending,
            tenant_id=uuid.UUID(str(tenant_id)) if tenant_id else None,
            metadata=metadata,
        )
        aggregate.version += len(aggregate.pending)
        aggregate.pending.clear()
        return stored

    def _encrypted(
        self, event_type: EventType, envelope: Envelope, tenant_id: uuid.UUID | None
    ) -> Envelope:
        """The envelope as stored: personal fields under the subject's key, tenant fields under
        the tenant's own subject key."""
        if not event_type.encrypted_fields:
            return envelope
        cipher = self._store.cipher
        if cipher is None:
            raise RuntimeError(f"{event_type.name} holds personal data but no cipher is set")
        if tenant_id is None:
            # Subject keys are wrapped by a tenant key: personal data needs a tenant.
            raise ValueError(f"{event_type.name} holds personal data but has no tenant")
        payload = envelope.payload
        if event_type.personal_fields:
            assert event_type.subject_field is not None  # EventType refuses one without
            payload = cipher.encrypt_fields(
                payload,
                event_type.personal_fields,
                tenant_id=tenant_id,
                subject_id=payload[event_type.subject_field],
                parent_id=payload[event_type.parent_field] if event_type.parent_field else None,
            )
        if event_type.tenant_fields:
            payload = cipher.encrypt_fields(
                payload, event_type.tenant_fields, tenant_id=tenant_id, subject_id=tenant_id
            )
        return dataclasses.replace(envelope, payload=payload)

    def publish(self, envelope: Envelope, exchange: str = EVENTS_EXCHANGE) -> None:
        """Send a message that is not one of our stored events (a command, a reply)."""
        self._messages.append((exchange, envelope))

    @property
    def cipher(self) -> FieldCipher:
        """The store's cipher, to open what a ciphertext read model keeps."""
        if self._store.cipher is None:
            raise RuntimeError(f"{self._store.source} has no cipher")
        return self._store.cipher

    def first_delivery(self, consumer: str, message_id: uuid.UUID) -> bool:
        return inbox.first_delivery(self.cur, consumer, message_id)

    def commit(self) -> None:
        assert self._conn is not None
        try:
            # Last, so a version another writer of the stream took meanwhile is held (by the
            # primary key, until this commits) for as short a time as possible.
            for stream_id, expected_version, envelopes in self._appends:
                eventstore.append(self.cur, stream_id, expected_version, envelopes)
            by_exchange: dict[str, list[Envelope]] = {}
            for exchange, envelope in self._messages:
                by_exchange.setdefault(exchange, []).append(envelope)
            for exchange, envelopes in by_exchange.items():
                outbox.add(self.cur, envelopes, exchange)
            self._conn.commit()
        except BaseException:
            self.rollback()
            raise
        finally:
            self._appends.clear()
            self._messages.clear()

    def rollback(self) -> None:
        self._appends.clear()
        self._messages.clear()
        if self._conn is not None and not self._conn.closed:
            self._conn.rollback()


def _jsonable(value: Any) -> Any:
    """Validated payloads may hold UUIDs and datetimes; events are stored as plain JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
