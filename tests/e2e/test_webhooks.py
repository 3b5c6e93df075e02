"""Webhooks through the running stack, to a real HTTP receiver on a free loopback port: a ticket
event arrives signed and carries ids and states only, a 500 is retried until it succeeds,
another tenant's events never arrive, a deleted endpoint gets nothing more, a privacy request's
completion arrives, destruction deletes the rows; and with the operator's switch off, loopback
is refused at registration and at delivery.

The stack allows plain http and loopback (``LEDGERDESK_WEBHOOK_ALLOW_HTTP``, ``_ALLOW_PRIVATE``)
so that the receiver can be reached at all; the refusals are shown with the switch off.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.webhooks import signing
from kernel.testing import wait_until, world_env
from services import platform
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import (
    assert_problem,
    create_agent,
    logged_line,
    make_contact,
    ok,
    rows,
    stack_logging_to,
    unique,
)
from tests.support.webhook_receiver import Receiver, Script, receiving

TICKET_EVENTS = ["ticket.created", "ticket.message_added", "ticket.assigned"]


@pytest.fixture(scope="module")
def services_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("webhooks") / "services.log"


@pytest.fixture(scope="module")
def stack(infrastructure, services_log: Path) -> Iterator[Stack]:
    with stack_logging_to(
        infrastructure,
        services_log,
        LEDGERDESK_WEBHOOK_ALLOW_HTTP="true",
        LEDGERDESK_WEBHOOK_ALLOW_PRIVATE="true",
        LEDGERDESK_WEBHOOK_RETRY_SECONDS="0.5",
        LEDGERDESK_WEBHOOK_TIMEOUT_SECONDS="5",
        # A tenant cancelled here is destroyed within seconds.
        LEDGERDESK_GRACE_DAYS="0.0001",
        LEDGERDESK_SCHEDULE_SECONDS="1",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
    ) as running:
        yield running


def register(
    stack: Stack, key: str, receiver: Receiver, events: list[str] | None = None
) -> dict[str, Any]:
    body = {"url": receiver.url(), "events": events or TICKET_EVENTS}
    return ok(stack.call("POST", "/v1/webhooks", key=key, json=body), 201)


def open_ticket(stack: Stack, key: str, subject: str, body: str) -> tuple[dict, dict]:
    contact = make_contact(stack, key, "Jane Canary")
    created = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": subject, "body": body, "requester_id": contact["id"]},
    )
    return contact, ok(created, 201)


def arrived(receiver: Receiver, count: int, what: str) -> list:
    return wait_until(
        lambda: list(receiver.received) if len(receiver.received) >= count else None,
        timeout=30,
        what=what,
    )


def log(stack: Stack, key: str, endpoint: dict) -> list[dict]:
    return ok(stack.call("GET", f"/v1/webhooks/{endpoint['id']}/deliveries", key=key))["items"]


def log_once(
    stack: Stack, key: str, endpoint: dict, settled: Callable[[list[dict]], bool], what: str
) -> list[dict]:
    """The endpoint's delivery log once ``settled`` holds for it."""

    def probe() -> list[dict] | None:
        items = log(stack, key, endpoint)
        return items if items and settled(items) else None

    return wait_until(probe, timeout=30, what=what)


def all_delivered(items: list[dict]) -> bool:
    return all(d["status"] == "delivered" for d in items)


