"""in-toto Statement v1 (in-toto/attestation spec/v1/statement.md) as a strict wire model.

Decisions a caller must know:

* **Canonical payloads only.** A signed payload is exactly `statement_bytes(stmt)`: RFC 8785 JSON,
  no floats, no nulls (an unset optional field is omitted). `parse_statement` rejects any other
  spelling of the same statement, so one statement has one byte string, hence one signature input.
* **Unknown fields are rejected**, in the statement and in every predicate. in-toto's parsing rules
  tell consumers to ignore unrecognized fields; a log that re-verifies entries byte for byte must
  not accept content it cannot interpret, so this project's predicates opt out of that rule.
* **Subjects are derived from the predicate** (`Predicate.subjects()`); build statements with
  `Statement.of(predicate)`.
* Envelopes carrying statements use payloadType `application/vnd.in-toto+json`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal, NamedTuple, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, ValidationError, create_model, model_validator

from attest._wire import WireModel, sha256_hex
from attest.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    TrustedKey,
    sign_envelope,
    verify_envelope,
)
from attest.errors import CanonicalizationError, StatementError
from attest.jcs import (
    MAX_SAFE_INTEGER,
    canonical_equals,
    canonical_loads,
    canonicalize,
    dumps_bmp,
)
from attest.predicates import (
    ANONYMOUS_TIER,
    FIELD_REPORT,
    PREDICATE_TYPES,
    AnyPredicate,
    CheckpointRef,
    FieldReport,
    ModelId,
    Predicate,
    ResourceDescriptor,
)

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "ResourceDescriptor",
    "Statement",
    "parse_statement",
    "statement_bytes",
    "verify_statement",
]

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
"""The `_type` of every in-toto v1 Statement."""


class Statement(WireModel):
    """An in-toto v1 Statement whose predicate is one of this project's predicate types.

    Validated when constructed: `predicate_type` must be the predicate's URI and `subject` must be
    what the predicate derives (`predicate.subjects()`).
    """

    type_: Literal["https://in-toto.io/Statement/v1"] = Field(default=STATEMENT_TYPE, alias="_type")
    subject: Annotated[tuple[ResourceDescriptor, ...], Field(min_length=1, max_length=16)]
    predicate_type: str
    predicate: AnyPredicate

    @model_validator(mode="after")
    def _consistent(self) -> Statement:
        if self.predicate_type != self.predicate.PREDICATE_TYPE:
            raise ValueError(
                f"predicateType {self.predicate_type!r} does not match the predicate, "
                f"want {self.predicate.PREDICATE_TYPE!r}"
            )
        if self.subject != self.predicate.subjects():
            raise ValueError("subject is not the one the predicate derives")
        return self

    @classmethod
    def of(cls, predicate: AnyPredicate) -> Statement:
        """The statement about `predicate`, with its type URI and derived subjects."""
        return cls(
            subject=predicate.subjects(),
            predicate_type=predicate.PREDICATE_TYPE,
            predicate=predicate,
        )


def statement_bytes(stmt: Statement) -> bytes:
    """The RFC 8785 bytes of `stmt`: what goes, as is, into a DSSE envelope's payload."""
    return canonicalize(stmt.model_dump(mode="json", by_alias=True, exclude_none=True))


def parse_statement(payload: bytes) -> Statement:
    """Parse a signed payload into a Statement.

    Plan:
    1. read strict I-JSON: no floats, duplicate keys, big integers (CanonicalizationError);
    2. look up predicateType among this project's types (StatementError if unknown);
    3. validate the predicate as that type, then the statement around it (StatementError);
    4. require that `payload` is exactly `statement_bytes` of the result (CanonicalizationError).

    Payloads this plan accepts almost always take a shortcut (`_parse_proven`) that accepts only
    what the plan accepts and returns what it returns, at a fraction of the cost; anything else,
    every refusal included, runs the plan itself, so errors are the plan's.
    """
    if not isinstance(payload, bytes):
        return _parse_planned(payload)
    stmt = _parse_field_report(payload)
    if stmt is None:
        stmt = _parse_proven(payload)
    return stmt if stmt is not None else _parse_planned(payload)


