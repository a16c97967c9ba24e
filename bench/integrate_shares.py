"""Where integration time goes, against pymerkle's SqliteTree in the same run.

    python bench/integrate_shares.py                 # 200,000 entries x 3 rounds (~2 minutes)
    python bench/integrate_shares.py --entries 50000 --rounds 1

`ledger_bench.py`'s integrate row gives one rate for a run. This splits that run: the same
log core (`Sequencer.integrate`, raw 1 KiB entries, batches of 256, SQLite WAL with
synchronous FULL: the server's defaults, wired by `ledger_bench.open_log`), every batch
timed and put in one of three groups:

* **flush**: the batch flushed the leaf-hash index (`Sequencer.leaf_index_lag` entries, sorted,
  into a B-tree keyed by hash), and the closing `flush_leaf_index` (index work the entries owe);
* **during a checkpoint**: any other batch that overlapped a WAL checkpoint run by the store's
  checkpointer thread (`ledger.storage._WalCheckpointer`): its commit's `fdatasync` of the WAL
  waits behind the checkpoint's writes to the database file;
* **rest**: every other batch.

Then pymerkle 7.0.0's `SqliteTree` (its defaults) appends the same entries in the same batches
(`ledger_bench.peer_sqlite_append`). Ours and the peer alternate order from round to round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ledger_bench as lb  # bench/ is on sys.path when this file runs as a script

from ledger import storage

BATCH = 256


@dataclass
class Split:
    """One run of ours: seconds per group, batches per group, and the rest's median batch."""

    entries: int
    flush: list[float]
    checkpoint: list[float]
    rest: list[float]
    checkpoints: int

    @property
    def total(self) -> float:
        return sum(self.flush) + sum(self.checkpoint) + sum(self.rest)


def _checkpoint_spans() -> tuple[list[tuple[float, float]], Callable[[], None]]:
    """Record when each checkpoint of the store's checkpointer thread runs; returns the spans
    and what undoes the recording."""
    spans: list[tuple[float, float]] = []
    original = storage._WalCheckpointer._checkpoint

    def timed(self: storage._WalCheckpointer, conn: object) -> bool:
        t0 = time.perf_counter()
        try:
            return original(self, conn)  # type: ignore[arg-type]
        finally:
            spans.append((t0, time.perf_counter()))

    storage._WalCheckpointer._checkpoint = timed  # type: ignore[method-assign]

    def undo() -> None:
        storage._WalCheckpointer._checkpoint = original  # type: ignore[method-assign]

    return spans, undo


def ours(tmp: Path, total: int) -> Split:
    """Integrate `total` entries (`ledger_bench.integrate_run`), timing each batch and
    grouping it."""
    spans, undo = _checkpoint_spans()
    d = Path(tempfile.mkdtemp(prefix="shares-", dir=tmp))
    try:
        batches = lb.integrate_batches(d / "ledger.db", total, BATCH)
    finally:
        undo()

    def overlaps(a: float, b: float) -> bool:
        return any(s < b and e > a for s, e in spans)

    split = Split(batches[-1].size, [], [], [], len(spans))
    for b in batches:
        group = (
            split.flush
            if b.flushed
            else split.checkpoint
            if overlaps(b.start, b.end)
            else split.rest
        )
        group.append(b.end - b.start)
    return split


def peer(tmp: Path, total: int) -> float:
    """pymerkle's rate on the same entries."""
    n, seconds = lb.peer_sqlite_append(tmp, BATCH, total, float("inf"))
    return n / seconds


def _median(values: Sequence[float], fmt: str) -> str:
    """`median (min..max, n=N)`."""
    lo, mid, hi = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({lo}..{hi}, n={len(values)})"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000, help="entries per run")
    ap.add_argument("--rounds", type=int, default=3, help="runs of ours and of the peer")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bl-shares-"))
    splits: list[Split] = []
    rates: list[float] = []
    for r in range(args.rounds):
        for who in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
            print(f"[{time.strftime('%H:%M:%S')}] round {r + 1}: {who}", file=sys.stderr)
            if who == "ours":
                splits.append(ours(tmp, args.entries))
            else:
                rates.append(peer(tmp, args.entries))
    rows = [
        ("ours: entries/s", [s.entries / s.total for s in splits], "{:,.0f}"),
        ("pymerkle SqliteTree: entries/s", rates, "{:,.0f}"),
        (
            "ours / pymerkle",
            [s.entries / s.total / p for s, p in zip(splits, rates, strict=True)],
            "{:.2f}x",
        ),
        ("share: leaf-index flushes", [sum(s.flush) / s.total for s in splits], "{:.0%}"),
        (
            "share: batches during a checkpoint",
            [sum(s.checkpoint) / s.total for s in splits],
            "{:.0%}",
        ),
        ("share: the rest", [sum(s.rest) / s.total for s in splits], "{:.0%}"),
        ("ms per flush", [statistics.median(s.flush) * 1e3 for s in splits], "{:.0f}"),
        ("flushes", [float(len(s.flush)) for s in splits], "{:.0f}"),
        ("WAL checkpoints", [float(s.checkpoints) for s in splits], "{:.0f}"),
        ("batches during a checkpoint", [float(len(s.checkpoint)) for s in splits], "{:.0f}"),
        (
            "the rest: µs per entry (median batch)",
            [statistics.median(s.rest) / BATCH * 1e6 for s in splits],
            "{:.1f}",
        ),
        (
            "ours without flushes and checkpoints: µs per entry (rest's batches only)",
            [sum(s.rest) / (len(s.rest) * BATCH) * 1e6 for s in splits],
            "{:.1f}",
        ),
        ("pymerkle: µs per entry", [1e6 / p for p in rates], "{:.1f}"),
    ]
    print(
        f"\n{args.entries:,} raw 1 KiB entries, batches of {BATCH}, SQLite WAL FULL; "
        f"{args.rounds} rounds, median (range, n)\n"
    )
    print("| figure | value |\n| --- | --- |")
    for name, values, fmt in rows:
        print(f"| {name} | {_median(values, fmt)} |")
    ours_rates = [s.entries / s.total for s in splits]
    print(f"| ours / pymerkle, paired: geometric mean | {lb.paired_ratio(ours_rates, rates)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
