"""Ed25519 key files, key names and key ids."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import KeyFileError, KeyNameError
from attest.keys import (
    dsse_keyid,
    generate_private_key,
    load_private_key,
    load_public_key,
    public_key_bytes,
    public_key_from_bytes,
    public_key_path,
    split_dsse_keyid,
    verifier_key,
    write_key_pair,
)
from attest.note import key_id


def test_key_pair_round_trips(tmp_path: Path) -> None:
    key = generate_private_key()
    pub_path = write_key_pair(tmp_path / "lab", key)
    assert pub_path == tmp_path / "lab.pub" == public_key_path(tmp_path / "lab")
    loaded = load_private_key(tmp_path / "lab")
    assert public_key_bytes(loaded.public_key()) == public_key_bytes(key.public_key())
    assert public_key_bytes(load_public_key(pub_path)) == public_key_bytes(key.public_key())


def test_private_key_file_is_mode_0600(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key())
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_files_are_pkcs8_and_spki_pem(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key())
    assert (tmp_path / "k").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert (tmp_path / "k.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")


def test_encrypted_key_round_trips(tmp_path: Path) -> None:
    key = generate_private_key()
    write_key_pair(tmp_path / "k", key, b"correct horse")
    assert (tmp_path / "k").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = load_private_key(tmp_path / "k", b"correct horse")
    assert public_key_bytes(loaded.public_key()) == public_key_bytes(key.public_key())


def test_wrong_passphrase(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key(), b"correct horse")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(tmp_path / "k", b"battery staple")


def test_missing_passphrase(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key(), b"correct horse")
    with pytest.raises(KeyFileError, match="passphrase is required"):
        load_private_key(tmp_path / "k")


def test_passphrase_for_unencrypted_key(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key())
    with pytest.raises(KeyFileError, match="not encrypted"):
        load_private_key(tmp_path / "k", b"pass")


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        write_key_pair(tmp_path / "k", generate_private_key(), b"")


def test_existing_key_file_never_overwritten(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key())
    before = (tmp_path / "k").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_pair(tmp_path / "k", generate_private_key())
    assert (tmp_path / "k").read_bytes() == before


def test_existing_public_key_file_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("keep me")
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_pair(tmp_path / "k", generate_private_key())
    assert not (tmp_path / "k").exists()


def test_not_ed25519_private_key(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "ec").write_bytes(pem)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_private_key(tmp_path / "ec")


def test_not_ed25519_public_key(tmp_path: Path) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ec.pub").write_bytes(pem)
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nxx\n"])
def test_garbage_private_key(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "k").write_bytes(content)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(tmp_path / "k")


def test_garbage_public_key(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_bytes(b"ssh-ed25519 AAAA")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "k.pub")


def test_private_key_is_not_a_public_key_file(tmp_path: Path) -> None:
    write_key_pair(tmp_path / "k", generate_private_key())
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "k")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "absent")


def test_public_key_from_bytes_round_trips() -> None:
    pub = generate_private_key().public_key()
    assert public_key_bytes(public_key_from_bytes(public_key_bytes(pub))) == public_key_bytes(pub)


def test_public_key_from_bytes_wrong_length() -> None:
    with pytest.raises(KeyFileError, match="want 32"):
        public_key_from_bytes(b"\x00" * 31)


def test_dsse_keyid_is_name_plus_note_key_id() -> None:
    pub = generate_private_key().public_key()
    raw = public_key_bytes(pub)
    assert (
        dsse_keyid("lab.example/key1", pub)
        == "lab.example/key1+" + key_id("lab.example/key1", 0x01, raw).hex()
    )


def test_verifier_key_matches_c2sp_signed_note_example(vectors_dir: Path) -> None:
    case = json.loads((vectors_dir / "signed-note" / "c2sp-example.json").read_text())
    name, hex_id, key_b64 = case["verifier_key"].split("+", 2)
    raw = base64.b64decode(key_b64)[1:]
    pub = public_key_from_bytes(raw)
    assert verifier_key(name, pub) == case["verifier_key"]
    assert dsse_keyid(name, pub) == f"{name}+{hex_id}"


def test_split_dsse_keyid_round_trips() -> None:
    pub = generate_private_key().public_key()
    name, raw_id = split_dsse_keyid(dsse_keyid("lab.example/key1", pub))
    assert name == "lab.example/key1"
    assert raw_id == key_id(name, 0x01, public_key_bytes(pub))


@pytest.mark.parametrize(
    "keyid",
    ["", "nokeyid", "name+1234567", "name+123456789", "name+ABCDEF01", "+01234567", "n+zz000000"],
)
def test_split_dsse_keyid_rejects_malformed(keyid: str) -> None:
    with pytest.raises(KeyNameError):
        split_dsse_keyid(keyid)


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\there", "nbsp\u00a0", "nl\n"])
def test_invalid_key_name(name: str) -> None:
    pub = generate_private_key().public_key()
    with pytest.raises(KeyNameError):
        dsse_keyid(name, pub)
    with pytest.raises(KeyNameError):
        verifier_key(name, pub)
