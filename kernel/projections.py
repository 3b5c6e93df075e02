"""Projections: read models kept in step with the event store, and rebuilt from it by replay."""

from __future__ import annotations

import contextlib
import copy
import gc
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import eventlet.patcher
import psycopg2
from psycopg2 import sql
from tqdm import tqdm

from kernel import eventstore
from kernel.db import Database
from kernel.envelope import Envelope

if TYPE_CHECKING:
    from kernel.crypto.blind_index import BlindIndex
    from kernel.crypto.fields import FieldCipher

# Real threads even where eventlet patched ``threading``: a green one would not run until the
# replaying thread waited for it.
_threading = eventlet.patcher.original("threading")


class Projection:
    """A read model. Subclasses name their tables and apply events with plaintext payloads.

    ``apply`` runs in the transaction that appends the event, so the read model is never behind
    the store; ``rebuild`` replays the whole store into emptied tables.
    """

    name: str = ""
    tables: tuple[str, ...] = ()
    event_types: frozenset[str] = frozenset()
    # True: ``apply`` receives personal fields as stored, still encrypted, and the read model
    # keeps them so (readers open them with the service's cipher). Such a read model never holds
    # plaintext, so erasing a subject is one key shred, whatever the length of its history.
    ciphertext: bool = False

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        raise NotImplementedError

    def reset(self, cur: psycopg2.extensions.cursor) -> None:
        if self.tables:
            cur.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, self.tables)))
            )

    def handles(self, event: Envelope) -> bool:
        return event.type in self.event_types

    def bound(self, cipher: FieldCipher | None) -> Projection:
        """This projection as a store with ``cipher`` applies it (``EventSourcedStore``). Most
        need nothing of the store and are shared as they are; see ``KeyedProjection``."""
        return self

    def apply_batch(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        """Replay's way in: ``events`` in store order, each one the projection handles.

        One by one through ``apply`` unless a projection knows better: an override may write a
        batch in fewer statements, provided it leaves the read model exactly as ``apply`` one
        event at a time would.
        """
        for event in events:
            self.apply(cur, event)


class KeyedProjection(Projection):
    """A read model that needs the store's keys to write: a blind index (keyed hashes under
    the tenant's key, ``kernel.crypto.blind_index``), or one that opens encrypted fields to
    derive what it keeps. Each store applies its own copy, holding that store's cipher
    (``bound``), so two stores in one process never share keys."""

    cipher: FieldCipher | None = None

    def bound(self, cipher: FieldCipher | None) -> Projection:
        if cipher is None:
            raise ValueError(f"the {self.name} read model needs the store's keystore")
        mine = copy.copy(self)
        mine.cipher = cipher
        return mine

    @property
    def blind_index(self) -> BlindIndex:
        from kernel.crypto.blind_index import BlindIndex

        return BlindIndex(self.keyed_cipher.keystore)

    @property
    def keyed_cipher(self) -> FieldCipher:
        if self.cipher is None:
            raise RuntimeError(f"the {self.name} read model is applied by a store (``bound``)")
        return self.cipher


class _InThread:
    """A call run by a thread of its own; ``result`` waits for it and returns or raises what
    it did. For the waits on the server that replay overlaps with its own work: a thread in
    psycopg2's call holds the interpreter lock only to start and end it."""

    def __init__(self, call: Callable[..., Any], *args: Any):
        self._call, self._args = call, args
        self._value: Any = None
        self._failure: BaseException | None = None
        self._thread = _threading.Thread(target=self._run, name="rebuild-io", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call(*self._args)
        except BaseException as exc:  # raised in the caller's thread, by ``result``
            self._failure = exc

    def join(self) -> None:
        """Until the call has ended, whatever it did."""
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._value


class _BatchedWrites:
    """The cursor a projection replays into: its statements go to the server in batches.

    Replay applies every event with a statement or two, and one round trip each was most of its
    time. Queued statements are sent joined as one, from a thread of their own: the server
    writes one batch while replay reads and folds the next. Touching anything but ``execute`` (a
    fetch, ``rowcount``) waits for what was sent and sends the queue first, so what it reads is
    the last statement's result, as it would be unbatched. An error surfaces at the next send
    or wait, and the rebuild rolls back whole.
    """

    def __init__(self, cur: psycopg2.extensions.cursor, limit: int = 500):
        self._cur = cur
        self._limit = limit
        self._queued: list[bytes] = []
        self._sent: _InThread | None = None

    def execute(self, query: Any, params: Any = None) -> None:
        self._queued.append(self._cur.mogrify(query, params))
        if len(self._queued) >= self._limit:
            self.flush()

    def flush(self) -> None:
        """Send what is queued (once what was sent before is written)."""
        self.wait()
        if self._queued:
            statement = b";\n".join(self._queued)
            self._queued.clear()
            self._sent = _InThread(self._cur.execute, statement)

    def wait(self) -> None:
        """Until everything sent is written; raises what writing it raised."""
        sent, self._sent = self._sent, None
        if sent is not None:
            sent.result()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        self.wait()
        return getattr(self._cur, name)


@contextlib.contextmanager
def _snapshot_reader(
    db: Database, cur: psycopg2.extensions.cursor
) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor on a second connection that sees exactly what ``cur``'s transaction sees.

    Replay reads the store there because the writing connection is busy with the last batch.
    The snapshot is the writer's, taken after its TRUNCATE: a transaction that appends events a
    projection handles writes the read model first, so it either committed before the lock was
    granted (its events are in the snapshot) or waits until the rebuild commits.
    """
    cur.execute("SELECT pg_export_snapshot()")
    (snapshot,) = cur.fetchone()
    with db.connection() as conn:
        try:
            with conn.cursor() as reader:
                reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                reader.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                yield reader
        finally:
            conn.rollback()


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Replay allocates millions of objects that live for one batch and form no cycles, so
    reference counting frees them all; the cycle collector's passes over each batch's
    survivors found nothing and cost a fifth of a rebuild's time. It resumes afterwards (if it
    was on), and collects whatever cycles the rest of the process made meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rebuild(
    db: Database,
    projection: Projection,
    prepare: Callable[[Envelope], Envelope],
    progress: bool | None = None,
    batch_size: int = 2000,
    only_if_new: bool = False,
) -> int | None:
    """Empty the projection and replay every event into it, in one transaction.

    ``prepare`` decrypts and upcasts each stored event (erased fields read as erased, so replay
    goes on past shredded subjects). TRUNCATE's lock makes readers wait for the commit, so
    none sees a half-built read model.
    Returns the number of events applied.

    ``only_if_new``: only if this database never built it (no ``projection_state`` row), for a
    read model a migration added to a store that already has events; None if it had been. The
    tables are locked before the look, so of processes starting at once one builds it and the
    others, once it has, find it built.
    """
    show = sys.stderr.isatty() if progress is None else progress
    applied = 0
    with _cycle_collection_paused(), db.transaction() as cur:
        if only_if_new:
            cur.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(map(sql.Identifier, projection.tables))
                )
            )
            cur.execute("SELECT 1 FROM projection_state WHERE name = %s", (projection.name,))
            if cur.fetchone() is not None:
                return None
        projection.reset(cur)
        # A bar's measure, not a count: positions are drawn from a sequence that skips some.
        total = eventstore.head_position(cur)
        bar = tqdm(total=total, desc=f"rebuild {projection.name}", unit="ev", disable=not show)
        # From before START: history imported with a moved tenant is replayed too.
        position = eventstore.REPLAY_START
        batched = _BatchedWrites(cur)
        # A projection sees a cursor: the batching is replay's business, not the projection's.
        writes = cast(psycopg2.extensions.cursor, batched)
        try:
            with bar, _snapshot_reader(db, cur) as reader:
                # The whole snapshot, not only its settled part: an event committed before the
                # snapshot is in no read model once the TRUNCATE has run, and only replay can
                # put it back. One snapshot throughout, so none commits behind the reader.
                # The next batch is fetched while this one is decoded, folded and sent.
                fetching = _InThread(
                    eventstore.read_all_rows, reader, position, batch_size, None, False
                )
                try:
                    while rows := fetching.result():
                        fetching = _InThread(
                            eventstore.read_all_rows,
                            reader,
                            eventstore.cursor_of(rows[-1]),
                            batch_size,
                            None,
                            False,
                        )
                        batch = eventstore.envelopes_of(rows)
                        events = [
                            prepare(stored) for _, stored in batch if projection.handles(stored)
                        ]
                        projection.apply_batch(writes, events)
                        applied += len(events)
                        position = batch[-1][0]
                        batched.flush()
                        bar.update(len(batch))
                finally:
                    # No read left running on a connection that goes back to its pool.
                    fetching.join()
        finally:
            batched.wait()
        cur.execute(
            "INSERT INTO projection_state (name, position, tx_order, rebuilt_at)"
            " VALUES (%s, %s, %s, now())"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position,"
            " tx_order = EXCLUDED.tx_order, rebuilt_at = now()",
            (projection.name, position.position, position.tx_order),
        )
    return applied
