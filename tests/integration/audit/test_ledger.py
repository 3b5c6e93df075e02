"""The audit ledger against a real PostgreSQL: exactly once, append-only, tampering found at the
right sequence number, inclusion proofs and signatures checked by a verifier written here from
RFC 6962 and RFC 8032 (sharing no code with ``services.audit.merkle``), day keys destroyed,
"who touched this person" queries, and the auditor's command line.

Tampering is done the way an attacker with database access would: straight in SQL, with the
append-only triggers switched off for that one transaction only.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.accesslog import access_event
from kernel.envelope import Envelope, new_envelope
from kernel.errors import NotFound, RetryLater
from kernel.stores import prepare_databases
from kernel.testing import world_env
from services.audit import access_keys, chain, cli
from services.audit.ledger import Ledger, open_ledger

MIGRATIONS = Path("services/audit/migrations")
BASE = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ERASED = "[erased]"


# --- the independent verifier (RFC 6962 section 2.1, RFC 8032 via `cryptography`) -------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc6962_leaf(content: bytes) -> bytes:
    return sha256(b"\x00" + content)


def rfc6962_node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc6962_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes, by the recursive definition."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = largest_power_of_two_below(len(leaves))
    return rfc6962_node(rfc6962_root(leaves[:k]), rfc6962_root(leaves[k:]))


def root_from_audit_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root that PATH(index, D[size]) leads to from ``leaf``.

    RFC 6962: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) when m < k, else
    PATH(m - k, D[k:n]) : MTH(D[0:k]); so the last element is the top-level sibling.
    """
    if size == 1:
        if path:
            raise ValueError("audit path too long")
        return leaf
    if not path:
        raise ValueError("audit path too short")
    k = largest_power_of_two_below(size)
    *inner, sibling = path
    if index < k:
        return rfc6962_node(root_from_audit_path(index, k, leaf, inner), sibling)
    return rfc6962_node(sibling, root_from_audit_path(index - k, size - k, leaf, inner))


def signed_message(checkpoint: dict[str, Any]) -> bytes:
    # The documented format: "ledgerdesk-checkpoint-v1\n<tree_size>\n<root hex>\n<signed_at>\n".
    return (
        f"ledgerdesk-checkpoint-v1\n{checkpoint['tree_size']}\n"
        f"{checkpoint['root_hash']}\n{checkpoint['signed_at']}\n"
    ).encode()


def public_key_of(seed_b64: str) -> str:
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def check_proof(proof: dict[str, Any], content: bytes, public_key: str) -> None:
    """Raise unless ``proof`` shows ``content`` in a checkpoint signed by ``public_key``."""
    leaf = rfc6962_leaf(content)
    assert proof["leaf_hash"] == leaf.hex()
    assert proof["leaf_index"] == proof["seq"] - 1
    checkpoint = proof["checkpoint"]
    assert 0 <= proof["leaf_index"] < checkpoint["tree_size"]
    path = [bytes.fromhex(node) for node in proof["audit_path"]]
    root = root_from_audit_path(proof["leaf_index"], checkpoint["tree_size"], leaf, path)
    assert root.hex() == checkpoint["root_hash"]
    assert checkpoint["public_key"] == public_key
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
        base64.b64decode(checkpoint["signature"]), signed_message(checkpoint)
    )


# --- building a ledger --------------------------------------------------------------------------


@pytest.fixture
def ledger(world) -> Ledger:
    prepare_databases(world, "audit", MIGRATIONS)
    return open_ledger(world)


def event(
    type_: str,
    payload: dict[str, Any],
    *,
    at: dt.datetime,
    tenant: uuid.UUID | None = None,
    source: str = "accounts",
    actor: str | None = None,
) -> Envelope:
    return new_envelope(
        type=type_,
        schema_version=1,
        source=source,
        stream_id=f"{type_}-{uuid.uuid4()}",
        stream_version=1,
        tenant_id=tenant,
        actor_id=actor,
        payload=payload,
        occurred_at=at,
    )


def access(
    *,
    at: dt.datetime,
    tenant: uuid.UUID | None,
    actor: str | None,
    route: str,
    resource_ids: Sequence[str] = (),
    method: str = "GET",
    status: int = 200,
    ip: str | None = "203.0.113.7",
    user_agent: str | None = "curl/8.5.0",
) -> Envelope:
    return access_event(
        tenant_id=tenant,
        actor_id=actor,
        method=method,
        route=route,
        resource_ids=list(resource_ids),
        status=status,
        ip=ip,
        user_agent=user_agent,
        trace_id=secrets.token_hex(16),
        at=at,
        trace={},
    )


def things(n: int, start: dt.datetime = BASE) -> list[Envelope]:
    return [
        event(
            "thing_happened",
            {"thing_id": f"t{i}", "n": i},
            source="testsrc",
            at=start + dt.timedelta(minutes=i),
        )
        for i in range(n)
    ]


def record_all(ledger: Ledger, envelopes: Sequence[Envelope]) -> list[int]:
    seqs = [ledger.record(e) for e in envelopes]
    assert None not in seqs
    return seqs  # type: ignore[return-value]


def mixed(n: int, tenants: Sequence[uuid.UUID]) -> list[Envelope]:
    """Events and accesses of several tenants, as the platform would send them."""
    out: list[Envelope] = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        at = BASE + dt.timedelta(minutes=i)
        person = str(uuid.uuid4())
        if i % 3 == 0:
            out.append(
                access(
                    at=at,
                    tenant=tenant,
                    actor=str(uuid.uuid4()),
                    route="/v1/contacts/<contact_id>",
                    resource_ids=[person],
                    ip=f"198.51.100.{i}",
                )
            )
        elif i % 3 == 1:
            payload = {"contact_id": person, "tenant_id": str(tenant)}
            out.append(event("contact_created", payload, tenant=tenant, at=at))
        else:
            out.append(
                event(
                    "thing_happened",
                    {"thing_id": f"t{i}", "n": i, "ratio": 0.5, "text": "naïve ☃"},
                    source="testsrc",
                    at=at,
                )
            )
    return out


# --- reading and tampering in SQL ---------------------------------------------------------------


