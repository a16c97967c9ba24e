"""DSSE v1 envelopes (github.com/secure-systems-lab/dsse: protocol.md, envelope.md), Ed25519 only.

Decisions a caller must know:

* **Leaf data.** `Envelope.canonical_bytes()` is the RFC 8785 form of `to_json()`: standard base64
  with padding, keys sorted, no whitespace, and `keyid` omitted when empty (DSSE: "empty fields may
  be omitted"). It is the log's leaf data, so one envelope posted with URL-safe base64 and the same
  envelope posted with standard base64 give the same bytes. Signature order and repeated
  signatures are kept as posted: they are part of what was submitted.
* **Strict JSON shape.** `Envelope.from_json` accepts exactly `payload`, `payloadType` and
  `signatures` (each `{"keyid"?, "sig"}`); any other field is rejected. DSSE lets other encodings
  and extensions exist, but a log must not store bytes it does not understand, and the canonical
  leaf would otherwise silently drop them. `payload`, `payloadType` and at least one signature are
  required, `payloadType` is non-empty.
* **Base64.** Input may use the standard or the URL-safe alphabet (not both in one string), with
  or without padding; non-canonical spellings (stray bits in the last character, partial padding,
  whitespace) are rejected.
* **keyid is a hint** (protocol.md: it "MUST NOT be used for security decisions"). Each signature
  is tried first against the trusted keys whose keyid equals its keyid, then against every other
  trusted key. A key counts once toward the threshold however many signatures it made, and two
  `TrustedKey`s that wrap the same public key are one key (deduplicated by raw public key bytes).
* **payloadType is checked** after the signatures, as protocol.md orders it: by default it must be
  `application/vnd.in-toto+json` (`PayloadTypeError`); pass `payload_type=None` to skip.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.errors import (
    CanonicalizationError,
    MalformedEnvelopeError,
    PayloadTypeError,
    SignatureError,
    ThresholdError,
)
from attest.jcs import JSONValue, canonical_loads, canonicalize
from attest.keys import dsse_keyid, public_key_bytes

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "MAX_ENVELOPE_JSON_BYTES",
    "MAX_KEYID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_TYPE_BYTES",
    "MAX_SIGNATURES",
    "MAX_SIG_BYTES",
    "Envelope",
    "Signature",
    "TrustedKey",
    "pae",
    "read_canonical",
    "read_json",
    "read_json_leaf",
    "sign_envelope",
    "verify_envelope",
]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
"""The payloadType of every envelope this project signs (in-toto attestation spec v1)."""

# Caps against resource exhaustion. A log entry is at most 65535 bytes (tlog-tiles), which the
# ledger enforces on canonical_bytes(); these only stop absurd inputs before any work is done.
MAX_ENVELOPE_JSON_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 65535
MAX_PAYLOAD_TYPE_BYTES = 256
MAX_SIGNATURES = 32
MAX_KEYID_CHARS = 512
MAX_SIG_BYTES = 1024

_ENVELOPE_FIELDS = frozenset({"payload", "payloadType", "signatures"})
_SIGNATURE_FIELDS = frozenset({"keyid", "sig"})
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE Pre-Authentication Encoding, the bytes every signature covers.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` where type is UTF8(payload_type) and
    LEN is the ASCII decimal byte length, no leading zeros.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _is_unicode(text: str) -> bool:
    """Whether `text` encodes to UTF-8 (a lone surrogate does not, and cannot be canonicalized)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Signature:
    """One DSSE signature: the unauthenticated `keyid` hint ("" when absent) and the `sig` bytes."""

    keyid: str
    sig: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.keyid, str):
            raise MalformedEnvelopeError("signature keyid is not a string")
        if not isinstance(self.sig, bytes):
            raise MalformedEnvelopeError("signature sig is not bytes")
        if len(self.keyid) > MAX_KEYID_CHARS:
            raise MalformedEnvelopeError(f"keyid longer than {MAX_KEYID_CHARS} characters")
        if not _is_unicode(self.keyid):
            raise MalformedEnvelopeError("keyid holds a lone surrogate")
        if not self.sig:
            raise MalformedEnvelopeError("empty signature")
        if len(self.sig) > MAX_SIG_BYTES:
            raise MalformedEnvelopeError(f"signature longer than {MAX_SIG_BYTES} bytes")

    def to_json(self) -> dict[str, JSONValue]:
        """The JSON object of this signature: standard padded base64, keyid only when set."""
        obj: dict[str, JSONValue] = {"sig": base64.b64encode(self.sig).decode("ascii")}
        if self.keyid:
            obj["keyid"] = self.keyid
        return obj


