"""The admission rules of every partition, as pure functions: one copy, used by the log when it
admits an entry and by an audit node when it re-validates one.

Every check takes what it decides on as arguments — the envelope bytes or statement, the keys
that signed, the key chain's state, the log's root at a size (`RootAt`), and `now` — and raises
`AdmissionRefused`, whose `stage` names the step that failed:

    stage         what failed
    envelope      the entry is not a DSSE envelope, not its canonical bytes, or over 64 KiB
    statement     the payload is not one of this project's in-toto statements
    backdating    the statement saw no checkpoint of this log, or claims a time in the future
    signature     a signature does not verify under the key its keyid names (every one must)
    key-chain     the key chain does not authorise the statement at its index
    citation      a continuity statement cites an entry that is not what it says
    partition     the statement does not belong in this partition (or names no tier it takes)
    credentials   too few distinct issuers vouch for an attested report's key
    coarse-time   an anonymous statement's time is finer than the hour
    duplicate     the statement is already an earlier entry of the log (audit nodes: a log
                  holds one entry per statement; the log itself answers with the earlier one)

`reason` refines the stage where a caller answers differently (the log's HTTP status), e.g.
"too-large" at stage "envelope". The log maps reasons to status codes in one table
(`ledger.admission`), an audit node maps every failure to `EntryInvalid` with the same stage.

One signed statement is one entry: `statement_digest` is what the log deduplicates on, whatever
the signatures around it (docs/data_model.md, "One entry per statement").

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidSignature

from attest import merkle
from attest.anonymous import verify_one_time
from attest.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    TrustedKey,
    pae,
    read_canonical,
    read_json,
)
from attest.errors import AttestError, KeyNameError
from attest.keychain import KeyChain, KeyChainError
from attest.keys import dsse_keyid, public_key_from_bytes
from attest.predicates import ContinuityStatement, FieldReport, ProbeRecord
from attest.statement import Statement, parse_statement
from attest.tiles import MAX_ENTRY_SIZE

try:  # libsodium's Ed25519 verification, a fast path only (`libsodium_accepts`)
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    _SODIUM = True
except ImportError:  # pragma: no cover - PyNaCl is a dependency; cryptography alone still works
    _SODIUM = False

DEFAULT_SKEW: Final = 300
"""Seconds a statement's issuedAt may lie ahead of the log's clock."""

HOUR: Final = 3600
"""Anonymous statements carry issuedAt rounded down to a multiple of this (coarse time)."""

STAGES: Final = (
    "envelope",
    "statement",
    "backdating",
    "signature",
    "key-chain",
    "citation",
    "partition",
    "credentials",
    "coarse-time",
    "duplicate",
)
"""Every stage an admission rule can fail at, in the order the rules check them."""

RootAt = Callable[[int], bytes | None]
"""The log's root at a tree size; None when the log never published that size."""

EntryAt = Callable[[int], bytes | None]
"""The log's entry at an index below the one being checked; None when the caller does not hold
it (that reference is then not checked against its entry)."""


class AdmissionRefused(AttestError):
    """An entry fails an admission rule at `stage` (one of `STAGES`).

    `reason` refines the stage (defaults to it); `cited` is the index of a cited entry the
    failure rests on (stage "citation"), when one does.
    """

    def __init__(
        self, stage: str, diagnostic: str, *, reason: str | None = None, cited: int | None = None
    ) -> None:
        super().__init__(diagnostic)
        self.stage, self.reason, self.cited = stage, reason or stage, cited


class CitationError(AdmissionRefused):
    """A continuity statement cites a log entry that is not what it says.

    `cited` is the index of the entry the failure rests on, when one does (a wrong leaf hash,
    not a probe record of that model); None when the reference alone shows it (another log, an
    index not below the statement's).
    """

    def __init__(self, diagnostic: str, cited: int | None = None) -> None:
        super().__init__("citation", diagnostic, cited=cited)


# -- (1) the envelope ---------------------------------------------------------------------------


def parse_envelope(data: bytes) -> Envelope:
    """The DSSE envelope in `data` (stage "envelope", reason "malformed")."""
    env = read_json(data)  # the common cases, proven equal, at a fraction of the cost
    if env is not None:
        return env
    try:
        return Envelope.from_json(data)
    except AttestError as e:
        raise AdmissionRefused("envelope", e.diagnostic, reason="malformed") from e


