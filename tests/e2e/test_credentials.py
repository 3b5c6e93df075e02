"""Authentication from the gateway's own credentials projection, on a whole platform with a
second gateway process on a port of its own (the two share only the gateway's database).

- What goes through the API is in force for every gateway once it answers: shown with
  accounts' events kept away from the gateways, so nothing but the route's own write can
  explain it.
- What happens elsewhere (a change accounts makes without the gateway) takes effect when its
  event arrives.
- A projection being rebuilt refuses every key (503) until it is done, and a key revoked
  before the rebuild stays refused after it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import pytest
import requests
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.subscriptions import CREDENTIALS
from kernel import topology
from kernel.testing import Infrastructure, free_port, wait_until, world_env
from services import platform
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import assert_problem, create_agent, dump, ok, restore, sign_up


@dataclass
class Other:
    """A gateway process of its own, on a port of its own."""

    env: dict[str, str]
    url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> None:
        self.processes.update(
            platform.start_processes(self.env, gateway_processes=1, only=("gateway-1",))
        )
        assert platform.wait_until_ready(self.url, self.processes, timeout=60), "no gateway"

    def stop(self) -> None:
        platform.stop_processes(self.processes)
        self.processes.clear()


@pytest.fixture(scope="module")
def two(infrastructure: Infrastructure) -> Iterator[tuple[Stack, Other]]:
    """The platform (its gateways on one port), and one more gateway process on another."""
    with running_stack(infrastructure) as stack:
        port = free_port()
        env = {**world_env(stack.settings), "LEDGERDESK_GATEWAY_PORT": str(port)}
        other = Other(env, f"http://127.0.0.1:{port}")
        other.start()
        try:
            yield stack, other
        finally:
            other.stop()


def via(url: str, method: str, path: str, key: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=15, **kwargs
    )


@contextlib.contextmanager
def events_kept_from_the_gateways(stack: Stack) -> Iterator[None]:
    """Accounts' credential events reach no gateway while inside: the queue stays consumed
    and empty, so the gateways keep trusting their projection."""
    with Connection(stack.settings.amqp_uri) as conn:
        channel = conn.default_channel
        for key in CREDENTIALS.bindings:
            channel.queue_unbind(CREDENTIALS.queue, topology.EVENTS_EXCHANGE, key)
        try:
            yield
        finally:
            for key in CREDENTIALS.bindings:
                channel.queue_bind(CREDENTIALS.queue, topology.EVENTS_EXCHANGE, key)


def test_what_the_api_ends_through_one_gateway_every_other_refuses_when_it_answers(two):
    stack, second = two
    other = second.url
    admin_key = sign_up(stack)["api_key"]
    doomed = create_agent(stack, admin_key)
    leaving = create_agent(stack, admin_key)
    # Issued through one gateway, accepted by the other at once.
    assert via(other, "GET", "/v1/me", doomed["api_key"]).status_code == 200
    assert via(other, "GET", "/v1/me", leaving["api_key"]).status_code == 200
    me = ok(via(other, "GET", "/v1/me", doomed["api_key"]))

    with events_kept_from_the_gateways(stack):
        revoked = stack.call(
            "DELETE", f"/v1/agents/{doomed['id']}/api-keys/{me['key_id']}", key=admin_key
        )
        assert revoked.status_code == 204, revoked.text
        assert_problem(via(other, "GET", "/v1/me", doomed["api_key"]), 401)

        ok(stack.call("DELETE", f"/v1/agents/{leaving['id']}", key=admin_key))
        assert_problem(via(other, "GET", "/v1/me", leaving["api_key"]), 401)

        # A cancelled tenant: the other gateway serves only what a cancelled tenant may do.
        assert stack.call("DELETE", "/v1/tenant", key=admin_key).status_code == 202
        assert_problem(via(other, "GET", "/v1/tickets", admin_key), 403)
        assert via(other, "GET", "/v1/tenant", admin_key).status_code == 200
        ok(stack.call("POST", "/v1/tenant/reactivate", key=admin_key))
        assert via(other, "GET", "/v1/tickets", admin_key).status_code == 200

        # A claim ends every key the agent held, on every gateway.
        claimer = create_agent(stack, admin_key)
        own = stack.claim_key(claimer["api_key"])
        assert_problem(via(other, "GET", "/v1/me", claimer["api_key"]), 401)
        assert ok(via(other, "GET", "/v1/me", own))["key_is_own"] is True


def test_a_change_made_elsewhere_takes_effect_when_its_event_arrives(two):
    stack, second = two
    other = second.url
    admin_key = sign_up(stack)["api_key"]
    admin_me = ok(stack.call("GET", "/v1/me", key=admin_key))
    agent = create_agent(stack, admin_key)
    agent_me = ok(via(other, "GET", "/v1/me", agent["api_key"]))
    actor = {k: admin_me[k] for k in ("tenant_id", "agent_id", "key_id")}
    # Accounts revokes the key without the gateway: only its event can tell the gateways.
    with ClusterRpcProxy({"AMQP_URI": stack.settings.amqp_uri}) as cluster:
        cluster.accounts.revoke_api_key(actor, agent["id"], agent_me["key_id"])
    for url in (stack.url, other):
        wait_until(
            lambda url=url: via(url, "GET", "/v1/me", agent["api_key"]).status_code == 401,
            timeout=15,
            what="the revocation's event to reach the gateway",
        )


def test_a_tenant_change_retried_after_its_first_write_here_failed_is_in_force_on_the_409(two):
    """A cancellation whose answer was lost (accounts committed it, the gateway's write failed):
    the client retries, accounts says 409, and the gateway takes accounts' state before it
    answers, so the tenant the client was told is cancelled is served as cancelled."""
    stack, second = two
    other = second.url
    admin_key = sign_up(stack)["api_key"]
    me = ok(stack.call("GET", "/v1/me", key=admin_key))
    actor = {k: me[k] for k in ("tenant_id", "agent_id", "key_id")}
    with events_kept_from_the_gateways(stack):
        # The first request's accounts half, without its write here.
        with ClusterRpcProxy({"AMQP_URI": stack.settings.amqp_uri}) as cluster:
            cluster.accounts.cancel_tenant(actor)
        assert via(other, "GET", "/v1/tickets", admin_key).status_code == 200  # not yet known
        assert_problem(stack.call("DELETE", "/v1/tenant", key=admin_key), 409)
        assert_problem(via(other, "GET", "/v1/tickets", admin_key), 403)

        with ClusterRpcProxy({"AMQP_URI": stack.settings.amqp_uri}) as cluster:
            cluster.accounts.reactivate_tenant(actor)
        assert_problem(via(other, "GET", "/v1/tickets", admin_key), 403)  # not yet known
        assert_problem(stack.call("POST", "/v1/tenant/reactivate", key=admin_key), 409)
        assert via(other, "GET", "/v1/tickets", admin_key).status_code == 200


def test_a_rebuilding_projection_refuses_every_key_until_it_is_done(two):
    stack, second = two
    other = second.url
    admin_key = sign_up(stack)["api_key"]
    kept = create_agent(stack, admin_key)
    gone = create_agent(stack, admin_key)
    ok(stack.call("DELETE", f"/v1/agents/{gone['id']}", key=admin_key))

    # With accounts away, a requested rebuild cannot finish: keys are refused, never accepted
    # from rows that may be stale.
    stack.stop("accounts")
    try:
        subprocess.run(
            [sys.executable, "-m", "gateway.credentials", "rebuild"],
            env=world_env(stack.settings),
            check=True,
            capture_output=True,
            cwd=platform.ROOT,
        )
        for url in (stack.url, other):
            problem = assert_problem(via(url, "GET", "/v1/me", kept["api_key"]), 503)
            assert "credentials" in problem["detail"]
            assert_problem(via(url, "GET", "/v1/me", gone["api_key"]), 503)
    finally:
        stack.start("accounts")

    wait_until(
        lambda: via(other, "GET", "/v1/me", kept["api_key"]).status_code == 200,
        timeout=60,
        what="a gateway to rebuild the credentials from accounts",
    )
    assert via(stack.url, "GET", "/v1/me", kept["api_key"]).status_code == 200
    assert_problem(via(other, "GET", "/v1/me", gone["api_key"]), 401)
    assert_problem(via(stack.url, "GET", "/v1/me", admin_key + "x"), 401)


def test_a_gateway_database_restored_from_before_a_revocation_accepts_the_key_no_more(
    two, tmp_path
):
    stack, second = two
    admin_key = sign_up(stack)["api_key"]
    agent = create_agent(stack, admin_key)
    me = ok(stack.call("GET", "/v1/me", key=agent["api_key"]))
    backup = dump(stack, tmp_path, "gateway")
    revoked = stack.call(
        "DELETE", f"/v1/agents/{agent['id']}/api-keys/{me['key_id']}", key=admin_key
    )
    assert revoked.status_code == 204, revoked.text

    gateways = [name for name in stack.processes if name.startswith("gateway")]
    platform.stop_processes({name: stack.processes.pop(name) for name in gateways})
    second.stop()
    restore(stack, "gateway", backup)
    with psycopg2.connect(stack.settings.database_dsn("gateway")) as conn, conn.cursor() as cur:
        cur.execute("SELECT active FROM credential_keys WHERE key_id = %s", (me["key_id"],))
        assert cur.fetchone() == (True,)  # the restore really brought the key back
    conn.close()
    stack.processes.update(platform.start_processes(world_env(stack.settings), only=gateways))
    assert platform.wait_until_ready(stack.url, stack.processes, timeout=60)
    second.start()

    for url in (stack.url, second.url):
        assert_problem(via(url, "GET", "/v1/me", agent["api_key"]), 401)
        assert via(url, "GET", "/v1/me", admin_key).status_code == 200
