"""A service's store on its databases: created and migrated (``prepare_databases``) and opened
(``open_store``), its keystore beside it. Nothing here needs nameko: the services' dependency
(``kernel.nameko_adapters.store``), the platform's ``prepare``, tools and tests all open stores
this way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kernel import db as kdb
from kernel import migrate
from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.envelope import EventRegistry
from kernel.projections import Projection
from kernel.uow import EventSourcedStore


def prepare_databases(settings: Settings, service: str, migrations: Path | None) -> None:
    """Create the service's data and keystore databases if missing and migrate both."""
    for purpose, components in (
        ("", [migrate.STORE] + ([(service, migrations)] if migrations else [])),
        ("keys", [migrate.KEYSTORE]),
    ):
        kdb.ensure_database(settings.server_dsn, settings.database_name(service, purpose))
        migrate.migrate(settings.database_dsn(service, purpose), components)


def open_store(
    settings: Settings,
    service: str,
    registry: EventRegistry,
    projections: Sequence[Projection] = (),
    migrations: Path | None = None,
    maxconn: int = 10,
    prepare: bool = True,
) -> EventSourcedStore:
    """A service's store on ``settings``' databases: its events, read models and outbox (with
    the service's ``migrations``), and its keystore; created and migrated first unless
    ``prepare`` is False (when a running service owns them)."""
    if prepare:
        prepare_databases(settings, service, migrations)
    keystore = Keystore(
        kdb.Database(settings.database_dsn(service, "keys"), maxconn=maxconn),
        settings.master_keys,
        cache_seconds=settings.key_cache_seconds,
    )
    return EventSourcedStore(
        service,
        kdb.Database(settings.database_dsn(service), maxconn=maxconn),
        registry,
        FieldCipher(keystore),
        projections,
    )
