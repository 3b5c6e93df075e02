"""One broker user per kind of process, with the permissions deploy/rabbitmq/definitions.json
gives it (``services.broker_definitions.permissions``): the whole platform runs on them, a
privacy request crossing every service completes, an operator lists dead letters, and a
process's user is refused what belongs to another service."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator

import amqp
import psycopg2
import pytest
from kombu import Connection

from kernel import topology
from kernel.config import Settings
from kernel.deadletters import list_dead_letters
from kernel.envelope import new_envelope
from kernel.nameko_adapters.proxy import DIRECT_REPLY_TO
from kernel.nameko_adapters.rpc_queues import rpc_queue
from kernel.testing import Infrastructure, wait_until, world_env
from services.broker_definitions import PROCESSES, permissions, topic_permissions, user_of
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import admin, completed, create_contact, file, ok

RPC_EXCHANGE = rpc_queue("any").exchange.name


class BrokerUsers:
    """Users for one world's vhost, named after it (users are the broker's, not a vhost's, and
    worlds run side by side), each with its process's permissions from the definitions."""

    def __init__(self, infrastructure: Infrastructure):
        self.infrastructure = infrastructure
        self.passwords: dict[str, str] = {}
        self.vhost = ""

    def create(self, settings: Settings) -> dict[str, str]:
        self.vhost = settings.database_prefix
        vhost = urllib.parse.quote(self.vhost, safe="")
        uris = {}
        for process in PROCESSES:
            name = self.name(process)
            password = secrets.token_urlsafe(16)
            self.passwords[name] = password
            self.infrastructure.management(
                "PUT", f"/api/users/{name}", json={"password": password, "tags": ""}
            )
            granted = permissions(process)
            self.infrastructure.management(
                "PUT",
                f"/api/permissions/{vhost}/{name}",
                json={"configure": granted.configure, "write": granted.write, "read": granted.read},
            )
            for topic in topic_permissions(process):
                self.infrastructure.management(
                    "PUT",
                    f"/api/topic-permissions/{vhost}/{name}",
                    json={"exchange": topic.exchange, "write": topic.write, "read": topic.read},
                )
            uris[process] = self.uri(process)
        return uris

    def name(self, process: str) -> str:
        return f"{self.vhost}.{user_of(process)}"

    def uri(self, process: str) -> str:
        base = urllib.parse.urlsplit(self.infrastructure.amqp_base)
        name = self.name(process)
        return (
            f"amqp://{urllib.parse.quote(name, safe='')}:{self.passwords[name]}"
            f"@{base.hostname}:{base.port or 5672}/{self.vhost}"
        )

    def delete(self) -> None:
        for name in self.passwords:
            with contextlib.suppress(Exception):
                self.infrastructure.management("DELETE", f"/api/users/{name}")


@pytest.fixture(scope="module")
def users(infrastructure: Infrastructure) -> Iterator[BrokerUsers]:
    created = BrokerUsers(infrastructure)
    try:
        yield created
    finally:
        created.delete()


@pytest.fixture(scope="module")
def least_privilege_stack(infrastructure: Infrastructure, users: BrokerUsers) -> Iterator[Stack]:
    # The world is prepared (databases, topology) with the administrator's URI, as the prepare
    # job does; every process then connects as its own user.
    # And consumers take a message only from the user that may send it (kernel.broker_users).
    with running_stack(
        infrastructure, amqp_uris=users.create, LEDGERDESK_BROKER_USER_CHECK="true"
    ) as running:
        yield running


def connected_users(infrastructure: Infrastructure, vhost: str) -> set[str]:
    connections = infrastructure.management("GET", "/api/connections").json()
    return {c["user"] for c in connections if c.get("vhost") == vhost}


