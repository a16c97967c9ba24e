"""Two `bledger serve` frontends on one PostgreSQL database, against one, in the same run.

    python bench/frontends_bench.py               # 2 runs of each config, 3 s warm-up, 15 s window
    python bench/frontends_bench.py --quick       # 1 run of each, 1 s warm-up, 5 s window
    python bench/frontends_bench.py --json

Each run gets a fresh database `bl_bench_<random>` on the server named by `--pg` (dropped
afterwards) and the same pre-signed envelopes (distinct 1 KiB `FieldReport` statements,
`ledger_bench.signed_bodies`). Configs:

* `one frontend`: one `bledger serve --db URL` process (one uvicorn process, batch size 256).
* `two frontends`: two such processes on the same database, the second with a copy of the
  first's data directory (config and log keys), as a second host would run; they take turns
  sequencing through the head-row lock.

The load is `ledger_bench`'s `threads` generator rebuilt for several targets: `--clients`
threads, each with one keep-alive `http.client` connection, posting one envelope per request;
with two frontends client i talks to frontend i mod 2. Over the measurement window it reads the
CPU of each frontend process, of every `postgres` process on the machine, of the load generator
and of the whole machine from `/proc`, and the load average before and after. Runs alternate
(one, two, two, one, ...) so both configs see the same drift in machine load. The peer is the
one-frontend row of the same run (ratio column), and the bare single-core Ed25519 verification
rate (`ledger_bench.bench_bare`) is the machine's floor. Nothing asserts on time: it measures and
prints. Afterwards each run checks that every frontend ends on the same checkpoint and that its
size equals the number of 200 answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import ledger_bench as lb  # bench/ is on sys.path when this file runs as a script
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest.keys import generate_private_key, write_key_pair

LOG = "evidence"
CONFIGS = {1: "one frontend", 2: "two frontends"}


@dataclass
class Run:
    """One measured run of one config."""

    frontends: int
    rate: float
    p50_ms: float
    p99_ms: float
    n: int
    frontend_cpu: list[float]  # cores, per frontend process
    postgres_cpu: float  # cores, every postgres process on the machine
    client_cpu: float  # cores, this load generator
    machine_cpu: float  # cores, all processes
    loadavg: tuple[float, float]  # 1-minute load average before and after the window
    statuses: dict[int, int]
    size: int
    batches: int
    checks: list[str] = field(default_factory=list)


def postgres_cpu() -> float:
    """CPU seconds used so far by every live process named `postgres` (server and backends;
    a backend that exits inside the window takes its share with it)."""
    total = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tck
    return total


@dataclass
class Marks:
    """CPU and wall clock at one boundary of the measurement window."""

    wall: float
    frontends: list[float]
    postgres: float
    client: float
    machine: float
    load1: float

    @classmethod
    def now(cls, pids: Sequence[int]) -> Marks:
        return cls(
            time.perf_counter(),
            [lb.process_cpu(p) for p in pids],
            postgres_cpu(),
            time.process_time(),
            lb.machine_busy(),
            os.getloadavg()[0],
        )


def load(
    bases: Sequence[str],
    bodies: Sequence[bytes],
    clients: int,
    warmup: float,
    duration: float,
    pids: Sequence[int],
) -> tuple[list[tuple[float, float, int]], Marks, Marks]:
    """`clients` threads, client i posting to `bases[i % len(bases)]` over one keep-alive
    connection; (start, end, status or -1) per request, and the window's two boundaries."""
    it, lock = iter(bodies), threading.Lock()
    samples: list[tuple[float, float, int]] = []
    path = f"/logs/{LOG}/entries"
    stop_at = time.perf_counter() + warmup + duration

    def worker(base: str) -> None:
        lb.post_until(base, path, it, lock, stop_at, samples)

    threads = [
        threading.Thread(target=worker, args=(bases[i % len(bases)],), daemon=True)
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    time.sleep(warmup)
    first = Marks.now(pids)
    time.sleep(max(0.0, stop_at - time.perf_counter()))
    last = Marks.now(pids)
    for t in threads:
        t.join()
    if len(samples) >= len(bodies):
        raise RuntimeError("the pre-signed envelopes ran out before the window ended")
    return samples, first, last


def measure(
    frontends: int, args: argparse.Namespace, key: Ed25519PrivateKey, bodies: list[bytes]
) -> Run:
    """One run of `frontends` `bledger serve` processes on a fresh database."""
    tmp = Path(tempfile.mkdtemp(prefix=f"frontends-{frontends}-"))
    try:
        with lb.pg_database(args.pg) as url, contextlib.ExitStack() as stack:
            servers: list[tuple[str, int]] = []
            for k in range(frontends):
                d = tmp / f"host{k}"
                d.mkdir()
                pub = write_key_pair(d / "bench-client", key)
                if k:  # a second host: the first host's config and log keys
                    shutil.copytree(tmp / "host0" / "data", d / "data")
                base, proc = stack.enter_context(lb.ledger_server(d, pub, 1, ("--db", url)))
                servers.append((base, proc.pid))
            bases = [b for b, _ in servers]
            samples, m0, m1 = load(
                bases, bodies, args.clients, args.warmup, args.seconds, [p for _, p in servers]
            )
            notes = [httpx.get(f"{b}/logs/{LOG}/checkpoint", timeout=60).text for b in bases]
            with psycopg.connect(lb.pg_admin_dsn(url)) as conn:
                row = conn.execute(
                    "SELECT count(*) - 1 FROM checkpoints c JOIN logs l ON l.id = c.log_id "
                    "WHERE l.name = %s",
                    (LOG,),
                ).fetchone()
                batches = int(row[0]) if row else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wall = m1.wall - m0.wall
    ok = [s for s in samples if m0.wall <= s[1] <= m1.wall and s[2] == 200]
    lat = sorted((e - s) * 1000 for s, e, st in samples if m0.wall <= s < m1.wall and st == 200)
    statuses: dict[int, int] = {}
    for _, _, st in samples:
        statuses[st] = statuses.get(st, 0) + 1
    size = int(notes[0].split("\n")[1])
    run = Run(
        frontends=frontends,
        rate=len(ok) / wall,
        p50_ms=lb.percentile(lat, 50) if lat else float("nan"),
        p99_ms=lb.percentile(lat, 99) if lat else float("nan"),
        n=len(lat),
        frontend_cpu=[(b - a) / wall for a, b in zip(m0.frontends, m1.frontends, strict=True)],
        postgres_cpu=(m1.postgres - m0.postgres) / wall,
        client_cpu=(m1.client - m0.client) / wall,
        machine_cpu=(m1.machine - m0.machine) / wall,
        loadavg=(m0.load1, m1.load1),
        statuses=dict(sorted(statuses.items())),
        size=size,
        batches=batches,
    )
    same = all(n == notes[0] for n in notes)
    run.checks.append(
        f"{CONFIGS[frontends]}: statuses {run.statuses}; "
        f"{'every frontend ends on the same checkpoint' if same else 'FRONTENDS DISAGREE'}; "
        f"size {size:,} {'==' if size == statuses.get(200, 0) else '!='} "
        f"{statuses.get(200, 0):,} accepted; {batches:,} batches, "
        f"{size / max(1, batches):.1f} entries per batch"
    )
    lb.log_progress(
        f"{CONFIGS[frontends]}: {run.rate:,.0f} entries/s, p99 {run.p99_ms:,.0f} ms, "
        f"load {m0.load1:.2f} -> {m1.load1:.2f}"
    )
    return run


def bare_rate(reps: int) -> float:
    """`ledger_bench`'s bare single-core Ed25519 verification rate (the machine's floor)."""
    report = lb.Report()
    lb.bench_bare(argparse.Namespace(reps=reps), report)
    (rate,) = [r.value for r in report.rows if r.key == "bare/ed25519"]  # not the CPU row
    return rate


def median_range(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """`median (min..max)` of repeated runs, or the single value."""
    med = fmt.format(statistics.median(values))
    if len(values) < 2:
        return med
    return f"{med} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def print_table(runs: list[Run], bare: float, args: argparse.Namespace) -> None:
    """One row per config (medians over runs, range in brackets), ratios to the one-frontend
    row and to bare Ed25519."""
    by: dict[int, list[Run]] = {}
    for r in runs:
        by.setdefault(r.frontends, []).append(r)
    one = statistics.median(r.rate for r in by[1])
    print(
        f"\n{args.clients} clients, one envelope per request, PostgreSQL; "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s window; runs per config: "
        f"{len(by[1])}; {os.cpu_count()} cores, {lb.cpu_model()}"
    )
    head = (
        "| config | entries/s | vs one frontend | vs bare Ed25519 | p50 ms | p99 ms "
        "| frontend CPU (cores, each) | postgres CPU | load generator CPU | machine CPU "
        "| load avg (1 min) before..after |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for k, rs in sorted(by.items()):
        rate = statistics.median(r.rate for r in rs)
        each = " + ".join(
            f"{statistics.median(r.frontend_cpu[i] for r in rs):.2f}" for i in range(k)
        )
        loads = "; ".join(f"{r.loadavg[0]:.2f}..{r.loadavg[1]:.2f}" for r in rs)
        print(
            f"| {CONFIGS[k]} | {median_range([r.rate for r in rs])} | {rate / one:.2f}x "
            f"| {rate / bare:.3f}x | {median_range([r.p50_ms for r in rs])} "
            f"| {median_range([r.p99_ms for r in rs])} | {each} "
            f"| {statistics.median(r.postgres_cpu for r in rs):.2f} "
            f"| {statistics.median(r.client_cpu for r in rs):.2f} "
            f"| {statistics.median(r.machine_cpu for r in rs):.2f} | {loads} |"
        )
    print(f"| bare Ed25519 verify, one core | {bare:,.0f} | | 1.000x | | | | | | | |")
    print()
    for r in runs:
        for c in r.checks:
            print(f"check: {c}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--pg", default=lb.DEFAULT_PG, help="PostgreSQL server (a fresh database per run)"
    )
    p.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients (64)")
    p.add_argument("--reps", type=int, help="runs of each config, alternating (2)")
    p.add_argument("--warmup", type=float, help="seconds of load before the window (3)")
    p.add_argument("--seconds", type=float, help="measurement window (15)")
    p.add_argument("--rate-cap", type=float, default=3000.0, help="envelopes pre-signed per s")
    p.add_argument("--quick", action="store_true", help="1 run each, 1 s warm-up, 5 s window")
    p.add_argument("--json", action="store_true", help="also print every run as JSON")
    args = p.parse_args(argv)
    quick = {"reps": 1, "warmup": 1.0, "seconds": 5.0}
    full = {"reps": 2, "warmup": 3.0, "seconds": 15.0}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    why = lb.pg_reachable(args.pg)
    if why is not None:
        print(f"PostgreSQL at {args.pg} is unreachable: {why}", file=sys.stderr)
        return 2
    key = generate_private_key()
    count = int(args.rate_cap * (args.warmup + args.seconds))
    t0 = time.perf_counter()
    bodies = lb.signed_bodies(count, "bench-client", key)
    lb.log_progress(f"pre-signed {count:,} envelopes in {time.perf_counter() - t0:.1f} s")
    bare = bare_rate(3)
    order = [1, 2, 2, 1] * ((args.reps + 1) // 2)
    order = order[: 2 * args.reps]
    runs = [measure(k, args, key, bodies) for k in order]
    print_table(runs, bare, args)
    if args.json:
        print(json.dumps({"bare_ed25519": bare, "runs": [asdict(r) for r in runs]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
