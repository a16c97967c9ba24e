"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): a log's signed tree head.

The body is `<origin>\\n<size>\\n<base64 root hash>\\n` followed by optional extension lines,
signed as a C2SP signed note. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from attest.merkle import HASH_SIZE
from attest.note import (
    Note,
    NoteError,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    decode_base64,
    encode_base64,
    open_note,
    sign_note,
)

MAX_TREE_SIZE = (1 << 64) - 1
"""Tree sizes are uint64 everywhere else (tiles, witness protocol), so larger ones are refused."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(NoteError):
    """A checkpoint is malformed, from the wrong origin, or not signed by the log's key."""


def parse_decimal(text: str, what: str) -> int:
    """Parse a uint64 written in ASCII decimal with no sign, spaces or leading zeroes."""
    # The regex is ASCII-only on purpose: int() would accept "+1", " 1", "1_0" and non-ASCII digits.
    if not _DECIMAL.fullmatch(text):
        raise CheckpointError(f"{what} {text[:30]!r} is not a plain decimal number")
    value = int(text)
    if value > MAX_TREE_SIZE:
        raise CheckpointError(f"{what} {text[:30]} does not fit in 64 bits")
    return value


def _check_line(line: str, what: str) -> None:
    if not line:
        raise CheckpointError(f"checkpoint {what} is empty")
    if any(c < " " for c in line):
        raise CheckpointError(f"checkpoint {what} contains a control character or newline")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: `origin`, tree `size`, 32-byte `root_hash`, opaque `extensions`.

    Validated on construction, so every Checkpoint has a body that `parse` accepts.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {self.size} is outside 0..2^64-1")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"root hash is {len(self.root_hash)} bytes, want {HASH_SIZE}")
        for ext in self.extensions:
            _check_line(ext, "extension line")

    def body(self) -> str:
        """The note text: origin, size, base64 root hash and extension lines, each with `\\n`."""
        lines = (self.origin, str(self.size), encode_base64(self.root_hash), *self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body (the note text); raise CheckpointError unless exact."""
        if not body.endswith("\n"):
            raise CheckpointError("checkpoint body does not end in a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint body has {len(lines)} lines, want at least 3")
        origin, size, root, *extensions = lines
        _check_line(origin, "origin")  # first, so the diagnostic names the first bad line
        return cls(origin, parse_decimal(size, "tree size"), _parse_hash(root), tuple(extensions))


def _parse_hash(text: str) -> bytes:
    try:
        raw = decode_base64(text)
    except ValueError as e:
        raise CheckpointError(f"root hash is not valid base64: {e}") from e
    if len(raw) != HASH_SIZE:
        raise CheckpointError(f"root hash is {len(raw)} bytes, want {HASH_SIZE}")
    return raw


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> bytes:
    """The checkpoint as a signed note, signed by the log's key."""
    return sign_note(cp.body(), [signer])


def open_checkpoint(
    data: bytes, log_verifier: NoteVerifier, origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint with the log's key and parse it.

    Signatures by other keys (witnesses, a rotated log key) are ignored. Raises CheckpointError
    when the note is malformed, the log's signature is missing or invalid, the body is not a
    checkpoint, or (when `origin` is given) the origin differs.
    """
    cp, note, _ = open_cosigned_checkpoint(data, log_verifier, (), origin)
    return cp, note


def open_cosigned_checkpoint(
    data: bytes,
    log_verifier: NoteVerifier,
    cosigners: Iterable[NoteVerifier],
    origin: str | None = None,
) -> tuple[Checkpoint, Note, list[NoteSignature]]:
    """Like `open_checkpoint`, and also return the signatures of `cosigners` that verified.

    Plan:
    1. open the note with the log key and the cosigners: unknown signers are ignored, any
       invalid signature by a trusted key rejects the note (signed-note, "Signatures");
    2. require a verified signature by the log key;
    3. parse the body as a checkpoint (only now: unsigned text must be ignored);
    4. check the origin.

    A cosigner that did not sign is simply absent from the returned list: quorum is policy,
    decided by the caller.
    """
    cosigners = list(cosigners)
    try:
        note, verified = open_note(data, [log_verifier, *cosigners])  # (1)
    except NoteError as e:
        raise CheckpointError(f"checkpoint: {e.diagnostic}") from e
    log_key = (log_verifier.name, log_verifier.key_id)
    if not any((s.name, s.key_id) == log_key for s in verified):  # (2)
        raise CheckpointError(f"checkpoint is not signed by log key {log_verifier.name}")
    cp = Checkpoint.parse(note.text)  # (3)
    if origin is not None and cp.origin != origin:  # (4)
        raise CheckpointError(f"checkpoint origin is {cp.origin!r}, want {origin!r}")
    cosigned = [s for s in verified if (s.name, s.key_id) != log_key]
    return cp, note, cosigned


def origin_hash(origin: str) -> str:
    """A log's name in URL paths (e.g. an audit node's `/gossip/<hash>`): lowercase hex SHA-256
    of its origin line, which may hold characters a path cannot."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()