def _parse_planned(payload: bytes) -> Statement:
    """`parse_statement`'s plan, step by step."""
    obj = canonical_loads(payload)  # (1)
    if not isinstance(obj, dict):
        raise StatementError("statement is not a JSON object")
    predicate_type = obj.get("predicateType")  # (2)
    if not isinstance(predicate_type, str) or predicate_type not in PREDICATE_TYPES:
        raise StatementError(f"unknown predicateType {str(predicate_type)[:200]!r}")
    predicate = obj.get("predicate")  # (3)
    if isinstance(predicate, dict):
        # Validated alone first so that errors name this type's fields, not every union member's.
        try:
            PREDICATE_TYPES[predicate_type].model_validate_json(canonicalize(predicate))
        except ValidationError as exc:
            raise StatementError(_diagnostic(exc, prefix=("predicate",))) from exc
    try:
        stmt = Statement.model_validate_json(payload)
    except ValidationError as exc:
        raise StatementError(_diagnostic(exc)) from exc
    dumped = stmt.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not (  # (4): `statement_bytes(stmt) == payload`
        canonical_equals(dumped, payload)
        if isinstance(payload, bytes)
        else canonicalize(dumped) == payload
    ):
        raise CanonicalizationError("statement payload is not in RFC 8785 canonical form")
    return stmt


# -- the shortcut -------------------------------------------------------------------------------
#
# The plan's cost is in three places: `canonical_loads` and `canonicalize` (pure Python), and
# validating `Statement`, whose predicate is a union of every predicate model (pydantic tries
# each). `_parse_proven` reads the payload with the C `json` parser, validates the statement
# once with its predicate as the one model predicateType names (`_SINGLE`), and compares the
# payload with the statement's RFC 8785 bytes as `json` writes them (`canonical_equals`).


class _Unproven(Exception):
    """The shortcut cannot prove the plan's answer (the plan decides)."""


def _int(token: str) -> int:
    number = int(token)
    if abs(number) > MAX_SAFE_INTEGER:
        raise _Unproven
    return number


def _no_number(token: str) -> float:
    raise _Unproven


# Floats and NaN / Infinity refused, integers within ±(2**53 - 1); duplicate keys are let
# through (the last one wins) and caught by the byte comparison, as are lone surrogates.
_DECODER: Final = json.JSONDecoder(
    parse_float=_no_number, parse_int=_int, parse_constant=_no_number
)

# The first byte of a 4-byte UTF-8 sequence: a character beyond the BMP, where RFC 8785's key
# order (UTF-16 code units) can differ from `json`'s (code points); such payloads take the plan.
_ASTRAL = re.compile(rb"[\xf0-\xf7]")


def _single(model: type[Predicate]) -> type[Statement]:
    """`Statement` with `model` as its only predicate model (same fields and validators)."""
    return create_model(f"_Statement{model.__name__}", __base__=Statement, predicate=(model, ...))


_SINGLE: Final = {pt: _single(model) for pt, model in PREDICATE_TYPES.items()}


def _shape(model: type[Predicate]) -> tuple[frozenset[str], tuple[tuple[str, str], ...]] | None:
    """The keys `model` accepts (field names and aliases) and its required fields (name,
    alias); None when that is not all it takes (unknown keys allowed, alias choices or paths)."""
    if model.model_config.get("extra") != "forbid":
        return None
    aliases: dict[str, str] = {}
    for name, f in model.model_fields.items():
        alias = f.validation_alias or f.alias or name
        if not isinstance(alias, str):
            return None
        aliases[name] = alias
    required = tuple((n, aliases[n]) for n, f in model.model_fields.items() if f.is_required())
    return frozenset(aliases) | frozenset(aliases.values()), required


_SHAPES: Final = {model: _shape(model) for model in PREDICATE_TYPES.values()}

# `_only`'s answers by (model, keys); bounded, so odd key sets cannot grow it without limit.
_ONLY: dict[tuple[type[Predicate], frozenset[str]], bool] = {}
_ONLY_MAX: Final = 4096


def _only(model: type[Predicate], keys: frozenset[str]) -> bool:
    """Whether no predicate model but `model` can validate an object with these keys: each
    other one refuses a key it does not know (`extra="forbid"`) or misses a required field
    (validators run after those checks, and can only refuse)."""
    answer = _ONLY.get((model, keys))
    if answer is None:
        answer = True
        for other, shape in _SHAPES.items():
            if other is model:
                continue
            if shape is None:
                answer = False
                break
            accepted, required = shape
            if keys <= accepted and all(n in keys or a in keys for n, a in required):
                answer = False
                break
        if len(_ONLY) < _ONLY_MAX:
            _ONLY[(model, keys)] = answer
    return answer


