"""The global directory: tenant id -> region, the one thing kept outside the region cells.

The router (``gateway.router``) records a tenant when its cell answers its sign-up, and looks
it up where a request names a tenant but carries no key that names its region (inbound mail, to
``<tenant id>@<mail domain>``). It holds ids and region names only, in its own database
(``<prefix>_directory``), migrated from ``directory_migrations/``.

A tenant's move between cells (``services.tenant_move``) is recorded here too: its progress
(``tenant_moves``), and its API keys as keyed hashes (``moved_keys``), by which the router
refuses them during the move and sends them to the tenant's new cell after it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kernel import db as kdb
from kernel import migrate
from kernel.config import Settings
from kernel.datamap import End, Held, ServiceMap, Table, When, operational, pseudonym, secret

MIGRATIONS = Path(__file__).parent / "directory_migrations"
NAME = "directory"
# A move's steps in which the tenant is refused (503, mail 451): from the freeze to the cut-over,
# and while a rollback deletes the target's copy (until ``rolled_back``).
FROZEN_STEPS = frozenset({"frozen", "copied", "verified", "ledger_moved", "rolling_back"})

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
                    " where the cells' databases are on servers the router does not reach (the"
                    " Kubernetes cells) each cell does it for its own region's rows"
                    " (`--cell REGION`, a CronJob every 15 minutes)",
                ),
                operational("region"),
                operational("recorded_at"),
            ),
        ),
        Table(
            "tenant_moves",
            "each move of a tenant between region cells and its progress (services.tenant_move),"
            " ids, regions and step names only",
            (
                pseudonym(
                    "tenant_id",
                    note="a finished move's row goes when the directory's reconciliation removes"
                    " the tenant (destroyed in its cell); the next move of the tenant replaces it",
                ),
                operational("source"),
                operational("target"),
                operational("step"),
                operational("started_at"),
                operational("updated_at"),
                operational("finished_at"),
                operational("outcome"),
                operational("detail", "the mover's own words: a step's failure, never data"),
            ),
        ),
        Table(
            "moved_keys",
            "the keyed hashes of a moved tenant's API keys, for the router to refuse them during"
            " the move and send them to the tenant's new cell after",
            (
                secret(
                    "key_hash",
                    Held.KEYED_HASH,
                    End(
                        When.DELETED,
                        "a rolled back move deletes its tenant's rows, and the directory's"
                        " reconciliation deletes them with the tenant's row once the tenant is"
                        " destroyed in its cell (gateway.directory_sync:sync)",
                        "gateway.directory:Directory.forget_moved_keys",
                    ),
                    note="HMAC-SHA-256 under the platform's API key secret, which every cell and"
                    " the router share",
                ),
                pseudonym("tenant_id"),
            ),
        ),
    ),
)


def prepare(settings: Settings) -> None:
    """The directory's database, created if missing and migrated."""
    kdb.ensure_database(settings.server_dsn, settings.database_name(NAME))
    migrate.migrate(settings.database_dsn(NAME), [(NAME, MIGRATIONS)])


