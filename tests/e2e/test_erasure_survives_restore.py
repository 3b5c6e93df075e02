"""Forgetting survives a restore: service databases (and keystores) restored from dumps taken
before an erasure, a restriction, a closed-ticket purge or an access-log shred are brought back
to what was forgotten before the services serve again; and a service that starts while
retention (which keeps the log of it all) is down does not serve until retention is back.

Days are 2 s long here (``LEDGERDESK_DAY_SECONDS``), so retention periods run out in the test.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import requests

from kernel.testing import Infrastructure, wait_until
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import dump, restore, rows

LONG = 30_000  # days (of 2 s): nothing of the tenant goes by its period meanwhile


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(
        infrastructure, LEDGERDESK_DAY_SECONDS="2", LEDGERDESK_SCHEDULE_SECONDS="1"
    ) as running:
        yield running


def test_a_restored_database_reads_erased_again_after_the_restore_step(stack, tmp_path):
    key = stack.sign_up()["api_key"]
    email = f"lee.{uuid.uuid4().hex[:6]}@example.com"
    lee = stack.call(
        "POST", "/v1/contacts", key=key, json={"name": "Lee Restored", "email": email}
    ).json()
    settings = stack.settings
    dumps = dump(stack, tmp_path, "accounts")  # the data and, worse still, the keys

    filed = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key,
        json={"type": "erasure", "subject": {"contact_id": lee["id"]}},
    ).json()
    wait_until(
        lambda: (
            stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()["status"]
            == "completed"
        ),
        what="the erasure",
    )
    assert stack.call("GET", f"/v1/contacts/{lee['id']}", key=key).json()["name"] == "[erased]"

    stack.stop("accounts")
    restore(stack, "accounts", dumps)
    conn = psycopg2.connect(settings.database_dsn("accounts"))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM contacts WHERE id = %s", (lee["id"],))
        assert cur.fetchone() == ("Lee Restored",)  # the restore really brought her back
    conn.close()

    # The documented restore step is starting the service: it re-applies retention's erasure
    # log in setup, before any entrypoint takes a request.
    stack.start("accounts")
    shown = wait_until(
        lambda: (
            (r := stack.call("GET", f"/v1/contacts/{lee['id']}", key=key)).status_code == 200
            and r.json()
        ),
        timeout=60,
        what="accounts to serve again",
    )
    assert shown["name"] == "[erased]" and shown["email"] == "[erased]"
    conn = psycopg2.connect(settings.database_dsn("accounts"))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name, email FROM contacts WHERE id = %s", (lee["id"],))
        assert cur.fetchone() == ("[erased]", "[erased]")
        cur.execute(
            "SELECT payload::text FROM events WHERE stream_id = %s", (f"contact-{lee['id']}",)
        )
        assert all("Lee Restored" not in row[0] for row in cur.fetchall())
    conn.close()
    keys = psycopg2.connect(settings.database_dsn("accounts", "keys"))
    with keys, keys.cursor() as cur:
        cur.execute(
            "SELECT wrapped_key IS NULL FROM subject_keys WHERE subject_id = %s", (lee["id"],)
        )
        assert cur.fetchone() == (True,)  # the key that came back with the dump is gone again
    keys.close()


def set_period(stack: Stack, key: str, category: str, days: int) -> None:
    answer = stack.call("PUT", f"/v1/retention/policies/{category}", key=key, json={"days": days})
    assert answer.status_code == 200, answer.text


def access_entries(stack: Stack, key: str) -> dict[str, dict[str, Any]]:
    """The tenant's first access-log entries, by event id."""
    page = stack.call("GET", "/v1/audit/entries?type=access_logged&limit=50", key=key)
    assert page.status_code == 200, page.text
    return {e["event_id"]: e["payload"] for e in page.json()["items"]}


def live_day_keys(stack: Stack, tenant_id: str) -> int:
    """The tenant's access-log day keys in audit's keystore that still open something."""
    return rows(
        stack,
        "audit",
        "SELECT count(*) FROM subject_keys WHERE tenant_id = %s AND wrapped_key IS NOT NULL",
        tenant_id,
        purpose="keys",
    )[0][0]


def new_ticket(stack: Stack, key: str, requester_id: str, subject: str) -> dict[str, Any]:
    """A ticket, once tickets has learnt of its requester from accounts' events."""

    def created() -> dict[str, Any] | None:
        answer = stack.call(
            "POST",
            "/v1/tickets",
            key=key,
            json={"subject": subject, "body": "words", "requester_id": requester_id},
        )
        return answer.json() if answer.status_code == 201 else None

    return wait_until(created, what="tickets to know the contact")


