"""RFC 9474 blind RSA: every published case byte for byte, the signer's hardening, mutations.

The published cases are `../shared/vectors/blind-rsa/rfc9474.json` (cloudflare/circl's copy of
RFC 9474 appendix A), read in place. Each case fixes all randomness (prefix, salt, inv), which the
tests feed back through the functions' `rng` argument.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPrivateNumbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest import blindrsa
from attest.blindrsa import (
    VARIANTS,
    BlindRSAError,
    InvalidInputError,
    InvalidSignatureError,
    KeySizeError,
    SigningFailureError,
    Variant,
)
from attest.errors import AttestError

VECTOR_FILE = Path("blind-rsa") / "rfc9474.json"
Case = dict[str, str]


class Feed:
    """An `rng` that hands out fixed chunks in order, checking that each draw asks for its size."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def __call__(self, n: int) -> bytes:
        assert self._chunks, f"unexpected extra draw of {n} bytes"
        chunk = self._chunks.pop(0)
        assert len(chunk) == n, f"draw of {n} bytes, feed has {len(chunk)}"
        return chunk

    @property
    def used_up(self) -> bool:
        return not self._chunks


@pytest.fixture(scope="module")
def cases(vectors_dir: Path) -> dict[str, Case]:
    """The published cases by variant name."""
    loaded: list[Case] = json.loads((vectors_dir / VECTOR_FILE).read_text())
    return {case["name"]: case for case in loaded}


def _int(case: Case, key: str) -> int:
    return int(case[key], 16)


def _bytes(case: Case, key: str) -> bytes:
    return bytes.fromhex(case[key])


def _private_key(case: Case) -> RSAPrivateKey:
    p, q, d, e, n = (_int(case, k) for k in ("p", "q", "d", "e", "n"))
    assert p * q == n
    return _load_key(p, q, d, e)


@functools.cache
def _load_key(p: int, q: int, d: int, e: int) -> RSAPrivateKey:
    # Cached: loading checks the key, which takes a noticeable fraction of a second at 4096 bits.
    public = rsa.RSAPublicNumbers(e, p * q)
    return RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    ).private_key()


