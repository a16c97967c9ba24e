"""RSA blind signatures: RFC 9474, the four RSABSSA-SHA384 variants.

The protocol, with the function that runs each step:

    client                                           server (holds the private key)
    input_msg = prepare(msg, randomized)
    blinded_msg, inv = blind(pk, input_msg, sLen)  ->
                                                   <-  blind_sig = blind_sign(sk, blinded_msg)
    sig = finalize(pk, input_msg, blind_sig, inv, sLen)
    ...                                                anyone: verify(pk, input_msg, sig, sLen)

`sig` is an ordinary RSASSA-PSS signature (RFC 8017 section 8.1, SHA-384, MGF1-SHA-384, salt
length sLen) over `input_msg`; the server never sees `input_msg`, `sig` or `inv`, which is what
makes the signature unlinkable to the signing request.

Decisions a caller must know:

* **Variants.** `RSABSSA_SHA384_PSS_RANDOMIZED` (the default of this project's anonymous tier),
  `..._PSSZERO_RANDOMIZED`, `..._PSS_DETERMINISTIC` and `..._PSSZERO_DETERMINISTIC`: a `Variant`
  only fixes sLen (48 or 0) and whether `prepare` prepends a 32-byte random prefix.
* **Key size.** Every function refuses RSA keys under 2048 bits (`KeySizeError`). The RFC 9474
  vectors use 4096-bit keys, so no test needs an exception.
* **Randomness.** Every random value (prefix, PSS salt, blinding factor r, the signer's own
  timing blind) is drawn from the `rng` argument, a function returning that many random bytes;
  the default is the operating system's CSPRNG (`secrets.token_bytes`). Tests pass a fixed feed
  to reproduce the RFC vectors byte for byte. Integers mod n are drawn as `modulus_len` bytes,
  big-endian, with the bits above the modulus' bit length cleared, retried until 0 < r < n and
  gcd(r, n) = 1 (so a feed of the bytes of a valid r is accepted on the first draw).
* **Signer hardening.** `blind_sign` computes RSASP1 with the CRT on the private numbers (raw RSA
  is not in `cryptography`'s API), *blinds its own exponentiation* with a fresh r (so the
  exponentiation's input is uniformly random, unrelated to the attacker-chosen message: the
  countermeasure to Kocher / Brumley-Boneh style timing attacks), and checks `s^e mod n == m`
  before answering, so a fault in the CRT computation cannot leak a factor of n (the
  Boneh-DeMillo-Lipton attack). Python integers are not constant time; message blinding removes
  the dependence on the input, not every side channel of a local observer.
* **Verify-or-raise.** `finalize` verifies the signature it produced (RFC 9474 section 4.4, step
  5) and `verify` returns nothing: both raise `InvalidSignatureError` on failure.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import (
    RSAPrivateKey,
    RSAPrivateNumbers,
    RSAPublicKey,
)

from attest.errors import AttestError

__all__ = [
    "MIN_KEY_BITS",
    "PREFIX_LEN",
    "RSABSSA_SHA384_PSSZERO_DETERMINISTIC",
    "RSABSSA_SHA384_PSSZERO_RANDOMIZED",
    "RSABSSA_SHA384_PSS_DETERMINISTIC",
    "RSABSSA_SHA384_PSS_RANDOMIZED",
    "VARIANTS",
    "BlindRSAError",
    "BlindingResult",
    "InvalidInputError",
    "InvalidSignatureError",
    "KeySizeError",
    "RandomBytes",
    "SigningFailureError",
    "Variant",
    "blind",
    "blind_sign",
    "finalize",
    "modulus_len",
    "prepare",
    "verify",
]

MIN_KEY_BITS = 2048
"""The smallest RSA modulus, in bits, that any function here accepts (RFC 9474 §8.1: >= 2048)."""

PREFIX_LEN = 32
"""Length of the random prefix `prepare` prepends in the randomized variants (RFC 9474 §4.1)."""

_HASH = hashlib.sha384
_HLEN = 48
_MAX_SAMPLING_TRIES = 128  # each draw succeeds with probability >= 1/2; 128 misses mean a bad rng

RandomBytes = Callable[[int], bytes]
"""A source of randomness: called with n, returns n random bytes."""


class BlindRSAError(AttestError):
    """Base class for every error raised by `attest.blindrsa`."""


class KeySizeError(BlindRSAError):
    """An RSA key smaller than `MIN_KEY_BITS` (or not an RSA key). `got`/`want` are bit sizes."""

    got: int
    want: int

    def __init__(self, got: int, want: int = MIN_KEY_BITS) -> None:
        super().__init__(f"RSA key of {got} bits refused: blind RSA needs at least {want}")
        self.got = got
        self.want = want


class InvalidInputError(BlindRSAError):
    """Input the protocol rejects: wrong length, a message representative >= n, not invertible."""


class SigningFailureError(BlindRSAError):
    """The signer's own check `s^e mod n == m` failed: a fault, and nothing was returned."""


