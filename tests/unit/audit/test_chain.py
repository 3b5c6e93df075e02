"""Unit tests for the audit ledger's hash chain: encoding, hashing and where tampering shows."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import pytest

from services.audit.chain import (
    GENESIS,
    StoredEntry,
    canonical,
    entry_hash,
    first_bad_seq,
    leaf_hash,
)


def build(contents: list[dict[str, Any]]) -> list[StoredEntry]:
    """An honestly written ledger of ``contents``, numbered from 1."""
    entries: list[StoredEntry] = []
    prev = GENESIS
    for seq, content in enumerate(contents, start=1):
        body = canonical(content)
        digest = entry_hash(prev, seq, body)
        entries.append(StoredEntry(seq=seq, content=body, prev_hash=prev, hash=digest))
        prev = digest
    return entries


def ledger(n: int = 6) -> list[StoredEntry]:
    return build([{"event": "ticket.created", "n": i} for i in range(1, n + 1)])


def forge(seq: int, content: bytes, prev_hash: bytes) -> StoredEntry:
    """A row written by someone who knows the hashing rules: internally consistent."""
    return StoredEntry(seq, content, prev_hash, entry_hash(prev_hash, seq, content))


def test_canonical_is_stable_under_key_order() -> None:
    a = canonical({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    b = canonical({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert a == b
    assert a == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        canonical({"outer": {"list": [1, bad]}})


def test_entry_hash_is_the_documented_sha256() -> None:
    body = canonical({"k": "v"})
    expected = hashlib.sha256(
        b"ledgerdesk.ledger.v1\x00" + (7).to_bytes(8, "big") + GENESIS + body
    ).digest()
    assert entry_hash(GENESIS, 7, body) == expected


def test_entry_hash_binds_the_sequence_number() -> None:
    body = canonical({"same": True})
    assert entry_hash(GENESIS, 1, body) != entry_hash(GENESIS, 2, body)


def test_entry_hash_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError):
        entry_hash(b"short", 1, b"{}")
    with pytest.raises(ValueError):
        entry_hash(GENESIS, 0, b"{}")


def test_leaf_hash_is_rfc6962() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()


def test_entries_chain() -> None:
    entries = ledger()
    assert entries[0].prev_hash == GENESIS
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.prev_hash == before.hash
        assert after.hash == entry_hash(before.hash, after.seq, after.content)


def test_good_chain_verifies() -> None:
    assert first_bad_seq(ledger()) is None
    assert first_bad_seq([]) is None


def test_modified_content_reports_that_seq() -> None:
    entries = ledger()
    entries[2] = dataclasses.replace(entries[2], content=canonical({"forged": True}))
    assert first_bad_seq(entries) == 3


def test_modified_and_rehashed_row_reports_the_next_seq() -> None:
    # Recomputing the row's own hash hides it from rule 3, but the next row still links to the
    # old hash.
    entries = ledger()
    entries[2] = forge(3, canonical({"forged": True}), entries[1].hash)
    assert first_bad_seq(entries) == 4


def test_modified_stored_hash_reports_that_seq() -> None:
    entries = ledger()
    entries[4] = dataclasses.replace(entries[4], hash=bytes(32))
    assert first_bad_seq(entries) == 5


@pytest.mark.parametrize("k", [1, 3, 5])
def test_deletion_reports_the_missing_seq(k: int) -> None:
    entries = ledger(6)
    del entries[k - 1]
    assert first_bad_seq(entries) == k


def test_truncation_is_not_caught_by_the_chain() -> None:
    # Losing the tail leaves a valid, shorter chain; signed checkpoints (tree size and root)
    # are what reveal it.
    entries = ledger(6)
    assert first_bad_seq(entries[:-1]) is None
    assert first_bad_seq(entries[:2]) is None


def test_insertion_at_the_end_with_forged_prev_hash_reports_that_seq() -> None:
    entries = ledger(6)
    body = canonical({"forged": True})
    entries.append(forge(7, body, prev_hash=bytes(32)))
    assert first_bad_seq(entries) == 7


def test_insertion_at_the_end_with_wrong_hash_reports_that_seq() -> None:
    entries = ledger(6)
    entries.append(StoredEntry(7, b"{}", entries[-1].hash, bytes(32)))
    assert first_bad_seq(entries) == 7


def renumbered_insertion(entries: list[StoredEntry], k: int, new: StoredEntry) -> list[StoredEntry]:
    """Put ``new`` at ``k`` and shift the old rows ``k ..`` up by one, keeping their hashes."""
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in entries[k - 1 :]]
    return entries[: k - 1] + [new] + shifted


def test_renumbered_insertion_with_naive_row_reports_its_seq() -> None:
    entries = ledger(6)
    new = StoredEntry(3, canonical({"forged": True}), entries[1].hash, bytes(32))
    assert first_bad_seq(renumbered_insertion(entries, 3, new)) == 3


def test_renumbered_insertion_with_forged_row_reports_the_first_shifted_seq() -> None:
    # The inserted row is consistent with its predecessor, so the first provable break is the
    # first renumbered row, whose hashes bind it to its old number and predecessor.
    entries = ledger(6)
    new = forge(3, canonical({"forged": True}), entries[1].hash)
    assert first_bad_seq(renumbered_insertion(entries, 3, new)) == 4


def test_duplicate_seq_reports_the_expected_number() -> None:
    entries = ledger(6)
    entries.insert(3, entries[2])
    assert first_bad_seq(entries) == 4


@pytest.mark.parametrize(("i", "j"), [(1, 2), (2, 5), (1, 6), (5, 6)])
def test_swapping_two_entries_reports_the_lower_seq(i: int, j: int) -> None:
    entries = ledger(6)
    a, b = entries[i - 1], entries[j - 1]
    entries[i - 1] = StoredEntry(i, b.content, b.prev_hash, b.hash)
    entries[j - 1] = StoredEntry(j, a.content, a.prev_hash, a.hash)
    assert first_bad_seq(entries) == i


def test_swapping_contents_only_reports_the_lower_seq() -> None:
    entries = ledger(6)
    a, b = entries[1], entries[4]
    entries[1] = dataclasses.replace(a, content=b.content)
    entries[4] = dataclasses.replace(b, content=a.content)
    assert first_bad_seq(entries) == 2


def test_a_row_hash_is_valid_only_at_its_own_seq() -> None:
    # Equal contents after equal predecessors would hash alike without the seq; with it, a
    # row's hash cannot be reused at another position.
    body = canonical({"same": 1})
    entries = build([{"same": 1}])
    moved = StoredEntry(2, body, entries[0].hash, entry_hash(entries[0].hash, 1, body))
    assert first_bad_seq([*entries, moved]) == 2


def test_rows_out_of_order_report_the_expected_number() -> None:
    entries = ledger(6)
    entries[2], entries[3] = entries[3], entries[2]
    assert first_bad_seq(entries) == 3
