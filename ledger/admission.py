"""Admission rules: what each log accepts, and the leaf bytes it stores for it.

The rules themselves are `attest.admission` (pure, shared with audit nodes); this module wires
them to the log's storage and clock, and maps their failures to HTTP answers in one table
(`STATUS`). A rule works in two phases:

* `admit(body)`, in the request handler, without locks: parse the DSSE envelope and its
  statement, check the statement's anti-backdating fields, verify every signature. Returns an
  `Admitted` (the canonical leaf bytes plus what was verified) or raises `AdmissionError`.
* `begin(txn)`, in the sequencer, under the log's lock: a `BatchCheck` that decides, entry by
  entry in index order, whether the statement is authorised *at its index* (key chains), so a
  revocation at index r binds every entry after r, whichever process sequences it; and, for a
  continuity statement, whether the entries it cites are what it says (`check_citations`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from attest import admission as rules
from attest.admission import DEFAULT_SKEW as DEFAULT_SKEW
from attest.admission import AdmissionRefused, statement_digest
from attest.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_ENVELOPE_JSON_BYTES,
    Envelope,
    TrustedKey,
    read_json_leaf,
)
from attest.errors import AttestError
from attest.keychain import STATEFUL, KeyChain, KeyChainError
from attest.predicates import FIELD_REPORT, ContinuityStatement
from attest.statement import FieldReportSeen, Statement, parse_statement, read_field_report
from attest.tiles import TILE_WIDTH, TileError, decode_bundle
from ledger.errors import LedgerError
from ledger.storage import KeyEventRow, StorageError, Store, WriteTxn

STATUS: Final[dict[str, tuple[int, str]]] = {
    # reason (attest.admission.AdmissionRefused.reason) -> (HTTP status, error code)
    "malformed": (400, "malformed_envelope"),
    "not-canonical": (400, "malformed_envelope"),
    "too-large": (413, "entry_too_large"),
    "payload-type": (400, "wrong_payload_type"),
    "invalid": (400, "invalid_statement"),
    "unknown-checkpoint": (400, "unknown_checkpoint"),
    "future": (400, "future_statement"),
    "signature": (403, "untrusted_signature"),
    "key-chain": (403, "not_authorised"),
    "citation": (422, "bad_citation"),
    "wrong-partition": (400, "wrong_partition"),
    "unknown-tier": (403, "unknown_tier"),
    "credentials": (403, "credential_quorum"),
    "coarse-time": (400, "exact_time"),
}
"""How the log answers each refusal of `attest.admission`: the one place the two meet."""


class AdmissionError(LedgerError):
    """The log refuses an entry. `status` (and `headers`) are what the API answers with."""

    def __init__(
        self, status: int, error: str, diagnostic: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(diagnostic)
        self.status, self.error, self.diagnostic = status, error, diagnostic
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[type[AdmissionError], tuple[int, str, str, dict[str, str]]]:
        # Admission workers (`ledger.admitters`) send refusals back across processes.
        return (type(self), (self.status, self.error, self.diagnostic, self.headers))


def refused(e: AdmissionRefused) -> AdmissionError:
    """The log's answer to a refusal by `attest.admission` (`STATUS`)."""
    status, error = STATUS.get(e.reason, STATUS.get(e.stage, (400, "refused")))
    return AdmissionError(status, error, e.diagnostic)


@dataclass(frozen=True)
class Admitted:
    """An entry that passed the stateless checks: leaf bytes, statement, verified signers.

    `digest` is the statement digest the log deduplicates on (`attest.admission.
    statement_digest`); None for bytes admitted without a rule (the sequencer derives it).

    Pickled (an admission worker's answer, `ledger.admitters`), an entry whose statement
    phase 2 reads only by its type (`type_only`) travels without it, and without its payload
    (phase 2 stores the payload of key events only, which are never `type_only`): it arrives
    with `statement` None, `payload` empty and `predicate_type` set. Unpickling a statement
    costs the serving process more than the rest of the entry ten times over.
    """

    leaf: bytes
    statement: Statement | None = None
    payload: bytes = b""
    signers: frozenset[bytes] = frozenset()
    digest: bytes | None = field(default=None, compare=False)
    predicate_type: str | None = field(default=None, compare=False)

    def __reduce__(self) -> tuple[Callable[..., Admitted], tuple[object, ...]]:
        stmt = self.statement
        if stmt is not None and type_only(stmt):
            fields = (self.leaf, None, b"", self.signers, self.digest)
            return (Admitted, (*fields, stmt.predicate_type))
        kept = (self.leaf, stmt, self.payload, self.signers, self.digest)
        if self.predicate_type is not None:  # admitted without its statement already
            return (Admitted, (*kept, self.predicate_type))
        return (Admitted, kept)


