"""Group commit: what concurrent workers hand in while a batch is being written is written
together next, in one transaction.

One transaction per item costs a commit (and its WAL flush) per item, and where the writes
serialise on a lock (audit's ledger) that commit caps the rate for everyone. Here each worker
queues its item and waits; one of them, the leader, writes everything queued so far with
``write_many`` and then hands the lead to the first worker still waiting. A worker returns only
once its own item is committed, so whatever follows the commit (a message's acknowledgement, an
HTTP response) still follows it.

A batch that fails is written again one item per transaction with ``write_one``, so an item that
cannot be written fails alone (a message returned to its queue alone, never taking its
neighbours with it towards the delivery limit).

Users: audit's ledger (``Ledger.record_many``), the gateway's access-log outbox.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

# Enough to take every message a consumer may hold unacknowledged, while keeping one statement
# of a bounded size.
MAX_BATCH = 500

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Waiter(Generic[Item, Result]):
    __slots__ = ("item", "ready", "done", "result", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.ready = threading.Event()
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None

    def settle(self, result: Result | None = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True

    def outcome(self) -> Result | None:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit(Generic[Item, Result]):
    """``submit(item)`` writes ``item``, concurrent callers sharing transactions.

    ``write_many(items)`` writes all of them in one transaction, all or nothing, and returns one
    result per item in order; ``write_one(item)`` writes one alone.
    """

    def __init__(
        self,
        write_many: Callable[[Sequence[Item]], Sequence[Result]],
        write_one: Callable[[Item], Result],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._write_many = write_many
        self._write_one = write_one
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Waiter[Item, Result]] = []
        self._leading = False

    def submit(self, item: Item) -> Result | None:
        """The item's result once committed; raises what writing it alone raised."""
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._lock:
            self._pending.append(waiter)
            leader = not self._leading
            self._leading = True
        if not leader:
            waiter.ready.wait()
        if not waiter.done:
            # Led now: this waiter was first in the queue when the lead was handed over, so it
            # is in the batch this call writes.
            self._lead()
        return waiter.outcome()

    def _lead(self) -> None:
        with self._lock:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        try:
            self._write(batch)
        finally:
            for waiter in batch:
                if not waiter.done:  # only if writing was interrupted (the worker killed)
                    waiter.settle(error=RuntimeError("the batch was interrupted"))
            with self._lock:
                successor = self._pending[0] if self._pending else None
                self._leading = successor is not None
            for waiter in batch:
                waiter.ready.set()
            if successor is not None:
                successor.ready.set()

    def _write(self, batch: list[_Waiter[Item, Result]]) -> None:
        try:
            results: Sequence[Result] | None = self._write_many([w.item for w in batch])
        except Exception:
            results = None
        if results is not None:
            for waiter, result in zip(batch, results, strict=True):
                waiter.settle(result)
            return
        for waiter in batch:
            try:
                waiter.settle(self._write_one(waiter.item))
            except Exception as exc:
                waiter.settle(error=exc)

    def pending(self) -> int:
        """Items queued and not yet taken into a batch (for tests and metrics)."""
        with self._lock:
            return len(self._pending)
