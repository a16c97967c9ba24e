"""Privacy Pass token type 0x0002, Blind RSA (2048-bit): RFC 9577 auth scheme, RFC 9578 §6 issuance.

The flow, with the function that runs each step:

    origin: www_authenticate(challenge, pk)          -> WWW-Authenticate: PrivateToken ...
    client: parse_www_authenticate(header)            -> TokenChallenge, issuer key
    client: request, state = begin_issuance(pk, challenge)     -> TokenRequest to the issuer
    issuer: response = issue(sk, request)                      -> TokenResponse to the client
    client: token = finalize_issuance(state, response)
    client: authorization(token)                      -> Authorization: PrivateToken token=...
    origin: token = parse_authorization(header); verify_token(pk, token, challenge_digest(...))

Decisions a caller must know:

* **Deterministic blind RSA.** RFC 9578 §6 runs token type 0x0002 with
  RSABSSA-SHA384-PSS-*Deterministic* (`PrepareIdentity`, sLen = 48): the token input already
  starts with a 32-byte client nonce, and the Token structure has no field for a randomized
  variant's prefix. Using the randomized variant here would produce tokens no other Privacy Pass
  implementation verifies (checked against the RFC 9578 appendix A.2 vectors).
* **token-key is the RSASSA-PSS SPKI.** `token_key_bytes` builds the DER SubjectPublicKeyInfo
  with the id-RSASSA-PSS OID and SHA-384 / MGF1-SHA-384 / saltLength 48 parameters, exactly as
  the RFC 9578 vectors spell it (hash AlgorithmIdentifiers without a NULL parameter);
  `token_key_id` is its SHA-256. `cryptography`'s own SPKI uses rsaEncryption, whose hash would
  be a different key id. `token_key_from_bytes` accepts only that exact encoding of a 2048-bit key.
* **Strict wire models.** Every message class validates its fields when constructed, and
  `decode` rejects trailing bytes, so `encode(decode(b)) == b` for every accepted `b` (the
  challenge digest is a hash of the bytes, so there must be one spelling).
* **Headers.** Parsing follows RFC 9110 §11 (`challenge`, `credentials`, `auth-param`); base64url
  values must be canonical and padded (RFC 9577 §2.1.2: "MUST include padding"), and therefore
  quoted. `parse_www_authenticate` ignores, as RFC 9577 requires, challenges of other schemes,
  of other token types, and PrivateToken challenges it cannot use; only a header that breaks the
  RFC 9110 grammar raises. `parse_authorization` ignores unknown parameters (RFC 9577 §2.2.2).
* **What verify_token does not do.** Double-spend prevention (remembering nonces) and choosing
  which challenge digests are acceptable are the origin's state, not this module's.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.rsa import (
    RSAPrivateKey,
    RSAPublicKey,
    RSAPublicNumbers,
)

from attest import blindrsa
from attest.errors import AttestError

__all__ = [
    "AUTH_SCHEME",
    "NID",
    "NK",
    "NONCE_LEN",
    "TOKEN_TYPE",
    "VARIANT",
    "ChallengeMismatchError",
    "IssuanceState",
    "KeyIdMismatchError",
    "MalformedMessageError",
    "PrivacyPassError",
    "PrivateTokenChallenge",
    "Token",
    "TokenChallenge",
    "TokenKeyError",
    "TokenRequest",
    "TokenResponse",
    "TokenResponseError",
    "TokenTypeError",
    "TokenVerificationError",
    "authorization",
    "begin_issuance",
    "challenge_digest",
    "finalize_issuance",
    "issue",
    "parse_authorization",
    "parse_www_authenticate",
    "token_key_bytes",
    "token_key_from_bytes",
    "token_key_id",
    "verify_token",
    "www_authenticate",
]

TOKEN_TYPE = 0x0002
"""Token type Blind RSA (2048-bit), RFC 9578 §8.2.2."""

NK = 256
"""Length of the authenticator, blinded_msg and blind_sig: the modulus of a 2048-bit key."""

NID = 32
"""Length of token_key_id (SHA-256)."""

NONCE_LEN = 32
"""Length of the client nonce and of a non-empty redemption_context."""

VARIANT = blindrsa.RSABSSA_SHA384_PSS_DETERMINISTIC
"""The blind RSA variant RFC 9578 §6 uses for token type 0x0002."""

AUTH_SCHEME = "PrivateToken"
"""The HTTP authentication scheme of RFC 9577."""

_KEY_BITS = NK * 8
_DIGEST_LEN = 32


class PrivacyPassError(AttestError):
    """Base class for every error raised by `attest.privacypass`."""


class MalformedMessageError(PrivacyPassError):
    """Bytes or a header value that do not decode as the Privacy Pass structure expected."""


class TokenTypeError(MalformedMessageError):
    """A message of a token type other than 0x0002. `got`/`want` are the types."""

    got: int
    want: int

    def __init__(self, got: int, want: int = TOKEN_TYPE) -> None:
        super().__init__(f"token type 0x{got:04x} not supported, want 0x{want:04x}")
        self.got = got
        self.want = want


class TokenKeyError(PrivacyPassError):
    """A key that cannot be a token type 0x0002 issuer key: not 2048-bit RSA, or a bad SPKI."""


class KeyIdMismatchError(PrivacyPassError):
    """A (truncated) token_key_id that is not the key's. `got`/`want` are hex strings."""

    got: str
    want: str

    def __init__(self, what: str, got: str, want: str) -> None:
        super().__init__(f"{what} {got} does not match the issuer key's {want}")
        self.got = got
        self.want = want


