"""Statement parsing and the admission steps around it, before and after the shortcut, in one run.

    python bench/parse_bench.py            # 2,000 entries, 5 alternating rounds
    python bench/parse_bench.py --quick    # 500 entries, 3 rounds

Entries are `ledger_bench.signed_bodies` (distinct DSSE envelopes of 1 KiB `FieldReport`
statements, the write benches' load), stored as their canonical leaf data. Rows, CPU per entry
(`time.thread_time`, median over rounds; rounds alternate old, new, ... so both see the same
drift in machine load):

* `parse_statement`: old = the implementation before the shortcut (`reference_parse`, kept
  verbatim in `tests/attest/test_statement_shortcut.py` and copied below), new =
  `attest.statement.parse_statement`;
* `admit_statement(stored=True)` (steps 1-3 of every partition, as an audit node re-validates a
  stored entry): old = the previous composition (envelope parsed, canonicalised with `rfc8785`
  twice, old parse), new = `attest.admission.admit_statement`;
* `parse_envelope`: a canonical entry read by `Envelope.from_json` (old) and by
  `attest.admission.parse_envelope` (`attest.dsse.read_canonical` first);
* `canonical_bytes`: a parsed envelope's RFC 8785 bytes by `rfc8785` (old) and by `Envelope`;
* peer: one Ed25519 verification (`cryptography`) of the same entries' PAE messages.

Before timing, every entry's old and new answers are checked equal. Nothing asserts on time; it
prints a table with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import ledger_bench  # bench/ is on sys.path when this file runs as a script
from pydantic import ValidationError

from attest.admission import admit_statement, check_seen, parse_envelope
from attest.dsse import Envelope, pae
from attest.errors import CanonicalizationError, StatementError
from attest.jcs import canonical_loads, canonicalize
from attest.keys import generate_private_key
from attest.predicates import PREDICATE_TYPES
from attest.statement import Statement, _diagnostic, parse_statement, statement_bytes


def reference_parse(payload: bytes) -> Statement:
    """`parse_statement` before the shortcut, verbatim."""
    obj = canonical_loads(payload)
    if not isinstance(obj, dict):
        raise StatementError("statement is not a JSON object")
    predicate_type = obj.get("predicateType")
    if not isinstance(predicate_type, str) or predicate_type not in PREDICATE_TYPES:
        raise StatementError(f"unknown predicateType {str(predicate_type)[:200]!r}")
    predicate = obj.get("predicate")
    if isinstance(predicate, dict):
        try:
            PREDICATE_TYPES[predicate_type].model_validate_json(canonicalize(predicate))
        except ValidationError as exc:
            raise StatementError(_diagnostic(exc, prefix=("predicate",))) from exc
    try:
        stmt = Statement.model_validate_json(payload)
    except ValidationError as exc:
        raise StatementError(_diagnostic(exc)) from exc
    if statement_bytes(stmt) != payload:
        raise CanonicalizationError("statement payload is not in RFC 8785 canonical form")
    return stmt


def reference_admit(data: bytes, origin: str) -> tuple[Envelope, bytes, Statement]:
    """`admit_statement(data, origin, None, stored=True)` before: the envelope canonicalised by
    `rfc8785` twice (once to compare with the entry, once for the leaf data), the old parse."""
    env = parse_envelope(data)
    if canonicalize(env.to_json()) != data:
        raise AssertionError("not canonical")
    leaf = canonicalize(env.to_json())
    stmt = reference_parse(env.payload)
    check_seen(stmt, origin, None)
    return env, leaf, stmt


def per_item(fn: Callable[[Any], object], items: Sequence[object]) -> float:
    """CPU microseconds per item of `fn` over `items`."""
    t0 = time.thread_time()
    for item in items:
        fn(item)
    return (time.thread_time() - t0) / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    count, rounds = (500, 3) if args.quick else (2_000, 5)
    load_before = os.getloadavg()

    key = generate_private_key()
    bodies = ledger_bench.signed_bodies(count, "bench-client", key)
    entries = [Envelope.from_json(b).canonical_bytes() for b in bodies]
    envs = [Envelope.from_json(e) for e in entries]
    payloads = [e.payload for e in envs]
    origin = reference_parse(payloads[0]).predicate.seen_checkpoint.origin
    messages = [(pae(e.payload_type, e.payload), e.signatures[0].sig) for e in envs]
    pub = key.public_key()

    for entry, env in zip(entries, envs, strict=True):  # same answers before any timing
        assert parse_statement(env.payload) == reference_parse(env.payload)
        assert admit_statement(entry, origin, None, stored=True) == reference_admit(entry, origin)
        assert env.canonical_bytes() == canonicalize(env.to_json()) == entry

    def verify(i: bytes) -> None:
        m, s = messages[int.from_bytes(i[:4], "big") % len(messages)]
        pub.verify(s, m)

    indexes = [n.to_bytes(4, "big") for n in range(count)]
    rows: list[tuple[str, Callable[[Any], object], Callable[[Any], object], Sequence[object]]] = [
        ("parse_statement", reference_parse, parse_statement, payloads),
        (
            "admit_statement(stored=True)",
            lambda d: reference_admit(d, origin),
            lambda d: admit_statement(d, origin, None, stored=True),
            entries,
        ),
        ("parse_envelope (canonical entry)", Envelope.from_json, parse_envelope, entries),
        (
            "Envelope.canonical_bytes",
            lambda e: canonicalize(e.to_json()),
            lambda e: e.canonical_bytes(),
            envs,
        ),
    ]
    results: dict[str, tuple[list[float], list[float]]] = {r[0]: ([], []) for r in rows}
    peer: list[float] = []
    for _ in range(rounds):
        for name, old, new, items in rows:
            results[name][0].append(per_item(old, items))
            results[name][1].append(per_item(new, items))
        peer.append(per_item(verify, indexes))
    load_after = os.getloadavg()

    verify_us = statistics.median(peer)
    print(f"n={count} entries (1 KiB FieldReport statements), {rounds} rounds, median CPU µs/entry")
    print(
        f"{'step':32} {'old µs':>8} {'new µs':>8} {'new/old':>8} "
        f"{'old/verify':>10} {'new/verify':>10}"
    )
    for name, (olds, news) in results.items():
        o, n = statistics.median(olds), statistics.median(news)
        print(
            f"{name:32} {o:8.1f} {n:8.1f} {n / o:8.2f} {o / verify_us:10.2f} {n / verify_us:10.2f}"
        )
    print(f"{'peer: Ed25519 verify (OpenSSL)':32} {verify_us:8.1f}")
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f}"
    )


if __name__ == "__main__":
    main()
