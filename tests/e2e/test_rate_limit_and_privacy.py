"""Rate limits per key, personal data only as ciphertext in the event store, an access-log event
per request, and nothing personal or secret in the services' logs: over real HTTP, against the
whole platform running as processes.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from kernel.testing import client_traceparent, wait_until
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import (
    Tap,
    access_log,
    assert_problem,
    logged_line,
    rows,
    sign_up,
    stack_logging_to,
    tap,
    traced,
    unique,
)

PERSONAL_EVENTS = {"agent_created", "contact_created", "contact_rectified"}


# --- helpers ----------------------------------------------------------------------------------


def person() -> dict[str, str]:
    """A name, email and phone found nowhere else, so a search for them finds only leaks."""
    tag = secrets.token_hex(4)
    return {
        "name": f"Zelda Quimby{tag}",
        "email": f"zq.{tag}@privacy.example",
        "phone": f"+44 20 7946 {secrets.randbelow(10_000):04d}",
    }


# --- (a) rate limits --------------------------------------------------------------------------


def test_a_keys_fourth_quick_request_is_rate_limited_and_another_key_is_not(infrastructure):
    # One gateway process: each process limits on its own (see gateway/ratelimit.py), so with
    # several the burst a key gets depends on which process the kernel hands each connection.
    with running_stack(
        infrastructure,
        LEDGERDESK_RATE_LIMIT="1",
        LEDGERDESK_RATE_BURST="3",
        LEDGERDESK_GATEWAY_PROCESSES="1",
    ) as limited:
        admin_key = limited.sign_up()["api_key"]
        created = limited.call(
            "POST",
            "/v1/agents",
            key=admin_key,
            json={"name": "Busy Agent", "email": "busy@example.com", "role": "agent"},
        )
        assert created.status_code == 201, created.text
        busy_key = created.json()["api_key"]

        answers = [limited.call("GET", "/v1/tenant", key=busy_key) for _ in range(4)]
        assert [r.status_code for r in answers[:3]] == [200, 200, 200]
        # Each answer tells the key's bucket: 3 at most, one fewer left each time (a refill of
        # 1/s may give one back between two requests, never more than the burst).
        told = [(r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) for r in answers]
        assert [limit for limit, _ in told] == ["3"] * 4
        remaining = [int(left) for _, left in told[:3]]
        assert remaining[0] == 2 and remaining == sorted(remaining, reverse=True), told
        refused = answers[3]
        assert_problem(refused, 429)
        retry_after = refused.headers["Retry-After"]
        assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.headers["RateLimit-Reset"] == retry_after

        # Another key of the same tenant has its own bucket.
        assert limited.call("GET", "/v1/tenant", key=admin_key).status_code == 200

        # Refusals take nothing: the busy key works again once its bucket refills.
        wait_until(
            lambda: limited.call("GET", "/v1/tenant", key=busy_key).status_code == 200,
            timeout=10,
            interval=0.5,
            what="the rate-limited key to be admitted again",
        )


# --- (b) the event store holds ciphertext -----------------------------------------------------


def test_the_event_store_holds_names_emails_and_phones_only_as_ciphertext(stack):
    admin, agent, contact, rectified = person(), person(), person(), person()
    with tap(stack, "accounts.#", Tap) as accounts_events:
        signed = sign_up(stack, admin={"name": admin["name"], "email": admin["email"]})
        key, tenant_id = signed["api_key"], signed["tenant"]["id"]
        created_agent = stack.call(
            "POST",
            "/v1/agents",
            key=key,
            json={"name": agent["name"], "email": agent["email"], "role": "agent"},
        )
        assert created_agent.status_code == 201, created_agent.text
        created = stack.call("POST", "/v1/contacts", key=key, json=contact)
        assert created.status_code == 201, created.text
        patched = stack.call(
            "PATCH",
            f"/v1/contacts/{created.json()['id']}",
            key=key,
            json=rectified,
            headers={"If-Match": created.headers["ETag"]},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["email"] == rectified["email"]  # the API answers in plaintext
        published = accounts_events.until(
            lambda events: any(
                (e["type"], e["tenant_id"]) == ("contact_rectified", tenant_id) for e in events
            ),
            what="the tenant's published events up to the rectification",
        )

    events = rows(
        stack,
        "accounts",
        "SELECT type, payload, payload::text FROM events WHERE tenant_id = %s ORDER BY position",
        tenant_id,
    )
    [(whole_store,)] = rows(
        stack, "accounts", "SELECT coalesce(string_agg(e::text, ' '), '') FROM events e"
    )

    personal = [(t, p, text) for t, p, text in events if t in PERSONAL_EVENTS]
    assert sorted(t for t, _, _ in personal) == [
        "agent_created",
        "agent_created",
        "contact_created",
        "contact_rectified",
    ]
    for event_type, payload, text in personal:
        assert "$enc" in text, event_type
        for field in ("name", "email", "phone"):
            if payload.get(field) is not None:
                assert isinstance(payload[field], dict) and "$enc" in payload[field], (
                    event_type,
                    field,
                )
    for values in (admin, agent, contact, rectified):
        for field, value in values.items():
            assert value not in whole_store, f"a plaintext {field} is in the event store"
            # Published copies leave the personal fields out altogether.
            assert value not in published, f"a plaintext {field} was published"


# --- (c) the access log -----------------------------------------------------------------------


def in_outbox(stack: Stack, service: str, texts: Iterable[str]) -> list[str]:
    """Which of ``texts`` a row of the service's outbox holds."""
    bodies = [row[0] for row in rows(stack, service, "SELECT body FROM outbox")]
    return [text for text in texts if any(text in body for body in bodies)]