class TokenResponseError(PrivacyPassError):
    """The issuer's TokenResponse does not unblind to a valid signature: no token was made."""


class TokenVerificationError(PrivacyPassError):
    """A well-formed token whose authenticator does not verify under the issuer key."""


class ChallengeMismatchError(TokenVerificationError):
    """A token for another challenge. `got`/`want` are the challenge digests in hex."""

    got: str
    want: str

    def __init__(self, got: str, want: str) -> None:
        super().__init__(f"token is for challenge digest {got}, want {want}")
        self.got = got
        self.want = want


# --- issuer key: the RSASSA-PSS SubjectPublicKeyInfo (RFC 9578 §6.5, RFC 4055 §3.1) -------------


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV; lengths in short form below 128, else long form."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _der_uint(value: int) -> bytes:
    """A DER INTEGER for value >= 0 (a leading zero byte keeps it positive)."""
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_SEQUENCE, _OID, _BIT_STRING = 0x30, 0x06, 0x03
_OID_RSASSA_PSS = _der(_OID, bytes.fromhex("2a864886f70d01010a"))  # 1.2.840.113549.1.1.10
_OID_MGF1 = _der(_OID, bytes.fromhex("2a864886f70d010108"))  # 1.2.840.113549.1.1.8
_OID_SHA384 = _der(_OID, bytes.fromhex("608648016503040202"))  # 2.16.840.1.101.3.4.2.2
# The SHA-384 AlgorithmIdentifier with its parameters absent, as the RFC 9578 vectors encode it.
_SHA384_ALG = _der(_SEQUENCE, _OID_SHA384)
# RSASSA-PSS-params: [0] hashAlgorithm, [1] maskGenAlgorithm, [2] saltLength; trailerField is
# the default (1), which DER omits.
_PSS_PARAMS = _der(
    _SEQUENCE,
    _der(0xA0, _SHA384_ALG)
    + _der(0xA1, _der(_SEQUENCE, _OID_MGF1 + _SHA384_ALG))
    + _der(0xA2, _der_uint(VARIANT.salt_len)),
)
_PSS_ALGORITHM = _der(_SEQUENCE, _OID_RSASSA_PSS + _PSS_PARAMS)


