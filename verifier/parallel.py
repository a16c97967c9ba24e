"""Re-validating many evidence-log entries at once: signatures on every core, the key chain in
order. The serial `verifier.revalidate.validate_entry` stays the reference.

What can be done out of order is what depends on an entry's bytes alone: the envelope and
statement parse (steps 1-2 of `validate_entry`) and whether each signature verifies under a
given public key (the Ed25519 verification). What cannot is everything that depends on the log
before the entry: the root the statement saw (step 3) and which key a keyid names at that index,
and whether that key may make the statement (steps 4-5, the key chain). So:

* **Workers** (processes, `ParallelChecker`) take chunks of entries and, for each, parse it
  with the reference's own calls (`check_entry`: the envelope and statement shortcuts of
  `attest`, each proven to accept only what the full parse accepts; anything they or the parse
  refuse goes to the parent's serial path, which words the refusal) and verify each
  signature under every candidate key its keyid could name anywhere in the batch: the keys the
  chain knows when the batch starts, the keys that key events in the batch register or rotate to
  (`key_event_keys`, read without authorising anything), and the fixed keys (operator roots,
  keys the log admits directly) whose keyid it is. A worker answers compact facts, never a
  verdict: the predicate type, the checkpoint the statement saw, for each signature which
  candidate keys it verifies under, and the statement digest.
* **The parent** (`validate_prechecked`) replays the entries strictly in index order. It accepts
  an entry on the fast path only when the facts show that `validate_entry` would accept it: the
  seen checkpoint is this log's, at most the entry's index, with the log's root at that size;
  the key the chain maps each keyid to *at this index* (then the fixed keys it names, in the
  reference's order) is one the worker found the signature verifies under; no key signs twice;
  and the chain authorised the same predicate type with the same signer set since its state
  last changed (`ReplayMemo`). Anything else — an entry a worker could not prove well-formed, a
  key event or any statement that changes the chain, a continuity statement (citations), a
  signature by a key the chain does not map that keyid to at this index — goes through the
  serial `validate_entry`, which decides and, on a failure, raises the very `EntryInvalid`
  (index, stage, diagnostic) the serial audit raises. So the fast path can only accept what the
  reference accepts; every refusal is the reference's own.

Ed25519: `verify_ed25519` accepts a signature when libsodium (PyNaCl) accepts it and otherwise
asks `cryptography`, whose verdict stands. libsodium's strict verification accepts a subset of
what OpenSSL's RFC 8032 verification accepts (both cofactorless, both require S < L; libsodium
also refuses small-order and non-canonical points), so the answer is always `cryptography`'s,
at libsodium's speed for honest signatures. Without PyNaCl it is `cryptography` alone.

Pure apart from the worker processes.
"""

from __future__ import annotations

import binascii
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attest.admission import EntryAt, libsodium_accepts
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, TrustedKey, pae, read_canonical
from attest.errors import AttestError
from attest.keychain import STATEFUL, KeyChain, vkey_raw
from attest.keys import dsse_keyid, public_key_bytes, public_key_from_bytes
from attest.predicates import FIELD_REPORT, KEY_EVENT, ContinuityStatement, KeyEvent
from attest.statement import Statement, parse_statement, read_field_report
from attest.tiles import MAX_ENTRY_SIZE
from verifier.revalidate import RootAt, validate_entry

__all__ = [
    "DEFAULT_CHUNK",
    "MIN_PARALLEL",
    "ParallelChecker",
    "Prechecked",
    "ReplayMemo",
    "default_workers",
    "key_event_keys",
    "validate_prechecked",
    "verify_ed25519",
]

DEFAULT_CHUNK: Final = 2048
"""Entries per worker task: large enough that pickling and scheduling cost little per entry."""

MIN_PARALLEL: Final = 4096
"""Below this many entries a batch is checked serially: starting workers would cost more."""

SigFacts = tuple[str, dict[bytes, bool], tuple[bytes, ...]]
"""One signature as a worker saw it: its keyid, {candidate raw key: verifies}, and the fixed keys
its keyid names (in the order of `fixed`)."""

Facts = tuple[str, str, int, str, tuple[SigFacts, ...], bytes]
"""One entry as a worker saw it: predicate type, seen checkpoint (origin, size, root hex), its
signatures, and its statement digest (SHA-256 of the PAE message)."""