def test_a_ticket_event_arrives_signed_with_ids_and_states_only(stack: Stack):
    signed_up = stack.sign_up()
    key = signed_up["api_key"]
    with receiving() as receiver:
        endpoint = register(stack, key, receiver)
        assert endpoint["secret"].startswith("whsec_")
        subject, body = unique("Refund for Jane Canary"), unique("jane wrote from home")
        contact, ticket = open_ticket(stack, key, subject, body)
        note = unique("internal note about Jane")
        ok(
            stack.call(
                "POST",
                f"/v1/tickets/{ticket['id']}/messages",
                key=key,
                json={"body": note, "internal": True},
            ),
            201,
        )
        got = arrived(receiver, 2, "the ticket's two webhooks")

    by_type = {r.headers[signing.EVENT_TYPE_HEADER]: r for r in got}
    assert set(by_type) == {"ticket.created", "ticket.message_added"}
    for request in got:
        assert signing.verify(
            endpoint["secret"], request.headers[signing.SIGNATURE_HEADER], request.body
        ), "the signature verifies with the secret shown at registration"
        document = json.loads(request.body)
        assert request.headers[signing.EVENT_ID_HEADER] == document["id"]
        assert document["tenant_id"] == signed_up["tenant"]["id"]
        text = request.body.decode()
        for personal in (subject, body, note, contact["email"], contact["phone"], "Jane"):
            assert personal not in text, "a webhook carries no personal data"
    created = json.loads(by_type["ticket.created"].body)["data"]
    assert created == {
        "ticket_id": ticket["id"],
        "requester_id": contact["id"],
        "priority": "normal",
        "status": "new",
    }
    message = json.loads(by_type["ticket.message_added"].body)["data"]
    assert message["ticket_id"] == ticket["id"] and message["internal"] is True
    assert set(message) == {"ticket_id", "message_id", "author_id", "author_kind", "internal"}

    delivered = log_once(stack, key, endpoint, all_delivered, "the log to show both delivered")
    assert {d["event_type"] for d in delivered} == {"ticket.created", "ticket.message_added"}
    assert all(d["status_code"] == 200 and d["attempts"] == 1 for d in delivered)
    # The secret is shown once: never in a read of the endpoint or the list.
    shown = ok(stack.call("GET", f"/v1/webhooks/{endpoint['id']}", key=key))
    listed = ok(stack.call("GET", "/v1/webhooks", key=key))["items"]
    assert "secret" not in shown and all("secret" not in item for item in listed)
    assert endpoint["secret"] not in json.dumps([shown, listed])


def test_log_lines_name_the_delivery_never_the_url_query_or_the_secret(
    stack: Stack, services_log: Path
):
    key = stack.sign_up()["api_key"]
    token = unique("receiver-token")
    with receiving(Script(statuses=[500])) as receiver:
        body = {"url": receiver.url(f"/hook?token={token}"), "events": ["ticket.created"]}
        endpoint = ok(stack.call("POST", "/v1/webhooks", key=key, json=body), 201)
        open_ticket(stack, key, "a question", "about an order")
        arrived(receiver, 2, "the attempt and its retry")
    assert receiver.received[0].path == f"/hook?token={token}"
    (delivery,) = log_once(stack, key, endpoint, all_delivered, "the retry delivered")
    logged_line(services_log, f"webhook delivery {delivery['id']}")

    def both_attempts() -> list[str] | None:
        text = services_log.read_text(errors="replace")
        lines = [line for line in text.splitlines() if delivery["id"] in line]
        return lines if len(lines) >= 2 else None

    lines = wait_until(both_attempts, timeout=10, what="a line per attempt")
    assert "http_error 500" in lines[0] and "delivered 200" in lines[1], lines
    text = services_log.read_text(errors="replace")
    assert token not in text and endpoint["secret"] not in text
    assert endpoint["url"] not in text


def test_a_receiver_answering_500_gets_a_retry_that_succeeds(stack: Stack):
    key = stack.sign_up()["api_key"]
    with receiving(Script(statuses=[500])) as receiver:
        endpoint = register(stack, key, receiver, ["ticket.created"])
        open_ticket(stack, key, "a question", "about an order")
        first, second = arrived(receiver, 2, "the retry after the 500")
    assert first.body == second.body
    assert first.headers[signing.EVENT_ID_HEADER] == second.headers[signing.EVENT_ID_HEADER]
    assert [r.headers[signing.ATTEMPT_HEADER] for r in (first, second)] == ["1", "2"]
    for request in (first, second):
        assert signing.verify(
            endpoint["secret"], request.headers[signing.SIGNATURE_HEADER], request.body
        )
    (delivery,) = log_once(
        stack, key, endpoint, all_delivered, "the log to show the retry delivered"
    )
    assert [(a["status_code"], a["outcome"]) for a in delivery["history"]] == [
        (500, "http_error"),
        (200, "delivered"),
    ]