@dataclasses.dataclass
class Row:
    seq: int
    event_id: uuid.UUID
    content: bytes
    prev_hash: bytes
    hash: bytes


VERDICT = ("ok", "entries", "head", "first_bad_seq", "first_bad_node_seq", "checkpoints")


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """A verification run's findings, without when it ran."""
    return {key: result[key] for key in VERDICT}


def rows(ledger: Ledger) -> dict[int, Row]:
    with ledger.db.transaction() as cur:
        cur.execute("SELECT seq, event_id, content, prev_hash, hash FROM ledger ORDER BY seq")
        return {
            r[0]: Row(r[0], r[1], bytes(r[2]), bytes(r[3]), bytes(r[4])) for r in cur.fetchall()
        }


TABLES = ("ledger", "checkpoints", "ledger_nodes")


def tamper(ledger: Ledger, change: Callable[[Any], None]) -> None:
    """Run ``change(cursor)`` with the append-only triggers off, in one transaction."""
    with ledger.db.transaction() as cur:
        for table in TABLES:
            cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        change(cur)
        for table in TABLES:
            cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def edited(content: bytes) -> bytes:
    """The same entry with one payload value changed, still canonical JSON."""
    data = json.loads(content)
    data["payload"]["tampered"] = True
    return chain.canonical(data)


def set_row(cur, seq: int, **columns: bytes) -> None:
    assignments = ", ".join(f"{name} = %s" for name in columns)
    cur.execute(f"UPDATE ledger SET {assignments} WHERE seq = %s", (*columns.values(), seq))


def forge_row(cur, seq: int, content: bytes, prev_hash: bytes, hash_: bytes) -> None:
    cur.execute(
        "INSERT INTO ledger (seq, event_id, type, service, tenant_id, actor_id, subject_ids, at,"
        " month, content, prev_hash, hash, leaf_hash)"
        " VALUES (%s, %s, 'thing_happened', 'testsrc', NULL, NULL, '{}', now(), '2026-03',"
        " %s, %s, %s, %s)",
        (seq, uuid.uuid4(), content, prev_hash, hash_, chain.leaf_hash(content)),
    )


def forged_content() -> bytes:
    return chain.canonical(things(1)[0].to_dict())


def shift_up(cur, from_seq: int) -> None:
    """Renumber rows ``from_seq ..`` one up (the primary key is checked row by row)."""
    cur.execute("UPDATE ledger SET seq = seq + 1000000 WHERE seq >= %s", (from_seq,))
    cur.execute("UPDATE ledger SET seq = seq - 999999 WHERE seq > 1000000")


def rewrite_from(cur, stored: dict[int, Row], k: int) -> None:
    """Edit entry ``k`` and recompute every hash from there on: a consistent forgery."""
    prev = stored[k - 1].hash if k > 1 else chain.GENESIS
    for seq in range(k, max(stored) + 1):
        content = edited(stored[seq].content) if seq == k else stored[seq].content
        new_hash = chain.entry_hash(prev, seq, content)
        set_row(
            cur,
            seq,
            content=content,
            prev_hash=prev,
            hash=new_hash,
            leaf_hash=chain.leaf_hash(content),
        )
        prev = new_hash


# --- exactly once ------------------------------------------------------------------------------


def test_a_redelivered_event_is_recorded_once(ledger):
    envelopes = things(5)
    assert record_all(ledger, envelopes) == [1, 2, 3, 4, 5]
    before = rows(ledger)

    assert ledger.record(envelopes[2]) is None
    # Same id, other content (a forged or garbled redelivery): still the first one stands.
    changed = dataclasses.replace(envelopes[2], payload={"thing_id": "x", "n": 99})
    assert ledger.record(changed) is None

    assert ledger.count() == 5
    assert rows(ledger) == before
    assert ledger.verify()["ok"] is True


def test_concurrent_writers_and_redeliveries_give_one_gap_free_chain(ledger):
    shared = things(40)
    own = [things(15, BASE + dt.timedelta(days=w + 1)) for w in range(6)]
    results: list[list[tuple[uuid.UUID, int | None]]] = [[] for _ in own]

    def write(w: int) -> None:
        order = shared[w::2] + own[w] + shared[(w + 1) % 2 :: 2]
        for envelope in order:
            results[w].append((envelope.event_id, ledger.record(envelope)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(len(own))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    recorded = [(eid, seq) for result in results for eid, seq in result if seq is not None]
    expected_ids = {e.event_id for e in shared} | {e.event_id for batch in own for e in batch}
    assert sorted(seq for _, seq in recorded) == list(range(1, len(expected_ids) + 1))
    assert {eid for eid, _ in recorded} == expected_ids
    assert len(recorded) == len(expected_ids)  # each shared event won exactly once
    stored = rows(ledger)
    assert {row.event_id for row in stored.values()} == expected_ids
    assert verdict(ledger.verify()) == {
        "ok": True,
        "entries": len(expected_ids),
        "head": {"seq": len(expected_ids), "hash": stored[len(expected_ids)].hash.hex()},
        "first_bad_seq": None,
        "first_bad_node_seq": None,
        "checkpoints": 0,
    }


# --- append-only in the database itself -------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET type = 'other' WHERE seq = 2",
        "UPDATE ledger SET content = content WHERE seq = 1",
        "DELETE FROM ledger WHERE seq = 3",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "UPDATE checkpoints SET signed_at = 'later'",
        "DELETE FROM checkpoints",
        "TRUNCATE checkpoints",
    ],
)
def test_the_database_refuses_to_change_history(ledger, statement):
    record_all(ledger, things(3))
    assert ledger.checkpoint() is not None
    before = rows(ledger)

    # Even a superuser (these tests connect as one) is refused while the triggers are on.
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="append-only"):
        with ledger.db.transaction() as cur:
            cur.execute(statement)

    assert rows(ledger) == before
    assert ledger.verify()["ok"] is True
    assert ledger.verify()["checkpoints"] == 1


# --- tampering found at the right sequence number ---------------------------------------------

N = 12


