"""The sequencer: batches admitted entries, integrates them, signs a checkpoint, commits.

Zero merge delay: `Sequencer.add` returns only once its entry is in a committed, signed
checkpoint. Batching is group commit: while one batch is being written, new entries queue up and
form the next batch (at most `batch_size`), so batches grow with load. `batch_delay` adds an
optional linger before a batch is cut, for operators who prefer fewer, larger checkpoints.

There is one writer path (`integrate`), one transaction per batch. Crash points are marked: the
process may die at any of them and nothing acknowledged is lost, because an entry is acknowledged
only after the transaction that holds it has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import numpy.typing as npt

from attest import merkle
from attest.admission import entry_statement_digest
from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.note import NoteSigner
from attest.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileId,
    decode_bundle,
    encode_bundle,
    integrate,
    node_at_from_tiles,
)
from ledger.admission import AdmissionError, AdmissionRule, Admitted, BatchCheck
from ledger.errors import LedgerError
from ledger.log import Log
from ledger.storage import Batch, Head, WriteTxn

_log = logging.getLogger(__name__)

# The characters a JSON object can start with (it may follow whitespace).
_OBJECT_STARTS = frozenset(b"{ \t\n\r")
_BOM_UTF32_BE = b"\x00\x00\xfe\xff"

# How far the leaf-hash index (`leaves`) may lag the tree before a full batch flushes it.
# The table is keyed by leaf hash, i.e. at random: inserting a batch's rows as they come
# dirties about one B-tree page per entry (4 KiB written per entry on SQLite). A flush of
# sorted rows dirties each page at most once, so the larger the flush the fewer pages per
# entry, until every page of the index is touched by each flush (at about 80 rows a page,
# from some 1.3M entries on at this bound; beyond that a larger bound keeps paying off).
# What bounds it: every lookup that misses `leaves` searches the tail in its level-0 tiles
# (`Store.leaf_index`), and a sequencer that finds another process moved the tree re-reads
# them: 16,384 entries are 64 full tiles, 512 KiB, a few milliseconds at worst. The batch that
# flushes carries the whole tail, so its latency grows by the flush (tens of milliseconds on
# SQLite at this bound): the price of the other batches writing no index rows at all.
# The statement-digest index (`statements`, also keyed at random) lags with it, under the same
# watermark: its tail is kept in memory beside the leaf hashes, and a fresh sequencer rebuilds
# it from the tail's entry bundles (parsing each envelope for its digest: some 16 us an entry,
# a quarter of a second at this bound, once per process start).
LEAF_INDEX_LAG = 16_384

# How long the batching loop waits, its queue dry, before it flushes the leaf-hash index's tail
# on its own (`Sequencer.idle_flush`). The loop's batches do not flush because they are short:
# under single writes every batch is (some 14 entries at 64 clients), and a flush in each then
# about doubled what the batch wrote (380 rather than 196 KiB a batch of 14 field reports, in
# 1.4-2 times the time). Writes arriving closer than this leave the flush to the lag bound.
LEAF_INDEX_IDLE = 0.1

# The leaf filter (`_LeafFilter`): bit positions per leaf hash, bits per entry a part holds
# when full (about 0.24% false positives there, fewer before), the first part's size (2 MiB,
# 1M entries), and how much larger each next part is.
_FILTER_HASHES = 4
_FILTER_BITS_PER_ENTRY = 16
_FILTER_FIRST_BITS = 1 << 24
_FILTER_GROWTH = 4
# A part's bit positions are 32-bit words of the hash: no part has more bits than they reach.
_FILTER_MAX_BITS = 1 << 32
# Entries whose leaf hashes a filter being built reads at a time (32 MiB of hashes).
_FILTER_READ = 1 << 20


class PublishError(LedgerError):
    """A batch committed to the database but could not be published to the tile store."""

    def __init__(self, size: int, problem: str) -> None:
        super().__init__(
            f"committed (tree size {size}) but not yet published to the tile store: {problem}; "
            "a retry returns the same index once the store answers"
        )
        self.size, self.problem = size, problem

    def __reduce__(self) -> tuple[type[PublishError], tuple[int, str]]:
        # Sent from the sequencer to a frontend (`ledger.forwarding`).
        return (type(self), (self.size, self.problem))


@dataclass(frozen=True)
class Sequenced:
    """Where an entry landed, and the first signed checkpoint that includes it."""

    index: int
    leaf_hash: bytes
    head: Head
    duplicate: bool


# `Sequencer.submit`'s signature: what a forwarding sequencer hands its entries to.
Forward = Callable[[Sequence[bytes | Admitted]], asyncio.Future[list[Sequenced | BaseException]]]


def signed_head(origin: str, size: int, root: bytes, signer: NoteSigner) -> Head:
    """Sign the checkpoint of a tree and wrap it as a storable head."""
    note = sign_checkpoint(Checkpoint(origin, size, root), signer)
    return Head(size, root, note.decode())


class Sequencer:
    """Sequences one log. Run `start()` inside the event loop that calls `add()`."""

    def __init__(
        self,
        log: Log,
        signer: NoteSigner,
        *,
        batch_size: int = 256,
        batch_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
        rule: AdmissionRule | None = None,
        publish: Callable[[int], object] | None = None,
        one_entry_per_statement: bool = True,
        leaf_index_lag: int = LEAF_INDEX_LAG,
        idle_flush: float = LEAF_INDEX_IDLE,
    ) -> None:
        """`publish(size)`, when given, makes the tile store hold a checkpoint of at least
        `size` (`ledger.tilestore.Publisher.publish`); it runs after every batch, and no entry
        of the batch is acknowledged before it returned.

        `leaf_index_lag`: how many entries the leaf-hash index may lag the tree before a
        batch flushes it (`LEAF_INDEX_LAG`). A batch smaller than `batch_size` given to
        `integrate` flushes it whatever the lag: the caller has no more, so the sequencer has
        the time, and a quiet log keeps its index complete. The batching loop (`add`,
        `submit`) instead flushes once its queue has stayed dry for `idle_flush` seconds: its
        batches are short whenever writes come one by one, however many come."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if leaf_index_lag < 1:
            raise ValueError("leaf_index_lag must be at least 1")
        if idle_flush < 0:
            raise ValueError("idle_flush must not be negative")
        self.leaf_index_lag, self.idle_flush = leaf_index_lag, idle_flush
        self.log, self.signer, self.clock, self.rule = log, signer, clock, rule
        self.publish = publish
        # The anonymous log keeps every report that spent a token, even two people's identical
        # ones (a receipt must come true); the other logs keep one entry per statement.
        self.one_entry_per_statement = one_entry_per_statement
        self.batch_size, self.batch_delay = batch_size, batch_delay
        self._pending: list[tuple[bytes | Admitted, _Group, int]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The right edge of the tree this sequencer last committed; see `_Edge`.
        self._edge: _Edge | None = None
        # The leaf hashes above the leaf-hash index's watermark; see `_LeafTail`.
        self._tail: _LeafTail | None = None
        # Every leaf hash of the log, as a Bloom filter; see `_LeafFilter`.
        self._filter: _LeafFilter | None = None
        # Where `submit` sends entries when another process sequences this log.
        self._forward: Forward | None = None
        # The last idle flush failed: the loop tries again only after its next batch.
        self._idle_flush_failed = False

    # -- the synchronous writer path ---------------------------------------------------------

    def integrate(
        self,
        entries: Sequence[bytes | Admitted],
        *,
        pending_done: Sequence[bytes] = (),
        flush_short: bool = True,
    ) -> list[Sequenced | AdmissionError]:
        """Integrate a batch of entries in one transaction, then publish the tree to the tile
        store (if the log has one); returns one result per entry. `flush_short` False: a
        batch below `batch_size` flushes the leaf-hash index only at the lag bound (the
        batching loop's, which flushes when idle instead).

        Raises PublishError when the batch committed but could not be published: nothing is
        acknowledged, a retry gets the same indices back and publishes again.
        """
        results, size = self._integrate(entries, pending_done, flush_short)
        # Crash point: committed, not yet published; the next batch, a retry or the start-up
        # catch-up publishes it (the store's checkpoint is written last, so readers see the
        # previous tree until then).
        self._publish(size)
        return results

    def flush_leaf_index(self) -> int:
        """Flush the whole unindexed tail into the leaf-hash index now, in its own
        transaction; returns how many rows it added. (Batches flush it on their own once it
        lags `leaf_index_lag` entries, and a short batch given straight to `integrate` does;
        the batching loop calls this once its queue has stayed dry for `idle_flush` seconds.
        Also for a clean stop, a benchmark that counts all the index work, or an operator.)"""
        with self.log.store.writer(self.log.id) as txn:
            mark = txn.leaf_index_size()
            tail = self._sync_tail(txn, mark)
            self._tail = None
            rows = tail.rows(mark)
            if rows:
                txn.index_leaves(rows, txn.head.size, tail.statement_rows(mark))
            # Crash point: rows written, not committed: rolled back with the watermark; the
            # tail is still found through its tiles, and the next flush writes it again.
        self._tail = _LeafTail(txn.head.size, txn.head.size, {}) if rows else tail
        return len(rows)

    def _flush_due(self, mark: int, size: int, batch: int, flush_short: bool) -> bool:
        """Whether this batch flushes the tail: it lags the bound, or the batch is short (and
        short batches flush)."""
        lag = size - mark
        short = flush_short and batch < self.batch_size
        return lag > 0 and (lag >= self.leaf_index_lag or short)

    def _sync_tail(self, txn: WriteTxn, mark: int) -> _LeafTail:
        """The leaf hashes of the entries in [mark, head size), as of `txn`.

        The kept tail is extended, not rebuilt, when another process sequenced or flushed
        since: a log is append-only, so what it says (this hash is at this index) stays true,
        and only the entries it lacks are read from their tiles. Rebuilt from the tiles when
        there is none (a fresh process) or it does not fit the stored tree.
        """
        size, kept = txn.head.size, self._tail
        if kept is None or kept.size > size or kept.start > mark:
            hashes = txn.read_leaf_hashes(mark, size)
            return _LeafTail(mark, size, hashes, self._tail_statements(txn, mark, size))
        if kept.size == size and kept.start == mark:
            return kept
        more = txn.read_leaf_hashes(kept.size, size).items()
        digests = self._tail_statements(txn, kept.size, size).items()
        return kept.extended(more, size, digests).pruned(mark)

    def _tail_statements(self, txn: WriteTxn, start: int, end: int) -> dict[bytes, int]:
        """Statement digest -> index of the entries [start, end), all above the watermark,
        from their bundles: the first entry of each statement, as `_assign` would have
        named it, leaving out a statement `statements` already holds (a log written before
        one entry per statement was the rule may hold several; the first is its entry)."""
        if not self.one_entry_per_statement or start >= end:
            return {}
        found: dict[bytes, int] = {}
        for i, leaf in enumerate(txn.read_entries(start, end), start):
            d = _statement_digest(leaf)
            if d is not None:
                found.setdefault(d, i)
        for d in txn.lookup_statements(found):
            del found[d]
        return found

    def _sync_filter(self, txn: WriteTxn) -> _LeafFilter:
        """The leaf filter, holding every entry of the tree as of `txn`.

        Topped up from the level-0 tiles with the entries it lacks, by tree size, when another
        process sequenced since (what it holds stays true: the log is append-only); built from
        the tiles when there is none (a fresh sequencer: one read of every level-0 tile, some
        32 MiB at 1M entries) or it does not fit the stored tree.
        """
        size, kept = txn.head.size, self._filter
        if kept is None or kept.size > size:
            kept = self._filter = _LeafFilter.for_size(size)
        # In chunks: a large log's hashes are never all in memory at once (32 bytes an entry).
        for lo in range(kept.size, size, _FILTER_READ):
            hi = min(lo + _FILTER_READ, size)
            kept.add(txn.leaf_hash_bytes(lo, hi), hi)
        return kept

    def _publish(self, size: int) -> None:
        if self.publish is None:
            return
        try:
            self.publish(size)
        except LedgerError as e:
            raise PublishError(size, e.diagnostic) from e

    def _integrate(
        self,
        entries: Sequence[bytes | Admitted],
        pending_done: Sequence[bytes],
        flush_short: bool = True,
    ) -> tuple[list[Sequenced | AdmissionError], int]:
        """The writer path: one transaction; the results and the tree size after it.

        Entries already in the log (or repeated within the batch) keep their first index, and so
        does every envelope of a statement already in the log, whatever its signatures (one
        entry per statement digest, `attest.admission.statement_digest`): the answer names
        the entry the log holds, with `duplicate` set. With an admission rule, each new entry
        is authorised at the index it would get; a refused entry gets its AdmissionError as
        result and takes no index. `pending_done` names queued entries (anonymous log) that
        leave the queue in the same transaction.
        """
        # Raw bytes stay bytes: wrapping each in an Admitted showed in profiles, and only an
        # admission rule needs one (`_assign` wraps them for it).
        leaves = [e.leaf if isinstance(e, Admitted) else e for e in entries]
        hashes = merkle.leaf_hashes(leaves)
        digests: list[bytes | None]
        if self.one_entry_per_statement:
            digests = [
                _statement_digest(e) if type(e) is bytes else _entry_digest(e, x)
                for e, x in zip(entries, leaves, strict=True)
            ]
        else:
            digests = [None] * len(leaves)
        with self.log.store.writer(self.log.id) as txn:
            head = txn.head
            check = None if self.rule is None else self.rule.begin(txn)
            # The edge this sequencer kept is the stored one only while the head is the tree
            # it committed (another writer may have moved it): same size and root, same tiles.
            edge = self._edge if self._edge is not None and self._edge.holds(head) else None
            reader = _EdgeReader(txn, edge)
            mark = txn.leaf_index_size()
            tail = self._sync_tail(txn, mark)
            self._tail = None  # kept again below once this transaction's outcome is known
            # Only the hashes the filter cannot rule out are looked up: most new entries are
            # not in the log, and each lookup is a search of a random-keyed B-tree.
            leaf_filter = self._sync_filter(txn)
            known = _Known(
                txn.lookup_leaves(leaf_filter.maybe_held(hashes), tail.hashes),
                _statements_held({d for d in digests if d is not None}, tail, txn),
                reader.read,
            )
            plan = _assign(entries, leaves, hashes, digests, known, head.size, check)
            flush = self._flush_due(mark, head.size + len(plan.fresh), len(entries), flush_short)
            if not plan.fresh:
                txn.delete_pending(pending_done)
                if flush:
                    txn.index_leaves(tail.rows(mark), head.size, tail.statement_rows(mark))
                    tail = _LeafTail(head.size, head.size, {})
                # Kept before the commit: should it fail, the stored watermark is below this
                # tail's start and `_sync_tail` rebuilds it rather than trust it.
                self._tail = tail
                return plan.results(head), head.size
            new_size = head.size + len(plan.fresh)
            tiles = integrate(head.size, reader.read, plan.fresh_hashes).tiles
            reader.batch = tiles
            appended = _append_bundles(txn, edge, head.size, plan.fresh)
            whole, parts = _bundle_writes(appended)
            nodes = _RootNodes(node_at_from_tiles(reader.read), edge)
            root = merkle.subtree_hash(0, new_size, nodes.node_at)
            new_head = signed_head(self.log.row.origin, new_size, root, self.signer)
            fresh_leaves = list(zip(plan.fresh_hashes, range(head.size, new_size), strict=True))
            # Crash point: nothing written yet; the batch is simply lost, unacknowledged.
            # A flush rides in the batch's transaction: the tail's rows, this batch's
            # included, and the watermark commit with the head or not at all. Without a
            # flush, a crash after the commit leaves the new entries above the watermark,
            # found through their tiles until a later batch (or `flush_leaf_index`) flushes.
            txn.commit_batch(
                Batch(
                    old_size=head.size,
                    new_head=new_head,
                    tiles=tiles,
                    bundles=whole,
                    bundle_parts=parts,
                    leaves=[*tail.rows(mark), *fresh_leaves] if flush else [],
                    leaf_index_size=new_size if flush else None,
                    statements=[*tail.statement_rows(mark), *plan.statements] if flush else [],
                    created_at=int(self.clock()),
                    key_events=() if check is None else check.key_events(),
                    pending_done=pending_done,
                )
            )
            # Crash point: rows written but not committed; the database rolls them back.
            # Forget the edge until the commit is known to have happened: a failed commit
            # leaves the head where it was, and a kept edge would then be the wrong one.
            self._edge = None
        # Crash point: committed but not yet acknowledged; a client that retries gets the
        # same index back through deduplication, and a restart rebuilds the key chain.
        self._edge = _Edge.after(new_head, reader, appended, nodes.used)
        self._tail = (
            _LeafTail(new_size, new_size, {})
            if flush
            else tail.extended(fresh_leaves, new_size, plan.statements)
        )
        if leaf_filter.size == head.size:
            leaf_filter.add(b"".join(plan.fresh_hashes), new_size)
        self.log.remember_edge(tiles)
        if check is not None:
            check.commit(new_size)
        return plan.results(new_head), new_size

    # -- the asynchronous front ---------------------------------------------------------------

    async def add(self, entry: bytes | Admitted) -> Sequenced:
        """Queue an entry and wait until a signed checkpoint includes it.

        Raises AdmissionError when the log's rule refuses it at its index.
        """
        (res,) = await self.submit([entry])
        if isinstance(res, BaseException):
            raise res
        return res

    def submit(
        self, entries: Sequence[bytes | Admitted]
    ) -> asyncio.Future[list[Sequenced | BaseException]]:
        """Queue `entries`, in order and together, as `add` queues one. One future for them
        all, done once every entry is settled, with each entry's result in order: its
        `Sequenced`, or the exception `add` would raise for it (its AdmissionError, or the
        failure of the sequencer batch it was in), as `asyncio.gather(...,
        return_exceptions=True)` over a future per entry would give. One future, not one per
        entry: a batch request's entries then cost no future, callback and loop turn each."""
        loop = asyncio.get_running_loop()
        group = _Group(loop.create_future(), len(entries))
        if not entries:
            group.fut.set_result([])
            return group.fut
        if self._forward is not None:
            return self._forward(entries)
        if self._task is None:
            raise RuntimeError("sequencer not started")
        self._pending.extend(zip(entries, repeat(group), range(len(entries))))
        self._wake.set()
        return group.fut

    def forward_to(self, submit: Forward) -> None:
        """Have another process sequence this log from now on: `submit` takes what this
        sequencer's `submit` is given and answers as it would (a frontend's
        `ledger.forwarding.SequencerLink`); no batching loop runs here."""
        self._forward = submit

    def start(self) -> None:
        """Start the batching loop on the running event loop (not for a forwarding one)."""
        if self._task is None and self._forward is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop; pending writers get an error (they were never acknowledged)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        stopped = RuntimeError("sequencer stopped")
        for _, group, pos in self._pending:
            group.settle(pos, stopped)
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            if not self._wake.is_set() and self._index_lags() and not self._idle_flush_failed:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_flush)
                except TimeoutError:  # the queue stayed dry: the time to catch the index up
                    await self._flush_idle()
                    continue
            await self._wake.wait()
            if self.batch_delay and len(self._pending) < self.batch_size:
                await asyncio.sleep(self.batch_delay)
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
            if not self._pending:
                self._wake.clear()
            if batch:
                await self._integrate_batch(batch)

    def _index_lags(self) -> bool:
        """Whether the leaf-hash index may lag this sequencer's last tree (no kept tail, after
        a failed batch, counts: a flush finds out)."""
        tail = self._tail
        return tail is None or tail.size > tail.start

    async def _flush_idle(self) -> None:
        try:
            await asyncio.to_thread(self.flush_leaf_index)
        except Exception:  # nothing is lost: the tail stays found through its tiles, and a
            # later flush writes it (the lag bound's, or the next idle one after a batch: not
            # every 0.1 s of a database that is down)
            self._idle_flush_failed = True
            _log.warning("idle flush of the leaf-hash index failed", exc_info=True)

    async def _integrate_batch(self, batch: list[tuple[bytes | Admitted, _Group, int]]) -> None:
        try:
            results: Sequence[Sequenced | BaseException] = await asyncio.to_thread(
                functools.partial(self.integrate, [e for e, _, _ in batch], flush_short=False)
            )
        except Exception as exc:  # the whole batch failed: nobody was acknowledged
            results = [exc] * len(batch)
        self._idle_flush_failed = False
        for (_, group, pos), res in zip(batch, results, strict=True):
            group.settle(pos, res)


