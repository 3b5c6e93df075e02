"""Moving a tenant from one region cell to another, on request.

    python -m services.tenant_move move --tenant ID --to REGION
    python -m services.tenant_move resume --tenant ID
    python -m services.tenant_move rollback --tenant ID
    python -m services.tenant_move status --tenant ID

The cells are found as ``make run --cells`` makes them (``services.platform.cell_settings``: a
cell's databases under ``<prefix>_<region>_*``, its vhost, its master keys); the move's progress
is kept in the router's directory (``gateway.directory``: ``tenant_moves``), one step at a time,
each step idempotent so ``resume`` reruns the one recorded:

- (before): refused while the source's dead-letter queues hold messages (one replayed there after
  the move would recreate the tenant's data in the source);
- ``frozen``: the router refuses the tenant's requests (503, Retry-After) and the mail front its
  mail (451), by its live API keys' keyed hashes written to the directory's ``moved_keys``; then
  the source cell is let go quiet (the tenant's mail and webhook deliveries sent, its outboxes
  empty, its consumer and RPC queues empty by passive declares); then the tenant is fenced in
  every store database of both cells (``tenant_fences``, store migration 0005: its events are
  refused there, ``TenantMoving``, 503 at a cell's gateway), so nothing the source accepts by
  another way in is lost;
- ``copied``: per service database (and the gateway's), in one target transaction, every row of
  the tenant's of every movable table, read from the source through a server-side cursor; its
  events with new positions and ``tx_order`` -1 (imported history, below every live reader's
  cursor: the read models came with it, ``eventstore.REPLAY_START``); its keystore rows, the
  tenant key unwrapped with the source's master key and wrapped under the target's (the same
  key material: ciphertexts and blind indexes stay valid);
- ``verified``: per table, the count and a hash of the rows' content agree; a database that
  disagrees is copied again (a few times), else the move rolls back;
- ``ledger_moved``: the cells verified again under the fence (still differing after copies
  again, the step is refused: resume or rollback), then ``tenant.moved_out`` appended to the
  tenant's audit log in the source, the log copied byte for byte to the target (every proof
  given before still verifies) and ``tenant.moved_in`` appended there; a target the tenant
  left before keeps its log up to that move's ``moved_out``: the source's log must extend it
  (its entry at the target's size has the target's head hash), else the move is refused before
  it starts, and only the entries (and tree nodes) past it are appended;
- ``cut_over``: the target's fence lifted, the target's accounts records the tenant's new region
  (``tenant_region_changed``: ``/v1/tenant``, new events' ``metadata.region``, billing's tax
  rate from then on), then the directory names the target, the tenant's keys go there, the
  window ends;
- ``source_destroyed``: refused while the target lacks an event (or the tenant key) the source
  holds; then every row copied is deleted from the source, its events by the store's
  named deletion (``ledgerdesk.removing_tenant``), its keystore rows with them; the source keeps
  the tenant's audit log (ids and hashes, ending with ``moved_out``) so its signed checkpoints
  still verify; then the source's fence lifted;
- ``done``.

Before ``ledger_moved`` a failure or ``rollback`` records ``rolling_back`` (the router still
refuses the tenant), deletes the target's copy, lifts both cells' fences, forgets the moved keys
and ends the window (``rolled_back``); a rollback interrupted midway is finished by ``rollback``
only (``resume`` refuses it). From ``ledger_moved`` on, a move only goes forward (``resume``).

Exit status (``kernel.cli``): 0 done; 1 refused or failed, said in one line (ids, regions and
step names only); 2 usage or configuration; 3 PostgreSQL or RabbitMQ unreachable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from gateway import directory as directory_module
from kernel import cli, deadletters, faults
from kernel.config import Settings
from kernel.crypto.primitives import tenant_key_aad, unwrap_key, wrap_key
from kernel.db import DatabaseUnavailable, connect
from kernel.envelope import new_envelope
from services import platform
from services.accounts import moves as accounts_moves
from services.audit import chain
from services.audit.tenant_logs import TenantLogs

if TYPE_CHECKING:
    from services.audit.ledger import Ledger

log = logging.getLogger("services.tenant_move")

STEPS: tuple[str, ...] = (
    "frozen",
    "copied",
    "verified",
    "ledger_moved",
    "cut_over",
    "source_destroyed",
    "done",
)
# Up to here a move can be undone: the source is whole and serves nobody else meanwhile.
LAST_UNDOABLE = "verified"
# Recorded before a rollback deletes anything of the target's copy, so that a rollback killed
# midway is only ever finished by ``rollback``: ``resume`` would go on with a partial copy and
# destroy the source's whole one.
ROLLING_BACK = "rolling_back"
# The databases holding a tenant's rows: each service's, and the gateway's.
DATABASES: tuple[str, ...] = (*platform.SERVICES, "gateway")
BATCH = 1000
# Times a database whose copy disagrees with its source is copied again before the move rolls
# back (the source changed under the freeze: a job of the cell's still finishing).
VERIFY_RETRIES = 3
QUIESCE_TIMEOUT = 60.0
# Seconds for the router to take in the moved keys (it reads them at least once a second).
ROUTER_REFRESH = 2.0
MOVED_OUT = "tenant.moved_out"
MOVED_IN = "tenant.moved_in"
_NAMESPACE = uuid.UUID("4f1d2c57-5a4c-4e8e-9f0e-3e1a9c7d2b10")

# Tables of the platform, not of a tenant: never moved. The audit log is moved by its own step.
PLATFORM_TABLES: dict[str, frozenset[str]] = {
    # ``tenant_fences``: the move's own fence in each cell (store migration 0005), never copied.
    "*": frozenset(
        {"events", "inbox", "outbox", "projection_state", "schema_migrations", "tenant_fences"}
    ),
    "accounts": frozenset({"policies", "policy_notice_jobs", "incidents"}),
    "audit": frozenset(
        {
            "checkpoints",
            "ledger",
            "ledger_nodes",
            "ledger_verifications",
            "platform_checkpoints",
            "platform_checkpoint_heads",
            # The source's verification of the log it keeps; the target verifies its own.
            "tenant_verifications",
            "log_entries",
            "log_nodes",
            "log_heads",
        }
    ),
    "billing": frozenset({"sandbox_charges"}),
    "retention": frozenset({"services"}),
    "gateway": frozenset({"credential_projection"}),
}
# Tables without ``tenant_id`` whose rows are a tenant's through another table's.
CHILD_TABLES: dict[tuple[str, str], str] = {
    ("accounts", "tenants"): "id = %(tenant)s",
    ("accounts", "api_keys"): "agent_id IN (SELECT id FROM agents WHERE tenant_id = %(tenant)s)",
    ("tickets", "attachment_chunks"): (
        "attachment_id IN (SELECT id FROM attachments WHERE tenant_id = %(tenant)s)"
    ),
    ("retention", "request_services"): (
        "request_id IN (SELECT id FROM requests WHERE tenant_id = %(tenant)s)"
    ),
    ("retention", "tenant_export_chunks"): (
        "export_id IN (SELECT id FROM tenant_exports WHERE tenant_id = %(tenant)s)"
    ),
    # Restrictions of the tenant's agents and contacts, by the ids accounts holds.
    ("billing", "restrictions"): "subject_id = ANY(%(subjects)s::uuid[])",
    # Its own scope's, its agents' (``actor_scope``: ``<tenant>:<agent>``) and its sign-up's
    # (scope ``signup``, sealed under the tenant's key, or of the previous release naming it in
    # its plaintext body), as ``gateway.idempotency.forget_tenant`` finds them.
    ("gateway", "idempotency_keys"): (
        "(scope = %(tenant)s::text OR scope LIKE %(tenant)s::text || ':%%'"
        " OR tenant_id = %(tenant)s::uuid OR (body IS NOT NULL AND scope = 'signup'"
        " AND position(convert_to(%(tenant)s::text, 'UTF8') IN body) > 0))"
    ),
    ("gateway", "credential_keys"): (
        "agent_id IN (SELECT agent_id FROM credential_agents WHERE tenant_id = %(tenant)s)"
    ),
    ("gateway", "webhook_attempts"): (
        "delivery_id IN (SELECT id FROM webhook_deliveries WHERE tenant_id = %(tenant)s)"
    ),
}


class MoveRefused(Exception):
    """The move cannot go on: one line for the operator, ids and regions only."""


@dataclass(frozen=True)
class Table:
    name: str
    where: str  # the tenant's rows, with %(tenant)s and %(subjects)s
    columns: tuple[str, ...]  # copied as they are
    events: bool = False  # the event store: new positions, imported tx_order


@dataclass
class Cells:
    """The platform's settings, each region's cell's, and the directory."""

    platform: Settings
    cells: dict[str, Settings]

    @classmethod
    def of(cls, settings: Settings) -> Cells:
        return cls(
            settings,
            {r: platform.cell_settings(settings, r, n) for n, r in enumerate(settings.regions)},
        )

    def cell(self, region: str) -> Settings:
        if region not in self.cells:
            raise MoveRefused(f"no such region: {region} (LEDGERDESK_REGIONS)")
        return self.cells[region]


