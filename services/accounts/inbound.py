"""Who wrote an inbound mail (tickets' ``mail_in`` asks): the tenant's contact with that
address, or a new contact made for it. Accounts answers because it owns contacts and their
addresses; tickets keeps neither.

The address is found through the blind index (``lookups``), never by comparing plaintext. A
restricted contact is refused (``Conflict``: their data takes no new processing); an erased
contact's digests are gone, so one who writes again becomes a new contact. Two mails from a new
address arriving at once take turns on an advisory lock, so they make one contact, not two.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from kernel.commands import load_command
from kernel.errors import Conflict, Gone, NotFound
from kernel.uow import UnitOfWork
from services.accounts import commands, handlers, lookups
from services.accounts.domain import Tenant


def inbound_contact(uow: UnitOfWork, tenant_id: str, address: str, name: str) -> dict[str, Any]:
    """``{"contact_id", "created"}`` for mail from ``address`` to ``tenant_id``'s support
    address; ``NotFound`` (no such tenant, or destroyed), ``Gone`` (cancelled), ``Conflict``
    (the contact's data is restricted), ``ValidationFailed`` (not an address a contact has)."""
    tenant = handlers.load(uow, Tenant, tenant_id)
    if tenant is None or tenant.status == "destroyed":
        raise NotFound("no such tenant")
    if tenant.status != "active":
        raise Gone("the tenant's account is cancelled")
    normalised = lookups.normalise_email(address)
    uow.cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{tenant_id}\n{normalised}",)
    )
    found = _contact_with(uow, tenant_id, normalised)
    if found is not None:
        uow.cur.execute("SELECT 1 FROM restrictions WHERE subject_id = %s", (found,))
        if uow.cur.fetchone() is not None:
            raise Conflict("the sender's data is restricted at this helpdesk: no new processing")
        return {"contact_id": found, "created": False}
    command = load_command(
        commands.CreateContactV1,
        {"name": name.strip() or normalised.split("@")[0], "email": normalised},
    )
    created = handlers.create_contact(uow, tenant_id, command)
    return {"contact_id": created["id"], "created": True}


def _contact_with(uow: UnitOfWork, tenant_id: str, address: str) -> str | None:
    digest = lookups.lookup_digest(uow, tenant_id, lookups.CONTACT_EMAIL, address)
    if digest is None:
        return None
    uow.cur.execute(
        "SELECT id FROM contacts WHERE tenant_id = %s" + lookups.MATCHING + " ORDER BY created_at"
        " LIMIT 1",
        (tenant_id, tenant_id, lookups.CONTACT_EMAIL, psycopg2.Binary(digest)),
    )
    row = uow.cur.fetchone()
    return None if row is None else str(row[0])
