"""Moving a tenant between region cells (``services.tenant_move``), on two cells behind the
router as ``make run --cells uk,in`` makes them (tests/e2e/test_residency.py's stack), the ``in``
cell under a master key of its own.

The mover runs as the operator runs it, a process, and is killed by a fault point after the
first database is copied: meanwhile the router refuses the tenant (503, Retry-After); ``resume``
finishes the move, or ``rollback`` undoes it. A moved tenant's region is the new cell's: its
tenant document, billing's account (and tax rate) and its new events' ``metadata.region``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import amqp
import psycopg2
import pytest
import requests
from kombu import Connection

from kernel.config import Settings
from kernel.mail import sink
from kernel.testing import Infrastructure, wait_until, world_env
from services import tenant_move
from services.tickets import search_index
from tests.e2e.conftest import SIGNUP
from tests.e2e.helpers import ok
from tests.e2e.test_residency import TAP, Cells, populate, running_cells
from tests.support import sweep

# The in cell's own master key: a moved tenant's keys are re-wrapped under it.
IN_MASTER_KEY = "in-1:" + base64.b64encode(secrets.token_bytes(32)).decode()
# Tables of the source that keep a moved tenant's id: its audit log (ids and hashes, so the
# source's signed checkpoints still verify) and that log's verification state.
LEDGER_TABLES = {"log_entries", "log_nodes", "log_heads", "tenant_verifications"}
LEDGER_TABLES |= {"platform_checkpoint_heads"}


@pytest.fixture(scope="module")
def smtp() -> Iterator[Any]:
    with sink.running() as controller:
        yield controller


@pytest.fixture(scope="module")
def cells(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory, smtp: Any
) -> Iterator[Cells]:
    # A relay that takes the cells' mail: a move waits for the tenant's mail to be sent.
    with running_cells(
        infrastructure,
        tmp_path_factory.mktemp("router"),
        as_platform_makes_them=True,
        LEDGERDESK_SMTP_HOST="127.0.0.1",
        LEDGERDESK_SMTP_PORT=str(smtp.port),
        LEDGERDESK_MAIL_RETRY_SECONDS="0.5",
        LEDGERDESK_CELL_MASTER_KEYS=f"in={IN_MASTER_KEY}",
        LEDGERDESK_CHECKPOINT_SECONDS="3",
    ) as running:
        yield running


def mover(cells: Cells, *args: str, faults: str = "") -> subprocess.CompletedProcess:
    env = {**world_env(cells.router), "LEDGERDESK_FAULTS": faults}
    return subprocess.run(
        [sys.executable, "-m", "services.tenant_move", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def killed_mid_copy(cells: Cells, tenant_id: str) -> None:
    """A move killed right after its first database's copy committed."""
    killed = mover(
        cells, "move", "--tenant", tenant_id, "--to", "in", faults="tenant_move.copied_one:1"
    )
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    status = mover(cells, "status", "--tenant", tenant_id)
    assert status.returncode == 0 and "step frozen" in status.stdout, status.stdout


def rows_of(
    settings: Settings, database: str, query: str, *params: Any, purpose: str = ""
) -> list[tuple]:
    conn = psycopg2.connect(settings.database_dsn(database, purpose))
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def counts(cells: Cells, key: str) -> dict[str, int]:
    return {
        path: len(ok(cells.call("GET", path, key=key, params={"limit": 100}))["items"])
        for path in ("/v1/tickets", "/v1/contacts", "/v1/agents")
    }


