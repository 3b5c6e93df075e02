"""Where an attachment's sealed chunks live: ``ChunkStore``, in tickets' own database (the
default) or in an S3-compatible object store (``LEDGERDESK_ATTACHMENT_STORE=s3``).

Either store holds ciphertext only: ``attachment_store`` seals every chunk under the ticket's key
(``kernel.crypto.blobs``) before it is handed here, and opens it after; the store never sees a
byte in clear nor a file's name. A chunk is addressed by ids alone, ``<tenant_id>/<ticket_id>/
<attachment_id>/<seq>`` (an object's key in a bucket), so what ends a subject ends a prefix: the
requester's erasure their tickets', a purge a ticket's, a destruction the tenant's.

The ``attachments`` rows stay in PostgreSQL either way, as the index the privacy handlers delete
from. The object store is no part of the unit of work's transaction, so the order of moves keeps
it safe: a chunk is put before its row counts it (a put whose transaction then fails leaves an
object under the upload's prefix, overwritten by the retry or deleted with the upload's prefix
when it is discarded or purged), and a prefix is deleted after its rows, before they commit (a
delete that fails raises, the transaction rolls back with the rows back, the privacy command is
answered again later; one that succeeds before a failed commit is repeated, harmlessly, by the
retry). A handler answers ``done`` only after the store acknowledged every delete.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2

from kernel.config import Settings


@dataclass(frozen=True)
class ChunkRef:
    """Chunk ``seq`` of one attachment, by ids only."""

    tenant_id: str
    ticket_id: str
    attachment_id: str
    seq: int

    @property
    def key(self) -> str:
        return f"{prefix_of(self.tenant_id, self.ticket_id, self.attachment_id)}{self.seq}"


def prefix_of(
    tenant_id: str, ticket_id: str | None = None, attachment_id: str | None = None
) -> str:
    """The key prefix of a tenant's, a ticket's or an attachment's chunks, ending in ``/`` so
    that one id's prefix never takes in another's."""
    return "".join(f"{part}/" for part in (tenant_id, ticket_id, attachment_id) if part is not None)


class ChunkStore(Protocol):
    """Sealed chunks by their place; every delete returns once the store acknowledged it."""

    def put(self, ref: ChunkRef, sealed: bytes) -> None:
        """Stores (or replaces) one chunk."""

    def get(self, ref: ChunkRef) -> bytes | None:
        """One chunk's ciphertext, or None if there is none."""

    def delete_file(self, tenant_id: str, ticket_id: str, attachment_id: str) -> None:
        """Every chunk of one attachment."""

    def delete_prefix(self, tenant_id: str, ticket_id: str | None = None) -> None:
        """Every chunk of a ticket's attachments, or of all a tenant's."""


class DatabaseChunks:
    """The embedded store: ``attachment_chunks`` rows on the unit of work's cursor, so a chunk
    commits (or rolls back) with its ``attachments`` row."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def put(self, ref: ChunkRef, sealed: bytes) -> None:
        self._cur.execute(
            "INSERT INTO attachment_chunks (attachment_id, seq, ciphertext) VALUES (%s, %s, %s)"
            " ON CONFLICT (attachment_id, seq) DO UPDATE SET ciphertext = excluded.ciphertext",
            (ref.attachment_id, ref.seq, psycopg2.Binary(sealed)),
        )

    def get(self, ref: ChunkRef) -> bytes | None:
        self._cur.execute(
            "SELECT ciphertext FROM attachment_chunks WHERE attachment_id = %s AND seq = %s",
            (ref.attachment_id, ref.seq),
        )
        row = self._cur.fetchone()
        return None if row is None else bytes(row[0])

    def delete_file(self, tenant_id: str, ticket_id: str, attachment_id: str) -> None:
        self._delete(
            "a.id = %s AND a.ticket_id = %s AND a.tenant_id = %s",
            (attachment_id, ticket_id, tenant_id),
        )

    def delete_prefix(self, tenant_id: str, ticket_id: str | None = None) -> None:
        if ticket_id is None:
            self._delete("a.tenant_id = %s", (tenant_id,))
        else:
            self._delete("a.ticket_id = %s AND a.tenant_id = %s", (ticket_id, tenant_id))

    def _delete(self, where: str, params: tuple) -> None:
        # The chunks' place is their attachment's row: the prefix is read through it.
        self._cur.execute(
            "DELETE FROM attachment_chunks c USING attachments a"  # noqa: S608
            f" WHERE c.attachment_id = a.id AND {where}",
            params,
        )


class ObjectStoreError(RuntimeError):
    """The object store refused or failed a delete: the caller's transaction must not commit."""


# DeleteObjects takes at most this many keys a request.
_DELETE_BATCH = 1000


