"""The directory kept true: reconciled with the tenants the region cells hold.

The router records a tenant when its cell answers its sign-up (``gateway.router``), which misses
tenants that signed up before the router existed or whose answer could not be recorded, and
never learns of a destruction. ``sync`` compares the directory with each cell's accounts read
model (``tenants``, its ``id`` and ``status`` columns only; the database on the router's server
that ``cell_accounts_dsn`` names) and

- records a tenant a cell holds and the directory lacks;
- removes the row of a tenant no cell holds any more: a tenant the accounts service marks
  ``destroyed`` (its scrubbed row stays in ``tenants`` as a tombstone) is held by no one;
- reports, and never changes, a tenant held by two cells or by another cell than the one
  recorded, and a row naming a region that has no cell: which is true is for an operator to
  decide, and moving a tenant is ``tenant_moves``' business;
- leaves alone a tenant being moved (a row of ``tenant_moves`` with ``finished_at IS NULL``)
  and every row recorded in a cell that could not be read;
- reports, and removes nothing of, a cell that holds no tenant at all while the directory
  records some there: the wrong database far more often than every tenant destroyed (the last
  tenant of a region destroyed keeps its row, reported at each pass, until an operator removes it).

The directory is read before the cells: a tenant recorded after that read is not a candidate
for removal, so a sign-up answered while a sync runs (the cell holds it before the router
records it) is never taken for a destroyed tenant.

The router runs it on start and every ``LEDGERDESK_DIRECTORY_SYNC_MINUTES`` (``Periodic``), so a
destruction reaches the directory within that period. By hand:

    python -m gateway.directory_sync [--dry-run]

Where the router cannot reach the cells' databases (Kubernetes: each cell has its own server),
each cell reconciles its own region's rows instead (``sync_cell``, a CronJob in the cell):

    python -m gateway.directory_sync --cell REGION [--dry-run]

reads the cell's own accounts database (``LEDGERDESK_DATABASE_URL``/``_PREFIX`` as the cell's
processes have them) and writes the directory at ``LEDGERDESK_DIRECTORY_DATABASE_URL``, with the
same decisions (``_reconcile``): a row recorded in another region is that cell's, unless this
cell holds the tenant (a mismatch, reported).

prints one line of counts. Exit status (``kernel.cli``): 0 in agreement (after the changes); 1
mismatches reported, which need an operator; 2 configuration (no cells); 3 the directory, or
some cell's accounts database, could not be read (what could be read was reconciled).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from dataclasses import dataclass, field

import psycopg2
from psycopg2.extras import execute_values

from gateway.directory import Directory
from kernel import cli
from kernel import db as kdb
from kernel.config import ConfigurationError, Settings
from kernel.logs import configure_logging

log = logging.getLogger("gateway.directory_sync")

# The service whose read model says which tenants a cell holds, and the status it gives a
# destroyed tenant's tombstone (services/accounts/projections.py, TenantsProjection).
ACCOUNTS = "accounts"
DESTROYED = "destroyed"


@dataclass
class Result:
    """What a sync found and did (with ``dry_run``, would do): counts, and regions by name."""

    held: int = 0
    recorded: int = 0
    removed: int = 0
    mismatched: int = 0
    moving: int = 0
    unreachable: list[str] = field(default_factory=list)
    dry_run: bool = False

    def line(self) -> str:
        verb = "would record" if self.dry_run else "recorded"
        gone = "would remove" if self.dry_run else "removed"
        return (
            f"directory sync: {self.held} held by the cells, {verb} {self.recorded},"
            f" {gone} {self.removed}, mismatched {self.mismatched}, moving {self.moving},"
            f" unreachable {','.join(self.unreachable) or 'none'}"
        )

    def exit_code(self) -> int:
        if self.mismatched:
            return cli.Exit.FAILED
        if self.unreachable:
            return cli.Exit.UNREACHABLE
        return cli.Exit.OK


def cell_accounts_dsn(settings: Settings, region: str) -> str:
    """The accounts database of ``region``'s cell, on the router's server: under the prefix
    ``LEDGERDESK_CELLS_DATABASE_PREFIXES`` names for it, else the router's prefix with the
    region after it, as ``services.platform.cell_settings`` names a cell's databases."""
    prefix = settings.cells_database_prefixes.get(region) or (
        f"{settings.database_prefix}_{region}"
    )
    return settings.with_overrides(database_prefix=prefix).database_dsn(ACCOUNTS)


