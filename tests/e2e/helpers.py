"""What the e2e modules do again and again against a running stack, written once: the calls that
make a tenant, its people and its requests, the answers' shapes, and the instruments that read
what the stack stored, published and logged. Fixtures stay in conftest.py; a helper used by one
module stays in that module.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import requests
from kombu import Connection, Queue, binding
from nameko.standalone.rpc import ClusterRpcProxy
from psycopg2 import sql
from psycopg2.extensions import parse_dsn
from requests.adapters import HTTPAdapter

from gateway import problems
from kernel import topology
from kernel.config import Settings
from kernel.crypto.blind_index import BlindIndex
from kernel.crypto.fields import FieldCipher
from kernel.crypto.keystore import Keystore
from kernel.db import Database, drop_database, ensure_database
from kernel.testing import Infrastructure, client_traceparent, wait_until, world_env
from kernel.uow import EventSourcedStore
from services.billing import handlers as billing
from services.billing.catalogue import Catalogue
from services.billing.domain import next_month
from services.billing.events import REGISTRY as BILLING_EVENTS
from services.billing.projections import PROJECTIONS as BILLING_PROJECTIONS
from tests.e2e.conftest import Stack, running_stack

T = TypeVar("T", bound="Tap")

# A billing address no test's assertion depends on.
ADDRESS = {
    "line1": "9 Ledger Row",
    "line2": "Floor 2",
    "city": "Singapore",
    "postcode": "049315",
    "country": "SG",
}


# --- names and answers ------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def fresh_card() -> str:
    """A valid card number (Luhn) that no other request ever sent, so a trace of it is a leak."""
    body = "4" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    total = 0
    for index, char in enumerate(reversed(body)):  # the check digit will sit to the right
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    """The body of an answer that must be ``status`` ({} for one without a body)."""
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


PROBLEM_TYPES = {kind.type for kind in problems.KINDS}


def trace_of(response: requests.Response) -> str | None:
    """The trace id an answer names in its ``traceresponse`` header."""
    traceresponse = response.headers.get("traceresponse")
    return traceresponse.split("-")[1] if traceresponse else None


def assert_problem(response: requests.Response, status: int) -> dict[str, Any]:
    """The answer is ``status`` as problem+json with the four RFC 9457 members, a type of
    those ``/docs/problems`` lists, and the request's id (its ``X-Request-Id``) and trace id
    (its ``traceresponse``'s); returned without the last two."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "request_id", "trace_id"} <= set(body), body
    assert body["status"] == status
    assert body["type"] in PROBLEM_TYPES, body["type"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert body["trace_id"] == trace_of(response)
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    # What the problem says, without which request it was: two answers compare equal when
    # they tell a client the same thing.
    return {k: v for k, v in body.items() if k not in ("request_id", "trace_id")}


def traced(
    stack: Stack, method: str, path: str, key: str | None = None, **kwargs: Any
) -> tuple[requests.Response, str]:
    """A request with a trace id of its own, and that id: the gateway's request log line and
    the request's access entry name it."""
    trace_id, header = client_traceparent()
    headers = {**kwargs.pop("headers", {}), "traceparent": header}
    return stack.call(method, path, key=key, headers=headers, **kwargs), trace_id


class SourceAddress(HTTPAdapter):
    """Connections from a chosen loopback address, so the gateway sees that client IP."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


# --- tenants and their people -----------------------------------------------------------------


def current_version(stack: Stack) -> str:
    return ok(stack.call("GET", "/v1/policies/current"))["version"]


def sign_up(stack: Stack, **changes: Any) -> dict[str, Any]:
    """A new tenant that accepts the policy version current now (some modules publish new
    ones); the signup answer: tenant, agent and api_key."""
    return stack.sign_up(**{"accept_policy_version": current_version(stack), **changes})


def admin(stack: Stack) -> tuple[str, dict[str, Any]]:
    """A new tenant's admin key, and the signup answer."""
    created = stack.sign_up()
    return created["api_key"], created


def create_agent(stack: Stack, admin_key: str, role: str = "agent", **changes: Any) -> dict:
    """A new agent of ``role``, with the key it is created with."""
    body = {"name": unique("Agent"), "email": f"{unique('agent')}@example.com", "role": role}
    return ok(stack.call("POST", "/v1/agents", key=admin_key, json={**body, **changes}), 201)


def second_admin(stack: Stack, key: str) -> str:
    """The key of an admin created now with ``key`` who has claimed a key of her own: only such
    a key counts as a second pair of eyes."""
    created = create_agent(stack, key, "admin", name="Second Admin")
    return stack.claim_key(created["api_key"])


def issue_key(stack: Stack, admin_key: str, agent_id: str) -> dict[str, Any]:
    return ok(stack.call("POST", f"/v1/agents/{agent_id}/api-keys", key=admin_key), 201)


def post_contact(stack: Stack, key: str, **changes: Any) -> requests.Response:
    """The created answer for a new contact (its headers carry the ETag)."""
    body = {"name": unique("Contact"), "email": f"{unique('contact')}@example.com"}
    response = stack.call("POST", "/v1/contacts", key=key, json={**body, **changes})
    assert response.status_code == 201, response.text
    return response


def create_contact(stack: Stack, key: str, **changes: Any) -> dict[str, Any]:
    return post_contact(stack, key, **changes).json()


def make_contact(stack: Stack, key: str, name: str, **headers: str) -> dict[str, Any]:
    """A contact called ``name`` with an e-mail and a phone found nowhere else."""
    email = f"{name.lower().replace(' ', '.')}.{secrets.token_hex(3)}@example.com"
    phone = f"+44 20 {secrets.randbelow(10**4):04d} {secrets.randbelow(10**4):04d}"
    body = {"name": name, "email": email, "phone": phone}
    return ok(stack.call("POST", "/v1/contacts", key=key, json=body, headers=headers), 201)


# --- privacy requests -------------------------------------------------------------------------


def file(stack: Stack, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """A privacy request filed (or the same one again, for a repeat)."""
    response = stack.call("POST", "/v1/privacy/requests", key=key, json=body)
    assert response.status_code in (200, 202), response.text
    return response.json()


def completed(stack: Stack, key: str, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The request once it is no longer pending."""
    last: dict[str, Any] = {}

    def done() -> dict[str, Any] | None:
        body = ok(stack.call("GET", f"/v1/privacy/requests/{request_id}", key=key))
        last.update(body)
        return body if body["status"] != "pending" else None

    try:
        return wait_until(done, timeout=timeout, what=f"request {request_id} to complete")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the request as last read: {last}") from None


def require_approval(stack: Stack, key: str, types: list[str]) -> dict[str, Any]:
    body = {"requires_approval": types}
    return ok(stack.call("PUT", "/v1/privacy/approval-policy", key=key, json=body))


# --- what the stack stored --------------------------------------------------------------------


def rows(stack: Stack, service: str, query: str, *params: Any, purpose: str = "") -> list:
    """The rows a query finds in a service's database (``purpose`` "keys": its keystore)."""
    conn = psycopg2.connect(stack.settings.database_dsn(service, purpose))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def stored_text(dsn: str) -> dict[str, str]:
    """Every column of every table in a database, as text (bytea decoded), by table.column."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY table_name, column_name"
            )
            found = {}
            for table, column, data_type in cur.fetchall():
                value = sql.Identifier(column)
                text = (
                    sql.SQL("encode({}, 'escape')").format(value)
                    if data_type == "bytea"
                    else sql.SQL("{}::text").format(value)
                )
                cur.execute(
                    sql.SQL("SELECT coalesce(string_agg({}, ' '), '') FROM {}").format(
                        text, sql.Identifier(table)
                    )
                )
                found[f"{table}.{column}"] = cur.fetchone()[0]
            return found
    finally:
        conn.close()


@contextlib.contextmanager
def tickets_blind_index(stack: Stack) -> Iterator[BlindIndex]:
    """Keyed hashes as tickets computes them for its search index (``kernel.crypto.blind_index``),
    on its keystore with the keys the stack's processes use: to tell whether a digest of a word
    is in the index, and whether anyone could still compute one."""
    settings = Settings.from_env(world_env(stack.settings))
    keys = Database(settings.database_dsn("tickets", "keys"), maxconn=2)
    try:
        yield BlindIndex(Keystore(keys, settings.master_keys, cache_seconds=0.001))
    finally:
        keys.close()


def audit_holds(stack: Stack, text: str) -> bool:
    """Whether any ledger entry's content holds ``text``."""
    query = (
        "SELECT count(*) FROM ledger_entries_all WHERE strpos(encode(content, 'escape'), %s) > 0"
    )
    return rows(stack, "audit", query, text)[0][0] > 0


def recorded_trace_ids(stack: Stack) -> collections.Counter:
    """How many access entries the ledger holds per trace id."""
    found = rows(
        stack,
        "audit",
        "SELECT convert_from(content, 'UTF8')::jsonb -> 'payload' ->> 'trace_id'"
        " FROM ledger_entries_all"
        " WHERE type = 'access_logged'",
    )
    return collections.Counter(row[0] for row in found)


# --- what the stack published -----------------------------------------------------------------


class Tap:
    """Published events from a queue bound before the requests that emit them: what left a
    service, as its consumers get it (the outbox deletes what it published)."""

    def __init__(self, simple: Any):
        self._simple = simple
        self.events: list[tuple[str, dict[str, Any]]] = []  # (raw body, envelope)

    def _drain(self) -> None:
        with contextlib.suppress(self._simple.Empty):
            while True:
                message = self._simple.get(timeout=0.2)
                message.ack()
                self.events.append((message.body, json.loads(message.body)))

    def until(self, arrived: Callable[[list[dict[str, Any]]], bool], what: str) -> str:
        """Every body so far, once ``arrived`` holds for the envelopes."""

        def drained() -> bool:
            self._drain()
            return arrived([e for _, e in self.events])

        wait_until(drained, timeout=30, what=what)
        return " ".join(body for body, _ in self.events)


class AccessLog(Tap):
    """Access-log events."""

    def collect(self, user_agents: set[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
        """The events of the requests made with these user agents, once all have come."""

        def arrived() -> bool:
            self._drain()
            return user_agents <= {e["payload"]["user_agent"] for _, e in self.events}

        wait_until(arrived, timeout=timeout, what=f"access-log events of {sorted(user_agents)}")
        return {
            e["payload"]["user_agent"]: e
            for _, e in self.events
            if e["payload"]["user_agent"] in user_agents
        }


@contextlib.contextmanager
def tap(stack: Stack, routing_key: str, kind: type[T]) -> Iterator[T]:
    queue = Queue(
        unique("e2e.tap"),
        bindings=[binding(topology.events_exchange, routing_key=routing_key)],
        durable=False,
        auto_delete=False,
    )
    with Connection(stack.settings.amqp_uri) as conn:
        bound = queue(conn.channel())
        bound.declare()
        simple = conn.SimpleQueue(queue)
        try:
            yield kind(simple)
        finally:
            simple.close()
            bound.delete()


def access_log(stack: Stack) -> contextlib.AbstractContextManager[AccessLog]:
    return tap(stack, "gateway.access_logged", AccessLog)


# --- what the stack logged --------------------------------------------------------------------


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at ``path`` for a while, so that the processes
    started meanwhile write there for good (they inherit the descriptors)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(path, "ab") as sink:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def stack_logging_to(
    infrastructure: Infrastructure, log: Path, **overrides: str
) -> Iterator[Stack]:
    """A running stack (see ``running_stack``) whose processes all write their output to
    ``log``; this process's own output goes back where it was once they have started."""
    with contextlib.ExitStack() as exits:
        with output_to(log):
            running = exits.enter_context(running_stack(infrastructure, **overrides))
        yield running


def logged_line(log: Path, text: str) -> str:
    """The log once ``text`` is in it: the request line is written after the answer."""

    def content_with_text() -> str:
        content = log.read_text(errors="replace")
        return content if text in content else ""

    return wait_until(content_with_text, timeout=10, what=f"{text!r} in the services' log")


# --- billing's invoice run --------------------------------------------------------------------


def a_month_ahead() -> dt.datetime:
    """02:00 UTC on the first day of next month: this month's invoices are then due."""
    first = next_month(dt.datetime.now(dt.UTC).date())
    return dt.datetime(first.year, first.month, first.day, 2, tzinfo=dt.UTC)


@contextlib.contextmanager
def invoice_runner(stack: Stack) -> Iterator[Callable[[], int]]:
    """Issue every invoice due a month from now, as billing's hourly timer would then."""
    # The settings the service processes were started with (their master keys above all).
    settings = Settings.from_env(world_env(stack.settings))
    keys_db = Database(settings.database_dsn("billing", "keys"), maxconn=5)
    db = Database(settings.database_dsn("billing"), maxconn=5)
    store = EventSourcedStore(
        "billing",
        db,
        BILLING_EVENTS,
        FieldCipher(Keystore(keys_db, settings.master_keys, cache_seconds=0.001)),
        BILLING_PROJECTIONS,
    )

    def run() -> int:
        with ClusterRpcProxy({"AMQP_URI": settings.amqp_uri}) as cluster:
            return billing.run_invoices(
                store.unit_of_work,
                Catalogue.of(settings),
                cluster.accounts.billing_contact,
                a_month_ahead(),
            )

    try:
        yield run
    finally:
        db.close()
        keys_db.close()


def issue_invoices(stack: Stack) -> int:
    """Billing's invoice run once, a month ahead, against the stack's billing database."""
    with invoice_runner(stack) as run:
        return run()


# --- backups, as an operator takes and restores them ------------------------------------------


def pg(tool: str, dsn: str, *args: str) -> subprocess.CompletedProcess:
    params = parse_dsn(dsn)
    return subprocess.run(
        [
            tool,
            "-h",
            params["host"],
            "-p",
            str(params.get("port", 5432)),
            "-U",
            params["user"],
            *args,
        ],
        check=True,
        capture_output=True,
    )


def dump(stack: Stack, tmp_path, service: str) -> dict[str, Any]:
    """Backups of a service's data and keystore databases, as an operator's would be."""
    dumps = {}
    for purpose in ("", "keys"):
        dumps[purpose] = tmp_path / f"{service}{purpose or '_data'}.dump"
        pg(
            "pg_dump",
            stack.settings.database_dsn(service, purpose),
            "-Fc",
            "-f",
            str(dumps[purpose]),
            stack.settings.database_name(service, purpose),
        )
    return dumps


def restore(stack: Stack, service: str, dumps: dict[str, Any]) -> None:
    settings = stack.settings
    for purpose, file in dumps.items():
        name = settings.database_name(service, purpose)
        drop_database(settings.database_url, name)
        ensure_database(settings.database_url, name)
        pg("pg_restore", settings.database_dsn(service, purpose), "-d", name, str(file))
