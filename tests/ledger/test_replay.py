"""Replayed statements and revocation that sticks, on SQLite and PostgreSQL.

Finding 1: a published envelope re-posted with its signatures repeated, reordered, thinned, a
junk signature added, another keyid or another base64 alphabet is one entry (the log answers
with the entry it holds, `duplicate`) or a clean refusal, never a second entry.
Finding 2: an issuance whose credential was revoked cannot come back, however it is re-posted.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest import merkle
from attest.admission import statement_digest
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature, sign_envelope
from attest.keys import dsse_keyid
from attest.predicates import CredentialEvent
from attest.statement import sign_statement
from attest.tiles import encode_bundle
from ledger.admission import AdmissionError
from ledger.log import Log
from ledger.sequencer import Sequenced, Sequencer
from ledger.storage import Batch, Store
from tests.attest.test_keychain import NOW, Chain, Signer, key, vkey
from tests.ledger.test_partitions import Attested, issuers
from tests.ledger.test_sequencer import TestLog
from tests.support import Signer as SupportSigner
from tests.support import envelope_body, move_schema, running_server, statement_payload

JSON = dict[str, Any]


@pytest.fixture
def chain(db_url: str) -> Iterator[Chain]:
    store = Store(db_url)
    store.migrate()
    yield Chain(store)
    store.close()


def publish(chain: Chain) -> tuple[Envelope, Sequenced, Signer, Signer]:
    """A field report signed by a lab and its worker, sequenced."""
    lab, worker = chain.lab_and_worker()
    env = sign_statement(chain.report("published"), [lab, worker])
    (r,) = chain.batch([chain.rule.admit(env.canonical_bytes())])
    assert isinstance(r, Sequenced) and not r.duplicate
    return env, r, lab, worker


def post(chain: Chain, obj: JSON) -> Sequenced | AdmissionError:
    """POST-equivalent: admit the JSON body, then sequence it."""
    try:
        admitted = chain.rule.admit(json.dumps(obj).encode())
    except AdmissionError as e:
        return e
    (r,) = chain.batch([admitted])
    return r


def junk_sig() -> str:
    return base64.b64encode(os.urandom(64)).decode()


def urlsafe(text: str) -> str:
    return text.replace("+", "-").replace("/", "_").rstrip("=")


MUTATIONS: dict[str, Callable[[JSON, Signer, Signer], JSON]] = {
    "signature-repeated": lambda e, lab, w: {
        **e,
        "signatures": [*e["signatures"], e["signatures"][0]],
    },
    "junk-signature-known-keyid": lambda e, lab, w: {
        **e,
        "signatures": [*e["signatures"], {"keyid": e["signatures"][1]["keyid"], "sig": junk_sig()}],
    },
    "junk-signature-first": lambda e, lab, w: {
        **e,
        "signatures": [{"keyid": "mallory+00000000", "sig": junk_sig()}, *e["signatures"]],
    },
    "another-keyid": lambda e, lab, w: {
        **e,
        "signatures": [{**e["signatures"][0], "keyid": "mallory+12345678"}, e["signatures"][1]],
    },
    "keyids-swapped": lambda e, lab, w: {
        **e,
        "signatures": [
            {"keyid": e["signatures"][1]["keyid"], "sig": e["signatures"][0]["sig"]},
            {"keyid": e["signatures"][0]["keyid"], "sig": e["signatures"][1]["sig"]},
        ],
    },
    "keyid-renamed": lambda e, lab, w: {
        **e,
        "signatures": [
            {**e["signatures"][0], "keyid": dsse_keyid("mallory", lab[1].public_key())},
            e["signatures"][1],
        ],
    },
    "order-reversed": lambda e, lab, w: {**e, "signatures": e["signatures"][::-1]},
    "one-signature-dropped": lambda e, lab, w: {**e, "signatures": e["signatures"][1:]},
    "urlsafe-base64": lambda e, lab, w: {
        **e,
        "payload": urlsafe(e["payload"]),
        "signatures": [{**s, "sig": urlsafe(s["sig"])} for s in e["signatures"]],
    },
}
REFUSED = {
    "signature-repeated",
    "junk-signature-known-keyid",
    "junk-signature-first",
    "another-keyid",
    "keyids-swapped",
    "keyid-renamed",
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_replayed_statement_is_one_entry(chain: Chain, mutation: str) -> None:
    """Finding 1: each replay is refused (every signature must verify under the key its keyid
    names, once) or answered with the entry the log holds; the tree does not grow."""
    env, first, lab, worker = publish(chain)
    size = chain.t.log.head().size
    r = post(chain, MUTATIONS[mutation](env.to_json(), lab, worker))
    if mutation in REFUSED:
        assert isinstance(r, AdmissionError), f"admitted at {r}"
        assert (r.status, r.error) == (403, "untrusted_signature"), r.diagnostic
    else:
        assert isinstance(r, Sequenced), r.diagnostic if isinstance(r, AdmissionError) else r
        assert (r.index, r.leaf_hash, r.duplicate) == (first.index, first.leaf_hash, True)
    assert chain.t.log.head().size == size
    assert chain.t.log.entry(first.index) == env.canonical_bytes()


OPS = st.sampled_from(sorted(MUTATIONS))


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=4))
def test_replay_property_one_entry_per_statement(chain: Chain, ops: list[str]) -> None:
    """Finding 1, as a property: any chain of mutations of a published envelope gives one
    entry per statement (the first) or a clean refusal (400 or 403)."""
    if chain.t.log.head().size == 0:
        chain.published = publish(chain)  # type: ignore[attr-defined]
    env, first, lab, worker = chain.published  # type: ignore[attr-defined]
    size = chain.t.log.head().size
    obj = env.to_json()
    for op in ops:
        if len(obj["signatures"]) < 2 and op not in ("urlsafe-base64", "signature-repeated"):
            continue
        obj = MUTATIONS[op](obj, lab, worker)
    r = post(chain, obj)
    if isinstance(r, AdmissionError):
        assert r.status in (400, 403), r.diagnostic
    else:
        assert (r.index, r.leaf_hash, r.duplicate) == (first.index, first.leaf_hash, True)
    assert chain.t.log.head().size == size


def test_statements_race_to_one_entry(db_url: str) -> None:
    """Finding 1: two writers (two stores, as two processes) sequencing two envelopes of one
    statement at once produce one entry; the other answer is that entry, `duplicate`."""
    stores = [Store(db_url) for _ in range(2)]
    stores[0].migrate()
    try:
        t = TestLog(stores[0])
        lab, worker = key("lab"), key("worker")
        payload = b'{"n": 1}'
        a = sign_statement_bytes(payload, [lab, worker])
        b = sign_statement_bytes(payload, [worker, lab])
        row = stores[1].get_log("evidence")
        assert row is not None
        seqs = [t.seq, Sequencer(Log(stores[1], row), t.signer)]
        results: list[Sequenced] = []
        barrier = threading.Barrier(2)

        def write(seq: Sequencer, entry: bytes) -> None:
            barrier.wait()
            (r,) = seq.integrate([entry])
            assert isinstance(r, Sequenced)
            results.append(r)

        threads = [threading.Thread(target=write, args=x) for x in zip(seqs, (a, b), strict=True)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert t.log.head().size == 1
        assert sorted(r.duplicate for r in results) == [False, True]
        assert {r.index for r in results} == {0}
        assert len({r.leaf_hash for r in results}) == 1
    finally:
        for s in stores:
            s.close()


def sign_statement_bytes(payload: bytes, signers: list[Signer]) -> bytes:
    return sign_envelope("application/x-test", payload, signers).canonical_bytes()


def test_statement_digest_is_unique_in_storage(db_url: str) -> None:
    """Finding 1: the statement-digest primary key refuses a second entry of one statement
    even to a writer that skipped the lookup."""
    store = Store(db_url)
    store.migrate()
    try:
        t = TestLog(store)
        t.add([sign_statement_bytes(b"x", [key("a")])])
        digest = statement_digest(Envelope.from_json(t.log.entry(0)))
        # The rows go through the driver (executemany on SQLite, COPY on PostgreSQL), so the
        # error is the driver's own.
        unique = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)
        with pytest.raises(unique), store.writer(t.log.id) as txn:
            head = t.log.head()
            txn.commit_batch(
                Batch(head.size, head, {}, {}, [], 0, statements=[(digest, head.size)])
            )
    finally:
        store.close()


def test_migration_indexes_the_statements_already_logged(db_url: str) -> None:
    """Finding 1: upgrading a log that holds two envelopes of one statement (logged before the
    statement-digest index existed) names the first; a later re-post answers with it."""
    store = Store(db_url)
    try:
        move_schema(store, "0004")
        t = TestLog(store)
        one, two = key("one"), key("two")
        a = sign_statement_bytes(b"s", [one])
        b = sign_statement_bytes(b"s", [two])
        c = sign_statement_bytes(b"other", [one])
        with store._write.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO bundles (log_id, idx, count, data) VALUES (:l, 0, 3, :d)"),
                {"l": t.log.id, "d": encode_bundle([a, b, c])},
            )
        move_schema(store, "0005")  # later revisions keep the rows below the watermark only
        with store._write.begin() as conn:
            q = sa.text("SELECT digest, idx FROM statements WHERE log_id = :l")
            rows = {bytes(d): int(i) for d, i in conn.execute(q, {"l": t.log.id})}
        digest = {e: statement_digest(Envelope.from_json(e)) for e in (a, b, c)}
        assert rows == {digest[a]: 0, digest[c]: 2}
    finally:
        store.close()


# -- finding 2: revocation is final ---------------------------------------------------------------


def issuance(
    chain: Chain, issuer: Signer, holder: Signer, credential_id: str, action: str
) -> Envelope:
    event = CredentialEvent(
        action=action,
        credential_id=credential_id,
        tier="medical",
        holder_key=vkey(holder),
        expires_at=NOW + 86400,
        **chain.seen(),
    )
    return sign_statement(event, [issuer])


def test_revoked_credential_does_not_come_back(chain: Chain) -> None:
    """Finding 2: issue i1, issue i2, revoke i1: re-posting i1's issuance (as it was, with its
    signature repeated, or re-signed by its issuer under the same credential id) never brings
    the credential back, and the holder's attested report stays refused."""
    a = Attested(chain)
    i1, i2 = issuers(chain, 2)
    nurse = key("nurse")
    first = issuance(chain, i1, nurse, "i1", "issue")
    (issued,) = chain.batch([chain.rule.admit(first.canonical_bytes())])
    assert isinstance(issued, Sequenced)
    (second,) = chain.batch(
        [chain.rule.admit(issuance(chain, i2, nurse, "i2", "issue").canonical_bytes())]
    )
    assert isinstance(second, Sequenced)
    a.post(a.report(nurse, text="while credentialed"))
    (revoked,) = chain.batch(
        [chain.rule.admit(issuance(chain, i1, nurse, "i1", "revoke").canonical_bytes())]
    )
    assert isinstance(revoked, Sequenced)
    a.refused(a.report(nurse, text="after revocation"), "credential_quorum")
    size = chain.t.log.head().size

    # As it was: the entry the log holds, not a new one.
    again = post(chain, first.to_json())
    assert isinstance(again, Sequenced) and again.duplicate and again.index == issued.index
    # Its signature repeated: refused.
    obj = first.to_json()
    repeated = post(chain, {**obj, "signatures": obj["signatures"] * 2})
    assert isinstance(repeated, AdmissionError) and repeated.status == 403
    # Re-signed by the issuer under the same credential id (a new statement): refused (R8).
    chain.now += 1
    resigned = post(chain, issuance(chain, i1, nurse, "i1", "issue").to_json())
    assert isinstance(resigned, AdmissionError), f"admitted at {resigned}"
    assert resigned.error == "not_authorised" and "issued before" in resigned.diagnostic
    assert chain.t.log.head().size == size
    a.refused(a.report(nurse, text="after the replay"), "credential_quorum")
    # A restarted log rebuilds the same chain from its key events.
    chain.restart()
    resigned = post(chain, issuance(chain, i1, nurse, "i1", "issue").to_json())
    assert isinstance(resigned, AdmissionError) and resigned.error == "not_authorised"