def test_a_tenant_moves_to_another_cell_killed_mid_copy_and_resumed(
    cells: Cells, infrastructure: Infrastructure
) -> None:
    tenant = populate(cells, "uk")
    key, tenant_id = tenant["key"], tenant["tenant_id"]
    contact = ok(
        cells.call("POST", "/v1/contacts", key=key, json={"name": "N", "email": "n@example.com"}),
        201,
    )
    ticket = ok(
        cells.call(
            "POST",
            "/v1/tickets",
            key=key,
            json={"subject": "Fan", "body": "noisy", "requester_id": contact["id"]},
        ),
        201,
    )
    data = secrets.token_bytes(300 * 1024)
    attachment = ok(
        cells.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/attachments",
            key=key,
            params={"filename": "fan.bin"},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ),
        201,
    )
    before = counts(cells, key)
    uk, india = cells.cells["uk"], cells.cells["in"]
    # Billing in the uk cell opened its account at the sign-up's region and rate.
    billed = wait_until(
        lambda: (
            (r := cells.call("GET", "/v1/billing/subscription", key=key)).status_code == 200
            and r.json()
        ),
        timeout=30,
        what="billing's account of the new tenant",
    )
    assert (billed["region"], billed["tax_rate"]) == ("uk", str(uk.tax_rates["uk"]))

    killed_mid_copy(cells, tenant_id)
    # A 503 response is falsy: wait_until is handed it in a list.
    (refused,) = wait_until(
        lambda: (r := cells.call("GET", "/v1/tenant", key=key)).status_code == 503 and [r],
        timeout=10,
        what="the router refusing the moving tenant",
    )
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["Content-Type"] == "application/problem+json"
    # Its mail is deferred meanwhile (451: the relay sends it again after the cut-over).
    with smtplib.SMTP("127.0.0.1", cells.router.mail_in_port, timeout=30) as front:
        front.ehlo()
        assert front.mail("someone@example.com")[0] == 250
        assert front.rcpt(f"{tenant_id}@{cells.router.mail_in_domain}")[0] == 451
    other = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    assert ok(cells.call("GET", "/v1/tenant", key=other["api_key"]))["id"] != tenant_id

    resumed = mover(cells, "resume", "--tenant", tenant_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "done" in resumed.stdout
    for canary in tenant["canaries"][5:]:
        assert canary not in resumed.stdout + resumed.stderr, "no personal data in the output"

    # The same uk key, through the router, reads the same data from the in cell.
    wait_until(
        lambda: cells.call("GET", "/v1/tenant", key=key).status_code == 200,
        timeout=10,
        what="the moved tenant served again",
    )
    assert counts(cells, key) == before
    # Its region is the new cell's: the tenant document says so, and billing there (which
    # learns it from accounts' tenant_region_changed) taxes its invoices from now on at the
    # new region's rate.
    assert ok(cells.call("GET", "/v1/tenant", key=key))["region"] == "in"
    billed = wait_until(
        lambda: (
            (r := ok(cells.call("GET", "/v1/billing/subscription", key=key)))["region"] == "in"
            and r
        ),
        timeout=30,
        what="billing's account moved to the new region",
    )
    assert billed["tax_rate"] == str(india.tax_rates["in"]) != str(uk.tax_rates["uk"])
    changed = "SELECT metadata->>'region' FROM events WHERE type = %s AND tenant_id = %s"
    assert rows_of(india, "accounts", changed, "tenant_region_changed", tenant_id) == [("in",)]
    assert rows_of(india, "billing", changed, "billing_account_region_changed", tenant_id) == [
        ("in",)
    ]
    got = cells.call(
        "GET", f"/v1/tickets/{ticket['id']}/attachments/{attachment['id']}", key=key, stream=True
    )
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    imported = "SELECT DISTINCT tx_order FROM events WHERE tenant_id = %s AND stream_version = 1"
    assert (-1,) in rows_of(india, "accounts", imported, tenant_id), "history sorts first"
    # Its keys carried, re-wrapped under the in cell's master key.
    for database in ("accounts", "tickets"):
        wrapped = "SELECT master_key_id FROM tenant_keys WHERE tenant_id = %s"
        assert rows_of(india, database, wrapped, tenant_id, purpose="keys") == [("in-1",)]

    # A read model rebuilt in the target replays the imported history too: the moved ticket is
    # still found after the search index is emptied and built again from the events.
    def searched() -> list:
        return ok(cells.call("GET", "/v1/search", key=key, params={"q": "Fan"}))["items"]

    assert [t["id"] for t in searched()] == [ticket["id"]]
    assert search_index.main(["rebuild"], settings=india) == 0
    assert [t["id"] for t in searched()] == [ticket["id"]]

    # Keys issued after the move name the new region, and are routed there.
    agent = ok(
        cells.call(
            "POST",
            "/v1/agents",
            key=key,
            json={"name": "After", "email": "after@example.com", "role": "agent"},
        ),
        201,
    )
    assert agent["api_key"].startswith("ldk_in_")
    # The tenant's new events carry its new region.
    stamped = (
        "SELECT metadata->>'region' FROM events WHERE type = 'agent_created'"
        " AND payload->>'agent_id' = %s"
    )
    assert rows_of(india, "accounts", stamped, agent["id"]) == [("in",)]
    assert ok(cells.call("GET", "/v1/tenant", key=agent["api_key"]))["id"] == tenant_id

    # Writes go on in the new cell.
    ok(
        cells.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={"body": "after the move"},
        ),
        201,
    )

    # The ledger: moved_out in the source's log, both in the target's, which verifies.
    log = "SELECT type FROM log_entries WHERE tenant_id = %s ORDER BY seq"
    source_log = [row[0] for row in rows_of(uk, "audit", log, tenant_id)]
    target_log = [row[0] for row in rows_of(india, "audit", log, tenant_id)]
    assert source_log[-1] == tenant_move.MOVED_OUT
    assert target_log[: len(source_log)] == source_log, "the log is carried byte for byte"
    assert tenant_move.MOVED_IN in target_log
    verified = wait_until(
        lambda: (
            (r := ok(cells.call("GET", "/v1/audit/verify", key=key)))["included"]
            and r["platform"]["verified_at"]
            and r
        ),
        timeout=60,
        interval=1,
        what="a checkpoint and a verification run in the target",
    )
    assert (verified["ok"], verified["first_bad_seq"]) == (True, None), verified

    # Nothing of the tenant in the source but its audit log; its keystore rows gone.
    left = sweep.find(
        tenant["canaries"] + tenant["hex_ids"],
        [*sweep.database_texts(uk), *sweep.queue_texts(infrastructure, uk, every=10_000)],
    )
    # The stack's tap (test_residency.TAP) is the test's own, never read: it keeps whatever the
    # cell published before the move. The cell's queues must hold nothing of the tenant.
    places = {place for found in left.values() for place in found if place[1] != TAP}
    assert {place[-1] for place in places} <= LEDGER_TABLES, places
    # The sweep can find: the audit log the source keeps names the tenant.
    assert any(place[-1] == "log_entries" for place in left[tenant_id]), left
    # The mail front takes the tenant's mail again, for its new cell.
    with smtplib.SMTP("127.0.0.1", cells.router.mail_in_port, timeout=30) as front:
        front.ehlo()
        assert front.mail("someone@example.com")[0] == 250
        assert front.rcpt(f"{tenant_id}@{cells.router.mail_in_domain}")[0] == 250
    for database in ("accounts", "tickets", "billing", "audit", "retention"):
        for table in ("tenant_keys", "subject_keys"):
            query = f"SELECT count(*) FROM {table} WHERE tenant_id = %s"
            assert rows_of(uk, database, query, tenant_id, purpose="keys") == [(0,)], database
    assert "tenant_moves" not in {t for _, _, t in places}


