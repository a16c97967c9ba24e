"""The read index (`ledger.index`) against its peer, a full scan, measured in one run.

    python bench/index_bench.py                 # 20,000 signed probe records (a few minutes)
    python bench/index_bench.py --entries 2000  # smoke run

A log of signed probe records (``--models`` models x 4 versions x the core suite's cells, each
record a few items with emotion projections, as `bledger probe` writes them) is integrated
in-process on SQLite. Then:

* ``catch-up``: the first query builds the index from the entries (`ledger.index.catch_up`):
  entries/s, once per repetition on a fresh copy of the index tables;
* ``query``: "the records of model M, version V" through the built index (`index.query`);
* ``scan`` (the peer): what a reader does without an index: read every entry bundle, parse every
  statement and keep those about M@V. Its answer is checked against the index's.

Numbers are medians over ``--reps`` repetitions with the range shown; the ratio column is ours /
peer's latency (below 1 is better). Nothing asserts on time: it measures and prints.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import delete

from attest import merkle
from attest.dsse import Envelope
from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner
from attest.predicates import CheckpointRef, LogEntryRef, ModelRef, ProbeRecord, SuiteRef
from attest.statement import parse_statement
from attest.tiles import TILE_WIDTH
from clients.probe.records import RecordHeader, probe_item, sign_records
from clients.probe.suites import load_suite, probes
from ledger import index, schema
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store

ORIGIN = "bench.invalid/logs/evidence"
VERSIONS = ("v1", "v2", "v3", "v4")


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def signed_records(count: int, models: int) -> list[bytes]:
    """`count` signed probe records, round-robin over models, versions and the suite's cells."""
    suite = load_suite("core")
    cells = sorted({(p.item.category, p.tier.name) for p in probes(suite)})
    suite_ref = SuiteRef(name=suite.name, version=suite.version, sha256=suite.digest)
    key = [("worker", generate_private_key())]
    seen = CheckpointRef(origin=ORIGIN, size=0, root=merkle.EMPTY_ROOT.hex())
    cal = LogEntryRef(origin=ORIGIN, index=0, leaf_hash=_h("calibration"))
    emotions = {f"e{k}": (0.1 * k, 0.01) for k in range(20)}
    out = []
    for i in range(count):
        m, v = f"model-{i % models}", VERSIONS[(i // models) % len(VERSIONS)]
        category, tier = cells[(i // (models * len(VERSIONS))) % len(cells)]
        header = RecordHeader(
            model=ModelRef(name=m, version=v, weights_sha256=_h(m + v)),
            suite=suite_ref,
            category=category,
            tier=tier,
            run_id=f"run-{i}",
            calibration=cal,
            seen_checkpoint=seen,
            issued_at=1_800_000_000,
        )
        items = [
            probe_item(f"p{j}", "direct", f"answer {i}/{j}", refused=False, transfer=0.0,
                       emotions=emotions)
            for j in range(4)
        ]  # fmt: skip
        (part,) = sign_records(header, items, key)
        out.append(part.envelope.canonical_bytes())
    return out


def build_log(store: Store, entries: Sequence[bytes]) -> Log:
    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    row = store.create_log("evidence", ORIGIN, "evidence", signer.vkey,
                           signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer))  # fmt: skip
    log = Log(store, row)
    seq = Sequencer(log, signer, batch_size=1024)
    for i in range(0, len(entries), 1024):
        seq.integrate(entries[i : i + 1024])
    return log


def reset_index(store: Store, log: Log) -> None:
    with store._write.begin() as conn:  # the benchmark owns this database
        conn.execute(
            delete(schema.statement_index).where(schema.statement_index.c.log_id == log.id)
        )
        conn.execute(delete(schema.index_heads).where(schema.index_heads.c.log_id == log.id))


def scan(log: Log, model: str, version: str) -> list[int]:
    """The peer: every bundle read, every statement parsed, those about model@version kept."""
    size, found = log.head().size, []
    for b in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        for k, data in enumerate(log.bundle(b, size)):
            pred = parse_statement(Envelope.from_json(data).payload).predicate
            if isinstance(pred, ProbeRecord) and (pred.model.name, pred.model.version) == (
                model,
                version,
            ):
                found.append(b * TILE_WIDTH + k)
    return found


def timed(fn: Callable[[], object], reps: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def spread(values: Sequence[float], fmt: str) -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    print(f"# {platform.python_version()} on {platform.machine()}, {args.entries} entries",
          file=sys.stderr)  # fmt: skip
    t0 = time.perf_counter()
    entries = signed_records(args.entries, args.models)
    sizes = [len(e) for e in entries]
    print(f"# signed {len(entries)} records ({statistics.median(sizes):.0f} B median) in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}", synchronous="NORMAL")
        store.migrate()
        log = build_log(store, entries)

        build = []
        for _ in range(args.reps):
            reset_index(store, log)
            t = time.perf_counter()
            index.catch_up(log)
            build.append(time.perf_counter() - t)
        where = {"model": "model-0", "version": "v1", "predicate_type": "probe-record"}
        q_times, (_, rows) = timed(lambda: index.query(log, where), max(args.reps, 20))
        s_times, found = timed(lambda: scan(log, "model-0", "v1"), args.reps)
        ours = [r.idx for r in rows]  # type: ignore[attr-defined]
        check = "same" if ours == found else f"DIFFERENT ({len(ours)} vs {len(found)})"
        store.close()

    n = args.entries
    rate = [n / t for t in build]
    q_ms = [1000 * t for t in q_times]
    s_ms = [1000 * t for t in s_times]
    rows_out = [
        ("catch-up (build from entries)", f"{statistics.median(rate):,.0f} entries/s",
         spread(rate, "{:,.0f}"), ""),
        ("query model@version (index)", f"{statistics.median(q_ms):.2f} ms",
         spread(q_ms, "{:.2f}"), f"{statistics.median(q_ms) / statistics.median(s_ms):.4f}"),
        ("peer: full scan + parse", f"{statistics.median(s_ms):,.0f} ms",
         spread(s_ms, "{:,.0f}"), ""),
    ]  # fmt: skip
    print(f"{'metric':32} {'median':>22} {'range':>20} {'ratio':>8}")
    for metric, value, rng, ratio in rows_out:
        print(f"{metric:32} {value:>22} {rng:>20} {ratio:>8}")
    print(f"answer of the index vs the scan: {check} ({len(found)} records of model-0@v1)")
    return 0 if check == "same" else 1


if __name__ == "__main__":
    sys.exit(main())
