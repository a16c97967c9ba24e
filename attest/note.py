"""C2SP signed-note (https://c2sp.org/signed-note) with Ed25519 keys.

A signed note is a UTF-8 text ending in a newline, a blank line, and one or more signature lines
`— <key name> base64(key ID || signature)`. Pure: no I/O, no clock.

Trust rules (spec section "Signatures"), as `open_note` applies them:

1. A signature line whose (key name, key ID) matches no trusted verifier is ignored (kept in
   `Note.signatures`, never in the verified list), even if the name *or* the ID is known.
2. Every line from a trusted key is verified; if any fails, the whole note is rejected
   (`InvalidSignatureError`). The spec says clients SHOULD do so; the Go reference does too.
   Unlike the Go reference, a *repeated* line from a trusted key is verified as well, not skipped.
3. If no trusted key signed, the note is rejected (`UnverifiedNoteError`), as the spec says MUST.
"""

from __future__ import annotations

import base64
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.errors import AttestError

SIG_TYPE_ED25519 = 0x01
"""Signature type byte of plain Ed25519 note signatures."""

SIG_TYPE_COSIGNATURE_V1 = 0x04
"""Signature type byte of timestamped Ed25519 witness cosignatures (c2sp.org/tlog-cosignature)."""

KEY_ID_SIZE = 4
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

MAX_SIGNATURES = 100
"""Most signature lines accepted in one note; the spec asks for at least 16, Go allows 100."""

MAX_NOTE_SIZE = 1 << 20
"""Most bytes accepted in one note: 100 post-quantum signatures (~5 kB each) fit with room."""

SIGNATURE_PREFIX = "\u2014 "  # em dash, space


class NoteError(AttestError):
    """Base error of the signed-note family; `diagnostic` is what the CLI prints."""


class MalformedNoteError(NoteError):
    """The bytes are not a well-formed signed note (or a signer/key is unusable)."""


class MalformedKeyError(NoteError):
    """A verifier key string (vkey) is malformed, of an unknown type, or has a wrong key ID."""


class UnverifiedNoteError(NoteError):
    """The note parsed, but no trusted key signed it; `note` holds the unverified parse."""

    def __init__(self, diagnostic: str, note: Note) -> None:
        super().__init__(diagnostic)
        self.note = note


class InvalidSignatureError(NoteError):
    """A trusted key's signature line does not verify, so the whole note is rejected."""

    def __init__(self, name: str, key_id: bytes) -> None:
        super().__init__(f"invalid signature for key {name}+{key_id.hex()}")
        self.name = name
        self.key_id = key_id


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """The 4-byte key ID: `SHA-256(name || 0x0A || sig_type || public_key)[:4]`."""
    data = name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key
    return hashlib.sha256(data).digest()[:KEY_ID_SIZE]


def is_valid_name(name: str) -> bool:
    """Whether `name` is a valid key name: non-empty, no Unicode space, no `+`, no control."""
    if not name or "+" in name:
        return False
    # isspace() covers every Unicode space (and the \x1c-\x1f separators); the explicit control
    # check keeps names printable, since a note may not contain control characters anyway.
    return not any(c.isspace() or c < " " for c in name)


def decode_base64(text: str) -> bytes:
    """Decode standard padded base64 (RFC 4648 §4); raise ValueError unless canonical.

    Rejecting non-canonical spellings (stray padding bits) keeps one byte string per value,
    so a parsed object always formats back to the exact bytes it came from.
    """
    if not text.isascii():
        raise ValueError("base64 contains non-ASCII characters")
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("base64 is not in canonical form")
    return raw


