"""A log per tenant (issue 23) against a real PostgreSQL: each tenant's own sequence, chain and
tree; verification per tenant and platform-wide, each finding a changed, deleted or reordered
entry in one tenant's log while another tenant's verification reads only its own entries and
stays intact; proofs through the platform checkpoint; the frozen single chain committed to; and
appends of different tenants that do not wait on one another.

Tampering is done as an attacker with database access would: in SQL, with the append-only
triggers switched off for that one transaction.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kernel.envelope import Envelope, new_envelope
from kernel.errors import RetryLater
from kernel.stores import prepare_databases
from kernel.testing import world_env
from services.audit import chain, cli, offline_verify
from services.audit.ledger import Ledger, open_ledger

MIGRATIONS = Path("services/audit/migrations")
BASE = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
TABLES = ("log_entries", "log_nodes", "platform_checkpoints", "platform_checkpoint_heads", "ledger")


@pytest.fixture
def ledger(world) -> Ledger:
    prepare_databases(world, "audit", MIGRATIONS)
    return open_ledger(world)


def events(n: int, tenant: uuid.UUID | None) -> list[Envelope]:
    return [
        new_envelope(
            type="thing_happened",
            schema_version=1,
            source="testsrc",
            stream_id=f"Thing-{uuid.uuid4()}",
            stream_version=1,
            tenant_id=tenant,
            actor_id=None,
            payload={"thing_id": f"t{i}", "n": i},
            occurred_at=BASE + dt.timedelta(minutes=i),
        )
        for i in range(n)
    ]


def tamper(ledger: Ledger, change: Callable[[Any], None]) -> None:
    with ledger.db.transaction() as cur:
        for table in TABLES:
            cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        change(cur)
        for table in TABLES:
            cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def edited(content: bytes) -> bytes:
    data = json.loads(bytes(content))
    data["payload"]["tampered"] = True
    return chain.canonical(data)


@pytest.fixture
def three_logs(ledger: Ledger) -> tuple[Ledger, uuid.UUID, uuid.UUID]:
    """Tenants A (9 entries) and B (5), and 3 platform entries; a checkpoint after the first
    6 of A, then everything checkpointed."""
    a, b = uuid.uuid4(), uuid.uuid4()
    a_events = events(9, a)
    assert ledger.logs.record_many(a_events[:6]) == [1, 2, 3, 4, 5, 6]
    assert ledger.logs.checkpoint() is not None
    assert ledger.logs.record_many(events(5, b)) == [1, 2, 3, 4, 5]
    assert [ledger.logs.record(e) for e in a_events[6:]] == [7, 8, 9]
    assert ledger.logs.record_many(events(3, None)) == [1, 2, 3]
    assert ledger.logs.checkpoint()["logs"] == 3
    return ledger, a, b


def test_each_tenant_has_its_own_sequence_and_a_redelivery_is_a_no_op(ledger: Ledger) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    first = events(3, a)
    # Interleaved tenants in one batch: each log counts its own.
    batch = [first[0], *events(2, b), first[1], first[2]]
    assert ledger.logs.record_many(batch) == [1, 1, 2, 2, 3]
    assert ledger.logs.record(first[1]) is None
    assert ledger.logs.record_many([first[0], first[0]]) == [None, None]
    with ledger.db.transaction() as cur:
        cur.execute("SELECT tenant_id, max(seq), count(*) FROM log_entries GROUP BY 1")
        assert {uuid.UUID(str(t)): (m, c) for t, m, c in cur.fetchall()} == {
            a: (3, 3),
            b: (2, 2),
        }
    assert ledger.logs.checkpoint() is not None
    assert ledger.logs.checkpoint() is None  # nothing changed since
    assert ledger.logs.verify_log(a)["ok"] is True


def test_verification_per_tenant_and_platform_wide_of_intact_logs(three_logs) -> None:
    ledger, a, b = three_logs
    report = ledger.logs.verify_log(a)
    assert report == {
        "tenant_id": str(a),
        "ok": True,
        "entries": 9,
        "verified_size": 9,
        "first_bad_seq": None,
        "first_bad_node_seq": None,
        "checkpoints": 2,
    }
    assert ledger.logs.verify_log(None)["entries"] == 3
    platform = ledger.logs.verify_platform()
    assert platform["ok"] is True
    assert (platform["logs"], platform["entries"], platform["checkpoints"]) == (3, 17, 2)


def _change(cur, a: uuid.UUID) -> None:
    cur.execute("SELECT content FROM log_entries WHERE tenant_id = %s AND seq = 4", (a,))
    cur.execute(
        "UPDATE log_entries SET content = %s WHERE tenant_id = %s AND seq = 4",
        (edited(cur.fetchone()[0]), a),
    )


def _change_and_rehash_the_tail(cur, a: uuid.UUID) -> None:
    """Entry 8 changed and every hash after it recomputed: the chain holds, the signed head
    (at 9) does not."""
    cur.execute(
        "SELECT seq, content, prev_hash FROM log_entries WHERE tenant_id = %s AND seq >= 8"
        " ORDER BY seq",
        (a,),
    )
    rows = cur.fetchall()
    prev = bytes(rows[0][2])
    for seq, content, _ in rows:
        content = edited(content) if seq == 8 else bytes(content)
        hash_ = chain.log_entry_hash(a, prev, seq, content)
        cur.execute(
            "UPDATE log_entries SET content = %s, prev_hash = %s, hash = %s, leaf_hash = %s"
            " WHERE tenant_id = %s AND seq = %s",
            (content, prev, hash_, chain.leaf_hash(content), a, seq),
        )
        prev = hash_


def _delete(cur, a: uuid.UUID) -> None:
    cur.execute("DELETE FROM log_entries WHERE tenant_id = %s AND seq = 5", (a,))


def _delete_tail(cur, a: uuid.UUID) -> None:
    cur.execute("DELETE FROM log_entries WHERE tenant_id = %s AND seq = 9", (a,))


def _reorder(cur, a: uuid.UUID) -> None:
    # Entries 3 and 6 swap places (through a free number: the key is checked per row).
    for old, new in ((3, 1000), (6, 3), (1000, 6)):
        cur.execute(
            "UPDATE log_entries SET seq = %s WHERE tenant_id = %s AND seq = %s",
            (new, a, old),
        )


@pytest.mark.parametrize(
    ("change", "first_bad"),
    [
        (_change, 4),
        (_change_and_rehash_the_tail, 7),
        (_delete, 5),
        (_delete_tail, 7),
        (_reorder, 3),
    ],
    ids=["changed", "changed-and-rehashed", "deleted", "tail-deleted", "reordered"],
)
def test_tampering_in_one_tenants_log_is_found_there_alone(three_logs, change, first_bad) -> None:
    ledger, a, b = three_logs
    tamper(ledger, lambda cur: change(cur, a))

    mine = ledger.logs.verify_log(a)
    assert mine["ok"] is False
    assert mine["first_bad_seq"] == first_bad

    # B's verification reads B's entries alone (its count), and A's log changes nothing there.
    other = ledger.logs.verify_log(b)
    assert other["ok"] is True
    assert other["entries"] == 5
    assert ledger.logs.verify_log(None)["ok"] is True

    platform = ledger.logs.verify_platform()
    assert platform["ok"] is False
    assert platform["bad_logs"] == [{"tenant_id": str(a), "first_bad_seq": first_bad}]
    assert platform["bad_checkpoints"] == []
    assert platform["legacy_ok"] is True


def test_a_changed_stored_node_is_found_where_proofs_would_read_it(three_logs) -> None:
    ledger, a, _ = three_logs

    def change(cur) -> None:
        # The node over A's entries 5..8 (level 2, index 1), which entry 8 completes.
        cur.execute(
            "UPDATE log_nodes SET hash = %s WHERE tenant_id = %s AND level = 2 AND idx = 1",
            (bytes(32), a),
        )

    tamper(ledger, change)
    report = ledger.logs.verify_log(a)
    assert (report["ok"], report["first_bad_seq"], report["first_bad_node_seq"]) == (
        False,
        None,
        8,
    )


def test_a_log_removed_whole_with_its_signed_heads_is_found(three_logs) -> None:
    ledger, a, b = three_logs

    def remove(cur) -> None:
        for table in ("log_entries", "log_nodes", "platform_checkpoint_heads", "log_heads"):
            cur.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (a,))

    tamper(ledger, remove)
    report = ledger.logs.verify_log(a)
    assert (report["ok"], report["entries"]) == (False, 0)
    platform = ledger.logs.verify_platform()
    assert (platform["ok"], platform["bad_checkpoints"]) == (False, [1, 2])


def test_a_forged_signed_head_is_found(three_logs) -> None:
    """Rewriting a tenant's log whole and the head a checkpoint signed for it breaks that
    checkpoint's tree of heads, hence its signature."""
    ledger, a, _ = three_logs

    def forge(cur) -> None:
        cur.execute(
            "UPDATE platform_checkpoint_heads SET head_hash = %s WHERE tenant_id = %s",
            (bytes(32), a),
        )

    tamper(ledger, forge)
    assert ledger.logs.verify_log(a)["ok"] is False
    platform = ledger.logs.verify_platform()
    assert platform["ok"] is False
    assert platform["bad_checkpoints"] == [1, 2]


