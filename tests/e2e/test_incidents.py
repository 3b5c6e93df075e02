"""Breach notification through the running stack, to a real SMTP server: the operator declares
a breach, the affected tenants' admins (and only they) are notified, see it with its 72-hour
clock and acknowledge it, and the ledger shows each step by id. Bad declarations are refused
with nothing stored, and the operator's endpoints take no tenant key."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from kernel.mail import sink
from kernel.testing import wait_until
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import assert_problem, create_agent, ok, rows, unique

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture(scope="module")
def smtp() -> Iterator[sink.Sink]:
    with sink.running() as controller:
        controller.handler.port = controller.port
        yield controller.handler


@pytest.fixture(scope="module")
def stack(infrastructure, smtp: sink.Sink) -> Iterator[Stack]:
    with running_stack(
        infrastructure,
        LEDGERDESK_SMTP_HOST="127.0.0.1",
        LEDGERDESK_SMTP_PORT=str(smtp.port),  # type: ignore[attr-defined]
        LEDGERDESK_SMTP_TIMEOUT_SECONDS="5",
        LEDGERDESK_MAIL_RETRY_SECONDS="0.5",
        LEDGERDESK_MAIL_FROM="Ledgerdesk Operations <ops@desk.example.test>",
    ) as running:
        yield running


@dataclass
class Tenant:
    id: str
    admin_id: str
    admin_key: str
    admin_email: str


def tenant(stack: Stack) -> Tenant:
    email = f"{unique('admin')}@example.com"
    created = stack.sign_up(admin={"name": "Ada Admin", "email": email})
    return Tenant(created["tenant"]["id"], created["agent"]["id"], created["api_key"], email)


def declare(stack: Stack, body: dict[str, Any], **headers: str):
    return stack.call(
        "POST",
        "/v1/operator/incidents",
        key=stack.settings.operator_token,
        json=body,
        headers=headers,
    )


def breach(*tenants: Tenant, **changes: Any) -> dict[str, Any]:
    return {
        "tenant_ids": [t.id for t in tenants],
        "categories": ["contact_details", "ticket_content"],
        "description": unique("A support export was readable at a public address"),
        **changes,
    }


def stored_incidents(stack: Stack) -> tuple[int, int]:
    """The incidents accounts holds, and the incident events in its store."""
    [(held,)] = rows(stack, "accounts", "SELECT count(*) FROM incidents")
    [(events,)] = rows(
        stack,
        "accounts",
        "SELECT count(*) FROM events WHERE type IN ('incident_declared', 'incident_notified')",
    )
    return held, events


def ledger(stack: Stack, key: str, types: str, count: int) -> list[dict[str, Any]]:
    """The ledger's entries of ``types`` that ``key`` may read, once there are ``count``."""

    def entries() -> list[dict[str, Any]] | None:
        path = "/v1/operator/audit/entries" if key == stack.settings.operator_token else None
        response = stack.call(
            "GET", path or "/v1/audit/entries", key=key, params={"type": types, "limit": "200"}
        )
        found = ok(response)["items"]
        return found if len(found) >= count else None

    return wait_until(entries, timeout=30, what=f"{count} {types} entries in the ledger")


def about(smtp: sink.Sink, incident_id: str) -> list[EmailMessage]:
    """The mails the sink received about an incident (its id is in their Message-ID)."""
    return [m for m in smtp.messages() if f".{incident_id}." in str(m["Message-ID"])]


def mailed(smtp: sink.Sink, incident_id: str, count: int) -> dict[str, EmailMessage]:
    """The mails about an incident by recipient address, once ``count`` have arrived."""
    found = wait_until(
        lambda: about(smtp, incident_id) if len(about(smtp, incident_id)) >= count else None,
        timeout=30,
        what=f"{count} mails about incident {incident_id}",
    )
    return {email.utils.parseaddr(str(m["To"]))[1]: m for m in found}


