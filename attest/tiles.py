"""C2SP tlog-tiles: tile coordinates, paths, entry bundles, and integration into tiles.

Pure: no I/O, no clock. Storage hands in the tiles it has and persists the tiles returned.

A tile at level L, index N holds up to 256 consecutive Merkle Tree Hashes of height 8*L:
level-0 tiles hold leaf hashes; each hash of a level-L tile (L >= 1) is the root of a *full*
tile one level below. Partial tiles (1..255 hashes) sit on the right edge of the tree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from attest.errors import AttestError
from attest.merkle import HASH_SIZE, node_hash, root_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF  # uint16 length prefix in entry bundles


class TileError(AttestError, ValueError):
    """A tile path, tile body or entry bundle is malformed."""


@dataclass(frozen=True, order=True)
class TileId:
    """One tile: `level` (0..63, or -1 for entry bundles) and `index` within the level."""

    level: int
    index: int


ENTRIES_LEVEL = -1  # TileId.level used for entry bundles (`tile/entries/...`)

# A tile reader returns the stored hashes of a tile (a multiple of 32 bytes, possibly a
# wider version than needed) or b"" when the tile does not exist yet.
TileReader = Callable[[TileId], bytes]


def encode_index(n: int) -> str:
    """Encode a tile index as zero-padded 3-digit path elements (1234067 -> x001/x234/067)."""
    if n < 0:
        raise TileError(f"negative tile index {n}")
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def tile_path(tile: TileId, width: int = TILE_WIDTH) -> str:
    """The path of a tile below the log prefix, e.g. `tile/0/x001/234` or `tile/entries/5.p/7`."""
    level = "entries" if tile.level == ENTRIES_LEVEL else str(tile.level)
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encode_index(tile.index)}{suffix}"


_ELEM = re.compile(r"x\d{3}")
_LAST = re.compile(r"\d{3}")
_WIDTH = re.compile(r"[1-9]\d{0,2}")
_LEVEL = re.compile(r"0|[1-9]\d?")


def parse_index(path: str) -> tuple[int, int]:
    """Parse `x001/x234/067[.p/W]` into (index, width); width is 256 for a full tile."""
    width = TILE_WIDTH
    if ".p/" in path:
        path, w = path.rsplit(".p/", 1)
        if not _WIDTH.fullmatch(w) or int(w) >= TILE_WIDTH:
            raise TileError(f"bad partial tile width {w!r}")
        width = int(w)
    elems = path.split("/")
    if not _LAST.fullmatch(elems[-1]) or not all(_ELEM.fullmatch(e) for e in elems[:-1]):
        raise TileError(f"bad tile index path {path!r}")
    if len(elems) > 1 and elems[0] == "x000":
        raise TileError(f"tile index path {path!r} has a leading zero element")
    n = 0
    for e in elems:
        n = n * 1000 + int(e.lstrip("x"))
    return n, width


def parse_level(level: str) -> int:
    """Parse a tile level: decimal 0..63, no leading zeros; `entries` means entry bundles."""
    if level == "entries":
        return ENTRIES_LEVEL
    if not _LEVEL.fullmatch(level) or int(level) > MAX_LEVEL:
        raise TileError(f"bad tile level {level!r}")
    return int(level)


def tile_width(level: int, index: int, size: int) -> int:
    """Width of tile (level, index) in a tree of `size` leaves: 0 (absent) to 256 (full).

    Entry bundles (level -1) have the width of the level-0 tile with the same index.
    """
    count = size >> (TILE_HEIGHT * max(level, 0))
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


def tiles_for_size(size: int) -> Iterator[tuple[TileId, int]]:
    """Every hash tile of a tree of `size` leaves with its width, level 0 first."""
    level = 0
    while (size >> (TILE_HEIGHT * level)) > 0:
        count = size >> (TILE_HEIGHT * level)
        for index in range((count + TILE_WIDTH - 1) // TILE_WIDTH):
            yield TileId(level, index), tile_width(level, index, size)
        level += 1


def split_hashes(data: bytes) -> list[bytes]:
    """Split a tile body into its 32-byte hashes."""
    if len(data) % HASH_SIZE:
        raise TileError(f"tile body of {len(data)} bytes is not a whole number of hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """Encode entries as a C2SP entry bundle: big-endian uint16 length prefix per entry."""
    # One join over prefixes and entries: half the time of growing a bytearray per entry,
    # and the sequencer encodes every entry it appends.
    parts = []
    for e in entries:
        n = len(e)
        if n > MAX_ENTRY_SIZE:
            raise TileError(f"entry of {n} bytes exceeds {MAX_ENTRY_SIZE}")
        parts.append(n.to_bytes(2, "big"))
        parts.append(e)
    return b"".join(parts)


def decode_bundle(data: bytes) -> list[bytes]:
    """Decode an entry bundle; raises TileError when it is truncated."""
    entries, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise TileError("entry bundle truncated inside a length prefix")
        n = int.from_bytes(data[i : i + 2], "big")
        if i + 2 + n > len(data):
            raise TileError("entry bundle truncated inside an entry")
        entries.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return entries


def node_at_from_tiles(read: TileReader) -> Callable[[int, int], bytes]:
    """A `merkle.NodeHashFn` over tiles: the hash of the perfect subtree (level, index).

    A node of height 8*L + h is the root of 2**h consecutive hashes of a level-L tile.
    """

    def node_at(level: int, index: int) -> bytes:
        tl, h = divmod(level, TILE_HEIGHT)
        first = index << h
        tile = read(TileId(tl, first // TILE_WIDTH))
        off = (first % TILE_WIDTH) * HASH_SIZE
        chunk = tile[off : off + (HASH_SIZE << h)]
        if len(chunk) != HASH_SIZE << h:
            raise TileError(f"tile ({tl}, {first // TILE_WIDTH}) lacks node ({level}, {index})")
        if h == 0:
            return chunk
        return root_hash(split_hashes(chunk))

    return node_at


# A tile with every complete subtree inside it: levels[h] holds the concatenated hashes of the
# subtrees of height h (levels[0] is the tile itself).
ExpandedTile = list[bytes]


def expand_tile(data: bytes, prior: ExpandedTile | None = None) -> ExpandedTile:
    """Every complete subtree hash within a tile (at most 255 hashes), computed once.

    `prior`, the expansion of a narrower version of the same tile, spares hashing again the
    subtrees it holds: a tile only grows, so a subtree complete in a prefix of its hashes is the
    same subtree in the whole (a partial right-edge tile widens by a few hashes a batch, and
    each new width is expanded for the proofs against it). It is used only when its level-0
    hashes are a prefix of `data`; any other `prior` is ignored, and the answer is the same."""
    if prior is None or not data.startswith(prior[0]):
        prior = [b""]
    levels = [data]
    while len(levels[-1]) >= 2 * HASH_SIZE:
        prev = levels[-1]
        # The first len(kept) // HASH_SIZE nodes of this level hash the first twice as many
        # below, all within the prefix `prior` expanded.
        kept = prior[len(levels)] if len(levels) < len(prior) else b""
        levels.append(
            kept
            + b"".join(
                node_hash(prev[i : i + HASH_SIZE], prev[i + HASH_SIZE : i + 2 * HASH_SIZE])
                for i in range(2 * len(kept), len(prev) - HASH_SIZE, 2 * HASH_SIZE)
            )
        )
    return levels


def node_at_from_expanded(read: Callable[[TileId], ExpandedTile]) -> Callable[[int, int], bytes]:
    """A `merkle.NodeHashFn` over expanded tiles: each node is a slice, no hashing."""

    def node_at(level: int, index: int) -> bytes:
        tl, h = divmod(level, TILE_HEIGHT)
        first = index << h
        levels = read(TileId(tl, first // TILE_WIDTH))
        off = ((first % TILE_WIDTH) >> h) * HASH_SIZE
        node = levels[h][off : off + HASH_SIZE] if h < len(levels) else b""
        if len(node) != HASH_SIZE:
            raise TileError(f"tile ({tl}, {first // TILE_WIDTH}) lacks node ({level}, {index})")
        return node

    return node_at


@dataclass
class Integration:
    """The result of appending leaves: every tile that changed, and the new tree size."""

    tiles: dict[TileId, bytes]
    size: int


def integrate(old_size: int, read: TileReader, new_leaf_hashes: Sequence[bytes]) -> Integration:
    """Append leaf hashes to a tree of `old_size` leaves stored as tiles.

    Reads only the right-edge partial tiles, and returns the new contents of every tile that
    changed (at every level). The caller persists them together with the new checkpoint.
    """
    changed: dict[TileId, bytes] = {}
    new_size = old_size + len(new_leaf_hashes)
    hashes = list(new_leaf_hashes)
    level = 0
    while hashes:
        old_count = old_size >> (TILE_HEIGHT * level)
        new_count = new_size >> (TILE_HEIGHT * level)
        assert new_count - old_count == len(hashes), "level counts out of step"
        _append_level(level, old_count, read, hashes, changed)
        # Tiles that just became full contribute their root to the level above.
        hashes = [
            _full_tile_root(changed[TileId(level, n)])
            for n in range(old_count // TILE_WIDTH, new_count // TILE_WIDTH)
        ]
        level += 1
    return Integration(changed, new_size)


_NODE_PREFIX = b"\x01"  # RFC 9162's interior node prefix, as `attest.merkle.node_hash` uses


def _full_tile_root(data: bytes) -> bytes:
    """`root_hash(split_hashes(data))` for a full tile, hashing pairs straight from the packed
    bytes: one slice per node rather than a list of hashes and two concatenations (about a
    fifth less time; the sequencer hashes a tile's worth of nodes for every 256 entries)."""
    if len(data) != TILE_WIDTH * HASH_SIZE:
        raise TileError(f"a full tile has {TILE_WIDTH * HASH_SIZE} bytes, not {len(data)}")
    sha256, pair = hashlib.sha256, 2 * HASH_SIZE
    # A full tile is a perfect subtree: every level pairs up evenly, down to one hash.
    while len(data) > HASH_SIZE:
        data = b"".join(
            [sha256(_NODE_PREFIX + data[i : i + pair]).digest() for i in range(0, len(data), pair)]
        )
    return data


def _append_level(
    level: int,
    old_count: int,
    read: TileReader,
    hashes: list[bytes],
    changed: dict[TileId, bytes],
) -> None:
    """Append `hashes` to the level's tiles, starting at position `old_count`."""
    pos, i = old_count, 0
    while i < len(hashes):
        tid = TileId(level, pos // TILE_WIDTH)
        have = pos % TILE_WIDTH
        base = read(tid)[: have * HASH_SIZE] if have else b""
        if len(base) != have * HASH_SIZE:
            raise TileError(f"tile ({level}, {tid.index}) has {len(base)} bytes, want {have * 32}")
        take = min(TILE_WIDTH - have, len(hashes) - i)
        changed[tid] = base + b"".join(hashes[i : i + take])
        pos += take
        i += take