def leaf_data(env: Envelope, canonical: bytes | None = None) -> bytes:
    """The canonical bytes a log stores for `env`, within the tiles' 64 KiB entry limit
    (stage "envelope", reason "too-large"). `canonical`: `env.canonical_bytes()`, when the
    caller has it already (`attest.dsse.read_json_leaf` writes it while reading `env`)."""
    if canonical is not None:
        data = canonical
    else:
        try:
            data = env.canonical_bytes()
        except AttestError as e:
            raise AdmissionRefused("envelope", e.diagnostic, reason="malformed") from e
    if len(data) > MAX_ENTRY_SIZE:
        raise AdmissionRefused(
            "envelope",
            f"canonical entry is {len(data)} bytes; entries are at most {MAX_ENTRY_SIZE}",
            reason="too-large",
        )
    return data


def parse_entry(entry: bytes) -> Envelope:
    """The envelope of a stored entry, which must be exactly its canonical bytes."""
    return _stored_entry(entry)[0]


def _stored_entry(entry: bytes) -> tuple[Envelope, bytes]:
    """`parse_entry`, and the leaf data it compared the entry with."""
    env = parse_envelope(entry)
    leaf = leaf_data(env)
    if leaf != entry:
        raise AdmissionRefused(
            "envelope", "entry is not the canonical bytes of its envelope", reason="not-canonical"
        )
    return env, leaf


def statement_digest(env: Envelope) -> bytes:
    """SHA-256 of PAE(payloadType, payload): the signed message, whatever its signatures.

    Two envelopes of one statement have one digest; a log holds one entry per digest.
    """
    return hashlib.sha256(pae(env.payload_type, env.payload)).digest()


def entry_statement_digest(entry: bytes) -> bytes | None:
    """`statement_digest` of the envelope in leaf data `entry` (None when it holds none).

    On the sequencer's hot path for entries it did not admit itself (the anonymous queue), so
    it reads only `payloadType` and `payload` with the standard JSON parser (about 3x faster
    than `Envelope.from_json`); entries that were admitted are canonical, and for any other
    bytes the digest is only the key the log deduplicates on.
    """
    try:
        obj = json.loads(entry)
        payload_type, text = obj["payloadType"], obj["payload"]
        if not isinstance(payload_type, str) or not isinstance(text, str):
            return None
        if "-" in text or "_" in text:  # URL-safe alphabet (never in canonical leaf data)
            text = text.replace("-", "+").replace("_", "/")
        if len(text) % 4:
            text += "=" * (-len(text) % 4)
        message = pae(payload_type, base64.b64decode(text, validate=True))
    except (ValueError, TypeError, KeyError, RecursionError):  # JSON, UTF-8, base64: ValueError
        return None
    return hashlib.sha256(message).digest()


def check_one_entry(index: int, digest: bytes, first: int | None) -> None:
    """One entry per statement (stage "duplicate"): `first`, the index of an earlier entry with
    the same statement digest (None when there is none), must not exist. Raises with `cited`
    set to `first`."""
    if first is not None and first != index:
        raise AdmissionRefused(
            "duplicate",
            f"entry {index} holds the statement of entry {first} (digest {digest.hex()[:16]}…): "
            "a log holds one entry per statement",
            cited=first,
        )


# -- (2) the statement --------------------------------------------------------------------------


def parse_payload(env: Envelope) -> Statement:
    """The envelope's in-toto statement, strictly parsed (stage "statement"; reasons
    "payload-type" and "invalid")."""
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise AdmissionRefused(
            "statement", f"payloadType must be {IN_TOTO_PAYLOAD_TYPE!r}", reason="payload-type"
        )
    try:
        return parse_statement(env.payload)
    except AttestError as e:
        raise AdmissionRefused("statement", e.diagnostic, reason="invalid") from e


# -- (3) anti-backdating ------------------------------------------------------------------------


def check_seen(
    stmt: Statement,
    origin: str,
    root_at: RootAt | None,
    *,
    index: int | None = None,
    now: int | None = None,
    skew: int = DEFAULT_SKEW,
) -> None:
    """Anti-backdating (stage "backdating"): the statement saw a checkpoint of this log.

    Plan:
    1. the seen checkpoint names this log (`origin`);
    2. with `index` (an entry's place in the log): its size is at most `index`;
    3. with `root_at`: the log's root at that size is the seen root (reason
       "unknown-checkpoint" for 1-3);
    4. with `now`: issuedAt is at most `now + skew` (reason "future").
    """
    p = stmt.predicate
    seen = p.seen_checkpoint
    seen_checkpoint(
        seen.origin,
        seen.size,
        seen.root,
        p.issued_at,
        origin,
        root_at,
        index=index,
        now=now,
        skew=skew,
    )