def owed(stack: Stack, incident_id: str) -> list[tuple[str, str]]:
    """The breach mails accounts queued for an incident: (recipient, status)."""
    return rows(
        stack,
        "accounts",
        "SELECT recipient_id::text, status FROM mail_outbox WHERE reference_id = %s"
        " ORDER BY recipient_id",
        incident_id,
    )


def test_a_declared_breach_reaches_the_affected_tenants_admins_and_no_one_else(
    stack: Stack, smtp: sink.Sink
):
    first, second, bystander = tenant(stack), tenant(stack), tenant(stack)
    colleague = create_agent(stack, first.admin_key, "admin")
    agent = create_agent(stack, first.admin_key, "agent")
    body = breach(first, second)

    incident = ok(declare(stack, body), 201)

    notified = {t["tenant_id"]: t["notified_ids"] for t in incident["tenants"]}
    assert notified == {first.id: [first.admin_id, colleague["id"]], second.id: [second.admin_id]}

    # One mail to each admin of the affected tenants, through a real SMTP exchange.
    admins = {first.admin_email, colleague["email"], second.admin_email}
    mails = mailed(smtp, incident["id"], 3)
    assert set(mails) == admins
    for address, mail in mails.items():
        assert mail["Auto-Submitted"] == "auto-generated", address
        assert mail["List-Unsubscribe"] is None
        assert "72 hours" in str(mail["Subject"])
        text = mail.get_content()
        assert body["description"] in text and "contact_details, ticket_content" in text
        assert f"/v1/incidents/{incident['id']}/acknowledgements" in text
    # And no one else: every mail owed for it is one of those three, each sent; the agent who
    # is not an admin and the other tenant's admin are owed nothing and received nothing.
    recipients = sorted([first.admin_id, colleague["id"], second.admin_id])
    wait_until(
        lambda: all(status == "sent" for _, status in owed(stack, incident["id"])),
        timeout=30,
        what="every breach mail sent",
    )
    assert owed(stack, incident["id"]) == [(r, "sent") for r in recipients]
    assert len(about(smtp, incident["id"])) == 3
    received = {email.utils.parseaddr(str(m["To"]))[1] for m in smtp.messages()}
    assert agent["email"] not in received and bystander.admin_email not in received
    # The answer is ids and states (the gateway may keep it for a replay); GET has the text.
    assert "description" not in incident and "categories" not in incident
    operator = stack.settings.operator_token
    followed = ok(stack.call("GET", f"/v1/operator/incidents/{incident['id']}", key=operator))
    assert (followed["description"], followed["categories"]) == (
        body["description"],
        body["categories"],
    )
    aware = dt.datetime.fromisoformat(incident["aware_at"])
    assert dt.datetime.fromisoformat(incident["deadline"]) == aware + dt.timedelta(hours=72)
    assert incident["deadline_passed"] is False

    # In the console's API, for the affected tenants' admins only.
    seen = ok(stack.call("GET", f"/v1/incidents/{incident['id']}", key=first.admin_key))
    assert (seen["categories"], seen["description"]) == (body["categories"], body["description"])
    assert (seen["aware_at"], seen["deadline"], seen["deadline_passed"]) == (
        incident["aware_at"],
        incident["deadline"],
        False,
    )
    assert seen["notified_ids"] == [first.admin_id, colleague["id"]]
    assert seen["acknowledgements"] == []
    listed = ok(stack.call("GET", "/v1/incidents", key=second.admin_key))["items"]
    assert [i["id"] for i in listed] == [incident["id"]]
    assert listed[0]["notified_ids"] == [second.admin_id]

    missing = stack.call("GET", f"/v1/incidents/{incident['id']}", key=bystander.admin_key)
    assert_problem(missing, 404)
    assert ok(stack.call("GET", "/v1/incidents", key=bystander.admin_key))["items"] == []
    # Agents who are not admins: the notice is the controller's, which its admins act for.
    assert_problem(stack.call("GET", "/v1/incidents", key=agent["api_key"]), 403)
    assert_problem(stack.call("GET", f"/v1/incidents/{incident['id']}", key=agent["api_key"]), 403)


