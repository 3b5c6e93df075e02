"""The gateway's credentials: what authentication needs, projected from accounts into the
gateway's own database, so a request is authenticated by one indexed read instead of an RPC.

Where the rows come from:

- **the API's own changes**, applied by the route that made them before it answers: a key
  issued (sign-up, a new agent, a minted or claimed key: accounts answers with the key's
  credential), a key revoked, an agent deactivated, a tenant cancelled or reactivated. Every
  gateway process reads the same tables, so once the route answers no process accepts what it
  ended (``CredentialProjection``);
- **accounts' events** (``CREDENTIALS``): the same changes made elsewhere, or by a route whose
  process died before it applied them. Published events carry ids and states, never a key's
  hash, so a key heard of only by its event is fetched from accounts (``accounts.credential``);
- **the privacy commands** the gateway answers (``gateway.privacy``): an erased agent's keys and
  a destroyed tenant's agents and keys are deleted with the command;
- **a rebuild** from accounts' current state, page by page (``accounts.credentials_page``), when
  the projection is new or an operator asks for one (``python -m gateway.credentials rebuild``).

Every write is a merge that only ever takes authority away (a key or an agent once inactive
stays so) or, for a tenant's status, keeps the newest version of the tenant's stream, so these
sources may arrive in any order and leave the same rows (``gateway/migrations/0003``).

Refusing rather than guessing: a gateway process serves only once it has reconciled the rows
with accounts after starting (``bring_in_line``, in its store's start-up forgetting): a
database restored from a backup holds keys revoked since, and this ends them. While the
projection is not built, or while accounts' events wait unread (``Freshness``: no gateway
consumes them, or some have waited longer than ``LEDGERDESK_CREDENTIALS_LAG_SECONDS``), every
key is refused with a 503. No process keeps a
credential in memory: a revocation is in force as soon as its row is.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import eventlet
import eventlet.semaphore
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import execute_values

from kernel.config import Settings
from kernel.crypto import apikeys
from kernel.db import Database
from kernel.envelope import Envelope
from kernel.errors import ServiceUnavailable, Unauthorized
from kernel.forgetting import start_abandoned
from kernel.nameko_adapters.common import DATABASE_UNAVAILABLE
from kernel.nameko_adapters.proxy import standalone_rpc
from kernel.observability import CREDENTIAL_CHECKS, CREDENTIALS_BEHIND
from kernel.uow import EventSourcedStore

log = logging.getLogger(__name__)


# The version a destroyed tenant's row takes: no later status can replace it.
_DESTROYED_VERSION = 2**62
REBUILD_PAGE = 500
# What a refused client hears; why is in the log and /readyz, not told to anyone who asks.
UNAVAILABLE = "credentials cannot be checked now: try again shortly"
# A reconciliation before each gateway process serves, then this often (by one of them), or
# this soon while the credentials queue has dead letters.
RECONCILE_EVERY = dt.timedelta(hours=1)
RECONCILE_WITH_DEAD_LETTERS = dt.timedelta(minutes=1)
# Session advisory lock: one gateway process rebuilds at a time, and one that died mid-rebuild
# releases it with its connection, so another takes over.
_REBUILD_LOCK = 0x6C6467726372  # "ldgrcr"

_AUTHENTICATE = (
    "SELECT p.status, c.* FROM credential_projection p LEFT JOIN LATERAL ("
    " SELECT k.key_id, k.agent_id, a.tenant_id, a.role, t.status, k.issuer_id, k.issued_at,"
    "  a.admin_since"
    " FROM credential_keys k JOIN credential_agents a ON a.agent_id = k.agent_id"
    " JOIN credential_tenants t ON t.tenant_id = a.tenant_id"
    " WHERE k.key_hash = %s AND k.active AND a.active AND t.status <> 'destroyed') c ON true"
)


class Freshness:
    """Whether this process may trust the projection: accounts' credential events are being
    read (some gateway consumes them, none has waited past the limit). Checked by the
    gateway's timer from the queue's counts; only ever makes authentication stricter."""

    def __init__(
        self,
        lag_limit: float,
        queue_counts: Callable[[], tuple[int, int, int]],
        clock: Callable[[], float] = time.monotonic,
    ):
        # Checked every second: a limit below two would refuse between two checks.
        self.lag_limit = max(lag_limit, 2.0)
        self._queue_counts = queue_counts
        self._clock = clock
        self._checked_at: float | None = None
        self._waiting_since: float | None = None
        self._consumers = 0
        # Messages set aside in the queue's dead-letter queue: news that will not be applied
        # (a revocation among them, perhaps), so a reconciliation is wanted soon.
        self.dead_letters = 0
        self._lock = eventlet.semaphore.Semaphore()
        self._last_reason: str | None = None

    def check(self) -> None:
        """Observe the queue; a failure leaves the last observation to age, which ends in
        refusing. One check at a time: they share one broker connection."""
        with self._lock:
            try:
                waiting, consumers, dead = self._queue_counts()
            except Exception as exc:  # any failure to observe: the same outcome, refusing later
                log.warning("credentials queue not observed: %s", type(exc).__name__)
            else:
                self.observed(waiting, consumers, dead)
        reason = self._reason()
        if reason is not None:
            CREDENTIALS_BEHIND.inc()
        if reason != self._last_reason:
            log.warning("credentials %s", f"cannot be trusted: {reason}" if reason else "in step")
            self._last_reason = reason

    def observed(self, waiting: int, consumers: int, dead: int = 0) -> None:
        now = self._clock()
        self._checked_at = now
        self._consumers = consumers
        self.dead_letters = dead
        if waiting == 0:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now

    def behind(self) -> str | None:
        """Why the projection may be behind, or None when it is not. Before the timer's first
        check (a process just started), it checks at once rather than refuse."""
        if self._checked_at is None:
            self.check()
        return self._reason()

    def _reason(self) -> str | None:
        now = self._clock()
        if self._checked_at is None or now - self._checked_at > self.lag_limit:
            return "accounts' credential events could not be checked"
        if self._consumers == 0:
            return "no gateway reads accounts' credential events"
        if self._waiting_since is not None and now - self._waiting_since > self.lag_limit:
            return "accounts' credential events wait unread"
        return None


# --- merges: each only ever takes authority away, or keeps a tenant's newest status -----------


def learn(cur: Cursor, credential: Mapping[str, Any]) -> None:
    """A key as accounts reported it (an issuance answered, a fetched event)."""
    learn_many(cur, [credential])


def learn_many(cur: Cursor, credentials: Sequence[Mapping[str, Any]]) -> None:
    """Keys as accounts reported them (a rebuild's or a reconciliation's page): three
    statements whatever their number. Nothing of a destroyed tenant is taken."""
    if not credentials:
        return
    tenants: dict[str, tuple[str, str, int]] = {}
    agents: dict[str, tuple] = {}
    keys: list[tuple] = []
    for c in credentials:
        tenant = tenants.get(c["tenant_id"])
        if tenant is None or c["tenant_version"] > tenant[2]:
            tenants[c["tenant_id"]] = (c["tenant_id"], c["tenant_status"], c["tenant_version"])
        agent = agents.get(c["agent_id"])
        agent_active = bool(c["agent_active"]) and (agent is None or agent[3])
        agents[c["agent_id"]] = (
            c["agent_id"],
            c["tenant_id"],
            c["role"],
            agent_active,
            c["admin_since"],
        )
        active = bool(c["key_active"] and c["agent_active"])
        keys.append(
            (
                c["key_id"],
                c["key_hash"] if active else None,
                c["agent_id"],
                c["key_issuer_id"],
                c["key_issued_at"],
                active,
                c["tenant_id"],
            )
        )
    _merge_tenants(cur, list(tenants.values()))
    execute_values(
        cur,
        "INSERT INTO credential_agents (agent_id, tenant_id, role, active, admin_since)"
        " SELECT v.agent_id, v.tenant_id, v.role, v.active, v.admin_since"
        " FROM (VALUES %s) AS v (agent_id, tenant_id, role, active, admin_since)"
        " WHERE NOT EXISTS (SELECT 1 FROM credential_tenants t"
        "  WHERE t.tenant_id = v.tenant_id AND t.status = 'destroyed')"
        " ON CONFLICT (agent_id) DO UPDATE SET"
        # An inactive row keeps what it has: an erased agent's stays ids only.
        " role = CASE WHEN credential_agents.active"
        "  THEN coalesce(credential_agents.role, EXCLUDED.role) ELSE credential_agents.role END,"
        " admin_since = CASE WHEN credential_agents.active"
        "  THEN coalesce(credential_agents.admin_since, EXCLUDED.admin_since)"
        "  ELSE credential_agents.admin_since END,"
        " active = credential_agents.active AND EXCLUDED.active",
        list(agents.values()),
        template="(%s::uuid, %s::uuid, %s, %s::boolean, %s::timestamptz)",
        page_size=len(agents),
    )
    execute_values(
        cur,
        "INSERT INTO credential_keys (key_id, key_hash, agent_id, issuer_id, issued_at, active)"
        " SELECT v.key_id, v.key_hash, v.agent_id, v.issuer_id, v.issued_at, v.active"
        " FROM (VALUES %s) AS v (key_id, key_hash, agent_id, issuer_id, issued_at, active,"
        "  tenant_id)"
        " WHERE NOT EXISTS (SELECT 1 FROM credential_tenants t"
        "  WHERE t.tenant_id = v.tenant_id AND t.status = 'destroyed')"
        # An inactive agent's keys authenticate no one; an erased agent's must not come back.
        " AND NOT EXISTS (SELECT 1 FROM credential_agents a"
        "  WHERE a.agent_id = v.agent_id AND NOT a.active)"
        " ON CONFLICT (key_id) DO UPDATE SET"
        " key_hash = CASE WHEN credential_keys.active AND EXCLUDED.active"
        "  THEN coalesce(credential_keys.key_hash, EXCLUDED.key_hash) END,"
        " issuer_id = coalesce(credential_keys.issuer_id, EXCLUDED.issuer_id),"
        " issued_at = coalesce(credential_keys.issued_at, EXCLUDED.issued_at),"
        " active = credential_keys.active AND EXCLUDED.active",
        keys,
        template="(%s::uuid, %s, %s::uuid, %s::uuid, %s::timestamptz, %s::boolean, %s::uuid)",
        page_size=len(keys),
    )


def _merge_tenants(cur: Cursor, tenants: Sequence[tuple[str, str, int]]) -> None:
    """Each tenant's status as of its stream version: a newer version wins, so an older one
    arriving late changes nothing."""
    execute_values(
        cur,
        "INSERT INTO credential_tenants (tenant_id, status, version) VALUES %s"
        " ON CONFLICT (tenant_id) DO UPDATE SET status = EXCLUDED.status,"
        " version = EXCLUDED.version WHERE credential_tenants.version < EXCLUDED.version",
        tenants,
        template="(%s::uuid, %s, %s)",
        page_size=len(tenants),
    )


def tenant_state(cur: Cursor, tenant_id: str, status: str, version: int) -> None:
    _merge_tenants(cur, [(tenant_id, status, version)])


def revoke_key(cur: Cursor, tenant_id: str, agent_id: str, key_id: str) -> None:
    if _tenant_destroyed(cur, tenant_id):
        return
    cur.execute(
        "INSERT INTO credential_keys (key_id, agent_id, active) VALUES (%s, %s, false)"
        " ON CONFLICT (key_id) DO UPDATE SET active = false, key_hash = NULL",
        (key_id, agent_id),
    )


def revoke_key_if_theirs(cur: Cursor, tenant_id: str, agent_id: str, key_id: str) -> None:
    """Accounts says the key is not one of the agent's active keys (revoked already, perhaps
    by a request whose projection write failed): end it here too, if the rows show it as the
    agent's in this tenant. Only ever takes access away, and only within the caller's tenant."""
    try:
        uuid.UUID(agent_id), uuid.UUID(key_id)
    except ValueError:
        return  # not ids at all: nothing here could be theirs
    cur.execute(
        "UPDATE credential_keys SET active = false, key_hash = NULL"
        " WHERE key_id = %s AND agent_id = %s AND agent_id IN"
        " (SELECT agent_id FROM credential_agents WHERE agent_id = %s AND tenant_id = %s)",
        (key_id, agent_id, agent_id, tenant_id),
    )


def deactivate_agent(cur: Cursor, tenant_id: str, agent_id: str) -> None:
    """The agent authenticates no more, and its keys' hashes go (accounts revokes them too)."""
    if _tenant_destroyed(cur, tenant_id):
        return
    cur.execute(
        "INSERT INTO credential_agents (agent_id, tenant_id, active) VALUES (%s, %s, false)"
        " ON CONFLICT (agent_id) DO UPDATE SET active = false",
        (agent_id, tenant_id),
    )
    cur.execute(
        "UPDATE credential_keys SET active = false, key_hash = NULL WHERE agent_id = %s",
        (agent_id,),
    )


