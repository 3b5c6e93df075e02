"""A tenant's whole export over real HTTP and real processes: what it holds, that a tenant can
check it with the published audit key alone, who may have it, and how it ends (expiry, an
erasure, the tenant's destruction, a builder killed half way)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import signal
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.signing import verify_signature
from kernel.testing import wait_until, world_env
from services import platform
from services.audit.log_offline import head_holds
from services.audit.offline_verify import load_keys
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import (
    admin,
    assert_problem,
    completed,
    create_agent,
    file,
    issue_invoices,
    make_contact,
    ok,
    rows,
    unique,
)

FILES = (
    "contacts.jsonl",
    "agents.jsonl",
    "consent.jsonl",
    "tickets.jsonl",
    "messages.jsonl",
    "attachments.jsonl",
    "invoices.jsonl",
    "ledger.jsonl",
    "ledger_heads.jsonl",
)
GRACE_SECONDS = 25.92  # LEDGERDESK_GRACE_DAYS=0.0003


@pytest.fixture(scope="module")
def stack(infrastructure) -> Iterator[Stack]:
    with running_stack(
        infrastructure,
        LEDGERDESK_GRACE_DAYS="0.0003",
        LEDGERDESK_SCHEDULE_SECONDS="1",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def short_lived(infrastructure) -> Iterator[Stack]:
    """Archives kept four seconds, and a builder's claim that lapses after three."""
    with running_stack(
        infrastructure,
        LEDGERDESK_EXPORT_TTL_SECONDS="4",
        LEDGERDESK_EXPORT_LEASE_SECONDS="3",
    ) as running:
        yield running


# --- what the tests do with an export ----------------------------------------------------------


def start_export(stack: Stack, key: str, **headers: str) -> dict[str, Any]:
    return ok(stack.call("POST", "/v1/tenant/exports", key=key, headers=headers), 202)


def ready(stack: Stack, key: str, export_id: str) -> tuple[dict[str, Any], list[int]]:
    """The export once ready, and every percent seen on the way."""
    seen: list[int] = []

    def done() -> dict[str, Any] | None:
        export = ok(stack.call("GET", f"/v1/tenant/exports/{export_id}", key=key))
        seen.append(export["percent"])
        assert export["status"] in ("queued", "building", "ready"), export
        return export if export["status"] == "ready" else None

    return wait_until(done, timeout=60, interval=0.05, what=f"export {export_id}"), seen


def download(stack: Stack, key: str, export: dict[str, Any]) -> bytes:
    response = stack.call("GET", f"/v1/tenant/exports/{export['id']}/archive", key=key)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["ETag"] == f'"{export["sha256"]}"'
    assert f"ledgerdesk-export-{export['id']}.zip" in response.headers["Content-Disposition"]
    data = response.content
    assert len(data) == export["bytes"] == int(response.headers["Content-Length"])
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert response.headers["Repr-Digest"] == f"sha-256=:{digest}:"
    return data


