"""The idempotency store against real PostgreSQL: replay, refusals, abandon, expiry, races."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from eventlet import patcher

from gateway.idempotency import (
    MIGRATIONS,
    IdempotencyStore,
    StoredResponse,
    fingerprint,
)
from kernel import db as kdb
from kernel import migrate
from kernel.config import Settings
from kernel.crypto.keystore import Keystore
from kernel.errors import Conflict, ValidationFailed
from kernel.stores import prepare_databases

# The tests run monkey-patched; real OS threads make the racing transactions truly concurrent.
real_threading = patcher.original("threading")

BODY = b'{"name": "Ada", "email": "ada@example.com"}'
FP = fingerprint("POST", "/v1/contacts", BODY)
TENANT = str(uuid.uuid4())
HEADERS = {"Content-Type": "application/json", "Location": "/v1/contacts/c-1"}


def prepare(world: Settings) -> str:
    prepare_databases(world, "gateway", MIGRATIONS)
    return world.database_dsn("gateway")


@pytest.fixture
def dsn(world: Settings) -> str:
    return prepare(world)


@pytest.fixture
def database(dsn: str) -> Iterator[kdb.Database]:
    database = kdb.Database(dsn)
    yield database
    database.close()


@pytest.fixture
def keystore(world: Settings, dsn: str) -> Iterator[Keystore]:
    keys = kdb.Database(world.database_dsn("gateway", "keys"))
    yield Keystore(keys, world.master_keys, cache_seconds=world.key_cache_seconds)
    keys.close()


@pytest.fixture
def store(database: kdb.Database, keystore: Keystore) -> IdempotencyStore:
    return IdempotencyStore(database, keystore)


def age(database: kdb.Database, key: str, by: str) -> None:
    with database.transaction() as cur:
        cur.execute(
            "UPDATE idempotency_keys SET created_at = created_at - %s::interval WHERE key = %s",
            (by, key),
        )


def test_the_first_request_owns_the_key_and_a_retry_gets_its_response(store):
    assert store.begin(TENANT, "k-1", FP) is None
    assert store.complete(TENANT, "k-1", 201, HEADERS, b'{"id": "c-1"}', TENANT) is True

    replay = store.begin(TENANT, "k-1", FP)

    assert replay == StoredResponse(201, HEADERS, b'{"id": "c-1"}')
    assert isinstance(replay.body, bytes)
    assert store.begin(TENANT, "k-1", FP) == replay  # and again, unchanged


def test_an_empty_body_and_headers_replay_as_they_were(store):
    store.begin(TENANT, "k-empty", FP)
    store.complete(TENANT, "k-empty", 204, {}, b"", TENANT)

    assert store.begin(TENANT, "k-empty", FP) == StoredResponse(204, {}, b"")


def test_the_same_key_with_a_different_request_is_refused(store):
    store.begin(TENANT, "k-2", FP)
    store.complete(TENANT, "k-2", 201, HEADERS, b"{}", TENANT)
    other = fingerprint("POST", "/v1/contacts", b'{"name": "Grace"}')

    with pytest.raises(Conflict) as caught:
        store.begin(TENANT, "k-2", other)

    assert caught.value.detail == "this Idempotency-Key was already used with a different request"
    with pytest.raises(Conflict):  # whether or not the first has finished
        store.begin(TENANT, "k-3", FP) or store.begin(TENANT, "k-3", other)


def test_a_request_still_in_progress_is_a_conflict(store):
    assert store.begin(TENANT, "k-4", FP) is None

    with pytest.raises(Conflict) as caught:
        store.begin(TENANT, "k-4", FP)

    assert caught.value.detail == "a request with this Idempotency-Key is in progress"


def test_scopes_do_not_share_keys(store):
    store.begin(TENANT, "k-5", FP)
    store.complete(TENANT, "k-5", 201, HEADERS, b"tenant", TENANT)

    assert store.begin(str(uuid.uuid4()), "k-5", FP) is None
    assert store.begin("signup", "k-5", FP) is None


def test_abandon_frees_the_key_for_a_retry(store):
    store.begin(TENANT, "k-6", FP)

    store.abandon(TENANT, "k-6")

    assert store.begin(TENANT, "k-6", FP) is None
    store.complete(TENANT, "k-6", 201, HEADERS, b"second try", TENANT)
    assert store.begin(TENANT, "k-6", FP).body == b"second try"


def test_abandon_never_removes_a_completed_response(store):
    store.begin(TENANT, "k-7", FP)
    store.complete(TENANT, "k-7", 201, HEADERS, b"done", TENANT)

    store.abandon(TENANT, "k-7")

    assert store.begin(TENANT, "k-7", FP).body == b"done"


def test_completing_a_key_no_longer_held_records_nothing(store):
    store.begin(TENANT, "k-8", FP)
    store.abandon(TENANT, "k-8")

    assert store.complete(TENANT, "k-8", 201, HEADERS, b"late", TENANT) is False
    assert store.begin(TENANT, "k-8", FP) is None


def test_an_expired_response_is_forgotten_and_replaced(store, database):
    store.begin(TENANT, "k-9", FP)
    store.complete(TENANT, "k-9", 201, HEADERS, b"old", TENANT)
    age(database, "k-9", "25 hours")
    other = fingerprint("POST", "/v1/tickets", b"{}")

    assert store.begin(TENANT, "k-9", other) is None  # even for another request
    with pytest.raises(Conflict):
        store.begin(TENANT, "k-9", other)
    store.complete(TENANT, "k-9", 201, HEADERS, b"new", TENANT)
    assert store.begin(TENANT, "k-9", other).body == b"new"


def test_a_response_within_the_ttl_is_kept(store, database):
    store.begin(TENANT, "k-10", FP)
    store.complete(TENANT, "k-10", 201, HEADERS, b"kept", TENANT)
    age(database, "k-10", "23 hours")

    assert store.begin(TENANT, "k-10", FP).body == b"kept"


def test_an_in_progress_row_past_its_lease_is_presumed_dead(store, database):
    store.begin(TENANT, "k-11", FP)
    age(database, "k-11", "4 minutes")
    with pytest.raises(Conflict):
        store.begin(TENANT, "k-11", FP)

    age(database, "k-11", "2 minutes")

    assert store.begin(TENANT, "k-11", FP) is None


def test_purge_deletes_only_expired_rows(store, database):
    for key in ("old-1", "old-2", "fresh"):
        store.begin(TENANT, key, FP)
        store.complete(TENANT, key, 200, {}, b"", TENANT)
    age(database, "old-1", "2 days")
    age(database, "old-2", "25 hours")

    assert store.purge_expired() == 2
    with database.transaction() as cur:
        cur.execute("SELECT key FROM idempotency_keys")
        assert [row[0] for row in cur.fetchall()] == ["fresh"]


@pytest.mark.parametrize("key", ["", "x" * 201, "bad\x00key", "line\nbreak"])
def test_unusable_keys_are_refused(store, key: str):
    with pytest.raises(ValidationFailed) as caught:
        store.begin(TENANT, key, FP)

    assert list(caught.value.errors) == ["Idempotency-Key"]


def test_a_key_of_200_characters_is_fine(store):
    assert store.begin(TENANT, "x" * 200, FP) is None


def test_the_fingerprint_covers_method_path_and_body():
    assert FP == fingerprint("post", "/v1/contacts", BODY)
    assert len(FP) == 64 and int(FP, 16) >= 0
    assert FP != fingerprint("PUT", "/v1/contacts", BODY)
    assert FP != fingerprint("POST", "/v1/tickets", BODY)
    assert FP != fingerprint("POST", "/v1/contacts", BODY + b" ")
    # Length prefixes: moving bytes from path to body changes the fingerprint.
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/", b"ab")


def test_many_concurrent_begins_for_one_key_make_exactly_one_owner(dsn, keystore):
    racers = 30
    barrier = real_threading.Barrier(racers)
    outcomes: list[str] = []
    lock = real_threading.Lock()
    # A pool each: nothing shared between the OS threads but the database itself.
    stores = [IdempotencyStore(kdb.Database(dsn, maxconn=1), keystore) for _ in range(racers)]

    def race(store: IdempotencyStore) -> None:
        barrier.wait()
        try:
            outcome = "owner" if store.begin(TENANT, "race", FP) is None else "replay"
        except Conflict:
            outcome = "conflict"
        except Exception as exc:  # anything else is a failure the assertion below will show
            outcome = type(exc).__name__
        with lock:
            outcomes.append(outcome)

    threads = [real_threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.db.close()

    assert sorted(outcomes) == ["conflict"] * (racers - 1) + ["owner"]


def test_many_concurrent_begins_on_an_expired_key_make_exactly_one_owner(
    dsn, store, database, keystore
):
    store.begin(TENANT, "stale", FP)
    store.complete(TENANT, "stale", 201, HEADERS, b"old", TENANT)
    age(database, "stale", "25 hours")
    racers = 20
    barrier = real_threading.Barrier(racers)
    outcomes: list[str] = []
    lock = real_threading.Lock()
    stores = [IdempotencyStore(kdb.Database(dsn, maxconn=1), keystore) for _ in range(racers)]

    def race(store: IdempotencyStore) -> None:
        barrier.wait()
        try:
            outcome = "owner" if store.begin(TENANT, "stale", FP) is None else "replay"
        except Conflict:
            outcome = "conflict"
        with lock:
            outcomes.append(outcome)

    threads = [real_threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.db.close()

    assert sorted(outcomes) == ["conflict"] * (racers - 1) + ["owner"]


def test_migrating_twice_changes_nothing(world, dsn):
    assert migrate.migrate(prepare(world), [("gateway", MIGRATIONS)]) == []


def test_the_table_refuses_a_half_completed_row(database):
    with pytest.raises(Exception, match="idempotency_complete_or_not"):
        with database.transaction() as cur:
            cur.execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, status)"
                " VALUES ('t', 'k', 'f', 201)"
            )


def test_a_short_ttl_is_honoured(database, keystore):
    store = IdempotencyStore(database, keystore, ttl=timedelta(seconds=30))
    store.begin(TENANT, "k-ttl", FP)
    store.complete(TENANT, "k-ttl", 201, HEADERS, b"x", TENANT)
    age(database, "k-ttl", "31 seconds")

    assert store.begin(TENANT, "k-ttl", FP) is None
