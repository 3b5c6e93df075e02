"""The directory kept true (``gateway.directory_sync``) against real cells' accounts databases:
tenants are signed up and destroyed by accounts' own handlers in each cell's store, and the
directory is reconciled with them: a tenant it missed recorded, a destroyed one's row removed,
a mismatch reported and left as it is, a dry run changing nothing, a tenant being moved left
alone, and the router doing it on start and again every period."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import requests
from psycopg2.extensions import parse_dsn

import services.accounts
from gateway import directory, directory_sync
from kernel import cli
from kernel.config import ConfigurationError, Settings
from kernel.stores import open_store
from kernel.testing import free_port, wait_until, world_env
from kernel.uow import EventSourcedStore
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS
from services.platform import cell_settings
from tests.integration.accounts.test_tenant_destruction import destroy

MIGRATIONS = Path(services.accounts.__file__).parent / "migrations"
REGIONS = ("uk", "in")


@dataclass
class Cells:
    router: Settings
    stores: dict[str, EventSourcedStore]
    settings: dict[str, Settings]
    directory: directory.Directory

    def sign_up(self, region: str) -> str:
        from services.accounts import handlers

        cell = self.settings[region]
        with self.stores[region].unit_of_work() as uow:
            signed = handlers.sign_up(
                {
                    "company": "Canary Ltd",
                    "region": region,
                    "admin": {"name": "Canary Admin", "email": "admin@canary.example"},
                    "age_confirmed": True,
                    "accept_policy_version": cell.policy_version,
                },
                uow,
                cell,
            )
        return str(signed["tenant"]["id"])

    def rows(self) -> dict[str, str]:
        with self.directory.db.read() as cur:
            cur.execute("SELECT tenant_id::text, region FROM tenant_regions")
            return dict(cur.fetchall())


def _router_settings(world: Settings, regions: tuple[str, ...] = REGIONS) -> Settings:
    # The cells' gateways are never called by a sync: only their databases are read.
    return world.with_overrides(cells={r: f"http://127.0.0.1:{free_port()}" for r in regions})


@pytest.fixture
def cells(world: Settings) -> Iterator[Cells]:
    from services.accounts import handlers

    router = _router_settings(world)
    stores, settings = {}, {}
    for index, region in enumerate(REGIONS):
        cell = cell_settings(world, region, index)
        store = open_store(cell, "accounts", REGISTRY, PROJECTIONS, MIGRATIONS)
        with store.unit_of_work() as uow:
            handlers.ensure_first_policy(uow, cell)
        stores[region], settings[region] = store, cell
    directory.prepare(router)
    found = directory.Directory(router)
    try:
        yield Cells(router, stores, settings, found)
    finally:
        found.close()


def test_the_accounts_database_read_is_the_one_the_platform_gives_the_cell(world: Settings) -> None:
    for index, region in enumerate(REGIONS):
        cell = cell_settings(world, region, index)
        assert directory_sync.cell_accounts_dsn(world, region) == cell.database_dsn("accounts")
    # Cells whose prefixes do not follow the router's (Compose's) are named one by one.
    named = Settings.from_env(
        {**world.to_env(), "LEDGERDESK_CELLS_DATABASE_PREFIXES": "uk=ledgerdesk"}, "router"
    )
    assert parse_dsn(directory_sync.cell_accounts_dsn(named, "uk"))["dbname"] == (
        "ledgerdesk_accounts"
    )
    assert directory_sync.cell_accounts_dsn(named, "in") == cell_settings(
        world, "in", 1
    ).database_dsn("accounts")
    with pytest.raises(ConfigurationError):
        Settings.from_env({"LEDGERDESK_CELLS_DATABASE_PREFIXES": "uk=a-b"}, "router")


def test_a_tenant_the_directory_missed_is_recorded_once(cells: Cells) -> None:
    tenant = cells.sign_up("in")
    assert cells.directory.region_of(tenant) is None

    result = directory_sync.sync(cells.router, cells.directory)

    assert (result.held, result.recorded, result.removed, result.mismatched) == (1, 1, 0, 0)
    assert result.exit_code() == cli.Exit.OK
    assert cells.directory.region_of(tenant) == "in"
    again = directory_sync.sync(cells.router, cells.directory)
    assert (again.recorded, again.removed) == (0, 0)
    assert cells.rows() == {tenant: "in"}


def test_a_destroyed_tenant_s_row_is_removed_and_the_others_stay(cells: Cells) -> None:
    doomed, kept = cells.sign_up("uk"), cells.sign_up("uk")
    cells.directory.record(doomed, "uk")
    cells.directory.record(kept, "uk")

    # Both moved here once: the directory holds their keys' hashes and their finished moves.
    for tenant in (doomed, kept):
        with cells.directory.db.transaction() as cur:
            cur.execute(
                "INSERT INTO tenant_moves (tenant_id, source, target, step, finished_at, outcome)"
                " VALUES (%s, 'in', 'uk', 'done', now(), 'done')",
                (tenant,),
            )
        cells.directory.set_moved_keys(tenant, [f"hash-of-{tenant}"])

    destroy(cells.stores["uk"], doomed)
    result = directory_sync.sync(cells.router, cells.directory)

    assert (result.held, result.recorded, result.removed) == (1, 0, 1)
    assert cells.rows() == {kept: "uk"}
    with cells.directory.db.read() as cur:
        cur.execute("SELECT tenant_id::text FROM moved_keys")
        assert {row[0] for row in cur.fetchall()} == {kept}
        cur.execute("SELECT tenant_id::text FROM tenant_moves")
        assert {row[0] for row in cur.fetchall()} == {kept}


def test_a_mismatch_is_reported_and_nothing_of_it_changed(cells: Cells) -> None:
    elsewhere, twice = cells.sign_up("uk"), cells.sign_up("uk")
    # Recorded in another region than the cell holding it.
    cells.directory.record(elsewhere, "in")
    # Held by two cells: the row a copy would leave in the other cell.
    conn = psycopg2.connect(cells.settings["in"].database_dsn("accounts"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO tenants (id, company, region, status, plan, created_at, version)"
                " VALUES (%s, 'copy', 'uk', 'active', 'free', now(), 1)",
                (twice,),
            )
    finally:
        conn.close()

    result = directory_sync.sync(cells.router, cells.directory)

    assert (result.mismatched, result.recorded, result.removed) == (2, 0, 0)
    assert result.exit_code() == cli.Exit.FAILED
    assert cells.rows() == {elsewhere: "in"}


def test_a_dry_run_reports_and_changes_nothing(cells: Cells) -> None:
    missed, doomed, kept = cells.sign_up("uk"), cells.sign_up("in"), cells.sign_up("in")
    cells.directory.record(doomed, "in")
    cells.directory.record(kept, "in")
    destroy(cells.stores["in"], doomed)
    before = cells.rows()

    result = directory_sync.sync(cells.router, cells.directory, dry_run=True)

    assert (result.recorded, result.removed) == (1, 1)
    assert "would record 1, would remove 1" in result.line()
    assert cells.rows() == before == {doomed: "in", kept: "in"}
    assert cells.directory.region_of(missed) is None


def test_a_tenant_being_moved_is_left_alone(cells: Cells) -> None:
    moving, gone = cells.sign_up("uk"), cells.sign_up("uk")
    cells.directory.record(gone, "uk")
    destroy(cells.stores["uk"], gone)
    for tenant in (moving, gone):
        assert cells.directory.begin_move(tenant, "uk", "in")

    result = directory_sync.sync(cells.router, cells.directory)

    assert (result.moving, result.recorded, result.removed) == (2, 0, 0)
    assert cells.rows() == {gone: "uk"}
    with cells.directory.db.transaction() as cur:
        cur.execute("UPDATE tenant_moves SET step = 'rolled_back', finished_at = now()")
    done = directory_sync.sync(cells.router, cells.directory)
    assert (done.moving, done.recorded, done.removed) == (0, 1, 1)
    assert cells.rows() == {moving: "uk"}


def test_rows_of_a_cell_that_cannot_be_read_are_kept(cells: Cells) -> None:
    tenant = cells.sign_up("uk")
    unread = str(uuid.uuid4())
    cells.directory.record(unread, "sg")
    # "sg" is served but its cell has no database here; "xx" is recorded but has no cell.
    router = cells.router.with_overrides(cells={**cells.router.cells, "sg": "http://127.0.0.1:9"})
    cells.directory.record(str(uuid.uuid4()), "xx")

    result = directory_sync.sync(router, cells.directory)

    assert result.unreachable == ["sg"]
    assert (result.recorded, result.removed, result.mismatched) == (1, 0, 1)
    assert cells.rows()[unread] == "sg" and cells.rows()[tenant] == "uk"


def test_a_cell_holding_no_tenant_is_reported_and_none_of_its_rows_removed(cells: Cells) -> None:
    doomed = cells.sign_up("in")
    cells.directory.record(doomed, "in")
    stale = str(uuid.uuid4())
    cells.directory.record(stale, "in")
    destroy(cells.stores["in"], doomed)

    result = directory_sync.sync(cells.router, cells.directory)

    assert (result.held, result.removed, result.mismatched) == (0, 0, 1)
    assert result.exit_code() == cli.Exit.FAILED
    assert cells.rows() == {doomed: "in", stale: "in"}
    # With a tenant held there again, the cell is read as it is and the others go.
    kept = cells.sign_up("in")
    again = directory_sync.sync(cells.router, cells.directory)
    assert (again.recorded, again.removed, again.mismatched) == (1, 2, 0)
    assert cells.rows() == {kept: "in"}


def test_the_command_prints_one_line_and_says_by_its_exit_code(cells: Cells) -> None:
    cells.sign_up("uk")
    env = world_env(cells.router)

    dry = subprocess.run(
        [sys.executable, "-m", "gateway.directory_sync", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "directory sync: 1 held by the cells, would record 1, would remove 0, mismatched 0,"
        " moving 0, unreachable none"
    ]
    assert cells.rows() == {}

    done = subprocess.run(
        [sys.executable, "-m", "gateway.directory_sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "recorded 1," in done.stdout and len(cells.rows()) == 1

    no_cells = subprocess.run(
        [sys.executable, "-m", "gateway.directory_sync"],
        env={**env, "LEDGERDESK_CELLS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_cells.returncode == cli.Exit.USAGE


def test_the_router_syncs_on_start_and_again_every_period(cells: Cells) -> None:
    missed, kept = cells.sign_up("uk"), cells.sign_up("uk")
    router = cells.router.with_overrides(gateway_port=free_port())
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.router"],
        # A period of a few hundred milliseconds: the second pass is what is waited for.
        env={**world_env(router), "LEDGERDESK_DIRECTORY_SYNC_MINUTES": "0.005"},
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: cells.directory.region_of(missed) == "uk",
            timeout=60,
            what="the tenant recorded on the router's start",
        )
        assert cells.directory.region_of(kept) == "uk"
        destroy(cells.stores["uk"], missed)
        wait_until(
            lambda: cells.directory.region_of(missed) is None,
            timeout=60,
            what="the destroyed tenant's row removed by a later pass",
        )
        assert _up(f"http://127.0.0.1:{router.gateway_port}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _up(url: str) -> bool:
    try:
        requests.get(f"{url}/healthz", timeout=5)
    except requests.ConnectionError:
        return False
    return True


# --- a cell reconciling its own region's rows (Kubernetes: the router reaches no cell's database)


def test_a_cell_records_its_missing_tenant_removes_its_destroyed_one_and_leaves_others(
    cells: Cells,
) -> None:
    missed, doomed, kept = cells.sign_up("uk"), cells.sign_up("uk"), cells.sign_up("uk")
    cells.directory.record(doomed, "uk")
    cells.directory.record(kept, "uk")
    # The in cell's tenant, which the uk cell does not hold: the in cell's business.
    elsewhere = cells.sign_up("in")
    cells.directory.record(elsewhere, "in")
    for tenant in (doomed, kept, elsewhere):
        cells.directory.set_moved_keys(tenant, [f"hash-of-{tenant}"])
    with cells.directory.db.transaction() as cur:
        cur.execute(
            "INSERT INTO tenant_moves (tenant_id, source, target, step, finished_at, outcome)"
            " VALUES (%s, 'in', 'uk', 'done', now(), 'done')",
            (doomed,),
        )
    destroy(cells.stores["uk"], doomed)

    result = directory_sync.sync_cell(cells.settings["uk"], "uk", cells.directory)

    assert (result.held, result.recorded, result.removed, result.mismatched) == (2, 1, 1, 0)
    assert result.exit_code() == cli.Exit.OK
    assert cells.rows() == {missed: "uk", kept: "uk", elsewhere: "in"}
    with cells.directory.db.read() as cur:
        cur.execute("SELECT tenant_id::text FROM moved_keys")
        assert {row[0] for row in cur.fetchall()} == {kept, elsewhere}
        cur.execute("SELECT count(*) FROM tenant_moves")
        assert cur.fetchone() == (0,)


def test_a_cell_reports_its_tenant_recorded_elsewhere_and_changes_nothing(cells: Cells) -> None:
    tenant = cells.sign_up("uk")
    cells.directory.record(tenant, "in")

    result = directory_sync.sync_cell(cells.settings["uk"], "uk", cells.directory)

    assert (result.recorded, result.removed, result.mismatched) == (0, 0, 1)
    assert result.exit_code() == cli.Exit.FAILED
    assert cells.rows() == {tenant: "in"}


def test_a_cell_leaves_a_tenant_being_moved_alone(cells: Cells) -> None:
    moving, gone, kept = cells.sign_up("uk"), cells.sign_up("uk"), cells.sign_up("uk")
    cells.directory.record(gone, "uk")
    cells.directory.record(kept, "uk")
    destroy(cells.stores["uk"], gone)
    for tenant in (moving, gone):
        assert cells.directory.begin_move(tenant, "uk", "in")

    result = directory_sync.sync_cell(cells.settings["uk"], "uk", cells.directory)

    assert (result.moving, result.recorded, result.removed) == (2, 0, 0)
    assert cells.rows() == {gone: "uk", kept: "uk"}


def test_a_cell_holding_no_tenant_removes_none_of_its_rows(cells: Cells) -> None:
    recorded = str(uuid.uuid4())
    cells.directory.record(recorded, "uk")

    result = directory_sync.sync_cell(cells.settings["uk"], "uk", cells.directory)

    assert (result.removed, result.mismatched) == (0, 1)
    assert cells.rows() == {recorded: "uk"}


def test_the_cell_command_reads_the_cell_s_settings_and_the_directory_s_url(cells: Cells) -> None:
    tenant = cells.sign_up("in")
    env = {
        **world_env(cells.settings["in"]),
        "LEDGERDESK_DIRECTORY_DATABASE_URL": cells.router.database_dsn("directory"),
    }

    done = subprocess.run(
        [sys.executable, "-m", "gateway.directory_sync", "--cell", "in"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "directory sync: 1 held by the cells, recorded 1, removed 0, mismatched 0,"
        " moving 0, unreachable none"
    ]
    assert cells.rows() == {tenant: "in"}

    unset = subprocess.run(
        [sys.executable, "-m", "gateway.directory_sync", "--cell", "in"],
        env={**env, "LEDGERDESK_DIRECTORY_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unset.returncode == cli.Exit.USAGE
    assert "LEDGERDESK_DIRECTORY_DATABASE_URL" in unset.stderr