def seen_checkpoint(
    seen_origin: str,
    seen_size: int,
    seen_root: str,
    issued_at: int,
    origin: str,
    root_at: RootAt | None,
    *,
    index: int | None = None,
    now: int | None = None,
    skew: int = DEFAULT_SKEW,
) -> None:
    """`check_seen` of a statement whose seen checkpoint is (`seen_origin`, `seen_size`,
    `seen_root`) and whose issuedAt is `issued_at`: all of the statement it reads, for a caller
    that holds these without the statement (`attest.statement.read_field_report`)."""
    if seen_origin != origin:  # (1)
        raise AdmissionRefused(
            "backdating",
            f"statement saw a checkpoint of {seen_origin!r}, not of this log ({origin!r})",
            reason="unknown-checkpoint",
        )
    if index is not None and seen_size > index:  # (2)
        raise AdmissionRefused(
            "backdating",
            f"saw size {seen_size}, beyond its own index {index}",
            reason="unknown-checkpoint",
        )
    if root_at is not None:  # (3)
        root = root_at(seen_size)
        if root is None or root.hex() != seen_root:
            raise AdmissionRefused(
                "backdating",
                f"this log never published a checkpoint of size {seen_size} with root {seen_root}",
                reason="unknown-checkpoint",
            )
    if now is not None and issued_at > now + skew:  # (4)
        raise AdmissionRefused(
            "backdating",
            f"issuedAt {issued_at} lies {issued_at - now} s in the future (allowed skew {skew} s)",
            reason="future",
        )


# -- (4) signatures -----------------------------------------------------------------------------


Verifies = Callable[[TrustedKey, bytes, bytes], bool]
"""Whether a signature (bytes) of a message (bytes) verifies under a key. The rules' own is
`ed25519_verifies` (`cryptography`, RFC 8032); a caller may pass a faster one only if it answers
exactly what `ed25519_verifies` answers, for every input."""


def verify_every_signature(
    env: Envelope,
    trusted: Iterable[TrustedKey],
    self_named: Iterable[TrustedKey] = (),
    *,
    verifies: Verifies | None = None,
) -> list[TrustedKey]:
    """The distinct keys that signed `env`; every signature must verify (stage "signature").

    `trusted` keys are known by their keyid; `self_named` keys (operator roots, keys a log
    admits directly, known to it by a file name) by any keyid `<name>+<key id>` whose C2SP key
    id is that of `name` and the key (`attest.keys.dsse_keyid`): the signer chooses the name,
    the key id still binds it to the key.

    Plan, for each signature in order:
    1. its keyid names a trusted key: an unknown keyid is refused, not skipped, so a stored
       envelope carries no signature that nobody checked;
    2. the signature verifies under one of the keys that keyid names;
    3. that key has not signed already (a key signs a statement once).

    Returns the keys in the order they signed. `verifies` answers step 2 (default
    `ed25519_verifies`).
    """
    check = ed25519_verifies if verifies is None else verifies
    by_keyid: dict[str, list[TrustedKey]] = {}
    for key in trusted:
        by_keyid.setdefault(key.keyid, []).append(key)
    fixed = list(self_named)
    message = pae(env.payload_type, env.payload)
    signed: dict[bytes, TrustedKey] = {}
    for n, sig in enumerate(env.signatures):
        keys = [*by_keyid.get(sig.keyid, ()), *_named_by(sig.keyid, fixed)]
        if not keys:  # (1)
            raise AdmissionRefused(
                "signature", f"signature {n}: keyid {sig.keyid[:80]!r} names no key this log knows"
            )
        good = next((k for k in keys if check(k, sig.sig, message)), None)
        if good is None:  # (2)
            raise AdmissionRefused(
                "signature", f"signature {n} does not verify under key {sig.keyid[:80]!r}"
            )
        raw = good.raw()
        if raw in signed:  # (3)
            raise AdmissionRefused("signature", f"signature {n}: key {sig.keyid!r} signed twice")
        signed[raw] = good
    return list(signed.values())


def _named_by(keyid: str, keys: Sequence[TrustedKey]) -> list[TrustedKey]:
    """The keys of `keys` that `keyid` names under the name it carries."""
    name = keyid.rpartition("+")[0]
    try:
        return [_named_key(keyid, k.raw()) for k in keys if _keyid(name, k.raw()) == keyid]
    except KeyNameError:
        return []


@lru_cache(maxsize=1024)
def _named_key(keyid: str, raw: bytes) -> TrustedKey:
    """The key whose raw bytes are `raw`, known by `keyid` (`_named_by`), kept for the next
    signature under that keyid: building a `TrustedKey` was a few percent of an entry's
    admission. Equal to `TrustedKey(keyid, k.public_key)` for any key `k` with these bytes
    (it is immutable, and a key is its raw bytes)."""
    return TrustedKey(keyid, public_key_from_bytes(raw))


