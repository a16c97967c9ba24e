"""The audit node re-checks what continuity statements cite, as the evidence log should have.

The pure validator is tested on entries built in process; then a dishonest operator sequences a
continuity statement behind its own admission rule (directly into the database, signing with
the log's key), and a node following the log from a real `bledger serve` process catches it as
an invalid entry whose evidence anyone can re-check offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attest import merkle
from attest.dsse import TrustedKey
from attest.keychain import KeyChain
from attest.keys import generate_private_key, verifier_key
from attest.predicates import (
    AnyPredicate,
    CheckpointRef,
    ContinuityStatement,
    FieldReport,
    KeyEvent,
    LogEntryRef,
    ModelId,
    ModelRef,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import sign_statement
from clients.probe.records import RecordHeader, probe_item
from ledger.admission import Admitted, EvidenceRule
from ledger.config import init_data_dir
from ledger.sequencer import Sequenced, Sequencer
from ledger.server import HostedLog, LedgerServer
from tests.support import ORIGIN_PREFIX, LedgerProcess, Signer
from tests.verifier.test_auditor import follow, open_node
from verifier.auditor import AuditNode, EntryInvalid, LogMisbehaved, validate_entry
from verifier.gossip import EvidenceError
from verifier.gossip import verify_evidence as check_evidence

ORIGIN = f"{ORIGIN_PREFIX}/evidence"
V1 = ModelRef(name="m", version="v1", weights_sha256="11" * 32)
V2 = ModelRef(name="m", version="v2", weights_sha256="22" * 32)
SUITE = SuiteRef(name="core", version="1", sha256="33" * 32)
Signing = tuple[str, Any]
ISSUED_AT = 1_700_000_000


def probe_record(model: ModelRef, seen: CheckpointRef, run: str = "run") -> ProbeRecord:
    header = RecordHeader(
        model=model,
        suite=SUITE,
        category="medical-dosage",
        tier="anonymous",
        run_id=run,
        calibration=LogEntryRef(origin=ORIGIN, index=0, leaf_hash="44" * 32),
        seen_checkpoint=seen,
        issued_at=ISSUED_AT,
    )
    items = [probe_item("p1", "direct", "no", refused=True, transfer=0.0, emotions={})]
    return header.record(items, f"{run}/part-1-of-1")


def continuity(
    seen: CheckpointRef, before: list[LogEntryRef], after: list[LogEntryRef]
) -> ContinuityStatement:
    return ContinuityStatement(
        seen_checkpoint=seen,
        issued_at=ISSUED_AT,
        predecessor=V1,
        successor=V2,
        predecessor_records=tuple(before),
        successor_records=tuple(after),
        diff=(),
    )


# -- the pure validator -----------------------------------------------------------------------


class InProcessLog:
    """Entries of an evidence log built in memory: an operator, a lab, a worker."""

    def __init__(self) -> None:
        self.operator: Signing = ("operator", generate_private_key())
        self.lab: Signing = ("lab", generate_private_key())
        self.worker: Signing = ("worker", generate_private_key())
        self.entries: list[bytes] = []
        self.seen = CheckpointRef(origin=ORIGIN, size=0, root=merkle.EMPTY_ROOT.hex())
        self.add(self.key_event("lab"), [self.operator])
        self.add(self.key_event("worker"), [self.lab, self.worker])

    def key_event(self, role: str) -> KeyEvent:
        name, k = self.lab if role == "lab" else self.worker
        return KeyEvent(
            seen_checkpoint=self.seen,
            issued_at=ISSUED_AT,
            action="register",
            role=role,  # type: ignore[arg-type]
            key=verifier_key(name, k.public_key()),
        )

    def add(self, predicate: AnyPredicate, signers: list[Signing]) -> LogEntryRef:
        data = sign_statement(predicate, signers).canonical_bytes()
        self.entries.append(data)
        index = len(self.entries) - 1
        return LogEntryRef(origin=ORIGIN, index=index, leaf_hash=merkle.leaf_hash(data).hex())

    def replay(self, *, held: bool = True) -> None:
        """Re-validate every entry in order, as an audit node does (EntryInvalid if one fails)."""
        name, op = self.operator
        chain = KeyChain([op.public_key().public_bytes_raw()])
        fixed = [TrustedKey.named(name, op.public_key())]
        entry_at = self.entries.__getitem__ if held else None
        for index, data in enumerate(self.entries):
            validate_entry(index, data, ORIGIN, chain, fixed, None, entry_at)


def test_validate_entry_checks_every_citation() -> None:
    log = InProcessLog()
    r1 = log.add(probe_record(V1, log.seen), [log.worker])
    r2 = log.add(probe_record(V2, log.seen), [log.worker])
    log.add(continuity(log.seen, [r1], [r2]), [log.lab])
    log.replay()

    def caught(
        before: list[LogEntryRef], after: list[LogEntryRef], *, held: bool = True
    ) -> tuple[str, int | None]:
        """(problem, cited index) of the continuity statement appended and replayed."""
        bad = log.add(continuity(log.seen, before, after), [log.lab])
        try:
            with pytest.raises(EntryInvalid) as e:
                log.replay(held=held)
        finally:
            log.entries.pop()
        assert (e.value.index, e.value.stage) == (bad.index, "citation")
        return e.value.problem, e.value.cited

    # A failure that rests on a cited entry names it, so the evidence can carry it.
    problem, cited = caught([r1], [r2.model_copy(update={"leaf_hash": "55" * 32})])
    assert "leaf hash" in problem and cited == r2.index
    problem, cited = caught([r2], [r1])
    assert "is a probe record of m@v2" in problem and "not of m@v1" in problem
    assert cited == r2.index
    problem, cited = caught([r1], [LogEntryRef(origin=ORIGIN, index=1, leaf_hash=_leaf(log, 1))])
    assert "not a probe record" in problem and cited == 1
    # What the reference alone shows needs no entry.
    problem, cited = caught([r1], [r2.model_copy(update={"index": 99})])
    assert "not below" in problem and cited is None
    problem, cited = caught([r1], [r2.model_copy(update={"origin": "other/log"})])
    assert "not in this log" in problem and cited is None
    # Without the entries, only what the references alone show is checked.
    problem, _ = caught([r1], [r2.model_copy(update={"index": 99})], held=False)
    assert "not below" in problem
    log.add(continuity(log.seen, [r1], [r2.model_copy(update={"leaf_hash": "55" * 32})]), [log.lab])
    log.replay(held=False)


def _leaf(log: InProcessLog, index: int) -> str:
    return merkle.leaf_hash(log.entries[index]).hex()


def test_a_worker_continuity_statement_fails_the_key_chain() -> None:
    log = InProcessLog()
    r1 = log.add(probe_record(V1, log.seen), [log.worker])
    r2 = log.add(probe_record(V2, log.seen), [log.worker])
    log.add(continuity(log.seen, [r1], [r2]), [log.worker])
    with pytest.raises(EntryInvalid) as e:
        log.replay()
    assert e.value.stage == "key-chain"


# -- a node following a log whose operator cheats ---------------------------------------------


class Operator:
    """The operator of a server's data directory, writing to its database in process."""

    def __init__(self, data: Path, lab: Signer) -> None:
        self.server = LedgerServer.from_config(
            init_data_dir(data, origin_prefix=ORIGIN_PREFIX), extra_allow_labs=(str(lab.pub),)
        )
        self.h: HostedLog = self.server.logs["evidence"]
        assert isinstance(self.h.rule, EvidenceRule)
        self.rule: EvidenceRule = self.h.rule

    def seen(self) -> CheckpointRef:
        head = self.h.log.head()
        return CheckpointRef(origin=ORIGIN, size=head.size, root=head.root.hex())

    def admit(self, predicate: AnyPredicate, signers: list[Signing]) -> Admitted:
        return self.rule.admit(sign_statement(predicate, signers).canonical_bytes())

    def honest(self, admitted: list[Admitted]) -> list[LogEntryRef]:
        """Sequence through the admission rule, as the server does."""
        results = self.h.sequencer.integrate(admitted)
        assert all(isinstance(r, Sequenced) for r in results), results
        return [_ref(r) for r in results if isinstance(r, Sequenced)]

    def forge(self, predicate: AnyPredicate, signers: list[Signing]) -> LogEntryRef:
        """Sequence without any admission rule, signing the checkpoint with the log's key."""
        data = sign_statement(predicate, signers).canonical_bytes()
        (r,) = Sequencer(self.h.log, self.h.signer).integrate([data])
        assert isinstance(r, Sequenced)
        return _ref(r)


