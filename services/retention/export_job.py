"""Building a tenant's whole export, in the background: claim one, ask every owning service
for its rows in keyset pages (``kernel.tenant_export``), write them into the archive as they
come (``archive``), seal its chunks into retention's database, then sign the manifest and mark
it ready, in one transaction with its message for the ledger.

Memory stays flat in the tenant's size: two pages of rows (the one written, the next one
asked for) and a chunk of archive at a time. A part of files (attachments) is written twice
over: its rows as JSON lines like any part, then, paging its rows again, each file's bytes
under its path by id, two of its chunks held at a time (the one written, the next one asked
for); the manifest lists each with its size and SHA-256, checked against the one its owner
recorded when it was uploaded. A file erased between the two passes is in no second page; one
erased while its bytes are read fails the attempt (the erasure ends the export anyway).

Crash safety is a lease. A builder claims an export (``claim``) for
``LEDGERDESK_EXPORT_LEASE_SECONDS`` and renews the claim with every page and chunk, each
renewal checking that the claim is still its own (``_report``); a builder that died (a killed
process) lets it lapse, and the next tick of any retention process claims the export again and
starts it over, deleting what the dead one wrote. A half archive is never marked ready: only
the transaction that writes the last chunk and the signed manifest's counts does that, and only
while the claim holds. An export ended meanwhile (an erasure completed, the tenant destroyed)
fails the next renewal, and its builder stops. A service that stops lets go of its claim
between two pages (``stopping``), so another takes over at once. After ``MAX_ATTEMPTS`` claims
that did not finish, the export fails (its message says so) rather than loop.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import eventlet

from kernel import faults
from kernel.crypto.primitives import KeyShredded
from kernel.signing import Signer
from kernel.tenant_export import MAX_ROWS, file_path
from kernel.uow import UnitOfWork
from services.retention import tenant_exports
from services.retention.archive import CHUNK_BYTES, FORMAT, ArchiveWriter, ChunkSink
from services.retention.four_eyes import retention_message
from services.retention.receipts import canonical

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Part:
    """One file of the archive: which service holds its rows, and their kind there; ``files``
    when each row names a file whose bytes go into the archive too (``kernel.tenant_export``)."""

    name: str
    service: str
    kind: str
    files: bool = False


PARTS = (
    Part("contacts.jsonl", "accounts", "contacts"),
    Part("agents.jsonl", "accounts", "agents"),
    Part("consent.jsonl", "accounts", "consent"),
    Part("tickets.jsonl", "tickets", "tickets"),
    Part("messages.jsonl", "tickets", "messages"),
    Part("attachments.jsonl", "tickets", "attachments", files=True),
    Part("invoices.jsonl", "billing", "invoices"),
    Part("ledger.jsonl", "audit", "ledger"),
    Part("ledger_heads.jsonl", "audit", "ledger_heads"),
)


@dataclass(frozen=True)
class Claim:
    export_id: str
    tenant_id: str
    requested_by: str
    as_of: dt.datetime
    attempt: int


class Abandoned(Exception):
    """The claim is no longer this builder's: the export ended, or another took it over."""


class Units(Protocol):
    """Where a builder opens its units of work: the service's store, as a worker sees it."""

    def unit_of_work(self, actor_id: str | None = None) -> UnitOfWork: ...


@dataclass
class Job:
    """What a builder works with: the store, the owning services (each with ``export_count``
    and ``export_page``), the audit key, a clock, how long a claim lasts and an archive is
    kept, and whether the process is stopping."""

    store: Units
    services: Mapping[str, Any]
    signer: Signer
    clock: Callable[[], dt.datetime]
    lease_seconds: float
    ttl_seconds: float
    stopping: Callable[[], bool] = lambda: False
    page_rows: int = MAX_ROWS
    chunk_bytes: int = CHUNK_BYTES


def run_next(job: Job) -> str | None:
    """Claim the oldest export that needs a builder and build it; its id, or None if none did.
    Any failure is logged (ids and the error's type only) and the export retried later."""
    claim = claim_next(job)
    if claim is None:
        return None
    try:
        build(job, claim)
    except Abandoned:
        log.info("export %s: the claim was lost or let go; not finished here", claim.export_id)
    except Exception as exc:  # retried once its claim lapses; the count of attempts bounds it
        log.warning(
            "export %s: attempt %d failed (%s)", claim.export_id, claim.attempt, type(exc).__name__
        )
    return claim.export_id


