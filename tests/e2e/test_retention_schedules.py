"""The retention schedule over a running platform: a grace that runs out destroys the tenant
everywhere (held billing records aside), in every byte of every database and after a rebuild of
every read model; a reactivation stops the clock."""

from __future__ import annotations

import secrets
import urllib.parse

import pytest

from kernel.config import Settings
from kernel.stores import open_store
from kernel.testing import wait_until, world_env
from services.accounts.events import REGISTRY as ACCOUNTS_EVENTS
from services.accounts.projections import PROJECTIONS as ACCOUNTS_PROJECTIONS
from services.billing.events import REGISTRY as BILLING_EVENTS
from services.billing.projections import PROJECTIONS as BILLING_PROJECTIONS
from services.tickets.events import REGISTRY as TICKETS_EVENTS
from services.tickets.projections import PROJECTIONS as TICKETS_PROJECTIONS
from tests.e2e.conftest import running_stack
from tests.e2e.helpers import issue_invoices, rows, stored_text

GRACE_SECONDS = 8.64  # LEDGERDESK_GRACE_DAYS=0.0001


@pytest.fixture(scope="module")
def quick(infrastructure):
    with running_stack(
        infrastructure,
        LEDGERDESK_GRACE_DAYS="0.0001",
        LEDGERDESK_SCHEDULE_SECONDS="1",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
    ) as stack:
        yield stack


def test_a_cancelled_tenant_is_destroyed_when_its_grace_runs_out(quick):
    created = quick.sign_up()
    key, tenant_id = created["api_key"], created["tenant"]["id"]
    contact = quick.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": "Ivy Doomed", "email": "ivy@example.com"},
        headers={"Idempotency-Key": f"ivy-{tenant_id}"},
    ).json()
    quick.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={
            "subject": "Ivy's question",
            "body": "about her order",
            "requester_id": contact["id"],
        },
    )
    # The gateway keeps the contact's creation to replay, sealed under the tenant's key.
    assert rows(
        quick, "gateway", "SELECT count(*) FROM idempotency_keys WHERE tenant_id = %s", tenant_id
    ) == [(1,)]
    assert quick.call("DELETE", "/v1/tenant", key=key).status_code == 202

    wait_until(
        lambda: quick.call("GET", "/v1/tenant", key=key).status_code == 401,
        timeout=60,
        what="the destroyed tenant's keys to stop working",
    )
    assert rows(quick, "accounts", "SELECT status FROM tenants WHERE id = %s", tenant_id) == [
        ("destroyed",)
    ]
    assert rows(
        quick, "accounts", "SELECT count(*) FROM contacts WHERE tenant_id = %s", tenant_id
    ) == [(0,)]
    assert rows(
        quick, "tickets", "SELECT count(*) FROM tickets WHERE tenant_id = %s", tenant_id
    ) == [(0,)]
    assert rows(
        quick,
        "tickets",
        "SELECT shredded_at IS NOT NULL FROM tenant_keys WHERE tenant_id = %s",
        tenant_id,
        purpose="keys",
    ) == [(True,)]

    def reported():
        entries = quick.call(
            "GET",
            "/v1/operator/audit/entries?type=tenant_destroyed&limit=200",
            key=quick.settings.operator_token,
        ).json()["items"]
        return [e for e in entries if e["tenant_id"] == tenant_id]

    [report] = wait_until(reported, what="the destruction report in the audit ledger")
    assert set(report["payload"]["services"]) >= {
        "accounts",
        "tickets",
        "billing",
        "audit",
        "gateway",
    }
    assert rows(
        quick,
        "gateway",
        "SELECT count(*) FROM idempotency_keys WHERE tenant_id = %s OR scope = %s",
        tenant_id,
        tenant_id,
    ) == [(0,)]
    assert rows(
        quick,
        "gateway",
        "SELECT shredded_at IS NOT NULL FROM tenant_keys WHERE tenant_id = %s",
        tenant_id,
        purpose="keys",
    ) == [(True,)]
    assert all(s["status"] in ("done", "retained") for s in report["payload"]["services"].values())
    dump = "".join(
        str(r)
        for service in ("accounts", "tickets")
        for r in rows(
            quick,
            service,
            "SELECT * FROM contacts" if service == "accounts" else "SELECT * FROM tickets",
        )
    )
    assert "Ivy Doomed" not in dump and "ivy@example.com" not in dump


