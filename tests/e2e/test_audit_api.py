"""The audit API over real HTTP against the whole platform: who may read the ledger, what each
tenant sees, filters and paging, every request and every published event recorded exactly once,
verification, inclusion proofs checked by a verifier written here from RFC 6962, and "who
touched this person".

Every request the module makes sends a ``traceparent`` of its own, so its access-log entry can be
found by ``payload.trace_id``.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kombu import Connection, Exchange, Queue, binding

from kernel.config import Settings
from kernel.testing import Infrastructure, client_traceparent, wait_until
from services import platform
from tests.e2e.conftest import SIGNUP, Stack, running_stack
from tests.e2e.helpers import recorded_trace_ids, rows, unique

EVENTS_EXCHANGE = "ledgerdesk.events"
CHECKPOINT = 15
# Every service has an outbox; the gateway's carries the access log.
PUBLISHERS = (*platform.SERVICES, "gateway")


# --- the independent verifier (RFC 6962 section 2.1; Ed25519 through `cryptography`) -----------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_from_audit_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """Where PATH(index, D[size]) leads from ``leaf``; RFC 6962 builds the path as
    PATH(m, D[0:k]) : MTH(D[k:n]) for m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k])."""
    if size == 1:
        if path:
            raise ValueError("audit path too long")
        return leaf
    if not path:
        raise ValueError("audit path too short")
    k = largest_power_of_two_below(size)
    *inner, sibling = path
    if index < k:
        return sha256(b"\x01" + root_from_audit_path(index, k, leaf, inner) + sibling)
    return sha256(b"\x01" + sibling + root_from_audit_path(index - k, size - k, leaf, inner))


def check_proof(proof: dict[str, Any], content: bytes, public_key: str, origin: str) -> None:
    if proof["log"] == "tenant":
        check_tenant_proof(proof, content, public_key, origin)
        return
    leaf = sha256(b"\x00" + content)
    assert proof["leaf_hash"] == leaf.hex()
    assert proof["leaf_index"] == proof["seq"] - 1
    checkpoint = proof["checkpoint"]
    path = [bytes.fromhex(node) for node in proof["audit_path"]]
    root = root_from_audit_path(proof["leaf_index"], checkpoint["tree_size"], leaf, path)
    assert root.hex() == checkpoint["root_hash"]
    assert checkpoint["public_key"] == public_key
    message = (
        f"ledgerdesk-checkpoint-v1\n{checkpoint['tree_size']}\n"
        f"{checkpoint['root_hash']}\n{checkpoint['signed_at']}\n"
    ).encode()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
        base64.b64decode(checkpoint["signature"]), message
    )


def check_tenant_proof(proof: dict[str, Any], content: bytes, public_key: str, origin: str) -> None:
    """An entry of a tenant's own log: its path to the log's root, the log's head (its size,
    root and last hash, under the head domain) as a leaf of the platform checkpoint's tree and
    its path to that root, and the signature over the platform checkpoint's fields."""
    leaf = sha256(b"\x00" + content)
    assert proof["leaf_hash"] == leaf.hex()
    assert proof["leaf_index"] == proof["seq"] - 1
    log = proof["tenant_log"]
    path = [bytes.fromhex(node) for node in proof["audit_path"]]
    assert (
        root_from_audit_path(proof["leaf_index"], log["size"], leaf, path).hex()
        == (log["root_hash"])
    )
    head = sha256(
        b"\x00ledgerdesk.log-head.v1\x00"
        + uuid.UUID(proof["tenant_id"]).bytes
        + log["size"].to_bytes(8, "big")
        + bytes.fromhex(log["root_hash"])
        + bytes.fromhex(log["head_hash"])
    )
    checkpoint = proof["platform_checkpoint"]
    log_path = [bytes.fromhex(node) for node in proof["log_path"]]
    root = root_from_audit_path(proof["log_index"], checkpoint["logs"], head, log_path)
    assert root.hex() == checkpoint["root_hash"]
    assert checkpoint["public_key"] == public_key
    message = (
        f"ledgerdesk platform checkpoint v1\n{origin}\n{checkpoint['number']}\n"
        f"{checkpoint['logs']}\n{checkpoint['root_hash']}\n{checkpoint['legacy_size']}\n"
        f"{checkpoint['legacy_root']}\n{checkpoint['signed_at']}\n"
    ).encode()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
        base64.b64decode(checkpoint["signature"]), message
    )


