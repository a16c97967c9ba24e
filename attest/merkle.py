"""RFC 9162 §2.1 Merkle tree math: hashing, proof generation and proof verification.

Pure: no I/O, no clock. The tree is the one of RFC 9162 (identical to RFC 6962): SHA-256, leaf
hash ``H(0x00 || data)``, interior node ``H(0x01 || left || right)``, empty tree ``H("")``.

Generation reads the tree only through a `NodeHashFn` supplied by storage, and asks it only for
*perfect* subtrees (those fully inside the tree), about log2(size) times per proof. Verification
follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step (steps are tagged in the code) and never returns
a bool: it returns None or raises a `ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from attest.errors import AttestError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "NodeHashFn",
    "ProofError",
    "ProofShapeError",
    "RootMismatchError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

NodeHashFn = Callable[[int, int], bytes]
"""``node_at(level, index)``: the hash of the perfect subtree of height ``level`` covering leaves
``[index << level, (index + 1) << level)``; level 0 is the leaf hashes."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(AttestError):
    """A proof did not verify. ``diagnostic`` is a one-line message for people."""


class RootMismatchError(ProofError):
    """The root calculated from a proof is not the expected one."""

    def __init__(self, expected: bytes, calculated: bytes, what: str = "root") -> None:
        super().__init__(
            f"calculated {what} {calculated.hex()} does not match expected {expected.hex()}"
        )
        self.expected = expected
        self.calculated = calculated


class ProofShapeError(ProofError):
    """The proof cannot apply: wrong length, index outside the tree, sizes out of order, a hash of
    the wrong size."""


# Hashing ------------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """Return the `leaf_hash` of each entry, in order.

    One call per batch rather than one per entry: the sequencer hashes every entry it is
    given, and a Python call per entry showed in its profiles.
    """
    sha256, prefix = hashlib.sha256, _LEAF_PREFIX
    return [sha256(prefix + data).digest() for data in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash of ``leaf_hashes`` (`EMPTY_ROOT` for none).

    Requires every element to be a `HASH_SIZE`-byte hash (not checked: this is a hot path).
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    while len(level) > 1:
        # Pairing left to right and carrying an odd last node up unchanged builds exactly the
        # RFC's tree, whose split is always at the largest power of two below the size.
        paired = [
            sha256(_NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def subtree_hash(begin: int, end: int, node_at: NodeHashFn) -> bytes:
    """Return the Merkle Tree Hash of leaves ``[begin, end)``, reading only perfect subtrees.

    Requires ``0 <= begin <= end`` and ``begin`` a multiple of the largest power of two
    ``<= end - begin``, so that the range splits into aligned perfect subtrees (largest first).
    This holds for ``begin == 0`` (the root of a tree of size ``end``; `EMPTY_ROOT` when
    ``end == 0``) and for the right-border ("ephemeral") nodes of proofs. Calls ``node_at`` once
    per set bit of ``end - begin``. Raises ValueError if the precondition does not hold.
    """
    count = end - begin
    if begin < 0 or count < 0 or (count and begin % (1 << (count.bit_length() - 1))):
        raise ValueError(f"[{begin}, {end}) is not an aligned range of leaves")
    if count == 0:
        return EMPTY_ROOT
    nodes = []
    for level in reversed(range(count.bit_length())):
        if (count >> level) & 1:
            nodes.append(node_at(level, begin >> level))
            begin += 1 << level
    # The MTH of a non-perfect range is its largest perfect subtree hashed with the MTH of the rest.
    result = nodes.pop()
    while nodes:
        result = node_hash(nodes.pop(), result)
    return result


# Generation ---------------------------------------------------------------------------------


def inclusion_proof(index: int, size: int, node_at: NodeHashFn) -> list[bytes]:
    """Return the RFC 9162 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``.

    Requires ``0 <= index < size``; ``node_at`` must serve every perfect subtree of the tree of
    ``size``. Raises ValueError if the precondition does not hold.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    return _path(index, size, 0, node_at)


