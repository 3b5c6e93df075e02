"""``make run``'s cells: each region's platform apart from the others (``services.platform``)."""

from __future__ import annotations

from gateway.directory_sync import cell_accounts_dsn
from kernel.config import Settings
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
