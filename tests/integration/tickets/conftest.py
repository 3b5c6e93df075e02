"""The tickets store the tickets integration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.stores import prepare_databases
from kernel.uow import EventSourcedStore
from services.tickets.events import REGISTRY
from services.tickets.projections import PROJECTIONS
from tests.support.object_store import s3_server  # noqa: F401 (a fixture)

MIGRATIONS = Path(__file__).resolve().parents[3] / "services/tickets/migrations"


@pytest.fixture
def store(world) -> Iterator[EventSourcedStore]:
    prepare_databases(world, "tickets", MIGRATIONS)
    keys = Database(world.database_dsn("tickets", "keys"))
    data = Database(world.database_dsn("tickets"))
    keystore = Keystore(keys, world.master_keys, cache_seconds=world.key_cache_seconds)
    yield EventSourcedStore("tickets", data, REGISTRY, FieldCipher(keystore), PROJECTIONS)
    data.close()
    keys.close()