# --- databases --------------------------------------------------------------------------------


@contextmanager
def _connection(dsn: str, autocommit: bool = False) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(dsn, connect_timeout=5)
    conn.autocommit = autocommit
    try:
        yield conn
    finally:
        conn.close()


def _exists(settings: Settings, name: str) -> bool:
    with _connection(settings.server_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def tables_of(conn: psycopg2.extensions.connection, database: str) -> list[Table]:
    """The movable tables of a database, parents before children; an unclassified table
    refuses the move (a new table must say whether it is a tenant's)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.table_name, array_agg(c.column_name::text ORDER BY c.ordinal_position),"
            " bool_or(c.column_default LIKE 'nextval(%%')"
            " FROM information_schema.columns c JOIN information_schema.tables t"
            " USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' GROUP BY 1"
        )
        found = {name: (tuple(cols), serial) for name, cols, serial in cur.fetchall()}
        cur.execute(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c"
            " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
        )
        parents: dict[str, set[str]] = {}
        for child, parent in cur.fetchall():
            parents.setdefault(child, set()).add(parent)
    platform_tables = PLATFORM_TABLES["*"] | PLATFORM_TABLES.get(database, frozenset())
    tables: dict[str, Table] = {}
    for name, (columns, serial) in sorted(found.items()):
        if name in platform_tables:
            continue
        where = CHILD_TABLES.get((database, name))
        if where is None and "tenant_id" in columns:
            where = "tenant_id = %(tenant)s"
        if where is None:
            raise MoveRefused(
                f"table {name} of {database} is neither a tenant's nor the platform's"
            )
        if serial:
            # A target-assigned key nothing copied refers to would need a map: none so far.
            raise MoveRefused(f"table {name} of {database} has a serial column: not movable yet")
        tables[name] = Table(name, where, columns)
    if "events" in found:
        columns = tuple(c for c in found["events"][0] if c not in ("position", "tx_order"))
        tables["events"] = Table("events", "tenant_id = %(tenant)s", columns, events=True)
    ordered: list[Table] = []
    placed: set[str] = set()
    while len(ordered) < len(tables):
        ready = [
            t
            for name, t in tables.items()
            if name not in placed and not (parents.get(name, set()) & (set(tables) - placed))
        ]
        if not ready:
            raise MoveRefused(f"the tables of {database} refer to each other in a cycle")
        ordered.extend(ready)
        placed.update(t.name for t in ready)
    return ordered


def _depth(conn: Any, queue: str) -> int:
    """Messages ready in ``queue`` by a passive declare (0 when it does not exist: the failed
    declare closes its channel, so each probe has a channel of its own)."""
    import amqp

    channel = conn.channel()
    try:
        _name, count, _consumers = channel.queue_declare(queue, passive=True)
    except amqp.exceptions.NotFound:
        return 0
    if channel.is_open:
        channel.close()
    return int(count)


def _as_text(columns: Sequence[str]) -> sql.Composable:
    """Columns read as their text: written back as untyped literals, every type (jsonb, arrays
    of uuid or bytea, timestamps) comes back as it was, and a row's text is the same in any
    database holding it."""
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)


def _select(table: Table) -> sql.Composed:
    columns = _as_text(table.columns)
    order = (
        sql.SQL(" ORDER BY tx_order, position") if table.events else sql.SQL("")
    )  # imported in their order: the new positions keep it
    return sql.SQL("SELECT {} FROM {} WHERE {}{}").format(
        columns, sql.Identifier(table.name), sql.SQL(table.where), order
    )


def _delete(cur: Any, tables: Sequence[Table], params: dict[str, Any]) -> None:
    """The tenant's rows of ``tables``, children first; its events by the store's named
    deletion, which ``SET LOCAL`` allows for this transaction only."""
    cur.execute("SET LOCAL ledgerdesk.removing_tenant = %s", (params["tenant"],))
    # The same transaction imports the tenant's events into a fenced target (``_copy``).
    cur.execute("SET LOCAL ledgerdesk.moving_tenant = %s", (params["tenant"],))
    for table in reversed(tables):
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE {}").format(
                sql.Identifier(table.name), sql.SQL(table.where)
            ),
            params,
        )


def _copy_table(source: Any, target: Any, table: Table, params: dict[str, Any]) -> int:
    """The table's rows of the tenant from ``source`` (a server-side cursor, ``BATCH`` rows at
    a time) into ``target``."""
    columns = list(table.columns) + (["tx_order"] if table.events else [])
    insert = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    copied = 0
    with source.cursor(name=f"move_{table.name}") as reader:
        reader.itersize = BATCH
        reader.execute(_select(table), params)
        while rows := reader.fetchmany(BATCH):
            if table.events:
                rows = [(*row, -1) for row in rows]
            psycopg2.extras.execute_values(
                target, insert.as_string(target), rows, page_size=len(rows)
            )
            copied += len(rows)
    return copied


def fingerprint(
    conn: psycopg2.extensions.connection, table: Table, params: dict[str, Any]
) -> tuple[int, str]:
    """The count and a hash of the tenant's rows of ``table``, in an order of their content
    (target-assigned columns left out), the same in any cell holding the same rows."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), ''))"
                " FROM ({}) r"
            ).format(_select(Table(table.name, table.where, table.columns))),
            params,
        )
        count, digest = cur.fetchone()
    return int(count), str(digest)


