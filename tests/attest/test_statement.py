"""in-toto Statement v1 and the project's predicates: round trips and one test per rejection."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from attest.dsse import IN_TOTO_PAYLOAD_TYPE, TrustedKey, sign_envelope
from attest.errors import CanonicalizationError, PayloadTypeError, StatementError
from attest.jcs import canonicalize
from attest.keys import generate_private_key, verifier_key
from attest.note import SIG_TYPE_COSIGNATURE_V1, format_vkey
from attest.predicates import (
    PREDICATE_NAMESPACE,
    PREDICATE_TYPES,
    CheckpointRef,
    ContinuityStatement,
    CredentialEvent,
    FieldReport,
    KeyEvent,
    LogEntryRef,
    ModelId,
    ModelRef,
    Predicate,
    ProbeRecord,
)
from attest.statement import (
    STATEMENT_TYPE,
    ResourceDescriptor,
    Statement,
    parse_statement,
    statement_bytes,
    verify_statement,
)

from .strategies import PREDICATES, field_reports, probe_records

CHECKPOINT = CheckpointRef(origin="log.example/evidence", size=42, root="ab" * 32)
ISSUED_AT = 1_767_225_600  # 2026-01-01T00:00:00Z
KEY = generate_private_key()
VKEY = verifier_key("lab.example/key1", KEY.public_key())


def report() -> FieldReport:
    return FieldReport(
        seen_checkpoint=CHECKPOINT,
        issued_at=ISSUED_AT,
        model=ModelId(name="chat-model", version="2026-01"),
        category="medical",
        tier="anonymous",
        text="It refused to tell a nurse the maximum paracetamol dose.",
    )


def report_json() -> dict[str, Any]:
    return json.loads(statement_bytes(Statement.of(report())))  # type: ignore[no-any-return]


def encode(obj: object) -> bytes:
    return canonicalize(obj)


# --- round trips ----------------------------------------------------------------------------


def test_every_predicate_type_has_a_strategy() -> None:
    assert set(PREDICATES) == set(PREDICATE_TYPES.values())


def test_predicate_type_uris_are_distinct_and_namespaced() -> None:
    assert len(PREDICATE_TYPES) == 8
    assert len({cls.PREDICATE_TYPE for cls in PREDICATE_TYPES.values()}) == 8
    for uri, cls in PREDICATE_TYPES.items():
        assert uri.startswith(PREDICATE_NAMESPACE)
        assert uri.endswith("/v1")
        assert uri == cls.PREDICATE_TYPE


@pytest.mark.parametrize("cls", list(PREDICATES), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_is_identity_and_canonical(cls: type[Predicate], data: st.DataObject) -> None:
    predicate = data.draw(PREDICATES[cls])
    stmt = Statement.of(predicate)  # type: ignore[arg-type]
    payload = statement_bytes(stmt)
    parsed = parse_statement(payload)
    assert parsed == stmt
    assert type(parsed.predicate) is cls
    assert statement_bytes(parsed) == payload
    assert canonicalize(json.loads(payload)) == payload
    assert json.loads(payload)["_type"] == STATEMENT_TYPE


@settings(max_examples=20, deadline=None)
@given(probe_records)
def test_probe_record_numbers_are_all_integers(record: ProbeRecord) -> None:
    def numbers(value: object) -> list[object]:
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []

    found = numbers(json.loads(statement_bytes(Statement.of(record))))
    assert found
    assert all(isinstance(n, int) for n in found)


@settings(max_examples=20, deadline=None)
@given(field_reports())
def test_signed_statement_verifies_and_parses(predicate: FieldReport) -> None:
    stmt = Statement.of(predicate)
    env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement_bytes(stmt), [("lab.example/key1", KEY)])
    got, keys = verify_statement(env, [TrustedKey.named("lab.example/key1", KEY.public_key())])
    assert got == stmt
    assert len(keys) == 1


# --- rejections -----------------------------------------------------------------------------


def test_unknown_field_in_statement_rejected() -> None:
    obj = report_json()
    obj["comment"] = "hi"
    with pytest.raises(StatementError, match="comment: Extra inputs are not permitted"):
        parse_statement(encode(obj))


def test_unknown_field_in_predicate_rejected() -> None:
    obj = report_json()
    obj["predicate"]["email"] = "someone@example.com"
    with pytest.raises(StatementError, match=r"predicate\.email: Extra inputs are not permitted"):
        parse_statement(encode(obj))


def test_unknown_field_in_subject_rejected() -> None:
    obj = report_json()
    obj["subject"][0]["uri"] = "https://example.com"
    with pytest.raises(StatementError, match="uri"):
        parse_statement(encode(obj))


def test_float_in_signed_payload_rejected() -> None:
    obj = report_json()
    payload = encode(obj).replace(b'"size":42', b'"size":42.5')
    with pytest.raises(CanonicalizationError, match="not an integer"):
        parse_statement(payload)


def test_integral_float_in_signed_payload_rejected() -> None:
    payload = encode(report_json()).replace(b'"size":42', b'"size":42.0')
    with pytest.raises(CanonicalizationError, match="not an integer"):
        parse_statement(payload)


def test_non_canonical_payload_rejected() -> None:
    pretty = json.dumps(report_json(), indent=2, sort_keys=True).encode()
    with pytest.raises(CanonicalizationError, match="canonical"):
        parse_statement(pretty)


def test_snake_case_field_names_rejected() -> None:
    payload = encode(report_json()).replace(b'"seenCheckpoint"', b'"seen_checkpoint"')
    with pytest.raises((CanonicalizationError, StatementError)):
        parse_statement(payload)


def test_explicit_null_rejected() -> None:
    obj = report_json()
    obj["predicate"]["model"]["version"] = None
    with pytest.raises(StatementError):
        parse_statement(encode(obj))


def test_unknown_predicate_type_rejected() -> None:
    obj = report_json()
    obj["predicateType"] = "https://slsa.dev/provenance/v1"
    with pytest.raises(StatementError, match="unknown predicateType"):
        parse_statement(encode(obj))


def test_predicate_type_mismatch_rejected() -> None:
    obj = report_json()
    obj["predicateType"] = ProbeRecord.PREDICATE_TYPE
    with pytest.raises(StatementError):
        parse_statement(encode(obj))


def test_wrong_statement_type_rejected() -> None:
    obj = report_json()
    obj["_type"] = "https://in-toto.io/Statement/v0.1"
    with pytest.raises(StatementError, match="_type"):
        parse_statement(encode(obj))


def test_missing_statement_type_rejected() -> None:
    obj = report_json()
    del obj["_type"]
    with pytest.raises(CanonicalizationError):
        parse_statement(encode(obj))


def test_missing_seen_checkpoint_rejected() -> None:
    obj = report_json()
    del obj["predicate"]["seenCheckpoint"]
    with pytest.raises(StatementError, match=r"seenCheckpoint: Field required"):
        parse_statement(encode(obj))


def test_predicate_without_or_with_float_issued_at_rejected() -> None:
    obj = report_json()
    assert obj["predicate"]["issuedAt"] == ISSUED_AT
    del obj["predicate"]["issuedAt"]
    with pytest.raises(StatementError, match=r"predicate\.issuedAt: Field required"):
        parse_statement(encode(obj))
    # A float issuedAt is rejected in the signed payload, even when integral ...
    payload = encode(report_json())
    for spelling in (b"1767225600.0", b"1767225600.5", b"1.7672256e9"):
        with pytest.raises(CanonicalizationError, match="not an integer"):
            parse_statement(payload.replace(b'"issuedAt":1767225600', b'"issuedAt":' + spelling))
    # ... by the predicate model on its own (strict: no float-to-int coercion) ...
    predicate = json.dumps({**report_json()["predicate"], "issuedAt": 1767225600.0})
    with pytest.raises(ValidationError) as exc:
        FieldReport.model_validate_json(predicate)
    assert [(e["loc"], e["type"]) for e in exc.value.errors()] == [(("issuedAt",), "int_type")]
    # ... and from Python.
    with pytest.raises(ValidationError) as exc:
        FieldReport.model_validate({**dict(report()), "issued_at": float(ISSUED_AT)})
    assert [(e["loc"], e["type"]) for e in exc.value.errors()] == [(("issued_at",), "int_type")]


def test_subject_not_derived_from_predicate_rejected() -> None:
    obj = report_json()
    obj["subject"][0]["digest"]["sha256"] = "00" * 32
    with pytest.raises(StatementError, match="subject"):
        parse_statement(encode(obj))


def test_uppercase_digest_rejected() -> None:
    obj = report_json()
    obj["predicate"]["seenCheckpoint"]["root"] = "AB" * 32
    with pytest.raises(StatementError, match="root"):
        parse_statement(encode(obj))


def test_boolean_for_integer_rejected() -> None:
    stmt = Statement.of(
        ContinuityStatement.model_validate_json(
            json.dumps(
                {
                    "seenCheckpoint": {"origin": "o", "size": 1, "root": "00" * 32},
                    "issuedAt": ISSUED_AT,
                    "predecessor": {"name": "m", "version": "1", "weightsSha256": "11" * 32},
                    "successor": {"name": "m", "version": "2", "weightsSha256": "22" * 32},
                    "predecessorRecords": [{"origin": "o", "index": 0, "leafHash": "33" * 32}],
                    "successorRecords": [{"origin": "o", "index": 1, "leafHash": "44" * 32}],
                    "diff": [],
                }
            )
        )
    )
    payload = statement_bytes(stmt).replace(b'"size":1', b'"size":true')
    with pytest.raises(StatementError, match="size"):
        parse_statement(payload)


def test_statement_not_an_object_rejected() -> None:
    with pytest.raises(StatementError):
        parse_statement(b"[]")


def test_verify_statement_checks_payload_type() -> None:
    payload = statement_bytes(Statement.of(report()))
    env = sign_envelope("application/json", payload, [("lab.example/key1", KEY)])
    with pytest.raises(PayloadTypeError):
        verify_statement(env, [TrustedKey.named("lab.example/key1", KEY.public_key())])


# --- predicate rules ------------------------------------------------------------------------


def test_statement_constructor_checks_subject() -> None:
    with pytest.raises(ValidationError, match="subject"):
        Statement(
            subject=(ResourceDescriptor(name="x", digest={"sha256": "00" * 32}),),
            predicate_type=FieldReport.PREDICATE_TYPE,
            predicate=report(),
        )


def test_rotation_requires_previous_key() -> None:
    with pytest.raises(ValidationError, match="previousKey"):
        KeyEvent(
            seen_checkpoint=CHECKPOINT, issued_at=ISSUED_AT, action="rotate", role="lab", key=VKEY
        )


def test_previous_key_only_for_rotation() -> None:
    other = verifier_key("lab.example/key0", generate_private_key().public_key())
    with pytest.raises(ValidationError, match="previousKey"):
        KeyEvent(
            seen_checkpoint=CHECKPOINT,
            issued_at=ISSUED_AT,
            action="register",
            role="lab",
            key=VKEY,
            previous_key=other,
        )


def test_rotation_subjects_are_new_then_old_key() -> None:
    other = verifier_key("lab.example/key0", generate_private_key().public_key())
    event = KeyEvent(
        seen_checkpoint=CHECKPOINT,
        issued_at=ISSUED_AT,
        action="rotate",
        role="lab",
        key=VKEY,
        previous_key=other,
    )
    assert [s.name for s in event.subjects()] == ["lab.example/key1", "lab.example/key0"]


def test_witness_key_must_be_a_cosignature_key() -> None:
    with pytest.raises(ValidationError, match="0x04"):
        KeyEvent(
            seen_checkpoint=CHECKPOINT,
            issued_at=ISSUED_AT,
            action="register",
            role="witness",
            key=VKEY,
        )
    raw = KEY.public_key().public_bytes_raw()
    witness = format_vkey("witness.example", SIG_TYPE_COSIGNATURE_V1, raw)
    KeyEvent(
        seen_checkpoint=CHECKPOINT,
        issued_at=ISSUED_AT,
        action="register",
        role="witness",
        key=witness,
    )


@pytest.mark.parametrize(
    "vkey",
    [
        "lab.example/key1",
        VKEY.replace("+", "+0", 1),
        VKEY[:-2] + "AA",
        VKEY.split("+")[0] + "+00000000+" + VKEY.split("+", 2)[2],
        VKEY.upper(),
    ],
    ids=["no-parts", "long-key-id", "other-key", "wrong-key-id", "uppercase"],
)
def test_malformed_verifier_key_rejected(vkey: str) -> None:
    with pytest.raises(ValidationError):
        KeyEvent(
            seen_checkpoint=CHECKPOINT, issued_at=ISSUED_AT, action="register", role="lab", key=vkey
        )


def test_credential_for_anonymous_tier_rejected() -> None:
    with pytest.raises(ValidationError, match="professional"):
        CredentialEvent(
            seen_checkpoint=CHECKPOINT,
            issued_at=ISSUED_AT,
            action="issue",
            credential_id="c1",
            tier="anonymous",
            holder_key=VKEY,
            expires_at=1_800_000_000,
        )


def test_continuity_between_identical_weights_rejected() -> None:
    model = ModelRef(name="m", version="1", weights_sha256="11" * 32)
    ref = LogEntryRef(origin="o", index=0, leaf_hash="22" * 32)
    with pytest.raises(ValidationError, match="same weights"):
        ContinuityStatement.model_validate(
            {
                "seen_checkpoint": CHECKPOINT,
                "issued_at": ISSUED_AT,
                "predecessor": model,
                "successor": model,
                "predecessor_records": (ref,),
                "successor_records": (ref,),
                "diff": (),
            }
        )


def test_field_report_tier_is_a_partition() -> None:
    with pytest.raises(ValidationError):
        FieldReport(
            seen_checkpoint=CHECKPOINT,
            issued_at=ISSUED_AT,
            model=ModelId(name="m", version="1"),
            category="c",
            tier="medical",  # type: ignore[arg-type]
            text="t",
        )


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        report().category = "other"
