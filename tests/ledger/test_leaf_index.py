"""The leaf-hash index lags the tree, and nothing that looks leaves up can tell, on SQLite and
PostgreSQL.

The `leaves` table holds the entries below a per-log watermark (`leaf_index_heads`); the leaf
hashes above it are the level-0 tile hashes there. These tests check that lookups by hash
(`Store.leaf_index`, `Store.holds_leaf`) and the sequencer's deduplication stay exact on both
sides of the watermark, across flushes, across processes sharing one database, across a
`kill -9` between a batch's commit and the flush or in the middle of a flush, and across the
migration that introduces the watermark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, inspect, text

from attest import merkle
from attest.note import Ed25519NoteSigner
from attest.tiles import TILE_WIDTH, TileId
from ledger import schema
from ledger.log import Log
from ledger.sequencer import Sequenced, Sequencer, signed_head
from ledger.storage import Store, leaf_prefix
from tests.support import move_schema

ORIGIN = "test.example/leaf-index"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SEED = bytes(range(32))  # the log's key: a restarted process signs as the crashed one did


def entries(n: int, tag: str) -> list[bytes]:
    """`n` distinct leaves (not JSON: no statement digest, so dedupe is by leaf hash alone)."""
    return [f"{tag}-{i}".encode() for i in range(n)]


def open_log(store: Store) -> Log:
    """The test log in a migrated store, created on first use."""
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer)
    return Log(store, store.create_log("evidence", ORIGIN, "evidence", signer.vkey, empty))


def sequencer(log: Log, *, batch_size: int, lag: int) -> Sequencer:
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    return Sequencer(log, signer, batch_size=batch_size, leaf_index_lag=lag)


def integrate(seq: Sequencer, xs: Sequence[bytes]) -> list[Sequenced]:
    out = seq.integrate(xs)
    assert all(isinstance(r, Sequenced) for r in out), out
    return out  # type: ignore[return-value]


def leaf_rows(url: str, log_id: int) -> dict[int, bytes]:
    """The `leaves` rows of a log, index -> leaf hash (asserting one row per index). From
    revision 0009 a row holds the hash's prefix only: the hash is then its level-0 tile's at
    that index, and the row's prefix must be that hash's; from 0010 its epoch must be its
    index's (`schema.LEAF_EPOCH_BITS`)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("leaves")}
            if "leaf_hash" in columns:
                q = text("SELECT idx, leaf_hash FROM leaves WHERE log_id = :l")
                rows = [(int(i), bytes(h)) for i, h in conn.execute(q, {"l": log_id})]
            else:
                epoch = "epoch" if "epoch" in columns else "NULL"
                q = text(f"SELECT idx, prefix, {epoch} FROM leaves WHERE log_id = :l")
                tq = text("SELECT idx, data FROM tiles WHERE log_id = :l AND level = 0")
                tiles = {int(n): bytes(d) for n, d in conn.execute(tq, {"l": log_id})}
                rows = []
                for i, prefix, e in conn.execute(q, {"l": log_id}):
                    n, at = divmod(int(i), TILE_WIDTH)
                    h = tiles[n][at * 32 : (at + 1) * 32]
                    assert leaf_prefix(h) == prefix, f"row {i} holds another hash's prefix"
                    if "epoch" in columns:
                        assert e == int(i) >> schema.LEAF_EPOCH_BITS, f"row {i}: epoch {e}"
                    rows.append((int(i), h))
    finally:
        engine.dispose()
    out = dict(rows)
    assert len(out) == len(rows), "two rows for one index"
    return out


