"""`parse_statement` and `admit_statement` against their references: the implementations before
the shortcuts, kept here.

The reference below is `attest.statement.parse_statement` as it was: `canonical_loads`, the
predicate validated alone, `Statement` (a union of predicate models) validated, and the payload
compared with `statement_bytes` (`rfc8785`). The current parse must give the same answer on every
input: an equal `Statement` (same class, fields, fields set, dump and pickle) or the same error
class with the same diagnostic. Inputs: canonical statements of every predicate type, and
mutations of them that each reach a different check.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from attest import statement as statement_module
from attest.admission import AdmissionRefused, admit_statement, check_seen
from attest.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    MAX_ENVELOPE_JSON_BYTES,
    Envelope,
    Signature,
    _plain_envelope,
    read_canonical,
    read_json,
    read_json_leaf,
)
from attest.errors import AttestError, CanonicalizationError, MalformedEnvelopeError, StatementError
from attest.jcs import canonical_equals, canonical_loads, canonicalize, dumps_bmp
from attest.predicates import PREDICATE_TYPES, FieldReport, Predicate
from attest.statement import Statement, _diagnostic, parse_statement, statement_bytes
from attest.tiles import MAX_ENTRY_SIZE

from .strategies import PREDICATES, text


def reference_parse(payload: bytes) -> Statement:
    """`parse_statement` before the shortcut, verbatim."""
    obj = canonical_loads(payload)
    if not isinstance(obj, dict):
        raise StatementError("statement is not a JSON object")
    predicate_type = obj.get("predicateType")
    if not isinstance(predicate_type, str) or predicate_type not in PREDICATE_TYPES:
        raise StatementError(f"unknown predicateType {str(predicate_type)[:200]!r}")
    predicate = obj.get("predicate")
    if isinstance(predicate, dict):
        try:
            PREDICATE_TYPES[predicate_type].model_validate_json(canonicalize(predicate))
        except ValidationError as exc:
            raise StatementError(_diagnostic(exc, prefix=("predicate",))) from exc
    try:
        stmt = Statement.model_validate_json(payload)
    except ValidationError as exc:
        raise StatementError(_diagnostic(exc)) from exc
    if statement_bytes(stmt) != payload:
        raise CanonicalizationError("statement payload is not in RFC 8785 canonical form")
    return stmt


def outcome(parse: Any, payload: bytes) -> tuple[str, Any]:
    try:
        stmt = parse(payload)
    except AttestError as exc:
        return "error", (type(exc), exc.diagnostic)
    return "statement", stmt


def assert_same(payload: bytes) -> tuple[str, Any]:
    """The current parse and the reference agree on `payload`; returns the reference's answer."""
    want = outcome(reference_parse, payload)
    got = outcome(parse_statement, payload)
    assert got[0] == want[0], (payload, got, want)
    if want[0] == "error":
        assert got[1] == want[1]
        return want
    new, old = got[1], want[1]
    assert type(new) is Statement and type(old) is Statement
    assert new == old
    assert new.model_fields_set == old.model_fields_set
    assert type(new.predicate) is type(old.predicate)
    assert new.model_dump() == old.model_dump()
    assert statement_bytes(new) == statement_bytes(old) == payload
    assert pickled_content(new) == pickled_content(old)
    if not isinstance(old.predicate, FieldReport):
        assert pickle.dumps(new) == pickle.dumps(old)
    assert pickle.loads(pickle.dumps(new)) == old
    return want


def pickled_content(value: Any) -> Any:
    """What a pickle of `value` holds, without which equal strings share one object: for a
    field report, the shortcut's strings come from `json`, the reference's from pydantic-core's
    string cache, which makes equal short strings one object (pickle then writes a reference
    where the other writes the string again). Every model's class, field values in field order,
    fields set (in iteration order), extra and private state are compared."""
    if isinstance(value, BaseModel):
        state = value.__getstate__()
        return (
            type(value),
            [(k, pickled_content(v)) for k, v in state["__dict__"].items()],
            list(state["__pydantic_fields_set__"]),
            state["__pydantic_extra__"],
            state["__pydantic_private__"],
        )
    if isinstance(value, (list, tuple)):
        return (type(value), [pickled_content(v) for v in value])
    if isinstance(value, dict):
        return (type(value), [(k, pickled_content(v)) for k, v in value.items()])
    return (type(value), value)


