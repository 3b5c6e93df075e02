"""The attachments' store: files in chunks, under the ticket's key.

A file is uploaded in chunks of at most ``CHUNK_BYTES`` (each an RPC of its own, so no broker
message holds a whole file), each sealed as it arrives (``kernel.crypto.blobs``) and handed to
the chunk store (``chunk_store``: rows of ``attachment_chunks`` by default, objects of an
S3-compatible bucket as a deployment chooses); no process ever holds more than one chunk of
it. Its name and its SHA-256 are sealed under the same key as encrypted fields
(``kernel.crypto.fields``), its size and the type its first bytes show
(``services.tickets.sniff``) are plain. An upload is complete once it is named (``finish``);
until a message names it (``attach``) it is the uploader's to put on one, and it is deleted a
day later if none does (``purge_unattached``).

What ends the rows: the requester's erasure (``forget_requester``, as their key is shredded),
a closed ticket's purge (``forget_tickets``) and the tenant's destruction (``forget_tenant``)
delete the rows and the chunks (their tickets' or tenant's prefixes in the chunk store,
acknowledged before the unit of work commits), so no ciphertext outlives its key. A data
backup keeps them until it expires; without the keystore (shredded there) they open for no one.

Every query names the tenant: an id of another tenant is not found, as if it did not exist.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kernel.crypto.blobs import BlobCipher
from kernel.crypto.fields import FieldCipher, is_erased, stored_json
from kernel.errors import Conflict, NotFound, TooLarge, ValidationFailed
from services.tickets import chunk_store
from services.tickets.chunk_store import ChunkRef, ChunkStore
from services.tickets.commands import CHUNK_BYTES
from services.tickets.sniff import SNIFF_BYTES, sniff

_SEALED = ("filename", "sha256")


@dataclass(frozen=True)
class Attachment:
    """An attachment's row with its name and digest opened (``ERASED`` once the key is gone)."""

    id: str
    tenant_id: str
    ticket_id: str
    requester_id: str
    uploaded_by: str
    message_id: str | None
    filename: str
    sha256: str
    content_type: str
    size: int
    chunks: int
    state: str

    @property
    def erased(self) -> bool:
        return is_erased(self.filename)

    def shown(self) -> dict[str, Any]:
        """What the API shows of it (metadata only, never its bytes)."""
        return {
            "id": self.id,
            "filename": self.filename,
            "size": self.size,
            "content_type": self.content_type,
            "sha256": self.sha256,
        }


_COLUMNS = (
    "id, tenant_id, ticket_id, requester_id, uploaded_by, message_id, filename, sha256,"
    " content_type, size, chunks, state"
)


# The same columns, of ``attachments a`` in a join.
_JOINED = ", ".join(f"a.{name.strip()}" for name in _COLUMNS.split(","))
# A tenant's attachments on messages written before a moment (its whole export's rows): the
# message's time, not the upload's, decides, as it does for the messages listed beside them.
_EXPORTED = (
    " FROM attachments a JOIN ticket_messages m ON m.id = a.message_id"
    " AND m.tenant_id = a.tenant_id WHERE a.tenant_id = %s AND a.state = 'stored'"
    " AND m.created_at < %s"
)


