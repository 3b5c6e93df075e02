"""Projections in the append's transaction, replay from the store, and shredded subjects."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from kernel import eventstore
from kernel.aggregate import RecordedEvent
from kernel.crypto.fields import is_erased
from kernel.envelope import Envelope
from kernel.migrate import MigrationError, discover, migrate
from kernel.projections import Projection
from tests.support.source import SOURCE, source_store


class PeopleProjection(Projection):
    name = "people"
    tables = ("people",)
    event_types = frozenset({"person_named"})

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        p = event.payload
        cur.execute(
            "INSERT INTO people (id, name, erased) VALUES (%s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, erased = EXCLUDED.erased",
            (p["person_id"], str(p["name"]), is_erased(p["name"])),
        )


@pytest.fixture
def people(world):
    projection = PeopleProjection()
    store = source_store(world, projections=[projection])
    with store.db.transaction() as cur:
        cur.execute("CREATE TABLE people (id uuid PRIMARY KEY, name text NOT NULL, erased boolean)")
    return store


def name(person: uuid.UUID, text: str) -> RecordedEvent:
    return RecordedEvent(
        "person_named", {"person_id": str(person), "name": text, "email": f"{text}@example.com"}
    )


def read_people(store) -> dict[str, tuple[str, bool]]:
    with store.db.transaction() as cur:
        cur.execute("SELECT id, name, erased FROM people")
        return {str(i): (n, e) for i, n, e in cur.fetchall()}


def test_projection_updates_in_the_appending_transaction(people):
    person, tenant = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(RuntimeError), people.unit_of_work() as uow:
        uow.append(f"person-{person}", 0, [name(person, "ada")], tenant_id=tenant)
        raise RuntimeError("the command fails after the append")
    assert read_people(people) == {}  # the read model rolled back with the events
    with people.db.transaction() as cur:
        assert eventstore.head_position(cur) == 0
    with people.unit_of_work() as uow:
        uow.append(f"person-{person}", 0, [name(person, "ada")], tenant_id=tenant)
    assert read_people(people) == {str(person): ("ada", False)}


def test_personal_fields_are_stored_encrypted(people):
    person, tenant = uuid.uuid4(), uuid.uuid4()
    with people.unit_of_work() as uow:
        uow.append(f"person-{person}", 0, [name(person, "grace")], tenant_id=tenant)
    with people.db.transaction() as cur:
        cur.execute("SELECT payload::text FROM events")
        raw = cur.fetchone()[0]
    assert "grace" not in raw and "$enc" in raw
    with people.unit_of_work() as uow:
        [event] = uow.load(f"person-{person}")
    assert event.payload["name"] == "grace" and event.payload["email"] == "grace@example.com"


def test_shredding_one_subject_erases_it_and_replay_still_completes(people):
    tenant = uuid.uuid4()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for person, text in ((alice, "alice"), (bob, "bob")):
        with people.unit_of_work() as uow:
            uow.append(f"person-{person}", 0, [name(person, text)], tenant_id=tenant)
    with people.unit_of_work() as uow:
        uow.append(f"person-{alice}", 1, [name(alice, "alice2")], tenant_id=tenant)

    assert people.cipher.keystore.shred_subject(alice)

    with people.unit_of_work() as uow:
        erased = uow.load(f"person-{alice}")
        kept = uow.load(f"person-{bob}")
    assert all(is_erased(e.payload["name"]) and is_erased(e.payload["email"]) for e in erased)
    assert kept[0].payload["name"] == "bob"

    applied = people.rebuild("people", progress=False)
    assert applied == 3
    assert read_people(people) == {str(alice): ("[erased]", True), str(bob): ("bob", False)}
    with people.db.transaction() as cur:
        cur.execute("SELECT position FROM projection_state WHERE name = 'people'")
        assert cur.fetchone()[0] == eventstore.head_position(cur)


def test_a_rebuild_replays_imported_history_live_readers_never_read(people):
    """A tenant moved in from another cell (services.tenant_move) brings its events with
    ``tx_order`` -1 and its read models with them: a live reader, from START, never applies
    them again; a rebuild replays them with the rest."""
    moved, local, tenant = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with people.unit_of_work() as uow:
        uow.append(f"person-{moved}", 0, [name(moved, "mover")], tenant_id=tenant)
    with people.db.transaction() as cur:
        # As the mover imports it: the same row under a new position, tx_order -1.
        cur.execute("INSERT INTO tenant_fences (tenant_id) VALUES (%s)", (tenant,))
        cur.execute("SET LOCAL ledgerdesk.removing_tenant = %s", (str(tenant),))
        cur.execute("SET LOCAL ledgerdesk.moving_tenant = %s", (str(tenant),))
        cur.execute(
            "CREATE TEMP TABLE carried ON COMMIT DROP AS SELECT * FROM events WHERE tenant_id = %s",
            (tenant,),
        )
        cur.execute("DELETE FROM events WHERE tenant_id = %s", (tenant,))
        cur.execute("ALTER TABLE carried DROP COLUMN position")
        cur.execute("UPDATE carried SET tx_order = -1")
        cur.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, type, source,"
            " schema_version, tenant_id, occurred_at, actor_id, trace, payload, metadata,"
            " tx_order) SELECT event_id, stream_id, stream_version, type, source,"
            " schema_version, tenant_id, occurred_at, actor_id, trace, payload, metadata,"
            " tx_order FROM carried"
        )
        cur.execute("DELETE FROM tenant_fences WHERE tenant_id = %s", (tenant,))
    with people.unit_of_work() as uow:
        uow.append(f"person-{local}", 0, [name(local, "local")], tenant_id=uuid.uuid4())
    with people.db.transaction() as cur:
        live = [e.stream_id for _, e in eventstore.iter_all(cur, eventstore.START, settled=False)]
    assert live == [f"person-{local}"], "a live reader starts after the imported history"
    assert people.rebuild("people", progress=False) == 2
    assert read_people(people) == {str(moved): ("mover", False), str(local): ("local", False)}


def test_migrations_apply_once_and_refuse_edited_history(world, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    dsn = world.database_dsn(SOURCE)
    source_store(world)  # creates and migrates the database
    assert migrate(dsn, [("extra", folder)]) == ["extra/0001_a.sql"]
    assert migrate(dsn, [("extra", folder)]) == []
    (folder / "0002_b.sql").write_text("CREATE TABLE b (x int);")
    assert migrate(dsn, [("extra", folder)]) == ["extra/0002_b.sql"]
    (folder / "0001_a.sql").write_text("CREATE TABLE a (x int, y int);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(dsn, [("extra", folder)])
    assert [m.name for m in discover("extra", folder)] == ["0001_a.sql", "0002_b.sql"]


def test_a_failing_migration_leaves_nothing_half_applied(world, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_bad.sql").write_text("CREATE TABLE c (x int); SELECT no_such_function();")
    source_store(world)
    dsn = world.database_dsn(SOURCE)
    with pytest.raises(psycopg2.Error):
        migrate(dsn, [("extra", folder)])
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT to_regclass('c'), count(*) FROM schema_migrations WHERE component = 'extra'"
        )
        assert cur.fetchone() == (None, 0)
    conn.close()
