"""A tenant's whole export as retention builds and keeps it, against its real database and
keystore: the owning services are stand-ins that page rows as the real ones do (keyset pages,
``kernel.tenant_export``), with the RPC's JSON round trip; the platform's own is the e2e test's
(tests/e2e/test_tenant_export.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from kernel.envelope import EventRegistry
from kernel.errors import Conflict, Gone, NotFound, RetryLater
from kernel.signing import signer_from_config, verify_signature
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.retention import export_job, tenant_exports
from services.retention.receipts import canonical

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Owner:
    """An owning service's two calls over rows it holds per tenant and kind: a count, and keyset
    pages whose position is the last row's index; each answer goes through JSON, as an RPC's."""

    def __init__(self, rows: dict[tuple[str, str], list[dict[str, Any]]]):
        self.rows = rows
        self.pages = 0
        self.fail_after: int | None = None
        self.failure: type[BaseException] = Crash

    def export_count(self, tenant_id: str, kind: str, as_of: str) -> int:
        return len(self.rows.get((tenant_id, kind), []))

    def export_page(
        self, tenant_id: str, kind: str, as_of: str, after: list | None, limit: int
    ) -> dict[str, Any]:
        self.pages += 1
        if self.fail_after is not None and self.pages > self.fail_after:
            raise self.failure("the process died here")
        rows = self.rows.get((tenant_id, kind), [])
        start = after[0] + 1 if after else 0
        items = rows[start : start + limit]
        more = start + limit < len(rows)
        return json.loads(
            json.dumps({"items": items, "next": [start + limit - 1] if more else None})
        )

    def export_file_chunk(self, tenant_id: str, kind: str, file_id: str, seq: int) -> str:
        if not any(r["id"] == file_id for r in self.rows.get((tenant_id, kind), [])):
            raise NotFound("no such file")
        return base64.b64encode(FILES[file_id][seq]).decode()


# A file's chunks by its id: the stand-in's attachments, a few small chunks each.
FILES: dict[str, list[bytes]] = {}


class Crash(BaseException):
    """Stands for a killed process: nothing of the builder's handles it."""


@pytest.fixture
def retention(world) -> EventSourcedStore:
    return open_store(
        world, "retention", EventRegistry(), (), Path("services/retention/migrations")
    )


