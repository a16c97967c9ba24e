"""RFC 8785 JSON Canonicalization Scheme (JCS), and the strict JSON reader for signed payloads.

`canonicalize` is plain RFC 8785 (through the `rfc8785` package): it accepts floats and writes
them in the ECMAScript form the RFC prescribes, so it passes every published JCS vector.

`canonical_equals` and `dumps_bmp` are the fast paths: the standard `json` module writes RFC 8785
bytes exactly on a subset of values (no floats, integers within ±(2**53 - 1), keys without
characters beyond the BMP), many times faster than `rfc8785`; each says what its caller proves.

`canonical_loads` is the reader for bytes that are, or will be, signed. It accepts only I-JSON
(RFC 7493) and is stricter than RFC 8785 on one point, by project rule:

* **No floats.** Any number with a fraction or an exponent (``1.5``, ``1.0``, ``1e3``) is rejected,
  even when JCS would write it exactly. Quantities that are fractions are carried as integers in
  milli-units (``transferMilli: 750`` for 0.75) or, where more precision is needed, as
  fixed-precision strings. Floats are rejected rather than "checked for round-tripping" because
  different producers (numpy, JavaScript, Go) print the same double differently, and a payload
  whose meaning depends on float formatting cannot be re-derived by a verifier byte for byte.
  `allow_floats=True` exists only for reading general JSON such as the JCS vectors.
* **Integers within ±(2**53 - 1)**, the range an IEEE 754 double holds exactly (I-JSON §2.2).
* **No duplicate object keys**, no lone surrogates (``"\\ud800"``), no ``NaN`` / ``Infinity``,
  UTF-8 only, no byte-order mark.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TypeAlias

import rfc8785

from attest.errors import CanonicalizationError

__all__ = [
    "MAX_SAFE_INTEGER",
    "CanonicalizationError",
    "JSONValue",
    "canonical_equals",
    "canonical_loads",
    "canonicalize",
    "dumps_bmp",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
"""What `canonical_loads` returns: the plain Python form of a JSON value."""

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer magnitude I-JSON allows (an IEEE 754 double holds every integer up to it)."""

# 2**53 - 1 has 16 decimal digits; refuse longer digit strings before converting them.
_MAX_INT_DIGITS = len(str(MAX_SAFE_INTEGER))


