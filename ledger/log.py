"""One log as its frontends see it: head, tiles, entries, proofs. Reads only.

Proofs are computed from the stored tiles, exactly as a client holding the tiles would compute
them, so whatever this module serves, a client can recompute from `/tile/...`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from attest import merkle
from attest.tiles import (
    ENTRIES_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    ExpandedTile,
    TileId,
    decode_bundle,
    expand_tile,
    node_at_from_expanded,
    tile_width,
)
from ledger.errors import LedgerError
from ledger.storage import Head, LogRow, StorageError, Store

EXPANDED_CACHE = 4096


class LogRangeError(LedgerError, ValueError):
    """A request names an index or size the log does not have (yet)."""


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves."""

    index: int
    size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 consistency proof between trees of sizes `first` and `second`."""

    first: int
    second: int
    hashes: tuple[bytes, ...]


class Log:
    """Read access to one log in a `Store`, with a cache of the right edge of the tree."""

    def __init__(self, store: Store, row: LogRow) -> None:
        self.store, self.row = store, row
        # Right-edge tiles as last written by this process. Tiles only ever grow, so any
        # cached version at least as wide as a request needs is correct for it.
        self._edge: dict[TileId, bytes] = {}
        self._edge_lock = threading.Lock()
        # Tiles with their interior nodes, so a proof is slices rather than hashing (about
        # 16 KiB per full tile; the bound keeps a million-entry log's level-0 tiles in memory).
        self._expanded_cache: OrderedDict[tuple[TileId, int], ExpandedTile] = OrderedDict()
        # Per level, the right-edge tile last expanded below full width, and that width: the
        # next, wider version of it is expanded from that one (`expand_tile`'s prior).
        self._partial: dict[int, tuple[TileId, int]] = {}

    @property
    def id(self) -> int:
        """The database id of this log."""
        return self.row.id

    def head(self) -> Head:
        """The latest signed checkpoint."""
        return self.store.head(self.id)

    def edge(self) -> dict[TileId, bytes]:
        """The right-edge tiles as this process last wrote or was given them (a copy): what a
        frontend's `remember_edge` takes from the process that sequences its writes."""
        with self._edge_lock:
            return dict(self._edge)

    def remember_edge(self, tiles: dict[TileId, bytes]) -> None:
        """Called by the sequencer after a commit with every tile it wrote (and by a frontend
        with the sequencing process's `edge()`, which holds its entries' tree)."""
        with self._edge_lock:
            for t, d in tiles.items():
                if len(d) > len(self._edge.get(t, b"")):
                    self._edge[t] = d
            # Keep only the newest tile per level: older ones are full and cached by the store.
            newest: dict[int, TileId] = {}
            for t in self._edge:
                if t.index >= newest.get(t.level, t).index:
                    newest[t.level] = t
            for t in list(self._edge):
                if newest[t.level] != t:
                    del self._edge[t]
        self.store.remember_tiles(self.id, tiles)

    def tile(self, tile: TileId, size: int) -> bytes:
        """The hashes of `tile` as of a tree of `size` leaves (a prefix of the stored tile).

        Raises LogRangeError when the tree of that size has no such tile.
        """
        need = tile_width(tile.level, tile.index, size)
        if need == 0:
            raise LogRangeError(f"tree of size {size} has no tile {tile.level}/{tile.index}")
        with self._edge_lock:
            data = self._edge.get(tile, b"")
        if len(data) < need * 32:
            data = self.store.read_tile(self.id, tile)
        if len(data) < need * 32:
            raise StorageError(f"tile {tile} holds {len(data) // 32} hashes, want {need}")
        return data[: need * 32]

    def bundle(self, index: int, size: int) -> list[bytes]:
        """The entries of bundle `index` as of a tree of `size` leaves."""
        need = tile_width(ENTRIES_LEVEL, index, size)
        if need == 0:
            raise LogRangeError(f"tree of size {size} has no entry bundle {index}")
        entries = decode_bundle(self.store.read_bundle(self.id, index))
        if len(entries) < need:
            raise StorageError(f"entry bundle {index} holds {len(entries)} entries, want {need}")
        return entries[:need]

    def entry(self, index: int) -> bytes:
        """The entry at `index` (raises LogRangeError beyond the current head)."""
        size = self.head().size
        if not 0 <= index < size:
            raise LogRangeError(f"index {index} is not below the tree size {size}")
        return self.bundle(index // TILE_WIDTH, size)[index % TILE_WIDTH]

    def _node_at(self, size: int) -> merkle.NodeHashFn:
        return node_at_from_expanded(lambda t: self._expanded(t, size))

    def _expanded(self, tile: TileId, size: int) -> ExpandedTile:
        """`tile` as of `size`, with its interior nodes; cached, since (tile, width) is final."""
        width = tile_width(tile.level, tile.index, size)
        key = (tile, width)
        with self._edge_lock:
            hit = self._expanded_cache.get(key)
            if hit is not None:
                self._expanded_cache.move_to_end(key)
                return hit
            last = self._partial.get(tile.level)
            prior = self._expanded_cache.get(last) if last is not None and last[0] == tile else None
        levels = expand_tile(self.tile(tile, size), prior)
        with self._edge_lock:
            self._expanded_cache[key] = levels
            if width < TILE_WIDTH:
                last = self._partial.get(tile.level)
                if last is None or (last[0].index, last[1]) <= (tile.index, width):
                    self._partial[tile.level] = key
            while len(self._expanded_cache) > EXPANDED_CACHE:
                self._expanded_cache.popitem(last=False)
        return levels

    def _check_size(self, size: int) -> None:
        head = self.head().size
        if not 0 <= size <= head:
            raise LogRangeError(f"size {size} exceeds the tree size {head}")

    def root(self, size: int) -> bytes:
        """The root hash of the tree of `size` leaves."""
        self._check_size(size)
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.subtree_hash(0, size, self._node_at(size))

    def inclusion_proof(self, index: int, size: int, *, checked: bool = False) -> InclusionProof:
        """Inclusion proof of `index` in the tree of `size` leaves.

        Requires 0 <= index < size <= head size (else LogRangeError). `checked` skips the head
        lookup when the caller already knows `size` was published.
        """
        if not checked:
            self._check_size(size)
        if not 0 <= index < size:
            raise LogRangeError(f"index {index} is not below the tree size {size}")
        hashes = merkle.inclusion_proof(index, size, self._node_at(size))
        return InclusionProof(index, size, tuple(hashes))

    def inclusion_proofs(self, indices: list[int], size: int) -> list[InclusionProof]:
        """Inclusion proofs of several entries in the tree of `size` leaves, which the caller
        knows was published (a batch's checkpoint): the proofs share most of their nodes, so
        each node is looked up once for all of them.

        Entries of one entry bundle (`TILE_WIDTH` leaves) share the part of their proofs above
        it. Within the bundle, an entry's proof is its proof in the bundle's own tree (the
        bundle's leaves below `size`: RFC 9162's tree splits at powers of two, so its subtrees
        align with bundles); the rest is the bundle's and is made once, as what follows that
        part in the first entry's whole proof. In a full bundle the part within it is one
        sibling per level, sliced out of its expanded level-0 tile."""
        for index in indices:
            if not 0 <= index < size:
                raise LogRangeError(f"index {index} is not below the tree size {size}")
        seen: dict[tuple[int, int], bytes] = {}
        tiles = self._node_at(size)

        def node_at(level: int, index: int) -> bytes:
            node = seen.get((level, index))
            if node is None:
                node = seen[(level, index)] = tiles(level, index)
            return node

        bundles: dict[int, tuple[ExpandedTile | None, tuple[bytes, ...]]] = {}
        out: list[InclusionProof] = []
        for i in indices:
            b, offset = divmod(i, TILE_WIDTH)
            width = min(TILE_WIDTH, size - b * TILE_WIDTH)
            got = bundles.get(b)
            if got is None:
                local = self._proof_in_bundle(b, offset, width, node_at)
                whole = merkle.inclusion_proof(i, size, node_at)
                if whole[: len(local)] != local:  # the alignment above, checked once a bundle
                    raise StorageError(f"bundle {b}'s proofs disagree with the tree's")
                tile = self._expanded(TileId(0, b), size) if width == TILE_WIDTH else None
                got = bundles[b] = (tile, tuple(whole[len(local) :]))
            tile, above = got
            if tile is not None:
                out.append(InclusionProof(i, size, _siblings(tile, offset) + above))
            else:
                local = self._proof_in_bundle(b, offset, width, node_at)
                out.append(InclusionProof(i, size, tuple(local) + above))
        return out

    @staticmethod
    def _proof_in_bundle(
        bundle: int, offset: int, width: int, node_at: merkle.NodeHashFn
    ) -> list[bytes]:
        """The proof of leaf `offset` of entry bundle `bundle` in the tree of the bundle's
        first `width` leaves."""

        def node_in(level: int, index: int) -> bytes:
            return node_at(level, (bundle << (TILE_HEIGHT - level)) + index)

        return merkle.inclusion_proof(offset, width, node_in)

    def consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """Consistency proof between sizes `first` and `second`. Requires 0 < first <= second."""
        self._check_size(second)
        if not 0 < first <= second:
            raise LogRangeError(f"no consistency proof from size {first} to size {second}")
        hashes = merkle.consistency_proof(first, second, self._node_at(second))
        return ConsistencyProof(first, second, tuple(hashes))

    def index_of(self, leaf_hash: bytes) -> int | None:
        """The index of the entry with `leaf_hash`, if any (exact: entries the leaf-hash index
        does not hold yet are found in their tiles, `Store.leaf_index`)."""
        return self.store.leaf_index(self.id, leaf_hash)


def _siblings(tile: ExpandedTile, offset: int) -> tuple[bytes, ...]:
    """The proof of leaf `offset` within a full level-0 tile, expanded: its sibling at each
    of the tile's levels."""
    proof = []
    for level in range(TILE_HEIGHT):
        at = ((offset >> level) ^ 1) * merkle.HASH_SIZE
        proof.append(tile[level][at : at + merkle.HASH_SIZE])
    return tuple(proof)