def opened(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every file of an archive (attached files' bytes by their paths), its
    CRCs checked."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        attached = [name for name in names if name.startswith("attachments/")]
        assert names == [*FILES, *attached, "manifest.json"]
        files = {name: archive.read(name) for name in names if name != "manifest.json"}
        return json.loads(archive.read("manifest.json")), files


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def check_manifest(stack: Stack, key: str, manifest: dict[str, Any], files: dict[str, bytes]):
    """What a tenant checks with the published key alone: the signature, under a key valid
    when it signed, then each file's row count and SHA-256."""
    published = ok(stack.call("GET", "/v1/audit/public-key", key=key))
    body = {k: v for k, v in manifest.items() if k != "signature"}
    signed = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    signature = base64.b64decode(manifest["signature"]["value"])
    at = dt.datetime.fromisoformat(manifest["signed_at"])
    valid = [
        k["public_key"]
        for k in published["keys"]
        if dt.datetime.fromisoformat(k["valid_from"]) <= at
        and (k["valid_until"] is None or at < dt.datetime.fromisoformat(k["valid_until"]))
    ]
    assert any(verify_signature(k, signed, signature) for k in valid)
    # One row fewer in the manifest, and the signature no longer holds.
    forged = json.dumps(
        {**body, "files": [{**f, "rows": f["rows"] - 1} for f in body["files"]]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert not any(verify_signature(k, forged, signature) for k in valid)
    assert [f["name"] for f in manifest["files"]] == list(FILES)
    for entry in manifest["files"]:
        data = files[entry["name"]]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
        assert len(data.splitlines()) == entry["rows"]
    # Every attached file in the archive is listed with its digest, and nothing else is.
    assert {f["name"] for f in manifest["file_contents"]} == set(files) - set(FILES)
    for entry in manifest["file_contents"]:
        data = files[entry["name"]]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]


def export_rows(stack: Stack, export_id: str) -> tuple[list, int]:
    """Retention's row of an export (status, end) and how many chunks it keeps."""
    found = rows(
        stack,
        "retention",
        "SELECT status, end_reason, attempts FROM tenant_exports WHERE id = %s",
        export_id,
    )
    chunks = rows(
        stack,
        "retention",
        "SELECT count(*) FROM tenant_export_chunks WHERE export_id = %s",
        export_id,
    )[0][0]
    return found, chunks


def key_shredded(stack: Stack, export_id: str) -> bool:
    [(shredded,)] = rows(
        stack,
        "retention",
        "SELECT wrapped_key IS NULL FROM subject_keys WHERE subject_id = %s",
        export_id,
        purpose="keys",
    )
    return shredded


# --- the main stack -----------------------------------------------------------------------------


def test_an_export_holds_every_row_of_the_tenant_signed_and_nothing_of_another(stack):
    key, created = admin(stack)
    tenant_id, admin_id = created["tenant"]["id"], created["agent"]["id"]
    agent = create_agent(stack, key)
    contacts = [make_contact(stack, key, name) for name in ("Ann Expo", "Ben Expo", "Cy Expo")]
    for marketing, source in ((True, "signup form"), (False, "unsubscribe link")):
        ok(
            stack.call(
                "PUT",
                f"/v1/contacts/{contacts[0]['id']}/consent",
                key=key,
                json={"marketing": marketing, "source": source},
            )
        )
    tickets = []
    for n, contact in enumerate(contacts):
        ticket = ok(
            stack.call(
                "POST",
                "/v1/tickets",
                key=key,
                json={
                    "subject": f"Order {n} late",
                    "body": f"Where is {n}?",
                    "requester_id": contact["id"],
                },
            ),
            201,
        )
        tickets.append(ticket)
        for body, internal in ((f"On its way {n}", False), (f"Courier lost {n}", True)):
            ok(
                stack.call(
                    "POST",
                    f"/v1/tickets/{ticket['id']}/messages",
                    key=agent["api_key"],
                    json={"body": body, "internal": internal},
                ),
                201,
            )
    wait_until(
        lambda: stack.call("GET", "/v1/billing/subscription", key=key).status_code == 200,
        what="the billing account",
    )
    assert issue_invoices(stack) >= 1
    invoices = ok(stack.call("GET", "/v1/billing/invoices", key=key))["items"]
    assert invoices

    # Another tenant's words, which must appear nowhere in the first one's archive.
    other_key, other = admin(stack)
    canary = unique("Zelda-Canary")
    stranger = make_contact(stack, other_key, canary)
    ok(
        stack.call(
            "POST",
            "/v1/tickets",
            key=other_key,
            json={"subject": canary, "body": canary, "requester_id": stranger["id"]},
        ),
        201,
    )

    # A platform checkpoint signed over the tenant's log before the export's moment.
    wait_until(
        lambda: stack.call("GET", "/v1/audit/entries/1/proof", key=key).status_code == 200,
        timeout=60,
        interval=0.5,
        what="a platform checkpoint over the tenant's log",
    )
    retry = unique("export")
    export = start_export(stack, key, **{"Idempotency-Key": retry})
    assert export["status"] in ("queued", "building") and export["requested_by"] == admin_id
    replayed = stack.call("POST", "/v1/tenant/exports", key=key, headers={"Idempotency-Key": retry})
    assert replayed.status_code == 202 and replayed.json()["id"] == export["id"]
    assert replayed.headers["Idempotent-Replayed"] == "true"

    done, seen = ready(stack, key, export["id"])
    assert seen == sorted(seen) and seen[-1] == 100 and done["percent"] == 100
    assert dt.datetime.fromisoformat(done["expires_at"]) - dt.datetime.fromisoformat(
        done["ready_at"]
    ) == dt.timedelta(days=1)
    manifest, files = opened(download(stack, key, done))
    check_manifest(stack, key, manifest, files)
    assert manifest["export_id"] == export["id"] and manifest["tenant_id"] == tenant_id
    assert done["counts"] == {f["kind"]: f["rows"] for f in manifest["files"]}

    exported = {name: lines(data) for name, data in files.items()}
    assert {c["id"]: c["name"] for c in exported["contacts.jsonl"]} == {
        c["id"]: c["name"] for c in contacts
    }
    assert {a["id"]: a["role"] for a in exported["agents.jsonl"]} == {
        admin_id: "admin",
        agent["id"]: "agent",
    }
    assert [(c["contact_id"], c["marketing"], c["source"]) for c in exported["consent.jsonl"]] == [
        (contacts[0]["id"], True, "signup form"),
        (contacts[0]["id"], False, "unsubscribe link"),
    ]
    assert [(t["id"], t["subject"], t["requester_id"]) for t in exported["tickets.jsonl"]] == [
        (t["id"], t["subject"], t["requester_id"]) for t in tickets
    ]
    assert sorted(
        (m["ticket_id"], m["body"], m["internal"]) for m in exported["messages.jsonl"]
    ) == sorted(
        (t["id"], f"{text} {n}", internal)
        for n, t in enumerate(tickets)
        for text, internal in (("On its way", False), ("Courier lost", True))
    )
    assert {i["id"] for i in exported["invoices.jsonl"]} == {i["id"] for i in invoices}
    ledger = exported["ledger.jsonl"]
    assert ledger and {e["tenant_id"] for e in ledger} == {tenant_id}
    # Its own log's, numbered from 1 with no gap: nothing of another tenant's volume shows.
    assert {e["log"] for e in ledger} == {"tenant"}
    assert [e["seq"] for e in ledger] == list(range(1, len(ledger) + 1))
    assert {"contact_created", "ticket_created"} <= {e["type"] for e in ledger}
    # The heads signed for its log, each with its checkpoint and path there, checked with the
    # published keys alone; the entry at each head's size carries the head's hash.
    heads = exported["ledger_heads.jsonl"]
    assert heads and [h["size"] for h in heads] == sorted({h["size"] for h in heads})
    origin, keys = load_keys(
        json.dumps(ok(stack.call("GET", "/v1/audit/public-key", key=key))), None
    )
    by_seq = {e["seq"]: e for e in ledger}
    for head in heads:
        assert head_holds(uuid.UUID(tenant_id), head, origin, keys) is None, head
        assert by_seq[head["size"]]["hash"] == head["head_hash"]
    everything = b"".join(files.values())
    assert canary.encode() not in everything
    assert other["tenant"]["id"].encode() not in everything
    assert stranger["id"].encode() not in everything

    # The ledger records the export by ids and counts, and the download as an access to it.
    def entries(type_: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params = {"type": type_, "limit": "200"}
        while True:
            page = ok(stack.call("GET", "/v1/audit/entries", key=key, params=params))
            found += page["items"]
            if not page["next_cursor"]:
                return found
            params = {**params, "cursor": page["next_cursor"]}

    [recorded] = wait_until(
        lambda: [
            e for e in entries("tenant_export_ready") if e["payload"]["export_id"] == export["id"]
        ],
        what="the export in the ledger",
    )
    assert recorded["payload"]["counts"] == done["counts"]
    assert recorded["payload"]["archive_sha256"] == done["sha256"]
    assert canary not in json.dumps(recorded) and contacts[0]["name"] not in json.dumps(recorded)
    wait_until(
        lambda: [
            e
            for e in entries("access_logged")
            if e["payload"]["route"] == "/v1/tenant/exports/<string:export_id>/archive"
            and export["id"] in e["payload"]["resource_ids"]
            and e["payload"]["status"] == 200
        ],
        what="the download's access record",
    )


def test_an_archive_of_several_chunks_streams_whole(stack):
    """Ticket text that does not compress (random, near the 100,000 characters a body may
    have) makes an archive of several 1 MiB chunks, each asked of retention while the gateway
    streams the answer."""
    key, _ = admin(stack)
    requester = make_contact(stack, key, "Lou Large")
    bodies = []
    for n in range(18):
        text = base64.b64encode(os.urandom(74_000)).decode()
        created = ok(
            stack.call(
                "POST",
                "/v1/tickets",
                key=key,
                json={"subject": f"Logs {n}", "body": text, "requester_id": requester["id"]},
            ),
            201,
        )
        bodies.append(created["body"])  # as stored: a card number's digits would be cut
    export, _ = ready(stack, key, start_export(stack, key)["id"])
    assert export["chunks"] >= 2 and export["bytes"] > 1 << 20
    manifest, files = opened(download(stack, key, export))
    check_manifest(stack, key, manifest, files)
    assert [t["body"] for t in lines(files["tickets.jsonl"])] == bodies


def attach(stack: Stack, key: str, requester: dict[str, Any], data: bytes) -> dict[str, Any]:
    """A ticket of ``requester``'s with a reply carrying ``data`` as a file; the file."""
    ticket = ok(
        stack.call(
            "POST",
            "/v1/tickets",
            key=key,
            json={"subject": "Receipt", "body": "see file", "requester_id": requester["id"]},
        ),
        201,
    )
    path = f"/v1/tickets/{ticket['id']}"
    uploaded = ok(
        stack.call(
            "POST", f"{path}/attachments", key=key, params={"filename": "scan.bin"}, data=data
        ),
        201,
    )
    body = {"body": "attached", "attachment_ids": [uploaded["id"]]}
    ok(stack.call("POST", f"{path}/messages", key=key, json=body), 201)
    return {**uploaded, "ticket_id": ticket["id"]}


def test_attached_files_are_in_the_archive_by_id_and_an_erased_ones_are_not(stack):
    key, _ = admin(stack)
    kept, erased = make_contact(stack, key, "Kit Kept"), make_contact(stack, key, "Ed Erased")
    # Three chunks of the tickets service's and not one of the archive's: streamed through.
    data = os.urandom(600_000)
    mine = attach(stack, key, kept, data)
    gone_data = os.urandom(1000)
    gone = attach(stack, key, erased, gone_data)
    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": erased["id"]}})
    assert completed(stack, key, erasure["id"])["status"] == "completed"

    export, _ = ready(stack, key, start_export(stack, key)["id"])
    manifest, files = opened(download(stack, key, export))
    check_manifest(stack, key, manifest, files)
    assert manifest["manifest_version"] == 2
    path = f"attachments/{mine['id']}"
    assert files[path] == data
    [entry] = manifest["file_contents"]
    assert entry["name"] == path and entry["sha256"] == hashlib.sha256(data).hexdigest()
    [listed] = lines(files["attachments.jsonl"])
    assert listed["path"] == path and listed["ticket_id"] == mine["ticket_id"]
    assert {k: listed[k] for k in ("id", "filename", "size", "sha256")} == {
        k: mine[k] for k in ("id", "filename", "size", "sha256")
    }
    # The erased requester's file: neither listed nor carried (the ledger names it by id).
    assert not any(gone["id"] in name for name in files)
    assert gone_data not in b"".join(files.values())


def test_only_the_tenants_admins_have_its_exports(stack):
    key, _ = admin(stack)
    export = start_export(stack, key)
    paths = (f"/v1/tenant/exports/{export['id']}", f"/v1/tenant/exports/{export['id']}/archive")
    for role in ("agent", "auditor"):
        other_role = create_agent(stack, key, role)["api_key"]
        assert_problem(stack.call("POST", "/v1/tenant/exports", key=other_role), 403)
        assert_problem(stack.call("GET", "/v1/tenant/exports", key=other_role), 403)
        for path in paths:
            assert_problem(stack.call("GET", path, key=other_role), 403)
    other_key, _ = admin(stack)
    for path in paths:
        assert_problem(stack.call("GET", path, key=other_key), 404)
    assert ok(stack.call("GET", "/v1/tenant/exports", key=other_key))["items"] == []
    for unknown in (str(uuid.uuid4()), "not-an-id"):
        assert_problem(stack.call("GET", f"/v1/tenant/exports/{unknown}", key=key), 404)
        assert_problem(stack.call("GET", f"/v1/tenant/exports/{unknown}/archive", key=key), 404)
    assert_problem(stack.call("GET", "/v1/tenant/exports", key=None), 401)
    listed = ok(stack.call("GET", "/v1/tenant/exports", key=key))["items"]
    assert [e["id"] for e in listed] == [export["id"]]


def test_an_erasure_ends_the_exports_made_before_it(stack):
    key, _ = admin(stack)
    kept = make_contact(stack, key, "Kay Stays")
    erased = make_contact(stack, key, "Eve Goes")
    export, _ = ready(stack, key, start_export(stack, key)["id"])
    assert "Eve Goes" in files_of(stack, key, export)["contacts.jsonl"].decode()

    request = completed(
        stack,
        key,
        file(stack, key, {"type": "erasure", "subject": {"contact_id": erased["id"]}})["id"],
    )
    assert request["status"] == "completed"
    ended = ok(stack.call("GET", f"/v1/tenant/exports/{export['id']}", key=key))
    assert (ended["status"], ended["end_reason"]) == ("deleted", "erasure")
    assert ended["ended_by_request"] == request["id"]
    assert_problem(stack.call("GET", f"/v1/tenant/exports/{export['id']}/archive", key=key), 410)
    assert export_rows(stack, export["id"]) == ([("deleted", "erasure", 1)], 0)
    assert key_shredded(stack, export["id"])

    # A new export holds everyone else, and the erased contact as erased.
    again, _ = ready(stack, key, start_export(stack, key)["id"])
    contacts = {c["id"]: c for c in lines(files_of(stack, key, again)["contacts.jsonl"])}
    assert contacts[kept["id"]]["name"] == "Kay Stays"
    assert contacts[erased["id"]]["name"] == contacts[erased["id"]]["email"] == "[erased]"


def files_of(stack: Stack, key: str, export: dict[str, Any]) -> dict[str, bytes]:
    return opened(download(stack, key, export))[1]


def test_a_cancelled_tenant_exports_during_its_grace_and_its_exports_go_with_it(stack):
    key, created = admin(stack)
    tenant_id = created["tenant"]["id"]
    make_contact(stack, key, "Gus Grace")
    assert stack.call("DELETE", "/v1/tenant", key=key).status_code == 202
    assert_problem(stack.call("GET", "/v1/contacts", key=key), 403)  # cancelled indeed

    export, _ = ready(stack, key, start_export(stack, key)["id"])
    manifest, files = opened(download(stack, key, export))
    check_manifest(stack, key, manifest, files)
    assert "Gus Grace" in files["contacts.jsonl"].decode()
    assert export_rows(stack, export["id"])[1] >= 1

    wait_until(
        lambda: stack.call("GET", "/v1/tenant", key=key).status_code == 401,
        timeout=GRACE_SECONDS + 60,
        what="the tenant's destruction",
    )
    wait_until(
        lambda: export_rows(stack, export["id"]) == ([], 0),
        what="the destroyed tenant's export rows deleted",
    )
    assert rows(
        stack,
        "retention",
        "SELECT count(*) FROM tenant_exports WHERE tenant_id = %s",
        tenant_id,
    ) == [(0,)]
    assert rows(
        stack,
        "retention",
        "SELECT shredded_at IS NOT NULL FROM tenant_keys WHERE tenant_id = %s",
        tenant_id,
        purpose="keys",
    ) == [(True,)]
    assert key_shredded(stack, export["id"])


# --- the short-lived stack ---------------------------------------------------------------------


def test_an_export_expires_and_its_bytes_are_deleted(short_lived):
    key, _ = admin(short_lived)
    make_contact(short_lived, key, "Ida Brief")
    export, _ = ready(short_lived, key, start_export(short_lived, key)["id"])
    assert export_rows(short_lived, export["id"])[1] >= 1

    def expired() -> dict[str, Any] | None:
        found = ok(short_lived.call("GET", f"/v1/tenant/exports/{export['id']}", key=key))
        return found if found["status"] == "expired" else None

    gone = wait_until(expired, timeout=30, what="the export's expiry")
    assert gone["end_reason"] == "expired" and gone["ended_at"] >= export["expires_at"]
    assert_problem(
        short_lived.call("GET", f"/v1/tenant/exports/{export['id']}/archive", key=key), 410
    )
    assert export_rows(short_lived, export["id"]) == ([("expired", "expired", 1)], 0)
    assert key_shredded(short_lived, export["id"])


def test_a_builder_killed_half_way_leaves_no_ready_half_archive_and_is_taken_over(short_lived):
    key, _ = admin(short_lived)
    for n in range(3):
        make_contact(short_lived, key, f"Kim Crash {n}")
    short_lived.stop("retention")
    # A retention that kills itself once its first chunk is stored, before marking it ready.
    crashing = platform.start_processes(
        {**world_env(short_lived.settings), "LEDGERDESK_FAULTS": "export.after_chunk"},
        gateway_processes=0,
        only=("retention",),
    )["retention"]
    try:
        wait_until(
            lambda: short_lived.call("GET", "/readyz").status_code == 200,
            timeout=60,
            what="the crashing retention to serve",
        )
        export = start_export(short_lived, key)
        assert crashing.wait(60) == -signal.SIGKILL
    finally:
        if crashing.poll() is None:
            crashing.kill()
            crashing.wait()
    [(status, _, attempts)], chunks = export_rows(short_lived, export["id"])
    assert (status, attempts) == ("building", 1) and chunks >= 1  # half written, not ready

    short_lived.start("retention")
    done, _ = ready(short_lived, key, export["id"])
    assert done["attempts"] == 2
    manifest, files = opened(download(short_lived, key, done))
    check_manifest(short_lived, key, manifest, files)
    assert {c["name"] for c in lines(files["contacts.jsonl"])} == {
        f"Kim Crash {n}" for n in range(3)
    }
