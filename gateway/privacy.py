"""The gateway's answers to privacy commands. What it keeps of anyone is its idempotency records:
each stored response sealed under its tenant's key in the gateway's keystore, naming the ids
it concerns, for a day. Erasing a subject deletes the records naming them; destroying a tenant
shreds its key, then deletes its records. It also keeps the credentials it authenticates with
(``gateway.credentials``): ids, states and keyed hashes of keys, no names; an erased agent
authenticates no more and their keys' rows go, a destroyed tenant's agents and keys go. And
its tenants' webhook endpoints (``gateway.webhooks``: URL and secret under the tenant's key)
with their deliveries (ids and states only, so an erasure has nothing to do there): a
destruction deletes them once the key is shredded. A rebuild of the credentials reads
accounts, which has applied the same erasures, and a restored database gets them again from
retention's erasure log of forgetting before it serves (``kernel.forgetting``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from gateway import credentials, idempotency
from gateway.webhooks import store as webhooks
from kernel.crypto.keystore import Keystore
from kernel.uow import EventSourcedStore, UnitOfWork

CATEGORIES = ("api_responses",)


def handlers_for(keystore: Keystore) -> dict[str, Any]:
    def erase_subject(uow: UnitOfWork, command: Mapping[str, Any]) -> dict[str, Any]:
        tenant, subject = str(command["tenant_id"]), str(command["subject_id"])
        deleted = idempotency.forget_subject(uow.cur, tenant, subject)
        keys = credentials.forget_agent(uow.cur, tenant, subject, command.get("subject_kind"))
        detail = f"{deleted} stored API responses naming them deleted"
        if keys:
            detail += f"; {keys} of their API keys deleted from the credentials"
        return {"status": "done", "detail": detail}

    def destroy_tenant(uow: UnitOfWork, command: Mapping[str, Any]) -> dict[str, Any]:
        tenant = str(command["tenant_id"])
        # The key first: from here on nothing of the tenant is readable, even from a backup.
        keystore.shred_tenant(tenant)
        deleted = idempotency.forget_tenant(uow.cur, tenant)
        keys = credentials.forget_tenant(uow.cur, tenant)
        endpoints = webhooks.forget_tenant(uow.cur, tenant)
        detail = f"tenant key shredded; {deleted} stored API responses deleted"
        if keys:
            detail += f"; {keys} API keys deleted from the credentials"
        if endpoints:
            detail += f"; {endpoints} webhook endpoints and their deliveries deleted"
        return {"status": "done", "detail": detail}

    return {"erase_subject": erase_subject, "destroy_tenant": destroy_tenant}


def erasure_handlers(store: EventSourcedStore) -> dict[str, Any]:
    """For ``kernel.forgetting``: what a restored gateway applies again before it serves."""
    assert store.cipher is not None, "the gateway's privacy handlers need its keystore"
    return handlers_for(store.cipher.keystore)


def export(uow: UnitOfWork, tenant_id: str, subject_id: str, ttl: timedelta) -> dict[str, Any]:
    """The stored responses that name the subject: when, which status, until when. Not their
    bodies: a body can hold other people's data (a ticket names its assignee), and what it
    holds of this subject is in the export parts of the services that own it."""
    return {
        "stored_api_responses": [
            {
                "status": status,
                "stored_at": created.isoformat(),
                "deleted_by": (created + ttl).isoformat(),
            }
            for status, created in idempotency.naming(uow.cur, tenant_id, subject_id)
        ],
        "purpose": "replaying the answer to a retried request with the same Idempotency-Key",
    }