def swap(cur, stored: dict[int, Row], i: int, j: int, *columns: str) -> None:
    for a, b in ((i, j), (j, i)):
        set_row(cur, a, **{c: getattr(stored[b], c) for c in columns})


def renumber_swap(cur, i: int, j: int) -> None:
    cur.execute("UPDATE ledger SET seq = 1000000 WHERE seq = %s", (i,))
    cur.execute("UPDATE ledger SET seq = %s WHERE seq = %s", (i, j))
    cur.execute("UPDATE ledger SET seq = %s WHERE seq = 1000000", (j,))


def insert_in_middle(stored: dict[int, Row], k: int, honest: bool) -> Callable[[Any], None]:
    def change(cur) -> None:
        shift_up(cur, k)
        content = forged_content()
        prev = stored[k - 1].hash
        hash_ = chain.entry_hash(prev, k, content) if honest else secrets.token_bytes(32)
        forge_row(cur, k, content, prev, hash_)

    return change


# (what is done, the first bad sequence number chain.first_bad_seq documents for it)
CHAIN_TAMPERING: dict[str, tuple[Callable[[dict[int, Row]], Callable[[Any], None]], int]] = {
    "content of k edited": (
        lambda s: lambda cur: set_row(cur, 5, content=edited(s[5].content)),
        5,
    ),
    "content of k edited and its own hash recomputed": (
        lambda s: (
            lambda cur: set_row(
                cur,
                5,
                content=edited(s[5].content),
                hash=chain.entry_hash(s[5].prev_hash, 5, edited(s[5].content)),
            )
        ),
        6,
    ),
    "hash of k replaced": (lambda s: lambda cur: set_row(cur, 5, hash=bytes(32)), 5),
    "prev_hash of k replaced": (lambda s: lambda cur: set_row(cur, 5, prev_hash=bytes(32)), 5),
    "entry k deleted": (
        lambda s: lambda cur: cur.execute("DELETE FROM ledger WHERE seq = 5"),
        5,
    ),
    "first entry deleted": (
        lambda s: lambda cur: cur.execute("DELETE FROM ledger WHERE seq = 1"),
        1,
    ),
    "forged entry appended with a made-up hash": (
        lambda s: (
            lambda cur: forge_row(cur, N + 1, forged_content(), s[N].hash, secrets.token_bytes(32))
        ),
        N + 1,
    ),
    "forged entry appended with a made-up prev_hash": (
        lambda s: (
            lambda cur: forge_row(
                cur, N + 1, forged_content(), bytes(32), chain.entry_hash(bytes(32), N + 1, b"{}")
            )
        ),
        N + 1,
    ),
    "forged entry inserted at k, later ones renumbered": (
        lambda s: insert_in_middle(s, 5, honest=False),
        5,
    ),
    "forged entry with honest hashes inserted at k, later ones renumbered": (
        lambda s: insert_in_middle(s, 5, honest=True),
        6,
    ),
    "contents and hashes of i and j swapped": (
        lambda s: lambda cur: swap(cur, s, 3, 8, "content", "hash"),
        3,
    ),
    "contents, hashes and prev_hashes of i and j swapped": (
        lambda s: lambda cur: swap(cur, s, 3, 8, "content", "hash", "prev_hash"),
        3,
    ),
    "contents of i and j swapped, hashes left": (
        lambda s: lambda cur: swap(cur, s, 3, 8, "content"),
        3,
    ),
    "neighbours swapped": (
        lambda s: lambda cur: swap(cur, s, 6, 7, "content", "hash", "prev_hash"),
        6,
    ),
    "sequence numbers of i and j swapped": (lambda s: lambda cur: renumber_swap(cur, 3, 8), 3),
}


def test_an_untouched_ledger_verifies(ledger):
    record_all(ledger, mixed(N, [uuid.uuid4(), uuid.uuid4()]))
    result = ledger.verify()
    assert verdict(result) == {
        "ok": True,
        "entries": N,
        "head": {"seq": N, "hash": rows(ledger)[N].hash.hex()},
        "first_bad_seq": None,
        "first_bad_node_seq": None,
        "checkpoints": 0,
    }
    ledger.checkpoint()
    assert ledger.verify()["ok"] is True
    assert ledger.verify()["checkpoints"] == 1


@pytest.mark.parametrize("case", list(CHAIN_TAMPERING))
def test_chain_tampering_is_found_at_the_first_bad_seq(ledger, case):
    record_all(ledger, things(N))
    assert ledger.verify()["ok"] is True
    make_change, first_bad = CHAIN_TAMPERING[case]

    tamper(ledger, make_change(rows(ledger)))

    result = ledger.verify()
    assert (result["ok"], result["first_bad_seq"]) == (False, first_bad), result


# A ledger of 50 with checkpoints signed at 20 and 40 entries.
SIGNED = (20, 40)
TOTAL = 50


@pytest.fixture
def checkpointed(ledger) -> Ledger:
    envelopes = things(TOTAL)
    for size in SIGNED:
        record_all(ledger, envelopes[ledger.count() : size])
        assert ledger.checkpoint()["tree_size"] == size
    record_all(ledger, envelopes[ledger.count() :])
    assert verdict(ledger.verify()) == {
        "ok": True,
        "entries": TOTAL,
        "head": {"seq": TOTAL, "hash": rows(ledger)[TOTAL].hash.hex()},
        "first_bad_seq": None,
        "first_bad_node_seq": None,
        "checkpoints": 2,
    }
    return ledger


def chain_alone(ledger: Ledger) -> int | None:
    stored = rows(ledger)
    return chain.first_bad_seq(
        chain.StoredEntry(r.seq, r.content, r.prev_hash, r.hash) for r in stored.values()
    )


@pytest.mark.parametrize(
    "kept, first_bad",
    [
        # Rows 31..50 gone: the checkpoint at 20 still holds; the one at 40 cannot, so the
        # first entry no checkpoint vouches for any more is 21.
        (30, 21),
        # Below every checkpoint: nothing after the genesis is vouched for.
        (10, 1),
    ],
)
def test_truncating_the_tail_is_caught_by_a_checkpoint(checkpointed, kept, first_bad):
    tamper(checkpointed, lambda cur: cur.execute("DELETE FROM ledger WHERE seq > %s", (kept,)))

    assert chain_alone(checkpointed) is None  # a shorter chain is still a chain
    result = checkpointed.verify()
    assert (result["ok"], result["first_bad_seq"], result["entries"]) == (False, first_bad, kept)