def test_a_reactivated_tenant_is_not_destroyed(quick):
    created = quick.sign_up()
    key, tenant_id = created["api_key"], created["tenant"]["id"]
    assert quick.call("DELETE", "/v1/tenant", key=key).status_code == 202
    assert quick.call("POST", "/v1/tenant/reactivate", key=key).status_code == 200
    # Past the grace, and a few schedule runs later, the tenant is still there and working.
    wait_until(
        lambda: (
            rows(quick, "retention", "SELECT status FROM schedules WHERE tenant_id = %s", tenant_id)
            == [("cancelled",)]
        ),
        what="the reactivation to stop the clock",
    )
    import time

    time.sleep(GRACE_SECONDS + 3)  # the point is that nothing happens: there is no event to await
    assert quick.call("GET", "/v1/tenant", key=key).json()["status"] == "active"
    assert rows(quick, "accounts", "SELECT status FROM tenants WHERE id = %s", tenant_id) == [
        ("active",)
    ]


def test_a_lost_command_is_sent_again_and_the_request_completes(quick, infrastructure):
    """A command that never reaches a service (here: purged from its queue while the service
    was down, as a dead-lettered one would be) is sent again, to that service only."""
    created = quick.sign_up()
    key = created["api_key"]
    contact = quick.call(
        "POST", "/v1/contacts", key=key, json={"name": "Lou Lost", "email": "lou@example.com"}
    ).json()
    quick.stop("tickets")
    try:
        filed = quick.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "erasure", "subject": {"contact_id": contact["id"]}},
        ).json()

        def others_answered():
            body = quick.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()
            owed = {n for n, a in body["services"].items() if a["status"] != "done"}
            return body if owed == {"tickets"} else None

        wait_until(others_answered, what="every service but tickets to answer")
        vhost = urllib.parse.quote(quick.settings.database_prefix, safe="")
        purged = infrastructure.management(
            "DELETE", f"/api/queues/{vhost}/tickets.privacy/contents"
        )
        assert purged.status_code in (200, 204), purged.text
    finally:
        quick.start("tickets")

    last: dict = {}

    def completed():
        body = quick.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()
        last.update(body)
        return body if body["status"] == "completed" else None

    try:
        result = wait_until(completed, timeout=60, what="the re-sent command to complete it")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the request as last read: {last}") from None
    assert result["services"]["tickets"]["status"] == "done"
    assert result["services"]["tickets"]["attempts"] >= 2
    # The others answered the first command and were not asked again.
    assert result["services"]["accounts"]["attempts"] == 1


# --- what a destroyed tenant leaves: every byte of every service's database --------------------


def holding(stack, canary: str) -> set[str]:
    services = ("accounts", "billing", "tickets", "retention", "audit", "gateway")
    return {
        place
        for service in services
        for column, text in stored_text(stack.settings.database_dsn(service)).items()
        if canary in text
        for place in [f"{service}: {column}"]
    }


def rebuild_everything(stack) -> None:
    """Every projection of accounts, billing and tickets, replayed from their event stores."""
    settings = Settings.from_env(world_env(stack.settings))
    for service, registry, projections in (
        ("accounts", ACCOUNTS_EVENTS, ACCOUNTS_PROJECTIONS),
        ("billing", BILLING_EVENTS, BILLING_PROJECTIONS),
        ("tickets", TICKETS_EVENTS, TICKETS_PROJECTIONS),
    ):
        store = open_store(settings, service, registry, projections, prepare=False)
        try:
            for projection in projections:
                store.rebuild(projection.name, progress=False)
        finally:
            store.db.close()


