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
from collections.abc import Iterable, Iterator, Sequence

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


class Frontier:
    """The Merkle Tree Hash of a growing list of leaves, one leaf at a time, without keeping
    the leaves: the roots of the perfect subtrees the list splits into (its binary
    decomposition, largest first), at most one per bit of the size.

    Appending merges equal-sized neighbours, as a binary counter carries; ``root()`` folds the
    subtrees from the right, which is RFC 6962's split at the largest power of two below the
    size applied recursively. So a verifier walks a ledger once, reading the root at each
    checkpoint's size as it passes it, in O(log n) memory.
    """

    __slots__ = ("_subtrees", "size")

    def __init__(self) -> None:
        self._subtrees: list[tuple[int, bytes]] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (``chain.leaf_hash`` of an entry's content)."""
        self.size += 1
        width, node = 1, leaf
        while self._subtrees and self._subtrees[-1][0] == width:
            left_width, left = self._subtrees.pop()
            width, node = left_width + width, node_hash(left, node)
        self._subtrees.append((width, node))

    def root(self) -> bytes:
        """The Merkle Tree Hash of the leaves appended so far."""
        if not self._subtrees:
            return EMPTY_ROOT
        node = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            node = node_hash(left, node)
        return node


def roots_at(leaves: Iterable[bytes], sizes: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    """``(size, root)`` for each of ``sizes`` (ascending), in one pass over ``leaves``.

    Stops at the last leaf: a size beyond the leaves given yields nothing, and the caller
    sees which sizes were not reached.
    """
    frontier = Frontier()
    wanted = iter(sizes)
    size = next(wanted, None)
    while size == 0:
        yield 0, EMPTY_ROOT
        size = next(wanted, None)
    if size is None:
        return
    for leaf in leaves:
        frontier.append(leaf)
        while size == frontier.size:
            yield size, frontier.root()
            size = next(wanted, None)
        if size is None:
            return
        if size < frontier.size:
            raise ValueError("sizes must be ascending")