# --- the mover ----------------------------------------------------------------------------------


class Mover:
    def __init__(self, cells: Cells, tenant_id: str, out: Callable[[str], None] = print) -> None:
        try:
            self.tenant = str(uuid.UUID(tenant_id))
        except ValueError:
            raise MoveRefused("--tenant must be a tenant id") from None
        self.cells = cells
        self.out = out
        directory_module.prepare(cells.platform)
        self.directory = directory_module.Directory(cells.platform, maxconn=2)
        self._lock: psycopg2.extensions.connection | None = None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # its session's advisory lock goes with it
        self.directory.close()

    def _one_mover(self) -> None:
        """One mover at a time works on a tenant: a session lock in the directory's database,
        held until this mover ends (a killed mover's ends with its connection)."""
        if self._lock is not None:
            return  # this mover's already: a refused command followed by another
        conn = connect(self.cells.platform.database_dsn(directory_module.NAME), connect_timeout=5)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_try_advisory_lock(hashtext('tenant_move'), hashtext(%s))",
                (self.tenant,),
            )
            if not cur.fetchone()[0]:
                conn.close()
                raise MoveRefused(f"another mover is working on tenant {self.tenant}")
        self._lock = conn

    # -- commands -----------------------------------------------------------------------------

    def move(self, target: str) -> None:
        self._one_mover()
        self.cells.cell(target)
        source = self.directory.region_of(self.tenant)
        if source is None:
            raise MoveRefused(f"tenant {self.tenant} is not in the directory")
        if source == target:
            raise MoveRefused(f"tenant {self.tenant} is in {target} already")
        self.cells.cell(source)
        # Moving back: the cell left keeps the tenant's log, which the source's must extend.
        self._refuse_unless_log_extends(self.cells.cell(source), self.cells.cell(target))
        if (unfinished := self.directory.move_of(self.tenant)) and unfinished["outcome"] is None:
            raise MoveRefused(f"tenant {self.tenant} has a move unfinished: resume or rollback")
        self._ready_to_start(self.cells.cell(source))
        if not self.directory.begin_move(self.tenant, source, target):
            raise MoveRefused(f"tenant {self.tenant} has a move unfinished: resume or rollback")
        self._freeze(self.cells.cell(source))
        self.out(f"frozen: tenant {self.tenant}, {source} -> {target}")
        self._run()

    def resume(self) -> None:
        self._one_mover()
        move = self._unfinished()
        if move["step"] == ROLLING_BACK:
            raise MoveRefused(
                f"tenant {self.tenant}'s move is being rolled back: only rollback continues it"
            )
        self.out(f"resuming tenant {self.tenant}'s move at {move['step']}")
        self._run()

    def rollback(self) -> None:
        self._one_mover()
        move = self._unfinished()
        if move["step"] == ROLLING_BACK:
            self._undo(move, move["detail"] or "rolled back by the operator")
            return
        if STEPS.index(move["step"]) > STEPS.index(LAST_UNDOABLE):
            raise MoveRefused(
                f"tenant {self.tenant}'s move is past {LAST_UNDOABLE} ({move['step']}):"
                " it can only be resumed"
            )
        if self._ledger_began(move):
            # The source's log says the tenant moved out: only going forward makes it true.
            raise MoveRefused(
                f"tenant {self.tenant}'s audit log was moved out already: it can only be resumed"
            )
        self._undo(move, "rolled back by the operator")

    def _ledger_began(self, move: dict[str, Any]) -> bool:
        source = self.cells.cell(move["source"])
        moved_out = self._entry(MOVED_OUT, move["started_at"], {})
        with _connection(source.database_dsn("audit")) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT EXISTS (SELECT FROM log_entries WHERE event_id = %s)",
                (str(moved_out.event_id),),
            )
            return bool(cur.fetchone()[0])

    def status(self) -> dict[str, Any] | None:
        return self.directory.move_of(self.tenant)

    # -- steps --------------------------------------------------------------------------------

    def _unfinished(self) -> dict[str, Any]:
        move = self.directory.move_of(self.tenant)
        if move is None or move["outcome"] is not None:
            raise MoveRefused(f"tenant {self.tenant} has no unfinished move")
        return move

    def _run(self) -> None:
        while True:
            move = self._unfinished()
            step = move["step"]
            if step == "done":
                return
            following = STEPS[STEPS.index(step) + 1]
            try:
                self._do(following, move)
            except Exception as exc:  # noqa: BLE001 - any failure: undone or left to resume
                # A database's error may quote a row: only a refusal's own words are shown.
                reason = str(exc) if isinstance(exc, MoveRefused) else type(exc).__name__
                reason = f"{following} failed: {reason}"
                if STEPS.index(following) <= STEPS.index(LAST_UNDOABLE):
                    self._undo(move, reason)
                    raise MoveRefused(f"{reason}; the move was rolled back") from None
                self.directory.set_step(self.tenant, step, reason[:500])
                raise MoveRefused(f"{reason}; resume when the cause is mended") from None
            if following == "cut_over":
                self.out(f"{following}: tenant {self.tenant} is served by {move['target']}")
            else:
                self.directory.set_step(self.tenant, following)
                self.out(following)
            if following == "done":
                return

    def _do(self, step: str, move: dict[str, Any]) -> None:
        source = self.cells.cell(move["source"])
        target = self.cells.cell(move["target"])
        if step == "copied":
            # Again: a resumed freeze may not have recorded them; then the router's refresh.
            self._freeze(source)
            time.sleep(ROUTER_REFRESH)
            self._quiesce(source)
            # The router's freeze is not the only way in (the source's timers and mail
            # listener, an operator's call, a request routed before the refresh): from here
            # the stores of both cells refuse the tenant's events, so nothing the source
            # accepts is lost with its copy, and nothing reaches the target before cut-over.
            self._fence(source)
            self._fence(target)
            for database in DATABASES:
                self._copy(source, target, database)
                faults.point("tenant_move.copied_one")
        elif step == "verified":
            # Again: a move copied by a mover without fences is resumed fenced.
            self._fence(source)
            self._fence(target)
            self._verify(source, target)
        elif step == "ledger_moved":
            # Under the fence, right before the step after which nothing is undone: the
            # target still holds what the source holds (a resumed move may follow anything).
            # The same verification (a database that differs copied again, a few times, else
            # refused: the step stays at ``verified`` for resume or rollback).
            self._fence(source)
            self._fence(target)
            self._verify(source, target)
            self._move_ledger(source, target, move)
        elif step == "cut_over":
            # The new region first: a cut-over recorded in the directory always has it, so the
            # first request the target serves already sees it (``/v1/tenant``, new events'
            # ``metadata.region``, billing's tax); a failure here leaves the step before
            # ``cut_over`` and ``resume`` records it again (once: it is idempotent).
            self._unfence(target)
            self._record_region(target, move)
            self.directory.cut_over(self.tenant, move["target"])
        elif step == "source_destroyed":
            # Again, a no-op when recorded: a move an older mover cut over without recording
            # the region gets it on resume.
            self._record_region(target, move)
            # The subjects as the target holds them: a resumed destruction may have removed
            # the source's accounts rows already.
            subjects = self._subjects_in(target)
            # The target takes writes since the cut-over, so it can no longer equal the source;
            # what it must still hold is all the source holds of the tenant's history.
            missing = [
                database
                for database in DATABASES
                if _exists(source, source.database_name(database))
                and self._history_missing(source, target, database)
            ]
            if missing:
                raise MoveRefused(
                    f"the {move['target']} cell lacks tenant {self.tenant}'s history of"
                    f" {', '.join(missing)}: the source's copy is kept"
                )
            # The named deletion needs the fence (kept since the copy; a move an older mover
            # cut over had none).
            self._fence(source)
            for database in DATABASES:
                self._remove(source, database, subjects)
            self._unfence(source)
        # "done": nothing more to do than say so.

    def _record_region(self, target: Settings, move: dict[str, Any]) -> None:
        """The tenant's region is the target's from now on, as the target's accounts records
        it, in-process with its own command (its relay publishes the event to billing there)."""
        if accounts_moves.record_region(target, self.tenant, move["target"]):
            self.out(f"region: tenant {self.tenant} is hosted in {move['target']}")

    def _freeze(self, source: Settings) -> None:
        """The tenant's keys as the router will know them (the window began with the move's
        record; keys issued since are in accounts too, read now). A revoked key is left to its
        cell, which answers it 401 as before, not the window's 503."""
        with _connection(source.database_dsn("accounts")) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT k.key_hash FROM api_keys k JOIN agents a ON a.id = k.agent_id"
                " WHERE a.tenant_id = %s AND k.key_hash IS NOT NULL AND k.revoked_at IS NULL",
                (self.tenant,),
            )
            hashes = [row[0] for row in cur.fetchall()]
        self.directory.set_moved_keys(self.tenant, hashes)

    def _quiesce(self, source: Settings, timeout: float = QUIESCE_TIMEOUT) -> None:
        """Wait until the source cell has sent the tenant's mail and webhook deliveries, published
        everything (its outboxes empty) and its consumers and RPC servers have taken it (their
        queues empty): what the tenant did before the freeze is in the source's rows before
        they are copied."""
        deadline = time.monotonic() + timeout
        while True:
            # In the order things flow (a delivery sent, its event published, consumed): what
            # moves on between two looks is looked at after.
            waiting = (
                self._pending_deliveries(source) + self._outboxes(source) + self._queued(source)
            )
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise MoveRefused(
                    f"the source cell did not go quiet within {timeout:.0f}s"
                    f" ({', '.join(waiting[:3])} still waiting)"
                )
            time.sleep(0.5)

    def _outboxes(self, cell: Settings) -> list[str]:
        waiting = []
        for database in DATABASES:
            name = cell.database_name(database)
            if not _exists(cell, name):
                continue
            with _connection(cell.database_dsn(database)) as conn, conn.cursor() as cur:
                cur.execute("SELECT to_regclass('outbox') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute("SELECT EXISTS (SELECT FROM outbox)")
                    if cur.fetchone()[0]:
                        waiting.append(f"{database} outbox")
        return waiting

    def _queued(self, cell: Settings) -> list[str]:
        """The source vhost's queues holding messages, by passive declares (the broker's own
        count now; the management API's is sampled and may be seconds old): every consumer
        queue and every RPC queue (a request queued for the source would write there)."""
        from kombu import Connection

        waiting = []
        with Connection(cell.amqp_uri, connect_timeout=5, ssl=cell.amqp_ssl()) as conn:
            conn.connect()
            for queue in platform.dead_letter_queues():
                if depth := _depth(conn.connection, queue):
                    waiting.append(f"queue {queue} ({depth})")
        return waiting

    def _ready_to_start(self, source: Settings) -> None:
        """Refuse to start while the source holds a dead letter: replayed there after the move
        it would recreate the tenant's data in the source (of any tenant: a dead letter's tenant
        is not known without opening it)."""
        dead = deadletters.dead_letter_depths(
            source.amqp_uri, platform.dead_letter_queues(), ssl=source.amqp_ssl()
        )
        if held := sorted(q for q, n in dead.items() if n):
            raise MoveRefused(
                f"the {self._region_of(source)} cell's dead-letter queues hold messages"
                f" ({', '.join(held[:3])}): replay or purge them first"
                " (python -m services.platform dead-letters)"
            )

    def _pending_deliveries(self, cell: Settings) -> list[str]:
        """The tenant's mail and webhook deliveries still owed by ``cell``: sending one records
        it there (``mail_sent``), so the move waits for them."""
        pending = []
        for database, table in (
            ("accounts", "mail_outbox"),
            ("tickets", "mail_outbox"),
            ("gateway", "webhook_deliveries"),
        ):
            if not _exists(cell, cell.database_name(database)):
                continue
            with _connection(cell.database_dsn(database)) as conn, conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
                if not cur.fetchone()[0]:
                    continue
                cur.execute(
                    sql.SQL(
                        "SELECT EXISTS (SELECT FROM {} WHERE tenant_id = %s AND status = 'pending')"
                    ).format(sql.Identifier(table)),
                    (self.tenant,),
                )
                if cur.fetchone()[0]:
                    pending.append(f"{database} {table}")
        return pending

    def _region_of(self, cell: Settings) -> str:
        return next((r for r, c in self.cells.cells.items() if c is cell), "source")

    def _fence(self, cell: Settings) -> None:
        """The tenant's fence in every store database of ``cell`` (store migration 0005): its
        events are refused there until ``_unfence``."""
        self._each_store(
            cell,
            "INSERT INTO tenant_fences (tenant_id) VALUES (%s) ON CONFLICT (tenant_id) DO NOTHING",
        )

    def _unfence(self, cell: Settings) -> None:
        self._each_store(cell, "DELETE FROM tenant_fences WHERE tenant_id = %s")

    def _each_store(self, cell: Settings, statement: str) -> None:
        for database in DATABASES:
            if not _exists(cell, cell.database_name(database)):
                continue
            with _connection(cell.database_dsn(database)) as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT to_regclass('tenant_fences') IS NOT NULL")
                    if cur.fetchone()[0]:
                        cur.execute(statement, (self.tenant,))
                conn.commit()

    def fenced(self, cell: Settings) -> list[str]:
        """The databases of ``cell`` holding the tenant's fence."""
        found = []
        for database in DATABASES:
            if not _exists(cell, cell.database_name(database)):
                continue
            with _connection(cell.database_dsn(database)) as conn, conn.cursor() as cur:
                cur.execute("SELECT to_regclass('tenant_fences') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute(
                        "SELECT EXISTS (SELECT FROM tenant_fences WHERE tenant_id = %s)",
                        (self.tenant,),
                    )
                    if cur.fetchone()[0]:
                        found.append(database)
        return found

    def _history_missing(self, source: Settings, target: Settings, database: str) -> bool:
        """Whether an event of the tenant's in ``source``'s ``database``, or its tenant key,
        is not in the target's (events are immutable: the target's copy holds every one of
        them, whatever it appended since)."""
        with _connection(source.database_dsn(database)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT array_agg(event_id::text) FROM events WHERE tenant_id = %s",
                (self.tenant,),
            )
            ids = cur.fetchone()[0] or []
        if not _exists(target, target.database_name(database)):
            return bool(ids)
        with _connection(target.database_dsn(database)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM events WHERE tenant_id = %s AND event_id = ANY(%s::uuid[])",
                (self.tenant, ids),
            )
            if cur.fetchone()[0] != len(ids):
                return True
        if not _exists(source, source.database_name(database, "keys")):
            return False
        query = "SELECT EXISTS (SELECT FROM tenant_keys WHERE tenant_id = %s)"
        with _connection(source.database_dsn(database, "keys")) as conn, conn.cursor() as cur:
            cur.execute(query, (self.tenant,))
            if not cur.fetchone()[0]:
                return False
        with _connection(target.database_dsn(database, "keys")) as conn, conn.cursor() as cur:
            cur.execute(query, (self.tenant,))
            return not cur.fetchone()[0]

    def _subjects_in(self, cell: Settings) -> list[str]:
        with _connection(cell.database_dsn("accounts")) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM agents WHERE tenant_id = %(t)s"
                " UNION SELECT id FROM contacts WHERE tenant_id = %(t)s",
                {"t": self.tenant},
            )
            return [str(row[0]) for row in cur.fetchall()]

    def _params(self, source: Settings) -> dict[str, Any]:
        return {"tenant": self.tenant, "subjects": self._subjects_in(source)}

    def _copy(self, source: Settings, target: Settings, database: str) -> None:
        """The tenant's rows of one database, and its keystore's, into the target: each in one
        target transaction that first removes what an interrupted copy left there."""
        if not _exists(source, source.database_name(database)):
            return
        params = self._params(source)
        self._copy_keys(source, target, database)
        with (
            _connection(source.database_dsn(database)) as src,
            _connection(target.database_dsn(database)) as dst,
        ):
            src.set_session(readonly=True, isolation_level="REPEATABLE READ")
            tables = tables_of(src, database)
            with dst.cursor() as cur:
                _delete(cur, tables, params)
                for table in tables:
                    _copy_table(src, cur, table, params)
            dst.commit()
            src.rollback()

    def _copy_keys(self, source: Settings, target: Settings, database: str) -> None:
        if not _exists(source, source.database_name(database, "keys")):
            return
        with (
            _connection(source.database_dsn(database, "keys")) as src,
            _connection(target.database_dsn(database, "keys")) as dst,
        ):
            with src.cursor() as cur:
                cur.execute(
                    "SELECT master_key_id, wrapped_key, created_at, shredded_at FROM tenant_keys"
                    " WHERE tenant_id = %s",
                    (self.tenant,),
                )
                tenant_row = cur.fetchone()
                cur.execute(
                    "SELECT subject_id, wrapped_key, created_at, shredded_at, parent_id"
                    " FROM subject_keys WHERE tenant_id = %s"
                    " ORDER BY parent_id IS NOT NULL, subject_id",
                    (self.tenant,),
                )
                subjects = cur.fetchall()
            src.rollback()
            with dst.cursor() as cur:
                _delete_keys(cur, self.tenant)
                if tenant_row is not None:
                    kid, wrapped, created, shredded = tenant_row
                    if wrapped is not None:
                        # Carried, re-wrapped: the same key under the target's master key.
                        key = unwrap_key(
                            source.master_keys[kid],
                            bytes(wrapped),
                            tenant_key_aad(uuid.UUID(self.tenant)),
                        )
                        kid = target.current_master_key_id
                        wrapped = wrap_key(
                            target.master_keys[kid], key, tenant_key_aad(uuid.UUID(self.tenant))
                        )
                    cur.execute(
                        "INSERT INTO tenant_keys (tenant_id, master_key_id, wrapped_key,"
                        " created_at, shredded_at) VALUES (%s, %s, %s, %s, %s)",
                        (self.tenant, kid, wrapped, created, shredded),
                    )
                if subjects:
                    psycopg2.extras.execute_values(
                        cur,
                        "INSERT INTO subject_keys (subject_id, wrapped_key, created_at,"
                        " shredded_at, parent_id, tenant_id) VALUES %s",
                        [(*row, self.tenant) for row in subjects],
                        page_size=BATCH,
                    )
            dst.commit()

    def _verify(self, source: Settings, target: Settings) -> None:
        for database in DATABASES:
            if not _exists(source, source.database_name(database)):
                continue
            for attempt in range(VERIFY_RETRIES + 1):
                differing = self._differing(source, target, database)
                if not differing:
                    break
                if attempt == VERIFY_RETRIES:
                    raise MoveRefused(
                        f"{database}: {', '.join(differing)} differ between the cells after"
                        f" {VERIFY_RETRIES} copies"
                    )
                self.out(f"verify: {database} ({', '.join(differing)}) changed: copying again")
                self._copy(source, target, database)

    def _differing(self, source: Settings, target: Settings, database: str) -> list[str]:
        params = self._params(source)
        with (
            _connection(source.database_dsn(database)) as src,
            _connection(target.database_dsn(database)) as dst,
        ):
            differing = [
                table.name
                for table in tables_of(src, database)
                if fingerprint(src, table, params) != fingerprint(dst, table, params)
            ]
        if _exists(source, source.database_name(database, "keys")):
            keys = Table("subject_keys", "tenant_id = %(tenant)s", _SUBJECT_KEY_COLUMNS)
            tenant = Table("tenant_keys", "tenant_id = %(tenant)s", _TENANT_KEY_COLUMNS)
            with (
                _connection(source.database_dsn(database, "keys")) as src,
                _connection(target.database_dsn(database, "keys")) as dst,
            ):
                for table in (tenant, keys):
                    if fingerprint(src, table, params) != fingerprint(dst, table, params):
                        differing.append(f"keys.{table.name}")
        return differing

    def _refuse_unless_log_extends(self, source: Settings, target: Settings) -> None:
        """Before a move starts: nothing is frozen for a move whose ledger step would refuse."""
        if not _exists(target, target.database_name("audit")):
            return
        with (
            _connection(source.database_dsn("audit")) as src,
            _connection(target.database_dsn("audit")) as dst,
        ):
            with src.cursor() as read, dst.cursor() as held:
                self._held_log_size(read, held, self._region_of(source), self._region_of(target))
            src.rollback()
            dst.rollback()

    def _held_log_size(self, read: Any, held: Any, source: str, target: str) -> int:
        """The size of the log of the tenant's that the target keeps from a move out of it
        (0: none), its head locked on ``held``'s transaction; refused unless the source's log
        extends it: the source's entry at that size has the target's head hash, which chains
        every entry before it, so the target's log is the source's first entries."""
        held.execute(
            "SELECT size, head_hash FROM log_heads WHERE tenant_id = %s FOR UPDATE",
            (self.tenant,),
        )
        row = held.fetchone()
        if row is None or row[0] == 0:
            return 0
        size, head = int(row[0]), bytes(row[1])
        query = "SELECT hash FROM log_entries WHERE tenant_id = %s AND seq = %s"
        held.execute(query, (self.tenant, size))
        own = held.fetchone()
        read.execute(query, (self.tenant, size))
        theirs = read.fetchone()
        if (
            own is None
            or bytes(own[0]) != head
            or theirs is None
            or bytes(theirs[0]) != head
            # The head's hash chains the entries' hashes, not what is stored beside them: an
            # entry or node changed in place (or one cell's stored differently) is found here.
            or any(
                self._prefix_digest(held, table, size) != self._prefix_digest(read, table, size)
                for table in _PREFIX
            )
        ):
            raise MoveRefused(
                f"the {target} cell keeps an audit log of tenant {self.tenant} ({size} entries)"
                f" that the {source} cell's log does not extend: the move is refused"
            )
        return size

    def _prefix_digest(self, cur: Any, table: str, size: int) -> tuple[int, str | None]:
        """The count and a hash of the text of the rows of ``table`` within the tenant's log's
        first ``size`` entries."""
        cur.execute(
            sql.SQL(
                "SELECT count(*), md5(string_agg(ROW({})::text, ';' ORDER BY {}))"
                " FROM {} WHERE tenant_id = %s AND {} <= %s"
            ).format(
                _as_text(_LOG_COLUMNS[table]),
                sql.SQL(_PREFIX[table][1]),
                sql.Identifier(table),
                sql.SQL(_PREFIX[table][0]),
            ),
            (self.tenant, size),
        )
        count, digest = cur.fetchone()
        return int(count), digest

    def _move_ledger(self, source: Settings, target: Settings, move: dict[str, Any]) -> None:
        """``moved_out`` appended in the source (its event id derived from the move, so an
        append resumed finds it in), the log copied to the target and ``moved_in`` appended
        there, in one target transaction (a target holding ``moved_in`` has the copy whole).

        A target the tenant moved out of before keeps its log up to that ``moved_out``: only
        the source's entries after it are appended, with the tree nodes they complete, and the
        head becomes the source's (every proof either cell gave still verifies)."""
        started = move["started_at"]
        regions = {"tenant_id": self.tenant, "from": move["source"], "to": move["target"]}
        out = self._entry(MOVED_OUT, started, regions)
        moved_in = self._entry(MOVED_IN, started, regions)
        with (
            _connection(source.database_dsn("audit")) as src,
            _connection(target.database_dsn("audit")) as dst,
        ):
            with dst.cursor() as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT FROM log_entries WHERE event_id = %s)",
                    (str(moved_in.event_id),),
                )
                if cur.fetchone()[0]:
                    # A resumed step whose copy was committed: done.
                    return
            # Checked before ``moved_out`` too: a refused step leaves the source's log as it was.
            with src.cursor() as read, dst.cursor() as held:
                self._held_log_size(read, held, move["source"], move["target"])
            dst.rollback()
            with src.cursor() as cur:
                _logs().append(cur, [(out, None, chain.canonical(out.to_dict()))])
            src.commit()
            with dst.cursor() as cur:
                with src.cursor() as read:
                    # One snapshot of the source's log: entries, nodes and head agree.
                    read.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    held = self._held_log_size(read, cur, move["source"], move["target"])
                for table, after, order in (
                    ("log_entries", "seq > %s", "seq"),
                    # The nodes completed by an entry past the target's: (idx + 1) << level is
                    # the seq of the last leaf under a node.
                    ("log_nodes", "((idx + 1) << level) > %s", "level, idx"),
                ):
                    names = _LOG_COLUMNS[table]
                    with src.cursor() as read:
                        read.execute(
                            sql.SQL(
                                "SELECT {} FROM {} WHERE tenant_id = %s AND {} ORDER BY {}"
                            ).format(
                                _as_text(names),
                                sql.Identifier(table),
                                sql.SQL(after),
                                sql.SQL(order),
                            ),
                            (self.tenant, held),
                        )
                        rows = read.fetchall()
                    if rows:
                        psycopg2.extras.execute_values(
                            cur,
                            sql.SQL("INSERT INTO {} ({}) VALUES %s")
                            .format(
                                sql.Identifier(table),
                                sql.SQL(", ").join(map(sql.Identifier, names)),
                            )
                            .as_string(cur),
                            rows,
                            page_size=BATCH,
                        )
                with src.cursor() as read:
                    read.execute(
                        sql.SQL("SELECT {} FROM log_heads WHERE tenant_id = %s").format(
                            _as_text(_LOG_COLUMNS["log_heads"])
                        ),
                        (self.tenant,),
                    )
                    head = read.fetchone()
                cur.execute(
                    "INSERT INTO log_heads (tenant_id, size, head_hash, compact_range)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
                    " size = EXCLUDED.size, head_hash = EXCLUDED.head_hash,"
                    " compact_range = EXCLUDED.compact_range",
                    head,
                )
                _logs().append(cur, [(moved_in, None, chain.canonical(moved_in.to_dict()))])
            dst.commit()
            src.rollback()

    def _entry(self, kind: str, started: dt.datetime, payload: dict[str, str]) -> Any:
        tenant = uuid.UUID(self.tenant)
        return new_envelope(
            event_id=uuid.uuid5(_NAMESPACE, f"{self.tenant}/{started.isoformat()}/{kind}"),
            type=kind,
            schema_version=1,
            source="platform",
            stream_id=f"tenant_move-{self.tenant}",
            stream_version=1 if kind == MOVED_OUT else 2,
            tenant_id=tenant,
            actor_id=None,
            payload=payload,
        )

    def _remove(self, cell: Settings, database: str, subjects: list[str]) -> None:
        """Every row of the tenant's that a move copies, from one database of ``cell``, and its
        keystore rows (shredded: no copy of its keys is left there)."""
        if not _exists(cell, cell.database_name(database)):
            return
        params = {"tenant": self.tenant, "subjects": subjects}
        with _connection(cell.database_dsn(database)) as conn:
            tables = tables_of(conn, database)
            with conn.cursor() as cur:
                _delete(cur, tables, params)
            conn.commit()
        if _exists(cell, cell.database_name(database, "keys")):
            with _connection(cell.database_dsn(database, "keys")) as conn:
                with conn.cursor() as cur:
                    _delete_keys(cur, self.tenant)
                conn.commit()

    def _undo(self, move: dict[str, Any], reason: str) -> None:
        """Before the ledger moved: the target's copy deleted, the tenant served by the source
        again."""
        target = self.cells.cell(move["target"])
        source = self.cells.cell(move["source"])
        # Recorded before anything is deleted: killed midway, only ``rollback`` goes on.
        self.directory.set_step(self.tenant, ROLLING_BACK, reason[:500])
        subjects = self._subjects_in(source)
        # The named deletion needs the fence (there since the copy, unless killed before it).
        self._fence(target)
        for database in DATABASES:
            self._remove(target, database, subjects)
            faults.point("tenant_move.undone_one")
        self._unfence(target)
        self._unfence(source)
        self.directory.forget_moved_keys(self.tenant)
        self.directory.set_step(self.tenant, "rolled_back", reason[:500])
        self.out(f"rolled_back: tenant {self.tenant} is served by {move['source']}")