def test_the_platform_runs_with_one_least_privileged_user_per_process(
    least_privilege_stack: Stack, users: BrokerUsers, infrastructure: Infrastructure
) -> None:
    stack = least_privilege_stack
    key, _agent = admin(stack)
    contact = create_contact(stack, key)
    ok(
        stack.call(
            "POST",
            "/v1/tickets",
            key=key,
            json={"subject": "Broker users", "body": "hello", "requester_id": contact["id"]},
        ),
        201,
    )
    # Retention asks every service by events and hears their answers: every consumer queue,
    # the relays' publishing and the RPC between them, each under its own user.
    # Retention gathers an access export from every service over RPC, under its own user.
    access = file(stack, key, {"type": "access", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, access["id"], timeout=90)["status"] == "completed"
    exported = stack.call("GET", f"/v1/privacy/requests/{access['id']}/export", key=key)
    assert exported.status_code == 200, exported.text
    parts = exported.json()["services"]
    assert parts["accounts"]["contact"]["email"] == contact["email"]
    assert [t["subject"] for t in parts["tickets"]["tickets_requested"]] == ["Broker users"]
    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, filed["id"], timeout=90)["status"] == "completed"
    # The gateway lists every service's dead letters for the operator.
    listed = stack.call("GET", "/v1/operator/dead-letters", key=stack.settings.operator_token)
    assert listed.status_code == 200, listed.text
    # Every process is connected, as its own user and no other (the statistics lag a little).
    expected = {users.name(p) for p in PROCESSES}
    found = wait_until(
        lambda: (
            connected_users(infrastructure, users.vhost) >= expected
            and connected_users(infrastructure, users.vhost)
        ),
        timeout=30,
        what="a connection of every process's user",
    )
    assert found == expected
    assert all(process.poll() is None for process in stack.processes.values())


@pytest.mark.parametrize(
    ("process", "operation"),
    [
        ("tickets", "consume another service's queue"),
        ("tickets", "delete another service's queue"),
        ("billing", "read another service's dead letters"),
        ("gateway", "delete a service's queue"),
        ("tickets", "delete the events exchange"),
        ("tickets", "forge a dead letter"),
        ("tickets", "delete the RPC exchange"),
        ("gateway", "delete the RPC exchange"),
        ("retention", "declare the RPC exchange"),
        ("accounts", "declare a standalone client's reply queue"),
    ],
)
def test_a_process_user_is_refused_what_belongs_to_another(
    least_privilege_stack: Stack, users: BrokerUsers, process: str, operation: str
) -> None:
    with Connection(users.uri(process), connect_timeout=5) as conn:
        channel = conn.channel()
        with pytest.raises(amqp.exceptions.AccessRefused):
            if operation == "consume another service's queue":
                channel.basic_get("billing.privacy", no_ack=False)
            elif operation == "delete another service's queue":
                channel.queue_delete("audit.ledger")
            elif operation == "read another service's dead letters":
                channel.basic_get("tickets.privacy.dead", no_ack=False)
            elif operation == "delete the events exchange":
                channel.exchange_delete(topology.EVENTS_EXCHANGE)
            elif operation == "delete the RPC exchange":
                # Every call between services would be unroutable until the next prepare.
                channel.exchange_delete(RPC_EXCHANGE)
            elif operation == "declare the RPC exchange":
                # What nameko's RPC consumer and standalone client do as they start.
                channel.exchange_declare(RPC_EXCHANGE, "topic", durable=True, auto_delete=False)
            elif operation == "declare a standalone client's reply queue":
                channel.queue_declare(
                    "rpc.reply-standalone_rpc_proxy-0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
                    auto_delete=True,
                )
            elif operation == "forge a dead letter":
                channel.confirm_select()
                channel.basic_publish_confirm(
                    amqp.Message("{}"), topology.DEAD_LETTER_EXCHANGE, "billing.privacy"
                )
            else:
                channel.queue_delete("tickets.privacy")
    # What the refused user owns, it may use (and the RPC exchange is still there).
    own = {"billing": "billing.privacy.dead", "retention": "retention.answers"}.get(
        process, f"{process}.privacy"
    )
    with Connection(users.uri(process), connect_timeout=5) as conn:
        channel = conn.channel()
        _name, _count, _consumers = channel.queue_declare(own, passive=True)
        channel.exchange_declare(RPC_EXCHANGE, "topic", passive=True)


