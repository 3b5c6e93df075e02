"""The attachments' chunk store on a real database and keystore: chunks sealed under the ticket's
key and bound to their place, the limits, messages, and every end (the requester's erasure, the
purge of closed tickets, the tenant's destruction, an upload no message names)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from typing import Any

import psycopg2
import pytest

from kernel.crypto.primitives import TamperedCiphertext
from kernel.errors import Conflict, NotFound, TooLarge, ValidationFailed
from kernel.uow import EventSourcedStore
from services.tickets import attachments, handlers, privacy
from services.tickets.attachment_store import AttachmentStore
from services.tickets.commands import CHUNK_BYTES
from tests.integration.tickets.test_tickets_store import create, enrol, scalar

LIMITS = attachments.Limits(file_bytes=3 * CHUNK_BYTES, per_message=2, ticket_bytes=4 * CHUNK_BYTES)


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


def test_a_file_is_stored_in_sealed_chunks_and_read_back_exactly(store):
    t = a_ticket(store)
    data = secrets.token_bytes(2 * CHUNK_BYTES + 17)
    shown = uploaded(store, t, data, "Rapport 4111 1111 1111 1111.pdf")
    assert shown["size"] == len(data)
    assert shown["sha256"] == hashlib.sha256(data).hexdigest()
    assert shown["filename"] == "Rapport [card ending 1111].pdf"
    assert downloaded(store, t, shown["id"]) == data
    assert scalar(store, "SELECT count(*) FROM attachment_chunks") == 3
    # Nothing of it is in the database in the clear: not the bytes, not the name, not the digest.
    with store.db.transaction() as cur:
        cur.execute("SELECT ciphertext FROM attachment_chunks")
        stored = b"".join(bytes(row[0]) for row in cur.fetchall())
        cur.execute("SELECT filename, sha256 FROM attachments")
        name, digest = cur.fetchone()
    assert data[:64] not in stored and data[-64:] not in stored
    assert "Rapport" not in name and shown["sha256"] not in digest


def test_a_chunk_moved_to_another_place_fails_to_open(store):
    t = a_ticket(store)
    first = uploaded(store, t, secrets.token_bytes(2 * CHUNK_BYTES))
    with store.db.transaction() as cur:
        # Swap the two chunks of the file: each is bound to its place.
        cur.execute(
            "UPDATE attachment_chunks SET seq = 1 - seq + 100 WHERE attachment_id = %s",
            (first["id"],),
        )
        cur.execute(
            "UPDATE attachment_chunks SET seq = seq - 100 WHERE attachment_id = %s",
            (first["id"],),
        )
    with pytest.raises(TamperedCiphertext), store.unit_of_work() as uow:
        attachments.chunk(uow, t["tenant"], first["id"], 0)


def test_the_limits_hold_and_a_refused_upload_can_be_discarded(store):
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
    assert scalar(store, "SELECT count(*) FROM attachment_chunks") == 0
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


def counts(store: EventSourcedStore, ticket_id: str) -> tuple[int, int]:
    return (
        scalar(store, "SELECT count(*) FROM attachments WHERE ticket_id = %s", (ticket_id,)),
        scalar(
            store,
            "SELECT count(*) FROM attachment_chunks c JOIN attachments a"
            " ON a.id = c.attachment_id WHERE a.ticket_id = %s",
            (ticket_id,),
        ),
    )


def command(tenant: str, **fields: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "request_id": str(uuid.uuid4()), **fields}


def test_every_end_deletes_the_chunks_and_the_rows(store):
    handlers_ = privacy.handlers_for(store.cipher)
    erased, kept = a_ticket(store), None
    kept = a_ticket(store, erased["tenant"])
    shown = uploaded(store, erased, secrets.token_bytes(CHUNK_BYTES + 1))
    uploaded(store, kept, b"kept")
    with store.unit_of_work() as uow:
        handlers_["erase_subject"](uow, command(erased["tenant"], subject_id=erased["requester"]))
    assert counts(store, erased["id"]) == (0, 0)
    assert counts(store, kept["id"]) == (1, 1)
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
    assert counts(store, kept["id"]) == (0, 0)

    # The tenant's destruction, and an upload no message named within its time.
    doomed = a_ticket(store)
    uploaded(store, doomed, b"doomed")
    lonely = a_ticket(store)
    uploaded(store, lonely, b"lonely")
    with store.unit_of_work() as uow:
        handlers_["destroy_tenant"](uow, command(doomed["tenant"]))
    assert counts(store, doomed["id"]) == (0, 0)
    assert counts(store, lonely["id"]) == (1, 1)
    with store.unit_of_work() as uow:
        assert AttachmentStore(uow.cur, uow.cipher).purge_unattached(3600) == 0
        uow.cur.execute("UPDATE attachments SET created_at = now() - interval '2 hours'")
        assert AttachmentStore(uow.cur, uow.cipher).purge_unattached(3600) == 1
    assert counts(store, lonely["id"]) == (0, 0)


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
