"""Billing's answers to privacy commands: erase what it may, retain what the law holds.

Invoices and payment records are kept for the legal period: an erasure of a subject who is the
billing contact on an invoice answers ``retained`` with the legal basis and the day the hold
ends, and restricts that data (used for the legal obligation only); everything else billing holds
of the subject is erased. When the hold ends, the retention schedule erases the rest. A destroyed
tenant's invoices are held the same way; the rest of the tenant goes at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.privacy import Handler
from kernel.uow import UnitOfWork
from services.billing.catalogue import Catalogue
from services.billing.domain import BillingAccount


def handlers_for(cipher: FieldCipher | None, catalogue: Catalogue) -> dict[str, Handler]:
    """Billing's answers; ``catalogue`` names the legal hold (its basis and length)."""
    assert cipher is not None, "privacy handlers need the service's keystore"
    keystore = cipher.keystore

    def erase_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        subject_id = str(command["subject_id"])
        uow.cur.execute(
            "SELECT max(hold_until) FROM invoices WHERE billing_contact_id = %s", (subject_id,)
        )
        hold_until: dt.date | None = uow.cur.fetchone()[0]
        # Not held: the seat record is the only other trace of an agent here.
        uow.cur.execute("DELETE FROM billing_agents WHERE agent_id = %s", (subject_id,))
        if hold_until is None:
            return {"status": "done", "detail": "nothing of this subject is held by billing"}
        return _held(uow, catalogue, subject_id, hold_until)

    def destroy_tenant(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        """Everything of a destroyed tenant goes, but for the invoices the law holds: those
        stay, restricted, until their hold ends (then ``expire_holds`` erases them).

        The destruction is an event on the account's stream (the read models apply it, so a
        rebuild ends here too). The tenant's own key goes now (the account's address, its
        processor tokens); the tenant key itself, which also wraps the held invoices' keys,
        goes with the last hold, or now when nothing is held."""
        tenant_id = str(command["tenant_id"])
        events = uow.load(BillingAccount.stream_id_for(tenant_id))
        if events:
            account = BillingAccount.from_history(tenant_id, events)
            if account.destroy(str(command["request_id"])):
                uow.save(account, account.tenant_id, account.region)
        uow.cur.execute("DELETE FROM billing_agents WHERE tenant_id = %s", (tenant_id,))
        uow.cur.execute("SELECT max(hold_until) FROM invoices WHERE tenant_id = %s", (tenant_id,))
        hold_until: dt.date | None = uow.cur.fetchone()[0]
        if hold_until is None:
            keystore.shred_tenant(tenant_id)
            return {"status": "done", "detail": "no invoices to hold; the tenant's keys shredded"}
        keystore.shred_subject(tenant_id, tenant_id)
        return _held(uow, catalogue, tenant_id, hold_until)

    return {"erase_subject": erase_subject, "destroy_tenant": destroy_tenant}


def _held(
    uow: UnitOfWork, catalogue: Catalogue, subject_id: str, hold_until: dt.date
) -> dict[str, Any]:
    """Restrict what the legal hold keeps of a subject (a person, or a destroyed tenant) until
    the hold ends, and answer ``retained`` with its basis."""
    basis = catalogue.legal_basis
    uow.cur.execute(
        "INSERT INTO restrictions (subject_id, basis, until) VALUES (%s, %s, %s)"
        " ON CONFLICT (subject_id) DO UPDATE SET basis = EXCLUDED.basis, until = EXCLUDED.until",
        (subject_id, basis, hold_until),
    )
    return {"status": "retained", "basis": basis, "until": hold_until.isoformat()}


def is_restricted(uow: UnitOfWork, subject_id: str) -> bool:
    uow.cur.execute("SELECT 1 FROM restrictions WHERE subject_id = %s", (subject_id,))
    return uow.cur.fetchone() is not None


def expire_holds(uow: UnitOfWork, keystore: Keystore, today: dt.date) -> int:
    """Erase what the legal hold no longer covers: the invoices whose hold ended (their rows and
    their keys), the keys of billing contacts who are on no held invoice any more, and the keys
    of destroyed tenants nothing is held for any more. Returns the invoices erased."""
    uow.cur.execute(
        "DELETE FROM invoices WHERE hold_until <= %s RETURNING id, tenant_id, billing_contact_id",
        (today,),
    )
    expired = uow.cur.fetchall()
    by_tenant: dict[str, list[str]] = {}
    for invoice_id, tenant_id, _ in expired:
        by_tenant.setdefault(str(tenant_id), []).append(str(invoice_id))
    for tenant_id, invoice_ids in by_tenant.items():
        keystore.shred_subjects(invoice_ids, tenant_id)
    for contact in {str(row[2]) for row in expired}:
        uow.cur.execute("SELECT 1 FROM invoices WHERE billing_contact_id = %s", (contact,))
        if uow.cur.fetchone() is None:
            keystore.shred_subject(contact)
            uow.cur.execute("DELETE FROM restrictions WHERE subject_id = %s", (contact,))
    uow.cur.execute("DELETE FROM restrictions WHERE until <= %s", (today,))
    uow.cur.execute(
        "SELECT a.tenant_id FROM billing_accounts a WHERE a.destroyed_at IS NOT NULL"
        " AND a.tenant_id = ANY(%s::uuid[])"
        " AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.tenant_id = a.tenant_id)",
        (list(by_tenant),),
    )
    for (tenant_id,) in uow.cur.fetchall():
        keystore.shred_tenant(tenant_id)
    return len(expired)


def export(uow: UnitOfWork, tenant_id: str, subject_id: str) -> dict[str, Any]:
    """Invoices that name the person as billing contact (kept under the legal hold)."""
    uow.cur.execute(
        "SELECT number, period_start, period_end, total, currency, billing_contact_name,"
        " billing_contact_email, hold_until FROM invoices"
        " WHERE billing_contact_id = %s AND tenant_id = %s ORDER BY number",
        (subject_id, tenant_id),
    )
    invoices = [
        {
            "number": n,
            "period": [s.isoformat(), e.isoformat()],
            "total": t,
            "currency": c,
            "billed_to": {"name": name, "email": email},
            "kept_until": h.isoformat(),
        }
        for n, s, e, t, c, name, email, h in uow.cur.fetchall()
    ]
    return {"invoices": invoices, "restricted": is_restricted(uow, subject_id)}
