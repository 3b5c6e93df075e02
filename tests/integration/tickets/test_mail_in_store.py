"""services.tickets.mail_in on a real database and keystore: a mail delivered twice at once is
stored once, a refusal leaves nothing, and the idempotency records end with the requester's
erasure, the tenant's destruction and their window."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import eventlet
import pytest

from kernel.errors import NotFound
from kernel.mail.inbound import Refused
from kernel.uow import EventSourcedStore
from services.tickets import mail_in, privacy
from services.tickets.attachments import Limits
from services.tickets.commands import CHUNK_BYTES
from tests.integration.tickets.test_tickets_store import enrol, scalar, unknown_to_accounts

DOMAIN = "desk.example"
LIMITS = Limits(file_bytes=2 * CHUNK_BYTES, per_message=3, ticket_bytes=3 * CHUNK_BYTES)


def a_mail(**changes: Any) -> dict[str, Any]:
    return {
        "sender": "jane@customer.example",
        "sender_name": "Jane",
        "subject": "Help",
        "text": "It broke.",
        "message_id": f"<{uuid.uuid4()}@customer.example>",
        "references": [],
        "files": [],
        "redactions": 0,
        **changes,
    }


def receive(store: EventSourcedStore, tenant: str, contact: str, mail: dict) -> dict[str, Any]:
    def sender(tenant_id: str, address: str, name: str) -> dict[str, Any]:
        return {"contact_id": contact}

    with store.unit_of_work("mail-in") as uow:
        return mail_in.receive(uow, sender, unknown_to_accounts, tenant, mail, LIMITS, DOMAIN)


def count(store: EventSourcedStore, table: str, tenant: str) -> int:
    return scalar(store, f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant,))  # noqa: S608


def test_a_mail_delivered_twice_at_once_is_stored_once(store):
    tenant = str(uuid.uuid4())
    contact = enrol(store, tenant, "contact")
    mail = a_mail()
    # Two replicas, each given the mail by a relay that retried: they take turns on the lock.
    deliveries = [eventlet.spawn(receive, store, tenant, contact, mail) for _ in range(2)]
    outcomes = sorted(d.wait()["outcome"] for d in deliveries)
    assert outcomes == ["duplicate", "stored"]
    assert count(store, "tickets", tenant) == 1
    assert count(store, "mail_in_received", tenant) == 1
    # Another Message-ID from the same sender is another mail.
    assert receive(store, tenant, contact, a_mail())["outcome"] == "stored"
    assert count(store, "tickets", tenant) == 2


def test_a_refused_mail_leaves_nothing(store):
    tenant = str(uuid.uuid4())
    contact = enrol(store, tenant, "contact")
    files = [(f"f{n}.bin", b"\1" * (2 * CHUNK_BYTES)) for n in range(2)]  # past the ticket's total
    with pytest.raises(Refused) as refused:
        receive(store, tenant, contact, a_mail(files=files))
    assert refused.value.reply.startswith("552 5.3.4 a ticket's attachments may be at most")
    for table in ("tickets", "attachments", "mail_in_received"):
        assert count(store, table, tenant) == 0
    assert scalar(store, "SELECT count(*) FROM events WHERE tenant_id = %s", (tenant,)) == 0


def test_the_records_end_with_erasure_destruction_and_their_window(store):
    handlers = privacy.handlers_for(store.cipher)
    tenant = str(uuid.uuid4())
    erased, kept = enrol(store, tenant, "contact"), enrol(store, tenant, "contact")
    receive(store, tenant, erased, a_mail())
    receive(store, tenant, kept, a_mail(sender="kim@customer.example"))
    with store.unit_of_work() as uow:
        handlers["erase_subject"](
            uow, {"tenant_id": tenant, "subject_id": erased, "request_id": str(uuid.uuid4())}
        )
    assert scalar(
        store,
        "SELECT array_agg(requester_id::text) FROM mail_in_received WHERE tenant_id = %s",
        (tenant,),
    ) == [kept]

    with store.db.transaction() as cur:
        assert mail_in.forget_expired(cur, dt.timedelta(days=1)) == 0
        cur.execute(
            "UPDATE mail_in_received SET received_at = now() - interval '2 days'"
            " WHERE tenant_id = %s",
            (tenant,),
        )
        assert mail_in.forget_expired(cur, dt.timedelta(days=1)) == 1

    doomed = str(uuid.uuid4())
    receive(store, doomed, enrol(store, doomed, "contact"), a_mail())
    with store.unit_of_work() as uow:
        handlers["destroy_tenant"](uow, {"tenant_id": doomed, "request_id": str(uuid.uuid4())})
    assert count(store, "mail_in_received", doomed) == 0
    # The tenant's key went with it: no digest can be made, so its mail is no one's.
    with pytest.raises(NotFound, match="no such mailbox"):
        receive(store, doomed, enrol(store, doomed, "contact"), a_mail())