# The tenant's audit log, copied byte for byte (text of each column, read back as it was).
_LOG_COLUMNS: dict[str, tuple[str, ...]] = {
    "log_entries": (
        "tenant_id",
        "seq",
        "event_id",
        "type",
        "service",
        "actor_id",
        "subject_ids",
        "at",
        "access_key",
        "recorded_at",
        "content",
        "prev_hash",
        "hash",
        "leaf_hash",
    ),
    "log_nodes": ("tenant_id", "level", "idx", "hash"),
    "log_heads": ("tenant_id", "size", "head_hash", "compact_range"),
}
# Per log table: the seq of the last entry a row needs (a node: of the last leaf under it), and
# the rows' order.
_PREFIX: dict[str, tuple[str, str]] = {
    "log_entries": ("seq", "seq"),
    "log_nodes": ("((idx + 1) << level)", "level, idx"),
}
_SUBJECT_KEY_COLUMNS = (
    "subject_id",
    "tenant_id",
    "wrapped_key",
    "created_at",
    "shredded_at",
    "parent_id",
)
# The tenant key's wrapping differs between cells by design; its key material is compared by
# the copy itself (it unwrapped it).
_TENANT_KEY_COLUMNS = ("tenant_id", "created_at", "shredded_at")


def _delete_keys(cur: Any, tenant: str) -> None:
    # Children before parents (subject_keys refers to its parent and to tenant_keys).
    cur.execute(
        "DELETE FROM subject_keys WHERE tenant_id = %s AND parent_id IS NOT NULL", (tenant,)
    )
    cur.execute("DELETE FROM subject_keys WHERE tenant_id = %s", (tenant,))
    cur.execute("DELETE FROM tenant_keys WHERE tenant_id = %s", (tenant,))


