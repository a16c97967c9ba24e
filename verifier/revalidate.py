"""Re-validating a log's entries by its partition's admission rules (`attest.admission`). Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attest import admission as rules
from attest.admission import AdmissionRefused, EntryAt
from attest.dsse import Envelope, TrustedKey
from attest.errors import AttestError
from attest.keychain import KeyChain, KeyChainError
from attest.statement import Statement, parse_statement
from verifier.config import DEFAULT_ATTESTED_QUORUM, ConfigError
from verifier.errors import VerifierError
from verifier.state import StoredKeyEvent

HOUR = rules.HOUR
"""Anonymous statements carry `issuedAt` rounded down to a multiple of this (coarse time)."""


class EntryInvalid(VerifierError):
    """A log entry does not re-validate; `stage` names the failed step of `validate_entry`.

    `cited` is the index of another entry the failure rests on (a continuity statement's
    citation that is not what it says), so evidence can carry that entry too.
    """

    def __init__(self, index: int, stage: str, problem: str, cited: int | None = None) -> None:
        super().__init__(f"entry {index} fails {stage}: {problem}")
        self.index, self.stage, self.problem, self.cited = index, stage, problem, cited


RootAt = Callable[[int], bytes | None]
"""The root of the log's tree at a size (for anti-backdating checks)."""


def _invalid(index: int, e: AdmissionRefused) -> EntryInvalid:
    """An `attest.admission` refusal as the node reports it, with the same stage."""
    return EntryInvalid(index, e.stage, e.diagnostic, e.cited)


def validate_statement(
    index: int, entry: bytes, origin: str, root_at: RootAt | None
) -> tuple[Envelope, Statement]:
    """Steps 1-3 of every partition's validation: the envelope, the statement, anti-backdating
    (`attest.admission.admit_statement`, the rules the log admitted it by).

    Plan (each step tagged; raises EntryInvalid naming the step):
    1. the entry parses as a DSSE envelope whose canonical bytes are exactly the entry;
    2. its payload is one of this project's in-toto statements (payload type, schema, JCS);
    3. anti-backdating: the statement saw a checkpoint of this log, of size <= `index`, whose
       root is the log's root at that size (`root_at`; skipped when None).

    Pure. Returns the envelope and its statement.
    """
    try:
        env, _, stmt = rules.admit_statement(entry, origin, root_at, index=index, stored=True)
    except AdmissionRefused as e:  # (1)-(3)
        raise _invalid(index, e) from e
    return env, stmt


def validate_entry(
    index: int,
    entry: bytes,
    origin: str,
    chain: KeyChain,
    fixed: Sequence[TrustedKey],
    root_at: RootAt | None,
    entry_at: EntryAt | None = None,
) -> tuple[Statement, frozenset[bytes]]:
    """Re-validate entry `index` of an *evidence* log as the log should have admitted it; update
    `chain`.

    Plan (each step tagged; raises EntryInvalid naming the step):
    1-3. `validate_statement`: envelope, statement, anti-backdating;
    4. every signature verifies under the key its keyid names: a key the chain knows, a key
       event's own key, or `fixed` (`attest.admission.verify_signers`);
    5. the key chain authorises the statement at `index` (and moves on, if it is a key event;
       an issuance whose credential id was seen before is refused: revocation is final);
    6. a continuity statement cites only probe records of its models in this log below `index`,
       with their leaf hashes (`attest.admission.check_citations`; the cited entries come from
       `entry_at`, verified by the caller: without it, or where it returns None, only the
       references themselves are checked). Stage "citation".

    Pure. Returns the statement and the raw keys that signed.
    """
    env, stmt = validate_statement(index, entry, origin, root_at)  # (1)-(3)
    try:
        keys = rules.verify_signers(env, stmt, chain, fixed)  # (4)
        signers = frozenset(k.raw() for k in keys)
        rules.authorise(chain, index, stmt, signers)  # (5)
        rules.check_citations(stmt, index, origin, entry_at or _held_nothing)  # (6)
    except AdmissionRefused as e:
        raise _invalid(index, e) from e
    return stmt, signers


def _held_nothing(index: int) -> bytes | None:
    return None


