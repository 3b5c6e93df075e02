"""Billing over real HTTP against the whole platform running as processes: plans, subscription,
plan change, address, payment methods by processor token, invoices and charges, roles, tenant
isolation, and card numbers refused wherever a request carries them and found nowhere after:
not in any table of billing, the gateway or accounts, nor in the services' log output.

The invoice run is a nameko timer (hourly), not an RPC: to have invoices here, the test process
runs the timer's own logic (``handlers.run_invoices``) against the stack's billing database with
a clock a month ahead, asking accounts for the billing contact over RPC, as the timer does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer, Queue, binding

from kernel.testing import client_traceparent, wait_until
from kernel.topology import events_exchange
from services.billing.catalogue import Catalogue
from services.billing.domain import next_month
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    ADDRESS,
    a_month_ahead,
    assert_problem,
    audit_holds,
    create_agent,
    fresh_card,
    invoice_runner,
    logged_line,
    rows,
    sign_up,
    stack_logging_to,
    stored_text,
    traced,
    unique,
)
from tests.support.privacy import privacy_command

# The card numbers the refusal test sends, as sent (with and without separators).
CARDS = ("4111111111111111", "5555 5555 5555 4444", "3782-822463-10005")
BILLING_ENDPOINTS = (
    ("GET", "/v1/billing/plans", None),
    ("GET", "/v1/billing/subscription", None),
    ("PUT", "/v1/billing/subscription", {"plan": "team"}),
    ("PUT", "/v1/billing/address", {"address": ADDRESS}),
    ("POST", "/v1/billing/payment-methods", {"processor_token": "tok_sandbox_visa"}),
    ("GET", "/v1/billing/payment-methods", None),
    ("GET", "/v1/billing/invoices", None),
    ("GET", "/v1/billing/invoices/{invoice_id}", None),
    ("POST", "/v1/billing/invoices/{invoice_id}/pay", None),
)


# --- the stack, its log, and the invoice run ---------------------------------------------------


@pytest.fixture(scope="module")
def logged_stack(infrastructure, tmp_path_factory) -> Iterator[tuple[Stack, Path]]:
    """This module's stack; every process writes its log output to one file."""
    log = tmp_path_factory.mktemp("billing-logs") / "services.log"
    with stack_logging_to(infrastructure, log) as running:
        yield running, log


@pytest.fixture(scope="module")
def stack(logged_stack) -> Stack:
    return logged_stack[0]


@pytest.fixture(scope="module")
def invoice_run(stack) -> Iterator[Callable[[], int]]:
    with invoice_runner(stack) as run:
        yield run


# --- helpers ----------------------------------------------------------------------------------


def billed_tenant(stack: Stack, region: str = "uk") -> dict[str, Any]:
    """A new tenant whose billing account billing has opened (it learns of it by event)."""
    tag = secrets.token_hex(4)
    admin = {"name": f"Bill Payer {tag}", "email": f"payer.{tag}@billing.example"}
    signed = sign_up(stack, company=f"Billed {tag} Ltd", region=region, admin=admin)
    key = signed["api_key"]
    wait_until(
        lambda: stack.call("GET", "/v1/billing/subscription", key=key).status_code == 200,
        timeout=30,
        interval=0.2,
        what="billing to open the new tenant's account",
    )
    return {
        "key": key,
        "tenant_id": signed["tenant"]["id"],
        "company": signed["tenant"]["company"],
        "admin_id": signed["agent"]["id"],
        "admin": admin,
    }


def subscription(stack: Stack, key: str) -> dict[str, Any]:
    response = stack.call("GET", "/v1/billing/subscription", key=key)
    assert response.status_code == 200, response.text
    return response.json()


def invoices(stack: Stack, key: str) -> list[dict[str, Any]]:
    response = stack.call("GET", "/v1/billing/invoices", key=key)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def add_card(stack: Stack, key: str, token: str) -> dict[str, Any]:
    response = stack.call(
        "POST", "/v1/billing/payment-methods", key=key, json={"processor_token": token}
    )
    assert response.status_code == 201, response.text
    return response.json()


def sandbox_charges(stack: Stack, invoice_id: str) -> list[tuple[str, str]]:
    query = (
        "SELECT idempotency_key, status FROM sandbox_charges"
        " WHERE idempotency_key LIKE %s ORDER BY idempotency_key"
    )
    return rows(stack, "billing", query, f"invoice-{invoice_id}-%")