@lru_cache(maxsize=1024)
def _keyid(name: str, raw: bytes) -> str:
    """`dsse_keyid(name, key)` for the key whose raw bytes are `raw` (all it depends on), kept
    for the next signature under that name: every envelope a self-named key signs asks again.
    A name it refuses (KeyNameError) is not kept: an exception is not a return value."""
    return dsse_keyid(name, public_key_from_bytes(raw))


def ed25519_verifies(key: TrustedKey, sig: bytes, message: bytes) -> bool:
    """Whether `sig` is a valid Ed25519 signature of `message` under `key` (64 bytes, RFC 8032
    verification by `cryptography`): the rules' answer to "does this signature verify"."""
    if len(sig) != 64:
        return False
    try:
        key.public_key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def libsodium_accepts(raw: bytes, sig: bytes, message: bytes) -> bool:
    """Whether libsodium's strict Ed25519 verification accepts `sig` (64 bytes) of `message`
    under the raw 32-byte public key `raw`; False when it refuses, and without PyNaCl.

    An acceptance is also `ed25519_verifies`'s: both libraries are cofactorless and require
    S < L, and libsodium also refuses small-order and non-canonical points, so what it accepts
    is a subset of what `cryptography` (OpenSSL's RFC 8032) accepts. A refusal decides
    nothing: the caller asks `cryptography`. That is the fast path of `sodium_first_verifies`
    and of the audit node's workers (`verifier.parallel`): about half of OpenSSL's CPU per
    signature, for the honest signatures that are nearly all of them."""
    if not _SODIUM or len(sig) != 64 or len(raw) != 32:
        return False
    try:
        crypto_sign_open(sig + message, raw)
    except (BadSignatureError, ValueError, TypeError):  # refused, or input it will not take
        return False
    return True


def sodium_first_verifies(key: TrustedKey, sig: bytes, message: bytes) -> bool:
    """`ed25519_verifies`, answered by libsodium when it accepts (`libsodium_accepts`): the
    answer is always the rules', at libsodium's speed for honest signatures. A `Verifies`."""
    return libsodium_accepts(key.raw(), sig, message) or ed25519_verifies(key, sig, message)


def verify_signers(
    env: Envelope,
    stmt: Statement | None,
    chain: KeyChain,
    fixed: Sequence[TrustedKey] = (),
    *,
    verifies: Verifies | None = None,
) -> list[TrustedKey]:
    """The keys that signed `env` (every signature verifying, `verify_every_signature`) among
    the keys the chain knows by keyid, a key event's own keys (proof of possession), and
    `fixed` keys (operator roots, keys the log admits directly, under any name their keyid
    binds to them). Stage "signature"; `verifies` as `verify_every_signature` takes it.
    `stmt` None: a statement that is not a key event (the same keys)."""
    trusted = chain.candidates((s.keyid for s in env.signatures), stmt)
    return verify_every_signature(env, trusted, fixed, verifies=verifies)


def holder_keys(env: Envelope, chain: KeyChain) -> list[TrustedKey]:
    """The credential-holder keys that signed `env` (every signature by a key some logged
    credential event names, found by its keyid, and verifying). Stage "signature"."""
    trusted = [
        TrustedKey(s.keyid, public_key_from_bytes(chain.holder_keyids[s.keyid]))
        for s in env.signatures
        if s.keyid in chain.holder_keyids
    ]
    return verify_every_signature(env, trusted)


def verify_anonymous(env: Envelope) -> None:
    """Exactly one signature, by the one-time key its keyid is (stage "signature")."""
    try:
        verify_one_time(env)
    except AttestError as e:
        raise AdmissionRefused("signature", e.diagnostic) from e


# -- (5) the key chain --------------------------------------------------------------------------


def authorise(chain: KeyChain, index: int, stmt: Statement, signers: frozenset[bytes]) -> None:
    """Apply `stmt`, signed by `signers`, to `chain` at `index` (stage "key-chain"); the chain
    is unchanged when it refuses."""
    try:
        chain.apply(index, stmt, signers)
    except KeyChainError as e:
        raise AdmissionRefused("key-chain", e.diagnostic) from e


# -- (6) continuity citations -------------------------------------------------------------------