class _Group:
    """The entries of one `Sequencer.submit` call: each one's result as it is settled, and
    the future done with them all once the last one is."""

    __slots__ = ("fut", "left", "results")

    def __init__(self, fut: asyncio.Future[list[Sequenced | BaseException]], size: int) -> None:
        self.fut = fut
        self.results: list[Sequenced | BaseException] = [_UNSETTLED] * size
        self.left = size

    def settle(self, pos: int, res: Sequenced | BaseException) -> None:
        """Entry `pos` is settled with `res`; the group's future is done after its last one
        (unless its waiter was cancelled)."""
        self.results[pos] = res
        self.left -= 1
        if not self.left and not self.fut.done():
            self.fut.set_result(self.results)


_UNSETTLED = RuntimeError("not settled")  # a placeholder no finished group holds


def _statements_held(digests: set[bytes], tail: _LeafTail, txn: WriteTxn) -> dict[bytes, int]:
    """The indices of the entries holding these statements: from the tail for the entries
    above the watermark, from `statements` for those below (only what the tail lacks is
    looked up there)."""
    found = {d: i for d in digests if (i := tail.statements.get(d)) is not None}
    rest = [d for d in digests if d not in found]
    if rest:
        found.update(txn.lookup_statements(rest))
    return found


class _Known:
    """What the log already holds, as of the batch's transaction: leaf hashes and statement
    digests, each with its index."""

    def __init__(
        self,
        leaves: dict[bytes, int],
        statements: dict[bytes, int],
        read: Callable[[TileId], bytes],
    ) -> None:
        self.leaves, self.statements, self.read = leaves, statements, read
        self.fresh: dict[int, bytes] = {}  # index -> leaf hash, for this batch's entries

    def find(self, leaf_hash: bytes, digest: bytes | None) -> tuple[int, bytes] | None:
        """The index and leaf hash of the entry that holds this leaf or this statement."""
        index = self.leaves.get(leaf_hash)
        if index is not None:
            return index, leaf_hash
        index = None if digest is None else self.statements.get(digest)
        if index is None:
            return None
        return index, self.fresh.get(index) or self._stored_leaf(index)

    def add(self, index: int, leaf_hash: bytes, digest: bytes | None) -> None:
        """Record an entry this batch appends."""
        self.leaves[leaf_hash] = index
        self.fresh[index] = leaf_hash
        if digest is not None:
            self.statements[digest] = index

    def _stored_leaf(self, index: int) -> bytes:
        n, offset = divmod(index, TILE_WIDTH)
        tile = self.read(TileId(0, n))
        return tile[offset * merkle.HASH_SIZE : (offset + 1) * merkle.HASH_SIZE]


