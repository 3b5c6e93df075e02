"""The gateway's stored responses against real PostgreSQL, as an auditor and an attacker see
them: sealed under the tenant's key, named so erasure finds them, gone with the tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import idempotency, privacy
from gateway.idempotency import MIGRATIONS, PLATFORM, IdempotencyStore, StoredResponse, fingerprint
from kernel import db as kdb
from kernel import migrate
from kernel import privacy as privacy_protocol
from kernel.config import Settings
from kernel.crypto.primitives import TamperedCiphertext
from kernel.envelope import EventRegistry
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from tests.support.privacy import privacy_command

HEADERS = {"Content-Type": "application/json"}
NAME, EMAIL, WORDS = "Carol Canary-Quixote", "carol.canary@example.com", "my canary password"


@pytest.fixture
def gateway_store(world: Settings) -> Iterator[EventSourcedStore]:
    store = open_store(world, "gateway", EventRegistry(), migrations=MIGRATIONS)
    yield store
    store.db.close()
    assert store.cipher is not None
    store.cipher.keystore._db.close()


@pytest.fixture
def replays(gateway_store: EventSourcedStore) -> IdempotencyStore:
    assert gateway_store.cipher is not None
    return IdempotencyStore(gateway_store.db, gateway_store.cipher.keystore)


def ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def answer(contact: str, **extra: Any) -> bytes:
    return json.dumps(
        {"id": contact, "name": NAME, "email": EMAIL, "note": WORDS, **extra}
    ).encode()


def keep(
    replays: IdempotencyStore,
    scope: str,
    key: str,
    body: bytes,
    tenant: str | uuid.UUID,
    named: list[str],
) -> bytes:
    fp = fingerprint("POST", "/v1/contacts", key.encode())
    assert replays.begin(scope, key, fp) is None
    assert replays.complete(scope, key, 201, HEADERS, body, tenant, named) is True
    return body


def replay(replays: IdempotencyStore, scope: str, key: str) -> StoredResponse | None:
    return replays.begin(scope, key, fingerprint("POST", "/v1/contacts", key.encode()))


def table_text(database: kdb.Database) -> str:
    """Every byte of every row, as a dump would show them (bytea as its bytes, decoded)."""
    with database.transaction() as cur:
        cur.execute(
            "SELECT scope, key, fingerprint, status, headers::text, body, sealed_body,"
            " tenant_id::text, subject_ids::text FROM idempotency_keys"
        )
        rows = cur.fetchall()
    return "\n".join(
        " ".join(
            bytes(v).decode("latin-1") if isinstance(v, memoryview | bytes) else str(v) for v in row
        )
        for row in rows
    )


def keys(database: kdb.Database) -> set[str]:
    with database.transaction() as cur:
        cur.execute("SELECT key FROM idempotency_keys")
        return {row[0] for row in cur.fetchall()}


def run(store: EventSourcedStore, event: Any) -> dict[str, Any]:
    """The command as the gateway's consumer runs it; returns the answer it publishes."""
    assert store.cipher is not None
    with store.unit_of_work("gateway") as uow:
        privacy_protocol.handle_command(
            uow, "gateway", event, privacy.handlers_for(store.cipher.keystore)
        )
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT body FROM outbox WHERE routing_key = 'gateway.privacy_answered'"
            " ORDER BY id DESC LIMIT 1"
        )
        return json.loads(cur.fetchone()[0])["payload"]


def test_a_stored_response_holds_no_plaintext_and_still_replays(replays, gateway_store):
    tenant, contact = ids(2)
    body = keep(replays, tenant, "k-plain", answer(contact), tenant, [contact])

    dumped = table_text(gateway_store.db)

    for canary in (NAME, EMAIL, WORDS, "canary"):
        assert canary not in dumped
    assert contact in dumped  # the row names whom it concerns, so erasure finds it
    assert replay(replays, tenant, "k-plain") == StoredResponse(201, HEADERS, body)


