"""The accounts store the accounts integration tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

import services.accounts
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.accounts import handlers
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS

MIGRATIONS = Path(services.accounts.__file__).parent / "migrations"


@pytest.fixture
def accounts(world) -> EventSourcedStore:
    """Accounts' store as the service builds it, in this test's own world, with its first
    policy published."""
    store = open_store(world, "accounts", REGISTRY, PROJECTIONS, MIGRATIONS)
    with store.unit_of_work() as uow:
        handlers.ensure_first_policy(uow, world)
    return store