def token_key_bytes(public_key: RSAPublicKey) -> bytes:
    """The token-key encoding of an issuer key: the DER RSASSA-PSS SPKI of RFC 9578 §6.5.

    Requires a 2048-bit RSA key (`TokenKeyError` otherwise).
    """
    _check_key(public_key)
    numbers = public_key.public_numbers()
    rsa_public_key = _der(_SEQUENCE, _der_uint(numbers.n) + _der_uint(numbers.e))
    return _der(_SEQUENCE, _PSS_ALGORITHM + _der(_BIT_STRING, b"\x00" + rsa_public_key))


def token_key_from_bytes(data: bytes) -> RSAPublicKey:
    """The issuer key in a token-key value; the inverse of `token_key_bytes`.

    Raises `TokenKeyError` unless `data` is exactly what `token_key_bytes` produces for some
    2048-bit key: any other algorithm, parameters, encoding or key size is refused.
    """
    try:
        spki = _der_read_one(data, _SEQUENCE)
        algorithm, rest = _der_read(spki, _SEQUENCE)
        if _der(_SEQUENCE, algorithm) != _PSS_ALGORITHM:
            raise TokenKeyError("token-key: algorithm is not RSASSA-PSS, SHA-384, salt length 48")
        bits = _der_read_one(rest, _BIT_STRING)
        if not bits.startswith(b"\x00"):
            raise TokenKeyError("token-key: subjectPublicKey has unused bits")
        n_der, e_der = _der_read(_der_read_one(bits[1:], _SEQUENCE), 0x02)
        n = int.from_bytes(n_der, "big")
        e = int.from_bytes(_der_read_one(e_der, 0x02), "big")
        public_key = RSAPublicNumbers(e, n).public_key()
    except ValueError as err:  # cryptography: e or n out of range
        raise TokenKeyError(f"token-key: not an RSA public key: {err}") from None
    # Re-encoding and comparing is what makes this strict: non-minimal lengths or integers,
    # NULL hash parameters, another salt length or trailing bytes all change the bytes.
    if token_key_bytes(public_key) != data:
        raise TokenKeyError("token-key: not the RSASSA-PSS SHA-384 SPKI of RFC 9578")
    return public_key


def token_key_id(public_key: RSAPublicKey) -> bytes:
    """token_key_id = SHA-256(token_key_bytes(public_key)) (RFC 9578 §6.5)."""
    return hashlib.sha256(token_key_bytes(public_key)).digest()


def _der_read(data: bytes, tag: int) -> tuple[bytes, bytes]:
    """The content of the TLV with `tag` at the start of `data`, and what follows it."""
    if len(data) < 2 or data[0] != tag:
        raise TokenKeyError(f"token-key: expected DER tag 0x{tag:02x}")
    length, offset = data[1], 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or len(data) < 2 + size:
            raise TokenKeyError("token-key: bad DER length")
        length, offset = int.from_bytes(data[2 : 2 + size], "big"), 2 + size
    if len(data) < offset + length:
        raise TokenKeyError("token-key: truncated DER")
    return data[offset : offset + length], data[offset + length :]


def _der_read_one(data: bytes, tag: int) -> bytes:
    content, rest = _der_read(data, tag)
    if rest:
        raise TokenKeyError("token-key: trailing bytes after DER value")
    return content


def _check_key(public_key: RSAPublicKey) -> None:
    if not isinstance(public_key, RSAPublicKey) or public_key.key_size != _KEY_BITS:
        size = getattr(public_key, "key_size", "?")
        raise TokenKeyError(f"token type 0x0002 needs a {_KEY_BITS}-bit RSA key, got {size}")


# --- wire structures (RFC 9577 §2.1.1, §2.2.1; RFC 9578 §6.1-6.3), TLS presentation language -----