def _parse_proven(payload: bytes) -> Statement | None:
    """The statement `_parse_planned(payload)` returns, when this can prove that it accepts
    `payload`; None otherwise.

    Why the answer is the plan's, given `statement` below validates and its RFC 8785 bytes are
    the payload:
    * (1) the payload is its own canonical JSON, so strict I-JSON: `_DECODER` refused floats and
      big integers, and a duplicate key, a lone surrogate, whitespace or a needless escape does
      not survive the round trip;
    * (2) predicateType is one of this project's (looked up below);
    * (3) validating `_SINGLE[predicateType]` validates the predicate as that model on the JSON
      value the plan validates it alone on (the payload's, once canonical), then the statement's
      other fields and `Statement._consistent`. When no other predicate model could validate
      the predicate's keys (`_only`), `Statement`'s union has one member that can succeed, so
      the plan's union validation yields the same predicate; otherwise the plan decides;
    * (4) is the comparison itself (`attest.jcs.canonical_equals`'s argument: (1) gives its
      premises, and the payload has no character beyond the BMP).
    The result is a `Statement` (not the `_SINGLE` subclass) with the same fields, and the same
    fields set: all four, as a canonical payload carries every field `statement_bytes` writes.
    """
    if not payload.isascii() and _ASTRAL.search(payload):
        return None
    try:
        obj = _DECODER.decode(payload.decode("utf-8"))
    except (ValueError, _Unproven, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(obj, dict):
        return None
    predicate_type, predicate = obj.get("predicateType"), obj.get("predicate")
    if not isinstance(predicate_type, str) or not isinstance(predicate, dict):
        return None
    single = _SINGLE.get(predicate_type)
    if single is None or not _only(PREDICATE_TYPES[predicate_type], frozenset(predicate)):
        return None
    try:
        checked = single.model_validate_json(payload)
    except ValidationError:
        return None
    stmt = Statement.model_construct(
        _fields_set=set(checked.model_fields_set), **dict(checked.__dict__)
    )
    try:
        # `canonical_equals` without its fallback: the payload has no character beyond the BMP.
        same = dumps_bmp(stmt.model_dump(mode="json", by_alias=True, exclude_none=True)) == payload
    except (ValueError, TypeError, RecursionError):
        return None
    return stmt if same else None


# -- the field-report shortcut --------------------------------------------------------------------
#
# Field reports are what most writers post, and `_parse_proven` spends most of its time in
# pydantic validating them. `_parse_field_report` checks a field report's statement by hand,
# field by field with the constraints of `FieldReport`, `ModelId`, `CheckpointRef` and
# `Statement` (`attest._wire`'s `Label`, `Token`, `Count`, `Sha256Hex`; `ReportText`), then builds
# the models without validating them again (`_built`). It answers only when every field is
# spelled as `statement_bytes` spells it; anything else goes on to `_parse_proven` and the plan.
# The property tests hold it to the plan (tests/attest/test_statement_shortcut.py).

_LABEL: Final = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_TOKEN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_REPORT_TEXT_MAX: Final = 8192
_STATEMENT_KEYS: Final = frozenset({"_type", "subject", "predicateType", "predicate"})
_REPORT_KEYS: Final = frozenset(
    {"seenCheckpoint", "issuedAt", "model", "category", "tier", "text", "credentialTier"}
)
_REPORT_REQUIRED: Final = _REPORT_KEYS - {"credentialTier"}
_CHECKPOINT_KEYS: Final = frozenset({"origin", "size", "root"})
_MODEL_KEYS: Final = frozenset({"name", "version"})


def _built(cls: type[WireModel], values: dict[str, object], fields_set: set[str]) -> WireModel:
    """An instance of `cls` with these field values (in field order, defaults included) and
    this fields set: what validation builds, without validating (the caller has checked).

    Validation adds the fields set's names in field order, so callers build it from a tuple in
    that order (a set display of constants is a frozenset in the bytecode, whose order is the
    compiling process's), and the set iterates, and pickles, as validation's does."""
    m = cls.__new__(cls)
    object.__setattr__(m, "__dict__", values)
    object.__setattr__(m, "__pydantic_fields_set__", fields_set)
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


def _label(value: object) -> bool:
    return type(value) is str and _LABEL.fullmatch(value) is not None


def _token(value: object) -> bool:
    return type(value) is str and _TOKEN.fullmatch(value) is not None


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_SAFE_INTEGER


class FieldReportSeen(NamedTuple):
    """What admission reads of a field report's statement it does not keep (`read_field_report`):
    its seen checkpoint (origin, size, root) and issuedAt, as the parsed statement holds them."""

    origin: str
    size: int
    root: str
    issued_at: int


def read_field_report(payload: bytes) -> FieldReportSeen | None:
    """`parse_statement(payload)`'s seen checkpoint and issuedAt, when that statement is a field
    report that `parse_statement` would build by its field-report shortcut (the same checks,
    `_checked_field_report`), without building it; None otherwise (the caller parses).

    A log keeps nothing else of a field report once admitted: its phase 2 reads only its type
    (`ledger.admission.type_only`), so an admission worker need not build the models."""
    checked = _checked_field_report(payload)
    if checked is None:
        return None
    pred, _, seen, _ = checked
    return FieldReportSeen(seen["origin"], seen["size"], seen["root"], pred["issuedAt"])


_Checked = tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[Any]]
"""A field report's statement as `_DECODER` read it, checked: predicate, model, seenCheckpoint,
subject."""