def claim_next(job: Job) -> Claim | None:
    """The oldest queued export, or one whose builder's claim lapsed, claimed for this one:
    what an earlier attempt wrote is deleted first. Past ``MAX_ATTEMPTS`` it fails instead."""
    now = job.clock()
    with job.store.unit_of_work("retention") as uow:
        uow.cur.execute(
            "SELECT id, tenant_id, requested_by, created_at, attempts FROM tenant_exports"
            " WHERE status IN ('queued', 'building') AND (lease_until IS NULL OR lease_until < %s)"
            " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            (now,),
        )
        row = uow.cur.fetchone()
        if row is None:
            return None
        export_id, tenant_id, requested_by, created_at, attempts = row
        if attempts >= MAX_ATTEMPTS:
            tenant_exports.end_failed(uow, export_id, tenant_id, now)
            return None
        uow.cur.execute("DELETE FROM tenant_export_chunks WHERE export_id = %s", (export_id,))
        uow.cur.execute(
            "UPDATE tenant_exports SET status = 'building', attempts = attempts + 1,"
            " lease_until = %s, started_at = %s, rows_done = 0, rows_expected = NULL"
            " WHERE id = %s",
            (now + dt.timedelta(seconds=job.lease_seconds), now, export_id),
        )
    return Claim(str(export_id), str(tenant_id), str(requested_by), created_at, attempts + 1)


def build(job: Job, claim: Claim) -> None:
    """Write the claimed export's archive and mark it ready; ``Abandoned`` when the claim is
    lost or let go on the way."""
    as_of = claim.as_of.isoformat()
    expected = sum(
        int(job.services[p.service].export_count(claim.tenant_id, p.kind, as_of)) for p in PARTS
    )
    done = 0
    _report(job, claim, done, expected=expected)

    def store_chunk(seq: int, data: bytes) -> None:
        with job.store.unit_of_work("retention") as uow:
            _renew(uow, job, claim, done)
            try:
                sealed = tenant_exports.seal_chunk(uow, claim.tenant_id, claim.export_id, seq, data)
            except KeyShredded:
                raise Abandoned(claim.export_id) from None
            uow.cur.execute(
                "INSERT INTO tenant_export_chunks (export_id, seq, sealed) VALUES (%s, %s, %s)",
                (claim.export_id, seq, sealed),
            )
        faults.point("export.after_chunk")

    sink = ChunkSink(store_chunk, job.chunk_bytes)
    archive = ArchiveWriter(sink, claim.as_of)
    for part in PARTS:
        source = job.services[part.service]
        began, rows_before = time.monotonic(), done
        with (
            archive.jsonl(part.name, part.service, part.kind) as write,
            contextlib.closing(_pages(source, claim, part, as_of, job.page_rows)) as pages,
        ):
            for page in pages:
                if job.stopping():
                    _let_go(job, claim)
                    raise Abandoned(claim.export_id)
                write(page["items"])
                done += len(page["items"])
                _report(job, claim, done)
        # Ids, counts and times only: where a build spends its time, per kind.
        log.info(
            "export %s: %s, %d rows in %.1f s",
            claim.export_id,
            part.kind,
            done - rows_before,
            time.monotonic() - began,
        )
    contents = [
        entry
        for part in PARTS
        if part.files
        for entry in _write_files(job, claim, archive, part, as_of, lambda: done)
    ]
    files = [entry.manifest() for entry in archive.files]
    archive.add("manifest.json", manifest(job, claim, files, contents))
    archive.close()
    _finish(job, claim, files, sink)


def _write_files(
    job: Job, claim: Claim, archive: ArchiveWriter, part: Part, as_of: str, done: Callable
) -> Generator[dict[str, Any], None, None]:
    """Each file the part's rows name, its bytes streamed into the archive under its path;
    what the manifest says of each."""
    source = job.services[part.service]
    with contextlib.closing(_pages(source, claim, part, as_of, job.page_rows)) as pages:
        for page in pages:
            for row in page["items"]:
                if job.stopping():
                    _let_go(job, claim)
                    raise Abandoned(claim.export_id)
                path = file_path(part.kind, row["id"])
                chunks = _file_chunks(source, claim, part, row["id"], int(row["chunks"]))
                with contextlib.closing(chunks):
                    size, sha256 = archive.file(path, chunks)
                if sha256 != row["sha256"] or size != row["size"]:
                    # Not what was uploaded: no archive rather than a wrong one.
                    raise RuntimeError(f"{part.kind} {row['id']} does not match its digest")
                yield {
                    "name": path,
                    "service": part.service,
                    "kind": part.kind,
                    "id": row["id"],
                    "bytes": size,
                    "sha256": sha256,
                }
            _report(job, claim, done())


def _file_chunks(
    source: Any, claim: Claim, part: Part, file_id: str, count: int
) -> Generator[bytes, None, None]:
    """A file's chunks in order, the next one asked for while this one is written."""

    def ask(seq: int) -> Any:
        return eventlet.spawn(source.export_file_chunk, claim.tenant_id, part.kind, file_id, seq)

    pending = ask(0) if count else None
    try:
        for seq in range(count):
            assert pending is not None
            data = pending.wait()
            pending = ask(seq + 1) if seq + 1 < count else None
            eventlet.sleep(0)
            yield base64.b64decode(data)
    finally:
        if pending is not None:
            pending.kill()


