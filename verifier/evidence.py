"""Evidence of log misbehaviour that anyone can check offline (`verify_evidence`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from attest import merkle
from attest.admission import entry_statement_digest
from attest.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from attest.keychain import KeyChain
from attest.note import NoteError, decode_base64, encode_base64
from attest.vkey import parse_vkey
from verifier.config import FollowedLog
from verifier.errors import VerifierError
from verifier.revalidate import EntryInvalid, validate_entry, validate_partition_entry

FORMAT: Final = "bledger-evidence/v1"
MAX_NOTE = 64 * 1024
"""Most bytes of a gossiped checkpoint note (a checkpoint with 100 cosignatures fits)."""
MAX_POSTED_EVIDENCE = 256 * 1024
"""Most bytes of a posted evidence record (provable kinds hold two notes and a short proof)."""

EvidenceKind = Literal[
    "split-view",
    "inconsistent",
    "rollback",
    "bad-proof",
    "bad-data",
    "entry-mismatch",
    "invalid-entry",
]
PROVABLE_KINDS = frozenset({"split-view", "inconsistent"})
"""Kinds that prove, from the log's signatures alone, that the log equivocated: nodes import
these from peers. The other kinds are re-checkable but rest in part on the observer's word."""


class EvidenceError(VerifierError):
    """An evidence record is malformed, or does not prove what it claims."""


# -- the evidence format ----------------------------------------------------------------------

