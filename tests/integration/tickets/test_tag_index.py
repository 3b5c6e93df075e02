"""Tickets found by tag, though tags are stored under each ticket's key: the blind index
(``ticket_tag_digests``) holds keyed hashes under the tenant's key, never a tag; the requester's
erasure, a closed ticket's purge and the tenant's destruction take a ticket's rows with it, and
a rebuild by replay ends in the same rows."""

from __future__ import annotations

import datetime as dt
import functools
import uuid

from kernel.commands import load_command
from kernel.crypto.blind_index import BlindIndex
from kernel.uow import EventSourcedStore
from services.tickets import commands, handlers, sealed
from tests.integration.tickets.test_ticket_tags import (
    answer,
    legacy_ticket,
    plaintext_places,
)
from tests.integration.tickets.test_tickets_store import create, enrol, update


def tagged(store: EventSourcedStore, tenant: str, tag: str, **query: str) -> set[str]:
    filters = load_command(commands.FindTicketsV1, {"tag": tag, **query})
    with store.unit_of_work() as uow:
        page = handlers.list_tickets(uow, tenant, filters, 50, None)
    return {item["id"] for item in page["items"]}


def rows(store: EventSourcedStore) -> set[tuple[str, bytes]]:
    with store.db.transaction() as cur:
        cur.execute("SELECT ticket_id::text, digest FROM ticket_tag_digests")
        return {(t, bytes(d)) for t, d in cur.fetchall()}


def indexed(store: EventSourcedStore) -> set[str]:
    return {ticket for ticket, _ in rows(store)}


def test_a_tag_finds_its_tickets_whatever_its_case_and_only_in_the_tenant(store, world):
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    agent, alice = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    stranger, theirs = enrol(store, other, "agent"), enrol(store, other, "contact")
    vip = create(store, tenant, agent, alice, tags=["VIP-canary", "refund"])
    also = create(store, tenant, agent, alice, tags=["vip-canary"])
    plain = create(store, tenant, agent, alice, tags=[])
    create(store, other, stranger, theirs, tags=["vip-canary"])

    assert tagged(store, tenant, "vip-CANARY") == {vip["id"], also["id"]}
    assert tagged(store, tenant, "refund") == {vip["id"]}
    assert tagged(store, tenant, "nothing") == set()
    assert tagged(store, tenant, "vip-canary", priority="normal") == {vip["id"], also["id"]}
    assert tagged(store, tenant, "vip-canary", priority="urgent") == set()
    # A change of tags replaces the ticket's rows.
    update(store, tenant, agent, also, tags=["calm"])
    update(store, tenant, agent, plain, tags=["vip-canary"])
    assert tagged(store, tenant, "vip-canary") == {vip["id"], plain["id"]}
    assert tagged(store, tenant, "calm") == {also["id"]}
    # Keyed hashes under the tenant's key, never the tag.
    assert plaintext_places(world.database_dsn("tickets"), "canary") == []
    index = BlindIndex(store.cipher.keystore)
    mine = index.digest(tenant, "ticket_tag", "vip-canary")
    assert (vip["id"], mine) in rows(store)
    assert mine != index.digest(other, "ticket_tag", "vip-canary")

    before = rows(store)
    store.rebuild("ticket_tags", progress=False)
    assert rows(store) == before


