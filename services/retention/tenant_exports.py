"""A tenant's whole export: asked for by an admin, built in the background (``export_job``),
downloadable once ready, ended a day later, or sooner by an erasure or the tenant's
destruction.

What this keeps of an export is a row of ids, states, counts and times (``tenant_exports``)
and the archive's bytes in chunks sealed under a key of the export's own: a subject key whose
id is the export's, under the tenant's key in retention's keystore. So every end is a key
shredded and rows deleted:

- expiry (``expire_due``): ``LEDGERDESK_EXPORT_TTL_SECONDS`` after it is ready, the chunks go
  and the key is shredded; the row stays, ``expired``, so a download is a 410 rather than a 404;
- an erasure (``end_for_erasure``): when a subject's erasure completes, every export of the
  tenant made before it (ready or under way) ends the same way, ``deleted`` with the request
  that ended it; the archive held the subject, and rebuilding it without them is a new export.
  ``end_erased`` finds any such export again (a restored database, say) on every tick;
- the tenant's destruction (``forget_tenant``): its key is shredded with every key of the
  tenant, and its rows deleted (``forget_destroyed`` again on every tick).

Each start and end is a message for the audit ledger (ids, counts and reasons only).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kernel.crypto.primitives import field_aad, open_sealed, seal
from kernel.db import keyset_page
from kernel.errors import Conflict, Gone, NotFound, RetryLater, require_id
from kernel.uow import UnitOfWork
from services.retention.four_eyes import retention_message

OPEN = ("queued", "building")
ENDED = ("expired", "deleted")
# How soon a client asking for an archive that is not ready should ask again.
RETRY_SECONDS = 2

_COLUMNS = (
    "id, tenant_id, requested_by, status, created_at, started_at, rows_expected, rows_done,"
    " ready_at, expires_at, counts, chunks, archive_bytes, archive_sha256, ended_at,"
    " end_reason, ended_by, attempts"
)


def stream_of(export_id: Any) -> str:
    return f"tenant-export-{export_id}"


def start(
    uow: UnitOfWork, tenant_id: str, agent_id: str, now: dt.datetime
) -> tuple[dict[str, Any], bool]:
    """Ask for the tenant's export: a new one (created), or the one already under way (one at
    a time per tenant). Returns (export, created)."""
    export_id = str(uuid.uuid4())
    uow.cur.execute(
        "INSERT INTO tenant_exports (id, tenant_id, requested_by, status, created_at)"
        " VALUES (%s, %s, %s, 'queued', %s)"
        " ON CONFLICT (tenant_id) WHERE status IN ('queued', 'building') DO NOTHING",
        (export_id, tenant_id, agent_id, now),
    )
    if uow.cur.rowcount == 0:
        uow.cur.execute(
            f"SELECT {_COLUMNS} FROM tenant_exports"  # noqa: S608
            " WHERE tenant_id = %s AND status IN ('queued', 'building')",
            (tenant_id,),
        )
        return view(uow.cur.fetchone()), False
    uow.publish(
        retention_message(
            uow,
            "tenant_export_requested",
            stream_of(export_id),
            tenant_id,
            agent_id,
            {"export_id": export_id, "tenant_id": tenant_id, "requested_by": agent_id},
        )
    )
    return get(uow, tenant_id, export_id), True


def get(uow: UnitOfWork, tenant_id: str, export_id: str) -> dict[str, Any]:
    require_id(export_id, "export")
    uow.cur.execute(
        f"SELECT {_COLUMNS} FROM tenant_exports WHERE id = %s AND tenant_id = %s",  # noqa: S608
        (export_id, tenant_id),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such export")
    return view(row)


def list_exports(uow: UnitOfWork, tenant_id: str, limit: int, after: list | None) -> dict[str, Any]:
    rows, next_after = keyset_page(
        uow.cur,
        f"SELECT {_COLUMNS} FROM tenant_exports WHERE tenant_id = %s",  # noqa: S608
        [tenant_id],
        limit,
        after,
        lambda row: [row[4].isoformat(), str(row[0])],
    )
    return {"items": [view(row) for row in rows], "next": next_after}


def view(row: tuple) -> dict[str, Any]:
    (
        export_id,
        tenant_id,
        requested_by,
        status,
        created,
        started,
        expected,
        done,
        ready,
        expires,
        counts,
        chunks,
        size,
        sha256,
        ended,
        reason,
        ended_by,
        attempts,
    ) = row
    return {
        "id": str(export_id),
        "tenant_id": str(tenant_id),
        "requested_by": str(requested_by),
        "status": status,
        "percent": percent(status, expected, done, ready is not None),
        "rows_expected": expected,
        "rows_done": done,
        "created_at": created.isoformat(),
        "started_at": _iso(started),
        "ready_at": _iso(ready),
        "expires_at": _iso(expires),
        "counts": counts,
        "chunks": chunks,
        "bytes": size,
        "sha256": sha256,
        "ended_at": _iso(ended),
        "end_reason": reason,
        "ended_by_request": None if ended_by is None else str(ended_by),
        "attempts": attempts,
    }


def percent(status: str, expected: int | None, done: int, was_ready: bool) -> int:
    """How far the export got: 100 once the archive was complete; until then the rows written
    of those counted when it started, never 100 (the archive's end is still to write)."""
    if status == "ready" or was_ready:
        return 100
    if not expected:
        return 0
    return min(99, done * 100 // expected)


# --- the archive's bytes ------------------------------------------------------------------------


def _aad(tenant_id: Any, export_id: Any, seq: int) -> bytes:
    """Each chunk bound to its tenant, export and place: one moved or reordered fails."""
    return field_aad(uuid.UUID(str(tenant_id)), uuid.UUID(str(export_id)), f"archive/{seq}")


def seal_chunk(uow: UnitOfWork, tenant_id: Any, export_id: Any, seq: int, data: bytes) -> bytes:
    """A chunk of the archive under the export's own key (created with the first chunk, under
    the tenant's key): ``KeyShredded`` once the export ended or the tenant was destroyed."""
    key = uow.cipher.keystore.subject_key(tenant_id, export_id)
    assert key is not None  # create=True raises KeyShredded instead
    return seal(key, data, _aad(tenant_id, export_id, seq))


def chunk(uow: UnitOfWork, tenant_id: str, export_id: str, seq: int) -> bytes:
    """Chunk ``seq`` of a ready export's archive, opened. 410 once it ended (expired or
    deleted), 409 (retry later) while it is being built, 409 if it failed, 404 for no such
    export or chunk."""
    export = get(uow, tenant_id, export_id)
    downloadable(export)
    uow.cur.execute(
        "SELECT sealed FROM tenant_export_chunks WHERE export_id = %s AND seq = %s",
        (export_id, seq),
    )
    row = uow.cur.fetchone()
    if row is None:
        raise NotFound("no such chunk")
    key = uow.cipher.keystore.subject_key(tenant_id, export_id, create=False)
    if key is None:
        raise Gone("the export's key is shredded: it expired or was deleted")
    return open_sealed(key, bytes(row[0]), _aad(tenant_id, export_id, seq))


def downloadable(export: dict[str, Any]) -> None:
    """Nothing if its archive can be downloaded now; else the error that says why not."""
    status = export["status"]
    if status in ENDED:
        why = "an erasure completed after it was made" if status == "deleted" else "it expired"
        raise Gone(f"the export's archive is deleted: {why}")
    if status in OPEN:
        raise RetryLater(RETRY_SECONDS, f"the export is {status} ({export['percent']}%)")
    if status == "failed":
        raise Conflict("the export could not be built; ask for a new one")


# --- ends -----------------------------------------------------------------------------------


def expire_due(uow: UnitOfWork, now: dt.datetime) -> int:
    """End every ready export past its expiry: chunks deleted, key shredded."""
    uow.cur.execute(
        "SELECT id, tenant_id FROM tenant_exports WHERE status = 'ready' AND expires_at <= %s"
        " ORDER BY expires_at FOR UPDATE SKIP LOCKED",
        (now,),
    )
    return _end(uow, uow.cur.fetchall(), "expired", "expired", None, now)


def end_for_erasure(
    uow: UnitOfWork, tenant_id: Any, request_id: Any, completed_at: dt.datetime
) -> int:
    """An erasure in the tenant completed: every export made before it, ready or under way,
    may hold the subject, so each ends (``deleted``, naming the request)."""
    uow.cur.execute(
        "SELECT id, tenant_id FROM tenant_exports WHERE tenant_id = %s AND created_at <= %s"
        " AND status IN ('queued', 'building', 'ready') FOR UPDATE",
        (tenant_id, completed_at),
    )
    return _end(uow, uow.cur.fetchall(), "deleted", "erasure", request_id, completed_at)


def end_erased(uow: UnitOfWork, now: dt.datetime) -> int:
    """Every export still open or ready though an erasure in its tenant completed after it was
    made (one the completion's own step missed: a database restored from a backup), ended."""
    uow.cur.execute(
        "SELECT e.id, e.tenant_id, r.id FROM tenant_exports e"
        " JOIN LATERAL (SELECT id FROM requests r WHERE r.tenant_id = e.tenant_id"
        " AND r.type = 'erasure' AND r.status = 'completed' AND r.completed_at >= e.created_at"
        " ORDER BY r.completed_at LIMIT 1) r ON true"
        " WHERE e.status IN ('queued', 'building', 'ready') FOR UPDATE OF e SKIP LOCKED"
    )
    ended = 0
    for export_id, tenant_id, request_id in uow.cur.fetchall():
        ended += _end(uow, [(export_id, tenant_id)], "deleted", "erasure", request_id, now)
    return ended


def forget_tenant(uow: UnitOfWork, tenant_id: Any) -> int:
    """The tenant's destruction: its exports' keys went with its tenant key; their rows and
    chunks go now. Returns how many exports."""
    uow.cur.execute("DELETE FROM tenant_exports WHERE tenant_id = %s", (tenant_id,))
    return uow.cur.rowcount


def forget_destroyed(uow: UnitOfWork) -> int:
    """``forget_tenant`` again for every tenant whose destruction completed (a database restored
    from a backup, say)."""
    uow.cur.execute(
        "DELETE FROM tenant_exports e WHERE EXISTS (SELECT 1 FROM requests r"
        " WHERE r.tenant_id = e.tenant_id AND r.type = 'destruction' AND r.status = 'completed')"
    )
    return uow.cur.rowcount


def end_failed(uow: UnitOfWork, export_id: Any, tenant_id: Any, now: dt.datetime) -> None:
    _end(uow, [(export_id, tenant_id)], "failed", "failed", None, now)


def _end(
    uow: UnitOfWork,
    exports: list[tuple],
    status: str,
    reason: str,
    request_id: Any,
    now: dt.datetime,
) -> int:
    for export_id, tenant_id in exports:
        uow.cur.execute(
            "UPDATE tenant_exports SET status = %s, end_reason = %s, ended_by = %s,"
            " ended_at = %s, lease_until = NULL WHERE id = %s",
            (status, reason, request_id, now, export_id),
        )
        uow.cur.execute("DELETE FROM tenant_export_chunks WHERE export_id = %s", (export_id,))
        uow.cipher.keystore.shred_subject(export_id, tenant_id)
        uow.publish(
            retention_message(
                uow,
                "tenant_export_ended",
                stream_of(export_id),
                str(tenant_id),
                "retention",
                {
                    "export_id": str(export_id),
                    "tenant_id": str(tenant_id),
                    "reason": reason,
                    "request_id": None if request_id is None else str(request_id),
                },
            )
        )
    return len(exports)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
