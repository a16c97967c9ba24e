"""The parallel audit (`verifier.parallel`) reports what the serial one does.

Each corrupted log is re-validated twice, serially with `validate_entry` and with worker
processes (chunks of 64 entries, so chunk edges fall inside the logs), and both must stop at the
same first failure: the same index, stage and diagnostic. A clean log passes both with the same
key chain at the end, most entries on the fast path.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.admission import parse_entry, parse_payload, statement_digest
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature, TrustedKey, pae, sign_envelope
from attest.errors import AttestError
from attest.keychain import KeyChain
from attest.keys import dsse_keyid, generate_private_key, public_key_bytes, verifier_key
from attest.predicates import AnyPredicate, CheckpointRef, FieldReport, KeyEvent, ModelId
from attest.statement import parse_statement, sign_statement
from ledger.sequencer import Sequencer
from tests.support import Signer, running_server
from tests.verifier.test_auditor import follow
from tests.verifier.test_continuity_audit import ISSUED_AT, Operator
from verifier import auditor, parallel
from verifier.auditor import AuditNode, LogMisbehaved
from verifier.parallel import (
    ParallelChecker,
    ReplayMemo,
    validate_entries,
    validate_prechecked,
    verify_ed25519,
)
from verifier.revalidate import EntryInvalid, validate_entry

ORIGIN = "audit.test/parallel"
SEEN = CheckpointRef(origin=ORIGIN, size=0, root=hashlib.sha256().hexdigest())
CHUNK = 64
Named = tuple[str, Ed25519PrivateKey]
Failure = tuple[int, str, str] | None


@pytest.fixture(scope="module")
def checker() -> Iterator[ParallelChecker]:
    with ParallelChecker(2, chunk=CHUNK) as c:
        yield c


def vkey(s: Named) -> str:
    return verifier_key(s[0], s[1].public_key())


def report(i: int, **seen: Any) -> FieldReport:
    ctx = {"seen_checkpoint": SEEN, "issued_at": 1_800_000_000, **seen}
    return FieldReport(
        model=ModelId(name="m", version="1"),
        category="grief",
        tier="anonymous",
        text=f"r{i}",
        **ctx,
    )


def signed(predicate: AnyPredicate, signers: list[Named]) -> bytes:
    return sign_statement(predicate, signers).canonical_bytes()


class Log:
    """An evidence log: the operator registers a lab, the lab a worker, then reports."""

    def __init__(self) -> None:
        self.operator: Named = ("operator", generate_private_key())
        self.lab: Named = ("lab", generate_private_key())
        self.worker: Named = ("worker", generate_private_key())
        self.entries = [
            self.key_event("register", "lab", self.lab, [self.operator]),
            self.key_event("register", "worker", self.worker, [self.lab, self.worker]),
        ]

    def key_event(self, action: Any, role: Any, key: Named, by: list[Named]) -> bytes:
        ev = KeyEvent(action=action, role=role, key=vkey(key), seen_checkpoint=SEEN, issued_at=1)
        return signed(ev, by)

    def reports(self, n: int, by: Named | None = None) -> None:
        start = len(self.entries)
        self.entries += [signed(report(start + i), [by or self.worker]) for i in range(n)]

    def chain(self) -> KeyChain:
        return KeyChain([public_key_bytes(self.operator[1].public_key())])

    @property
    def fixed(self) -> list[TrustedKey]:
        return [TrustedKey.named("operator", self.operator[1].public_key())]


def serial(log: Log) -> tuple[Failure, KeyChain]:
    chain = log.chain()
    for i, e in enumerate(log.entries):
        try:
            validate_entry(i, e, ORIGIN, chain, log.fixed, None)
        except EntryInvalid as err:
            return (err.index, err.stage, err.problem), chain
    return None, chain


def in_parallel(log: Log, checker: ParallelChecker) -> tuple[Failure, KeyChain, ReplayMemo]:
    chain, memo = log.chain(), ReplayMemo()
    try:
        memo = validate_entries(
            0, log.entries, ORIGIN, chain, log.fixed, None, checker, min_parallel=1
        )
    except EntryInvalid as err:
        return (err.index, err.stage, err.problem), chain, memo
    return None, chain, memo


def same_first_failure(log: Log, checker: ParallelChecker, stage: str, index: int) -> None:
    want, _ = serial(log)
    got, _, _ = in_parallel(log, checker)
    assert want is not None and want[:2] == (index, stage), want
    assert got == want


def rewrite(entry: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The entry with its envelope JSON changed, re-encoded canonically."""
    obj = json.loads(entry)
    change(obj)
    return Envelope.from_json(obj).canonical_bytes()


