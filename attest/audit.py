"""Full audit of a tiled log: recompute every tile and the root from the entries. Pure.

Steps (each tagged in the code):
  (1) every entry bundle hashes to the level-0 tile beside it;
  (2) every full tile at level L hashes to its entry in the level L+1 tile;
  (3) the root recomputed from the tiles equals the checkpoint's root.
Any failure raises `AuditError`; success returns None.
"""

from __future__ import annotations

from collections.abc import Callable

from attest import merkle
from attest.errors import AttestError
from attest.tiles import (
    TILE_WIDTH,
    TileId,
    node_at_from_tiles,
    split_hashes,
    tiles_for_size,
)


class AuditError(AttestError):
    """What the log serves does not add up to its checkpoint."""


# (tile, width) -> tile bytes; (bundle index, width) -> list of entries.
TileFetch = Callable[[TileId, int], bytes]
BundleFetch = Callable[[int, int], list[bytes]]


def audit_tree(size: int, root: bytes, tile: TileFetch, bundle: BundleFetch | None) -> None:
    """Check that the tiles (and, if `bundle` is given, the entries) reproduce `root`.

    Requires every tile of the tree of `size` leaves to be fetchable at its width.
    """
    got: dict[TileId, bytes] = {}
    for tid, width in tiles_for_size(size):
        data = tile(tid, width)
        if len(data) != width * merkle.HASH_SIZE:
            raise AuditError(
                f"tile {tid.level}/{tid.index} has {len(data)} bytes, want {width * 32}"
            )
        got[tid] = data
    for tid, data in got.items():
        if bundle is not None and tid.level == 0:
            _check_bundle(tid.index, data, bundle(tid.index, len(data) // 32))  # (1)
        if len(data) == TILE_WIDTH * merkle.HASH_SIZE:
            _check_parent(tid, data, got)  # (2)
    calculated = (
        merkle.subtree_hash(0, size, node_at_from_tiles(lambda t: got[t]))
        if size
        else merkle.EMPTY_ROOT
    )
    if calculated != root:  # (3)
        raise AuditError(f"recomputed root {calculated.hex()} != checkpoint root {root.hex()}")


def _check_bundle(index: int, tile: bytes, entries: list[bytes]) -> None:
    want = split_hashes(tile)
    if len(entries) != len(want):
        raise AuditError(f"entry bundle {index} has {len(entries)} entries, want {len(want)}")
    for i, (e, h) in enumerate(zip(entries, want, strict=True)):
        if merkle.leaf_hash(e) != h:
            raise AuditError(f"entry {index * TILE_WIDTH + i} does not hash to its leaf hash")


def _check_parent(tid: TileId, data: bytes, got: dict[TileId, bytes]) -> None:
    parent = got.get(TileId(tid.level + 1, tid.index // TILE_WIDTH))
    if parent is None:
        raise AuditError(f"full tile {tid.level}/{tid.index} has no parent tile")
    off = (tid.index % TILE_WIDTH) * merkle.HASH_SIZE
    if merkle.root_hash(split_hashes(data)) != parent[off : off + merkle.HASH_SIZE]:
        raise AuditError(f"tile {tid.level}/{tid.index} does not hash to its parent entry")