def test_a_ticket_leaves_the_index_with_its_requester_its_purge_or_its_tenant(store):
    tenant, doomed = str(uuid.uuid4()), str(uuid.uuid4())
    agent = enrol(store, tenant, "agent")
    alice, bob = enrol(store, tenant, "contact"), enrol(store, tenant, "contact")
    hers = create(store, tenant, agent, alice, tags=["vip"])
    his = create(store, tenant, agent, bob, tags=["vip"])
    kept = create(store, tenant, agent, bob, tags=["vip"])
    far = create(
        store, doomed, enrol(store, doomed, "agent"), enrol(store, doomed, "contact"), tags=["vip"]
    )

    answer(store, "erase_subject", tenant_id=tenant, subject_id=alice)
    assert hers["id"] not in indexed(store)
    assert tagged(store, tenant, "vip") == {his["id"], kept["id"]}

    for status in ("open", "solved", "closed"):
        his = update(store, tenant, agent, his, status=status)
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    answer(store, "purge_category", tenant_id=tenant, category="closed_tickets", before=tomorrow)
    assert his["id"] not in indexed(store)
    assert tagged(store, tenant, "vip") == {kept["id"]}

    assert far["id"] in indexed(store)
    answer(store, "destroy_tenant", tenant_id=doomed)
    assert far["id"] not in indexed(store)
    # No digest of the destroyed tenant can be computed again: its key went with it.
    index = BlindIndex(store.cipher.keystore)
    assert index.digest(doomed, "ticket_tag", "vip") is None
    assert tagged(store, doomed, "vip") == set()

    # A replay reads the erased and purged tickets' tags as erased: never indexed again.
    store.rebuild("ticket_tags", progress=False)
    assert indexed(store) == {kept["id"]}
    assert tagged(store, tenant, "vip") == {kept["id"]}


def test_tags_an_older_release_wrote_in_plaintext_are_indexed_once_sealed(store):
    tenant = str(uuid.uuid4())
    alice = enrol(store, tenant, "contact")
    old = legacy_ticket(store, tenant, alice, ["old-tag"])
    store.rebuild("tickets", progress=False)
    store.rebuild("ticket_tags", progress=False)
    assert tagged(store, tenant, "old-tag") == set()  # plaintext is never hashed into the index
    sealed.seal_all(functools.partial(store.unit_of_work, "tickets"))
    assert tagged(store, tenant, "old-tag") == {old}


def test_the_index_a_migration_added_is_built_once_from_the_events(store):
    tenant = str(uuid.uuid4())
    agent, alice = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    ticket = create(store, tenant, agent, alice, tags=["upgraded"])
    with store.db.transaction() as cur:
        cur.execute("DELETE FROM ticket_tag_digests")
        cur.execute("DELETE FROM projection_state WHERE name = 'ticket_tags'")
    assert store.rebuild("ticket_tags", progress=False, only_if_new=True)
    assert tagged(store, tenant, "upgraded") == {ticket["id"]}
    assert store.rebuild("ticket_tags", progress=False, only_if_new=True) is None


def test_the_other_filters_narrow_the_list_together(store):
    tenant = str(uuid.uuid4())
    agent, alice, bob = (
        enrol(store, tenant, "agent"),
        enrol(store, tenant, "contact"),
        enrol(store, tenant, "contact"),
    )
    first = create(store, tenant, agent, alice, priority="high")
    second = create(store, tenant, agent, bob, priority="low")
    third = create(store, tenant, agent, alice, priority="high")
    third = update(store, tenant, agent, third, assignee_id=agent)
    first = update(store, tenant, agent, first, status="open")  # changed last

    def listed(**query: str) -> list[str]:
        filters = load_command(commands.FindTicketsV1, query)
        with store.unit_of_work() as uow:
            page = handlers.list_tickets(uow, tenant, filters, 50, None)
        return [item["id"] for item in page["items"]]

    ids = [first["id"], second["id"], third["id"]]
    assert listed() == ids
    assert listed(priority="high") == [first["id"], third["id"]]
    assert listed(priority="high", requester_id=alice, status="new") == [third["id"]]
    assert listed(assignee_id=agent) == [third["id"]]
    assert listed(created_after=second["created_at"]) == ids[1:]
    assert listed(created_before=second["created_at"]) == ids[:1]
    assert listed(created_after=second["created_at"], created_before=third["created_at"]) == [
        second["id"]
    ]
    assert listed(updated_after=first["updated_at"]) == [first["id"]]
    assert listed(updated_before=first["updated_at"]) == ids[1:]
    # updated_since: in the order they changed, the latest change last.
    assert listed(updated_since=second["updated_at"]) == [second["id"], third["id"], first["id"]]
