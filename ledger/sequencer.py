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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger import merkle
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.log import Log
from ledger.note import NoteSigner
from ledger.storage import Batch, Head, WriteTxn
from ledger.tiles import (
    TILE_WIDTH,
    TileId,
    decode_bundle,
    encode_bundle,
    integrate,
    node_at_from_tiles,
)


@dataclass(frozen=True)
class Sequenced:
    """Where an entry landed, and the first signed checkpoint that includes it."""

    index: int
    leaf_hash: bytes
    head: Head
    duplicate: bool


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
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.log, self.signer, self.clock = log, signer, clock
        self.batch_size, self.batch_delay = batch_size, batch_delay
        self._pending: list[tuple[bytes, asyncio.Future[Sequenced]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the synchronous writer path ---------------------------------------------------------

    def integrate(self, entries: Sequence[bytes]) -> list[Sequenced]:
        """Integrate a batch of entries in one transaction; returns one result per entry.

        Entries already in the log (or repeated within the batch) keep their first index.
        """
        hashes = [merkle.leaf_hash(e) for e in entries]
        with self.log.store.writer(self.log.id) as txn:
            head = txn.head
            known = txn.lookup_leaves(set(hashes))
            fresh, fresh_hashes, where, dup = _assign(entries, hashes, known, head.size)
            if not fresh:
                return [Sequenced(i, h, head, True) for i, h in zip(where, hashes, strict=True)]
            new_size = head.size + len(fresh)
            tiles = integrate(head.size, txn.read_tile, fresh_hashes).tiles
            bundles = _append_bundles(txn, head.size, fresh)
            root = merkle.subtree_hash(0, new_size, node_at_from_tiles(_overlay(tiles, txn)))
            new_head = signed_head(self.log.row.origin, new_size, root, self.signer)
            # Crash point: nothing written yet; the batch is simply lost, unacknowledged.
            txn.commit_batch(
                Batch(
                    old_size=head.size,
                    new_head=new_head,
                    tiles=tiles,
                    bundles=bundles,
                    leaves=list(zip(fresh_hashes, range(head.size, new_size), strict=True)),
                    created_at=int(self.clock()),
                )
            )
            # Crash point: rows written but not committed; the database rolls them back.
        # Crash point: committed but not yet acknowledged; a client that retries gets the
        # same index back through deduplication.
        self.log.remember_edge(tiles)
        return [Sequenced(i, h, new_head, d) for i, h, d in zip(where, hashes, dup, strict=True)]

    # -- the asynchronous front ---------------------------------------------------------------

    async def add(self, entry: bytes) -> Sequenced:
        """Queue an entry and wait until a signed checkpoint includes it."""
        if self._task is None:
            raise RuntimeError("sequencer not started")
        fut: asyncio.Future[Sequenced] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, fut))
        self._wake.set()
        return await fut

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop; pending writers get an error (they were never acknowledged)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RuntimeError("sequencer stopped"))
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.batch_delay and len(self._pending) < self.batch_size:
                await asyncio.sleep(self.batch_delay)
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
            if not self._pending:
                self._wake.clear()
            if batch:
                await self._integrate_batch(batch)

    async def _integrate_batch(self, batch: list[tuple[bytes, asyncio.Future[Sequenced]]]) -> None:
        try:
            results = await asyncio.to_thread(self.integrate, [e for e, _ in batch])
        except Exception as exc:  # the whole batch failed: nobody was acknowledged
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)


def _assign(
    entries: Sequence[bytes], hashes: Sequence[bytes], known: dict[bytes, int], size: int
) -> tuple[list[bytes], list[bytes], list[int], list[bool]]:
    """Give each entry its index: existing ones keep theirs, new ones are appended in order.

    Returns the new entries, their leaf hashes, every entry's index and whether it was a
    duplicate (of an entry in the log or earlier in the batch).
    """
    seen = dict(known)
    fresh: list[bytes] = []
    fresh_hashes: list[bytes] = []
    where: list[int] = []
    dup: list[bool] = []
    for e, h in zip(entries, hashes, strict=True):
        dup.append(h in seen)
        if h not in seen:
            seen[h] = size + len(fresh)
            fresh.append(e)
            fresh_hashes.append(h)
        where.append(seen[h])
    return fresh, fresh_hashes, where, dup


def _append_bundles(txn: WriteTxn, size: int, entries: list[bytes]) -> dict[int, tuple[int, bytes]]:
    """New contents of every entry bundle touched by appending `entries` at `size`."""
    out: dict[int, tuple[int, bytes]] = {}
    pos, i = size, 0
    while i < len(entries):
        idx, have = divmod(pos, TILE_WIDTH)
        base = b""
        if have:
            base = txn.read_bundle(idx)
            if len(decode_bundle(base)) != have:
                raise ValueError(f"entry bundle {idx} does not hold {have} entries")
        take = min(TILE_WIDTH - have, len(entries) - i)
        out[idx] = (have + take, base + encode_bundle(entries[i : i + take]))
        pos += take
        i += take
    return out


def _overlay(tiles: dict[TileId, bytes], txn: WriteTxn) -> Callable[[TileId], bytes]:
    """Read tiles from the batch being written first, then from the database."""

    def read(t: TileId) -> bytes:
        data = tiles.get(t)
        return data if data is not None else txn.read_tile(t)

    return read