def default_workers() -> int:
    """Worker processes for an audit: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- Ed25519 ------------------------------------------------------------------------------------

_PUBLIC_KEYS: dict[bytes, Ed25519PublicKey] = {}


def _public_key(raw: bytes) -> Ed25519PublicKey:
    key = _PUBLIC_KEYS.get(raw)
    if key is None:
        if len(_PUBLIC_KEYS) > 4096:
            _PUBLIC_KEYS.clear()
        key = _PUBLIC_KEYS[raw] = public_key_from_bytes(raw)
    return key


def verify_ed25519(raw: bytes, sig: bytes, message: bytes) -> bool:
    """Whether `sig` is `cryptography`'s valid Ed25519 signature of `message` under raw public
    key `raw` (what `attest.admission` checks: 64 bytes, RFC 8032 verification).

    libsodium answers first (`attest.admission.libsodium_accepts`) and only its acceptance is
    taken; a refusal is re-checked with `cryptography`, so the verdict is always
    `cryptography`'s.
    """
    if len(sig) != 64:
        return False
    if libsodium_accepts(raw, sig, message):
        return True
    try:
        _public_key(raw).verify(sig, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- candidate keys -------------------------------------------------------------------------------

_KEY_EVENT_BYTES = KEY_EVENT.encode()
_PAYLOAD_PREFIX = b'{"payload":"'


def key_event_keys(entry: bytes) -> list[tuple[str, bytes]]:
    """(keyid, raw key) of every key a key event in `entry` names, read without authorising
    anything; [] for any other entry (or one that does not parse: it is refused later)."""
    if not entry.startswith(_PAYLOAD_PREFIX):
        return []
    end = entry.find(b'"', len(_PAYLOAD_PREFIX))
    try:
        payload = binascii.a2b_base64(entry[len(_PAYLOAD_PREFIX) : end])
    except binascii.Error:
        return []
    if _KEY_EVENT_BYTES not in payload:
        return []
    try:
        p = parse_statement(payload).predicate
        if not isinstance(p, KeyEvent):
            return []
        out = []
        for vkey in (p.key, p.previous_key):
            if vkey is not None:
                name, raw = vkey_raw(vkey)
                out.append((dsse_keyid(name, public_key_from_bytes(raw)), raw))
        return out
    except (AttestError, ValueError):
        return []


def candidate_keys(chain: KeyChain, entries: Iterable[bytes]) -> dict[str, tuple[bytes, ...]]:
    """keyid -> the raw keys it may name while `entries` are replayed on `chain`: the chain's
    keys now, and those key events among `entries` register or rotate to."""
    out: dict[str, set[bytes]] = {kid: {raw} for kid, raw in chain.by_keyid.items()}
    for entry in entries:
        for kid, raw in key_event_keys(entry):
            out.setdefault(kid, set()).add(raw)
    return {kid: tuple(raws) for kid, raws in out.items()}


# -- the worker -----------------------------------------------------------------------------------

_NAMED: dict[tuple[str, tuple[bytes, ...]], tuple[bytes, ...]] = {}


def _named_by(keyid: str, fixed: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The fixed keys `keyid` names under the name it carries (`attest.admission._named_by`)."""
    got = _NAMED.get((keyid, fixed))
    if got is None:
        name = keyid.rpartition("+")[0]
        try:
            got = tuple(k for k in fixed if dsse_keyid(name, _public_key(k)) == keyid)
        except AttestError:
            got = ()
        if len(_NAMED) > 4096:
            _NAMED.clear()
        _NAMED[(keyid, fixed)] = got
    return got


def check_entry(
    entry: bytes, candidates: dict[str, tuple[bytes, ...]], fixed: tuple[bytes, ...]
) -> Facts | None:
    """The facts of one entry (see `Facts`); None when the parent must validate it serially: it
    may not parse, or it is a statement the chain or citations must see whole.

    Steps 1-2 are the reference's own calls (`attest.admission.admit_statement` with `stored`):
    the entry read by `read_canonical` within the entry size limit, the payload type, then the
    statement. A field report is read without building it (`read_field_report`: None unless
    `parse_statement` would build exactly that report); any other statement is parsed by
    `parse_statement` itself. Whatever these do not accept goes to the serial path, which words
    the refusal.
    """
    env = read_canonical(entry)
    if env is None or len(entry) > MAX_ENTRY_SIZE or env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        return None
    report = read_field_report(env.payload)
    if report is not None:
        predicate_type, origin, size, root = FIELD_REPORT, report.origin, report.size, report.root
    else:
        try:
            stmt = parse_statement(env.payload)
        except Exception:  # refused, or anything unexpected: the serial path decides
            return None
        if isinstance(stmt.predicate, (*STATEFUL, ContinuityStatement)):
            return None
        seen = stmt.predicate.seen_checkpoint
        predicate_type, origin, size, root = stmt.predicate_type, seen.origin, seen.size, seen.root
    message = pae(env.payload_type, env.payload)
    sigs: list[SigFacts] = []
    for s in env.signatures:
        named = _named_by(s.keyid, fixed)
        keys = {*candidates.get(s.keyid, ()), *named}
        sigs.append((s.keyid, {k: verify_ed25519(k, s.sig, message) for k in keys}, named))
    return (predicate_type, origin, size, root, tuple(sigs), hashlib.sha256(message).digest())


