"""The attachments' chunk store on a real database and keystore: chunks sealed under the ticket's
key and bound to their place, the limits, messages, and every end (the requester's erasure, the
purge of closed tickets, the tenant's destruction, an upload no message names). The tests of
where chunks go run against both chunk stores: tickets' database and a real S3-compatible server
(``tests.support.object_store``)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from kernel.crypto.blobs import BlobCipher
from kernel.crypto.primitives import TamperedCiphertext
from kernel.errors import Conflict, NotFound, TooLarge, ValidationFailed
from kernel.testing import wait_until
from kernel.uow import EventSourcedStore
from services.tickets import attachments, chunk_store, handlers, privacy, tenant_export
from services.tickets.attachment_store import AttachmentStore
from services.tickets.chunk_store import ChunkRef, S3Chunks
from services.tickets.commands import CHUNK_BYTES
from tests.integration.tickets.test_tickets_store import create, enrol, scalar
from tests.support.object_store import new_bucket

LIMITS = attachments.Limits(file_bytes=3 * CHUNK_BYTES, per_message=2, ticket_bytes=4 * CHUNK_BYTES)


class Placed:
    """Where this test's chunks are (tickets' database or a bucket), read from there directly."""

    def __init__(self, store: EventSourcedStore, objects: S3Chunks | None) -> None:
        self.store = store
        self.objects = objects

    def count(self, ticket_id: str | None = None) -> int:
        """The chunks stored, of one ticket or all; in a bucket, every version counted."""
        if self.objects is not None:
            keys = self.objects.keys()
            return len([k for k in keys if ticket_id is None or k.split("/")[1] == ticket_id])
        if ticket_id is None:
            return scalar(self.store, "SELECT count(*) FROM attachment_chunks")
        return scalar(
            self.store,
            "SELECT count(*) FROM attachment_chunks c JOIN attachments a"
            " ON a.id = c.attachment_id WHERE a.ticket_id = %s",
            (ticket_id,),
        )

    def ciphertext(self) -> bytes:
        """Every stored chunk's bytes, as the store holds them."""
        if self.objects is not None:
            client = self.objects.client
            return b"".join(
                client.get_object(Bucket=self.objects.bucket, Key=key)["Body"].read()
                for key in self.objects.keys()
            )
        with self.store.db.transaction() as cur:
            cur.execute("SELECT ciphertext FROM attachment_chunks")
            return b"".join(bytes(row[0]) for row in cur.fetchall())

    def swap(self, t: dict[str, Any], attachment_id: str) -> None:
        """Chunks 0 and 1 of a file exchanged in place, as a store's operator could."""
        if self.objects is not None:
            first, second = (ChunkRef(t["tenant"], t["id"], attachment_id, s) for s in (0, 1))
            a, b = self.objects.get(first), self.objects.get(second)
            assert a is not None and b is not None
            self.objects.put(first, b)
            self.objects.put(second, a)
            return
        with self.store.db.transaction() as cur:
            cur.execute(
                "UPDATE attachment_chunks SET seq = 1 - seq + 100 WHERE attachment_id = %s",
                (attachment_id,),
            )
            cur.execute(
                "UPDATE attachment_chunks SET seq = seq - 100 WHERE attachment_id = %s",
                (attachment_id,),
            )


@pytest.fixture(params=["database", "s3"])
def placed(request: pytest.FixtureRequest, store: EventSourcedStore) -> Iterator[Placed]:
    """The test's chunk store: tickets' database, or a new bucket of the S3 server."""
    objects = new_bucket(request.getfixturevalue("s3_server")) if request.param == "s3" else None
    chunk_store.use(objects)
    try:
        yield Placed(store, objects)
    finally:
        chunk_store.use(None)