def public_key_of(seed_b64: str) -> str:
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


# --- requests with a trace of their own ---------------------------------------------------------


@dataclasses.dataclass
class Sent:
    method: str
    path: str
    status: int
    trace_id: str
    user_agent: str
    tenant_id: str | None
    actor_id: str | None
    request_id: str = ""
    touches: tuple[str, ...] = ()


class Traced:
    """Sends each request with a unique traceparent and remembers what the ledger should say,
    under the trace id the gateway answers with (``traceresponse``): the one sent when the
    request is authenticated, one of the gateway's own when it is not."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.sent: list[Sent] = []
        self.callers: dict[str, tuple[str | None, str | None]] = {
            stack.settings.operator_token: (None, "operator")
        }

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any):
        trace_id, traceparent = client_traceparent()
        user_agent = f"audit-e2e/{trace_id[:12]}"
        headers = {
            "traceparent": traceparent,
            "User-Agent": user_agent,
        }
        response = self.stack.call(method, path, key, headers=headers, **kwargs)
        trace_id = response.headers["traceresponse"].split("-")[1]
        tenant_id, actor_id = self.callers.get(key or "", (None, None))
        if path.startswith("/v1/operator/") and actor_id != "operator":
            tenant_id, actor_id = None, None  # an API key is not looked up there
        # Ids in the path are what the request is about, and every id a JSON answer shows
        # (under "id" or "*_id", however nested): the gateway records them as such.
        touches = tuple(part for part in path.split("/") if is_uuid(part))
        if response.ok and response.headers.get("Content-Type") == "application/json":
            touches += tuple(ids_shown(response.json()))
        self.sent.append(
            Sent(
                method,
                path,
                response.status_code,
                trace_id,
                user_agent,
                tenant_id,
                actor_id,
                response.headers["X-Request-Id"],
                touches,
            )
        )
        return response

    def touched(self, *subject_ids: str) -> None:
        """The last request also named these people (what it created or showed)."""
        self.sent[-1].touches += subject_ids


@dataclasses.dataclass
class Scene:
    client: Traced
    tenant_a: str
    tenant_b: str
    admin_a: str
    admin_b: str
    agent: str
    auditor: str
    contact: str
    ticket: str
    contact_b: str


def ids_shown(document: Any) -> list[str]:
    if isinstance(document, dict):
        found = [
            str(uuid.UUID(value))
            for name, value in document.items()
            if (name == "id" or name.endswith("_id")) and isinstance(value, str) and is_uuid(value)
        ]
        return found + [i for value in document.values() for i in ids_shown(value)]
    if isinstance(document, list):
        return [i for item in document for i in ids_shown(item)]
    return []


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Tap:
    """A queue bound to every event before the first service starts: the ids of everything the
    world published, gathered as they are read (a message read is gone from the queue)."""

    QUEUE = "e2e.audit.published"

    def __init__(self, stack: Stack):
        self.stack = stack
        self._ids: set[uuid.UUID] = set()

    @classmethod
    def bind(cls, settings: Settings) -> None:
        every_event = binding(Exchange(EVENTS_EXCHANGE, type="topic", durable=True), "#")
        with Connection(settings.amqp_uri, connect_timeout=5) as conn:
            Queue(cls.QUEUE, bindings=[every_event], durable=True)(conn.channel()).declare()

    def ids(self) -> set[uuid.UUID]:
        with Connection(self.stack.settings.amqp_uri, connect_timeout=5) as conn:
            channel = conn.channel()
            while (message := channel.basic_get(self.QUEUE, no_ack=True)) is not None:
                self._ids.add(uuid.UUID(json.loads(message.body)["event_id"]))
        return set(self._ids)


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    # Checkpoints (and verification runs) every 15 s: often enough for proofs to come without
    # a long wait, seldom enough to see two reads with none between.
    with running_stack(
        infrastructure, before_start=Tap.bind, LEDGERDESK_CHECKPOINT_SECONDS=str(CHECKPOINT)
    ) as running:
        yield running


@pytest.fixture(scope="module")
def published(stack: Stack) -> Tap:
    return Tap(stack)


@pytest.fixture(scope="module")
def scene(stack: Stack) -> Scene:
    client = Traced(stack)
    version = client.call("GET", "/v1/policies/current").json()["version"]

    def sign_up(company: str) -> dict[str, Any]:
        admin = {"name": "Admin", "email": f"{unique('admin')}@example.com"}
        body = {**SIGNUP, "company": company, "admin": admin, "accept_policy_version": version}
        response = client.call("POST", "/v1/signup", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        tenant, agent = created["tenant"]["id"], created["agent"]["id"]
        client.callers[created["api_key"]] = (tenant, agent)
        client.sent[-1].tenant_id, client.sent[-1].actor_id = tenant, agent
        client.touched(agent)
        return created

    def add_agent(admin_key: str, role: str) -> str:
        body = {"name": unique("Agent"), "email": f"{unique('a')}@example.com", "role": role}
        response = client.call("POST", "/v1/agents", admin_key, json=body)
        assert response.status_code == 201, response.text
        agent = response.json()
        client.callers[agent["api_key"]] = (client.callers[admin_key][0], agent["id"])
        client.touched(agent["id"])
        return agent["api_key"]

    def add_contact(key: str) -> str:
        body = {"name": unique("Contact"), "email": f"{unique('c')}@example.com"}
        response = client.call("POST", "/v1/contacts", key, json=body)
        assert response.status_code == 201, response.text
        client.touched(response.json()["id"])
        return response.json()["id"]

    a, b = sign_up("Audited A Ltd"), sign_up("Other B Ltd")
    admin_a, admin_b = a["api_key"], b["api_key"]
    agent, auditor = add_agent(admin_a, "agent"), add_agent(admin_a, "auditor")
    contact = add_contact(agent)
    assert client.call("GET", f"/v1/contacts/{contact}", agent).status_code == 200
    missing = str(uuid.uuid4())
    assert client.call("GET", f"/v1/contacts/{missing}", agent).status_code == 404
    ticket_body = {"subject": "Refund", "body": "Please", "requester_id": contact}
    response = client.call("POST", "/v1/tickets", agent, json=ticket_body)
    assert response.status_code == 201, response.text
    client.touched(contact)
    ticket = response.json()["id"]
    assert client.call("GET", f"/v1/tickets/{ticket}", agent).status_code == 200
    client.touched(contact)
    assert client.call("GET", "/v1/contacts", admin_a).status_code == 200
    contact_b = add_contact(admin_b)
    # B asks for A's contact by id: refused, and recorded as B's access, not A's.
    assert client.call("GET", f"/v1/contacts/{contact}", admin_b).status_code == 404
    assert client.call("GET", "/v1/tenant").status_code == 401

    scene = Scene(
        client,
        a["tenant"]["id"],
        b["tenant"]["id"],
        admin_a,
        admin_b,
        agent,
        auditor,
        contact,
        ticket,
        contact_b,
    )
    settle(stack, client)
    return scene


# --- reading the ledger -------------------------------------------------------------------------


def settle(stack: Stack, client: Traced) -> None:
    """Wait until every request sent so far has its access entry in the ledger."""
    expected = {s.trace_id for s in client.sent}
    wait_until(
        lambda: expected <= set(recorded_trace_ids(stack)),
        timeout=60,
        interval=0.2,
        what="every request's access entry in the ledger",
    )


NIL = "00000000-0000-0000-0000-000000000000"


def content_of(stack: Stack, entry: dict[str, Any]) -> bytes:
    """An entry's stored content, found by its log and its seq there."""
    log_id = NIL if entry["log"] == "frozen" else (entry["tenant_id"] or NIL)
    query = "SELECT content FROM ledger_entries_all WHERE log = %s AND log_id = %s AND seq = %s"
    return bytes(rows(stack, "audit", query, entry["log"], log_id, entry["seq"])[0][0])


