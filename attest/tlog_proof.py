"""C2SP tlog-proof (https://c2sp.org/tlog-proof): an offline-verifiable proof of inclusion.

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional, unauthenticated)
    index <N>
    <base64 hash>             (zero or more: the RFC 6962 inclusion proof, leaf side first)

    <the checkpoint note, verbatim, with its signature and cosignature lines>

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from attest.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    open_cosigned_checkpoint,
    parse_decimal,
)
from attest.merkle import HASH_SIZE, ProofError, leaf_hash, verify_inclusion
from attest.note import (
    NoteError,
    NoteSignature,
    NoteVerifier,
    decode_base64,
    encode_base64,
    parse_note,
)

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
"""An inclusion proof in a tree of at most 2^64 - 1 leaves has at most 64 hashes."""


class TlogProofError(NoteError):
    """A tlog-proof is malformed or does not verify; `diagnostic` says which step failed."""


@dataclass(frozen=True)
class TlogProof:
    """An inclusion proof of entry `index`, the log's signed `checkpoint` note, optional `extra`.

    `extra` is opaque and NOT authenticated: never trust it implicitly. `None` means no extra
    line; an empty `extra` is refused so each proof has exactly one spelling.
    Validated on construction: the checkpoint must parse as a signed note whose text is a
    checkpoint body (nothing is verified until `verify_tlog_proof`).
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < MAX_TREE_SIZE:
            raise TlogProofError(f"index {self.index} is outside 0..2^64-2")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise TlogProofError(f"proof has {len(self.proof)} hashes, most is 64")
        for i, h in enumerate(self.proof):
            if len(h) != HASH_SIZE:
                raise TlogProofError(f"proof hash {i} is {len(h)} bytes, want {HASH_SIZE}")
        if self.extra is not None and not self.extra:
            raise TlogProofError("extra data is empty: use None for no extra line")
        if type(self.checkpoint) is bytes:
            _check_checkpoint(self.checkpoint)
        else:
            _check_checkpoint.__wrapped__(self.checkpoint)


@lru_cache(maxsize=16)
def _check_checkpoint(checkpoint: bytes) -> None:
    """Raise TlogProofError unless `checkpoint` parses as a signed note whose text is a
    checkpoint body (syntax only; the signatures are checked by `verify_tlog_proof`).

    Cached: a pure function of the bytes, and a log proves every entry of a batch against one
    checkpoint, so a batch answer parses it once rather than once per entry. Only successes
    are remembered (an exception is not a return value); `bytes` only, so the cache holds no
    mutable key."""
    try:
        Checkpoint.parse(parse_note(checkpoint).text)
    except NoteError as e:
        raise TlogProofError(f"checkpoint: {e.diagnostic}") from e


def format_tlog_proof(p: TlogProof) -> str:
    """The text form of a proof (store it with the extension `.tlog-proof`)."""
    lines = [HEADER]
    if p.extra is not None:
        lines.append(f"extra {encode_base64(p.extra)}")
    lines.append(f"index {p.index}")
    lines.extend(encode_base64(h) for h in p.proof)
    # The checkpoint was checked to be a note on construction, so it is UTF-8.
    return "".join(line + "\n" for line in lines) + "\n" + p.checkpoint.decode("utf-8")


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse the text form of a proof; raise TlogProofError unless it is exactly well formed."""
    # Every line before the separator is non-empty, so the first blank line is the separator;
    # the checkpoint's own blank line (before its signatures) comes after it.
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise TlogProofError("proof has no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise TlogProofError(f"first line is {lines[0][:40]!r}, want {HEADER!r}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = _parse_base64(rest.pop(0)[len("extra ") :], "extra data")
    if not rest or not rest[0].startswith("index "):
        raise TlogProofError("proof has no `index N` line")
    index = _parse_index(rest.pop(0)[len("index ") :])
    if len(rest) > MAX_PROOF_HASHES:
        raise TlogProofError(f"proof has {len(rest)} hash lines, most is {MAX_PROOF_HASHES}")
    proof = tuple(_parse_hash(line, i) for i, line in enumerate(rest))
    return TlogProof(index, proof, checkpoint.encode("utf-8"), extra)


def _parse_index(text: str) -> int:
    try:
        return parse_decimal(text, "index")
    except CheckpointError as e:
        raise TlogProofError(e.diagnostic) from e


def _parse_base64(text: str, what: str) -> bytes:
    try:
        return decode_base64(text)
    except ValueError as e:
        raise TlogProofError(f"{what} is not valid base64: {e}") from e


def _parse_hash(text: str, i: int) -> bytes:
    raw = _parse_base64(text, f"proof hash {i}")
    if len(raw) != HASH_SIZE:
        raise TlogProofError(f"proof hash {i} is {len(raw)} bytes, want {HASH_SIZE}")
    return raw


def verify_tlog_proof(
    p: TlogProof, entry: bytes, log_verifier: NoteVerifier, origin: str
) -> Checkpoint:
    """Verify that `entry` is in the log `origin`, and return the checkpoint that proves it.

    Witness cosignatures are not required here (see `verify_cosigned_tlog_proof`).
    """
    cp, _ = verify_cosigned_tlog_proof(p, entry, log_verifier, origin, ())
    return cp


def verify_cosigned_tlog_proof(
    p: TlogProof,
    entry: bytes,
    log_verifier: NoteVerifier,
    origin: str,
    cosigners: Iterable[NoteVerifier],
) -> tuple[Checkpoint, list[NoteSignature]]:
    """Verify a proof as `verify_tlog_proof` does; also return which `cosigners` verified.

    Plan:
    1. open the checkpoint: the log key's signature must verify, any trusted signature that
       fails rejects the proof, and the origin must be `origin`;
    2. verify the inclusion of `leaf_hash(entry)` at `p.index` against the checkpoint's root.

    Deciding whether enough cosigners signed is witness policy, left to the caller.
    """
    try:
        cp, _, cosigned = open_cosigned_checkpoint(p.checkpoint, log_verifier, cosigners, origin)
    except CheckpointError as e:  # (1)
        raise TlogProofError(e.diagnostic) from e
    try:
        verify_inclusion(leaf_hash(entry), p.index, cp.size, p.proof, cp.root_hash)  # (2)
    except ProofError as e:
        raise TlogProofError(f"inclusion proof: {e.diagnostic}") from e
    return cp, cosigned