def test_a_proof_goes_through_the_tenants_log_and_the_platform_checkpoint(three_logs) -> None:
    ledger, a, b = three_logs
    proof = ledger.logs.proof(a, 7)
    with ledger.db.transaction() as cur:
        cur.execute("SELECT content FROM log_entries WHERE tenant_id = %s AND seq = 7", (a,))
        content = bytes(cur.fetchone()[0])
    assert proof["tenant_log"]["size"] == 9
    assert len(proof["audit_path"]) <= 4  # the tenant's tree of 9, not the platform's 17
    assert ledger.logs.proof_holds(proof, content) is True
    assert ledger.logs.proof_holds(proof, edited(content)) is False
    other = dict(proof, tenant_id=str(b))
    assert ledger.logs.proof_holds(other, content) is False
    ledger.logs.record_many(events(1, b))
    with pytest.raises(RetryLater):
        ledger.logs.proof(b, 6)


def test_the_frozen_chain_is_committed_to_and_verified(ledger: Ledger) -> None:
    assert [ledger.record(e) for e in events(5, None)] == [1, 2, 3, 4, 5]
    ledger.checkpoint()
    signed = ledger.logs.checkpoint()
    assert signed["legacy_size"] == 5
    assert signed["legacy_root"] == ledger.latest_checkpoint()[1].hex()
    ledger.logs.record_many(events(2, uuid.uuid4()))
    assert ledger.logs.checkpoint()["legacy_size"] == 5
    assert ledger.logs.verify_platform()["ok"] is True

    def change(cur) -> None:
        cur.execute("SELECT content FROM ledger WHERE seq = 2")
        cur.execute("UPDATE ledger SET content = %s WHERE seq = 2", (edited(cur.fetchone()[0]),))

    tamper(ledger, change)
    platform = ledger.logs.verify_platform()
    assert (platform["ok"], platform["legacy_ok"], platform["bad_logs"]) == (False, False, [])


