"""The tenant mover's copy and verification (``services.tenant_move``) on two cells' databases
as ``make run --cells`` names them, without their processes: every table is classified, a copy
carries the tenant's rows (events as imported history) and keys, and verification finds a row
the source changed and copies it again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from gateway.idempotency import MIGRATIONS as GATEWAY_MIGRATIONS
from kernel.config import Settings
from kernel.stores import prepare_databases
from services import platform, tenant_move


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