def test_a_rotated_secret_shows_once_and_a_ping_is_signed_under_both(stack: Stack):
    key = stack.sign_up()["api_key"]
    with receiving() as receiver:
        endpoint = register(stack, key, receiver, ["privacy_request.completed"])
        path = f"/v1/webhooks/{endpoint['id']}"
        retry = {"Idempotency-Key": unique("rotate")}
        rotated = ok(stack.call("POST", f"{path}/secret", key=key, headers=retry))
        assert rotated["secret"] != endpoint["secret"]
        # A replay cannot show the secret again (it is never stored) and must not look like a
        # rotation without one: a 409 saying it happened, and nothing rotated again.
        for _ in range(2):
            replayed = stack.call("POST", f"{path}/secret", key=key, headers=retry)
            problem = assert_problem(replayed, 409)
            assert "shown once" in problem["detail"] and "rotate again" in problem["detail"]
            assert replayed.headers["Idempotent-Replayed"] == "true"
        shown = ok(stack.call("GET", path, key=key))
        assert shown["previous_secret_valid_until"] == rotated["previous_secret_valid_until"]
        # The grace is a day, by default.
        until = dt.datetime.fromisoformat(rotated["previous_secret_valid_until"])
        assert until - dt.datetime.fromisoformat(rotated["rotated_at"]) == dt.timedelta(hours=24)
        ping = ok(stack.call("POST", f"{path}/pings", key=key), 202)
        (got,) = arrived(receiver, 1, "the ping")
    assert got.headers[signing.EVENT_TYPE_HEADER] == "webhook.ping"
    assert json.loads(got.body)["data"] == {"webhook_id": endpoint["id"]}
    header = got.headers[signing.SIGNATURE_HEADER]
    assert header.count("v1=") == 2
    for secret in (rotated["secret"], endpoint["secret"]):
        assert signing.verify(secret, header, got.body)
    (delivered,) = log_once(stack, key, endpoint, all_delivered, "the ping in the log")
    assert delivered["id"] == ping["id"] and delivered["event_type"] == "webhook.ping"
    agent = create_agent(stack, key, "agent")["api_key"]
    for action in ("secret", "pings"):
        assert_problem(stack.call("POST", f"{path}/{action}", key=agent), 403)
        other = stack.sign_up()["api_key"]
        assert_problem(stack.call("POST", f"{path}/{action}", key=other), 404)


def test_a_redirect_to_a_private_address_is_not_followed_and_logged_as_one(stack: Stack):
    key = stack.sign_up()["api_key"]
    with receiving() as private:
        inside = Script(statuses=[302] * 50, location=private.url("/admin/internal"))
        with receiving(inside) as redirecting:
            endpoint = register(stack, key, redirecting, ["ticket.created"])
            ok(stack.call("POST", f"/v1/webhooks/{endpoint['id']}/pings", key=key), 202)
            (delivery,) = log_once(
                stack,
                key,
                endpoint,
                lambda items: items[0]["attempts"] >= 2 and len(items[0]["history"]) >= 2,
                "two attempts answered with a redirect",
            )
            assert len(redirecting.received) >= 2
        assert private.received == []
    assert delivery["status"] == "pending"  # not delivered: retried, never followed
    assert (delivery["status_code"], delivery["outcome"]) == (302, "redirect")
    assert {(a["status_code"], a["outcome"]) for a in delivery["history"]} == {(302, "redirect")}