def privacy_answer(
    stack: Stack, command: str, tenant_id: str, subject_id: str | None
) -> dict[str, Any]:
    """Billing's answer to a privacy command, both as retention and billing meet them: the
    command published on the events exchange (every service's privacy queue gets it; naming
    billing, the others leave it), the answer read off the exchange as retention reads it."""
    _, traceparent = client_traceparent()
    event = privacy_command(
        command,
        tenant_id,
        subject_id,
        subject_kind="agent",
        services=["billing"],
        trace={"traceparent": traceparent},
    )
    request_id = event.payload["request_id"]
    answers = Queue(
        unique("e2e.billing.answers"),
        bindings=[binding(events_exchange, "billing.privacy_answered")],
        exclusive=True,
    )
    found: list[dict[str, Any]] = []
    with Connection(stack.settings.amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        answers(channel).declare()  # bound before the command goes: no answer is missed
        Producer(channel, exchange=events_exchange).publish(
            json.dumps(event.to_dict()),
            routing_key=event.routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=str(event.event_id),
            headers={f"nameko.{k}": v for k, v in event.trace.items()},
        )

        def answered() -> bool:
            while (message := channel.basic_get(answers.name, no_ack=True)) is not None:
                payload = json.loads(message.body)["payload"]
                if payload["request_id"] == request_id:
                    found.append(payload)
            return bool(found)

        wait_until(answered, timeout=30, interval=0.2, what=f"billing's answer to {command}")
    [answer] = found
    assert (answer["command"], answer["service"]) == (command, "billing")
    return answer


# --- plans, subscription, address, payment methods -------------------------------------------


def test_plans_and_the_subscription_of_a_new_tenant(stack):
    tenant = billed_tenant(stack, region="in")
    plans = stack.call("GET", "/v1/billing/plans", key=tenant["key"])
    assert plans.status_code == 200, plans.text
    assert plans.json() == {
        "items": [
            {"name": "standard", "price_per_agent": 1500, "currency": "GBP"},
            {"name": "team", "price_per_agent": 2900, "currency": "GBP"},
            {"name": "enterprise", "price_per_agent": 4900, "currency": "GBP"},
        ]
    }
    assert subscription(stack, tenant["key"]) == {
        "plan": "standard",
        "price_per_agent": 1500,
        "currency": "GBP",
        "seats": 1,
        "region": "in",
        "tax_rate": "0.18",
        "billed_until": dt.datetime.now(dt.UTC).date().replace(day=1).isoformat(),
    }
    # A new agent is a new seat, once billing has heard of it.
    create_agent(stack, tenant["key"], "agent")
    wait_until(
        lambda: subscription(stack, tenant["key"])["seats"] == 2,
        timeout=30,
        interval=0.2,
        what="the new agent's seat",
    )


def test_a_plan_change_and_an_unknown_plan(stack):
    tenant = billed_tenant(stack)
    changed = stack.call(
        "PUT", "/v1/billing/subscription", key=tenant["key"], json={"plan": "team"}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["plan"], changed.json()["price_per_agent"]) == ("team", 2900)
    assert subscription(stack, tenant["key"])["plan"] == "team"

    for body in ({"plan": "platinum"}, {"plan": ""}, {}, {"plan": "team", "extra": 1}):
        refused = stack.call("PUT", "/v1/billing/subscription", key=tenant["key"], json=body)
        assert_problem(refused, 422)
    assert subscription(stack, tenant["key"])["plan"] == "team"


def test_the_billing_address(stack):
    tenant = billed_tenant(stack)
    saved = stack.call("PUT", "/v1/billing/address", key=tenant["key"], json={"address": ADDRESS})
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"address": ADDRESS}
    missing_city = {k: v for k, v in ADDRESS.items() if k != "city"}
    refused = stack.call(
        "PUT", "/v1/billing/address", key=tenant["key"], json={"address": missing_city}
    )
    assert "address" in assert_problem(refused, 422)["errors"]


