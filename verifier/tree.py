"""A log's Merkle tree as the node holds it: C2SP tiles, fetched over stored."""

from __future__ import annotations

from collections.abc import Callable

from attest import merkle
from attest.tiles import (
    TileId,
    node_at_from_tiles,
)


class TreeMismatch(Exception):
    """Tiles or bundles do not add up to the signed root (the node decides the evidence)."""


# -- the tree as tiles ------------------------------------------------------------------------


class TreeTiles:
    """Hash tiles of one tree: freshly fetched ones over the node's stored (verified) ones."""

    def __init__(self, stored: Callable[[TileId], bytes | None]) -> None:
        self._stored = stored
        self._cache: dict[TileId, bytes | None] = {}
        self.fetched: dict[TileId, bytes] = {}
        self._roots: dict[int, bytes] = {}

    def stored(self, tile: TileId) -> bytes | None:
        """The node's stored tile (read once per TreeTiles: it changes only between steps)."""
        if tile not in self._cache:
            self._cache[tile] = self._stored(tile)
        return self._cache[tile]

    def read(self, tile: TileId) -> bytes:
        """The tile: fetched if it was, else stored, else b""."""
        data = self.fetched.get(tile)
        if data is None:
            data = self.stored(tile) or b""
        return data

    def node_at(self, level: int, index: int) -> bytes:
        """A `merkle.NodeHashFn` over these tiles."""
        return node_at_from_tiles(self.read)(level, index)

    def root(self, size: int) -> bytes:
        """The Merkle root of the first `size` leaves (memoised)."""
        if size not in self._roots:
            self._roots[size] = merkle.subtree_hash(0, size, self.node_at)
        return self._roots[size]

    def consistency(self, first: int, second: int) -> list[bytes]:
        """An RFC 9162 consistency proof between two sizes (empty from size 0)."""
        return [] if first == 0 else merkle.consistency_proof(first, second, self.node_at)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """An RFC 9162 inclusion proof of leaf `index` in the tree of `size`."""
        return merkle.inclusion_proof(index, size, self.node_at)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`."""
        return self.node_at(0, index)
