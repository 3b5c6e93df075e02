"""Retention's free text (identity checks, approval reasons) is kept under the tenant's key in
retention's keystore, and the tenant's completed destruction makes it unreadable."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from kernel.envelope import EventRegistry, new_envelope
from kernel.signing import Signer, signer_from_config
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.retention import approvals, receipts, requests, schedules, sealed

SERVICES = ("accounts", "audit", "billing", "tickets")
T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TIMING = requests.Timing(deadline_days=30, retry_seconds=60)
IDENTITY = "Saw the passport of Zora Canaryfield, born 1980"
REASON = "Zora Canaryfield's solicitor confirmed it by phone"


@pytest.fixture
def retention(world) -> EventSourcedStore:
    store = open_store(
        world, "retention", EventRegistry(), (), Path("services/retention/migrations")
    )
    with store.db.transaction() as cur:
        for name in SERVICES:
            cur.execute(
                "INSERT INTO services (name, categories, commands, protocol_version, announced_at)"
                " VALUES (%s, '[]', '[]', 1, now())",
                (name,),
            )
    return store


def file_and_approve(store: EventSourcedStore, tenant: str) -> dict[str, Any]:
    filer, approver = str(uuid.uuid4()), str(uuid.uuid4())
    with store.unit_of_work(filer) as uow:
        approvals.set_approval_policy(uow, tenant, ["erasure"])
        filed, _ = requests.file_request(
            uow,
            lambda tenant_id, subject_id: {"kind": "contact"},
            tenant,
            filer,
            {
                "type": "erasure",
                "subject": {"contact_id": str(uuid.uuid4())},
                "identity_check": IDENTITY,
            },
            T0,
            TIMING,
        )
    decider = {
        "agent_id": approver,
        "key_id": str(uuid.uuid4()),
        "key_issuer_id": approver,
        "key_issued_at": (T0 - dt.timedelta(days=1)).isoformat(),
        "admin_since": (T0 - dt.timedelta(days=1)).isoformat(),
    }
    with store.unit_of_work(approver) as uow:
        return requests.decide(uow, tenant, filed["id"], decider, "approved", REASON, T0, TIMING)


def dump(store: EventSourcedStore) -> str:
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [name for (name,) in cur.fetchall()]
        texts = []
        for table in tables:
            cur.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")  # noqa: S608
            texts.append(cur.fetchone()[0])
    return "\n".join(texts)


def read(store: EventSourcedStore, tenant: str, request_id: str) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        return requests.get_request(uow, tenant, request_id)


def destroy(store: EventSourcedStore, tenant: str, signer: Signer) -> str:
    """The tenant's grace runs out and every service answers its destruction."""
    cancelled = new_envelope(
        type="tenant_cancelled",
        schema_version=1,
        source="accounts",
        stream_id=f"tenant-{tenant}",
        stream_version=2,
        tenant_id=uuid.UUID(tenant),
        actor_id=None,
        payload={"tenant_id": tenant, "destroy_after": T0.isoformat()},
    )
    with store.unit_of_work() as uow:
        schedules.learn_from_accounts(uow, cancelled)
    with store.unit_of_work("retention") as uow:
        assert schedules.destroy_due_tenants(uow, T0 + dt.timedelta(seconds=1), TIMING) == [tenant]
        uow.cur.execute("SELECT request_id FROM schedules WHERE tenant_id = %s", (tenant,))
        request_id = str(uow.cur.fetchone()[0])
    for service in SERVICES:
        answered = new_envelope(
            type="privacy_answered",
            schema_version=1,
            source=service,
            stream_id=f"privacy-{request_id}",
            stream_version=1,
            tenant_id=uuid.UUID(tenant),
            actor_id=service,
            payload={
                "request_id": request_id,
                "command": "destroy_tenant",
                "service": service,
                "status": "done",
                "detail": "destroyed",
            },
        )
        with store.unit_of_work() as uow:
            receipts.record_answer(uow, answered, signer, T0 + dt.timedelta(minutes=1), TIMING)
    return request_id


def test_identity_checks_and_reasons_are_kept_under_the_tenants_key(retention):
    tenant = str(uuid.uuid4())
    approved = file_and_approve(retention, tenant)
    assert approved["approval"]["reason"] == REASON
    text = dump(retention)
    assert "Canaryfield" not in text
    assert read(retention, tenant, approved["id"])["approval"]["reason"] == REASON


def test_a_completed_destruction_makes_the_tenants_free_text_unreadable(retention, world):
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    approved = file_and_approve(retention, tenant)
    kept = file_and_approve(retention, other)
    request_id = destroy(retention, tenant, signer_from_config(world.audit_signing_key))
    assert read(retention, tenant, request_id)["status"] == "completed"

    assert read(retention, tenant, approved["id"])["approval"]["reason"] == "[erased]"
    assert read(retention, other, kept["id"])["approval"]["reason"] == REASON
    with retention.db.transaction() as cur:
        cur.execute("SELECT identity_check_sealed FROM requests WHERE id = %s", (approved["id"],))
        [stored] = cur.fetchone()
    with retention.unit_of_work() as uow:
        assert sealed.opened(uow.cipher, tenant, "identity_check", stored) == "[erased]"


def test_free_text_written_in_plaintext_is_sealed_and_a_destroyed_tenants_dropped(retention):
    """Rows from before the sealed columns (or an older replica's, mid-upgrade)."""
    living, destroyed = str(uuid.uuid4()), str(uuid.uuid4())
    ids = {}
    with retention.db.transaction() as cur:
        for tenant, type_, status in (
            (living, "erasure", "denied"),
            (destroyed, "erasure", "denied"),
            (destroyed, "destruction", "completed"),
        ):
            ids[tenant, type_] = str(uuid.uuid4())
            cur.execute(
                "INSERT INTO requests (id, tenant_id, type, subject_kind, subject_id, filed_by,"
                " identity_check, status, created_at, due_at, decision, decided_by,"
                " decided_at, decision_reason)"
                " VALUES (%s, %s, %s, 'contact', %s, %s, %s, %s, %s, %s, 'denied', %s, %s, %s)",
                (
                    ids[tenant, type_],
                    tenant,
                    type_,
                    uuid.uuid4(),
                    uuid.uuid4(),
                    IDENTITY,
                    status,
                    T0,
                    T0,
                    uuid.uuid4(),
                    T0,
                    REASON,
                ),
            )
    assert "Canaryfield" in dump(retention)
    with retention.unit_of_work() as uow:
        assert sealed.reapply_destructions(uow) == 1
    with retention.unit_of_work() as uow:
        assert sealed.seal_legacy(uow) == 3
    with retention.unit_of_work() as uow:
        assert sealed.seal_legacy(uow) == 0
    assert "Canaryfield" not in dump(retention)
    assert read(retention, living, ids[living, "erasure"])["approval"]["reason"] == REASON
    assert read(retention, destroyed, ids[destroyed, "erasure"])["approval"]["reason"] is None
