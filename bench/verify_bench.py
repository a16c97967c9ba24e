"""What an audit node's work costs, against bare Ed25519 and pymerkle, measured in one run.

    python bench/verify_bench.py                  # full run (about 5 minutes on 2 cores)
    python bench/verify_bench.py --quick --json   # smoke run
    python bench/verify_bench.py --sections audit # the audit alone (serial and parallel)

Sections:

* ``audit``: an evidence log of real signed statements (an operator root registers a lab, the
  lab certifies a worker, then N field reports signed by the worker), built in process on
  SQLite (temp file, ``synchronous`` OFF for building). Timed: (a) the tree recompute from
  the store's tiles and entry bundles (`attest.audit.audit_tree`), (b) re-validation of every
  entry in order with the auditor's pure `validate_entry` and a `KeyChain` (envelope, statement,
  anti-backdating, signature, key chain), (c) both; (d) the same re-validation with
  `verifier.parallel` (signatures on ``--workers`` worker processes, the key chain replayed in
  order by the parent; each worker count in turn, worker start-up timed apart), (e) (a) + (d) at
  the most workers. Peers: the same N Ed25519 verifications done bare on one core with
  `cryptography` (the issue's peer) and with libsodium (PyNaCl, the verifier (d) accepts with).
* ``consistency``: a log of 2,000,000 small raw entries (`Sequencer.integrate`, batches of
  4096, no admission rule); for sizes growing from 1M to 2M in ``--steps`` steps, the latency of
  `Log.consistency_proof(old, new)` and of `merkle.verify_consistency`. Peer: pymerkle's
  `InmemoryTree` on the same entries, if it can be grown to 2M within ``--peer-seconds``.

The ratio column is ours / the peer's: above 1 is better for a rate, below 1 for a latency.
Nothing here asserts on time: it measures and prints.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pymerkle  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open

from attest import merkle
from attest.audit import audit_tree
from attest.dsse import Envelope, TrustedKey, pae
from attest.keychain import KeyChain
from attest.keys import generate_private_key, public_key_bytes, verifier_key
from attest.note import Ed25519NoteSigner
from attest.predicates import CheckpointRef, FieldReport, KeyEvent, ModelId
from attest.statement import sign_statement
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store
from verifier.auditor import validate_entry
from verifier.parallel import ParallelChecker, ReplayMemo, default_workers, validate_entries

ORIGIN = "bench.invalid/logs/verify"
NOW = 1_800_000_000
BATCH = 4096
Signer = tuple[str, Ed25519PrivateKey]


@dataclass
class Row:
    """One measured number, with the peer figure it is compared with (if any)."""

    section: str
    metric: str
    value: float
    unit: str
    peer: float | None = None
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        """Ours over the peer's."""
        return None if not self.peer else self.value / self.peer