def test_reposted_statement_answers_with_the_logged_entry_over_http(tmp_path: Path) -> None:
    """Finding 1 through `bledger serve`: a re-post of a published statement with fewer
    signatures answers 200 with the logged entry's index, leaf hash and inclusion proof and
    `duplicate: true`; with a junk signature added it is refused (403)."""
    alice = SupportSigner.create(tmp_path / "keys", "alice")
    bob = SupportSigner.create(tmp_path / "keys", "bob")
    payload = statement_payload("replayed")
    env = sign_envelope(
        IN_TOTO_PAYLOAD_TYPE, payload, [(alice.name, alice.key), (bob.name, bob.key)]
    )
    url = "/logs/evidence/entries"
    with running_server(tmp_path / "data", allow_keys=(alice.pub, bob.pub)) as srv:
        first = httpx.post(srv.base_url + url, content=envelope_body(env), timeout=30)
        assert first.status_code == 200, first.text
        assert first.json()["duplicate"] is False
        thinner = Envelope(env.payload_type, env.payload, env.signatures[1:])
        again = httpx.post(srv.base_url + url, content=envelope_body(thinner), timeout=30)
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["duplicate"] is True
        assert (body["index"], body["leaf_hash"]) == (
            first.json()["index"],
            first.json()["leaf_hash"],
        )
        leaf = base64.b64decode(body["leaf_hash"])
        assert leaf == merkle.leaf_hash(env.canonical_bytes())
        size, root = _checkpoint_size_root(body["checkpoint"])
        proof = [base64.b64decode(h) for h in body["inclusion_proof"]]
        merkle.verify_inclusion(leaf, body["index"], size, proof, root)
        junk = Envelope(
            env.payload_type,
            env.payload,
            (*env.signatures, Signature(env.signatures[0].keyid, os.urandom(64))),
        )
        refused = httpx.post(srv.base_url + url, content=envelope_body(junk), timeout=30)
        assert refused.status_code == 403 and refused.json()["error"] == "untrusted_signature"
        assert httpx.get(srv.base_url + "/logs/evidence/checkpoint").text.split("\n")[1] == "1"


def _checkpoint_size_root(note: str) -> tuple[int, bytes]:
    lines = note.split("\n")
    return int(lines[1]), base64.b64decode(lines[2])