def test_a_destroyed_tenant_leaves_its_company_only_on_held_invoices_even_after_a_rebuild(quick):
    tag = secrets.token_hex(4)
    company, street = f"Canary {tag} Quills Ltd", f"{tag} Lark Lane"
    created = quick.sign_up(company=company)
    key, tenant_id = created["api_key"], created["tenant"]["id"]
    wait_until(
        lambda: quick.call("GET", "/v1/billing/subscription", key=key).status_code == 200,
        what="billing to open the tenant's account",
    )
    address = {"line1": street, "city": "Larkton", "postcode": "LK1 1AA", "country": "GB"}
    assert quick.call("PUT", "/v1/billing/address", key=key, json={"address": address}).ok
    card = {"processor_token": "tok_sandbox_visa"}
    assert quick.call("POST", "/v1/billing/payment-methods", key=key, json=card).ok
    contact = quick.call(
        "POST", "/v1/contacts", key=key, json={"name": f"Ivy {tag}", "email": f"{tag}@x.example"}
    ).json()
    ticket = {"subject": "A question", "body": "about quills", "requester_id": contact["id"]}
    assert quick.call("POST", "/v1/tickets", key=key, json=ticket).ok
    checked = f"Ivy {tag} showed her passport"
    access = {"type": "access", "subject": {"contact_id": contact["id"]}, "identity_check": checked}
    assert quick.call("POST", "/v1/privacy/requests", key=key, json=access).status_code == 202
    # Retention keeps what the admin checked under the tenant's key, never in plaintext.
    assert holding(quick, checked) == set()
    assert issue_invoices(quick) >= 1
    [invoice] = quick.call("GET", "/v1/billing/invoices", key=key).json()["items"]
    assert (invoice["company"], invoice["address"]["line1"]) == (company, street)

    def ledger_has_the_invoice() -> bool:
        entries = quick.call(
            "GET",
            "/v1/operator/audit/entries?type=invoice_issued&limit=200",
            key=quick.settings.operator_token,
        ).json()["items"]
        return any(e["payload"]["invoice_id"] == invoice["id"] for e in entries)

    wait_until(ledger_has_the_invoice, what="the invoice in the audit ledger")
    # Published events carry ids: the company and address are in no event that left billing
    # or accounts, so the ledger, which keeps everything forever, never had them.
    for canary in (company, street):
        assert not {p for p in holding(quick, canary) if p.startswith("audit: ")}, canary

    assert quick.call("DELETE", "/v1/tenant", key=key).status_code == 202
    wait_until(
        lambda: quick.call("GET", "/v1/tenant", key=key).status_code == 401,
        timeout=60,
        what="the destroyed tenant's keys to stop working",
    )
    wait_until(
        lambda: (
            rows(
                quick,
                "retention",
                "SELECT status FROM requests WHERE tenant_id = %s AND type = 'destruction'",
                tenant_id,
            )
            == [("completed",)]
        ),
        timeout=60,
        what="the destruction to complete",
    )

    for moment in ("destroyed", "rebuilt"):
        assert holding(quick, company) == {"billing: invoices.company"}, moment
        assert holding(quick, street) == {"billing: invoices.address"}, moment
        assert holding(quick, f"Ivy {tag}") == set(), moment
        assert rows(
            quick,
            "accounts",
            "SELECT count(*) FROM agents WHERE tenant_id = %s AND active",
            tenant_id,
        ) == [(0,)]
        assert rows(
            quick, "tickets", "SELECT count(*) FROM tickets WHERE tenant_id = %s", tenant_id
        ) == [(0,)]
        assert rows(
            quick,
            "billing",
            "SELECT count(*) FROM payment_methods WHERE tenant_id = %s",
            tenant_id,
        ) == [(0,)]
        assert quick.call("GET", "/v1/tenant", key=key).status_code == 401
        if moment == "destroyed":
            # The read models replayed from the event stores end where the destruction left
            # them: the legal hold's invoice copy is the only one.
            rebuild_everything(quick)
