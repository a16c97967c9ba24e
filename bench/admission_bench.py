"""CPU per entry of phase 1 of the evidence log's batch route, against bare Ed25519 verification.

What one admission worker does for each envelope of ``POST /logs/evidence/entries/batch``,
timed on the bodies the batch benchmark posts (`bench/ledger_bench.py`: 1 KiB field reports,
one signature by a key the log allows directly, each envelope spelled as `json.dumps` writes
it), next to what verifying that one signature costs alone (`cryptography`, and libsodium where
PyNaCl is installed). Two admissions: ``admit``, `ledger.admission.admit_batch_entry` with the
evidence rule as the serving process calls it (no workers); ``worker``, the worker's own task
(`ledger.admitters._admit_entries`, 128 entries a task) and the pickling of its answer, which
the pool sends back.

Each source tree (``--tree``, default this one; give two to compare, e.g. a `git worktree` of an
earlier commit) runs in its own process; the parent alternates rounds between them so that every
pair of rounds sees the same machine load, and reports per-entry CPU time (the worker's
`time.process_time`) as the median over rounds, with each tree's ratio to the first tree's in
the same pair of rounds. Run it on a quiet machine for absolute numbers; the paired ratios hold
on a busy one.

    .venv/bin/python bench/admission_bench.py --tree /tmp/wt-old --tree . --rounds 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import SimpleNamespace

TASK = 128  # entries per worker task (a 256-entry batch request over 2 workers)
HERE = Path(__file__).resolve().parent.parent


# -- the worker: one source tree, one process ---------------------------------------------------


def worker(count: int) -> None:  # pragma: no cover - runs in a child process
    """Build the rule and the bodies, then answer ``<what> <n>`` lines with CPU µs per call."""
    # From this file's directory (sys.path[0]), not the tree's, so that every tree is timed on
    # the same bodies; its own imports of attest and ledger find the tree's (PYTHONPATH).
    import ledger_bench

    from attest import merkle
    from attest.dsse import Envelope, TrustedKey, pae, read_json
    from attest.keys import generate_private_key
    from attest.note import Ed25519NoteSigner
    from ledger import admitters
    from ledger.admission import Admitted, EvidenceRule, admit_batch_entry
    from ledger.sequencer import signed_head
    from ledger.storage import Store

    origin = ledger_bench.HTTP_ORIGIN  # the log the bodies' reports have seen
    tmp = Path(tempfile.mkdtemp(prefix="admission-bench-"))
    store = Store(f"sqlite:///{tmp / 'ledger.db'}")
    store.migrate()
    signer = Ed25519NoteSigner(origin, generate_private_key())
    row = store.create_log(
        "evidence",
        origin,
        "evidence",
        signer.vkey,
        signed_head(origin, 0, merkle.EMPTY_ROOT, signer),
    )
    key = generate_private_key()
    rule = EvidenceRule(
        store, row.id, origin, allowed=[TrustedKey.named("bench-client", key.public_key())]
    )
    bodies = ledger_bench.signed_bodies(count, "bench-client", key)
    envs = [Envelope.from_json(b) for b in bodies]
    for b in bodies:  # every body is admitted, by the fast path the batch route takes
        got = admit_batch_entry(rule, b)
        assert isinstance(got, Admitted), got
        assert read_json(b) is not None
    public = key.public_key()
    raw = public.public_bytes_raw()
    signed = [(e.signatures[0].sig, pae(e.payload_type, e.payload)) for e in envs]
    sodium_open: Callable[[bytes, bytes], bytes] | None
    try:
        from nacl.bindings import crypto_sign_open as sodium_open
    except ImportError:
        sodium_open = None

    admitters._RULES = SimpleNamespace(rule_of=lambda log: rule)  # what `_init` builds
    tasks = [bodies[i : i + TASK] for i in range(0, count, TASK)]

    def run(what: str, n: int) -> float:
        i = 0
        t0 = time.process_time()
        if what == "admit":
            for _ in range(n):
                admit_batch_entry(rule, bodies[i])
                i = (i + 1) % count
        elif what == "worker":
            done = 0
            while done < n:
                task = tasks[i]
                ForkingPickler.dumps(admitters._admit_entries("evidence", task))
                done += len(task)
                i = (i + 1) % len(tasks)
            n = done
        elif what == "verify":
            for _ in range(n):
                sig, msg = signed[i]
                public.verify(sig, msg)
                i = (i + 1) % count
        elif what == "sodium" and sodium_open is not None:
            for _ in range(n):
                sig, msg = signed[i]
                sodium_open(sig + msg, raw)
                i = (i + 1) % count
        else:
            return float("nan")
        return (time.process_time() - t0) / n * 1e6

    print("ready", flush=True)
    for line in sys.stdin:
        what, n = line.split()
        print(f"{run(what, int(n)):.3f}", flush=True)


# -- the parent: alternate rounds between the trees --------------------------------------------


class Tree:
    def __init__(self, root: Path, count: int) -> None:
        self.root = root
        env = dict(os.environ, PYTHONPATH=str(root))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--count", str(count)],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"worker for {root} did not start")

    def ask(self, what: str, n: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{what} {n}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tree", action="append", type=Path, help="source tree (repeat to compare)")
    p.add_argument("--rounds", type=int, default=11, help="rounds per tree (default 11)")
    p.add_argument("--entries", type=int, default=2000, help="admissions per round (default 2000)")
    p.add_argument("--count", type=int, default=500, help="distinct envelopes (default 500)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.count)
        return
    roots = [r.resolve() for r in (args.tree or [HERE])]
    trees = [Tree(r, args.count) for r in roots]
    what = ("admit", "worker", "verify", "sodium")
    times: dict[tuple[int, str], list[float]] = {}
    try:
        for t in trees:  # warm-up round, not counted
            for w in what:
                t.ask(w, args.entries // 4)
        for r in range(args.rounds):
            order = trees if r % 2 == 0 else trees[::-1]  # no tree always goes first
            for t in order:
                for w in what:
                    times.setdefault((trees.index(t), w), []).append(t.ask(w, args.entries))
    finally:
        for t in trees:
            t.close()
    print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{args.rounds} rounds x {args.entries} entries, CPU µs per entry (median, min..max)\n")
    head = f"{'tree':<28} {'what':<8} {'µs/entry':>9} {'min..max':>16} {'vs tree 1':>10}"
    print(head)
    print("-" * len(head))
    for i, root in enumerate(roots):
        for w in what:
            xs = times[(i, w)]
            if any(x != x for x in xs):
                continue
            ratio = statistics.median(a / b for a, b in zip(xs, times[(0, w)], strict=True))
            span = f"{min(xs):.1f}..{max(xs):.1f}"
            print(
                f"{str(root)[-28:]:<28} {w:<8} {statistics.median(xs):9.1f} {span:>16} "
                f"{ratio:9.3f}x"
            )
    print()
    for i, root in enumerate(roots):
        ver = times[(i, "verify")]
        for w in ("admit", "worker"):
            per = statistics.median(a / v for a, v in zip(times[(i, w)], ver, strict=True))
            print(f"{str(root)[-28:]:<28} {w} / bare cryptography verify (paired): {per:.2f}x")


if __name__ == "__main__":
    main()
