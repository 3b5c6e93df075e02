"""The tenant mover's copy and verification (``services.tenant_move``) on two cells' databases
as ``make run --cells`` names them, without their processes: every table is classified, a copy
carries the tenant's rows (events as imported history) and keys, and verification finds a row
the source changed and copies it again; the cut-over records the tenant's new region in the
target's accounts before the directory names the target, and a resume records it once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from gateway.idempotency import MIGRATIONS as GATEWAY_MIGRATIONS
from kernel.commands import load_command
from kernel.config import Settings
from kernel.stores import open_store, prepare_databases
from services import platform, tenant_move
from services.accounts import handlers
from services.accounts.commands import SignUpV1
from services.accounts.events import REGISTRY as ACCOUNTS_EVENTS
from services.accounts.projections import PROJECTIONS as ACCOUNTS_PROJECTIONS


def prepare_cell(cell: Settings) -> None:
    for name in platform.SERVICES:
        prepare_databases(cell, name, platform.migrations_of(name))
    prepare_databases(cell, "gateway", GATEWAY_MIGRATIONS)


@pytest.fixture
def cells(world: Settings) -> Iterator[tenant_move.Cells]:
    settings = world.with_overrides(regions=("uk", "in"))
    cells = tenant_move.Cells.of(settings)
    for cell in cells.cells.values():
        prepare_cell(cell)
    yield cells


def execute(cell: Settings, database: str, statement: str, *params: object) -> list[tuple]:
    conn = psycopg2.connect(cell.database_dsn(database))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def test_every_table_is_a_tenants_or_the_platforms(cells: tenant_move.Cells) -> None:
    """A new table must be classified before a tenant can move: the mover refuses otherwise."""
    cell = cells.cell("uk")
    for database in tenant_move.DATABASES:
        conn = psycopg2.connect(cell.database_dsn(database))
        try:
            names = [t.name for t in tenant_move.tables_of(conn, database)]
        finally:
            conn.close()
        assert "events" in names, database
    conn = psycopg2.connect(cell.database_dsn("accounts"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE unheard_of (x int)")
        with pytest.raises(tenant_move.MoveRefused, match="unheard_of"):
            tenant_move.tables_of(conn, "accounts")
    finally:
        conn.close()


def test_a_copy_carries_rows_and_history_and_verification_finds_a_changed_row(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    for who in (tenant, other):
        execute(
            uk,
            "tickets",
            "INSERT INTO directory (subject_id, tenant_id, kind, active, version)"
            " VALUES (%s, %s, 'contact', true, 1)",
            str(uuid.uuid4()),
            who,
        )
        execute(
            uk,
            "tickets",
            "INSERT INTO events (event_id, stream_id, stream_version, type, source,"
            " schema_version, tenant_id, occurred_at, payload) VALUES"
            " (%s, %s, 1, 'thing', 'tickets', 1, %s, now(), '{\"n\": [1, \"x\"]}')",
            str(uuid.uuid4()),
            f"thing-{who}",
            who,
        )
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover._copy(uk, india, "tickets")
        assert mover._differing(uk, india, "tickets") == []
        copied = "SELECT payload::text, tx_order FROM events WHERE tenant_id = %s"
        assert execute(india, "tickets", copied, tenant) == [('{"n": [1, "x"]}', -1)]
        assert execute(india, "tickets", copied, other) == [], "only the tenant's rows"

        # The source changed after the copy: the table is found, and copied again.
        execute(uk, "tickets", "UPDATE directory SET active = false WHERE tenant_id = %s", tenant)
        assert mover._differing(uk, india, "tickets") == ["directory"]
        mover._verify(uk, india)
        assert mover._differing(uk, india, "tickets") == []

        # A copy run twice (a resumed step) leaves one copy.
        mover._copy(uk, india, "tickets")
        assert execute(india, "tickets", "SELECT count(*) FROM events") == [(1,)]

        # Removal takes the tenant's rows and events, and nobody else's.
        mover._remove(uk, "tickets", [])
        assert execute(
            uk, "tickets", "SELECT count(*) FROM directory WHERE tenant_id = %s", tenant
        ) == [(0,)]
        assert execute(
            uk, "tickets", "SELECT count(*) FROM events WHERE tenant_id = %s", tenant
        ) == [(0,)]
        assert execute(
            uk, "tickets", "SELECT count(*) FROM events WHERE tenant_id = %s", other
        ) == [(1,)]
    finally:
        mover.close()


def test_the_ledger_step_is_idempotent_and_once_begun_only_goes_forward(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = str(uuid.uuid4())
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        assert mover.directory.begin_move(tenant, "uk", "in")
        mover.directory.set_step(tenant, "verified")
        move = mover.directory.move_of(tenant)
        assert move is not None
        mover._move_ledger(uk, india, move)
        mover._move_ledger(uk, india, move)  # a resumed step appends nothing twice
        log = "SELECT seq, type, hash FROM log_entries WHERE tenant_id = %s ORDER BY seq"
        source, target = execute(uk, "audit", log, tenant), execute(india, "audit", log, tenant)
        assert [t for _, t, _ in source] == [tenant_move.MOVED_OUT]
        assert target[:1] == source, "carried byte for byte"
        assert [t for _, t, _ in target] == [tenant_move.MOVED_OUT, tenant_move.MOVED_IN]
        with pytest.raises(tenant_move.MoveRefused, match="only be resumed"):
            mover.rollback()
    finally:
        mover.close()


def signed_up(cell: Settings) -> str:
    """A tenant signed up in ``cell`` (its region) through accounts' own handlers."""
    store = open_store(cell, "accounts", ACCOUNTS_EVENTS, ACCOUNTS_PROJECTIONS, prepare=False)
    try:
        with store.unit_of_work() as uow:
            handlers.ensure_first_policy(uow, cell)
        command = load_command(
            SignUpV1,
            {
                "company": "Movers Ltd",
                "region": cell.regions[0],
                "admin": {"name": "Mo Ver", "email": "mo@example.com"},
                "age_confirmed": True,
                "accept_policy_version": cell.policy_version,
            },
        )
        with store.unit_of_work() as uow:
            return str(handlers.sign_up(command, uow, cell)["tenant"]["id"])
    finally:
        store.db.close()


