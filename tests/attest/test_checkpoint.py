"""C2SP tlog-checkpoint: the spec example, every malformed body by name, signing and opening."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from attest.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    open_cosigned_checkpoint,
    sign_checkpoint,
)
from attest.cosignature import CosignatureSigner
from attest.note import (
    Ed25519NoteSigner,
    NoteError,
    NoteSignature,
    add_signatures,
    parse_note,
    sign_note,
)

# C2SP tlog-checkpoint.md, opening example (no public key is published for it).
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY + "\n\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)

ORIGIN = "example.com/log"
ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
CP = Checkpoint(ORIGIN, 7, ROOT)
LOG = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
WITNESS = CosignatureSigner("witness.example", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))


def test_spec_example_parses_and_formats_back() -> None:
    cp = Checkpoint.parse(SPEC_BODY)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.body() == SPEC_BODY
    note = parse_note(SPEC_NOTE.encode())
    assert note.text == SPEC_BODY
    assert note.signatures[0].name == "example.com/behind-the-sofa"


def test_body_format() -> None:
    assert CP.body() == f"{ORIGIN}\n7\n{ROOT_B64}\n"
    with_ext = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "— two"))
    assert with_ext.body() == f"{ORIGIN}\n0\n{ROOT_B64}\next one\n— two\n"
    assert Checkpoint.parse(with_ext.body()) == with_ext


def test_sizes_at_the_bounds_parse() -> None:
    assert Checkpoint.parse(f"o\n0\n{ROOT_B64}\n").size == 0
    assert Checkpoint.parse(f"o\n{MAX_TREE_SIZE}\n{ROOT_B64}\n").size == MAX_TREE_SIZE


def test_origin_is_opaque() -> None:
    # Spaces and '+' are only advised against: clients MUST NOT assume the URL-like format.
    body = f" a log + spaces \n1\n{ROOT_B64}\n"
    assert Checkpoint.parse(body).origin == " a log + spaces "


def _b64(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


GOOD = f"{ORIGIN}\n7\n{ROOT_B64}\n"

MALFORMED: dict[str, str] = {
    "empty": "",
    "missing-final-newline": GOOD.rstrip("\n"),
    "trailing-garbage": GOOD + "garbage",
    "missing-lines-two": f"{ORIGIN}\n7\n",
    "missing-lines-one": f"{ORIGIN}\n",
    "missing-root": f"{ORIGIN}\n7\n\n",
    "empty-origin": f"\n7\n{ROOT_B64}\n",
    "control-char-in-origin": f"exa\tmple\n7\n{ROOT_B64}\n",
    "cr-line-ending": f"{ORIGIN}\r\n7\r\n{ROOT_B64}\r\n",
    "size-leading-zero": f"{ORIGIN}\n07\n{ROOT_B64}\n",
    "size-double-zero": f"{ORIGIN}\n00\n{ROOT_B64}\n",
    "size-negative": f"{ORIGIN}\n-7\n{ROOT_B64}\n",
    "size-negative-zero": f"{ORIGIN}\n-0\n{ROOT_B64}\n",
    "size-plus-sign": f"{ORIGIN}\n+7\n{ROOT_B64}\n",
    "size-leading-space": f"{ORIGIN}\n 7\n{ROOT_B64}\n",
    "size-trailing-space": f"{ORIGIN}\n7 \n{ROOT_B64}\n",
    "size-empty": f"{ORIGIN}\n\n{ROOT_B64}\n",
    "size-hex": f"{ORIGIN}\n0x7\n{ROOT_B64}\n",
    "size-underscore": f"{ORIGIN}\n1_000\n{ROOT_B64}\n",
    "size-decimal-point": f"{ORIGIN}\n7.0\n{ROOT_B64}\n",
    "size-exponent": f"{ORIGIN}\n7e0\n{ROOT_B64}\n",
    "size-arabic-indic-digit": f"{ORIGIN}\n\u0667\n{ROOT_B64}\n",
    "size-fullwidth-digit": f"{ORIGIN}\n\uff17\n{ROOT_B64}\n",
    "size-overflow": f"{ORIGIN}\n{MAX_TREE_SIZE + 1}\n{ROOT_B64}\n",
    "root-31-bytes": f"{ORIGIN}\n7\n{_b64(31)}\n",
    "root-33-bytes": f"{ORIGIN}\n7\n{_b64(33)}\n",
    "root-bad-base64": f"{ORIGIN}\n7\n{'!' * 44}\n",
    "root-url-safe-base64": f"{ORIGIN}\n7\n{'_' * 43}=\n",
    "root-missing-padding": f"{ORIGIN}\n7\n{ROOT_B64.rstrip('=')}\n",
    "root-non-canonical": f"{ORIGIN}\n7\n{ROOT_B64[:42]}{chr(ord(ROOT_B64[42]) + 1)}=\n",
    "root-hex": f"{ORIGIN}\n7\n{ROOT.hex()}\n",
    "root-trailing-space": f"{ORIGIN}\n7\n{ROOT_B64} \n",
    "empty-extension-line": f"{GOOD}\n",
    "empty-extension-line-between": f"{GOOD}a\n\nb\n",
    "control-char-in-extension": f"{GOOD}a\x00b\n",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_body_is_rejected(body: str) -> None:
    with pytest.raises(CheckpointError) as info:
        Checkpoint.parse(body)
    assert info.value.diagnostic


def test_non_canonical_root_mutation_decodes_leniently() -> None:
    # Guard for the table: the mutated root is only wrong in its padding bits.
    body = MALFORMED["root-non-canonical"]
    assert base64.b64decode(body.split("\n")[2]) == ROOT


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, MAX_TREE_SIZE + 1, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("a\nb",)),
    ],
    ids=[
        "empty-origin",
        "newline-in-origin",
        "negative-size",
        "size-overflow",
        "short-root",
        "empty-extension",
        "newline-in-extension",
    ],
)
def test_invalid_checkpoint_is_not_constructed(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(origin, size, root, extensions)


# Signing and opening ---------------------------------------------------------------------------


def test_sign_and_open() -> None:
    data = sign_checkpoint(CP, LOG)
    cp, note = open_checkpoint(data, LOG.verifier(), ORIGIN)
    assert cp == CP
    assert note.text == CP.body()
    assert open_checkpoint(data, LOG.verifier())[0] == CP


def test_wrong_origin_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(sign_checkpoint(CP, LOG), LOG.verifier(), "example.com/other")


def test_missing_log_signature_is_rejected() -> None:
    other = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))
    with pytest.raises(CheckpointError, match="trusted key"):
        open_checkpoint(sign_checkpoint(CP, other), LOG.verifier(), ORIGIN)


def test_only_cosigned_is_rejected() -> None:
    data = sign_note(CP.body(), [WITNESS.at(1_700_000_000)])
    with pytest.raises(CheckpointError, match="not signed by log key"):
        open_cosigned_checkpoint(data, LOG.verifier(), [WITNESS.verifier()], ORIGIN)


def test_invalid_log_signature_is_rejected() -> None:
    forged = NoteSignature(LOG.name, LOG.key_id, bytes(64)).line().encode()
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(CP.body().encode() + b"\n" + forged, LOG.verifier(), ORIGIN)


def test_signed_text_that_is_not_a_checkpoint_is_rejected() -> None:
    data = sign_note("hello\n", [LOG])
    with pytest.raises(CheckpointError, match="lines"):
        open_checkpoint(data, LOG.verifier())


def test_malformed_note_is_a_checkpoint_error() -> None:
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(CP.body().encode(), LOG.verifier())
    assert isinstance(info.value, NoteError)
    assert isinstance(info.value.__cause__, NoteError)


def test_every_flipped_bit_fails() -> None:
    data = sign_checkpoint(CP, LOG)
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CheckpointError):
            open_checkpoint(bytes(flipped), LOG.verifier(), ORIGIN)


def test_cosignatures_are_ignored_or_returned() -> None:
    data = add_signatures(sign_checkpoint(CP, LOG), [WITNESS.at(1_700_000_000)])
    cp, note = open_checkpoint(data, LOG.verifier(), ORIGIN)
    assert cp == CP and len(note.signatures) == 2
    cp, _, cosigned = open_cosigned_checkpoint(data, LOG.verifier(), [WITNESS.verifier()], ORIGIN)
    assert [s.name for s in cosigned] == [WITNESS.name]
    absent = CosignatureSigner("absent.example", Ed25519PrivateKey.from_private_bytes(b"\x04" * 32))
    _, _, cosigned = open_cosigned_checkpoint(data, LOG.verifier(), [absent.verifier()], ORIGIN)
    assert cosigned == []


# Properties ------------------------------------------------------------------------------------

lines = st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), min_size=1)
checkpoints = st.builds(
    Checkpoint,
    lines,
    st.integers(0, MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(lines, max_size=4).map(tuple),
)


@given(checkpoints)
def test_checkpoint_round_trip(cp: Checkpoint) -> None:
    body = cp.body()
    assert Checkpoint.parse(body) == cp
    assert Checkpoint.parse(body).body() == body


@given(checkpoints)
def test_signed_checkpoint_round_trip(cp: Checkpoint) -> None:
    assert open_checkpoint(sign_checkpoint(cp, LOG), LOG.verifier(), cp.origin)[0] == cp