def _pages(
    source: Any, claim: Claim, part: Part, as_of: str, rows: int
) -> Generator[dict[str, Any], None, None]:
    """The part's pages in order, the next one asked for before this one is given out: the
    owner reads and renders it while the builder writes this one (two processes at work, not
    one after the other). A page asked for and not taken (a stop, an error) is dropped."""

    def ask(after: list | None) -> Any:
        return eventlet.spawn(source.export_page, claim.tenant_id, part.kind, as_of, after, rows)

    pending = ask(None)
    try:
        while pending is not None:
            page = pending.wait()
            pending = None if page["next"] is None else ask(page["next"])
            # The request goes out now, before the page is written (and between pages the
            # process's other green threads get their turn).
            eventlet.sleep(0)
            yield page
    finally:
        if pending is not None:
            pending.kill()


def manifest(
    job: Job, claim: Claim, files: list[dict[str, Any]], contents: list[dict[str, Any]]
) -> bytes:
    """The archive's table of contents, signed with the audit key as erasure receipts are: the
    signature is over the canonical JSON (keys sorted, no spaces, UTF-8) of the manifest
    without its ``signature``, checked with the key ``GET /v1/audit/public-key`` publishes.
    Version 2 added ``file_contents``: each attached file's path, id, size and SHA-256."""
    body = {
        "format": FORMAT,
        "manifest_version": 2,
        "export_id": claim.export_id,
        "tenant_id": claim.tenant_id,
        "requested_by": claim.requested_by,
        "as_of": claim.as_of.isoformat(),
        "signed_at": job.clock().isoformat(),
        "files": files,
        "file_contents": contents,
    }
    signature = job.signer.sign(canonical(body))
    signed = {
        **body,
        "signature": {
            "algorithm": "Ed25519",
            "key_id": job.signer.key_id,
            "public_key": job.signer.public_key_b64,
            "value": base64.b64encode(signature).decode(),
            "signed": "the canonical JSON of this manifest without its signature",
        },
    }
    return canonical(signed)


def _finish(job: Job, claim: Claim, files: list[dict[str, Any]], sink: ChunkSink) -> None:
    """Ready, with its counts, size and hash, and its message for the ledger: one transaction,
    taken only while the claim holds."""
    now = job.clock()
    counts = {f["kind"]: f["rows"] for f in files}
    with job.store.unit_of_work("retention") as uow:
        _renew(uow, job, claim, sum(counts.values()))
        uow.cur.execute(
            "SELECT count(*) FROM tenant_export_chunks WHERE export_id = %s", (claim.export_id,)
        )
        if uow.cur.fetchone()[0] != sink.chunks:
            raise RuntimeError("the stored chunks are not those written")
        uow.cur.execute(
            "UPDATE tenant_exports SET status = 'ready', ready_at = %s, expires_at = %s,"
            " lease_until = NULL, counts = %s, chunks = %s, archive_bytes = %s,"
            " archive_sha256 = %s WHERE id = %s",
            (
                now,
                now + dt.timedelta(seconds=job.ttl_seconds),
                json.dumps(counts),
                sink.chunks,
                sink.size,
                sink.sha256,
                claim.export_id,
            ),
        )
        uow.publish(
            retention_message(
                uow,
                "tenant_export_ready",
                tenant_exports.stream_of(claim.export_id),
                claim.tenant_id,
                claim.requested_by,
                {
                    "export_id": claim.export_id,
                    "tenant_id": claim.tenant_id,
                    "requested_by": claim.requested_by,
                    "counts": counts,
                    "archive_bytes": sink.size,
                    "archive_sha256": sink.sha256,
                },
            )
        )


def _report(job: Job, claim: Claim, done: int, expected: int | None = None) -> None:
    with job.store.unit_of_work("retention") as uow:
        _renew(uow, job, claim, done, expected)


def _renew(uow: UnitOfWork, job: Job, claim: Claim, done: int, expected: int | None = None) -> None:
    """Renew the claim and record the progress, if the claim is still this builder's."""
    uow.cur.execute(
        "UPDATE tenant_exports SET lease_until = %s, rows_done = %s,"
        " rows_expected = coalesce(%s, rows_expected)"
        " WHERE id = %s AND status = 'building' AND attempts = %s",
        (
            job.clock() + dt.timedelta(seconds=job.lease_seconds),
            done,
            expected,
            claim.export_id,
            claim.attempt,
        ),
    )
    if uow.cur.rowcount != 1:
        raise Abandoned(claim.export_id)


def _let_go(job: Job, claim: Claim) -> None:
    """The process stops: the claim is given up at once (not counted as an attempt), so the
    next builder starts over without waiting for it to lapse."""
    with job.store.unit_of_work("retention") as uow:
        uow.cur.execute(
            "UPDATE tenant_exports SET lease_until = NULL, attempts = attempts - 1"
            " WHERE id = %s AND status = 'building' AND attempts = %s",
            (claim.export_id, claim.attempt),
        )