def holdings(tenant: str, other: str) -> dict[str, Owner]:
    def rows(kind: str, n: int, who: str) -> list[dict[str, Any]]:
        made = [{"id": str(uuid.uuid4()), "kind": kind, "n": i, "who": who} for i in range(n)]
        if kind == "attachments":
            for row in made:
                chunks = [f"{who} {row['id']} {seq} ".encode() * 20 for seq in range(3)]
                FILES[row["id"]] = chunks
                data = b"".join(chunks)
                row.update(chunks=3, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        return made

    owners = {
        "accounts": {"contacts": 7, "agents": 2, "consent": 3},
        "tickets": {"tickets": 12, "messages": 25, "attachments": 5},
        "billing": {"invoices": 1},
        "audit": {"ledger": 9, "ledger_heads": 2},
    }
    return {
        service: Owner(
            {
                (t, kind): rows(kind, n if t == tenant else 2, "ours" if t == tenant else "theirs")
                for kind, n in kinds.items()
                for t in (tenant, other)
            }
        )
        for service, kinds in owners.items()
    }


def job(store, world, services, clock, **changes) -> export_job.Job:
    settings = {
        "store": store,
        "services": services,
        "signer": signer_from_config(world.audit_signing_key),
        "clock": clock,
        "lease_seconds": 30.0,
        "ttl_seconds": 3600.0,
        # Small pages and chunks: many of each, as a large tenant has.
        "page_rows": 4,
        "chunk_bytes": 512,
        **changes,
    }
    return export_job.Job(**settings)


def start(store: EventSourcedStore, tenant: str, clock: Clock) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        export, created = tenant_exports.start(uow, tenant, str(uuid.uuid4()), clock())
    assert created
    return export


def get(store: EventSourcedStore, tenant: str, export_id: str) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        return tenant_exports.get(uow, tenant, export_id)


def archive(store: EventSourcedStore, tenant: str, export_id: str) -> bytes:
    export = get(store, tenant, export_id)
    with store.unit_of_work() as uow:
        data = b"".join(
            tenant_exports.chunk(uow, tenant, export_id, seq) for seq in range(export["chunks"])
        )
    assert len(data) == export["bytes"]
    assert hashlib.sha256(data).hexdigest() == export["sha256"]
    return data


def chunk_rows(store: EventSourcedStore, export_id: str) -> int:
    with store.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM tenant_export_chunks WHERE export_id = %s", (export_id,))
        return cur.fetchone()[0]


def outbox_types(store: EventSourcedStore) -> list[str]:
    with store.db.transaction() as cur:
        cur.execute("SELECT routing_key FROM outbox ORDER BY id")
        return [row[0].removeprefix("retention.") for row in cur.fetchall()]


def test_an_export_holds_every_row_of_its_tenant_and_a_signed_manifest(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    services = holdings(tenant, other)
    export = start(retention, tenant, clock)
    assert export["status"] == "queued" and export["percent"] == 0

    assert export_job.run_next(job(retention, world, services, clock)) == export["id"]

    done = get(retention, tenant, export["id"])
    assert done["status"] == "ready" and done["percent"] == 100
    assert done["counts"] == {
        "contacts": 7,
        "agents": 2,
        "consent": 3,
        "tickets": 12,
        "messages": 25,
        "attachments": 5,
        "invoices": 1,
        "ledger": 9,
        "ledger_heads": 2,
    }
    assert done["rows_done"] == done["rows_expected"] == 66
    assert done["chunks"] > 3  # chunks of 512 bytes: written as they filled
    assert done["expires_at"] == (clock() + dt.timedelta(hours=1)).isoformat()
    # Sealed: no row's text in the database.
    with retention.db.transaction() as cur:
        cur.execute("SELECT sealed FROM tenant_export_chunks")
        stored = b"".join(bytes(r[0]) for r in cur.fetchall())
    assert b"ours" not in stored and b"PK" not in stored[:2]

    with zipfile.ZipFile(io.BytesIO(archive(retention, tenant, export["id"]))) as zipped:
        assert zipped.testzip() is None
        manifest = json.loads(zipped.read("manifest.json"))
        names = [p.name for p in export_job.PARTS]
        files = [f"attachments/{r['id']}" for r in services["tickets"].rows[tenant, "attachments"]]
        assert zipped.namelist() == [*names, *files, "manifest.json"]
        # Each attached file's bytes, under its id, listed in the manifest with its digest.
        assert [entry["name"] for entry in manifest["file_contents"]] == files
        for entry in manifest["file_contents"]:
            data = zipped.read(entry["name"])
            assert data == b"".join(FILES[entry["id"]])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["bytes"] and entry["kind"] == "attachments"
        for entry, part in zip(manifest["files"], export_job.PARTS, strict=True):
            data = zipped.read(part.name)
            assert entry["name"] == part.name and entry["kind"] == part.kind
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            lines = [json.loads(line) for line in data.splitlines()]
            assert len(lines) == entry["rows"] == done["counts"][part.kind]
            # Every row of the tenant, in order, and none of another's.
            assert lines == services[part.service].rows[tenant, part.kind]
    signature = manifest.pop("signature")
    signer = signer_from_config(world.audit_signing_key)
    assert signature["public_key"] == signer.public_key_b64
    assert verify_signature(
        signer.public_key_b64, canonical(manifest), base64.b64decode(signature["value"])
    )
    assert manifest["export_id"] == export["id"] and manifest["tenant_id"] == tenant
    tampered = {**manifest, "files": manifest["files"][1:]}
    assert not verify_signature(
        signer.public_key_b64, canonical(tampered), base64.b64decode(signature["value"])
    )
    assert outbox_types(retention) == ["tenant_export_requested", "tenant_export_ready"]


def test_one_export_at_a_time_and_only_the_tenants_own(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    export = start(retention, tenant, clock)
    with retention.unit_of_work() as uow:
        again, created = tenant_exports.start(uow, tenant, str(uuid.uuid4()), clock())
    assert not created and again["id"] == export["id"]
    for tenant_id, export_id in ((other, export["id"]), (tenant, str(uuid.uuid4())), (tenant, "x")):
        with pytest.raises(NotFound), retention.unit_of_work() as uow:
            tenant_exports.get(uow, tenant_id, export_id)
    # Not ready yet: retry later (409 with Retry-After at the gateway).
    with pytest.raises(RetryLater), retention.unit_of_work() as uow:
        tenant_exports.chunk(uow, tenant, export["id"], 0)
    with retention.unit_of_work() as uow:
        listed = tenant_exports.list_exports(uow, tenant, 10, None)
    assert [e["id"] for e in listed["items"]] == [export["id"]]


def test_a_builder_killed_half_way_is_taken_over_and_starts_over(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    services = holdings(tenant, other)
    export = start(retention, tenant, clock)
    services["tickets"].fail_after = 2
    first = job(retention, world, services, clock)
    with pytest.raises(Crash):
        export_job.run_next(first)
    half = get(retention, tenant, export["id"])
    assert half["status"] == "building" and 0 < half["percent"] < 100
    assert chunk_rows(retention, export["id"]) > 0  # a half archive, never marked ready
    with pytest.raises(RetryLater), retention.unit_of_work() as uow:
        tenant_exports.chunk(uow, tenant, export["id"], 0)

    # Its claim holds until it lapses: nobody takes it before.
    services["tickets"].fail_after = None
    assert export_job.claim_next(first) is None
    clock.advance(31)
    second = export_job.claim_next(first)
    assert second is not None and second.attempt == 2
    assert chunk_rows(retention, export["id"]) == 0  # the dead builder's chunks are gone
    export_job.build(first, second)
    assert get(retention, tenant, export["id"])["status"] == "ready"
    with zipfile.ZipFile(io.BytesIO(archive(retention, tenant, export["id"]))) as zipped:
        assert zipped.testzip() is None
        assert len(zipped.read("messages.jsonl").splitlines()) == 25


def test_a_stale_builder_cannot_write_once_another_took_over(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    services = holdings(tenant, other)
    export = start(retention, tenant, clock)
    builder = job(retention, world, services, clock)
    stale = export_job.claim_next(builder)
    clock.advance(31)
    fresh = export_job.claim_next(builder)
    assert stale is not None and fresh is not None
    with pytest.raises(export_job.Abandoned):
        export_job.build(builder, stale)
    export_job.build(builder, fresh)
    assert get(retention, tenant, export["id"])["status"] == "ready"


def test_a_stopping_process_lets_go_at_once_without_counting_an_attempt(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    export = start(retention, tenant, clock)
    stopping = job(retention, world, holdings(tenant, other), clock, stopping=lambda: True)
    export_job.run_next(stopping)
    let_go = get(retention, tenant, export["id"])
    assert let_go["status"] == "building" and let_go["attempts"] == 0
    claim = export_job.claim_next(job(retention, world, holdings(tenant, other), clock))
    assert claim is not None and claim.export_id == export["id"]  # no wait for a lapse


def test_a_file_whose_bytes_are_not_those_uploaded_makes_no_ready_archive(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    services = holdings(tenant, other)
    services["tickets"].rows[tenant, "attachments"][2]["sha256"] = "0" * 64
    export = start(retention, tenant, clock)
    export_job.run_next(job(retention, world, services, clock))  # the mismatch: logged
    attempted = get(retention, tenant, export["id"])
    assert (attempted["status"], attempted["attempts"]) == ("building", 1)


def test_an_export_that_never_finishes_fails_after_its_attempts(retention, world):
    tenant, other, clock = str(uuid.uuid4()), str(uuid.uuid4()), Clock()
    services = holdings(tenant, other)
    services["billing"].fail_after = 0
    services["billing"].failure = RuntimeError
    export = start(retention, tenant, clock)
    for _ in range(export_job.MAX_ATTEMPTS):
        export_job.run_next(job(retention, world, services, clock))  # a RuntimeError: logged
        clock.advance(31)
    assert export_job.run_next(job(retention, world, services, clock)) is None
    failed = get(retention, tenant, export["id"])
    assert (failed["status"], failed["end_reason"]) == ("failed", "failed")
    with pytest.raises(Conflict), retention.unit_of_work() as uow:
        tenant_exports.chunk(uow, tenant, export["id"], 0)


def ready_export(retention, world, clock) -> tuple[str, dict[str, Any]]:
    tenant = str(uuid.uuid4())
    export = start(retention, tenant, clock)
    export_job.run_next(job(retention, world, holdings(tenant, str(uuid.uuid4())), clock))
    assert get(retention, tenant, export["id"])["status"] == "ready"
    return tenant, export


def key_shredded(world, export_id: str) -> bool:
    """Whether the export's key row in retention's keystore (its own database) is shredded."""
    conn = psycopg2.connect(world.database_dsn("retention", "keys"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT wrapped_key IS NULL FROM subject_keys WHERE subject_id = %s", (export_id,)
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_an_export_expires_its_ttl_after_it_is_ready(retention, world):
    clock = Clock()
    tenant, export = ready_export(retention, world, clock)
    with retention.unit_of_work() as uow:
        assert tenant_exports.expire_due(uow, clock() + dt.timedelta(seconds=3599)) == 0
    with retention.unit_of_work() as uow:
        assert tenant_exports.expire_due(uow, clock() + dt.timedelta(seconds=3600)) == 1
    expired = get(retention, tenant, export["id"])
    assert (expired["status"], expired["end_reason"], expired["percent"]) == (
        "expired",
        "expired",
        100,
    )
    assert chunk_rows(retention, export["id"]) == 0
    assert key_shredded(world, export["id"])
    with pytest.raises(Gone), retention.unit_of_work() as uow:
        tenant_exports.chunk(uow, tenant, export["id"], 0)
    assert outbox_types(retention)[-1] == "tenant_export_ended"


def test_an_erasure_ends_every_export_made_before_it_even_one_under_way(retention, world):
    clock = Clock()
    tenant, ready = ready_export(retention, world, clock)
    clock.advance(5)
    under_way = start(retention, tenant, clock)
    request_id = str(uuid.uuid4())
    with retention.unit_of_work() as uow:
        assert tenant_exports.end_for_erasure(uow, tenant, request_id, clock()) == 2
    for export in (ready, under_way):
        ended = get(retention, tenant, export["id"])
        assert (ended["status"], ended["end_reason"]) == ("deleted", "erasure")
        assert ended["ended_by_request"] == request_id
        assert chunk_rows(retention, export["id"]) == 0
        with pytest.raises(Gone), retention.unit_of_work() as uow:
            tenant_exports.chunk(uow, tenant, export["id"], 0)
    # Nothing left to build: the builder that would have taken it finds nothing.
    assert export_job.claim_next(job(retention, world, {}, clock)) is None


def test_an_export_an_erasure_missed_is_found_and_ended(retention, world):
    """A completed erasure's own step did not reach it (a database restored from a backup)."""
    clock = Clock()
    tenant, export = ready_export(retention, world, clock)
    request_id = str(uuid.uuid4())
    with retention.db.transaction() as cur:
        cur.execute(
            "INSERT INTO requests (id, tenant_id, type, subject_kind, subject_id, filed_by,"
            " status, created_at, due_at, completed_at)"
            " VALUES (%s, %s, 'erasure', 'contact', %s, %s, 'completed', %s, %s, %s)",
            (request_id, tenant, uuid.uuid4(), uuid.uuid4(), T0, T0, clock() + dt.timedelta(1)),
        )
    with retention.unit_of_work() as uow:
        assert tenant_exports.end_erased(uow, clock()) == 1
    ended = get(retention, tenant, export["id"])
    assert (ended["status"], ended["ended_by_request"]) == ("deleted", request_id)
    with retention.unit_of_work() as uow:
        assert tenant_exports.end_erased(uow, clock()) == 0


def test_a_destroyed_tenants_exports_are_gone(retention, world):
    clock = Clock()
    tenant, export = ready_export(retention, world, clock)
    kept_tenant, kept = ready_export(retention, world, clock)
    with retention.unit_of_work() as uow:
        uow.cipher.keystore.shred_tenant(tenant)
        assert tenant_exports.forget_tenant(uow, tenant) == 1
    with pytest.raises(NotFound):
        get(retention, tenant, export["id"])
    assert chunk_rows(retention, export["id"]) == 0
    assert get(retention, kept_tenant, kept["id"])["status"] == "ready"
    assert archive(retention, kept_tenant, kept["id"])