def check_chunk(
    entries: list[bytes], candidates: dict[str, tuple[bytes, ...]], fixed: tuple[bytes, ...]
) -> tuple[list[Facts | None], float]:
    """`check_entry` for each of `entries` (a worker task), and the CPU seconds it took."""
    t0 = time.process_time()
    facts = [check_entry(e, candidates, fixed) for e in entries]
    return facts, time.process_time() - t0


def _warm() -> None:
    """Worker start-up: build the pydantic validators once, before the first chunk."""
    Statement.model_json_schema()


# -- the ordered replay ---------------------------------------------------------------------------


@dataclass
class ReplayMemo:
    """What the ordered replay of one chain learned from the reference.

    `authorised`: (predicate type, signer set) pairs the chain authorised for a statement that
    changes no chain state, since the chain last changed. Authorising such a statement depends
    on nothing else (`KeyChain.apply`, rule R6: the signers' current keys, roles and chains), so
    the same pair is authorised again until a chain-changing statement is applied.
    """

    authorised: set[tuple[str, frozenset[bytes]]] = field(default_factory=set)
    fast: int = 0
    serial: int = 0
    worker_cpu: float = 0.0  # CPU seconds the workers spent on the chunks replayed


def validate_prechecked(
    index: int,
    entry: bytes,
    origin: str,
    chain: KeyChain,
    fixed: Sequence[TrustedKey],
    root_at: RootAt | None,
    facts: Facts | None,
    memo: ReplayMemo,
    entry_at: EntryAt | None = None,
) -> tuple[Statement | None, frozenset[bytes], bytes | None]:
    """`verifier.revalidate.validate_entry` for entry `index`, using a worker's `facts` where
    they prove the same outcome (see the module docstring); the same `EntryInvalid` otherwise.

    Returns the statement (None when the fast path accepted: a statement that changes no chain
    state), the raw keys that signed, and the statement digest (None from the serial path).
    """
    if facts is not None:
        signers = _fast(index, origin, chain, root_at, facts, memo)
        if signers is not None:
            memo.fast += 1
            return None, signers, facts[5]
    memo.serial += 1
    stmt, signers = validate_entry(index, entry, origin, chain, fixed, root_at, entry_at)
    if isinstance(stmt.predicate, STATEFUL):
        memo.authorised.clear()  # the chain may have changed: learn again
    else:
        memo.authorised.add((stmt.predicate_type, signers))
    return stmt, signers, None


def _fast(
    index: int,
    origin: str,
    chain: KeyChain,
    root_at: RootAt | None,
    facts: Facts,
    memo: ReplayMemo,
) -> frozenset[bytes] | None:
    """The signer set when `facts` prove `validate_entry` accepts entry `index` now; else None."""
    predicate_type, seen_origin, seen_size, seen_root, sigs, _ = facts
    # (3) anti-backdating (`attest.admission.check_seen`, without `now`).
    if seen_origin != origin or seen_size > index:
        return None
    if root_at is not None:
        root = root_at(seen_size)
        if root is None or root.hex() != seen_root:
            return None
    # (4) `attest.admission.verify_every_signature` over `chain.candidates` and `fixed`: the
    # chain's key for the keyid first, then the fixed keys it names; the first that verifies.
    signed: list[bytes] = []
    for keyid, verified, named in sigs:
        own = chain.by_keyid.get(keyid)
        good = None
        for key in (own, *named) if own is not None else named:
            ok = verified.get(key)
            if ok is None:  # a key the worker did not try: the reference decides
                return None
            if ok:
                good = key
                break
        if good is None or good in signed:
            return None
        signed.append(good)
    signers = frozenset(signed)
    # (5) the chain authorised this type from these signers since it last changed.
    return signers if (predicate_type, signers) in memo.authorised else None


# -- the pool -------------------------------------------------------------------------------------