@dataclass
class _Plan:
    """Where each entry of a batch goes: new entries, and per entry an index or a refusal."""

    fresh: list[bytes] = field(default_factory=list)
    fresh_hashes: list[bytes] = field(default_factory=list)
    statements: list[tuple[bytes, int]] = field(default_factory=list)  # (digest, index) of new
    outcome: list[tuple[int, bytes, bool] | AdmissionError] = field(default_factory=list)
    # Set when every entry is new and appended in order from this index: the results then
    # follow from `fresh_hashes` alone. Says how the plan was made, not what it is.
    first: int | None = field(default=None, compare=False)

    def results(self, head: Head) -> list[Sequenced | AdmissionError]:
        if self.first is not None:
            return [
                _sequenced(i, h, head, False)
                for i, h in enumerate(self.fresh_hashes, start=self.first)
            ]
        return [
            o if isinstance(o, AdmissionError) else _sequenced(o[0], o[1], head, o[2])
            for o in self.outcome
        ]


_new_object = object.__new__


def _sequenced(index: int, leaf_hash: bytes, head: Head, duplicate: bool) -> Sequenced:
    """`Sequenced(index, leaf_hash, head, duplicate)`, built as the frozen dataclass's own
    `__init__` would leave it, at about half its cost (that `__init__` sets each field through
    `object.__setattr__`); one is built per entry of every batch."""
    result: Sequenced = _new_object(Sequenced)
    result.__dict__.update(index=index, leaf_hash=leaf_hash, head=head, duplicate=duplicate)
    return result