def add_row(url: str, log_id: int, prefix: int, index: int) -> None:
    """A `leaves` row written behind the store's back."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO leaves (log_id, epoch, prefix, idx) VALUES (:l, :e, :p, :i)"),
                {"l": log_id, "e": index >> schema.LEAF_EPOCH_BITS, "p": prefix, "i": index},
            )
    finally:
        engine.dispose()


def test_a_prefix_names_candidates_that_the_tiles_confirm(store: Store) -> None:
    # Two hashes that share their first 8 bytes cannot be made on purpose here (2^32 work), so
    # the index is given rows such a pair would leave: a row under the prefix of a hash the
    # log does not hold, and a second row under the prefix of one it does, both pointing at
    # entries with other hashes. Lookups must check each candidate against its tile.
    log = open_log(store)
    seq = sequencer(log, batch_size=32, lag=10_000)
    logged = entries(20, "logged")
    integrate(seq, logged)  # short: flushes all 20
    assert store.leaf_index_size(log.id) == 20
    hashes = [merkle.leaf_hash(e) for e in logged]
    newcomer = b"never logged, yet its prefix is"
    add_row(store.url, log.id, leaf_prefix(merkle.leaf_hash(newcomer)), 3)
    add_row(store.url, log.id, leaf_prefix(hashes[7]), 11)
    assert store.leaf_index(log.id, merkle.leaf_hash(newcomer)) is None
    assert store.leaf_index(log.id, hashes[7]) == 7
    assert store.leaf_index(log.id, hashes[11]) == 11
    # Deduplication (the writer's lookup): the newcomer is new, the logged entries are not.
    got = integrate(seq, [newcomer, logged[7], logged[11], logged[3]])
    assert [(r.index, r.duplicate) for r in got] == [(20, False), (7, True), (11, True), (3, True)]


def test_a_lookup_by_hash_holds_one_connection(db_url: str) -> None:
    # The tile that confirms a candidate is read on the lookup's own connection: with one
    # pooled read connection and no overflow, a lookup that asked the pool for a second would
    # wait for itself until the pool's timeout.
    store = Store(db_url)
    store.migrate()
    try:
        log = open_log(store)
        logged = entries(300, "one-connection")
        integrate(sequencer(log, batch_size=512, lag=10_000), logged)  # short: flushes
        assert store.leaf_index_size(log.id) == 300
    finally:
        store.close()
    fresh = Store(db_url)  # an empty tile cache: every confirmation reads its tile
    fresh._read.dispose()
    fresh._read = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=3)
    try:
        for i in (0, 255, 256, 299):
            assert fresh.leaf_index(log.id, merkle.leaf_hash(logged[i])) == i
    finally:
        fresh.close()


def test_lookups_on_both_sides_of_the_watermark(store: Store) -> None:
    # Full batches of 48 under a lag bound of 300: the seventh batch (336 entries) flushes,
    # four more leave a tail [336, 528) that starts inside tile 1 and ends in a partial tile 2.
    log = open_log(store)
    seq = sequencer(log, batch_size=48, lag=300)
    added: list[bytes] = []
    for i in range(11):
        batch = entries(48, f"b{i}")
        integrate(seq, batch)
        added += batch
        want_mark = 0 if i < 6 else 336
        assert store.leaf_index_size(log.id) == want_mark, i
    assert log.head().size == 528
    hashes = [merkle.leaf_hash(e) for e in added]
    # The table holds exactly the entries below the watermark: full batches wrote no rows.
    assert leaf_rows(store.url, log.id) == dict(enumerate(hashes[:336]))
    # Every entry by hash, with the boundaries named: the last indexed entry, the first of the
    # tail, the first of a tile, the last of the partial tile.
    for i in (0, 255, 335, 336, 337, 511, 512, 527):
        assert store.leaf_index(log.id, hashes[i]) == i, i
        assert log.index_of(hashes[i]) == i, i
        assert store.holds_leaf(log.id, hashes[i]), i
    for i, h in enumerate(hashes):
        assert store.leaf_index(log.id, h) == i, i
    # Not in the log: an unknown hash; 32 bytes of a tile that straddle two leaf hashes; a
    # level-1 hash (an interior node, not a leaf).
    tile1 = store.read_tile(log.id, TileId(0, 1)) or log.tile(TileId(0, 1), 528)
    straddling = tile1[16:48]
    level1 = log.tile(TileId(1, 0), 528)[:32]
    for absent in (merkle.leaf_hash(b"never logged"), straddling, level1):
        assert store.leaf_index(log.id, absent) is None
        assert not store.holds_leaf(log.id, absent)


def test_lookups_and_dedupe_across_epochs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # `leaves` is keyed by epoch first (2^20 entries each); 64 here, so that batches of 40
    # under a lag bound of 100 flush rows across epochs: [0, 120) into epochs 0-1, [120, 240)
    # into 1-3, [240, 360) into 3-5, and [360, 440) stays the tail.
    monkeypatch.setattr(schema, "LEAF_EPOCH_BITS", 6)
    log = open_log(store)
    assert store.leaf_index(log.id, merkle.leaf_hash(b"an empty log")) is None  # no epoch
    seq = sequencer(log, batch_size=40, lag=100)
    added: list[bytes] = []
    for i in range(11):
        batch = entries(40, f"e{i}")
        integrate(seq, batch)
        added += batch
    assert store.leaf_index_size(log.id) == 360 and log.head().size == 440
    hashes = [merkle.leaf_hash(e) for e in added]
    assert leaf_rows(store.url, log.id) == dict(enumerate(hashes[:360]))  # epochs checked
    for i, h in enumerate(hashes):
        assert store.leaf_index(log.id, h) == i, i
    assert store.leaf_index(log.id, merkle.leaf_hash(b"never logged")) is None
    # Candidates in another epoch than the entry's: a prefix of a logged hash (entry 7, epoch
    # 0) planted at entry 300 (epoch 4), and a newcomer's prefix at entry 200 (epoch 3).
    newcomer = b"never logged either"
    add_row(store.url, log.id, leaf_prefix(hashes[7]), 300)
    add_row(store.url, log.id, leaf_prefix(merkle.leaf_hash(newcomer)), 200)
    assert store.leaf_index(log.id, hashes[7]) == 7
    assert store.leaf_index(log.id, merkle.leaf_hash(newcomer)) is None
    # Deduplication finds entries of every epoch and of the tail; the newcomer is new.
    picks = [7, 70, 130, 250, 359, 360, 439]
    got = integrate(seq, [newcomer, *(added[i] for i in picks)])
    assert [(r.index, r.duplicate) for r in got] == [(440, False)] + [(i, True) for i in picks]


def test_dedupe_across_a_flush(store: Store) -> None:
    log = open_log(store)
    seq = sequencer(log, batch_size=32, lag=100)
    a = entries(128, "a")
    for i in range(0, 128, 32):
        integrate(seq, a[i : i + 32])
    assert store.leaf_index_size(log.id) == 128  # the fourth batch reached the bound
    b = entries(64, "b")
    integrate(seq, b[:32])
    integrate(seq, b[32:])
    assert store.leaf_index_size(log.id) == 128  # b is the tail
    # A full batch of duplicates, half indexed and half in the tail: their first indices.
    again = integrate(seq, [*a[:16], *b[:16]])
    assert [r.index for r in again] == [*range(16), *range(128, 144)]
    assert all(r.duplicate for r in again)
    assert log.head().size == 192
    # Full batches with duplicates from both sides of the watermark and within the batch:
    # new entries are appended once; the second batch reaches the bound and flushes.
    c = entries(48, "c")
    mixed = [*c[:24], a[5], b[40], c[0]]
    mixed += entries(32 - len(mixed), "pad")
    res = integrate(seq, mixed)
    assert [r.index for r in res[24:27]] == [5, 128 + 40, 192]
    assert [r.duplicate for r in res[24:27]] == [True, True, True]
    assert store.leaf_index_size(log.id) == 128  # 192 + 29 new = 221: lag 93 < 100
    res = integrate(seq, [*c[24:48], *b[:8]])  # 24 new: lag 117, the flush rides this batch
    assert [r.index for r in res[24:]] == list(range(128, 136))
    size = log.head().size
    assert size == 245 and store.leaf_index_size(log.id) == size
    # After the flush: every row once, each the hash of the entry at its index.
    everything = [*a, *b, *c[:24], *entries(32 - 27, "pad"), *c[24:]]
    by_index = {r.index: r.leaf_hash for r in integrate(seq, everything) if r.duplicate}
    assert len(by_index) == size
    assert leaf_rows(store.url, log.id) == by_index
    assert log.head().size == size
    # A sequencer of a fresh process finds the tail through the tiles.
    integrate(seq, entries(32, "d"))
    fresh = sequencer(Log(store, log.row), batch_size=32, lag=100)
    res = integrate(fresh, entries(32, "d"))
    assert [r.index for r in res] == list(range(size, size + 32))
    assert all(r.duplicate for r in res)


def test_two_processes_share_the_tail(db_url: str) -> None:
    # Two stores on one database, as two frontends: one sequences, the other looks up and
    # deduplicates; then they take turns, and one flushes behind the other's back.
    s1, s2 = Store(db_url), Store(db_url)
    s1.migrate()
    try:
        log1 = open_log(s1)
        log2 = open_log(s2)
        seq1 = sequencer(log1, batch_size=16, lag=1000)
        seq2 = sequencer(log2, batch_size=16, lag=1000)
        a = entries(48, "a")
        for i in range(0, 48, 16):
            integrate(seq1, a[i : i + 16])
        assert s2.leaf_index_size(log2.id) == 0
        for i, e in enumerate(a):
            assert s2.leaf_index(log2.id, merkle.leaf_hash(e)) == i
        res = integrate(seq2, [*a[:8], *entries(8, "b")])  # rebuilt from the tiles
        assert [r.index for r in res] == [*range(8), *range(48, 56)]
        # seq1's kept tail is behind the stored tree now: extended from the tiles.
        res = integrate(seq1, [*entries(8, "b"), *entries(8, "c")])
        assert [r.index for r in res] == [*range(48, 56), *range(56, 64)]
        assert [r.duplicate for r in res] == [True] * 8 + [False] * 8
        assert seq2.flush_leaf_index() == 64
        assert s1.leaf_index_size(log1.id) == 64
        # seq1's kept tail starts below the watermark now; it must neither trust what it
        # would flush nor write those rows again.
        res = integrate(seq1, [*a[40:48], *entries(8, "d")])
        assert [r.index for r in res] == [*range(40, 48), *range(64, 72)]
        assert seq1.flush_leaf_index() == 8
        assert seq1.flush_leaf_index() == 0
        assert seq2.flush_leaf_index() == 0
        want = [*a, *entries(8, "b"), *entries(8, "c"), *entries(8, "d")]
        assert leaf_rows(db_url, log1.id) == {i: merkle.leaf_hash(e) for i, e in enumerate(want)}
    finally:
        s1.close()
        s2.close()


def test_a_short_batch_flushes(store: Store) -> None:
    # The queue ran dry (a batch below batch_size): the index is brought up to the tree, so a
    # quiet log keeps it complete.
    log = open_log(store)
    seq = sequencer(log, batch_size=64, lag=10_000)
    integrate(seq, entries(64, "full"))
    assert store.leaf_index_size(log.id) == 0
    integrate(seq, entries(5, "short"))
    assert store.leaf_index_size(log.id) == 69
    assert len(leaf_rows(store.url, log.id)) == 69


DEADLINE = 60.0
IDLE = 1.0  # seconds: far above a pass of the event loop between one write and the next


def test_the_batching_loop_flushes_when_idle_not_per_short_batch(store: Store) -> None:
    """Writes that keep coming in short batches leave the index lagging (under single writes
    every batch is short, and a flush in each one doubled what it wrote); once the queue has
    stayed dry for `idle_flush`, the loop brings the index up to the tree."""
    log = open_log(store)
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    seq = Sequencer(log, signer, batch_size=64, leaf_index_lag=10_000, idle_flush=IDLE)

    async def run() -> tuple[int, float]:
        seq.start()
        try:
            for k in range(6):
                got = await seq.submit(entries(5, f"w{k}"))
                assert all(isinstance(r, Sequenced) for r in got), got
            during, quiet = store.leaf_index_size(log.id), time.monotonic()
            while store.leaf_index_size(log.id) < 30:
                assert time.monotonic() - quiet < IDLE + DEADLINE, "never flushed when idle"
                await asyncio.sleep(0.05)
            return during, time.monotonic() - quiet
        finally:
            await seq.stop()

    during, waited = asyncio.run(run())
    assert during == 0
    assert waited >= IDLE * 0.9  # not before the queue had been dry that long
    want = [e for k in range(6) for e in entries(5, f"w{k}")]
    assert leaf_rows(store.url, log.id) == {i: merkle.leaf_hash(e) for i, e in enumerate(want)}


def test_a_failed_idle_flush_stops_nothing(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle flush fails (the database refuses): it is logged, is not retried every idle
    spell while nothing happens, writes go on being sequenced, and the idle spell after the
    next batch flushes the whole tail."""
    log = open_log(store)
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    seq = Sequencer(log, signer, batch_size=64, leaf_index_lag=10_000, idle_flush=0.05)
    flush, calls = seq.flush_leaf_index, []

    def failing_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        return flush()

    monkeypatch.setattr(seq, "flush_leaf_index", failing_once)

    async def run() -> None:
        seq.start()
        try:
            await seq.submit(entries(5, "before"))
            deadline = time.monotonic() + DEADLINE
            while not calls:
                assert time.monotonic() < deadline, "no idle flush was tried"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # ten idle spells: not retried until a batch has run
            assert len(calls) == 1, calls
            got = await asyncio.wait_for(seq.submit(entries(5, "after")), DEADLINE)
            assert all(isinstance(r, Sequenced) for r in got), got
            while store.leaf_index_size(log.id) < 10:
                assert time.monotonic() < deadline, "the tail was never flushed"
                await asyncio.sleep(0.01)
        finally:
            await seq.stop()

    with caplog.at_level(logging.WARNING, logger="ledger.sequencer"):
        asyncio.run(run())
    assert "idle flush of the leaf-hash index failed" in caplog.text
    assert len(leaf_rows(store.url, log.id)) == 10


