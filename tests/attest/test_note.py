"""C2SP signed-note: published vectors, every malformed variant by name, trust rules, properties."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from attest.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    SIG_TYPE_ED25519,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    InvalidSignatureError,
    MalformedKeyError,
    MalformedNoteError,
    Note,
    NoteError,
    NoteSignature,
    NoteSigner,
    UnverifiedNoteError,
    add_signatures,
    decode_base64,
    format_vkey,
    is_valid_name,
    key_id,
    open_note,
    parse_note,
    parse_signature_line,
    sign_note,
)
from attest.vkey import parse_vkey

# golang.org/x/mod/sumdb/note package documentation, section "Example" (used as data only).
# Ed25519 is deterministic, so signing GO_TEXT with this key must give GO_NOTE byte for byte.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# C2SP signed-note.md, opening example: a text with an empty line inside it.
SPEC_POEM = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed \u00e8 subito sera.\n"
)
SPEC_POEM_NOTE = (
    SPEC_POEM + "\n\u2014 quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)

DASH = "\u2014"


def make_signer(seed: int, name: str = "example.com/log") -> Ed25519NoteSigner:
    """A deterministic test signer."""
    return Ed25519NoteSigner(name, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


SIGNER = make_signer(1)
TEXT = "hello\nworld\n"
GOOD = sign_note(TEXT, [SIGNER]).decode()


# Published vectors -----------------------------------------------------------------------------


def test_c2sp_example_vector(vectors_dir: Path) -> None:
    case = json.loads((vectors_dir / "signed-note" / "c2sp-example.json").read_text("utf-8"))
    verifier = parse_vkey(case["verifier_key"])
    assert isinstance(verifier, Ed25519NoteVerifier)
    assert verifier.vkey == case["verifier_key"]
    assert verifier.key_id == bytes.fromhex("530d903a")
    assert case["want_valid"] is True
    note, verified = open_note(case["note"].encode("utf-8"), [verifier])
    assert note.text == case["text"]
    assert [(s.name, s.key_id) for s in verified] == [("example.com/foo", verifier.key_id)]
    assert note.to_bytes() == case["note"].encode("utf-8")


def test_c2sp_example_vector_fails_when_text_changes(vectors_dir: Path) -> None:
    case = json.loads((vectors_dir / "signed-note" / "c2sp-example.json").read_text("utf-8"))
    tampered = case["note"].replace("example message", "exemplary message").encode()
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [parse_vkey(case["verifier_key"])])


def test_go_reference_signs_byte_for_byte() -> None:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == SIG_TYPE_ED25519
    signer = Ed25519NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))
    assert signer.vkey == GO_VKEY
    assert sign_note(GO_TEXT, [signer]).decode() == GO_NOTE
    note, verified = open_note(GO_NOTE.encode(), [parse_vkey(GO_VKEY)])
    assert note.text == GO_TEXT and len(verified) == 1


def test_spec_poem_text_ends_at_last_blank_line() -> None:
    note = parse_note(SPEC_POEM_NOTE.encode())
    assert note.text == SPEC_POEM
    assert [s.name for s in note.signatures] == ["quasimodo.example/salvatore"]
    assert note.to_bytes() == SPEC_POEM_NOTE.encode()


def test_key_id_is_truncated_sha256_of_name_type_key() -> None:
    public = SIGNER.verifier().vkey.split("+", 2)[2]
    material = base64.b64decode(public)
    assert key_id(SIGNER.name, material[0], material[1:]) == SIGNER.key_id
    assert key_id(SIGNER.name, 0x04, material[1:]) != SIGNER.key_id


# Malformed notes, one named case per mutation ------------------------------------------------


def _sig_b64(note: str) -> str:
    return note.rstrip("\n").rsplit(" ", 1)[1]


def _noncanonical(b64: str) -> str:
    # Flip the lowest bit of the last data character: those bits are padding, so a lenient
    # decoder yields the same bytes from a second spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    data = b64.rstrip("=")
    flipped = alphabet[alphabet.index(data[-1]) ^ 1]
    return data[:-1] + flipped + b64[len(data) :]


def _many_lines(n: int) -> bytes:
    line = f"{DASH} other.example/w {base64.b64encode(b'abcd' + bytes(64)).decode()}\n"
    return (GOOD + line * (n - 1)).encode()


MALFORMED: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "not-utf8": lambda: GOOD.encode().replace(b"hello", b"hel\xfflo"),
    "overlong-utf8": lambda: GOOD.encode().replace(b"hello", b"hel\xc0\xafo"),
    "utf8-surrogate": lambda: GOOD.encode().replace(b"hello", b"hel\xed\xa0\x80o"),
    "control-char-tab": lambda: GOOD.replace("hello", "hel\tlo").encode(),
    "control-char-cr": lambda: GOOD.replace("hello\n", "hello\r\n").encode(),
    "control-char-nul": lambda: GOOD.replace("hello", "hel\x00lo").encode(),
    "control-char-in-signature-line": lambda: GOOD.replace(f"{DASH} ", f"{DASH} \x07").encode(),
    "missing-blank-line": lambda: GOOD.replace("world\n\n", "world\n").encode(),
    "no-signatures": lambda: (TEXT + "\n").encode(),
    "only-blank-line": lambda: b"\n\n",
    "missing-final-newline": lambda: GOOD.rstrip("\n").encode(),
    "trailing-garbage": lambda: (GOOD + "garbage").encode(),
    "trailing-garbage-line": lambda: (GOOD + "garbage\n").encode(),
    "trailing-blank-line": lambda: (GOOD + "\n").encode(),
    "hyphen-instead-of-em-dash": lambda: GOOD.replace(f"{DASH} ", "- ").encode(),
    "en-dash-instead-of-em-dash": lambda: GOOD.replace(f"{DASH} ", "\u2013 ").encode(),
    "em-dash-without-space": lambda: GOOD.replace(f"{DASH} ", DASH).encode(),
    "leading-space-before-em-dash": lambda: GOOD.replace(f"{DASH} ", f" {DASH} ").encode(),
    "empty-key-name": lambda: GOOD.replace(f"{DASH} example.com/log", f"{DASH} ").encode(),
    "key-name-with-plus": lambda: GOOD.replace("example.com/log", "example.com+log").encode(),
    "key-name-with-nbsp": lambda: GOOD.replace("example.com/log", "example\u00a0com").encode(),
    "no-space-before-signature": lambda: GOOD.replace(" " + _sig_b64(GOOD), "").encode(),
    "two-spaces-before-signature": lambda: GOOD.replace(" " + _sig_b64(GOOD), "  x").encode(),
    "bad-base64": lambda: GOOD.replace(_sig_b64(GOOD), "!!!notbase64!!!").encode(),
    "base64-url-alphabet": lambda: GOOD.replace(_sig_b64(GOOD), "-_-_" * 20).encode(),
    "base64-missing-padding": lambda: GOOD.replace(
        _sig_b64(GOOD), _sig_b64(GOOD).rstrip("=")
    ).encode(),
    "base64-non-canonical": lambda: GOOD.replace(
        _sig_b64(GOOD), _noncanonical(_sig_b64(GOOD))
    ).encode(),
    "base64-trailing-space": lambda: GOOD.replace(_sig_b64(GOOD), _sig_b64(GOOD) + " ").encode(),
    "signature-only-key-id": lambda: GOOD.replace(_sig_b64(GOOD), "AAAAAA==").encode(),
    "signature-empty": lambda: GOOD.replace(_sig_b64(GOOD), "").encode(),
    "too-many-signatures": lambda: _many_lines(MAX_SIGNATURES + 1),
    "too-long": lambda: sign_note("x" * 100 + "\n", [SIGNER]).replace(
        b"x", b"y" * MAX_NOTE_SIZE, 1
    ),
}


@pytest.mark.parametrize("mutate", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_note_is_rejected(mutate: Callable[[], bytes]) -> None:
    data = mutate()
    with pytest.raises(MalformedNoteError) as info:
        parse_note(data)
    assert info.value.diagnostic
    with pytest.raises(MalformedNoteError):
        open_note(data, [SIGNER.verifier()])


def test_mutations_change_the_note() -> None:
    good = GOOD.encode()
    assert all(mutate() != good for mutate in MALFORMED.values())
    assert _noncanonical(_sig_b64(GOOD)) != _sig_b64(GOOD)


def test_parse_signature_line() -> None:
    assert parse_signature_line(f"{DASH} a AAAAAAA=") == NoteSignature("a", bytes(4), b"\x00")


@pytest.mark.parametrize(
    "line",
    [f"{DASH} a+b AAAAAAA=", "- a AAAAAAA=", f"{DASH} a AAAAAA==", f"{DASH} a AAAAAAA=\n"],
    ids=["name-with-plus", "hyphen", "four-bytes", "with-newline"],
)
def test_parse_signature_line_rejects(line: str) -> None:
    with pytest.raises(MalformedNoteError):
        parse_signature_line(line)


# Signing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "no final newline", "tab\there\n", "carriage\r\n", "nul\x00\n"],
    ids=["empty-text", "text-without-final-newline", "text-with-tab", "text-with-cr", "text-nul"],
)
def test_sign_rejects_bad_text(text: str) -> None:
    with pytest.raises(MalformedNoteError):
        sign_note(text, [SIGNER])


def test_sign_requires_a_signer() -> None:
    with pytest.raises(MalformedNoteError):
        sign_note(TEXT, [])


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u2003b", "a\nb"], ids=repr)
def test_invalid_key_names_are_refused(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(MalformedNoteError):
        make_signer(1, name)


def test_sign_then_open() -> None:
    note, verified = open_note(GOOD.encode(), [SIGNER.verifier()])
    assert note.text == TEXT
    assert verified == [note.signatures[0]]
    assert GOOD.startswith(TEXT + "\n" + DASH + " example.com/log ")


def test_text_may_contain_blank_lines_and_end_with_one() -> None:
    for text in ["\n", "a\n\nb\n", "a\n\n", "\n\n\n", f"{DASH} x AAAAAAA=\n\nz\n"]:
        note, _ = open_note(sign_note(text, [SIGNER]), [SIGNER.verifier()])
        assert note.text == text


# Trust rules -----------------------------------------------------------------------------------


def test_unknown_signatures_are_ignored_but_counted() -> None:
    known = SIGNER.verifier()
    others = [make_signer(10 + i, f"witness{i}.example") for i in range(3)]
    data = sign_note(TEXT, [*others, SIGNER])
    # Same name with another ID, and same ID with another name: both unknown, never verified.
    same_name = NoteSignature(SIGNER.name, b"\xff" * 4, b"garbage").line()
    same_id = NoteSignature("impostor.example", SIGNER.key_id, b"garbage").line()
    data += (same_name + same_id).encode()
    note, verified = open_note(data, [known])
    assert [s.name for s in verified] == [SIGNER.name]
    assert len(note.signatures) - len(verified) == 5


def test_no_trusted_signer_is_rejected() -> None:
    with pytest.raises(UnverifiedNoteError) as info:
        open_note(GOOD.encode(), [make_signer(2).verifier()])
    assert info.value.note.text == TEXT
    with pytest.raises(UnverifiedNoteError):
        open_note(GOOD.encode(), [])


def test_invalid_signature_from_known_key_rejects_whole_note() -> None:
    other = make_signer(2, "witness.example")
    data = sign_note(TEXT, [SIGNER, other])
    forged = NoteSignature(other.name, other.key_id, bytes(64)).line().encode()
    with pytest.raises(InvalidSignatureError) as info:
        open_note(
            data.replace(data.splitlines(keepends=True)[-1], forged),
            [SIGNER.verifier(), other.verifier()],
        )
    assert info.value.name == other.name and info.value.key_id == other.key_id
    # With only the log key trusted, the forged witness line is just an unknown line.
    open_note(data.replace(data.splitlines(keepends=True)[-1], forged), [SIGNER.verifier()])


def test_repeated_lines_by_known_key_are_all_verified_and_counted_once() -> None:
    line = GOOD.splitlines(keepends=True)[-1]
    note, verified = open_note((GOOD + line).encode(), [SIGNER.verifier()])
    assert len(note.signatures) == 2 and len(verified) == 1
    bad = NoteSignature(SIGNER.name, SIGNER.key_id, bytes(64)).line()
    with pytest.raises(InvalidSignatureError):
        open_note((GOOD + bad).encode(), [SIGNER.verifier()])


def test_wrong_length_signature_from_known_key_is_invalid() -> None:
    short = NoteSignature(SIGNER.name, SIGNER.key_id, bytes(63)).line()
    with pytest.raises(InvalidSignatureError):
        open_note((GOOD + short).encode(), [SIGNER.verifier()])


def test_ambiguous_verifiers_are_refused() -> None:
    v = SIGNER.verifier()
    open_note(GOOD.encode(), [v, v])  # the same key twice is harmless

    class Impostor(Ed25519NoteVerifier):
        @property
        def key_id(self) -> bytes:
            return SIGNER.key_id

    other_key = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32).public_key()
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(GOOD.encode(), [v, Impostor(SIGNER.name, other_key)])


@pytest.mark.parametrize("count", [16, 17, 64, MAX_SIGNATURES])
def test_many_signature_lines_are_accepted(count: int) -> None:
    signers = [make_signer(i + 1, f"w{i}.example") for i in range(count)]
    data = sign_note(TEXT, signers)
    note, verified = open_note(data, [signers[0].verifier(), signers[-1].verifier()])
    assert len(note.signatures) == count and len(verified) == 2
    assert len(parse_note(_many_lines(count)).signatures) == count


def test_every_flipped_bit_fails() -> None:
    data = GOOD.encode()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(NoteError):
            open_note(bytes(flipped), [SIGNER.verifier()])


# add_signatures --------------------------------------------------------------------------------


def test_add_signatures_appends_after_existing() -> None:
    witness = make_signer(2, "witness.example")
    stranger = NoteSignature("stranger.example", b"abcd", b"x").line()
    data = add_signatures((GOOD + stranger).encode(), [witness])
    note, verified = open_note(data, [SIGNER.verifier(), witness.verifier()])
    assert [s.name for s in note.signatures] == [SIGNER.name, "stranger.example", witness.name]
    assert [s.name for s in verified] == [SIGNER.name, witness.name]


def test_add_signatures_replaces_same_key() -> None:
    data = add_signatures(GOOD.encode(), [SIGNER])
    assert data == GOOD.encode()  # Ed25519 is deterministic: the same line, not a second one


def test_add_signatures_requires_signers_and_well_formed_note() -> None:
    with pytest.raises(MalformedNoteError):
        add_signatures(GOOD.encode(), [])
    with pytest.raises(MalformedNoteError):
        add_signatures(TEXT.encode(), [SIGNER])


def test_note_to_bytes_refuses_what_parse_would_refuse() -> None:
    with pytest.raises(MalformedNoteError):
        Note(TEXT, ()).to_bytes()
    sig = parse_note(GOOD.encode()).signatures[0]
    with pytest.raises(MalformedNoteError):
        Note(TEXT, (sig,) * (MAX_SIGNATURES + 1)).to_bytes()
    with pytest.raises(MalformedNoteError):
        Note("no newline", (sig,))


# Verifier keys ---------------------------------------------------------------------------------


def test_vkey_round_trip() -> None:
    verifier = parse_vkey(SIGNER.vkey)
    assert isinstance(verifier, Ed25519NoteVerifier)
    assert (verifier.name, verifier.key_id, verifier.vkey) == (
        SIGNER.name,
        SIGNER.key_id,
        SIGNER.vkey,
    )
    open_note(GOOD.encode(), [verifier])


def test_vkey_whose_base64_contains_plus() -> None:
    # transparency-dev/formats note tests: the key part itself contains '+'.
    vkey = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
    verifier = parse_vkey(vkey)
    assert isinstance(verifier, Ed25519NoteVerifier)
    assert verifier.vkey == vkey


def test_vkey_key_id_hex_is_case_insensitive() -> None:
    name, kid, rest = GO_VKEY.split("+", 2)
    assert parse_vkey(f"{name}+{kid.upper()}+{rest}").key_id == bytes.fromhex(kid)


def _public(seed: int) -> bytes:
    return base64.b64decode(make_signer(seed).vkey.split("+", 2)[2])[1:]


BAD_VKEYS: dict[str, str] = {
    "wrong-key-id": GO_VKEY.replace("c74f20a3", "c74f20a4"),
    "short-key-id": GO_VKEY.replace("c74f20a3", "c74f20a"),
    "long-key-id": GO_VKEY.replace("c74f20a3", "c74f20a30"),
    "non-hex-key-id": GO_VKEY.replace("c74f20a3", "c74f20ag"),
    "missing-key": "PeterNeumann+c74f20a3",
    "missing-everything": "PeterNeumann",
    "empty-key": "PeterNeumann+c74f20a3+",
    "empty-name": GO_VKEY.replace("PeterNeumann", ""),
    "name-with-space": format_vkey("ok", 1, _public(1)).replace("ok+", "o k+"),
    "bad-base64": "PeterNeumann+c74f20a3+!!!!",
    "truncated-base64": "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr",
    "unknown-type": format_vkey("example.com/x", 0x02, _public(1)),
    "ml-dsa-type": format_vkey("example.com/x", 0x06, _public(1)),
    "short-public-key": format_vkey("example.com/x", 0x01, _public(1)[:31]),
    "long-public-key": format_vkey("example.com/x", 0x01, _public(1) + b"\x00"),
}


@pytest.mark.parametrize("vkey", BAD_VKEYS.values(), ids=BAD_VKEYS.keys())
def test_bad_vkey_is_rejected(vkey: str) -> None:
    with pytest.raises(MalformedKeyError) as info:
        parse_vkey(vkey)
    assert info.value.diagnostic


def test_base64_is_strict() -> None:
    assert decode_base64("AAAA") == bytes(3)
    for bad in ["AAA", "AA=A", "AB==", " AAAA", "AAAA\n", "\u0661AAA"]:
        with pytest.raises(ValueError):
            decode_base64(bad)


# Properties ------------------------------------------------------------------------------------

names = st.text(
    st.characters(min_codepoint=0x21, exclude_categories=["Cs"]), min_size=1, max_size=20
).filter(is_valid_name)
texts = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=["Cs"]) | st.just("\n"), max_size=60
).map(lambda t: t + "\n")
signatures = st.builds(
    NoteSignature, names, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)
)


@given(texts, st.lists(signatures, min_size=1, max_size=20))
def test_note_round_trip(text: str, sigs: list[NoteSignature]) -> None:
    note = Note(text, tuple(sigs))
    data = note.to_bytes()
    assert parse_note(data) == note
    assert parse_note(data).to_bytes() == data


@given(texts)
def test_signed_text_round_trips_through_open(text: str) -> None:
    note, _ = open_note(sign_note(text, [SIGNER]), [SIGNER.verifier()])
    assert note.text == text


class _Counting(NoteSigner):
    """A signer that records what it was asked to sign."""

    def __init__(self) -> None:
        super().__init__("counting.example", b"\x00\x01\x02\x03")
        self.messages: list[bytes] = []

    def sign(self, message: bytes) -> NoteSignature:
        self.messages.append(message)
        return NoteSignature(self.name, self.key_id, b"sig")


def test_signers_sign_the_text_bytes_only() -> None:
    counting = _Counting()
    sign_note(TEXT, [counting])
    assert counting.messages == [TEXT.encode()]