def _parse_field_report(payload: bytes) -> Statement | None:
    """The statement `_parse_planned(payload)` returns for a field report, when this proves
    that the plan accepts `payload`; None otherwise (the caller goes on as if this did not
    exist).

    Why the answer is the plan's: the payload has no character beyond the BMP and is, byte for
    byte, `json`'s RFC 8785 spelling of what `_DECODER` read from it (floats refused, integers
    in range), so it is canonical I-JSON (steps 1 and 4, as in `_parse_proven`). Every key is
    the wire name `statement_bytes` writes, no other key is present, and every value has the
    type and constraint of its field (strict: a bool is not an integer), so validating it as
    `FieldReport` succeeds (step 3), and so does `Statement` around it: `_type` is the
    statement type, predicateType is the field report's, the subject is the one the predicate
    derives, and no other predicate model could take these keys (`_only`). The models built
    hold what validation would put in them: the same values, defaults for absent optional
    fields, and the fields set of the keys present.
    """
    checked = _checked_field_report(payload)
    if checked is None:
        return None
    pred, model, seen, subject = checked
    credential_tier = pred.get("credentialTier")
    category, tier, text = pred["category"], pred["tier"], pred["text"]
    report = _built(
        FieldReport,
        {
            "seen_checkpoint": _built(
                CheckpointRef,
                {"origin": seen["origin"], "size": seen["size"], "root": seen["root"]},
                set(("origin", "size", "root")),
            ),
            "issued_at": pred["issuedAt"],
            "model": _built(
                ModelId,
                {"name": model["name"], "version": model["version"]},
                set(("name", "version")),
            ),
            "category": category,
            "tier": tier,
            "text": text,
            "credential_tier": credential_tier,
        },
        set(_REPORT_FIELDS_SET[credential_tier is not None]),
    )
    # The subject's own values (equal to the derived ones), as validation keeps them.
    descriptor = _built(
        ResourceDescriptor,
        {"name": subject[0]["name"], "digest": dict(subject[0]["digest"])},
        set(("name", "digest")),
    )
    return cast(
        Statement,
        _built(
            Statement,
            {
                "type_": STATEMENT_TYPE,
                "subject": (descriptor,),
                "predicate_type": FIELD_REPORT,
                "predicate": report,
            },
            set(("type_", "subject", "predicate_type", "predicate")),
        ),
    )


def _checked_field_report(payload: bytes) -> _Checked | None:
    """`_parse_field_report`'s checks of `payload` (see there): the values it builds the
    statement from when every check passes, None otherwise."""
    if not payload.isascii() and _ASTRAL.search(payload):
        return None
    try:
        obj = _DECODER.decode(payload.decode("utf-8"))
    except (ValueError, _Unproven, RecursionError):
        return None
    if type(obj) is not dict or obj.keys() != _STATEMENT_KEYS:
        return None
    pred, subject = obj["predicate"], obj["subject"]
    if (
        obj["_type"] != STATEMENT_TYPE
        or obj["predicateType"] != FIELD_REPORT
        or type(pred) is not dict
        or type(subject) is not list
        or len(subject) != 1
    ):
        return None
    keys = pred.keys()
    if not (_REPORT_REQUIRED <= keys <= _REPORT_KEYS) or not _only(FieldReport, frozenset(keys)):
        return None
    seen, model = pred["seenCheckpoint"], pred["model"]
    tier, text, category = pred["tier"], pred["text"], pred["category"]
    credential_tier = pred.get("credentialTier")
    if not (
        type(seen) is dict
        and seen.keys() == _CHECKPOINT_KEYS
        and _label(seen["origin"])
        and _count(seen["size"])
        and type(seen["root"]) is str
        and _SHA256_HEX.fullmatch(seen["root"])
        and _count(pred["issuedAt"])
        and type(model) is dict
        and model.keys() == _MODEL_KEYS
        and _label(model["name"])
        and _label(model["version"])
        and _token(category)
        and type(tier) is str
        and tier in ("anonymous", "attested")
        and type(text) is str
        and 1 <= len(text) <= _REPORT_TEXT_MAX
    ):
        return None
    if "credentialTier" in keys:  # (FieldReport._attested_names_its_tier)
        if tier != "attested" or not _token(credential_tier) or credential_tier == ANONYMOUS_TIER:
            return None
    elif tier == "attested":
        return None
    try:
        digest = sha256_hex(text.encode("utf-8"))
        if subject != [{"name": model["name"], "digest": {"sha256": digest}}]:
            return None
        if _report_bytes(pred, model, seen, digest) != payload:
            return None
    except (ValueError, TypeError, RecursionError):  # a lone surrogate
        return None
    return pred, model, seen, subject


