"""Merkle tree hashes and inclusion proofs over the ledger, as in Certificate Transparency.

Definitions follow RFC 6962 section 2.1 (the Merkle Tree Hash and the audit path) and the
verification algorithm RFC 9162 section 2.1.3.2. Every function here takes *leaf hashes*
(``chain.leaf_hash`` of each entry's canonical content), not the entries themselves, so the
tree can be rebuilt from stored hashes without reading the contents again.

RFC 6962 defines the tree recursively, splitting ``n`` leaves at ``k``, the largest power of
two smaller than ``n``. Here it is computed level by level instead, pairing neighbours and
carrying an unpaired last node up unchanged. The two agree: the first ``k`` leaves are a
complete subtree whose pairs line up with the levels, and because ``k`` is a multiple of every
smaller power of two, the pairs of the remaining ``n - k`` leaves line up the same way as they
would in a tree of their own; a node carried up is exactly a right subtree that is shorter than
its left sibling. The level-by-level form needs no recursion and hashes each node once, so a
ledger of 100,000 entries takes about 100,000 hash calls.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The Merkle Tree Hash of an empty list (RFC 6962: the hash of the empty string)."""


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node, SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of ``leaves`` (leaf hashes), RFC 6962 section 2.1."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path PATH(index, D[n]) of RFC 6962 section 2.1.1, from the leaf upwards.

    At each level the sibling of the node on the path is appended, except where that node is
    the unpaired last one and is carried up unchanged, which in the recursive definition is
    a level that the path does not pass through.
    """
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    path: list[bytes] = []
    level = list(leaves)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level = _next_level(level)
        position //= 2
    return path


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in a tree of ``tree_size`` with
    Merkle Tree Hash ``root``; the algorithm of RFC 9162 section 2.1.3.2.

    ``fn`` walks the leaf's position and ``sn`` the last position up the tree; where ``fn`` is
    a right child, or is the last node of its level, the proof element goes on the left. A
    proof that is too long or too short leaves ``sn`` non-zero or runs it out early.
    """
    if index < 0 or index >= tree_size:
        return False
    fn = index
    sn = tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # A left child that is the last node has no sibling on the levels above it until
            # it becomes a right child; skip those levels, which contribute no proof element.
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


# --- the tree as stored: perfect subtrees, compact ranges, proofs in O(log n) nodes ------------
#
# A *node* (level, index) is the root of the perfect subtree over leaves
# [index * 2**level, (index + 1) * 2**level); level 0 is a leaf. Every subtree hash that RFC 6962's
# recursive definitions ask for is the hash of a range [start, end) whose start is a multiple of
# the largest power of two not above end - start, and such a range is a run of perfect subtrees,
# largest first (its *decomposition*), whose hashes fold from the right into the range's hash.
# So a tree that stores each perfect subtree's hash as it completes answers a root, an inclusion
# proof or a consistency proof from O(log n) stored nodes.

Node = tuple[int, int]
"""(level, index): the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level)."""


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 6962 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def decomposition(start: int, end: int) -> list[Node]:
    """The perfect subtrees that make up leaves [start, end), largest (leftmost) first.

    Only ranges RFC 6962 asks for are accepted: ``start`` a multiple of the largest power of
    two that fits in the range, so the subtrees are the set bits of ``end - start``.
    """
    size = end - start
    if size <= 0:
        raise ValueError(f"an empty or negative range [{start}, {end})")
    if start % (1 << (size.bit_length() - 1)):
        raise ValueError(f"[{start}, {end}) is not a subtree range of the tree")
    nodes: list[Node] = []
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from its decomposition's hashes (largest first)."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make PATH(index, D[size]), from the leaf upwards."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make PROOF(old_size, D[new_size]) (RFC 6962 2.1.2)."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves")
    ranges: list[tuple[int, int]] = []
    start, end, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], whole), unrolled: each step appends one sibling range.
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        ranges.append((start, end))
    return ranges[::-1]


def nodes_of(ranges: Sequence[tuple[int, int]]) -> set[Node]:
    """Every stored node that the hashes of ``ranges`` are computed from."""
    return {node for start, end in ranges for node in decomposition(start, end)}


def hashes_of(ranges: Sequence[tuple[int, int]], lookup: Mapping[Node, bytes]) -> list[bytes]:
    """The hash of each range, folded from the nodes in ``lookup`` (KeyError if one is missing)."""
    return [fold([lookup[node] for node in decomposition(s, e)]) for s, e in ranges]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) of RFC 6962 section 2.1.2 over ``leaves`` (all n of them)."""
    ranges = consistency_ranges(old_size, len(leaves))
    return [root(leaves[start:end]) for start, end in ranges]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``old_size`` with ``old_root`` to be a prefix of the
    tree of ``new_size`` with ``new_root``; the algorithm of RFC 9162 section 2.1.4.2.

    Equal sizes need an empty proof and equal roots; the empty tree is a prefix of any tree.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and hmac.compare_digest(old_root, new_root)
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)


class CompactRange:
    """The perfect subtrees of leaves [0, size), largest first: what a tree needs to take its
    next leaf and to give its root, in O(log size) hashes (a transparency log's compact range).

    ``append`` returns the nodes each new leaf completes, which the ledger stores beside it.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        if len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of {size} leaves has {size.bit_count()} hashes")
        self.size = size
        self.hashes = list(hashes)

    @staticmethod
    def nodes(size: int) -> list[Node]:
        """The nodes of the compact range of ``size`` leaves, largest first."""
        return decomposition(0, size) if size else []

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add leaf ``size``; the (level, index, hash) of every node above level 0 it completes."""
        completed: list[tuple[int, int, bytes]] = []
        carry, level, size = leaf, 0, self.size
        while size >> level & 1:
            carry = node_hash(self.hashes.pop(), carry)
            level += 1
            completed.append((level, ((size + 1) >> level) - 1, carry))
        self.hashes.append(carry)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold(self.hashes)
