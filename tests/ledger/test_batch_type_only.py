"""An admission worker's answers without the statement (`admit_batch_entry(...,
keep_statement=False)`) against the answers with it, which the worker pickled before.

A field report is admitted in a worker without building its statement
(`attest.statement.read_field_report`, `EvidenceRule.admit_envelope`). What the serving process
receives must be what it received before, byte for byte: the pickle of the answer with the
statement (`Admitted.__reduce__` drops a type-only statement there), or the same refusal. The
reference is the path that keeps the statement, unchanged. Inputs: statements of every
predicate type that saw this log's checkpoint (or another), changed in ways each check notices,
signed by an allowed key, a root, an unknown key, twice or wrongly, in several spellings.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attest import merkle
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, TrustedKey, sign_envelope
from attest.keys import generate_private_key
from attest.predicates import FIELD_REPORT, CheckpointRef, FieldReport
from attest.statement import (
    FieldReportSeen,
    Statement,
    _parse_field_report,
    parse_statement,
    read_field_report,
    statement_bytes,
)
from ledger.admission import TYPE_READ, Admitted, EvidenceRule, admit_batch_entry
from ledger.errors import LedgerError
from tests.attest.strategies import PREDICATES
from tests.attest.test_statement_shortcut import _paths, _set, mutated, spell, wire
from tests.support import sqlite_evidence_log

NOW = 1_900_000_000
ALLOWED = generate_private_key()
ROOT = generate_private_key()
STRANGER = generate_private_key()


@pytest.fixture(scope="module")
def rule(tmp_path_factory: pytest.TempPathFactory) -> EvidenceRule:
    log, _ = sqlite_evidence_log(tmp_path_factory.mktemp("type-only") / "ledger.db")
    return EvidenceRule(
        log.store,
        log.row.id,
        log.row.origin,
        roots=[TrustedKey.named("root", ROOT.public_key())],
        allowed=[TrustedKey.named("writer", ALLOWED.public_key())],
        clock=lambda: NOW,
    )


def answer(got: Admitted | LedgerError | None) -> Any:
    """What the serving process receives of an answer: its pickle, or the refusal's fields."""
    if isinstance(got, Admitted):
        return ("admitted", pickle.dumps(got, protocol=pickle.HIGHEST_PROTOCOL))
    if isinstance(got, LedgerError):
        fields = (type(got), str(got), getattr(got, "status", None), getattr(got, "error", None))
        return ("refused", (*fields, getattr(got, "headers", None)))
    return ("none", got)


def assert_same(rule: EvidenceRule, entry: bytes) -> tuple[str, Any]:
    full = admit_batch_entry(rule, entry)
    light = admit_batch_entry(rule, entry, keep_statement=False)
    want = answer(full)
    assert answer(light) == want
    if isinstance(full, Admitted):
        assert isinstance(light, Admitted)
        back = pickle.loads(want[1])
        assert pickle.loads(pickle.dumps(light)) == back
        assert (light.digest, light.leaf, light.signers) == (full.digest, full.leaf, full.signers)
        if _parse_field_report(full.payload) is not None:
            # A field report the shortcut reads (none beyond the BMP) is taken without the
            # statement (else there is no saving), as it pickles.
            assert light.statement is None and light.predicate_type == FIELD_REPORT
            assert back.statement is None and back.predicate_type == FIELD_REPORT
    return want


@st.composite
def payloads(draw: st.DrawFn, origin: str) -> bytes:
    """A statement that saw this log's empty checkpoint (or another), maybe changed."""
    reports = PREDICATES[FieldReport]  # the ones taken without a statement, half the time
    pred = draw(st.one_of(reports, reports, st.one_of(*PREDICATES.values())))
    seen = draw(
        st.sampled_from(
            [
                CheckpointRef(origin=origin, size=0, root=merkle.EMPTY_ROOT.hex()),
                CheckpointRef(origin=origin, size=0, root=merkle.EMPTY_ROOT.hex()),
                CheckpointRef(origin=origin, size=0, root="ab" * 32),
                CheckpointRef(origin=origin, size=3, root=merkle.EMPTY_ROOT.hex()),
                CheckpointRef(origin="other.example/log", size=0, root=merkle.EMPTY_ROOT.hex()),
            ]
        )
    )
    issued = draw(st.sampled_from([NOW - 10, NOW, NOW + 300, NOW + 301, 0]))
    pred = pred.model_copy(update={"seen_checkpoint": seen, "issued_at": issued})
    try:
        stmt = Statement.of(pred)  # type: ignore[arg-type]
    except ValueError:
        return draw(mutated())
    payload = statement_bytes(stmt)
    kind = draw(st.sampled_from(["canonical"] * 5 + ["replace", "spaces", "mutated"]))
    if kind == "replace":
        obj = wire(stmt)
        path = draw(st.sampled_from(_paths(obj)[1:]))
        value = draw(st.sampled_from([0, 1, NOW + 301, "", "x", "attested", None, True, [], {}]))
        return spell(_set(obj, path, value))
    if kind == "spaces":
        return spell(wire(stmt), spaces=True)
    if kind == "mutated":
        return draw(mutated())
    return payload