def test_a_move_killed_mid_copy_rolls_back_and_the_source_serves_again(cells: Cells) -> None:
    signup = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    key, tenant_id = signup["api_key"], signup["tenant"]["id"]
    contact = ok(
        cells.call("POST", "/v1/contacts", key=key, json={"name": "R", "email": "r@example.com"}),
        201,
    )
    killed_mid_copy(cells, tenant_id)
    assert rows_of(
        cells.cells["in"], "accounts", "SELECT count(*) FROM agents WHERE tenant_id = %s", tenant_id
    ) != [(0,)], "the kill came after a database's copy committed"

    rolled = mover(cells, "rollback", "--tenant", tenant_id)
    assert rolled.returncode == 0, rolled.stderr
    status = mover(cells, "status", "--tenant", tenant_id)
    assert "step rolled_back" in status.stdout, status.stdout
    assert mover(cells, "resume", "--tenant", tenant_id).returncode == 1, "nothing to resume"

    assert sweep.find([tenant_id], sweep.database_texts(cells.cells["in"])) == {}
    wait_until(
        lambda: cells.call("GET", "/v1/tenant", key=key).status_code == 200,
        timeout=10,
        what="the tenant served by its own cell again",
    )
    assert ok(cells.call("GET", f"/v1/contacts/{contact['id']}", key=key))["id"] == contact["id"]