@dataclass(frozen=True)
class Envelope:
    """A DSSE JSON envelope. Validated when constructed (MalformedEnvelopeError)."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.payload_type, str) or not self.payload_type:
            raise MalformedEnvelopeError("payloadType is missing or empty")
        if not _is_unicode(self.payload_type):
            raise MalformedEnvelopeError("payloadType holds a lone surrogate")
        if len(self.payload_type.encode("utf-8")) > MAX_PAYLOAD_TYPE_BYTES:
            raise MalformedEnvelopeError(f"payloadType longer than {MAX_PAYLOAD_TYPE_BYTES} bytes")
        if not isinstance(self.payload, bytes):
            raise MalformedEnvelopeError("payload is not bytes")
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise MalformedEnvelopeError(f"payload longer than {MAX_PAYLOAD_BYTES} bytes")
        if not isinstance(self.signatures, tuple) or not all(
            isinstance(s, Signature) for s in self.signatures
        ):
            raise MalformedEnvelopeError("signatures is not a tuple of Signature")
        if not self.signatures:
            raise MalformedEnvelopeError("envelope has no signatures")
        if len(self.signatures) > MAX_SIGNATURES:
            raise MalformedEnvelopeError(f"envelope has more than {MAX_SIGNATURES} signatures")

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, object]) -> Envelope:
        """Decode a JSON envelope from its text or from an already parsed JSON object.

        Text is read with `attest.jcs.canonical_loads` (duplicate keys rejected). See the module
        docstring for the accepted shape. Raises MalformedEnvelopeError.
        """
        obj = _load_object(data)
        _check_fields(obj, _ENVELOPE_FIELDS, _ENVELOPE_FIELDS, "envelope")
        raw_sigs = obj["signatures"]
        if not isinstance(raw_sigs, list):
            raise MalformedEnvelopeError("signatures is not a JSON array")
        if len(raw_sigs) > MAX_SIGNATURES:
            raise MalformedEnvelopeError(f"envelope has more than {MAX_SIGNATURES} signatures")
        return cls(
            payload_type=_string(obj["payloadType"], "payloadType"),
            payload=_b64decode(_string(obj["payload"], "payload"), "payload"),
            signatures=tuple(_signature_from_json(s) for s in raw_sigs),
        )

    def to_json(self) -> dict[str, JSONValue]:
        """The JSON envelope, with standard padded base64."""
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [s.to_json() for s in self.signatures],
        }

    def canonical_bytes(self) -> bytes:
        """RFC 8785 bytes of `to_json()`: the log's leaf data for this envelope."""
        try:
            return _canonical_text(
                base64.b64encode(self.payload).decode("ascii"),
                self.payload_type,
                [(s.keyid, base64.b64encode(s.sig).decode("ascii")) for s in self.signatures],
            ).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: canonicalize words the error
            pass
        try:
            return canonicalize(self.to_json())
        except CanonicalizationError as exc:
            raise MalformedEnvelopeError(f"envelope cannot be canonicalized: {exc}") from exc


_esc = json.encoder.encode_basestring  # a str as `json` writes it with ensure_ascii=False
_esc_ascii = json.encoder.encode_basestring_ascii  # ... and with ensure_ascii=True


def _canonical_text(payload: str, payload_type: str, sigs: Sequence[tuple[str, str]]) -> str:
    """`dumps_bmp(obj)` as text, `obj` being the `to_json()` object with base64 strings
    `payload` and `sigs` (keyid, sig): written piece by piece in the encoder's key order
    ("payload" < "payloadType" < "signatures", "keyid" < "sig"; an empty keyid is absent), with
    the encoder's own string escaping, which leaves a base64 string as it is. The same text
    without the encoder's walk of dicts and key sort; `json` writes exactly RFC 8785's bytes
    for strings under fixed ASCII keys. A lone surrogate stays in the text (encoding it to
    UTF-8 raises UnicodeEncodeError, as `dumps_bmp` does)."""
    return (
        '{"payload":"'
        + payload
        + '","payloadType":'
        + _esc(payload_type)
        + ',"signatures":['
        + ",".join(
            [
                ('{"keyid":' + _esc(keyid) + ',"sig":"' if keyid else '{"sig":"') + sig + '"}'
                for keyid, sig in sigs
            ]
        )
        + "]}"
    )


