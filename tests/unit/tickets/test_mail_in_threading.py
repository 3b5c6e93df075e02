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


def test_only_our_own_message_ids_are_references():
    ticket, reply = str(uuid.uuid4()), str(uuid.uuid4())
    refs = (
        f"<reply.{reply}@{DOMAIN}>",
        f"<ticket.{ticket}@DESK.example>",
        f"<ticket.{ticket}@evil.example>",
        f"<ticket.not-an-id@{DOMAIN}>",
        f"<other.{ticket}@{DOMAIN}>",
        "<CAF=abc@mail.example>",
    )
    assert referenced(refs, DOMAIN) == [("reply", reply), ("ticket", ticket)]


def candidate(tenant: str = TENANT, requester: str = JANE, status: str = "open") -> Candidate:
    return Candidate(str(uuid.uuid4()), tenant, requester, status)


def test_a_mail_continues_only_its_tenants_ticket_of_its_requester_not_closed():
    mine = candidate()
    assert choose_thread([mine], TENANT, JANE) == mine.ticket_id
    # A forged reference: another tenant's ticket, another requester's, a closed one.
    assert choose_thread([candidate(tenant=OTHER)], TENANT, JANE) is None
    assert choose_thread([candidate(requester=MALLORY)], TENANT, JANE) is None
    assert choose_thread([candidate(status="closed")], TENANT, JANE) is None
    # The first that qualifies, in the order the mail refers to them.
    newer, older = candidate(status="solved"), candidate()
    assert choose_thread([candidate(tenant=OTHER), newer, older], TENANT, JANE) == newer.ticket_id
    assert choose_thread([], TENANT, JANE) is None
