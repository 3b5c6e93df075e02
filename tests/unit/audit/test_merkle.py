"""Unit tests for the ledger's Merkle tree, against RFC 6962's recursive definitions.

The reference functions below are written straight from RFC 6962 section 2.1 and share no code
with ``services.audit.merkle``, so an error in the level-by-level construction or in the
RFC 9162 verification walk shows up as a disagreement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from services.audit import merkle
from services.audit.chain import leaf_hash


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) by the recursive definition."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = split_point(n)
    return sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:]))


def reference_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) by the recursive definition."""
    n = len(leaves)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return reference_path(m, leaves[:k]) + [reference_root(leaves[k:])]
    return reference_path(m - k, leaves[k:]) + [reference_root(leaves[:k])]


def root_from_path(leaf: bytes, m: int, n: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` implies for ``leaf`` at ``m`` of ``n``, or None if it cannot fit.

    Inverts PATH: the last element is the sibling subtree at the top split, on the right when
    ``m`` is in the left part and on the left otherwise.
    """
    if not 0 <= m < n:
        return None
    if n == 1:
        return leaf if not path else None
    if not path:
        return None
    k = split_point(n)
    if m < k:
        below = root_from_path(leaf, m, k, path[:-1])
        return None if below is None else sha256(b"\x01" + below + path[-1])
    below = root_from_path(leaf, m - k, n - k, path[:-1])
    return None if below is None else sha256(b"\x01" + path[-1] + below)


def independent_verify(
    leaf: bytes, m: int, n: int, path: Sequence[bytes], expected_root: bytes
) -> bool:
    return root_from_path(leaf, m, n, path) == expected_root


def shape(m: int, n: int) -> list[bool]:
    """The left/right turns from the root to leaf ``m`` of ``n`` (True: into the left part)."""
    turns: list[bool] = []
    while n > 1:
        k = split_point(n)
        turns.append(m < k)
        if m < k:
            n = k
        else:
            m, n = m - k, n - k
    return turns


def make_leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode()) for i in range(n)]


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_known_answers_by_hand() -> None:
    empty = leaf_hash(b"")
    zero = leaf_hash(b"\x00")
    other = leaf_hash(b"\x10")
    assert empty == sha256(b"\x00")
    # The empty-input leaf hash every RFC 6962 implementation agrees on.
    assert empty.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.root([]) == merkle.EMPTY_ROOT == sha256(b"")
    assert merkle.root([empty]) == empty
    two = sha256(b"\x01" + sha256(b"\x00") + sha256(b"\x00\x00"))
    assert merkle.root([empty, zero]) == two
    # Three leaves split at two: the third leaf is the right child of the root on its own.
    three = sha256(b"\x01" + two + sha256(b"\x00\x10"))
    assert merkle.root([empty, zero, other]) == three
    assert merkle.node_hash(b"L", b"R") == sha256(b"\x01LR")


def test_known_answer_proofs_by_hand() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert merkle.inclusion_proof([a, b, c], 0) == [b, c]
    assert merkle.inclusion_proof([a, b, c], 2) == [merkle.node_hash(a, b)]


@pytest.mark.parametrize("n", range(1, 71))
def test_root_matches_the_recursive_definition(n: int) -> None:
    leaves = make_leaves(n)
    assert merkle.root(leaves) == reference_root(leaves)


def test_root_of_a_large_ledger() -> None:
    leaves = make_leaves(100_000)
    assert merkle.root(leaves) == reference_root(leaves)


@pytest.mark.parametrize("n", range(1, 41))
def test_every_proof_verifies_independently(n: int) -> None:
    leaves = make_leaves(n)
    tree_root = reference_root(leaves)
    for m in range(n):
        proof = merkle.inclusion_proof(leaves, m)
        assert proof == reference_path(m, leaves)
        assert independent_verify(leaves[m], m, n, proof, tree_root)
        assert merkle.verify_inclusion(leaves[m], m, n, proof, tree_root)


@pytest.mark.parametrize("n", range(2, 41))
def test_proofs_with_a_flipped_byte_are_rejected(n: int) -> None:
    leaves = make_leaves(n)
    tree_root = reference_root(leaves)
    for m in range(n):
        proof = merkle.inclusion_proof(leaves, m)
        for i, element in enumerate(proof):
            for at in (0, 31):
                bad = [*proof[:i], flip(element, at), *proof[i + 1 :]]
                assert not independent_verify(leaves[m], m, n, bad, tree_root)
                assert not merkle.verify_inclusion(leaves[m], m, n, bad, tree_root)
        bad_leaf = flip(leaves[m], 5)
        assert not independent_verify(bad_leaf, m, n, proof, tree_root)
        assert not merkle.verify_inclusion(bad_leaf, m, n, proof, tree_root)
        assert not merkle.verify_inclusion(leaves[m], m, n, proof, flip(tree_root, 0))


@pytest.mark.parametrize("n", range(2, 41))
def test_proofs_at_a_wrong_index_are_rejected(n: int) -> None:
    leaves = make_leaves(n)
    tree_root = reference_root(leaves)
    for m in range(n):
        proof = merkle.inclusion_proof(leaves, m)
        for wrong in {(m + 1) % n, (m - 1) % n, n - 1 - m} - {m}:
            assert not independent_verify(leaves[m], wrong, n, proof, tree_root)
            assert not merkle.verify_inclusion(leaves[m], wrong, n, proof, tree_root)
        assert not merkle.verify_inclusion(leaves[m], -1, n, proof, tree_root)
        assert not merkle.verify_inclusion(leaves[m], n, n, proof, tree_root)


@pytest.mark.parametrize("n", range(1, 41))
def test_proofs_at_a_wrong_tree_size_are_rejected_unless_the_path_is_the_same(n: int) -> None:
    # A proof and root alone do not always pin the tree size: a leaf whose turns from the root
    # are the same in a tree of n and of n' has the same path in both (leaf 0 of 5 and of 6, for
    # instance). That is why a checkpoint signs the tree size together with the root. Every
    # other wrong size must be rejected.
    leaves = make_leaves(n)
    tree_root = reference_root(leaves)
    rejected = 0
    for m in range(n):
        proof = merkle.inclusion_proof(leaves, m)
        for size in range(0, n + 8):
            if size == n:
                continue
            same_path = m < size and shape(m, size) == shape(m, n)
            assert independent_verify(leaves[m], m, size, proof, tree_root) == same_path
            assert merkle.verify_inclusion(leaves[m], m, size, proof, tree_root) == same_path
            rejected += not same_path
    assert rejected > 0
    # The newest leaf's path always changes when the tree grows by one.
    newest = merkle.inclusion_proof(leaves, n - 1)
    assert not independent_verify(leaves[-1], n - 1, n + 1, newest, tree_root)
    assert not merkle.verify_inclusion(leaves[-1], n - 1, n + 1, newest, tree_root)


def test_inclusion_proof_refuses_an_index_outside_the_tree() -> None:
    leaves = make_leaves(3)
    for index in (-1, 3):
        with pytest.raises(ValueError):
            merkle.inclusion_proof(leaves, index)
    with pytest.raises(ValueError):
        merkle.inclusion_proof([], 0)


def test_verify_inclusion_rejects_proofs_of_the_wrong_length() -> None:
    leaves = make_leaves(8)
    tree_root = merkle.root(leaves)
    proof = merkle.inclusion_proof(leaves, 3)
    assert not merkle.verify_inclusion(leaves[3], 3, 8, proof[:-1], tree_root)
    assert not merkle.verify_inclusion(leaves[3], 3, 8, [*proof, proof[0]], tree_root)
    assert not merkle.verify_inclusion(leaves[0], 0, 0, [], merkle.EMPTY_ROOT)


# --- the stored tree: compact ranges, proofs from nodes, consistency proofs ---------------------


def reference_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 section 2.1.2, by the recursive definition."""
    n = len(leaves)
    if m == n:
        return [] if whole else [reference_root(leaves)]
    k = split_point(n)
    if m <= k:
        return reference_subproof(m, leaves[:k], whole) + [reference_root(leaves[k:])]
    return reference_subproof(m - k, leaves[k:], False) + [reference_root(leaves[:k])]


def reference_consistency(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    return reference_subproof(m, leaves, True)


def stored_nodes(leaves: Sequence[bytes]) -> dict[merkle.Node, bytes]:
    """Every perfect subtree's hash, computed here by the recursive definition."""
    nodes: dict[merkle.Node, bytes] = {}
    level = 0
    while (1 << level) <= len(leaves):
        width = 1 << level
        for index in range(len(leaves) // width):
            nodes[(level, index)] = reference_root(leaves[index * width : (index + 1) * width])
        level += 1
    return nodes


@pytest.mark.parametrize("n", range(1, 70))
def test_a_compact_range_grows_leaf_by_leaf_into_the_recursive_root(n: int) -> None:
    leaves = make_leaves(n)
    nodes = stored_nodes(leaves)
    compact = merkle.CompactRange()
    completed: dict[merkle.Node, bytes] = {}
    for size, leaf in enumerate(leaves, start=1):
        completed.update({(lvl, i): h for lvl, i, h in compact.append(leaf)})
        assert compact.size == size
        assert compact.root() == reference_root(leaves[:size])
        assert compact.hashes == [nodes[node] for node in merkle.CompactRange.nodes(size)]
    # Every node above the leaves, completed exactly when its last leaf arrived.
    assert completed == {node: h for node, h in nodes.items() if node[0] > 0}
    # Rebuilt from its stored hashes, it carries on the same.
    again = merkle.CompactRange(n, [nodes[node] for node in merkle.CompactRange.nodes(n)])
    again.append(leaf_hash(b"next"))
    compact.append(leaf_hash(b"next"))
    assert again.hashes == compact.hashes


def test_a_compact_range_refuses_the_wrong_number_of_hashes() -> None:
    with pytest.raises(ValueError):
        merkle.CompactRange(3, [bytes(32)])


@pytest.mark.parametrize("n", range(1, 40))
def test_inclusion_proofs_from_stored_nodes_are_the_recursive_paths(n: int) -> None:
    leaves = make_leaves(n)
    nodes = stored_nodes(leaves)
    for m in range(n):
        ranges = merkle.inclusion_ranges(m, n)
        wanted = merkle.nodes_of(ranges)
        assert len(wanted) <= 2 * n.bit_length()  # O(log n) reads
        path = merkle.hashes_of(ranges, {node: nodes[node] for node in wanted})
        assert path == reference_path(m, leaves)


@pytest.mark.parametrize("n", range(1, 40))
def test_consistency_proofs_are_the_recursive_definition_and_verify(n: int) -> None:
    leaves = make_leaves(n)
    nodes = stored_nodes(leaves)
    new_root = reference_root(leaves)
    for m in range(1, n + 1):
        expected = reference_consistency(m, leaves)
        assert merkle.consistency_proof(leaves, m) == expected
        ranges = merkle.consistency_ranges(m, n)
        wanted = merkle.nodes_of(ranges)
        assert len(wanted) <= 2 * n.bit_length()
        assert merkle.hashes_of(ranges, {node: nodes[node] for node in wanted}) == expected
        old_root = reference_root(leaves[:m])
        assert merkle.verify_consistency(m, n, old_root, new_root, expected)


@pytest.mark.parametrize("n", range(2, 34))
def test_consistency_proofs_that_do_not_hold_are_rejected(n: int) -> None:
    leaves = make_leaves(n)
    new_root = reference_root(leaves)
    other = make_leaves(n + 1)[1:]  # a different history of the same length
    for m in range(1, n):
        proof = reference_consistency(m, leaves)
        old_root = reference_root(leaves[:m])
        assert not merkle.verify_consistency(m, n, reference_root(other[:m]), new_root, proof)
        assert not merkle.verify_consistency(m, n, old_root, reference_root(other), proof)
        assert not merkle.verify_consistency(m, n, old_root, flip(new_root, 3), proof)
        for i, element in enumerate(proof):
            bad = [*proof[:i], flip(element, 0), *proof[i + 1 :]]
            assert not merkle.verify_consistency(m, n, old_root, new_root, bad)
        assert not merkle.verify_consistency(m, n, old_root, new_root, proof[:-1])
        assert not merkle.verify_consistency(m, n, old_root, new_root, [*proof, proof[0]])
        # (As with inclusion, other sizes can share a proof's shape: checkpoints sign the size.)
    # Equal sizes prove with nothing; the empty tree is a prefix of every tree.
    assert merkle.verify_consistency(n, n, new_root, new_root, [])
    assert not merkle.verify_consistency(n, n, new_root, flip(new_root, 1), [])
    assert not merkle.verify_consistency(n, n, new_root, new_root, [new_root])
    assert merkle.verify_consistency(0, n, merkle.EMPTY_ROOT, new_root, [])
    assert not merkle.verify_consistency(n, n - 1, new_root, new_root, [])


def test_ranges_outside_the_tree_are_refused() -> None:
    for call in (
        lambda: merkle.inclusion_ranges(3, 3),
        lambda: merkle.consistency_ranges(0, 3),
        lambda: merkle.consistency_ranges(4, 3),
        lambda: merkle.decomposition(1, 3),
        lambda: merkle.decomposition(2, 2),
    ):
        with pytest.raises(ValueError):
            call()
