"""kernel.groupcommit: concurrent submitters share batches, each gets its own outcome, and a
batch that fails is written item by item so only the item at fault fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from kernel.groupcommit import GroupCommit


class Book:
    """Writes that take a while, so submitters pile up behind the first batch."""

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.written: list[int] = []
        self.refuse = refuse or set()
        self.lock = threading.Lock()

    def many(self, items: Sequence[int]) -> list[int]:
        time.sleep(0.02)
        if self.refuse & set(items):
            raise ValueError("refused")
        with self.lock:
            self.batches.append(list(items))
            self.written += items
        return [i * 10 for i in items]

    def one(self, item: int) -> int:
        if item in self.refuse:
            raise ValueError(f"refused {item}")
        with self.lock:
            self.batches.append([item])
            self.written.append(item)
        return item * 10


def submit_all(group: GroupCommit, items: list[int]) -> dict[int, object]:
    outcomes: dict[int, object] = {}

    def send(item: int) -> None:
        try:
            outcomes[item] = group.submit(item)
        except Exception as exc:  # checked by the caller
            outcomes[item] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return outcomes


def test_concurrent_items_share_batches_and_each_gets_its_result():
    book = Book()
    group = GroupCommit(book.many, book.one)
    outcomes = submit_all(group, list(range(40)))
    assert outcomes == {i: i * 10 for i in range(40)}
    assert sorted(book.written) == list(range(40))
    assert len(book.batches) < 40  # some were shared
    assert group.pending() == 0


def test_a_failing_batch_is_written_item_by_item_and_only_the_bad_item_fails():
    book = Book(refuse={7})
    group = GroupCommit(book.many, book.one)
    outcomes = submit_all(group, list(range(20)))
    assert isinstance(outcomes.pop(7), ValueError)
    assert outcomes == {i: i * 10 for i in range(20) if i != 7}
    assert sorted(book.written) == [i for i in range(20) if i != 7]


@pytest.mark.parametrize("size", [1, 3])
def test_batches_never_exceed_their_bound(size):
    book = Book()
    group = GroupCommit(book.many, book.one, max_batch=size)
    submit_all(group, list(range(15)))
    assert sorted(book.written) == list(range(15))
    assert max(len(b) for b in book.batches) <= size


def test_an_interrupted_batch_releases_its_waiters():
    gate = threading.Event()

    def many(items: Sequence[int]) -> list[int]:
        gate.wait(5)
        raise KeyboardInterrupt  # not an Exception: the leader's batch ends here

    group: GroupCommit[int, int] = GroupCommit(many, lambda i: i)
    outcomes: dict[int, object] = {}

    def lead() -> None:
        try:
            group.submit(0)
        except BaseException as exc:  # the leader sees the interruption itself
            outcomes[0] = exc

    leader = threading.Thread(target=lead)
    leader.start()
    while group.pending():
        time.sleep(0.01)
    gate.set()
    leader.join(5)
    assert isinstance(outcomes[0], KeyboardInterrupt)
    # The lead was given back: the next submitter leads and is written.
    gate.clear()
    group._write_many = lambda items: list(items)  # type: ignore[method-assign]
    assert group.submit(5) == 5