def test_payment_methods_by_sandbox_token_keep_brand_last4_and_expiry(stack):
    tenant = billed_tenant(stack)
    visa = add_card(stack, tenant["key"], "tok_sandbox_visa")
    assert visa == {
        "id": visa["id"],
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
    }
    uuid.UUID(visa["id"])
    mastercard = add_card(stack, tenant["key"], "tok_sandbox_mastercard")
    assert {k: mastercard[k] for k in ("brand", "last4", "exp_month", "exp_year")} == {
        "brand": "mastercard",
        "last4": "4444",
        "exp_month": 6,
        "exp_year": 2031,
    }
    listed = stack.call("GET", "/v1/billing/payment-methods", key=tenant["key"])
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [visa, mastercard]

    # A token of the processor's form that it does not know names nothing: 404, as an id
    # would; one not of that form is refused as malformed.
    for token, status in (("tok_sandbox_unknown", 404), ("not-a-token", 422), ("", 422)):
        refused = stack.call(
            "POST",
            "/v1/billing/payment-methods",
            key=tenant["key"],
            json={"processor_token": token},
        )
        assert_problem(refused, status)

    # The same Idempotency-Key gives the first answer again, and adds nothing.
    headers = {"Idempotency-Key": unique("pm")}
    first, again = (
        stack.call(
            "POST",
            "/v1/billing/payment-methods",
            key=tenant["key"],
            json={"processor_token": "tok_sandbox_declined"},
            headers=headers,
        )
        for _ in range(2)
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    after = stack.call("GET", "/v1/billing/payment-methods", key=tenant["key"]).json()["items"]
    assert len(after) == 3


# --- roles and isolation ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "auditor"])
def test_only_an_admin_may_use_billing(stack, role):
    tenant = billed_tenant(stack)
    other_key = create_agent(stack, tenant["key"], role)["api_key"]
    invoice_id = str(uuid.uuid4())
    for method, template, body in BILLING_ENDPOINTS:
        path = template.format(invoice_id=invoice_id)
        refused = stack.call(method, path, key=other_key, json=body)
        assert_problem(refused, 403)
        assert_problem(stack.call(method, path, json=body), 401)
    # Nothing the refused requests asked for happened.
    assert subscription(stack, tenant["key"])["plan"] == "standard"
    methods = stack.call("GET", "/v1/billing/payment-methods", key=tenant["key"]).json()
    assert methods["items"] == []


def test_invoices_list_get_pay_and_isolation(stack, invoice_run):
    tenant = billed_tenant(stack, region="sg")
    key = tenant["key"]
    agent = create_agent(stack, key, "agent")
    wait_until(lambda: subscription(stack, key)["seats"] == 2, timeout=30, what="two seats")
    assert stack.call("PUT", "/v1/billing/subscription", key=key, json={"plan": "team"}).ok
    assert stack.call("PUT", "/v1/billing/address", key=key, json={"address": ADDRESS}).ok
    assert invoices(stack, key) == []

    assert invoice_run() >= 1
    [invoice] = invoices(stack, key)
    this_month = dt.datetime.now(dt.UTC).date().replace(day=1)
    issued_on = a_month_ahead().date()
    assert invoice == {
        "id": invoice["id"],
        "number": "INV-000001",
        "period_start": this_month.isoformat(),
        "period_end": next_month(this_month).isoformat(),
        "currency": "GBP",
        "lines": [
            {
                "description": f"team plan, {this_month:%B %Y}, per agent",
                "quantity": 2,
                "unit_amount": 2900,
                "amount": 5800,
            }
        ],
        "subtotal": 5800,
        "tax_rate": "0.09",
        "tax": 522,
        "total": 6322,
        "company": tenant["company"],
        "address": ADDRESS,
        "billing_contact": {"id": tenant["admin_id"], **tenant["admin"]},
        "status": "issued",
        "issued_at": invoice["issued_at"],
        "hold_until": issued_on.replace(year=issued_on.year + 10).isoformat(),
    }
    one = stack.call("GET", f"/v1/billing/invoices/{invoice['id']}", key=key)
    assert one.status_code == 200 and one.json() == invoice
    assert_problem(stack.call("GET", f"/v1/billing/invoices/{uuid.uuid4()}", key=key), 404)
    assert_problem(stack.call("GET", "/v1/billing/invoices/not-a-uuid", key=key), 404)

    # Another tenant: the invoice is as absent as one that never existed.
    other = billed_tenant(stack)
    add_card(stack, other["key"], "tok_sandbox_visa")
    for method, suffix in (("GET", ""), ("POST", "/pay")):
        path = f"/v1/billing/invoices/{invoice['id']}{suffix}"
        assert_problem(stack.call(method, path, key=other["key"]), 404)
    assert invoice["id"] not in {i["id"] for i in invoices(stack, other["key"])}

    pay = f"/v1/billing/invoices/{invoice['id']}/pay"
    assert_problem(stack.call("POST", pay, key=key), 409)  # no payment method yet
    add_card(stack, key, "tok_sandbox_declined")
    declined = stack.call("POST", pay, key=key)
    assert declined.status_code == 200, declined.text
    assert (declined.json()["charge"], declined.json()["status"]) == ("declined", "issued")

    add_card(stack, key, "tok_sandbox_visa")
    headers = {"Idempotency-Key": unique("pay")}
    paid = stack.call("POST", pay, key=key, headers=headers)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["charge"], paid.json()["status"]) == ("succeeded", "paid")
    replayed = stack.call("POST", pay, key=key, headers=headers)
    assert replayed.status_code == 200 and replayed.json() == paid.json()
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert_problem(stack.call("POST", pay, key=key), 409)  # already paid
    assert invoices(stack, key)[0]["status"] == "paid"
    assert sandbox_charges(stack, invoice["id"]) == [
        (f"invoice-{invoice['id']}-0", "declined"),
        (f"invoice-{invoice['id']}-1", "succeeded"),
    ]

    # Erasure: the billing contact is held by the invoice; an agent never billed is not.
    held = privacy_answer(stack, "erase_subject", tenant["tenant_id"], tenant["admin_id"])
    done = privacy_answer(stack, "erase_subject", tenant["tenant_id"], agent["id"])
    assert {k: held[k] for k in ("status", "basis", "until")} == {
        "status": "retained",
        "basis": Catalogue.of(stack.settings).legal_basis,
        "until": invoice["hold_until"],
    }
    assert done["status"] == "done"


