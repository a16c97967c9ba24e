"""The attested and anonymous logs' admission, in process, on SQLite and PostgreSQL.

Issuers, credentials and token keys live in the evidence log (driven through `Chain` from the
key-chain tests); the partitions consult its chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from attest import merkle
from attest.anonymous import sign_one_time
from attest.audit import audit_tree
from attest.merkle import EMPTY_ROOT
from attest.note import Ed25519NoteSigner
from attest.predicates import CheckpointRef, CredentialEvent, FieldReport, ModelId, TokenKey
from attest.privacypass import (
    Token,
    authorization,
    begin_issuance,
    finalize_issuance,
    issue,
    parse_www_authenticate,
    token_key_bytes,
)
from attest.receipt import open_receipt
from attest.statement import Statement, sign_statement, statement_bytes
from ledger import schema
from ledger.admission import AdmissionError
from ledger.log import Log
from ledger.partitions import AnonymousQueue, AnonymousRule, AttestedRule, anonymous_sequencer
from ledger.sequencer import Sequenced, Sequencer, signed_head
from ledger.storage import Store
from tests.attest.test_keychain import NOW, Chain, Signer, key, vkey

ATT_ORIGIN = "test.example/attested"
ANON_ORIGIN = "test.example/anonymous"
HOUR = 3600


def open_partition(store: Store, name: str, origin: str) -> tuple[Log, Ed25519NoteSigner]:
    from attest.keys import generate_private_key

    signer = Ed25519NoteSigner(origin, generate_private_key())
    row = store.create_log(
        name, origin, name, signer.vkey, signed_head(origin, 0, EMPTY_ROOT, signer)
    )
    return Log(store, row), signer


def empty_seen(origin: str) -> CheckpointRef:
    return CheckpointRef(origin=origin, size=0, root=hashlib.sha256().hexdigest())


@pytest.fixture
def chain(db_url: str) -> Iterator[Chain]:
    store = Store(db_url)
    store.migrate()
    yield Chain(store)
    store.close()


def issuers(chain: Chain, n: int) -> list[Signer]:
    lab, _ = chain.lab_and_worker()
    out = []
    for i in range(n):
        s = key(f"issuer{i}")
        chain.ok(chain.event("register", "issuer", vkey(s)), [lab, s])
        out.append(s)
    return out


def credential(chain: Chain, issuer: Signer, holder: Signer, tier: str, **kw: Any) -> Any:
    fields = {
        "action": "issue",
        "credential_id": "c-" + issuer[0],
        "tier": tier,
        "holder_key": vkey(holder),
        "expires_at": NOW + 86400,
        **kw,
    }
    return chain.ok(CredentialEvent(**fields, **chain.seen()), [issuer])


# -- attested -----------------------------------------------------------------------------------


class Attested:
    def __init__(self, chain: Chain, quorum: int = 2) -> None:
        self.chain = chain
        self.log, self.signer = open_partition(chain.store, "attested", ATT_ORIGIN)
        self.rule = AttestedRule(
            chain.store,
            self.log.id,
            ATT_ORIGIN,
            chain.rule,
            {"medical": quorum, "legal": quorum},
            clock=lambda: chain.now,
        )
        self.seq = Sequencer(self.log, self.signer, rule=self.rule)

    def report(self, holder: Signer, tier: str = "medical", text: str = "r") -> bytes:
        p = FieldReport(
            seen_checkpoint=empty_seen(ATT_ORIGIN),
            issued_at=NOW,
            model=ModelId(name="m", version="1"),
            category="medical-dosage",
            tier="attested",
            text=text,
            credential_tier=tier,
        )
        return sign_statement(p, [holder]).canonical_bytes()

    def post(self, body: bytes) -> Sequenced:
        (r,) = self.seq.integrate([self.rule.admit(body)])
        assert isinstance(r, Sequenced)
        return r

    def refused(self, body: bytes, error: str) -> str:
        with pytest.raises(AdmissionError) as e:
            self.rule.admit(body)
        assert e.value.error == error, e.value.diagnostic
        return e.value.diagnostic


def test_k_issuers_admit_and_k_minus_one_colluding_do_not(chain: Chain) -> None:
    a = Attested(chain, quorum=3)
    i1, i2, i3 = issuers(chain, 3)
    nurse = key("nurse")
    credential(chain, i1, nurse, "medical")
    credential(chain, i2, nurse, "medical")
    msg = a.refused(a.report(nurse), "credential_quorum")
    assert "2 distinct issuer(s)" in msg and "3 needed" in msg
    credential(chain, i3, nurse, "medical")
    a.post(a.report(nurse))


def test_one_issuer_cannot_fill_two_slots(chain: Chain) -> None:
    a = Attested(chain)
    (i1,) = issuers(chain, 1)
    nurse = key("nurse")
    credential(chain, i1, nurse, "medical")
    chain.refused(
        CredentialEvent(
            action="issue",
            credential_id="again",
            tier="medical",
            holder_key=vkey(nurse),
            expires_at=NOW + 9,
            **chain.seen(),
        ),
        [i1],
        403,
        "not_authorised",
    )
    # The same issuer key cannot come back as a second issuer identity either (R5).
    lab = key("lab2")
    chain.ok(chain.event("register", "lab", vkey(lab)), [chain.operator])
    chain.refused(chain.event("register", "issuer", vkey(i1)), [lab, i1], 403, "not_authorised")
    a.refused(a.report(nurse), "credential_quorum")


def test_credential_never_logged_is_refused(chain: Chain) -> None:
    a = Attested(chain)
    issuers(chain, 2)
    stranger = key("stranger")
    a.refused(a.report(stranger), "untrusted_signature")


def test_revoked_and_expired_credentials_are_refused(chain: Chain) -> None:
    a = Attested(chain)
    i1, i2, i3 = issuers(chain, 3)
    nurse = key("nurse")
    credential(chain, i1, nurse, "medical")
    credential(chain, i2, nurse, "medical", expires_at=NOW + 100)
    a.post(a.report(nurse, text="while valid"))
    chain.now = NOW + 100  # i2's credential expires
    a.refused(a.report(nurse, text="after expiry"), "credential_quorum")
    chain.now = NOW
    chain.ok(
        CredentialEvent(
            action="revoke",
            credential_id="c-issuer0",
            tier="medical",
            holder_key=vkey(nurse),
            expires_at=NOW + 86400,
            **chain.seen(),
        ),
        [i1],
    )
    a.refused(a.report(nurse, text="after revocation"), "credential_quorum")
    # Only the issuer that issued a credential revokes it.
    credential(chain, i3, nurse, "medical")
    chain.refused(
        CredentialEvent(
            action="revoke",
            credential_id="c-issuer2",
            tier="medical",
            holder_key=vkey(nurse),
            expires_at=0,
            **chain.seen(),
        ),
        [i2],
        403,
        "not_authorised",
    )


def test_credential_for_one_tier_does_not_open_another(chain: Chain) -> None:
    a = Attested(chain)
    i1, i2 = issuers(chain, 2)
    lawyer = key("lawyer")
    credential(chain, i1, lawyer, "legal")
    credential(chain, i2, lawyer, "legal")
    a.post(a.report(lawyer, tier="legal"))
    a.refused(a.report(lawyer, tier="medical", text="m"), "credential_quorum")
    a.refused(a.report(lawyer, tier="security-research", text="s"), "unknown_tier")


def test_attested_log_takes_only_attested_reports(chain: Chain) -> None:
    a = Attested(chain)
    (i1,) = issuers(chain, 1)
    body = sign_statement(chain.report("evidence-style"), [i1]).canonical_bytes()
    a.refused(body, "wrong_partition")


# -- anonymous ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Anonymous:
    def __init__(self, chain: Chain, sk: rsa.RSAPrivateKey) -> None:
        self.chain, self.sk = chain, sk
        self.log, self.signer = open_partition(chain.store, "anonymous", ANON_ORIGIN)
        self.rule = AnonymousRule(
            chain.store, self.log.id, ANON_ORIGIN, chain.rule, clock=lambda: chain.now
        )
        self.seq = anonymous_sequencer(self.log, self.signer, self.rule)
        self.queue = AnonymousQueue(self.seq, self.signer, interval=60, clock=lambda: chain.now)
        (self.issuer,) = issuers(chain, 1)

    def publish(self, action: str = "publish", not_after: int = NOW + 86400) -> None:
        spki = base64.b64encode(token_key_bytes(self.sk.public_key())).decode()
        self.chain.ok(
            TokenKey(action=action, token_key=spki, not_after=not_after, **self.chain.seen()),
            [self.issuer],
        )

    def token(self) -> Token:
        challenge = self.rule.challenge_for(self.issuer[0])
        req, state = begin_issuance(self.sk.public_key(), challenge)
        return finalize_issuance(state, issue(self.sk, req))

    def report(self, text: str, issued_at: int = NOW // HOUR * HOUR) -> bytes:
        p = FieldReport(
            seen_checkpoint=empty_seen(ANON_ORIGIN),
            issued_at=issued_at,
            model=ModelId(name="m", version="1"),
            category="grief",
            tier="anonymous",
            text=text,
        )
        return sign_one_time(statement_bytes(Statement.of(p))).canonical_bytes()

    def refused(self, body: bytes, auth: str | None, error: str) -> AdmissionError:
        with pytest.raises(AdmissionError) as e:
            self.rule.admit(body, auth)
        assert e.value.error == error, e.value.diagnostic
        return e.value


def test_anonymous_write_needs_a_token_and_gets_a_receipt(chain: Chain, token_key: Any) -> None:
    an = Anonymous(chain, token_key)
    an.publish()
    err = an.refused(an.report("no token"), None, "token_required")
    assert err.status == 401
    (challenge,) = parse_www_authenticate(err.headers["WWW-Authenticate"])
    assert challenge.challenge == an.rule.challenge_for(an.issuer[0])

    admitted = an.rule.admit(an.report("with token"), authorization(an.token()))
    acc = an.queue.accept(admitted)
    receipt = open_receipt(acc.receipt, an.signer.verifier())
    assert receipt.leaf_hash == merkle.leaf_hash(admitted.leaf) == acc.leaf_hash
    assert an.log.head().size == 0, "nothing is integrated before the batch"
    assert an.queue.integrate_pending() == 1
    head = an.log.head()
    assert head.size == 1 and an.log.index_of(acc.leaf_hash) == 0
    assert chain.store.pending(an.log.id, 10) == []


def test_identical_reports_of_two_people_are_two_entries(chain: Chain, token_key: Any) -> None:
    """Two one-time keys sign the same report, each with its own token: both receipts must
    come true, so the anonymous log does not fold them into one entry per statement."""
    an = Anonymous(chain, token_key)
    an.publish()
    first, second = an.report("it refused me"), an.report("it refused me")
    assert first != second, "different one-time keys"
    accepted = [
        an.queue.accept(an.rule.admit(body, authorization(an.token()))) for body in (first, second)
    ]
    assert an.queue.integrate_pending() == 2
    assert [an.log.index_of(a.leaf_hash) for a in accepted] in ([0, 1], [1, 0])


def test_double_spending_is_refused_under_concurrency(chain: Chain, token_key: Any) -> None:
    an = Anonymous(chain, token_key)
    an.publish()
    auth = authorization(an.token())
    results: list[str] = []

    def redeem(i: int) -> None:
        try:
            an.rule.admit(an.report(f"spend {i}"), auth)
            results.append("ok")
        except AdmissionError as e:
            results.append(e.error)

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["token_spent"] * 7


def test_bad_tokens_and_exact_times_are_refused(chain: Chain, token_key: Any) -> None:
    an = Anonymous(chain, token_key)
    an.refused(an.report("x"), authorization(an.token()), "bad_token")  # key not published
    an.publish()
    an.refused(
        an.report("exact", issued_at=NOW // HOUR * HOUR + 17),
        authorization(an.token()),
        "exact_time",
    )
    forged = an.token()
    forged = Token(forged.nonce, forged.challenge_digest, forged.token_key_id, bytes(256))
    an.refused(an.report("forged"), authorization(forged), "bad_token")
    an.refused(an.report("garbage"), "PrivateToken token=AAAA", "bad_token")
    # Another origin's challenge does not redeem here.
    other = AnonymousRule(chain.store, an.log.id, "elsewhere.example/anonymous", chain.rule)
    req, state = begin_issuance(token_key.public_key(), other.challenge_for(an.issuer[0]))
    an.refused(
        an.report("elsewhere"),
        authorization(finalize_issuance(state, issue(token_key, req))),
        "bad_token",
    )


def test_retired_and_expired_token_keys_are_refused(chain: Chain, token_key: Any) -> None:
    an = Anonymous(chain, token_key)
    an.publish(not_after=NOW + 10)
    tok = authorization(an.token())
    chain.now = NOW + 10
    an.refused(an.report("late", issued_at=NOW // HOUR * HOUR), tok, "bad_token")
    chain.now = NOW
    an.publish(action="retire", not_after=NOW + 10)
    an.refused(an.report("retired"), authorization(an.token()), "bad_token")


def test_identity_fields_are_refused(chain: Chain, token_key: Any) -> None:
    an = Anonymous(chain, token_key)
    an.publish()
    env = json.loads(an.report("clean"))
    payload = base64.b64decode(env["payload"])
    smuggled = payload.replace(b'"category":', b'"ipAddress":"10.0.0.1","category":', 1)
    body = sign_one_time(smuggled).canonical_bytes()
    an.refused(body, authorization(an.token()), "invalid_statement")


def test_batches_are_shuffled_and_stay_auditable(chain: Chain, token_key: Any) -> None:
    an = Anonymous(chain, token_key)
    an.publish()
    leaves = []
    for i in range(40):
        acc = an.queue.accept(an.rule.admit(an.report(f"batch {i}"), authorization(an.token())))
        leaves.append(acc.leaf_hash)
    an.queue.integrate_pending()
    head = an.log.head()
    order = [an.log.index_of(h) for h in leaves]
    assert sorted(order) == list(range(40))
    assert order != list(range(40)), "the log order must not be the arrival order"
    audit_tree(
        head.size,
        head.root,
        lambda t, w: an.log.tile(t, head.size),
        lambda i, w: an.log.bundle(i, head.size),
    )
    with chain.store._read.connect() as conn:
        created = (
            conn.execute(
                select(schema.checkpoints.c.created_at).where(
                    schema.checkpoints.c.log_id == an.log.id
                )
            )
            .scalars()
            .all()
        )
    assert created and all(c % HOUR == 0 for c in created)
