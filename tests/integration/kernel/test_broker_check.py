"""Readiness asks the broker on one kept connection, against the real RabbitMQ: probes every few
seconds do not open a connection each, a connection the broker closed is replaced within the
same check, and an unreachable broker answers no."""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

from kernel.config import Settings
from kernel.observability import BrokerCheck
from kernel.testing import Infrastructure, wait_until


def named(infrastructure: Infrastructure, name: str) -> list[dict[str, Any]]:
    """The broker's connections that call themselves ``name``."""
    return [
        connection
        for connection in infrastructure.management("GET", "/api/connections").json()
        if connection.get("client_properties", {}).get("connection_name") == name
    ]


def test_probes_share_one_connection_and_a_closed_one_is_replaced(
    infrastructure: Infrastructure, world: Settings
) -> None:
    name = f"test readiness {uuid.uuid4().hex[:8]}"
    check = BrokerCheck(world.amqp_uri, name)
    try:
        assert [check() for _ in range(20)] == [True] * 20
        assert check.connections_opened == 1
        wait_until(lambda: len(named(infrastructure, name)) == 1, what="the kept connection")

        # The broker drops it (a restart, a forced close): the next check connects again.
        (connection,) = named(infrastructure, name)
        path = "/api/connections/" + urllib.parse.quote(connection["name"], safe="")
        # Answered once the broker sent its close; the client reads it on its next round trip.
        infrastructure.management("DELETE", path)
        assert check() is True
        assert check.connections_opened == 2
        assert [check() for _ in range(5)] == [True] * 5
        assert check.connections_opened == 2
    finally:
        check.close()
    wait_until(lambda: not named(infrastructure, name), what="the connection released")


def test_an_unreachable_broker_is_not_ready() -> None:
    # Port 1: nothing listens there, so the connection is refused at once.
    check = BrokerCheck("amqp://guest:guest@127.0.0.1:1//", "test unreachable", timeout=1)
    assert (check(), check()) == (False, False)
    assert check.connections_opened == 0
