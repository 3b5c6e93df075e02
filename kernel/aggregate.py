"""Aggregates record events; they never store or publish them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from kernel.envelope import Envelope


@dataclass(frozen=True)
class RecordedEvent:
    """An event an aggregate decided on, before the unit of work stamps and stores it."""

    type: str
    payload: dict[str, Any]


@dataclass
class Aggregate:
    """State rebuilt from a stream; ``record`` changes it and remembers the change.

    Subclasses implement ``when_<type>(payload)`` for each event type they record.
    """

    id: str
    version: int = 0
    pending: list[RecordedEvent] = field(default_factory=list)

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        return f"{cls.__name__.lower()}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        return self.stream_id_for(self.id)

    @classmethod
    def from_history(cls, aggregate_id: str, history: Iterable[Envelope]) -> Self:
        aggregate = cls(id=aggregate_id)
        for event in history:
            aggregate._when(event.type, event.payload)
            aggregate.version = event.stream_version
        return aggregate

    def record(self, type: str, **payload: Any) -> None:
        self._when(type, payload)
        self.pending.append(RecordedEvent(type, payload))

    def _when(self, type: str, payload: dict[str, Any]) -> None:
        getattr(self, f"when_{type}")(payload)
