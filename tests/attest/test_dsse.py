"""DSSE v1: PAE known answers, envelope decoding, and one test per verification mutation."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from attest.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_SIGNATURES,
    Envelope,
    Signature,
    TrustedKey,
    pae,
    sign_envelope,
    verify_envelope,
)
from attest.errors import (
    MalformedEnvelopeError,
    PayloadTypeError,
    SignatureError,
    ThresholdError,
)
from attest.jcs import canonicalize
from attest.keys import dsse_keyid

PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1"}'

# RFC 8032 section 7.1, TEST 1 and TEST 2: Ed25519 is deterministic, so signatures are known
# answers. The expected signatures below are those of DSSE's testvectors/vectors.json
# (github.com/secure-systems-lab/dsse), reproduced independently with `cryptography`.
RFC8032_SEED_1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
KEY_A = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED_1)
KEY_B = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED_2)
SIG_A = "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
SIG_B = "c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw=="


def trusted(name: str, key: Ed25519PrivateKey) -> TrustedKey:
    return TrustedKey.named(name, key.public_key())


A = trusted("a.example/key", KEY_A)
B = trusted("b.example/key", KEY_B)


def envelope_json(**overrides: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "payload": base64.b64encode(PAYLOAD).decode(),
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "signatures": [{"keyid": "A", "sig": SIG_A}],
    }
    env.update(overrides)
    return env


# --- PAE ------------------------------------------------------------------------------------


def test_pae_known_answer_from_protocol_md() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_of_the_type() -> None:
    # "ä" is two UTF-8 bytes: 29 bytes for 28 characters.
    assert pae("application/vnd.exämple+json", b"x").startswith(
        b"DSSEv1 29 application/vnd.ex\xc3\xa4mple+json 1 x"
    )


def test_pae_of_empty_payload_ends_in_space() -> None:
    assert pae(IN_TOTO_PAYLOAD_TYPE, b"") == b"DSSEv1 28 application/vnd.in-toto+json 0 "


def test_pae_counts_body_bytes_not_characters() -> None:
    body = "€".encode()
    assert pae("t", body) == b"DSSEv1 1 t 3 " + body


# --- known answers --------------------------------------------------------------------------


def test_rfc8032_signature_known_answers() -> None:
    env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [("a.example/key", KEY_A), ("b", KEY_B)])
    assert env.to_json()["signatures"] == [
        {"keyid": dsse_keyid("a.example/key", KEY_A.public_key()), "sig": SIG_A},
        {"keyid": dsse_keyid("b", KEY_B.public_key()), "sig": SIG_B},
    ]


def test_foreign_keyid_is_only_a_hint() -> None:
    # keyid "A" names no trusted key: every trusted key is tried.
    env = Envelope.from_json(envelope_json())
    assert verify_envelope(env, [B, A]) == [A]


def test_signatures_without_keyid_meet_threshold_two() -> None:
    env = Envelope.from_json(envelope_json(signatures=[{"sig": SIG_A}, {"sig": SIG_B}]))
    assert verify_envelope(env, [A, B], threshold=2) == [A, B]


def test_url_safe_base64_vector_from_dsse() -> None:
    env = Envelope.from_json(
        envelope_json(
            payload="-_-_Pj8=",
            signatures=[
                {
                    "keyid": "A",
                    "sig": "P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW8"
                    "86DbWNWcCmX5twLrAw==",
                }
            ],
        )
    )
    assert env.payload == bytes.fromhex("fbffbf3e3f")
    assert verify_envelope(env, [A]) == [A]


# --- mutations: each must fail verification -------------------------------------------------


def signed(*signers: tuple[str, Ed25519PrivateKey]) -> Envelope:
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, list(signers) or [("a.example/key", KEY_A)])


def test_happy_path() -> None:
    assert verify_envelope(signed(), [A]) == [A]


def test_payload_type_swapped() -> None:
    env = signed()
    swapped = Envelope("application/vnd.example.other+json", env.payload, env.signatures)
    with pytest.raises(SignatureError):
        verify_envelope(swapped, [A], payload_type=None)


def test_payload_type_swapped_is_not_accepted_even_if_supported() -> None:
    env = signed()
    swapped = Envelope("application/vnd.example.other+json", env.payload, env.signatures)
    with pytest.raises(SignatureError):
        verify_envelope(swapped, [A], payload_type="application/vnd.example.other+json")


def test_signature_over_raw_payload_instead_of_pae() -> None:
    raw_sig = KEY_A.sign(PAYLOAD)
    env = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, (Signature(A.keyid, raw_sig),))
    with pytest.raises(SignatureError):
        verify_envelope(env, [A])


def test_signature_over_pae_of_other_payload() -> None:
    env = signed()
    moved = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD + b" ", env.signatures)
    with pytest.raises(SignatureError):
        verify_envelope(moved, [A])


def test_truncated_signature() -> None:
    sig = signed().signatures[0]
    env = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, (Signature(sig.keyid, sig.sig[:-1]),))
    with pytest.raises(SignatureError):
        verify_envelope(env, [A])


def test_extended_signature() -> None:
    sig = signed().signatures[0]
    env = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, (Signature(sig.keyid, sig.sig + b"\x00"),))
    with pytest.raises(SignatureError):
        verify_envelope(env, [A])


@given(st.integers(0, 64 * 8 - 1))
def test_any_flipped_signature_bit(bit: int) -> None:
    sig = bytearray(SIG_A_BYTES)
    sig[bit // 8] ^= 1 << (bit % 8)
    env = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, (Signature(A.keyid, bytes(sig)),))
    with pytest.raises(SignatureError):
        verify_envelope(env, [A])


SIG_A_BYTES = base64.b64decode(SIG_A)


def test_untrusted_key() -> None:
    with pytest.raises(SignatureError, match="no signature verified"):
        verify_envelope(signed(), [B])


def test_no_trusted_keys() -> None:
    with pytest.raises(SignatureError):
        verify_envelope(signed(), [])


def test_same_keyid_twice_counts_once() -> None:
    env = signed(("a.example/key", KEY_A), ("a.example/key", KEY_A))
    assert len(env.signatures) == 2
    with pytest.raises(ThresholdError) as info:
        verify_envelope(env, [A, B], threshold=2)
    assert (info.value.got, info.value.want) == (1, 2)


def test_two_keyids_wrapping_one_public_key_count_once() -> None:
    alias = trusted("alias.example/key", KEY_A)
    env = signed(("a.example/key", KEY_A), ("alias.example/key", KEY_A))
    assert env.signatures[0].keyid != env.signatures[1].keyid
    with pytest.raises(ThresholdError) as info:
        verify_envelope(env, [A, alias], threshold=2)
    assert (info.value.got, info.value.want) == (1, 2)


def test_duplicate_trusted_key_entries_return_one_key() -> None:
    alias = trusted("alias.example/key", KEY_A)
    env = signed(("a.example/key", KEY_A), ("alias.example/key", KEY_A))
    assert verify_envelope(env, [A, alias]) == [A]


def test_threshold_two_distinct_keys() -> None:
    env = signed(("a.example/key", KEY_A), ("b.example/key", KEY_B))
    assert verify_envelope(env, [A, B], threshold=2) == [A, B]


def test_threshold_above_trusted_keys() -> None:
    env = signed(("a.example/key", KEY_A), ("b.example/key", KEY_B))
    with pytest.raises(ThresholdError) as info:
        verify_envelope(env, [A, B], threshold=3)
    assert (info.value.got, info.value.want) == (2, 3)


def test_keyid_hint_pointing_at_the_wrong_trusted_key() -> None:
    # Signed by A but labelled with B's keyid: the hint is tried first, then the others.
    env = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, (Signature(B.keyid, SIG_A_BYTES),))
    assert verify_envelope(env, [A, B]) == [A]


def test_one_bad_signature_does_not_hide_a_good_one() -> None:
    bad = Signature(A.keyid, bytes(64))
    env = Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, (bad, Signature(A.keyid, SIG_A_BYTES)))
    assert verify_envelope(env, [A]) == [A]


def test_zero_threshold_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        verify_envelope(signed(), [A], threshold=0)


def test_unsupported_payload_type() -> None:
    env = sign_envelope("application/vnd.example.other+json", PAYLOAD, [("a.example/key", KEY_A)])
    with pytest.raises(PayloadTypeError) as info:
        verify_envelope(env, [A])
    assert info.value.got == "application/vnd.example.other+json"
    assert verify_envelope(env, [A], payload_type=None) == [A]


def test_threshold_error_is_a_signature_error_with_diagnostic() -> None:
    err = ThresholdError(got=1, want=2)
    assert isinstance(err, SignatureError)
    assert "1 distinct trusted key(s) verified, need 2" in err.diagnostic


# --- envelope decoding ----------------------------------------------------------------------


def test_url_safe_base64_gives_same_canonical_bytes() -> None:
    env = signed()
    standard = env.to_json()
    url_safe = json.loads(json.dumps(standard))
    url_safe["payload"] = base64.urlsafe_b64encode(env.payload).decode()
    url_safe["signatures"][0]["sig"] = base64.urlsafe_b64encode(env.signatures[0].sig).decode()
    assert url_safe != standard
    assert Envelope.from_json(url_safe).canonical_bytes() == env.canonical_bytes()


def test_unpadded_base64_gives_same_canonical_bytes() -> None:
    env = signed()
    unpadded = json.loads(json.dumps(env.to_json()))
    unpadded["payload"] = unpadded["payload"].rstrip("=")
    unpadded["signatures"][0]["sig"] = unpadded["signatures"][0]["sig"].rstrip("=")
    assert Envelope.from_json(json.dumps(unpadded)).canonical_bytes() == env.canonical_bytes()


def test_whitespace_and_key_order_give_same_canonical_bytes() -> None:
    env = signed()
    pretty = json.dumps(dict(reversed(list(env.to_json().items()))), indent=4)
    assert Envelope.from_json(pretty.encode()).canonical_bytes() == env.canonical_bytes()


def test_canonical_bytes_are_jcs_of_to_json() -> None:
    env = signed()
    assert env.canonical_bytes() == canonicalize(env.to_json())
    assert env.canonical_bytes().startswith(b'{"payload":"')


def test_empty_keyid_is_omitted() -> None:
    env = Envelope.from_json(envelope_json(signatures=[{"keyid": "", "sig": SIG_A}]))
    assert env.to_json()["signatures"] == [{"sig": SIG_A}]
    assert env == Envelope.from_json(envelope_json(signatures=[{"sig": SIG_A}]))


def test_round_trip_through_bytes() -> None:
    env = signed(("a.example/key", KEY_A), ("b.example/key", KEY_B))
    assert Envelope.from_json(env.canonical_bytes()) == env
    assert Envelope.from_json(env.canonical_bytes().decode()) == env


def _mutate(path: str, value: Any) -> dict[str, Any]:
    env = envelope_json()
    if path.startswith("sig."):
        env["signatures"][0][path[4:]] = value
    else:
        env[path] = value
    return env


def _drop(path: str) -> dict[str, Any]:
    env = envelope_json()
    if path.startswith("sig."):
        del env["signatures"][0][path[4:]]
    else:
        del env[path]
    return env


MALFORMED: dict[str, Callable[[], object]] = {
    "unknown-top-level-field": lambda: _mutate("extension", {}),
    "unknown-signature-field": lambda: _mutate("sig.cert", "x"),
    "missing-payload": lambda: _drop("payload"),
    "missing-payloadType": lambda: _drop("payloadType"),
    "missing-signatures": lambda: _drop("signatures"),
    "missing-sig": lambda: _drop("sig.sig"),
    "empty-signatures": lambda: _mutate("signatures", []),
    "empty-payloadType": lambda: _mutate("payloadType", ""),
    "empty-sig": lambda: _mutate("sig.sig", ""),
    "payload-not-string": lambda: _mutate("payload", 5),
    "payloadType-not-string": lambda: _mutate("payloadType", ["a"]),
    "keyid-not-string": lambda: _mutate("sig.keyid", 1),
    "keyid-null": lambda: _mutate("sig.keyid", None),
    "sig-not-string": lambda: _mutate("sig.sig", {"x": 1}),
    "signatures-not-array": lambda: _mutate("signatures", {"sig": SIG_A}),
    "signature-not-object": lambda: _mutate("signatures", [SIG_A]),
    "too-many-signatures": lambda: _mutate("signatures", [{"sig": SIG_A}] * (MAX_SIGNATURES + 1)),
    "payload-too-long": lambda: _mutate("payload", base64.b64encode(bytes(70000)).decode()),
    "payloadType-too-long": lambda: _mutate("payloadType", "x" * 300),
    "keyid-too-long": lambda: _mutate("sig.keyid", "k" * 600),
    "sig-too-long": lambda: _mutate("sig.sig", base64.b64encode(bytes(2000)).decode()),
    "base64-mixed-alphabets": lambda: _mutate("payload", "ab+_"),
    "base64-bad-char": lambda: _mutate("payload", "ab*d"),
    "base64-whitespace": lambda: _mutate("payload", "YWJj ZA=="),
    "base64-partial-padding": lambda: _mutate("payload", "YQ="),
    "base64-excess-padding": lambda: _mutate("payload", "YQ==="),
    "base64-inner-padding": lambda: _mutate("payload", "YQ==YQ=="),
    "base64-impossible-length": lambda: _mutate("payload", "YWJjZ"),
    "base64-trailing-bits": lambda: _mutate("payload", "YR=="),
    "base64-non-ascii": lambda: _mutate("payload", "YWJj\u00e9A=="),
    "not-an-object": lambda: b"[]",
    "not-json": lambda: b"{payload}",
    "duplicate-json-key": lambda: b'{"payload":"","payload":"","payloadType":"t","signatures":[]}',
    "trailing-garbage": lambda: json.dumps(envelope_json()).encode() + b"x",
    "huge-input": lambda: b" " * (1 << 21),
    "lone-surrogate-keyid": lambda: _mutate("sig.keyid", "\ud800"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_envelope_rejected(case: str) -> None:
    with pytest.raises(MalformedEnvelopeError):
        Envelope.from_json(MALFORMED[case]())  # type: ignore[arg-type]


def test_empty_payload_is_allowed() -> None:
    env = Envelope.from_json(envelope_json(payload=""))
    assert env.payload == b""


def test_envelope_constructor_validates() -> None:
    with pytest.raises(MalformedEnvelopeError, match="no signatures"):
        Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, ())
    with pytest.raises(MalformedEnvelopeError):
        Envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [Signature("", b"x")])  # type: ignore[arg-type]
    with pytest.raises(MalformedEnvelopeError):
        Signature("", b"")


def test_sign_envelope_requires_a_signer() -> None:
    with pytest.raises(MalformedEnvelopeError):
        sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, [])


# --- properties -----------------------------------------------------------------------------

alphabet = st.sampled_from(["standard", "urlsafe"])


@given(
    payload=st.binary(max_size=300),
    payload_type=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30),
    keyids=st.lists(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=20), min_size=1, max_size=4
    ),
    encoding=alphabet,
    padded=st.booleans(),
)
def test_envelope_round_trip_is_canonical(
    payload: bytes, payload_type: str, keyids: list[str], encoding: str, padded: bool
) -> None:
    env = Envelope(
        payload_type,
        payload,
        tuple(Signature(k, bytes([i]) * 64) for i, k in enumerate(keyids)),
    )

    def enc(raw: bytes) -> str:
        out = (base64.urlsafe_b64encode if encoding == "urlsafe" else base64.b64encode)(raw)
        return out.decode() if padded else out.decode().rstrip("=")

    posted = {
        "payloadType": payload_type,
        "payload": enc(payload),
        "signatures": [{"keyid": s.keyid, "sig": enc(s.sig)} for s in env.signatures],
    }
    parsed = Envelope.from_json(json.dumps(posted))
    assert parsed == env
    data = parsed.canonical_bytes()
    assert Envelope.from_json(data) == env
    assert canonicalize(json.loads(data)) == data


@given(st.binary(max_size=200))
def test_sign_then_verify(payload: bytes) -> None:
    env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, [("a.example/key", KEY_A)])
    assert verify_envelope(Envelope.from_json(env.canonical_bytes()), [A]) == [A]


def test_trusted_key_raw_is_the_public_key_and_no_part_of_equality() -> None:
    private = Ed25519PrivateKey.generate()
    key = TrustedKey("k", private.public_key())
    assert key.raw() == private.public_key().public_bytes_raw()
    same = TrustedKey(
        "k", Ed25519PrivateKey.from_private_bytes(private.private_bytes_raw()).public_key()
    )
    assert same.raw() == key.raw()
    assert "_raw" not in repr(key)
    other = TrustedKey("k", Ed25519PrivateKey.generate().public_key())
    assert other.raw() != key.raw()
    assert key != other