def forget_agent(cur: Cursor, tenant_id: str, subject_id: str, kind: str | None = None) -> int:
    """An erasure: if the subject is an agent of the tenant, it authenticates no more and its
    keys' rows go. The agent's row stays, ids only, so that no later news revives it; an agent
    erased before any news of them arrived (or while a rebuild reads pages from before the
    erasure) gets that row now, when the command says the subject is an agent."""
    if kind == "agent" and not _tenant_destroyed(cur, tenant_id):
        cur.execute(
            "INSERT INTO credential_agents (agent_id, tenant_id, active) VALUES (%s, %s, false)"
            " ON CONFLICT (agent_id) DO NOTHING",
            (subject_id, tenant_id),
        )
    cur.execute(
        "UPDATE credential_agents SET active = false, role = NULL, admin_since = NULL"
        " WHERE agent_id = %s AND tenant_id = %s",
        (subject_id, tenant_id),
    )
    if cur.rowcount == 0:
        return 0
    cur.execute("DELETE FROM credential_keys WHERE agent_id = %s", (subject_id,))
    return cur.rowcount


def forget_tenant(cur: Cursor, tenant_id: str) -> int:
    """A destruction: the tenant's agents and keys go; its row stays as 'destroyed', ids only,
    so that no later news (or a rebuild's page read before) brings a key of it back."""
    cur.execute(
        "INSERT INTO credential_tenants (tenant_id, status, version) VALUES (%s, 'destroyed', %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET status = 'destroyed', version = EXCLUDED.version",
        (tenant_id, _DESTROYED_VERSION),
    )
    cur.execute(
        "DELETE FROM credential_keys WHERE agent_id IN"
        " (SELECT agent_id FROM credential_agents WHERE tenant_id = %s)",
        (tenant_id,),
    )
    keys = cur.rowcount
    cur.execute("DELETE FROM credential_agents WHERE tenant_id = %s", (tenant_id,))
    return keys