class S3Chunks:
    """Chunks as objects of one bucket of an S3-compatible store, one object a chunk.

    A delete removes every version of every object under the prefix, and their delete markers,
    so a bucket with versioning on keeps no earlier copy of an erased file either (that needs
    ``s3:DeleteObjectVersion`` as well as ``s3:DeleteObject``; docs/operations.md)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> Any:
        return self._client

    def check(self) -> None:
        """Raises unless the bucket exists and these credentials may reach it."""
        self._client.head_bucket(Bucket=self._bucket)

    def put(self, ref: ChunkRef, sealed: bytes) -> None:
        self._client.put_object(
            Bucket=self._bucket,
            Key=ref.key,
            Body=sealed,
            ContentType="application/octet-stream",
        )

    def get(self, ref: ChunkRef) -> bytes | None:
        try:
            found = self._client.get_object(Bucket=self._bucket, Key=ref.key)
        except self._client.exceptions.NoSuchKey:
            return None
        return bytes(found["Body"].read())

    def delete_file(self, tenant_id: str, ticket_id: str, attachment_id: str) -> None:
        self._delete_under(prefix_of(tenant_id, ticket_id, attachment_id))

    def delete_prefix(self, tenant_id: str, ticket_id: str | None = None) -> None:
        self._delete_under(prefix_of(tenant_id, ticket_id))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, every version counted (operators' checks and tests)."""
        return sorted({key for key, _ in self._versions(prefix)})

    def _delete_under(self, prefix: str) -> None:
        # Listed, then deleted, a page at a time: deleting while listing would move the pages.
        deleted: set[tuple[str, str]] = set()
        while True:
            found = _first(self._versions(prefix), _DELETE_BATCH)
            if not found:
                return
            if deleted.intersection(found):
                # Acknowledged, yet still there (an object lock, a store that ignores versions):
                # not erased, and said so rather than reported done or retried for ever.
                raise ObjectStoreError(
                    f"the object store kept objects under {prefix!r} it acknowledged deleting"
                )
            deleted.update(found)
            batch = [{"Key": key, "VersionId": version} for key, version in found]
            answer = self._client.delete_objects(
                Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True}
            )
            errors = answer.get("Errors") or []
            if errors:
                # Codes and keys only (ids): never a message a store might fill with more.
                codes = sorted({str(e.get("Code")) for e in errors})
                raise ObjectStoreError(
                    f"the object store refused {len(errors)} deletes under {prefix!r}: {codes}"
                )

    def _versions(self, prefix: str) -> Iterable[tuple[str, str]]:
        pages = self._client.get_paginator("list_object_versions").paginate(
            Bucket=self._bucket, Prefix=prefix
        )
        for page in pages:
            for entry in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
                yield entry["Key"], entry.get("VersionId") or "null"


def _first(items: Iterable[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    found = []
    for item in items:
        found.append(item)
        if len(found) == count:
            break
    return found


def s3_client(settings: Settings) -> Any:
    """A client of the configured S3-compatible store. Empty credentials leave boto3 to find
    its own (an instance's or a pod's role), which a deployment on a cloud would rather use."""
    # Imported once chosen: a process on the database store never loads the SDK.
    import boto3
    from botocore.config import Config

    credentials = {}
    if settings.attachment_s3_access_key_id:
        credentials = {
            "aws_access_key_id": settings.attachment_s3_access_key_id,
            "aws_secret_access_key": settings.attachment_s3_secret_access_key,
        }
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.attachment_s3_endpoint or None,
        region_name=settings.attachment_s3_region,
        config=Config(
            # Path-style addressing for a store of one's own: most S3-compatible servers serve
            # no per-bucket hostnames; AWS S3 (no endpoint) chooses its own.
            s3={"addressing_style": "path" if settings.attachment_s3_endpoint else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=30,
        ),
        **credentials,
    )


_lock = threading.Lock()
_objects: S3Chunks | None = None
_configured = False


def configure(settings: Settings) -> None:
    """This process's store, from its settings (the tickets service at start): for ``s3``, a
    client of the bucket, checked to exist so a misconfiguration stops the start, not an
    upload."""
    global _objects, _configured
    with _lock:
        if settings.attachment_store == "s3":
            objects = S3Chunks(s3_client(settings), settings.attachment_s3_bucket)
            objects.check()
            _objects = objects
        else:
            _objects = None
        _configured = True


def use(objects: S3Chunks | None) -> None:
    """This process's object store set directly (None: the database), as a test does."""
    global _objects, _configured
    with _lock:
        _objects, _configured = objects, True


def for_cursor(cur: Any) -> ChunkStore:
    """The store this process's settings chose, on the unit of work's cursor."""
    if not _configured:
        configure(Settings.from_env(service="tickets"))
    objects = _objects
    return DatabaseChunks(cur) if objects is None else objects
