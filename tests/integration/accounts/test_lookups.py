"""People found by e-mail address or phone number through the blind index (``lookup_digests``):
keyed hashes under the tenant's key, never the values; a rectification replaces a person's
digest, an erasure deletes their rows, a destruction the tenant's (and its key, so none can be
computed again), and a rebuild by replay ends in the same rows."""

from __future__ import annotations

import uuid
from typing import Any

from kernel.commands import load_command
from kernel.crypto.blind_index import BlindIndex
from kernel.uow import EventSourcedStore
from services.accounts import commands, handlers, privacy
from tests.integration.accounts.test_tenant_destruction import destroy, sign_up


def contact(store: EventSourcedStore, tenant_id: str, **fields: Any) -> dict[str, Any]:
    with store.unit_of_work() as uow:
        return handlers.create_contact(uow, tenant_id, {"phone": None, **fields})


def found(store: EventSourcedStore, tenant_id: str, **query: str) -> list[str]:
    """The ids a lookup finds, the query loaded as the service loads it."""
    filters = load_command(commands.FindContactsV1, query)
    with store.unit_of_work() as uow:
        page = handlers.list_contacts(uow, tenant_id, 50, None, filters)
    return [item["id"] for item in page["items"]]


def agents_found(store: EventSourcedStore, tenant_id: str, email: str) -> list[str]:
    with store.unit_of_work() as uow:
        page = handlers.list_agents(uow, tenant_id, 50, None, {"email": email})
    return [item["id"] for item in page["items"]]


def digests(store: EventSourcedStore) -> set[tuple[str, str, bytes]]:
    with store.db.transaction() as cur:
        cur.execute("SELECT subject_id::text, kind, digest FROM lookup_digests")
        return {(s, k, bytes(d)) for s, k, d in cur.fetchall()}


def test_contacts_are_found_by_any_spelling_of_their_email_or_phone(accounts, world):
    tenant = sign_up(accounts, world, "Finders Ltd")["tenant_id"]
    other = sign_up(accounts, world, "Others Ltd")["tenant_id"]
    ada = contact(accounts, tenant, name="Ada", email="Ada@Example.com", phone="+44 20 7946 0958")[
        "id"
    ]
    twin = contact(accounts, tenant, name="Ada's twin", email="ada@example.com")["id"]
    elsewhere = contact(
        accounts, other, name="Ada elsewhere", email="ada@example.com", phone="+442079460958"
    )["id"]
    contact(accounts, tenant, name="Bob", email="bob@example.com", phone="020 7946 0000")

    assert sorted(found(accounts, tenant, email=" ADA@example.COM ")) == sorted([ada, twin])
    assert found(accounts, tenant, phone="+44 (20) 7946-0958") == [ada]
    assert found(accounts, tenant, email="ada@example.com", phone="+442079460958") == [ada]
    assert found(accounts, tenant, phone="20 7946 0958") == []  # the + is part of the number
    assert found(accounts, tenant, email="nobody@example.com") == []
    # Digests, never values; and one tenant's digest of a value is not another's.
    stored = digests(accounts)
    assert all(len(d) == 32 for _, _, d in stored)
    assert {k for s, k, _ in stored if s == elsewhere} == {"contact_email", "contact_phone"}
    assert found(accounts, other, email="ada@example.com") == [elsewhere]
    index = BlindIndex(accounts.cipher.keystore)
    mine = index.digest(tenant, "contact_email", "ada@example.com")
    assert mine != index.digest(other, "contact_email", "ada@example.com")
    assert mine != index.digest(tenant, "agent_email", "ada@example.com")


def test_a_name_prefix_is_text_not_a_pattern(accounts, world):
    tenant = sign_up(accounts, world, "Prefixes Ltd")["tenant_id"]
    ada = contact(accounts, tenant, name="Ada Lovelace", email="ada@example.com")["id"]
    adam = contact(accounts, tenant, name="adam Smith", email="adam@example.com")["id"]
    odd = contact(accounts, tenant, name="100%_sure", email="odd@example.com")["id"]
    assert sorted(found(accounts, tenant, name_prefix="AD")) == sorted([ada, adam])
    assert found(accounts, tenant, name_prefix="ada ") == [ada]
    assert found(accounts, tenant, name_prefix="100%_") == [odd]
    assert found(accounts, tenant, name_prefix="%") == []
    assert found(accounts, tenant, name_prefix="_") == []


