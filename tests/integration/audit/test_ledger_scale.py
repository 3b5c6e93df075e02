"""The ledger at scale (issue 17), against a real PostgreSQL: the tree's perfect subtrees stored
with the entries that complete them (and built for a ledger recorded before they were), roots
and proofs served from them, the verification job (off the request path, resumable, blind to
nothing it did not read again), and what a tenant sees of verification: its own entries only.

The tree is checked against RFC 6962's recursive definition written in ``test_ledger``, which
shares no code with ``services.audit.merkle``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kernel.errors import RetryLater
from kernel.stores import prepare_databases
from services.audit import chain
from services.audit import privacy as audit_privacy
from services.audit.ledger import Ledger, open_ledger
from tests.integration.audit.test_ledger import (
    MIGRATIONS,
    check_proof,
    edited,
    mixed,
    public_key_of,
    record_all,
    rfc6962_leaf,
    rfc6962_root,
    rows,
    set_row,
    tamper,
    things,
    verdict,
)


@pytest.fixture
def ledger(world) -> Ledger:
    prepare_databases(world, "audit", MIGRATIONS)
    return open_ledger(world)


def reference_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree above the leaves, by the recursive definition."""
    nodes = {}
    level = 1
    while (1 << level) <= len(leaves):
        width = 1 << level
        for index in range(len(leaves) // width):
            nodes[(level, index)] = rfc6962_root(leaves[index * width : (index + 1) * width])
        level += 1
    return nodes


def stored_nodes(ledger: Ledger) -> dict[tuple[int, int], bytes]:
    with ledger.db.transaction() as cur:
        cur.execute("SELECT level, idx, hash FROM ledger_nodes")
        return {(level, idx): bytes(h) for level, idx, h in cur.fetchall()}


def leaves_of(ledger: Ledger) -> list[bytes]:
    return [rfc6962_leaf(row.content) for _, row in sorted(rows(ledger).items())]


# --- the stored tree ----------------------------------------------------------------------------


def test_every_perfect_subtree_is_stored_with_the_entry_that_completes_it(ledger):
    tenant = uuid.uuid4()
    record_all(ledger, things(5))
    ledger.record_many(mixed(13, [tenant]))
    ledger.record_many(mixed(1, [tenant]))
    record_all(ledger, things(3))
    ledger.record_many(mixed(21, [tenant]))
    leaves = leaves_of(ledger)
    assert len(leaves) == 43
    assert stored_nodes(ledger) == reference_nodes(leaves)
    # A redelivery stores no node: the tree is the same.
    ledger.record(things(1)[0])
    first = mixed(1, [tenant])[0]
    assert ledger.record(first) is not None
    assert ledger.record(first) is None
    assert stored_nodes(ledger) == reference_nodes(leaves_of(ledger))

    # A checkpoint's root, from the stored nodes, is the recursive root of every entry.
    assert ledger.checkpoint()["root_hash"] == rfc6962_root(leaves_of(ledger)).hex()


def test_the_migration_builds_the_tree_of_a_ledger_recorded_before_it(world, tmp_path):
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for name in ("0001_ledger.sql", "0002_day_keys.sql"):
        (earlier / name).write_text((MIGRATIONS / name).read_text())
    prepare_databases(world, "audit", earlier)
    old = open_ledger(world)
    with old.db.transaction() as cur:
        prev = chain.GENESIS
        for seq, envelope in enumerate(things(37), start=1):
            data = chain.canonical(envelope.to_dict())
            entry_hash = chain.entry_hash(prev, seq, data)
            cur.execute(
                "INSERT INTO ledger (seq, event_id, type, service, subject_ids, at, content,"
                " prev_hash, hash, leaf_hash) VALUES (%s, %s, 'thing_happened', 'testsrc',"
                " '{}', now(), %s, %s, %s, %s)",
                (seq, envelope.event_id, data, prev, entry_hash, chain.leaf_hash(data)),
            )
            prev = entry_hash

    prepare_databases(world, "audit", MIGRATIONS)
    ledger = open_ledger(world)
    assert stored_nodes(ledger) == reference_nodes(leaves_of(ledger))
    # And the ledger carries on from it.
    record_all(ledger, things(12))
    assert stored_nodes(ledger) == reference_nodes(leaves_of(ledger))
    ledger.checkpoint()
    assert verdict(ledger.verify())["ok"] is True


def test_proofs_are_served_from_the_stored_nodes(ledger, world):
    record_all(ledger, things(22))
    ledger.checkpoint()
    public_key = public_key_of(world.audit_signing_key)
    stored = rows(ledger)
    for seq in stored:
        check_proof(ledger.proof(None, seq), stored[seq].content, public_key)
    # Entry 3's path starts at its sibling, leaf 4, and goes on through the node over 1..2, the
    # node over 5..8 and so on: a changed stored node is what the proof then carries (and what
    # the verifier rejects, and the job reports).
    tamper(ledger, lambda cur: cur.execute("UPDATE ledger_nodes SET hash = %s", (bytes(32),)))
    proof = ledger.proof(None, 3)
    assert proof["audit_path"][1] == bytes(32).hex()
    with pytest.raises(AssertionError):
        check_proof(proof, stored[3].content, public_key)
    result = ledger.verify()
    assert (result["ok"], result["first_bad_seq"], result["first_bad_node_seq"]) == (False, None, 2)


def test_consistency_proofs_between_checkpoints_verify(ledger):
    from services.audit import merkle

    record_all(ledger, things(11))
    old = ledger.checkpoint()
    record_all(ledger, things(18))
    new = ledger.checkpoint()
    proof = ledger.consistency(old["tree_size"], new["tree_size"])
    assert merkle.verify_consistency(
        11, 29, bytes.fromhex(old["root_hash"]), bytes.fromhex(new["root_hash"]), proof
    )
    assert proof == merkle.consistency_proof(leaves_of(ledger), 11)


# --- the verification job -----------------------------------------------------------------------


def test_the_report_is_the_last_runs_result_and_a_read_runs_nothing(ledger):
    before = ledger.verification_report()
    assert (before["ok"], before["finished_at"], before["head"]) == (None, None, None)
    record_all(ledger, things(9))
    ledger.checkpoint()
    ran = ledger.verify()
    assert verdict(ran)["ok"] is True and ran["entries"] == 9 and ran["verified_size"] == 9
    assert ledger.verification_report() == ran

    # Tampered after the run: the report is still the run's, until the job runs again.
    stored = rows(ledger)
    tamper(ledger, lambda cur: set_row(cur, 4, content=edited(stored[4].content)))
    record_all(ledger, things(2))
    assert ledger.verification_report() == ran
    again = ledger.verify()
    assert (again["ok"], again["first_bad_seq"]) == (False, 1)  # the checkpoint at 9 breaks
    assert ledger.verification_report() == again


def test_a_resumed_run_reads_only_what_was_appended_and_a_run_from_zero_reads_all(ledger):
    record_all(ledger, things(10))
    ledger.checkpoint()
    assert ledger.verify()["ok"] is True
    record_all(ledger, things(7))
    ledger.checkpoint()
    resumed = ledger.verify(from_zero=False)
    assert (resumed["ok"], resumed["from_zero"], resumed["entries"]) == (True, False, 17)
    assert (resumed["checkpoints"], resumed["verified_size"]) == (2, 17)

    # Row 5 changed (its hash too, so the link to 6 breaks): a resumed run trusts the prefix
    # it verified and does not see it; the run from zero does. That is why the timer runs
    # one from zero every day.
    stored = rows(ledger)
    forged = edited(stored[5].content)

    def change(cur: Any) -> None:
        set_row(cur, 5, content=forged, hash=chain.entry_hash(stored[4].hash, 5, forged))

    tamper(ledger, change)
    record_all(ledger, things(3))
    assert ledger.verify(from_zero=False)["ok"] is True
    full = ledger.verify()
    assert (full["ok"], full["first_bad_seq"], full["from_zero"]) == (False, 1, True)
    # After a run that failed, every run reads from zero until the ledger is whole again.
    after = ledger.verify(from_zero=False)
    assert (after["ok"], after["first_bad_seq"], after["from_zero"]) == (False, 1, True)


def test_an_appended_entry_that_breaks_the_chain_is_found_by_a_resumed_run(ledger):
    record_all(ledger, things(6))
    ledger.checkpoint()
    ledger.verify()
    record_all(ledger, things(6))
    stored = rows(ledger)
    tamper(ledger, lambda cur: set_row(cur, 9, content=edited(stored[9].content)))
    result = ledger.verify(from_zero=False)
    assert (result["ok"], result["first_bad_seq"], result["from_zero"]) == (False, 9, False)


def test_the_scheduled_run_starts_from_zero_once_a_day(ledger):
    record_all(ledger, things(4))
    assert ledger.scheduled_verification()["from_zero"] is True
    record_all(ledger, things(4))
    assert ledger.scheduled_verification()["from_zero"] is False
    ledger.day_seconds = 0
    assert ledger.scheduled_verification()["from_zero"] is True


# --- what a tenant sees (issue 17, finding 2) ----------------------------------------------------

PLATFORM_FIGURES = {"head", "checkpoints", "verified_size", "tree_size", "root_hash"}


def keys_of(document: Any) -> set[str]:
    if isinstance(document, dict):
        return set(document) | {k for value in document.values() for k in keys_of(value)}
    return set()


def test_a_tenants_report_does_not_move_when_another_tenant_writes(ledger):
    a, b = uuid.uuid4(), uuid.uuid4()
    record_all(ledger, mixed(12, [a, b]))
    ledger.checkpoint()
    ledger.verify()
    record_all(ledger, mixed(3, [a]))  # A's own, not yet in a checkpoint

    before = ledger.tenant_report(str(a))
    assert not keys_of(before) & PLATFORM_FIGURES
    assert before["scope"] == "tenant"
    assert (before["ok"], before["entries"], before["included"], before["pending"]) == (
        True,
        6,
        4,
        2,
    )
    assert before["platform"]["ok"] is True

    # B writes, a lot: A's report is the same, to the byte.
    ledger.record_many(mixed(40, [b]))
    record_all(ledger, mixed(5, [b]))
    assert ledger.tenant_report(str(a)) == before

    # A checkpoint covers A's pending entries: that, and only when it was signed, is news.
    ledger.checkpoint()
    after = ledger.tenant_report(str(a))
    assert (after["ok"], after["entries"], after["included"], after["pending"]) == (True, 6, 6, 0)
    assert after["checkpoint"]["signed_at"] != before["checkpoint"]["signed_at"]
    assert not keys_of(after) & PLATFORM_FIGURES


def test_a_tenants_report_finds_its_own_tampered_entry_and_not_anothers(ledger):
    a, b = uuid.uuid4(), uuid.uuid4()
    record_all(ledger, mixed(10, [a, b]))
    ledger.checkpoint()
    ledger.verify()
    mine = [e["seq"] for e in ledger.entries(str(a))[0]]
    theirs = [e["seq"] for e in ledger.entries(str(b))[0]]
    stored = rows(ledger)

    tamper(ledger, lambda cur: set_row(cur, theirs[1], content=edited(stored[theirs[1]].content)))
    report = ledger.tenant_report(str(a), limit=2)
    assert (report["ok"], report["first_bad_seq"], report["included"]) == (True, None, 2)

    # A's own entry, edited before this view reached it: found, and it stays in the report.
    tamper(ledger, lambda cur: set_row(cur, mine[2], content=edited(stored[mine[2]].content)))
    report = ledger.tenant_report(str(a))
    assert (report["ok"], report["first_bad_seq"], report["included"], report["pending"]) == (
        False,
        mine[2],
        len(mine) - 1,
        0,
    )
    assert ledger.tenant_report(str(a)) == report
    # The platform job sees B's too when it next runs, and A learns that (not where, nor how
    # much).
    ledger.verify()
    report = ledger.tenant_report(str(a))
    assert (report["first_bad_seq"], report["platform"]["ok"]) == (mine[2], False)


def test_an_entry_edited_after_the_tenants_view_proved_it_is_the_platform_jobs_finding(ledger):
    a, b = uuid.uuid4(), uuid.uuid4()
    record_all(ledger, mixed(10, [a, b]))
    ledger.checkpoint()
    ledger.verify()
    mine = [e["seq"] for e in ledger.entries(str(a))[0]]
    proved = ledger.tenant_report(str(a))
    assert (proved["ok"], proved["included"], proved["pending"]) == (True, len(mine), 0)

    content = rows(ledger)[mine[1]].content
    tamper(ledger, lambda cur: set_row(cur, mine[1], content=edited(content)))
    # Proved once, not proved again: each call's work stays bounded by what is new.
    assert ledger.tenant_report(str(a)) == proved
    # The platform job rebuilds the tree from every entry and checks each checkpoint's root
    # against it: it finds the edit, and the tenant's report carries its verdict.
    assert ledger.verify()["ok"] is False
    report = ledger.tenant_report(str(a))
    assert (report["ok"], report["platform"]["ok"], report["included"]) == (
        False,
        False,
        len(mine),
    )


@pytest.fixture
def leaves_hashed(monkeypatch) -> list[int]:
    """The leaves hashed (an entry's content read and hashed) since the list was last cleared."""
    hashed: list[int] = []
    leaf_hash = chain.leaf_hash

    def counting(content: bytes) -> bytes:
        hashed.append(1)
        return leaf_hash(content)

    monkeypatch.setattr(chain, "leaf_hash", counting)
    return hashed


def figures(report: dict[str, Any]) -> tuple[int, int, int]:
    return report["included"], report["pending"], report["entries"]


def test_a_tenants_report_proves_a_bounded_number_of_entries_per_call(world, ledger, leaves_hashed):
    a, b = uuid.uuid4(), uuid.uuid4()
    record_all(ledger, mixed(36, [a, b]))  # 12 of A's (a third are no tenant's)
    ledger.checkpoint()
    ledger.verify()
    record_all(ledger, mixed(6, [a]))  # 4 more, newer than the checkpoint

    seen = []
    for reader in (ledger, open_ledger(world), open_ledger(world)):  # progress is stored
        leaves_hashed.clear()
        report = reader.tenant_report(str(a), limit=5)
        seen.append((len(leaves_hashed), *figures(report), report["ok"]))
    assert seen == [(5, 5, 11, 16, True), (5, 10, 6, 16, True), (2, 12, 4, 16, True)]

    # Caught up with the checkpoint: a call reads nothing, however many entries it covers.
    leaves_hashed.clear()
    assert figures(ledger.tenant_report(str(a), limit=5)) == (12, 4, 16)
    assert leaves_hashed == []
    # B writes and a checkpoint covers it all: A's next call proves A's four, not B's.
    ledger.record_many(mixed(30, [b]))
    ledger.checkpoint()
    leaves_hashed.clear()
    assert figures(ledger.tenant_report(str(a), limit=5)) == (16, 0, 16)
    assert len(leaves_hashed) == 4


def test_a_call_while_another_proves_for_the_tenant_proves_nothing_twice(ledger, leaves_hashed):
    a = uuid.uuid4()
    record_all(ledger, mixed(7, [a]))  # 5 of A's
    ledger.checkpoint()
    assert figures(ledger.tenant_report(str(a), limit=1)) == (1, 4, 5)

    with ledger.db.transaction() as cur:
        # Another call holds the tenant's progress: this one reports it and proves nothing.
        cur.execute("SELECT 1 FROM tenant_verifications WHERE tenant_id = %s FOR UPDATE", (str(a),))
        leaves_hashed.clear()
        assert figures(ledger.tenant_report(str(a))) == (1, 4, 5)
        assert leaves_hashed == []
    assert figures(ledger.tenant_report(str(a))) == (5, 0, 5)
    assert figures(ledger.tenant_report(str(a))) == (5, 0, 5)


def test_a_destroyed_tenants_verification_progress_goes_with_it(ledger):
    gone, kept = uuid.uuid4(), uuid.uuid4()
    record_all(ledger, mixed(6, [gone, kept]))
    ledger.checkpoint()
    for tenant in (gone, kept):
        ledger.tenant_report(str(tenant))

    handlers = audit_privacy.handlers_for(ledger.db, ledger.cipher)
    answer = handlers["destroy_tenant"](None, {"tenant_id": str(gone)})
    assert answer["status"] == "done"
    with ledger.db.transaction() as cur:
        cur.execute("SELECT tenant_id FROM tenant_verifications")
        assert [str(row[0]) for row in cur.fetchall()] == [str(kept)]


def test_a_proof_waits_for_the_next_checkpoint_instead_of_signing_one(ledger):
    tenant = uuid.uuid4()
    record_all(ledger, mixed(4, [tenant]))
    ledger.checkpoint()
    [late] = record_all(ledger, mixed(1, [tenant]))
    with ledger.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM checkpoints")
        assert cur.fetchone()[0] == 1
    with pytest.raises(RetryLater) as refused:
        ledger.proof(str(tenant), late)
    assert refused.value.retry_after == 60
    assert "every 60 s" in refused.value.detail
    with ledger.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM checkpoints")
        assert cur.fetchone()[0] == 1  # asking signed nothing
    ledger.checkpoint()
    assert ledger.proof(str(tenant), late)["checkpoint"]["tree_size"] == 5
