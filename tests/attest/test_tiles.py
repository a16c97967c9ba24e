"""C2SP tlog-tiles: paths, widths, bundles and integration, against the spec's definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import merkle
from attest.tiles import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    TileError,
    TileId,
    _full_tile_root,
    decode_bundle,
    encode_bundle,
    encode_index,
    integrate,
    node_at_from_tiles,
    parse_index,
    parse_level,
    split_hashes,
    tile_path,
    tile_width,
    tiles_for_size,
)


def leaves(n: int, start: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(start, start + n)]


@pytest.mark.parametrize(
    ("n", "path"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_encode_index_examples(n: int, path: str) -> None:
    assert encode_index(n) == path
    assert parse_index(path) == (n, TILE_WIDTH)


@given(st.integers(min_value=0, max_value=2**64), st.integers(min_value=1, max_value=256))
def test_tile_path_round_trip(n: int, width: int) -> None:
    path = tile_path(TileId(3, n), width)
    assert path.startswith("tile/3/")
    assert parse_index(path.removeprefix("tile/3/")) == (n, width)


@pytest.mark.parametrize(
    "path",
    [
        "1",
        "01",
        "0001",
        "x1/000",
        "001/000",
        "x000/001",
        "000.p/0",
        "000.p/256",
        "000.p/01",
        "",
        "000/",
        "x001",
        "000.p/",
        "-01",
    ],
)
def test_parse_index_rejects(path: str) -> None:
    with pytest.raises(TileError):
        parse_index(path)


@pytest.mark.parametrize("level", ["64", "01", "-1", "x", "", "1.0"])
def test_parse_level_rejects(level: str) -> None:
    with pytest.raises(TileError):
        parse_level(level)


def test_parse_level_accepts() -> None:
    assert parse_level("0") == 0
    assert parse_level("63") == 63
    assert parse_level("entries") == ENTRIES_LEVEL
    assert tile_path(TileId(ENTRIES_LEVEL, 5), 7) == "tile/entries/005.p/7"


def test_widths_match_the_spec_example() -> None:
    # tlog-tiles: "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
    # partial level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of
    # width 17, and one partial level 2 tile of width 1."
    tiles = list(tiles_for_size(70_000))
    by_level: dict[int, list[int]] = {}
    for t, w in tiles:
        by_level.setdefault(t.level, []).append(w)
    assert by_level == {0: [256] * 273 + [112], 1: [256, 17], 2: [1]}
    assert [w for t, w in tiles_for_size(256)] == [256, 1]
    assert list(tiles_for_size(0)) == []
    assert tile_width(ENTRIES_LEVEL, 273, 70_000) == 112


def test_tiles_hold_the_spec_formula() -> None:
    # The n-th tile at level l holds MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l]).
    size = 256 * 256 + 300
    hashes = leaves(size)
    tiles = integrate(0, lambda t: b"", hashes).tiles
    for t, w in tiles_for_size(size):
        span = TILE_WIDTH**t.level
        for i in range(0, w, 97):
            start = (t.index * TILE_WIDTH + i) * span
            want = merkle.root_hash(hashes[start : start + span])
            assert split_hashes(tiles[t])[i] == want


@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6))
def test_integration_in_batches_equals_one_shot(batches: list[int]) -> None:
    stored: dict[TileId, bytes] = {}
    size = 0
    for n in batches:
        res = integrate(size, lambda t: stored.get(t, b""), leaves(n, size))
        stored.update(res.tiles)
        size = res.size
    assert stored == integrate(0, lambda t: b"", leaves(size)).tiles
    root = merkle.subtree_hash(0, size, node_at_from_tiles(lambda t: stored[t]))
    assert root == merkle.root_hash(leaves(size))


def test_integrate_refuses_a_short_edge_tile() -> None:
    stored = integrate(0, lambda t: b"", leaves(10)).tiles
    with pytest.raises(TileError):
        integrate(11, lambda t: stored.get(t, b""), leaves(1, 11))


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    assert decode_bundle(encode_bundle(entries)) == entries


@given(st.lists(st.binary(max_size=600), max_size=20))
def test_bundle_bytes_are_the_spec_layout(entries: list[bytes]) -> None:
    # The spec's layout written the plain way: each entry behind its big-endian uint16 length.
    want = b"".join(len(e).to_bytes(2, "big") + e for e in entries)
    assert encode_bundle(entries) == want


@pytest.mark.parametrize(
    ("data", "case"),
    [(b"\x00", "truncated-length"), (b"\x00\x05abc", "truncated-entry")],
)
def test_bundle_truncated(data: bytes, case: str) -> None:
    with pytest.raises(TileError):
        decode_bundle(data)


def test_bundle_refuses_oversize_entry() -> None:
    encode_bundle([b"x" * 0xFFFF])
    with pytest.raises(TileError):
        encode_bundle([b"x" * 0x10000])


def test_split_hashes_refuses_ragged_tile() -> None:
    with pytest.raises(TileError):
        split_hashes(hashlib.sha256().digest() + b"x")


@settings(deadline=None, max_examples=40)
@given(st.integers(min_value=1, max_value=3 * 256 + 5))
def test_expanded_tiles_give_the_same_nodes(size: int) -> None:
    from attest.tiles import expand_tile, node_at_from_expanded

    stored = integrate(0, lambda t: b"", leaves(size)).tiles
    plain = node_at_from_tiles(lambda t: stored[t])
    fast = node_at_from_expanded(lambda t: expand_tile(stored[t]))
    for index in range(0, size, 7):
        assert merkle.inclusion_proof(index, size, fast) == merkle.inclusion_proof(
            index, size, plain
        )
    assert merkle.subtree_hash(0, size, fast) == merkle.root_hash(leaves(size))


@settings(max_examples=60)
@given(st.data())
def test_a_tile_expanded_from_a_narrower_one_is_expanded_whole(data: st.DataObject) -> None:
    """Widening an expansion (what a server does as its right-edge tile grows) gives what
    expanding the wider tile from nothing gives, at every width pair; a `prior` that is not
    the expansion of a prefix of the tile is ignored."""
    from attest.tiles import expand_tile

    width = data.draw(st.integers(min_value=1, max_value=TILE_WIDTH))
    narrower = data.draw(st.integers(min_value=0, max_value=width))
    tile = b"".join(leaves(width))
    whole = expand_tile(tile)
    assert expand_tile(tile, expand_tile(tile[: 32 * narrower])) == whole
    other = b"".join(leaves(width + 1))[32:]  # the same width, other hashes
    assert expand_tile(tile, expand_tile(other[: 32 * max(narrower, 1)])) == whole


@settings(max_examples=30)
@given(st.binary(min_size=TILE_WIDTH * 32, max_size=TILE_WIDTH * 32))
def test_the_full_tile_root_is_the_root_of_its_hashes(data: bytes) -> None:
    assert _full_tile_root(data) == merkle.root_hash(split_hashes(data))


@pytest.mark.parametrize("width", [0, 1, 255, 257])
def test_the_full_tile_root_refuses_a_tile_that_is_not_full(width: int) -> None:
    with pytest.raises(TileError):
        _full_tile_root(bytes(32 * width))