def _ref(r: Sequenced) -> LogEntryRef:
    return LogEntryRef(origin=ORIGIN, index=r.index, leaf_hash=r.leaf_hash.hex())


@pytest.fixture
def node_factory() -> Iterator[list[AuditNode]]:
    nodes: list[AuditNode] = []
    yield nodes
    for n in nodes:
        n.close()


def test_node_catches_an_admitted_bad_citation(
    tmp_path: Path, node_factory: list[AuditNode]
) -> None:
    lab = Signer.create(tmp_path / "keys", "lab")
    worker = Signer.create(tmp_path / "keys", "worker")
    lab_s, worker_s = (lab.name, lab.key), (worker.name, worker.key)
    op = Operator(tmp_path / "data", lab)
    worker_vkey = verifier_key(worker.name, worker.key.public_key())
    register = KeyEvent(
        seen_checkpoint=op.seen(),
        issued_at=ISSUED_AT,
        action="register",
        role="worker",
        key=worker_vkey,
    )
    op.honest([op.admit(register, [lab_s, worker_s])])
    r1, r2 = op.honest(
        [
            op.admit(probe_record(V1, op.seen()), [worker_s]),
            op.admit(probe_record(V2, op.seen()), [worker_s]),
        ]
    )
    # Enough reports that the citations below point into an earlier entry bundle.
    seen = op.seen()
    reports = [
        FieldReport(
            seen_checkpoint=seen,
            issued_at=ISSUED_AT,
            model=ModelId(name="m", version="v2"),
            category="grief",
            tier="anonymous",
            text=f"report {i}",
        )
        for i in range(260)
    ]
    op.honest([op.admit(r, [worker_s]) for r in reports])
    (good,) = op.honest([op.admit(continuity(op.seen(), [r1], [r2]), [lab_s])])
    wrong = r2.model_copy(update={"leaf_hash": "55" * 32})
    bad = op.forge(continuity(op.seen(), [r1], [wrong]), [lab_s])
    assert good.index > 256 and bad.index == good.index + 1
    op.server.store.close()

    srv = LedgerProcess(tmp_path / "data")
    srv.start()
    try:
        fl = follow(tmp_path / "node", srv.base_url)
        node = open_node(tmp_path / "node", node_factory)
        with pytest.raises(LogMisbehaved, match=f"entry {bad.index} fails citation") as caught:
            node.step(fl.origin)
    finally:
        srv.stop()
    ev = caught.value.evidence
    assert ev.kind == "invalid-entry" and ev.context is not None
    assert [c.index for c in ev.context.cited] == [r2.index]
    described = check_evidence(ev.to_json(), fl.vkey)
    assert f"entry {bad.index} is in" in described and "leaf hash" in described

    # Without the cited entry the record shows nothing: the reference alone looks fine.
    stripped = json.loads(ev.to_json())
    stripped["context"]["cited"] = []
    with pytest.raises(EvidenceError, match="re-validates"):
        check_evidence(json.dumps(stripped), fl.vkey)
    # A cited entry that is not in the log (here: at another index) proves nothing either.
    moved = json.loads(ev.to_json())
    moved["context"]["cited"][0]["index"] = r1.index
    with pytest.raises(EvidenceError):
        check_evidence(json.dumps(moved), fl.vkey)