def _assign(
    entries: Sequence[bytes | Admitted],
    leaves: Sequence[bytes],
    hashes: Sequence[bytes],
    digests: Sequence[bytes | None],
    known: _Known,
    size: int,
    check: BatchCheck | None,
) -> _Plan:
    """Give each entry its index: an entry whose leaf or statement the log holds gets that
    entry's index and leaf hash (a duplicate); new ones are appended in order once the
    admission check (if any) authorises them at that index."""
    if check is None and _all_new(hashes, digests, known):
        # The common batch: nothing held, nothing repeated, no rule; the loop below would
        # append every entry in order, so append them all at once.
        return _Plan(
            fresh=list(leaves),
            fresh_hashes=list(hashes),
            statements=[(d, i) for i, d in enumerate(digests, start=size) if d is not None],
            outcome=list(zip(range(size, size + len(hashes)), hashes, repeat(False))),
            first=size,
        )
    plan = _Plan()
    for e, leaf, h, d in zip(entries, leaves, hashes, digests, strict=True):
        held = known.find(h, d)
        if held is not None:
            plan.outcome.append((*held, True))
            continue
        index = size + len(plan.fresh)
        if check is not None:
            try:
                check.apply(index, e if isinstance(e, Admitted) else Admitted(e))
            except AdmissionError as e:
                plan.outcome.append(e)
                continue
        known.add(index, h, d)
        plan.fresh.append(leaf)
        plan.fresh_hashes.append(h)
        if d is not None:
            plan.statements.append((d, index))
        plan.outcome.append((index, h, False))
    return plan