def test_migration_moves_the_watermark_both_ways(db_url: str) -> None:
    # Down to 0005, the tail is written out (earlier revisions expect a row per entry); back
    # up, every existing log starts with its watermark at its tree size.
    store = Store(db_url)
    store.migrate()
    try:
        log = open_log(store)
        seq = sequencer(log, batch_size=32, lag=10_000)
        integrate(seq, entries(10, "flushed"))  # short: flushes
        for i in range(3):
            integrate(seq, entries(32, f"tail{i}"))
        assert store.leaf_index_size(log.id) == 10
        move_schema(store, "0005", down=True)
        want = [*entries(10, "flushed"), *(e for i in range(3) for e in entries(32, f"tail{i}"))]
        assert leaf_rows(db_url, log.id) == {i: merkle.leaf_hash(e) for i, e in enumerate(want)}
        store.migrate()
        assert store.leaf_index_size(log.id) == 106
        # Back at the head, every row's prefix is the one `leaf_prefix` computes (PostgreSQL's
        # migration computes it in SQL; about half the hashes start with a set bit).
        assert leaf_rows(db_url, log.id) == {i: merkle.leaf_hash(e) for i, e in enumerate(want)}
        assert any(leaf_prefix(merkle.leaf_hash(e)) < 0 for e in want)
        fresh = sequencer(Log(store, log.row), batch_size=32, lag=10_000)
        assert [r.index for r in integrate(fresh, want[100:])] == list(range(100, 106))
    finally:
        store.close()