def test_truncating_only_entries_after_the_newest_checkpoint_is_not_seen(checkpointed):
    # The documented limit: rows after the newest checkpoint are vouched for by nothing, so how
    # often checkpoints are signed bounds what can be cut off unseen.
    tamper(checkpointed, lambda cur: cur.execute("DELETE FROM ledger WHERE seq > 45"))
    assert checkpointed.verify()["ok"] is True


@pytest.mark.parametrize("k, first_bad", [(25, 21), (3, 1)])
def test_a_consistently_rewritten_chain_is_caught_by_a_checkpoint(checkpointed, k, first_bad):
    stored = rows(checkpointed)
    tamper(checkpointed, lambda cur: rewrite_from(cur, stored, k))

    assert chain_alone(checkpointed) is None  # every hash was recomputed: the chain holds
    result = checkpointed.verify()
    assert (result["ok"], result["first_bad_seq"]) == (False, first_bad), result


def test_a_rewritten_last_entry_is_caught_once_a_checkpoint_covers_it(ledger):
    record_all(ledger, things(N))
    ledger.checkpoint()
    stored = rows(ledger)
    tamper(ledger, lambda cur: rewrite_from(cur, stored, N))

    assert chain_alone(ledger) is None
    assert ledger.verify()["first_bad_seq"] == 1  # the only checkpoint no longer matches


def test_an_edit_inside_a_signed_range_is_reported_from_where_that_checkpoint_starts(
    checkpointed,
):
    # The chain alone says 30; the checkpoint at 40 no longer matches, and nothing after the
    # one at 20 is vouched for, so verify() reports the earlier, provable bound.
    stored = rows(checkpointed)
    tamper(checkpointed, lambda cur: set_row(cur, 30, content=edited(stored[30].content)))

    assert chain_alone(checkpointed) == 30
    assert checkpointed.verify()["first_bad_seq"] == 21


def test_an_edit_after_the_newest_checkpoint_is_reported_at_its_own_seq(checkpointed):
    stored = rows(checkpointed)
    tamper(checkpointed, lambda cur: set_row(cur, 45, content=edited(stored[45].content)))
    assert checkpointed.verify()["first_bad_seq"] == 45


