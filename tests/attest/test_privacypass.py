"""Privacy Pass token type 0x0002: RFC 9578 vectors, wire round trips, mutations, HTTP headers."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest import blindrsa
from attest.errors import AttestError
from attest.privacypass import (
    NK,
    TOKEN_TYPE,
    ChallengeMismatchError,
    KeyIdMismatchError,
    MalformedMessageError,
    PrivateTokenChallenge,
    Token,
    TokenChallenge,
    TokenKeyError,
    TokenRequest,
    TokenResponse,
    TokenResponseError,
    TokenTypeError,
    TokenVerificationError,
    authorization,
    begin_issuance,
    challenge_digest,
    finalize_issuance,
    issue,
    parse_authorization,
    parse_www_authenticate,
    token_key_bytes,
    token_key_from_bytes,
    token_key_id,
    verify_token,
    www_authenticate,
)


def _hex(text: str) -> bytes:
    """Hex as the RFC prints it: wrapped at any column, so all whitespace goes."""
    return bytes.fromhex("".join(text.split()))


# RFC 9578 (Privacy Pass Issuance Protocols), Appendix A.2 "Issuance Protocol 2 - Blind RSA,
# 2048", test vectors 1 and 4, quoted with the RFC's line wrapping. Public values only: skS (the
# issuer's private key) is left out, so issue() is checked through the RFC 9474 vectors instead.
# "blind" is the blinding factor r (RFC 9474 section 4.2 step 6), not its inverse.
RFC9578_PKS = _hex("""
30820152303d06092a864886f70d01010a3030a00d300b06096086480165
03040202a11a301806092a864886f70d010108300b0609608648016503040202a
2030201300382010f003082010a0282010100cb1aed6b6a95f5b1ce013a4cfcab
25b94b2e64a23034e4250a7eab43c0df3a8c12993af12b111908d4b471bec31d4
b6c9ad9cdda90612a2ee903523e6de5a224d6b02f09e5c374d0cfe01d8f529c50
0a78a2f67908fa682b5a2b430c81eaf1af72d7b5e794fc98a3139276879757ce4
53b526ef9bf6ceb99979b8423b90f4461a22af37aab0cf5733f7597abe44d31c7
32db68a181c6cbbe607d8c0e52e0655fd9996dc584eca0be87afbcd78a337d17b
1dba9e828bbd81e291317144e7ff89f55619709b096cbb9ea474cead264c2073f
e49740c01f00e109106066983d21e5f83f086e2e823c879cd43cef700d2a352a9
babd612d03cad02db134b7e225a5f0203010001
""")

RFC9578_VECTORS = {
    "vector-1": {
        "token_challenge": """
0002000e6973737565722e6578616d706c65208e7acc900e
393381e8810b7c9e4a68b5163f1f880ab6688a6ffe780923609e88000e6f72696
7696e2e6578616d706c65""",
        "nonce": "aa72019d1f951df197021ce63876fe8b0a02dc1c31a12b0a2dd1508d07827f05",
        "blind": """
425421de54c7381864ce36473abfb988c454fe6c27de863de702a6a2ad
ca153fa2de47bd8fcd62734caa8ce1f920b77d980ab58c32d16dde54873f28ca9
68e8c125b8363514be68972f553655bcc7f80a284cc327e47e804a47333c5b3cd
f773312cc7ad9fda748aed0baa7e19c5a2d1dafda718f086d7fc0a4bc02d488e0
f20812daee335af7177b7a8369bd617066aed7a58f659f295c36b418827f67972
5b81ca14ea16fb82df21ad76da1ac38dcf24bf6252f8510e2308608ac9197f6cb
54fdcb19db17837302a2b87d659c5605f35f3709a130f0c3d50e172f0cae36cbc
9467f9914895a215a9e32443bcafff795273ccf8965a7eaa8c0b2184763e3e5c""",
        "salt": """
3d980852fa570c064204feb8d107098db976ef8c2137e8641d234bbd88a
986fdb306a7af220cfadede08f51e1ef61766""",
        "token_request": """
0002086a95be84b63cfed0993bb579194a72a95057e1548ac4
63a9a5b33b011f2b2011d59487f01862f1d8e4d5ea42e73a660fbc3d010b944a5
4da3a4e0942f8894c0884589b438cb902e9a34278970f33c16f351f7dae58d273
c3ab66ef368da36f785e89e24d1d983d5c34311cd21f290f9e89e8646ab0d0a48
988fcd46230de5e7603cd12cc95c7ec5002e5e26737aa7eb69c626476e6c8d465
10ee404a3d7daf3a23b7c66735d363ca13676925c6ed0117f60d165ce1f8ba616
d041b6384baf6da3e2f757cb18e879a4f8595c2dc895ddf1f4279c75768d108b5
c47f95f94e81e2d8b9c8b74476924ab3b7c45243fc99ac5466e8a3680ad37fa15
c96010b274094""",
        "token_response": """