def test_another_tenants_events_never_arrive(stack: Stack):
    mine, theirs = stack.sign_up(), stack.sign_up()
    with receiving() as my_receiver, receiving() as their_receiver:
        register(stack, mine["api_key"], my_receiver, ["ticket.created"])
        register(stack, theirs["api_key"], their_receiver, ["ticket.created"])
        _, their_ticket = open_ticket(stack, theirs["api_key"], "theirs", "their words")
        arrived(their_receiver, 1, "the other tenant's own webhook")
        _, my_ticket = open_ticket(stack, mine["api_key"], "mine", "my words")
        arrived(my_receiver, 1, "my webhook")
        assert [json.loads(r.body)["data"]["ticket_id"] for r in my_receiver.received] == [
            my_ticket["id"]
        ]
        assert [json.loads(r.body)["data"]["ticket_id"] for r in their_receiver.received] == [
            their_ticket["id"]
        ]
    # Nor can one tenant see or delete another's endpoint.
    (theirs_listed,) = ok(stack.call("GET", "/v1/webhooks", key=theirs["api_key"]))["items"]
    for method, path in (
        ("GET", f"/v1/webhooks/{theirs_listed['id']}"),
        ("GET", f"/v1/webhooks/{theirs_listed['id']}/deliveries"),
        ("DELETE", f"/v1/webhooks/{theirs_listed['id']}"),
    ):
        assert_problem(stack.call(method, path, key=mine["api_key"]), 404)


def test_deleting_the_endpoint_stops_deliveries(stack: Stack):
    key = stack.sign_up()["api_key"]
    with receiving() as deleted, receiving() as kept:
        gone = register(stack, key, deleted, ["ticket.created"])
        register(stack, key, kept, ["ticket.created"])
        open_ticket(stack, key, "first", "before the deletion")
        arrived(deleted, 1, "the first webhook")
        response = stack.call("DELETE", f"/v1/webhooks/{gone['id']}", key=key)
        assert response.status_code == 204, response.text
        open_ticket(stack, key, "second", "after the deletion")
        # The kept endpoint got the second event: it was handled, and the deleted one got none.
        arrived(kept, 2, "both events at the kept endpoint")
        assert len(deleted.received) == 1
    assert_problem(stack.call("GET", f"/v1/webhooks/{gone['id']}", key=key), 404)
    assert_problem(stack.call("GET", f"/v1/webhooks/{gone['id']}/deliveries", key=key), 404)
    assert rows(
        stack,
        "gateway",
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s",
        gone["id"],
    ) == [(0,)]


def test_a_completed_privacy_request_arrives_by_ids(stack: Stack):
    signed_up = stack.sign_up()
    key = signed_up["api_key"]
    with receiving() as receiver:
        register(stack, key, receiver, ["privacy_request.completed"])
        filed = stack.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "access", "subject": {"agent_id": signed_up["agent"]["id"]}},
        )
        request = ok(filed, 202)
        (got,) = arrived(receiver, 1, "the request's completion")
    assert json.loads(got.body)["data"] == {
        "request_id": request["id"],
        "type": "access",
        "subject_kind": "agent",
        "subject_id": signed_up["agent"]["id"],
        "status": "completed",
    }


def test_webhooks_are_for_admins_only(stack: Stack):
    key = stack.sign_up()["api_key"]
    agent = create_agent(stack, key, "agent")["api_key"]
    auditor = create_agent(stack, key, "auditor")["api_key"]
    body = {"url": "http://127.0.0.1:9/hook", "events": ["ticket.created"]}
    for other in (agent, auditor):
        assert_problem(stack.call("POST", "/v1/webhooks", key=other, json=body), 403)
        assert_problem(stack.call("GET", "/v1/webhooks", key=other), 403)


def test_registration_refuses_bad_urls_and_events(stack: Stack):
    key = stack.sign_up()["api_key"]
    for body, field in (
        ({"url": "ftp://example.com/", "events": ["ticket.created"]}, "url"),
        ({"url": "http://u:p@127.0.0.1:9/", "events": ["ticket.created"]}, "url"),
        ({"url": "http://nowhere.invalid/", "events": ["ticket.created"]}, "url"),
        ({"url": "http://127.0.0.1:9/", "events": ["ticket.deleted"]}, "events"),
        ({"url": "http://127.0.0.1:9/", "events": []}, "events"),
    ):
        problem = assert_problem(stack.call("POST", "/v1/webhooks", key=key, json=body), 422)
        assert field in problem["errors"], problem
    assert ok(stack.call("GET", "/v1/webhooks", key=key))["items"] == []