def fences_of(cell: Settings, tenant_id: str) -> list[tuple]:
    return rows_of(
        cell, "accounts", "SELECT count(*) FROM tenant_fences WHERE tenant_id = %s", tenant_id
    )


def test_a_rollback_killed_midway_is_finished_by_rollback_only(cells: Cells) -> None:
    """Killed after deleting the target's first database, a rollback is not resumed forward
    (which would cut over to a partial copy and destroy the source's whole one)."""
    signup = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    key, tenant_id = signup["api_key"], signup["tenant"]["id"]
    contact = ok(
        cells.call("POST", "/v1/contacts", key=key, json={"name": "K", "email": "k@example.com"}),
        201,
    )
    killed_mid_copy(cells, tenant_id)
    uk, india = cells.cells["uk"], cells.cells["in"]
    assert fences_of(uk, tenant_id) == [(1,)] == fences_of(india, tenant_id)

    killed = mover(cells, "rollback", "--tenant", tenant_id, faults="tenant_move.undone_one:1")
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    status = mover(cells, "status", "--tenant", tenant_id)
    assert "step rolling_back" in status.stdout, status.stdout
    resumed = mover(cells, "resume", "--tenant", tenant_id)
    assert resumed.returncode == 1 and "only rollback continues it" in resumed.stderr, resumed
    assert "step rolling_back" in mover(cells, "status", "--tenant", tenant_id).stdout
    # Still refused meanwhile: the source is not written while the rollback is unfinished.
    assert cells.call("GET", "/v1/tenant", key=key).status_code == 503

    rolled = mover(cells, "rollback", "--tenant", tenant_id)
    assert rolled.returncode == 0, rolled.stderr
    assert "step rolled_back" in mover(cells, "status", "--tenant", tenant_id).stdout
    assert sweep.find([tenant_id], sweep.database_texts(india)) == {}
    assert fences_of(uk, tenant_id) == [(0,)] == fences_of(india, tenant_id)
    wait_until(
        lambda: cells.call("GET", "/v1/tenant", key=key).status_code == 200,
        timeout=10,
        what="the tenant served by its own cell again",
    )
    assert ok(cells.call("GET", f"/v1/contacts/{contact['id']}", key=key))["id"] == contact["id"]


def test_a_write_reaching_the_source_directly_is_refused_and_idempotency_moves(
    cells: Cells,
) -> None:
    """The router's freeze is not the only way into the source cell: a request straight to its
    gateway (as one routed before the router's refresh, or an operator's) is refused by the
    fence (503, Retry-After), so nothing is accepted there that the move would lose. The
    tenant's idempotency records move with it: a request replayed after the move answers what
    it answered before, and the source keeps none of them."""
    signup = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    key, tenant_id = signup["api_key"], signup["tenant"]["id"]
    uk = cells.cells["uk"]
    body = {"name": "Once", "email": "once@example.com"}
    once = {"Idempotency-Key": f"once-{tenant_id}"}
    first = ok(cells.call("POST", "/v1/contacts", key=key, json=body, headers=once), 201)

    killed_mid_copy(cells, tenant_id)
    direct = requests.post(
        f"http://127.0.0.1:{uk.gateway_port}/v1/contacts",
        headers={"Authorization": f"Bearer {key}"},
        json={"name": "Late", "email": "late@example.com"},
        timeout=30,
    )
    assert direct.status_code == 503, direct.text
    assert int(direct.headers["Retry-After"]) > 0
    assert "being moved" in direct.json()["detail"], "refused by the fence"
    late = "SELECT count(*) FROM events WHERE tenant_id = %s AND type = 'contact_created'"
    assert rows_of(uk, "accounts", late, tenant_id) == [(1,)], "only the first contact"

    resumed = mover(cells, "resume", "--tenant", tenant_id)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(
        lambda: cells.call("GET", "/v1/tenant", key=key).status_code == 200,
        timeout=10,
        what="the moved tenant served again",
    )
    replay = cells.call("POST", "/v1/contacts", key=key, json=body, headers=once)
    assert replay.status_code == 201, replay.text
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["id"] == first["id"]
    listed = ok(cells.call("GET", "/v1/contacts", key=key, params={"limit": 100}))["items"]
    assert [c["id"] for c in listed] == [first["id"]]
    held = (
        "SELECT count(*) FROM idempotency_keys WHERE scope = %s OR scope LIKE %s"
        " OR tenant_id = %s::uuid"
    )
    assert rows_of(uk, "gateway", held, tenant_id, f"{tenant_id}:%", tenant_id) == [(0,)]
    assert fences_of(uk, tenant_id) == [(0,)] == fences_of(cells.cells["in"], tenant_id)


