"""Key chains and anti-backdating in the evidence log's admission, on SQLite and PostgreSQL.

Each refusal the identity rules promise is its own named test; every accepted step is followed
by a full re-audit of the log (`TestLog.check`).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest.dsse import TrustedKey, sign_envelope
from attest.keys import generate_private_key, public_key_bytes, verifier_key
from attest.note import SIG_TYPE_COSIGNATURE_V1, format_vkey
from attest.predicates import (
    CheckpointRef,
    CredentialEvent,
    FieldReport,
    KeyEvent,
    ModelId,
)
from attest.statement import Statement, sign_statement, statement_bytes
from ledger.admission import AdmissionError, Admitted, EvidenceRule
from ledger.log import Log
from ledger.sequencer import Sequenced, Sequencer
from ledger.storage import Store
from tests.ledger.test_sequencer import ORIGIN, TestLog

NOW = 1_800_000_000
Signer = tuple[str, Ed25519PrivateKey]


def key(name: str) -> Signer:
    return (name, generate_private_key())


def vkey(s: Signer) -> str:
    return verifier_key(s[0], s[1].public_key())


class Chain:
    """An evidence log with an operator root, driven through admit + integrate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.t = TestLog(store)
        self.operator = key("operator")
        self.now = NOW
        self.rule = self._rule()
        self.t.seq = Sequencer(self.t.log, self.t.signer, rule=self.rule)

    def _rule(self) -> EvidenceRule:
        root = TrustedKey.named(self.operator[0], self.operator[1].public_key())
        return EvidenceRule(self.store, self.t.log.id, ORIGIN, roots=[root], clock=lambda: self.now)

    def restart(self) -> None:
        """A new process: the chain is rebuilt from the stored key events."""
        row = self.store.get_log("evidence")
        assert row is not None
        self.t.log = Log(self.store, row)
        self.rule = self._rule()
        self.t.seq = Sequencer(self.t.log, self.t.signer, rule=self.rule)

    def seen(self) -> dict[str, Any]:
        head = self.t.log.head()
        cp = CheckpointRef(origin=ORIGIN, size=head.size, root=head.root.hex())
        return {"seen_checkpoint": cp, "issued_at": self.now}

    def event(self, action: str, role: str, k: str, previous: str | None = None) -> KeyEvent:
        return KeyEvent(action=action, role=role, key=k, previous_key=previous, **self.seen())

    def report(self, text: str) -> FieldReport:
        return FieldReport(
            model=ModelId(name="m", version="1"),
            category="grief",
            tier="anonymous",
            text=text,
            **self.seen(),
        )

    def admit(self, predicate: Any, signers: list[Signer]) -> Admitted:
        return self.rule.admit(sign_statement(predicate, signers).canonical_bytes())

    def post(self, predicate: Any, signers: list[Signer]) -> Sequenced | AdmissionError:
        try:
            admitted = self.admit(predicate, signers)
        except AdmissionError as e:
            return e
        return self.batch([admitted])[0]

    def batch(self, items: list[Admitted]) -> list[Sequenced | AdmissionError]:
        results = self.t.seq.integrate(items)
        ok = [r for r in results if isinstance(r, Sequenced)]
        if ok:
            self.t.heads.append(ok[0].head)
        self.t.check()
        return results

    def ok(self, predicate: Any, signers: list[Signer]) -> Sequenced:
        r = self.post(predicate, signers)
        assert isinstance(r, Sequenced), r.diagnostic if isinstance(r, AdmissionError) else r
        return r

    def refused(self, predicate: Any, signers: list[Signer], status: int, error: str) -> str:
        size = self.t.log.head().size
        r = self.post(predicate, signers)
        assert isinstance(r, AdmissionError), f"admitted at {r}"
        assert (r.status, r.error) == (status, error), r.diagnostic
        assert self.t.log.head().size == size, "a refused entry took an index"
        return r.diagnostic

    def lab_and_worker(self) -> tuple[Signer, Signer]:
        lab, worker = key("lab"), key("worker")
        self.ok(self.event("register", "lab", vkey(lab)), [self.operator])
        self.ok(self.event("register", "worker", vkey(worker)), [lab, worker])
        return lab, worker


@pytest.fixture
def chain(db_url: str) -> Iterator[Chain]:
    store = Store(db_url)
    store.migrate()
    yield Chain(store)
    store.close()