class InvalidSignatureError(BlindRSAError):
    """An RSASSA-PSS signature that does not verify under the given key and salt length."""


@dataclass(frozen=True, slots=True)
class Variant:
    """An RFC 9474 §5 variant: its name, PSS salt length, and whether `prepare` randomizes."""

    name: str
    salt_len: int
    randomized: bool


RSABSSA_SHA384_PSS_RANDOMIZED = Variant("RSABSSA-SHA384-PSS-Randomized", _HLEN, True)
RSABSSA_SHA384_PSSZERO_RANDOMIZED = Variant("RSABSSA-SHA384-PSSZERO-Randomized", 0, True)
RSABSSA_SHA384_PSS_DETERMINISTIC = Variant("RSABSSA-SHA384-PSS-Deterministic", _HLEN, False)
RSABSSA_SHA384_PSSZERO_DETERMINISTIC = Variant("RSABSSA-SHA384-PSSZERO-Deterministic", 0, False)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        RSABSSA_SHA384_PSS_RANDOMIZED,
        RSABSSA_SHA384_PSSZERO_RANDOMIZED,
        RSABSSA_SHA384_PSS_DETERMINISTIC,
        RSABSSA_SHA384_PSSZERO_DETERMINISTIC,
    )
}
"""The four variants by their RFC 9474 name."""


class BlindingResult(NamedTuple):
    """What `blind` returns: the message to send, and `inv` (secret: keep it for `finalize`)."""

    blinded_msg: bytes
    inv: int

    def __repr__(self) -> str:
        # inv unblinds the signature: a log line holding it would link the token to its request.
        return f"BlindingResult(blinded_msg={self.blinded_msg.hex()}, inv=<redacted>)"


# --- client ------------------------------------------------------------------------------------


def prepare(msg: bytes, randomized: bool, rng: RandomBytes = secrets.token_bytes) -> bytes:
    """RFC 9474 section 4.1: `input_msg`, the bytes that get signed.

    Randomized variants prepend `PREFIX_LEN` random bytes (`PrepareRandomize`), so that a
    message chosen by someone else cannot be used to link signer and client; deterministic ones
    return `msg` unchanged (`PrepareIdentity`).
    """
    if not randomized:
        return msg
    prefix = rng(PREFIX_LEN)
    _check_len("random prefix", prefix, PREFIX_LEN)
    return prefix + msg


