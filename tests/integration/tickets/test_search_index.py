"""The search index on a real database: written with the events, rebuilt by replay to the same
rows, searched by keyed hashes only, and emptied by every privacy handler that ends the words it
was made of (erasure, a purge of closed tickets, a tenant's destruction)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import pytest

from kernel import eventstore
from kernel.commands import load_command
from kernel.crypto.blind_index import BlindIndex
from kernel.envelope import new_envelope
from kernel.errors import Conflict, ValidationFailed
from kernel.projections import rebuild
from kernel.uow import EventSourcedStore
from services.tickets import privacy, search, search_index
from services.tickets.commands import SearchTicketsV1
from services.tickets.domain import Ticket
from services.tickets.terms import index_terms
from tests.integration.tickets.test_tickets_store import (
    busy_world,
    create,
    enrol,
    message,
    scalar,
    update,
)


def searched(
    store: EventSourcedStore,
    tenant: str,
    q: str,
    role: str = "agent",
    limit: int = 50,
    after: list | None = None,
    **filters: str,
) -> dict[str, Any]:
    """The search as the service runs it, for a caller of ``role`` in ``tenant``."""
    query = load_command(SearchTicketsV1, {"q": q, **filters})
    actor = {"tenant_id": tenant, "agent_id": str(uuid.uuid4()), "role": role}
    with store.unit_of_work() as uow:
        return search.search_tickets(uow, actor, query, limit, after)


def found(store: EventSourcedStore, tenant: str, q: str, **kwargs: Any) -> list[str]:
    return [item["id"] for item in searched(store, tenant, q, **kwargs)["items"]]


def index_rows(store: EventSourcedStore) -> list[tuple]:
    """Every row of the index, in a stable order."""
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT ticket_id, tenant_id, requester_id, author_id, part, message_id, internal,"
            " digest FROM search_terms"
            " ORDER BY ticket_id, part, message_id NULLS FIRST, digest"
        )
        return [(*row[:-1], bytes(row[-1])) for row in cur.fetchall()]


def rows_of(store: EventSourcedStore, column: str, value: str) -> int:
    return scalar(store, f"SELECT count(*) FROM search_terms WHERE {column} = %s", (value,))


def erase(store: EventSourcedStore, tenant: str, subject: str) -> dict[str, Any]:
    handler = privacy.handlers_for(store.cipher)["erase_subject"]
    with store.unit_of_work("tickets") as uow:
        return handler(uow, {"tenant_id": tenant, "subject_id": subject})


# --- what is found, and by whom ---------------------------------------------------------------


def test_words_of_subjects_bodies_and_messages_are_found_by_their_first_letters(store):
    made = busy_world(store)
    tenant = made["tenant"]
    first, second, third, fourth = (t["id"] for t in made["tickets"])
    assert found(store, tenant, "log") == [first]  # "log in", the subject
    assert found(store, tenant, "password") == [first]  # the body
    assert found(store, tenant, "SPAM") == [first]  # a public message, any case
    assert found(store, tenant, "invoic") == [second]  # a prefix of "invoice"
    assert found(store, tenant, "sen") == [second]  # "sent", a colleague's reply
    assert found(store, tenant, "export alice") == [third, first]  # both words, then one
    assert found(store, tenant, "zebra quokka") == []
    # Words of another tenant's tickets are never found, whoever asks.
    assert found(store, tenant, "carol crashes") == []
    assert found(store, made["other_tenant"], "carol crashes") == [fourth]
    assert found(store, made["other_tenant"], "alice") == []


def test_internal_notes_count_only_for_those_who_may_read_them(store):
    made = busy_world(store)
    tenant, first = made["tenant"], made["tickets"][0]["id"]
    # "bounce" is only in an internal note of the first ticket.
    for role in search.NOTE_READERS:
        assert found(store, tenant, "bounce", role=role) == [first]
    assert found(store, tenant, "bounce", role="auditor") == []
    assert found(store, tenant, "bounce", role="requester") == []
    # Public words of the same ticket are found by anyone who may search.
    assert found(store, tenant, "spam", role="auditor") == [first]
    # The same word in public text is found by anyone; the note still only by staff.
    second = made["tickets"][1]["id"]
    message(store, tenant, made["agent"], second, "Agent: no bounce here")
    assert found(store, tenant, "bounce", role="auditor") == [second]
    assert found(store, tenant, "bounce", role="agent") == [second, first]


def test_results_rank_by_words_matched_then_newest_and_page_on_that_order(store):
    tenant = str(uuid.uuid4())
    agent, alice = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    subjects = [
        "printer jam",
        "printer toner",
        "printer jam toner",
        "scanner jam",
        "printer",
        "toner",
        "printer jam toner again",
    ]
    made = [
        create(store, tenant, agent, alice, subject=s, body="see subject")["id"] for s in subjects
    ]
    whole = searched(store, tenant, "printer jam toner")
    ranked = [(item["id"], item["matched_terms"]) for item in whole["items"]]
    by_index = {ticket: n for n, ticket in enumerate(made)}
    # Three words, two, one; within each, the newest first.
    assert [(by_index[t], m) for t, m in ranked] == [
        (6, 3),
        (2, 3),
        (1, 2),
        (0, 2),
        (5, 1),
        (4, 1),
        (3, 1),
    ]
    assert whole["next"] is None and whole["terms_left_out"] == 0
    # Page by page, each page after the last one's position: the same order, once each.
    paged, after = [], None
    while True:
        page = searched(store, tenant, "printer jam toner", limit=2, after=after)
        paged += [item["id"] for item in page["items"]]
        assert len(page["items"]) <= 2
        after = page["next"]
        if after is None:
            break
    assert paged == [t for t, _ in ranked]
    # Narrowed to a status.
    update(store, tenant, agent, {"id": made[4]}, status="open")
    assert found(store, tenant, "printer", status="open") == [made[4]]


def test_a_word_too_common_is_left_out_and_a_query_of_only_such_words_refused(store, monkeypatch):
    tenant = str(uuid.uuid4())
    agent, alice = enrol(store, tenant, "agent"), enrol(store, tenant, "contact")
    for n in range(4):
        create(store, tenant, agent, alice, subject=f"frequent word {n}", body="frequent")
    rare = create(store, tenant, agent, alice, subject="rare", body="frequent")["id"]
    monkeypatch.setattr(search, "MAX_ROWS_PER_WORD", 3)
    answer = searched(store, tenant, "frequent rare")
    assert [item["id"] for item in answer["items"]] == [rare]
    assert answer["terms_left_out"] == 1
    with pytest.raises(ValidationFailed) as refused:
        searched(store, tenant, "frequent")
    assert list(refused.value.errors) == ["q"]
    assert "frequent" not in str(refused.value.errors)


# --- what the index holds ---------------------------------------------------------------------


def test_the_index_holds_keyed_hashes_of_the_tenants_key_and_no_word(store):
    made = busy_world(store)
    tenant, other = made["tenant"], made["other_tenant"]
    rows = index_rows(store)
    assert rows and all(len(row[-1]) == search_index.DIGEST_BYTES for row in rows)
    held = {row[-1] for row in rows}
    blind = BlindIndex(store.cipher.keystore)

    def hashed(tenant_id: str, *terms: str) -> list[bytes]:
        found = search_index.digests(blind, tenant_id, terms, create=False)
        assert found is not None
        return found

    # "password" (in the tenant's first ticket) is there as its keyed hash, not as itself, nor
    # as an unkeyed hash, nor under the other tenant's key.
    assert hashed(tenant, "password")[0] in held
    assert hashed(other, "password")[0] not in held
    assert hashed(tenant, "password") != hashed(other, "password")
    assert hashlib.sha256(b"password").digest()[:16] not in held
    dump = b"".join(row[-1] for row in rows)
    assert b"password" not in dump and b"alice" not in dump.lower()
    # Every part of the tenant's tickets is there; every term of its words, once per part.
    first = made["tickets"][0]["id"]
    subject_terms = {row[-1] for row in rows if str(row[0]) == first and row[4] == "subject"}
    assert subject_terms == set(hashed(tenant, *index_terms("Alice cannot log in")))
    internal = {(str(row[5]), row[6]) for row in rows if str(row[0]) == first and row[5]}
    assert sorted(flag for _, flag in internal) == [False, False, True]


@pytest.mark.parametrize("batch_size", [1, 3, 2000])
def test_a_rebuild_by_replay_gives_the_rows_the_live_index_wrote(store, batch_size):
    made = busy_world(store)
    tenant = made["tenant"]
    update(store, tenant, made["agent"], made["tickets"][1], subject="Bob's invoices, again")
    live = index_rows(store)
    projection = store.projection(search_index.NAME)
    applied = rebuild(store.db, projection, store.prepare, progress=False, batch_size=batch_size)
    assert applied > 0
    assert index_rows(store) == live


def test_a_new_subject_replaces_the_subjects_words_and_keeps_the_others(store):
    made = busy_world(store)
    tenant, agent, second = made["tenant"], made["agent"], made["tickets"][1]
    assert found(store, tenant, "invoice") == [second["id"]]
    update(store, tenant, agent, second, subject="Duplicate billing statement")
    assert found(store, tenant, "duplicate statement") == [second["id"]]
    # "invoice" is still in the body.
    assert found(store, tenant, "invoice") == [second["id"]]
    update(store, tenant, agent, second, subject="Paperwork")
    assert found(store, tenant, "duplicate") == []
    assert second["subject"] == "Paperwork"
    store.rebuild(search_index.NAME, progress=False)
    assert found(store, tenant, "duplicate") == []
    assert found(store, tenant, "paperwork") == [second["id"]]


def test_the_index_is_built_on_first_start_only(store):
    made = busy_world(store)
    live = index_rows(store)
    with store.db.transaction() as cur:
        cur.execute("TRUNCATE search_terms")
        cur.execute("DELETE FROM projection_state WHERE name = %s", (search_index.NAME,))
    handled = scalar(
        store,
        "SELECT count(*) FROM events WHERE type = ANY(%s)",
        (sorted(store.projection(search_index.NAME).event_types),),
    )
    # As the service does on start (``NewReadModels``).
    assert store.rebuild(search_index.NAME, progress=False, only_if_new=True) == handled > 0
    assert index_rows(store) == live
    # Built: a later start leaves it be.
    create(store, made["tenant"], made["agent"], made["alice"], subject="Later")
    assert store.rebuild(search_index.NAME, progress=False, only_if_new=True) is None
    assert found(store, made["tenant"], "later")


def test_the_rebuild_command_builds_the_index_again_from_the_events(store, world, capsys):
    busy_world(store)
    live = index_rows(store)
    with store.db.transaction() as cur:
        cur.execute("TRUNCATE search_terms")
    assert search_index.main(["rebuild"], settings=world) == 0
    assert index_rows(store) == live
    assert "search index rebuilt from" in capsys.readouterr().out


# --- what ends it -----------------------------------------------------------------------------


def test_erasing_a_requester_deletes_their_tickets_rows_and_a_rebuild_brings_none_back(store):
    made = busy_world(store)
    tenant, alice, bob = made["tenant"], made["alice"], made["bob"]
    first, second, third, _ = (t["id"] for t in made["tickets"])
    assert rows_of(store, "requester_id", alice) > 0
    assert set(found(store, tenant, "alice")) == {first, third}

    answer = erase(store, tenant, alice)
    assert answer["status"] == "done" and "search index rows deleted" in answer["detail"]
    assert rows_of(store, "requester_id", alice) == 0
    assert found(store, tenant, "alice") == [] and found(store, tenant, "export") == []
    assert found(store, tenant, "invoice") == [second]  # Bob's ticket is untouched
    assert rows_of(store, "requester_id", bob) > 0

    store.rebuild(search_index.NAME, progress=False)
    assert rows_of(store, "requester_id", alice) == 0
    assert found(store, tenant, "alice") == []
    assert found(store, tenant, "invoice") == [second]
    # Their tickets take no new subject: the key is gone, nothing is indexed.
    with pytest.raises(Conflict):
        update(store, tenant, made["agent"], made["tickets"][2], subject="Alice anew")
    assert rows_of(store, "requester_id", alice) == 0


def test_rows_a_write_committed_after_its_requesters_erasure_are_swept(store):
    made = busy_world(store)
    tenant, alice, bob = made["tenant"], made["alice"], made["bob"]
    with store.db.transaction() as cur:
        cur.execute("SELECT * FROM search_terms WHERE requester_id = %s", (alice,))
        columns = [c.name for c in cur.description]
        written = cur.fetchall()
    erase(store, tenant, alice)
    # A write that read the ticket's key before the shred commits its rows after the deletes.
    with store.db.transaction() as cur:
        cur.execute(
            f"INSERT INTO search_terms ({', '.join(columns)}) VALUES %s"  # noqa: S608
            % ", ".join(["%s"] * len(written)),
            written,
        )
    assert rows_of(store, "requester_id", alice) == len(written) > 0
    bobs = rows_of(store, "requester_id", bob)
    with store.unit_of_work("tickets") as uow:
        assert privacy.sweep_erased_leftovers(uow.cur) == len(written)
    assert rows_of(store, "requester_id", alice) == 0
    assert rows_of(store, "requester_id", bob) == bobs


def test_a_message_under_its_writers_key_goes_with_its_writer_too(store):
    """Messages an older release wrote (``message_added`` v1) are under their writer's key."""
    made = busy_world(store)
    tenant, agent, second = made["tenant"], made["agent"], made["tickets"][1]["id"]
    stream = Ticket.stream_id_for(second)
    with store.db.transaction() as cur:
        version = eventstore.read_stream(cur, stream)[-1].stream_version
    payload = store.cipher.encrypt_fields(
        {
            "ticket_id": second,
            "tenant_id": tenant,
            "message_id": str(uuid.uuid4()),
            "author_id": agent,
            "author_kind": "agent",
            "body": "Legacy reply about quarterly reconciliation",
            "internal": False,
            "redactions": 0,
        },
        ("body",),
        tenant,
        agent,
    )
    old = new_envelope(
        type="message_added",
        schema_version=1,
        source="tickets",
        stream_id=stream,
        stream_version=version + 1,
        tenant_id=uuid.UUID(tenant),
        actor_id=agent,
        payload=payload,
    )
    with store.db.transaction() as cur:
        eventstore.append(cur, stream, version, [old])
    store.rebuild(search_index.NAME, progress=False)
    assert found(store, tenant, "quarterly") == [second]
    assert rows_of(store, "author_id", agent) > 0

    erase(store, tenant, agent)
    assert rows_of(store, "author_id", agent) == 0
    assert found(store, tenant, "quarterly") == []
    assert found(store, tenant, "invoice") == [second]  # the rest of the ticket stays
    store.rebuild(search_index.NAME, progress=False)
    assert found(store, tenant, "quarterly") == []


