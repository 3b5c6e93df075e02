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
from kernel.envelope import new_envelope
from kernel.stores import open_store, prepare_databases
from services import platform, tenant_move
from services.accounts import handlers
from services.accounts.commands import SignUpV1
from services.accounts.events import REGISTRY as ACCOUNTS_EVENTS
from services.accounts.projections import PROJECTIONS as ACCOUNTS_PROJECTIONS
from services.audit.ledger import open_ledger


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
        mover._fence(india)  # as the copy step does: a copy again removes the target's first
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

        # Removal needs the tenant's fence (the named deletion of events refuses without it),
        # then takes the tenant's rows and events, and nobody else's.
        with pytest.raises(psycopg2.Error, match="append-only"):
            mover._remove(uk, "tickets", [])
        mover._fence(uk)
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


def test_a_move_fences_both_cells_and_its_import_and_removal_pass_the_fence(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = signed_up(uk)
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover._fence(uk)
        mover._fence(india)
        assert "accounts" in mover.fenced(uk) and "accounts" in mover.fenced(india)
        # Nothing of the tenant is appended in a fenced cell but the mover's import.
        with pytest.raises(psycopg2.Error, match="being moved") as refused:
            execute(
                uk,
                "accounts",
                "INSERT INTO events (event_id, stream_id, stream_version, type, source,"
                " schema_version, tenant_id, occurred_at, payload) VALUES"
                " (%s, 'late-1', 1, 'late', 'accounts', 1, %s, now(), '{}')",
                str(uuid.uuid4()),
                tenant,
            )
        assert refused.value.pgcode == "LD001"
        mover._copy(uk, india, "accounts")
        assert mover._differing(uk, india, "accounts") == []
        # The platform's table is never copied: the fences are each cell's own.
        assert "tenant_fences" not in {
            t.name
            for t in tenant_move.tables_of(
                psycopg2.connect(uk.database_dsn("accounts")), "accounts"
            )
        }
        mover._unfence(uk)
        mover._unfence(india)
        assert mover.fenced(uk) == [] == mover.fenced(india)
    finally:
        mover.close()


def test_idempotency_records_of_the_tenant_move_all_of_them(cells: tenant_move.Cells) -> None:
    """Its own scope's, its agents' (``<tenant>:<agent>``) and its sign-up's (scope
    ``signup``, sealed under its key): none stays in the source."""
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant, other, agent = (str(uuid.uuid4()) for _ in range(3))
    rows = [
        (tenant, "k1", None),
        (f"{tenant}:{agent}", "k2", None),
        ("signup", "k3", tenant),
        (other, "k4", None),
        ("signup", "k5", other),
    ]
    for scope, key, owner in rows:
        if owner is None:
            execute(
                uk,
                "gateway",
                "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES (%s, %s, 'f')",
                scope,
                key,
            )
        else:
            execute(
                uk,
                "gateway",
                "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers,"
                " sealed_body, tenant_id, subject_ids, completed_at) VALUES"
                " (%s, %s, 'f', 201, '{}', '\\x00', %s, ARRAY[%s]::uuid[], now())",
                scope,
                key,
                owner,
                owner,
            )
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover._copy(uk, india, "gateway")
        keys = "SELECT key FROM idempotency_keys ORDER BY key"
        assert execute(india, "gateway", keys) == [("k1",), ("k2",), ("k3",)]
        mover._fence(uk)
        mover._remove(uk, "gateway", [])
        assert execute(uk, "gateway", keys) == [("k4",), ("k5",)]
    finally:
        mover.close()


def test_a_revoked_key_is_not_frozen(cells: tenant_move.Cells) -> None:
    """The router refuses the frozen tenant's live keys (503); a revoked one stays its cell's
    to answer (401)."""
    uk = cells.cell("uk")
    tenant = signed_up(uk)
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        assert mover.directory.begin_move(tenant, "uk", "in")
        mover._freeze(uk)
        assert list(mover.directory.key_routes().values()) == [None]
        execute(
            uk,
            "accounts",
            "UPDATE api_keys SET revoked_at = now()"
            " WHERE agent_id IN (SELECT id FROM agents WHERE tenant_id = %s)",
            tenant,
        )
        mover._freeze(uk)
        assert mover.directory.key_routes() == {}
    finally:
        mover.close()


def test_a_rollback_begun_is_only_finished_by_rollback(cells: tenant_move.Cells) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = signed_up(uk)
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        assert mover.directory.begin_move(tenant, "uk", "in")
        mover._fence(uk)
        mover._fence(india)
        mover._copy(uk, india, "accounts")
        # As a rollback killed after recording its step and deleting part of the copy leaves it.
        mover.directory.set_step(tenant, tenant_move.ROLLING_BACK, "rolled back by the operator")
        assert mover.directory.moving(tenant), "the router still refuses the tenant"
        with pytest.raises(tenant_move.MoveRefused, match="only rollback continues it"):
            mover.resume()
        mover.rollback()
        move = mover.directory.move_of(tenant)
        assert move is not None and move["outcome"] == "rolled_back"
        assert not mover.directory.moving(tenant)
        assert region_in(india, tenant) == [] and region_in(uk, tenant) == [("uk",)]
        assert mover.fenced(uk) == [] == mover.fenced(india)
    finally:
        mover.close()


def test_the_ledger_moves_only_after_the_cells_are_compared_again(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = signed_up(uk)
    lines: list[str] = []
    mover = tenant_move.Mover(cells, tenant, out=lines.append)
    try:
        mover.directory.record(tenant, "uk")
        assert mover.directory.begin_move(tenant, "uk", "in")
        mover._fence(india)
        mover._copy(uk, india, "accounts")
        mover.directory.set_step(tenant, "verified")
        # Whatever changed the source after the verification (here by hand: the fence keeps
        # events out, not an operator's SQL), the ledger step finds it and copies it again.
        execute(uk, "accounts", "UPDATE tenants SET company = 'Changed' WHERE id = %s", tenant)
        mover.resume()
        assert "verify: accounts (tenants) changed: copying again" in lines
        assert execute(india, "accounts", "SELECT company FROM tenants WHERE id = %s", tenant) == [
            ("Changed",)
        ]
        move = mover.directory.move_of(tenant)
        assert move is not None and move["outcome"] == "done"
    finally:
        mover.close()


def test_the_source_is_not_destroyed_while_the_target_lacks_its_history(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = signed_up(uk)
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        assert mover.directory.begin_move(tenant, "uk", "in")
        mover._copy(uk, india, "accounts")
        mover.directory.cut_over(tenant, "in")
        # An event the target's copy does not hold (appended before any fence, by hand).
        execute(
            uk,
            "accounts",
            "INSERT INTO events (event_id, stream_id, stream_version, type, source,"
            " schema_version, tenant_id, occurred_at, payload) VALUES"
            " (%s, 'late-1', 1, 'late', 'accounts', 1, %s, now(), '{}')",
            str(uuid.uuid4()),
            tenant,
        )
        with pytest.raises(tenant_move.MoveRefused, match="lacks .* history of accounts"):
            mover.resume()
        assert region_in(uk, tenant) == [("uk",)], "the source's copy kept"
        move = mover.directory.move_of(tenant)
        assert move is not None and move["step"] == "cut_over"
    finally:
        mover.close()


def logged(cell: Settings, tenant: str, n: int) -> None:
    """``n`` entries appended to the tenant's audit log in ``cell``, and a platform checkpoint
    signed there over them."""
    ledger = open_ledger(cell)
    ledger.logs.record_many(
        [
            new_envelope(
                type="thing_happened",
                schema_version=1,
                source="tickets",
                stream_id=f"Thing-{uuid.uuid4()}",
                stream_version=1,
                tenant_id=uuid.UUID(tenant),
                actor_id=None,
                payload={"n": i},
            )
            for i in range(n)
        ]
    )
    assert ledger.logs.checkpoint() is not None


def ledger_moved(mover: tenant_move.Mover, source: str, target: str) -> dict:
    """The ledger step of a move ``source`` -> ``target``, the directory's move done after it."""
    assert mover.directory.begin_move(mover.tenant, source, target)
    mover.directory.set_step(mover.tenant, "verified")
    move = mover.directory.move_of(mover.tenant)
    assert move is not None
    mover._move_ledger(mover.cells.cell(source), mover.cells.cell(target), move)
    return move


LOG = (
    "SELECT seq, type, hash::text, leaf_hash::text FROM log_entries WHERE tenant_id = %s"
    " ORDER BY seq"
)
HEAD = "SELECT size, head_hash::text, compact_range::text FROM log_heads WHERE tenant_id = %s"
NODES = "SELECT level, idx, hash::text FROM log_nodes WHERE tenant_id = %s ORDER BY level, idx"


def test_a_tenant_moves_back_to_a_cell_it_left_and_its_whole_log_verifies_there(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = str(uuid.uuid4())
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        logged(uk, tenant, 3)
        ledger_moved(mover, "uk", "in")
        mover.directory.cut_over(tenant, "in")
        mover.directory.set_step(tenant, "done")
        left = execute(uk, "audit", LOG, tenant)
        logged(india, tenant, 4)
        # Rolled back before the ledger step: uk's old log is as it was.
        assert mover.directory.begin_move(tenant, "in", "uk")
        undone = mover.directory.move_of(tenant)
        assert undone is not None
        mover._undo(undone, "rolled back by the test")
        assert execute(uk, "audit", LOG, tenant) == left
        back = ledger_moved(mover, "in", "uk")
        # The ledger step run again (a resume) appends nothing twice.
        mover._move_ledger(india, uk, back)
        types = [t for _, t, _, _ in execute(uk, "audit", LOG, tenant)]
        assert types == [
            *["thing_happened"] * 3,
            tenant_move.MOVED_OUT,
            tenant_move.MOVED_IN,
            *["thing_happened"] * 4,
            tenant_move.MOVED_OUT,
            tenant_move.MOVED_IN,
        ]
        source = execute(india, "audit", LOG, tenant)
        assert execute(uk, "audit", LOG, tenant)[: len(source)] == source, "byte for byte"
        assert set(execute(india, "audit", NODES, tenant)) <= set(
            execute(uk, "audit", NODES, tenant)
        )
        ledger = open_ledger(uk)
        assert ledger.logs.checkpoint() is not None
        report = ledger.logs.verify_log(uuid.UUID(tenant))
        assert report["ok"] is True, report
        assert report["entries"] == report["verified_size"] == len(types)
        assert report["checkpoints"] == 2, "signed before the move out and after the move back"
        assert open_ledger(india).logs.verify_log(uuid.UUID(tenant))["ok"] is True
    finally:
        mover.close()


def test_a_move_back_to_a_cell_whose_log_the_source_does_not_extend_is_refused(
    cells: tenant_move.Cells,
) -> None:
    uk, india = cells.cell("uk"), cells.cell("in")
    tenant = str(uuid.uuid4())
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        # Two logs of one tenant that share nothing: uk's is no prefix of india's.
        logged(uk, tenant, 2)
        logged(india, tenant, 3)
        mover.directory.record(tenant, "in")
        before = {
            region: (execute(cell, "audit", LOG, tenant), execute(cell, "audit", HEAD, tenant))
            for region, cell in (("uk", uk), ("in", india))
        }
        with pytest.raises(tenant_move.MoveRefused, match="does not extend"):
            mover.move("uk")
        assert mover.directory.move_of(tenant) is None, "nothing recorded"
        assert mover.directory.begin_move(tenant, "in", "uk")
        move = mover.directory.move_of(tenant)
        assert move is not None
        with pytest.raises(tenant_move.MoveRefused, match="does not extend"):
            mover._move_ledger(india, uk, move)
        after = {
            region: (execute(cell, "audit", LOG, tenant), execute(cell, "audit", HEAD, tenant))
            for region, cell in (("uk", uk), ("in", india))
        }
        assert after == before, "neither log changed"
    finally:
        mover.close()


def test_a_move_back_to_a_cell_whose_old_log_was_changed_in_place_is_refused(
    cells: tenant_move.Cells,
) -> None:
    uk = cells.cell("uk")
    tenant = str(uuid.uuid4())
    mover = tenant_move.Mover(cells, tenant, out=lambda line: None)
    try:
        mover.directory.record(tenant, "uk")
        logged(uk, tenant, 3)
        ledger_moved(mover, "uk", "in")
        mover.directory.cut_over(tenant, "in")
        mover.directory.set_step(tenant, "done")
        # An entry's content rewritten past the append-only trigger, its hashes left: the head
        # hash still matches, the prefix does not.
        execute(
            uk,
            "audit",
            "SET session_replication_role = replica;"
            " UPDATE log_entries SET content = content || '\\x00'::bytea"
            " WHERE tenant_id = %s AND seq = 2",
            tenant,
        )
        with pytest.raises(tenant_move.MoveRefused, match="does not extend"):
            mover.move("uk")
        move = mover.directory.move_of(tenant)
        assert move is not None and move["outcome"] == "done", "no new move recorded"
    finally:
        mover.close()