def type_only(stmt: Statement) -> bool:
    """Whether phase 2 (`_EvidenceBatch.apply`) reads nothing of `stmt` but its type: a
    predicate that changes no key-chain state (`KeyChain.apply` reads only the type of those,
    `KeyChain.authorise`) and cites no entry (`attest.admission.check_citations` returns at
    once for any predicate but a continuity statement)."""
    return not isinstance(stmt.predicate, TYPE_READ)


TYPE_READ: Final = (*STATEFUL, ContinuityStatement)
"""Predicates phase 2 reads beyond their type (every other one is `type_only`)."""


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
        return rules.parse_envelope(body)
    except AdmissionRefused as e:
        raise refused(e) from e


def leaf_data(env: Envelope, canonical: bytes | None = None) -> bytes:
    """The canonical bytes the log stores, checked against the tiles' 64 KiB entry limit
    (`canonical`: `env.canonical_bytes()` when the caller has it, `rules.leaf_data`)."""
    try:
        return rules.leaf_data(env, canonical)
    except AdmissionRefused as e:
        raise refused(e) from e


def parse_payload(env: Envelope) -> Statement:
    """The envelope's in-toto statement, strictly parsed (400 when it is not one of ours)."""
    try:
        return rules.parse_payload(env)
    except AdmissionRefused as e:
        raise refused(e) from e


def check_seen(
    store: Store, log_id: int, origin: str, stmt: Statement, now: int, skew: int
) -> None:
    """Anti-backdating (`attest.admission.check_seen`) against the checkpoints this log
    published, and no claim from the future."""
    try:
        rules.check_seen(
            stmt, origin, lambda size: store.published_root(log_id, size), now=now, skew=skew
        )
    except AdmissionRefused as e:
        raise refused(e) from e


