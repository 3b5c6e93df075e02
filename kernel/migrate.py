"""The one migration tool: ordered SQL files, applied once each, under an advisory lock.

A component (``kernel.store``, ``kernel.keystore``, ``accounts``, ...) owns a folder of files named
``NNNN_what.sql``. Files are applied in name order, each in its own transaction together with its
row in ``schema_migrations``, so a crash mid-migration leaves nothing half-applied.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from kernel.db import connect

log = logging.getLogger(__name__)

KERNEL_MIGRATIONS = Path(__file__).parent / "migrations"
STORE = ("kernel.store", KERNEL_MIGRATIONS / "store")
KEYSTORE = ("kernel.keystore", KERNEL_MIGRATIONS / "keystore")

# Any constant serves; it only has to be the same for every process migrating one database.
_LOCK_ID = 0x1ED6E7D5


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    component: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(component: str, folder: Path) -> list[Migration]:
    files = sorted(p for p in Path(folder).glob("*.sql"))
    return [Migration(component, p.name, p.read_text()) for p in files]


def migrate(dsn: str, components: list[tuple[str, Path]]) -> list[str]:
    """Apply what is missing, in order; returns the names applied. Refuses edited history."""
    applied_now: list[str] = []
    conn = connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
            cur.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       component text NOT NULL,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (component, name))"""
            )
            cur.execute("SELECT component, name, checksum FROM schema_migrations")
            done = {(c, n): s for c, n, s in cur.fetchall()}
        conn.autocommit = False
        for component, folder in components:
            for migration in discover(component, folder):
                key = (migration.component, migration.name)
                if key in done:
                    if done[key] != migration.checksum:
                        raise MigrationError(
                            f"{component}/{migration.name} changed after it was applied; "
                            "add a new migration instead"
                        )
                    continue
                with conn.cursor() as cur:
                    cur.execute(migration.sql)
                    cur.execute(
                        "INSERT INTO schema_migrations (component, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.component, migration.name, migration.checksum),
                    )
                conn.commit()
                applied_now.append(f"{component}/{migration.name}")
                log.info("applied migration %s/%s", component, migration.name)
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    finally:
        if not conn.closed:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
            conn.close()
    return applied_now
