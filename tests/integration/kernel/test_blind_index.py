"""Blind indexes against a real keystore: a keyed hash per tenant and kind, stable while the
tenant lives, never computable again once its key is shredded."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid

import pytest

from kernel.crypto.blind_index import BlindIndex
from kernel.crypto.keystore import Keystore
from kernel.db import Database, ensure_database
from kernel.migrate import KEYSTORE, migrate

K1 = os.urandom(32)


@pytest.fixture
def keystore(world):
    ensure_database(world.database_url, world.database_name("index", "keys"))
    dsn = world.database_dsn("index", "keys")
    migrate(dsn, [KEYSTORE])
    db = Database(dsn, maxconn=5)
    yield Keystore(db, {"k1": K1}, cache_seconds=0)
    db.close()


def test_a_digest_is_the_tenants_and_the_kinds_own(keystore):
    index = BlindIndex(keystore)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    # A reader makes no key: a tenant that has none has nothing indexed.
    assert index.digest(tenant, "email", "ada@example.com", create=False) is None
    digest = index.digest(tenant, "email", "ada@example.com")
    assert digest is not None and len(digest) == 32
    assert index.digest(tenant, "email", "ada@example.com", create=False) == digest
    assert index.digests(tenant, "email", ["ada@example.com", "bob@example.com"])[0] == digest
    assert index.digest(tenant, "email", "bob@example.com") != digest
    assert index.digest(tenant, "phone", "ada@example.com") != digest
    assert index.digest(other, "email", "ada@example.com") != digest
    # Not a plain hash, nor one under the tenant's own key itself: a key of its own per kind.
    tenant_key = keystore.subject_key(tenant, tenant)
    assert tenant_key is not None
    assert digest != hashlib.sha256(b"ada@example.com").digest()
    assert digest != hmac.new(tenant_key, b"ada@example.com", hashlib.sha256).digest()
    with pytest.raises(ValueError):
        index.digest(tenant, "a/b", "x")


def test_no_digest_of_a_destroyed_tenant_can_be_computed(keystore):
    index = BlindIndex(keystore)
    tenant, kept = uuid.uuid4(), uuid.uuid4()
    assert index.digest(tenant, "email", "ada@example.com") is not None
    survivor = index.digest(kept, "email", "ada@example.com")
    keystore.shred_tenant(tenant)
    assert index.digest(tenant, "email", "ada@example.com", create=False) is None
    assert index.digest(tenant, "email", "ada@example.com", create=True) is None
    assert index.digests(tenant, "email", ["ada@example.com"]) is None
    assert index.digest(kept, "email", "ada@example.com") == survivor