def validate_anonymous_entry(
    index: int, entry: bytes, origin: str, root_at: RootAt | None
) -> Statement:
    """Re-validate entry `index` of an *anonymous* log, as far as its content allows.

    Plan (each step tagged; raises EntryInvalid naming the step):
    1-3. `validate_statement`: envelope, statement, anti-backdating (a checkpoint of this log);
    4. the statement is a field report filed in tier "anonymous" (stage "partition"; the schema
       already refused identity fields in step 2);
    5. its `issuedAt` is a whole hour (stage "coarse-time");
    6. exactly one signature, by the one-time key its keyid *is* (`anonymous+<id>+<key>`), and
       it verifies (stage "signature").

    Steps 4-6 are `attest.admission.admit_anonymous`. Nothing else: no key chain, no signer
    identity. Not checked, because the log never stores it: the Privacy Pass token that
    authorised the write (its issuer, key and single use). Pure.
    """
    env, stmt = validate_statement(index, entry, origin, root_at)  # (1)-(3)
    try:
        rules.admit_anonymous(env, stmt)  # (4)-(6)
    except AdmissionRefused as e:
        raise _invalid(index, e) from e
    return stmt


def validate_attested_entry(
    index: int,
    entry: bytes,
    origin: str,
    root_at: RootAt | None,
    evidence: KeyChain | None,
    quorum: int = DEFAULT_ATTESTED_QUORUM,
) -> tuple[Statement, frozenset[bytes]]:
    """Re-validate entry `index` of an *attested* log against the evidence log's key chain.

    Plan (each step tagged; raises EntryInvalid naming the step):
    1-3. `validate_statement`: envelope, statement, anti-backdating (a checkpoint of this log);
    4. the statement is a field report filed in tier "attested", naming its `credentialTier` T
       (stage "partition");
    -- only with `evidence`, the chain of the server's evidence log as the node verified it
       (None: the node does not follow that log, and the checks stop here) --
    5. every signature verifies under a key the chain knows as a credential holder: one a
       logged credential event named, found by the signature's keyid (stage "signature");
    6. at least `quorum` distinct issuer identities issued a credential for that key in tier T,
       at some evidence index the node verified (stage "credentials").

    Steps 4-6 are `attest.admission.admit_attested` without a `now`. Not checked, because the
    logs are not ordered against each other (an attested index says nothing about the evidence
    log's size when the entry was admitted): that those credentials were unrevoked, unexpired
    and their issuers valid *when* the entry was admitted, nor that they were logged before it
    (a log could backfill them); that the server's quorum for T is `quorum`. A credential
    revoked or expired since still counts (an issuance replayed after its revocation does not:
    the evidence log's chain refuses it). Pure; returns the statement and the holder key whose
    signature verified.
    """
    env, stmt = validate_statement(index, entry, origin, root_at)  # (1)-(3)
    try:
        rules.field_report(stmt, "attested")  # (4)
        if evidence is None:
            return stmt, frozenset()
        holder = rules.admit_attested(env, stmt, evidence, lambda tier: quorum, None)  # (5)-(6)
    except AdmissionRefused as e:
        raise _invalid(index, e) from e
    return stmt, frozenset({holder})


def validate_partition_entry(
    partition: str,
    index: int,
    entry: bytes,
    origin: str,
    root_at: RootAt | None,
    *,
    chain: KeyChain,
    fixed: Sequence[TrustedKey] = (),
    evidence: KeyChain | None = None,
    quorum: int = DEFAULT_ATTESTED_QUORUM,
    entry_at: EntryAt | None = None,
) -> tuple[Statement, frozenset[bytes]]:
    """Re-validate entry `index` by the rules of `partition`: `validate_entry` (evidence: the
    log's own `chain` and `fixed` keys, earlier entries from `entry_at`),
    `validate_anonymous_entry`, or `validate_attested_entry` (the evidence log's chain
    `evidence`, k = `quorum`). Pure."""
    if partition == "evidence":
        return validate_entry(index, entry, origin, chain, fixed, root_at, entry_at)
    if partition == "anonymous":
        return validate_anonymous_entry(index, entry, origin, root_at), frozenset()
    if partition == "attested":
        return validate_attested_entry(index, entry, origin, root_at, evidence, quorum)
    raise ConfigError(f"unknown partition {partition!r}")


def replay_chain(
    roots: Sequence[bytes], allowed: Sequence[bytes], events: Sequence[StoredKeyEvent]
) -> KeyChain:
    """The key chain after the verified key events `events` (in index order)."""
    chain = KeyChain(roots, allowed)
    for ev in events:
        try:
            stmt = parse_statement(Envelope.from_json(ev.entry).payload)
            chain.apply(ev.index, stmt, ev.signers)
        except (AttestError, KeyChainError) as e:
            raise ConfigError(f"stored key event {ev.index} does not replay: {e}") from e
    return chain
