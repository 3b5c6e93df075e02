"""RabbitMQ stopped for 15 s, and PostgreSQL stopped and started again, while clients write
tickets: the gateway answers 503 while writes cannot be accepted (never a hang, never another
5xx), every service reconnects by itself, and no accepted write is lost.

Each test runs on a broker or database server of its own (``nodes``): the shared ones serve
every other test and are never stopped.
"""

from __future__ import annotations

import time

import pytest

from kernel.testing import Infrastructure, wait_until
from tests.reliability.load import (
    TicketLoad,
    assert_accepted_writes_kept,
    fast_stack,
    ready,
    ticket_writer,
    wait_for_progress,
)
from tests.reliability.nodes import postgres_server, rabbit_node

pytestmark = pytest.mark.reliability

OUTAGE_SECONDS = 15.0
CLIENTS = 8


def hold_outage(load: TicketLoad, seconds: float) -> int:
    """Keep the dependency down for ``seconds`` (the fault's length, not a wait for a result);
    returns how many writes were refused with 503 meanwhile."""
    before = load.outcomes.statuses[503]
    time.sleep(seconds)
    return load.outcomes.statuses[503] - before


def check(load: TicketLoad, settings, tenant_id: str, unavailable: int, what: str) -> None:
    outcomes = load.outcomes
    print(f"\n{what}: {outcomes.summary()}; 503 while down: {unavailable}")
    assert unavailable > 0, "no write was refused while the dependency was down"
    assert outcomes.unexpected == {}, outcomes.summary()
    assert outcomes.hangs == 0, outcomes.summary()
    assert outcomes.refused == 0, outcomes.summary()
    assert_accepted_writes_kept(settings, tenant_id, outcomes.accepted)


@pytest.mark.timeout(400)
def test_rabbitmq_stopped_for_fifteen_seconds_under_load(infrastructure):
    with (
        rabbit_node() as node,
        fast_stack(node.infrastructure(infrastructure.database_url)) as stack,
    ):
        tenant_id, key, contact_id = ticket_writer(stack)
        with TicketLoad(stack.url, key, contact_id, clients=CLIENTS) as load:
            wait_for_progress(load, 100)
            load.outcomes.phase = "broker stopped"
            node.stop_app()
            unavailable = hold_outage(load, OUTAGE_SECONDS)
            node.start_app()
            load.outcomes.phase = "broker started again"
            # Nothing restarts the services: they reconnect on their own, or writes never resume.
            wait_for_progress(load, 200, timeout=180, what="writes accepted after the outage")
            wait_until(lambda: ready(stack), timeout=60, what="readiness after the outage")
        check(load, stack.settings, tenant_id, unavailable, "RabbitMQ stopped for 15 s")


@pytest.mark.timeout(400)
def test_postgresql_stopped_and_started_again_under_load(infrastructure):
    with postgres_server() as server:
        own = Infrastructure(server.url, infrastructure.amqp_base, infrastructure.management_url)
        with fast_stack(own) as stack:
            tenant_id, key, contact_id = ticket_writer(stack)
            with TicketLoad(stack.url, key, contact_id, clients=CLIENTS) as load:
                wait_for_progress(load, 100)
                load.outcomes.phase = "database stopped"
                server.stop()
                unavailable = hold_outage(load, OUTAGE_SECONDS)
                server.start()
                load.outcomes.phase = "database started again"
                wait_for_progress(load, 200, timeout=180, what="writes accepted after the restart")
                wait_until(lambda: ready(stack), timeout=60, what="readiness after the restart")
            check(load, stack.settings, tenant_id, unavailable, "PostgreSQL stopped and started")