def held_by_cell(dsn: str) -> set[str]:
    """The ids of the tenants a cell's accounts database holds: every one not destroyed."""
    conn = kdb.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id::text FROM tenants WHERE status <> %s", (DESTROYED,))
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def _recorded_and_moving(directory: Directory) -> tuple[dict[str, str], set[str]]:
    with directory.db.read() as cur:
        cur.execute("SELECT tenant_id::text, region FROM tenant_regions")
        recorded = {tenant: region for tenant, region in cur.fetchall()}
        cur.execute("SELECT tenant_id::text FROM tenant_moves WHERE finished_at IS NULL")
        moving = {r[0] for r in cur.fetchall()}
    return recorded, moving


def sync(
    settings: Settings,
    directory: Directory,
    dry_run: bool = False,
) -> Result:
    """Reconcile ``directory`` with the cells of ``settings.cells`` (see the module)."""
    if not settings.cells:
        raise ConfigurationError("LEDGERDESK_CELLS names no cell: there is nothing to reconcile")
    result = Result(dry_run=dry_run)
    # First the directory, then the cells: see the module's note on sign-ups meanwhile.
    recorded, moving = _recorded_and_moving(directory)
    held: dict[str, set[str]] = {}
    for region in settings.cells:
        try:
            held[region] = held_by_cell(cell_accounts_dsn(settings, region))
        except (psycopg2.Error, kdb.DatabaseUnavailable) as exc:
            # Not its DSN: it names the host. A missing database or table is unreachable too.
            log.warning("directory sync: cell %s unreadable (%s)", region, type(exc).__name__)
            result.unreachable.append(region)
    return _reconcile(directory, result, recorded, moving, held, set(settings.cells), True)


def sync_cell(
    settings: Settings,
    region: str,
    directory: Directory,
    dry_run: bool = False,
) -> Result:
    """Reconcile ``directory``'s rows of ``region`` with the tenants the cell itself holds (its
    own accounts database, ``settings.database_dsn``): run inside a cell whose database server
    the router cannot reach. Rows of other regions are other cells' business, except a tenant
    this cell holds and the directory records elsewhere: reported, never changed."""
    if not region:
        raise ConfigurationError("--cell names no region")
    result = Result(dry_run=dry_run)
    recorded, moving = _recorded_and_moving(directory)
    held = {region: held_by_cell(settings.database_dsn(ACCOUNTS))}
    return _reconcile(directory, result, recorded, moving, held, {region}, False)


def _reconcile(
    directory: Directory,
    result: Result,
    recorded: dict[str, str],
    moving: set[str],
    held: dict[str, set[str]],
    judged: set[str],
    every_cell: bool,
) -> Result:
    """The decision both modes share. ``held``: the tenants of each cell read; ``judged``: the
    regions whose rows this pass may remove; ``every_cell``: they are all the regions there
    are, so a row naming another is a mismatch (the router), else another cell's (a cell)."""
    holders: dict[str, list[str]] = {}
    empty = {region for region, tenants in held.items() if not tenants}
    for region, tenants in held.items():
        for tenant in tenants:
            holders.setdefault(tenant, []).append(region)
    result.held = len(holders)

    to_record: list[tuple[str, str]] = []
    for tenant, regions in holders.items():
        if tenant in moving:
            result.moving += 1
            continue
        if len(regions) > 1:
            log.warning("directory sync: tenant %s held by cells %s", tenant, ",".join(regions))
            result.mismatched += 1
            continue
        region, was = regions[0], recorded.get(tenant)
        if was is None:
            to_record.append((tenant, region))
        elif was != region:
            log.warning(
                "directory sync: tenant %s recorded in %s, held by cell %s", tenant, was, region
            )
            result.mismatched += 1

    to_remove: list[tuple[str, str]] = []
    suspect: dict[str, int] = {}
    for tenant, region in recorded.items():
        if tenant in holders:
            continue
        if tenant in moving:
            if every_cell or region in judged:
                result.moving += 1
        elif region not in judged:
            if every_cell:
                log.warning(
                    "directory sync: tenant %s recorded in %s: no such cell", tenant, region
                )
                result.mismatched += 1
        elif region in empty:
            # A cell holding no tenant at all is more likely the wrong database (a prefix
            # misnamed, a fresh restore) than every tenant destroyed: its rows are kept.
            suspect[region] = suspect.get(region, 0) + 1
        elif region in held:
            to_remove.append((tenant, region))
    for region, rows in suspect.items():
        log.warning(
            "directory sync: cell %s holds no tenant, %d recorded there: none removed", region, rows
        )
        result.mismatched += 1

    result.recorded, result.removed = len(to_record), len(to_remove)
    if not result.dry_run and (to_record or to_remove):
        result.removed = _write(directory, to_record, to_remove)
    if result.recorded or result.removed or result.mismatched or result.unreachable:
        log.info(result.line())
    return result


