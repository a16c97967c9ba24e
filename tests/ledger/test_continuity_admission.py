"""The evidence log's rules for continuity statements, on SQLite and PostgreSQL.

A continuity statement is admitted only when a lab key valid at its index signs it, and every
entry it cites is in this log below its index, with the cited leaf hash, and is a probe record
of the model on its side. Each refusal is its own test; every accepted step is followed by a
full re-audit of the log (`Chain.batch` runs `TestLog.check`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from attest import merkle
from attest.dsse import TrustedKey
from attest.predicates import (
    ContinuityStatement,
    LogEntryRef,
    ModelRef,
    ProbeRecord,
    SuiteRef,
)
from clients.probe.records import RecordHeader, probe_item
from ledger.admission import AdmissionError, EvidenceRule
from ledger.sequencer import Sequenced, Sequencer
from ledger.storage import Store
from tests.attest.test_keychain import NOW, Chain, Signer, key, vkey
from tests.ledger.test_sequencer import ORIGIN

V1 = ModelRef(name="m", version="v1", weights_sha256="11" * 32)
V2 = ModelRef(name="m", version="v2", weights_sha256="22" * 32)
SUITE = SuiteRef(name="core", version="1", sha256="33" * 32)
CALIBRATION = LogEntryRef(origin=ORIGIN, index=0, leaf_hash="44" * 32)


@pytest.fixture
def chain(db_url: str) -> Iterator[Chain]:
    store = Store(db_url)
    store.migrate()
    yield Chain(store)
    store.close()


def probe_record(chain: Chain, model: ModelRef, run: str = "run") -> ProbeRecord:
    header = RecordHeader(
        model=model,
        suite=SUITE,
        category="medical-dosage",
        tier="anonymous",
        run_id=run,
        calibration=CALIBRATION,
        **chain.seen(),
    )
    items = [probe_item("p1", "direct", "no", refused=True, transfer=0.0, emotions={})]
    return header.record(items, f"{run}/part-1-of-1")


def ref(r: Sequenced, **change: Any) -> LogEntryRef:
    fields = {"origin": ORIGIN, "index": r.index, "leaf_hash": r.leaf_hash.hex(), **change}
    return LogEntryRef(**fields)


def continuity(
    chain: Chain, before: list[LogEntryRef], after: list[LogEntryRef]
) -> ContinuityStatement:
    return ContinuityStatement(
        predecessor=V1,
        successor=V2,
        predecessor_records=tuple(before),
        successor_records=tuple(after),
        diff=(),
        **chain.seen(),
    )


def records(chain: Chain, worker: Signer) -> tuple[Sequenced, Sequenced]:
    """One logged probe record of each version, signed by the worker."""
    return (
        chain.ok(probe_record(chain, V1), [worker]),
        chain.ok(probe_record(chain, V2), [worker]),
    )


def test_a_lab_statement_citing_logged_records_is_admitted(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    r1, r2 = records(chain, worker)
    chain.ok(continuity(chain, [ref(r1)], [ref(r2)]), [lab])
    chain.restart()
    r3 = chain.ok(probe_record(chain, V2, "second"), [worker])
    chain.ok(continuity(chain, [ref(r1)], [ref(r2), ref(r3)]), [lab])


def test_a_record_earlier_in_the_same_batch_may_be_cited(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    r1 = chain.ok(probe_record(chain, V1), [worker])
    size = chain.t.log.head().size
    rec = chain.admit(probe_record(chain, V2), [worker])
    pending = LogEntryRef(origin=ORIGIN, index=size, leaf_hash=merkle.leaf_hash(rec.leaf).hex())
    stmt = chain.admit(continuity(chain, [ref(r1)], [pending]), [lab])
    results = chain.batch([rec, stmt])
    assert all(isinstance(r, Sequenced) for r in results), results


def test_a_worker_key_may_not_state_continuity(chain: Chain) -> None:
    _, worker = chain.lab_and_worker()
    r1, r2 = records(chain, worker)
    msg = chain.refused(continuity(chain, [ref(r1)], [ref(r2)]), [worker], 403, "not_authorised")
    assert "continuity" in msg and "lab" in msg


def test_an_allowed_key_may_not_state_continuity(chain: Chain) -> None:
    allowed = key("ci")
    root = TrustedKey.named(chain.operator[0], chain.operator[1].public_key())
    chain.rule = EvidenceRule(
        chain.store,
        chain.t.log.id,
        ORIGIN,
        roots=[root],
        allowed=[TrustedKey.named(allowed[0], allowed[1].public_key())],
        clock=lambda: NOW,
    )
    chain.t.seq = Sequencer(chain.t.log, chain.t.signer, rule=chain.rule)
    r1, r2 = records(chain, allowed)  # probe records: what a worker may state, it may
    chain.refused(continuity(chain, [ref(r1)], [ref(r2)]), [allowed], 403, "not_authorised")


def test_a_revoked_lab_may_not_state_continuity(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    r1, r2 = records(chain, worker)
    stmt = chain.admit(continuity(chain, [ref(r1)], [ref(r2)]), [lab])
    chain.ok(chain.event("revoke", "lab", vkey(lab)), [chain.operator])
    (late,) = chain.batch([stmt])
    assert isinstance(late, AdmissionError) and late.error == "not_authorised"


def test_a_missing_index_is_refused(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    r1, r2 = records(chain, worker)
    size = chain.t.log.head().size
    for index in (size, size + 10):  # its own index, and beyond
        stmt = continuity(chain, [ref(r1)], [ref(r2, index=index)])
        msg = chain.refused(stmt, [lab], 422, "bad_citation")
        assert f"not below the statement's own index {size}" in msg


def test_a_wrong_leaf_hash_is_refused(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    r1, r2 = records(chain, worker)
    msg = chain.refused(
        continuity(chain, [ref(r1)], [ref(r2, leaf_hash="55" * 32)]), [lab], 422, "bad_citation"
    )
    assert "leaf hash" in msg and r2.leaf_hash.hex() in msg


def test_a_record_of_another_model_or_another_log_is_refused(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    r1, r2 = records(chain, worker)
    msg = chain.refused(continuity(chain, [ref(r2)], [ref(r1)]), [lab], 422, "bad_citation")
    assert "not of m@v1" in msg
    report = chain.ok(chain.report("not a probe record"), [worker])
    msg = chain.refused(continuity(chain, [ref(r1)], [ref(report)]), [lab], 422, "bad_citation")
    assert "not a probe record" in msg
    other = ref(r2, origin="other.example/log")
    msg = chain.refused(continuity(chain, [ref(r1)], [other]), [lab], 422, "bad_citation")
    assert "not in this log" in msg
    # Another version's weights under the right name and version is another model, too.
    impostor = V2.model_copy(update={"weights_sha256": "66" * 32})
    r3 = chain.ok(probe_record(chain, impostor), [worker])
    chain.refused(continuity(chain, [ref(r1)], [ref(r3)]), [lab], 422, "bad_citation")