def test_a_breach_known_for_longer_than_72_hours_shows_its_deadline_passed(stack: Stack):
    affected = tenant(stack)
    aware = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=80)
    incident = ok(declare(stack, breach(affected, aware_at=aware.isoformat())), 201)
    seen = ok(stack.call("GET", f"/v1/incidents/{incident['id']}", key=affected.admin_key))
    assert dt.datetime.fromisoformat(seen["aware_at"]) == aware
    assert dt.datetime.fromisoformat(seen["deadline"]) == aware + dt.timedelta(hours=72)
    assert seen["deadline_passed"] is True


def test_each_admin_acknowledges_once_and_the_ledger_shows_every_step(stack: Stack):
    affected, bystander = tenant(stack), tenant(stack)
    colleague = create_agent(stack, affected.admin_key, "admin")
    body = breach(affected)
    incident = ok(declare(stack, body), 201)
    path = f"/v1/incidents/{incident['id']}/acknowledgements"

    acknowledged = ok(stack.call("POST", path, key=affected.admin_key), 201)
    [ack] = acknowledged["acknowledgements"]
    assert ack["agent_id"] == affected.admin_id
    # Once per admin: a second is answered with the acknowledgement on record, nothing new.
    again = ok(stack.call("POST", path, key=affected.admin_key), 200)
    assert again["acknowledgements"] == [ack]
    both = ok(stack.call("POST", path, key=colleague["api_key"]), 201)["acknowledgements"]
    assert [a["agent_id"] for a in both] == [affected.admin_id, colleague["id"]]
    assert_problem(stack.call("POST", path, key=bystander.admin_key), 404)

    operator = stack.settings.operator_token
    followed = ok(stack.call("GET", f"/v1/operator/incidents/{incident['id']}", key=operator))
    [standing] = followed["tenants"]
    assert [a["agent_id"] for a in standing["acknowledgements"]] == [
        affected.admin_id,
        colleague["id"],
    ]
    listed = ok(stack.call("GET", "/v1/operator/incidents", key=operator, params={"limit": 200}))
    assert incident["id"] in [i["id"] for i in listed["items"]]

    # The tenant's ledger: notified (to whom, by id) and acknowledged (by whom), ids only.
    key = affected.admin_key
    [notified] = ledger(stack, key, "incident_notified", 1)
    assert notified["tenant_id"] == affected.id
    assert notified["payload"]["incident_id"] == incident["id"]
    assert sorted(notified["payload"]["admin_ids"]) == sorted([affected.admin_id, colleague["id"]])
    assert "description" not in notified["payload"] and "categories" not in notified["payload"]
    acknowledgements = ledger(stack, key, "incident_acknowledged", 2)
    assert sorted(e["payload"]["agent_id"] for e in acknowledgements) == sorted(
        [affected.admin_id, colleague["id"]]
    )
    assert {e["actor_id"] for e in acknowledgements} == {affected.admin_id, colleague["id"]}
    # The declaration is the platform's: the operator's ledger has it, naming the tenants.
    declared = [
        e
        for e in ledger(stack, operator, "incident_declared", 1)
        if e["payload"]["incident_id"] == incident["id"]
    ]
    assert [(e["actor_id"], e["payload"]["tenant_ids"]) for e in declared] == [
        ("operator", [affected.id])
    ]
    everything = ok(stack.call("GET", "/v1/audit/entries", key=key, params={"limit": 200}))
    assert body["description"] not in str(everything)