def _tenant_destroyed(cur: Cursor, tenant_id: str) -> bool:
    cur.execute(
        "SELECT 1 FROM credential_tenants WHERE tenant_id = %s AND status = 'destroyed'",
        (tenant_id,),
    )
    return cur.fetchone() is not None


def apply_event(
    cur: Cursor, event: Envelope, fetch: Callable[[str], Mapping[str, Any] | None]
) -> None:
    """One of accounts' events (``CREDENTIALS``). ``fetch`` asks accounts for a key's
    credential, which its published event does not carry."""
    p = event.payload
    tenant_id = str(event.tenant_id)
    if event.type == "api_key_issued":
        cur.execute("SELECT 1 FROM credential_keys WHERE key_id = %s", (p["key_id"],))
        if cur.fetchone() is None:
            credential = fetch(str(p["key_id"]))
            if credential is not None:
                learn(cur, credential)
    elif event.type == "api_key_revoked":
        revoke_key(cur, tenant_id, str(p["agent_id"]), str(p["key_id"]))
    elif event.type == "agent_deactivated":
        deactivate_agent(cur, str(p["tenant_id"]), str(p["agent_id"]))
    elif event.type == "tenant_cancelled":
        tenant_state(cur, str(p["tenant_id"]), "cancelled", event.stream_version)
    elif event.type == "tenant_reactivated":
        tenant_state(cur, str(p["tenant_id"]), "active", event.stream_version)