def test_a_move_does_not_start_while_the_source_holds_dead_letters(cells: Cells) -> None:
    """A dead letter replayed in the source after the move would recreate data there."""
    signup = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    key, tenant_id = signup["api_key"], signup["tenant"]["id"]
    dead = "accounts.privacy.dead"
    with Connection(cells.cells["uk"].amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish_confirm(amqp.Message("{}", message_id="dead-1"), "", dead)
        try:
            refused = mover(cells, "move", "--tenant", tenant_id, "--to", "in")
        finally:
            channel.queue_purge(dead)
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert "dead-letter queues hold messages" in line and dead.removesuffix(".dead") in line
    assert "replay or purge them first" in line
    status = mover(cells, "status", "--tenant", tenant_id)
    assert "no move recorded" in status.stdout, status.stdout
    assert ok(cells.call("GET", "/v1/tenant", key=key))["id"] == tenant_id


def test_a_tenant_moves_back_to_the_cell_it_left(cells: Cells) -> None:
    """uk -> in -> uk: the uk cell kept the tenant's log up to its first ``moved_out``; the move
    back extends it with what ``in`` logged, and the whole log verifies in uk."""
    signup = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    key, tenant_id = signup["api_key"], signup["tenant"]["id"]
    contacts = [
        ok(
            cells.call(
                "POST", "/v1/contacts", key=key, json={"name": "B", "email": "b@example.com"}
            ),
            201,
        )["id"]
    ]
    for region in ("in", "uk"):
        moved = mover(cells, "move", "--tenant", tenant_id, "--to", region)
        assert moved.returncode == 0, moved.stderr
        wait_until(
            lambda r=region: ok(cells.call("GET", "/v1/tenant", key=key))["region"] == r,
            timeout=20,
            what=f"the tenant served by {region}",
        )
        if region == "in":
            created = cells.call(
                "POST", "/v1/contacts", key=key, json={"name": "C", "email": "c@example.com"}
            )
            contacts.append(ok(created, 201)["id"])
    for contact in contacts:
        assert ok(cells.call("GET", f"/v1/contacts/{contact}", key=key))["id"] == contact
    log = "SELECT type, hash FROM log_entries WHERE tenant_id = %s ORDER BY seq"
    india = rows_of(cells.cells["in"], "audit", log, tenant_id)
    uk = rows_of(cells.cells["uk"], "audit", log, tenant_id)
    assert india[-1][0] == tenant_move.MOVED_OUT
    assert uk[: len(india)] == india, "in's log carried on top of the one uk kept"
    assert [t for t, _ in uk].count(tenant_move.MOVED_OUT) == 2
    assert uk[len(india)][0] == tenant_move.MOVED_IN, "then what uk logs since"
    verified = wait_until(
        lambda: (
            (r := ok(cells.call("GET", "/v1/audit/verify", key=key)))["included"] >= len(india)
            and r["platform"]["verified_at"]
            and r
        ),
        timeout=60,
        interval=1,
        what="a checkpoint over the whole log and a verification run in uk",
    )
    assert (verified["ok"], verified["first_bad_seq"]) == (True, None), verified
