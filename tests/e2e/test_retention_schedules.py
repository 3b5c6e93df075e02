"""The retention schedule over a running platform: a grace that runs out destroys the tenant
everywhere (held billing records aside); a reactivation stops the clock."""

from __future__ import annotations

import urllib.parse

import psycopg2
import pytest

from kernel.testing import wait_until
from tests.e2e.conftest import running_stack

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


def rows(stack, service: str, query: str, *params, purpose: str = ""):
    conn = psycopg2.connect(stack.settings.database_dsn(service, purpose))
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


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