def statements() -> st.SearchStrategy[Statement]:
    return st.one_of(*(s.map(Statement.of) for s in PREDICATES.values()))  # type: ignore[arg-type]


def wire(stmt: Statement) -> dict[str, Any]:
    obj = json.loads(statement_bytes(stmt))
    assert isinstance(obj, dict)
    return obj


def spell(obj: Any, *, sort: bool = True, ascii_only: bool = False, spaces: bool = False) -> bytes:
    sep = (", ", ": ") if spaces else (",", ":")
    return json.dumps(obj, sort_keys=sort, separators=sep, ensure_ascii=ascii_only).encode()


def _paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `obj` (object keys and array indexes)."""
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*path, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: _set(obj[head], rest, value)}
    copy = list(obj)
    copy[head] = _set(obj[head], rest, value)
    return copy


VALUES = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 0, -1, True, False, None]),
    text,
    st.sampled_from(["\U0001f600", "\ue000", "é", "\x7f", "\x00", "a\nb", "", "0" * 64]),
    st.lists(st.integers(0, 5), max_size=2),
    st.dictionaries(st.sampled_from(["sha256", "a", "\U0001f600", "\ue000"]), text, max_size=2),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A statement's payload, changed in one of the ways a parse must notice (or not)."""
    stmt = draw(statements())
    obj = wire(stmt)
    kind = draw(
        st.sampled_from(
            [
                "canonical",
                "unsorted",
                "whitespace",
                "ascii-escaped",
                "replace-value",
                "drop-field",
                "add-field",
                "other-type",
                "other-predicate",
                "duplicate-key",
                "float",
                "big-int",
                "u-escape",
                "not-object",
            ]
        )
    )
    if kind == "canonical":
        return statement_bytes(stmt)
    if kind == "unsorted":
        items = list(obj.items())
        items.reverse()
        return spell(dict(items), sort=False)
    if kind == "whitespace":
        return spell(obj, spaces=True)
    if kind == "ascii-escaped":
        return spell(obj, ascii_only=True)
    if kind == "replace-value":
        path = draw(st.sampled_from(_paths(obj)[1:]))
        return spell(_set(obj, path, draw(VALUES)))
    if kind == "drop-field":
        path = draw(st.sampled_from([p for p in _paths(obj)[1:] if isinstance(p[-1], str)]))
        parent = obj
        for part in path[:-1]:
            parent = parent[part]
        trimmed = {k: v for k, v in parent.items() if k != path[-1]}
        return spell(_set(obj, path[:-1], trimmed))
    if kind == "add-field":
        dicts = [p for p in _paths(obj) if isinstance(_get(obj, p), dict)]
        path = draw(st.sampled_from(dicts))
        key = draw(st.sampled_from(["extra", "\U0001f600", "\ue000", "predicate_type", "tool"]))
        return spell(_set(obj, path, {**_get(obj, path), key: draw(VALUES)}))
    if kind == "other-type":
        uri = draw(st.sampled_from([*PREDICATE_TYPES, "https://example.com/x/v1", 7]))
        return spell({**obj, "predicateType": uri})
    if kind == "other-predicate":
        other = wire(draw(statements()))
        part = draw(st.sampled_from(["predicate", "subject"]))
        return spell({**obj, part: other[part]})
    if kind == "duplicate-key":
        body = statement_bytes(stmt)
        dup = draw(st.sampled_from([b'"_type"', b'"predicateType"', b'"predicate"']))
        value = draw(st.sampled_from([b'"x"', b"1", b"{}", b'"https://in-toto.io/Statement/v1"']))
        return body[:-1] + b"," + dup + b":" + value + b"}"
    if kind == "float":
        return statement_bytes(stmt).replace(b"}", b',"n":1.0}', 1)
    if kind == "big-int":
        return spell({**obj, "_type": draw(st.sampled_from([2**53, -(2**53), 10**30]))})
    if kind == "u-escape":
        body = statement_bytes(stmt)
        char = draw(st.sampled_from(["a", "o", "e", "p"]))
        return body.replace(char.encode(), b"\\u%04x" % ord(char), 1)
    return draw(
        st.sampled_from([b"[]", b"1", b'"s"', b"null", b"", b"{", b"\xff", b"\xef\xbb\xbf{}"])
    )


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


