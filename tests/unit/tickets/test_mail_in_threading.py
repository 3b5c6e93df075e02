"""services.tickets.mail_in's decisions: which address names a tenant, which of our
Message-IDs a mail refers to, and which ticket (if any) it may continue."""

from __future__ import annotations

import uuid

import pytest

from kernel.errors import Gone, NotFound
from services.tickets.mail_in import (
    Candidate,
    check_tenant,
    choose_thread,
    referenced,
    support_address,
    tenant_of,
)

TENANT, OTHER = str(uuid.uuid4()), str(uuid.uuid4())
JANE, MALLORY = str(uuid.uuid4()), str(uuid.uuid4())
DOMAIN = "desk.example"


def test_a_support_address_is_the_tenant_id_and_nothing_else_names_it():
    assert support_address(TENANT, "in.example") == f"{TENANT}@in.example"
    assert tenant_of(TENANT) == TENANT
    assert tenant_of(TENANT.upper()) == TENANT
    for local in ("support", TENANT.replace("-", ""), "{" + TENANT + "}", f"urn:uuid:{TENANT}"):
        with pytest.raises(NotFound):
            tenant_of(local)


def test_only_an_active_tenant_takes_mail():
    check_tenant({"status": "active"})
    with pytest.raises(Gone):
        check_tenant({"status": "cancelled"})
    with pytest.raises(NotFound):
        check_tenant({"status": "destroyed"})


def test_only_our_own_message_ids_with_a_token_are_references():
    ticket, reply = str(uuid.uuid4()), str(uuid.uuid4())
    refs = (
        f"<reply.{reply}.ab12@{DOMAIN}>",
        f"<ticket.{ticket}.CD34@DESK.example>",
        f"<ticket.{ticket}@{DOMAIN}>",  # bare: built from the id alone, proves nothing
        f"<ticket.{ticket}.ab12@evil.example>",
        f"<ticket.not-an-id.ab12@{DOMAIN}>",
        f"<other.{ticket}.ab12@{DOMAIN}>",
        "<CAF=abc@mail.example>",
    )
    assert referenced(refs, DOMAIN) == [("reply", reply, "ab12"), ("ticket", ticket, "cd34")]


def token_of(ticket_id: str, requester_id: str) -> str:
    """A stand-in for the keyed hash: what matters here is that it binds both ids."""
    return f"{ticket_id}/{requester_id}"


def candidate(
    tenant: str = TENANT, requester: str = JANE, status: str = "open", token: str | None = None
) -> Candidate:
    ticket_id = str(uuid.uuid4())
    return Candidate(
        ticket_id, tenant, requester, status, token_of(ticket_id, JANE) if token is None else token
    )


def test_a_mail_continues_only_its_tenants_ticket_of_its_requester_not_closed():
    mine = candidate()
    assert choose_thread([mine], TENANT, JANE, token_of) == mine.ticket_id
    # A forged reference: another tenant's ticket, another requester's, a closed one.
    assert choose_thread([candidate(tenant=OTHER)], TENANT, JANE, token_of) is None
    assert choose_thread([candidate(requester=MALLORY)], TENANT, JANE, token_of) is None
    assert choose_thread([candidate(status="closed")], TENANT, JANE, token_of) is None
    # The first that qualifies, in the order the mail refers to them.
    newer, older = candidate(status="solved"), candidate()
    chosen = choose_thread([candidate(tenant=OTHER), newer, older], TENANT, JANE, token_of)
    assert chosen == newer.ticket_id
    assert choose_thread([], TENANT, JANE, token_of) is None


def test_a_reference_threads_only_with_the_token_of_its_ticket_and_requester():
    # The sender's From matches the requester, but the reference's token does not.
    assert choose_thread([candidate(token="")], TENANT, JANE, token_of) is None
    assert choose_thread([candidate(token="0" * 32)], TENANT, JANE, token_of) is None
    # Another ticket's token (the requester's own, from another thread) names that one only.
    elsewhere = candidate()
    moved = candidate(token=elsewhere.token)
    assert choose_thread([moved], TENANT, JANE, token_of) is None
