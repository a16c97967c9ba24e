"""Admission rules: what each log accepts, and the leaf bytes it stores for it.

A rule works in two phases:

* `admit(body)`, in the request handler, without locks: parse the DSSE envelope and its
  statement, check the statement's anti-backdating fields, verify the signatures. Returns an
  `Admitted` (the canonical leaf bytes plus what was verified) or raises `AdmissionError`.
* `begin(txn)`, in the sequencer, under the log's lock: a `BatchCheck` that decides, entry by
  entry in index order, whether the statement is authorised *at its index* (key chains), so a
  revocation at index r binds every entry after r, whichever process sequences it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, TrustedKey, verify_envelope
from attest.errors import AttestError
from attest.statement import Statement, parse_statement
from ledger.keychain import STATEFUL, KeyChain, KeyChainError
from ledger.storage import KeyEventRow, StorageError, Store, WriteTxn
from ledger.tiles import MAX_ENTRY_SIZE

DEFAULT_SKEW = 300  # seconds a statement's issued_at may lie ahead of the log's clock


class AdmissionError(Exception):
    """The log refuses an entry. `status` (and `headers`) are what the API answers with."""

    def __init__(
        self, status: int, error: str, diagnostic: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(diagnostic)
        self.status, self.error, self.diagnostic = status, error, diagnostic
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Admitted:
    """An entry that passed the stateless checks: leaf bytes, statement, verified signers."""

    leaf: bytes
    statement: Statement | None = None
    payload: bytes = b""
    signers: frozenset[bytes] = frozenset()


class BatchCheck(Protocol):
    """Stateful admission inside one sequencing transaction."""

    def apply(self, index: int, entry: Admitted) -> None:
        """Authorise `entry` at `index` (raise AdmissionError), updating the batch's state."""
        ...

    def key_events(self) -> list[KeyEventRow]:
        """Rows the batch must store with its entries."""
        ...

    def commit(self, size: int) -> None:
        """Called once the transaction committed at tree size `size`."""
        ...


class AdmissionRule(Protocol):
    """Decides whether a log admits a request body."""

    partition: str

    def admit(self, body: bytes, authorization: str | None = None) -> Admitted:
        """Stateless checks (`authorization`: the request's Authorization header); raise
        AdmissionError."""
        ...

    def begin(self, txn: WriteTxn) -> BatchCheck:
        """Start the stateful checks of one batch, under the sequencer lock."""
        ...


def parse_envelope(body: bytes) -> Envelope:
    """Parse a posted DSSE envelope, mapping every parse failure to a 400."""
    try:
        return Envelope.from_json(body)
    except AttestError as e:
        raise AdmissionError(400, "malformed_envelope", e.diagnostic) from e


def leaf_data(env: Envelope) -> bytes:
    """The canonical bytes the log stores, checked against the tiles' 64 KiB entry limit."""
    data = env.canonical_bytes()
    if len(data) > MAX_ENTRY_SIZE:
        raise AdmissionError(
            413,
            "entry_too_large",
            f"canonical entry is {len(data)} bytes; entries are at most {MAX_ENTRY_SIZE}",
        )
    return data


def parse_payload(env: Envelope) -> Statement:
    """The envelope's in-toto statement, strictly parsed (400 when it is not one of ours)."""
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise AdmissionError(
            400, "wrong_payload_type", f"payloadType must be {IN_TOTO_PAYLOAD_TYPE!r}"
        )
    try:
        return parse_statement(env.payload)
    except AttestError as e:
        raise AdmissionError(400, "invalid_statement", e.diagnostic) from e


