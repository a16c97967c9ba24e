"""Integration as the log grows: ours and pymerkle's SqliteTree, segment by segment.

    python bench/integrate_scale.py                       # 3,000,000 entries, 10 segments
    python bench/integrate_scale.py --entries 1000000 --segments 5 --no-peer

`ledger_bench.py`'s integrate row and `integrate_shares.py` run 200,000 entries. A log keeps
growing, and whatever a batch costs in proportion to the log's size shows only later. This
runs the same log core (`ledger_bench.integrate_run`: `Sequencer.integrate`, raw 1 KiB
entries, batches of 256, SQLite WAL with synchronous FULL: the server's defaults) up to
`--entries`, and prints, per segment of the log: our rate, the median time of the batches that
flushed the leaf-hash index there, and pymerkle 7.0.0's `SqliteTree` (its defaults) appending
the same entries in the same batches, timed over the same segment. Ours runs first, then the
peer; each needs about 1.1 KB of disk an entry, removed afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import ledger_bench as lb  # bench/ is on sys.path when this file runs as a script
import pymerkle  # type: ignore[import-untyped]

BATCH = 256


def ours(tmp: Path, total: int) -> list[lb.BatchSpan]:
    """Integrate `total` entries, every batch timed."""
    d = Path(tempfile.mkdtemp(prefix="scale-ours-", dir=tmp))
    try:
        return lb.integrate_batches(d / "ledger.db", total, BATCH)
    finally:
        shutil.rmtree(d)


def peer(tmp: Path, ends: Sequence[int]) -> list[float]:
    """pymerkle's seconds for each segment ending at `ends`."""
    d = Path(tempfile.mkdtemp(prefix="scale-peer-", dir=tmp))
    out = []
    try:
        with pymerkle.SqliteTree(str(d / "tree.db")) as tree:
            for end in ends:
                _, seconds = lb.append_timed(tree, BATCH, float("inf"), end)
                out.append(seconds)
    finally:
        shutil.rmtree(d)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=3_000_000, help="entries in all")
    ap.add_argument("--segments", type=int, default=10, help="segments of the log to report")
    ap.add_argument("--no-peer", action="store_true", help="skip pymerkle")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bl-scale-"))
    step = args.entries // args.segments
    ends = [min(args.entries, step * (k + 1)) for k in range(args.segments)]
    ends[-1] = args.entries
    try:
        print(f"[{time.strftime('%H:%M:%S')}] ours: {args.entries:,} entries", file=sys.stderr)
        batches = ours(tmp, args.entries)
        peer_seconds: list[float] = []
        if not args.no_peer:
            print(f"[{time.strftime('%H:%M:%S')}] pymerkle", file=sys.stderr)
            peer_seconds = peer(tmp, ends)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.entries:,} raw 1 KiB entries, batches of {BATCH}, SQLite WAL FULL "
        "(the closing flush of the leaf-hash index is in the last segment)\n"
    )
    print("| log size | ours: entries/s | flushes | ms per flush (median) | pymerkle: entries/s |")
    print("| --- | --- | --- | --- | --- |")
    start = 0
    for k, end in enumerate(ends):
        # The closing flush leaves the size where the last batch left it: it joins the last.
        part = [b for b in batches if start < b.size <= end]
        seconds = sum(b.end - b.start for b in part)
        flushes = [(b.end - b.start) * 1e3 for b in part if b.flushed]
        ms = f"{statistics.median(flushes):.0f}" if flushes else "-"
        theirs = f"{(end - start) / peer_seconds[k]:,.0f}" if peer_seconds else "-"
        print(
            f"| {start:,}..{end:,} | {(end - start) / seconds:,.0f} | {len(flushes)} | {ms} "
            f"| {theirs} |"
        )
        start = end
    total = sum(b.end - b.start for b in batches)
    theirs = f"{args.entries / sum(peer_seconds):,.0f}" if peer_seconds else "-"
    print(f"| all | {args.entries / total:,.0f} | | | {theirs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
