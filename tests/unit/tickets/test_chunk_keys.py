"""The object store's keys: ids only, and prefixes that never take in another id's objects."""

from __future__ import annotations

from services.tickets.chunk_store import ChunkRef, prefix_of

TENANT = "6f1c1e0a-0000-4000-8000-000000000001"
TICKET = "6f1c1e0a-0000-4000-8000-000000000002"
FILE = "6f1c1e0a-0000-4000-8000-000000000003"


def test_a_chunk_key_is_tenant_ticket_attachment_and_position():
    assert ChunkRef(TENANT, TICKET, FILE, 12).key == f"{TENANT}/{TICKET}/{FILE}/12"


def test_each_prefix_ends_in_a_slash_so_it_is_one_ids_alone():
    assert prefix_of(TENANT) == f"{TENANT}/"
    assert prefix_of(TENANT, TICKET) == f"{TENANT}/{TICKET}/"
    assert prefix_of(TENANT, TICKET, FILE) == f"{TENANT}/{TICKET}/{FILE}/"
    # A file whose id extends another's is not under the other's prefix.
    assert not ChunkRef(TENANT, TICKET, FILE, 10).key.startswith(
        prefix_of(TENANT, TICKET, FILE[:-1])
    )
