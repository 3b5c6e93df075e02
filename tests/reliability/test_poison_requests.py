"""Bad requests on every service's RPC queue: a body that is not JSON, a request with no reply
address, JSON that is not a request, a method the service does not have, and a request that was
delivered as often as the delivery limit allows (each delivery, in real life, a process that
died handling it). Each is set aside in ``rpc-<service>.dead`` and counted, a caller that can be
answered gets nameko's error at once, and every service keeps serving. Before, a request with no
reply address ended the service that took it, and the broker handed it to the next process.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid

import pytest
import requests
from kombu import Connection, Exchange, Producer, Queue

from kernel import deadletters, topology
from kernel.testing import queue_depth, wait_until
from services import platform
from tests.e2e.conftest import Stack, running_stack
from tests.reliability.test_poison_messages import refused_count

pytestmark = pytest.mark.reliability

RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)
REQUEST = json.dumps({"args": [], "kwargs": {}}).encode()
# What requests set aside must not keep: an API key sent to authenticate, and ticket text.
API_KEY = "ldk_poison-canary-" + uuid.uuid4().hex
TICKET_TEXT = "poison canary ticket text " + uuid.uuid4().hex
ACTOR = {"tenant_id": str(uuid.uuid4()), "agent_id": str(uuid.uuid4()), "role": "admin"}
CARRYING = {
    "accounts": ("accounts.authenticate", {"args": [API_KEY], "kwargs": {}}),
    "tickets": (
        "tickets.create_ticket",
        {"args": [ACTOR, {"subject": TICKET_TEXT, "body": TICKET_TEXT}], "kwargs": {}},
    ),
}


def bad_requests(service: str) -> list[tuple[str, str, bytes, bool, str | None]]:
    """(what, routing key, body, with a reply address, the error its caller gets). The request
    with no reply address is a real call, carrying an API key or ticket text where the service
    takes one."""
    method, request = CARRYING.get(service, (f"{service}.health", {"args": [], "kwargs": {}}))
    return [
        ("not json", f"{service}.health", b"{this is not json", True, "MalformedRequest"),
        ("no reply address", method, json.dumps(request).encode(), False, None),
        ("not a request", f"{service}.health", b'{"hello": "world"}', True, "MalformedRequest"),
        ("unknown method", f"{service}.no_such_method", REQUEST, True, "MethodNotFound"),
    ]


def set_aside(infrastructure, stack: Stack, service: str) -> list[dict]:
    """Every request in ``rpc-<service>.dead`` as the broker's management API shows it (body,
    properties, headers), given back to the queue."""
    vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")
    return infrastructure.management(
        "POST",
        f"/api/queues/{vhost}/rpc-{service}.dead/get",
        json={"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"},
    ).json()


def assert_bodiless_and_bounded(infrastructure, stack: Stack, service: str, count: int) -> None:
    """What an operator needs of each set-aside request, and nothing of what it carried; and
    the queue's bounded life, as the broker has it."""
    messages = set_aside(infrastructure, stack, service)
    assert len(messages) == count, service
    whole = json.dumps(messages)
    assert API_KEY not in whole and TICKET_TEXT not in whole, service
    for message in messages:
        assert (message["payload"], message["payload_bytes"]) == ("", 0), service
        headers = message["properties"]["headers"]
        assert headers[deadletters.BODY_BYTES_HEADER] > 0, service
        assert headers["x-first-death-reason"] in ("rejected", "delivery_limit"), service
        assert message["properties"]["type"].startswith(f"{service}."), service
        assert message["properties"]["correlation_id"], service
    vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")
    queue = infrastructure.management("GET", f"/api/queues/{vhost}/rpc-{service}.dead").json()
    limits = topology.DeadLetterLimits.of(stack.settings).queue_arguments()
    assert {k: queue["arguments"].get(k) for k in limits} == limits, service


class Replies:
    """A reply queue of the test's own on nameko's RPC exchange, as a caller has."""

    def __init__(self, amqp_uri: str):
        self.connection = Connection(amqp_uri, connect_timeout=5)
        self.routing_key = f"poison-test-{uuid.uuid4().hex}"
        self.queue = Queue(self.routing_key, RPC_EXCHANGE, self.routing_key, exclusive=True)
        self.queue(self.connection.channel()).declare()
        self.producer = Producer(self.connection.channel(), exchange=RPC_EXCHANGE)

    def send(self, routing_key: str, body: bytes, reply: bool) -> str:
        correlation_id = str(uuid.uuid4())
        self.producer.publish(
            body,
            routing_key=routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            correlation_id=correlation_id,
            mandatory=True,
            **({"reply_to": self.routing_key} if reply else {}),
        )
        return correlation_id

    def received(self) -> dict[str, dict]:
        """Every reply so far, by correlation id."""
        found = {}
        channel = self.connection.channel()
        while (message := channel.basic_get(self.routing_key, no_ack=True)) is not None:
            found[message.properties["correlation_id"]] = json.loads(message.body)
        channel.close()
        return found

    def close(self) -> None:
        self.connection.release()