def admit_batch_entry(
    rule: AdmissionRule, entry: bytes, *, keep_statement: bool = True
) -> Admitted | LedgerError | None:
    """Phase 1 for one envelope of a batch request, given as its text in the request (`entry`,
    the UTF-8 bytes of one element of the request's array); None when `entry` is not JSON,
    and then neither is the request, which is refused whole.

    The answer is `rule.admit(json.dumps(value).encode())`, `value` being what `json.loads`
    reads from `entry`: the body the batch route admits for each envelope, as if it had been
    posted alone in Python's spelling. Only the work differs. When `read_json(entry)` reads an
    envelope (`entry` is already a `json.dumps` spelling of it: what clients built on `json`
    post), `parse_envelope` reads that same envelope from the re-encoded body, so the evidence
    rule admits it without re-encoding and re-reading it, with the leaf data `read_json_leaf`
    wrote while reading it (`canonical_bytes()`, not written twice). The length bound keeps the
    re-encoded body, at most 3 times as long (a separator gains a space; an escaped character
    is at most 12 bytes for 4), within `read_json`'s limit, so `parse_envelope` would indeed
    take that path. Everything else (another spelling, a duplicate key, another rule) is
    re-encoded and admitted exactly as before.

    `keep_statement` False: an answer that is pickled (an admission worker's), which may then
    come without the statement it would drop anyway (`EvidenceRule.admit_envelope`).
    """
    evidence = rule if isinstance(rule, EvidenceRule) else None  # others re-encode every entry
    read = read_json_leaf(entry) if evidence is not None and len(entry) <= _READ_AS_IS else None
    try:
        if evidence is not None and read is not None:
            return evidence.admit_envelope(*read, keep_statement=keep_statement)
        try:
            value = json.loads(entry.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError: ValueError
            return None
        return rule.admit(json.dumps(value).encode(), None)
    except LedgerError as e:
        return e


_READ_AS_IS = MAX_ENVELOPE_JSON_BYTES // 3
"""The longest batch entry `admit_batch_entry` reads as it is (see there)."""


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

    def admit(
        self, body: bytes, authorization: str | None = None, *, keep_statement: bool = True
    ) -> Admitted:
        """Parse, check anti-backdating and verify every signature against the known keys
        (`keep_statement` as `admit_envelope` takes it)."""
        read = read_json_leaf(body)  # what `parse_envelope` reads first, with its leaf data
        if read is not None:
            return self.admit_envelope(*read, keep_statement=keep_statement)
        return self.admit_envelope(parse_envelope(body), keep_statement=keep_statement)

    def admit_envelope(
        self, env: Envelope, canonical: bytes | None = None, *, keep_statement: bool = True
    ) -> Admitted:
        """`admit` of a body that `parse_envelope` reads as `env` (`canonical`: its
        `canonical_bytes()`, when the caller has them).

        Without `keep_statement` (an admission worker, whose answer is pickled), a field report
        that `attest.statement.read_field_report` reads is admitted without building its
        statement, as the `Admitted` that the kept one pickles to (`Admitted.__reduce__`, a
        field report being `type_only`): the same checks in the same order, on the same values,
        the same refusals."""
        leaf = leaf_data(env, canonical)
        if not keep_statement and env.payload_type == IN_TOTO_PAYLOAD_TYPE:
            seen = read_field_report(env.payload)
            if seen is not None:
                return self._admit_field_report(env, leaf, seen)
        stmt = parse_payload(env)
        check_seen(self.store, self.log_id, self.origin, stmt, int(self.clock()), self.skew)
        try:
            keys = self._verify(env, stmt)
        except AdmissionRefused:
            self.refresh()  # a key registered through another process since our last batch
            try:
                keys = self._verify(env, stmt)
            except AdmissionRefused as e:
                raise refused(e) from e
        signers = frozenset(k.raw() for k in keys)
        return Admitted(leaf, stmt, env.payload, signers, statement_digest(env))

    def _admit_field_report(self, env: Envelope, leaf: bytes, seen: FieldReportSeen) -> Admitted:
        """The rest of `admit_envelope` for a field report it read as `seen` (no statement
        kept): what `parse_payload` would return is a field report, which is no key event
        (`_verify` finds its keys without it)."""
        try:
            rules.seen_checkpoint(
                *seen,
                self.origin,
                lambda size: self.store.published_root(self.log_id, size),
                now=int(self.clock()),
                skew=self.skew,
            )
        except AdmissionRefused as e:
            raise refused(e) from e
        try:
            keys = self._verify(env, None)
        except AdmissionRefused:
            self.refresh()
            try:
                keys = self._verify(env, None)
            except AdmissionRefused as e:
                raise refused(e) from e
        signers = frozenset(k.raw() for k in keys)
        digest = statement_digest(env)
        return Admitted(leaf, None, b"", signers, digest, FIELD_REPORT)

    def _verify(self, env: Envelope, stmt: Statement | None) -> list[TrustedKey]:
        return rules.verify_signers(
            env, stmt, self.chain, self.fixed, verifies=rules.sodium_first_verifies
        )

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
        if entry.statement is None and entry.predicate_type is not None:
            # From an admission worker without its statement (`Admitted.__reduce__`): what
            # `rules.authorise` decides for it, nothing cited, no key event stored.
            try:
                self.chain.authorise(index, entry.predicate_type, entry.signers)
            except KeyChainError as e:
                raise refused(AdmissionRefused("key-chain", e.diagnostic)) from e
            self.fresh[index] = entry.leaf
            return
        if entry.statement is None:
            raise AdmissionError(400, "invalid_statement", "the evidence log stores statements")
        try:
            rules.authorise(self.chain, index, entry.statement, entry.signers)
            # Only a key event changes the chain, and it cites nothing: a refusal below leaves
            # the batch's state as it was.
            rules.check_citations(entry.statement, index, self.rule.origin, self._entry_at)
        except AdmissionRefused as e:
            raise refused(e) from e
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