def _waiting_on_a_lock(ledger: Ledger) -> int:
    with ledger.db.transaction() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cur.fetchone()[0]


def test_appends_of_different_tenants_do_not_wait_on_one_another(ledger: Ledger) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    ledger.logs.record_many(events(1, a) + events(1, b))  # both heads exist
    done: dict[str, Any] = {}

    def append(name: str, tenant: uuid.UUID) -> None:
        done[name] = ledger.logs.record(events(1, tenant)[0])

    with ledger.db.connection() as held:
        with held.cursor() as cur:
            # A's append, its transaction left open: A's head stays locked.
            first = events(1, a)[0]
            assert ledger.logs.append(cur, [(first, None, chain.canonical(first.to_dict()))]) == [2]
            other = threading.Thread(target=append, args=("b", b))
            other.start()
            other.join(timeout=60)
            # B's append committed while A's transaction is still open.
            assert not other.is_alive()
            assert done["b"] == 2

            # Another append of A's does wait, until A's transaction ends.
            same = threading.Thread(target=append, args=("a", a))
            same.start()
            deadline = time.monotonic() + 60
            while _waiting_on_a_lock(ledger) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert same.is_alive()
            assert "a" not in done
        held.commit()
    same.join(timeout=60)
    assert not same.is_alive()
    assert done["a"] == 3
    ledger.logs.checkpoint()
    assert ledger.logs.verify_platform()["ok"] is True


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


def test_cli_verify_logs_exits_0_then_1_on_tampering_and_2_on_usage(ledger, in_world) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    ledger.logs.record_many(events(4, a) + events(3, b))
    code, out = run_cli("checkpoint-logs")
    assert (code, json.loads(out)["logs"]) == (0, 2)
    code, out = run_cli("verify-logs")
    assert (code, json.loads(out)["entries"]) == (0, 7)

    tamper(ledger, lambda cur: _change_seq_2(cur, a))
    code, out = run_cli("verify-logs")
    assert code == 1
    assert json.loads(out)["bad_logs"] == [{"tenant_id": str(a), "first_bad_seq": 2}]
    code, out = run_cli("verify-logs", "--tenant", str(b))
    assert (code, json.loads(out)["entries"]) == (0, 3)
    code, _ = run_cli("verify-logs", "--tenant", str(a))
    assert code == 1
    with pytest.raises(SystemExit) as usage:
        run_cli("verify-logs", "--tenant", "not-a-uuid")
    assert usage.value.code == 2


