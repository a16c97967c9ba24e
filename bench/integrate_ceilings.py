"""How fast integration could be without the leaf-hash index's flushes, without WAL checkpoints,
or without either, against pymerkle's SqliteTree in the same rounds.

    python bench/integrate_ceilings.py                 # 200,000 entries x 4 rounds (~4 minutes)
    python bench/integrate_ceilings.py --rounds 2 --entries 50000

`integrate_shares.py` splits our integration time into flushes, batches that overlap a WAL
checkpoint and the rest. A share is not a saving: a batch that overlaps a checkpoint might be
as slow without it. This measures what taking each away would buy, as upper bounds for a
change that moves the work elsewhere (a flush on another core, a checkpoint that never meets
a commit). The same log core as `ledger_bench.integrate_run` (`Sequencer.integrate`, raw 1 KiB
entries, batches of 256, SQLite WAL, synchronous FULL), in four modes:

* **as shipped**;
* **no flush**: the leaf-hash index is never flushed (`Sequencer._flush_due` answers no and the
  closing `flush_leaf_index` does nothing): the index work the entries owe is left undone, so
  this log could not serve lookups past its first tail;
* **no checkpoint**: the store's checkpointer thread never runs and the writers' automatic
  checkpoint is put out of reach (`storage._WAL_BACKSTOP_PAGES`): the WAL grows with the log
  (some 1.2 KB an entry);
* **neither**.

Each round runs pymerkle 7.0.0's `SqliteTree` (its defaults) on the same entries before and
after the four (in alternating order), and compares each mode with the geometric mean of the
two: ratios paired by round, with a 95 % t-interval (`ledger_bench.paired_ratio`). These modes
exist only here, for measurement: none is a setting of the ledger.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import ledger_bench as lb  # bench/ is on sys.path when this file runs as a script

from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner
from ledger import sequencer, storage

BATCH = 256
MODES = ("as shipped", "no flush", "no checkpoint", "neither")


@contextlib.contextmanager
def _mode(name: str) -> Iterator[None]:
    """Take away what mode `name` takes away, for the length of the block."""
    undo: list[tuple[object, str, object]] = []

    def swap(owner: object, attr: str, value: object) -> None:
        undo.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    if name in ("no flush", "neither"):
        swap(sequencer.Sequencer, "_flush_due", lambda self, *args: False)
        swap(sequencer.Sequencer, "flush_leaf_index", lambda self: 0)
    if name in ("no checkpoint", "neither"):
        # `committed` starts the thread and asks writers to catch up; the backstop is read
        # by each new connection (`storage._sqlite_pragmas`).
        swap(storage._WalCheckpointer, "committed", lambda self: False)
        swap(storage, "_WAL_BACKSTOP_PAGES", 1 << 30)
    try:
        yield
    finally:
        for owner, attr, value in reversed(undo):
            setattr(owner, attr, value)


def ours(tmp: Path, total: int, mode: str) -> float:
    """Our rate in one mode, on a fresh database."""
    d = Path(tempfile.mkdtemp(prefix="ceiling-", dir=tmp))
    signer = Ed25519NoteSigner(lb.ORIGIN, generate_private_key())
    try:
        with _mode(mode):
            done, secs = lb.integrate_run(
                f"sqlite:///{d / 'ledger.db'}",
                "FULL",
                BATCH,
                total,
                float("inf"),
                signer,
                indexed=mode in ("as shipped", "no checkpoint"),
            )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return done / secs


def peer(tmp: Path, total: int) -> float:
    """pymerkle's rate on the same entries."""
    d = Path(tempfile.mkdtemp(prefix="ceiling-peer-", dir=tmp))
    try:
        done, secs = lb.peer_sqlite_append(d, BATCH, total, float("inf"))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return done / secs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000, help="entries per run")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the four modes")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bl-ceilings-"))
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    peers: list[float] = []
    try:
        for r in range(args.rounds):
            before = peer(tmp, args.entries)
            for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
                rates[mode].append(ours(tmp, args.entries, mode))
            peers.append(math.sqrt(before * peer(tmp, args.entries)))
            got = ", ".join(f"{m} {rates[m][-1]:,.0f}" for m in MODES)
            lb.log_progress(f"round {r + 1} of {args.rounds}: {got}; pymerkle {peers[-1]:,.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.entries:,} raw 1 KiB entries, batches of {BATCH}, SQLite WAL FULL; "
        f"{args.rounds} rounds; {time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print("| mode | entries/s (median, min..max) | / pymerkle, paired by round |")
    print("| --- | --- | --- |")
    for mode in MODES:
        v = rates[mode]
        print(
            f"| {mode} | {statistics.median(v):,.0f} ({lb.spread(v)}) "
            f"| {lb.paired_ratio(v, peers)} |"
        )
    print(f"| pymerkle SqliteTree | {statistics.median(peers):,.0f} ({lb.spread(peers)}) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