675d84b751d9e593330ec4b6d7ab69c9a61517e98971f4b73
6150508174b4335761464f237be2d72bbae4b94dffc6143413f6351f1aa4efde6
c32d4d6d9392a008290d56d1222f9b77a1336213e01934f7d972f3bf9ea5a5786
c321352f103b3667e605379a55f0fb925fbb09b8a9f85e7dd4b388a3b49d06fd7
0ba28f6a780e3bc8f6421554fd6c38b63ef19f84ccfcf14709dd0b4d72213c1f0
60893854eba0ea1a147e275da320db5e9849882d5f9179efa8a2d8d3b803f9d14
45ef5c1f660be08883ce9b29a0a992fc035d2938cbb61c440044438dbb8b3ce71
58a8f9827d230482f622d291406ab236b32b122627ae0fd36bd0d6b7607b8044a
ce404d44""",
        "token": """
0002aa72019d1f951df197021ce63876fe8b0a02dc1c31a12b0a2dd150
8d07827f055969f643b4cfda5196d4aa86aeb5368834f4f06de46950ed435b3b8
1bd036d44ca572f8982a9ca248a3056186322d93ca147266121ddeb5632c07f1f
71cd2708bc6a21b533d07294b5e900faf5537dd3eb33cee4e08c9670d1e5358fd
184b0e00c637174f5206b14c7bb0e724ebf6b56271e5aa2ed94c051c4a433d302
b23bc52460810d489fb050f9de5c868c6c1b06e3849fd087629f704cc724bc0d0
984d5c339686fcdd75f9a9cdd25f37f855f6f4c584d84f716864f546b696d620c
5bd41a811498de84ff9740ba3003ba2422d26b91eb745c084758974642a420782
01543246ddb58030ea8e722376aa82484dca9610a8fb7e018e396165462e17a03
e40ea7e128c090a911ecc708066cb201833010c1ebd4e910fc8e27a1be467f786
71836a508257123a45e4e0ae2180a434bd1037713466347a8ebe46439d3da1970""",
    },
    "vector-4": {
        "token_challenge": "0002000e6973737565722e6578616d706c65000000",
        "nonce": "494dae41fc7e300c2d09990afcd5d5e1fc95305337dc12f78942c45340bfe8e6",
        "blind": """
097cb17bcedecfe058dff5c4e517d1e36d7ab8f46252b1ac1933ba378c
32625c0dbc69f5655c2003bf39e75810796cd63675b223cf3162c57108d56e058
4cfce6cad829e74369ada38a095eb3012c912b31ccde7425f93464e353fb17552
be3a8df2913daca61543a33ae45058f218c471dfbc12fb304158e29b6ed35bc07
9e23f1e6173c5dec4545840bbe58e5ad37cbea0a10dca5d9df2781589d27c3410
8477b52c0d32a1370c17f703941fbb1a007a6794e7de2758709c9bbf80f21eec7
922b9bb491eb6aac8c1a14764e648e6be4fff0ae913797067aa0826f366c3103e
103b05653c73b52d7f825a185dccfb806da700db9f53abb848554b7d4f7c28f3""",
        "salt": """
49912979f1bf528e5b8228ab1328df74319dce7bdaf45821ceb1100dcf0
42a2dfe852fc9db59b64a5f6493c282504240""",
        "token_request": """
000208244840027ca8c620f8b14caded9a198ba388ccd8541e
962f68a0071535d958d18494afd0bc11da4da8c8b33864f5a8f623b697cd56348
594e11a75479048a72c0ed179b070506c09a7eb6ed3582f572df38cf60fcde11a
52c5ce6d7b23435b60200ad9f66d21f40f323c9aa54307d0b966d4457c37542b6
6bb183ddeafca914fc74831698b5d52f498ee3d165685f49a8d86e39fe6c4b7ec
678f5250908d25e5b873c69b422368121aa4210cadd6fc640907d3cb9a7a3e827
a0e742470f00c2f49dc6c0e8cc9470dbfd73df0ccbb96c10b02af0dd7dee719ec
a11ff8e1b4929e59f3cf319de9bda29a6d968b43083b5d4242f3448d76ada08b8
014f70b97e719""",
        "token_response": """