def test_a_sealed_response_moved_to_another_row_does_not_open(replays, gateway_store):
    tenant, contact, other = ids(3)
    keep(replays, tenant, "k-mine", answer(contact), tenant, [contact])
    keep(replays, tenant, "k-theirs", answer(other), tenant, [other])
    with gateway_store.db.transaction() as cur:
        cur.execute(
            "UPDATE idempotency_keys SET sealed_body ="
            " (SELECT sealed_body FROM idempotency_keys WHERE key = 'k-theirs')"
            " WHERE key = 'k-mine'"
        )

    with pytest.raises(TamperedCiphertext):
        replay(replays, tenant, "k-mine")


def test_erasure_deletes_the_responses_naming_the_subject_and_only_theirs(replays, gateway_store):
    tenant, carol, dave, ticket = ids(4)
    keep(replays, tenant, "k-carol", answer(carol), tenant, [carol])
    keep(replays, tenant, "k-ticket", answer(ticket, requester_id=carol), tenant, [ticket, carol])
    keep(replays, tenant, "k-dave", answer(dave), tenant, [dave])

    answered = run(gateway_store, privacy_command("erase_subject", tenant, carol))

    assert answered["service"] == "gateway" and answered["status"] == "done"
    assert answered["detail"] == "2 stored API responses naming them deleted"
    assert keys(gateway_store.db) == {"k-dave"}
    assert replay(replays, tenant, "k-carol") is None  # the key is free: a retry runs again


def test_erasure_deletes_the_responses_in_the_subjects_own_scope(replays, gateway_store):
    tenant, erin, frank, incident = ids(4)
    # Her acknowledgement's answer names the incident, not her: her scope does.
    mine = idempotency.actor_scope(tenant, erin)
    keep(replays, mine, "k-ack", answer(incident), tenant, [incident])
    keep(replays, idempotency.actor_scope(tenant, frank), "k-ack", answer(incident), tenant, [])

    run(gateway_store, privacy_command("erase_subject", tenant, erin))

    with gateway_store.db.transaction() as cur:
        cur.execute("SELECT scope FROM idempotency_keys WHERE tenant_id = %s", (tenant,))
        assert [row[0] for row in cur.fetchall()] == [idempotency.actor_scope(tenant, frank)]
    assert replay(replays, mine, "k-ack") is None  # her key is free: a retry runs again


def test_a_tenant_cannot_erase_what_another_tenant_stored(replays, gateway_store):
    ours, theirs, carol = ids(3)
    # The other tenant's answer names the same id (say, typed into one of its resources).
    keep(replays, theirs, "k-theirs", answer(carol), theirs, [carol])

    run(gateway_store, privacy_command("erase_subject", ours, carol))

    assert keys(gateway_store.db) == {"k-theirs"}


def test_destruction_shreds_the_tenant_key_and_deletes_its_responses_and_its_sign_up(
    replays, gateway_store
):
    tenant, admin, other_tenant, other_admin = ids(4)
    keep(replays, "signup", "k-signup", answer(admin, tenant_id=tenant), tenant, [tenant, admin])
    keep(replays, tenant, "k-agent", answer(admin), tenant, [admin])
    keep(replays, "signup", "k-other", answer(other_admin), other_tenant, [other_tenant])
    assert gateway_store.cipher is not None
    keystore = gateway_store.cipher.keystore

    answered = run(gateway_store, privacy_command("destroy_tenant", tenant))

    assert answered["status"] == "done"
    assert keys(gateway_store.db) == {"k-other"}
    assert keystore.subject_key(tenant, tenant, create=False) is None
    assert keystore.subject_key(other_tenant, other_tenant, create=False) is not None


def test_a_restored_row_of_a_destroyed_tenant_is_gone_not_replayed(replays, gateway_store):
    # A data backup taken before the destruction still has the row; the keystore does not
    # have its key (keystores are backed up on a short cycle): nothing can open it.
    tenant, contact = ids(2)
    keep(replays, tenant, "k-restored", answer(contact), tenant, [contact])
    assert gateway_store.cipher is not None
    gateway_store.cipher.keystore.shred_tenant(tenant)

    assert replay(replays, tenant, "k-restored") is None
    # And nothing new of that tenant is sealed again.
    assert replays.complete(tenant, "k-restored", 201, HEADERS, b"{}", tenant, []) is False