# -- a clean log ----------------------------------------------------------------------------------


def test_a_clean_log_passes_both_with_the_same_chain(checker: ParallelChecker) -> None:
    log = Log()
    log.reports(300)
    want, chain_s = serial(log)
    got, chain_p, memo = in_parallel(log, checker)
    assert want is None and got is None
    assert chain_p.by_keyid == chain_s.by_keyid and chain_p.current == chain_s.current
    # Nearly every report on the fast path: the two key events and the first report of the
    # worker (which teaches the memo that the chain authorises it) go through the reference.
    assert memo.serial == 3 and memo.fast == len(log.entries) - 3


def test_a_key_registered_inside_a_chunk_authorises_later_entries_of_that_chunk(
    checker: ParallelChecker,
) -> None:
    log = Log()
    log.reports(CHUNK + 10)
    second: Named = ("worker2", generate_private_key())
    log.entries.append(log.key_event("register", "worker", second, [log.lab, second]))
    log.reports(40, by=second)
    log.reports(5)
    got, _, memo = in_parallel(log, checker)
    assert got is None and serial(log)[0] is None
    # 3 key events; the first report of each worker, and of the first again once the chain
    # changed under it
    assert memo.serial == 6


# -- the same first failure ---------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7])
def test_bad_signature_at_entry_k(checker: ParallelChecker, k: int) -> None:
    log = Log()
    log.reports(3 * CHUNK)

    def flip(obj: dict[str, Any]) -> None:
        sig = bytearray(base64.b64decode(obj["signatures"][0]["sig"]))
        sig[10] ^= 1
        obj["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()

    log.entries[k] = rewrite(log.entries[k], flip)
    log.entries[k + 3] = rewrite(log.entries[k + 3], flip)  # only the first one is reported
    same_first_failure(log, checker, "signature", k)


@pytest.mark.parametrize("k", [CHUNK - 1, CHUNK + 2])
def test_tampered_payload(checker: ParallelChecker, k: int) -> None:
    log = Log()
    log.reports(2 * CHUNK)
    other = signed(report(10_000), [log.worker])

    def swap(obj: dict[str, Any]) -> None:  # another statement under this entry's signature
        obj["payload"] = json.loads(other)["payload"]

    log.entries[k] = rewrite(log.entries[k], swap)
    same_first_failure(log, checker, "signature", k)


def test_key_used_before_it_is_certified(checker: ParallelChecker) -> None:
    log = Log()
    log.reports(CHUNK)
    early: Named = ("early", generate_private_key())
    log.reports(1, by=early)  # index 66, signed by a key registered only at 70
    log.reports(3)
    log.entries.append(log.key_event("register", "worker", early, [log.lab, early]))
    log.reports(10, by=early)
    same_first_failure(log, checker, "signature", CHUNK + 2)


@pytest.mark.parametrize("gap", [1, 5, CHUNK + 3])
def test_key_used_after_revocation(checker: ParallelChecker, gap: int) -> None:
    log = Log()
    log.reports(CHUNK - 10)
    revoke_at = len(log.entries)
    log.entries.append(log.key_event("revoke", "worker", log.worker, [log.lab]))
    log.reports(gap + 5, by=("lab", log.lab[1]))  # the lab may file reports too
    log.entries[revoke_at + gap] = signed(report(99_999), [log.worker])  # verifies as Ed25519
    same_first_failure(log, checker, "signature", revoke_at + gap)


def test_key_under_a_name_the_chain_does_not_give_it(checker: ParallelChecker) -> None:
    """The worker's key signs under another name: a keyid the chain maps to no key at this
    index, though a later (refused) key event names that key so, and the signature verifies
    under it. The parent must ask the chain, not the workers, which key a keyid names."""
    log = Log()
    log.reports(20)
    alias: Named = ("alias", log.worker[1])
    log.entries.append(signed(report(77_777), [alias]))  # index 22
    log.reports(5)
    log.entries.append(log.key_event("register", "worker", alias, [log.lab, alias]))
    same_first_failure(log, checker, "signature", 22)


def test_non_canonical_envelope(checker: ParallelChecker) -> None:
    log = Log()
    log.reports(CHUNK + 5)
    obj = json.loads(log.entries[CHUNK])
    log.entries[CHUNK] = json.dumps(obj, indent=1).encode()  # the same envelope, spaced out
    same_first_failure(log, checker, "envelope", CHUNK)
    log.entries[CHUNK] = json.dumps(dict(reversed(obj.items())), separators=(",", ":")).encode()
    same_first_failure(log, checker, "envelope", CHUNK)


def test_statement_that_does_not_parse(checker: ParallelChecker) -> None:
    log = Log()
    log.reports(10)
    stmt = json.loads(base64.b64decode(json.loads(log.entries[5])["payload"]))
    stmt["predicate"]["category"] = "Not A Token"
    payload = json.dumps(stmt, separators=(",", ":"), sort_keys=True).encode()
    log.entries[5] = sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, [log.worker]).canonical_bytes()
    same_first_failure(log, checker, "statement", 5)