def region_in(cell: Settings, tenant: str) -> list[tuple]:
    return execute(cell, "accounts", "SELECT region FROM tenants WHERE id = %s", tenant)


def test_the_cut_over_records_the_new_region_first_and_a_resume_records_it_once(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = signed_up(uk)
    first = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        first.directory.record(tenant, "uk")
        assert first.directory.begin_move(tenant, "uk", "in")
        first.directory.set_step(tenant, "ledger_moved")
        # The target holds no copy of the tenant: its accounts cannot record the region, and
        # the directory is not cut over without it.
        with pytest.raises(tenant_move.MoveRefused, match="cut_over failed: NotFound"):
            first.resume()
        move = first.directory.move_of(tenant)
        assert move is not None and move["step"] == "ledger_moved"
        assert first.directory.region_of(tenant) == "uk"
    finally:
        first.close()

    first._copy(uk, india, "accounts")  # what the copy step brought (here, accounts only)
    assert region_in(india, tenant) == [("uk",)]
    lines: list[str] = []
    second = tenant_move.Mover(cells, tenant, out=lines.append)
    try:
        second.resume()
        move = second.directory.move_of(tenant)
        assert move is not None and move["outcome"] == "done"
        assert second.directory.region_of(tenant) == "in"
    finally:
        second.close()
    assert f"region: tenant {tenant} is hosted in in" in lines
    assert region_in(india, tenant) == [("in",)]
    assert region_in(uk, tenant) == [], "the source's copy destroyed"
    recorded = (
        "SELECT payload->>'region', payload->>'previous_region', metadata->>'region' FROM events"
        " WHERE type = 'tenant_region_changed' AND tenant_id = %s"
    )
    # Once, though both the cut-over and the destruction after it ask for it.
    assert execute(india, "accounts", recorded, tenant) == [("in", "uk", "in")]
    # For the target's relay to publish: billing there learns it.
    published = (
        "SELECT count(*) FROM outbox WHERE routing_key = 'accounts.tenant_region_changed'"
        " AND body::jsonb -> 'payload' ->> 'tenant_id' = %s"
    )
    assert execute(india, "accounts", published, tenant) == [(1,)]


def test_a_move_cut_over_without_its_region_gets_it_on_resume(cells: tenant_move.Cells) -> None:
    """A move a mover without the region change cut over, then stopped: resuming records the
    region before destroying the source's copy."""
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = signed_up(uk)
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        assert mover.directory.begin_move(tenant, "uk", "in")
        mover._copy(uk, india, "accounts")
        mover.directory.cut_over(tenant, "in")
        mover.resume()
        move = mover.directory.move_of(tenant)
        assert move is not None and move["outcome"] == "done"
    finally:
        mover.close()
    assert region_in(india, tenant) == [("in",)]