def blind(
    public_key: RSAPublicKey,
    input_msg: bytes,
    salt_len: int,
    rng: RandomBytes = secrets.token_bytes,
) -> BlindingResult:
    """RFC 9474 section 4.2: encode `input_msg` with EMSA-PSS and blind it with a random r.

    Requires a key of at least `MIN_KEY_BITS` bits and 0 <= salt_len. Raises `InvalidInputError`
    when the encoded message is not invertible mod n (which reveals a factor of n, so never
    happens with an honest key).
    """
    n, e = _public_numbers(public_key)
    k = modulus_len(public_key)
    # (1)-(3) encoded_msg = EMSA-PSS-ENCODE(msg, bit_len(n) - 1); m = bytes_to_int(encoded_msg)
    salt = rng(salt_len) if salt_len else b""
    _check_len("PSS salt", salt, salt_len)
    m = int.from_bytes(_emsa_pss_encode(input_msg, n.bit_length() - 1, salt), "big")
    # (4)-(5) m must be a unit mod n, or the blinding would not be invertible
    if math.gcd(m, n) != 1:
        raise InvalidInputError("encoded message is not invertible modulo n")
    # (6)-(8) r uniform in [1, n) and invertible; inv = r^-1 mod n
    r = _random_unit(n, k, rng)
    inv = pow(r, -1, n)
    # (9)-(11) z = m * r^e mod n
    z = (m * pow(r, e, n)) % n
    return BlindingResult(z.to_bytes(k, "big"), inv)


def finalize(
    public_key: RSAPublicKey, input_msg: bytes, blind_sig: bytes, inv: int, salt_len: int
) -> bytes:
    """RFC 9474 section 4.4: unblind `blind_sig` with `inv` and verify the result.

    Returns the RSASSA-PSS signature over `input_msg`. Raises `InvalidInputError` if `blind_sig`
    is not `modulus_len` bytes, `InvalidSignatureError` if the unblinded signature does not verify
    (a wrong or malicious signer: the client must not use it).
    """
    n, _ = _public_numbers(public_key)
    k = modulus_len(public_key)
    # (1) the blind signature is exactly modulus_len bytes
    _check_len("blind_sig", blind_sig, k, InvalidInputError)
    # (2)-(4) s = z * inv mod n
    s = (int.from_bytes(blind_sig, "big") * inv) % n
    sig = s.to_bytes(k, "big")
    # (5)-(6) RSASSA-PSS-VERIFY(pk, msg, sig), or raise
    verify(public_key, input_msg, sig, salt_len)
    return sig


# --- server ------------------------------------------------------------------------------------


def blind_sign(
    private_key: RSAPrivateKey, blinded_msg: bytes, rng: RandomBytes = secrets.token_bytes
) -> bytes:
    """RFC 9474 section 4.3: the signer's half, `blind_sig = RSASP1(sk, blinded_msg)`.

    Requires a key of at least `MIN_KEY_BITS` bits. Raises `InvalidInputError` when `blinded_msg`
    is not `modulus_len` bytes or its integer is >= n, and `SigningFailureError` when the result
    fails the check `s^e mod n == m` (a fault: the faulty value is never returned, because a
    wrong CRT half reveals a factor of n).
    """
    _check_key_size(private_key.key_size)
    priv = private_key.private_numbers()
    n, e = priv.public_numbers.n, priv.public_numbers.e
    k = (n.bit_length() + 7) // 8
    # (1)-(2) m = bytes_to_int(blinded_msg), and m < n
    _check_len("blinded_msg", blinded_msg, k, InvalidInputError)
    m = int.from_bytes(blinded_msg, "big")
    if m >= n:
        raise InvalidInputError("blinded_msg is not smaller than the modulus")
    # (3) s = RSASP1(sk, m), computed on m * u^e for a fresh u so the exponentiation's timing is
    # independent of the message the client chose; (m * u^e)^d = m^d * u, then divide u out.
    u = _random_unit(n, k, rng)
    s = (_rsasp1(priv, (m * pow(u, e, n)) % n) * pow(u, -1, n)) % n
    # (4)-(5) fault check: RSAVP1(pk, s) must give m back before anything leaves this function
    if pow(s, e, n) != m:
        raise SigningFailureError("blind signature failed its own verification: not returned")
    return s.to_bytes(k, "big")


# --- anyone ------------------------------------------------------------------------------------