# A field report's fields set, without and with credentialTier, in field order (the order
# validation adds them in, so the set pickles as validation's does).
_esc: Final = json.encoder.encode_basestring  # a str as `dumps_bmp` writes it, quotes included
_REPORT_HEAD: Final = '{"_type":' + _esc(STATEMENT_TYPE) + ',"predicate":{"category":'
_REPORT_TAIL: Final = (
    '},"predicateType":' + _esc(FIELD_REPORT) + ',"subject":[{"digest":{"sha256":"'
)


def _report_bytes(
    pred: dict[str, Any], model: dict[str, Any], seen: dict[str, Any], digest: str
) -> bytes:
    """`dumps_bmp` of the field report's statement around `pred` (with its `model`,
    `seenCheckpoint` and subject digest), once `_parse_field_report` has checked its keys, types
    and subject: written piece by piece in the encoder's key order (sorted by code point) with
    the encoder's own string escaping, so the same bytes without the encoder's walk of dicts and
    key sort. Raises UnicodeEncodeError on a lone surrogate."""
    tier = pred.get("credentialTier")
    return (
        _REPORT_HEAD
        + _esc(pred["category"])
        + ("" if tier is None else ',"credentialTier":' + _esc(tier))
        + f',"issuedAt":{pred["issuedAt"]:d},"model":{{"name":'
        + _esc(model["name"])
        + ',"version":'
        + _esc(model["version"])
        + '},"seenCheckpoint":{"origin":'
        + _esc(seen["origin"])
        + f',"root":"{seen["root"]}","size":{seen["size"]:d}}},"text":'
        + _esc(pred["text"])
        + ',"tier":'
        + _esc(pred["tier"])
        + _REPORT_TAIL
        + digest
        + '"},"name":'
        + _esc(model["name"])
        + "}]}"
    ).encode("utf-8")


_REPORT_FIELDS_SET: Final = {
    False: ("seen_checkpoint", "issued_at", "model", "category", "tier", "text"),
    True: ("seen_checkpoint", "issued_at", "model", "category", "tier", "text", "credential_tier"),
}


def _diagnostic(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One line naming each field that failed and why."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in (*prefix, *err["loc"])) or "statement"
        problems.append(f"{where}: {err['msg']}")
    return ("invalid statement: " + "; ".join(problems))[:500]


def verify_statement(
    env: Envelope, trusted: Sequence[TrustedKey], threshold: int = 1
) -> tuple[Statement, list[TrustedKey]]:
    """Verify `env` (in-toto payloadType, `threshold` distinct trusted keys) and parse its payload.

    Raises what `verify_envelope` and `parse_statement` raise. Returns the statement and the keys
    that verified.
    """
    keys = verify_envelope(env, trusted, threshold, payload_type=IN_TOTO_PAYLOAD_TYPE)
    return parse_statement(env.payload), keys


def sign_statement(
    predicate: AnyPredicate, signers: Sequence[tuple[str, Ed25519PrivateKey]]
) -> Envelope:
    """The DSSE envelope of the statement about `predicate`, signed by each (name, key)."""
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement_bytes(Statement.of(predicate)), signers)


def predicate_model(predicate_type: str, predicate: Mapping[str, object]) -> AnyPredicate:
    """Validate a predicate given as JSON-like data (wire field names) as `predicate_type`."""
    model = PREDICATE_TYPES.get(predicate_type)
    if model is None:
        raise StatementError(f"unknown predicateType {predicate_type[:200]!r}")
    try:
        parsed = model.model_validate_json(canonicalize(dict(predicate)))
    except ValidationError as exc:
        raise StatementError(_diagnostic(exc, prefix=("predicate",))) from exc
    return cast(AnyPredicate, parsed)