def _name_ok(name: str) -> bool:
    # Server names (RFC 9577 §2.1.1.1): an ASCII URI authority without userinfo. We require
    # visible ASCII without '@' and without ',' (the origin_info list separator).
    return bool(name) and all(0x21 <= ord(c) <= 0x7E and c not in ",@" for c in name)


@dataclass(frozen=True, slots=True)
class TokenChallenge:
    """The default TokenChallenge structure (RFC 9577 §2.1.1).

    `origin_info` is the list of origin names; on the wire it is one string, joined with ",".
    Any u16 `token_type` is representable; `begin_issuance` only takes 0x0002.
    """

    token_type: int
    issuer_name: str
    redemption_context: bytes = b""
    origin_info: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.token_type <= 0xFFFF:
            raise MalformedMessageError(f"token_type {self.token_type} is not a u16")
        if not _name_ok(self.issuer_name) or len(self.issuer_name) > 0xFFFF:
            raise MalformedMessageError(f"issuer_name {self.issuer_name!r} is not a server name")
        if len(self.redemption_context) not in (0, NONCE_LEN):
            raise MalformedMessageError(
                f"redemption_context is {len(self.redemption_context)} bytes, want 0 or 32"
            )
        if not all(_name_ok(name) for name in self.origin_info):
            raise MalformedMessageError(f"origin_info {self.origin_info!r} has a bad server name")
        if len(",".join(self.origin_info)) > 0xFFFF:
            raise MalformedMessageError("origin_info longer than 65535 bytes")

    def encode(self) -> bytes:
        """The wire bytes: u16 type, u16-length issuer, u8-length context, u16-length origins."""
        issuer = self.issuer_name.encode("ascii")
        origins = ",".join(self.origin_info).encode("ascii")
        return (
            self.token_type.to_bytes(2, "big")
            + len(issuer).to_bytes(2, "big")
            + issuer
            + bytes([len(self.redemption_context)])
            + self.redemption_context
            + len(origins).to_bytes(2, "big")
            + origins
        )

    @classmethod
    def decode(cls, data: bytes) -> TokenChallenge:
        """Parse `data` exactly (no trailing bytes); `MalformedMessageError` if it is not one."""
        reader = _Reader(data, "TokenChallenge")
        token_type = reader.uint(2)
        issuer = reader.vector(2)
        context = reader.vector(1)
        origins = reader.vector(2)
        reader.end()
        try:
            issuer_name, origin_text = issuer.decode("ascii"), origins.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedMessageError("TokenChallenge: names are not ASCII") from None
        # "" is the empty list; "a,,b" or "a," have an empty name and fail validation.
        origin_info = tuple(origin_text.split(",")) if origin_text else ()
        return cls(token_type, issuer_name, context, origin_info)