def test_purging_closed_tickets_deletes_their_rows(store):
    made = busy_world(store)
    tenant, first = made["tenant"], made["tickets"][0]["id"]  # the first ticket is closed
    assert found(store, tenant, "password") == [first]
    purge = privacy.handlers_for(store.cipher)["purge_category"]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    with store.unit_of_work("tickets") as uow:
        purge(uow, {"tenant_id": tenant, "category": "closed_tickets", "before": tomorrow})
    assert rows_of(store, "ticket_id", first) == 0
    assert found(store, tenant, "password") == []
    assert found(store, tenant, "alice") == [made["tickets"][2]["id"]]  # her open ticket
    store.rebuild(search_index.NAME, progress=False)
    assert rows_of(store, "ticket_id", first) == 0


def test_destroying_a_tenant_deletes_its_rows_and_leaves_no_key_to_hash_with(store):
    made = busy_world(store)
    tenant, other = made["tenant"], made["other_tenant"]
    blind = BlindIndex(store.cipher.keystore)
    assert search_index.digests(blind, tenant, ["alice"], create=False)
    assert rows_of(store, "tenant_id", tenant) > 0
    destroy = privacy.handlers_for(store.cipher)["destroy_tenant"]
    with store.unit_of_work("tickets") as uow:
        destroy(uow, {"tenant_id": tenant, "request_id": str(uuid.uuid4())})
    assert rows_of(store, "tenant_id", tenant) == 0
    assert search_index.digests(blind, tenant, ["alice"], create=False) is None
    assert search_index.digests(blind, tenant, ["alice"], create=True) is None  # none made anew
    assert found(store, tenant, "alice") == []
    assert found(store, other, "carol") == [made["tickets"][3]["id"]]
    store.rebuild(search_index.NAME, progress=False)
    assert rows_of(store, "tenant_id", tenant) == 0
    assert found(store, other, "carol") == [made["tickets"][3]["id"]]
