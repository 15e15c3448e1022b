"""Merkle tree hashing, inclusion and consistency proofs: RFC 9162 (Certificate Transparency
version 2.0), https://www.rfc-editor.org/rfc/rfc9162.

Implemented here, framework-free and without I/O:

- §2.1.1 the Merkle Tree Hash: ``MTH({}) = SHA-256()``, a leaf ``SHA-256(0x00 || d)``, a
  node ``SHA-256(0x01 || left || right)``, the split at the largest power of two below n;
- §2.1.3.1 inclusion proofs (``PATH``) and §2.1.3.2 their verification;
- §2.1.4.1 consistency proofs (``PROOF`` / ``SUBPROOF``) and §2.1.4.2 their verification;
- a compact range (the roots of the perfect subtrees that make up ``[0, n)``), which turns an
  append into O(log n) work and yields every new perfect-subtree node to store.

Proof generation reads perfect-subtree hashes through :class:`NodeSource`, so a tree of any
size answers a proof with O(log² n) look-ups; verification needs only hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


class ProofError(ValueError):
    """A proof does not verify (or its inputs are not those of a valid proof)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeSource(Protocol):
    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree of 2**level leaves starting at leaf index * 2**level."""
        ...


def subtree_root(source: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range whose start is aligned as in the RFC's recursion."""
    size = end - start
    if size == 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        return source.node(size.bit_length() - 1, start // size)
    k = _split(size)
    return node_hash(subtree_root(source, start, start + k), subtree_root(source, start + k, end))


def root_of(source: NodeSource, size: int) -> bytes:
    return subtree_root(source, 0, size)


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of §2.1.3.1."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            path.append(subtree_root(source, start + k, end))
            end = start + k
        else:
            path.append(subtree_root(source, start, start + k))
            start += k
    path.reverse()  # the RFC lists the path from the leaf up
    return path


def consistency_proof(source: NodeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) of §2.1.4.1."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    proof: list[bytes] = []
    start, end, whole = 0, second, True
    m = first
    while True:
        n = end - start
        if m == n:
            if not whole:
                proof.append(subtree_root(source, start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(subtree_root(source, start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(source, start, start + k))
            start += k
            m -= k
            whole = False
    proof.reverse()
    return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """§2.1.3.2; raises :class:`ProofError` unless ``leaf`` (a leaf hash) is at ``index``."""
    if not 0 <= index < size:
        raise ProofError("index outside the tree")
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("hashes must be 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("proof longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """§2.1.4.2; raises :class:`ProofError` unless tree ``second`` extends tree ``first``."""
    if first > second:
        raise ProofError("the first tree is larger than the second")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("hashes must be 32 bytes")
    if first == second:
        if proof or first_root != second_root:
            raise ProofError("equal sizes need equal roots and an empty proof")
        return
    if first == 0:
        raise ProofError("every tree extends the empty tree: nothing to prove")
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof longer than the tree is high")
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
    if fr != first_root or sr != second_root or sn != 0:
        raise ProofError("consistency proof does not lead to both roots")


@dataclass
class CompactRange:
    """The perfect subtrees that make up ``[0, size)``, largest first: (level, hash)."""

    size: int = 0
    peaks: list[tuple[int, bytes]] = field(default_factory=list)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; every perfect-subtree node it completes, as (level, index, hash),
        the leaf itself first."""
        index = self.size
        made = [(0, index, leaf)]
        self.peaks.append((0, leaf))
        self.size += 1
        while len(self.peaks) > 1 and self.peaks[-1][0] == self.peaks[-2][0]:
            level, right = self.peaks.pop()
            _, left = self.peaks.pop()
            merged = node_hash(left, right)
            self.peaks.append((level + 1, merged))
            made.append((level + 1, index >> (level + 1), merged))
        return made

    def root(self) -> bytes:
        if not self.peaks:
            return EMPTY_ROOT
        result = self.peaks[-1][1]
        for _, peak in reversed(self.peaks[:-1]):
            result = node_hash(peak, result)
        return result

    @classmethod
    def load(cls, source: NodeSource, size: int) -> CompactRange:
        """The range of an existing tree of ``size`` leaves, from its stored nodes."""
        peaks = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size & (1 << level):
                peaks.append((level, source.node(level, start >> level)))
                start += 1 << level
        return cls(size, peaks)


class MemoryTree:
    """Every perfect-subtree node in memory: the reference for tests, and small trees."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.range = CompactRange()
        for data in leaves:
            self.append(data)

    def append(self, data: bytes) -> None:
        for level, index, digest in self.range.append(leaf_hash(data)):
            self.nodes[(level, index)] = digest

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]

    @property
    def size(self) -> int:
        return self.range.size