def test_every_request_emits_an_access_log_event(stack):
    with access_log(stack) as log:
        signed = sign_up(stack)
        key, tenant_id, admin_id = (
            signed["api_key"],
            signed["tenant"]["id"],
            signed["agent"]["id"],
        )
        contact = stack.call(
            "POST",
            "/v1/contacts",
            key=key,
            json={"name": "Logged Contact", "email": "logged@example.com"},
        ).json()
        bad_key = "ldk_" + secrets.token_urlsafe(32)
        absent_id = str(uuid.uuid4())
        agents = {name: unique(f"e2e-{name}") for name in ("ok", "unauthorized", "missing")}
        traces: dict[str, str] = {}
        requests_made = {
            "ok": (f"/v1/contacts/{contact['id']}", key, 200),
            "unauthorized": (f"/v1/contacts/{contact['id']}", bad_key, 401),
            "missing": (f"/v1/contacts/{absent_id}", key, 404),
        }
        for name, (path, used_key, status) in requests_made.items():
            trace_id, header = client_traceparent()
            traces[name] = trace_id
            response = stack.call(
                "GET",
                path,
                key=used_key,
                headers={"User-Agent": agents[name], "traceparent": header},
            )
            assert response.status_code == status, response.text
            # The trace sent is continued once the key is good; a 401's is the gateway's own.
            answered = response.headers["traceresponse"].split("-")[1]
            assert (answered == trace_id) is (name != "unauthorized")
            traces[name] = answered

        events = log.collect(set(agents.values()))
        raw = [body for body, _ in log.events]
    # Published, so gone from the gateway's outbox: a request's IP address and user agent are
    # kept by audit alone, under keys that its access-log period shreds.
    wait_until(
        lambda: not in_outbox(stack, "gateway", agents.values()),
        what="the published access events gone from the gateway's outbox",
    )

    for name, (path, _, status) in requests_made.items():
        event = events[agents[name]]
        assert event["type"] == "access_logged" and event["source"] == "gateway"
        payload = event["payload"]
        assert payload == {
            "method": "GET",
            "route": "/v1/contacts/<string:contact_id>",
            "resource_ids": payload["resource_ids"],
            "omitted_ids": 0,
            "status": status,
            "ip": "127.0.0.1",
            "user_agent": agents[name],
            "trace_id": traces[name],
        }
        assert path.rsplit("/", 1)[1] in payload["resource_ids"]
        assert event["trace"]["traceparent"].split("-")[1] == traces[name]
        if name == "unauthorized":
            assert event["tenant_id"] is None and event["actor_id"] is None
        else:
            assert event["tenant_id"] == tenant_id and event["actor_id"] == admin_id
    for body in raw:
        for secret in (key, bad_key):
            assert secret not in body, "an access-log event carries an API key"


def test_requests_that_match_no_route_emit_an_access_log_event_too(stack):
    key = sign_up(stack)["api_key"]
    agents = {name: unique(f"e2e-{name}") for name in ("no-route", "no-method", "sentinel")}
    with access_log(stack) as log:
        assert (
            stack.call(
                "GET", "/v1/nothing-here", key=key, headers={"User-Agent": agents["no-route"]}
            ).status_code
            == 404
        )
        assert (
            stack.call(
                "PUT", "/v1/tenant", key=key, headers={"User-Agent": agents["no-method"]}
            ).status_code
            == 405
        )
        # Events leave in the order they were recorded: once this one is here, so are those.
        assert (
            stack.call(
                "GET", "/v1/tenant", key=key, headers={"User-Agent": agents["sentinel"]}
            ).status_code
            == 200
        )
        log.collect({agents["sentinel"]})
        found = {e["payload"]["user_agent"]: e for _, e in log.events}
    for name, status in (("no-route", 404), ("no-method", 405)):
        assert agents[name] in found, f"no access-log event for the {status}"
        assert found[agents[name]]["payload"]["status"] == status
        assert found[agents[name]]["payload"]["route"] == "<unmatched>"