def test_backdated_statement(checker: ParallelChecker) -> None:
    log = Log()
    log.reports(10)
    ahead = CheckpointRef(origin=ORIGIN, size=50, root=SEEN.root)
    log.entries[7] = signed(report(7, seen_checkpoint=ahead), [log.worker])
    same_first_failure(log, checker, "backdating", 7)


def test_a_key_signing_twice(checker: ParallelChecker) -> None:
    log = Log()
    log.reports(CHUNK + 2)

    def twice(obj: dict[str, Any]) -> None:
        obj["signatures"] = obj["signatures"] * 2

    log.entries[CHUNK] = rewrite(log.entries[CHUNK], twice)
    same_first_failure(log, checker, "signature", CHUNK)


def test_an_unauthorised_statement(checker: ParallelChecker) -> None:
    """A worker key that registers itself, without a lab's signature, is refused by the chain."""
    log = Log()
    log.reports(CHUNK - 1)
    rogue: Named = ("rogue", generate_private_key())
    log.entries.append(log.key_event("register", "worker", rogue, [rogue]))
    log.reports(3, by=rogue)
    same_first_failure(log, checker, "key-chain", CHUNK + 1)


@pytest.mark.parametrize("gap", [1, CHUNK])
def test_key_whose_certifier_was_revoked(checker: ParallelChecker, gap: int) -> None:
    """Revoking the lab revokes the worker it certified: the chain still maps the worker's
    keyid to its key, the signature verifies, and only the chain's authorisation refuses."""
    log = Log()
    log.reports(CHUNK - 5)
    revoke_at = len(log.entries)
    log.entries.append(log.key_event("revoke", "lab", log.lab, [log.operator]))
    log.reports(gap + 3)
    same_first_failure(log, checker, "key-chain", revoke_at + 1)


def test_a_dead_worker_leaves_the_entries_to_the_serial_path() -> None:
    log = Log()
    log.reports(30 * CHUNK)
    with ParallelChecker(2, chunk=CHUNK) as own:
        own.start()
        chain, memo = log.chain(), ReplayMemo()
        pre = own.precheck(0, log.entries, chain, log.fixed)
        for process in own._executor()._processes.values():  # the workers die mid-batch
            process.kill()
        for i, entry in enumerate(log.entries):
            validate_prechecked(i, entry, ORIGIN, chain, log.fixed, None, pre.get(i), memo)
        assert memo.fast + memo.serial == len(log.entries) and memo.serial > 3
        assert chain.by_keyid == serial(log)[1].by_keyid
        # The next batch starts a new pool.
        again = validate_entries(
            0, log.entries, ORIGIN, log.chain(), log.fixed, None, own, min_parallel=1
        )
        assert again.fast == len(log.entries) - 3


# -- the audit node catching up on a followed log ------------------------------------------------


def _node_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: bool
) -> list[tuple[object, ...]]:
    """Catch up on a log of 800-odd entries (one worker key event, then reports, with a report
    by an unregistered key at index 701 when `bad`) with a serial node and a parallel one."""
    monkeypatch.setattr(auditor, "MIN_PARALLEL", 64)
    monkeypatch.setattr(AuditNode, "_PREFETCH_BUNDLES", 2)  # windows of 2 bundles
    lab = Signer.create(tmp_path / "keys", "lab")
    worker = Signer.create(tmp_path / "keys", "worker")
    lab_s, worker_s = (lab.name, lab.key), (worker.name, worker.key)
    op = Operator(tmp_path / "data", lab)
    register = KeyEvent(
        seen_checkpoint=op.seen(),
        issued_at=ISSUED_AT,
        action="register",
        role="worker",
        key=verifier_key(worker.name, worker.key.public_key()),
    )
    op.honest([op.admit(register, [lab_s, worker_s])])
    sequencer = Sequencer(op.h.log, op.h.signer)

    def reports(n: int, by: Any, tag: str) -> list[bytes]:
        ctx = {"seen_checkpoint": op.seen(), "issued_at": ISSUED_AT}
        return [
            signed(report(i, **ctx).model_copy(update={"text": f"{tag}{i}"}), [by])
            for i in range(n)
        ]

    sequencer.integrate(reports(700, worker_s, "a"))
    stranger = ("stranger", generate_private_key())
    sequencer.integrate(reports(1, stranger if bad else worker_s, "b"))
    sequencer.integrate(reports(100, worker_s, "c"))
    op.server.store.close()
    out: list[tuple[object, ...]] = []
    with running_server(tmp_path / "data") as srv:
        for name, workers in (("serial", 1), ("parallel", 2)):
            fl = follow(tmp_path / name, srv.base_url)
            node = AuditNode.open(tmp_path / name, workers=workers)
            try:
                if bad:
                    with pytest.raises(LogMisbehaved) as caught:
                        node.step(fl.origin)
                    ev = caught.value.evidence
                    assert ev.context is not None
                    out.append(
                        (str(caught.value), ev.entry, ev.context.stage, ev.context.key_events)
                    )
                else:
                    result = node.step(fl.origin)
                    head = node.state.head(fl.origin)
                    assert head is not None
                    events = node.state.key_events(fl.origin)
                    out.append((result.size, result.new_entries, head.root, events))
                assert (node.checker is not None and node.checker.started) == (workers > 1)
            finally:
                node.close()
    return out