def test_a_processor_error_is_503_and_paying_again_reuses_the_key(stack, invoice_run):
    tenant = billed_tenant(stack)
    key = tenant["key"]
    invoice_run()
    [invoice] = invoices(stack, key)
    pay = f"/v1/billing/invoices/{invoice['id']}/pay"
    add_card(stack, key, "tok_sandbox_error")
    assert_problem(stack.call("POST", pay, key=key), 503)
    assert sandbox_charges(stack, invoice["id"]) == []
    add_card(stack, key, "tok_sandbox_mastercard")
    paid = stack.call("POST", pay, key=key)
    assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text
    assert sandbox_charges(stack, invoice["id"]) == [(f"invoice-{invoice['id']}-0", "succeeded")]


# --- card numbers: refused wherever they are, and found nowhere after --------------------------


def digits_of(card: str) -> str:
    return re.sub(r"\D", "", card)


def traces(text: str, cards: tuple[str, ...]) -> list[str]:
    """The cards ``text`` holds, written with or without separators (spaces, dashes, or those
    of a query string)."""
    flat = re.sub(r"\s|-|\+|%20|%2[dD]", "", text)
    return [card for card in cards if digits_of(card) in flat]


def leaks(stack: Stack, log: Path, key: str, cards: tuple[str, ...]) -> list[str]:
    """Where any of ``cards`` is stored or logged, once the services' log has caught up."""
    sentinel, trace_id = traced(stack, "GET", "/v1/billing/plans", key=key)
    assert sentinel.status_code == 200
    found = []
    if hits := traces(logged_line(log, trace_id), cards):
        found.append(f"the services' log: {hits}")
    # The audit ledger records every access and event from the broker: once it has the
    # sentinel's access, it has everything sent before it.
    wait_until(
        lambda: audit_holds(stack, trace_id),
        timeout=30,
        interval=0.2,
        what="the audit ledger to record the sentinel request",
    )
    scanned: dict[str, str] = {}
    for service in ("billing", "gateway", "accounts", "audit"):
        columns = stored_text(stack.settings.database_dsn(service))
        scanned.update({f"{service}: {name}": text for name, text in columns.items()})
    # The scan covers the places the brief names: a scan of nothing would find nothing.
    for expected in (
        "billing: events.payload",
        "billing: events.metadata",
        "billing: outbox.body",
        "billing: payment_methods.token",
        "gateway: idempotency_keys.key",
        "gateway: idempotency_keys.body",
        "gateway: outbox.body",
        "accounts: outbox.body",
        "audit: ledger.content",
    ):
        assert expected in scanned, f"{expected} was not scanned"
    found += [
        f"{where}: {hits}" for where, text in scanned.items() if (hits := traces(text, cards))
    ]
    return found


