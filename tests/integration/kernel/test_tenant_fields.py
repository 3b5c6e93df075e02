"""Tenant fields: what belongs to the tenant itself is stored under the tenant's own key, never
published, and gone when the tenant is destroyed (or that one key is shredded)."""

from __future__ import annotations

import json
import uuid

import pytest

from kernel.aggregate import RecordedEvent
from kernel.crypto.fields import is_erased
from kernel.crypto.primitives import KeyShredded
from tests.support.source import source_store


def joined(person: uuid.UUID, name: str, company: str) -> RecordedEvent:
    return RecordedEvent(
        "member_joined",
        {"person_id": str(person), "name": name, "company": company, "plan": "team"},
    )


@pytest.fixture
def store(world):
    return source_store(world)


def stored_and_published(store) -> tuple[str, str]:
    with store.db.transaction() as cur:
        cur.execute("SELECT string_agg(payload::text, ' ') FROM events")
        events = cur.fetchone()[0]
        cur.execute("SELECT string_agg(body, ' ') FROM outbox")
        outbox = cur.fetchone()[0]
    return events, outbox


def test_a_tenant_field_is_stored_under_the_tenants_own_key_and_never_published(store):
    tenant, person = uuid.uuid4(), uuid.uuid4()
    with store.unit_of_work() as uow:
        [plain] = uow.append(
            f"member-{person}", 0, [joined(person, "Ada Pascal", "Canary Works Ltd")], tenant
        )
    # Handlers get the plaintext back.
    assert plain.payload["company"] == "Canary Works Ltd"

    events, outbox = stored_and_published(store)
    assert "Canary Works Ltd" not in events and "Ada Pascal" not in events
    [payload] = [json.loads(events)]
    # The company names the tenant as its subject; the name names the person.
    assert payload["company"]["subject"] == str(tenant)
    assert payload["company"]["tenant"] == str(tenant)
    assert payload["name"]["subject"] == str(person)
    published = json.loads(outbox)["payload"]
    assert published == {"person_id": str(person), "plan": "team"}

    with store.unit_of_work() as uow:
        [loaded] = uow.load(f"member-{person}")
    assert loaded.payload["company"] == "Canary Works Ltd"
    assert loaded.payload["name"] == "Ada Pascal"


def test_destroying_the_tenant_erases_its_fields(store):
    tenant, other, person = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.append(f"member-{person}", 0, [joined(person, "Ada", "Doomed Ltd")], tenant)
        uow.append("member-other", 0, [joined(uuid.uuid4(), "Bo", "Survivor Ltd")], other)
    store.cipher.keystore.shred_tenant(tenant)
    with store.unit_of_work() as uow:
        [gone] = uow.load(f"member-{person}")
        [kept] = uow.load("member-other")
    assert is_erased(gone.payload["company"]) and is_erased(gone.payload["name"])
    assert gone.payload["plan"] == "team"
    assert kept.payload["company"] == "Survivor Ltd"
    # Nothing new is written under a destroyed tenant's key.
    with pytest.raises(KeyShredded), store.unit_of_work() as uow:
        uow.append(f"member-{person}", 1, [joined(person, "Ada", "Back Again Ltd")], tenant)


def test_shredding_the_tenants_own_key_erases_tenant_fields_and_leaves_people_alone(store):
    """The tenant's own key is one subject key among its subjects: a service that must keep some
    of the tenant's data (billing, under a legal hold) shreds this one key alone."""
    tenant, person = uuid.uuid4(), uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.append(f"member-{person}", 0, [joined(person, "Cy", "Held Ltd")], tenant)
    assert store.cipher.keystore.shred_subject(tenant, tenant)
    with store.unit_of_work() as uow:
        [event] = uow.load(f"member-{person}")
    assert is_erased(event.payload["company"])
    assert event.payload["name"] == "Cy"


def test_a_tenant_field_needs_a_tenant(store):
    with pytest.raises(ValueError, match="no tenant"), store.unit_of_work() as uow:
        uow.append("member-x", 0, [joined(uuid.uuid4(), "Di", "Nowhere Ltd")], None)