@pytest.mark.parametrize("cls", list(PREDICATES), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_statements_parse_as_the_reference_does(
    cls: type[Predicate], data: st.DataObject
) -> None:
    stmt = Statement.of(data.draw(PREDICATES[cls]))  # type: ignore[arg-type]
    kind, parsed = assert_same(statement_bytes(stmt))
    assert kind == "statement" and parsed == stmt


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=mutated())
def test_mutated_statements_get_the_reference_answer(payload: bytes) -> None:
    assert_same(payload)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=mutated())
def test_text_payloads_get_the_reference_answer(payload: bytes) -> None:
    """A payload passed as text (never signed bytes) is refused as before, never accepted."""
    try:
        text_payload = payload.decode()
    except UnicodeDecodeError:
        return
    want = outcome(reference_parse, text_payload)  # type: ignore[arg-type]
    assert want[0] == "error"
    assert outcome(parse_statement, text_payload) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", list(PREDICATES), ids=lambda c: c.__name__)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_statements_take_the_shortcut(cls: type[Predicate], data: st.DataObject) -> None:
    """A canonical payload without characters beyond the BMP is accepted without the plan (else
    there is no speed-up); those with one take the plan by design."""
    stmt = Statement.of(data.draw(PREDICATES[cls]))  # type: ignore[arg-type]
    payload = statement_bytes(stmt)
    proven = statement_module._parse_proven(payload)
    if re.search(rb"[\xf0-\xf7]", payload):
        assert proven is None
    else:
        assert proven == stmt and type(proven) is Statement


@given(data=st.data())
def test_statement_of_another_class_is_not_equal(data: st.DataObject) -> None:
    """Why the shortcut rebuilds a `Statement`: its per-type model is another class, and pydantic
    compares classes."""
    stmt = data.draw(statements())
    single = statement_module._SINGLE[stmt.predicate_type]
    assert single.model_validate_json(statement_bytes(stmt)) != stmt


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=["Cs"])), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES)
def test_dumps_bmp_is_rfc8785_without_astral_keys(value: Any) -> None:
    def keys(v: Any) -> list[str]:
        if isinstance(v, dict):
            return [*v, *(k for c in v.values() for k in keys(c))]
        if isinstance(v, list):
            return [k for c in v for k in keys(c)]
        return []

    if all(max(k, default="\0") < "\U00010000" for k in keys(value)):
        assert dumps_bmp(value) == rfc8785.dumps(value)


@settings(max_examples=400, deadline=None)
@given(
    value=JSON_VALUES | st.floats() | st.integers() | st.lists(st.floats() | st.integers()),
    data=JSON_VALUES,
)
def test_canonical_equals_is_rfc8785_comparison(value: Any, data: Any) -> None:
    """Same answer as comparing with `rfc8785`, for `data` that holds no float: on `data`'s own
    value (always equal) and on another value (floats, big integers, astral keys included)."""
    payload = rfc8785.dumps(data)
    assert canonical_equals(data, payload)
    try:
        want: Any = rfc8785.dumps(value) == payload
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        want = type(exc)
    try:
        got: Any = canonical_equals(value, payload)
    except CanonicalizationError as exc:
        got = type(exc.__cause__)
    assert got == want


@pytest.mark.parametrize(
    ("value", "payload"),
    [
        ({"\U0001f600": 1, "\ue000": 2}, '{"\U0001f600":1,"\ue000":2}'.encode()),
        ({"\U0001f600": 1, "\ue000": 2}, '{"\ue000":2,"\U0001f600":1}'.encode()),
        ({"a": 1.0}, b'{"a":1}'),
        ({"a": 1}, b'{"a":1}'),
        ([2**53], b"[9007199254740991]"),
        ([2**53 - 1], b"[9007199254740991]"),
    ],
)
def test_canonical_equals_edge_cases(value: Any, payload: bytes) -> None:
    try:
        want: Any = rfc8785.dumps(value) == payload
    except rfc8785.CanonicalizationError:
        want = CanonicalizationError
    try:
        got: Any = canonical_equals(value, payload)
    except CanonicalizationError:
        got = CanonicalizationError
    assert got == want


# -- envelopes: `read_canonical` and the admission steps around the parse -------------------------


