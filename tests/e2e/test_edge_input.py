"""The edge trusts nothing a client sends: trace headers, deeply nested and large bodies.

Over real HTTP and real processes: a client's ``tracestate`` reaches no event, outbox, queue or
ledger entry; its ``traceparent`` is continued only when it has the exact W3C syntax and the
request is authenticated; JSON nested deeper than the limit is a 400 problem on every route
that reads a body, and a body past its route's limit a 413, and the gateway serves on.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from gateway import problems
from gateway.bodies import BODY_BYTES, MAX_JSON_DEPTH
from kernel.testing import client_traceparent, wait_until
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    ADDRESS,
    assert_problem,
    audit_holds,
    fresh_card,
    recorded_trace_ids,
    sign_up,
    traced,
    unique,
)
from tests.support import sweep

JSON = {"Content-Type": "application/json"}
BILLING_REFUSAL = "a value looks like a card number: send a processor token instead"


def spaced(card: str) -> str:
    return " ".join(card[i : i + 4] for i in range(0, len(card), 4))


def a_traceparent() -> tuple[str, str]:
    return client_traceparent()


def settled(stack: Stack, key: str) -> None:
    """Once the ledger holds an access sent after everything before it, it holds all of it."""
    sentinel, trace_id = traced(stack, "GET", "/v1/me", key=key)
    assert sentinel.status_code == 200, sentinel.text
    wait_until(lambda: audit_holds(stack, trace_id), timeout=90, what="the sentinel's access")


# --- trace headers --------------------------------------------------------------------------


def test_a_clients_tracestate_is_kept_nowhere(stack, infrastructure):
    key = sign_up(stack)["api_key"]
    cards = {name: fresh_card() for name in ("no route", "sign-up", "contact")}
    canaries = {name: f"canary-{secrets.token_hex(8)}" for name in cards}

    def tracestate(name: str) -> dict[str, str]:
        return {
            "traceparent": a_traceparent()[1],
            "tracestate": f"pan={spaced(cards[name])},note={canaries[name]}",
        }

    # The case: no credential, no route, and the header once went into the ledger.
    missing = stack.call("GET", "/v1/no/such/route", headers=tracestate("no route"))
    assert_problem(missing, 404)
    signed = stack.call(
        "POST",
        "/v1/signup",
        json={
            "company": unique("Traced Ltd"),
            "region": "uk",
            "admin": {"name": "Ada", "email": f"{unique('ada')}@example.com"},
            "age_confirmed": True,
            "accept_policy_version": stack.call("GET", "/v1/policies/current").json()["version"],
        },
        headers=tracestate("sign-up"),
    )
    assert signed.status_code == 201, signed.text
    # A known route, authenticated: its events were each stamped with the header.
    contact = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": "Traced Contact", "email": f"{unique('tc')}@example.com"},
        headers=tracestate("contact"),
    )
    assert contact.status_code == 201, contact.text
    settled(stack, key)

    texts = [
        *sweep.database_texts(stack.settings),
        *sweep.queue_texts(infrastructure, stack.settings),
    ]
    # The ledger's entries are in the tenant logs since the switch (the frozen chain is empty).
    ledger = [text for place, text in texts if place[2] == "log_entries"]
    assert ledger, "the audit ledger was not read"
    assert sweep.find([*canaries.values(), *cards.values()], texts) == {}


def test_a_traceparent_is_continued_only_exact_and_authenticated(stack):
    key = sign_up(stack)["api_key"]
    sent: dict[str, str] = {}
    answered: dict[str, str | None] = {}

    def call(name: str, traceparent: str, used_key: str | None, status: int) -> None:
        response = stack.call("GET", "/v1/me", key=used_key, headers={"traceparent": traceparent})
        assert response.status_code == status, response.text
        sent[name] = traceparent.split("-")[1].lower()
        answered[name] = response.headers.get("traceresponse")

    trace_id, good = a_traceparent()
    call("valid, authenticated", good, key, 200)
    call("valid, bad key", a_traceparent()[1], "ldk_" + secrets.token_urlsafe(32), 401)
    call("valid, no key", a_traceparent()[1], None, 401)
    # Forms the W3C parser of OpenTelemetry accepts, but that are not the level 1 syntax.
    call("a later version", "cc" + a_traceparent()[1][2:] + "-more", key, 200)
    call("version 01", "01" + a_traceparent()[1][2:], key, 200)
    call("upper case", a_traceparent()[1].upper(), key, 200)
    # Exact syntax, but the trace id spells a card number (16 digits glued to letters).
    card = fresh_card()
    call("a card in the trace id", f"00-{card}{'a' * 16}-{secrets.token_hex(8)}-01", key, 200)
    settled(stack, key)

    recorded = set(recorded_trace_ids(stack))
    continued = {name for name, trace in sent.items() if trace in recorded}
    assert continued == {"valid, authenticated"}, continued
    assert trace_id in recorded
    # Each answer named the trace its request was recorded under, continued or not.
    assert all(a and a.split("-")[1] in recorded for a in answered.values()), answered


# --- bodies ---------------------------------------------------------------------------------


def routes(key: str) -> list[tuple[str, str, str | None]]:
    """Routes that read a JSON body: sign-up (no credential), tickets, billing, contacts."""
    return [
        ("POST", "/v1/signup", None),
        ("POST", "/v1/tickets", key),
        ("PUT", "/v1/billing/address", key),
        ("POST", "/v1/contacts", key),
    ]


def test_json_nested_too_deep_is_a_400_problem_and_the_gateway_serves_on(stack):
    key = sign_up(stack)["api_key"]
    # Within every route's size limit, and far deeper than Python's parser can recurse.
    deep = [b"[" * 60_000, b'{"a":' * 12_000, b'{"name": ' + b"[" * (MAX_JSON_DEPTH + 1)]
    for body in deep:
        for method, path, used_key in routes(key):
            response = stack.call(method, path, key=used_key, data=body, headers=JSON)
            problem = assert_problem(response, 400)
            assert problem["detail"] == f"the body nests more than {MAX_JSON_DEPTH} levels deep"
    # The issue's bodies: 100,000 levels. Past the small routes' size limit, a 413; the ticket
    # routes take that much, and answer 400. A problem either way, never a 500.
    for body in (b"[" * 100_000, b'{"a":' * 100_000):
        for method, path, used_key in routes(key):
            response = stack.call(method, path, key=used_key, data=body, headers=JSON)
            assert_problem(response, 400 if path == "/v1/tickets" else 413)

    assert stack.call("GET", "/healthz").json() == {"status": "ok"}
    assert sign_up(stack)["api_key"]


def test_a_body_past_its_routes_limit_is_a_413_and_a_card_in_a_large_one_is_found(stack):
    key = sign_up(stack)["api_key"]

    def address(line1: str) -> dict[str, Any]:
        return {"address": {**ADDRESS, "line1": line1}}

    too_large = stack.call(
        "PUT", "/v1/billing/address", key=key, json=address("x" * (BODY_BYTES + 1))
    )
    problem = assert_problem(too_large, 413)
    assert problem["detail"] == f"the body may be at most {BODY_BYTES} bytes"

    # As large as the route allows, in many short values, a card last: still found.
    card = fresh_card()
    large = {**address(ADDRESS["line1"]), "notes": ["1"] * ((BODY_BYTES - 300) // 5)}
    large["notes"].append(spaced(card))
    assert BODY_BYTES - 300 < len(json.dumps(large)) <= BODY_BYTES
    refused = stack.call("PUT", "/v1/billing/address", key=key, json=large)
    assert assert_problem(refused, 422)["errors"] == {"_schema": [BILLING_REFUSAL]}
    assert card not in refused.text.replace(" ", "")

    # A ticket's text may be large (1 MiB route): a card in it is cut to its last four.
    requester = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": "Large Ticket", "email": f"{unique('lt')}@example.com"},
    ).json()["id"]
    text = "order 123 shipped late; " * 4_000 + f"my card is {spaced(card)}"
    ticket = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": "large", "body": text, "requester_id": requester},
    )
    assert ticket.status_code == 201, ticket.text
    assert ticket.json()["body"].endswith(f"my card is [card ending {card[-4:]}]")


def test_every_answer_names_its_request_and_the_problem_types_page_lists_every_kind(stack):
    ok = stack.call("GET", "/healthz")
    unmatched = stack.call("GET", "/v1/no/such/thing")
    wrong_method = stack.call("PUT", "/healthz")
    ids = [r.headers["X-Request-Id"] for r in (ok, unmatched, wrong_method)]
    assert len({str(uuid.UUID(i)) for i in ids}) == 3
    assert assert_problem(unmatched, 404)["type"] == "/docs/problems#no-route"
    assert assert_problem(wrong_method, 405)["type"] == "/docs/problems#method-not-allowed"

    page = stack.call("GET", "/docs/problems")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for kind in problems.KINDS:
        assert f'id="{kind.slug}"' in page.text, kind.slug