def refusals(card: str, other: str, third: str, invoice_id: str) -> list[tuple[str, str, dict]]:
    """Billing requests with a card number somewhere in them: (what, method and path, kwargs)."""
    json_header = {"Content-Type": "application/json"}
    pm = "POST /v1/billing/payment-methods"
    return [
        ("a body value", pm, {"json": {"processor_token": card}}),
        ("an unknown field's value", pm, {"json": {"processor_token": "tok_x", "card": other}}),
        ("an unknown field's name", pm, {"json": {"processor_token": "tok_x", third: "amex"}}),
        (
            "a nested value",
            "PUT /v1/billing/address",
            {"json": {"address": {**ADDRESS, "line2": f"card {other} exp 12/30"}}},
        ),
        (
            "a nested list",
            "PUT /v1/billing/subscription",
            {"json": {"plan": "team", "notes": [{"cards": [third]}]}},
        ),
        ("a JSON number", "PUT /v1/billing/subscription", {"json": {"plan": int(card)}}),
        (
            "a JSON number with a fraction",
            "PUT /v1/billing/subscription",
            {"data": f'{{"plan": {card}.0}}', "headers": json_header},
        ),
        (
            "a malformed JSON body",
            pm,
            {"data": f'{{"processor_token": "{card}"', "headers": json_header},
        ),
        (
            "a body that is not JSON at all",
            "PUT /v1/billing/address",
            {"data": f"card={third}&cvc=123", "headers": json_header},
        ),
        ("a query value", "GET /v1/billing/invoices", {"params": {"search": card}}),
        ("a query value with spaces", "GET /v1/billing/subscription", {"params": {"q": other}}),
        ("a query name", "GET /v1/billing/plans", {"params": {third: "1"}}),
        (
            "the query of a payment",
            f"POST /v1/billing/invoices/{invoice_id}/pay",
            {"params": {"card": card}},
        ),
        (
            "the query of an invoice",
            f"GET /v1/billing/invoices/{invoice_id}",
            {"params": {"ref": other}},
        ),
        (
            "a body with an Idempotency-Key",
            pm,
            {"json": {"processor_token": third}, "headers": {"Idempotency-Key": unique("pm")}},
        ),
    ]


def test_a_card_number_anywhere_in_a_billing_request_is_refused_and_never_kept(logged_stack):
    stack, log = logged_stack
    tenant = billed_tenant(stack)
    key = tenant["key"]
    cases = refusals(*CARDS, invoice_id=str(uuid.uuid4()))
    answered = {}
    for what, route, kwargs in cases:
        method, path = route.split(" ", 1)
        response = stack.call(method, path, key=key, **kwargs)
        answered[what] = response.status_code
        if response.status_code == 422:
            body = assert_problem(response, 422)
            assert "card number" in body["errors"]["_schema"][0], what
        assert not traces(response.text, CARDS), f"the answer to {what} echoes the card"
    assert answered == {what: 422 for what, _, _ in cases}
    # Nothing the refused requests asked for happened.
    assert subscription(stack, key)["plan"] == "standard"
    assert stack.call("GET", "/v1/billing/payment-methods", key=key).json()["items"] == []
    assert leaks(stack, log, key, CARDS) == []


@pytest.mark.parametrize(
    "where",
    [
        "invoice-path",
        "pay-path",
        pytest.param(
            "idempotency-key",
        ),
        "user-agent",
    ],
)
def test_a_card_number_in_a_billing_requests_path_or_headers_is_never_kept(logged_stack, where):
    stack, log = logged_stack
    key = billed_tenant(stack)["key"]
    card = fresh_card()
    spaced = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    dashed = spaced.replace(" ", "-")
    if where == "invoice-path":
        response = stack.call("GET", f"/v1/billing/invoices/{card}", key=key)
    elif where == "pay-path":
        response = stack.call("POST", f"/v1/billing/invoices/{dashed}/pay", key=key)
    elif where == "idempotency-key":
        response = stack.call(
            "POST",
            "/v1/billing/payment-methods",
            key=key,
            json={"processor_token": "tok_sandbox_visa"},
            headers={"Idempotency-Key": spaced},
        )
    else:
        response = stack.call(
            "GET", "/v1/billing/plans", key=key, headers={"User-Agent": f"card {spaced}"}
        )
    assert response.status_code < 500, response.text
    assert not traces(response.text, (card,))
    assert leaks(stack, log, key, (card,)) == []
