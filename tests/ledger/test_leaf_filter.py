"""The sequencer's leaf filter rules out, without a lookup, hashes the log does not hold, and
deduplication stays exact with it.

`ledger.sequencer._LeafFilter` is a Bloom filter of every leaf hash of the log: no false
negatives, a few false positives (looked up as before). These tests check the filter against
a set (never a false negative; false positives do occur in a tiny one), and the sequencer
against a model of the log (a dict from leaf to its first index) with the filter as it ships,
with a tiny one that answers "maybe" to most hashes, and with none at all: duplicates of
entries long in the log, repeats within a batch, entries another store sequenced behind this
one's back, and a sequencer starting on a log that already holds entries, all on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from attest import merkle
from attest.note import Ed25519NoteSigner
from ledger import sequencer as seqmod
from ledger.log import Log
from ledger.sequencer import Sequenced, Sequencer, _LeafFilter, signed_head
from ledger.storage import Store

ORIGIN = "test.example/leaf-filter"
SEED = bytes(range(32))


def digest(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


# -- the filter alone ---------------------------------------------------------------------------


@given(
    chunks=st.lists(st.integers(0, 300), max_size=12),
    first_bits=st.sampled_from([64, 256, 1 << 12]),
    per_entry=st.sampled_from([1, 4, 16]),
)
def test_no_false_negatives(chunks: list[int], first_bits: int, per_entry: int) -> None:
    # Whatever its size and however the hashes come, every hash added is "maybe held".
    f = _LeafFilter(first_bits)
    added: list[bytes] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seqmod, "_FILTER_BITS_PER_ENTRY", per_entry)
        for n in chunks:
            new = [digest(len(added) + i) for i in range(n)]
            f.add(b"".join(new), len(added) + n)
            added += new
            assert f.size == len(added)
            assert f.maybe_held(added) == added
            others = [digest(10**6 + i) for i in range(200)]
            assert set(f.maybe_held([*others, *added])) >= set(added)


def test_a_tiny_filter_has_false_positives_and_a_large_one_few() -> None:
    # The point of the tiny filters in the tests below: they send many absent hashes to the
    # database (so exactness cannot rest on the filter being right).
    held = [digest(i) for i in range(1000)]
    absent = [digest(10**6 + i) for i in range(10_000)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seqmod, "_FILTER_BITS_PER_ENTRY", 1)
        tiny = _LeafFilter(64)
        tiny.add(b"".join(held), len(held))
        assert len(tiny.maybe_held(absent)) > len(absent) // 2
    large = _LeafFilter.for_size(0)
    large.add(b"".join(held), len(held))
    assert len(large.maybe_held(absent)) < 10
    assert _LeafFilter.for_size(0).maybe_held(held) == []  # an empty log holds nothing


def test_the_filter_grows_by_parts() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(seqmod, "_FILTER_BITS_PER_ENTRY", 16)
        f = _LeafFilter(256)  # 16 entries, then 64, 256, ...
        hashes = [digest(i) for i in range(100)]
        f.add(b"".join(hashes), 100)
        assert len(f._parts) == 3
        assert f.maybe_held(hashes) == hashes


# -- the sequencer with it -------------------------------------------------------------------


FILTERS = ["shipped", "tiny", "chunked", "none"]


@pytest.fixture(params=FILTERS)
def leaf_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The filter the sequencers of a test use: as shipped; tiny (8 bits for its first part,
    one bit an entry: most absent hashes are looked up); chunked (built and topped up from
    the tiles 7 entries at a time, across tile edges); or none (every hash looked up)."""
    if request.param == "chunked":
        monkeypatch.setattr(seqmod, "_FILTER_READ", 7)
    elif request.param == "tiny":
        monkeypatch.setattr(seqmod, "_FILTER_FIRST_BITS", 8)
        monkeypatch.setattr(seqmod, "_FILTER_BITS_PER_ENTRY", 1)
    elif request.param == "none":
        monkeypatch.setattr(_LeafFilter, "maybe_held", lambda self, hashes: list(hashes))
    return str(request.param)


