"""Audit nodes apply the replay rules the log does (`attest.admission`, one copy).

Finding 2, as an audit node sees it: a log that admits an issuance of a credential after its
revocation — the same envelope with its signature repeated, the same bytes at a new index, or
the issuer's re-signed issuance under the same credential id — shows an invalid entry.
Finding 1: an entry carrying a signature that does not verify is invalid too, and so is a
second entry of a statement the log already holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from attest.dsse import Envelope, TrustedKey
from attest.keychain import KeyChain
from attest.keys import generate_private_key, verifier_key
from attest.predicates import (
    AnyPredicate,
    CheckpointRef,
    CredentialEvent,
    FieldReport,
    KeyEvent,
    ModelId,
)
from attest.statement import sign_statement
from ledger.sequencer import Sequenced, Sequencer
from tests.support import Signer, running_server
from tests.verifier.test_auditor import follow, open_node
from tests.verifier.test_continuity_audit import ISSUED_AT, Operator
from verifier.auditor import AuditNode, LogMisbehaved
from verifier.evidence import verify_evidence as check_evidence
from verifier.revalidate import EntryInvalid, validate_entry

ORIGIN = "audit.test/evidence"
SEEN = CheckpointRef(origin=ORIGIN, size=0, root=hashlib.sha256().hexdigest())
Signing = tuple[str, object]


class Replayed:
    """An evidence log's entries as an audit node re-validates them, in index order."""

    def __init__(self) -> None:
        self.operator = ("operator", generate_private_key())
        pub = self.operator[1].public_key()
        self.fixed = [TrustedKey.named("operator", pub)]
        self.chain = KeyChain([pub.public_bytes_raw()])
        self.index = 0

    def entry(self, predicate: AnyPredicate, signers: list[Signing]) -> bytes:
        return sign_statement(predicate, signers).canonical_bytes()  # type: ignore[arg-type]

    def validate(self, entry: bytes) -> None:
        validate_entry(self.index, entry, ORIGIN, self.chain, self.fixed, None)
        self.index += 1

    def refused(self, entry: bytes, stage: str) -> str:
        with pytest.raises(EntryInvalid) as e:
            validate_entry(self.index, entry, ORIGIN, self.chain, self.fixed, None)
        assert e.value.stage == stage, e.value.diagnostic
        return e.value.diagnostic


def vkey(s: Signing) -> str:
    return verifier_key(s[0], s[1].public_key())  # type: ignore[attr-defined]


def credential(action: str, holder: Signing, credential_id: str, at: int) -> CredentialEvent:
    return CredentialEvent(
        action=action,
        credential_id=credential_id,
        tier="medical",
        holder_key=vkey(holder),
        expires_at=at + 86400,
        seen_checkpoint=SEEN,
        issued_at=at,
    )


@pytest.fixture
def node_factory() -> Iterator[list[AuditNode]]:
    nodes: list[AuditNode] = []
    yield nodes
    for n in nodes:
        n.close()


@pytest.fixture
def log() -> tuple[Replayed, Signing, Signing, bytes]:
    """Lab and issuer registered; the issuer issued credential i1 to a nurse, then revoked it."""
    r = Replayed()
    lab, issuer, nurse = (
        ("lab", generate_private_key()),
        ("issuer", generate_private_key()),
        ("nurse", generate_private_key()),
    )
    ev = {"seen_checkpoint": SEEN, "issued_at": 1}
    r.validate(r.entry(KeyEvent(action="register", role="lab", key=vkey(lab), **ev), [r.operator]))
    r.validate(
        r.entry(KeyEvent(action="register", role="issuer", key=vkey(issuer), **ev), [lab, issuer])
    )
    issued = r.entry(credential("issue", nurse, "i1", 2), [issuer])
    r.validate(issued)
    r.validate(r.entry(credential("revoke", nurse, "i1", 3), [issuer]))
    assert (
        r.chain.credential_issuers(nurse[1].public_key().public_bytes_raw(), "medical", 4) == set()
    )  # type: ignore[attr-defined]
    return r, issuer, nurse, issued


def test_audit_node_refuses_a_revoked_credential_replayed_as_is(
    log: tuple[Replayed, Signing, Signing, bytes],
) -> None:
    r, _, _, issued = log
    assert "issued before" in r.refused(issued, "key-chain")


def test_audit_node_refuses_a_revoked_credential_with_its_signature_repeated(
    log: tuple[Replayed, Signing, Signing, bytes],
) -> None:
    r, _, _, issued = log
    obj = json.loads(issued)
    obj["signatures"] = obj["signatures"] * 2
    assert "signed twice" in r.refused(Envelope.from_json(obj).canonical_bytes(), "signature")


def test_audit_node_refuses_a_revoked_credential_reissued_under_its_id(
    log: tuple[Replayed, Signing, Signing, bytes],
) -> None:
    r, issuer, nurse, _ = log
    again = r.entry(credential("issue", nurse, "i1", 5), [issuer])
    assert "issued before" in r.refused(again, "key-chain")
    # A new credential id is a new credential: the issuer may credential the nurse again.
    r.validate(r.entry(credential("issue", nurse, "i2", 5), [issuer]))


def test_audit_node_refuses_an_entry_with_a_junk_signature(
    log: tuple[Replayed, Signing, Signing, bytes],
) -> None:
    r, issuer, nurse, _ = log
    good = json.loads(r.entry(credential("issue", nurse, "i3", 6), [issuer]))
    junk = {
        "keyid": good["signatures"][0]["keyid"],
        "sig": base64.b64encode(os.urandom(64)).decode(),
    }
    good["signatures"].append(junk)
    assert "does not verify" in r.refused(Envelope.from_json(good).canonical_bytes(), "signature")


# -- finding 1, as an audit node sees it: one entry per statement --------------------------------


def test_audit_node_catches_a_second_entry_of_one_statement(
    tmp_path: Path, node_factory: list[AuditNode]
) -> None:
    """A log that sequences a second envelope of a statement it holds (its operator cleared the
    statement-digest index and wrote behind the admission rule) is caught by a node that
    verified the first entry in an earlier step, with evidence anyone can re-check."""
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
    report = FieldReport(
        seen_checkpoint=op.seen(),
        issued_at=ISSUED_AT,
        model=ModelId(name="m", version="v1"),
        category="grief",
        tier="anonymous",
        text="published once",
    )
    (first,) = op.honest([op.admit(report, [worker_s])])
    op.server.store.close()
    with running_server(tmp_path / "data") as srv:
        fl = follow(tmp_path / "node", srv.base_url)
        assert open_node(tmp_path / "node", node_factory).step(fl.origin).size == first.index + 1

    op = Operator(tmp_path / "data", lab)
    with op.server.store._write.begin() as conn:  # the operator clears the digest index
        conn.execute(sa.text("DELETE FROM statements"))
    (second,) = Sequencer(op.h.log, op.h.signer).integrate(
        [sign_statement(report, [worker_s, lab_s]).canonical_bytes()]
    )
    assert isinstance(second, Sequenced) and not second.duplicate
    op.server.store.close()

    with running_server(tmp_path / "data") as srv:
        fl = follow(tmp_path / "node", srv.base_url)
        node = open_node(tmp_path / "node", node_factory)
        with pytest.raises(LogMisbehaved, match=f"entry {second.index} fails duplicate") as caught:
            node.step(fl.origin)
    ev = caught.value.evidence
    assert ev.kind == "invalid-entry" and ev.context is not None
    assert ev.context.stage == "duplicate"
    assert [c.index for c in ev.context.cited] == [first.index]
    assert "hold one statement" in check_evidence(ev.to_json(), fl.vkey)
