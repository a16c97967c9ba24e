"""`attest.admission.sodium_first_verifies` against the rules' own verification.

The evidence log checks signatures with libsodium first and asks `cryptography` again when
libsodium refuses (`attest.admission.ed25519_verifies`, the reference); the audit node's
workers do the same on raw keys (`verifier.parallel.verify_ed25519`), through the one fast path
`attest.admission.libsodium_accepts`. The two must agree on every input: honest signatures,
every kind of forgery, and the signatures only one of the two libraries accepts (a small-order
public key: OpenSSL accepts, libsodium refuses). And the fast path must be taken: libsodium
accepts honest signatures, and whatever it accepts the reference accepts.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import admission as rules
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, TrustedKey, pae, sign_envelope
from attest.keys import public_key_from_bytes

L = 2**252 + 27742317777372353535851937790883648493  # the order of Ed25519's base point
IDENTITY = b"\x01" + bytes(31)  # the neutral element's encoding: a small-order point


def trusted(raw: bytes) -> TrustedKey:
    return TrustedKey("k", public_key_from_bytes(raw))


def agree(key: TrustedKey, sig: bytes, message: bytes) -> bool:
    want = rules.ed25519_verifies(key, sig, message)
    if rules.libsodium_accepts(key.raw(), sig, message):
        assert want, "libsodium accepted what the reference refuses"
    assert rules.sodium_first_verifies(key, sig, message) is want
    return want


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=300),
    flip=st.integers(min_value=-1, max_value=8 * (64 + 300) - 1),
)
def test_honest_and_flipped_signatures_get_the_reference_answer(
    seed: bytes, message: bytes, flip: int
) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    key = TrustedKey("k", private.public_key())
    sig = private.sign(message)
    if flip < 0:
        assert rules.libsodium_accepts(key.raw(), sig, message), "the fast path was not taken"
        assert agree(key, sig, message)
        return
    blob = bytearray(sig + message)
    if flip >= 8 * len(blob):
        return
    blob[flip // 8] ^= 1 << (flip % 8)
    assert not agree(key, bytes(blob[:64]), bytes(blob[64:]))


def test_libsodium_answers_for_honest_signatures() -> None:
    # The fast path must be the path: a libsodium that refused everything would still agree.
    for seed in (bytes(32), bytes(range(32)), b"\xff" * 32):
        private = Ed25519PrivateKey.from_private_bytes(seed)
        raw = TrustedKey("k", private.public_key()).raw()
        for message in (b"", b"m", pae(IN_TOTO_PAYLOAD_TYPE, b"{}" * 600)):
            assert rules.libsodium_accepts(raw, private.sign(message), message)
            assert not rules.libsodium_accepts(raw, private.sign(message), message + b"x")
            assert not rules.libsodium_accepts(raw[:31], private.sign(message), message)


def test_a_small_order_key_libsodium_refuses_is_still_the_reference_answer() -> None:
    # R = the identity, S = 0: [S]B = R + [k]A holds for A the identity whatever k is, so
    # OpenSSL's RFC 8032 check accepts it for any message; libsodium refuses small-order keys.
    key, sig = trusted(IDENTITY), IDENTITY + bytes(32)
    for message in (b"", b"any message", pae(IN_TOTO_PAYLOAD_TYPE, b"{}")):
        assert rules.ed25519_verifies(key, sig, message), "premise: cryptography accepts it"
        assert not rules.libsodium_accepts(key.raw(), sig, message), "premise: libsodium refuses"
        assert agree(key, sig, message)


def test_a_non_canonical_s_is_refused_by_both() -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    key, message = TrustedKey("k", private.public_key()), b"m"
    sig = private.sign(message)
    s = int.from_bytes(sig[32:], "little") + L
    assert s < 2**256
    assert not agree(key, sig[:32] + s.to_bytes(32, "little"), message)
    assert not agree(key, sig[:63], message)
    assert not agree(key, sig + b"\x00", message)


def test_verify_every_signature_with_it_answers_as_without() -> None:
    a = Ed25519PrivateKey.from_private_bytes(bytes(32))
    env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, b"{}", [("a", a)])
    keys = [TrustedKey(env.signatures[0].keyid, a.public_key())]
    want = rules.verify_every_signature(env, keys)
    got = rules.verify_every_signature(env, keys, verifies=rules.sodium_first_verifies)
    assert [k.raw() for k in got] == [k.raw() for k in want]