def test_migration_down_writes_a_never_flushed_log(db_url: str) -> None:
    # A log whose index was never flushed has no watermark row (its watermark is 0): down to
    # 0005, every one of its entries still gets its row.
    store = Store(db_url)
    store.migrate()
    try:
        log = open_log(store)
        seq = sequencer(log, batch_size=16, lag=10_000)
        want = [e for i in range(3) for e in entries(16, f"full{i}")]
        for i in range(0, 48, 16):
            integrate(seq, want[i : i + 16])
        assert store.leaf_index_size(log.id) == 0
        move_schema(store, "0005", down=True)
        assert leaf_rows(db_url, log.id) == {i: merkle.leaf_hash(e) for i, e in enumerate(want)}
    finally:
        store.close()


# -- kill -9 around the flush ----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from tests.ledger.test_leaf_index import entries, open_log, sequencer
    from ledger.storage import Store, WriteTxn

    url, point = sys.argv[1], sys.argv[2]
    store = Store(url)
    store.migrate()
    log = open_log(store)
    # The bound is reached by the fifth full batch only at "in_batch_flush".
    seq = sequencer(log, batch_size=64, lag=300 if point == "in_batch_flush" else 10_000)
    for i in range(4):
        seq.integrate(entries(64, f"e{i}"))

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    insert_leaves = WriteTxn._insert_leaves

    def dying_insert(self, rows):
        insert_leaves(self, rows)
        print("inserted", len(rows), flush=True)
        die()  # rows written, watermark not moved, nothing committed

    if point in ("in_batch_flush", "mid_flush"):
        WriteTxn._insert_leaves = dying_insert
    seq.integrate(entries(64, "e4"))
    if point == "after_batch_commit":
        die()  # committed; the new entries are above the watermark, no flush ran
    seq.flush_leaf_index()
    if point == "after_flush_commit":
        die()
    sys.exit(3)  # every point above dies first
    """
)

# point -> (tree size, watermark) the restarted process finds
CRASHES = {
    "after_batch_commit": (320, 0),
    "in_batch_flush": (256, 0),  # the batch carrying the flush is lost as a whole
    "mid_flush": (320, 0),
    "after_flush_commit": (320, 320),
}


@pytest.mark.parametrize("point", sorted(CRASHES))
def test_kill_9_around_the_flush(point: str, db_url: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, db_url, point],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr)
    if point in ("in_batch_flush", "mid_flush"):
        assert child.stdout.startswith("inserted 320"), child.stdout  # died mid-flush
    size, mark = CRASHES[point]
    store = Store(db_url)
    try:
        log = open_log(store)
        assert log.head().size == size
        assert store.leaf_index_size(log.id) == mark
        added = [e for i in range(size // 64) for e in entries(64, f"e{i}")]
        hashes = [merkle.leaf_hash(e) for e in added]
        # Nothing of a flush that did not commit is in the table.
        assert leaf_rows(store.url, log.id) == dict(enumerate(hashes[:mark]))
        # Every leaf is found: the tail through its tiles.
        for i, h in enumerate(hashes):
            assert store.leaf_index(log.id, h) == i
        # A restarted sequencer deduplicates them all, and its flush completes.
        seq = sequencer(log, batch_size=64, lag=10_000)
        for i in range(0, size, 64):
            res = integrate(seq, added[i : i + 64])
            assert [r.index for r in res] == list(range(i, i + 64))
            assert all(r.duplicate for r in res)
        assert seq.flush_leaf_index() == size - mark
        assert seq.flush_leaf_index() == 0
        assert store.leaf_index_size(log.id) == size
        assert leaf_rows(store.url, log.id) == dict(enumerate(hashes))
        more = entries(64, "after")
        res = integrate(seq, more)
        assert [r.index for r in res] == list(range(size, size + 64))
        assert not any(r.duplicate for r in res)
    finally:
        store.close()
