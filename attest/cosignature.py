"""C2SP tlog-cosignature v1 (https://c2sp.org/tlog-cosignature), the Ed25519 type only.

A witness cosignature is a note signature of signature type 0x04 whose bytes, after the key ID,
are `u64 big-endian timestamp || Ed25519 signature` over

    cosignature/v1
    time <timestamp>
    <the whole checkpoint body, extension lines included>

Pure: no I/O and no clock; the caller passes the time in.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.checkpoint import Checkpoint
from attest.note import (
    ED25519_SIGNATURE_SIZE,
    SIG_TYPE_COSIGNATURE_V1,
    Ed25519NoteVerifier,
    NoteError,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    format_vkey,
    key_id,
)

COSIGNATURE_HEADER = "cosignature/v1\n"
TIMESTAMP_SIZE = 8
COSIGNATURE_SIZE = TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE
MAX_TIMESTAMP = (1 << 63) - 1
"""The spec: a timestamp MUST NOT exceed 2^63 - 1."""


class CosignatureError(NoteError):
    """A cosignature is malformed or cannot be made (bad timestamp, body not a checkpoint)."""


def cosigned_message(checkpoint_body: str | bytes, timestamp: int) -> bytes:
    """The bytes an Ed25519 v1 cosignature signs: header, `time <timestamp>`, checkpoint body."""
    body = checkpoint_body.encode("utf-8") if isinstance(checkpoint_body, str) else checkpoint_body
    return f"{COSIGNATURE_HEADER}time {timestamp}\n".encode("ascii") + body


def timestamp_of(signature: bytes) -> int:
    """The POSIX timestamp inside a v1 cosignature (the bytes after the key ID).

    Raises CosignatureError unless the signature is 8 + 64 bytes with a timestamp <= 2^63 - 1.
    """
    if len(signature) != COSIGNATURE_SIZE:
        raise CosignatureError(
            f"cosignature is {len(signature)} bytes, want {COSIGNATURE_SIZE} (timestamp || sig)"
        )
    timestamp = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
    if timestamp > MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} exceeds 2^63 - 1")
    return timestamp


class CosignatureVerifier(NoteVerifier):
    """Verifier of a witness's Ed25519 v1 cosignatures (signature type 0x04).

    Plugs into `open_note` like any NoteVerifier; the timestamp it checks against is the one
    carried in the signature bytes, so the signed message always commits to that time.
    """

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        public = public_key.public_bytes_raw()
        super().__init__(name, key_id(name, SIG_TYPE_COSIGNATURE_V1, public))
        # Ed25519 verification is shared with plain notes; only the signed message differs.
        self._ed25519 = Ed25519NoteVerifier(name, public_key)
        self._public = public

    @property
    def vkey(self) -> str:
        """This key as a verifier key string of type 0x04."""
        return format_vkey(self.name, SIG_TYPE_COSIGNATURE_V1, self._public)

    def timestamp_of(self, signature: NoteSignature | bytes) -> int:
        """The timestamp of one of this witness's cosignatures (line or bytes after the key ID)."""
        if isinstance(signature, NoteSignature):
            if (signature.name, signature.key_id) != (self.name, self.key_id):
                raise CosignatureError(f"signature is by {signature.name}, not {self.name}")
            signature = signature.signature
        return timestamp_of(signature)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` (timestamp || sig) cosigns the checkpoint body `message`."""
        try:
            timestamp = timestamp_of(signature)
        except CosignatureError:
            return False
        signed = cosigned_message(message, timestamp)
        return self._ed25519.verify(signed, signature[TIMESTAMP_SIZE:])


class CosignatureSigner:
    """A witness's Ed25519 v1 cosigning key (signature type 0x04).

    Not a NoteSigner itself, because a cosignature needs a time: use `cosign`, or `at(timestamp)`
    for a NoteSigner to pass to `sign_note` / `add_signatures`.
    """

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._public = private_key.public_key().public_bytes_raw()
        self._verifier = CosignatureVerifier(name, private_key.public_key())

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID (computed with signature type 0x04)."""
        return self._verifier.key_id

    @property
    def vkey(self) -> str:
        """The verifier key string (type 0x04) to publish for this witness."""
        return self._verifier.vkey

    def verifier(self) -> CosignatureVerifier:
        """The matching verifier."""
        return self._verifier

    def cosign(self, checkpoint_body: str, timestamp: int) -> NoteSignature:
        """Cosign a checkpoint body at `timestamp` (POSIX seconds, 0..2^63-1).

        Requires the body to parse as a checkpoint: a witness states something about a log's
        tree head, never about arbitrary text.
        """
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise CosignatureError(f"timestamp {timestamp} is outside 0..2^63-1")
        Checkpoint.parse(checkpoint_body)
        signature = self._private_key.sign(cosigned_message(checkpoint_body, timestamp))
        stamped = timestamp.to_bytes(TIMESTAMP_SIZE, "big") + signature
        return NoteSignature(self.name, self.key_id, stamped)

    def at(self, timestamp: int) -> NoteSigner:
        """A NoteSigner that cosigns at the fixed `timestamp`."""
        return _TimedCosigner(self, timestamp)


class _TimedCosigner(NoteSigner):
    """A CosignatureSigner bound to one timestamp, usable wherever a NoteSigner is."""

    def __init__(self, cosigner: CosignatureSigner, timestamp: int) -> None:
        super().__init__(cosigner.name, cosigner.key_id)
        self._cosigner = cosigner
        self._timestamp = timestamp

    def sign(self, message: bytes) -> NoteSignature:
        """Cosign the checkpoint body `message` at the bound timestamp."""
        try:
            body = message.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CosignatureError("checkpoint body is not UTF-8") from e
        return self._cosigner.cosign(body, self._timestamp)
