"""The gateway's credentials projection against real PostgreSQL: a key authenticates only while
the key, its agent and its tenant allow it; news arriving in any order leaves the same rows; a
rebuild refuses every key until it is done and cannot bring an ended key back; erasure and
destruction leave no hash; and a projection whose news waits unread refuses (503)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from nameko.testing.services import worker_factory

from gateway import credentials
from gateway.idempotency import MIGRATIONS
from gateway.service import GatewayService
from kernel import db as kdb
from kernel.config import Settings
from kernel.crypto import apikeys
from kernel.envelope import new_envelope
from kernel.errors import ServiceUnavailable, Unauthorized
from kernel.nameko_adapters.common import DATABASE_UNAVAILABLE
from kernel.stores import prepare_databases
from kernel.testing import ManualClock

SECRET = "test-api-key-secret"


@pytest.fixture
def projection(world: Settings) -> Iterator[credentials.CredentialProjection]:
    prepare_databases(world, "gateway", MIGRATIONS)
    database = kdb.Database(world.database_dsn("gateway"))
    built = credentials.CredentialProjection(database, SECRET)
    built.rebuild_if_needed(lambda after, limit: {"items": [], "next": None})
    yield built
    database.close()


def issued(
    tenant_id: str | None = None, role: str = "admin", tenant_version: int = 1, **changes: Any
) -> tuple[str, dict[str, Any]]:
    """A new key and the credential accounts answers with when it issues it."""
    api_key = apikeys.generate()
    agent_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC).isoformat()
    credential = {
        "key_hash": apikeys.keyed_hash(SECRET, api_key),
        "key_id": str(uuid.uuid4()),
        "key_active": True,
        "key_issuer_id": agent_id,
        "key_issued_at": now,
        "agent_id": agent_id,
        "agent_active": True,
        "role": role,
        "admin_since": now if role == "admin" else None,
        "tenant_id": tenant_id or str(uuid.uuid4()),
        "tenant_status": "active",
        "tenant_version": tenant_version,
        **changes,
    }
    return api_key, credential


def event(type_: str, tenant_id: str, version: int = 1, **payload: Any):
    return new_envelope(
        type=type_,
        schema_version=1,
        source="accounts",
        stream_id=f"tenant-{tenant_id}",
        stream_version=version,
        tenant_id=uuid.UUID(tenant_id),
        actor_id=None,
        payload={"tenant_id": tenant_id, **payload},
    )


def accepts(projection: credentials.CredentialProjection, api_key: str) -> bool:
    try:
        projection.authenticate(api_key)
    except Unauthorized:
        return False
    return True


def refused(
    projection: credentials.CredentialProjection,
    freshness: credentials.Freshness,
    api_key: str,
    why: str,
) -> bool:
    """Refused with a 503 that tells the client nothing more, for the reason given."""
    with pytest.raises(ServiceUnavailable) as refusal:
        projection.authenticate(api_key)
    assert str(refusal.value) == credentials.UNAVAILABLE
    reason = freshness.behind()
    assert reason is not None and why in reason, reason
    return True


def no_fetch(key_id: str) -> None:
    raise AssertionError(f"accounts asked for a key it should not need: {key_id}")


def test_a_key_answers_with_who_it_is_while_key_agent_and_tenant_allow_it(projection):
    api_key, credential = issued()
    projection.change(credentials.learn, credential)
    identity = projection.authenticate(api_key)
    assert identity == {
        "key_id": credential["key_id"],
        "agent_id": credential["agent_id"],
        "tenant_id": credential["tenant_id"],
        "role": "admin",
        "tenant_status": "active",
        "key_issuer_id": credential["agent_id"],
        "key_issued_at": dt.datetime.fromisoformat(credential["key_issued_at"]).isoformat(),
        "admin_since": dt.datetime.fromisoformat(credential["admin_since"]).isoformat(),
    }
    assert not accepts(projection, api_key + "x")
    assert not accepts(projection, "not-a-key")

    projection.change(credentials.tenant_state, credential["tenant_id"], "cancelled", 2)
    assert projection.authenticate(api_key)["tenant_status"] == "cancelled"
    ids = (credential["tenant_id"], credential["agent_id"], credential["key_id"])
    projection.change(credentials.revoke_key, *ids)
    assert not accepts(projection, api_key)


def test_news_in_any_order_leaves_an_ended_key_ended_and_a_tenant_at_its_newest_status(
    projection,
):
    # The revocation's event overtakes the issuance: the key never authenticates.
    api_key, credential = issued()
    tenant, agent, key = credential["tenant_id"], credential["agent_id"], credential["key_id"]
    projection.change(
        credentials.apply_event,
        event("api_key_revoked", tenant, agent_id=agent, key_id=key),
        no_fetch,
    )
    projection.change(credentials.learn, credential)
    assert not accepts(projection, api_key)

    # An agent deactivated before its key was heard of: the key is refused too.
    api_key, credential = issued()
    projection.change(
        credentials.apply_event,
        event("agent_deactivated", credential["tenant_id"], agent_id=credential["agent_id"]),
        no_fetch,
    )
    projection.change(credentials.learn, credential)
    assert not accepts(projection, api_key)

    # Reactivated (version 3) before the cancellation (version 2) arrives: active it stays.
    api_key, credential = issued()
    tenant = credential["tenant_id"]
    projection.change(credentials.learn, credential)
    projection.change(credentials.apply_event, event("tenant_reactivated", tenant, 3), no_fetch)
    projection.change(credentials.apply_event, event("tenant_cancelled", tenant, 2), no_fetch)
    assert projection.authenticate(api_key)["tenant_status"] == "active"
    # And a page read before both (version 1) changes nothing either.
    projection.change(credentials.learn, credential)
    assert projection.authenticate(api_key)["tenant_status"] == "active"

    # No hash is kept for a key that ended.
    with projection.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM credential_keys WHERE NOT active AND key_hash > ''")
        assert cur.fetchone()[0] == 0


def test_a_key_heard_of_only_by_its_event_is_fetched_once_from_accounts(projection):
    api_key, credential = issued()
    asked: list[str] = []

    def fetch(key_id: str) -> dict[str, Any]:
        asked.append(key_id)
        return credential

    issued_event = event(
        "api_key_issued",
        credential["tenant_id"],
        agent_id=credential["agent_id"],
        key_id=credential["key_id"],
        issuer_id=credential["agent_id"],
    )
    projection.change(credentials.apply_event, issued_event, fetch)
    assert accepts(projection, api_key)
    projection.change(credentials.apply_event, issued_event, fetch)
    assert asked == [credential["key_id"]]


def test_erasure_and_destruction_leave_no_hash_and_no_later_news_revives_them(projection):
    erased_key, erased = issued()
    kept_key, kept = issued(tenant_id=erased["tenant_id"])
    for credential in (erased, kept):
        projection.change(credentials.learn, credential)
    projection.change(credentials.forget_agent, erased["tenant_id"], erased["agent_id"])
    assert not accepts(projection, erased_key)
    assert accepts(projection, kept_key)
    projection.change(credentials.learn, erased)  # a page read before the erasure
    assert not accepts(projection, erased_key)

    projection.change(credentials.forget_tenant, kept["tenant_id"])
    assert not accepts(projection, kept_key)
    projection.change(credentials.learn, kept)
    projection.change(
        credentials.apply_event, event("tenant_reactivated", kept["tenant_id"], 9), no_fetch
    )
    assert not accepts(projection, kept_key)
    with projection.db.transaction() as cur:
        cur.execute(
            "SELECT count(*) FROM credential_keys WHERE key_hash IN (%s, %s)",
            (erased["key_hash"], kept["key_hash"]),
        )
        assert cur.fetchone()[0] == 0
        cur.execute(
            "SELECT count(*) FROM credential_agents WHERE tenant_id = %s", (kept["tenant_id"],)
        )
        assert cur.fetchone()[0] == 0


def agent_row(projection: credentials.CredentialProjection, agent_id: str) -> tuple | None:
    with projection.db.transaction() as cur:
        cur.execute(
            "SELECT active, role, admin_since FROM credential_agents WHERE agent_id = %s",
            (agent_id,),
        )
        return cur.fetchone()


def key_rows(projection: credentials.CredentialProjection, agent_id: str) -> int:
    with projection.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM credential_keys WHERE agent_id = %s", (agent_id,))
        return cur.fetchone()[0]


def test_an_agent_erased_before_their_news_or_during_a_rebuild_stays_erased(projection):
    # Erased before any news of them: the key fetched afterwards (accounts answering from
    # before its own erasure) authenticates no one and leaves no row.
    early_key, early = issued()
    projection.change(credentials.forget_agent, early["tenant_id"], early["agent_id"], "agent")
    projection.change(credentials.learn, early)
    assert not accepts(projection, early_key)
    assert agent_row(projection, early["agent_id"]) == (False, None, None)
    assert key_rows(projection, early["agent_id"]) == 0

    # Erased while a rebuild reads pages from before the erasure.
    erased_key, erased = issued()
    projection.change(credentials.learn, erased)
    assert accepts(projection, erased_key)

    def page(after: str | None, limit: int) -> dict[str, Any]:
        projection.change(
            credentials.forget_agent, erased["tenant_id"], erased["agent_id"], "agent"
        )
        return {"items": [erased], "next": None}

    projection.request_rebuild()
    assert projection.rebuild_if_needed(page) == 1
    assert not accepts(projection, erased_key)
    assert agent_row(projection, erased["agent_id"]) == (False, None, None)
    assert key_rows(projection, erased["agent_id"]) == 0

    # A subject that is not an agent (a contact) leaves no row behind.
    contact = str(uuid.uuid4())
    projection.change(credentials.forget_agent, erased["tenant_id"], contact, "contact")
    assert agent_row(projection, contact) is None
    # Nor does an agent of another tenant's id change anything of theirs.
    other_key, other = issued()
    projection.change(credentials.learn, other)
    projection.change(credentials.forget_agent, erased["tenant_id"], other["agent_id"], "agent")
    assert accepts(projection, other_key)


def test_a_rebuild_refuses_every_key_until_done_and_keeps_what_ended_meanwhile(projection):
    before_key, before = issued()
    projection.change(credentials.learn, before)
    assert accepts(projection, before_key)
    revoked_key, revoked = issued()
    pages = [[revoked], [before]]
    seen: list[Any] = []

    def page(after: str | None, limit: int) -> dict[str, Any]:
        # While the rebuild runs: every key is refused with a 503, never accepted stale.
        with pytest.raises(ServiceUnavailable):
            projection.authenticate(before_key)
        if not seen:
            # The revocation's event lands between the page's read and its write.
            projection.change(
                credentials.revoke_key,
                revoked["tenant_id"],
                revoked["agent_id"],
                revoked["key_id"],
            )
        items = pages[len(seen)]
        seen.append(after)
        return {"items": items, "next": items[-1]["key_id"] if len(seen) < len(pages) else None}

    projection.request_rebuild()
    with pytest.raises(ServiceUnavailable):
        projection.authenticate(before_key)
    assert projection.rebuild_if_needed(page) == 2
    assert seen == [None, revoked["key_id"]]
    assert accepts(projection, before_key)
    assert not accepts(projection, revoked_key)
    assert projection.rebuild_if_needed(page) is None  # ready: nothing to do


def test_a_broker_out_of_reach_from_the_start_refuses_every_key(projection):
    api_key, credential = issued()
    projection.change(credentials.learn, credential)

    def unreachable() -> tuple[int, int, int]:
        raise ConnectionError("no broker yet")

    freshness = credentials.Freshness(5.0, unreachable, clock=ManualClock())
    watched = credentials.CredentialProjection(projection.db, SECRET, freshness)
    assert refused(watched, freshness, api_key, "could not be checked")
    assert not watched.trusted()


def test_news_that_waits_unread_or_a_queue_nobody_reads_refuses_every_key(projection):
    api_key, credential = issued()
    projection.change(credentials.learn, credential)
    clock = ManualClock()
    counts = {"waiting": 0, "consumers": 1, "dead": 0}
    freshness = credentials.Freshness(
        5.0, lambda: (counts["waiting"], counts["consumers"], counts["dead"]), clock=clock
    )
    watched = credentials.CredentialProjection(projection.db, SECRET, freshness)
    counts["consumers"] = 0
    assert refused(
        watched, freshness, api_key, "no gateway reads"
    )  # never observed before: observed at once
    counts["consumers"] = 1
    freshness.check()
    assert accepts(watched, api_key)

    counts["waiting"] = 3
    freshness.check()
    clock.advance(4)
    freshness.check()
    assert accepts(watched, api_key)  # waiting, but not yet for long
    clock.advance(2)
    freshness.check()
    assert refused(watched, freshness, api_key, "wait unread")
    assert not watched.trusted()
    counts["waiting"] = 0
    freshness.check()
    assert accepts(watched, api_key)

    counts["consumers"] = 0
    freshness.check()
    assert refused(watched, freshness, api_key, "no gateway reads")
    counts["consumers"] = 1
    freshness.check()

    counts["dead"] = 2
    freshness.check()
    assert freshness.dead_letters == 2  # a reconciliation is wanted soon; keys still accepted
    assert accepts(watched, api_key)

    def unreachable() -> tuple[int, int, int]:
        raise ConnectionError("broker gone")

    freshness._queue_counts = unreachable
    clock.advance(4)
    freshness.check()
    assert accepts(watched, api_key)  # the last observation is still young
    clock.advance(2)
    freshness.check()
    assert refused(watched, freshness, api_key, "could not be checked")


def test_a_reconciliation_ends_what_accounts_no_longer_lists_and_refuses_nothing_meanwhile(
    projection,
):
    listed_key, listed = issued()
    stale_key, stale = issued()  # revoked in accounts since: a restored database still has it
    late_key, late = issued()  # issued after its page was read: accounts says it authenticates
    unknown_key, unknown = issued()  # accounts never issued it
    new_key, new = issued()  # accounts has it, the rows do not (issued after a backup)
    for credential in (listed, stale, late, unknown):
        projection.change(credentials.learn, credential)
    answers = {
        stale["key_id"]: {**stale, "key_active": False},
        late["key_id"]: late,
        unknown["key_id"]: None,
    }
    asked: list[str] = []

    def fetch(key_id: str) -> dict[str, Any] | None:
        asked.append(key_id)
        return answers[key_id]

    restarted = credentials.CredentialProjection(projection.db, SECRET)

    def page(after: str | None, limit: int) -> dict[str, Any]:
        assert accepts(projection, listed_key)  # other processes refuse nothing meanwhile
        return {"items": [listed, new], "next": None}

    assert restarted.bring_in_line(page, fetch) == (2, 2)
    assert sorted(asked) == sorted(answers)
    assert accepts(restarted, listed_key)
    assert accepts(restarted, late_key)
    assert accepts(restarted, new_key)
    assert not accepts(restarted, stale_key)
    assert not accepts(restarted, unknown_key)
    # Done: the hourly one waits until its interval has passed.
    assert restarted.reconcile_if_due(page, fetch, credentials.RECONCILE_EVERY) is None
    assert restarted.reconcile_if_due(page, fetch, dt.timedelta(0)) == (2, 0)


def test_a_key_accounts_no_longer_holds_is_ended_only_within_the_callers_tenant(projection):
    """A revocation retried after its first write here failed: accounts answers "no such key",
    and the route ends the key here if it is that agent's in the caller's tenant, never in
    another's."""
    api_key, credential = issued()
    projection.change(credentials.learn, credential)
    ids = (credential["agent_id"], credential["key_id"])
    projection.change(credentials.revoke_key_if_theirs, str(uuid.uuid4()), *ids)
    assert accepts(projection, api_key)  # another tenant's caller changes nothing
    projection.change(credentials.revoke_key_if_theirs, credential["tenant_id"], ids[0], "nope")
    assert accepts(projection, api_key)  # a path that names no key changes nothing
    projection.change(credentials.revoke_key_if_theirs, credential["tenant_id"], *ids)
    assert not accepts(projection, api_key)