def _write(
    directory: Directory, to_record: list[tuple[str, str]], to_remove: list[tuple[str, str]]
) -> int:
    """Record and remove in one transaction; the number of rows actually removed."""
    with directory.db.transaction() as cur:
        # A sign-up recorded meanwhile wins: it is the same fact.
        execute_values(
            cur,
            "INSERT INTO tenant_regions (tenant_id, region) VALUES %s"
            " ON CONFLICT (tenant_id) DO NOTHING",
            to_record,
            template="(%s::uuid, %s)",
        )
        # By id and region: a row a finished move rewrote meanwhile is not this one.
        removed = execute_values(
            cur,
            "DELETE FROM tenant_regions t USING (VALUES %s) AS gone (tenant_id, region)"
            " WHERE t.tenant_id = gone.tenant_id AND t.region = gone.region"
            " RETURNING t.tenant_id::text",
            to_remove,
            template="(%s::uuid, %s)",
            fetch=True,
        )
        # What the directory holds of a moved tenant goes with it: its keys' hashes and
        # its finished moves; only of rows deleted here (a tenant that moved while this
        # pass read the cells keeps its row, and with it its keys' routes).
        gone = [row[0] for row in removed]
        cur.execute("DELETE FROM moved_keys WHERE tenant_id = ANY(%s::uuid[])", (gone,))
        cur.execute(
            "DELETE FROM tenant_moves WHERE tenant_id = ANY(%s::uuid[])"
            " AND finished_at IS NOT NULL",
            (gone,),
        )
    return len(gone)


class Periodic:
    """The router's sync: once on start, then every ``interval`` seconds until ``stop``; a
    failed pass is logged by type and the next one tries again."""

    def __init__(self, settings: Settings, directory: Directory, interval: float) -> None:
        self.settings, self.directory, self.interval = settings, directory, interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="directory-sync", daemon=True)

    def start(self) -> Periodic:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                sync(self.settings, self.directory)
            except Exception as exc:  # noqa: BLE001 - the directory down: the next pass retries
                log.warning("directory sync: failed (%s)", type(exc).__name__)
            if self.stopping.wait(self.interval):
                break

    def stop(self) -> None:
        """No pass after this one. A pass in progress is not waited for: it writes in one
        transaction, which ends with the process's connection if it is cut short."""
        self.stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.directory_sync",
        description="Reconcile the router's directory with the tenants the cells hold.",
        epilog="exit status: 0 in agreement; 1 mismatches reported (an operator decides);"
        " 2 configuration; 3 the directory or a cell unreachable",
    )
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    parser.add_argument(
        "--cell",
        metavar="REGION",
        help="run inside REGION's cell: reconcile the directory (LEDGERDESK_DIRECTORY_DATABASE_URL)"
        " with this cell's own tenants, for that region's rows only",
    )
    args = parser.parse_args(argv)

    def run() -> int:
        if args.cell is None:
            settings = Settings.from_env(service="router")
            configure_logging("router", settings.log_format, settings.log_level)
            directory = Directory(settings, maxconn=1)
        else:
            # The cell's own settings: its accounts database is the one its processes use.
            settings = Settings.from_env(service="directory-sync")
            configure_logging("directory-sync", settings.log_format, settings.log_level)
            if not settings.directory_database_url:
                raise ConfigurationError(
                    "--cell needs LEDGERDESK_DIRECTORY_DATABASE_URL, the router's directory"
                )
            directory = Directory(settings, maxconn=1, dsn=settings.directory_database_url)
        try:
            if args.cell is None:
                result = sync(settings, directory, dry_run=args.dry_run)
            else:
                result = sync_cell(settings, args.cell, directory, dry_run=args.dry_run)
        finally:
            directory.close()
        print(result.line())
        return result.exit_code()

    return cli.guarded(run)


if __name__ == "__main__":
    sys.exit(main())