def test_the_erasure_log_re_applied_at_start_deletes_them_too(replays, gateway_store):
    tenant, carol = ids(2)
    keep(replays, tenant, "k-carol", answer(carol), tenant, [carol])
    entry = {"command": "erase_subject", "tenant_id": tenant, "subject_id": carol}

    handlers = privacy.erasure_handlers(gateway_store)
    with gateway_store.unit_of_work("gateway") as uow:
        handlers["erase_subject"](uow, entry)

    assert keys(gateway_store.db) == set()


def test_responses_no_tenant_owns_are_sealed_under_the_platform_key(replays, gateway_store):
    body = keep(replays, "operator", "k-op", b'{"version": "2026-02"}', PLATFORM, [])

    assert "2026-02" not in table_text(gateway_store.db)
    assert replay(replays, "operator", "k-op") == StoredResponse(201, HEADERS, body)


def test_the_export_lists_when_responses_naming_them_were_kept_not_what_they_held(
    replays, gateway_store
):
    tenant, carol, dave = ids(3)
    keep(replays, tenant, "k-carol", answer(carol), tenant, [carol])
    keep(replays, tenant, "k-dave", answer(dave), tenant, [dave])
    keep(replays, "signup", "k-elsewhere", answer(carol), str(uuid.uuid4()), [carol])

    with gateway_store.unit_of_work() as uow:
        exported = privacy.export(uow, tenant, carol, timedelta(hours=24))

    [record] = exported["stored_api_responses"]
    assert record["status"] == 201
    assert NAME not in json.dumps(exported) and EMAIL not in json.dumps(exported)


# --- rows of the previous release: plaintext, nothing named -----------------------------------


@pytest.fixture
def old_release(world: Settings, tmp_path: Path) -> Iterator[kdb.Database]:
    """The gateway's database as the previous release left it: migrated to 0001 only."""
    first = MIGRATIONS / "0001_idempotency.sql"
    (tmp_path / first.name).write_text(first.read_text())
    kdb.ensure_database(world.database_url, world.database_name("gateway"))
    migrate.migrate(world.database_dsn("gateway"), [migrate.STORE, ("gateway", tmp_path)])
    database = kdb.Database(world.database_dsn("gateway"))
    yield database
    database.close()


def test_rows_of_the_previous_release_replay_and_erasure_and_destruction_reach_them(
    world, old_release
):
    tenant, carol, new_tenant = ids(3)
    fp = fingerprint("POST", "/v1/contacts", b"k-old")
    with old_release.transaction() as cur:
        for scope, key, body in (
            (tenant, "k-old", answer(carol)),
            (tenant, "k-old-other", answer(str(uuid.uuid4()))),
            ("signup", "k-old-signup", answer(str(uuid.uuid4()), tenant_id=new_tenant)),
        ):
            cur.execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers, body,"
                " completed_at) VALUES (%s, %s, %s, 201, '{}', %s, now())",
                (scope, key, fp, body),
            )
    # The upgrade: the rest of the migrations, expand-only, over the old rows.
    migrate.migrate(world.database_dsn("gateway"), [migrate.STORE, ("gateway", MIGRATIONS)])
    store = open_store(world, "gateway", EventRegistry(), migrations=MIGRATIONS)
    assert store.cipher is not None
    replays = IdempotencyStore(store.db, store.cipher.keystore)
    try:
        assert replays.begin(tenant, "k-old", fp) == StoredResponse(201, {}, answer(carol))

        run(store, privacy_command("erase_subject", tenant, carol))
        assert keys(store.db) == {"k-old-other", "k-old-signup"}
        run(store, privacy_command("destroy_tenant", new_tenant))
        assert keys(store.db) == {"k-old-other"}
    finally:
        store.db.close()
        store.cipher.keystore._db.close()


def test_the_table_names_a_sealed_response_s_tenant_and_subjects(gateway_store):
    with pytest.raises(Exception, match="idempotency_complete_or_not"):
        with gateway_store.db.transaction() as cur:
            cur.execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers,"
                " sealed_body, completed_at) VALUES ('t', 'k', 'f', 201, '{}', 'x', now())"
            )
    assert idempotency.PLATFORM == uuid.UUID(int=0)
