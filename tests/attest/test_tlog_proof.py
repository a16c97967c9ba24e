"""C2SP tlog-proof: exact text format, each malformed variant by name, verification, round trips."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.cosignature import CosignatureSigner
from attest.note import (
    Ed25519NoteSigner,
    NoteError,
    NoteSignature,
    add_signatures,
    parse_note,
    sign_note,
)
from attest.tlog_proof import (
    HEADER,
    MAX_PROOF_HASHES,
    TlogProof,
    TlogProofError,
    format_tlog_proof,
    parse_tlog_proof,
    verify_cosigned_tlog_proof,
    verify_tlog_proof,
)

ORIGIN = "example.com/log"
LOG = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
W1 = CosignatureSigner("w1.example", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
W2 = CosignatureSigner("w2.example", Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))
ENTRIES = [f"entry {i}".encode() for i in range(7)]


# A naive RFC 6962 §2.1 reference, independent of attest.merkle's generation code.
def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _mth(entries: list[bytes]) -> bytes:
    if len(entries) == 1:
        return _leaf(entries[0])
    k = 1 << ((len(entries) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(entries[:k]) + _mth(entries[k:])).digest()


def _path(m: int, entries: list[bytes]) -> list[bytes]:
    if len(entries) == 1:
        return []
    k = 1 << ((len(entries) - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, entries[:k]), _mth(entries[k:])]
    return [*_path(m - k, entries[k:]), _mth(entries[:k])]


CP = Checkpoint(ORIGIN, len(ENTRIES), _mth(ENTRIES))
SIGNED = sign_checkpoint(CP, LOG)
COSIGNED = add_signatures(SIGNED, [W1.at(1_700_000_000), W2.at(1_700_000_001)])


def make_proof(index: int, checkpoint: bytes = COSIGNED, extra: bytes | None = None) -> TlogProof:
    return TlogProof(index, tuple(_path(index, ENTRIES)), checkpoint, extra)


# Format ----------------------------------------------------------------------------------------


def test_format_is_exactly_the_spec_layout() -> None:
    p = make_proof(3, SIGNED, extra=b"context")
    hashes = "".join(base64.b64encode(h).decode() + "\n" for h in p.proof)
    want = f"{HEADER}\nextra {base64.b64encode(b'context').decode()}\nindex 3\n{hashes}\n"
    assert format_tlog_proof(p) == want + SIGNED.decode()
    assert HEADER == "c2sp.org/tlog-proof@v1"


def test_format_without_extra_or_hashes() -> None:
    single = sign_checkpoint(Checkpoint(ORIGIN, 1, _leaf(b"only")), LOG)
    p = TlogProof(0, (), single)
    assert format_tlog_proof(p) == f"{HEADER}\nindex 0\n\n" + single.decode()
    assert parse_tlog_proof(format_tlog_proof(p)) == p


def test_parse_spec_shaped_proof_round_trips() -> None:
    p = make_proof(5, extra=b"\x00\xffopaque")
    text = format_tlog_proof(p)
    assert parse_tlog_proof(text) == p
    assert format_tlog_proof(parse_tlog_proof(text)) == text


# Malformed, one named case per mutation --------------------------------------------------------

GOOD = format_tlog_proof(make_proof(2, extra=b"x"))
HEAD, CHECKPOINT = GOOD.split("\n\n", 1)
HEAD_LINES = HEAD.split("\n")  # header, extra, index, hashes...


def _with_head(lines: list[str]) -> str:
    return "\n".join(lines) + "\n\n" + CHECKPOINT


def _replace_line(i: int, line: str) -> str:
    lines = list(HEAD_LINES)
    lines[i] = line
    return _with_head(lines)


MALFORMED: dict[str, str] = {
    "empty": "",
    "missing-header": _with_head(HEAD_LINES[1:]),
    "wrong-header-version": _replace_line(0, "c2sp.org/tlog-proof@v2"),
    "header-trailing-space": _replace_line(0, HEADER + " "),
    "header-uppercase": _replace_line(0, HEADER.upper()),
    "extra-empty": _replace_line(1, "extra "),
    "extra-bad-base64": _replace_line(1, "extra !!!"),
    "extra-no-space": _replace_line(1, "extra"),
    "extra-after-index": _with_head([HEAD_LINES[0], HEAD_LINES[2], HEAD_LINES[1], *HEAD_LINES[3:]]),
    "extra-twice": _with_head([HEAD_LINES[0], HEAD_LINES[1], *HEAD_LINES[1:]]),
    "missing-index": _with_head([HEAD_LINES[0], HEAD_LINES[1], *HEAD_LINES[3:]]),
    "index-leading-zero": _replace_line(2, "index 02"),
    "index-negative": _replace_line(2, "index -2"),
    "index-plus-sign": _replace_line(2, "index +2"),
    "index-two-spaces": _replace_line(2, "index  2"),
    "index-trailing-space": _replace_line(2, "index 2 "),
    "index-empty": _replace_line(2, "index "),
    "index-hex": _replace_line(2, "index 0x2"),
    "index-overflow": _replace_line(2, f"index {1 << 64}"),
    "index-capitalised": _replace_line(2, "Index 2"),
    "bad-base64": _replace_line(3, "!" * 44),
    "hash-31-bytes": _replace_line(3, base64.b64encode(bytes(31)).decode()),
    "hash-33-bytes": _replace_line(3, base64.b64encode(bytes(33)).decode()),
    "hash-missing-padding": _replace_line(3, HEAD_LINES[3].rstrip("=")),
    "hash-hex": _replace_line(3, bytes(32).hex()),
    "hash-trailing-space": _replace_line(3, HEAD_LINES[3] + " "),
    "too-many-hashes": _with_head([*HEAD_LINES[:3], *[HEAD_LINES[3]] * (MAX_PROOF_HASHES + 1)]),
    "missing-blank-line": HEAD + "\n" + CHECKPOINT,
    "extra-blank-line": HEAD + "\n\n\n" + CHECKPOINT,
    "crlf-line-endings": GOOD.replace("\n", "\r\n"),
    "missing-checkpoint": HEAD + "\n\n",
    "checkpoint-unsigned": HEAD + "\n\n" + CP.body(),
    "checkpoint-not-a-checkpoint": HEAD + "\n\n" + sign_note("hello\n", [LOG]).decode(),
    "trailing-garbage": GOOD + "garbage",
    "trailing-garbage-line": GOOD + "garbage\n",
    "trailing-blank-line": GOOD + "\n",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_proof_is_rejected(text: str) -> None:
    with pytest.raises(TlogProofError) as info:
        parse_tlog_proof(text)
    assert info.value.diagnostic


def test_good_proof_of_the_table_parses() -> None:
    assert parse_tlog_proof(GOOD) == make_proof(2, extra=b"x")


@pytest.mark.parametrize(
    ("index", "proof", "extra"),
    [(-1, (), None), (1 << 64, (), None), (0, (bytes(31),), None), (0, (), b"")],
    ids=["negative-index", "index-overflow", "short-hash", "empty-extra"],
)
def test_invalid_proof_is_not_constructed(
    index: int, proof: tuple[bytes, ...], extra: bytes | None
) -> None:
    with pytest.raises(TlogProofError):
        TlogProof(index, proof, SIGNED, extra)


# Verification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(ENTRIES)))
def test_every_index_verifies(index: int) -> None:
    text = format_tlog_proof(make_proof(index))
    cp = verify_tlog_proof(parse_tlog_proof(text), ENTRIES[index], LOG.verifier(), ORIGIN)
    assert cp == CP


def test_cosigners_that_verified_are_returned() -> None:
    p = make_proof(4)
    absent = CosignatureSigner("w3.example", Ed25519PrivateKey.from_private_bytes(b"\x04" * 32))
    verifiers = [W1.verifier(), W2.verifier(), absent.verifier()]
    cp, cosigned = verify_cosigned_tlog_proof(p, ENTRIES[4], LOG.verifier(), ORIGIN, verifiers)
    assert cp == CP
    assert [s.name for s in cosigned] == [W1.name, W2.name]


def test_wrong_entry_fails() -> None:
    with pytest.raises(TlogProofError, match="inclusion proof"):
        verify_tlog_proof(make_proof(2), ENTRIES[3], LOG.verifier(), ORIGIN)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: TlogProof(p.index + 1, p.proof, p.checkpoint),
        lambda p: TlogProof(p.index, p.proof[:-1], p.checkpoint),
        lambda p: TlogProof(p.index, (*p.proof, bytes(32)), p.checkpoint),
        lambda p: TlogProof(p.index, (bytes(32), *p.proof[1:]), p.checkpoint),
        lambda p: TlogProof(p.index, p.proof[::-1], p.checkpoint),
        lambda p: TlogProof(len(ENTRIES), p.proof, p.checkpoint),
    ],
    ids=[
        "index-plus-1",
        "removed-hash",
        "appended-hash",
        "replaced-hash",
        "reversed-hashes",
        "index-past-size",
    ],
)
def test_bad_inclusion_proof_fails(mutate: Callable[[TlogProof], TlogProof]) -> None:
    with pytest.raises(TlogProofError, match="inclusion proof"):
        verify_tlog_proof(mutate(make_proof(2)), ENTRIES[2], LOG.verifier(), ORIGIN)


def test_wrong_origin_fails() -> None:
    with pytest.raises(TlogProofError, match="origin"):
        verify_tlog_proof(make_proof(2), ENTRIES[2], LOG.verifier(), "example.com/other")


def test_checkpoint_without_log_signature_fails() -> None:
    other = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))
    p = make_proof(2, sign_checkpoint(CP, other))
    with pytest.raises(TlogProofError):
        verify_tlog_proof(p, ENTRIES[2], LOG.verifier(), ORIGIN)


def test_invalid_cosignature_of_trusted_witness_fails() -> None:
    sig = NoteSignature(W1.name, W1.key_id, bytes(72))
    p = make_proof(2, SIGNED + sig.line().encode())
    verify_tlog_proof(p, ENTRIES[2], LOG.verifier(), ORIGIN)  # untrusted: ignored
    with pytest.raises(TlogProofError, match="invalid signature"):
        verify_cosigned_tlog_proof(p, ENTRIES[2], LOG.verifier(), ORIGIN, [W1.verifier()])


def test_every_flipped_bit_fails() -> None:
    text = format_tlog_proof(make_proof(1, SIGNED)).encode()
    for i in range(len(text) * 8):
        flipped = bytearray(text)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises((TlogProofError, UnicodeDecodeError)):
            p = parse_tlog_proof(bytes(flipped).decode("utf-8"))
            verify_tlog_proof(p, ENTRIES[1], LOG.verifier(), ORIGIN)


# Properties ------------------------------------------------------------------------------------

origins = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@st.composite
def proofs(draw: st.DrawFn) -> TlogProof:
    size = draw(st.integers(1, (1 << 64) - 1))
    cp = Checkpoint(draw(origins), size, draw(st.binary(min_size=32, max_size=32)))
    note = sign_checkpoint(cp, LOG)
    if draw(st.booleans()):
        note = add_signatures(note, [W1.at(draw(st.integers(0, (1 << 63) - 1)))])
    index = draw(st.integers(0, size - 1))
    hashes = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES))
    extra = draw(st.none() | st.binary(min_size=1, max_size=100))
    return TlogProof(index, tuple(hashes), note, extra)


@given(proofs())
def test_tlog_proof_round_trip(p: TlogProof) -> None:
    text = format_tlog_proof(p)
    assert parse_tlog_proof(text) == p
    assert format_tlog_proof(parse_tlog_proof(text)) == text


@given(st.integers(1, 300), st.data())
def test_reference_proofs_verify(size: int, data: st.DataObject) -> None:
    entries = [i.to_bytes(4, "big") for i in range(size)]
    index = data.draw(st.integers(0, size - 1))
    note = sign_checkpoint(Checkpoint(ORIGIN, size, _mth(entries)), LOG)
    p = TlogProof(index, tuple(_path(index, entries)), note)
    assert verify_tlog_proof(p, entries[index], LOG.verifier(), ORIGIN).size == size


@given(st.binary(max_size=300), st.sampled_from([SIGNED, COSIGNED, b""]))
def test_checkpoint_check_is_the_same_on_every_construction(noise: bytes, base: bytes) -> None:
    """The checkpoint check is remembered per note (a batch proves every entry against one):
    building the same proof again, or after another note, answers exactly as the uncached
    check does, and a refused note is refused every time, with the same words."""
    note = base + noise

    def outcome() -> str:
        try:
            TlogProof(0, (), note)
        except TlogProofError as e:
            return f"refused: {e.diagnostic}"
        return "ok"

    try:
        Checkpoint.parse(parse_note(note).text)
        want = "ok"
    except NoteError as e:
        want = f"refused: checkpoint: {e.diagnostic}"
    assert [outcome(), outcome()] == [want, want]
    make_proof(1)  # another note in between
    assert outcome() == want
