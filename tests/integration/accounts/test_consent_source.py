"""How a contact's consent was given (its ``source``) is free text: held under the contact's key
in accounts' events, never published, and gone with the contact's erasure from every table of
accounts' database, a rebuild of the read models included."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from kernel.crypto.fields import is_encrypted
from kernel.uow import EventSourcedStore
from services.accounts import handlers, privacy
from services.accounts.projections import PROJECTIONS
from tests.integration.accounts.test_tenant_destruction import sign_up

SOURCE = "kiosk of Canary Wharf, asked by Dana Quill"


def dump(store: EventSourcedStore) -> str:
    """Every row of every table of accounts' database, as text: what a backup holds."""
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [t for (t,) in cur.fetchall()]
        parts = []
        for table in tables:
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM \"{table}\" t")  # noqa: S608
            parts.append(cur.fetchone()[0])
    assert {"events", "outbox", "consents", "contacts"} <= set(tables)
    return "\n".join(parts)


def consent_of(store: EventSourcedStore, tenant_id: str, contact_id: str) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        return handlers.get_consent(uow, tenant_id, contact_id)


def command(tenant_id: str, subject_id: str) -> dict[str, Any]:
    """A privacy command as handlers take it (kernel.privacy), sent now."""
    return {
        "tenant_id": tenant_id,
        "subject_id": subject_id,
        "request_id": str(uuid.uuid4()),
        "issued_at": dt.datetime.now(dt.UTC),
    }


def test_a_consent_source_is_sealed_unpublished_and_gone_with_the_contacts_erasure(
    accounts,
    world,
):
    tenant_id = sign_up(accounts, world, "Consenting Finch Ltd")["tenant_id"]
    with accounts.unit_of_work() as uow:
        contact = handlers.create_contact(
            uow, tenant_id, {"name": "Dana Quill", "email": "dana@canary.example"}
        )
        other = handlers.create_contact(
            uow, tenant_id, {"name": "Eli Other", "email": "eli@canary.example"}
        )
    with accounts.unit_of_work() as uow:
        handlers.set_consent(uow, tenant_id, contact["id"], {"marketing": True, "source": SOURCE})
        handlers.set_consent(uow, tenant_id, other["id"], {"marketing": True, "source": "phone"})

    # The contact's own history shows it while they are there.
    assert [c["source"] for c in consent_of(accounts, tenant_id, contact["id"])["history"]] == [
        SOURCE
    ]
    with accounts.db.transaction() as cur:
        cur.execute(
            "SELECT payload FROM events WHERE type = 'consent_recorded' AND stream_id LIKE %s",
            (f"%{contact['id']}",),
        )
        [(stored,)] = cur.fetchall()
        cur.execute("SELECT body FROM outbox WHERE routing_key = 'accounts.consent_recorded'")
        published = [json.loads(body)["payload"] for (body,) in cur.fetchall()]
    # Stored under the contact's key; the published copy leaves without it.
    assert is_encrypted(stored["source"])
    assert {p["contact_id"] for p in published} >= {contact["id"], other["id"]}
    assert all("source" not in p and p["marketing"] is True for p in published)
    assert SOURCE not in dump(accounts).replace(SOURCE, "", 1)  # the read model's one copy

    erase = privacy.handlers_for(accounts.cipher)["erase_subject"]
    with accounts.unit_of_work("accounts") as uow:
        assert erase(uow, command(tenant_id, contact["id"]))["status"] == "done"

    assert "Canary Wharf" not in dump(accounts)
    history = consent_of(accounts, tenant_id, contact["id"])["history"]
    assert [(c["marketing"], c["source"]) for c in history] == [(True, "[erased]")]
    # A rebuild replays the event, whose source now opens as erased.
    for projection in PROJECTIONS:
        accounts.rebuild(projection.name, progress=False)
    assert "Canary Wharf" not in dump(accounts)
    assert consent_of(accounts, tenant_id, contact["id"])["history"] == history
    # Another contact's consent is untouched.
    assert [c["source"] for c in consent_of(accounts, tenant_id, other["id"])["history"]] == [
        "phone"
    ]


def test_an_objection_after_the_contacts_erasure_is_answered(accounts, world):
    tenant_id = sign_up(accounts, world, "Objected Finch Ltd")["tenant_id"]
    with accounts.unit_of_work() as uow:
        contact = handlers.create_contact(
            uow, tenant_id, {"name": "Fay Gone", "email": "fay@canary.example"}
        )
    answers = privacy.handlers_for(accounts.cipher)
    with accounts.unit_of_work("accounts") as uow:
        answers["erase_subject"](uow, command(tenant_id, contact["id"]))
    # No consent can be written under an erased contact's key: the objection has nothing to do.
    with accounts.unit_of_work("accounts") as uow:
        answer = answers["object_to_marketing"](uow, command(tenant_id, contact["id"]))
    assert answer["status"] == "done" and "erased" in answer["detail"]
    assert consent_of(accounts, tenant_id, contact["id"])["history"] == []