c2746ff644cffb28a2c19395fa19dfb61fd135daa837844fb
f9fbe06c253e64e69f53aefddc0fb4833b1b5e58f571134a34f245499c3e73419
549c2c9111cf94f2f68fea3996d47f71e8d8d6fc5b1c074bf74fa59de4cbf32f5
f08d45ea45492f0279c3b1a8d852698edbe1651eb8e09eb223a27386c0feb2f6a
8260235edb36cf433da518100829b63166284b325d87fc941ea3bafe7b6761b70
82e09397837f74b4f0fc838bce8af7242089dd5561f57735926bcbad219fc9fee
85ae49a8e8951f63ca194b7ff018c06ee02267e7267bb996432dc76973819da80
e3e86947b0a4b36d3a972dafaaa3db0e1044b325f02c679996d9bcd3ce51390d5
4bc10b8c""",
        "token": """
0002494dae41fc7e300c2d09990afcd5d5e1fc95305337dc12f78942c4
5340bfe8e6b741ec1b6fd05f1e95f8982906aec1612896d9ca97d53eef94ad3c9
fe023f7a4ca572f8982a9ca248a3056186322d93ca147266121ddeb5632c07f1f
71cd2708a55c83dc04292b5d92add1a87b37e54f22f61c58840586f390c50b231
824423378ddcf50e69dc817d45bfad06c7f2a0ac35d2acd7f26b0bc9954c192b0
a0ef28a2a5650e390098dd3cb1166a7cb1716d3dd2d19dc5ca3b1ea6206359de0
002d82bc4fa7e69fb07214b06addcbd2203d1e17f57fc580bcc5a13e0ac15cf94
2182cc2b5d6eaa737a712704114e357e2ec2f10047463ded02a1a0766dc346dd7
212b9711e03ac95eb258ac1164104dc9a0d3e738ae742ab5ed8c5139fc07145a7
88b9f891741ee68f0a66782b7b84a9bb4cb4b3d1b26b67106f397b35b641d882d
7b0185168946de898ef72349a44a47dbdd6d46e9ba9ba543d5701b65c63d645c2""",
    },
}

# The same appendix's vectors 2 and 3: only their token_challenge and the challenge_digest their
# token carries (bytes 34..66), to cover an origin_info of one name and of a list of two.
RFC9578_CHALLENGE_DIGESTS = {
    "0002000e6973737565722e6578616d706c6500000e6f726967696e2e6578616d706c65": (
        "11e15c91a7c2ad02abd66645802373db1d823bea80f08d452541fb2b62b5898b"
    ),
    "0002000e6973737565722e6578616d706c65000017666f6f2e6578616d706c652c6261722e6578616d706c65": (
        "0042eee45ac4dd5acb8f6e65c4d8dd47504f73f7463507ef96a4d7227d2774f3"
    ),
}

RFC9578_TOKEN_KEY_ID = _hex("ca572f8982a9ca248a3056186322d93ca147266121ddeb5632c07f1f71cd2708")


class Feed:
    """An `rng` that hands out fixed chunks in order, checking that each draw asks for its size."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def __call__(self, n: int) -> bytes:
        assert self._chunks, f"unexpected extra draw of {n} bytes"
        chunk = self._chunks.pop(0)
        assert len(chunk) == n, f"draw of {n} bytes, feed has {len(chunk)}"
        return chunk


def _vector(name: str, field: str) -> bytes:
    return _hex(RFC9578_VECTORS[name][field])


# --- RFC 9578 vectors --------------------------------------------------------------------------


def test_token_key_encoding_is_the_rfc_spki() -> None:
    public_key = token_key_from_bytes(RFC9578_PKS)
    assert token_key_bytes(public_key) == RFC9578_PKS
    assert token_key_id(public_key) == RFC9578_TOKEN_KEY_ID == hashlib.sha256(RFC9578_PKS).digest()


def test_cryptography_reads_the_same_modulus() -> None:
    # An independent parser agrees on the key inside the SPKI (it ignores the PSS parameters).
    theirs = serialization.load_der_public_key(RFC9578_PKS)
    assert isinstance(theirs, RSAPublicKey)
    assert theirs.public_numbers() == token_key_from_bytes(RFC9578_PKS).public_numbers()


@pytest.mark.parametrize("name", sorted(RFC9578_VECTORS))
def test_rfc9578_issuance(name: str) -> None:
    public_key = token_key_from_bytes(RFC9578_PKS)
    challenge = TokenChallenge.decode(_vector(name, "token_challenge"))
    assert challenge.encode() == _vector(name, "token_challenge")
    r = _vector(name, "blind")
    feed = Feed(_vector(name, "nonce"), _vector(name, "salt"), r)
    request, state = begin_issuance(public_key, challenge, feed)
    assert request.encode() == _vector(name, "token_request")
    assert TokenRequest.decode(_vector(name, "token_request")) == request
    response = TokenResponse.decode(_vector(name, "token_response"))
    token = finalize_issuance(state, response)
    assert token.encode() == _vector(name, "token")
    assert Token.decode(_vector(name, "token")) == token
    assert token.token_key_id == RFC9578_TOKEN_KEY_ID
    assert request.truncated_token_key_id == RFC9578_TOKEN_KEY_ID[-1]
    verify_token(public_key, token, challenge_digest(challenge))