def test_audit_node_catches_up_in_parallel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serial_view, parallel_view = _node_verdicts(tmp_path, monkeypatch, bad=False)
    assert serial_view == parallel_view and serial_view[0] == serial_view[1]
    assert isinstance(serial_view[0], int) and serial_view[0] > 800


def test_audit_node_in_parallel_raises_the_serial_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial_view, parallel_view = _node_verdicts(tmp_path, monkeypatch, bad=True)
    assert "invalid-entry" in str(serial_view[0]) and serial_view[2] == "signature"
    assert serial_view == parallel_view


# -- the parent checks the key at each index, whatever the workers verified ---------------------


def test_the_fast_path_takes_the_chains_key_not_the_workers() -> None:
    log = Log()
    chain = log.chain()
    for i, e in enumerate(log.entries):
        validate_entry(i, e, ORIGIN, chain, log.fixed, None)
    worker_raw = public_key_bytes(log.worker[1].public_key())
    entry = signed(report(5), [log.worker])
    env = Envelope.from_json(entry)
    kid = env.signatures[0].keyid
    message = pae(env.payload_type, env.payload)
    facts = parallel.check_entry(entry, {kid: (worker_raw,)}, ())
    assert facts is not None and facts[4][0][1] == {worker_raw: True}
    memo = ReplayMemo({(facts[0], frozenset({worker_raw}))})
    assert validate_prechecked(2, entry, ORIGIN, chain, log.fixed, None, facts, memo)[0] is None
    assert memo.fast == 1 and verify_ed25519(worker_raw, env.signatures[0].sig, message)
    # Revoke the worker behind the memo's back: the chain no longer maps its keyid to a key.
    del chain.by_keyid[kid]
    with pytest.raises(EntryInvalid) as refused:
        validate_prechecked(3, entry, ORIGIN, chain, log.fixed, None, facts, memo)
    assert refused.value.stage == "signature" and memo.serial == 1


# -- the worker reads what the reference reads, and defers on anything else ----------------------


def reference_facts(entry: bytes) -> tuple[str, str, int, str, bytes]:
    """What steps 1-2 of `validate_entry` read of an entry that a worker must agree with."""
    env = parse_entry(entry)
    stmt = parse_statement(env.payload)
    seen = stmt.predicate.seen_checkpoint
    digest = statement_digest(env)
    return stmt.predicate_type, seen.origin, seen.size, seen.root, digest


def test_worker_reads_what_the_reference_reads() -> None:
    log = Log()
    log.reports(3)
    worker_raw = public_key_bytes(log.worker[1].public_key())
    kid = Envelope.from_json(log.entries[2]).signatures[0].keyid
    for entry in log.entries[2:]:
        facts = parallel.check_entry(entry, {kid: (worker_raw,)}, ())
        assert facts is not None
        assert (*facts[:4], facts[5]) == reference_facts(entry)
        assert facts[4] == ((kid, {worker_raw: True}, ()),)
    # Beyond the BMP the field-report reader defers; the statement parse itself answers.
    emoji = signed(report(0).model_copy(update={"text": "\U0001f600"}), [log.worker])
    facts = parallel.check_entry(emoji, {kid: (worker_raw,)}, ())
    assert facts is not None and (*facts[:4], facts[5]) == reference_facts(emoji)
    # A key event changes the chain: the parent replays it whole.
    assert parallel.check_entry(log.entries[0], {}, ()) is None