def test_a_retried_registration_is_the_same_endpoint_and_shows_no_secret_again(stack: Stack):
    key = stack.sign_up()["api_key"]
    body = {"url": "http://127.0.0.1:9/hook", "events": ["ticket.created"]}
    headers = {"Idempotency-Key": unique("register")}
    first = ok(stack.call("POST", "/v1/webhooks", key=key, json=body, headers=headers), 201)
    again = stack.call("POST", "/v1/webhooks", key=key, json=body, headers=headers)
    replayed = ok(again, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert replayed["id"] == first["id"] and first["secret"] and replayed["secret"] is None
    assert len(ok(stack.call("GET", "/v1/webhooks", key=key))["items"]) == 1


def test_destruction_deletes_the_tenants_webhook_rows(stack: Stack):
    signed_up = stack.sign_up()
    key, tenant = signed_up["api_key"], signed_up["tenant"]["id"]
    with receiving() as receiver:
        register(stack, key, receiver, ["ticket.created"])
        open_ticket(stack, key, "before the end", "of the tenant")
        arrived(receiver, 1, "a webhook of the tenant")
    query = "SELECT (SELECT count(*) FROM webhook_endpoints WHERE tenant_id = %s),"
    query += " (SELECT count(*) FROM webhook_deliveries WHERE tenant_id = %s)"
    assert rows(stack, "gateway", query, tenant, tenant) == [(1, 1)]
    assert stack.call("DELETE", "/v1/tenant", key=key).status_code == 202
    wait_until(
        lambda: rows(stack, "gateway", query, tenant, tenant) == [(0, 0)],
        timeout=60,
        what="the destroyed tenant's webhook rows to go",
    )
    assert rows(
        stack,
        "gateway",
        "SELECT count(*) FROM webhook_attempts a LEFT JOIN webhook_deliveries d"
        " ON d.id = a.delivery_id WHERE d.id IS NULL",
    ) == [(0,)]
    assert rows(
        stack,
        "gateway",
        "SELECT shredded_at IS NOT NULL FROM tenant_keys WHERE tenant_id = %s",
        tenant,
        purpose="keys",
    ) == [(True,)]


# --- with the operator's switch off -----------------------------------------------------------


def restart_gateways(stack: Stack, **changes: Any) -> None:
    """Every gateway process again, with ``changes`` to the settings (as an operator changes a
    setting and rolls the gateway)."""
    gateways = [name for name in stack.processes if name.startswith("gateway-")]
    for name in gateways:
        stack.stop(name)
    stack.settings = dataclasses.replace(stack.settings, **changes)
    started = platform.start_processes(
        world_env(stack.settings), gateway_processes=len(gateways), only=tuple(gateways)
    )
    stack.processes.update(started)
    assert platform.wait_until_ready(stack.url, started, timeout=60), "no gateway"


def test_loopback_is_refused_at_registration_and_at_delivery_once_the_operator_disallows_it(
    infrastructure,
):
    with (
        running_stack(
            infrastructure,
            LEDGERDESK_WEBHOOK_ALLOW_HTTP="true",
            LEDGERDESK_WEBHOOK_ALLOW_PRIVATE="true",
            LEDGERDESK_WEBHOOK_RETRY_SECONDS="0.5",
        ) as quiet,
        receiving() as receiver,
    ):
        key = quiet.sign_up()["api_key"]
        # Registered while loopback was allowed (a name that resolved elsewhere then).
        endpoint = register(quiet, key, receiver, ["ticket.created"])
        restart_gateways(quiet, webhook_allow_private=False)

        for url in (receiver.url(), receiver.url(host="localhost"), "http://[::1]:9/hook"):
            body = {"url": url, "events": ["ticket.created"]}
            problem = assert_problem(quiet.call("POST", "/v1/webhooks", key=key, json=body), 422)
            assert "loopback" in problem["errors"]["url"][0]

        open_ticket(quiet, key, "after the switch", "is off")
        (refused,) = log_once(
            quiet,
            key,
            endpoint,
            lambda items: items[0]["attempts"] >= 2,
            "attempts refused at delivery time",
        )
        assert receiver.received == []
    assert refused["status"] == "pending" and refused["status_code"] is None
    assert {a["outcome"] for a in refused["history"]} == {"address_refused"}