_CANONICAL_PREFIX = b'{"payload":"'
_SIGNATURE_KEYS = (frozenset({"sig"}), _SIGNATURE_FIELDS)


def _plain_envelope(obj: object) -> Envelope | None:
    """The envelope of `obj`, an object `json.loads` read, when it holds exactly the envelope's
    fields (a signature: ``sig`` and an optional ``keyid``) with a string payload and string
    signatures; None for any other shape. Raises ValueError on base64 that is not in strict
    form and MalformedEnvelopeError on a field the `Envelope` refuses (a lone surrogate); the
    two readers below turn both into None. Neither reader trusts the result until its bytes
    check passes."""
    if type(obj) is not dict or obj.keys() != _ENVELOPE_FIELDS:
        return None
    payload_type, payload, raw_sigs = obj["payloadType"], obj["payload"], obj["signatures"]
    if type(raw_sigs) is not list or type(payload) is not str:
        return None
    sigs = []
    for raw in raw_sigs:
        if type(raw) is not dict or raw.keys() not in _SIGNATURE_KEYS:
            return None
        sig = raw["sig"]
        if type(sig) is not str:
            return None
        sigs.append(
            Signature(keyid=raw.get("keyid", ""), sig=binascii.a2b_base64(sig, strict_mode=True))
        )
    return Envelope(
        payload_type=payload_type,
        payload=binascii.a2b_base64(payload, strict_mode=True),
        signatures=tuple(sigs),
    )


def read_canonical(data: bytes) -> Envelope | None:
    """The envelope `Envelope.from_json(data)` returns, when `data` is exactly that envelope's
    `canonical_bytes()`; None for any other data (`Envelope.from_json` then decides, and words
    any error). Several times faster: the C `json` parser, no hooks.

    Why the answer is `from_json`'s: bytes equal to `canonical_bytes()` of an envelope are
    RFC 8785 JSON holding only strings (valid UTF-8, no duplicate key, no number, no lone
    surrogate), within `MAX_ENVELOPE_JSON_BYTES`, with exactly the envelope's fields, and every
    base64 string in its one canonical spelling (standard alphabet, padded), which `from_json`
    decodes to the same bytes; an empty keyid is omitted there as `from_json` defaults it.
    """
    if (
        not isinstance(data, bytes)
        or len(data) > MAX_ENVELOPE_JSON_BYTES
        or not data.startswith(_CANONICAL_PREFIX)
    ):
        return None
    try:
        obj = json.loads(data.decode("utf-8"))
        env = _plain_envelope(obj)
        if env is None:
            return None
        same = env.canonical_bytes() == data
    except (ValueError, RecursionError, MalformedEnvelopeError):  # binascii.Error: ValueError
        return None
    return env if same else None


_JSON_SPELLINGS = ((",", ":"), (", ", ": "))  # compact, and `json.dumps`'s default


def read_json(data: bytes) -> Envelope | None:
    """The envelope `Envelope.from_json(data)` returns, when `data` is exactly what Python's
    `json.dumps` writes for that envelope's `to_json()` object — in any key order, with compact
    or default separators, ASCII-escaped or not (what clients built on `json` and httpx post,
    and what the batch route re-encodes) — or its `canonical_bytes()`; None for any other data
    (`Envelope.from_json` then decides, and words any error). Several times faster.

    Why the answer is `from_json`'s: the object `json.loads` reads from `data` holds exactly the
    envelope's fields, with string values only, so the two parsers read the same object from
    the same text unless the text holds a duplicate key, a number, a constant or a lone
    surrogate (which only `from_json` refuses). `data` equals `json.dumps` of the object read,
    so it repeats no key (the object would be shorter); the types hold no number or constant; a
    lone surrogate makes the `Envelope` refuse its field here. The object equals `to_json()` of
    the envelope built from it, so every base64 string is in its one canonical spelling
    (standard alphabet, padded), which `from_json` decodes to the same bytes, and an empty
    keyid is absent, as `from_json` defaults it.
    """
    if (
        not isinstance(data, bytes)
        or len(data) > MAX_ENVELOPE_JSON_BYTES
        or not data.startswith(b'{"')
    ):
        return None
    read = read_json_leaf(data)
    return None if read is None else read[0]