def dead_letter_gauge(stack: Stack, service: str, queue: str) -> float | None:
    """``ledgerdesk_dead_letters`` for ``queue``, from the service's /metrics."""
    port = stack.processes[service].ops_port  # type: ignore[attr-defined]
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'ledgerdesk_dead_letters{{queue="{queue}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def serving(stack: Stack) -> None:
    """Every service answers its health RPC through the gateway, and a ticket is written."""
    token = stack.settings.operator_token
    health = stack.call("GET", "/v1/operator/health", key=token).json()
    assert {name: s["reachable"] for name, s in health["services"].items()} == {
        name: True for name in platform.SERVICES
    }
    key = stack.sign_up()["api_key"]
    contact = stack.call(
        "POST", "/v1/contacts", key=key, json={"name": "Pat Poison", "email": "p@example.com"}
    )
    assert contact.status_code == 201, contact.text


@pytest.mark.timeout(300)
def test_bad_requests_on_every_rpc_queue_are_set_aside_and_services_keep_serving(infrastructure):
    with running_stack(infrastructure) as stack:
        replies = Replies(stack.settings.amqp_uri)
        try:
            expected: dict[str, tuple[str, str | None]] = {}
            for service in platform.SERVICES:
                for what, routing_key, body, reply, error in bad_requests(service):
                    correlation_id = replies.send(routing_key, body, reply)
                    expected[correlation_id] = (f"{service}: {what}", error)

            for service in platform.SERVICES:
                dead = f"rpc-{service}.dead"
                wait_until(
                    lambda d=dead: queue_depth(infrastructure, stack.settings, d) >= 4,
                    timeout=60,
                    interval=0.5,
                    what=f"the bad requests in {dead}",
                )
                listed = deadletters.list_dead_letters(stack.settings.amqp_uri, dead)
                assert len(listed) == 4, listed
                assert {item["reason"] for item in listed} == {"rejected"}
                assert {item["event_type"] for item in listed} == {
                    routing_key for _, routing_key, _, _, _ in bad_requests(service)
                }
                assert_bodiless_and_bounded(infrastructure, stack, service, 4)
                assert refused_count(stack, service, f"rpc-{service}") >= 4, service
                assert dead_letter_gauge(stack, service, f"rpc-{service}") == 4, service
                assert stack.processes[service].poll() is None, f"{service} ended"

            # The callers that gave a reply address were answered with the error, at once.
            answered = wait_until(
                lambda: (r := replies.received()) and len(r) >= 3 * len(platform.SERVICES) and r,
                timeout=30,
                what="an error for each answerable bad request",
            )
            for correlation_id, (what, error) in expected.items():
                if error is None:
                    assert correlation_id not in answered, what
                else:
                    assert answered[correlation_id]["error"]["exc_type"] == error, what
                    assert answered[correlation_id]["result"] is None, what
        finally:
            replies.close()
        serving(stack)


@pytest.mark.timeout(300)
def test_a_request_delivered_up_to_the_limit_is_set_aside_unrun(infrastructure):
    with running_stack(infrastructure) as stack:
        limit = stack.settings.delivery_limit
        stack.stop("tickets")
        replies = Replies(stack.settings.amqp_uri)
        try:
            method, request = CARRYING["tickets"]
            correlation_id = replies.send(method, json.dumps(request).encode(), reply=True)
            # Each delivery that ends without an answer (a process killed while handling it)
            # returns the request to its queue, and the broker counts the return.
            with Connection(stack.settings.amqp_uri, connect_timeout=5) as connection:
                for _ in range(limit):
                    channel = connection.channel()
                    taken = wait_until(
                        lambda c=channel: c.basic_get("rpc-tickets", no_ack=False),
                        timeout=10,
                        what="the request in rpc-tickets",
                    )
                    assert taken.properties["correlation_id"] == correlation_id
                    channel.close()  # unacknowledged: back to the queue
            stack.start("tickets")
            wait_until(
                lambda: queue_depth(infrastructure, stack.settings, "rpc-tickets.dead") == 1,
                timeout=60,
                interval=0.5,
                what="the request in rpc-tickets.dead",
            )
            [item] = deadletters.list_dead_letters(stack.settings.amqp_uri, "rpc-tickets")
            assert item["reason"] == "delivery_limit"
            assert item["delivery_count"] == limit + 1  # the limit returns, then its last
            assert item["event_type"] == "tickets.create_ticket"
            assert_bodiless_and_bounded(infrastructure, stack, "tickets", 1)
            # Not run: a run request is answered, and this one never was.
            serving(stack)
            assert correlation_id not in replies.received()
            with pytest.raises(deadletters.NotReplayable):
                deadletters.replay_dead_letters(stack.settings.amqp_uri, "rpc-tickets")
        finally:
            replies.close()