def test_rfc9578_challenges() -> None:
    vector_1 = TokenChallenge.decode(_vector("vector-1", "token_challenge"))
    assert vector_1.issuer_name == "issuer.example"
    assert len(vector_1.redemption_context) == 32
    assert vector_1.origin_info == ("origin.example",)
    vector_4 = TokenChallenge.decode(_vector("vector-4", "token_challenge"))
    assert vector_4 == TokenChallenge(TOKEN_TYPE, "issuer.example")
    for encoded, digest in RFC9578_CHALLENGE_DIGESTS.items():
        challenge = TokenChallenge.decode(_hex(encoded))
        assert challenge.encode() == _hex(encoded)
        assert challenge_digest(challenge) == _hex(digest)
    two = TokenChallenge.decode(_hex(list(RFC9578_CHALLENGE_DIGESTS)[1]))
    assert two.origin_info == ("foo.example", "bar.example")


def test_rfc9578_token_is_deterministic_pss_over_the_token_input() -> None:
    # Token type 0x0002 signs token_input itself (PrepareIdentity), with a 48-byte salt.
    token = Token.decode(_vector("vector-1", "token"))
    public_key = token_key_from_bytes(RFC9578_PKS)
    blindrsa.verify(public_key, token.authenticator_input, token.authenticator, 48)