def test_a_page_of_many_keys_of_one_agent_merges_as_one_at_a_time_would(projection):
    first_key, first = issued(tenant_version=2)
    same_agent = {k: first[k] for k in ("agent_id", "tenant_id", "role", "admin_since")}
    others = [issued(**same_agent, tenant_version=v) for v in (1, 3)]
    gone_key, gone = issued()
    projection.change(credentials.forget_tenant, gone["tenant_id"])
    projection.change(
        credentials.learn_many, [first, *(c for _, c in others), {**gone, "tenant_version": 99}]
    )
    for key in (first_key, *(k for k, _ in others)):
        assert projection.authenticate(key)["agent_id"] == first["agent_id"]
    assert not accepts(projection, gone_key)  # nothing of a destroyed tenant is taken
    with projection.db.transaction() as cur:
        cur.execute(
            "SELECT version FROM credential_tenants WHERE tenant_id = %s", (first["tenant_id"],)
        )
        assert cur.fetchone() == (3,)  # the newest of the page


def test_news_met_by_a_database_restart_is_retried_in_process_not_dead_lettered(projection):
    """The kernel's consumer retries a handler that met the database away in-process
    (``DATABASE_UNAVAILABLE``); anything else goes back to the queue, and after
    ``LEDGERDESK_DELIVERY_LIMIT`` quick deliveries to the dead-letter queue, where a revocation
    waits for the next reconciliation while its key is accepted. So a revocation's event met by
    a restart of the gateway's database must fail as the database's error, then apply."""
    api_key, credential = issued()
    projection.change(credentials.learn, credential)
    gateway = worker_factory(GatewayService, credentials=projection)
    revoked = event(
        "api_key_revoked",
        credential["tenant_id"],
        agent_id=credential["agent_id"],
        key_id=credential["key_id"],
    )
    # A restart of PostgreSQL: every session the pool keeps is ended.
    with projection.db.read() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    other = psycopg2.connect(projection.db.dsn)
    try:
        with other, other.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        other.close()
    with pytest.raises(Exception) as failure:
        gateway.learn_credentials(revoked)
    assert isinstance(failure.value, DATABASE_UNAVAILABLE), repr(failure.value)
    gateway.learn_credentials(revoked)  # the in-process retry
    assert not accepts(projection, api_key)