def _r_bytes(case: Case) -> bytes:
    """The blinding factor r as the rng must produce it: the case gives inv = r^-1 mod n."""
    n = _int(case, "n")
    return pow(_int(case, "inv"), -1, n).to_bytes((n.bit_length() + 7) // 8, "big")


def _blind_feed(case: Case) -> Feed:
    salt = _bytes(case, "salt")
    return Feed(salt, _r_bytes(case)) if salt else Feed(_r_bytes(case))


NAMES = sorted(VARIANTS)


# --- every published case ----------------------------------------------------------------------


def test_file_has_exactly_one_case_per_variant(cases: dict[str, Case], vectors_dir: Path) -> None:
    loaded = json.loads((vectors_dir / VECTOR_FILE).read_text())
    assert len(loaded) == len(cases) == 4
    assert sorted(cases) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_case_parameters_match_variant(cases: dict[str, Case], name: str) -> None:
    case, variant = cases[name], VARIANTS[name]
    assert _int(case, "sLen") == variant.salt_len == len(_bytes(case, "salt"))
    assert bool(_int(case, "is_randomized")) is variant.randomized


@pytest.mark.parametrize("name", NAMES)
def test_prepare(cases: dict[str, Case], name: str) -> None:
    case, variant = cases[name], VARIANTS[name]
    feed = Feed(_bytes(case, "msg_prefix")) if variant.randomized else Feed()
    assert blindrsa.prepare(_bytes(case, "msg"), variant.randomized, feed) == _bytes(
        case, "input_msg"
    )
    assert feed.used_up


@pytest.mark.parametrize("name", NAMES)
def test_emsa_pss_encode(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    n, e = _int(case, "n"), _int(case, "e")
    em_bits = n.bit_length() - 1
    encoded = blindrsa._emsa_pss_encode(_bytes(case, "input_msg"), em_bits, _bytes(case, "salt"))
    # Three cases publish encoded_msg; for all, blinded_msg = m * r^e gives m = blinded * inv^e.
    unblinded = (_int(case, "blinded_msg") * pow(_int(case, "inv"), e, n)) % n
    assert encoded == unblinded.to_bytes(512, "big")
    if "encoded_msg" in case:
        assert encoded == _bytes(case, "encoded_msg")


@pytest.mark.parametrize("name", NAMES)
def test_blind(cases: dict[str, Case], name: str) -> None:
    case, variant = cases[name], VARIANTS[name]
    public_key = _private_key(case).public_key()
    feed = _blind_feed(case)
    blinded = blindrsa.blind(public_key, _bytes(case, "input_msg"), variant.salt_len, feed)
    assert blinded.blinded_msg == _bytes(case, "blinded_msg")
    assert blinded.inv == _int(case, "inv")
    assert feed.used_up


@pytest.mark.parametrize("name", NAMES)
def test_blind_sign(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    blind_sig = blindrsa.blind_sign(_private_key(case), _bytes(case, "blinded_msg"))
    assert blind_sig == _bytes(case, "blind_sig")


@pytest.mark.parametrize("name", NAMES)
def test_finalize(cases: dict[str, Case], name: str) -> None:
    case, variant = cases[name], VARIANTS[name]
    sig = blindrsa.finalize(
        _private_key(case).public_key(),
        _bytes(case, "input_msg"),
        _bytes(case, "blind_sig"),
        _int(case, "inv"),
        variant.salt_len,
    )
    assert sig == _bytes(case, "sig")


@pytest.mark.parametrize("name", NAMES)
def test_verify(cases: dict[str, Case], name: str) -> None:
    case, variant = cases[name], VARIANTS[name]
    public_key = _private_key(case).public_key()
    blindrsa.verify(public_key, _bytes(case, "input_msg"), _bytes(case, "sig"), variant.salt_len)


@pytest.mark.parametrize("name", NAMES)
def test_whole_protocol_reproduces_case(cases: dict[str, Case], name: str) -> None:
    case, variant = cases[name], VARIANTS[name]
    key = _private_key(case)
    prefix = Feed(_bytes(case, "msg_prefix")) if variant.randomized else Feed()
    input_msg = blindrsa.prepare(_bytes(case, "msg"), variant.randomized, prefix)
    blinded = blindrsa.blind(key.public_key(), input_msg, variant.salt_len, _blind_feed(case))
    blind_sig = blindrsa.blind_sign(key, blinded.blinded_msg)
    sig = blindrsa.finalize(key.public_key(), input_msg, blind_sig, blinded.inv, variant.salt_len)
    assert sig == _bytes(case, "sig")


# --- mutations of a published case -------------------------------------------------------------

PSS = blindrsa.RSABSSA_SHA384_PSS_RANDOMIZED.name


@given(bit=st.integers(min_value=0, max_value=4096 - 1))
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_flipped_bit_in_sig_fails(cases: dict[str, Case], bit: int) -> None:
    case = cases[PSS]
    sig = bytearray(_bytes(case, "sig"))
    sig[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(InvalidSignatureError):
        blindrsa.verify(_private_key(case).public_key(), _bytes(case, "input_msg"), bytes(sig), 48)


@given(bit=st.integers(min_value=0, max_value=4096 - 1))
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_flipped_bit_in_blind_sig_fails_finalize(cases: dict[str, Case], bit: int) -> None:
    case = cases[PSS]
    blind_sig = bytearray(_bytes(case, "blind_sig"))
    blind_sig[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(InvalidSignatureError):
        blindrsa.finalize(
            _private_key(case).public_key(),
            _bytes(case, "input_msg"),
            bytes(blind_sig),
            _int(case, "inv"),
            48,
        )


def test_sig_does_not_verify_over_the_message_without_its_prefix(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    with pytest.raises(InvalidSignatureError):
        blindrsa.verify(
            _private_key(case).public_key(), _bytes(case, "msg"), _bytes(case, "sig"), 48
        )


def test_sig_does_not_verify_with_another_salt_length(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    public_key = _private_key(case).public_key()
    with pytest.raises(InvalidSignatureError):
        blindrsa.verify(public_key, _bytes(case, "input_msg"), _bytes(case, "sig"), 0)


def test_finalize_with_wrong_inv_fails(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    with pytest.raises(InvalidSignatureError):
        blindrsa.finalize(
            _private_key(case).public_key(),
            _bytes(case, "input_msg"),
            _bytes(case, "blind_sig"),
            _int(case, "inv") + 1,
            48,
        )


def test_finalize_rejects_wrong_length(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    with pytest.raises(InvalidInputError, match="blind_sig is 511 bytes, want 512"):
        blindrsa.finalize(
            _private_key(case).public_key(),
            _bytes(case, "input_msg"),
            _bytes(case, "blind_sig")[1:],
            _int(case, "inv"),
            48,
        )


@pytest.mark.parametrize("offset", [0, 1, 2**64])
def test_blind_sign_rejects_m_not_below_n(cases: dict[str, Case], offset: int) -> None:
    case = cases[PSS]
    n = _int(case, "n")
    with pytest.raises(InvalidInputError, match="not smaller than the modulus"):
        blindrsa.blind_sign(_private_key(case), (n + offset).to_bytes(512, "big"))


def test_blind_sign_rejects_all_ones(cases: dict[str, Case]) -> None:
    with pytest.raises(InvalidInputError):
        blindrsa.blind_sign(_private_key(cases[PSS]), b"\xff" * 512)


def test_blind_sign_accepts_n_minus_one(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    n, e = _int(case, "n"), _int(case, "e")
    blind_sig = blindrsa.blind_sign(_private_key(case), (n - 1).to_bytes(512, "big"))
    assert pow(int.from_bytes(blind_sig, "big"), e, n) == n - 1


@pytest.mark.parametrize("length", [0, 511, 513])
def test_blind_sign_rejects_wrong_length(cases: dict[str, Case], length: int) -> None:
    with pytest.raises(InvalidInputError, match=f"blinded_msg is {length} bytes, want 512"):
        blindrsa.blind_sign(_private_key(cases[PSS]), b"\x01" * length)


# --- the signer's hardening --------------------------------------------------------------------


def _corrupt_dmp1(original: Callable[[RSAPrivateNumbers, int], int]) -> Any:
    """A `_rsasp1` whose half mod p is computed with a wrong exponent: a classic CRT fault."""

    def faulty(priv: RSAPrivateNumbers, c: int) -> int:
        bad = RSAPrivateNumbers(
            priv.p, priv.q, priv.d, priv.dmp1 ^ 1, priv.dmq1, priv.iqmp, priv.public_numbers
        )
        return original(bad, c)

    return faulty


def test_fault_check_catches_a_corrupted_crt_half(
    cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = cases[PSS]
    monkeypatch.setattr(blindrsa, "_rsasp1", _corrupt_dmp1(blindrsa._rsasp1))
    with pytest.raises(SigningFailureError, match="not returned"):
        blindrsa.blind_sign(_private_key(case), _bytes(case, "blinded_msg"))


def test_what_the_fault_check_prevents(cases: dict[str, Case]) -> None:
    # Without the check, one faulty signature hands out a factor of n (Boneh-DeMillo-Lipton):
    # s is right mod q and wrong mod p, so gcd(s^e - m, n) = q.
    case = cases[PSS]
    key = _private_key(case)
    priv = key.private_numbers()
    m, n, e = _int(case, "blinded_msg"), _int(case, "n"), _int(case, "e")
    faulty = _corrupt_dmp1(blindrsa._rsasp1)(priv, m)
    assert math.gcd(pow(faulty, e, n) - m, n) == priv.q


def test_fault_check_catches_any_wrong_result(
    cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = cases[PSS]
    original = blindrsa._rsasp1
    monkeypatch.setattr(blindrsa, "_rsasp1", lambda priv, c: original(priv, c) + 1)
    with pytest.raises(SigningFailureError):
        blindrsa.blind_sign(_private_key(case), _bytes(case, "blinded_msg"))


def test_signer_exponentiates_a_blinded_input(
    cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The private-key operation must never see the client's m itself, only m * u^e for the
    # signer's own random u: that is what takes the message out of the timing.
    case = cases[PSS]
    n, e, m = _int(case, "n"), _int(case, "e"), _int(case, "blinded_msg")
    u = 0x1234567890ABCDEF
    seen: list[int] = []
    original = blindrsa._rsasp1

    def spy(priv: RSAPrivateNumbers, c: int) -> int:
        seen.append(c)
        return original(priv, c)

    monkeypatch.setattr(blindrsa, "_rsasp1", spy)
    feed = Feed(u.to_bytes(512, "big"))
    blind_sig = blindrsa.blind_sign(_private_key(case), _bytes(case, "blinded_msg"), feed)
    assert feed.used_up
    assert seen == [(m * pow(u, e, n)) % n]
    assert blind_sig == _bytes(case, "blind_sig")  # and the blinding cancels out


def test_rsasp1_crt_matches_plain_exponentiation(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    priv = _private_key(case).private_numbers()
    m = _int(case, "blinded_msg")
    assert blindrsa._rsasp1(priv, m) == pow(m, priv.d, priv.public_numbers.n)


# --- randomness, key sizes, errors -------------------------------------------------------------


def test_broken_rng_is_reported_not_looped_on(cases: dict[str, Case]) -> None:
    public_key = _private_key(cases[PSS]).public_key()
    with pytest.raises(BlindRSAError, match="broken rng"):
        blindrsa.blind(public_key, b"msg", 48, lambda n: b"\x00" * n)


def test_rng_returning_wrong_length_is_refused(cases: dict[str, Case]) -> None:
    public_key = _private_key(cases[PSS]).public_key()
    with pytest.raises(BlindRSAError, match="PSS salt is 47 bytes, want 48"):
        blindrsa.blind(public_key, b"msg", 48, lambda n: b"\x01" * (n - 1))
    with pytest.raises(BlindRSAError, match="random prefix"):
        blindrsa.prepare(b"msg", True, lambda n: b"")


def test_rejection_sampling_skips_values_not_below_n(cases: dict[str, Case]) -> None:
    case = cases[PSS]
    n = _int(case, "n")
    feed = Feed(_bytes(case, "salt"), n.to_bytes(512, "big"), b"\x00" * 512, _r_bytes(case))
    blinded = blindrsa.blind(_private_key(case).public_key(), _bytes(case, "input_msg"), 48, feed)
    assert feed.used_up
    assert blinded.blinded_msg == _bytes(case, "blinded_msg")


def test_blind_rejects_message_sharing_a_factor_with_n(
    cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = cases[PSS]
    p = _int(case, "p")
    monkeypatch.setattr(blindrsa, "_emsa_pss_encode", lambda *_: p.to_bytes(512, "big"))
    with pytest.raises(InvalidInputError, match="not invertible"):
        blindrsa.blind(_private_key(case).public_key(), b"msg", 48)


@pytest.fixture(scope="module")
def small_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def test_keys_under_2048_bits_are_refused_everywhere(small_key: RSAPrivateKey) -> None:
    public_key = small_key.public_key()
    calls: list[Callable[[], object]] = [
        lambda: blindrsa.blind(public_key, b"msg", 48),
        lambda: blindrsa.blind_sign(small_key, b"\x01" * 128),
        lambda: blindrsa.finalize(public_key, b"msg", b"\x01" * 128, 1, 48),
        lambda: blindrsa.verify(public_key, b"msg", b"\x01" * 128, 48),
    ]
    for call in calls:
        with pytest.raises(KeySizeError) as caught:
            call()
        assert (caught.value.got, caught.value.want) == (1024, 2048)
        assert isinstance(caught.value, AttestError)
        assert "1024 bits refused" in caught.value.diagnostic


def test_blinding_result_repr_hides_inv() -> None:
    result = blindrsa.BlindingResult(b"\x01\x02", 123456789)
    assert "123456789" not in repr(result)
    blinded_msg, inv = result  # still a plain pair
    assert (blinded_msg, inv) == (b"\x01\x02", 123456789)


# --- round trips with fresh 2048-bit keys ------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_keys() -> tuple[RSAPrivateKey, RSAPrivateKey]:
    """Two 2048-bit keys, generated once for this module (generation is the slow part)."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@given(msg=st.binary(max_size=200), name=st.sampled_from(NAMES))
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_round_trip(fresh_keys: tuple[RSAPrivateKey, RSAPrivateKey], msg: bytes, name: str) -> None:
    key = fresh_keys[0]
    variant: Variant = VARIANTS[name]
    input_msg = blindrsa.prepare(msg, variant.randomized)
    blinded = blindrsa.blind(key.public_key(), input_msg, variant.salt_len)
    blind_sig = blindrsa.blind_sign(key, blinded.blinded_msg)
    sig = blindrsa.finalize(key.public_key(), input_msg, blind_sig, blinded.inv, variant.salt_len)
    assert len(sig) == blindrsa.modulus_len(key.public_key()) == 256
    blindrsa.verify(key.public_key(), input_msg, sig, variant.salt_len)
    assert blinded.blinded_msg != sig  # what the signer saw is not what the client keeps


def test_two_blindings_of_one_message_look_unrelated(
    fresh_keys: tuple[RSAPrivateKey, RSAPrivateKey],
) -> None:
    public_key = fresh_keys[0].public_key()
    first = blindrsa.blind(public_key, b"same message", 48)
    second = blindrsa.blind(public_key, b"same message", 48)
    assert first.blinded_msg != second.blinded_msg


def test_finalize_under_the_wrong_key_fails(
    fresh_keys: tuple[RSAPrivateKey, RSAPrivateKey],
) -> None:
    signer, other = fresh_keys
    blinded = blindrsa.blind(signer.public_key(), b"msg", 48)
    blind_sig = blindrsa.blind_sign(signer, blinded.blinded_msg)
    with pytest.raises(InvalidSignatureError):  # the client finalizes against another issuer key
        blindrsa.finalize(other.public_key(), b"msg", blind_sig, blinded.inv, 48)


def test_verify_under_the_wrong_key_fails(
    fresh_keys: tuple[RSAPrivateKey, RSAPrivateKey],
) -> None:
    signer, other = fresh_keys
    blinded = blindrsa.blind(signer.public_key(), b"msg", 48)
    blind_sig = blindrsa.blind_sign(signer, blinded.blinded_msg)
    sig = blindrsa.finalize(signer.public_key(), b"msg", blind_sig, blinded.inv, 48)
    with pytest.raises(InvalidSignatureError):
        blindrsa.verify(other.public_key(), b"msg", sig, 48)