def _all_new(hashes: Sequence[bytes], digests: Sequence[bytes | None], known: _Known) -> bool:
    """Whether no entry of a batch is held by the log or repeated within the batch."""
    if known.leaves or known.statements or len(set(hashes)) != len(hashes):
        return False
    named = [d for d in digests if d is not None]
    return len(set(named)) == len(named)


@dataclass(frozen=True)
class _Appended:
    """An entry bundle a batch appended to: how many entries it held before and after, its
    bytes after, and the encoding of the entries appended."""

    base: int
    count: int
    data: bytes
    part: bytes


def _bundle_writes(
    appended: dict[int, _Appended],
) -> tuple[dict[int, tuple[int, bytes]], dict[int, tuple[int, int, bytes]]]:
    """What a batch writes of the bundles it appended to (`Batch.bundles`, `bundle_parts`):
    a bundle it filled whole, to one still partial only the entries it appended."""
    whole = {i: (a.count, a.data) for i, a in appended.items() if a.count == TILE_WIDTH}
    parts = {
        i: (a.base, a.count - a.base, a.part) for i, a in appended.items() if a.count < TILE_WIDTH
    }
    return whole, parts


def _append_bundles(
    txn: WriteTxn, edge: _Edge | None, size: int, entries: list[bytes]
) -> dict[int, _Appended]:
    """Every entry bundle touched by appending `entries` at `size`, as it is after.

    The partial bundle at the right edge comes from `edge` when it holds it (it is the bundle
    this sequencer wrote last), else from the database.
    """
    out: dict[int, _Appended] = {}
    pos, i = size, 0
    while i < len(entries):
        idx, have = divmod(pos, TILE_WIDTH)
        base = b""
        if have:
            if edge is not None and edge.bundle is not None and edge.bundle[0] == idx:
                count, base = edge.bundle[1], edge.bundle[2]
            else:
                base = txn.read_bundle(idx)
                count = len(decode_bundle(base))
            if count != have:
                raise ValueError(f"entry bundle {idx} does not hold {have} entries")
        take = min(TILE_WIDTH - have, len(entries) - i)
        part = encode_bundle(entries[i : i + take])
        out[idx] = _Appended(have, have + take, base + part, part)
        pos += take
        i += take
    return out