def test_a_rectification_replaces_the_digest(accounts, world):
    tenant = sign_up(accounts, world, "Rectifiers Ltd")["tenant_id"]
    made = contact(accounts, tenant, name="Cy", email="cy@old.example", phone="+1 555 0100")
    with accounts.unit_of_work() as uow:
        handlers.rectify_contact(
            uow, tenant, made["id"], made["version"], {"email": "cy@new.example"}
        )
    assert found(accounts, tenant, email="cy@old.example") == []
    assert found(accounts, tenant, email="CY@new.example") == [made["id"]]
    assert found(accounts, tenant, phone="+15550100") == [made["id"]]
    with accounts.unit_of_work() as uow:
        handlers.rectify_subject(uow, tenant, made["id"], {"phone": None})
    assert found(accounts, tenant, phone="+15550100") == []
    kinds = {k for s, k, _ in digests(accounts) if s == made["id"]}
    assert kinds == {"contact_email"}


def test_an_erased_person_is_found_no_more_and_leaves_no_digest_even_after_a_rebuild(
    accounts, world
):
    signed = sign_up(accounts, world, "Erasers Ltd")
    tenant = signed["tenant_id"]
    gone = contact(accounts, tenant, name="Dee", email="dee@example.com", phone="+1 555 0199")
    kept = contact(accounts, tenant, name="Eve", email="eve@example.com")["id"]
    with accounts.unit_of_work() as uow:
        admin = handlers.list_agents(uow, tenant, 50, None)["items"][0]["id"]
    assert agents_found(accounts, tenant, "ADMIN@canary.example") == [admin]
    erase = privacy.handlers_for(accounts.cipher)["erase_subject"]
    for subject in (gone["id"], admin):
        with accounts.unit_of_work("accounts") as uow:
            command = {"request_id": str(uuid.uuid4()), "tenant_id": tenant}
            erase(uow, {**command, "subject_id": subject})

    assert found(accounts, tenant, email="dee@example.com") == []
    assert found(accounts, tenant, phone="+15550199") == []
    assert agents_found(accounts, tenant, "admin@canary.example") == []
    left = {s for s, _, _ in digests(accounts)}
    assert gone["id"] not in left and admin not in left and kept in left

    before = digests(accounts)
    accounts.rebuild("lookups", progress=False)
    assert digests(accounts) == before  # the replay reads their values as erased
    assert found(accounts, tenant, email="eve@example.com") == [kept]


def test_a_destroyed_tenants_digests_are_gone_and_can_never_be_computed_again(accounts, world):
    doomed = sign_up(accounts, world, "Doomed Lookups Ltd")["tenant_id"]
    kept = sign_up(accounts, world, "Kept Lookups Ltd")["tenant_id"]
    contact(accounts, doomed, name="Fay", email="fay@example.com", phone="+1 555 0111")
    survivor = contact(accounts, kept, name="Fay", email="fay@example.com")["id"]
    index = BlindIndex(accounts.cipher.keystore)
    assert index.digest(doomed, "contact_email", "fay@example.com", create=False) is not None

    destroy(accounts, doomed)

    with accounts.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM lookup_digests WHERE tenant_id = %s", (doomed,))
        assert cur.fetchone()[0] == 0
    # The key is gone with the tenant's: no one can hash a guess to match an old backup's rows.
    assert index.digest(doomed, "contact_email", "fay@example.com", create=False) is None
    assert index.digest(doomed, "contact_email", "fay@example.com", create=True) is None
    assert found(accounts, doomed, email="fay@example.com") == []
    for projection in ("lookups", "contacts"):
        accounts.rebuild(projection, progress=False)
    with accounts.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM lookup_digests WHERE tenant_id = %s", (doomed,))
        assert cur.fetchone()[0] == 0
    assert found(accounts, kept, email="fay@example.com") == [survivor]


def test_the_index_a_migration_added_is_built_once_from_the_events(accounts, world):
    tenant = sign_up(accounts, world, "Upgraded Ltd")["tenant_id"]
    made = contact(accounts, tenant, name="Gus", email="gus@example.com")["id"]
    # As a database from before the index: the table empty, never built.
    with accounts.db.transaction() as cur:
        cur.execute("DELETE FROM lookup_digests")
        cur.execute("DELETE FROM projection_state WHERE name = 'lookups'")
    assert found(accounts, tenant, email="gus@example.com") == []
    assert accounts.rebuild("lookups", progress=False, only_if_new=True)
    assert found(accounts, tenant, email="gus@example.com") == [made]
    # Built: a process starting later leaves it alone.
    with accounts.db.transaction() as cur:
        cur.execute("DELETE FROM lookup_digests")
    assert accounts.rebuild("lookups", progress=False, only_if_new=True) is None
    assert found(accounts, tenant, email="gus@example.com") == []
