"""Keys of many subjects loaded in one round trip, as a page of tickets needs them."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from kernel.crypto.fields import FieldCipher, is_erased, stored_json
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import WrongTenant
from kernel.db import Database, ensure_database
from kernel.migrate import KEYSTORE, migrate

K1 = os.urandom(32)


class CountingDatabase(Database):
    """Counts the transactions the keystore opens: each is at least one round trip."""

    transactions = 0

    @contextlib.contextmanager
    def transaction(self):
        self.transactions += 1
        with super().transaction() as cur:
            yield cur


@pytest.fixture
def dsn(world) -> str:
    ensure_database(world.database_url, world.database_name("crypto", "preload"))
    dsn = world.database_dsn("crypto", "preload")
    migrate(dsn, [KEYSTORE])
    return dsn


@pytest.fixture
def database(dsn):
    """Opens databases on the keystore's, each counting its transactions, closed at the end."""
    opened: list[CountingDatabase] = []

    def open_database() -> CountingDatabase:
        opened.append(CountingDatabase(dsn))
        return opened[-1]

    yield open_database
    for db in opened:
        db.close()


def test_one_round_trip_loads_a_page_of_keys_that_then_open_without_the_database(database):
    writer = Keystore(database(), {"k1": K1})
    tenant, other_tenant, ann = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    top = [uuid.uuid4() for _ in range(3)]
    children = [uuid.uuid4() for _ in range(2)]
    erased, unknown, foreign = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    keys = {s: writer.subject_key(tenant, s) for s in top}
    keys |= {c: writer.subject_key(tenant, c, parent_id=ann) for c in children}
    writer.subject_key(tenant, erased)
    writer.shred_subject(erased)
    writer.subject_key(other_tenant, foreign)

    db = database()
    reader = Keystore(db, {"k1": K1}, cache_seconds=3600)
    reader.preload([*top, *children, erased, unknown, str(foreign)])
    assert db.transactions == 1

    for subject, key in keys.items():
        assert reader.subject_key(tenant, subject, create=False) == key
    assert reader.subject_key(tenant, erased, create=False) is None
    with pytest.raises(WrongTenant):  # what it was loaded as does not widen what it opens
        reader.subject_key(tenant, foreign, create=False)
    assert db.transactions == 1
    # A subject without a key is the full path's to answer, as before.
    assert reader.subject_key(tenant, unknown, create=False) is None
    assert db.transactions == 2

    reader.preload([*top, *children])  # all cached: nothing to ask
    assert db.transactions == 2


def test_a_keystore_that_caches_nothing_loads_nothing_ahead(database):
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    Keystore(database(), {"k1": K1}).subject_key(tenant, subject)
    db = database()
    Keystore(db, {"k1": K1}, cache_seconds=0).preload([subject])
    assert db.transactions == 0


def test_rows_opened_together_read_as_each_alone(database):
    writer = FieldCipher(Keystore(database(), {"k1": K1}))
    tenant, ann = uuid.uuid4(), uuid.uuid4()
    tickets = [uuid.uuid4() for _ in range(4)]
    rows = []
    for n, ticket in enumerate(tickets):
        sealed = writer.encrypt_fields(
            {"subject": f"subject {n}", "body": f"body {n}"},
            ["subject", "body"],
            tenant,
            ticket,
            parent_id=ann,
        )
        rows.append({name: stored_json(value) for name, value in sealed.items()})
    writer.keystore.shred_subject(tickets[2])
    rows.append({"subject": None, "body": "not encrypted"})

    db = database()
    together = FieldCipher(Keystore(db, {"k1": K1}, cache_seconds=3600))
    opened = together.open_stored_rows(tenant, rows)
    assert db.transactions == 1
    alone = FieldCipher(Keystore(database(), {"k1": K1}, cache_seconds=0))
    assert opened == [alone.open_stored(tenant, row) for row in rows]
    assert opened[0] == {"subject": "subject 0", "body": "body 0"}
    assert all(is_erased(v) for v in opened[2].values())
    assert opened[4] == {"subject": None, "body": "not encrypted"}