def _entry_digest(entry: bytes | Admitted, leaf: bytes) -> bytes | None:
    """The statement digest of an entry: the one admission found, else from its leaf."""
    if isinstance(entry, Admitted) and entry.digest is not None:
        return entry.digest
    return _statement_digest(leaf)


def _statement_digest(leaf: bytes) -> bytes | None:
    """`entry_statement_digest`, without parsing leaves that cannot hold a JSON object."""
    if len(leaf) >= 4 and _cannot_hold_object(leaf):
        return None
    return entry_statement_digest(leaf)


def _cannot_hold_object(leaf: bytes) -> bool:
    """Whether `json.loads(leaf)` surely gives no object, from the first character alone.

    `json.detect_encoding` picks the encoding from the first four bytes: a leading NUL means
    UTF-16-BE (NUL, c) or UTF-32-BE (NUL, NUL, NUL, c); a NUL second means UTF-16-LE or
    UTF-32-LE, first character the first byte; else UTF-8. Only an object can hold an
    envelope, and it starts with `{` after whitespace. Byte order marks go to the full parse.
    Requires len(leaf) >= 4. Saves parsing the whole leaf only to fail (about 4 us each).
    """
    b0, b1 = leaf[0], leaf[1]
    if b0 == 0:
        if b1:
            return b1 not in _OBJECT_STARTS
        return leaf[:4] != _BOM_UTF32_BE and (leaf[2] != 0 or leaf[3] not in _OBJECT_STARTS)
    if b0 in (0xEF, 0xFE, 0xFF):
        return False
    return b0 not in _OBJECT_STARTS