def encode_base64(data: bytes) -> str:
    """Encode bytes as standard padded base64 (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key `name`, 4-byte `key_id`, and the `signature` bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise MalformedNoteError(f"invalid key name {self.name!r}")
        if len(self.key_id) != KEY_ID_SIZE:
            raise MalformedNoteError(f"key ID is {len(self.key_id)} bytes, want {KEY_ID_SIZE}")
        if not self.signature:
            raise MalformedNoteError(f"empty signature from {self.name}")

    def line(self) -> str:
        """The signature line, `— <name> base64(key_id || signature)\\n`."""
        return f"{SIGNATURE_PREFIX}{self.name} {encode_base64(self.key_id + self.signature)}\n"


def _check_text(text: str) -> None:
    """Raise unless `text` may be the text of a note: ends in newline, no control characters."""
    if not text.endswith("\n"):
        raise MalformedNoteError("note text does not end in a newline")
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNoteError("note text contains a control character")


@dataclass(frozen=True)
class Note:
    """A parsed signed note: its `text` (with final newline) and every signature line, in order.

    The text of a Note that did not come out of `open_note` is unauthenticated: do not act on it.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_text(self.text)

    def to_bytes(self) -> bytes:
        """Encode as a signed note: text, blank line, signature lines.

        Requires 1 <= len(signatures) <= MAX_SIGNATURES, so nothing is emitted that
        `parse_note` would refuse.
        """
        _check_signature_count(len(self.signatures))
        lines = "".join(sig.line() for sig in self.signatures)
        return (self.text + "\n" + lines).encode("utf-8")


def _check_signature_count(count: int) -> None:
    if count == 0:
        raise MalformedNoteError("note has no signature lines")
    if count > MAX_SIGNATURES:
        raise MalformedNoteError(f"note has {count} signature lines, limit {MAX_SIGNATURES}")


class NoteSigner(ABC):
    """Something that signs note texts as key (`name`, `key_id`)."""

    def __init__(self, name: str, key_id: bytes) -> None:
        if not is_valid_name(name):
            raise MalformedNoteError(f"invalid key name {name!r}")
        if len(key_id) != KEY_ID_SIZE:
            raise MalformedNoteError(f"key ID is {len(key_id)} bytes, want {KEY_ID_SIZE}")
        self._name = name
        self._key_id = key_id

    @property
    def name(self) -> str:
        """The key name written on the signature line."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID written at the start of the signature."""
        return self._key_id

    @abstractmethod
    def sign(self, message: bytes) -> NoteSignature:
        """Sign a note text (its UTF-8 bytes, final newline included)."""