def a_ticket(store: EventSourcedStore, tenant: str | None = None) -> dict[str, Any]:
    tenant = tenant or str(uuid.uuid4())
    agent = enrol(store, tenant, "agent")
    requester = enrol(store, tenant, "contact")
    ticket = create(store, tenant, agent, requester)
    return {"tenant": tenant, "agent": agent, "requester": requester, "id": ticket["id"]}


def uploaded(
    store: EventSourcedStore, t: dict[str, Any], data: bytes, name: str = "f.bin"
) -> dict[str, Any]:
    """An upload as the gateway makes it: begun, a chunk per call, finished."""
    with store.unit_of_work(t["agent"]) as uow:
        begun = attachments.begin_upload(uow, t["tenant"], t["id"], t["agent"], LIMITS)
    for seq in range(0, max(1, -(-len(data) // CHUNK_BYTES))):
        piece = data[seq * CHUNK_BYTES : (seq + 1) * CHUNK_BYTES]
        if not piece:
            break
        with store.unit_of_work(t["agent"]) as uow:
            attachments.put_chunk(
                uow, t["tenant"], begun["id"], seq, base64.b64encode(piece).decode(), LIMITS
            )
    with store.unit_of_work(t["agent"]) as uow:
        return attachments.finish_upload(uow, t["tenant"], begun["id"], {"filename": name})


def downloaded(store: EventSourcedStore, t: dict[str, Any], attachment_id: str) -> bytes:
    with store.unit_of_work() as uow:
        found = attachments.for_download(uow, t["tenant"], t["id"], attachment_id)
    parts = []
    for seq in range(found["chunks"]):
        with store.unit_of_work() as uow:
            parts.append(base64.b64decode(attachments.chunk(uow, t["tenant"], attachment_id, seq)))
    return b"".join(parts)


def test_a_file_is_stored_in_sealed_chunks_and_read_back_exactly(store, placed):
    t = a_ticket(store)
    data = secrets.token_bytes(2 * CHUNK_BYTES + 17)
    shown = uploaded(store, t, data, "Rapport 4111 1111 1111 1111.pdf")
    assert shown["size"] == len(data)
    assert shown["sha256"] == hashlib.sha256(data).hexdigest()
    assert shown["filename"] == "Rapport [card ending 1111].pdf"
    assert downloaded(store, t, shown["id"]) == data
    assert placed.count() == 3
    # Nothing of it is stored in the clear: not the bytes, not the name, not the digest.
    stored = placed.ciphertext()
    with store.db.transaction() as cur:
        cur.execute("SELECT filename, sha256 FROM attachments")
        name, digest = cur.fetchone()
    assert data[:64] not in stored and data[-64:] not in stored
    assert "Rapport" not in name and shown["sha256"] not in digest


def test_a_chunk_moved_to_another_place_fails_to_open(store, placed):
    t = a_ticket(store)
    first = uploaded(store, t, secrets.token_bytes(2 * CHUNK_BYTES))
    # Swap the two chunks of the file: each is bound to its place.
    placed.swap(t, first["id"])
    with pytest.raises(TamperedCiphertext), store.unit_of_work() as uow:
        attachments.chunk(uow, t["tenant"], first["id"], 0)


def test_the_limits_hold_and_a_refused_upload_can_be_discarded(store, placed):
    t = a_ticket(store)
    with store.unit_of_work(t["agent"]) as uow:
        begun = attachments.begin_upload(uow, t["tenant"], t["id"], t["agent"], LIMITS)
    chunk = base64.b64encode(b"x" * CHUNK_BYTES).decode()
    for seq in range(3):
        with store.unit_of_work(t["agent"]) as uow:
            attachments.put_chunk(uow, t["tenant"], begun["id"], seq, chunk, LIMITS)
    with pytest.raises(TooLarge), store.unit_of_work(t["agent"]) as uow:
        attachments.put_chunk(uow, t["tenant"], begun["id"], 3, chunk, LIMITS)
    # A chunk out of order, an empty file, and another tenant's upload.
    with pytest.raises(Conflict), store.unit_of_work(t["agent"]) as uow:
        attachments.put_chunk(uow, t["tenant"], begun["id"], 1, chunk, LIMITS)
    with pytest.raises(NotFound), store.unit_of_work(t["agent"]) as uow:
        attachments.put_chunk(uow, str(uuid.uuid4()), begun["id"], 3, chunk, LIMITS)
    with store.unit_of_work(t["agent"]) as uow:
        attachments.discard_upload(uow, t["tenant"], begun["id"])
    assert placed.count() == 0
    with store.unit_of_work(t["agent"]) as uow:
        empty = attachments.begin_upload(uow, t["tenant"], t["id"], t["agent"], LIMITS)
    with pytest.raises(ValidationFailed), store.unit_of_work(t["agent"]) as uow:
        attachments.finish_upload(uow, t["tenant"], empty["id"], {"filename": "e"})
    # The ticket's total: three chunks' worth stored, then a fourth and a fifth refused.
    uploaded(store, t, b"y" * (3 * CHUNK_BYTES))
    uploaded(store, t, b"z" * (CHUNK_BYTES - 1))
    with pytest.raises(TooLarge):
        uploaded(store, t, b"w" * 10)


def test_messages_carry_their_own_uploads_once(store):
    t = a_ticket(store)
    other = a_ticket(store, t["tenant"])
    files = [uploaded(store, t, b"%PDF-" + secrets.token_bytes(100)) for _ in range(3)]
    foreign = uploaded(store, other, b"GIF89a" + secrets.token_bytes(10))

    def add(ticket: dict[str, Any], ids: list[str]) -> dict[str, Any]:
        command = {
            "body": "see attached",
            "internal": False,
            "on_behalf_of_requester": False,
            "attachment_ids": ids,
        }
        with store.unit_of_work(ticket["agent"]) as uow:
            return handlers.add_message(
                uow, ticket["tenant"], ticket["id"], ticket["agent"], command, LIMITS.per_message
            )

    with pytest.raises(ValidationFailed):
        add(t, [f["id"] for f in files])  # three, where two are allowed
    with pytest.raises(ValidationFailed):
        add(t, [foreign["id"]])  # another ticket's
    added = add(t, [files[0]["id"], files[1]["id"]])
    assert [a["id"] for a in added["attachments"]] == [files[0]["id"], files[1]["id"]]
    assert {a["content_type"] for a in added["attachments"]} == {"application/pdf"}
    with pytest.raises(ValidationFailed):
        add(t, [files[0]["id"]])  # on a message already
    with store.unit_of_work() as uow:
        view = handlers.get_ticket(uow, t["tenant"], t["id"], viewer=None)
    [with_files] = [m for m in view["messages"] if m["attachments"]]
    assert with_files["id"] == added["id"] and len(with_files["attachments"]) == 2


def test_both_exports_read_the_files_back_from_the_store(store, placed):
    """The subject's export (content inline) and the tenant's (a chunk at a time by id) read
    through the chunk store, whichever it is."""
    t = a_ticket(store)
    data = b"%PDF-1.4 " + secrets.token_bytes(CHUNK_BYTES + 300)
    shown = uploaded(store, t, data, "statement.pdf")
    command = {
        "body": "your statement",
        "internal": False,
        "on_behalf_of_requester": False,
        "attachment_ids": [shown["id"]],
    }
    with store.unit_of_work(t["agent"]) as uow:
        handlers.add_message(uow, t["tenant"], t["id"], t["agent"], command, LIMITS.per_message)
    with store.unit_of_work() as uow:
        subject = privacy.export(uow, t["tenant"], t["requester"])
    [ticket] = subject["tickets_requested"]
    [file] = [a for m in ticket["messages"] for a in m["attachments"]]
    assert base64.b64decode(file["content_base64"]) == data

    as_of = "2999-01-01T00:00:00+00:00"
    with store.unit_of_work() as uow:
        page = tenant_export.page(uow, t["tenant"], "attachments", as_of, None, 10)
    [listed] = page["items"]
    assert listed["id"] == shown["id"] and listed["chunks"] == 2
    parts = []
    for seq in range(listed["chunks"]):
        with store.unit_of_work() as uow:
            chunk = tenant_export.file_chunk(uow, t["tenant"], "attachments", listed["id"], seq)
        parts.append(base64.b64decode(chunk))
    assert b"".join(parts) == data
    assert placed.count(t["id"]) == 2


def counts(placed: Placed, ticket_id: str) -> tuple[int, int]:
    """The ticket's attachments' rows and chunks."""
    rows = scalar(
        placed.store, "SELECT count(*) FROM attachments WHERE ticket_id = %s", (ticket_id,)
    )
    return rows, placed.count(ticket_id)


def command(tenant: str, **fields: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "request_id": str(uuid.uuid4()), **fields}


def test_every_end_deletes_the_chunks_and_the_rows(store, placed):
    handlers_ = privacy.handlers_for(store.cipher)
    erased, kept = a_ticket(store), None
    kept = a_ticket(store, erased["tenant"])
    shown = uploaded(store, erased, secrets.token_bytes(CHUNK_BYTES + 1))
    uploaded(store, kept, b"kept")
    with store.unit_of_work() as uow:
        handlers_["erase_subject"](uow, command(erased["tenant"], subject_id=erased["requester"]))
    assert counts(placed, erased["id"]) == (0, 0)
    assert counts(placed, kept["id"]) == (1, 1)
    with pytest.raises(NotFound), store.unit_of_work() as uow:
        attachments.for_download(uow, erased["tenant"], erased["id"], shown["id"])
    # The erased requester's ticket takes no new file.
    with pytest.raises(Conflict), store.unit_of_work() as uow:
        attachments.begin_upload(uow, erased["tenant"], erased["id"], erased["agent"], LIMITS)

    # A closed ticket's purge.
    with store.unit_of_work() as uow:
        uow.cur.execute(
            "UPDATE tickets SET status = 'closed', closed_at = now() - interval '1 day'"
            " WHERE id = %s",
            (kept["id"],),
        )
        handlers_["purge_category"](
            uow, command(kept["tenant"], category="closed_tickets", before="2999-01-01T00:00:00Z")
        )
    assert counts(placed, kept["id"]) == (0, 0)

    # The tenant's destruction, and an upload no message named within its time.
    doomed = a_ticket(store)
    uploaded(store, doomed, b"doomed")
    lonely = a_ticket(store)
    uploaded(store, lonely, b"lonely")
    with store.unit_of_work() as uow:
        handlers_["destroy_tenant"](uow, command(doomed["tenant"]))
    assert counts(placed, doomed["id"]) == (0, 0)
    assert counts(placed, lonely["id"]) == (1, 1)
    with store.unit_of_work() as uow:
        assert AttachmentStore(uow.cur, uow.cipher).purge_unattached(3600) == 0
        uow.cur.execute("UPDATE attachments SET created_at = now() - interval '2 hours'")
        assert AttachmentStore(uow.cur, uow.cipher).purge_unattached(3600) == 1
    assert counts(placed, lonely["id"]) == (0, 0)


def test_the_store_refuses_what_the_schema_would(store):
    t = a_ticket(store)
    with store.db.transaction() as cur, pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute(
            "INSERT INTO attachments (id, tenant_id, ticket_id, requester_id, uploaded_by,"
            " message_id) VALUES (%s, %s, %s, %s, %s, %s)",
            (str(uuid.uuid4()), t["tenant"], t["id"], t["requester"], t["agent"], t["id"]),
        )


def test_a_subject_export_carries_files_while_its_budget_lasts_and_lists_the_rest(
    store, monkeypatch
):
    t = a_ticket(store)
    small, large = b"%PDF-" + secrets.token_bytes(100), secrets.token_bytes(CHUNK_BYTES + 5)
    files = [uploaded(store, t, small), uploaded(store, t, large)]
    command = {
        "body": "see attached",
        "internal": False,
        "on_behalf_of_requester": False,
        "attachment_ids": [f["id"] for f in files],
    }
    with store.unit_of_work(t["agent"]) as uow:
        added = handlers.add_message(uow, t["tenant"], t["id"], t["agent"], command, 2)
    # One RPC reply carries the export: only so much of the files' bytes fits in it.
    monkeypatch.setattr(attachments, "EXPORT_INLINE_BYTES", len(small) + 10)
    with store.unit_of_work() as uow:
        [carried, listed] = attachments.exported(uow, t["tenant"], [added["id"]])[added["id"]]
    assert base64.b64decode(carried["content_base64"]) == small
    assert listed["id"] == files[1]["id"] and listed["size"] == len(large)
    assert listed["content_base64"] is None and "download it" in listed["content_omitted"]


def test_an_erasure_in_a_versioned_bucket_leaves_no_earlier_version(store, s3_server):
    """With versioning on, a plain delete would leave the old versions behind a delete marker:
    the store deletes every version, so nothing of the file is left to restore."""
    objects = new_bucket(s3_server, versioned=True)
    chunk_store.use(objects)
    try:
        t = a_ticket(store)
        shown = uploaded(store, t, secrets.token_bytes(CHUNK_BYTES + 5))
        # A chunk written twice (a retried put) has two versions.
        objects.put(ChunkRef(t["tenant"], t["id"], shown["id"], 0), b"an older copy")
        listed = objects.client.list_object_versions(Bucket=objects.bucket)
        assert len(listed["Versions"]) == 3
        with store.unit_of_work() as uow:
            privacy.handlers_for(store.cipher)["erase_subject"](
                uow, command(t["tenant"], subject_id=t["requester"])
            )
        listed = objects.client.list_object_versions(Bucket=objects.bucket)
        assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    finally:
        chunk_store.use(None)


def test_an_erasure_the_store_cannot_confirm_is_not_done(store, s3_server):
    """The store unreachable (here: its bucket gone): the handler raises, its unit of work rolls
    back, and the rows, the index a retry deletes from, are all still there."""
    objects = new_bucket(s3_server)
    chunk_store.use(objects)
    try:
        t = a_ticket(store)
        uploaded(store, t, b"kept until the store confirms")
        client = objects.client
        for key in objects.keys():
            client.delete_object(Bucket=objects.bucket, Key=key)
        client.delete_bucket(Bucket=objects.bucket)
        with pytest.raises(client.exceptions.NoSuchBucket), store.unit_of_work() as uow:
            privacy.handlers_for(store.cipher)["erase_subject"](
                uow, command(t["tenant"], subject_id=t["requester"])
            )
        assert scalar(store, "SELECT count(*) FROM attachments WHERE ticket_id = %s", (t["id"],))
    finally:
        chunk_store.use(None)


def test_a_purged_upload_takes_objects_its_rows_never_counted(store, s3_server):
    """A put whose transaction failed left an object past the row's count: the upload's purge
    deletes its whole prefix, that object too."""
    objects = new_bucket(s3_server)
    chunk_store.use(objects)
    try:
        t = a_ticket(store)
        with store.unit_of_work(t["agent"]) as uow:
            begun = attachments.begin_upload(uow, t["tenant"], t["id"], t["agent"], LIMITS)
        chunk = base64.b64encode(b"half an upload").decode()
        with pytest.raises(RuntimeError), store.unit_of_work(t["agent"]) as uow:
            attachments.put_chunk(uow, t["tenant"], begun["id"], 0, chunk, LIMITS)
            raise RuntimeError("the process died before the commit")
        assert objects.keys() == [f"{t['tenant']}/{t['id']}/{begun['id']}/0"]
        assert scalar(store, "SELECT chunks FROM attachments WHERE id = %s", (begun["id"],)) == 0
        with store.unit_of_work() as uow:
            uow.cur.execute("UPDATE attachments SET created_at = now() - interval '2 hours'")
            assert AttachmentStore(uow.cur, uow.cipher).purge_unattached(3600) == 1
        assert objects.keys() == []
    finally:
        chunk_store.use(None)


def test_a_delete_the_store_refuses_fails_the_erasure(store, s3_server):
    """An object under a legal hold cannot be deleted: the store says so in DeleteObjects'
    answer, the handler raises instead of answering done, and the rows stay for the retry."""
    objects = new_bucket(s3_server)
    client = objects.client
    locked = objects.bucket + "-locked"
    client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    chunk_store.use(S3Chunks(client, locked))
    try:
        t = a_ticket(store)
        shown = uploaded(store, t, b"held by the bucket")
        client.put_object_legal_hold(
            Bucket=locked,
            Key=f"{t['tenant']}/{t['id']}/{shown['id']}/0",
            LegalHold={"Status": "ON"},
        )
        with pytest.raises(chunk_store.ObjectStoreError), store.unit_of_work() as uow:
            privacy.handlers_for(store.cipher)["erase_subject"](
                uow, command(t["tenant"], subject_id=t["requester"])
            )
        assert scalar(store, "SELECT count(*) FROM attachments WHERE ticket_id = %s", (t["id"],))
    finally:
        chunk_store.use(None)


def test_a_chunk_put_while_the_erasure_runs_is_deleted_with_the_rest(store, s3_server):
    """An upload holds its row's lock while it puts a chunk; the erasure deletes the rows
    first, so it waits for that upload and lists the prefix only after the chunk is in it."""
    import eventlet

    objects = new_bucket(s3_server)
    chunk_store.use(objects)
    try:
        t = a_ticket(store)
        with store.unit_of_work(t["agent"]) as uow:
            begun = attachments.begin_upload(uow, t["tenant"], t["id"], t["agent"], LIMITS)
        erasing = None
        with store.unit_of_work(t["agent"]) as uploading:
            uploading.cur.execute("SELECT pg_backend_pid()")
            (uploader,) = uploading.cur.fetchone()
            # ``append``'s steps up to its put: the row locked, the chunk sealed (the ticket's
            # key read before the erasure shreds it).
            uploading.cur.execute(
                "SELECT 1 FROM attachments WHERE id = %s FOR UPDATE", (begun["id"],)
            )
            ref = ChunkRef(t["tenant"], t["id"], begun["id"], 0)
            sealed = BlobCipher(store.cipher.keystore).seal_chunk(
                t["tenant"], t["id"], begun["id"], 0, b"a chunk in flight", t["requester"]
            )

            def erase() -> dict[str, Any]:
                with store.unit_of_work() as uow:
                    return privacy.handlers_for(store.cipher)["erase_subject"](
                        uow, command(t["tenant"], subject_id=t["requester"])
                    )

            erasing = eventlet.spawn(erase)

            def erasure_waits_for_the_upload() -> bool:
                with store.db.transaction() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE %s = ANY(pg_blocking_pids(pid))",
                        (uploader,),
                    )
                    return cur.fetchone()[0] > 0

            wait_until(erasure_waits_for_the_upload, what="the erasure to wait for the upload")
            # Its put, and its row's count, while the erasure waits.
            objects.put(ref, sealed)
            uploading.cur.execute(
                "UPDATE attachments SET size = 17, chunks = 1 WHERE id = %s", (begun["id"],)
            )
            assert objects.keys() == [f"{t['tenant']}/{t['id']}/{begun['id']}/0"]
        assert erasing.wait()["status"] == "done"
        assert objects.keys() == []
        assert (
            scalar(store, "SELECT count(*) FROM attachments WHERE ticket_id = %s", (t["id"],)) == 0
        )
    finally:
        chunk_store.use(None)