def test_two_admins_with_one_idempotency_key_each_acknowledge(stack: Stack):
    affected = tenant(stack)
    colleague = create_agent(stack, affected.admin_key, "admin")
    incident = ok(declare(stack, breach(affected)), 201)
    path = f"/v1/incidents/{incident['id']}/acknowledgements"
    # An acknowledgement is its caller's own: another admin's same key is their request.
    headers = {"Idempotency-Key": unique("ack")}
    first = stack.call("POST", path, key=affected.admin_key, headers=headers)
    second = stack.call("POST", path, key=colleague["api_key"], headers=headers)
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert "Idempotent-Replayed" not in second.headers
    ids = [a["agent_id"] for a in second.json()["acknowledgements"]]
    assert ids == [affected.admin_id, colleague["id"]]
    # The first admin's retry is theirs replayed.
    replay = stack.call("POST", path, key=affected.admin_key, headers=headers)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant_ids": "unknown"}, "tenant_ids"),
        ({"categories": ["gossip"]}, "categories"),
        ({"categories": []}, "categories"),
        ({"description": ""}, "description"),
        ({"aware_at": "2999-01-01T00:00:00Z"}, "aware_at"),
        ({"aware_at": "2026-12-01T10:00:00"}, "aware_at"),
        ({"severity": "high"}, "severity"),
    ],
)
def test_a_bad_declaration_is_refused_with_nothing_stored(stack: Stack, changes, field):
    affected = tenant(stack)
    before = stored_incidents(stack)
    [(mails_before,)] = rows(stack, "accounts", "SELECT count(*) FROM mail_outbox")
    if changes.get("tenant_ids") == "unknown":
        # One real tenant and one that is not: all or nothing.
        changes = {"tenant_ids": [affected.id, "9b0c5d1e-2f3a-4b5c-8d6e-7f8091a2b3c4"]}
    refused = assert_problem(declare(stack, {**breach(affected), **changes}), 422)
    assert field in refused["errors"], refused
    assert stored_incidents(stack) == before
    assert rows(stack, "accounts", "SELECT count(*) FROM mail_outbox") == [(mails_before,)]
    assert ok(stack.call("GET", "/v1/incidents", key=affected.admin_key))["items"] == []


def test_malformed_json_is_refused(stack: Stack):
    response = stack.call(
        "POST",
        "/v1/operator/incidents",
        key=stack.settings.operator_token,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400)


def test_the_same_idempotency_key_declares_once(stack: Stack):
    affected = tenant(stack)
    body = breach(affected)
    before = stored_incidents(stack)
    first = declare(stack, body, **{"Idempotency-Key": unique("declare")})
    replay = declare(stack, body, **{"Idempotency-Key": first.request.headers["Idempotency-Key"]})
    assert ok(replay, 201) == ok(first, 201)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    # One declaration and one tenant's notice: two events, one incident.
    assert stored_incidents(stack) == (before[0] + 1, before[1] + 2)


def test_the_operators_endpoints_take_no_tenant_key(stack: Stack):
    affected = tenant(stack)
    incident = ok(declare(stack, breach(affected)), 201)
    for key in (affected.admin_key, None, "not-the-operator-token"):
        assert_problem(declare_with(stack, key, breach(affected)), 401)
        assert_problem(stack.call("GET", "/v1/operator/incidents", key=key), 401)
        assert_problem(stack.call("GET", f"/v1/operator/incidents/{incident['id']}", key=key), 401)
    # And the tenant's endpoints take no operator token.
    assert_problem(stack.call("GET", "/v1/incidents", key=stack.settings.operator_token), 401)


def declare_with(stack: Stack, key: str | None, body: dict[str, Any]):
    return stack.call("POST", "/v1/operator/incidents", key=key, json=body)


def test_the_operations_guides_declaration_runs_as_written(stack: Stack, smtp: sink.Sink):
    section = GUIDE.read_text().split("## Breach notification", 1)[1].split("\n## ", 1)[0]
    (script,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    affected = tenant(stack)
    env = {
        "PATH": os.environ["PATH"],
        "LEDGERDESK_URL": stack.url,
        "LEDGERDESK_OPERATOR_TOKEN": stack.settings.operator_token,
        "TENANT_ID": affected.id,
    }
    for _ in range(2):  # the Idempotency-Key: run again, it declares nothing more
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        shown = json.loads(run.stdout)
        assert shown == {
            "tenant_id": affected.id,
            "notified_ids": [affected.admin_id],
            "acknowledgements": [],
        }
    [incident] = ok(stack.call("GET", "/v1/incidents", key=affected.admin_key))["items"]
    assert incident["categories"] == ["contact_details", "ticket_content"]
    assert set(mailed(smtp, incident["id"], 1)) == {affected.admin_email}
