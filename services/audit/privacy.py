"""Audit's answers to privacy commands. The ledger holds ids, but for the access log's IP
addresses and user agents, which are under their tenant's day keys: those go past their period
(``purge_category``) or with the tenant, and with the tenant its verification progress. An
erasure has nothing to scrub: a subject's entries are ids, kept so the chain stays verifiable.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kernel.crypto.fields import FieldCipher
from kernel.db import Database
from kernel.privacy import Handler
from kernel.uow import UnitOfWork
from services.audit import access_keys, tenant_view
from services.audit.ledger import Ledger


def handlers_for(db: Database, cipher: FieldCipher | None) -> dict[str, Handler]:
    """``db``: the ledger's database, where the day keys and the verification progress are
    kept outside the unit of work's events (audit has none of its own)."""
    assert cipher is not None, "privacy handlers need the service's keystore"
    keystore = cipher.keystore

    def erase_subject(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "done",
            "detail": "the ledger holds identifiers only; access-log IPs and user agents go "
            "with their tenant's day keys",
        }

    def destroy_tenant(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        destroyed = access_keys.destroy_tenant(db, keystore, command["tenant_id"])
        tenant_view.forget(db, command["tenant_id"])
        return {
            "status": "done",
            "detail": f"the tenant's access-log keys destroyed ({destroyed}), its verification"
            " progress deleted",
        }

    def purge_category(uow: UnitOfWork, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("category") != "access_log" or not command.get("before"):
            return {"status": "done", "detail": "audit holds nothing of that category"}
        cutoffs = {
            uuid.UUID(str(tenant)): dt.datetime.fromisoformat(before)
            for tenant, before in (command.get("cutoffs") or {}).items()
        }
        destroyed = access_keys.purge(
            db, keystore, dt.datetime.fromisoformat(command["before"]), cutoffs
        )
        return {"status": "done", "detail": f"{destroyed} days of access-log fields erased"}

    return {
        "erase_subject": erase_subject,
        "destroy_tenant": destroy_tenant,
        "purge_category": purge_category,
    }


def export(ledger: Ledger, tenant_id: str, subject_id: str) -> dict[str, Any]:
    """Who read this person's data, when, and what: the staff reads the ledger records."""
    reads = []
    for entry in ledger.iter_entries(
        tenant_id, subject_id=subject_id, types=["access_logged", "ticket_viewed"]
    ):
        if entry["actor_id"] == subject_id:
            continue  # their own requests are not staff reads
        payload = entry["payload"]
        reads.append(
            {
                "who": entry["actor_id"],
                "when": entry["at"],
                "what": payload.get("route") or f"ticket {payload.get('ticket_id')}",
                "resources": payload.get("resource_ids") or [payload.get("ticket_id")],
            }
        )
    return {"staff_reads": reads}
