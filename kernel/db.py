"""PostgreSQL access: creating a service's database, a connection pool, transactions."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg2
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from kernel.tracing import database_span

log = logging.getLogger(__name__)

psycopg2.extras.register_uuid()


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached; the message says where we looked, never a password."""


def describe(dsn: str) -> str:
    params = parse_dsn(dsn)
    return (
        f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    )


def connect(dsn: str, **kwargs) -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(dsn, **kwargs)
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL is not reachable at {describe(dsn)}: {exc}") from exc


def ensure_database(server_dsn: str, name: str) -> bool:
    """Create database ``name`` if it does not exist; True when it was created."""
    conn = connect(server_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.errors.UniqueViolation:
                return False  # another process created it between our check and create
            except psycopg2.errors.DuplicateDatabase:
                return False
            log.info("created database %s", name)
            return True
    finally:
        conn.close()


def drop_database(server_dsn: str, name: str) -> None:
    conn = connect(server_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


def dsn_for(server_dsn: str, name: str) -> str:
    params = parse_dsn(server_dsn)
    params["dbname"] = name
    return make_dsn(**params)


class Database:
    """A pool of connections to one database; ``transaction()`` is the one way to write."""

    def __init__(self, dsn: str, minconn: int = 1, maxconn: int = 20):
        self.dsn = dsn
        self.namespace = str(parse_dsn(dsn).get("dbname") or "")
        try:
            self._pool = psycopg2.pool.ThreadedConnectionPool(minconn, maxconn, dsn)
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL is not reachable at {describe(dsn)}: {exc}"
            ) from exc
        # psycopg2's pool opens ``minconn`` at once and afterwards keeps only that many idle,
        # closing every other connection as it comes back: under load a busy service started a
        # PostgreSQL session per request. Past the start, every connection opened is kept.
        self._pool.minconn = maxconn
        # A connection found dead usually means the server restarted, which ended every session
        # the pool keeps: each would fail one request in turn. So a dead connection retires
        # every connection opened before it was found; they are closed, unused, as they come up.
        self._generation = 0
        self._born: dict[int, int] = {}  # id of a connection: the generation it was first used in
        self._lock = threading.Lock()

    def _checkout(self) -> psycopg2.extensions.connection:
        while True:
            conn = self._pool.getconn()
            with self._lock:
                born = self._born.setdefault(id(conn), self._generation)
                retired = born < self._generation
                if retired:
                    del self._born[id(conn)]
            if not retired:
                return conn
            self._pool.putconn(conn, close=True)

    def _checkin(self, conn: psycopg2.extensions.connection, broken: bool) -> None:
        close = broken or bool(conn.closed)
        if conn.closed:
            with self._lock:
                if self._born.get(id(conn), -1) == self._generation:
                    self._generation += 1
                    log.warning(
                        "a connection to %s was lost: retiring the pool's older connections",
                        describe(self.dsn),
                    )
        if close:
            with self._lock:
                self._born.pop(id(conn), None)
        self._pool.putconn(conn, close=close)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        conn = self._checkout()
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            if not broken and not conn.closed:
                if conn.status != psycopg2.extensions.STATUS_READY:
                    conn.rollback()
            self._checkin(conn, broken)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor in one transaction: committed on success, rolled back on any exception."""
        with database_span("transaction", self.namespace), self.connection() as conn:
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor whose every statement is its own transaction: for a read of one statement,
        which would otherwise pay a round trip for BEGIN and another for COMMIT."""
        with database_span("read", self.namespace), self.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    yield cur
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def ping(self) -> bool:
        try:
            with self.transaction() as cur:
                cur.execute("SELECT 1")
            return True
        except psycopg2.Error:
            return False

    def close(self) -> None:
        self._pool.closeall()


# The orders a list may be paged in: by creation, or by last change (for a client that syncs).
KEYSET_ORDERS = ("created_at", "updated_at")


def keyset_page(
    cur: psycopg2.extensions.cursor,
    query: str,
    params: Sequence[Any],
    limit: int,
    after: list | None,
    position: Callable[[tuple], list[str]],
    order: str = "created_at",
) -> tuple[list[tuple], list[str] | None]:
    """One page of ``query`` (a SELECT with a WHERE clause over a table with ``created_at`` and
    ``id``) in (created_at, id) order, after the position ``after``: stable under inserts and
    free of OFFSET scans. Returns the rows and the next page's position (from ``position`` of
    the last row), or None on the last page.

    ``order="updated_at"`` pages by (updated_at, id) instead (the table has that column too): a
    row changed while a client pages moves behind its cursor, so it comes again, never missed."""
    if order not in KEYSET_ORDERS:
        raise ValueError(f"a page is in one of {KEYSET_ORDERS}, not {order!r}")
    params = list(params)
    if after:
        query += f" AND ({order}, id) > (%s::timestamptz, %s::uuid)"
        params.extend(after)
    query += f" ORDER BY {order}, id LIMIT %s"
    params.append(limit + 1)
    cur.execute(query, params)
    rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, position(rows[-1]) if more and rows else None