def reference_admit(data: bytes, origin: str, *, stored: bool) -> tuple[Envelope, bytes, Statement]:
    """`attest.admission.admit_statement(data, origin, None, stored=stored)` before: the envelope
    read by `Envelope.from_json`, canonicalised by `rfc8785` (twice for a stored entry), the old
    parse; errors worded as the admission rules word them."""
    try:
        env = Envelope.from_json(data)
    except AttestError as e:
        raise AdmissionRefused("envelope", e.diagnostic, reason="malformed") from e

    def leaf_of(env: Envelope) -> bytes:
        leaf = canonicalize(env.to_json())  # never fails: Envelope refuses lone surrogates
        if len(leaf) > MAX_ENTRY_SIZE:
            raise AdmissionRefused(
                "envelope",
                f"canonical entry is {len(leaf)} bytes; entries are at most {MAX_ENTRY_SIZE}",
                reason="too-large",
            )
        return leaf

    if stored and leaf_of(env) != data:
        raise AdmissionRefused(
            "envelope", "entry is not the canonical bytes of its envelope", reason="not-canonical"
        )
    leaf = leaf_of(env)
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise AdmissionRefused(
            "statement", f"payloadType must be {IN_TOTO_PAYLOAD_TYPE!r}", reason="payload-type"
        )
    try:
        stmt = reference_parse(env.payload)
    except AttestError as e:
        raise AdmissionRefused("statement", e.diagnostic, reason="invalid") from e
    check_seen(stmt, origin, None)
    return env, leaf, stmt


def admit_outcome(fn: Any, data: bytes, origin: str, stored: bool) -> tuple[str, Any]:
    try:
        return "admitted", fn(data, origin, stored=stored)
    except AdmissionRefused as e:
        return "refused", (e.stage, e.reason, e.diagnostic)


def _admit_new(data: bytes, origin: str, *, stored: bool) -> tuple[Envelope, bytes, Statement]:
    return admit_statement(data, origin, None, stored=stored)


def b64(raw: bytes, *, urlsafe: bool = False, pad: bool = True) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if pad else text.rstrip("=")


@st.composite
def envelope_bytes(draw: st.DrawFn) -> tuple[bytes, str]:
    """An envelope of a statement (or of other bytes), in a spelling that may not be canonical,
    and the origin to check its statement against."""
    stmt = draw(statements())
    payload = statement_bytes(stmt)
    payload = draw(st.sampled_from([payload, payload, b" " + payload, b"not json", b""]))
    payload_type = draw(st.sampled_from([IN_TOTO_PAYLOAD_TYPE] * 3 + ["text/plain", ""]))
    count = draw(st.sampled_from([1, 1, 1, 2, 3, 0]))
    sigs: list[dict[str, Any]] = []
    urlsafe = draw(st.booleans()) and draw(st.booleans())
    pad = not (draw(st.booleans()) and draw(st.booleans()))
    for _ in range(count):
        empty = draw(st.sampled_from([False] * 9 + [True]))
        raw = b"" if empty else draw(st.binary(min_size=1, max_size=70))
        sig: dict[str, Any] = {"sig": b64(raw, urlsafe=urlsafe, pad=pad)}
        keyid = draw(st.sampled_from([None, "", "k", "lab+01234567", "\U0001f600", "\ue000"]))
        if keyid is not None:
            sig["keyid"] = keyid
        sigs.append(sig)
    obj: dict[str, Any] = {
        "payload": b64(payload, urlsafe=urlsafe, pad=pad),
        "payloadType": payload_type,
        "signatures": sigs,
    }
    kind = draw(st.sampled_from(["canonical"] * 4 + ["unsorted", "spaces", "extra", "dup", "num"]))
    if kind == "extra":
        obj["extra"] = "x"
    if kind == "num":
        obj["payloadType"] = draw(st.sampled_from([1, 1.5, None, True]))
    body = spell(obj, sort=kind != "unsorted", spaces=kind == "spaces")
    if kind == "unsorted":
        body = spell(dict(reversed(list(obj.items()))), sort=False)
    if kind == "dup":
        body = body[:-1] + b',"payloadType":"x"}'
    origin = stmt.predicate.seen_checkpoint.origin
    origin = draw(st.sampled_from([origin, origin, origin, "other.example/log"]))
    return body, origin


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=envelope_bytes(), stored=st.booleans())
def test_admit_statement_answers_as_before(case: tuple[bytes, str], stored: bool) -> None:
    data, origin = case
    want = admit_outcome(reference_admit, data, origin, stored)
    got = admit_outcome(_admit_new, data, origin, stored)
    assert got == want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=envelope_bytes())
