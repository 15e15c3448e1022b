"""RFC 9162 Merkle trees: known answers and proofs for all sizes up to 64.

Known answers: the public Certificate Transparency test data as published in the
transparency-dev ``merkle`` project (testonly/constants.go: leaves, node hashes, roots for
sizes 0-8; the probe generator's inclusion and consistency proof vectors, whose leaf
indices are 1-based there and 0-based here)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex
LEAVES = [
    h(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),  # pragma: allowlist secret
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),  # pragma: allowlist secret
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),  # pragma: allowlist secret
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),  # pragma: allowlist secret
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),  # pragma: allowlist secret
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),  # pragma: allowlist secret
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),  # pragma: allowlist secret
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),  # pragma: allowlist secret
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),  # pragma: allowlist secret
]
NODES = {
    (0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",  # pragma: allowlist secret
    (0, 1): "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",  # pragma: allowlist secret
    (0, 7): "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",  # pragma: allowlist secret
    (1, 0): "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",  # pragma: allowlist secret
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",  # pragma: allowlist secret
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",  # pragma: allowlist secret
    (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",  # pragma: allowlist secret
}
# (0-based leaf index, tree size, proof)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",  # pragma: allowlist secret
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",  # pragma: allowlist secret
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",  # pragma: allowlist secret
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",  # pragma: allowlist secret
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",  # pragma: allowlist secret
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",  # pragma: allowlist secret
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),  # pragma: allowlist secret
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",  # pragma: allowlist secret
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",  # pragma: allowlist secret
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",  # pragma: allowlist secret
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",  # pragma: allowlist secret
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",  # pragma: allowlist secret
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",  # pragma: allowlist secret
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",  # pragma: allowlist secret
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",  # pragma: allowlist secret
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",  # pragma: allowlist secret
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",  # pragma: allowlist secret
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",  # pragma: allowlist secret
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",  # pragma: allowlist secret
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",  # pragma: allowlist secret
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",  # pragma: allowlist secret
        ],
    ),
]
TREE = MemoryTree(LEAVES)


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_first_n_leaves(size: int) -> None:
    tree = MemoryTree(LEAVES[:size])
    assert tree.range.root() == ROOTS[size] == root_of(TREE, size)


def test_empty_root_and_node_hashes() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    for (level, index), expected in NODES.items():
        assert TREE.node(level, index).hex() == expected
    assert node_hash(TREE.node(0, 0), TREE.node(0, 1)) == TREE.node(1, 0)
    assert leaf_hash(b"") == TREE.node(0, 0)


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_known_answers(index: int, size: int, proof: list[str]) -> None:
    expected = [h(p) for p in proof]
    assert inclusion_proof(TREE, index, size) == expected
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, expected, ROOTS[size])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_known_answers(first: int, second: int, proof: list[str]) -> None:
    expected = [h(p) for p in proof]
    assert consistency_proof(TREE, first, second) == expected
    verify_consistency(first, second, ROOTS[first], ROOTS[second], expected)


def _mutations(proof: list[bytes]) -> list[list[bytes]]:
    out = [[*proof, b"\x00" * 32], [b"\x00" * 32, *proof]]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        out.append(flipped)
    if proof:
        out.append(proof[:-1])
    return out


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION[1:])
def test_corrupted_inclusion_proofs_fail(index: int, size: int, proof: list[str]) -> None:
    good = [h(p) for p in proof]
    leaf = leaf_hash(LEAVES[index])
    for bad in _mutations(good):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, bad, ROOTS[size])
    for wrong_index, wrong_size in ((index ^ 2, size), (index, size * 2), (index, size // 2)):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, wrong_index, wrong_size, good, ROOTS[size])
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"WrongLeaf"), index, size, good, ROOTS[size])
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, good, EMPTY_ROOT)


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY[1:])
def test_corrupted_consistency_proofs_fail(first: int, second: int, proof: list[str]) -> None:
    good = [h(p) for p in proof]
    for bad in [*_mutations(good), []]:
        with pytest.raises(ProofError):
            verify_consistency(first, second, ROOTS[first], ROOTS[second], bad)
    with pytest.raises(ProofError):
        verify_consistency(first, second, ROOTS[second], ROOTS[first], good)  # swapped roots
    with pytest.raises(ProofError):
        verify_consistency(first, second * 2, ROOTS[first], ROOTS[second], good)


def test_edge_cases_of_consistency() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    for first, second, r1, r2, proof in (
        (3, 3, ROOTS[3], ROOTS[4], []),
        (3, 3, ROOTS[3], ROOTS[3], [EMPTY_ROOT]),
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT]),
        (2, 1, ROOTS[2], ROOTS[1], []),
    ):
        with pytest.raises(ProofError):
            verify_consistency(first, second, r1, r2, proof)


def _direct_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC's definition, recursively over the data."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_direct_root(leaves[:k]), _direct_root(leaves[k:]))


def test_every_proof_for_every_size_up_to_64() -> None:
    leaves = [i.to_bytes(2, "big") * (i % 5) for i in range(64)]
    tree = MemoryTree(leaves)
    for size in range(1, 65):
        root = _direct_root(leaves[:size])
        assert root_of(tree, size) == root == MemoryTree(leaves[:size]).range.root()
        for index in range(size):
            verify_inclusion(leaf_hash(leaves[index]), index, size, inclusion_proof(tree, index, size), root)
        for first in range(1, size + 1):
            proof = consistency_proof(tree, first, size)
            verify_consistency(first, size, _direct_root(leaves[:first]), root, proof)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_proofs_verify_and_the_compact_range_reloads(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MemoryTree(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    root = _direct_root(leaves[:size])
    verify_inclusion(leaf_hash(leaves[index]), index, size, inclusion_proof(tree, index, size), root)
    reloaded = CompactRange.load(tree, size)
    assert reloaded.root() == root and reloaded.size == size