def read_json_leaf(data: bytes) -> tuple[Envelope, bytes] | None:
    """`read_json(data)` and that envelope's `canonical_bytes()`, written once from the object
    `read_json` compares (`_canonical_text`); None where `read_json` answers None."""
    if (
        not isinstance(data, bytes)
        or len(data) > MAX_ENVELOPE_JSON_BYTES
        or not data.startswith(b'{"')
    ):
        return None
    try:
        text = data.decode("utf-8")
        obj = json.loads(text)
        env = _plain_envelope(obj)
        if env is None:
            return None
        if obj != env.to_json():
            return None
        # The separators after the first key tell which spelling to compare with.
        colon = text.index('"', 2) + 1
        item, key = _JSON_SPELLINGS[text[colon : colon + 2] == ": "]
        if _spelled(obj, item, key, _esc_ascii if data.isascii() else _esc) != text:
            return None
        sigs = obj["signatures"]
        leaf = _canonical_text(
            obj["payload"],
            obj["payloadType"],
            [(s.get("keyid", ""), s["sig"]) for s in sigs],
        ).encode("utf-8")
    except (ValueError, RecursionError, MalformedEnvelopeError):  # binascii.Error: ValueError
        return None
    return env, leaf


def _spelled(obj: dict[str, Any], item: str, key: str, esc: Callable[[str], str]) -> str:
    """`json.dumps(obj, separators=(item, key), ensure_ascii=esc is _esc_ascii)`, for `obj`
    equal to an envelope's `to_json()` (`read_json_leaf` checked it): keys in `obj`'s order, each
    string written by `esc` (`json`'s own escaping) but the base64 ones (payload, sig), which
    hold only characters that no escaping changes (`A-Z a-z 0-9 + / =`)."""
    parts = []
    for name, value in obj.items():
        if name == "signatures":
            value = (
                "["
                + item.join(
                    [
                        "{"
                        + item.join(
                            [
                                (esc(k) + key + ('"' + v + '"' if k == "sig" else esc(v)))
                                for k, v in s.items()
                            ]
                        )
                        + "}"
                        for s in value
                    ]
                )
                + "]"
            )
        elif name == "payload":
            value = '"' + value + '"'
        else:
            value = esc(value)
        parts.append(esc(name) + key + value)
    return "{" + item.join(parts) + "}"


def _load_object(data: bytes | str | Mapping[str, object]) -> Mapping[str, object]:
    if isinstance(data, Mapping):
        return data
    if len(data) > MAX_ENVELOPE_JSON_BYTES:
        raise MalformedEnvelopeError(f"envelope longer than {MAX_ENVELOPE_JSON_BYTES} bytes")
    try:
        obj = canonical_loads(data)
    except CanonicalizationError as exc:
        raise MalformedEnvelopeError(f"envelope is not valid JSON: {exc.diagnostic}") from exc
    if not isinstance(obj, dict):
        raise MalformedEnvelopeError("envelope is not a JSON object")
    return obj


def _check_fields(
    obj: Mapping[str, object], allowed: frozenset[str], required: frozenset[str], what: str
) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise MalformedEnvelopeError(f"{what} has unknown field(s): {', '.join(sorted(unknown))}")
    missing = required - set(obj)
    if missing:
        raise MalformedEnvelopeError(f"{what} lacks field(s): {', '.join(sorted(missing))}")


def _signature_from_json(raw: object) -> Signature:
    if not isinstance(raw, Mapping):
        raise MalformedEnvelopeError("signature is not a JSON object")
    _check_fields(raw, _SIGNATURE_FIELDS, frozenset({"sig"}), "signature")
    keyid = _string(raw.get("keyid", ""), "keyid")
    return Signature(keyid=keyid, sig=_b64decode(_string(raw["sig"], "sig"), "sig"))


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedEnvelopeError(f"{field} is not a string")
    return value