def test_worker_defers_on_what_the_reference_refuses() -> None:
    log = Log()
    log.reports(1)
    entry = log.entries[2]
    refused = [b" " + entry, entry.replace(b'"payload"', b'"payload" ', 1)]
    for text in _base64_variants(json.loads(entry)["payload"]):
        variant = json.dumps({**json.loads(entry), "payload": text}, separators=(",", ":"))
        refused.append(variant.encode())
    payload = Envelope.from_json(entry).payload
    obj = json.loads(payload)
    obj["predicate"]["extra"] = 1
    for bad in (
        payload.replace(b'"category"', b'"category" ', 1),
        payload.replace(b'"grief"', b'"\\u0067rief"', 1),
        json.dumps(obj, separators=(",", ":"), sort_keys=True).encode(),
        payload.replace(b"1800000000", b"NaN", 1),
    ):
        refused.append(sign_envelope(IN_TOTO_PAYLOAD_TYPE, bad, [log.worker]).canonical_bytes())
    assert len(refused) >= 8
    for data in refused:
        assert parallel.check_entry(data, {}, ()) is None
        with pytest.raises(AttestError):  # and the reference refuses each
            reference_facts(data)
    other_type = sign_envelope("application/json", payload, [log.worker]).canonical_bytes()
    assert parallel.check_entry(other_type, {}, ()) is None
    with pytest.raises(AttestError):
        parse_payload(parse_entry(other_type))


def _base64_variants(text: str) -> list[str]:
    """Other spellings of the same bytes: unpadded, URL-safe, with stray trailing bits."""
    body = text.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = [body]
    out += [text.replace("+", "-").replace("/", "_")]
    if text.endswith("="):  # the last character carries 2 or 4 bits that encode nothing
        out += [body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1] + text[len(body) :]]
    return [v for v in out if v != text]


# -- Ed25519: libsodium accepts, cryptography decides -------------------------------------------

L = 2**252 + 27742317777372353535851937790883648493


def _crypto(raw: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


def _sodium(raw: bytes, sig: bytes, msg: bytes) -> bool:
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    try:
        crypto_sign_open(sig + msg, raw)
    except (BadSignatureError, ValueError):
        return False
    return True


def _edge_cases() -> list[tuple[str, bytes, bytes, bytes]]:
    key = generate_private_key()
    raw, msg = public_key_bytes(key.public_key()), b"DSSEv1 message"
    sig = key.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    identity = (1).to_bytes(32, "little")  # the neutral point, of order 1
    non_canonical_identity = (2**255 - 19 + 1).to_bytes(32, "little")  # y = p + 1
    return [
        ("valid", raw, sig, msg),
        ("other message", raw, sig, msg + b"!"),
        ("flipped R", raw, bytes([sig[0] ^ 1]) + sig[1:], msg),
        ("S + L (non-canonical S)", raw, sig[:32] + (s + L).to_bytes(32, "little"), msg),
        ("S = L", raw, sig[:32] + L.to_bytes(32, "little"), msg),
        ("short", raw, sig[:63], msg),
        ("zeros", raw, bytes(64), msg),
        # A small-order public key with R the neutral point and S = 0: the cofactorless
        # equation holds for every message; OpenSSL and libsodium may disagree on it.
        ("small-order key", identity, identity + bytes(32), msg),
        ("non-canonical small-order key", non_canonical_identity, identity + bytes(32), msg),
        ("non-canonical R", raw, non_canonical_identity + sig[32:], msg),
    ]


@pytest.mark.parametrize("case", _edge_cases(), ids=lambda c: c[0])
def test_ed25519_verdict_is_cryptographys(case: tuple[str, bytes, bytes, bytes]) -> None:
    _, raw, sig, msg = case
    assert verify_ed25519(raw, sig, msg) == _crypto(raw, sig, msg)
    # libsodium accepts nothing cryptography refuses (its acceptance is the only answer taken).
    assert not _sodium(raw, sig, msg) or _crypto(raw, sig, msg)


def test_ed25519_signatures_of_a_log() -> None:
    log = Log()
    log.reports(5)
    for entry in log.entries:
        env = Envelope.from_json(entry)
        message = pae(env.payload_type, env.payload)
        for sig in env.signatures:
            raws = [
                public_key_bytes(k[1].public_key())
                for k in (log.operator, log.lab, log.worker)
                if dsse_keyid(k[0], k[1].public_key()) == sig.keyid
            ]
            for raw in raws:
                assert verify_ed25519(raw, sig.sig, message) and _crypto(raw, sig.sig, message)
            bad = Signature(sig.keyid, bytes(64)).sig
            assert not any(verify_ed25519(r, bad, message) for r in raws)