def canonicalize(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of `value`.

    `value` is built from dict (string keys), list, tuple, str, int, float, bool and None.
    Raises CanonicalizationError for anything JCS cannot represent: NaN or infinite floats,
    integers beyond ±(2**53 - 1), non-string keys, lone surrogates, other types.
    """
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalizationError(f"cannot canonicalize: {exc}") from exc
    except UnicodeEncodeError as exc:
        # rfc8785 sorts keys by their UTF-16 encoding, which fails on a lone surrogate.
        raise CanonicalizationError("cannot canonicalize: lone surrogate in a key") from exc
    except RecursionError as exc:
        raise CanonicalizationError("cannot canonicalize: nested too deeply") from exc


# Sorted keys, no whitespace, strings as UTF-8: RFC 8785 writes a string exactly as `json` does with
# `ensure_ascii=False` (the two-character escapes \b \f \n \r \t \" \\, `\u00xx` in lowercase hex
# for the other control characters, every other character as itself), `true`, `false`, `null`
# and integers alike. It differs only on floats (ECMAScript number form) and on key order when a
# key holds a character beyond the BMP (RFC 8785 sorts by UTF-16 code units, `json` by code
# points), and it refuses integers beyond ±(2**53 - 1), which `json` writes.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)

# The first byte of a 4-byte UTF-8 sequence: a character beyond the BMP.
_ASTRAL = re.compile(rb"[\xf0-\xf7]")


def dumps_bmp(value: object) -> bytes:
    """The RFC 8785 bytes of `value` written by `json`, for a caller that proves `value` holds no
    float, no integer beyond ±(2**53 - 1) and only string keys, none with a character beyond the
    BMP (see above);
    anything else must go through `canonicalize`. Raises UnicodeEncodeError on a lone surrogate.
    """
    return _ENCODER.encode(value).encode("utf-8")


def canonical_equals(value: object, data: bytes) -> bool:
    """Whether `canonicalize(value) == data`, for `value` whose objects have string keys only (as
    `model_dump(mode="json")` gives) and `data` that holds no float token and no integer beyond
    ±(2**53 - 1) (for example, `canonical_loads` read it).

    Fast when it can prove the answer: if `data` has no character beyond the BMP and `json`
    writes `value` as exactly `data`, then `value` holds no float (`json` writes every finite
    float as a number token with a "." or an exponent, and none is in `data`; NaN and infinities
    it refuses) and no integer beyond the range (none is in `data`), and every key is within the
    BMP (it is in `data`), so `json`'s bytes are RFC 8785's. Otherwise `canonicalize` decides
    (and raises what it raises).
    """
    if data.isascii() or not _ASTRAL.search(data):
        try:
            if _ENCODER.encode(value).encode("utf-8") == data:
                return True
        except (ValueError, TypeError, RecursionError):  # lone surrogate, NaN, other types
            pass
    return canonicalize(value) == data


def canonical_loads(
    data: bytes | str, *, allow_floats: bool = False, require_canonical: bool = False
) -> JSONValue:
    """Parse strict I-JSON `data` (see the module docstring for the rules).

    With `require_canonical`, `data` must also already be its own RFC 8785 form, byte for byte
    (signed payloads are: a verifier recomputes nothing and compares bytes). Raises
    CanonicalizationError, never json.JSONDecodeError.
    """
    text = _decode_utf8(data)
    try:
        value: JSONValue = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_int=_parse_int,
            parse_float=_parse_float if allow_floats else _reject_float,
            parse_constant=_reject_constant,
        )
    except CanonicalizationError:
        raise
    except RecursionError as exc:
        raise CanonicalizationError("JSON nested too deeply") from exc
    except ValueError as exc:
        raise CanonicalizationError(f"invalid JSON: {exc}") from exc
    _reject_lone_surrogates(value)
    if require_canonical and canonicalize(value) != text.encode("utf-8"):
        raise CanonicalizationError("JSON is not in RFC 8785 canonical form")
    return value


def _decode_utf8(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        # Python's strict UTF-8 decoder already rejects encoded surrogates (ED A0 80 ...).
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalizationError(f"JSON is not valid UTF-8: {exc.reason}") from exc


def _reject_duplicate_keys(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    obj: dict[str, JSONValue] = {}
    for key, value in pairs:
        if key in obj:
            raise CanonicalizationError(f"duplicate object key {key!r}")
        obj[key] = value
    return obj


def _parse_int(token: str) -> int:
    if len(token.lstrip("-")) > _MAX_INT_DIGITS:
        raise CanonicalizationError(f"integer {token[:24]}... is beyond ±(2**53 - 1)")
    number = int(token)
    if abs(number) > MAX_SAFE_INTEGER:
        raise CanonicalizationError(f"integer {token} is beyond ±(2**53 - 1)")
    return number


def _reject_float(token: str) -> float:
    raise CanonicalizationError(
        f"number {token[:24]} is not an integer: signed payloads carry no floats "
        "(use integer milli-units or a fixed-precision string)"
    )


def _parse_float(token: str) -> float:
    number = float(token)
    if number in (float("inf"), float("-inf")):
        raise CanonicalizationError(f"number {token[:24]} overflows a double")
    return number


def _reject_constant(token: str) -> float:
    raise CanonicalizationError(f"{token} is not JSON")


def _reject_lone_surrogates(value: JSONValue) -> None:
    for text in _strings(value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CanonicalizationError("JSON string holds a lone surrogate") from exc


def _strings(value: JSONValue) -> Iterator[str]:
    """Every string (keys included) in `value`, iteratively: depth is bounded by json.loads."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                yield key
                stack.append(child)
