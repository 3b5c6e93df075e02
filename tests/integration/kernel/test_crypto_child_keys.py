"""Child subject keys (a ticket's key wrapped under its requester's) against a real keystore."""

from __future__ import annotations

import json
import os
import threading
import uuid

import psycopg2
import pytest

from kernel.crypto.fields import FieldCipher, is_erased
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded, TamperedCiphertext, WrongTenant
from kernel.db import Database, ensure_database
from kernel.migrate import KEYSTORE, migrate
from kernel.testing import ManualClock, wait_until

K1, K2 = os.urandom(32), os.urandom(32)
TEXT = ["subject", "body"]


def _keystore_database(settings, name: str) -> Database:
    ensure_database(settings.database_url, settings.database_name("crypto", name))
    dsn = settings.database_dsn("crypto", name)
    migrate(dsn, [KEYSTORE])
    return Database(dsn, maxconn=30)


@pytest.fixture(scope="module")
def keys_db(module_world):
    """One keystore for the module: every test works on ids of its own, and a database per
    test would cost more than all of these tests together."""
    db = _keystore_database(module_world, "keys")
    yield db
    db.close()


@pytest.fixture
def own_keys_db(world):
    """A keystore for a test that acts on every tenant in it (master key rotation)."""
    db = _keystore_database(world, "keys")
    yield db
    db.close()


def fresh(db: Database, master_keys: dict | None = None) -> FieldCipher:
    """A cipher over a keystore that caches nothing: what any other process reads from now on."""
    return FieldCipher(Keystore(db, master_keys or {"k1": K1}, cache_seconds=0))


def ticket(n: int) -> dict:
    return {"subject": f"Printer {n} is on fire", "body": f"Call me on 0113 496 000{n}", "n": n}


def sealed_ticket(cipher: FieldCipher, tenant, ticket_id, requester, n: int) -> dict:
    sealed = cipher.encrypt_fields(ticket(n), TEXT, tenant, ticket_id, parent_id=requester)
    return json.loads(json.dumps(sealed))  # as an event store hands it back


def sealed_person(cipher: FieldCipher, tenant, person, n: int) -> dict:
    payload = {"email": f"p{n}@example.org", "n": n}
    return json.loads(json.dumps(cipher.encrypt_fields(payload, ["email"], tenant, person)))


def erased(cipher: FieldCipher, payload: dict, fields=TEXT) -> bool:
    opened = cipher.decrypt_fields(payload)
    return all(is_erased(opened[f]) for f in fields)