def test_read_canonical_is_from_json_on_canonical_bytes_only(case: tuple[bytes, str]) -> None:
    data = case[0]
    got = read_canonical(data)
    try:
        want: Envelope | None = Envelope.from_json(data)
    except AttestError:
        want = None
    if want is not None and want.canonical_bytes() == data:
        assert got == want
    else:
        assert got is None


@st.composite
def json_spellings(draw: st.DrawFn) -> bytes:
    """An envelope (or near-envelope) as some `json.dumps` configuration writes it, maybe with
    one of the differences `read_json` must leave to `Envelope.from_json`."""
    data, _ = draw(envelope_bytes())
    try:
        obj: Any = json.loads(data)
    except ValueError:
        return data  # a duplicate-key or other spelling envelope_bytes made: as it is
    if isinstance(obj, dict) and draw(st.booleans()):
        obj = dict(reversed(list(obj.items())))  # other key orders
    if isinstance(obj, dict) and isinstance(obj.get("signatures"), list) and draw(st.booleans()):
        obj["signatures"] = [
            dict(reversed(list(s.items()))) if isinstance(s, dict) else s for s in obj["signatures"]
        ]
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", ": "), (", ", ":")]))
    text = json.dumps(obj, separators=sep, ensure_ascii=draw(st.booleans()))
    mutation = draw(
        st.sampled_from(["none"] * 6 + ["space", "dup", "escape", "lone", "keyid", "bits"])
    )
    if mutation == "space":
        text = text.replace(":", " :", 1)
    elif mutation == "dup" and text.endswith("}"):
        text = text[:-1] + sep[0] + '"payloadType"' + sep[1] + '"x"}'
    elif mutation == "escape":
        text = text.replace("A", "\\u0041", 1)
    elif mutation == "lone" and '"keyid"' in text:
        text = re.sub(r'("keyid": ?)"', lambda m: m.group(1) + '"\\ud800', text, count=1)
    elif mutation == "bits":  # stray bits in a base64 string's last character
        text = re.sub(r'([A-Za-z0-9+/])(=+)"', lambda m: _bump(m.group(1)) + m.group(2) + '"', text)
    elif mutation == "keyid":
        text = text.replace('{"sig"', '{"keyid":"","sig"', 1)
    return text.encode("utf-8", "surrogatepass")


def _bump(c: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return alphabet[(alphabet.index(c) + 1) % 64]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_spellings())
def test_read_json_is_from_json_or_declines(data: bytes) -> None:
    """`read_json` answers as `Envelope.from_json` does, or declines (None) and leaves the
    answer to it; it takes every `json.dumps` spelling of a valid envelope's `to_json()`."""
    got = read_json(data)
    try:
        want: Envelope | None = Envelope.from_json(data)
    except AttestError:
        want = None
    if got is not None:
        assert got == want
    if want is None:
        return
    obj = json.loads(data)
    as_json = any(
        data == json.dumps(obj, separators=sep, ensure_ascii=asc).encode()
        for sep in ((",", ":"), (", ", ": "))
        for asc in (True, False)
    )
    if obj == want.to_json() and as_json:
        assert got == want


def reference_read_json(data: bytes) -> Envelope | None:
    """`attest.dsse.read_json` before `read_json_leaf`, verbatim: the spelling compared with
    what `json.dumps` writes."""
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
        colon = text.index('"', 2) + 1
        sep = ((",", ":"), (", ", ": "))[text[colon : colon + 2] == ": "]
        same = json.dumps(obj, separators=sep, ensure_ascii=data.isascii()) == text
    except (ValueError, RecursionError, MalformedEnvelopeError):
        return None
    return env if same else None


def _read_json_agrees(data: bytes) -> None:
    """`read_json_leaf` answers as the reference does, with the envelope's RFC 8785 bytes."""
    want = reference_read_json(data)
    got = read_json_leaf(data)
    assert read_json(data) == want
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got[0] == want
    assert got[1] == rfc8785.dumps(want.to_json()) == want.canonical_bytes()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_spellings())