def test_purges_restrictions_and_access_log_shreds_are_applied_again_after_a_restore(
    stack, tmp_path, infrastructure
):
    signup = stack.sign_up()
    key, tenant_id = signup["api_key"], signup["tenant"]["id"]
    set_period(stack, key, "closed_tickets", LONG)
    set_period(stack, key, "access_log", LONG)
    kim = stack.call(
        "POST", "/v1/contacts", key=key, json={"name": "Kim Restored", "email": "kim@example.com"}
    ).json()
    ticket = new_ticket(stack, key, kim["id"], "Kim's order")
    for status in ("open", "solved", "closed"):
        answer = stack.call(
            "PATCH",
            f"/v1/tickets/{ticket['id']}",
            key=key,
            json={"status": status},
            headers={"If-Match": f'"{ticket["version"]}"'},
        )
        assert answer.status_code == 200, answer.text
        ticket = answer.json()
    early = wait_until(
        lambda: (found := access_entries(stack, key)) and len(found) >= 5 and found,
        what="the tenant's requests in the access log",
    )
    assert all(payload["ip"] == "127.0.0.1" for payload in early.values())
    dumps = {
        service: dump(stack, tmp_path, service) for service in ("accounts", "tickets", "audit")
    }

    # What is forgotten after the backups: a restriction, a closed ticket, the access log.
    filed = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key,
        json={"type": "restriction", "subject": {"contact_id": kim["id"]}},
    ).json()
    wait_until(
        lambda: (
            stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()["status"]
            == "completed"
        ),
        what="the restriction",
    )
    set_period(stack, key, "closed_tickets", 1)
    wait_until(
        lambda: (
            stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key).json()["subject"]
            == "[erased]"
        ),
        what="the closed ticket's purge",
    )
    set_period(stack, key, "access_log", 1)

    def early_erased() -> bool:
        now = access_entries(stack, key)
        return all(now[event_id]["ip"] == "[erased]" for event_id in early)

    wait_until(early_erased, what="the access log's shred")
    # From here on the tenant's purges reach nothing it had: only the log can take it again.
    set_period(stack, key, "access_log", LONG)

    for service in ("accounts", "tickets", "audit"):
        stack.stop(service)
    # Whatever was sent meanwhile waits for audit in its queue: not what this test is about.
    vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")
    infrastructure.management("DELETE", f"/api/queues/{vhost}/audit.privacy/contents")
    for service, service_dumps in dumps.items():
        restore(stack, service, service_dumps)
    # The restores really brought it all back.
    assert (
        rows(stack, "accounts", "SELECT 1 FROM restrictions WHERE subject_id = %s", kim["id"]) == []
    )
    assert (
        rows(stack, "tickets", "SELECT 1 FROM restrictions WHERE subject_id = %s", kim["id"]) == []
    )
    ticket_key = "SELECT wrapped_key IS NOT NULL FROM subject_keys WHERE subject_id = %s"
    assert rows(stack, "tickets", ticket_key, ticket["id"], purpose="keys") == [(True,)]
    assert live_day_keys(stack, tenant_id) > 0

    for service in ("accounts", "tickets", "audit"):
        stack.start(service)
    wait_until(
        lambda: stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key).status_code == 200,
        timeout=90,
        what="the restored services to serve",
    )
    shown = stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key).json()
    assert (shown["subject"], shown["body"]) == ("[erased]", "[erased]")
    assert rows(stack, "tickets", ticket_key, ticket["id"], purpose="keys") == [(False,)]
    assert rows(
        stack, "accounts", "SELECT 1 FROM restrictions WHERE subject_id = %s", kim["id"]
    ) == [(1,)]
    assert rows(
        stack, "tickets", "SELECT 1 FROM restrictions WHERE subject_id = %s", kim["id"]
    ) == [(1,)]
    refused = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": "again", "body": "hello", "requester_id": kim["id"]},
    )
    # A restricted requester is a conflict with their state (409): the restriction came back.
    assert refused.status_code == 409, refused.text
    assert "restricted" in refused.json()["detail"]
    assert early_erased()
    assert stack.call("GET", "/v1/audit/verify", key=key).json()["ok"] is True


def test_a_service_started_while_retention_is_down_serves_only_once_it_is_back(stack):
    key = stack.sign_up()["api_key"]
    contact = stack.call(
        "POST", "/v1/contacts", key=key, json={"name": "Rae Waiting", "email": "rae@example.com"}
    ).json()
    ticket = new_ticket(stack, key, contact["id"], "hi")
    stack.stop("retention")
    stack.stop("tickets")
    try:
        stack.start("tickets")
        port = stack.processes["tickets"].ops_port  # type: ignore[attr-defined]

        def readiness() -> tuple[int, dict] | None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except requests.ConnectionError:
                return None
            return answer.status_code, answer.json()

        waiting = wait_until(readiness, timeout=60, what="tickets' ops endpoints")
        assert waiting[0] == 503, waiting
        assert waiting[1]["checks"]["forgetting"] is False
        # Alive, so an orchestrator does not restart it; not serving: the gateway says 503.
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        answer = stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key)
        assert answer.status_code == 503, answer.text
        still = readiness()
        assert still is not None and still[0] == 503 and not still[1]["checks"]["forgetting"]
    finally:
        stack.start("retention")

    shown = wait_until(
        lambda: (
            (r := stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key)).status_code == 200
            and r.json()
        ),
        timeout=90,
        what="tickets to serve once retention is back",
    )
    assert shown["subject"] == "hi"
    assert readiness() == (
        200,
        {"status": "ready", "checks": {"broker": True, "database": True, "forgetting": True}},
    )
