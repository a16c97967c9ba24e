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

from collections.abc import Mapping, Sequence
from typing import Annotated, Final, Literal, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, ValidationError, model_validator

from attest._wire import WireModel
from attest.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    TrustedKey,
    sign_envelope,
    verify_envelope,
)
from attest.errors import CanonicalizationError, StatementError
from attest.jcs import canonical_loads, canonicalize
from attest.predicates import PREDICATE_TYPES, AnyPredicate, ResourceDescriptor

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
    """
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
    if statement_bytes(stmt) != payload:  # (4)
        raise CanonicalizationError("statement payload is not in RFC 8785 canonical form")
    return stmt


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
