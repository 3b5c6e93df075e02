"""Crypto-shredding against a real keystore database in PostgreSQL."""

import base64
import json
import os
import threading
import uuid

import pytest

from kernel.crypto.fields import FieldCipher, is_encrypted, is_erased
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded, MasterKeyMissing, TamperedCiphertext
from kernel.db import Database, drop_database, dsn_for, ensure_database
from kernel.migrate import KEYSTORE, migrate
from kernel.testing import ManualClock

SERVER_DSN = os.environ.get(
    "LEDGERDESK_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
K1, K2 = os.urandom(32), os.urandom(32)
PII = ["email", "name", "age", "tags", "address"]


@pytest.fixture
def keys_db():
    name = f"ledgerdesk_test_keys_{uuid.uuid4().hex[:12]}"
    ensure_database(SERVER_DSN, name)
    db = None
    try:
        dsn = dsn_for(SERVER_DSN, name)
        migrate(dsn, [KEYSTORE])
        db = Database(dsn)
        yield db
    finally:
        if db is not None:
            db.close()
        drop_database(SERVER_DSN, name)


@pytest.fixture
def keystore(keys_db):
    return Keystore(keys_db, {"k1": K1})


def person(n: int) -> dict:
    return {
        "email": f"person{n}@example.org",
        "name": f"Persön {n}",
        "age": 30 + n,
        "tags": ["vip", n, {"nested": True}],
        "address": {"city": "Leeds", "lines": ["1 Main St"]},
        "ticket": f"T-{n}",
        "note": None,
    }


def sealed_for(cipher, tenant, subject, n):
    return json.loads(json.dumps(cipher.encrypt_fields(person(n), PII, tenant, subject)))


def test_round_trip_of_several_field_types(keystore):
    cipher = FieldCipher(keystore)
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    sealed = cipher.encrypt_fields(person(1), PII + ["note"], tenant, subject)
    assert all(is_encrypted(sealed[f]) for f in PII)
    assert sealed["ticket"] == "T-1" and sealed["note"] is None
    stored = json.dumps(sealed)
    assert "person1" not in stored and "Leeds" not in stored
    assert cipher.decrypt_fields(json.loads(stored), tenant_id=tenant) == person(1)
    assert cipher.subjects_in(sealed) == {subject}
    assert len(keystore.subject_key(tenant, subject)) == 32


def test_shredding_a_subject_erases_only_that_subject(keys_db, keystore):
    cipher = FieldCipher(keystore)
    tenant, ann, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sealed_ann = sealed_for(cipher, tenant, ann, 1)
    sealed_bob = sealed_for(cipher, tenant, bob, 2)
    # Another process that has Ann's key cached, with a tiny TTL.
    clock = ManualClock()
    elsewhere = Keystore(keys_db, {"k1": K1}, cache_seconds=0.05, clock=clock)
    assert FieldCipher(elsewhere).decrypt_fields(sealed_ann) == person(1)

    assert keystore.shred_subject(ann) is True
    assert keystore.shred_subject(ann) is False  # idempotent

    clock.advance(0.1)  # past the other cache's TTL
    fresh = Keystore(keys_db, {"k1": K1}, cache_seconds=0)
    for ks in (keystore, elsewhere, fresh):
        opened = FieldCipher(ks).decrypt_fields(sealed_ann, tenant_id=tenant)
        assert all(is_erased(opened[f]) for f in PII)
        assert opened["ticket"] == "T-1"
        assert json.loads(json.dumps(opened))["email"] == "[erased]"
        assert FieldCipher(ks).decrypt_fields(sealed_bob, tenant_id=tenant) == person(2)
        assert ks.subject_key(tenant, ann, create=False) is None

    with keys_db.transaction() as cur:
        cur.execute(
            "SELECT wrapped_key, shredded_at FROM subject_keys WHERE subject_id = %s", (ann,)
        )
        wrapped, shredded_at = cur.fetchone()
    assert wrapped is None and shredded_at is not None


def test_encrypting_for_a_shredded_subject_raises(keystore):
    cipher = FieldCipher(keystore)
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    sealed_for(cipher, tenant, subject, 1)
    keystore.shred_subject(subject)
    with pytest.raises(KeyShredded):
        cipher.encrypt_fields(person(1), PII, tenant, subject)
    with pytest.raises(KeyShredded):
        keystore.subject_key(tenant, subject)
    # Fields that are all absent need no key, so nothing is refused.
    assert cipher.encrypt_fields({"ticket": "T"}, PII, tenant, subject) == {"ticket": "T"}


def test_shredding_a_subject_that_never_had_a_key(keys_db, keystore):
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    assert keystore.shred_subject(subject, tenant_id=tenant) is False
    other = Keystore(keys_db, {"k1": K1})
    with pytest.raises(KeyShredded):
        other.subject_key(tenant, subject)
    assert other.subject_key(tenant, subject, create=False) is None
    assert len(other.subject_key(tenant, uuid.uuid4())) == 32  # the tenant itself lives on


def test_shredding_a_tenant_erases_all_its_subjects_at_once(keys_db, keystore):
    cipher = FieldCipher(keystore)
    acme, globex = uuid.uuid4(), uuid.uuid4()
    acme_subjects = [uuid.uuid4() for _ in range(3)]
    sealed = [sealed_for(cipher, acme, s, n) for n, s in enumerate(acme_subjects)]
    carol = uuid.uuid4()
    sealed_carol = sealed_for(cipher, globex, carol, 9)

    assert keystore.shred_tenant(acme) == 3
    assert keystore.shred_tenant(acme) == 0

    for ks in (keystore, Keystore(keys_db, {"k1": K1}, cache_seconds=0)):
        c = FieldCipher(ks)
        for payload in sealed:
            opened = c.decrypt_fields(payload, tenant_id=acme)
            assert all(is_erased(opened[f]) for f in PII)
        assert c.decrypt_fields(sealed_carol, tenant_id=globex) == person(9)
        with pytest.raises(KeyShredded):
            c.encrypt_fields(person(5), PII, acme, uuid.uuid4())  # no new subject either
        with pytest.raises(KeyShredded):
            c.encrypt_fields(person(5), PII, acme, acme_subjects[0])

    with keys_db.transaction() as cur:
        cur.execute("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = %s", (acme,))
        assert cur.fetchone()[0] is None
        cur.execute(
            "SELECT count(*) FROM subject_keys WHERE tenant_id = %s AND wrapped_key IS NOT NULL",
            (acme,),
        )
        assert cur.fetchone()[0] == 0


def test_shredding_a_tenant_before_it_has_a_key(keystore):
    tenant = uuid.uuid4()
    assert keystore.shred_tenant(tenant) == 0
    with pytest.raises(KeyShredded):
        FieldCipher(keystore).encrypt_fields({"email": "x"}, ["email"], tenant, uuid.uuid4())
    assert keystore.subject_key(tenant, uuid.uuid4(), create=False) is None


def test_rotation_rewraps_tenant_keys_and_leaves_ciphertexts_alone(keys_db):
    old = Keystore(keys_db, {"k1": K1})
    cipher = FieldCipher(old)
    tenants = [uuid.uuid4() for _ in range(3)]
    subjects = [uuid.uuid4() for _ in tenants]
    pairs = enumerate(zip(tenants, subjects, strict=True))
    sealed = [sealed_for(cipher, t, s, n) for n, (t, s) in pairs]
    old.shred_tenant(tenants[2])
    before = json.dumps(sealed)
    with keys_db.transaction() as cur:
        cur.execute("SELECT subject_id, wrapped_key FROM subject_keys ORDER BY subject_id")
        subject_rows = [(s, bytes(w) if w else None) for s, w in cur.fetchall()]

    rotating = Keystore(keys_db, {"k2": K2, "k1": K1})
    assert rotating.rotate_master_key(batch_size=1) == 2  # the shredded tenant has no key
    assert rotating.rotate_master_key() == 0

    with keys_db.transaction() as cur:
        cur.execute("SELECT master_key_id FROM tenant_keys WHERE wrapped_key IS NOT NULL")
        assert {kid for (kid,) in cur.fetchall()} == {"k2"}
        cur.execute("SELECT subject_id, wrapped_key FROM subject_keys ORDER BY subject_id")
        assert [(s, bytes(w) if w else None) for s, w in cur.fetchall()] == subject_rows

    new_only = FieldCipher(Keystore(keys_db, {"k2": K2}))
    assert json.dumps(sealed) == before
    for n, (tenant, payload) in enumerate(zip(tenants[:2], sealed[:2], strict=True)):
        assert new_only.decrypt_fields(payload, tenant_id=tenant) == person(n)
    assert is_erased(new_only.decrypt_fields(sealed[2])["email"])
    # Keys created after the rotation are wrapped under k2 as well.
    later = uuid.uuid4()
    assert new_only.decrypt_fields(sealed_for(new_only, tenants[0], later, 7)) == person(7)


def test_rotation_refuses_an_unconfigured_master_key(keys_db):
    Keystore(keys_db, {"k0": K1}).subject_key(uuid.uuid4(), uuid.uuid4())
    Keystore(keys_db, {"k1": K1}).subject_key(uuid.uuid4(), uuid.uuid4())
    with pytest.raises(MasterKeyMissing, match="k0"):
        Keystore(keys_db, {"k2": K2, "k1": K1}).rotate_master_key()
    with keys_db.transaction() as cur:
        cur.execute("SELECT master_key_id FROM tenant_keys ORDER BY master_key_id")
        assert [kid for (kid,) in cur.fetchall()] == ["k0", "k1"]  # nothing half-done


def test_reading_without_the_master_key_is_a_clear_error(keys_db, keystore):
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    sealed = sealed_for(FieldCipher(keystore), tenant, subject, 1)
    with pytest.raises(MasterKeyMissing, match="k1"):
        FieldCipher(Keystore(keys_db, {"k2": K2})).decrypt_fields(sealed)


def test_concurrent_first_use_yields_one_key(keys_db):
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list = [None] * threads_n

    def first_use(i):
        keystore = Keystore(keys_db, {"k1": K1})  # one per thread: no shared cache
        barrier.wait()
        try:
            results[i] = keystore.subject_key(tenant, subject)
        except Exception as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(r, bytes) for r in results), results
    assert len(set(results)) == 1
    with keys_db.transaction() as cur:
        cur.execute("SELECT count(*) FROM tenant_keys WHERE tenant_id = %s", (tenant,))
        assert cur.fetchone()[0] == 1