class _LeafTail:
    """Leaf hash -> index, and statement digest -> index, of the entries [start, size) of a
    stored tree: the ones above the leaf-hash index's watermark, whose rows are not in
    `leaves` and `statements` yet, and which deduplication must still find. Every pair is a
    fact about the log (append-only), so a tail stays true as the log grows; it is complete
    for a tree of `size` entries whose watermark is `start` or more.
    """

    def __init__(
        self,
        start: int,
        size: int,
        hashes: dict[bytes, int],
        statements: dict[bytes, int] | None = None,
    ) -> None:
        self.start, self.size, self.hashes = start, size, hashes
        self.statements: dict[bytes, int] = statements or {}
        # The same pairs as a list, for a flush: the sequencer's own batches add their pairs
        # as they are, where taking them back out of the map would build a pair per entry
        # (about half a microsecond an entry on a 16,384-entry flush, in profiles).
        self._pairs: list[tuple[bytes, int]] = list(hashes.items())

    def rows(self, mark: int) -> list[tuple[bytes, int]]:
        """The (leaf hash, index) rows from `mark` up: what a flush adds to `leaves`."""
        if mark <= self.start:  # the usual case: the tail is what lies above the watermark
            return list(self._pairs)
        return [(h, i) for h, i in self._pairs if i >= mark]

    def statement_rows(self, mark: int) -> list[tuple[bytes, int]]:
        """The (statement digest, index) rows from `mark` up: what a flush adds to
        `statements`."""
        return [(d, i) for d, i in self.statements.items() if i >= mark]

    def extended(
        self,
        leaves: Iterable[tuple[bytes, int]],
        size: int,
        statements: Iterable[tuple[bytes, int]] = (),
    ) -> _LeafTail:
        """This tail with the entries up to `size` added (it is updated in place)."""
        pairs = list(leaves)
        self.hashes.update(pairs)
        self._pairs += pairs
        for d, i in statements:
            self.statements.setdefault(d, i)  # the first entry of a statement is its entry
        self.size = size
        return self

    def pruned(self, mark: int) -> _LeafTail:
        """This tail without the entries below `mark` (another process flushed them)."""
        if mark > self.start:
            self._pairs = [(h, i) for h, i in self._pairs if i >= mark]
            self.hashes = dict(self._pairs)
            self.statements = {d: i for d, i in self.statements.items() if i >= mark}
            self.start = mark
        return self