_B64 = Annotated[str, StringConstraints(max_length=4 * 65536, pattern=r"^[A-Za-z0-9+/=]*$")]
_Text = Annotated[str, StringConstraints(max_length=4096)]
_Size = Annotated[int, Field(ge=0, le=(1 << 64) - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EvidenceNote(_Wire):
    """A signed checkpoint note, verbatim, with where and when the observer saw it."""

    note: Annotated[str, StringConstraints(max_length=MAX_NOTE)]
    source: _Text
    seen_at: _Size

    @classmethod
    def of(cls, note: bytes | str, source: str, seen_at: int) -> EvidenceNote:
        """Build from the note's bytes (or text)."""
        text = note.decode("utf-8") if isinstance(note, bytes) else note
        return cls(note=text, source=source, seen_at=seen_at)


class EvidenceProof(_Wire):
    """An RFC 9162 consistency proof from `first` to `second`, and the root at `first` that it
    and the larger checkpoint's root imply (`old_root`; for sizes that are powers of two the
    proof starts from that root, so it must be given)."""

    first: _Size
    second: _Size
    old_root: _B64
    hashes: Annotated[tuple[_B64, ...], Field(max_length=64)]

    @classmethod
    def of(cls, first: int, second: int, old_root: bytes, hashes: Sequence[bytes]) -> EvidenceProof:
        """Build from raw bytes."""
        return cls(
            first=first,
            second=second,
            old_root=encode_base64(old_root),
            hashes=tuple(encode_base64(h) for h in hashes),
        )


class EvidenceEntry(_Wire):
    """A log entry: its `index`, bytes (`data`), committed leaf hash and inclusion proof."""

    index: _Size
    data: _B64
    leaf_hash: _B64
    inclusion_proof: Annotated[tuple[_B64, ...], Field(max_length=64)]

    @classmethod
    def of(cls, index: int, data: bytes, leaf_hash: bytes, proof: Sequence[bytes]) -> EvidenceEntry:
        """Build from raw bytes."""
        return cls(
            index=index,
            data=encode_base64(data),
            leaf_hash=encode_base64(leaf_hash),
            inclusion_proof=tuple(encode_base64(h) for h in proof),
        )


class SeenProof(_Wire):
    """A consistency proof from `size` to the checkpoint: fixes the log's root at `size`."""

    size: _Size
    old_root: _B64
    hashes: Annotated[tuple[_B64, ...], Field(max_length=64)]


Partition = Literal["evidence", "anonymous", "attested"]


class InvalidEntryContext(_Wire):
    """What re-validating an entry offline needs: the keys the observer pinned and the key
    events before the entry (each with its inclusion proof), the root it claims to have seen,
    and the earlier entries its failure rests on (`cited`: a continuity statement's citation
    that is not what it says)."""

    stage: _Text
    operator_vkey: _Text
    allowed_keys: Annotated[tuple[_Text, ...], Field(max_length=256)]
    key_events: Annotated[tuple[EvidenceEntry, ...], Field(max_length=100_000)]
    seen_proof: SeenProof | None = None
    # The log's partition decides which rules re-validate the entry.
    partition: Partition = "evidence"
    cited: Annotated[tuple[EvidenceEntry, ...], Field(max_length=16)] = ()


class Evidence(_Wire):
    """One evidence record (format `bledger-evidence/v1`); see docs/verifier.md."""

    format: Literal["bledger-evidence/v1"] = FORMAT
    kind: EvidenceKind
    origin: _Text
    log_vkey: _Text
    reason: _Text
    observer: _Text
    created_at: _Size
    received_from: _Text | None = None
    checkpoints: Annotated[tuple[EvidenceNote, ...], Field(min_length=1, max_length=2)]
    consistency_proof: EvidenceProof | None = None
    entry: EvidenceEntry | None = None
    context: InvalidEntryContext | None = None

    def to_json(self) -> str:
        """The record as indented JSON."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Evidence:
        """Parse a record; EvidenceError when malformed."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise EvidenceError(f"malformed evidence: {_first_error(e)}") from e

    def digest(self) -> str:
        """What identifies the misbehaviour, whoever observed it and whenever: kind, origin,
        the checkpoint bodies (not their signature lines) and the entry index."""
        bodies = sorted(note_body(n.note) for n in self.checkpoints)
        index = None if self.entry is None else self.entry.index
        key = json.dumps([self.kind, self.origin, bodies, index])
        return hashlib.sha256(key.encode()).hexdigest()

    def relayed(self, source: str) -> Evidence:
        """This record as received from peer `source`."""
        return self.model_copy(update={"received_from": source})


def note_body(note: str) -> str:
    """A signed note without its signature lines."""
    return note[: note.rfind("\n\n") + 1] if "\n\n" in note else note


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


# -- checking evidence offline (pure) ---------------------------------------------------------

_NO_ROOT = b""


def implied_old_root(first: int, second: int, proof: Sequence[bytes], root2: bytes) -> bytes | None:
    """The root at size `first` that a consistency proof to (`second`, `root2`) commits to.

    Requires 0 < first < second. Returns None when `first` is a power of two: such a proof starts
    from the old root instead of implying it. Raises merkle.ProofError unless the proof is well
    formed and reproduces `root2`.
    """
    if first & (first - 1) == 0:
        return None
    try:
        # RFC 9162 §2.1.4.2 computes the old root (fr) before comparing it: a root that can
        # never match makes verify_consistency report the root the proof implies.
        merkle.verify_consistency(first, second, proof, _NO_ROOT, root2)
    except merkle.RootMismatchError as e:
        if e.expected != _NO_ROOT:
            raise
        implied = e.calculated
    else:  # pragma: no cover - an empty old root never matches
        raise merkle.ProofError("consistency proof accepted an empty root")
    merkle.verify_consistency(first, second, proof, implied, root2)
    return implied


def _b64(text: str, what: str) -> bytes:
    try:
        return decode_base64(text)
    except ValueError as e:
        raise EvidenceError(f"{what} is not canonical base64") from e


def verify_evidence(evidence_json: str | bytes, log_vkey: str) -> str:
    """Check an evidence record offline with the log's verifier key; describe what it shows.

    Plan:
    1. parse the record (EvidenceError if malformed);
    2. open every checkpoint note with `log_vkey` and require the record's origin: nothing in
       the record counts unless the log signed it;
    3. by kind:
       - split-view: two checkpoints of one size with different roots (proven);
       - inconsistent: two checkpoints of sizes s1 < s2 and a consistency proof that reproduces
         the larger root from a root at s1 other than the smaller checkpoint's (proven: the log
         signed two trees, neither a prefix of the other);
       - entry-mismatch: the entry's committed leaf hash is included under the checkpoint, and
         the bytes shown hash to something else (proven that the bytes are not the entry; that
         the log served them is the observer's word);
       - invalid-entry: the entry is included under the checkpoint, and re-validating it (with
         the key events and cited entries given, under the keys the observer pinned) fails;
       - rollback, bad-proof, bad-data: the checkpoints are genuine; the rest is the observer's
         report of what the log served (not provable offline).

    Returns a one-line description; raises EvidenceError when the record proves nothing.
    """
    ev = Evidence.from_json(evidence_json)  # (1)
    try:
        verifier = parse_vkey(log_vkey)
    except NoteError as e:
        raise EvidenceError(f"bad log vkey: {e.diagnostic}") from e
    cps = []
    for n in ev.checkpoints:  # (2)
        try:
            cp, _ = open_checkpoint(n.note.encode(), verifier, ev.origin)
        except CheckpointError as e:
            raise EvidenceError(f"a checkpoint of the record: {e.diagnostic}") from e
        cps.append(cp)
    checks = {  # (3)
        "split-view": _split_view,
        "inconsistent": _inconsistent,
        "entry-mismatch": _entry_mismatch,
        "invalid-entry": _invalid_entry,
    }
    check = checks.get(ev.kind)
    if check is not None:
        return check(ev, cps)
    sizes = " then ".join(str(c.size) for c in cps)
    return (
        f"observation (not provable offline) of {ev.origin}: {ev.kind}: {ev.reason}; "
        f"checkpoint(s) of size {sizes} are genuinely signed by the log"
    )


def _two(ev: Evidence, cps: list[Checkpoint]) -> tuple[Checkpoint, Checkpoint]:
    if len(cps) != 2:
        raise EvidenceError(f"{ev.kind} evidence needs two checkpoints, has {len(cps)}")
    return cps[0], cps[1]


def _split_view(ev: Evidence, cps: list[Checkpoint]) -> str:
    a, b = _two(ev, cps)
    if a.size != b.size:
        raise EvidenceError(f"split-view checkpoints have sizes {a.size} and {b.size}")
    if a.root_hash == b.root_hash:
        raise EvidenceError("split-view checkpoints have the same root")
    return (
        f"proven split view: {ev.origin} signed two different trees of size {a.size} "
        f"(roots {a.root_hash.hex()} and {b.root_hash.hex()})"
    )


def _inconsistent(ev: Evidence, cps: list[Checkpoint]) -> str:
    small, large = _two(ev, cps)
    p = ev.consistency_proof
    if p is None:
        raise EvidenceError("inconsistent evidence without a consistency proof")
    if (p.first, p.second) != (small.size, large.size) or not p.first < p.second:
        raise EvidenceError(
            f"proof {p.first} -> {p.second} does not join sizes {small.size} -> {large.size}"
        )
    old_root = _b64(p.old_root, "old_root")
    hashes = [_b64(h, "proof hash") for h in p.hashes]
    if p.first == 0:
        if hashes or old_root != merkle.EMPTY_ROOT:
            raise EvidenceError("a proof from size 0 is empty and implies the empty root")
    else:
        try:
            merkle.verify_consistency(p.first, p.second, hashes, old_root, large.root_hash)
        except merkle.ProofError as e:
            raise EvidenceError(f"the proof does not reproduce the larger root: {e}") from e
    if old_root == small.root_hash:
        raise EvidenceError("the checkpoints are consistent: the proof implies the smaller root")
    return (
        f"proven fork: {ev.origin} signed size {small.size} with root {small.root_hash.hex()}, "
        f"but its tree of size {large.size} has root {old_root.hex()} at size {small.size}"
    )


def _included(e: EvidenceEntry, cp: Checkpoint, what: str) -> tuple[bytes, bytes]:
    """Verify that `e.leaf_hash` is leaf `e.index` under `cp`; return (data, leaf hash)."""
    leaf = _b64(e.leaf_hash, "leaf_hash")
    proof = [_b64(h, "inclusion proof hash") for h in e.inclusion_proof]
    try:
        merkle.verify_inclusion(leaf, e.index, cp.size, proof, cp.root_hash)
    except merkle.ProofError as err:
        raise EvidenceError(f"{what} {e.index} is not included: {err.diagnostic}") from err
    return _b64(e.data, "entry data"), leaf


def _entry_mismatch(ev: Evidence, cps: list[Checkpoint]) -> str:
    if ev.entry is None or len(cps) != 1:
        raise EvidenceError("entry-mismatch evidence needs one checkpoint and an entry")
    data, leaf = _included(ev.entry, cps[0], "entry")
    if merkle.leaf_hash(data) == leaf:
        raise EvidenceError(f"entry {ev.entry.index} matches its committed leaf hash")
    return (
        f"proven: the bytes shown as entry {ev.entry.index} of {ev.origin} are not the entry its "
        f"checkpoint of size {cps[0].size} commits to (leaf hash {leaf.hex()}); that the log "
        f"served them is the observer's report"
    )


def _invalid_entry(ev: Evidence, cps: list[Checkpoint]) -> str:
    ctx, entry = ev.context, ev.entry
    if ctx is None or entry is None or len(cps) != 1:
        raise EvidenceError("invalid-entry evidence needs one checkpoint, an entry and context")
    cp = cps[0]
    data, leaf = _included(entry, cp, "entry")
    if merkle.leaf_hash(data) != leaf:
        raise EvidenceError(f"entry {entry.index} does not hash to its leaf hash")
    pinned = FollowedLog("", "", ev.origin, ev.log_vkey, ctx.operator_vkey, ctx.allowed_keys)
    try:
        roots, allowed, fixed = pinned.fixed_keys()
    except ValueError as e:
        raise EvidenceError(f"bad pinned key in the context: {e}") from e
    chain = KeyChain(roots, allowed)
    last = -1
    for ke in ctx.key_events:
        kdata, kleaf = _included(ke, cp, "key event")
        if merkle.leaf_hash(kdata) != kleaf or not last < ke.index < entry.index:
            raise EvidenceError(f"key event {ke.index} is out of order or not its leaf")
        last = ke.index
        try:
            validate_entry(ke.index, kdata, ev.origin, chain, fixed, None)
        except EntryInvalid as e:
            raise EvidenceError(f"key event {ke.index} does not replay: {e.diagnostic}") from e

    held: dict[int, bytes] = {}
    for ce in ctx.cited:
        cdata, cleaf = _included(ce, cp, "cited entry")
        if merkle.leaf_hash(cdata) != cleaf or not ce.index < entry.index:
            raise EvidenceError(f"cited entry {ce.index} is not its leaf or not before the entry")
        held[ce.index] = cdata
    if ctx.stage == "duplicate":
        return _duplicate(ev, cp, entry.index, data, held)

    def root_at(size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        if size == cp.size:
            return cp.root_hash
        sp = ctx.seen_proof
        if sp is None or sp.size != size:
            raise EvidenceError(f"no proof of the log's root at size {size} in the context")
        old = _b64(sp.old_root, "seen old_root")
        hashes = [_b64(h, "seen proof hash") for h in sp.hashes]
        try:
            merkle.verify_consistency(size, cp.size, hashes, old, cp.root_hash)
        except merkle.ProofError as e:
            raise EvidenceError(f"seen proof does not verify: {e.diagnostic}") from e
        return old

    try:
        # Attested entries are checked without the evidence log's chain (the context does not
        # carry it): what remains is the statement, anti-backdating and the partition's shape.
        validate_partition_entry(
            ctx.partition,
            entry.index,
            data,
            ev.origin,
            root_at,
            chain=chain,
            fixed=fixed,
            entry_at=held.get,
        )
    except EntryInvalid as e:
        relative = e.stage in ("signature", "key-chain", "credentials")
        basis = (
            f" (relative to the operator key and {len(ctx.allowed_keys)} allowed key(s) the "
            f"observer pinned, and the {len(ctx.key_events)} key event(s) listed)"
            if relative
            else ""
        )
        return (
            f"proven: entry {entry.index} is in {ev.origin} at size {cp.size}, and it fails "
            f"{e.stage}: {e.problem}{basis}"
        )
    raise EvidenceError(f"entry {entry.index} re-validates: the record shows no misbehaviour")


def _duplicate(
    ev: Evidence, cp: Checkpoint, index: int, data: bytes, held: dict[int, bytes]
) -> str:
    """Two entries included under one checkpoint that hold one statement (same digest)."""
    digest = entry_statement_digest(data)
    for earlier, cdata in sorted(held.items()):
        if digest is not None and entry_statement_digest(cdata) == digest:
            return (
                f"proven: entries {earlier} and {index} of {ev.origin} are both in the tree of "
                f"size {cp.size} and hold one statement (digest {digest.hex()}): a log holds "
                "one entry per statement"
            )
    raise EvidenceError(f"no cited entry holds the statement of entry {index}")