# --- reading, and the projection's own state ---------------------------------------------------


class CredentialProjection:
    """The projection over the gateway's database, as a request and the gateway's timer use it."""

    def __init__(self, db: Database, api_key_secret: str, freshness: Freshness | None = None):
        self.db = db
        self._secret = api_key_secret
        self.freshness = freshness

    def authenticate(self, api_key: str) -> dict[str, Any]:
        """The identity a key stands for; ``Unauthorized`` for an unknown, revoked or inactive
        one (one error for all), ``ServiceUnavailable`` while the projection cannot be trusted."""
        if not api_key.startswith(apikeys.PREFIX) or len(api_key) > 200:
            raise Unauthorized("invalid credentials")
        behind = self.freshness.behind() if self.freshness is not None else None
        if behind is not None:
            CREDENTIAL_CHECKS.labels("unavailable").inc()
            raise ServiceUnavailable(UNAVAILABLE)
        try:
            with self.db.read() as cur:
                cur.execute(_AUTHENTICATE, (apikeys.keyed_hash(self._secret, api_key),))
                row = cur.fetchone()
        except DATABASE_UNAVAILABLE:
            CREDENTIAL_CHECKS.labels("unavailable").inc()
            raise ServiceUnavailable(UNAVAILABLE) from None
        if row is None or row[0] != "ready":
            CREDENTIAL_CHECKS.labels("unavailable").inc()
            raise ServiceUnavailable(UNAVAILABLE)
        _, key_id, agent_id, tenant_id, role, tenant_status, issuer_id, issued_at = row[:8]
        if key_id is None:
            CREDENTIAL_CHECKS.labels("refused").inc()
            raise Unauthorized("invalid credentials")
        CREDENTIAL_CHECKS.labels("accepted").inc()
        admin_since = row[8]
        return {
            "key_id": str(key_id),
            "agent_id": str(agent_id),
            "tenant_id": str(tenant_id),
            "role": role,
            "tenant_status": tenant_status,
            "key_issuer_id": str(issuer_id or agent_id),
            "key_issued_at": issued_at.isoformat() if issued_at else None,
            "admin_since": admin_since.isoformat() if admin_since else None,
        }

    def trusted(self) -> bool:
        """Whether keys can be checked now: built, and accounts' news of them being read."""
        try:
            status = self.status()
        except Exception:  # the database unreachable: not trusted, whatever the error
            return False
        return status == "ready" and (self.freshness is None or self.freshness.behind() is None)

    def change(self, write: Callable[..., Any], *args: Any) -> None:
        """One of the merges above, in a transaction of its own: committed before the route
        that made the change answers."""
        try:
            self.apply_news(write, *args)
        except DATABASE_UNAVAILABLE:
            # The client retries; a revocation's retry is applied here even though accounts
            # has it already (the routes' 404 and 409 paths).
            raise ServiceUnavailable("the gateway's database is unavailable") from None

    def apply_news(self, write: Callable[..., Any], *args: Any) -> None:
        """``change`` for a consumer of accounts' news: the database's own error gets out, so
        the kernel's consumer retries the message in-process through a restart; any other
        error would return it to the queue, where a few quick deliveries dead-letter it (a
        revocation then waits for a reconciliation while its key is accepted)."""
        with self.db.transaction() as cur:
            write(cur, *args)

    def status(self) -> str:
        with self.db.read() as cur:
            cur.execute("SELECT status FROM credential_projection")
            row = cur.fetchone()
        return row[0] if row else "stale"

    def request_rebuild(self) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE credential_projection SET status = 'stale', changed_at = now()")

    def rebuild_if_needed(self, page: Callable[[str | None, int], Mapping[str, Any]]) -> int | None:
        """Rebuild when the projection is stale, or was left half-rebuilt by a process that
        died; None when it was not needed or another process holds the rebuild."""
        if self.status() == "ready":
            return None
        with self._rebuild_lock() as held:
            if not held or self.status() == "ready":
                return None
            return self._rebuild(page)

    def bring_in_line(
        self,
        page: Callable[[str | None, int], Mapping[str, Any]],
        fetch: Callable[[str], Mapping[str, Any] | None],
        stopping: Callable[[], bool] = lambda: False,
    ) -> tuple[int, int]:
        """As a gateway process starts, before it serves: built (or waiting for the process
        that builds it), then reconciled with accounts. Its database may have been restored
        from a backup that still holds keys revoked since; this ends them."""
        while self.rebuild_if_needed(page) is None and self.status() != "ready":
            if stopping():
                raise RuntimeError("stopped while the credentials were rebuilt elsewhere")
            eventlet.sleep(0.5)
        return self._reconcile(page, fetch)

    def reconcile_if_due(
        self,
        page: Callable[[str | None, int], Mapping[str, Any]],
        fetch: Callable[[str], Mapping[str, Any] | None],
        every: dt.timedelta,
    ) -> tuple[int, int] | None:
        """Reconcile when the last reconciliation (any process's) is older than ``every``: news
        that never arrived (an event dead-lettered) is caught up with."""
        with self.db.read() as cur:
            cur.execute("SELECT reconciled_at, status FROM credential_projection")
            reconciled_at, status = cur.fetchone()
        if status != "ready" or (
            reconciled_at is not None and dt.datetime.now(dt.UTC) - reconciled_at < every
        ):
            return None
        # One process at a time: the others find it done when the lock is theirs.
        with self._rebuild_lock() as held:
            if not held:
                return None
            return self._reconcile(page, fetch)

    def _reconcile(
        self,
        page: Callable[[str | None, int], Mapping[str, Any]],
        fetch: Callable[[str], Mapping[str, Any] | None],
    ) -> tuple[int, int]:
        """Bring the rows in line with accounts without refusing meanwhile: every key accounts
        lists as authenticating someone is merged in, and every key the rows accept that the
        page covering it does not list is asked about one by one (the API may have issued it
        after the page was read) and ended unless accounts still says it authenticates."""
        began = dt.datetime.now(dt.UTC)
        learned = ended = 0
        after: str | None = None
        while True:
            result = page(after, REBUILD_PAGE)
            items = list(result["items"])
            upto = result["next"]  # the page covers key ids in (after, upto]; to the end if None
            with self.db.transaction() as cur:
                learn_many(cur, items)
                cur.execute(
                    "SELECT key_id FROM credential_keys WHERE active"
                    " AND (%s::uuid IS NULL OR key_id > %s::uuid)"
                    " AND (%s::uuid IS NULL OR key_id <= %s::uuid)"
                    " AND NOT key_id = ANY(%s::uuid[])",
                    (after, after, upto, upto, [c["key_id"] for c in items]),
                )
                unlisted = [str(row[0]) for row in cur.fetchall()]
            for key_id in unlisted:
                current = fetch(key_id)
                with self.db.transaction() as cur:
                    if current is not None:
                        learn(cur, current)
                    cur.execute(
                        "UPDATE credential_keys SET active = false, key_hash = NULL"
                        " WHERE key_id = %s AND %s",
                        (key_id, current is None),
                    )
                    cur.execute(
                        "SELECT 1 FROM credential_keys k JOIN credential_agents a USING (agent_id)"
                        " WHERE k.key_id = %s AND k.active AND a.active",
                        (key_id,),
                    )
                    ended += cur.fetchone() is None
            learned += len(items)
            if upto is None:
                break
            after = upto
        with self.db.transaction() as cur:
            cur.execute("UPDATE credential_projection SET reconciled_at = %s", (began,))
        if ended:
            log.warning(
                "credentials reconciled with accounts: %d keys no longer valid were ended"
                " (a restored database, or news that never arrived)",
                ended,
            )
        return learned, ended

    @contextlib.contextmanager
    def _rebuild_lock(self) -> Iterator[bool]:
        """The session advisory lock one process rebuilds or reconciles under: a process that
        dies releases it with its connection."""
        with self.db.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (_REBUILD_LOCK,))
                    held = bool(cur.fetchone()[0])
                    try:
                        yield held
                    finally:
                        if held:
                            cur.execute("SELECT pg_advisory_unlock(%s)", (_REBUILD_LOCK,))
            finally:
                conn.autocommit = False

    def _rebuild(self, page: Callable[[str | None, int], Mapping[str, Any]]) -> int:
        began, began_at = time.monotonic(), dt.datetime.now(dt.UTC)
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE credential_projection SET status = 'rebuilding', changed_at = now()"
            )
            # Destroyed tenants' rows and inactive agents' stay: a page read before a
            # destruction, a deactivation or an erasure must not bring their keys back.
            cur.execute("TRUNCATE credential_keys")
            cur.execute("DELETE FROM credential_agents WHERE active")
            cur.execute("DELETE FROM credential_tenants WHERE status <> 'destroyed'")
        count, after = 0, None
        while True:
            result = page(after, REBUILD_PAGE)
            with self.db.transaction() as cur:
                learn_many(cur, result["items"])
            count += len(result["items"])
            after = result["next"]
            if after is None:
                break
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE credential_projection SET status = 'ready', changed_at = now(),"
                " reconciled_at = %s",
                (began_at,),
            )
        log.info(
            "credentials rebuilt from accounts: %d keys in %.1fs", count, time.monotonic() - began
        )
        return count


def bring_in_line_at_start(store: EventSourcedStore, settings: Settings) -> None:
    """The gateway's own step of its start-up forgetting (``kernel.forgetting``), before it
    serves: ``bring_in_line`` with accounts over a standalone RPC client (the service's own
    proxies are not started yet). Tried again with the rest of the step until accounts answers."""
    with standalone_rpc(settings) as rpc:
        projection = CredentialProjection(store.db, settings.api_key_secret)
        learned, ended = projection.bring_in_line(
            rpc.accounts.credentials_page, rpc.accounts.credential, start_abandoned
        )
    log.info("credentials reconciled with accounts: %d keys listed, %d ended", learned, ended)


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.credentials rebuild``: every gateway refuses keys (503) until one of
    them has rebuilt the projection from accounts (within seconds: their timer does it)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.credentials", description=main.__doc__)
    parser.add_argument("command", choices=("rebuild",))
    parser.parse_args(argv)
    settings = Settings.from_env(service="gateway")
    db = Database(settings.database_dsn("gateway"), maxconn=1)
    try:
        CredentialProjection(db, settings.api_key_secret).request_rebuild()
    finally:
        db.close()
    print("rebuild requested: gateways refuse keys until it is done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
