"""Accounts' answers to privacy commands.

Erasure shreds the subject's key (every event about them reads as erased, backups too) and
scrubs the read models (a contact's name, e-mail, phone, and how they consented) and deletes
their lookup digests; an erased agent is also deactivated, so their keys stop at once.
"""

from __future__ import annotations

from typing import Any

from kernel.crypto.fields import ERASED, FieldCipher
from kernel.crypto.primitives import KeyShredded
from kernel.uow import UnitOfWork
from services.accounts import handlers
from services.accounts.domain import Agent, Contact, Tenant


def handlers_for(cipher: FieldCipher | None) -> dict[str, Any]:
    assert cipher is not None, "privacy handlers need the service's keystore"

    def erase_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        tenant, subject = str(command["tenant_id"]), str(command["subject_id"])
        agent = handlers.load(uow, Agent, subject)
        if agent is not None and agent.tenant_id == tenant and agent.active:
            agent.deactivate()
            uow.save(agent, tenant, handlers._tenant_region(uow, tenant))
        shredded = cipher.keystore.shred_subject(subject, tenant)
        # A change like any other for a client keeping a copy in step (``updated_since``): it
        # sees the contact again, erased, and drops what it held of them.
        uow.cur.execute(
            "UPDATE contacts SET name = %s, email = %s, phone = NULL, updated_at = now()"
            " WHERE id = %s AND tenant_id = %s",
            (ERASED, ERASED, subject, tenant),
        )
        # How they consented is their free text too (the record that they did stays).
        uow.cur.execute(
            "UPDATE consents SET source = %s WHERE contact_id = %s AND tenant_id = %s",
            (ERASED, subject, tenant),
        )
        uow.cur.execute(
            "UPDATE agents SET name = %s, email = %s WHERE id = %s AND tenant_id = %s",
            (ERASED, ERASED, subject, tenant),
        )
        # Their digests are under the tenant's key, which stays: deleted, so no lookup of their
        # e-mail or phone finds them again (and a rebuild reads their values as erased).
        uow.cur.execute(
            "DELETE FROM lookup_digests WHERE subject_id = %s AND tenant_id = %s",
            (subject, tenant),
        )
        # Notices to them, queued or settled: unreadable already (sealed under their key),
        # deleted so not even the ids of what they were sent stay.
        uow.cur.execute(
            "DELETE FROM mail_outbox WHERE recipient_id = %s AND tenant_id = %s", (subject, tenant)
        )
        mails = uow.cur.rowcount
        return {
            "status": "done",
            "detail": ("subject key shredded; " if shredded else "no key held; ")
            + f"read models scrubbed, lookup digests deleted; {mails} mails deleted",
        }

    def restrict_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        uow.cur.execute(
            "INSERT INTO restrictions (subject_id, tenant_id, request_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (subject_id) DO NOTHING",
            (command["subject_id"], command["tenant_id"], command["request_id"]),
        )
        return {"status": "done", "detail": "kept, and not used for marketing or new processing"}

    def lift_restriction(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        uow.cur.execute("DELETE FROM restrictions WHERE subject_id = %s", (command["subject_id"],))
        return {"status": "done", "detail": "restriction lifted"}

    def object_to_marketing(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        tenant, subject = str(command["tenant_id"]), str(command["subject_id"])
        contact = handlers.load(uow, Contact, subject)
        if contact is None or contact.tenant_id != tenant:
            return {"status": "done", "detail": "no such contact here"}
        # Once per request: applied again after a restore that kept it, it would undo a consent
        # the contact gave since. An objection recorded before requests were marked here is
        # known by its opt-out, recorded no earlier than the command was sent.
        uow.cur.execute(
            "SELECT 1 FROM consents WHERE contact_id = %s AND source = 'objection'"
            " AND NOT marketing AND recorded_at >= %s",
            (subject, command["issued_at"]),
        )
        already = uow.cur.fetchone() is not None
        if not uow.first_delivery("accounts.objections", command["request_id"]) or already:
            return {"status": "done", "detail": "the objection is on record already"}
        contact.record_consent(
            marketing=False,
            source="objection",
            policy_version=handlers.current_policy(uow)["version"],
        )
        try:
            uow.save(contact, tenant, handlers._tenant_region(uow, tenant))
        except KeyShredded:
            # A consent's source is under the contact's key, which their erasure destroyed:
            # nothing can be recorded of them, and nothing of them is left to market to.
            return {"status": "done", "detail": "the contact was erased: nothing to object to"}
        return {"status": "done", "detail": "marketing consent off, the objection on record"}

    def rectify_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        # The corrected values never travel in a command (the ledger records every command):
        # retention applied them through accounts when the request was filed.
        return {"status": "done", "detail": "the owner's record was rectified when filed"}

    def destroy_tenant(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        tenant_id = str(command["tenant_id"])
        tenant = handlers.load(uow, Tenant, tenant_id)
        # Recorded before the key goes, in this unit of work: the read models change with the
        # event (projections apply it), and a replay ends in the same place.
        if tenant is not None and tenant.destroy(str(command["request_id"])):
            uow.save(tenant, tenant.id, tenant.region)
        subjects = cipher.keystore.shred_tenant(tenant_id)
        # Not a read model (kept from retention's commands): nothing left to restrict.
        uow.cur.execute("DELETE FROM restrictions WHERE tenant_id = %s", (tenant_id,))
        # The lookups read model deleted them with the event; a tenant accounts never recorded
        # (so no event) leaves none either. Unreadable anyway: their key went with the tenant's.
        uow.cur.execute("DELETE FROM lookup_digests WHERE tenant_id = %s", (tenant_id,))
        # Notices to the tenant's people: sealed under keys gone with the tenant's.
        uow.cur.execute("DELETE FROM mail_outbox WHERE tenant_id = %s", (tenant_id,))
        return {"status": "done", "detail": f"tenant key shredded ({subjects} subject keys)"}

    return {
        "destroy_tenant": destroy_tenant,
        "erase_subject": erase_subject,
        "restrict_subject": restrict_subject,
        "lift_restriction": lift_restriction,
        "object_to_marketing": object_to_marketing,
        "rectify_subject": rectify_subject,
    }


def is_restricted(uow: UnitOfWork, subject_id: str) -> bool:
    uow.cur.execute("SELECT 1 FROM restrictions WHERE subject_id = %s", (subject_id,))
    return uow.cur.fetchone() is not None


def export(uow: UnitOfWork, tenant_id: str, subject_id: str) -> dict[str, Any]:
    """What accounts holds about one person: their record, and a contact's consent history."""
    uow.cur.execute(
        "SELECT name, email, phone, marketing, created_at FROM contacts"
        " WHERE id = %s AND tenant_id = %s",
        (subject_id, tenant_id),
    )
    contact = uow.cur.fetchone()
    if contact is not None:
        uow.cur.execute(
            "SELECT marketing, source, policy_version, recorded_at FROM consents"
            " WHERE contact_id = %s ORDER BY version",
            (subject_id,),
        )
        consents = [
            {"marketing": m, "source": s, "policy_version": p, "recorded_at": r.isoformat()}
            for m, s, p, r in uow.cur.fetchall()
        ]
        name, email, phone, marketing, created = contact
        return {
            "contact": {
                "name": name,
                "email": email,
                "phone": phone,
                "created_at": created.isoformat(),
            },
            "marketing_consent": {"current": marketing, "history": consents},
            "restricted": is_restricted(uow, subject_id),
        }
    uow.cur.execute(
        "SELECT name, email, role, active, created_at FROM agents WHERE id = %s AND tenant_id = %s",
        (subject_id, tenant_id),
    )
    agent = uow.cur.fetchone()
    if agent is None:
        return {}
    name, email, role, active, created = agent
    return {
        "agent": {
            "name": name,
            "email": email,
            "role": role,
            "active": active,
            "created_at": created.isoformat(),
        }
    }
