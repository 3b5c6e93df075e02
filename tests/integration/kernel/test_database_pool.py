"""The connection pool against real PostgreSQL: connections opened under load are kept."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from kernel.db import Database
from tests.support.source import source_store


def backends_of_concurrent_transactions(db: Database, n: int) -> set[int]:
    """The server processes behind ``n`` transactions held open at the same time."""
    barrier, pids, lock = threading.Barrier(n), set(), threading.Lock()

    def work() -> None:
        with db.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            with lock:
                pids.add(cur.fetchone()[0])
            barrier.wait()  # all n open at once, so each has a connection of its own

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return pids


def test_connections_opened_for_a_burst_serve_the_next_one(world):
    db = Database(source_store(world).db.dsn, maxconn=6)
    try:
        first = backends_of_concurrent_transactions(db, 5)
        second = backends_of_concurrent_transactions(db, 5)
        assert len(first) == 5
        # psycopg2's pool on its own keeps one and opens four new sessions for every burst.
        assert second == first
    finally:
        db.close()


def test_a_connection_the_server_ended_is_dropped_not_kept(world):
    db = Database(source_store(world).db.dsn, maxconn=3)
    try:
        with db.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        outsider = psycopg2.connect(db.dsn)
        try:
            with outsider, outsider.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            outsider.close()
        # The kept connection is found dead on its next use, once, and is not put back.
        with pytest.raises(psycopg2.OperationalError), db.transaction() as cur:
            cur.execute("SELECT 1")
        with db.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] != pid
    finally:
        db.close()


def test_after_a_server_restart_one_request_fails_not_one_per_kept_connection(world):
    db = Database(source_store(world).db.dsn, maxconn=6)
    try:
        kept = backends_of_concurrent_transactions(db, 5)
        assert len(kept) == 5
        # What a restart does to the pool's sessions: every one of them ends.
        outsider = psycopg2.connect(db.dsn)
        try:
            with outsider, outsider.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", (list(kept),)
                )
        finally:
            outsider.close()

        failures, backends = 0, set()
        for _ in range(5):
            try:
                with db.transaction() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    backends.add(cur.fetchone()[0])
            except psycopg2.OperationalError:
                failures += 1
        assert failures == 1  # the first finds its session gone; the rest get new ones
        assert backends and not backends & kept
        # The new connections are kept in turn.
        assert backends_of_concurrent_transactions(db, 5).isdisjoint(kept)
    finally:
        db.close()
