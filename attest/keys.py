"""Ed25519 key files and key names.

Every signing key has a *name* (a schema-less URL such as ``lab.example/key1``) and is identified
everywhere by the C2SP signed-note key id, so one key means the same thing in checkpoints, notes
and DSSE envelopes:

    key id    = SHA-256(name || 0x0A || 0x01 || raw 32-byte public key)[:4]
    DSSE keyid = "<name>+<hex key id>"                 (`dsse_keyid`)
    vkey       = "<name>+<hex key id>+base64(0x01 || raw public key)"   (`verifier_key`)

Files: the private key is PKCS#8 PEM at `path` (mode 0600, encrypted with the best available
scheme when a passphrase is given); the public key is SubjectPublicKeyInfo PEM at `path` + ".pub".
The only I/O in `attest`'s spec modules is here, and only on those files.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.errors import KeyFileError, KeyNameError
from attest.note import SIG_TYPE_ED25519, format_vkey, is_valid_name, key_id

__all__ = [
    "PUBLIC_SUFFIX",
    "dsse_keyid",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_bytes",
    "public_key_from_bytes",
    "public_key_path",
    "split_dsse_keyid",
    "verifier_key",
    "write_key_pair",
]

PUBLIC_SUFFIX = ".pub"
"""Suffix appended to the private key's file name to name its public key file."""

_MAX_KEY_FILE_BYTES = 64 * 1024


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's CSPRNG."""
    return Ed25519PrivateKey.generate()


def public_key_path(path: str | os.PathLike[str]) -> Path:
    """Where the public key of the private key file `path` lives: `path` + ".pub"."""
    p = Path(path)
    return p.with_name(p.name + PUBLIC_SUFFIX)


def write_key_pair(
    path: str | os.PathLike[str], key: Ed25519PrivateKey, passphrase: bytes | None = None
) -> Path:
    """Write `key` to `path` (PKCS#8 PEM, mode 0600) and its public key to `path`.pub (SPKI PEM).

    Requires that neither file exists: a key file is never overwritten (KeyFileError). With a
    non-empty `passphrase` the private key is encrypted (`BestAvailableEncryption`). Returns the
    public key path.
    """
    if passphrase is not None and not passphrase:
        raise KeyFileError("empty passphrase: pass None for an unencrypted key")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = public_key_path(path)
    if pub_path.exists():
        raise KeyFileError(f"{pub_path}: already exists, not overwriting a key file")
    _write_new_file(Path(path), private_pem, 0o600)
    _write_new_file(pub_path, public_pem, 0o644)
    return pub_path


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively with `mode` (never widened by the umask) and write `data`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise KeyFileError(f"{path}: already exists, not overwriting a key file") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # the umask may have narrowed it; make it exact
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_private_key(
    path: str | os.PathLike[str], passphrase: bytes | None = None
) -> Ed25519PrivateKey:
    """Read an Ed25519 PKCS#8 PEM private key, decrypting it with `passphrase` if encrypted.

    Raises KeyFileError for a missing file, a wrong or missing passphrase, a passphrase given for
    an unencrypted key, a key of another algorithm, or anything that is not a PEM private key.
    """
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        # cryptography raises TypeError for "encrypted but no password" and the reverse.
        if passphrase is None:
            raise KeyFileError(f"{path}: key is encrypted, a passphrase is required") from exc
        raise KeyFileError(f"{path}: key is not encrypted, but a passphrase was given") from exc
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f"{path}: not an Ed25519 private key (unsupported algorithm)") from exc
    except ValueError as exc:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"{path}: wrong passphrase") from exc
        raise KeyFileError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 SubjectPublicKeyInfo PEM public key (a ".pub" file written above).

    Raises KeyFileError for a missing file, garbage, or a key of another algorithm.
    """
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f"{path}: not an Ed25519 public key (unsupported algorithm)") from exc
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large to be a key file")
    return data


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte RFC 8032 encoding of `public_key`."""
    return public_key.public_bytes_raw()


def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key whose raw RFC 8032 encoding is `raw` (32 bytes)."""
    if len(raw) != 32:
        raise KeyFileError(f"Ed25519 public key is {len(raw)} bytes, want 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def dsse_keyid(name: str, public_key: Ed25519PublicKey) -> str:
    """The DSSE keyid of a named key: ``"<name>+<hex of the 4-byte C2SP key id>"``.

    Requires a valid signed-note key name: non-empty, no Unicode space, no "+" (KeyNameError).
    """
    _check_name(name)
    return f"{name}+{key_id(name, SIG_TYPE_ED25519, public_key_bytes(public_key)).hex()}"


def split_dsse_keyid(keyid: str) -> tuple[str, bytes]:
    """Split a keyid made by `dsse_keyid` into (name, 4-byte key id); KeyNameError otherwise.

    This only parses: whether the key id matches a key is checked by verifying a signature.
    """
    name, sep, hex_id = keyid.rpartition("+")
    if not sep or len(hex_id) != 8 or hex_id.lower() != hex_id:
        raise KeyNameError(f"keyid {keyid[:80]!r} is not <name>+<8 lowercase hex digits>")
    try:
        raw_id = bytes.fromhex(hex_id)
    except ValueError as exc:
        raise KeyNameError(f"keyid {keyid[:80]!r} does not end in a hex key id") from exc
    _check_name(name)
    return name, raw_id


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string ``"<name>+<hex key id>+base64(0x01 || public key)"``."""
    _check_name(name)
    return format_vkey(name, SIG_TYPE_ED25519, public_key_bytes(public_key))


def _check_name(name: str) -> None:
    if not is_valid_name(name):
        raise KeyNameError(
            f"invalid key name {name[:80]!r}: must be non-empty, without spaces, "
            "control characters or '+'"
        )