def consistency_proof(size1: int, size2: int, node_at: NodeHashFn) -> list[bytes]:
    """Return the RFC 9162 consistency proof from the tree of ``size1`` to the tree of ``size2``.

    Requires ``0 < size1 <= size2``; ``node_at`` must serve every perfect subtree of the tree of
    ``size2``. Raises ValueError if the precondition does not hold.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    # The proof is the inclusion proof of leaf size1 - 1 from the level of the largest perfect
    # subtree ending at size1, seeded with that subtree -- unless it is the whole old tree, whose
    # root the verifier already holds (RFC 9162 §2.1.4.2 step 2).
    level = _trailing_zeros(size1)
    seed = [] if size1 == 1 << level else [node_at(level, (size1 - 1) >> level)]
    return seed + _path(size1 - 1, size2, level, node_at)


def _path(index: int, size: int, start: int, node_at: NodeHashFn) -> list[bytes]:
    """Return the inclusion proof of leaf ``index`` in the tree of ``size``, from level ``start``.

    Requires ``0 <= index < size`` and ``start`` at most the level where the paths to ``index``
    and to the last leaf join.
    """
    # Below level `inner` the paths to `index` and to the last leaf differ, so every sibling is a
    # perfect subtree, except the one at level inner - 1, which holds the last leaf.
    inner = (index ^ (size - 1)).bit_length()
    proof = [node_at(level, (index >> level) ^ 1) for level in range(start, inner - 1)]
    if inner > start:
        proof.append(subtree_hash(((index >> (inner - 1)) + 1) << (inner - 1), size, node_at))
    # From level `inner` up the path runs along the right border: only left siblings exist.
    proof += [
        node_at(level, (index >> level) - 1)
        for level in range(inner, size.bit_length())
        if (index >> level) & 1
    ]
    return proof


def _trailing_zeros(n: int) -> int:
    """Return the number of trailing zero bits of ``n``. Requires ``n > 0``."""
    return (n & -n).bit_length() - 1


# Verification -------------------------------------------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` whose root is ``root``.

    RFC 9162 §2.1.3.2. Raises ProofShapeError unless ``0 <= index < size``, the leaf hash and
    every proof hash are `HASH_SIZE` bytes and the proof has exactly the right length; raises
    RootMismatchError if the calculated root is not ``root``.
    """
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    # (5): the calculated root must be the expected one (sn == 0 was checked on the way).
    if calculated != root:
        raise RootMismatchError(root, calculated)


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` implies for leaf ``index`` of the tree of ``size``.

    Requires ``0 <= index < size``. Raises ProofShapeError on a bad shape (see `verify_inclusion`).
    The result proves nothing until it is compared with a trusted root.
    """
    # (1): the leaf must lie inside the tree.
    if not 0 <= index < size:
        raise ProofShapeError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash_size("leaf hash", leaf_hash)
    _check_proof(proof, _inclusion_proof_size(index, size))
    # (2)-(4): fn walks the path to the leaf, sn the path to the last leaf.
    _, root = _chain(index, size - 1, leaf_hash, proof)
    return root


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify that the tree of ``size2`` (root ``root2``) extends that of ``size1`` (``root1``).

    RFC 9162 §2.1.4.2. Requires ``0 < size1 <= size2``: a proof from size 0 is meaningless and
    rejected (as the published vectors do), even 0 -> 0; equal sizes need an empty proof and equal
    roots. Raises ProofShapeError on a bad shape (sizes, proof length, a proof hash not `HASH_SIZE`
    bytes) and RootMismatchError if a calculated root is not the given one. Roots are compared as
    given, never shape-checked: a root of the wrong size simply does not match.
    """
    if not 0 < size1 <= size2:
        raise ProofShapeError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        _check_proof(proof, 0)
        if root1 != root2:
            raise RootMismatchError(root2, root1, f"root of the size-{size2} tree")
        return
    # (1): an empty proof fails (the length check says so with the expected length).
    _check_proof(proof, _consistency_proof_size(size1, size2))
    # (2): when the old tree is a perfect subtree of the new one, its root starts the path.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # (3)-(4): skip the levels where the last old leaf is a right child: the seed covers them.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # (5)-(6): fr rebuilds the old root from left siblings only, sr the new root from all.
    fr, sr = _chain(fn, sn, path[0], path[1:])
    # (7): both roots must match (sn == 0 was checked by _chain).
    if fr != root1:
        raise RootMismatchError(root1, fr, f"root of the size-{size1} tree")
    if sr != root2:
        raise RootMismatchError(root2, sr, f"root of the size-{size2} tree")


def _chain(fn: int, sn: int, seed: bytes, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Hash ``seed`` up ``path``: step 4 of RFC 9162 §2.1.3.2, step 6 of §2.1.4.2.

    Returns ``(fr, sr)``: ``fr`` uses only the left siblings (the earlier tree's root, for
    consistency), ``sr`` all of them (the root; inclusion's ``r``). Raises ProofShapeError if the
    path is longer or shorter than the way to the root: the RFC's own length checks, kept as a
    backstop behind the callers' up-front length check (which gives the better diagnostic).
    """
    fr = sr = seed
    for c in path:
        # (a): the root was reached with hashes left over.
        if sn == 0:
            raise ProofShapeError("proof is longer than the path to the root")
        # (b): c is a left sibling when fn is a right child or on the right border.
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            # Climb the border levels where the node has no sibling.
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        # (c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofShapeError("proof is shorter than the path to the root")
    return fr, sr


def _inclusion_proof_size(index: int, size: int) -> int:
    """Return the length of an inclusion proof. Requires ``0 <= index < size``."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_proof_size(size1: int, size2: int) -> int:
    """Return the length of a consistency proof. Requires ``0 < size1 < size2``."""
    shift = _trailing_zeros(size1)
    seed = 0 if size1 == 1 << shift else 1
    return seed + _inclusion_proof_size(size1 - 1, size2) - shift


def _check_proof(proof: Sequence[bytes], want: int) -> None:
    """Raise ProofShapeError unless ``proof`` holds exactly ``want`` hashes of `HASH_SIZE` bytes."""
    if len(proof) != want:
        raise ProofShapeError(f"proof has {len(proof)} hashes, want {want}")
    for i, h in enumerate(proof):
        _check_hash_size(f"proof hash {i}", h)


def _check_hash_size(what: str, h: bytes) -> None:
    """Raise ProofShapeError unless ``h`` is `HASH_SIZE` bytes long."""
    if len(h) != HASH_SIZE:
        raise ProofShapeError(f"{what} has {len(h)} bytes, want {HASH_SIZE}")