# --- keys ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> RSAPrivateKey:
    """A fresh 2048-bit issuer key, generated once for this module (generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_issuer(issuer: RSAPrivateKey) -> RSAPrivateKey:
    """A second issuer key, chosen so the tests that use it never depend on chance: its
    truncated key id differs from `issuer`'s (two fresh keys share one 1 time in 256), and its
    modulus is the larger (so a message blinded under `issuer` is always below it)."""
    n = issuer.public_key().public_numbers().n
    while True:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        distinct = token_key_id(other.public_key())[-1] != token_key_id(issuer.public_key())[-1]
        if distinct and other.public_key().public_numbers().n > n:
            return other


def test_token_key_round_trip(issuer: RSAPrivateKey) -> None:
    public_key = issuer.public_key()
    encoded = token_key_bytes(public_key)
    assert token_key_from_bytes(encoded).public_numbers() == public_key.public_numbers()
    assert encoded[: len(RFC9578_PKS) - 256 - 5] == RFC9578_PKS[: len(RFC9578_PKS) - 256 - 5]


def test_default_spki_is_not_a_token_key(issuer: RSAPrivateKey) -> None:
    rsa_encryption_spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(TokenKeyError, match="algorithm is not RSASSA-PSS"):
        token_key_from_bytes(rsa_encryption_spki)


def _with_null_hash_parameters() -> bytes:
    # An earlier draft's spelling: SHA-384 AlgorithmIdentifiers with an explicit NULL parameter.
    return (
        _hex(
            "30820156304106092a864886f70d01010a3034a00f300d06096086480165030402020500a11c301a0609"
            "2a864886f70d010108300d06096086480165030402020500a203020130"
        )
        + RFC9578_PKS[RFC9578_PKS.index(bytes.fromhex("0382010f")) :]
    )


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b + b"\x00", id="trailing-byte"),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(
            lambda b: b.replace(bytes.fromhex("a203020130"), bytes.fromhex("a203020120")),
            id="salt-32",
        ),
        pytest.param(lambda b: _with_null_hash_parameters(), id="null-hash-params"),
        pytest.param(lambda b: b"\x31" + b[1:], id="outer-tag"),
        pytest.param(
            lambda b: b[:4] + b"\x30\x84\x00\x00\x00\x3d" + b[6:], id="non-minimal-length"
        ),
    ],
)
def test_token_key_from_bytes_rejects(mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(TokenKeyError):
        token_key_from_bytes(mutate(RFC9578_PKS))


@given(cut=st.integers(min_value=0, max_value=len(RFC9578_PKS) - 1))
def test_every_truncation_of_the_token_key_is_rejected(cut: int) -> None:
    with pytest.raises(TokenKeyError):
        token_key_from_bytes(RFC9578_PKS[:cut])


@pytest.mark.parametrize("bits", [1024, 3072])
def test_only_2048_bit_keys(bits: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    with pytest.raises(TokenKeyError, match=f"got {bits}"):
        token_key_bytes(key.public_key())
    with pytest.raises(TokenKeyError):
        begin_issuance(key.public_key(), TokenChallenge(TOKEN_TYPE, "issuer.example"))
    with pytest.raises(TokenKeyError):
        issue(key, TokenRequest(0, b"\x01" * NK))


# --- issuance round trips and mutations ---------------------------------------------------------

CHALLENGE = TokenChallenge(TOKEN_TYPE, "issuer.example", b"\x07" * 32, ("origin.example",))


def _token(issuer: RSAPrivateKey, challenge: TokenChallenge = CHALLENGE) -> Token:
    request, state = begin_issuance(issuer.public_key(), challenge)
    return finalize_issuance(state, issue(issuer, request))


def test_issuance_round_trip(issuer: RSAPrivateKey) -> None:
    request, state = begin_issuance(issuer.public_key(), CHALLENGE)
    response = issue(issuer, TokenRequest.decode(request.encode()))
    token = finalize_issuance(state, TokenResponse.decode(response.encode()))
    verify_token(issuer.public_key(), Token.decode(token.encode()), challenge_digest(CHALLENGE))
    assert token.nonce == state.nonce and token.token_key_id == token_key_id(issuer.public_key())


def test_issuer_never_sees_the_token(issuer: RSAPrivateKey) -> None:
    request, state = begin_issuance(issuer.public_key(), CHALLENGE)
    response = issue(issuer, request)
    token = finalize_issuance(state, response)
    seen = request.encode() + response.encode()
    assert token.nonce not in seen and token.authenticator not in seen


def test_issuance_state_repr_hides_inv(issuer: RSAPrivateKey) -> None:
    _, state = begin_issuance(issuer.public_key(), CHALLENGE)
    assert str(state.inv) not in repr(state) and "inv" not in repr(state)


def test_begin_issuance_refuses_other_token_types(issuer: RSAPrivateKey) -> None:
    with pytest.raises(TokenTypeError) as caught:
        begin_issuance(issuer.public_key(), TokenChallenge(0x0001, "issuer.example"))
    assert (caught.value.got, caught.value.want) == (1, 2)


def test_issue_refuses_a_request_for_another_key(
    issuer: RSAPrivateKey, other_issuer: RSAPrivateKey
) -> None:
    request, _ = begin_issuance(other_issuer.public_key(), CHALLENGE)
    with pytest.raises(KeyIdMismatchError):
        issue(issuer, request)


def test_issue_refuses_blinded_msg_not_below_n(issuer: RSAPrivateKey) -> None:
    truncated = token_key_id(issuer.public_key())[-1]
    with pytest.raises(MalformedMessageError, match="not smaller than the modulus"):
        issue(issuer, TokenRequest(truncated, b"\xff" * NK))


def test_finalize_rejects_a_response_from_another_key(
    issuer: RSAPrivateKey, other_issuer: RSAPrivateKey
) -> None:
    request, state = begin_issuance(issuer.public_key(), CHALLENGE)
    forged = TokenRequest(token_key_id(other_issuer.public_key())[-1], request.blinded_msg)
    response = issue(other_issuer, forged)
    with pytest.raises(TokenResponseError):
        finalize_issuance(state, response)


@given(bit=st.integers(min_value=0, max_value=NK * 8 - 1))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_finalize_rejects_any_flipped_bit_in_the_response(issuer: RSAPrivateKey, bit: int) -> None:
    request, state = begin_issuance(issuer.public_key(), CHALLENGE)
    blind_sig = bytearray(issue(issuer, request).blind_sig)
    blind_sig[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(TokenResponseError):
        finalize_issuance(state, TokenResponse(bytes(blind_sig)))


@given(bit=st.integers(min_value=16, max_value=(2 + 32 + 32 + 32 + NK) * 8 - 1))
@settings(max_examples=60, deadline=None)
def test_any_flipped_bit_in_a_token_fails_verification(bit: int) -> None:
    # Bits 0-15 are the token type, which decoding refuses; every other bit is caught by one of
    # verify_token's three checks.
    public_key = token_key_from_bytes(RFC9578_PKS)
    encoded = bytearray(_vector("vector-1", "token"))
    encoded[bit // 8] ^= 0x80 >> (bit % 8)
    digest = Token.decode(_vector("vector-1", "token")).challenge_digest
    with pytest.raises((TokenVerificationError, KeyIdMismatchError)):
        verify_token(public_key, Token.decode(bytes(encoded)), digest)


def test_verify_token_checks_the_challenge(issuer: RSAPrivateKey) -> None:
    token = _token(issuer)
    other = TokenChallenge(TOKEN_TYPE, "issuer.example", b"\x08" * 32, ("origin.example",))
    with pytest.raises(ChallengeMismatchError) as caught:
        verify_token(issuer.public_key(), token, challenge_digest(other))
    assert caught.value.got == challenge_digest(CHALLENGE).hex()
    assert caught.value.want == challenge_digest(other).hex()


def test_verify_token_checks_the_key(issuer: RSAPrivateKey, other_issuer: RSAPrivateKey) -> None:
    token = _token(issuer)
    with pytest.raises(KeyIdMismatchError):
        verify_token(other_issuer.public_key(), token, challenge_digest(CHALLENGE))


def test_verify_token_checks_the_signature_even_with_matching_ids(
    issuer: RSAPrivateKey, other_issuer: RSAPrivateKey
) -> None:
    # A token made by another key, relabelled with this key's id: only the signature catches it.
    foreign = _token(other_issuer)
    relabelled = Token(
        foreign.nonce,
        foreign.challenge_digest,
        token_key_id(issuer.public_key()),
        foreign.authenticator,
    )
    with pytest.raises(TokenVerificationError) as caught:
        verify_token(issuer.public_key(), relabelled, challenge_digest(CHALLENGE))
    assert isinstance(caught.value, AttestError)
    assert not isinstance(caught.value, ChallengeMismatchError)


# --- wire structures ----------------------------------------------------------------------------

server_names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",@"),
    min_size=1,
    max_size=30,
)
challenges = st.builds(
    TokenChallenge,
    token_type=st.integers(min_value=0, max_value=0xFFFF),
    issuer_name=server_names,
    redemption_context=st.sampled_from([b""]) | st.binary(min_size=32, max_size=32),
    origin_info=st.lists(server_names, max_size=4).map(tuple),
)
tokens = st.builds(
    Token,
    nonce=st.binary(min_size=32, max_size=32),
    challenge_digest=st.binary(min_size=32, max_size=32),
    token_key_id=st.binary(min_size=32, max_size=32),
    authenticator=st.binary(min_size=NK, max_size=NK),
)
requests = st.builds(
    TokenRequest,
    truncated_token_key_id=st.integers(min_value=0, max_value=255),
    blinded_msg=st.binary(min_size=NK, max_size=NK),
)
responses = st.builds(TokenResponse, blind_sig=st.binary(min_size=NK, max_size=NK))


@given(challenges)
def test_token_challenge_round_trip(challenge: TokenChallenge) -> None:
    encoded = challenge.encode()
    assert TokenChallenge.decode(encoded) == challenge
    assert challenge_digest(challenge) == hashlib.sha256(encoded).digest()


@given(challenges, st.data())
def test_token_challenge_rejects_truncation_and_trailing_bytes(
    challenge: TokenChallenge, data: st.DataObject
) -> None:
    encoded = challenge.encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(MalformedMessageError):
        TokenChallenge.decode(encoded[:cut])
    with pytest.raises(MalformedMessageError, match="trailing"):
        TokenChallenge.decode(encoded + data.draw(st.binary(min_size=1, max_size=4)))


@given(st.one_of(tokens, requests, responses))
def test_message_round_trips(message: Token | TokenRequest | TokenResponse) -> None:
    encoded = message.encode()
    assert type(message).decode(encoded) == message
    with pytest.raises(MalformedMessageError):
        type(message).decode(encoded[:-1])
    with pytest.raises(MalformedMessageError):
        type(message).decode(encoded + b"\x00")


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("0002" + "0000" + "00" + "0000", id="empty-issuer"),
        pytest.param("0002" + "0001" + "69" + "10" + "00" * 16 + "0000", id="context-16"),
        pytest.param(
            "0002" + "0001" + "69" + "00" + "0003" + "612c62"[:4] + "2c", id="trailing-comma"
        ),
        pytest.param("0002" + "0001" + "69" + "00" + "0003" + "612c2c", id="empty-origin"),
        pytest.param("0002" + "0001" + "ff" + "00" + "0000", id="non-ascii"),
        pytest.param("0002" + "0001" + "20" + "00" + "0000", id="space"),
        pytest.param("0002" + "0003" + "614062" + "00" + "0000", id="userinfo"),
    ],
)
def test_token_challenge_rejects(encoded: str) -> None:
    with pytest.raises(MalformedMessageError):
        TokenChallenge.decode(bytes.fromhex(encoded))


def test_wire_models_validate_on_construction() -> None:
    with pytest.raises(MalformedMessageError, match="redemption_context is 31 bytes"):
        TokenChallenge(TOKEN_TYPE, "issuer.example", b"\x00" * 31)
    with pytest.raises(MalformedMessageError):
        TokenChallenge(0x10000, "issuer.example")
    with pytest.raises(MalformedMessageError, match=r"Token\.nonce is 31 bytes"):
        Token(b"\x00" * 31, b"\x00" * 32, b"\x00" * 32, b"\x00" * NK)
    with pytest.raises(MalformedMessageError):
        TokenRequest(256, b"\x00" * NK)
    with pytest.raises(MalformedMessageError):
        TokenResponse(b"\x00" * (NK + 1))


def test_other_token_types_are_refused_by_type() -> None:
    token = _vector("vector-1", "token")
    with pytest.raises(TokenTypeError):
        Token.decode(b"\x00\x01" + token[2:])
    with pytest.raises(TokenTypeError):
        TokenRequest.decode(b"\x00\x01" + _vector("vector-1", "token_request")[2:])


# --- WWW-Authenticate ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


RFC_KEY = token_key_from_bytes(RFC9578_PKS)
RFC_CHALLENGE = TokenChallenge.decode(_vector("vector-1", "token_challenge"))


def test_www_authenticate_shape() -> None:
    header = www_authenticate(RFC_CHALLENGE, RFC_KEY, max_age=30)
    assert header == (
        f'PrivateToken challenge="{_b64(RFC_CHALLENGE.encode())}", '
        f'token-key="{_b64(RFC9578_PKS)}", max-age=30'
    )
    assert parse_www_authenticate(header) == [PrivateTokenChallenge(RFC_CHALLENGE, RFC_KEY, 30)]


@given(
    challenges.map(
        lambda c: TokenChallenge(TOKEN_TYPE, c.issuer_name, c.redemption_context, c.origin_info)
    )
)
def test_www_authenticate_round_trip(challenge: TokenChallenge) -> None:
    header = www_authenticate(challenge, RFC_KEY)
    assert parse_www_authenticate(header) == [PrivateTokenChallenge(challenge, RFC_KEY)]


def test_several_challenges_among_other_schemes_in_order() -> None:
    second = TokenChallenge(TOKEN_TYPE, "issuer.example")
    header = ", ".join(
        [
            'Newauth realm="apps", type=1, title="Login to \\"apps\\""',
            www_authenticate(RFC_CHALLENGE, RFC_KEY),
            "Basic realm=simple",
            www_authenticate(second, None),
            "Bearer abc.def~+/==",
        ]
    )
    assert parse_www_authenticate(header) == [
        PrivateTokenChallenge(RFC_CHALLENGE, RFC_KEY),
        PrivateTokenChallenge(second, None),
    ]


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    encoded = _b64(RFC_CHALLENGE.encode())
    header = f'privatetoken Challenge="{encoded}", TOKEN-KEY="{_b64(RFC9578_PKS)}"'
    assert parse_www_authenticate(header) == [PrivateTokenChallenge(RFC_CHALLENGE, RFC_KEY)]


def test_unpadded_value_may_be_a_bare_token() -> None:
    challenge = TokenChallenge(TOKEN_TYPE, "issuer.exampl")  # 2+2+13+1+2 = 20 bytes: one '='
    longer = TokenChallenge(TOKEN_TYPE, "issuer.exampl3", b"", ())  # 21 bytes: no padding
    assert "=" not in _b64(longer.encode())
    header = f"PrivateToken challenge={_b64(longer.encode())}"
    assert parse_www_authenticate(header) == [PrivateTokenChallenge(longer)]
    assert _b64(challenge.encode()).endswith("=")


def test_empty_list_elements_and_whitespace_are_allowed() -> None:
    header = f' , ,PrivateToken   challenge = "{_b64(RFC_CHALLENGE.encode())}" ,, max-age=5 , '
    assert parse_www_authenticate(header) == [PrivateTokenChallenge(RFC_CHALLENGE, None, 5)]


def test_unknown_parameters_are_ignored() -> None:
    header = f'PrivateToken realm="x", challenge="{_b64(RFC_CHALLENGE.encode())}", foo=bar'
    assert parse_www_authenticate(header) == [PrivateTokenChallenge(RFC_CHALLENGE)]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param('token-key="{key}"', id="no-challenge"),
        pytest.param('challenge="{other_type}"', id="token-type-1"),
        pytest.param('challenge="{short_context}"', id="bad-redemption-context"),
        pytest.param('challenge="{unpadded}"', id="unpadded"),
        pytest.param('challenge="{standard_alphabet}"', id="standard-base64"),
        pytest.param('challenge="{challenge}", token-key="{rsa_encryption_key}"', id="bad-key"),
        pytest.param('challenge="{challenge}", max-age=-1', id="negative-max-age"),
        pytest.param('challenge="{challenge}", max-age="1h"', id="max-age-unit"),
        pytest.param("{challenge}", id="token68"),
    ],
)
def test_unusable_private_token_challenges_are_ignored(params: str, issuer: RSAPrivateKey) -> None:
    short_context = RFC_CHALLENGE.encode().replace(b"\x20\x8e", b"\x10\x8e")
    other_type = b"\x00\x01" + RFC_CHALLENGE.encode()[2:]
    challenge = _b64(RFC_CHALLENGE.encode())
    # A redemption context of 0xfbff... spells '-' and '_' in base64url, '+' and '/' in base64.
    odd = TokenChallenge(TOKEN_TYPE, "issuer.example", b"\xfb\xff" * 16).encode()
    assert set(_b64(odd)) >= {"-", "_"}
    rsa_encryption_key = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    values = {
        "key": _b64(RFC9578_PKS),
        "other_type": _b64(other_type),
        "short_context": _b64(short_context),
        "unpadded": _b64(RFC_CHALLENGE.encode()).rstrip("="),
        "standard_alphabet": base64.b64encode(odd).decode(),
        "challenge": challenge,
        "rsa_encryption_key": _b64(rsa_encryption_key),
    }
    good = www_authenticate(TokenChallenge(TOKEN_TYPE, "issuer.example"), None)
    header = f"PrivateToken {params.format(**values)}, {good}"
    assert [c.challenge.issuer_name for c in parse_www_authenticate(header)] == ["issuer.example"]
    assert parse_www_authenticate(header)[0].challenge.redemption_context == b""


@pytest.mark.parametrize(
    "header",
    [
        pytest.param('PrivateToken challenge="abc', id="unterminated-quote"),
        pytest.param("PrivateToken challenge=AAE=", id="unquoted-padding"),
        pytest.param("=foo", id="no-scheme"),
        pytest.param('PrivateToken challenge="a", challenge="b"', id="repeated-parameter"),
        pytest.param("PrivateToken challenge=a b", id="junk-after-value"),
        pytest.param("PrivateToken @", id="junk-after-scheme"),
        pytest.param("Private Token x=y z", id="two-words"),
        pytest.param("Basic abc== x", id="junk-after-token68"),
    ],
)
def test_header_grammar_errors_raise(header: str) -> None:
    with pytest.raises(MalformedMessageError):
        parse_www_authenticate(header)


def test_empty_header_has_no_challenges() -> None:
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate("Basic") == []


def test_www_authenticate_refuses_other_types_and_negative_max_age() -> None:
    with pytest.raises(TokenTypeError):
        www_authenticate(TokenChallenge(0x0001, "issuer.example"), None)
    with pytest.raises(ValueError):
        www_authenticate(RFC_CHALLENGE, None, max_age=-1)


# --- Authorization ------------------------------------------------------------------------------

RFC_TOKEN = Token.decode(_vector("vector-1", "token"))


def test_authorization_shape() -> None:
    header = authorization(RFC_TOKEN)
    assert header == f'PrivateToken token="{_b64(_vector("vector-1", "token"))}"'
    assert parse_authorization(header) == RFC_TOKEN


@given(tokens)
def test_authorization_round_trip(token: Token) -> None:
    assert parse_authorization(authorization(token)) == token


def test_authorization_ignores_unknown_parameters_and_case() -> None:
    encoded = _b64(RFC_TOKEN.encode())
    header = f'PRIVATETOKEN realm="a\\"b", Token="{encoded}", x=y'
    assert parse_authorization(header) == RFC_TOKEN


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param('Bearer token="{token}"', id="other-scheme"),
        pytest.param("PrivateToken {token}", id="token68"),
        pytest.param('PrivateToken realm="x"', id="no-token"),
        pytest.param('PrivateToken token="{token}", PrivateToken token="{token}"', id="two"),
        pytest.param('PrivateToken token="{token}", token="{token}"', id="repeated"),
        pytest.param('PrivateToken token="{standard}"', id="standard-base64"),
        pytest.param('PrivateToken token="{unpadded_short}"', id="unpadded"),
        pytest.param('PrivateToken token="{short}"', id="short-token"),
        pytest.param('PrivateToken token="{type1}"', id="token-type-1"),
    ],
)
def test_authorization_rejects(header: str) -> None:
    encoded = RFC_TOKEN.encode()
    values = {
        "token": _b64(encoded),
        "standard": base64.b64encode(encoded).decode(),
        "unpadded_short": _b64(encoded[:-1]).rstrip("="),
        "short": _b64(encoded[:-1]),
        "type1": _b64(b"\x00\x01" + encoded[2:]),
    }
    with pytest.raises(MalformedMessageError):
        parse_authorization(header.format(**values))


def test_header_round_trip_then_verify(issuer: RSAPrivateKey) -> None:
    # The whole redemption flow through the two headers.
    offered = parse_www_authenticate(www_authenticate(CHALLENGE, issuer.public_key()))
    assert len(offered) == 1 and offered[0].token_key is not None
    request, state = begin_issuance(offered[0].token_key, offered[0].challenge)
    token = finalize_issuance(state, issue(issuer, request))
    redeemed = parse_authorization(authorization(token))
    verify_token(issuer.public_key(), redeemed, challenge_digest(CHALLENGE))
