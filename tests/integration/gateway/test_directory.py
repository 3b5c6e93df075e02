"""The router's directory: tenant id -> region, in a database of its own, on the data map."""

from __future__ import annotations

import uuid

from gateway import directory
from kernel import datamap
from kernel.config import Settings
from kernel.datamap.common import MIGRATIONS_TABLE


def test_a_tenant_is_recorded_once_and_found_by_its_id(world: Settings) -> None:
    directory.prepare(world)
    found = directory.Directory(world)
    try:
        tenant = str(uuid.uuid4())
        assert found.region_of(tenant) is None
        found.record(tenant, "in")
        found.record(tenant, "in")  # a retried sign-up's answer, recorded again
        assert found.region_of(tenant) == "in"
        assert found.region_of(tenant.upper()) == "in"
        assert found.region_of("not-an-id") is None
    finally:
        found.close()


def test_every_column_of_the_directory_is_on_the_data_map(world: Settings) -> None:
    directory.prepare(world)
    live = datamap.live_columns(world.database_dsn(directory.NAME))
    assert set(live) == {"tenant_regions", "tenant_moves", "moved_keys", "schema_migrations"}
    declared = (MIGRATIONS_TABLE, *directory.DATA_MAP.tables)
    assert datamap.undeclared_columns(declared, live) == []