def _b64decode(text: str, field: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not; reject every non-canonical spelling."""
    if not text.isascii():
        raise MalformedEnvelopeError(f"{field}: base64 has non-ASCII characters")
    if any(c in text for c in "-_") and any(c in text for c in "+/"):
        raise MalformedEnvelopeError(f"{field}: base64 mixes the standard and URL-safe alphabets")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding and (padding > 2 or len(text) % 4):
        raise MalformedEnvelopeError(f"{field}: base64 has wrong padding")
    if len(body) % 4 == 1:
        raise MalformedEnvelopeError(f"{field}: base64 has an impossible length")
    standard = body.translate(_URLSAFE_TO_STANDARD)
    try:
        raw = binascii.a2b_base64(standard + "=" * (-len(standard) % 4), strict_mode=True)
    except binascii.Error as exc:
        raise MalformedEnvelopeError(f"{field}: invalid base64: {exc}") from exc
    # Stray bits in the last character decode to the same bytes: refuse, one spelling per value.
    if base64.b64encode(raw).decode("ascii").rstrip("=") != standard:
        raise MalformedEnvelopeError(f"{field}: base64 is not canonical (non-zero trailing bits)")
    return raw


def sign_envelope(
    payload_type: str,
    payload: bytes,
    signers: Sequence[tuple[str, Ed25519PrivateKey]],
) -> Envelope:
    """Sign PAE(payload_type, payload) with each (key name, private key), in order.

    Each signature's keyid is `attest.keys.dsse_keyid(name, public key)`. Requires at least one
    signer (MalformedEnvelopeError otherwise).
    """
    message = pae(payload_type, payload)
    signatures = tuple(
        Signature(keyid=dsse_keyid(name, key.public_key()), sig=key.sign(message))
        for name, key in signers
    )
    return Envelope(payload_type=payload_type, payload=payload, signatures=signatures)


@dataclass(frozen=True)
class TrustedKey:
    """A public key the verifier trusts, with the keyid it is expected to sign under."""

    keyid: str
    public_key: Ed25519PublicKey
    # `raw()`, written once: admission asks for it several times per signature.
    _raw: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_raw", public_key_bytes(self.public_key))

    @classmethod
    def named(cls, name: str, public_key: Ed25519PublicKey) -> TrustedKey:
        """The trusted key for key `name`, its keyid computed by `attest.keys.dsse_keyid`."""
        return cls(keyid=dsse_keyid(name, public_key), public_key=public_key)

    def raw(self) -> bytes:
        """The raw 32-byte public key: the identity that the threshold counts."""
        return self._raw


def verify_envelope(
    env: Envelope,
    trusted: Sequence[TrustedKey],
    threshold: int = 1,
    *,
    payload_type: str | None = IN_TOTO_PAYLOAD_TYPE,
) -> list[TrustedKey]:
    """Verify a (threshold, n) envelope; return the distinct trusted keys whose signature verified.

    Plan (DSSE protocol.md, "Multi-signature Verification"):
    1. deduplicate the trusted keys by raw public key (the first TrustedKey of each is kept);
    2. compute PAE(payloadType, payload) once;
    3. for each signature, try the keys whose keyid equals its keyid, then all others; the first
       key that verifies is accepted (a signature adds at most one key; an accepted key is not
       tried again);
    4. raise SignatureError if no key verified, ThresholdError(got, want) if fewer than
       `threshold` distinct keys did;
    5. raise PayloadTypeError unless payloadType equals `payload_type` (None skips this).

    The result lists keys in the order their first signature appears. Requires threshold >= 1
    (ValueError: a zero threshold would accept anything).
    """
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    keys = _distinct_keys(trusted)  # (1)
    message = pae(env.payload_type, env.payload)  # (2)
    accepted: dict[bytes, TrustedKey] = {}
    for sig in env.signatures:  # (3)
        for raw, key in _candidates(sig.keyid, keys):
            if raw not in accepted and _verifies(key.public_key, sig.sig, message):
                accepted[raw] = key
                break
    if not accepted:  # (4)
        raise SignatureError(
            f"no signature verified against any of {len(keys)} trusted key(s) "
            f"(keyids: {', '.join(repr(s.keyid) for s in env.signatures)[:200]})"
        )
    if len(accepted) < threshold:
        raise ThresholdError(got=len(accepted), want=threshold)
    if payload_type is not None and env.payload_type != payload_type:  # (5)
        raise PayloadTypeError(got=env.payload_type, want=payload_type)
    return list(accepted.values())


def _distinct_keys(trusted: Sequence[TrustedKey]) -> dict[bytes, TrustedKey]:
    keys: dict[bytes, TrustedKey] = {}
    for key in trusted:
        keys.setdefault(key.raw(), key)
    return keys


def _candidates(keyid: str, keys: dict[bytes, TrustedKey]) -> list[tuple[bytes, TrustedKey]]:
    """Every trusted key, those whose keyid matches the (unauthenticated) hint first."""
    hinted = [(raw, key) for raw, key in keys.items() if keyid and key.keyid == keyid]
    hinted_raw = {raw for raw, _ in hinted}
    return hinted + [(raw, key) for raw, key in keys.items() if raw not in hinted_raw]


def _verifies(public_key: Ed25519PublicKey, sig: bytes, message: bytes) -> bool:
    if len(sig) != 64:
        return False
    try:
        public_key.verify(sig, message)
    except InvalidSignature:
        return False
    return True