def test_a_process_publishes_only_its_own_events(
    least_privilege_stack: Stack, users: BrokerUsers
) -> None:
    """Write on the events exchange is limited by routing key: tickets may publish a
    ``tickets.*`` event, never one in retention's name."""
    with Connection(users.uri("tickets"), connect_timeout=5) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(
            amqp.Message("{}"), topology.EVENTS_EXCHANGE, "tickets.nothing_listens"
        )
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.basic_publish_confirm(
                amqp.Message("{}"), topology.EVENTS_EXCHANGE, "retention.privacy_command"
            )


@pytest.mark.parametrize(
    ("exchange", "key"),
    [(topology.EVENTS_EXCHANGE, "#"), (topology.EVENTS_EXCHANGE, "billing.*"), ("nameko-rpc", "#")],
)
def test_a_process_cannot_bind_its_own_queue_to_hear_what_is_not_its(
    least_privilege_stack: Stack, users: BrokerUsers, exchange: str, key: str
) -> None:
    """Binding keys are checked too: tickets may not hear every event, nor RPC traffic (every
    data-subject export passes there)."""
    with Connection(users.uri("tickets"), connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_declare("tickets.eavesdropping", auto_delete=True)
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.queue_bind("tickets.eavesdropping", exchange, key)
        conn.channel().queue_delete("tickets.eavesdropping")


def test_a_service_calls_only_the_methods_it_uses(
    least_privilege_stack: Stack, users: BrokerUsers
) -> None:
    """Tickets asks accounts to describe a subject; it may not ask accounts for an API key."""
    with Connection(users.uri("tickets"), connect_timeout=5) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(amqp.Message("{}"), "nameko-rpc", "accounts.get_tenant")
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.basic_publish_confirm(
                amqp.Message("{}"), "nameko-rpc", "accounts.issue_api_key"
            )


def test_the_dead_letter_command_under_a_service_user_says_it_was_refused(
    least_privilege_stack: Stack, users: BrokerUsers
) -> None:
    """Listing every queue's dead letters is the gateway user's to do: another container's user
    gets exit 1 and one line, not a traceback (kernel.cli)."""
    # A dead letter to list (a queue without any is counted, not read).
    with Connection(least_privilege_stack.settings.amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(
            amqp.Message("{}", message_id="dead-1"), "", "accounts.privacy.dead"
        )
    env = {**world_env(least_privilege_stack.settings), "LEDGERDESK_AMQP_URI": users.uri("tickets")}
    refused = subprocess.run(
        [sys.executable, "-m", "services.platform", "dead-letters", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("refused by the broker:")
    assert "Traceback" not in refused.stderr
    env["LEDGERDESK_AMQP_URI"] = users.uri("gateway")
    listed = subprocess.run(
        [sys.executable, "-m", "services.platform", "dead-letters", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr


def dead_letter(stack: Stack, queue: str, message_id: str) -> dict | None:
    """The dead letter of ``queue`` with this id, if it is there (listing gives it back)."""
    for item in list_dead_letters(stack.settings.amqp_uri, queue):
        if item["message_id"] == message_id:
            return item
    return None


def test_a_forged_event_put_in_another_s_queue_is_rejected_not_applied(
    least_privilege_stack: Stack, users: BrokerUsers
) -> None:
    """Billing's user puts an ``accounts.api_key_revoked`` of an admin's key in the gateway's
    queue through the default exchange, which RabbitMQ lets it: the gateway takes accounts'
    events only from accounts' user (or its own, a replay), so it dead-letters the forgery and
    the key still works, until an operator replays it."""
    stack = least_privilege_stack
    key, created = admin(stack)
    agent_id = created["agent"]["id"]
    with psycopg2.connect(stack.settings.database_dsn("gateway")) as db, db.cursor() as cur:
        cur.execute("SELECT key_id FROM credential_keys WHERE agent_id = %s", (agent_id,))
        (key_id,) = cur.fetchone()
    db.close()
    forged = new_envelope(
        type="api_key_revoked",
        schema_version=1,
        source="accounts",
        stream_id=f"agent-{agent_id}",
        stream_version=1000,
        tenant_id=uuid.UUID(created["tenant"]["id"]),
        actor_id=agent_id,
        payload={"agent_id": agent_id, "key_id": str(key_id)},
    )

    def message(user_id: str | None) -> amqp.Message:
        return amqp.Message(
            json.dumps(forged.to_dict(), default=str),
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=str(forged.event_id),
            user_id=user_id,
        )

    with Connection(users.uri("billing"), connect_timeout=5) as conn:
        channel = conn.channel()
        channel.confirm_select()
        # The premise: the broker refuses a user_id that is not the connection's own.
        with pytest.raises(amqp.exceptions.PreconditionFailed):
            channel.basic_publish_confirm(
                message(users.name("accounts")), "", "gateway.credentials"
            )
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(message(users.name("billing")), "", "gateway.credentials")
    dead = wait_until(
        lambda: dead_letter(stack, "gateway.credentials", str(forged.event_id)),
        timeout=30,
        what="the forged event dead-lettered",
    )
    assert dead["reason"] == "rejected"
    assert dead["event_type"] == "accounts.api_key_revoked"
    ok(stack.call("GET", "/v1/tenant", key=key))
    # An operator's replay goes out as the gateway's user (not its first publisher's, which the
    # broker would refuse), and the gateway's is taken: the operator decided, and the key is
    # revoked.
    replayed = stack.call(
        "POST",
        "/v1/operator/dead-letters/gateway.credentials/replay",
        key=stack.settings.operator_token,
        json={"ids": [str(forged.event_id)]},
    )
    assert ok(replayed) == {"replayed": 1}
    wait_until(
        lambda: stack.call("GET", "/v1/tenant", key=key).status_code == 401,
        timeout=30,
        what="the replayed revocation taken",
    )


def test_a_forged_request_put_in_a_service_s_rpc_queue_is_set_aside_unanswered(
    least_privilege_stack: Stack, users: BrokerUsers
) -> None:
    """Billing's user puts a request in accounts' RPC queue through the default exchange: it is
    set aside without an answer (a process's requests come through the RPC exchange, whose
    topic permissions hold each to its own calls), while billing's own call is answered."""
    stack = least_privilege_stack
    replies: list[str] = []
    with Connection(users.uri("billing"), connect_timeout=5) as conn:
        channel = conn.channel()
        channel.basic_consume(
            DIRECT_REPLY_TO,
            no_ack=True,
            callback=lambda m: replies.append(m.properties.get("correlation_id")),
        )

        def request(exchange: str, routing_key: str, correlation_id: str) -> None:
            channel.basic_publish(
                amqp.Message(
                    json.dumps({"args": [], "kwargs": {}}),
                    content_type="application/json",
                    content_encoding="utf-8",
                    reply_to=DIRECT_REPLY_TO,
                    correlation_id=correlation_id,
                    message_id=correlation_id,
                    user_id=users.name("billing"),
                ),
                exchange,
                routing_key,
            )

        forged = str(uuid.uuid4())
        request("", "rpc-accounts", forged)
        wait_until(
            lambda: dead_letter(stack, "rpc-accounts", forged),
            timeout=30,
            what="the forged request set aside",
        )
        # Its own call, which it may make, is answered (an error: no arguments), and is the
        # first reply to come: the forgery set aside before had none.
        own = str(uuid.uuid4())
        request(RPC_EXCHANGE, "accounts.billing_contact", own)
        while not replies:
            conn.drain_events(timeout=30)
    assert replies == [own]