def check_citations(stmt: Statement, index: int, origin: str, entry_at: EntryAt) -> None:
    """Check the entries a continuity statement at `index` of log `origin` cites (any other
    statement cites nothing and passes).

    Plan, for each LogEntryRef of `predecessor_records` and `successor_records`:
    1. it names this log (`origin`) and an index below `index`;
    2. the entry there (`entry_at`) has the leaf hash it cites (RFC 9162 leaf hash);
    3. that entry is a probe record of the model on its side: name, version and weights digest.

    Raises CitationError (stage "citation").
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


# -- (7) the privacy partitions -----------------------------------------------------------------


def field_report(stmt: Statement, tier: str) -> FieldReport:
    """The statement's field report, filed in `tier` (stage "partition", reason
    "wrong-partition")."""
    p = stmt.predicate
    if not isinstance(p, FieldReport):
        kind = stmt.predicate_type.rsplit("/", 2)[-2]
        raise AdmissionRefused(
            "partition",
            f"the {tier} log takes field reports filed as {tier!r}, not {kind} statements",
            reason="wrong-partition",
        )
    if p.tier != tier:
        raise AdmissionRefused(
            "partition",
            f"the {tier} log takes field reports filed as {tier!r}, not as {p.tier!r}",
            reason="wrong-partition",
        )
    return p


def check_coarse_time(report: FieldReport) -> None:
    """An anonymous report's issuedAt is a whole hour (stage "coarse-time")."""
    if report.issued_at % HOUR:
        raise AdmissionRefused(
            "coarse-time",
            f"anonymous statements carry issuedAt rounded down to the hour, not {report.issued_at}",
        )


def check_credentials(
    chain: KeyChain, keys: Sequence[TrustedKey], tier: str, quorum: int, now: int | None
) -> bytes:
    """The first holder key in `keys` for which at least `quorum` distinct issuers hold a
    credential in `tier` (stage "credentials"); returns its raw bytes.

    With `now`: live credentials only (not revoked, not expired, issuer valid), as the log
    decides when it admits. Without (an audit node, which cannot order two logs): every issuer
    that ever issued one.
    """
    best = 0
    for key in keys:
        if now is None:
            count = len(chain.credentials.get((key.raw(), tier), {}))
        else:
            count = len(chain.credential_issuers(key.raw(), tier, now))
        if count >= quorum:
            return key.raw()
        best = max(best, count)
    ever = "" if now is not None else " ever"
    raise AdmissionRefused(
        "credentials",
        f"{best} distinct issuer(s){ever} vouch for the signing key in tier {tier!r}; "
        f"{quorum} needed",
    )


# -- the rules, composed ------------------------------------------------------------------------


def admit_statement(
    data: bytes,
    origin: str,
    root_at: RootAt | None,
    *,
    index: int | None = None,
    now: int | None = None,
    skew: int = DEFAULT_SKEW,
    stored: bool = False,
) -> tuple[Envelope, bytes, Statement]:
    """Steps 1-3 of every partition: envelope (canonical, within 64 KiB), statement,
    anti-backdating. `stored`: `data` is a log entry and must be its own canonical bytes.
    Returns the envelope, its leaf data and its statement."""
    env = read_canonical(data)
    if env is not None and len(data) <= MAX_ENTRY_SIZE:
        leaf = data  # `data` is the envelope's canonical bytes, hence its leaf data
    elif stored:
        env, leaf = _stored_entry(data)
    else:
        env = parse_envelope(data)
        leaf = leaf_data(env)
    stmt = parse_payload(env)
    check_seen(stmt, origin, root_at, index=index, now=now, skew=skew)
    return env, leaf, stmt


def admit_anonymous(env: Envelope, stmt: Statement) -> FieldReport:
    """The anonymous partition after steps 1-3: a field report filed as "anonymous", at a whole
    hour, signed once by a one-time key. (The Privacy Pass token is the log's to check: it is
    never stored with the entry.)"""
    report = field_report(stmt, "anonymous")
    check_coarse_time(report)
    verify_anonymous(env)
    return report


def admit_attested(
    env: Envelope,
    stmt: Statement,
    evidence: KeyChain,
    quorum: Callable[[str], int | None],
    now: int | None,
) -> bytes:
    """The attested partition after steps 1-3: a field report filed as "attested" in a tier the
    log takes (`quorum(tier)`: k, or None for a tier it does not take: stage "partition", reason
    "unknown-tier"), signed only by credential-holder keys, one of which has k distinct issuers
    (`check_credentials`). Returns the holder key that qualifies."""
    report = field_report(stmt, "attested")
    tier = str(report.credential_tier)  # the schema requires it for attested reports
    k = quorum(tier)
    if k is None:
        raise AdmissionRefused(
            "partition", f"this log admits no tier {tier!r}", reason="unknown-tier"
        )
    keys = holder_keys(env, evidence)
    return check_credentials(evidence, keys, tier, k, now)