class EvidenceRule:
    """The evidence log: statements authorised by the key chain at their index.

    Operator root keys register labs; labs certify workers, issuers and witnesses; keys the
    operator allows directly (`--allow-key`) may sign any statement but key events.
    """

    partition = "evidence"

    def __init__(
        self,
        store: Store,
        log_id: int,
        origin: str,
        *,
        roots: Sequence[TrustedKey] = (),
        allowed: Sequence[TrustedKey] = (),
        clock: Callable[[], float] = time.time,
        skew: int = DEFAULT_SKEW,
    ) -> None:
        self.store, self.log_id, self.origin = store, log_id, origin
        self.fixed = [*roots, *allowed]
        self.clock, self.skew = clock, skew
        self._chain = KeyChain((k.raw() for k in roots), (k.raw() for k in allowed))
        self._lock = threading.Lock()
        self.refresh()

    @property
    def chain(self) -> KeyChain:
        """The key chain as of the last batch this process saw."""
        with self._lock:
            return self._chain

    def refresh(self) -> None:
        """Catch up with key events another process (or a previous run) sequenced."""
        head = self.store.head(self.log_id)
        chain = self.chain
        rows = self.store.key_events(self.log_id, chain.size)
        self._adopt(_replayed(chain, rows, head.size))

    def _adopt(self, chain: KeyChain) -> None:
        with self._lock:
            if chain.size >= self._chain.size:
                self._chain = chain

    # (phase 1) ----------------------------------------------------------------------------

    def admit(self, body: bytes, authorization: str | None = None) -> Admitted:
        """Parse, check anti-backdating and verify signatures against the known keys."""
        env = parse_envelope(body)
        leaf = leaf_data(env)
        stmt = parse_payload(env)
        check_seen(self.store, self.log_id, self.origin, stmt, int(self.clock()), self.skew)
        try:
            keys = self._verify(env, stmt)
        except AttestError:
            self.refresh()  # a key registered through another process since our last batch
            try:
                keys = self._verify(env, stmt)
            except AttestError as e:
                raise AdmissionError(403, "untrusted_signature", e.diagnostic) from e
        return Admitted(leaf, stmt, env.payload, frozenset(k.raw() for k in keys))

    def _verify(self, env: Envelope, stmt: Statement) -> list[TrustedKey]:
        return verify_signers(env, stmt, self.chain, self.fixed)

    # (phase 2) ----------------------------------------------------------------------------

    def begin(self, txn: WriteTxn) -> BatchCheck:
        """Bring the chain up to the head this transaction locked, and check a batch on a copy."""
        chain = self.chain
        if chain.size != txn.head.size:
            chain = _replayed(chain, txn.key_events(chain.size), txn.head.size)
        return _EvidenceBatch(self, chain.copy())


class NoBatchState:
    """The batch check of a rule whose decisions do not depend on the entry's index."""

    def apply(self, index: int, entry: Admitted) -> None:
        """Nothing to decide at this point."""

    def key_events(self) -> list[KeyEventRow]:
        """No rows to store."""
        return []

    def commit(self, size: int) -> None:
        """No state to adopt."""


class _EvidenceBatch:
    def __init__(self, rule: EvidenceRule, chain: KeyChain) -> None:
        self.rule, self.chain = rule, chain
        self.rows: list[KeyEventRow] = []

    def apply(self, index: int, entry: Admitted) -> None:
        if entry.statement is None:
            raise AdmissionError(400, "invalid_statement", "the evidence log stores statements")
        try:
            self.chain.apply(index, entry.statement, entry.signers)
        except KeyChainError as e:
            raise AdmissionError(403, "not_authorised", e.diagnostic) from e
        if isinstance(entry.statement.predicate, STATEFUL):
            self.rows.append(KeyEventRow(index, entry.payload, entry.signers))

    def key_events(self) -> list[KeyEventRow]:
        return self.rows

    def commit(self, size: int) -> None:
        self.chain.size = size
        self.rule._adopt(self.chain)


def check_seen(
    store: Store, log_id: int, origin: str, stmt: Statement, now: int, skew: int
) -> None:
    """Anti-backdating: a checkpoint this log published, and no claim from the future."""
    p = stmt.predicate
    seen = p.seen_checkpoint
    if seen.origin != origin:
        raise AdmissionError(
            400,
            "unknown_checkpoint",
            f"statement saw a checkpoint of {seen.origin!r}, not of this log ({origin!r})",
        )
    root = store.published_root(log_id, seen.size)
    if root is None or root.hex() != seen.root:
        raise AdmissionError(
            400,
            "unknown_checkpoint",
            f"this log never published a checkpoint of size {seen.size} with root {seen.root}",
        )
    if p.issued_at > now + skew:
        raise AdmissionError(
            400,
            "future_statement",
            f"issuedAt {p.issued_at} lies {p.issued_at - now} s in the future "
            f"(allowed skew {skew} s)",
        )


def verify_signers(
    env: Envelope, stmt: Statement, chain: KeyChain, fixed: Sequence[TrustedKey] = ()
) -> list[TrustedKey]:
    """The keys whose signatures on `env` verify: keys the chain knows by the envelope's keyids,
    a key event's own keys (proof of possession), and `fixed` keys (roots, allowed keys).

    Pure: auditors replaying the log call it with their own chain. Raises AttestError when no
    signature verifies.
    """
    trusted = chain.candidates((s.keyid for s in env.signatures), stmt)
    return verify_envelope(env, [*trusted, *fixed], threshold=1)


def _replayed(chain: KeyChain, rows: list[KeyEventRow], size: int) -> KeyChain:
    """`chain` with stored key events applied, as of tree size `size`."""
    if chain.size == size and not rows:
        return chain
    chain = chain.copy()
    for row in rows:
        if row.index >= size:
            break
        try:
            chain.apply(row.index, parse_statement(row.statement), row.signers)
        except (AttestError, KeyChainError) as e:
            raise StorageError(f"stored key event {row.index} does not replay: {e}") from e
    chain.size = size
    return chain