def challenge_digest(challenge: TokenChallenge) -> bytes:
    """challenge_digest = SHA-256(TokenChallenge) (RFC 9577 §2.2.1)."""
    return hashlib.sha256(challenge.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """The client's request (RFC 9578 §6.1): truncated key id and the blinded message."""

    token_type: ClassVar[int] = TOKEN_TYPE
    truncated_token_key_id: int
    blinded_msg: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.truncated_token_key_id <= 0xFF:
            raise MalformedMessageError("truncated_token_key_id is not a u8")
        _check_size("TokenRequest.blinded_msg", self.blinded_msg, NK)

    def encode(self) -> bytes:
        """u16 token_type || u8 truncated_token_key_id || blinded_msg[Nk]."""
        return (
            TOKEN_TYPE.to_bytes(2, "big") + bytes([self.truncated_token_key_id]) + self.blinded_msg
        )

    @classmethod
    def decode(cls, data: bytes) -> TokenRequest:
        """Parse exactly; `TokenTypeError` for another type, else `MalformedMessageError`."""
        reader = _Reader(data, "TokenRequest")
        _expect_type(reader.uint(2))
        truncated = reader.uint(1)
        blinded_msg = reader.take(NK)
        reader.end()
        return cls(truncated, blinded_msg)


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """The issuer's response (RFC 9578 §6.2): the blind signature, Nk bytes."""

    blind_sig: bytes

    def __post_init__(self) -> None:
        _check_size("TokenResponse.blind_sig", self.blind_sig, NK)

    def encode(self) -> bytes:
        """blind_sig[Nk]."""
        return self.blind_sig

    @classmethod
    def decode(cls, data: bytes) -> TokenResponse:
        """Parse exactly; `MalformedMessageError` unless `data` is Nk bytes."""
        return cls(data)


@dataclass(frozen=True, slots=True)
class Token:
    """A token of type 0x0002 (RFC 9577 §2.2.1 with Nid = 32, Nk = 256)."""

    token_type: ClassVar[int] = TOKEN_TYPE
    nonce: bytes
    challenge_digest: bytes
    token_key_id: bytes
    authenticator: bytes

    def __post_init__(self) -> None:
        _check_size("Token.nonce", self.nonce, NONCE_LEN)
        _check_size("Token.challenge_digest", self.challenge_digest, _DIGEST_LEN)
        _check_size("Token.token_key_id", self.token_key_id, NID)
        _check_size("Token.authenticator", self.authenticator, NK)

    @property
    def authenticator_input(self) -> bytes:
        """What the authenticator signs: token_type || nonce || challenge_digest || token_key_id."""
        return _token_input(self.nonce, self.challenge_digest, self.token_key_id)

    def encode(self) -> bytes:
        """The wire bytes: authenticator_input || authenticator."""
        return self.authenticator_input + self.authenticator

    @classmethod
    def decode(cls, data: bytes) -> Token:
        """Parse exactly; `TokenTypeError` for another type, else `MalformedMessageError`."""
        reader = _Reader(data, "Token")
        _expect_type(reader.uint(2))
        fields = (reader.take(NONCE_LEN), reader.take(_DIGEST_LEN), reader.take(NID))
        authenticator = reader.take(NK)
        reader.end()
        return cls(*fields, authenticator)


def _token_input(nonce: bytes, digest: bytes, key_id: bytes) -> bytes:
    return TOKEN_TYPE.to_bytes(2, "big") + nonce + digest + key_id


def _check_size(what: str, value: bytes, want: int) -> None:
    if len(value) != want:
        raise MalformedMessageError(f"{what} is {len(value)} bytes, want {want}")


def _expect_type(token_type: int) -> None:
    if token_type != TOKEN_TYPE:
        raise TokenTypeError(token_type)


class _Reader:
    """Reads TLS presentation-language fields off `data`, raising on any shortfall."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = data, 0, what

    def take(self, n: int) -> bytes:
        if len(self._data) - self._pos < n:
            raise MalformedMessageError(f"{self._what}: truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.uint(length_size))

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MalformedMessageError(
                f"{self._what}: {len(self._data) - self._pos} trailing bytes"
            )


# --- the issuance protocol (RFC 9578 §6) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuanceState:
    """What the client keeps between `begin_issuance` and `finalize_issuance`. Secret: `inv`."""

    public_key: RSAPublicKey = field(repr=False)
    nonce: bytes
    challenge_digest: bytes
    token_key_id: bytes
    inv: int = field(repr=False)  # unblinds the response; linking token to request if leaked

    @property
    def token_input(self) -> bytes:
        """token_type || nonce || challenge_digest || token_key_id: the message being signed."""
        return _token_input(self.nonce, self.challenge_digest, self.token_key_id)


def begin_issuance(
    public_key: RSAPublicKey,
    challenge: TokenChallenge,
    rng: blindrsa.RandomBytes = secrets.token_bytes,
) -> tuple[TokenRequest, IssuanceState]:
    """Client, RFC 9578 §6.1: a TokenRequest for `challenge` and the state to finalize it.

    Randomness is drawn from `rng` in the order nonce (32 bytes), PSS salt (48), blinding factor
    r (256); see `attest.blindrsa`. Raises `TokenTypeError` for a challenge of another type and
    `TokenKeyError` unless `public_key` is 2048-bit RSA.
    """
    _expect_type(challenge.token_type)
    key_id = token_key_id(public_key)
    nonce = rng(NONCE_LEN)
    _check_size("nonce", nonce, NONCE_LEN)
    digest = challenge_digest(challenge)
    # blinded_msg, blind_inv = Blind(pkI, PrepareIdentity(token_input))
    token_input = _token_input(nonce, digest, key_id)
    blinded = blindrsa.blind(public_key, token_input, VARIANT.salt_len, rng)
    request = TokenRequest(key_id[-1], blinded.blinded_msg)
    return request, IssuanceState(public_key, nonce, digest, key_id, blinded.inv)


def issue(
    private_key: RSAPrivateKey,
    request: TokenRequest,
    rng: blindrsa.RandomBytes = secrets.token_bytes,
) -> TokenResponse:
    """Issuer, RFC 9578 §6.2: blind-sign a request made for this issuer's key.

    Whether the client deserves a token (attestation, rate limits) is decided before calling
    this. Raises `TokenKeyError` unless the key is 2048-bit RSA, `KeyIdMismatchError` when the
    request names another key, `MalformedMessageError` when blinded_msg is not below the modulus
    (all three: HTTP 422 per RFC 9578), and lets `blindrsa.SigningFailureError` through (a fault
    in the signer, not the client's doing).
    """
    want = token_key_id(private_key.public_key())[-1]
    if request.truncated_token_key_id != want:
        got = request.truncated_token_key_id
        raise KeyIdMismatchError("truncated_token_key_id", f"{got:02x}", f"{want:02x}")
    try:
        return TokenResponse(blindrsa.blind_sign(private_key, request.blinded_msg, rng))
    except blindrsa.InvalidInputError as err:
        raise MalformedMessageError(f"TokenRequest: {err.diagnostic}") from None


def finalize_issuance(state: IssuanceState, response: TokenResponse) -> Token:
    """Client, RFC 9578 §6.3: unblind the response into a Token, verifying it first.

    Raises `TokenResponseError` when the response does not unblind to a signature that verifies
    under the issuer key (a wrong key, a faulty or a malicious issuer).
    """
    try:
        authenticator = blindrsa.finalize(
            state.public_key, state.token_input, response.blind_sig, state.inv, VARIANT.salt_len
        )
    except blindrsa.BlindRSAError as err:
        raise TokenResponseError(f"TokenResponse rejected: {err.diagnostic}") from None
    return Token(state.nonce, state.challenge_digest, state.token_key_id, authenticator)


def verify_token(public_key: RSAPublicKey, token: Token, expected_challenge_digest: bytes) -> None:
    """Origin, RFC 9578 §6.4: verify a redeemed token against the challenge the origin sent.

    (1) the token's challenge_digest equals `expected_challenge_digest` (`ChallengeMismatchError`);
    (2) its token_key_id is this issuer key's (`KeyIdMismatchError`, or `TokenKeyError` for a key
    that is not 2048-bit RSA);
    (3) the authenticator is an RSASSA-PSS (SHA-384, sLen 48) signature over token_type || nonce
    || challenge_digest || token_key_id (`TokenVerificationError`).
    Returns nothing. Replay (a nonce seen before) is the caller's to check.
    """
    # (1) the challenge
    if not hmac.compare_digest(token.challenge_digest, expected_challenge_digest):
        raise ChallengeMismatchError(token.challenge_digest.hex(), expected_challenge_digest.hex())
    # (2) the key
    want = token_key_id(public_key)
    if not hmac.compare_digest(token.token_key_id, want):
        raise KeyIdMismatchError("token_key_id", token.token_key_id.hex(), want.hex())
    # (3) the signature
    try:
        blindrsa.verify(
            public_key, token.authenticator_input, token.authenticator, VARIANT.salt_len
        )
    except blindrsa.InvalidSignatureError:
        raise TokenVerificationError("token authenticator does not verify") from None


# --- HTTP headers (RFC 9577 §2.1.2, §2.2.2; syntax RFC 9110 §11) ---------------------------------


@dataclass(frozen=True, slots=True)
class PrivateTokenChallenge:
    """One usable PrivateToken challenge of a WWW-Authenticate header.

    `token_key` is None when the origin left it out (the client gets the key out of band).
    """

    challenge: TokenChallenge
    token_key: RSAPublicKey | None = None
    max_age: int | None = None


def www_authenticate(
    challenge: TokenChallenge, token_key: RSAPublicKey | None, max_age: int | None = None
) -> str:
    """The value of a WWW-Authenticate header carrying one PrivateToken challenge.

    `PrivateToken challenge="<b64url>", token-key="<b64url>"[, max-age=<n>]`. Join several with
    ", " to offer several challenges. Requires a challenge of type 0x0002 and max_age >= 0.
    """
    _expect_type(challenge.token_type)
    parts = [f'challenge="{_b64url(challenge.encode())}"']
    if token_key is not None:
        parts.append(f'token-key="{_b64url(token_key_bytes(token_key))}"')
    if max_age is not None:
        if max_age < 0:
            raise ValueError("max_age must be >= 0")
        parts.append(f"max-age={max_age}")
    return f"{AUTH_SCHEME} " + ", ".join(parts)


def parse_www_authenticate(value: str) -> list[PrivateTokenChallenge]:
    """The usable PrivateToken challenges in a WWW-Authenticate header value, in order.

    Other schemes, other token types and PrivateToken challenges that are unusable (no or bad
    `challenge`, bad `token-key` or `max-age`, a token68 form) are skipped, as RFC 9577 §2.1
    tells clients to ignore them. Raises `MalformedMessageError` only when `value` breaks the
    RFC 9110 challenge grammar (including a parameter repeated within one challenge).
    """
    out = []
    for scheme, params in _parse_auth_header(value):
        if scheme.lower() == AUTH_SCHEME.lower() and params is not None:
            usable = _private_token_challenge(params)
            if usable is not None:
                out.append(usable)
    return out


def _private_token_challenge(params: dict[str, str]) -> PrivateTokenChallenge | None:
    try:
        raw = _b64url_decode(params["challenge"])
        if raw[:2] != TOKEN_TYPE.to_bytes(2, "big"):
            return None  # another type's structure may differ: do not even decode it
        challenge = TokenChallenge.decode(raw)
        key = params.get("token-key")
        token_key = token_key_from_bytes(_b64url_decode(key)) if key is not None else None
        age = params.get("max-age")
        if age is not None and not (age.isascii() and age.isdigit()):
            return None
        return PrivateTokenChallenge(challenge, token_key, int(age) if age is not None else None)
    except (KeyError, PrivacyPassError):
        return None


def authorization(token: Token) -> str:
    """The value of an Authorization header redeeming `token`: `PrivateToken token="<b64url>"`."""
    return f'{AUTH_SCHEME} token="{_b64url(token.encode())}"'


def parse_authorization(value: str) -> Token:
    """The Token in an Authorization header value (RFC 9577 §2.2.2).

    Unknown parameters are ignored. Raises `MalformedMessageError` (or its `TokenTypeError`)
    for another scheme, a missing or repeated `token`, a token68 form, non-canonical base64url,
    or bytes that are not a type 0x0002 Token.
    """
    credentials = _parse_auth_header(value)
    if len(credentials) != 1:
        raise MalformedMessageError(f"Authorization: {len(credentials)} credentials, want 1")
    scheme, params = credentials[0]
    if scheme.lower() != AUTH_SCHEME.lower():
        raise MalformedMessageError(f"Authorization: scheme {scheme!r}, want {AUTH_SCHEME}")
    if params is None or "token" not in params:
        raise MalformedMessageError("Authorization: PrivateToken without a token parameter")
    return Token.decode(_b64url_decode(params["token"]))


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Canonical padded base64url only: RFC 9577 requires padding; one spelling per value."""
    if len(text) % 4 or not _B64URL_RE.fullmatch(text):
        raise MalformedMessageError("not padded base64url")
    data = base64.urlsafe_b64decode(text)
    if _b64url(data) != text:  # stray bits in the last character
        raise MalformedMessageError("non-canonical base64url")
    return data


# RFC 9110 §5.6.2 token, §5.6.4 quoted-string, §11.2 token68 and auth-param.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN_RE = re.compile(_TOKEN)
_AUTH_PARAM_RE = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_OWS_RE = re.compile(r"[ \t]*")
_SEPARATORS_RE = re.compile(r"[ \t,]*")  # OWS and empty list elements (RFC 9110 §5.6.1)
_QUOTED_PAIR_RE = re.compile(r"\\(.)")

_AuthItem = tuple[str, dict[str, str] | None]


def _parse_auth_header(value: str) -> list[_AuthItem]:
    """RFC 9110 `1#challenge` / `credentials`: (scheme, params) pairs; params None for token68.

    A scheme with no parameters gets an empty dict. Parameter names are lower-cased (they are
    case-insensitive) and quoted values unquoted.
    """
    items: list[_AuthItem] = []
    pos, end = _skip(_SEPARATORS_RE, value, 0), len(value)
    while pos < end:
        scheme = _TOKEN_RE.match(value, pos)
        if scheme is None:
            raise MalformedMessageError(f"auth header: expected a scheme at offset {pos}")
        pos = scheme.end()
        params: dict[str, str] | None = {}
        after_space = _skip(_OWS_RE, value, pos)
        if after_space > pos and value[pos] == " ":  # 1*SP, then token68 or #auth-param
            if _AUTH_PARAM_RE.match(value, after_space):
                params = {}
                pos = _parse_params(value, after_space, params)
            elif (t68 := _TOKEN68_RE.match(value, after_space)) and _at_item_end(value, t68.end()):
                params, pos = None, t68.end()
        items.append((scheme.group(), params))
        pos = _skip(_OWS_RE, value, pos)
        if pos < end and value[pos] != ",":
            raise MalformedMessageError(f"auth header: unexpected {value[pos]!r} at offset {pos}")
        pos = _skip(_SEPARATORS_RE, value, pos)
    return items


def _parse_params(value: str, pos: int, params: dict[str, str]) -> int:
    """Parse `#auth-param` from `pos` into `params`; return where the next challenge may start."""
    while True:
        match = _AUTH_PARAM_RE.match(value, pos)
        if match is None:  # callers only come here in front of an auth-param
            raise MalformedMessageError(f"auth header: expected a parameter at offset {pos}")
        name, raw = match.group(1).lower(), match.group(2)
        if name in params:
            raise MalformedMessageError(f"auth header: parameter {name!r} repeated")
        params[name] = _QUOTED_PAIR_RE.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = _skip(_OWS_RE, value, match.end())
        if pos == len(value) or value[pos] != ",":
            return pos
        following = _skip(_SEPARATORS_RE, value, pos)
        if not _AUTH_PARAM_RE.match(value, following):
            return pos  # a comma then a new scheme (or the end): this challenge is complete
        pos = following


def _at_item_end(value: str, pos: int) -> bool:
    pos = _skip(_OWS_RE, value, pos)
    return pos == len(value) or value[pos] == ","


def _skip(pattern: re.Pattern[str], value: str, pos: int) -> int:
    """The end of `pattern`'s match at `pos` (patterns here may match the empty string)."""
    match = pattern.match(value, pos)
    return match.end() if match else pos