def test_registered_chain_admits_and_survives_restart(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    chain.ok(chain.report("seen by the worker"), [worker])
    chain.ok(chain.report("seen by the lab"), [lab])
    chain.restart()
    chain.ok(chain.report("after restart"), [worker])
    stranger = key("stranger")
    chain.refused(chain.report("stranger"), [stranger], 403, "untrusted_signature")


def test_lab_registered_without_operator_is_refused(chain: Chain) -> None:
    lab = key("lab")
    msg = chain.refused(chain.event("register", "lab", vkey(lab)), [lab], 403, "not_authorised")
    assert "operator root" in msg


def test_worker_certified_by_unregistered_lab_is_refused(chain: Chain) -> None:
    lab, worker = key("lab"), key("worker")
    # Every signature must verify under a key the log knows: the unregistered lab's does not.
    chain.refused(
        chain.event("register", "worker", vkey(worker)), [lab, worker], 403, "untrusted_signature"
    )
    chain.refused(chain.event("register", "worker", vkey(worker)), [worker], 403, "not_authorised")
    chain.refused(chain.report("x"), [worker], 403, "untrusted_signature")


def test_worker_registration_without_proof_of_possession_is_refused(chain: Chain) -> None:
    lab, _ = chain.lab_and_worker()
    other = key("other")
    msg = chain.refused(
        chain.event("register", "worker", vkey(other)), [lab], 403, "not_authorised"
    )
    assert "did not sign its own registration" in msg


def test_rotation_signed_by_the_new_key_only_is_refused(chain: Chain) -> None:
    _, worker = chain.lab_and_worker()
    new = key("worker2")
    ev = chain.event("rotate", "worker", vkey(new), previous=vkey(worker))
    chain.refused(ev, [new], 403, "not_authorised")
    chain.refused(ev, [worker], 403, "not_authorised")
    chain.ok(ev, [worker, new])
    chain.ok(chain.report("from the rotated key"), [new])
    chain.refused(chain.report("from the old key"), [worker], 403, "untrusted_signature")


def test_lab_rotation_keeps_its_workers_certified(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    lab2 = key("lab2")
    chain.ok(chain.event("rotate", "lab", vkey(lab2), previous=vkey(lab)), [lab, lab2])
    chain.ok(chain.report("worker after lab rotation"), [worker])
    w2 = key("w2")
    chain.ok(chain.event("register", "worker", vkey(w2)), [lab2, w2])


def test_entry_signed_by_a_revoked_key_is_refused_at_and_after_revocation(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    before = chain.ok(chain.report("before revocation"), [worker])
    revoke = chain.admit(chain.event("revoke", "worker", vkey(worker)), [lab])
    late = chain.admit(chain.report("signed before, sequenced after"), [worker])
    # One batch: the revocation takes index r, the record would take r + 1.
    r_rev, r_late = chain.batch([revoke, late])
    assert isinstance(r_rev, Sequenced)
    assert isinstance(r_late, AdmissionError) and r_late.error == "not_authorised"
    chain.refused(chain.report("after revocation"), [worker], 403, "untrusted_signature")
    assert chain.t.log.entry(before.index)  # what it signed before stays in the log
    chain.refused(
        chain.event("register", "worker", vkey(worker)), [lab, worker], 403, "not_authorised"
    )  # a revoked key never comes back


def test_revoking_a_lab_invalidates_its_workers(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    chain.ok(chain.event("revoke", "lab", vkey(lab)), [chain.operator])
    chain.restart()
    chain.refused(chain.report("orphaned worker"), [worker], 403, "not_authorised")


def test_role_limits_what_a_key_may_state(chain: Chain) -> None:
    lab, worker = chain.lab_and_worker()
    holder = key("holder")
    cred = CredentialEvent(
        action="issue",
        credential_id="c1",
        tier="medical",
        holder_key=vkey(holder),
        expires_at=NOW + 86400,
        **chain.seen(),
    )
    chain.refused(cred, [worker], 403, "not_authorised")
    issuer = key("issuer")
    chain.ok(chain.event("register", "issuer", vkey(issuer)), [lab, issuer])
    chain.ok(cred, [issuer])


def test_witness_keys_are_cosignature_keys(chain: Chain) -> None:
    lab, _ = chain.lab_and_worker()
    name, w = key("witness")
    wkey = format_vkey(name, SIG_TYPE_COSIGNATURE_V1, public_key_bytes(w.public_key()))
    chain.ok(chain.event("register", "witness", wkey), [lab, (name, w)])


def test_statement_with_unknown_checkpoint_is_refused(chain: Chain) -> None:
    _, worker = chain.lab_and_worker()
    fields = chain.seen()
    forged = CheckpointRef(origin=ORIGIN, size=fields["seen_checkpoint"].size, root="ab" * 32)
    report = chain.report("x").model_copy(update={"seen_checkpoint": forged})
    chain.refused(report, [worker], 400, "unknown_checkpoint")
    future = CheckpointRef(origin=ORIGIN, size=10**6, root="ab" * 32)
    chain.refused(
        chain.report("x").model_copy(update={"seen_checkpoint": future}),
        [worker],
        400,
        "unknown_checkpoint",
    )
    other = CheckpointRef(origin="other.example/log", size=0, root=hashlib.sha256().hexdigest())
    chain.refused(
        chain.report("x").model_copy(update={"seen_checkpoint": other}),
        [worker],
        400,
        "unknown_checkpoint",
    )


def test_statement_from_the_future_is_refused(chain: Chain) -> None:
    _, worker = chain.lab_and_worker()
    late = chain.report("from the future").model_copy(update={"issued_at": NOW + 3600})
    chain.refused(late, [worker], 400, "future_statement")
    skewed = chain.report("a little ahead").model_copy(update={"issued_at": NOW + 60})
    chain.ok(skewed, [worker])


def test_float_and_unknown_field_in_payload_are_refused(chain: Chain) -> None:
    _, worker = chain.lab_and_worker()
    good = statement_bytes(Statement.of(chain.report("y")))
    for bad in (
        good.replace(b'"issuedAt":', b'"issuedAt":1.5,"x":', 1),
        good.replace(b'"category":', b'"nickname":"n","category":', 1),
    ):
        env = sign_envelope("application/vnd.in-toto+json", bad, [worker])
        with pytest.raises(AdmissionError) as e:
            chain.rule.admit(env.canonical_bytes())
        assert (e.value.status, e.value.error) == (400, "invalid_statement")


def test_allowed_key_is_a_thin_special_case(chain: Chain) -> None:
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
    chain.ok(chain.report("allowed"), [allowed])
    other = key("other")
    chain.refused(
        chain.event("register", "worker", vkey(other)), [allowed, other], 403, "not_authorised"
    )


def test_entries_from_admission_workers_are_decided_as_in_process(chain: Chain) -> None:
    """An admission worker's answer travels pickled; a statement phase 2 reads only by its type
    (a field report) travels without it (`ledger.admission.Admitted.__reduce__`), and is
    authorised or refused at its index exactly as the statement itself is; key events travel
    whole."""
    lab, worker = chain.lab_and_worker()
    issuer = key("issuer")
    chain.ok(chain.event("register", "issuer", vkey(issuer)), [lab, issuer])
    event = chain.admit(chain.event("register", "worker", vkey(key("w2"))), [lab])
    assert pickle.loads(pickle.dumps(event)) == event  # stateful: the statement comes along
    signer_sets = [[worker], [lab], [chain.operator], [issuer], [worker, issuer]]
    outcomes = []
    for round_ in ("before", "after"):
        for n, signers in enumerate(signer_sets):
            try:
                full = chain.admit(chain.report(f"{round_} {n} in process"), signers)
            except AdmissionError:  # refused in phase 1 (a key the chain no longer knows)
                continue
            wire = pickle.loads(pickle.dumps(chain.admit(chain.report(f"{round_} {n}"), signers)))
            assert wire.statement is None and full.statement is not None
            assert wire.predicate_type == full.statement.predicate_type
            # The wire copy first: a refusal takes no index, so both are judged at one index.
            got, want = chain.batch([wire])[0], chain.batch([full])[0]
            if isinstance(want, AdmissionError):
                assert isinstance(got, AdmissionError), got
                assert (got.status, got.error, got.diagnostic) == (
                    want.status,
                    want.error,
                    want.diagnostic,
                )
            else:
                assert isinstance(got, Sequenced), got.diagnostic
            outcomes.append(isinstance(want, Sequenced))
        if round_ == "before":
            chain.ok(chain.event("revoke", "lab", vkey(lab)), [chain.operator])
    assert True in outcomes and False in outcomes  # both kinds of decision were compared