class AttachmentStore:
    """Attachments on one cursor (a unit of work's), their chunks in ``chunks`` (the store this
    process's settings chose unless given): the caller commits."""

    def __init__(self, cur: Any, cipher: FieldCipher, chunks: ChunkStore | None = None) -> None:
        self._cur = cur
        self._fields = cipher
        self._blobs = BlobCipher(cipher.keystore)
        self._store = chunk_store.for_cursor(cur) if chunks is None else chunks

    # --- uploading ----------------------------------------------------------------------------

    def begin(self, tenant_id: str, ticket_id: str, requester_id: str, uploaded_by: str) -> str:
        attachment_id = str(uuid.uuid4())
        self._cur.execute(
            "INSERT INTO attachments (id, tenant_id, ticket_id, requester_id, uploaded_by)"
            " VALUES (%s, %s, %s, %s, %s)",
            (attachment_id, tenant_id, ticket_id, requester_id, uploaded_by),
        )
        return attachment_id

    def ticket_bytes(self, tenant_id: str, ticket_id: str) -> int:
        """The bytes of all the ticket's attachments, uploads under way included."""
        self._cur.execute(
            "SELECT coalesce(sum(size), 0) FROM attachments"
            " WHERE ticket_id = %s AND tenant_id = %s",
            (ticket_id, tenant_id),
        )
        return int(self._cur.fetchone()[0])

    def append(
        self,
        tenant_id: str,
        attachment_id: str,
        seq: int,
        data: bytes,
        max_bytes: int,
        ticket_max: int,
    ) -> int:
        """Chunk ``seq`` of an upload, sealed and stored; returns the size so far. ``seq`` must
        be the next chunk (a retry of one stored already is a conflict, not a second copy)."""
        if not 0 < len(data) <= CHUNK_BYTES:
            raise ValidationFailed({"chunk": [f"1 to {CHUNK_BYTES} bytes"]})
        row = self._lock_upload(tenant_id, attachment_id)
        ticket_id, requester_id, size, chunks = row
        if seq != chunks:
            raise Conflict(f"chunk {seq} is not the next one ({chunks})")
        if size + len(data) > max_bytes:
            raise TooLarge(f"a file may be at most {max_bytes} bytes")
        # Concurrent uploads to one ticket take turns here, so the ticket's total holds.
        self._cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 0))", (str(ticket_id),)
        )
        if self.ticket_bytes(tenant_id, str(ticket_id)) + len(data) > ticket_max:
            raise TooLarge(f"a ticket's attachments may be at most {ticket_max} bytes together")
        sealed = self._blobs.seal_chunk(
            tenant_id, ticket_id, attachment_id, seq, data, parent_id=requester_id
        )
        # Put before the row counts it: a put whose transaction fails is replaced by the retry's.
        self._store.put(ChunkRef(tenant_id, str(ticket_id), attachment_id, seq), sealed)
        # The type is what the first bytes say, found before anything else is stored.
        kind = sniff(data[:SNIFF_BYTES]) if seq == 0 else None
        self._cur.execute(
            "UPDATE attachments SET size = size + %s, chunks = chunks + 1,"
            " content_type = coalesce(%s, content_type) WHERE id = %s",
            (len(data), kind, attachment_id),
        )
        return size + len(data)

    def finish(self, tenant_id: str, attachment_id: str, filename: str) -> Attachment:
        """The upload named and complete: its digest is taken from what is stored (a chunk at
        a time), then name and digest sealed under the ticket's key."""
        ticket_id, requester_id, size, chunks = self._lock_upload(tenant_id, attachment_id)
        if size == 0:
            raise ValidationFailed({"body": ["the file is empty"]})
        digest = hashlib.sha256()
        for data in self._chunks(tenant_id, str(ticket_id), attachment_id, chunks):
            digest.update(data)
        sealed = self._fields.encrypt_fields(
            {"filename": filename, "sha256": digest.hexdigest()},
            _SEALED,
            tenant_id,
            ticket_id,
            parent_id=requester_id,
        )
        self._cur.execute(
            "UPDATE attachments SET filename = %s, sha256 = %s, state = 'stored' WHERE id = %s",
            (stored_json(sealed["filename"]), stored_json(sealed["sha256"]), attachment_id),
        )
        found = self.get(tenant_id, attachment_id)
        assert found is not None
        return found

    def discard(self, tenant_id: str, attachment_id: str) -> None:
        """An upload given up (too large, the client gone): its chunks and row deleted."""
        self._cur.execute(
            "SELECT ticket_id FROM attachments WHERE id = %s AND tenant_id = %s"
            " AND message_id IS NULL FOR UPDATE",
            (attachment_id, tenant_id),
        )
        row = self._cur.fetchone()
        if row is None:
            return
        self._store.delete_file(tenant_id, str(row[0]), attachment_id)
        self._cur.execute("DELETE FROM attachments WHERE id = %s", (attachment_id,))

    def _lock_upload(self, tenant_id: str, attachment_id: str) -> tuple:
        self._cur.execute(
            "SELECT ticket_id, requester_id, size, chunks, state FROM attachments"
            " WHERE id = %s AND tenant_id = %s FOR UPDATE",
            (attachment_id, tenant_id),
        )
        row = self._cur.fetchone()
        if row is None:
            raise NotFound("no such upload")
        if row[4] != "uploading":
            raise Conflict("the upload is complete already")
        return row[:4]

    # --- on messages --------------------------------------------------------------------------

    def attach(self, tenant_id: str, ticket_id: str, message_id: str, ids: list[str]) -> None:
        """Put uploads of this ticket on a message: each complete and on no message yet."""
        if not ids:
            return
        self._cur.execute(
            "SELECT id FROM attachments WHERE id = ANY(%s::uuid[]) AND tenant_id = %s"
            " AND ticket_id = %s AND state = 'stored' AND message_id IS NULL FOR UPDATE",
            (ids, tenant_id, ticket_id),
        )
        free = {str(row[0]) for row in self._cur.fetchall()}
        missing = [i for i in ids if i not in free]
        if missing or len(set(ids)) != len(ids):
            raise ValidationFailed(
                {
                    "attachment_ids": [
                        "each must be a complete upload to this ticket, on no message yet, named"
                        " once"
                    ]
                }
            )
        self._cur.execute(
            "UPDATE attachments SET message_id = %s WHERE id = ANY(%s::uuid[])", (message_id, ids)
        )

    def of_messages(
        self, tenant_id: str, message_ids: Iterable[str]
    ) -> dict[str, list[Attachment]]:
        """Each message's attachments, oldest first."""
        ids = list(message_ids)
        if not ids:
            return {}
        self._cur.execute(
            f"SELECT {_COLUMNS} FROM attachments WHERE message_id = ANY(%s::uuid[])"  # noqa: S608
            " AND tenant_id = %s ORDER BY created_at, id",
            (ids, tenant_id),
        )
        found: dict[str, list[Attachment]] = {}
        for attachment in self._opened(tenant_id, self._cur.fetchall()):
            found.setdefault(str(attachment.message_id), []).append(attachment)
        return found

    def count_exported(self, tenant_id: str, as_of: str) -> int:
        self._cur.execute(f"SELECT count(*){_EXPORTED}", (tenant_id, as_of))  # noqa: S608
        return int(self._cur.fetchone()[0])

    def exported_page(
        self, tenant_id: str, as_of: str, after: list, limit: int
    ) -> list[tuple[Attachment, Any]]:
        """Up to ``limit`` of the tenant's attachments in a whole export (on messages written
        before ``as_of``), after the keyset position ``after`` (created_at, id), each with its
        created_at; erased ones are left out."""
        self._cur.execute(
            f"SELECT {_JOINED}, a.created_at{_EXPORTED}"  # noqa: S608
            " AND (a.created_at, a.id) > (%s::timestamptz, %s::uuid)"
            " ORDER BY a.created_at, a.id LIMIT %s",
            (tenant_id, as_of, *after, limit),
        )
        rows = self._cur.fetchall()
        opened = self._opened(tenant_id, [row[:-1] for row in rows])
        return [(a, row[-1]) for a, row in zip(opened, rows, strict=True)]

    # --- reading ------------------------------------------------------------------------------

    def get(self, tenant_id: str, attachment_id: str) -> Attachment | None:
        try:
            uuid.UUID(str(attachment_id))
        except ValueError:
            return None
        self._cur.execute(
            f"SELECT {_COLUMNS} FROM attachments WHERE id = %s AND tenant_id = %s",  # noqa: S608
            (attachment_id, tenant_id),
        )
        rows = self._cur.fetchall()
        return next(iter(self._opened(tenant_id, rows)), None)

    def chunk(self, attachment: Attachment, seq: int) -> bytes | None:
        """Chunk ``seq`` of a complete attachment, opened; None once it or its key is gone."""
        if not 0 <= seq < attachment.chunks:
            return None
        sealed = self._store.get(
            ChunkRef(attachment.tenant_id, attachment.ticket_id, attachment.id, seq)
        )
        if sealed is None:
            return None
        return self._blobs.open_chunk(
            attachment.tenant_id, attachment.ticket_id, attachment.id, seq, sealed
        )

    def _chunks(
        self, tenant_id: str, ticket_id: str, attachment_id: str, count: int
    ) -> Iterator[bytes]:
        for seq in range(count):
            sealed = self._store.get(ChunkRef(tenant_id, ticket_id, attachment_id, seq))
            data = (
                None
                if sealed is None
                else self._blobs.open_chunk(tenant_id, ticket_id, attachment_id, seq, sealed)
            )
            if data is None:
                raise Conflict("the upload is incomplete or its ticket was erased")
            yield data

    def _opened(self, tenant_id: str, rows: list[tuple]) -> list[Attachment]:
        opened = self._fields.open_stored_rows(
            tenant_id, [{"filename": r[6], "sha256": r[7]} for r in rows]
        )
        return [
            Attachment(
                id=str(r[0]),
                tenant_id=str(r[1]),
                ticket_id=str(r[2]),
                requester_id=str(r[3]),
                uploaded_by=str(r[4]),
                message_id=None if r[5] is None else str(r[5]),
                filename=words["filename"],
                sha256=words["sha256"],
                content_type=r[8] or "application/octet-stream",
                size=int(r[9]),
                chunks=int(r[10]),
                state=r[11],
            )
            for r, words in zip(rows, opened, strict=True)
        ]

    # --- what ends them -----------------------------------------------------------------------
    # Each deletes the rows, then the chunks by prefix, before the unit of work commits. Rows
    # first: deleting a row waits for an upload holding its lock (``append`` locks the row
    # before it puts a chunk), so a chunk put concurrently is in the store before the prefix is
    # listed. A delete the store refuses raises, the unit of work rolls back and the rows, the
    # index a retry deletes from, are back. In the database store the rows' foreign key takes
    # their chunks with them, and the prefix delete finds what is left (nothing, normally).

    def forget_requester(self, tenant_id: str, requester_id: str) -> int:
        """The requester's erasure: every attachment of their tickets (attachments, then the
        chunks under each ticket's prefix). The tickets table names the tickets too, so a chunk
        whose row never committed leaves no object behind its requester either."""
        self._cur.execute(
            "SELECT ticket_id FROM attachments WHERE requester_id = %s AND tenant_id = %s"
            " UNION SELECT id FROM tickets WHERE requester_id = %s AND tenant_id = %s",
            (requester_id, tenant_id, requester_id, tenant_id),
        )
        tickets = [str(row[0]) for row in self._cur.fetchall()]
        deleted = self._delete_rows(
            "requester_id = %s AND tenant_id = %s", (requester_id, tenant_id)
        )
        for ticket_id in tickets:
            self._store.delete_prefix(tenant_id, ticket_id)
        return deleted

    def forget_tickets(self, tenant_id: str, ticket_ids: list[str]) -> int:
        """Closed tickets purged: their attachments (attachments, then each ticket's prefix)."""
        deleted = self._delete_rows(
            "ticket_id = ANY(%s::uuid[]) AND tenant_id = %s", (list(ticket_ids), tenant_id)
        )
        for ticket_id in ticket_ids:
            self._store.delete_prefix(tenant_id, str(ticket_id))
        return deleted

    def forget_tenant(self, tenant_id: str) -> int:
        """The tenant's destruction: all its attachments (attachments, then its prefix)."""
        deleted = self._delete_rows("tenant_id = %s", (tenant_id,))
        self._store.delete_prefix(tenant_id)
        return deleted

    def purge_unattached(self, older_than_seconds: float, batch: int = 500) -> int:
        """Uploads no message named within their time (a day), or left half way (each one's
        rows locked, its chunks deleted, then its row), a batch at a time so a long backlog
        holds no lock for long."""
        self._cur.execute(
            "SELECT id, tenant_id, ticket_id FROM attachments WHERE message_id IS NULL"
            " AND created_at < now() - make_interval(secs => %s)"
            " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (older_than_seconds, batch),
        )
        rows = self._cur.fetchall()
        for attachment_id, tenant_id, ticket_id in rows:
            self._store.delete_file(str(tenant_id), str(ticket_id), str(attachment_id))
        if not rows:
            return 0
        return self._delete_rows("id = ANY(%s::uuid[])", ([str(r[0]) for r in rows],))

    def _delete_rows(self, where: str, params: tuple) -> int:
        self._cur.execute(f"DELETE FROM attachments WHERE {where}", params)  # noqa: S608
        return int(self._cur.rowcount)