def open_log(store: Store) -> Log:
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer)
    return Log(store, store.create_log("evidence", ORIGIN, "evidence", signer.vkey, empty))


def new_sequencer(log: Log, batch_size: int = 32) -> Sequencer:
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    return Sequencer(log, signer, batch_size=batch_size, leaf_index_lag=50)


class Model:
    """The log as a list of leaves: an entry's index is its leaf's first index."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}

    def integrate(self, batch: Iterable[bytes]) -> list[tuple[int, bool]]:
        out = []
        for e in batch:
            held = self.index.get(e)
            if held is None:
                held = self.index[e] = len(self.index)
                out.append((held, False))
            else:
                out.append((held, True))
        return out


def run(seq: Sequencer, batch: Sequence[bytes]) -> list[tuple[int, bool]]:
    res = seq.integrate(batch)
    assert all(isinstance(r, Sequenced) for r in res), res
    out = []
    for r, e in zip(res, batch, strict=True):
        assert isinstance(r, Sequenced) and r.leaf_hash == merkle.leaf_hash(e)
        out.append((r.index, r.duplicate))
    return out


def batches(rng: random.Random, count: int, pool: int) -> list[list[bytes]]:
    """Batches drawn from `pool` distinct leaves: repeats across and within batches."""
    out = []
    for _ in range(count):
        size = rng.choice([1, 5, 32, 40])
        out.append([b"e-%d" % rng.randrange(pool) for _ in range(size)])
    return out


def test_dedupe_matches_the_model(leaf_filter: str, store: Store) -> None:
    rng = random.Random(7)
    log, model = open_log(store), Model()
    seq = new_sequencer(log)
    for batch in batches(rng, 40, 400):
        assert run(seq, batch) == model.integrate(batch)
    # A fresh sequencer builds its filter from the log as it is.
    fresh = new_sequencer(Log(store, log.row))
    for batch in batches(rng, 10, 600):
        assert run(fresh, batch) == model.integrate(batch)


def test_two_stores_on_one_database(leaf_filter: str, db_url: str) -> None:
    # Two frontends take turns sequencing one log: each must find what the other wrote
    # behind its back, and flushes of the leaf-hash index happen on both sides.
    s1, s2 = Store(db_url), Store(db_url)
    s1.migrate()
    try:
        seqs = [new_sequencer(open_log(s1)), new_sequencer(open_log(s2))]
        rng, model = random.Random(11), Model()
        for batch in batches(rng, 60, 500):
            seq = rng.choice(seqs)
            assert run(seq, batch) == model.integrate(batch)
            if rng.random() < 0.1:
                rng.choice(seqs).flush_leaf_index()
        # Each side's entries, sent to the other: all duplicates.
        every = list(model.index)
        for seq in seqs:
            for i in range(0, len(every), 37):
                batch = every[i : i + 37]
                assert run(seq, batch) == model.integrate(batch)
    finally:
        s1.close()
        s2.close()


def test_entries_written_behind_the_back_are_found(leaf_filter: str, db_url: str) -> None:
    # The filter of the first sequencer knows nothing of the second's entries until it is
    # topped up from the tiles: without that, these would be appended a second time.
    s1, s2 = Store(db_url), Store(db_url)
    s1.migrate()
    try:
        one, two = new_sequencer(open_log(s1)), new_sequencer(open_log(s2))
        run(one, [b"a-%d" % i for i in range(10)])
        theirs = [b"b-%d" % i for i in range(300)]
        for i in range(0, 300, 32):
            run(two, theirs[i : i + 32])
        two.flush_leaf_index()
        assert run(one, [theirs[0], b"c", theirs[299]]) == [(10, True), (310, False), (309, True)]
    finally:
        s1.close()
        s2.close()