class _LogDatabase:
    """What ``TenantLogs.append`` uses of a ledger: nothing but the cursor it is given."""

    db = None


def _logs() -> TenantLogs:
    return TenantLogs(cast("Ledger", _LogDatabase()))


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.tenant_move",
        description="Move a tenant from its region cell to another (docs/operations.md).",
        epilog=cli.EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("move", "freeze, copy, verify, move the ledger, cut over, destroy the source's copy"),
        ("resume", "go on with an interrupted move from its recorded step"),
        ("rollback", "undo a move not yet past verified: the target's copy deleted"),
        ("status", "the move's recorded step"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--tenant", required=True, metavar="ID")
        if name == "move":
            command.add_argument("--to", required=True, metavar="REGION")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return cli.guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        mover = Mover(Cells.of(settings), args.tenant)
    except MoveRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return cli.Exit.FAILED
    except DatabaseUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return cli.Exit.UNREACHABLE
    try:
        if args.command == "status":
            move = mover.status()
            if move is None:
                print(f"tenant {mover.tenant}: no move recorded")
            else:
                print(
                    f"tenant {mover.tenant}: {move['source']} -> {move['target']},"
                    f" step {move['step']}" + (f", {move['detail']}" if move["detail"] else "")
                )
            return cli.Exit.OK
        if args.command == "move":
            mover.move(args.to)
        elif args.command == "resume":
            mover.resume()
        else:
            mover.rollback()
        return cli.Exit.OK
    except MoveRefused as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return cli.Exit.FAILED
    except DatabaseUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return cli.Exit.UNREACHABLE
    finally:
        mover.close()


if __name__ == "__main__":
    sys.exit(main())