class _LeafFilter:
    """A Bloom filter of the leaf hashes of the entries [0, size) of a log: a hash it rules
    out is not in the log (no false negatives); one it does not may be, and is looked up.

    A leaf hash is a SHA-256 digest, so its bits are as good as any hash function's: a hash's
    bit positions in a part of 2**b bits are its first `_FILTER_HASHES` 32-bit words, each
    cut to b bits. It grows by parts, each `_FILTER_GROWTH` times larger than the one before,
    so it never reads back the hashes it holds; a hash may be in the log if every bit of it
    is set in some part. Memory: 2 bytes an entry at most, plus the room of the newest part.
    """

    def __init__(self, first_bits: int) -> None:
        self.size = 0  # the entries [0, size) are in
        # (bits, mask of a bit position), newest last
        self._parts: list[tuple[npt.NDArray[np.uint8], np.uint32]] = []
        self._room = 0  # entries the newest part takes before the next one is started
        self._next_bits = first_bits

    @staticmethod
    def for_size(size: int) -> _LeafFilter:
        """An empty filter whose first part holds twice `size` entries (a log at start)."""
        bits = _FILTER_FIRST_BITS
        while bits < 2 * size * _FILTER_BITS_PER_ENTRY and bits < _FILTER_MAX_BITS:
            bits *= 2
        return _LeafFilter(bits)

    def add(self, hashes: bytes, size: int) -> None:
        """Add the leaf hashes (end to end) of the entries [self.size, size)."""
        words = _filter_words(hashes)
        at = 0
        while at < len(words):
            if self._room <= 0:
                self._grow()
            take = min(self._room, len(words) - at)
            bits, mask = self._parts[-1]
            pos = words[at : at + take] & mask
            np.bitwise_or.at(bits, pos >> 3, _BIT[pos & 7])
            self._room -= take
            at += take
        self.size = size

    def maybe_held(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Those of `hashes` that may be in the log: all that are, and a few that are not."""
        if not hashes or not self._parts:  # no parts: the log is empty
            return []
        words = _filter_words(b"".join(hashes))
        held = np.zeros(len(hashes), dtype=np.bool_)
        for bits, mask in self._parts:
            pos = words & mask
            held |= (bits[pos >> 3] & _BIT[pos & 7]).all(axis=1)
        return [hashes[i] for i in np.flatnonzero(held).tolist()]

    def _grow(self) -> None:
        bits = self._next_bits
        self._parts.append((np.zeros(bits // 8, dtype=np.uint8), np.uint32(bits - 1)))
        self._room = bits // _FILTER_BITS_PER_ENTRY
        self._next_bits = min(bits * _FILTER_GROWTH, _FILTER_MAX_BITS)


# Bit `i` of a byte, for i in 0..7.
_BIT = np.array([1 << i for i in range(8)], dtype=np.uint8)


def _filter_words(hashes: bytes) -> npt.NDArray[np.uint32]:
    """The 32-bit words of each 32-byte hash that give its bit positions, one row a hash (in
    the machine's byte order: the filter never leaves the process)."""
    words = np.frombuffer(hashes, dtype=np.uint32).reshape(-1, merkle.HASH_SIZE // 4)
    # A contiguous copy: the operations that follow run several times faster on one.
    return np.ascontiguousarray(words[:, :_FILTER_HASHES])


class _Edge:
    """The right edge of a tree this sequencer committed: its partial tile at each level and
    its partial entry bundle, which are all a batch reads to append and to compute the root.

    Tiles and bundles of a tree follow from its leaves, so while the stored head has this
    size and root, these are the stored ones too, and the next batch need not read them.
    """

    def __init__(
        self,
        size: int,
        root: bytes,
        tiles: dict[TileId, bytes],
        bundle: tuple[int, int, bytes],
        nodes: dict[tuple[int, int], bytes],
    ) -> None:
        self.size, self.root, self.tiles = size, root, tiles
        self.bundle: tuple[int, int, bytes] | None = bundle if bundle[1] else None
        # The perfect subtrees (level, index) whose hashes made this tree's root (`_RootNodes`).
        self.nodes = nodes

    def holds(self, head: Head) -> bool:
        """Whether this is the edge of the tree `head` signs."""
        return head.size == self.size and head.root == self.root

    @staticmethod
    def after(
        head: Head,
        reader: _EdgeReader,
        bundles: dict[int, _Appended],
        nodes: dict[tuple[int, int], bytes],
    ) -> _Edge | None:
        """The edge of the tree a batch just committed (None if a tile of it went unread)."""
        tiles: dict[TileId, bytes] = {}
        level = 0
        while head.size >> (TILE_HEIGHT * level):
            count = head.size >> (TILE_HEIGHT * level)
            width = count % TILE_WIDTH
            if width:
                tid = TileId(level, count // TILE_WIDTH)
                data = reader.seen(tid)
                if data is None or len(data) < width * merkle.HASH_SIZE:
                    return None
                tiles[tid] = data[: width * merkle.HASH_SIZE]
            level += 1
        idx, width = divmod(head.size, TILE_WIDTH)
        got = bundles.get(idx)
        count, data = (0, b"") if got is None else (got.count, got.data)
        if width and count != width:
            return None
        return _Edge(head.size, head.root, tiles, (idx, width, data), nodes)


class _RootNodes:
    """The perfect-subtree hashes a batch's root is made of, from the kept edge when the
    previous root used them too, else from the tiles.

    A root hashes one perfect subtree per set bit of the tree size, and from a size to the
    next most of them are the same: the higher ones each take up to 255 hashes of a tile
    to recompute. A perfect subtree of a tree never changes as the tree grows, so the kept
    edge's ones (a committed tree that the stored head still signs) stay right.
    """

    def __init__(self, node_at: Callable[[int, int], bytes], edge: _Edge | None) -> None:
        self._node_at = node_at
        self._kept: dict[tuple[int, int], bytes] = {} if edge is None else edge.nodes
        self.used: dict[tuple[int, int], bytes] = {}

    def node_at(self, level: int, index: int) -> bytes:
        key = (level, index)
        node = self._kept.get(key)
        if node is None:
            node = self._node_at(level, index)
        self.used[key] = node
        return node


class _EdgeReader:
    """Tiles as of the batch being written: its own new tiles first, then the kept edge, then
    the database; remembers what it read, to keep the next edge."""

    def __init__(self, txn: WriteTxn, edge: _Edge | None) -> None:
        self.txn = txn
        self.batch: dict[TileId, bytes] = {}
        self._read: dict[TileId, bytes] = {} if edge is None else dict(edge.tiles)

    def read(self, t: TileId) -> bytes:
        data = self.batch.get(t)
        if data is not None:
            return data
        data = self._read.get(t)
        if data is None:
            data = self._read[t] = self.txn.read_tile(t)
        return data

    def seen(self, t: TileId) -> bytes | None:
        """The tile as this batch wrote or read it, if it did."""
        data = self.batch.get(t)
        return data if data is not None else self._read.get(t)
