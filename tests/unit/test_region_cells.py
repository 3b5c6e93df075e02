"""``make run``'s cells: each region's platform apart from the others (``services.platform``)."""

from __future__ import annotations

import base64

import pytest

from gateway.directory_sync import cell_accounts_dsn
from kernel.config import ConfigurationError, Settings
from services import platform


def test_each_cell_has_its_own_databases_vhost_region_and_ports() -> None:
    settings = Settings.from_env(
        {
            "LEDGERDESK_AMQP_URI": "amqp://u:p@rabbit-1:5672/;amqp://u:p@rabbit-2:5672/",
            "LEDGERDESK_DATABASE_PREFIX": "ledgerdesk",
        }
    )
    uk, india = (platform.cell_settings(settings, r, n) for n, r in enumerate(("uk", "in")))

    assert (uk.database_prefix, india.database_prefix) == ("ledgerdesk_uk", "ledgerdesk_in")
    assert uk.database_name("accounts") == "ledgerdesk_uk_accounts"
    assert india.amqp_uri == (
        "amqp://u:p@rabbit-1:5672/ledgerdesk_in;amqp://u:p@rabbit-2:5672/ledgerdesk_in"
    )
    assert platform.cell_vhost(india) == "ledgerdesk_in"
    assert (uk.regions, india.regions) == (("uk",), ("in",))
    # The router keeps the platform's ports; the cells take the ones after it.
    assert (uk.gateway_port, india.gateway_port) == (8001, 8002)
    assert (uk.mail_in_port, india.mail_in_port) == (2526, 2527)
    assert india.ops_port == uk.ops_port + platform.OPS_PORTS_PER_CELL
    assert "127.0.0.1/32" in india.trusted_proxies


def test_the_router_reads_each_cells_tenants_where_the_cell_keeps_them() -> None:
    settings = Settings.from_env({"LEDGERDESK_DATABASE_PREFIX": "ledgerdesk_router"})
    cells = {
        region: platform.cell_settings(
            settings.with_overrides(database_prefix=f"elsewhere{n}"), region, n
        )
        for n, region in enumerate(("uk", "in"))
    }
    router = Settings.from_env(platform.router_env(settings, cells), service="router")

    assert list(router.cells) == ["uk", "in"]
    for region, cell in cells.items():
        assert cell_accounts_dsn(router, region) == cell.database_dsn("accounts")


def test_a_cell_named_in_cell_master_keys_gets_its_own_master_keys() -> None:
    own = base64.b64encode(bytes(range(32))).decode()
    old = base64.b64encode(bytes(range(1, 33))).decode()
    settings = Settings.from_env({"LEDGERDESK_CELL_MASTER_KEYS": f"in=in-2:{own},in-1:{old}"})
    uk, india = (platform.cell_settings(settings, r, n) for n, r in enumerate(("uk", "in")))
    assert india.master_keys == {"in-2": bytes(range(32)), "in-1": bytes(range(1, 33))}
    assert india.current_master_key_id == "in-2"
    assert uk.master_keys == settings.master_keys, "a cell not named keeps the platform's"
    # Handed to the cell's processes as their own LEDGERDESK_MASTER_KEY.
    assert Settings.from_env(india.to_env()).master_keys == india.master_keys
    for wrong in ("in", f"in=in-1:{own};in=in-2:{own}", "=k:" + own, "in=k:bm90MzI="):
        with pytest.raises(ConfigurationError):
            Settings.from_env({"LEDGERDESK_CELL_MASTER_KEYS": wrong})