def _change_seq_2(cur, a: uuid.UUID) -> None:
    cur.execute("SELECT content FROM log_entries WHERE tenant_id = %s AND seq = 2", (a,))
    cur.execute(
        "UPDATE log_entries SET content = %s WHERE tenant_id = %s AND seq = 2",
        (edited(cur.fetchone()[0]), a),
    )


def offline(path: Path, keys: str) -> tuple[int, dict[str, Any] | None]:
    out = io.StringIO()
    code = offline_verify.main([str(path), "--keys", keys], out=out)
    return code, (json.loads(out.getvalue()) if out.getvalue().strip() else None)


def test_a_tenants_log_exported_verifies_offline_and_tampering_in_the_file_is_caught(
    ledger, in_world, tmp_path
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    ledger.logs.record_many(events(5, a) + events(3, b))
    ledger.logs.checkpoint()
    ledger.logs.record_many(events(4, a) + events(2, b))  # the export signs a checkpoint itself
    code, out = run_cli("export-log", str(tmp_path), "--tenant", str(a))
    assert code == 0
    summary = json.loads(out)
    path = Path(summary["path"])
    assert (path.name, summary["entries"], summary["heads"]) == (f"tenant-log-{a}.jsonl", 9, 2)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    header, heads, entries = lines[0], lines[1:3], lines[3:]
    assert header["tenant_id"] == str(a) and [h["size"] for h in heads] == [5, 9]
    assert [e["seq"] for e in entries] == list(range(1, 10))
    # Nothing of B's but hashes: its entries are not in the file.
    assert all(str(b) not in e["content"] for e in entries)
    keys = json.dumps(
        {"origin": ledger.origin, "keys": [k.as_json() for k in ledger.keys]}
    )  # what GET /v1/audit/public-key publishes
    assert offline(path, keys) == (
        0,
        {
            "ok": True,
            "tenant_id": str(a),
            "entries": 9,
            "heads": 2,
            "verified_until": 9,
            "first_bad_seq": None,
            "bad_head": None,
        },
    )

    def written(records: list[dict[str, Any]]) -> Path:
        changed = tmp_path / "changed.jsonl"
        changed.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return changed

    # An entry edited: its hash breaks there.
    edited_entries = [dict(e) for e in entries]
    edited_entries[2]["content"] = edited(edited_entries[2]["content"].encode()).decode()
    code, result = offline(written([header, *heads, *edited_entries]), keys)
    assert (code, result["first_bad_seq"]) == (1, 3)
    # Rehashed to the end with the log's own hash: the first signed head catches it.
    prev = bytes.fromhex(edited_entries[1]["hash"])
    for e in edited_entries[2:]:
        e["prev_hash"] = prev.hex()
        prev = chain.log_entry_hash(a, prev, e["seq"], e["content"].encode())
        e["hash"] = prev.hex()
    code, result = offline(written([header, *heads, *edited_entries]), keys)
    assert (code, result["first_bad_seq"], result["bad_head"]["size"]) == (1, 1, 5)
    # The tail cut with its entries but not its head: the signed size is never reached.
    code, result = offline(written([header, *heads, *entries[:7]]), keys)
    assert (code, result["first_bad_seq"]) == (1, 6)
    # A head whose checkpoint signature was altered.
    forged = json.loads(json.dumps(heads[1]))
    forged["checkpoint"]["root_hash"] = "00" * 32
    code, result = offline(written([header, heads[0], forged, *entries]), keys)
    assert code == 1 and result["bad_head"]["size"] == 9
    # Another tenant's log presented as A's: its hashes bind B, so it fails at once.
    code, out = run_cli("export-log", str(tmp_path / "b.jsonl"), "--tenant", str(b))
    b_lines = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    code, result = offline(written([{**b_lines[0], "tenant_id": str(a)}, *b_lines[1:]]), keys)
    assert code == 1
    # Keys that are not JSON: could not run.
    assert offline(path, "not json")[0] == 2
