"""The edge's writer of access summaries (gateway.edge), with a fake store: each summary is
written once, however many writers run at once, and one the database refused is tried again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import eventlet
import pytest

from gateway import edge as edge_module
from gateway.accesslog import UnauthenticatedBudget
from gateway.edge import Edge


class FakeDatabase:
    def __init__(self) -> None:
        self.written: list[Any] = []
        self.down = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[list[Any]]:
        eventlet.sleep(0)  # a real write yields to other greenthreads
        if self.down:
            raise ConnectionError("database away")
        rows: list[Any] = []
        yield rows
        self.written.extend(rows)


class FakeStore:
    def __init__(self) -> None:
        self.db = FakeDatabase()


@pytest.fixture
def edge(monkeypatch) -> tuple[Edge, FakeStore, list[float]]:
    store = FakeStore()
    clock = [1_000_000.0]
    monkeypatch.setattr(edge_module, "store_of", lambda container: store)
    monkeypatch.setattr(edge_module.outbox, "add", lambda cur, envelopes: cur.extend(envelopes))
    instance = Edge()
    instance.budget = UnauthenticatedBudget(limit=1, seconds=60, clock=lambda: clock[0])
    instance._unwritten = []
    return instance, store, clock


def test_concurrent_writers_write_each_summary_once(edge):
    instance, store, clock = edge
    for _ in range(5):
        instance.written_one_by_one("GET", "/v1/tenant", 401)
    clock[0] += 60
    pile: eventlet.GreenPile = eventlet.GreenPile()
    for _ in range(10):
        pile.spawn(instance.write_summaries, True)
    list(pile)
    assert [e.payload["counted"] for e in store.db.written] == [4]


def test_a_summary_the_database_refused_is_written_later(edge):
    instance, store, clock = edge
    for _ in range(3):
        instance.written_one_by_one("GET", "/v1/tenant", 401)
    clock[0] += 60
    store.db.down = True
    instance.write_summaries()
    assert store.db.written == []
    store.db.down = False
    instance.write_summaries()
    assert [e.payload["counted"] for e in store.db.written] == [2]