def progress(msg: str) -> None:
    """A timestamped progress line on stderr-like stdout (flushed)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank `q`-th percentile of `values`."""
    s = sorted(values)
    rank = max(1, -(-len(s) * q // 100))
    return s[int(rank) - 1]


def new_log(tmp: Path, name: str) -> tuple[Store, Log, Sequencer]:
    """A fresh SQLite store (synchronous OFF: building, not measuring writes) with one log."""
    store = Store(f"sqlite:///{tmp / name}", synchronous="OFF")
    store.migrate()
    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer)
    row = store.create_log("bench", ORIGIN, "evidence", signer.vkey, empty)
    log = Log(store, row)
    return store, log, Sequencer(log, signer, batch_size=BATCH)


def integrate_all(seq: Sequencer, entries: Sequence[bytes]) -> None:
    """Integrate `entries` in batches of `BATCH`."""
    for i in range(0, len(entries), BATCH):
        seq.integrate(entries[i : i + BATCH])


# -- 1. full audit ----------------------------------------------------------------------------


def seen(log: Log) -> dict[str, Any]:
    """The seen-checkpoint fields of a statement made now against `log`."""
    head = log.head()
    cp = CheckpointRef(origin=ORIGIN, size=head.size, root=head.root.hex())
    return {"seen_checkpoint": cp, "issued_at": NOW}


def bench_audit(
    n: int, workers: Sequence[int], tmp: Path, rows: list[Row], notes: list[str]
) -> None:
    """Section 1: tree recompute and entry re-validation over a log of `n` signed reports."""
    store, log, seq = new_log(tmp, "audit.db")
    try:
        operator: Signer = ("operator", generate_private_key())
        lab: Signer = ("lab", generate_private_key())
        worker: Signer = ("worker", generate_private_key())
        lab_v = verifier_key(lab[0], lab[1].public_key())
        worker_v = verifier_key(worker[0], worker[1].public_key())
        ev = KeyEvent(action="register", role="lab", key=lab_v, **seen(log))
        seq.integrate([sign_statement(ev, [operator]).canonical_bytes()])
        ev = KeyEvent(action="register", role="worker", key=worker_v, **seen(log))
        seq.integrate([sign_statement(ev, [lab, worker]).canonical_bytes()])
        key_events = log.head().size
        t0 = time.perf_counter()
        ctx = seen(log)
        model = ModelId(name="m", version="1")
        reports = [
            sign_statement(
                FieldReport(model=model, category="grief", tier="anonymous", text=f"r{i}", **ctx),
                [worker],
            ).canonical_bytes()
            for i in range(n)
        ]
        sign_s = time.perf_counter() - t0
        progress(f"audit: signed {n:,} reports in {sign_s:.1f} s")
        integrate_all(seq, reports)
        head = log.head()
        size = head.size
        if size != key_events + n:
            raise RuntimeError(f"log holds {size} entries, want {key_events + n}")
        progress(f"audit: log of {size:,} entries built")
        entries = [log.entry(i) for i in range(key_events)] + reports
        avg = sum(map(len, reports)) // max(1, n)

        # (a) tree recompute: every tile and bundle read from the store, leaves rehashed.
        t0 = time.perf_counter()
        audit_tree(
            size, head.root, lambda t, w: log.tile(t, size), lambda i, w: log.bundle(i, size)
        )
        tree_s = time.perf_counter() - t0
        progress(f"audit: tree recompute {size / tree_s:,.0f} entries/s")

        # (b) re-validate every entry in order, as the node does after the tree check.
        op_pub = operator[1].public_key()
        chain = KeyChain([public_key_bytes(op_pub)], [])
        fixed = [TrustedKey.named(operator[0], op_pub)]
        roots: dict[int, bytes] = {}

        def root_at(s: int) -> bytes:
            if s not in roots:
                roots[s] = log.root(s)
            return roots[s]

        t0 = time.perf_counter()
        for i, e in enumerate(entries):
            validate_entry(i, e, ORIGIN, chain, fixed, root_at)
        val_s = time.perf_counter() - t0
        progress(f"audit: re-validation {size / val_s:,.0f} entries/s")

        # Peer: the same signatures verified bare (one per entry; key events carry 1 and 2).
        jobs: list[tuple[Any, bytes, bytes]] = []
        pubs = {
            TrustedKey.named(nm, k.public_key()).keyid: k.public_key()
            for nm, k in (operator, lab, worker)
        }
        for e in entries:
            env = Envelope.from_json(e)
            msg = pae(env.payload_type, env.payload)
            jobs.extend((pubs[s.keyid], s.sig, msg) for s in env.signatures)
        t0, c0 = time.perf_counter(), time.process_time()
        for pub, sig, msg in jobs:
            pub.verify(sig, msg)
        bare_s = time.perf_counter() - t0
        bare_cpu = (time.process_time() - c0) / size  # CPU seconds per entry
        bare = size / bare_s  # entries whose signatures alone are checked per second
        progress(f"audit: bare Ed25519 {len(jobs) / bare_s:,.0f} verifications/s")

        # Peer 2: the same verifications bare with libsodium, which (d) accepts signatures with.
        raws = [(pub.public_bytes_raw(), sig, msg) for pub, sig, msg in jobs]
        t0, c0 = time.perf_counter(), time.process_time()
        for raw, sig, msg in raws:
            crypto_sign_open(sig + msg, raw)
        sodium_s = time.perf_counter() - t0
        sodium_cpu = (time.process_time() - c0) / size
        sodium = size / sodium_s
        progress(f"audit: bare Ed25519 (libsodium) {len(jobs) / sodium_s:,.0f} verifications/s")

        # (d) the parallel audit: the same entries, chain and roots, with each worker count.
        parallel: list[tuple[int, float, float, ReplayMemo, tuple[float, float, float], float]] = []
        for w in workers:
            checker = ParallelChecker(w)
            try:
                t0 = time.perf_counter()
                checker.start()
                start_s = time.perf_counter() - t0
                chain = KeyChain([public_key_bytes(op_pub)], [])
                load = os.getloadavg()
                t0, c0 = time.perf_counter(), time.process_time()
                memo = validate_entries(0, entries, ORIGIN, chain, fixed, root_at, checker)
                par_s = time.perf_counter() - t0
                parent_cpu = time.process_time() - c0
            finally:
                checker.close()
            parallel.append((w, start_s, par_s, memo, load, parent_cpu))
            progress(f"audit: parallel, {w} worker(s): {size / par_s:,.0f} entries/s")

        cfg = f"{size:,} entries ({key_events} key events + {n:,} FieldReports, ~{avg} B each)"
        rows.append(
            Row(
                "audit",
                "(a) tree recompute (audit_tree, tiles + bundles from SQLite)",
                size / tree_s,
                "entries/s",
                notes=f"{cfg}; {tree_s:.2f} s",
            )
        )
        rows.append(
            Row(
                "audit",
                "(b) entry re-validation (validate_entry + KeyChain)",
                size / val_s,
                "entries/s",
                bare,
                f"{val_s:.2f} s; peer = the same {len(jobs):,} signatures verified bare",
            )
        )
        rows.append(
            Row(
                "audit",
                "(c) full audit = (a) + (b)",
                size / (tree_s + val_s),
                "entries/s",
                bare,
                f"{tree_s + val_s:.2f} s, run one after the other",
            )
        )
        for w, start_s, par_s, memo, load, _ in parallel:
            rows.append(
                Row(
                    "audit",
                    f"(d) parallel re-validation, {w} worker(s) (verifier.parallel)",
                    size / par_s,
                    "entries/s",
                    bare,
                    f"{par_s:.2f} s (+ {start_s:.2f} s worker start-up, not counted); "
                    f"{memo.fast:,} fast, {memo.serial:,} serial; "
                    f"{size / par_s / sodium:.3f} x bare libsodium; "
                    f"load {load[0]:.2f} at its start",
                )
            )
        if parallel:
            # CPU seconds per entry, which the other processes on a busy machine do not change
            # much: the parent's (key scan, ordered replay, pickling) and the workers' (parse,
            # verification; their share of the pool's pickling is not counted).
            _, _, _, memo, _, parent_cpu = parallel[-1]
            cpu = (parent_cpu + memo.worker_cpu) / size
            cores = default_workers()
            rows.append(
                Row(
                    "audit",
                    f"(d) CPU per entry, parallel: parent + workers ({cores} cores projected)",
                    cores / cpu,
                    "entries/s",
                    1 / bare_cpu,
                    f"{parent_cpu / size * 1e6:.1f} + {memo.worker_cpu / size * 1e6:.1f} "
                    f"CPU-us per entry vs bare cryptography {bare_cpu * 1e6:.1f} and libsodium "
                    f"{sodium_cpu * 1e6:.1f} CPU-us; a projection for {cores} idle cores, "
                    "not a measured rate",
                )
            )
            w, start_s, par_s, _, _, _ = parallel[-1]
            rows.append(
                Row(
                    "audit",
                    f"(e) full audit = (a) + (d), {w} worker(s)",
                    size / (tree_s + par_s),
                    "entries/s",
                    bare,
                    f"{tree_s + par_s:.2f} s; {size / (tree_s + par_s) / sodium:.3f} x bare "
                    f"libsodium; with worker start-up {size / (tree_s + par_s + start_s):,.0f}"
                    " entries/s",
                )
            )
        rows.append(
            Row(
                "audit",
                "peer: bare Ed25519 verify (cryptography), per entry",
                bare,
                "entries/s",
                notes=f"{len(jobs) / bare_s:,.0f} verifications/s; PAE precomputed; "
                "the floor for (b)",
            )
        )
        rows.append(
            Row(
                "audit",
                "peer: bare Ed25519 verify (libsodium via PyNaCl), per entry",
                sodium,
                "entries/s",
                notes=f"{len(jobs) / sodium_s:,.0f} verifications/s, one core; the floor for "
                f"(d) per core ({sodium / bare:.2f} x cryptography's)",
            )
        )
        notes.append(
            f"audit: pre-signing {n:,} reports took {sign_s:.1f} s "
            f"({n / sign_s:,.0f} statements/s, untimed in the figures)"
        )
    finally:
        store.close()


# -- 2. consistency proofs --------------------------------------------------------------------


def raw_entries(start: int, count: int) -> list[bytes]:
    """Distinct 32-byte entries."""
    return [
        i.to_bytes(8, "big") + b"verify-bench-raw-entry-" + b"."
        for i in range(start, start + count)
    ]


def bench_consistency(
    total: int, steps: int, peer_budget: float, tmp: Path, rows: list[Row], notes: list[str]
) -> None:
    """Section 2: consistency proof generation and verification from total/2 to total."""
    store, log, seq = new_log(tmp, "consistency.db")
    try:
        t0 = time.perf_counter()
        for i in range(0, total, BATCH):
            seq.integrate(raw_entries(i, min(BATCH, total - i)))
        build_s = time.perf_counter() - t0
        progress(f"consistency: {total:,} leaves integrated in {build_s:.1f} s")
        half = total // 2
        sizes = [half + (total - half) * k // steps for k in range(steps + 1)]
        roots = {s: log.root(s) for s in sizes}  # what the node holds from checkpoints
        gen: list[float] = []
        ver: list[float] = []
        for old, new in itertools.pairwise(sizes):
            t0 = time.perf_counter()
            proof = log.consistency_proof(old, new)
            t1 = time.perf_counter()
            merkle.verify_consistency(old, new, proof.hashes, roots[old], roots[new])
            t2 = time.perf_counter()
            gen.append((t1 - t0) * 1000)
            ver.append((t2 - t1) * 1000)

        peer_gen: list[float] = []
        peer_ver: list[float] = []
        tree = pymerkle.InmemoryTree()
        t0 = time.perf_counter()
        for i in range(0, total, 65536):
            if time.perf_counter() - t0 > peer_budget:
                break
            tree.append_entries(raw_entries(i, min(65536, total - i)))
        fill_s = time.perf_counter() - t0
        if tree.get_size() < total:
            notes.append(
                f"consistency: pymerkle peer skipped: InmemoryTree reached only "
                f"{tree.get_size():,} of {total:,} leaves in the {peer_budget:g} s budget"
            )
        else:
            states = {s: tree.get_root(s) for s in sizes}
            same = sum(states[s] == roots[s] for s in sizes)
            notes.append(
                f"consistency: pymerkle {pymerkle.__version__} InmemoryTree grown to "
                f"{total:,} in {fill_s:.1f} s; its roots match ours at {same}/{len(sizes)} sizes"
            )
            for old, new in itertools.pairwise(sizes):
                t0 = time.perf_counter()
                pp = tree.prove_consistency(old, new)
                t1 = time.perf_counter()
                pymerkle.verify_consistency(states[old], states[new], pp)
                t2 = time.perf_counter()
                peer_gen.append((t1 - t0) * 1000)
                peer_ver.append((t2 - t1) * 1000)
        progress("consistency: done")
        span = f"{half:,} -> {total:,} in {steps} steps of ~{(total - half) // steps:,}"
        for name, ours, peer in (
            ("proof generation (Log.consistency_proof)", gen, peer_gen),
            ("verification (merkle.verify_consistency)", ver, peer_ver),
        ):
            for q in (50, 99):
                rows.append(
                    Row(
                        "consistency",
                        f"{name} p{q}",
                        percentile(ours, q),
                        "ms",
                        percentile(peer, q) if peer else None,
                        f"{span}; n={len(ours)}" + ("" if peer else "; no peer"),
                    )
                )
        notes.append(
            f"consistency: log built at {total / build_s:,.0f} entries/s (32-byte "
            "entries, batches of 4096, SQLite synchronous OFF); proofs are first calls "
            "per size pair (the Log's expanded-tile cache is shared across pairs)"
        )
    finally:
        store.close()


# -- report -----------------------------------------------------------------------------------


def fmt(v: float | None, unit: str) -> str:
    """A value with its unit."""
    if v is None:
        return ""
    return f"{v:,.3f} {unit}" if unit == "ms" else f"{v:,.0f} {unit}"


def table(rows: Sequence[Row]) -> str:
    """The markdown table of `rows`."""
    out = [
        "| section | metric | value | peer | ratio | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.3f}"
        out.append(
            f"| {r.section} | {r.metric} | {fmt(r.value, r.unit)} | "
            f"{fmt(r.peer, r.unit)} | {ratio} | {r.notes} |"
        )
    return "\n".join(out)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run both sections, print the table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--entries", type=int, help="signed reports in the audit log (200,000)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--tree-size", type=int, help="consistency log size (2,000,000)")
    p.add_argument("--steps", type=int, default=64, help="size steps from half to full (64)")
    p.add_argument("--peer-seconds", type=float, default=75.0, help="pymerkle fill budget (75)")
    p.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        help="worker counts for the parallel audit, e.g. 1,2 (1 up to the cores, doubling)",
    )
    p.add_argument(
        "--sections",
        default="audit,consistency",
        help="comma-separated sections to run (audit,consistency)",
    )
    args = p.parse_args(argv)
    n = args.entries or (5_000 if args.quick else 200_000)
    total = args.tree_size or (100_000 if args.quick else 2_000_000)
    sections = set(args.sections.split(","))
    workers = args.workers or [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= default_workers()]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "pymerkle": pymerkle.__version__,
        "load_before": os.getloadavg(),
    }
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as d:
        if "audit" in sections:
            bench_audit(n, workers, Path(d), rows, notes)
        if "consistency" in sections:
            bench_consistency(total, args.steps, args.peer_seconds, Path(d), rows, notes)
    meta["load_after"] = os.getloadavg()
    if args.json:
        out = [{**asdict(r), "ratio": r.ratio} for r in rows]
        print(json.dumps({"meta": meta, "rows": out, "notes": notes}, indent=2))
        return
    print(table(rows))
    print()
    for line in notes:
        print(f"- {line}")
    la, lb = meta["load_before"], meta["load_after"]
    print(
        f"- machine: {meta['nproc']} CPUs, {meta['cpu']}, Python {meta['python']}; "
        f"load average {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} before, "
        f"{lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} after"
    )


if __name__ == "__main__":
    main()
