"""Verifier keys (C2SP signed-note): `<name>+<hex key ID>+base64(type || public key)`.

Sits above `note` and `cosignature` because a verifier key may name either signature type
(0x01 Ed25519 note signatures, 0x04 tlog-cosignature v1). Pure.
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attest.cosignature import CosignatureVerifier
from attest.note import (
    ED25519_PUBLIC_KEY_SIZE,
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Ed25519NoteVerifier,
    MalformedKeyError,
    NoteVerifier,
    decode_base64,
    is_valid_name,
    key_id,
)

__all__ = ["parse_vkey"]

_VKEY_HASH = re.compile(r"[0-9a-fA-F]{8}")


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse a verifier key string `<name>+<hex key ID>+base64(type || public key)`.

    Type 0x01 gives an `Ed25519NoteVerifier`, type 0x04 a `CosignatureVerifier`.
    Raises MalformedKeyError for a bad name, key-ID syntax, base64 or key length, an unknown type,
    or a key ID that does not match the name and key.
    """
    name, kid_hex, key_b64 = _split_vkey(vkey)
    try:
        material = decode_base64(key_b64)
    except ValueError as e:
        raise MalformedKeyError(f"verifier key {name}: bad base64: {e}") from e
    if not material:
        raise MalformedKeyError(f"verifier key {name}: no key material")
    want = key_id(name, material[0], material[1:])
    if bytes.fromhex(kid_hex) != want:
        got = kid_hex.lower()
        raise MalformedKeyError(
            f"verifier key {name}: key ID {got} does not match, want {want.hex()}"
        )
    return _verifier_for_type(name, material[0], material[1:])


def _split_vkey(vkey: str) -> tuple[str, str, str]:
    # Split at the first two '+' only: the base64 part may itself contain '+'.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise MalformedKeyError("verifier key is not <name>+<key ID>+<key>")
    name, kid_hex, key_b64 = parts
    if not is_valid_name(name):
        raise MalformedKeyError(f"verifier key has invalid name {name!r}")
    if not _VKEY_HASH.fullmatch(kid_hex):
        raise MalformedKeyError(f"verifier key {name}: key ID {kid_hex!r} is not 8 hex digits")
    return name, kid_hex, key_b64


def _verifier_for_type(name: str, sig_type: int, public: bytes) -> NoteVerifier:
    if sig_type not in (SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1):
        raise MalformedKeyError(f"verifier key {name}: unknown signature type 0x{sig_type:02x}")
    if len(public) != ED25519_PUBLIC_KEY_SIZE:
        raise MalformedKeyError(f"verifier key {name}: public key is {len(public)} bytes, want 32")
    key = Ed25519PublicKey.from_public_bytes(public)
    if sig_type == SIG_TYPE_ED25519:
        return Ed25519NoteVerifier(name, key)
    return CosignatureVerifier(name, key)
