"""A cancelled tenant's reactivation once its grace has run out is refused, and the tenant stays
cancelled with its keys still working: accounts' entrypoints called through nameko's
``entrypoint_hook`` on the service running in this process, against real PostgreSQL and
RabbitMQ, with retention beside it (whose log of forgetting a service re-applies before it
serves) and no other service. The gateway's answer to the refusal, 409, is its table of
exceptions' (tests/unit/gateway/test_gateway_http.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from nameko.testing.services import entrypoint_hook

from kernel.errors import Conflict
from kernel.testing import wait_until
from services.accounts.service import AccountsService
from services.retention.service import RetentionService
from tests.e2e.conftest import SIGNUP


def test_reactivation_after_the_grace_period_is_refused(world, container_factory):
    # 0.00002 days is about 1.7 s.
    config = world.with_overrides(grace_days=0.00002).nameko_config()
    containers = [container_factory(cls, config) for cls in (RetentionService, AccountsService)]
    for container in containers:
        container.start()
    accounts = containers[-1]

    with entrypoint_hook(accounts, "sign_up") as sign_up:
        created = sign_up(SIGNUP)
    actor = {"tenant_id": created["tenant"]["id"], "agent_id": created["agent"]["id"]}
    with entrypoint_hook(accounts, "cancel_tenant") as cancel_tenant:
        cancelled = cancel_tenant(actor)
    assert cancelled["status"] == "cancelled"
    destroy_after = dt.datetime.fromisoformat(cancelled["destroy_after"])
    assert destroy_after - dt.datetime.now(dt.UTC) < dt.timedelta(seconds=5)

    wait_until(
        lambda: dt.datetime.now(dt.UTC) > destroy_after + dt.timedelta(milliseconds=200),
        timeout=10,
        what="the end of the grace period",
    )
    with entrypoint_hook(accounts, "reactivate_tenant") as reactivate_tenant:
        with pytest.raises(Conflict):
            reactivate_tenant(actor)
    with entrypoint_hook(accounts, "credential") as credential:
        assert credential(created["credential"]["key_id"])["tenant_status"] == "cancelled"
    with entrypoint_hook(accounts, "get_tenant") as get_tenant:
        assert get_tenant(actor["tenant_id"])["status"] == "cancelled"
