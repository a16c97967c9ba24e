"""Building blocks shared by the statement and predicate wire models (internal).

Every wire model is strict, frozen and rejects unknown fields. Python attribute names are
snake_case; the JSON names are the camelCase aliases (in-toto's convention). Every number is an
integer: fractions are milli-units (suffix ``Milli`` on the wire), never floats.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from attest.jcs import MAX_SAFE_INTEGER
from attest.note import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, decode_base64, is_valid_name
from attest.note import key_id as note_key_id


class WireModel(BaseModel):
    """Base of every wire model: strict, frozen, unknown fields rejected, camelCase on the wire."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest as 64 lowercase hex digits."""

Label = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""A short human-chosen name (model name, version, origin, ...): 1-256 characters, no controls."""

Token = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
"""A machine identifier (category, tier, emotion, token rule): lowercase, digits, ``._-``."""

Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
"""A non-negative integer (sizes, indexes, counts, layers) within the I-JSON range."""

Milli = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
"""A signed quantity in milli-units (1000 = 1.0) within the I-JSON range."""

Permille = Annotated[int, Field(ge=0, le=1000)]
"""A rate or probability in milli-units: 0 (0.0) to 1000 (1.0)."""

UnixSeconds = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
"""Seconds since 1970-01-01T00:00:00Z, an integer."""

_HEX8 = re.compile(r"[0-9a-f]{8}")


def parse_verifier_key(vkey: str) -> tuple[str, int, bytes]:
    """Split a C2SP verifier key ``<name>+<hex key id>+base64(type || key)`` into its parts.

    Accepts Ed25519 (0x01) and cosignature (0x04) keys with a 32-byte key, a lowercase key id and
    canonical base64; checks the key id against the name and key. Returns (name, type, raw key);
    raises ValueError otherwise.
    """
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise ValueError("verifier key is not <name>+<key id>+<base64 key>")
    name, hex_id, key_b64 = parts
    if not is_valid_name(name):
        raise ValueError(f"verifier key has an invalid name {name[:80]!r}")
    if not _HEX8.fullmatch(hex_id):
        raise ValueError("verifier key id is not 8 lowercase hex digits")
    material = decode_base64(key_b64)
    if len(material) != 33 or material[0] not in (SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1):
        raise ValueError("verifier key is not an Ed25519 (0x01) or cosignature (0x04) key")
    if note_key_id(name, material[0], material[1:]).hex() != hex_id:
        raise ValueError("verifier key id does not match its name and key")
    return name, material[0], material[1:]


def _check_verifier_key(vkey: str) -> str:
    parse_verifier_key(vkey)
    return vkey


VerifierKey = Annotated[str, StringConstraints(max_length=512), AfterValidator(_check_verifier_key)]
"""A C2SP verifier key string, checked: ``<name>+<hex key id>+base64(type || 32-byte key)``."""


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()
