"""RFC 8785 canonicalization against the published vectors, and the strict signed-payload reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.errors import AttestError, CanonicalizationError
from attest.jcs import MAX_SAFE_INTEGER, canonical_loads, canonicalize

from .strategies import text

JCS_CASES = ["arrays", "french", "structures", "unicode", "values", "weird"]
FLOAT_CASES = {"structures", "values"}  # the vectors that hold non-integer number tokens


def _vector_names(vectors_dir: Path) -> list[str]:
    return sorted(p.stem for p in (vectors_dir / "jcs" / "input").glob("*.json"))


def test_every_jcs_vector_is_listed(vectors_dir: Path) -> None:
    assert _vector_names(vectors_dir) == JCS_CASES


@pytest.mark.parametrize("name", JCS_CASES)
def test_jcs_vector(vectors_dir: Path, name: str) -> None:
    jcs = vectors_dir / "jcs"
    want = (jcs / "output" / f"{name}.json").read_bytes()
    want_hex = bytes.fromhex((jcs / "outhex" / f"{name}.txt").read_text())
    got = canonicalize(
        canonical_loads((jcs / "input" / f"{name}.json").read_bytes(), allow_floats=True)
    )
    assert got == want
    assert got == want_hex


@pytest.mark.parametrize("name", JCS_CASES)
def test_jcs_vector_output_is_its_own_canonical_form(vectors_dir: Path, name: str) -> None:
    out = (vectors_dir / "jcs" / "output" / f"{name}.json").read_bytes()
    canonical_loads(out, allow_floats=True, require_canonical=True)


@pytest.mark.parametrize("name", sorted(FLOAT_CASES))
def test_jcs_vector_with_floats_is_refused_as_signed_payload(vectors_dir: Path, name: str) -> None:
    with pytest.raises(CanonicalizationError, match="not an integer"):
        canonical_loads((vectors_dir / "jcs" / "input" / f"{name}.json").read_bytes())


@pytest.mark.parametrize("name", sorted(set(JCS_CASES) - FLOAT_CASES))
def test_jcs_vector_without_floats_is_accepted_as_signed_payload(
    vectors_dir: Path, name: str
) -> None:
    canonical_loads((vectors_dir / "jcs" / "input" / f"{name}.json").read_bytes())


@pytest.mark.parametrize("number", ["1.5", "1.0", "56.0", "1e3", "1E-2", "-0.0", "0.1"])
def test_float_rejected(number: str) -> None:
    with pytest.raises(CanonicalizationError, match="not an integer"):
        canonical_loads(f'{{"x":[{number}]}}'.encode())


def test_duplicate_key_rejected() -> None:
    with pytest.raises(CanonicalizationError, match="duplicate object key 'a'"):
        canonical_loads(b'{"a":1,"b":{"a":2},"a":3}')


def test_duplicate_key_nested_rejected() -> None:
    with pytest.raises(CanonicalizationError, match="duplicate"):
        canonical_loads(b'[{"k":1,"k":1}]')


@pytest.mark.parametrize("number", [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
def test_largest_safe_integer_accepted(number: int) -> None:
    assert canonical_loads(str(number).encode()) == number


@pytest.mark.parametrize("token", [str(2**53), str(-(2**53)), "1" * 17, "9" * 5000, str(2**64)])
def test_integer_beyond_ijson_rejected(token: str) -> None:
    with pytest.raises(CanonicalizationError, match="beyond"):
        canonical_loads(token.encode())


def test_canonicalize_rejects_integer_beyond_ijson() -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize({"n": 2**53})


@pytest.mark.parametrize("doc", [b'"\\ud800"', b'{"\\udc00":1}', b'["ok","\\ud83d"]'])
def test_lone_surrogate_rejected(doc: bytes) -> None:
    with pytest.raises(CanonicalizationError, match="surrogate"):
        canonical_loads(doc)


def test_surrogate_pair_accepted() -> None:
    assert canonical_loads(b'"\\ud83d\\ude02"') == "\U0001f602"


@pytest.mark.parametrize("value", ["\ud800", {"\udc00": 1}])
def test_canonicalize_rejects_lone_surrogate(value: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


@pytest.mark.parametrize("doc", [b"NaN", b"[Infinity]", b'{"x":-Infinity}'])
def test_non_json_constants_rejected(doc: bytes) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_loads(doc, allow_floats=True)


def test_float_overflow_rejected_even_when_floats_allowed() -> None:
    with pytest.raises(CanonicalizationError, match="overflows"):
        canonical_loads(b"1e400", allow_floats=True)


@pytest.mark.parametrize(
    "doc",
    [b"\xff\xfe{}", b'"\xed\xa0\x80"', b'"\xc3"', b"\xef\xbb\xbf{}"],
    ids=["utf16-bom", "encoded-surrogate", "truncated-utf8", "utf8-bom"],
)
def test_non_utf8_or_bom_rejected(doc: bytes) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_loads(doc)


@pytest.mark.parametrize("doc", [b"", b"{", b'{"a":1}x', b"[1,]", b"'a'", b'"\x01"'])
def test_invalid_json_rejected(doc: bytes) -> None:
    with pytest.raises(CanonicalizationError, match="invalid JSON"):
        canonical_loads(doc)


def test_deep_nesting_rejected() -> None:
    with pytest.raises(CanonicalizationError):
        canonical_loads(b"[" * 100_000 + b"]" * 100_000)


def test_require_canonical_rejects_whitespace() -> None:
    with pytest.raises(CanonicalizationError, match="canonical form"):
        canonical_loads(b'{"a": 1}', require_canonical=True)


def test_require_canonical_rejects_unsorted_keys() -> None:
    with pytest.raises(CanonicalizationError, match="canonical form"):
        canonical_loads(b'{"b":1,"a":2}', require_canonical=True)


def test_require_canonical_rejects_needless_escape() -> None:
    with pytest.raises(CanonicalizationError, match="canonical form"):
        canonical_loads(b'"\\u0041"', require_canonical=True)


def test_errors_are_attest_errors_with_diagnostic() -> None:
    with pytest.raises(AttestError) as info:
        canonical_loads(b"1.5")
    assert "not an integer" in info.value.diagnostic


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_bytes_are_a_fixed_point(value: object) -> None:
    data = canonicalize(value)
    assert canonical_loads(data, require_canonical=True) == value
    assert canonicalize(json.loads(data)) == data


@given(json_values)
def test_any_spelling_parses_to_the_same_canonical_bytes(value: object) -> None:
    loose = json.dumps(value, indent=2, ensure_ascii=True).encode()
    assert canonicalize(canonical_loads(loose)) == canonicalize(value)
