"""The data map holds against what exists: every column of every database after its migrations,
every queue the platform declares, every field of every event, every log field; and
docs/data-map.md is its current rendering. Each check is also shown failing on a planted copy."""

from __future__ import annotations

import json
import logging
import sys
import urllib.parse
from pathlib import Path

import pytest
from marshmallow import Schema, fields
from opentelemetry.sdk.trace import TracerProvider

from gateway.idempotency import MIGRATIONS as GATEWAY_MIGRATIONS
from kernel import datamap, migrate
from kernel.config import Settings
from kernel.datamap import End, Held, ServiceMap, Table, When
from kernel.envelope import EventRegistry, EventType
from kernel.runner import JsonLines
from kernel.stores import prepare_databases
from kernel.testing import Infrastructure
from services import datamap as platform_map
from services import platform

MAPS = platform_map.service_maps()


def _migrations(name: str) -> Path | None:
    return GATEWAY_MIGRATIONS if name == platform_map.GATEWAY else platform.migrations_of(name)


@pytest.fixture(scope="module")
def prepared(module_world: Settings) -> Settings:
    """Every service's databases migrated, and the broker topology declared, in one world."""
    for name in MAPS:
        prepare_databases(module_world, name, _migrations(name))
    platform.prepare(module_world)
    return module_world


@pytest.mark.parametrize("purpose", ["", "keys"])
@pytest.mark.parametrize("name", list(MAPS))
def test_every_live_column_is_on_the_map(prepared: Settings, name: str, purpose: str) -> None:
    live = datamap.live_columns(prepared.database_dsn(name, purpose))
    assert live, "the database has tables"
    assert datamap.undeclared_columns(MAPS[name].database_tables(purpose), live) == []


def test_a_column_added_by_a_migration_and_not_declared_fails_the_map(
    prepared: Settings, tmp_path: Path
) -> None:
    (tmp_path / "0001_nickname.sql").write_text("ALTER TABLE contacts ADD COLUMN nickname text;")
    dsn = prepared.database_dsn("accounts")
    migrate.migrate(dsn, [("throwaway", tmp_path)])
    try:
        live = datamap.live_columns(dsn)
        assert datamap.undeclared_columns(MAPS["accounts"].database_tables(), live) == [
            "contacts.nickname"
        ]
    finally:
        from kernel.db import connect

        conn = connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER TABLE contacts DROP COLUMN nickname")
            cur.execute("DELETE FROM schema_migrations WHERE component = 'throwaway'")
        conn.close()


def test_a_declared_column_that_does_not_exist_fails_the_map() -> None:
    table = Table("contacts", "x", (datamap.pseudonym("id"), datamap.operational("gone")))
    assert datamap.undeclared_columns([table], {"contacts": ["id"]}) == [
        "contacts.gone (declared, but no such column)"
    ]


@pytest.mark.parametrize("name", list(MAPS))
def test_every_personal_column_has_an_end_that_names_it(name: str) -> None:
    service_map = MAPS[name]
    tables = service_map.database_tables() + service_map.database_tables("keys")
    assert datamap.unended(tables + service_map.objects) == []


def test_personal_plaintext_that_nothing_ends_fails_the_map() -> None:
    def nickname(*ends: End) -> Table:
        return Table("contacts", "x", (datamap.personal("nickname", Held.PLAINTEXT, *ends),))

    assert datamap.unended([nickname()]) == ["contacts.nickname: personal data that nothing ends"]
    assert datamap.unended(
        [nickname(End(When.ERASURE, "scrubbed", "services.accounts.privacy"))]
    ) == ["contacts.nickname: ends by erasure of the subject but names no function that does"]
    assert datamap.unended(
        [nickname(End(When.ERASURE, "scrubbed", "services.accounts.privacy:no_such_function"))]
    ) == ["contacts.nickname: services.accounts.privacy:no_such_function does not exist"]
    # A function that exists but never touches the table: lifting a restriction.
    assert datamap.unended(
        [nickname(End(When.ERASURE, "scrubbed", "services.accounts.privacy:lift_restriction"))]
    ) == [
        "contacts.nickname: services.accounts.privacy:lift_restriction never names table contacts"
    ]
    assert (
        datamap.unended(
            [nickname(End(When.ERASURE, "scrubbed", "services.accounts.privacy:erase_subject"))]
        )
        == []
    )


@pytest.mark.parametrize("name", list(MAPS))
def test_every_event_field_is_encrypted_classified_or_declared(name: str) -> None:
    assert datamap.undeclared_event_fields(MAPS[name]) == []


def test_a_free_text_event_field_in_plaintext_fails_the_map() -> None:
    class NoteTakenV1(Schema):
        note_id = fields.UUID(required=True)
        text = fields.String(required=True)

    note = EventType("note_taken", {1: NoteTakenV1})
    undeclared = ServiceMap("x", "x", registries=(EventRegistry(note),))
    declared_personal = ServiceMap(
        "x",
        "x",
        registries=(EventRegistry(note),),
        event_fields={"note_taken": {"text": datamap.personal("text", Held.PLAINTEXT)}},
    )
    assert datamap.undeclared_event_fields(undeclared) == [
        "note_taken v1.text: free text that is neither encrypted nor declared"
    ]
    assert datamap.undeclared_event_fields(declared_personal) == [
        "note_taken v1.text: personal data in plaintext in an append-only store"
    ]
    encrypted = EventType(
        "note_taken", {1: NoteTakenV1}, personal_fields=("text",), subject_field="note_id"
    )
    assert (
        datamap.undeclared_event_fields(
            ServiceMap("x", "x", registries=(EventRegistry(encrypted),))
        )
        == []
    )


def _queues(infrastructure: Infrastructure, settings: Settings) -> list[str]:
    vhost = urllib.parse.quote(settings.database_prefix, safe="")
    found = infrastructure.management("GET", f"/api/queues/{vhost}?columns=name").json()
    return [q["name"] for q in found]


def test_every_declared_queue_is_on_the_map(
    prepared: Settings, infrastructure: Infrastructure
) -> None:
    live = _queues(infrastructure, prepared)
    assert "audit.ledger" in live and "rpc-accounts.dead" in live
    queues = platform_map.declared_queues()
    assert datamap.undeclared_queues(queues, live, MAPS) == []
    # Shown failing: a queue nobody declared is found.
    without = [q for q in queues if q.pattern != "audit.ledger.dead"]
    assert datamap.undeclared_queues(without, live, MAPS) == ["audit.ledger.dead"]


def test_log_lines_hold_only_declared_fields() -> None:
    formatter = JsonLines("accounts")
    declared = {f.name for f in datamap.LOG_FIELDS}
    with TracerProvider().get_tracer("test").start_as_current_span("a span"):
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord(
                "kernel.x", logging.ERROR, __file__, 1, "failed %s", ("id",), sys.exc_info()
            )
        line = json.loads(formatter.format(record))
    assert set(line) <= declared
    assert {"trace_id", "error", "frames"} <= set(line), "the line had every optional field"


def test_the_rendered_map_is_current() -> None:
    current = platform_map.DOCUMENT.read_text() if platform_map.DOCUMENT.exists() else ""
    assert current == platform_map.render(), "run: python -m services.datamap --write"
