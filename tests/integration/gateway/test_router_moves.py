"""The router during and after a tenant's move between cells (``services.tenant_move``): its keys
are refused with 503 and Retry-After while the move is in its window, then sent to the tenant's
new cell whatever region they name; everyone else's route as before. A real directory database,
stand-in cells (tests/integration/gateway/test_router_proxy.py's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from gateway import directory as directory_module
from gateway.router import MOVE_RETRY_AFTER, Router, RouterServer, make_handler
from kernel.config import Settings
from kernel.crypto import apikeys
from kernel.testing import free_port
from tests.integration.gateway.test_router_proxy import _serving, cells  # noqa: F401 - a fixture

SECRET = "router-moves-test-secret"


@pytest.fixture
def moving(
    world: Settings,
    cells: dict[str, int],  # noqa: F811 - the fixture imported above
) -> Iterator[tuple[str, Router, directory_module.Directory]]:
    directory_module.prepare(world)
    directory = directory_module.Directory(world)
    router = Router({r: f"http://127.0.0.1:{port}" for r, port in cells.items()}, directory, SECRET)
    port = free_port()
    server = RouterServer(("127.0.0.1", port), make_handler(router, timeout=10))
    _serving(server)
    yield f"http://127.0.0.1:{port}", router, directory
    server.shutdown()
    server.server_close()
    directory.close()


def _get(url: str, key: str) -> requests.Response:
    return requests.get(f"{url}/v1/tenant", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_a_moving_tenants_keys_are_refused_then_follow_it(
    moving: tuple[str, Router, directory_module.Directory],
    cells: dict[str, int],  # noqa: F811
) -> None:
    url, router, directory = moving
    tenant, bystander = str(uuid.uuid4()), str(uuid.uuid4())
    key, other_key = apikeys.generate("uk"), apikeys.generate("uk")
    directory.record(tenant, "uk")
    directory.record(bystander, "uk")
    router.refresh_moves()
    assert _get(url, key).json()["cell"] == cells["uk"]

    assert directory.begin_move(tenant, "uk", "in")
    assert not directory.begin_move(tenant, "uk", "in"), "one unfinished move a tenant"
    directory.set_moved_keys(tenant, [apikeys.keyed_hash(SECRET, key)])
    router.refresh_moves()
    refused = _get(url, key)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(MOVE_RETRY_AFTER)
    assert refused.headers["Content-Type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status"] == 503 and problem["request_id"] == refused.headers["X-Request-Id"]
    assert directory.moving(tenant) and not directory.moving(bystander)
    assert _get(url, other_key).json()["cell"] == cells["uk"], "others route as before"

    directory.cut_over(tenant, "in")
    router.refresh_moves()
    assert not directory.moving(tenant)
    assert directory.region_of(tenant) == "in"
    assert _get(url, key).json()["cell"] == cells["in"], "the uk key follows its tenant to in"
    assert _get(url, other_key).json()["cell"] == cells["uk"]

    directory.forget_moved_keys(tenant)
    router.refresh_moves()
    assert _get(url, key).json()["cell"] == cells["uk"], "a key without a move names its cell"


def test_a_rolled_back_move_routes_the_tenant_home(
    moving: tuple[str, Router, directory_module.Directory],
    cells: dict[str, int],  # noqa: F811
) -> None:
    url, router, directory = moving
    tenant, key = str(uuid.uuid4()), apikeys.generate("uk")
    directory.begin_move(tenant, "uk", "in")
    directory.set_moved_keys(tenant, [apikeys.keyed_hash(SECRET, key)])
    router.refresh_moves()
    assert _get(url, key).status_code == 503
    directory.set_step(tenant, "rolled_back", "rolled back by the operator")
    router.refresh_moves()
    assert directory.move_of(tenant)["outcome"] == "rolled_back"  # type: ignore[index]
    # The keys stay recorded until the mover forgets them; routed, not refused, meanwhile.
    assert _get(url, key).status_code != 503
    assert directory.begin_move(tenant, "uk", "in"), "a finished move is replaced by the next"
