"""The admission rules as pure functions (`attest.admission`): each refusal names its stage, the
statement digest ignores the signatures around a statement, and every signature must verify."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import attest.admission as rules
from attest.admission import STAGES, AdmissionRefused, statement_digest
from attest.dsse import Envelope, Signature, TrustedKey, sign_envelope
from attest.errors import KeyNameError
from attest.keychain import KeyChain
from attest.keys import dsse_keyid, generate_private_key, public_key_bytes
from attest.predicates import CheckpointRef, FieldReport, ModelId
from attest.statement import Statement, sign_statement, statement_bytes

ORIGIN = "admission.test/evidence"
SEEN = CheckpointRef(origin=ORIGIN, size=0, root=hashlib.sha256().hexdigest())
KEYS = [(f"k{i}", generate_private_key()) for i in range(3)]


def report(tier: str = "anonymous", issued_at: int = 7200, text: str = "t") -> FieldReport:
    return FieldReport(
        seen_checkpoint=SEEN,
        issued_at=issued_at,
        model=ModelId(name="m", version="1"),
        category="grief",
        tier=tier,
        text=text,
    )


def refused(stage: str, call: object, *args: object, **kw: object) -> AdmissionRefused:
    with pytest.raises(AdmissionRefused) as e:
        call(*args, **kw)  # type: ignore[operator]
    assert e.value.stage == stage and stage in STAGES, e.value.diagnostic
    return e.value


def test_each_step_refuses_at_its_stage() -> None:
    env = sign_statement(report(), KEYS[:1])
    stmt = Statement.of(report())
    assert refused("envelope", rules.parse_envelope, b"{").reason == "malformed"
    odd = Envelope("text/plain", b"x", env.signatures)
    assert refused("statement", rules.parse_payload, odd).reason == "payload-type"
    assert refused("backdating", rules.check_seen, stmt, "other/log", None).reason == (
        "unknown-checkpoint"
    )
    assert (
        refused("backdating", rules.check_seen, stmt, ORIGIN, lambda size: None).reason
        == "unknown-checkpoint"
    )
    assert (
        refused("backdating", rules.check_seen, stmt, ORIGIN, None, now=0, skew=10).reason
        == "future"
    )
    assert refused("signature", rules.verify_every_signature, env, []).reason == "signature"
    assert refused("partition", rules.field_report, stmt, "attested").reason == "wrong-partition"
    refused("coarse-time", rules.check_coarse_time, report(issued_at=7201))
    refused("key-chain", rules.authorise, KeyChain(), 0, stmt, frozenset())


def test_every_reason_has_an_http_answer() -> None:
    """The log maps every reason the rules can give (`ledger.admission.STATUS`)."""
    from ledger.admission import STATUS

    tree = ast.parse(Path(rules.__file__).read_text())
    reasons = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "reason" and isinstance(kw.value, ast.Constant)
    }
    stages_without_reason = {"signature", "key-chain", "citation", "credentials", "coarse-time"}
    assert reasons and (reasons | stages_without_reason) <= set(STATUS)


@given(
    order=st.permutations(range(3)),
    repeat=st.integers(0, 2),
    junk=st.integers(0, 2),
    keyid=st.text(max_size=20),
)
def test_statement_digest_ignores_the_signatures(
    order: list[int], repeat: int, junk: int, keyid: str
) -> None:
    """Reordered, repeated, junk or relabelled signatures: one statement, one digest."""
    env = sign_statement(report(), KEYS)
    sigs = [env.signatures[i] for i in order] + list(env.signatures[:repeat])
    sigs += [Signature(keyid or "x", os.urandom(64)) for _ in range(junk)]
    sigs[0] = Signature(keyid or sigs[0].keyid, sigs[0].sig)
    mutated = Envelope(env.payload_type, env.payload, tuple(sigs))
    assert statement_digest(mutated) == statement_digest(env)


def test_statement_digest_covers_type_and_payload() -> None:
    payload = statement_bytes(Statement.of(report()))
    a = sign_envelope("application/vnd.in-toto+json", payload, KEYS[:1])
    b = sign_envelope("application/other", payload, KEYS[:1])
    c = sign_statement(report(text="other"), KEYS[:1])
    assert len({statement_digest(a), statement_digest(b), statement_digest(c)}) == 3


def test_every_signature_must_verify_under_the_key_its_keyid_names() -> None:
    env = sign_statement(report(), KEYS[:2])
    trusted = [TrustedKey.named(n, k.public_key()) for n, k in KEYS[:2]]
    assert [k.raw() for k in rules.verify_every_signature(env, trusted)] == [
        public_key_bytes(k.public_key()) for _, k in KEYS[:2]
    ]
    # One of two known: the other signature names no key this log knows.
    assert "names no key" in str(
        refused("signature", rules.verify_every_signature, env, trusted[:1])
    )
    # A junk signature under a known keyid.
    junk = Signature(env.signatures[0].keyid, os.urandom(64))
    bad = Envelope(env.payload_type, env.payload, (*env.signatures, junk))
    assert "does not verify" in str(
        refused("signature", rules.verify_every_signature, bad, trusted)
    )
    # The same key twice.
    twice = Envelope(env.payload_type, env.payload, (*env.signatures, env.signatures[0]))
    assert "signed twice" in str(refused("signature", rules.verify_every_signature, twice, trusted))


def test_self_named_keys_verify_under_any_name_their_key_id_binds() -> None:
    """Operator roots and allowed keys are known to the log by a file name: a signer may name
    them otherwise, but the key id must be that of the name and the key."""
    name, key = KEYS[0]
    fixed = [TrustedKey.named("file-stem", key.public_key())]
    env = sign_statement(report(), [(name, key)])
    assert rules.verify_every_signature(env, [], fixed)[0].keyid == dsse_keyid(
        name, key.public_key()
    )
    forged = Signature(f"{name}+00000000", env.signatures[0].sig)
    bad = Envelope(env.payload_type, env.payload, (forged,))
    refused("signature", rules.verify_every_signature, bad, [], fixed)


def _named_by_reference(keyid: str, keys: list[TrustedKey]) -> list[TrustedKey]:
    """`_named_by` as it was, computing every key id afresh."""
    name = keyid.rpartition("+")[0]
    try:
        return [
            TrustedKey(keyid, k.public_key) for k in keys if dsse_keyid(name, k.public_key) == keyid
        ]
    except KeyNameError:
        return []


@given(
    name=st.one_of(st.sampled_from(["k0", "file-stem", "a b", "x+y", "", "\u00e9"]), st.text()),
    which=st.integers(0, 2),
    own=st.booleans(),
    count=st.integers(0, 3),
)
def test_named_by_answers_as_computed_afresh(name: str, which: int, own: bool, count: int) -> None:
    """The key ids of self-named keys are remembered per (name, key): the keys a keyid names
    are the same as computing each key id afresh, asked once or again, valid name or not."""
    keys = [TrustedKey.named("file-stem", k.public_key()) for _, k in KEYS[:count]]
    key = KEYS[which][1].public_key()
    try:
        keyid = dsse_keyid(name, key) if own else f"{name}+00000000"
    except KeyNameError:
        keyid = f"{name}+00000000"
    want = _named_by_reference(keyid, keys)
    assert rules._named_by(keyid, keys) == want
    assert rules._named_by(keyid, keys) == want


def test_base64_alphabets_are_one_leaf() -> None:
    env = sign_statement(report(), KEYS[:1])
    obj = env.to_json()
    url = {
        **obj,
        "payload": str(obj["payload"]).replace("+", "-").replace("/", "_").rstrip("="),
    }
    assert rules.leaf_data(rules.parse_envelope(json.dumps(url).encode())) == env.canonical_bytes()


@given(data=st.binary(max_size=256))
def test_entry_statement_digest_never_raises(data: bytes) -> None:
    """The sequencer derives digests of queued bytes: junk gives None, never an exception."""
    digest = rules.entry_statement_digest(data)
    assert digest is None or len(digest) == 32


def test_entry_statement_digest_of_hostile_json() -> None:
    assert rules.entry_statement_digest(b"[" * 100_000) is None
    assert rules.entry_statement_digest(b'{"payload":"YQ==","payloadType":"\\ud800"}') is None
    assert rules.entry_statement_digest(b'{"payload":"!!","payloadType":"x"}') is None
    env = sign_statement(report(), KEYS[:1])
    assert rules.entry_statement_digest(env.canonical_bytes()) == statement_digest(env)