# --- (d) the services' logs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def logged(infrastructure, tmp_path_factory) -> Iterator[tuple[Stack, Path]]:
    """A stack of its own whose processes all write their logs to one file."""
    log = tmp_path_factory.mktemp("service-logs") / "services.log"
    with stack_logging_to(infrastructure, log) as running:
        yield running, log


def test_the_services_logs_hold_no_personal_data_or_secrets(logged):
    stack, log = logged
    admin, agent, contact, rectified = person(), person(), person(), person()
    signed = sign_up(stack, admin={"name": admin["name"], "email": admin["email"]})
    key = signed["api_key"]
    created_agent = stack.call(
        "POST",
        "/v1/agents",
        key=key,
        json={"name": agent["name"], "email": agent["email"], "role": "agent"},
    ).json()
    issued = stack.call("POST", f"/v1/agents/{created_agent['id']}/api-keys", key=key).json()
    created = stack.call("POST", "/v1/contacts", key=key, json=contact)
    contact_id, etag = created.json()["id"], created.headers["ETag"]
    path = f"/v1/contacts/{contact_id}"
    assert stack.call("PATCH", path, key=key, json=rectified, headers={"If-Match": etag}).ok
    # Refusals log warnings: none of them may quote what was sent.
    stale = stack.call("PATCH", path, key=key, json=contact, headers={"If-Match": etag})
    assert stale.status_code == 409
    invalid = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": contact["name"], "email": f"{contact['email']} is not an email"},
    )
    assert invalid.status_code == 422
    malformed = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        data=f'{{"name": "{contact["name"]}", "email": '.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    bad_key = "ldk_" + secrets.token_urlsafe(32)
    assert stack.call("GET", "/v1/tenant", key=bad_key).status_code == 401
    wrong_operator = unique("wrong-operator-token")
    assert (
        stack.call(
            "POST", "/v1/operator/policies", key=wrong_operator, json={"version": "x"}
        ).status_code
        == 401
    )
    published = stack.call(
        "POST",
        "/v1/operator/policies",
        key=stack.settings.operator_token,
        json={"version": unique("logs")},
    )
    assert published.status_code == 201
    sentinel, trace_id = traced(stack, "GET", f"/v1/contacts/{uuid.uuid4()}/consent", key=key)
    assert sentinel.status_code == 404

    content = logged_line(log, trace_id)
    assert "POST /v1/signup -> 201" in content  # the log really is the services' log

    settings = stack.settings
    secrets_ = {
        "admin API key": key,
        "agent API key": created_agent["api_key"],
        "issued API key": issued["api_key"],
        "unknown API key": bad_key,
        "operator token": settings.operator_token,
        "wrong operator token": wrong_operator,
        "API key secret": settings.api_key_secret,
        **{
            f"master key {kid}": base64.b64encode(value).decode()
            for kid, value in settings.master_keys.items()
        },
    }
    for what, secret in secrets_.items():
        assert secret not in content, f"the {what} is in the services' log"
    for who, values in (
        ("admin", admin),
        ("agent", agent),
        ("contact", contact),
        ("rectified contact", rectified),
    ):
        for field, value in values.items():
            assert value not in content, f"the {who}'s {field} is in the services' log"


LEAKS = [
    pytest.param(
        "GET",
        "/v1/contacts?email={email}",
        None,
        id="query-string",
    ),
    pytest.param(
        "GET",
        "/v1/contacts/{email}",
        None,
        id="path",
    ),
    pytest.param(
        "POST",
        "/v1/contacts",
        {"name": "N", "email": "n@example.com", "{email}": True},
        id="unknown-field-name",
    ),
]


@pytest.mark.parametrize("method, template, body", LEAKS)
def test_personal_data_a_client_sends_by_mistake_is_not_logged(logged, method, template, body):
    stack, log = logged
    email = person()["email"]
    key = sign_up(stack)["api_key"]
    path = template.format(email=email)
    json_body = {k.format(email=email): v for k, v in body.items()} if body else None
    response = stack.call(method, path, key=key, json=json_body)
    assert response.status_code < 500, response.text
    sentinel, trace_id = traced(stack, "GET", f"/v1/contacts/{uuid.uuid4()}", key=key)
    assert sentinel.status_code == 404
    content = logged_line(log, trace_id)
    assert email not in content, "a client's personal data is in the services' log"