def verify(public_key: RSAPublicKey, input_msg: bytes, sig: bytes, salt_len: int) -> None:
    """RSASSA-PSS-VERIFY (RFC 8017 §8.1.2) with SHA-384, MGF1-SHA-384 and salt length `salt_len`.

    Requires a key of at least `MIN_KEY_BITS` bits. Returns nothing; raises
    `InvalidSignatureError` when `sig` does not verify over `input_msg`.
    """
    _check_key_size(public_key.key_size)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=salt_len)
    try:
        public_key.verify(sig, input_msg, pss, hashes.SHA384())
    except InvalidSignature:
        raise InvalidSignatureError(
            f"RSASSA-PSS (SHA-384, sLen={salt_len}) signature does not verify"
        ) from None


def modulus_len(public_key: RSAPublicKey) -> int:
    """The length in bytes of the key's modulus: the size of blinded_msg, blind_sig and sig."""
    return (public_key.key_size + 7) // 8


# --- internals ---------------------------------------------------------------------------------


def _public_numbers(public_key: RSAPublicKey) -> tuple[int, int]:
    _check_key_size(public_key.key_size)
    numbers = public_key.public_numbers()
    return numbers.n, numbers.e


def _check_key_size(bits: int) -> None:
    if bits < MIN_KEY_BITS:
        raise KeySizeError(bits)


def _check_len(
    what: str, data: bytes, want: int, error: type[BlindRSAError] = BlindRSAError
) -> None:
    if len(data) != want:
        raise error(f"{what} is {len(data)} bytes, want {want}")


def _random_unit(n: int, k: int, rng: RandomBytes) -> int:
    """A uniform integer in [1, n) coprime to n, by rejection sampling (see the module notes)."""
    mask = (1 << n.bit_length()) - 1
    for _ in range(_MAX_SAMPLING_TRIES):
        draw = rng(k)
        _check_len("random draw", draw, k)
        r = int.from_bytes(draw, "big") & mask
        if 0 < r < n and math.gcd(r, n) == 1:
            return r
    raise BlindRSAError(f"no invertible value mod n in {_MAX_SAMPLING_TRIES} draws: broken rng")


def _rsasp1(priv: RSAPrivateNumbers, c: int) -> int:
    """RSASP1 (RFC 8017 §5.2.1, CRT form (2)(b)): c^d mod n from p, q, dP, dQ and qInv.

    Kept separate so tests can corrupt it and watch the fault check in `blind_sign` fire.
    """
    p, q = priv.p, priv.q
    s1 = pow(c % p, priv.dmp1, p)
    s2 = pow(c % q, priv.dmq1, q)
    h = (priv.iqmp * (s1 - s2)) % p  # cryptography's iqmp is q^-1 mod p
    return s2 + q * h


def _mgf1(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-384 (RFC 8017 appendix B.2.1)."""
    out = b"".join(
        _HASH(seed + counter.to_bytes(4, "big")).digest() for counter in range(-(-length // _HLEN))
    )
    return out[:length]


def _emsa_pss_encode(msg: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with SHA-384 and MGF1-SHA-384, salt given.

    `cryptography` only exposes PSS inside sign/verify, and blinding needs the encoded message
    itself, so this is the one part of RSASSA-PSS written here.
    """
    em_len = -(-em_bits // 8)
    m_hash = _HASH(msg).digest()  # (2)
    if em_len < _HLEN + len(salt) + 2:  # (3)
        raise InvalidInputError("RSA modulus too small for SHA-384 PSS with this salt length")
    h = _HASH(b"\x00" * 8 + m_hash + salt).digest()  # (5)-(6) H = Hash(0^8 || mHash || salt)
    db = b"\x00" * (em_len - len(salt) - _HLEN - 2) + b"\x01" + salt  # (7)-(8)
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, len(db)), strict=True))  # (9)-(10)
    masked[0] &= 0xFF >> (8 * em_len - em_bits)  # (11) clear the bits above em_bits
    return bytes(masked) + h + b"\xbc"  # (12)
