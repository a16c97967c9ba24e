"""Tests of attest.merkle: published vectors, a naive RFC 9162 reference, Hypothesis properties."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    NodeHashFn,
    ProofError,
    ProofShapeError,
    RootMismatchError,
    _chain,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import VECTORS

# Reference: RFC 9162 §2.1.1-2.1.4 transcribed literally, recursive and slow -------------------


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two smaller than n. Requires n > 1."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


@functools.cache
def ref_mth(d: tuple[bytes, ...]) -> bytes:
    """MTH(D[n]) of §2.1.1 over the leaf *data* ``d``."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _largest_power_of_two_below(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PATH(m, D[n]) of §2.1.3.1."""
    n = len(d)
    if n == 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PROOF(m, D[n]) of §2.1.4.1."""
    return ref_subproof(m, d, True)


def ref_subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of §2.1.4.1."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


# A tree with every perfect subtree precomputed: the O(1) node_at that storage provides ----------


class Tree:
    """``size`` leaves of distinct data, with all perfect subtree hashes stored by level."""

    def __init__(self, size: int) -> None:
        self.data = tuple(i.to_bytes(4, "big") for i in range(size))
        self.levels = [[leaf_hash(d) for d in self.data]]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(a, b) for a, b in zip(below[::2], below[1::2], strict=False)]
            )

    @functools.cache  # noqa: B019 -- one module-level tree, kept for the whole run anyway
    def root(self, size: int) -> bytes:
        """The root of the first ``size`` leaves."""
        return root_hash(self.levels[0][:size])

    def node_at(self, size: int, calls: list[tuple[int, int]] | None = None) -> NodeHashFn:
        """A NodeHashFn for the tree of ``size`` that fails on any node not a perfect subtree."""

        def node_at(level: int, index: int) -> bytes:
            assert index >= 0 and (index + 1) << level <= size, (level, index, size)
            if calls is not None:
                calls.append((level, index))
            return self.levels[level][index]

        return node_at


TREE = Tree(1024)


def b64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


# Known answers -------------------------------------------------------------------------------


# The RFC 6962 reference test tree (certificate-transparency, transparency-dev/merkle tests):
# leaf data and the roots of its first 1..8 leaves.
RFC6962_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                  "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    assert subtree_hash(0, 0, TREE.node_at(0)) == EMPTY_ROOT


def test_leaf_and_node_hash_use_domain_separation() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert a == hashlib.sha256(b"\x00a").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert len(a) == HASH_SIZE


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_test_tree_roots(size: int) -> None:
    hashes = [leaf_hash(bytes.fromhex(d)) for d in RFC6962_LEAVES[:size]]
    assert root_hash(hashes).hex() == RFC6962_ROOTS[size - 1]


# Published vectors (transparency-dev/merkle testdata), one test case per file ------------------


def _vector_files() -> list[str]:
    merkle = VECTORS / "merkle"
    files = [*(merkle / "inclusion").rglob("*.json"), *(merkle / "consistency").rglob("*.json")]
    return sorted(str(f.relative_to(VECTORS)) for f in files)


VECTOR_FILES = _vector_files()


def _check_vector(v: dict[str, Any]) -> None:
    proof = [b64(h) for h in v["proof"] or []]
    if "leafIdx" in v:
        verify_inclusion(b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, b64(v["root"]))
    else:
        verify_consistency(v["size1"], v["size2"], proof, b64(v["root1"]), b64(v["root2"]))


@pytest.mark.parametrize("relpath", VECTOR_FILES)
def test_vector(vectors_dir: Path, relpath: str) -> None:
    v = json.loads((vectors_dir / relpath).read_text())
    if v["wantErr"]:
        with pytest.raises(ProofError):
            _check_vector(v)
    else:
        _check_vector(v)


def test_every_vector_file_is_a_test_case(vectors_dir: Path) -> None:
    merkle = vectors_dir / "merkle"
    on_disk = {str(f.relative_to(vectors_dir)) for f in merkle.rglob("*.json")}
    assert on_disk
    assert on_disk == set(VECTOR_FILES)


# Fast implementation against the reference ---------------------------------------------------


def _check_against_reference(
    size: int, indexes: range | list[int], size1s: range | list[int]
) -> None:
    d = TREE.data[:size]
    node_at = TREE.node_at(size)
    root = ref_mth(d)
    assert root_hash(TREE.levels[0][:size]) == root
    assert subtree_hash(0, size, node_at) == root
    for m in indexes:
        proof = inclusion_proof(m, size, node_at)
        assert proof == ref_path(m, d)
        verify_inclusion(leaf_hash(d[m]), m, size, proof, root)
    for m in size1s:
        proof = consistency_proof(m, size, node_at)
        assert proof == ref_proof(m, d)
        verify_consistency(m, size, proof, ref_mth(d[:m]), root)


@pytest.mark.parametrize("size", range(71))
def test_matches_reference_small(size: int) -> None:
    _check_against_reference(size, range(size), range(1, size + 1))


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_large(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(71, len(TREE.data) + 1)
    picks = [0, size - 1, *rng.sample(range(size), 6)]
    _check_against_reference(size, picks, [1, size, *(i + 1 for i in picks)])


@pytest.mark.parametrize("size", [1_000_000, 2**20 - 1, 2**20, 2**20 + 1, 3**13])
def test_generation_reads_few_perfect_nodes(size: int) -> None:
    calls: list[tuple[int, int]] = []

    def node_at(level: int, index: int) -> bytes:
        assert index >= 0 and (index + 1) << level <= size, (level, index, size)
        calls.append((level, index))
        return hashlib.sha256(f"{level}/{index}".encode()).digest()

    for index in (0, 1, size // 3, size - 2, size - 1):
        calls.clear()
        inclusion_proof(index, size, node_at)
        assert len(calls) <= 2 * size.bit_length()
    for size1 in (1, 2, 3, size // 3, size - 1, size):
        calls.clear()
        consistency_proof(size1, size, node_at)
        assert len(calls) <= 2 * size.bit_length()


def test_generation_preconditions() -> None:
    node_at = TREE.node_at(8)
    for index, size in [(0, 0), (8, 8), (-1, 8)]:
        with pytest.raises(ValueError):
            inclusion_proof(index, size, node_at)
    for size1, size2 in [(0, 0), (0, 8), (5, 4), (-1, 8)]:
        with pytest.raises(ValueError):
            consistency_proof(size1, size2, node_at)
    for begin, end in [(2, 6), (1, 3), (-1, 0), (4, 3)]:
        with pytest.raises(ValueError):
            subtree_hash(begin, end, node_at)


# Verification edge cases and errors -----------------------------------------------------------


def test_consistency_between_equal_sizes() -> None:
    root = TREE.root(5)
    verify_consistency(5, 5, [], root, root)
    with pytest.raises(RootMismatchError):
        verify_consistency(5, 5, [], root, TREE.root(4))
    with pytest.raises(ProofShapeError):
        verify_consistency(5, 5, [root], root, root)


def test_consistency_from_size_zero_is_rejected() -> None:
    for size2 in (0, 1, 5):
        with pytest.raises(ProofShapeError):
            verify_consistency(0, size2, [], EMPTY_ROOT, TREE.root(size2))


def test_root_mismatch_carries_expected_and_calculated() -> None:
    size, index, wrong = 11, 6, TREE.root(10)
    proof = inclusion_proof(index, size, TREE.node_at(size))
    with pytest.raises(RootMismatchError) as info:
        verify_inclusion(TREE.levels[0][index], index, size, proof, wrong)
    err = info.value
    assert (err.expected, err.calculated) == (wrong, TREE.root(size))
    assert str(err) == err.diagnostic
    assert wrong.hex() in err.diagnostic and "\n" not in err.diagnostic


def test_consistency_mismatch_names_the_tree() -> None:
    proof = consistency_proof(3, 7, TREE.node_at(7))
    with pytest.raises(RootMismatchError) as info:
        verify_consistency(3, 7, proof, TREE.root(3), TREE.root(6))
    assert info.value.expected == TREE.root(6)
    assert info.value.calculated == TREE.root(7)
    assert "size-7" in info.value.diagnostic


def test_shape_errors_have_diagnostics() -> None:
    leaf = TREE.levels[0][2]
    proof = inclusion_proof(2, 5, TREE.node_at(5))
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: verify_inclusion(leaf, 2, 5, proof[:-1], TREE.root(5)), "want 3"),
        (lambda: verify_inclusion(leaf, 5, 5, proof, TREE.root(5)), "outside"),
        (lambda: verify_inclusion(leaf[:-1], 2, 5, proof, TREE.root(5)), "leaf hash"),
        (lambda: verify_inclusion(leaf, 2, 5, [*proof[:-1], b"x"], TREE.root(5)), "proof hash 2"),
        (lambda: verify_consistency(6, 5, [], TREE.root(6), TREE.root(5)), "size 6"),
    ]
    for call, fragment in cases:
        with pytest.raises(ProofShapeError) as info:
            call()
        assert fragment in info.value.diagnostic and "\n" not in info.value.diagnostic


def test_root_from_inclusion_proof() -> None:
    proof = inclusion_proof(9, 13, TREE.node_at(13))
    assert root_from_inclusion_proof(TREE.levels[0][9], 9, 13, proof) == TREE.root(13)
    with pytest.raises(ProofShapeError):
        root_from_inclusion_proof(TREE.levels[0][9], 9, 13, [*proof, proof[0]])


def test_chain_enforces_the_rfc_length_checks() -> None:
    # The public functions check the length first; the RFC's own checks (steps 4a and 5 of
    # §2.1.3.2) stay in the loop as a backstop, so exercise them directly.
    leaf, sibling = TREE.levels[0][0], TREE.levels[0][1]
    assert _chain(0, 1, leaf, [sibling]) == (leaf, TREE.root(2))
    with pytest.raises(ProofShapeError, match="longer"):
        _chain(0, 1, leaf, [sibling, sibling])
    with pytest.raises(ProofShapeError, match="shorter"):
        _chain(0, 1, leaf, [])


# Hypothesis properties -------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=len(TREE.data))


def _flip(h: bytes, bit: int) -> bytes:
    flipped = bytearray(h)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@st.composite
def leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(min_value=2, max_value=len(TREE.data)))
    return draw(st.integers(1, size2 - 1)), size2


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=300))
def test_every_index_verifies(size: int) -> None:
    node_at, root = TREE.node_at(size), TREE.root(size)
    for index in range(size):
        verify_inclusion(
            TREE.levels[0][index], index, size, inclusion_proof(index, size, node_at), root
        )


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=300))
def test_every_smaller_size_is_consistent(size2: int) -> None:
    node_at, root2 = TREE.node_at(size2), TREE.root(size2)
    for size1 in range(1, size2 + 1):
        verify_consistency(
            size1, size2, consistency_proof(size1, size2, node_at), TREE.root(size1), root2
        )


@given(leaf_in_tree(), st.data())
def test_any_flipped_bit_fails_inclusion(leaf: tuple[int, int], data: st.DataObject) -> None:
    index, size = leaf
    parts = [
        TREE.levels[0][index],
        TREE.root(size),
        *inclusion_proof(index, size, TREE.node_at(size)),
    ]
    target = data.draw(st.integers(0, len(parts) - 1), label="target")
    parts[target] = _flip(parts[target], data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit"))
    with pytest.raises(RootMismatchError):
        verify_inclusion(parts[0], index, size, parts[2:], parts[1])


@given(two_sizes(), st.data())
def test_any_flipped_bit_fails_consistency(sizes: tuple[int, int], data: st.DataObject) -> None:
    size1, size2 = sizes
    proof = consistency_proof(size1, size2, TREE.node_at(size2))
    parts = [TREE.root(size1), TREE.root(size2), *proof]
    target = data.draw(st.integers(0, len(parts) - 1), label="target")
    parts[target] = _flip(parts[target], data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit"))
    with pytest.raises(RootMismatchError):
        verify_consistency(size1, size2, parts[2:], parts[0], parts[1])


def _dropped_or_extra(proof: list[bytes], data: st.DataObject) -> list[bytes]:
    """Return ``proof`` with one hash removed, or one random hash inserted anywhere."""
    if data.draw(st.booleans(), label="drop") and proof:
        del proof[data.draw(st.integers(0, len(proof) - 1), label="at")]
    else:
        extra = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE), label="extra")
        proof.insert(data.draw(st.integers(0, len(proof)), label="at"), extra)
    return proof


@given(leaf_in_tree(), st.data())
def test_dropped_or_extra_hash_fails_inclusion(leaf: tuple[int, int], data: st.DataObject) -> None:
    index, size = leaf
    proof = _dropped_or_extra(inclusion_proof(index, size, TREE.node_at(size)), data)
    with pytest.raises(ProofShapeError):
        verify_inclusion(TREE.levels[0][index], index, size, proof, TREE.root(size))


@given(two_sizes(), st.data())
def test_dropped_or_extra_hash_fails_consistency(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = sizes
    proof = _dropped_or_extra(consistency_proof(size1, size2, TREE.node_at(size2)), data)
    with pytest.raises(ProofShapeError):
        verify_consistency(size1, size2, proof, TREE.root(size1), TREE.root(size2))


@given(leaf_in_tree(), st.data())
def test_wrong_index_fails(leaf: tuple[int, int], data: st.DataObject) -> None:
    index, size = leaf
    wrong = data.draw(st.integers(-1, size), label="wrong")
    wrong += wrong >= index  # skip the right index: any other in [-1, size + 1]
    proof = inclusion_proof(index, size, TREE.node_at(size))
    with pytest.raises(ProofError):
        verify_inclusion(TREE.levels[0][index], wrong, size, proof, TREE.root(size))


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_leaf_hashes_is_leaf_hash_of_each(entries: list[bytes]) -> None:
    assert leaf_hashes(entries) == [leaf_hash(e) for e in entries]
    assert leaf_hashes(iter(entries)) == [leaf_hash(e) for e in entries]