def pages(
    client: Traced, path: str, key: str, params: dict[str, str] | None = None, limit: int = 200
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a listing, following next_cursor; and how many pages it took."""
    items: list[dict[str, Any]] = []
    query = {**(params or {}), "limit": str(limit)}
    count = 0
    while True:
        response = client.call("GET", path, key, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        count += 1
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        if not body["next_cursor"]:
            return items, count
        assert len(body["items"]) == limit
        query = {**query, "cursor": body["next_cursor"]}


def by_trace(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["payload"]["trace_id"]: e for e in items if e["type"] == "access_logged"}


# --- who may read -------------------------------------------------------------------------------


def test_admins_and_auditors_read_the_ledger_agents_and_strangers_do_not(scene):
    client = scene.client
    paths = [
        "/v1/audit/entries",
        "/v1/audit/verify",
        f"/v1/audit/subjects/{scene.contact}/entries",
        "/v1/audit/entries/1/proof",
    ]
    for path in paths:
        assert client.call("GET", path, scene.agent).status_code == 403, path
        assert client.call("GET", path).status_code == 401, path
        assert client.call("GET", path, "not-a-key").status_code == 401, path
    for key in (scene.admin_a, scene.auditor):
        assert client.call("GET", "/v1/audit/entries", key).status_code == 200
        assert client.call("GET", "/v1/audit/verify", key).status_code == 200


def test_a_tenant_sees_only_its_own_entries(scene):
    settle(scene.client.stack, scene.client)
    a_traces = {s.trace_id for s in scene.client.sent if s.tenant_id == scene.tenant_a}
    b_traces = {s.trace_id for s in scene.client.sent if s.tenant_id == scene.tenant_b}
    mine, _ = pages(scene.client, "/v1/audit/entries", scene.auditor)
    theirs, _ = pages(scene.client, "/v1/audit/entries", scene.admin_b)
    assert mine and theirs
    assert {e["tenant_id"] for e in mine} == {scene.tenant_a}
    assert {e["tenant_id"] for e in theirs} == {scene.tenant_b}
    assert [e["seq"] for e in mine] == sorted({e["seq"] for e in mine})  # ledger order

    types = {e["type"] for e in mine}
    assert {"tenant_created", "agent_created", "contact_created", "ticket_created"} <= types
    assert {"ticket_viewed", "access_logged"} <= types
    assert {"log", "seq", "at", "type", "service", "actor_id", "tenant_id", "subject_ids",
            "hash", "prev_hash", "payload"} <= set(mine[0])  # fmt: skip
    # Recorded since the switch: each tenant's own log, numbered from 1.
    assert {e["log"] for e in mine} == {"tenant"} and mine[0]["seq"] == 1

    assert a_traces <= set(by_trace(mine))
    assert not b_traces & set(by_trace(mine))
    assert b_traces <= set(by_trace(theirs))
    # Events name B's contact only in B's ledger view.
    assert not any(scene.contact_b in e["subject_ids"] for e in mine)
    assert any(scene.contact_b in e["subject_ids"] for e in theirs)


def test_entries_filter_by_type_and_time(scene):
    client = scene.client
    # Once every earlier request is recorded, nothing recorded later can be older than these.
    settle(client.stack, client)
    everything, _ = pages(client, "/v1/audit/entries", scene.auditor)

    accesses, _ = pages(client, "/v1/audit/entries", scene.auditor, {"type": "access_logged"})
    assert accesses and {e["type"] for e in accesses} == {"access_logged"}
    wanted = {"contact_created", "ticket_created"}
    created, _ = pages(client, "/v1/audit/entries", scene.auditor, {"type": ",".join(wanted)})
    assert {e["type"] for e in created} == wanted
    assert [e["seq"] for e in created] == [e["seq"] for e in everything if e["type"] in wanted]
    assert scene.contact in {e["payload"].get("contact_id") for e in created}

    start = dt.datetime.fromisoformat(everything[2]["at"])
    end = dt.datetime.fromisoformat(everything[-3]["at"])
    window, _ = pages(
        client,
        "/v1/audit/entries",
        scene.auditor,
        {"from": start.isoformat(), "to": end.isoformat()},
    )
    expected = [e["seq"] for e in everything if start <= dt.datetime.fromisoformat(e["at"]) < end]
    assert expected and [e["seq"] for e in window] == expected

    refused = client.call("GET", "/v1/audit/entries", scene.auditor, params={"from": "yesterday"})
    assert refused.status_code == 422
    naive = client.call(
        "GET", "/v1/audit/entries", scene.auditor, params={"to": "2026-01-01T00:00:00"}
    )
    assert naive.status_code == 422


def test_cursor_paging_walks_the_whole_listing_in_order(scene):
    snapshot, single = pages(scene.client, "/v1/audit/entries", scene.auditor)
    assert single == 1 and len(snapshot) > 9
    paged, count = pages(scene.client, "/v1/audit/entries", scene.auditor, limit=4)
    seqs = [e["seq"] for e in paged]
    assert count >= len(snapshot) // 4
    assert seqs == sorted(set(seqs))  # no repeats, no going back
    # Entries recorded while paging (these very requests) may follow; none before is skipped.
    assert paged[: len(snapshot)] == snapshot
    forged = scene.client.call(
        "GET", "/v1/audit/entries", scene.auditor, params={"cursor": "not a cursor"}
    )
    assert forged.status_code == 422


# --- verification and proofs --------------------------------------------------------------------


PLATFORM_FIGURES = {"head", "checkpoints", "verified_size", "tree_size", "root_hash"}


def keys_of(document: Any) -> set[str]:
    if isinstance(document, dict):
        return set(document) | {k for value in document.values() for k in keys_of(value)}
    return set()


def tenant_verify(client: Traced, key: str) -> dict[str, Any]:
    response = client.call("GET", "/v1/audit/verify", key)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_tenant_verifies_its_own_entries_and_sees_no_platform_figures(scene):
    client = scene.client
    for key in (scene.auditor, scene.admin_a):
        shown = tenant_verify(client, key)
        assert not keys_of(shown) & PLATFORM_FIGURES, shown
        # Once a checkpoint covers some of the tenant's entries and the job has run.
        result = wait_until(
            lambda k=key: (
                (r := tenant_verify(client, k))["included"] and r["platform"]["verified_at"] and r
            ),
            timeout=4 * CHECKPOINT,
            interval=1,
            what="a checkpoint and a verification run",
        )
        assert result["scope"] == "tenant"
        assert (result["ok"], result["first_bad_seq"]) == (True, None), result
        assert result["platform"]["ok"] is True
        assert result["checkpoint"]["signature_ok"] is True
        assert result["included"] + result["pending"] == result["entries"]
        assert not keys_of(result) & PLATFORM_FIGURES, result
        settle(client.stack, client)
        mine, _ = pages(client, "/v1/audit/entries", key)
        assert 0 < result["entries"] <= len(mine)


def test_a_tenants_verify_does_not_move_when_another_tenant_writes(scene):
    client = scene.client
    for _ in range(6):
        settle(client.stack, client)
        before = tenant_verify(client, scene.auditor)
        settle(client.stack, client)  # that read is an entry of A's own
        for _ in range(4):
            body = {"name": unique("Contact"), "email": f"{unique('c')}@example.com"}
            assert client.call("POST", "/v1/contacts", scene.admin_b, json=body).status_code == 201
        settle(client.stack, client)
        after = tenant_verify(client, scene.auditor)
        if after.get("checkpoint") != before.get("checkpoint"):
            continue  # a checkpoint was signed meanwhile: that is news, and allowed to show
        # What moved is A's own read between the two, and when the job last ran (every tick,
        # whoever writes): nothing of B's.
        assert after["entries"] == before["entries"] + 1, (before, after)
        assert after["pending"] == before["pending"] + 1
        assert after["tenant_log"]["entries"] == before["tenant_log"]["entries"] + 1
        moving = ("entries", "pending", "platform", "tenant_log")
        same = {k: v for k, v in after.items() if k not in moving}
        assert same == {k: v for k, v in before.items() if k in same}
        assert after["platform"]["ok"] == before["platform"]["ok"]
        assert not keys_of(after) & PLATFORM_FIGURES
        return
    pytest.fail("a checkpoint was signed between every pair of reads")


def test_the_operator_sees_the_whole_verification(scene):
    token = scene.client.stack.settings.operator_token

    def verified() -> dict[str, Any] | None:
        response = scene.client.call("GET", "/v1/operator/audit/verify", token)
        assert response.status_code == 200, response.text
        result = response.json()
        logs = result["tenant_logs"]
        return result if result["ok"] is not None and logs and logs["entries"] else None

    result = wait_until(verified, timeout=4 * CHECKPOINT, interval=1, what="a verification run")
    assert (result["ok"], result["first_bad_seq"], result["first_bad_node_seq"]) == (
        True,
        None,
        None,
    )
    # A platform started since the switch: its frozen chain is empty, every entry is in a log.
    assert (result["entries"], result["head"]) == (0, None)
    logs = result["tenant_logs"]
    assert (logs["ok"], logs["bad"]) == (True, 0)
    [(count, tenants)] = rows(
        scene.client.stack, "audit", "SELECT count(*), count(DISTINCT tenant_id) FROM log_entries"
    )
    assert 0 < logs["entries"] <= count and 2 <= logs["logs"] <= tenants


def test_proofs_check_out_with_an_independent_verifier_and_the_published_key(scene):
    stack, client = scene.client.stack, scene.client
    public_key = public_key_of(stack.settings.audit_signing_key)
    mine, _ = pages(client, "/v1/audit/entries", scene.auditor)
    read_contact = next(s for s in client.sent if s.path == f"/v1/contacts/{scene.contact}")
    chosen = [
        by_trace(mine)[read_contact.trace_id],
        next(e for e in mine if e["type"] == "contact_created"),
        next(e for e in mine if e["type"] == "ticket_viewed"),
        mine[0],
        mine[-1],
    ]
    for entry in chosen:
        path = f"/v1/audit/entries/{entry['seq']}/proof"

        def proved(path: str = path) -> Any:
            response = client.call("GET", path, scene.auditor)
            if response.status_code == 409:
                # Not yet in a checkpoint: asking signs none, and says when to come back.
                assert int(response.headers["Retry-After"]) == CHECKPOINT
                assert response.headers["Content-Type"] == "application/problem+json"
                return None
            assert response.status_code == 200, response.text
            return response

        response = wait_until(proved, timeout=4 * CHECKPOINT, interval=1, what="a checkpoint")
        proof = response.json()
        assert (proof["seq"], proof["log"], proof["tenant_id"]) == (
            entry["seq"],
            "tenant",
            scene.tenant_a,
        )
        check_proof(proof, content_of(stack, entry), public_key, stack.settings.audit_origin)

    # A seq names an entry of the caller's own log: B's entry 1 is B's, never A's.
    theirs, _ = pages(client, "/v1/audit/entries", scene.admin_b)
    response = client.call("GET", f"/v1/audit/entries/{theirs[0]['seq']}/proof", scene.admin_b)
    assert response.status_code == 200, response.text
    assert response.json()["tenant_id"] == scene.tenant_b
    check_proof(
        response.json(), content_of(stack, theirs[0]), public_key, stack.settings.audit_origin
    )
    # Past the end of the log, or in a frozen chain the platform never wrote to: no such entry.
    for path in ("/v1/audit/entries/1000000000/proof", "/v1/audit/entries/1/proof?log=frozen"):
        response = client.call("GET", path, scene.auditor)
        assert response.status_code == 404, response.text
        assert response.headers["Content-Type"] == "application/problem+json"
    refused = client.call("GET", "/v1/audit/entries/1/proof?log=other", scene.auditor)
    assert refused.status_code == 422


# --- who touched this person --------------------------------------------------------------------


def test_the_entries_naming_a_contact_say_who_accessed_them(scene):
    client, stack = scene.client, scene.client.stack
    settle(stack, client)  # earlier subject queries are accesses to the contact too
    expected = {
        s.trace_id
        for s in client.sent
        if scene.contact in s.touches and s.tenant_id == scene.tenant_a
    }
    path = f"/v1/audit/subjects/{scene.contact}/entries"
    found, _ = pages(client, path, scene.auditor)

    assert all(scene.contact in e["subject_ids"] for e in found)
    assert {e["tenant_id"] for e in found} == {scene.tenant_a}
    accesses = by_trace(found)
    assert set(accesses) == expected
    read = next(s for s in client.sent if s.path == f"/v1/contacts/{scene.contact}")
    entry = accesses[read.trace_id]
    assert (entry["actor_id"], entry["payload"]["method"]) == (read.actor_id, "GET")
    assert entry["payload"]["route"] == "/v1/contacts/<string:contact_id>"
    assert entry["payload"]["user_agent"] == read.user_agent
    assert entry["payload"]["ip"] == "127.0.0.1"
    assert {"contact_created", "ticket_created", "ticket_viewed", "access_logged"} <= {
        e["type"] for e in found
    }

    # B's own (refused) look at A's contact is in B's answer, never A's; A sees nothing of B.
    theirs, _ = pages(client, path, scene.admin_b)
    b_read = next(
        s for s in client.sent if s.path == f"/v1/contacts/{scene.contact}" and s.status == 404
    )
    assert set(by_trace(theirs)) == {b_read.trace_id}
    b_contact_for_a, _ = pages(
        client, f"/v1/audit/subjects/{scene.contact_b}/entries", scene.auditor
    )
    assert b_contact_for_a == []
    nobody = client.call("GET", "/v1/audit/subjects/not-a-uuid/entries", scene.auditor)
    assert nobody.status_code == 404


# --- the operator -------------------------------------------------------------------------------


def test_operator_endpoints_see_every_tenant_and_need_the_token(scene):
    client = scene.client
    token = client.stack.settings.operator_token
    everything, _ = pages(client, "/v1/operator/audit/entries", token)
    tenants = {e["tenant_id"] for e in everything}
    assert {scene.tenant_a, scene.tenant_b, None} <= tenants
    response = client.call("GET", "/v1/operator/audit/verify", token)
    assert response.status_code == 200
    assert response.json()["ok"] is not False  # None before the job's first run

    for path in ("/v1/operator/audit/entries", "/v1/operator/audit/verify"):
        assert client.call("GET", path).status_code == 401
        assert client.call("GET", path, scene.admin_a).status_code == 401
        assert client.call("GET", path, token + "x").status_code == 401


# --- exactly once (these run last: they cover every request the module made) --------------------


def unmatched_entries(scene: Scene, user_agent: str) -> list[dict[str, Any]]:
    token = scene.client.stack.settings.operator_token
    everything, _ = pages(
        scene.client, "/v1/operator/audit/entries", token, {"type": "access_logged"}
    )
    return [e for e in everything if e["payload"]["user_agent"] == user_agent]


def test_a_request_to_no_route_is_recorded_once(scene):
    client = scene.client
    response = client.call("GET", "/v1/no/such/route", scene.admin_a)
    assert response.status_code == 404
    unmatched = client.sent.pop()  # found by its user agent, below, not by its trace
    entries = wait_until(
        lambda: unmatched_entries(scene, unmatched.user_agent),
        timeout=30,
        interval=0.5,
        what="the unmatched request's access entry",
    )
    assert len(entries) == 1
    assert (entries[0]["payload"]["route"], entries[0]["payload"]["status"]) == ("<unmatched>", 404)


def test_a_request_to_no_route_is_recorded_under_the_trace_id_it_was_answered_with(scene):
    client = scene.client
    assert client.call("GET", "/v1/no/route/either", scene.admin_a).status_code == 404
    unmatched = client.sent.pop()
    entries = wait_until(
        lambda: unmatched_entries(scene, unmatched.user_agent),
        timeout=30,
        interval=0.5,
        what="the unmatched request's access entry",
    )
    assert [e["payload"]["trace_id"] for e in entries] == [unmatched.trace_id]


def test_every_request_made_is_in_the_ledger_exactly_once(scene):
    client, stack = scene.client, scene.client.stack
    settle(stack, client)
    sent = list(client.sent)
    token = stack.settings.operator_token
    everything, _ = pages(client, "/v1/operator/audit/entries", token, {"type": "access_logged"})

    counts = collections.Counter(e["payload"]["trace_id"] for e in everything)
    assert {s.trace_id: counts[s.trace_id] for s in sent} == {s.trace_id: 1 for s in sent}
    in_database = recorded_trace_ids(stack)
    assert [s for s in sent if in_database[s.trace_id] != 1] == []
    entries = by_trace(everything)
    for s in sent:
        entry = entries[s.trace_id]
        payload = entry["payload"]
        recorded = (payload["method"], payload["status"], entry["tenant_id"], entry["actor_id"])
        assert recorded == (s.method, s.status, s.tenant_id, s.actor_id), (s, entry)
        assert payload["user_agent"] == s.user_agent
        # The id the answer named (X-Request-Id, and a problem's request_id) finds the request.
        assert entry["event_id"] == s.request_id
    assert len(sent) > 10


def test_every_published_event_of_every_service_is_in_the_ledger_exactly_once(scene, published):
    stack = scene.client.stack
    # What the tap saw: every event published in this world (the outboxes keep none they sent).
    published_ids = published.ids()

    def in_ledger() -> list[uuid.UUID]:
        found = rows(stack, "audit", "SELECT event_id FROM ledger_entries_all")
        return [uuid.UUID(str(r[0])) for r in found]

    wait_until(
        lambda: published_ids <= set(in_ledger()),
        timeout=60,
        interval=0.2,
        what="every published event in the ledger",
    )
    recorded = in_ledger()
    assert len(recorded) == len(set(recorded))
    # Nothing in the ledger that no service published (read again: requests go on meanwhile).
    assert set(recorded) <= published.ids()
    # Each tenant's log gap-free from 1; the frozen chain took nothing.
    per_log = rows(
        stack, "audit", "SELECT min(seq), max(seq), count(*) FROM log_entries GROUP BY tenant_id"
    )
    assert len(per_log) >= 3  # A's, B's and the platform's (the nil tenant's)
    assert all((low, high) == (1, count) for low, high, count in per_log)
    assert rows(stack, "audit", "SELECT count(*) FROM ledger") == [(0,)]
    sources = {
        json.loads(bytes(r[0]))["source"]
        for r in rows(stack, "audit", "SELECT content FROM log_entries")
    }
    assert {"accounts", "tickets", "billing", "gateway"} <= sources <= set(PUBLISHERS)


# --- tampering with one tenant's log (this runs last of all: it leaves that log broken) ---------


def tamper_audit(stack: Stack, query: str, *params: Any) -> None:
    """Run ``query`` on audit's database with the ledger's append-only triggers off."""
    conn = psycopg2.connect(stack.settings.database_dsn("audit"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE log_entries DISABLE TRIGGER USER")
            cur.execute(query, params)
            cur.execute("ALTER TABLE log_entries ENABLE TRIGGER USER")
    finally:
        conn.close()


def test_each_tenant_verifies_its_own_log_and_tampering_shows_in_that_tenants_and_the_platforms(
    scene,
):
    client, stack = scene.client, scene.client.stack
    token = stack.settings.operator_token
    for key, tenant in ((scene.auditor, scene.tenant_a), (scene.admin_b, scene.tenant_b)):
        settle(stack, client)
        result = tenant_verify(client, key)
        [(own,)] = rows(
            stack, "audit", "SELECT count(*) FROM log_entries WHERE tenant_id = %s", tenant
        )
        [(everyone,)] = rows(stack, "audit", "SELECT count(*) FROM log_entries")
        # Its own entries only: its log as it stood when read (that read is recorded after).
        assert result["ok"] is True and result["tenant_log"]["ok"] is True, result
        assert result["tenant_log"]["entries"] == result["entries"] <= own < everyone

    # A value added to the payload of one of A's entries in the database, its hash left as it was.
    [(seq,)] = rows(
        stack,
        "audit",
        "SELECT seq FROM log_entries WHERE tenant_id = %s AND type = 'contact_created'",
        scene.tenant_a,
    )
    tamper_audit(
        stack,
        "UPDATE log_entries SET content = convert_to(jsonb_set(convert_from(content, 'UTF8')"
        "::jsonb, '{payload,tampered}', 'true')::text, 'UTF8') WHERE tenant_id = %s AND seq = %s",
        scene.tenant_a,
        seq,
    )

    mine = tenant_verify(client, scene.auditor)
    assert mine["ok"] is False
    assert (mine["tenant_log"]["ok"], mine["tenant_log"]["first_bad_seq"]) == (False, seq), mine
    theirs = tenant_verify(client, scene.admin_b)
    assert theirs["ok"] is True and theirs["tenant_log"]["ok"] is True, theirs
    assert theirs["tenant_log"]["first_bad_seq"] is None

    def found() -> dict[str, Any] | None:
        response = client.call("GET", "/v1/operator/audit/verify", token)
        assert response.status_code == 200, response.text
        result = response.json()
        return result if result["tenant_logs"] and not result["tenant_logs"]["ok"] else None

    platform_wide = wait_until(found, timeout=4 * CHECKPOINT, interval=1, what="the job's run")
    assert platform_wide["ok"] is False and platform_wide["tenant_logs"]["bad"] == 1