def test_tampering_is_detected_and_distinct_from_erasure(keys_db, keystore):
    cipher = FieldCipher(keystore)
    tenant, ann, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sealed = sealed_for(cipher, tenant, ann, 1)
    sealed_bob = sealed_for(cipher, tenant, bob, 2)

    raw = bytearray(base64.b64decode(sealed["email"]["ct"]))
    raw[-1] ^= 0x01
    flipped = dict(sealed, email=dict(sealed["email"], ct=base64.b64encode(raw).decode()))
    with pytest.raises(TamperedCiphertext):
        cipher.decrypt_fields(flipped)
    with pytest.raises(TamperedCiphertext):  # moved to another field
        cipher.decrypt_fields(dict(sealed, name=sealed["email"]))
    with pytest.raises(TamperedCiphertext):  # relabelled as another subject of the tenant
        cipher.decrypt_fields(dict(sealed, email=dict(sealed["email"], subject=str(bob))))
    with pytest.raises(TamperedCiphertext):  # relabelled as another tenant
        cipher.decrypt_fields(dict(sealed, email=dict(sealed["email"], tenant=str(uuid.uuid4()))))
    with pytest.raises(TamperedCiphertext):  # another tenant's event carrying it
        cipher.decrypt_fields(sealed, tenant_id=uuid.uuid4())
    assert cipher.decrypt_fields(sealed_bob) == person(2)

    # A wrapped subject key altered in the keystore is caught, not read as erased.
    with keys_db.transaction() as cur:
        cur.execute(
            # One byte changed for sure: setting it to a constant would miss 1 time in 256.
            "UPDATE subject_keys SET wrapped_key ="
            " set_byte(wrapped_key, 20, (get_byte(wrapped_key, 20) + 1) %% 256) "
            "WHERE subject_id = %s",
            (bob,),
        )
    with pytest.raises(TamperedCiphertext):
        FieldCipher(Keystore(keys_db, {"k1": K1})).decrypt_fields(sealed_bob)


def test_a_wrapped_key_moved_to_another_tenant_does_not_open(keys_db, keystore):
    victim, attacker = uuid.uuid4(), uuid.uuid4()
    keystore.subject_key(victim, uuid.uuid4())
    keystore.subject_key(attacker, uuid.uuid4())
    with keys_db.transaction() as cur:
        cur.execute(
            "UPDATE tenant_keys SET wrapped_key = "
            "(SELECT wrapped_key FROM tenant_keys WHERE tenant_id = %s) WHERE tenant_id = %s",
            (victim, attacker),
        )
    with pytest.raises(TamperedCiphertext):
        Keystore(keys_db, {"k1": K1}).subject_key(attacker, uuid.uuid4())