def outcome_while_the_parent_is_being_shredded(db: Database, parent, create_child) -> list:
    """What ``create_child`` returned or raised, run while ``parent``'s shred is in progress.

    The shred is shred_subject's UPDATE held open: the child's creation must run into its
    lock, wait, and only then see the outcome of the shred."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(create_child())
        except Exception as exc:  # reported by the caller's assertion
            outcome.append(exc)

    with db.transaction() as shred:
        shred.execute(
            "UPDATE subject_keys SET wrapped_key = NULL, shredded_at = now() WHERE subject_id = %s",
            (parent,),
        )
        creator = threading.Thread(target=run)
        creator.start()

        def creator_waits_on_a_lock() -> bool:
            with db.transaction() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                return cur.fetchone()[0] == 1

        wait_until(creator_waits_on_a_lock, timeout=20, what="the creator to wait on the parent")
        assert not outcome
    creator.join(20)
    return outcome


def row(db: Database, subject) -> tuple | None:
    with db.transaction() as cur:
        cur.execute(
            "SELECT tenant_id, parent_id, wrapped_key IS NOT NULL FROM subject_keys"
            " WHERE subject_id = %s",
            (subject,),
        )
        return cur.fetchone()


def test_shredding_the_parent_erases_every_child_without_touching_them(keys_db):
    cipher = FieldCipher(Keystore(keys_db, {"k1": K1}))
    tenant, ann, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ann_tickets = [uuid.uuid4() for _ in range(3)]
    bob_ticket = uuid.uuid4()
    sealed = [sealed_ticket(cipher, tenant, t, ann, n) for n, t in enumerate(ann_tickets)]
    sealed_bob = sealed_ticket(cipher, tenant, bob_ticket, bob, 7)
    sealed_ann = sealed_person(cipher, tenant, ann, 1)
    # The ciphertext looks exactly like a top-level subject's: readers need no parent.
    assert set(sealed[0]["subject"]) == {"$enc", "tenant", "subject", "ct"}
    assert row(keys_db, ann_tickets[0]) == (tenant, ann, True)
    assert row(keys_db, ann) == (tenant, None, True)  # created top-level for its first child
    for n, payload in enumerate(sealed):
        assert fresh(keys_db).decrypt_fields(payload, tenant_id=tenant) == ticket(n)

    assert cipher.keystore.shred_subject(ann) is True

    reader = fresh(keys_db)
    assert all(erased(reader, payload) for payload in sealed)
    assert erased(reader, sealed_ann, ["email"])
    assert reader.decrypt_fields(sealed_bob) == ticket(7)
    assert reader.keystore.subject_key(tenant, ann_tickets[0], create=False) is None
    # One row changed: the children keep their wrapped keys, which nothing can open any more.
    assert [row(keys_db, t) for t in ann_tickets] == [(tenant, ann, True)] * 3
    with pytest.raises(KeyShredded):
        reader.keystore.subject_key(tenant, ann_tickets[0], parent_id=ann)
    with pytest.raises(KeyShredded):  # no new child under an erased parent
        reader.encrypt_fields(ticket(9), TEXT, tenant, uuid.uuid4(), parent_id=ann)
    with pytest.raises(KeyShredded):  # nor new text for an existing one
        reader.encrypt_fields(ticket(9), TEXT, tenant, ann_tickets[1])
    assert reader.keystore.shred_subject(ann_tickets[0]) is True  # its useless row, on request


def test_shredding_a_child_erases_only_that_child(keys_db):
    cipher = FieldCipher(Keystore(keys_db, {"k1": K1}))
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    first, second = uuid.uuid4(), uuid.uuid4()
    sealed_first = sealed_ticket(cipher, tenant, first, ann, 1)
    sealed_second = sealed_ticket(cipher, tenant, second, ann, 2)
    sealed_ann = sealed_person(cipher, tenant, ann, 3)

    assert cipher.keystore.shred_subject(first, tenant) is True
    assert cipher.keystore.shred_subject(first, tenant) is False

    for reader in (cipher, fresh(keys_db)):
        assert erased(reader, sealed_first)
        assert reader.decrypt_fields(sealed_second) == ticket(2)
        assert reader.decrypt_fields(sealed_ann)["email"] == "p3@example.org"
        assert reader.keystore.subject_key(tenant, first, create=False, parent_id=ann) is None
        with pytest.raises(KeyShredded):  # the tombstone stays: no fresh key for it
            reader.encrypt_fields(ticket(1), TEXT, tenant, first, parent_id=ann)
    # The parent lives on and still takes new children.
    later = uuid.uuid4()
    assert fresh(keys_db).decrypt_fields(sealed_ticket(cipher, tenant, later, ann, 4)) == ticket(4)


def test_the_shredding_process_forgets_children_at_once(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    children = [uuid.uuid4() for _ in range(3)]
    # Caches that would otherwise keep a key for an hour, here and in another process.
    here = Keystore(keys_db, {"k1": K1}, cache_seconds=3600)
    clock = ManualClock()
    elsewhere = Keystore(keys_db, {"k1": K1}, cache_seconds=0.2, clock=clock)
    sealed = [sealed_ticket(FieldCipher(here), tenant, c, ann, n) for n, c in enumerate(children)]
    for n, payload in enumerate(sealed):
        assert FieldCipher(elsewhere).decrypt_fields(payload) == ticket(n)

    here.shred_subject(ann)

    assert all(here.subject_key(tenant, c, create=False) is None for c in children)
    assert all(erased(FieldCipher(here), payload) for payload in sealed)
    # Another process learns of it when its cache entries expire, as for any other shred.
    assert all(elsewhere.subject_key(tenant, c, create=False) is not None for c in children)
    clock.advance(0.2)
    assert all(elsewhere.subject_key(tenant, c, create=False) is None for c in children)

    # A tenant's shred forgets its children as well.
    other = uuid.uuid4()
    kept = sealed_ticket(FieldCipher(here), other, uuid.uuid4(), uuid.uuid4(), 5)
    assert FieldCipher(here).decrypt_fields(kept) == ticket(5)
    assert here.shred_tenant(other) == 2
    assert erased(FieldCipher(here), kept)


def test_one_level_one_tenant_one_parent(keys_db):
    keystore = Keystore(keys_db, {"k1": K1})
    acme, globex = uuid.uuid4(), uuid.uuid4()
    ann, bob, child = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    key = keystore.subject_key(acme, child, parent_id=ann)
    assert keystore.subject_key(acme, child, parent_id=ann) == key
    assert keystore.subject_key(acme, child) == key  # readers need not know the parent

    with pytest.raises(ValueError, match="one level"):
        keystore.subject_key(acme, uuid.uuid4(), parent_id=child)
    with pytest.raises(ValueError):  # exists under another parent
        keystore.subject_key(acme, child, parent_id=bob)
    with pytest.raises(ValueError):  # exists top-level
        keystore.subject_key(acme, ann, parent_id=bob)
    with pytest.raises(ValueError):
        keystore.subject_key(acme, bob, parent_id=bob)
    with pytest.raises(WrongTenant):  # the parent is of another tenant
        Keystore(keys_db, {"k1": K1}).subject_key(globex, uuid.uuid4(), parent_id=ann)
    with pytest.raises(WrongTenant):
        Keystore(keys_db, {"k1": K1}).subject_key(globex, child, parent_id=ann)
    # Asking without creating leaves no row behind.
    unknown = uuid.uuid4()
    assert keystore.subject_key(acme, unknown, create=False, parent_id=ann) is None
    assert row(keys_db, unknown) is None
    # Refusals above created nothing either, not even the would-be parent's key.
    assert row(keys_db, bob) is None

    # A parent erased before it had a key takes no child.
    ghost = uuid.uuid4()
    assert keystore.shred_subject(ghost, acme) is False
    with pytest.raises(KeyShredded):
        keystore.subject_key(acme, uuid.uuid4(), parent_id=ghost)

    # The database refuses what the code refuses, should anything bypass it.
    with keys_db.transaction() as cur:
        cur.execute("SELECT wrapped_key FROM subject_keys WHERE subject_id = %s", (child,))
        blob = cur.fetchone()[0]
    refused = [
        ("INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key, parent_id)"
         " VALUES (%s, %s, %s, %s)", (uuid.uuid4(), acme, blob, child)),
        ("INSERT INTO subject_keys (subject_id, tenant_id, wrapped_key, parent_id)"
         " VALUES (%s, %s, %s, %s)", (uuid.uuid4(), globex, blob, ann)),
        ("UPDATE subject_keys SET parent_id = NULL WHERE subject_id = %s", (child,)),
    ]  # fmt: skip
    keystore.subject_key(globex, uuid.uuid4())  # globex has a tenant key: only the parent fails
    for sql, params in refused:
        with pytest.raises(psycopg2.Error), keys_db.transaction() as cur:
            cur.execute(sql, params)


def test_a_child_key_moved_under_another_parent_does_not_open(keys_db):
    keystore = Keystore(keys_db, {"k1": K1})
    tenant, ann, bob, child = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sealed = sealed_ticket(FieldCipher(keystore), tenant, child, ann, 1)
    keystore.subject_key(tenant, bob)
    with keys_db.transaction() as cur:
        # The trigger guards the parent column, but a superuser can bypass triggers.
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("UPDATE subject_keys SET parent_id = %s WHERE subject_id = %s", (bob, child))
    with pytest.raises(TamperedCiphertext):
        fresh(keys_db).decrypt_fields(sealed)


def test_tenant_shred_and_master_key_rotation_cover_children(own_keys_db):
    keys_db = own_keys_db
    old = FieldCipher(Keystore(keys_db, {"k1": K1}))
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    children = [uuid.uuid4() for _ in range(2)]
    sealed = [sealed_ticket(old, tenant, c, ann, n) for n, c in enumerate(children)]

    rotating = Keystore(keys_db, {"k2": K2, "k1": K1})
    assert rotating.rotate_master_key() == 1
    new_only = fresh(keys_db, {"k2": K2})
    for n, payload in enumerate(sealed):
        assert new_only.decrypt_fields(payload, tenant_id=tenant) == ticket(n)

    assert rotating.shred_tenant(tenant) == 3  # the parent and both children
    assert all(erased(new_only, payload) for payload in sealed)
    with pytest.raises(KeyShredded):
        new_only.encrypt_fields(ticket(3), TEXT, tenant, uuid.uuid4(), parent_id=ann)


def test_bulk_shred_destroys_many_keys_and_tombstones_the_rest(keys_db):
    keystore = Keystore(keys_db, {"k1": K1}, cache_seconds=3600)
    cipher = FieldCipher(keystore)
    acme, globex = uuid.uuid4(), uuid.uuid4()
    ann, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    closed = [uuid.uuid4() for _ in range(3)]
    sealed_closed = [sealed_ticket(cipher, acme, t, ann, n) for n, t in enumerate(closed)]
    still_open = sealed_ticket(cipher, acme, uuid.uuid4(), ann, 3)
    sealed_bob = sealed_ticket(cipher, acme, uuid.uuid4(), bob, 4)
    sealed_carol = sealed_ticket(cipher, globex, uuid.uuid4(), carol, 5)
    never_seen = uuid.uuid4()

    with pytest.raises(WrongTenant):  # all or nothing
        keystore.shred_subjects([closed[0], carol], acme)
    assert fresh(keys_db).decrypt_fields(sealed_closed[0]) == ticket(0)

    assert keystore.shred_subjects([*closed, closed[0], bob, never_seen], acme) == 4
    assert keystore.shred_subjects([*closed, bob, never_seen], acme) == 0
    assert keystore.shred_subjects([], acme) == 0

    for reader in (cipher, fresh(keys_db)):  # the cache of this process forgot them at once
        assert all(erased(reader, payload) for payload in sealed_closed)
        assert erased(reader, sealed_bob)  # bob's child went with bob
        assert reader.decrypt_fields(still_open) == ticket(3)
        assert reader.decrypt_fields(sealed_carol) == ticket(5)
        with pytest.raises(KeyShredded):
            reader.encrypt_fields(ticket(6), TEXT, acme, never_seen, parent_id=ann)
    assert row(keys_db, never_seen) == (acme, None, False)


def test_a_child_waits_for_a_parent_shred_in_progress_and_is_refused(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    Keystore(keys_db, {"k1": K1}).subject_key(tenant, ann)
    outcome = outcome_while_the_parent_is_being_shredded(
        keys_db,
        ann,
        lambda: Keystore(keys_db, {"k1": K1}).subject_key(tenant, uuid.uuid4(), parent_id=ann),
    )
    assert len(outcome) == 1 and isinstance(outcome[0], KeyShredded), outcome


def test_children_created_while_the_parent_is_shredded_never_outlive_it(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    shared = Keystore(keys_db, {"k1": K1}, cache_seconds=3600)  # the shredder's own process
    shared.subject_key(tenant, ann)
    shredded = threading.Event()
    created: list[uuid.UUID] = []
    late_keys: list[uuid.UUID] = []
    errors: list[Exception] = []

    def creator(keystore: Keystore) -> None:
        for _ in range(200):
            child = uuid.uuid4()
            started_after_shred = shredded.is_set()
            try:
                keystore.subject_key(tenant, child, parent_id=ann)
            except KeyShredded:
                return
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)
                return
            created.append(child)
            if started_after_shred:
                late_keys.append(child)

    threads = [threading.Thread(target=creator, args=(shared,)) for _ in range(2)]
    threads += [
        threading.Thread(target=creator, args=(Keystore(keys_db, {"k1": K1}),)) for _ in range(2)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: len(created) >= 4, timeout=20, what="children created before the shred")
    assert shared.shred_subject(ann) is True
    shredded.set()
    for t in threads:
        t.join(30)

    assert not errors and not late_keys
    reader = Keystore(keys_db, {"k1": K1}, cache_seconds=0)
    with keys_db.transaction() as cur:
        cur.execute("SELECT subject_id FROM subject_keys WHERE parent_id = %s", (ann,))
        stored = {s for (s,) in cur.fetchall()}
    assert set(created) <= stored
    for child in stored:
        assert reader.subject_key(tenant, child, create=False) is None
        assert shared.subject_key(tenant, child, create=False) is None


# --- a child created in one statement while its parent's key is cached ---------------------------


def test_a_child_of_a_cached_parent_is_created_in_one_statement_and_opens_anywhere(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    cipher = FieldCipher(Keystore(keys_db, {"k1": K1}, cache_seconds=3600))
    sealed_person(cipher, tenant, ann, 1)  # ann's key is now cached here
    children = [uuid.uuid4() for _ in range(3)]
    sealed = [sealed_ticket(cipher, tenant, t, ann, n) for n, t in enumerate(children)]
    assert [row(keys_db, t) for t in children] == [(tenant, ann, True)] * 3
    # Another process, which cached nothing, opens them: the key was wrapped under ann's.
    for n, payload in enumerate(sealed):
        assert fresh(keys_db).decrypt_fields(payload, tenant_id=tenant) == ticket(n)
    # A child that exists already is the same key, through this path or the full one.
    other = Keystore(keys_db, {"k1": K1})
    other.subject_key(tenant, ann)
    existing = uuid.uuid4()
    key = fresh(keys_db).keystore.subject_key(tenant, existing, parent_id=ann)
    assert other.subject_key(tenant, existing, parent_id=ann) == key
    assert cipher.keystore.shred_subject(ann) is True
    assert all(erased(fresh(keys_db), payload) for payload in sealed)


def test_a_parent_is_cached_by_its_first_child_for_the_next(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    keystore = Keystore(keys_db, {"k1": K1}, cache_seconds=3600)
    first, second = uuid.uuid4(), uuid.uuid4()
    keystore.subject_key(tenant, first, parent_id=ann)
    assert row(keys_db, ann) == (tenant, None, True)  # created top-level for its first child
    assert keystore._cache.get(ann) is not None
    keystore.subject_key(tenant, second, parent_id=ann)
    assert [row(keys_db, c) for c in (first, second)] == [(tenant, ann, True)] * 2
    # Refusals are the full path's, whatever the cache holds.
    with pytest.raises(ValueError):
        keystore.subject_key(tenant, uuid.uuid4(), parent_id=first)
    with pytest.raises(WrongTenant):
        keystore.subject_key(uuid.uuid4(), uuid.uuid4(), parent_id=ann)


def test_a_cached_parent_shredded_elsewhere_gets_no_child(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    here = Keystore(keys_db, {"k1": K1}, cache_seconds=3600)
    here.subject_key(tenant, ann)
    assert Keystore(keys_db, {"k1": K1}).shred_subject(ann) is True  # another process
    child = uuid.uuid4()
    with pytest.raises(KeyShredded):
        here.subject_key(tenant, child, parent_id=ann)
    assert row(keys_db, child) is None


def test_a_cached_parent_of_an_erased_tenant_gets_no_child(own_keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    here = Keystore(own_keys_db, {"k1": K1}, cache_seconds=3600)
    here.subject_key(tenant, ann)
    Keystore(own_keys_db, {"k1": K1}).shred_tenant(tenant)
    with pytest.raises(KeyShredded):
        here.subject_key(tenant, uuid.uuid4(), parent_id=ann)


def test_a_child_of_a_cached_parent_waits_for_a_shred_in_progress_and_is_refused(keys_db):
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    keystore = Keystore(keys_db, {"k1": K1}, cache_seconds=3600)
    keystore.subject_key(tenant, ann)
    child = uuid.uuid4()
    outcome = outcome_while_the_parent_is_being_shredded(
        keys_db, ann, lambda: keystore.subject_key(tenant, child, parent_id=ann)
    )
    assert len(outcome) == 1 and isinstance(outcome[0], KeyShredded), outcome
    assert row(keys_db, child) is None
