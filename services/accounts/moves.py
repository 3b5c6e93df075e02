"""What a move between region cells asks of accounts (``services.tenant_move``): the tenant's
new region recorded in the target cell, in-process, on its accounts databases.

The mover runs no accounts service of its own: it opens the target's store as a service does
and runs the command in one unit of work; the target's accounts relay publishes the outbox row,
so billing there learns the region as it learns a sign-up's.
"""

from __future__ import annotations

from kernel import db as kdb
from kernel.commands import load_command
from kernel.config import Settings
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.uow import EventSourcedStore
from services.accounts import handlers
from services.accounts.commands import ChangeTenantRegionV1
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS

SERVICE = "accounts"


def record_region(cell: Settings, tenant_id: str, region: str) -> bool:
    """The tenant is hosted in ``region`` from now on, as ``cell``'s accounts records it (the
    cell serves only its own regions: another is refused); False when it was recorded before."""
    command = load_command(ChangeTenantRegionV1, {"tenant_id": tenant_id, "region": region})
    data = kdb.Database(cell.database_dsn(SERVICE), maxconn=1)
    keys = kdb.Database(cell.database_dsn(SERVICE, "keys"), maxconn=1)
    try:
        # Loading the tenant opens its company, under the tenant's key in this cell's keystore.
        keystore = Keystore(keys, cell.master_keys, cache_seconds=cell.key_cache_seconds)
        store = EventSourcedStore(SERVICE, data, REGISTRY, FieldCipher(keystore), PROJECTIONS)
        with store.unit_of_work() as uow:
            return handlers.change_tenant_region(uow, command, cell)
    finally:
        data.close()
        keys.close()
