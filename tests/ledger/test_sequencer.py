"""Sequencer and storage, in process, on SQLite and PostgreSQL.

`TestLog` re-audits the whole log after every step: tiles and bundles recompute the signed root,
every earlier result still has a valid inclusion proof, and every earlier checkpoint is
consistent with the latest.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from attest import merkle
from attest.admission import entry_statement_digest
from attest.audit import audit_tree
from attest.checkpoint import open_checkpoint
from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner
from attest.tiles import TILE_WIDTH, encode_bundle, integrate
from ledger.admission import AdmissionError, Admitted
from ledger.log import Log, LogRangeError
from ledger.sequencer import (
    PublishError,
    Sequenced,
    Sequencer,
    _all_new,
    _assign,
    _Known,
    _LeafTail,
    _Plan,
    _sequenced,
    _statement_digest,
    signed_head,
)
from ledger.storage import Batch, ConflictError, Head, Store, WriteTxn

ORIGIN = "test.example/evidence"


class TestLog:
    """A log under test plus everything it ever acknowledged."""

    __test__ = False

    def __init__(self, store: Store, name: str = "evidence", origin: str = ORIGIN) -> None:
        self.signer = Ed25519NoteSigner(origin, generate_private_key())
        self.now = 1_700_000_000
        empty = signed_head(origin, 0, merkle.EMPTY_ROOT, self.signer)
        row = store.create_log(name, origin, "evidence", self.signer.vkey, empty)
        self.log = Log(store, row)
        self.seq = Sequencer(self.log, self.signer, clock=lambda: self.now)
        self.acked: dict[bytes, Sequenced] = {}
        self.heads: list[Head] = [empty]
        self.rng = random.Random(1)

    def add(self, entries: Sequence[bytes]) -> list[Sequenced]:
        results = self.seq.integrate(entries)
        for e, r in zip(entries, results, strict=True):
            assert r.leaf_hash == merkle.leaf_hash(e)
            self.acked.setdefault(e, r)
            assert self.acked[e].index == r.index, "an entry moved"
        self.heads.append(results[0].head)
        self.check()
        return results

    def check(self) -> None:
        head = self.log.head()
        cp, _ = open_checkpoint(head.checkpoint.encode(), self.signer.verifier(), ORIGIN)
        assert (cp.size, cp.root_hash) == (head.size, head.root)
        audit_tree(
            head.size,
            head.root,
            lambda t, w: self.log.tile(t, head.size),
            lambda i, w: self.log.bundle(i, head.size),
        )
        acked = list(self.acked.items())
        if len(acked) > 150:  # a large log: every check still covers a fresh random sample
            acked = self.rng.sample(acked, 150)
        for entry, r in acked:
            assert self.log.entry(r.index) == entry
            p = self.log.inclusion_proof(r.index, head.size)
            merkle.verify_inclusion(r.leaf_hash, r.index, head.size, p.hashes, head.root)
        for old in self.heads:
            if old.size > 0:
                p = self.log.consistency_proof(old.size, head.size)
                merkle.verify_consistency(old.size, head.size, p.hashes, old.root, head.root)


def entries(n: int, tag: str = "e") -> list[bytes]:
    return [f"{tag}-{i}".encode() * 3 for i in range(n)]


def test_appends_across_tile_boundaries(store: Store) -> None:
    t = TestLog(store)
    t.add(entries(1, "a"))
    t.add(entries(255, "b"))  # size 256: first full tile, level-1 tile of width 1
    t.add(entries(1, "c"))
    t.add(entries(600, "d"))
    assert t.log.head().size == 857


def test_large_tree_crosses_a_full_level_one_tile(store: Store) -> None:
    t = TestLog(store)
    t.add(entries(256 * 256 - 3, "x"))
    t.add(entries(10, "y"))  # crosses 65,536: a full level-1 tile and a level-2 tile
    assert t.log.head().size == 256 * 256 + 7


def test_duplicates_keep_their_first_index(store: Store) -> None:
    t = TestLog(store)
    first = t.add(entries(5))
    again = t.add([entries(5)[2], b"new", b"new", entries(5)[0]])
    assert [r.index for r in again] == [2, 5, 5, 0]
    assert [r.duplicate for r in again] == [True, False, True, True]
    assert not any(r.duplicate for r in first)
    only_dups = t.seq.integrate(entries(2))
    assert [r.index for r in only_dups] == [0, 1]
    assert only_dups[0].head.size == 6, "a batch of duplicates signs no new checkpoint"


def test_reopening_the_store_keeps_everything(db_url: str) -> None:
    s = Store(db_url)
    s.migrate()
    t = TestLog(s)
    t.add(entries(300))
    s.close()
    s2 = Store(db_url)
    s2.migrate()  # idempotent
    row = s2.get_log("evidence")
    assert row is not None
    t.log = Log(s2, row)
    t.seq = Sequencer(t.log, t.signer)
    t.check()
    t.add(entries(3, "later"))
    s2.close()


def test_two_writers_share_one_log(db_url: str) -> None:
    # Two processes' worth of sequencers on one database take turns through the head lock.
    s1, s2 = Store(db_url), Store(db_url)
    s1.migrate()
    t = TestLog(s1)
    row = s2.get_log("evidence")
    assert row is not None
    other = Sequencer(Log(s2, row), t.signer)
    for i in range(4):
        t.add(entries(100, f"one{i}"))
        res = other.integrate(entries(150, f"two{i}"))
        t.acked.update({e: r for e, r in zip(entries(150, f"two{i}"), res, strict=True)})
        t.heads.append(res[0].head)
        t.check()
    assert t.log.head().size == 4 * 250
    s1.close()
    s2.close()


def test_compare_and_swap_refuses_a_stale_head(store: Store) -> None:
    t = TestLog(store)
    t.add(entries(2))
    head = t.log.head()
    stale = Batch(0, head, {}, {}, [], 0)
    with pytest.raises(ConflictError), store.writer(t.log.id) as txn:
        txn.commit_batch(stale)
    t.check()
    assert t.log.head() == head


def test_range_errors(store: Store) -> None:
    t = TestLog(store)
    t.add(entries(3))
    for call in (
        lambda: t.log.entry(3),
        lambda: t.log.inclusion_proof(3, 3),
        lambda: t.log.inclusion_proof(0, 4),
        lambda: t.log.consistency_proof(0, 3),
        lambda: t.log.consistency_proof(2, 4),
        lambda: t.log.root(4),
    ):
        with pytest.raises(LogRangeError):
            call()


def test_async_writers_are_batched_and_proven(store: Store) -> None:
    t = TestLog(store)

    async def run() -> list[Sequenced]:
        t.seq.start()
        try:
            return await asyncio.gather(*(t.seq.add(e) for e in entries(500, "async")))
        finally:
            await t.seq.stop()

    results = asyncio.run(run())
    assert sorted(r.index for r in results) == list(range(500))
    batches = {r.head.size for r in results}
    assert 1 < len(batches) < 500, "group commit should batch concurrent writers"
    for e, r in zip(entries(500, "async"), results, strict=True):
        t.acked[e] = r
        t.heads.append(r.head)
    t.check()


def test_submitted_entries_are_queued_together_in_order(store: Store) -> None:
    """`Sequencer.submit` (a batch request's entries) queues them as one run, in order, behind
    entries added before it and ahead of those added after; a duplicate gets its first index."""
    t = TestLog(store)
    first, batch, last = entries(1, "before"), entries(300, "together"), entries(1, "after")

    async def run() -> list[Sequenced | BaseException]:
        t.seq.start()
        try:
            before = asyncio.ensure_future(t.seq.add(first[0]))
            await asyncio.sleep(0)  # the single add has queued its entry
            together = t.seq.submit([*batch, batch[0]])
            after = asyncio.ensure_future(t.seq.add(last[0]))
            assert await t.seq.submit([]) == []
            got = await asyncio.gather(before, together, after, return_exceptions=True)
            return [got[0], *got[1], got[2]]
        finally:
            await t.seq.stop()

    results = asyncio.run(run())
    ok = [r for r in results if isinstance(r, Sequenced)]
    assert len(ok) == len(results) == 303
    assert [r.index for r in ok] == [0, *range(1, 301), 1, 301]
    assert ok[-2].duplicate and not any(r.duplicate for r in ok[:-2])
    for e, r in zip([*first, *batch, *last], [*ok[:-2], ok[-1]], strict=True):
        t.acked[e] = r
        t.heads.append(r.head)
    t.check()


def test_a_submitted_group_settles_each_entry_as_its_own_add_would(store: Store) -> None:
    """One future per `submit` call: its list holds, per entry and in order, what `add` of
    that entry gives or raises (the oracle: what `integrate` returned or raised for the
    sequencer batch the entry was in): an entry refused at its index gets its AdmissionError,
    the entries of a batch that failed as a whole get that failure, the others their
    `Sequenced`. A single `add` queued among them raises its own refusal."""
    t = TestLog(store)
    t.seq.batch_size = 100
    real = t.seq.integrate
    seen: list[tuple[list[bytes], list[Sequenced | AdmissionError] | Exception]] = []

    def integrate(
        batch: Sequence[bytes], *, flush_short: bool = True
    ) -> list[Sequenced | AdmissionError]:
        if len(seen) == 1:  # the second sequencer batch fails as a whole
            exc = PublishError(7, "the tile store did not answer")
            seen.append((list(batch), exc))
            raise exc
        got: list[Sequenced | AdmissionError] = [
            AdmissionError(403, "refused", f"no {e!r}") if e.endswith(b"!") else r
            for e, r in zip(batch, real(batch, flush_short=flush_short), strict=True)
        ]
        seen.append((list(batch), got))
        return got

    t.seq.integrate = integrate  # type: ignore[method-assign]
    group = [e + b"!" if i in (3, 250) else e for i, e in enumerate(entries(260, "g"))]
    lone = b"lone!"

    async def run() -> tuple[list[Sequenced | BaseException], BaseException | Sequenced]:
        t.seq.start()
        try:
            together = t.seq.submit(group)
            one = asyncio.ensure_future(t.seq.add(lone))
            got = await together
            alone: BaseException | Sequenced
            try:
                alone = await one
            except AdmissionError as e:
                alone = e
            return got, alone
        finally:
            await t.seq.stop()

    got, alone = asyncio.run(run())
    expected: dict[bytes, Sequenced | BaseException] = {}
    for batch, out in seen:
        for i, e in enumerate(batch):
            expected[e] = out if isinstance(out, Exception) else out[i]
    assert [len(b) for b, _ in seen] == [100, 100, 61]
    assert len(got) == len(group)
    for e, r in zip(group, got, strict=True):
        assert r is expected[e]
    assert isinstance(got[3], AdmissionError) and isinstance(got[150], PublishError)
    assert isinstance(got[0], Sequenced) and isinstance(got[250], AdmissionError)
    assert isinstance(alone, AdmissionError) and alone is expected[lone]


def test_the_kept_edge_gives_the_bytes_a_one_shot_integration_gives(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of every shape append onto the edge the sequencer kept; the stored tiles and
    # bundles must be byte for byte those of integrating every entry at once, and no batch
    # after the first may read a tile or bundle back from the database.
    t = TestLog(store)
    reads: list[object] = []
    read_tile, read_bundle = WriteTxn.read_tile, WriteTxn.read_bundle
    monkeypatch.setattr(WriteTxn, "read_tile", lambda s, x: reads.append(x) or read_tile(s, x))
    monkeypatch.setattr(WriteTxn, "read_bundle", lambda s, x: reads.append(x) or read_bundle(s, x))
    rng = random.Random(7)
    added: list[bytes] = []
    for i, n in enumerate([1, 255, 3, 256, 700, 1, 256 * 2 + 17, *rng.sample(range(1, 300), 6)]):
        batch = entries(n, f"k{i}")
        t.seq.integrate(batch)
        added += batch
        assert reads == [], f"batch {i} read {reads} from the database"
    size = len(added)
    want = integrate(0, lambda _: b"", [merkle.leaf_hash(e) for e in added]).tiles
    for tile, data in want.items():
        assert store.read_tile(t.log.id, tile) == data, tile
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        got = store.read_bundle(t.log.id, n)
        assert got == encode_bundle(added[n * TILE_WIDTH : (n + 1) * TILE_WIDTH]), n
    t.check()


def test_a_stale_edge_is_not_used(db_url: str) -> None:
    # Another sequencer moves the head: the first one's kept edge is no longer the stored
    # tree, so it must read the database (else its tiles would miss the other's entries).
    s1, s2 = Store(db_url), Store(db_url)
    s1.migrate()
    t = TestLog(s1)
    t.add(entries(10, "a"))
    row = s2.get_log("evidence")
    assert row is not None
    other = entries(5, "b")
    res = Sequencer(Log(s2, row), t.signer).integrate(other)
    t.acked.update(zip(other, res, strict=True))
    t.heads.append(res[0].head)
    t.add(entries(10, "c"))
    assert t.log.head().size == 25
    s1.close()
    s2.close()


@pytest.mark.parametrize("first", range(256))
def test_skipping_the_parse_of_non_json_leaves_changes_no_digest(first: int) -> None:
    # The shortcut may answer None only where parsing would: every first byte, before plain
    # bytes and before envelopes in every encoding json.loads detects.
    envelope = '{"payloadType":"t","payload":"aGk=","signatures":[]}'
    tails = [b"", b"xyz", bytes(range(256)), b"\x00" * 7 + b"\xff" * 9, envelope.encode()]
    tails += [envelope.encode(c) for c in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")]
    tails += [b"\x00\xfe\xff" + envelope.encode("utf-32-be"), b"\x00\x00" + b"{}" * 4]
    for tail in tails:
        leaf = bytes([first]) + tail
        assert _statement_digest(leaf) == entry_statement_digest(leaf), leaf[:8]
    for enc in ("utf-8-sig", "utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-be"):
        for text in (envelope, " " + envelope, "\r\n" + envelope):
            leaf = text.encode(enc)
            assert _statement_digest(leaf) == entry_statement_digest(leaf) is not None, enc
    leaf = b"\x00\x00\xfe\xff" + envelope.encode("utf-32-be")
    assert _statement_digest(leaf) == entry_statement_digest(leaf) is not None


class _AcceptAll:
    """An admission check that admits everything: it sends `_assign` down its general loop."""

    def apply(self, index: int, entry: Admitted) -> None:
        pass


@pytest.mark.parametrize("seed", range(30))
def test_the_all_new_shortcut_plans_what_the_general_loop_plans(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 40)
    leaves = [
        rng.choice([b"a", b"b", b"c", b"d"]) + str(rng.randrange(60)).encode() for _ in range(n)
    ]
    if seed % 2:  # half the batches without repeats, so the shortcut is taken
        leaves = list(dict.fromkeys(leaves))
    items: list[bytes | Admitted] = [Admitted(x) if rng.random() < 0.5 else x for x in leaves]
    hashes = [merkle.leaf_hash(x) for x in leaves]
    # Statement digests: none at all, one per distinct leaf, or shared by different leaves.
    digests: list[bytes | None] = [
        None if seed % 4 == 0 or rng.random() < 0.3 else x[:1] if seed % 5 == 0 else x * 2
        for x in leaves
    ]
    held = {h: 1000 + i for i, h in enumerate(hashes) if seed % 3 == 0 and rng.random() < 0.2}

    def plan(check: object) -> _Plan:
        known = _Known(dict(held), {}, lambda t: merkle.leaf_hash(b"stored") * TILE_WIDTH)
        return _assign(items, leaves, hashes, digests, known, 5000, check)  # type: ignore[arg-type]

    assert plan(None) == plan(_AcceptAll())
    shortcuts.append(_all_new(hashes, digests, _Known(dict(held), {}, lambda t: b"")))


shortcuts: list[bool] = []


def test_the_shortcut_was_both_taken_and_not() -> None:
    assert True in shortcuts and False in shortcuts


@pytest.mark.parametrize("duplicate", [False, True])
def test_a_fast_built_result_is_the_dataclass_it_stands_for(duplicate: bool) -> None:
    head = Head(7, b"r" * 32, "checkpoint")
    fast, made = _sequenced(3, b"h" * 32, head, duplicate), Sequenced(3, b"h" * 32, head, duplicate)
    assert type(fast) is Sequenced
    assert (fast == made, hash(fast) == hash(made), repr(fast) == repr(made)) == (True,) * 3
    assert (fast.index, fast.leaf_hash, fast.head, fast.duplicate) == (
        3,
        b"h" * 32,
        head,
        duplicate,
    )
    with pytest.raises(AttributeError):  # still frozen
        fast.index = 4  # type: ignore[misc]


def test_a_leaf_tail_flushes_exactly_the_pairs_above_the_watermark() -> None:
    # The tail keeps its pairs twice (a map for lookups, a list for flushes): read from tiles,
    # extended by batches, pruned by another process's flush, both must say the same.
    pairs = [(merkle.leaf_hash(b"%d" % i), i) for i in range(40)]
    tail = _LeafTail(5, 12, dict(pairs[5:12]))
    tail.extended(pairs[12:20], 20).extended(iter(pairs[20:33]), 33)
    assert sorted(tail.rows(5)) == sorted(pairs[5:33]) == sorted(tail.hashes.items())
    assert sorted(tail.rows(9)) == sorted(pairs[9:33])
    tail.pruned(17).extended(pairs[33:40], 40)
    assert (tail.start, tail.size) == (17, 40)
    assert sorted(tail.rows(17)) == sorted(pairs[17:40]) == sorted(tail.hashes.items())