class Prechecked:
    """Worker facts for a run of consecutive entries, as they come (`get` waits in order)."""

    def __init__(
        self, start: int, chunk: int, futures: list[Future[tuple[list[Facts | None], float]]]
    ) -> None:
        self.start, self.chunk, self._futures = start, chunk, futures
        self._done: dict[int, list[Facts | None]] = {}
        self.worker_cpu = 0.0  # CPU seconds of the chunks received so far

    def get(self, index: int) -> Facts | None:
        """The facts of entry `index` (None: validate it serially)."""
        n, offset = divmod(index - self.start, self.chunk)
        if n < 0 or n >= len(self._futures):
            return None
        got = self._done.get(n)
        if got is None:
            try:
                got, cpu = self._futures[n].result()
            except Exception:  # a worker died or the pool broke: the serial path decides
                got, cpu = [None] * self.chunk, 0.0
            self._done[n] = got
            self._done.pop(n - 1, None)
            self.worker_cpu += cpu
        return got[offset]

    def cancel(self) -> None:
        """Drop the work not started yet (the replay stopped)."""
        for fut in self._futures:
            fut.cancel()


class ParallelChecker:
    """A pool of worker processes (`forkserver`, or `spawn` where there is none) that check
    chunks of entries; started on first use, closed by `close`."""

    def __init__(self, workers: int | None = None, chunk: int = DEFAULT_CHUNK) -> None:
        self.workers = max(1, workers or default_workers())
        self.chunk = chunk
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx: multiprocessing.context.BaseContext
            if "forkserver" in multiprocessing.get_all_start_methods():
                server = multiprocessing.get_context("forkserver")
                # The fork server imports the checks once; each worker forks from it.
                server.set_forkserver_preload([__name__])
                ctx = server
            else:  # pragma: no cover - not POSIX
                ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_warm)
        return self._pool

    @property
    def started(self) -> bool:
        """Whether the workers run (they start on first use)."""
        return self._pool is not None

    def start(self) -> None:
        """Start the workers now (they start on first use otherwise)."""
        pool = self._executor()
        for fut in [pool.submit(_warm) for _ in range(self.workers)]:
            fut.result()

    def precheck(
        self,
        start: int,
        entries: Sequence[bytes],
        chain: KeyChain,
        fixed: Sequence[TrustedKey],
    ) -> Prechecked:
        """Submit entries `start`, `start` + 1, ... for checking, the candidate keys taken from
        `chain` as it is now and from the key events among `entries`."""
        candidates = candidate_keys(chain, entries)
        fixed_raw = tuple(public_key_bytes(k.public_key) for k in fixed)
        chunks = [list(entries[i : i + self.chunk]) for i in range(0, len(entries), self.chunk)]
        try:
            pool = self._executor()
            futures = [pool.submit(check_chunk, c, candidates, fixed_raw) for c in chunks]
        except BrokenProcessPool:  # a worker died earlier: start a new pool
            self.close()
            pool = self._executor()
            futures = [pool.submit(check_chunk, c, candidates, fixed_raw) for c in chunks]
        return Prechecked(start, self.chunk, futures)

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ParallelChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate_entries(
    start: int,
    entries: Sequence[bytes],
    origin: str,
    chain: KeyChain,
    fixed: Sequence[TrustedKey],
    root_at: RootAt | None,
    checker: ParallelChecker | None,
    entry_at: EntryAt | None = None,
    on_entry: Callable[[int, Statement | None, frozenset[bytes], bytes | None], Any] | None = None,
    min_parallel: int = MIN_PARALLEL,
) -> ReplayMemo:
    """Re-validate entries `start`, `start` + 1, ... of an evidence log in order, as
    `validate_entry` would one by one (the same first `EntryInvalid`), with `checker`'s workers
    (None, or fewer than `min_parallel` entries: serially). `on_entry(index, statement or None,
    signers, digest or None)` is called after each entry is accepted."""
    memo = ReplayMemo()
    pre = None
    if checker is not None and len(entries) >= min_parallel:
        pre = checker.precheck(start, entries, chain, fixed)
    try:
        for i, entry in enumerate(entries):
            index = start + i
            facts = None if pre is None else pre.get(index)
            stmt, signers, digest = validate_prechecked(
                index, entry, origin, chain, fixed, root_at, facts, memo, entry_at
            )
            if on_entry is not None:
                on_entry(index, stmt, signers, digest)
    finally:
        if pre is not None:
            pre.cancel()
            memo.worker_cpu = pre.worker_cpu
    return memo
