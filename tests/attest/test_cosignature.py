"""C2SP tlog-cosignature v1 (Ed25519): spec examples, signed message, timestamps, use in notes."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from attest.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from attest.cosignature import (
    MAX_TIMESTAMP,
    CosignatureError,
    CosignatureSigner,
    CosignatureVerifier,
    cosigned_message,
    timestamp_of,
)
from attest.note import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    InvalidSignatureError,
    NoteSignature,
    UnverifiedNoteError,
    add_signatures,
    key_id,
    open_note,
    parse_note,
    sign_note,
)
from attest.vkey import parse_vkey

# C2SP tlog-cosignature.md: the example checkpoint with a witness cosignature, and the example of
# the signed message. No public keys are published, so only structure and timestamps are checked.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY + "\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_MESSAGE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

# transparency-dev/formats note/note_cosigv1_test.go (used as data only): a type-0x04 verifier
# key, a cosignature whose timestamp is 1727964367, and a plain Ed25519 signature (no timestamp).
FORMATS_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
FORMATS_COSIG = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4v"
    "anlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
)
FORMATS_PLAIN = (
    "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="
)

KEY = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
WITNESS = CosignatureSigner("witness.example", KEY)
LOG = Ed25519NoteSigner("example.com/log", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
CP = Checkpoint("example.com/log", 42, bytes(range(32)))
BODY = CP.body()
TS = 1_700_000_000


def test_spec_example_message_format() -> None:
    assert cosigned_message(SPEC_BODY, 1679315147) == SPEC_MESSAGE.encode()


def test_spec_example_cosignature_timestamp() -> None:
    note = parse_note(SPEC_NOTE.encode())
    assert note.text == SPEC_BODY
    witness = note.signatures[1]
    assert witness.name == "witness.example.com/w1"
    assert len(witness.signature) == 8 + 64
    # The example's cosignature carries the time used in the example message.
    assert timestamp_of(witness.signature) == 1679315147


def test_formats_vectors() -> None:
    verifier = parse_vkey(FORMATS_VKEY)
    assert isinstance(verifier, CosignatureVerifier)
    assert verifier.vkey == FORMATS_VKEY
    assert timestamp_of(base64.b64decode(FORMATS_COSIG)[4:]) == 1727964367
    with pytest.raises(CosignatureError):
        timestamp_of(base64.b64decode(FORMATS_PLAIN)[4:])


def test_key_id_uses_type_0x04() -> None:
    public = KEY.public_key().public_bytes_raw()
    assert WITNESS.key_id == key_id(WITNESS.name, SIG_TYPE_COSIGNATURE_V1, public)
    assert WITNESS.key_id != key_id(WITNESS.name, SIG_TYPE_ED25519, public)
    assert base64.b64decode(WITNESS.vkey.split("+", 2)[2])[0] == SIG_TYPE_COSIGNATURE_V1


def test_vkey_round_trip() -> None:
    verifier = parse_vkey(WITNESS.vkey)
    assert isinstance(verifier, CosignatureVerifier)
    assert (verifier.name, verifier.key_id) == (WITNESS.name, WITNESS.key_id)


def test_cosign_and_verify() -> None:
    sig = WITNESS.cosign(BODY, TS)
    assert (sig.name, sig.key_id) == (WITNESS.name, WITNESS.key_id)
    assert sig.signature[:8] == TS.to_bytes(8, "big")
    assert len(sig.signature) == 72
    verifier = WITNESS.verifier()
    assert verifier.verify(BODY.encode(), sig.signature)
    assert verifier.timestamp_of(sig) == TS
    assert verifier.timestamp_of(sig.signature) == TS
    # The Ed25519 signature is over the cosigned message, not the bare body.
    KEY.public_key().verify(sig.signature[8:], cosigned_message(BODY, TS))


def test_signature_commits_to_its_timestamp() -> None:
    sig = WITNESS.cosign(BODY, TS).signature
    for other in (TS - 1, TS + 1, 0):
        moved = other.to_bytes(8, "big") + sig[8:]
        assert not WITNESS.verifier().verify(BODY.encode(), moved)


def test_signature_covers_the_whole_body() -> None:
    with_ext = Checkpoint(CP.origin, CP.size, CP.root_hash, ("extension",))
    sig = WITNESS.cosign(with_ext.body(), TS).signature
    verifier = WITNESS.verifier()
    assert verifier.verify(with_ext.body().encode(), sig)
    assert not verifier.verify(with_ext.body().replace("extension", "extensioN").encode(), sig)
    assert not verifier.verify(BODY.encode(), sig)


@pytest.mark.parametrize(
    "signature",
    [b"", bytes(71), bytes(73), bytes(64), (1 << 63).to_bytes(8, "big") + bytes(64)],
    ids=["empty", "71-bytes", "73-bytes", "no-timestamp", "timestamp-over-2^63-1"],
)
def test_malformed_cosignature_does_not_verify(signature: bytes) -> None:
    assert not WITNESS.verifier().verify(BODY.encode(), signature)
    with pytest.raises(CosignatureError):
        timestamp_of(signature)


def test_timestamp_over_limit_is_refused_even_if_signed() -> None:
    ts = 1 << 63
    forged = ts.to_bytes(8, "big") + KEY.sign(cosigned_message(BODY, ts))
    assert not WITNESS.verifier().verify(BODY.encode(), forged)


@pytest.mark.parametrize("timestamp", [-1, MAX_TIMESTAMP + 1], ids=["negative", "over-2^63-1"])
def test_cosign_refuses_bad_timestamps(timestamp: int) -> None:
    with pytest.raises(CosignatureError):
        WITNESS.cosign(BODY, timestamp)


def test_timestamp_bounds_are_inclusive() -> None:
    for ts in (0, MAX_TIMESTAMP):
        sig = WITNESS.cosign(BODY, ts)
        assert WITNESS.verifier().verify(BODY.encode(), sig.signature)
        assert timestamp_of(sig.signature) == ts
    assert cosigned_message(BODY, 0).startswith(b"cosignature/v1\ntime 0\n")


def test_cosign_refuses_text_that_is_not_a_checkpoint() -> None:
    with pytest.raises(CheckpointError):
        WITNESS.cosign("hello\n", TS)


def test_timestamp_of_other_key_signature_is_refused() -> None:
    other = NoteSignature("other.example", WITNESS.key_id, WITNESS.cosign(BODY, TS).signature)
    with pytest.raises(CosignatureError):
        WITNESS.verifier().timestamp_of(other)


# In notes --------------------------------------------------------------------------------------


def test_cosigned_checkpoint_opens_with_both_keys() -> None:
    data = add_signatures(sign_checkpoint(CP, LOG), [WITNESS.at(TS)])
    note, verified = open_note(data, [LOG.verifier(), parse_vkey(WITNESS.vkey)])
    assert [s.name for s in verified] == [LOG.name, WITNESS.name]
    assert WITNESS.verifier().timestamp_of(verified[1]) == TS
    assert note.text == BODY


def test_plain_ed25519_verifier_of_same_key_does_not_accept_cosignature() -> None:
    data = sign_note(BODY, [WITNESS.at(TS)])
    plain = Ed25519NoteVerifier(WITNESS.name, KEY.public_key())
    with pytest.raises(UnverifiedNoteError):
        open_note(data, [plain])


def test_tampered_cosignature_rejects_note() -> None:
    data = add_signatures(sign_checkpoint(CP, LOG), [WITNESS.at(TS)])
    note = parse_note(data)
    sig = note.signatures[1]
    later = NoteSignature(sig.name, sig.key_id, (TS + 1).to_bytes(8, "big") + sig.signature[8:])
    tampered = data.replace(sig.line().encode(), later.line().encode())
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [LOG.verifier(), WITNESS.verifier()])


def test_recosigning_replaces_the_old_cosignature() -> None:
    data = add_signatures(sign_checkpoint(CP, LOG), [WITNESS.at(TS)])
    data = add_signatures(data, [WITNESS.at(TS + 60)])
    note, verified = open_note(data, [LOG.verifier(), WITNESS.verifier()])
    assert len(note.signatures) == 2
    assert WITNESS.verifier().timestamp_of(verified[1]) == TS + 60


def test_timed_cosigner_refuses_non_utf8() -> None:
    with pytest.raises(CosignatureError):
        WITNESS.at(TS).sign(b"\xff\n")


@given(st.integers(0, MAX_TIMESTAMP), st.integers(0, (1 << 64) - 1))
def test_cosignature_round_trip(timestamp: int, size: int) -> None:
    body = Checkpoint("example.com/log", size, bytes(32)).body()
    sig = WITNESS.cosign(body, timestamp)
    assert WITNESS.verifier().verify(body.encode(), sig.signature)
    assert timestamp_of(sig.signature) == timestamp
