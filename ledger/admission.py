"""Admission rules: what each log accepts, and the leaf bytes it stores for it.

A rule works in two phases:

* `admit(body)`, in the request handler, without locks: parse the DSSE envelope and its
  statement, check the statement's anti-backdating fields, verify the signatures. Returns an
  `Admitted` (the canonical leaf bytes plus what was verified) or raises `AdmissionError`.
* `begin(txn)`, in the sequencer, under the log's lock: a `BatchCheck` that decides, entry by
  entry in index order, whether the statement is authorised *at its index* (key chains), so a
  revocation at index r binds every entry after r, whichever process sequences it; and, for a
  continuity statement, whether the entries it cites are what it says (`check_citations`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from attest import merkle
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, TrustedKey, verify_envelope
from attest.errors import AttestError
from attest.keychain import STATEFUL, KeyChain, KeyChainError
from attest.predicates import ContinuityStatement, ProbeRecord
from attest.statement import Statement, parse_statement
from attest.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, TileError, decode_bundle
from ledger.errors import LedgerError
from ledger.storage import KeyEventRow, StorageError, Store, WriteTxn

DEFAULT_SKEW = 300  # seconds a statement's issued_at may lie ahead of the log's clock


class AdmissionError(LedgerError):
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
        return _EvidenceBatch(self, chain.copy(), txn)


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
    def __init__(self, rule: EvidenceRule, chain: KeyChain, txn: WriteTxn) -> None:
        self.rule, self.chain, self.txn = rule, chain, txn
        self.rows: list[KeyEventRow] = []
        self.fresh: dict[int, bytes] = {}  # entries this batch admitted so far, by index
        self.bundles: OrderedDict[int, list[bytes]] = OrderedDict()  # a few, for citations

    def apply(self, index: int, entry: Admitted) -> None:
        if entry.statement is None:
            raise AdmissionError(400, "invalid_statement", "the evidence log stores statements")
        try:
            self.chain.apply(index, entry.statement, entry.signers)
        except KeyChainError as e:
            raise AdmissionError(403, "not_authorised", e.diagnostic) from e
        # Only a key event changes the chain, and it cites nothing: a refusal below leaves the
        # batch's state as it was.
        try:
            check_citations(entry.statement, index, self.rule.origin, self._entry_at)
        except CitationError as e:
            raise AdmissionError(422, "bad_citation", e.diagnostic) from e
        if isinstance(entry.statement.predicate, STATEFUL):
            self.rows.append(KeyEventRow(index, entry.payload, entry.signers))
        self.fresh[index] = entry.leaf

    def _entry_at(self, index: int) -> bytes:
        """Entry `index` (below the one being checked): from this batch, or stored."""
        if index in self.fresh:
            return self.fresh[index]
        n, offset = divmod(index, TILE_WIDTH)
        bundle = self.bundles.get(n)
        if bundle is None:
            try:
                bundle = decode_bundle(self.txn.read_bundle(n))
            except TileError as e:
                raise StorageError(f"entry bundle {n}: {e.diagnostic}") from e
            self.bundles[n] = bundle
            if len(self.bundles) > _BUNDLE_CACHE:
                self.bundles.popitem(last=False)
        if offset >= len(bundle):
            raise StorageError(f"entry {index} is below the head but not stored")
        return bundle[offset]

    def key_events(self) -> list[KeyEventRow]:
        return self.rows

    def commit(self, size: int) -> None:
        self.chain.size = size
        self.rule._adopt(self.chain)


_BUNDLE_CACHE = 8  # entry bundles (up to 16 MiB each) a batch keeps while checking citations


class CitationError(Exception):
    """A continuity statement cites a log entry that is not what it says.

    `cited` is the index of the entry the failure rests on, when one does (a wrong leaf hash,
    not a probe record of that model); None when the reference alone shows it (another log, an
    index not below the statement's).
    """

    def __init__(self, diagnostic: str, cited: int | None = None) -> None:
        super().__init__(diagnostic)
        self.diagnostic, self.cited = diagnostic, cited


EntryAt = Callable[[int], bytes | None]
"""The log's entry at an index below the one being checked; None when the caller does not hold
it (that reference is then not checked against its entry)."""


def check_citations(stmt: Statement, index: int, origin: str, entry_at: EntryAt) -> None:
    """Check the entries a continuity statement at `index` of log `origin` cites (any other
    statement cites nothing and passes).

    Plan, for each LogEntryRef of `predecessor_records` and `successor_records`:
    1. it names this log (`origin`) and an index below `index`;
    2. the entry there (`entry_at`) has the leaf hash it cites (RFC 9162 leaf hash);
    3. that entry is a probe record of the model on its side: name, version and weights digest.

    Pure: auditors replaying the log call it with entries they verified. Raises CitationError.
    """
    p = stmt.predicate
    if not isinstance(p, ContinuityStatement):
        return
    sides = (
        ("predecessor", p.predecessor, p.predecessor_records),
        ("successor", p.successor, p.successor_records),
    )
    for side, model, refs in sides:
        for ref in refs:
            where = f"{side} record {ref.origin} #{ref.index}"
            if ref.origin != origin:  # (1)
                raise CitationError(f"{where} is not in this log ({origin})")
            if ref.index >= index:
                raise CitationError(f"{where} is not below the statement's own index {index}")
            data = entry_at(ref.index)
            if data is None:
                continue
            leaf = merkle.leaf_hash(data).hex()  # (2)
            if leaf != ref.leaf_hash:
                raise CitationError(
                    f"{where} is cited with leaf hash {ref.leaf_hash}, the entry's is {leaf}",
                    ref.index,
                )
            try:  # (3)
                cited = parse_statement(Envelope.from_json(data).payload).predicate
            except AttestError:
                cited = None
            if not isinstance(cited, ProbeRecord):
                raise CitationError(f"{where} is not a probe record", ref.index)
            if cited.model != model:
                got, want = cited.model, model
                raise CitationError(
                    f"{where} is a probe record of {got.name}@{got.version} "
                    f"({got.weights_sha256[:12]}…), not of {want.name}@{want.version} "
                    f"({want.weights_sha256[:12]}…)",
                    ref.index,
                )


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