def test_checkpoints_re_signed_with_another_key_do_not_vouch_for_a_rewritten_chain(
    checkpointed,
):
    stored = rows(checkpointed)
    forger = Ed25519PrivateKey.generate()
    forger_public = base64.b64encode(
        forger.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()

    def change(cur) -> None:
        rewrite_from(cur, stored, 3)
        cur.execute("SELECT content FROM ledger ORDER BY seq")
        leaves = [rfc6962_leaf(bytes(r[0])) for r in cur.fetchall()]
        cur.execute("DELETE FROM checkpoints")
        for size in SIGNED:
            view = {
                "tree_size": size,
                "root_hash": rfc6962_root(leaves[:size]).hex(),
                "signed_at": BASE.isoformat(),
            }
            cur.execute(
                "INSERT INTO checkpoints (tree_size, root_hash, signed_at, key_id, public_key,"
                " signature) VALUES (%s, %s, %s, 'forged', %s, %s)",
                (
                    size,
                    bytes.fromhex(view["root_hash"]),
                    view["signed_at"],
                    forger_public,
                    forger.sign(signed_message(view)),
                ),
            )

    tamper(checkpointed, change)

    result = checkpointed.verify()
    assert (result["ok"], result["first_bad_seq"]) == (False, 1), result


# --- inclusion proofs and checkpoint signatures -----------------------------------------------


def test_every_entry_has_a_proof_that_an_independent_verifier_accepts(ledger, world):
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    envelopes = mixed(53, [tenant_a, tenant_b])
    record_all(ledger, envelopes)
    stored = rows(ledger)
    public_key = public_key_of(world.audit_signing_key)

    # With no checkpoint yet there is no proof, and asking does not sign one: try again later.
    with pytest.raises(RetryLater) as refused:
        ledger.proof(None, 1)
    assert refused.value.retry_after == 60
    assert ledger.checkpoint()["tree_size"] == 53
    proofs = {seq: ledger.proof(None, seq) for seq in stored}
    for seq, proof in proofs.items():
        check_proof(proof, stored[seq].content, public_key)
        assert proof["checkpoint"]["tree_size"] == 53
    # The checkpoint's root is the RFC 6962 root of every entry's content, recomputed here.
    leaves = [rfc6962_leaf(stored[seq].content) for seq in sorted(stored)]
    assert proofs[1]["checkpoint"]["root_hash"] == rfc6962_root(leaves).hex()

    # The verifier is not a rubber stamp: a changed leaf, node or index is refused.
    proof = proofs[17]
    with pytest.raises(AssertionError):
        check_proof(proof, edited(stored[17].content), public_key)
    with pytest.raises(AssertionError):
        bad_path = [bytes(32).hex(), *proof["audit_path"][1:]]
        check_proof({**proof, "audit_path": bad_path}, stored[17].content, public_key)
    with pytest.raises(AssertionError):
        check_proof({**proof, "leaf_index": 17, "seq": 18}, stored[17].content, public_key)

    # Later entries wait for the next checkpoint; the older ones still prove against theirs.
    more = record_all(ledger, mixed(7, [tenant_a]))
    stored = rows(ledger)
    with pytest.raises(RetryLater):
        ledger.proof(None, more[0])
    assert ledger.proof(None, 53)["checkpoint"]["tree_size"] == 53
    assert ledger.checkpoint()["tree_size"] == 60
    for seq in (*more, 1, 53):
        proof = ledger.proof(None, seq)
        assert proof["checkpoint"]["tree_size"] == 60
        check_proof(proof, stored[seq].content, public_key)
    check_proof(proofs[40], stored[40].content, public_key)


def test_a_proof_is_scoped_to_the_tenant_that_asks(ledger):
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    record_all(ledger, mixed(6, [tenant_a, tenant_b]))
    ledger.checkpoint()
    mine = [e["seq"] for e in ledger.entries(str(tenant_a))[0]]
    theirs = [e["seq"] for e in ledger.entries(str(tenant_b))[0]]
    assert mine and theirs

    assert ledger.proof(str(tenant_a), mine[0])["seq"] == mine[0]
    with pytest.raises(NotFound):
        ledger.proof(str(tenant_a), theirs[0])
    with pytest.raises(NotFound):
        ledger.proof(None, 1000)


def test_a_tampered_signature_or_root_fails_the_independent_check(ledger, world):
    record_all(ledger, things(5))
    ledger.checkpoint()
    proof = ledger.proof(None, 3)
    content = rows(ledger)[3].content
    public_key = public_key_of(world.audit_signing_key)
    check_proof(proof, content, public_key)

    signature = bytearray(base64.b64decode(proof["checkpoint"]["signature"]))
    signature[0] ^= 1
    forged = {**proof["checkpoint"], "signature": base64.b64encode(signature).decode()}
    with pytest.raises(InvalidSignature):
        check_proof({**proof, "checkpoint": forged}, content, public_key)
    later = {**proof["checkpoint"], "signed_at": "2099-01-01T00:00:00+00:00"}
    with pytest.raises(InvalidSignature):
        check_proof({**proof, "checkpoint": later}, content, public_key)


# --- destroying days of the access log -------------------------------------------------------


DAY_ONE = dt.datetime(2026, 1, 20, 12, 0, tzinfo=dt.UTC)
DAY_TWO = dt.datetime(2026, 1, 21, 12, 0, tzinfo=dt.UTC)
END_OF_DAY_ONE = dt.datetime(2026, 1, 21, tzinfo=dt.UTC)


def days_of_accesses(ledger: Ledger, tenant: uuid.UUID | None) -> dict[str, list[Envelope]]:
    """A tenant's accesses over two days (and an event that is not an access)."""
    days: dict[str, list[Envelope]] = {"one": [], "two": []}
    for i in range(4):
        for day, start in (("one", DAY_ONE), ("two", DAY_TWO)):
            envelope = access(
                at=start + dt.timedelta(hours=i),
                tenant=tenant,
                actor=str(uuid.uuid4()),
                route="/v1/tickets/<ticket_id>",
                resource_ids=[str(uuid.uuid4())],
                ip=f"192.0.2.{i + 1}",
                user_agent=f"Mozilla/5.0 (agent {day} {i} {tenant})",
            )
            days[day].append(envelope)
            ledger.record(envelope)
    # A day boundary is UTC's: 23:30 on 20 January at UTC-2 is the 21st.
    late = dt.datetime(2026, 1, 20, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    envelope = access(at=late, tenant=tenant, actor=None, route="/v1/tenant", ip="192.0.2.99")
    days["two"].append(envelope)
    ledger.record(envelope)
    ledger.record(event("thing_happened", {"thing_id": "x", "n": 1}, source="testsrc", at=DAY_ONE))
    return days


def by_event_id(ledger: Ledger, tenant: uuid.UUID | None = None) -> dict[str, dict[str, Any]]:
    return {e["event_id"]: e for e in ledger.iter_entries(None if tenant is None else str(tenant))}


def readable(ledger: Ledger, envelopes: Sequence[Envelope]) -> list[bool]:
    """For each access, whether its IP and user agent still read as recorded (else erased)."""
    entries = by_event_id(ledger)
    out = []
    for envelope in envelopes:
        payload = entries[str(envelope.event_id)]["payload"]
        if (payload["ip"], payload["user_agent"]) == (ERASED, ERASED):
            out.append(False)
        else:
            assert payload["ip"] == envelope.payload["ip"]
            assert payload["user_agent"] == envelope.payload["user_agent"]
            out.append(True)
    return out


def test_purging_a_day_erases_its_ips_and_user_agents_and_everything_still_verifies(ledger, world):
    tenant = uuid.uuid4()
    days = days_of_accesses(ledger, tenant)
    assert readable(ledger, days["one"] + days["two"]) == [True] * 9
    # At rest they are ciphertext: neither an IP nor a user agent is in the stored bytes.
    for row in rows(ledger).values():
        assert b"192.0.2." not in row.content
        assert b"Mozilla" not in row.content
    ledger.checkpoint()
    before = rows(ledger)

    # A day goes once it has wholly ended before the cut-off: not a moment earlier.
    assert ledger.purge_access_log(END_OF_DAY_ONE - dt.timedelta(microseconds=1)) == 0
    assert readable(ledger, days["one"]) == [True] * 4
    assert ledger.purge_access_log(END_OF_DAY_ONE) == 1
    assert ledger.purge_access_log(END_OF_DAY_ONE) == 0  # already gone

    entries = by_event_id(ledger)
    assert readable(ledger, days["one"]) == [False] * 4
    for envelope in days["one"]:
        payload = entries[str(envelope.event_id)]["payload"]
        # Who did what to which resource stays readable.
        expected = {k: envelope.payload[k] for k in ("method", "route", "resource_ids", "status")}
        assert {k: payload[k] for k in expected} == expected
        assert payload["trace_id"] == envelope.payload["trace_id"]
        assert json.loads(json.dumps(entries[str(envelope.event_id)]))["payload"]["ip"] == ERASED
    assert readable(ledger, days["two"]) == [True] * 5

    assert rows(ledger) == before  # nothing stored changed: only a key was destroyed
    result = ledger.verify()
    assert (result["ok"], result["first_bad_seq"], result["checkpoints"]) == (True, None, 1)
    public_key = public_key_of(world.audit_signing_key)
    for seq, row in before.items():
        check_proof(ledger.proof(None, seq), row.content, public_key)


def test_each_tenant_loses_its_days_at_its_own_cut_off_and_a_destroyed_tenant_all_of_them(
    ledger,
):
    short, default, destroyed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    days = {tenant: days_of_accesses(ledger, tenant) for tenant in (short, default, destroyed)}
    anonymous = days_of_accesses(ledger, None)  # requests without a tenant: the default's

    # The default reaches the end of day one; the short-period tenant's own cut-off, day two.
    ledger.purge_access_log(END_OF_DAY_ONE, {short: END_OF_DAY_ONE + dt.timedelta(days=1)})
    assert readable(ledger, days[short]["one"] + days[short]["two"]) == [False] * 9
    for tenant in (default, destroyed):
        assert readable(ledger, days[tenant]["one"]) == [False] * 4
        assert readable(ledger, days[tenant]["two"]) == [True] * 5
    assert readable(ledger, anonymous["one"] + anonymous["two"]) == [False] * 4 + [True] * 5

    # A tenant with a longer period than the default keeps its days past the default's.
    longer = uuid.uuid4()
    kept = days_of_accesses(ledger, longer)
    ledger.purge_access_log(END_OF_DAY_ONE, {longer: END_OF_DAY_ONE - dt.timedelta(days=1)})
    assert readable(ledger, kept["one"] + kept["two"]) == [True] * 9

    assert ledger.destroy_tenant_access_log(destroyed) >= 1
    assert readable(ledger, days[destroyed]["two"]) == [False] * 5
    assert readable(ledger, days[default]["two"]) == [True] * 5
    # Whatever of it arrives late is recorded without them, and the chain holds.
    late = access(at=DAY_TWO, tenant=destroyed, actor=None, route="/v1/tenant", ip="192.0.2.77")
    assert ledger.record(late) is not None
    assert by_event_id(ledger)[str(late.event_id)]["payload"]["ip"] is None
    assert ledger.verify()["ok"] is True


def test_redelivery_of_an_access_event_after_its_day_was_purged_is_a_no_op(ledger):
    tenant = uuid.uuid4()
    days = days_of_accesses(ledger, tenant)
    count = ledger.count()
    ledger.purge_access_log(END_OF_DAY_ONE)

    assert ledger.record(days["one"][0]) is None
    assert ledger.count() == count


def test_entries_recorded_under_month_keys_are_purged_with_their_month(world, tmp_path):
    """The ledger before day keys: access entries under a key per calendar month, shared by
    every tenant. They keep it (the ledger is never rewritten), and purges and destructions
    still reach it."""
    first = tmp_path / "migrations"
    first.mkdir()
    (first / "0001_ledger.sql").write_text((MIGRATIONS / "0001_ledger.sql").read_text())
    prepare_databases(world, "audit", first)
    old = open_ledger(world)
    tenant, other, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    december = dt.datetime(2025, 12, 10, tzinfo=dt.UTC)
    legacy = [
        access(at=at, tenant=t, actor=None, route="/v1/tenant", ip=f"192.0.2.{n}")
        for n, (at, t) in enumerate(
            ((DAY_ONE, tenant), (DAY_ONE, third), (DAY_ONE, None), (december, other)),
            start=1,
        )
    ] + [access(at=december, tenant=third, actor=None, route="/v1/tenant", ip="192.0.2.9")]
    with old.db.transaction() as cur:
        prev = chain.GENESIS
        for seq, envelope in enumerate(legacy, start=1):
            month = envelope.occurred_at.strftime("%Y-%m")
            content = envelope.to_dict()
            content["payload"] = old.cipher.encrypt_fields(
                content["payload"],
                ("ip", "user_agent"),
                access_keys.ACCESS_LOG_MONTHS,
                uuid.uuid5(access_keys.ACCESS_LOG_MONTHS, month),
            )
            data = chain.canonical(content)
            entry_hash = chain.entry_hash(prev, seq, data)
            cur.execute(
                "INSERT INTO ledger (seq, event_id, type, service, tenant_id, actor_id,"
                " subject_ids, at, month, content, prev_hash, hash, leaf_hash) VALUES"
                " (%s, %s, 'access_logged', 'gateway', %s, NULL, '{}', %s, %s, %s, %s, %s, %s)",
                (
                    seq,
                    envelope.event_id,
                    envelope.tenant_id,
                    envelope.occurred_at,
                    month,
                    data,
                    prev,
                    entry_hash,
                    chain.leaf_hash(data),
                ),
            )
            prev = entry_hash

    prepare_databases(world, "audit", MIGRATIONS)  # the day keys' migration, on that ledger
    ledger = open_ledger(world)
    with ledger.db.transaction() as cur:
        cur.execute("SELECT name, count(*), min(ends_at) FROM access_log_keys GROUP BY name")
        assert sorted(cur.fetchall()) == [
            ("2025-12", 2, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
            ("2026-01", 3, dt.datetime(2026, 2, 1, tzinfo=dt.UTC)),  # one row per tenant in it
        ]
    new = days_of_accesses(ledger, tenant)
    assert readable(ledger, legacy) == [True] * 5

    # A destroyed tenant takes the months holding its entries with it, the others' too.
    ledger.destroy_tenant_access_log(other)
    assert readable(ledger, legacy) == [True, True, True, False, False]
    # Any tenant's cut-off past a month's end takes the whole shared month: early for the
    # others rather than late for that one.
    end_of_january = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert ledger.purge_access_log(END_OF_DAY_ONE, {tenant: end_of_january}) >= 1
    assert readable(ledger, legacy) == [False] * 5
    assert readable(ledger, new["one"] + new["two"]) == [False] * 9
    assert ledger.verify()["ok"] is True


# --- who touched this person ------------------------------------------------------------------


def test_entries_naming_a_subject_are_found_and_scoped_to_the_tenant(ledger):
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    contact, agent, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    at = BASE
    naming: list[int] = []

    def add(envelope: Envelope, names_contact: bool) -> None:
        nonlocal at
        at += dt.timedelta(minutes=1)
        seq = ledger.record(envelope)
        assert seq is not None
        if names_contact:
            naming.append(seq)

    add(
        event(
            "contact_created",
            {"contact_id": contact, "tenant_id": str(tenant_a)},
            tenant=tenant_a,
            actor=agent,
            at=at,
        ),
        True,
    )
    add(
        event(
            "contact_created",
            {"contact_id": other, "tenant_id": str(tenant_a)},
            tenant=tenant_a,
            actor=agent,
            at=at,
        ),
        False,
    )
    add(
        access(
            at=at,
            tenant=tenant_a,
            actor=agent,
            route="/v1/contacts/<contact_id>",
            resource_ids=[contact],
        ),
        True,
    )
    add(
        access(
            at=at,
            tenant=tenant_a,
            actor=agent,
            route="/v1/contacts/<contact_id>",
            resource_ids=[other],
        ),
        False,
    )
    ticket = {
        "ticket_id": str(uuid.uuid4()),
        "tenant_id": str(tenant_a),
        "requester_id": contact,
        "priority": "normal",
        "tags": [],
        "redactions": 0,
    }
    add(event("ticket_created", ticket, tenant=tenant_a, source="tickets", at=at), True)
    viewed = {
        "ticket_id": ticket["ticket_id"],
        "tenant_id": str(tenant_a),
        "agent_id": agent,
        "subject_ids": [contact, agent],
    }
    add(event("ticket_viewed", viewed, tenant=tenant_a, source="tickets", at=at), True)
    # Another tenant naming the same id (a forged or colliding id) stays out of A's answer.
    add(
        access(
            at=at,
            tenant=tenant_b,
            actor=str(uuid.uuid4()),
            route="/v1/contacts/<contact_id>",
            resource_ids=[contact],
        ),
        False,
    )

    found, next_after = ledger.entries(str(tenant_a), subject_id=contact)
    assert [e["seq"] for e in found] == naming
    assert next_after is None
    assert all(contact in e["subject_ids"] and e["tenant_id"] == str(tenant_a) for e in found)
    accesses = [e for e in found if e["type"] == "access_logged"]
    assert [(e["actor_id"], e["payload"]["ip"]) for e in accesses] == [(agent, "203.0.113.7")]

    assert len(ledger.entries(str(tenant_b), subject_id=contact)[0]) == 1
    assert len(ledger.entries(None, subject_id=contact)[0]) == len(naming) + 1
    assert ledger.entries(str(tenant_a), subject_id=str(uuid.uuid4()))[0] == []
    # The agent is named by what they did (as actor) and by the view record.
    assert len(ledger.entries(str(tenant_a), subject_id=agent)[0]) == 5


# --- the auditor's command line ---------------------------------------------------------------


@pytest.fixture
def in_world(world, monkeypatch):
    """Point ``Settings.from_env()`` (and so the CLI) at this test's world."""
    for name, value in world_env(world).items():
        if name.startswith("LEDGERDESK_"):
            monkeypatch.setenv(name, value)
    return world


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(args), out=out)
    return code, out.getvalue()


def test_cli_verify_exits_0_on_a_sound_ledger_and_1_naming_the_first_bad_seq(ledger, in_world):
    record_all(ledger, things(8))
    ledger.checkpoint()

    code, out = run_cli("verify")
    assert code == 0
    result = json.loads(out)
    assert (result["ok"], result["entries"], result["first_bad_seq"]) == (True, 8, None)

    stored = rows(ledger)
    tamper(ledger, lambda cur: set_row(cur, 6, content=edited(stored[6].content)))
    code, out = run_cli("verify")
    assert code == 1
    assert (json.loads(out)["ok"], json.loads(out)["first_bad_seq"]) == (False, 1)


def test_cli_verify_reports_the_chain_break_when_no_checkpoint_covers_it(ledger, in_world):
    record_all(ledger, things(8))
    tamper(ledger, lambda cur: cur.execute("DELETE FROM ledger WHERE seq = 4"))
    code, out = run_cli("verify")
    assert (code, json.loads(out)["first_bad_seq"]) == (1, 4)


@dataclasses.dataclass
class History:
    tenant_a: uuid.UUID
    tenant_b: uuid.UUID
    admin: str
    agent: str
    contact: str
    ticket: str
    moments: dict[str, dt.datetime]
    types_by_seq: dict[int, tuple[str, uuid.UUID | None, dt.datetime]]


@pytest.fixture
def history(ledger) -> History:
    """Two tenants' lives, one step a minute; A's agent is deactivated between status changes."""
    a, b = uuid.uuid4(), uuid.uuid4()
    admin, agent, contact, ticket = (str(uuid.uuid4()) for _ in range(4))
    b_ticket, b_contact = str(uuid.uuid4()), str(uuid.uuid4())
    steps: list[tuple[str, Envelope]] = []

    def step(name: str, type_: str, payload: dict, tenant: uuid.UUID | None, source="accounts"):
        at = BASE + dt.timedelta(minutes=len(steps))
        steps.append(
            (name, event(type_, payload, tenant=tenant, source=source, at=at, actor=admin))
        )

    step(
        "a_created",
        "tenant_created",
        {
            "tenant_id": str(a),
            "company": "A",
            "region": "uk",
            "plan": "starter",
            "policy_version": "2026-01",
            "admin_agent_id": admin,
        },
        a,
    )
    step(
        "b_created",
        "tenant_created",
        {
            "tenant_id": str(b),
            "company": "B",
            "region": "sg",
            "plan": "pro",
            "policy_version": "2026-01",
            "admin_agent_id": str(uuid.uuid4()),
        },
        b,
    )
    step("admin", "agent_created", {"agent_id": admin, "tenant_id": str(a), "role": "admin"}, a)
    step("agent", "agent_created", {"agent_id": agent, "tenant_id": str(a), "role": "agent"}, a)
    step("contact", "contact_created", {"contact_id": contact, "tenant_id": str(a)}, a)
    step("b_contact", "contact_created", {"contact_id": b_contact, "tenant_id": str(b)}, b)
    step(
        "ticket",
        "ticket_created",
        {
            "ticket_id": ticket,
            "tenant_id": str(a),
            "requester_id": contact,
            "priority": "high",
            "tags": [],
            "redactions": 0,
        },
        a,
        "tickets",
    )
    step(
        "b_ticket",
        "ticket_created",
        {
            "ticket_id": b_ticket,
            "tenant_id": str(b),
            "requester_id": b_contact,
            "priority": "low",
            "tags": [],
            "redactions": 0,
        },
        b,
        "tickets",
    )
    step(
        "opened",
        "ticket_status_changed",
        {"ticket_id": ticket, "tenant_id": str(a), "previous": "new", "status": "open"},
        a,
        "tickets",
    )
    step("deactivated", "agent_deactivated", {"agent_id": agent, "tenant_id": str(a)}, a)
    step(
        "solved",
        "ticket_status_changed",
        {"ticket_id": ticket, "tenant_id": str(a), "previous": "open", "status": "solved"},
        a,
        "tickets",
    )
    step(
        "b_solved",
        "ticket_status_changed",
        {"ticket_id": b_ticket, "tenant_id": str(b), "previous": "new", "status": "solved"},
        b,
        "tickets",
    )
    step(
        "plan",
        "billing_account_opened",
        {"tenant_id": str(a), "plan": "starter", "region": "uk"},
        a,
        "billing",
    )
    at = BASE + dt.timedelta(minutes=len(steps))
    steps.append(
        (
            "read",
            access(
                at=at,
                tenant=a,
                actor=admin,
                route="/v1/contacts/<contact_id>",
                resource_ids=[contact],
            ),
        )
    )

    types_by_seq = {}
    for _, envelope in steps:
        seq = ledger.record(envelope)
        assert seq is not None
        types_by_seq[seq] = (envelope.type, envelope.tenant_id, envelope.occurred_at)
    return History(
        a,
        b,
        admin,
        agent,
        contact,
        ticket,
        {name: e.occurred_at for name, e in steps},
        types_by_seq,
    )


def replay(*args: str) -> list[dict[str, Any]]:
    code, out = run_cli("replay", *args)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_cli_replay_streams_json_lines_with_filters(history, in_world):
    everything = replay()
    assert [e["seq"] for e in everything] == sorted(history.types_by_seq)
    assert [e["type"] for e in everything] == [t for t, _, _ in history.types_by_seq.values()]
    assert {
        "seq",
        "event_id",
        "at",
        "type",
        "service",
        "tenant_id",
        "subject_ids",
        "hash",
        "prev_hash",
        "payload",
        "actor_id",
    } <= set(everything[0])

    of_a = replay("--tenant", str(history.tenant_a))
    expected_a = [s for s, (_, t, _) in history.types_by_seq.items() if t == history.tenant_a]
    assert [e["seq"] for e in of_a] == expected_a
    # The access entry's IP is decrypted for the auditor.
    assert of_a[-1]["type"] == "access_logged"
    assert of_a[-1]["payload"]["ip"] == "203.0.113.7"

    typed = replay("--type", "ticket_status_changed,agent_deactivated")
    assert [e["type"] for e in typed] == [
        "ticket_status_changed",
        "agent_deactivated",
        "ticket_status_changed",
        "ticket_status_changed",
    ]
    both = replay("--tenant", str(history.tenant_b), "--type", "ticket_status_changed")
    assert [(e["tenant_id"], e["payload"]["status"]) for e in both] == [
        (str(history.tenant_b), "solved")
    ]

    start, end = history.moments["contact"], history.moments["opened"]
    window = replay("--from", start.isoformat(), "--to", end.isoformat())
    expected = [s for s, (_, _, at) in history.types_by_seq.items() if start <= at < end]
    assert [e["seq"] for e in window] == expected
    assert len(expected) == 4  # from is inclusive, to is exclusive
    offset = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert replay("--from", start.astimezone(offset).isoformat(), "--to", end.isoformat()) == (
        window
    )


def test_cli_replay_refuses_a_time_without_an_offset(history, in_world, capsys):
    with pytest.raises(SystemExit):
        run_cli("replay", "--from", "2026-03-02T09:00:00")
    assert "offset" in capsys.readouterr().err


def state_at(history: History, moment: dt.datetime, tenant: uuid.UUID | None = None):
    tenant = tenant or history.tenant_a
    code, out = run_cli("state", "--tenant", str(tenant), "--at", moment.isoformat())
    assert code == 0
    return json.loads(out)


def test_cli_state_rebuilds_a_tenant_as_of_a_moment(history, in_world):
    half = dt.timedelta(seconds=30)
    moments = history.moments

    empty = state_at(history, moments["a_created"] - half)
    assert (empty["tenant"], empty["agents"], empty["tickets"]) == ({}, [], [])

    before_open = state_at(history, moments["ticket"] + half)
    assert before_open["as_of"] == (moments["ticket"] + half).isoformat()
    assert before_open["tenant"]["status"] == "active"
    assert before_open["tenant"]["plan"] == "starter"
    assert [(t["id"], t["status"], t["priority"]) for t in before_open["tickets"]] == [
        (history.ticket, "new", "high")
    ]
    agents = {a["id"]: a for a in before_open["agents"]}
    assert agents[history.agent] == {"id": history.agent, "role": "agent", "active": True}
    assert agents[history.admin]["active"] is True
    assert [c["id"] for c in before_open["contacts"]] == [history.contact]

    opened = state_at(history, moments["opened"] + half)
    assert [t["status"] for t in opened["tickets"]] == ["open"]
    assert {a["id"]: a["active"] for a in opened["agents"]}[history.agent] is True

    deactivated = state_at(history, moments["deactivated"] + half)
    assert [t["status"] for t in deactivated["tickets"]] == ["open"]
    assert {a["id"]: a["active"] for a in deactivated["agents"]} == {
        history.admin: True,
        history.agent: False,
    }

    now = state_at(history, moments["read"] + half)
    assert [t["status"] for t in now["tickets"]] == ["solved"]
    assert now["subscription"] == {"plan": "starter", "region": "uk"}
    # Nothing of tenant B leaks into A's state, and B's own state is B's.
    assert [t["id"] for t in now["tickets"]] == [history.ticket]
    of_b = state_at(history, moments["read"] + half, history.tenant_b)
    assert (of_b["tenant"]["plan"], [t["status"] for t in of_b["tickets"]]) == ("pro", ["solved"])
    assert of_b["agents"] == []

    code, out = run_cli("state", "--tenant", str(history.tenant_a))  # --at defaults to now
    assert code == 0
    assert json.loads(out)["tickets"] == now["tickets"]
