"""The errors `attest` raises: one base class whose `diagnostic` the CLI prints.

Verification in this package never returns a bool: it returns what it verified or raises one of
these. Callers that only need "did it fail" catch `AttestError`; the HTTP layer maps the subclasses
to status codes in one place.
"""

from __future__ import annotations


class AttestError(Exception):
    """Base class for every error raised by `attest`.

    `diagnostic` is one human-readable line (no trailing newline) that the CLI prints as is.
    """

    diagnostic: str

    def __init__(self, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic


class CanonicalizationError(AttestError):
    """JSON that is not I-JSON, not canonicalizable, or carries floats where none are allowed."""


class MalformedEnvelopeError(AttestError):
    """A DSSE envelope that does not decode: bad JSON shape, bad base64, unknown fields, too big."""


class VerificationError(AttestError):
    """A well-formed envelope that fails verification."""


class SignatureError(VerificationError):
    """No signature in the envelope verified against any trusted key."""


class ThresholdError(SignatureError):
    """Fewer distinct trusted keys verified than the threshold asks for.

    `got` is the number of distinct trusted public keys whose signature verified, `want` the
    threshold.
    """

    got: int
    want: int

    def __init__(self, got: int, want: int) -> None:
        super().__init__(
            f"signature threshold not met: {got} distinct trusted key(s) verified, need {want}"
        )
        self.got = got
        self.want = want


class PayloadTypeError(VerificationError):
    """The envelope's payloadType is not the one the verifier supports."""

    got: str
    want: str

    def __init__(self, got: str, want: str) -> None:
        super().__init__(f"unsupported payloadType {got!r}, want {want!r}")
        self.got = got
        self.want = want


class KeyFileError(AttestError):
    """A key file that cannot be read: wrong passphrase, not Ed25519, not PEM, already exists."""


class KeyNameError(AttestError):
    """A key name or key id string that breaks the C2SP signed-note rules."""


class StatementError(AttestError):
    """A payload that is not a valid in-toto Statement v1 with a known predicate."""


class PolicyError(AttestError):
    """A tlog-policy is malformed, or a checkpoint or proof does not satisfy it."""