class NoteVerifier(ABC):
    """A trusted key: recognises signature lines by (`name`, `key_id`) and checks them."""

    def __init__(self, name: str, key_id: bytes) -> None:
        if not is_valid_name(name):
            raise MalformedKeyError(f"invalid key name {name!r}")
        if len(key_id) != KEY_ID_SIZE:
            raise MalformedKeyError(f"key ID is {len(key_id)} bytes, want {KEY_ID_SIZE}")
        self._name = name
        self._key_id = key_id

    @property
    def name(self) -> str:
        """The key name this verifier answers to."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID this verifier answers to."""
        return self._key_id

    @abstractmethod
    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` (the bytes after the key ID) signs the note text `message`.

        A per-line check: `open_note` turns a False into `InvalidSignatureError`.
        """


def format_vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """The verifier key string `<name>+<hex key ID>+base64(sig_type || public_key)`."""
    if not is_valid_name(name):
        raise MalformedKeyError(f"invalid key name {name!r}")
    kid = key_id(name, sig_type, public_key).hex()
    return f"{name}+{kid}+{encode_base64(bytes([sig_type]) + public_key)}"


class Ed25519NoteSigner(NoteSigner):
    """Plain Ed25519 note signer (signature type 0x01)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        public = private_key.public_key().public_bytes_raw()
        super().__init__(name, key_id(name, SIG_TYPE_ED25519, public))
        self._private_key = private_key
        self._public = public

    @property
    def vkey(self) -> str:
        """The verifier key string to give to those who check this signer's notes."""
        return format_vkey(self.name, SIG_TYPE_ED25519, self._public)

    def verifier(self) -> Ed25519NoteVerifier:
        """The matching verifier."""
        return Ed25519NoteVerifier(self.name, self._private_key.public_key())

    def sign(self, message: bytes) -> NoteSignature:
        """Sign a note text with Ed25519 (RFC 8032)."""
        return NoteSignature(self.name, self.key_id, self._private_key.sign(message))


class Ed25519NoteVerifier(NoteVerifier):
    """Plain Ed25519 note verifier (signature type 0x01)."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        public = public_key.public_bytes_raw()
        super().__init__(name, key_id(name, SIG_TYPE_ED25519, public))
        self._public_key = public_key
        self._public = public

    @property
    def vkey(self) -> str:
        """This key as a verifier key string."""
        return format_vkey(self.name, SIG_TYPE_ED25519, self._public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is a valid Ed25519 signature of `message` by this key."""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_signature_line(line: str) -> NoteSignature:
    """Parse one signature line, without its newline: `— <name> base64(key ID || signature)`."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNoteError(f"signature line does not start with an em dash: {line[:40]!r}")
    name, sep, sig_b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not sep:
        raise MalformedNoteError(f"signature line has no space after the key name: {line[:40]!r}")
    try:
        raw = decode_base64(sig_b64)
    except ValueError as e:
        raise MalformedNoteError(f"signature of {name!r} is not valid base64: {e}") from e
    if len(raw) < KEY_ID_SIZE + 1:
        raise MalformedNoteError(f"signature of {name!r} is {len(raw)} bytes, want at least 5")
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def parse_note(data: bytes) -> Note:
    """Parse a signed note without verifying anything; raise MalformedNoteError if malformed.

    The text of the result is unauthenticated: use `open_note` to act on a note.
    """
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"note is {len(data)} bytes, limit {MAX_NOTE_SIZE}")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedNoteError(f"note is not valid UTF-8 at byte {e.start}") from e
    if any(c < " " and c != "\n" for c in decoded):
        raise MalformedNoteError("note contains a control character")
    # The text ends at the *last* blank line: the text may itself contain blank lines.
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block:
        raise MalformedNoteError("note has no signature lines")
    if not block.endswith("\n"):
        raise MalformedNoteError("note does not end in a newline")
    lines = block[:-1].split("\n")
    _check_signature_count(len(lines))
    return Note(text, tuple(parse_signature_line(line) for line in lines))


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """Sign `text` (which must end in a newline) with each signer, in order."""
    if not signers:
        raise MalformedNoteError("no signers")
    _check_text(text)
    message = text.encode("utf-8")
    return Note(text, tuple(s.sign(message) for s in signers)).to_bytes()


def add_signatures(note: bytes, signers: Sequence[NoteSigner]) -> bytes:
    """Append signatures by `signers` to an existing signed note.

    Existing lines are kept in order, except those by the same (name, key ID) as a new signer,
    which are dropped (as the Go reference does), so re-signing replaces rather than duplicates.
    Nothing is verified: open the note first if its existing signatures matter.
    """
    if not signers:
        raise MalformedNoteError("no signers")
    parsed = parse_note(note)
    message = parsed.text.encode("utf-8")
    new = tuple(s.sign(message) for s in signers)
    replaced = {(s.name, s.key_id) for s in new}
    kept = tuple(s for s in parsed.signatures if (s.name, s.key_id) not in replaced)
    return Note(parsed.text, kept + new).to_bytes()


def _index_verifiers(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, bytes], NoteVerifier]:
    index: dict[tuple[str, bytes], NoteVerifier] = {}
    for v in verifiers:
        k = (v.name, v.key_id)
        if k in index and index[k] is not v:
            # Two trusted keys with one (name, ID) is a misconfiguration: refuse to guess.
            raise NoteError(f"ambiguous verifiers for key {v.name}+{v.key_id.hex()}")
        index[k] = v
    return index


def open_note(data: bytes, verifiers: Iterable[NoteVerifier]) -> tuple[Note, list[NoteSignature]]:
    """Parse a signed note and verify it against trusted keys.

    Plan:
    1. parse the note (MalformedNoteError);
    2. skip lines whose (name, key ID) matches no verifier: unknown signers are ignored;
    3. verify every other line; one failure rejects the note (InvalidSignatureError);
    4. require at least one verified line (UnverifiedNoteError).

    Returns the note and its verified signatures, one per trusted key (the first line of each).
    Unknown lines stay in `note.signatures`, so callers can count them.
    """
    index = _index_verifiers(verifiers)
    note = parse_note(data)  # (1)
    message = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    for sig in note.signatures:
        verifier = index.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # (2)
        if not verifier.verify(message, sig.signature):
            raise InvalidSignatureError(sig.name, sig.key_id)  # (3)
        verified.setdefault((sig.name, sig.key_id), sig)
    if not verified:
        raise UnverifiedNoteError("note has no signature from a trusted key", note)  # (4)
    return note, list(verified.values())