def test_read_json_leaf_answers_as_the_reference(data: bytes) -> None:
    _read_json_agrees(data)


STRINGS = st.sampled_from(
    ["", "k", 'a"b', "a\\b", "a/b", "\x00", "\x1f", "\x7f", "é", "\u2028", "\ue000",
     "\U0001f600", "\ud800", "lab+01234567"]
) | st.text(max_size=12)  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keyids=st.lists(STRINGS, min_size=1, max_size=3),
    payload_type=STRINGS,
    payload=st.binary(max_size=40),
    sep=st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")]),
    ensure_ascii=st.booleans(),
    flip=st.booleans(),
)
def test_read_json_leaf_on_every_spelling_of_an_envelope(
    keyids: list[str],
    payload_type: str,
    payload: bytes,
    sep: tuple[str, str],
    ensure_ascii: bool,
    flip: bool,
) -> None:
    """Envelopes with strings that every escaping touches (quotes, backslashes, control,
    non-ASCII, beyond the BMP, lone surrogates), in each `json.dumps` spelling and key order."""
    obj: dict[str, Any] = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [
            {"sig": base64.b64encode(bytes([n + 1]) * 64).decode(), **({"keyid": k} if k else {})}
            for n, k in enumerate(keyids)
        ],
    }
    if flip:
        obj = dict(reversed(list(obj.items())))
        obj["signatures"] = [dict(reversed(list(s.items()))) for s in obj["signatures"]]
    data = json.dumps(obj, separators=sep, ensure_ascii=ensure_ascii)
    _read_json_agrees(data.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(
    keyids=st.lists(STRINGS, min_size=1, max_size=3),
    payload_type=STRINGS,
    payload=st.binary(max_size=40),
)
def test_envelope_canonical_bytes_is_rfc8785(
    keyids: list[str], payload_type: str, payload: bytes
) -> None:
    try:
        sigs = tuple(Signature(k, bytes([n + 1]) * 64) for n, k in enumerate(keyids))
        env = Envelope(payload_type, payload, sigs)
    except AttestError:
        return  # a lone surrogate: no envelope
    assert env.canonical_bytes() == rfc8785.dumps(env.to_json())


# -- the field-report shortcut (`_parse_field_report`) ------------------------------------------

REPORT_PATHS = [
    ("predicate", "category"),
    ("predicate", "tier"),
    ("predicate", "text"),
    ("predicate", "credentialTier"),
    ("predicate", "issuedAt"),
    ("predicate", "model", "name"),
    ("predicate", "model", "version"),
    ("predicate", "seenCheckpoint", "origin"),
    ("predicate", "seenCheckpoint", "size"),
    ("predicate", "seenCheckpoint", "root"),
]
REPORT_VALUES = st.sampled_from(
    [
        *["", "a", "A", "0", "a" * 64, "a" * 65, "a" * 256, "a" * 257, "x" * 8192, "x" * 8193],
        *["\x00", "\x1f", "\x7f", "\x80", "a\n", "é", "\ue000", "\U0001f600"],
        *[".a", "-a", "a.b_c-d"],
        *["anonymous", "attested", "0" * 64, "f" * 64, "F" * 64, "0" * 63, "g" * 64],
        *[0, -1, 1, 2**53 - 1, 2**53, True, False, None, [], {}, ["a"], {"a": "b"}],
    ]
)


def _with_subject(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with the subject its (mutated) predicate derives, where one can be derived, so
    that the mutation itself is what a parse has to notice."""
    pred = obj.get("predicate")
    model = pred.get("model") if isinstance(pred, dict) else None
    text_ = pred.get("text") if isinstance(pred, dict) else None
    if not isinstance(model, dict) or not isinstance(text_, str):
        return obj
    try:
        digest = statement_module.sha256_hex(text_.encode("utf-8"))
    except UnicodeEncodeError:
        return obj
    return {**obj, "subject": [{"digest": {"sha256": digest}, "name": model.get("name")}]}


@st.composite
def mutated_reports(draw: st.DrawFn) -> bytes:
    """A field report's canonical payload with one or two fields set to edge values (or a key
    renamed to its Python name, or credentialTier added or dropped), subject re-derived."""
    obj = wire(Statement.of(draw(PREDICATES[FieldReport])))
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["value", "value", "value", "rename", "drop-tier"]))
        pred = obj["predicate"]
        if kind == "rename":
            old, new = draw(
                st.sampled_from(
                    [
                        ("credentialTier", "credential_tier"),
                        ("issuedAt", "issued_at"),
                        ("seenCheckpoint", "seen_checkpoint"),
                    ]
                )
            )
            if old in pred:
                pred = {(new if k == old else k): v for k, v in pred.items()}
        elif kind == "drop-tier":
            pred = {k: v for k, v in pred.items() if k != "credentialTier"}
        obj = {**obj, "predicate": pred}
        if kind == "value":
            path = draw(st.sampled_from(REPORT_PATHS))
            if path[1] in obj["predicate"] or len(path) == 2:
                obj = _set_or_add(obj, path, draw(REPORT_VALUES))
    obj = _with_subject(obj)
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        return spell(obj)


def _set_or_add(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if len(path) == 1:
        return {**obj, path[0]: value}
    return {**obj, path[0]: _set_or_add(obj[path[0]], path[1:], value)}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=mutated_reports())
def test_mutated_field_reports_get_the_reference_answer(payload: bytes) -> None:
    assert_same(payload)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(report=PREDICATES[FieldReport])
def test_field_reports_take_the_hand_written_shortcut(report: Any) -> None:
    """A canonical field report without characters beyond the BMP is accepted by
    `_parse_field_report` (else there is no speed-up), as the reference accepts it."""
    stmt = Statement.of(report)
    payload = statement_bytes(stmt)
    got = statement_module._parse_field_report(payload)
    if re.search(rb"[\xf0-\xf7]", payload):
        assert got is None
    else:
        assert got is not None and got == stmt
        assert pickled_content(got) == pickled_content(reference_parse(payload))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("predicate", "text"), "x" * 8193),
        (("predicate", "category"), "A"),
        (("predicate", "model", "name"), "a\x7f"),
        (("predicate", "seenCheckpoint", "size"), True),
        (("predicate", "issuedAt"), 2**53),
        (("predicate", "seenCheckpoint", "root"), "F" * 64),
        (("predicate", "credentialTier"), "nurse"),
    ],
)
def test_field_report_edges_are_refused_as_the_reference_refuses(
    path: tuple[str, ...], value: Any
) -> None:
    """One edge of each constraint, explicitly (the anonymous example gets a credentialTier)."""
    report = FieldReport.model_validate(
        {
            "seenCheckpoint": {"origin": "log", "size": 1, "root": "0" * 64},
            "issuedAt": 1,
            "model": {"name": "m", "version": "1"},
            "category": "c",
            "tier": "anonymous",
            "text": "t",
        }
    )
    obj = _with_subject(_set_or_add(wire(Statement.of(report)), path, value))
    payload = spell(obj)  # canonical for these ASCII values (rfc8785 refuses 2**53 itself)
    assert statement_module._parse_field_report(payload) is None
    kind, _ = assert_same(payload)
    assert kind == "error"


@pytest.mark.parametrize(
    "text_",
    [
        'say "no"',
        "back\\slash",
        "line\nbreak\ttab\r\x08\x0c",
        "\x00\x01\x1f\x7f",
        "é\u2028\ue000",
        "/",
    ],
)
def test_field_reports_with_escapes_take_the_hand_written_shortcut(text_: str) -> None:
    """The shortcut writes strings as `json` does (`_report_bytes`): every escape a canonical
    payload can hold is accepted, not sent on to the slower parses."""
    report = FieldReport.model_validate(
        {
            "seenCheckpoint": {"origin": f"o{text_[:1]}é", "size": 7, "root": "0" * 64},
            "issuedAt": 1,
            "model": {"name": f"m {text_[-1:]}", "version": "1"},
            "category": "c",
            "tier": "attested",
            "credentialTier": "nurse",
            "text": text_,
        }
        if text_[:1] >= " " and text_[-1:] >= " " and text_[-1:] != "\x7f"
        else {
            "seenCheckpoint": {"origin": "o", "size": 7, "root": "0" * 64},
            "issuedAt": 1,
            "model": {"name": "m", "version": "1"},
            "category": "c",
            "tier": "anonymous",
            "text": text_,
        }
    )
    stmt = Statement.of(report)
    payload = statement_bytes(stmt)
    got = statement_module._parse_field_report(payload)
    assert got == stmt == reference_parse(payload)