class Directory:
    def __init__(self, settings: Settings, maxconn: int = 4, dsn: str | None = None) -> None:
        # ``dsn``: a cell's reconciliation reaches the router's directory on another server.
        self.db = kdb.Database(dsn or settings.database_dsn(NAME), maxconn=maxconn)

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

    # --- moves between cells (services.tenant_move) ---------------------------------------------

    def moving(self, tenant_id: str) -> bool:
        """Whether the tenant is inside a move's refusal window (frozen, not yet cut over)."""
        try:
            tenant = str(uuid.UUID(tenant_id))
        except ValueError:
            return False
        with self.db.read() as cur:
            cur.execute(
                "SELECT step FROM tenant_moves WHERE tenant_id = %s AND outcome IS NULL",
                (tenant,),
            )
            row = cur.fetchone()
        return row is not None and row[0] in FROZEN_STEPS

    def move_of(self, tenant_id: str) -> dict[str, Any] | None:
        with self.db.read() as cur:
            cur.execute(
                "SELECT source, target, step, outcome, detail, started_at, finished_at"
                " FROM tenant_moves WHERE tenant_id = %s",
                (str(uuid.UUID(tenant_id)),),
            )
            row = cur.fetchone()
        if row is None:
            return None
        names = ("source", "target", "step", "outcome", "detail", "started_at", "finished_at")
        return dict(zip(names, row, strict=True))

    def begin_move(self, tenant_id: str, source: str, target: str) -> bool:
        """Record a new move at ``frozen`` (the router refuses the tenant from now on); False
        when a move of the tenant is still unfinished. A finished one is replaced."""
        with self.db.transaction() as cur:
            cur.execute(
                "DELETE FROM tenant_moves WHERE tenant_id = %s AND outcome IS NOT NULL",
                (tenant_id,),
            )
            cur.execute(
                "INSERT INTO tenant_moves (tenant_id, source, target, step)"
                " VALUES (%s, %s, %s, 'frozen') ON CONFLICT (tenant_id) DO NOTHING",
                (tenant_id, source, target),
            )
            return bool(cur.rowcount)

    def set_step(self, tenant_id: str, step: str, detail: str | None = None) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE tenant_moves SET step = %s, detail = %s, updated_at = now(),"
                " outcome = CASE WHEN %s IN ('done', 'rolled_back') THEN %s END,"
                " finished_at = CASE WHEN %s IN ('done', 'rolled_back') THEN now() END"
                " WHERE tenant_id = %s",
                (step, detail, step, step, step, tenant_id),
            )

    def set_moved_keys(self, tenant_id: str, key_hashes: list[str]) -> None:
        """The tenant's keys, as keyed hashes, are the router's to recognise (replacing any
        recorded before: a resumed freeze records them again)."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM moved_keys WHERE tenant_id = %s", (tenant_id,))
            if key_hashes:
                cur.executemany(
                    "INSERT INTO moved_keys (key_hash, tenant_id) VALUES (%s, %s)"
                    " ON CONFLICT (key_hash) DO UPDATE SET tenant_id = EXCLUDED.tenant_id",
                    [(h, tenant_id) for h in key_hashes],
                )

    def forget_moved_keys(self, tenant_id: str) -> None:
        """A rolled back move: the tenant's keys name its cell again, as when issued."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM moved_keys WHERE tenant_id = %s", (tenant_id,))

    def cut_over(self, tenant_id: str, region: str) -> None:
        """The tenant lives in ``region`` from now on, and its move leaves the refusal window,
        in one transaction: the router never sees one without the other."""
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO tenant_regions (tenant_id, region) VALUES (%s, %s)"
                " ON CONFLICT (tenant_id) DO UPDATE SET region = EXCLUDED.region,"
                " recorded_at = now()",
                (tenant_id, region),
            )
            cur.execute(
                "UPDATE tenant_moves SET step = 'cut_over', updated_at = now(), detail = NULL"
                " WHERE tenant_id = %s",
                (tenant_id,),
            )

    def key_routes(self) -> dict[str, str | None]:
        """Every moved key's hash -> the region to send it to, or None while its tenant is in a
        move's refusal window. Empty (one cheap read) when no tenant was ever moved."""
        with self.db.read() as cur:
            cur.execute(
                "SELECT k.key_hash, r.region, m.step, m.outcome FROM moved_keys k"
                " LEFT JOIN tenant_moves m ON m.tenant_id = k.tenant_id"
                " LEFT JOIN tenant_regions r ON r.tenant_id = k.tenant_id"
            )
            rows = cur.fetchall()
        routes: dict[str, str | None] = {}
        for key_hash, region, step, outcome in rows:
            if outcome is None and step in FROZEN_STEPS:
                routes[key_hash] = None
            elif region is not None:
                routes[key_hash] = region
        return routes

    def close(self) -> None:
        self.db.close()
