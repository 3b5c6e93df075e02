"""The global directory: tenant id -> region, the one thing kept outside the region cells.

The router (``gateway.router``) records a tenant when its cell answers its sign-up, and looks
it up where a request names a tenant but carries no key that names its region (inbound mail, to
``<tenant id>@<mail domain>``). It holds ids and region names only, in its own database
(``<prefix>_directory``), migrated from ``directory_migrations/``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from kernel import db as kdb
from kernel import migrate
from kernel.config import Settings
from kernel.datamap import ServiceMap, Table, operational, pseudonym

MIGRATIONS = Path(__file__).parent / "directory_migrations"
NAME = "directory"

DATA_MAP = ServiceMap(
    service=NAME,
    summary="the router's global directory in front of the region cells: which region holds"
    " each tenant, ids only (`<prefix>_directory`, no keystore)",
    tables=(
        Table(
            "tenant_regions",
            "the region whose cell holds each tenant, recorded from its sign-up's answer",
            (
                pseudonym(
                    "tenant_id",
                    note="kept while a cell holds the tenant: the router's reconciliation"
                    " with the cells (`gateway.directory_sync`, on start and every"
                    " `LEDGERDESK_DIRECTORY_SYNC_MINUTES`, 15 by default) removes a destroyed"
                    " tenant's row within that period, and records a tenant its sign-up missed;"
                    " not where the cells' databases are on servers the router does not reach"
                    " (the Kubernetes cells): there it is deleted by hand",
                ),
                operational("region"),
                operational("recorded_at"),
            ),
        ),
    ),
)


def prepare(settings: Settings) -> None:
    """The directory's database, created if missing and migrated."""
    kdb.ensure_database(settings.server_dsn, settings.database_name(NAME))
    migrate.migrate(settings.database_dsn(NAME), [(NAME, MIGRATIONS)])


class Directory:
    def __init__(self, settings: Settings, maxconn: int = 4) -> None:
        self.db = kdb.Database(settings.database_dsn(NAME), maxconn=maxconn)

    def record(self, tenant_id: str, region: str) -> None:
        """The tenant lives in ``region``; recording it again changes nothing (a retried
        sign-up answered from the cell's idempotency store)."""
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO tenant_regions (tenant_id, region) VALUES (%s, %s)"
                " ON CONFLICT (tenant_id) DO NOTHING",
                (str(uuid.UUID(tenant_id)), region),
            )

    def region_of(self, tenant_id: str) -> str | None:
        try:
            tenant = str(uuid.UUID(tenant_id))
        except ValueError:
            return None
        with self.db.read() as cur:
            cur.execute("SELECT region FROM tenant_regions WHERE tenant_id = %s", (tenant,))
            row = cur.fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.db.close()