@st.composite
def entries(draw: st.DrawFn, origin: str) -> bytes:
    """A batch entry: an envelope of such a payload, signed, spelled as a client spells it."""
    payload = draw(payloads(origin))
    payload_type = draw(st.sampled_from([IN_TOTO_PAYLOAD_TYPE] * 6 + ["text/plain"]))
    signers = draw(
        st.sampled_from(
            [
                [("writer", ALLOWED)],
                [("writer", ALLOWED)],
                [("writer", ALLOWED)],
                [("root", ROOT)],
                [("writer", STRANGER)],
                [("stranger", STRANGER)],
                [("writer", ALLOWED), ("writer", ALLOWED)],
                [("writer", ALLOWED), ("root", ROOT)],
            ]
        )
    )
    env = sign_envelope(payload_type, payload, signers)
    if draw(st.integers(0, 7)) == 0:  # a signature over other bytes
        other = sign_envelope(payload_type, payload + b" ", signers)
        env = Envelope(env.payload_type, env.payload, other.signatures)
    sep = draw(st.sampled_from([None, (",", ":")]))
    return json.dumps(env.to_json(), separators=sep).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_answers_without_the_statement_are_the_pickled_answers_with_it(
    rule: EvidenceRule, data: st.DataObject
) -> None:
    entry = data.draw(entries(rule.origin))
    kind, got = assert_same(rule, entry)
    report = kind == "admitted" and pickle.loads(got).statement is None
    event(f"{kind} {got[3] if kind == 'refused' else 'type-only' if report else ''}")


def _admitted(rule: EvidenceRule, body: bytes, **kw: bool) -> Admitted | LedgerError:
    try:
        return rule.admit(body, None, **kw)
    except LedgerError as e:
        return e


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_single_posts_without_the_statement_are_the_pickled_answers_with_it(
    rule: EvidenceRule, data: st.DataObject
) -> None:
    """The same for `EvidenceRule.admit` (a worker's answers to single posts), on bodies in any
    spelling (`Envelope.from_json` reads those `read_json_leaf` does not)."""
    body = data.draw(entries(rule.origin))
    if data.draw(st.booleans()):
        body = json.dumps(json.loads(body), indent=1).encode()
    full = _admitted(rule, body)
    assert answer(_admitted(rule, body, keep_statement=False)) == answer(full)


def test_honest_field_reports_are_admitted_without_their_statement(rule: EvidenceRule) -> None:
    """The common case takes the path (the property test would pass without it)."""
    for tier, credential in (("anonymous", None), ("attested", "gold")):
        report = FieldReport(
            seen_checkpoint=CheckpointRef(origin=rule.origin, size=0, root=merkle.EMPTY_ROOT.hex()),
            issued_at=NOW,
            model={"name": "m", "version": "1"},  # type: ignore[arg-type]
            category="c",
            tier=tier,
            text="é text",
            credential_tier=credential,
        )
        env = sign_envelope(
            IN_TOTO_PAYLOAD_TYPE, statement_bytes(Statement.of(report)), [("writer", ALLOWED)]
        )
        kind, _ = assert_same(rule, json.dumps(env.to_json()).encode())
        assert kind == "admitted"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=mutated())
def test_read_field_report_reads_what_the_parse_holds(payload: bytes) -> None:
    """`read_field_report` answers exactly when the field-report shortcut builds a statement,
    with that statement's seen checkpoint and issuedAt."""
    seen = read_field_report(payload)
    built = _parse_field_report(payload)
    assert (seen is None) == (built is None)
    if built is not None:
        assert built == parse_statement(payload)
        p = built.predicate
        assert isinstance(p, FieldReport)
        c = p.seen_checkpoint
        assert seen == FieldReportSeen(c.origin, c.size, c.root, p.issued_at)


def test_a_field_report_is_read_by_its_type_only() -> None:
    """Why the worker may drop it: phase 2 reads a field report by its type alone."""
    assert not issubclass(FieldReport, TYPE_READ)


def test_an_admitted_without_statement_pickles_its_type(tmp_path: Path) -> None:
    entry = Admitted(b"leaf", None, b"", frozenset({b"k" * 32}), b"d" * 32, FIELD_REPORT)
    back = pickle.loads(pickle.dumps(entry))
    assert back == entry and back.predicate_type == FIELD_REPORT and back.digest == b"d" * 32
