"""C2SP tlog-policy: each syntax rule of the spec as a named case, quorum evaluation against a
naive recursive reference (Hypothesis), and Policy.check / check_tlog_proof against forged,
replayed, repeated and unknown cosignatures."""

from __future__ import annotations

import hashlib
from itertools import combinations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.cosignature import CosignatureSigner
from attest.errors import AttestError, PolicyError
from attest.merkle import inclusion_proof, leaf_hash, root_hash
from attest.note import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Ed25519NoteSigner,
    Note,
    NoteSignature,
    add_signatures,
    format_vkey,
    parse_note,
)
from attest.policy import NONE, PolicySyntaxError, QuorumError, parse_policy
from attest.tlog_proof import TlogProof, format_tlog_proof


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


ORIGIN = "example.test/log"
LOG = Ed25519NoteSigner(ORIGIN, _key("log"))
OTHER_LOG = Ed25519NoteSigner("other.test/log", _key("other log"))
WITNESSES = {f"w{i}": CosignatureSigner(f"witness.test/w{i}", _key(f"w{i}")) for i in range(8)}
W1, W2, W3 = WITNESSES["w1"], WITNESSES["w2"], WITNESSES["w3"]
STRANGER = CosignatureSigner("stranger.test/w", _key("stranger"))
TS = 1_700_000_000
CP = Checkpoint(ORIGIN, 5, hashlib.sha256(b"root 5").digest())
CP_OTHER = Checkpoint(ORIGIN, 6, hashlib.sha256(b"root 6").digest())


def _pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _cosigned(cp: Checkpoint, *signers: CosignatureSigner, log: Ed25519NoteSigner = LOG) -> bytes:
    note = sign_checkpoint(cp, log)
    return add_signatures(note, [s.at(TS + i) for i, s in enumerate(signers)]) if signers else note


def _with_lines(note: bytes, *extra: NoteSignature) -> bytes:
    """`note` with `extra` signature lines appended verbatim (add_signatures would dedupe)."""
    parsed = parse_note(note)
    return Note(parsed.text, parsed.signatures + extra).to_bytes()


def _policy(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def _witness_lines(*names: str) -> list[str]:
    return [f"witness {n} {WITNESSES[n].vkey}" for n in names]


SPEC_EXAMPLE = _policy(
    f"log {LOG.vkey}",
    "",
    *_witness_lines("w1", "w2", "w3"),
    "group X-witnesses 2 w1 w2 w3",
    "",
    *_witness_lines("w4", "w5", "w6"),
    "group Y-witnesses any w4 w5 w6",
    "",
    "group X-and-Y all X-witnesses Y-witnesses",
    "quorum X-and-Y",
)


# -- syntax: valid files ----------------------------------------------------------------------


def test_spec_example_parses_and_evaluates() -> None:
    p = parse_policy(SPEC_EXAMPLE)
    assert [log.origin for log in p.logs] == [ORIGIN]
    assert list(p.witnesses) == ["w1", "w2", "w3", "w4", "w5", "w6"]
    assert [(g.name, g.threshold) for g in p.groups.values()] == [
        ("X-witnesses", 2),
        ("Y-witnesses", 1),
        ("X-and-Y", 2),
    ]
    assert p.quorum == "X-and-Y"
    assert p.satisfied_by({"w1", "w3", "w5"})
    assert not p.satisfied_by({"w1", "w4", "w5", "w6"})  # only one X
    assert not p.satisfied_by({"w1", "w2", "w3"})  # no Y
    assert p.shortfall({"w1"}) == 2


def test_quorum_none_needs_no_witness_and_no_witness_lines() -> None:
    p = parse_policy(_policy(f"log {LOG.vkey}", "quorum none"))
    assert p.quorum == NONE and not p.witnesses
    assert p.satisfied_by(())


def test_policy_without_logs_is_allowed() -> None:
    p = parse_policy(_policy(*_witness_lines("w1"), "quorum w1"))
    assert p.logs == ()


def test_comments_blank_lines_and_space_or_tab_separators() -> None:
    text = (
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        " \t \n"
        f"\t log \t {LOG.vkey}  https://log.example/  \n"
        f"witness\tw1\t{W1.vkey}\n"
        "quorum   w1   \n"
    )
    p = parse_policy(text)
    assert p.logs[0].url == "https://log.example/"
    assert p.quorum == "w1"


def test_optional_urls() -> None:
    p = parse_policy(
        _policy(f"log {LOG.vkey}", f"witness w1 {W1.vkey} https://w1.example/sub", "quorum w1")
    )
    assert p.logs[0].url is None
    assert p.witnesses["w1"].url == "https://w1.example/sub"


@pytest.mark.parametrize(("k", "want"), [("all", 3), ("any", 1), ("1", 1), ("2", 2), ("3", 3)])
def test_group_thresholds(k: str, want: int) -> None:
    p = parse_policy(
        _policy(*_witness_lines("w1", "w2", "w3"), f"group g {k} w1 w2 w3", "quorum g")
    )
    assert p.groups["g"].threshold == want


def test_names_are_opaque_octets() -> None:
    # "K" and the Kelvin sign are different names; a non-UTF-8 octet is just part of a name.
    text = _policy(
        f"witness K {W1.vkey}", f"witness \u212a {W2.vkey}", "group g all K \u212a", "quorum g"
    ).encode() + f"witness \xff {W3.vkey}\n".encode("latin-1")
    p = parse_policy(text)
    assert len(p.witnesses) == 3
    assert not p.satisfied_by({"K"})
    assert p.satisfied_by({"K", "\u212a"})


def test_names_may_look_like_keywords() -> None:
    p = parse_policy(
        _policy(*_witness_lines("w1"), f"witness all {W2.vkey}", "group any 2 w1 all", "quorum any")
    )
    assert p.satisfied_by({"w1", "all"})


# -- syntax: each rule broken, by name ----------------------------------------------------------

_DUP_LOG_KEY = format_vkey("renamed.test/log", SIG_TYPE_ED25519, _pub(_key("log")))
_DUP_WITNESS_KEY = format_vkey("renamed.test/w1", SIG_TYPE_COSIGNATURE_V1, _pub(_key("w1")))
_LOG_AS_COSIGNER = format_vkey(ORIGIN, SIG_TYPE_COSIGNATURE_V1, _pub(_key("log")))
_W1_AS_LOG = format_vkey("witness.test/w1", SIG_TYPE_ED25519, _pub(_key("w1")))
_W = _witness_lines("w1", "w2", "w3")

INVALID: dict[str, tuple[str | bytes, int]] = {
    # name: (policy, line number the error names; 0 = the file as a whole)
    "empty-file": ("", 0),
    "no-quorum": (_policy(*_W), 0),
    "two-quorum-lines": (_policy(*_W, "quorum w1", "quorum w2"), 5),
    "two-quorum-lines-even-none": (_policy("quorum none", "quorum none"), 2),
    "quorum-undefined": (_policy(*_W, "quorum w9"), 4),
    "quorum-defined-later": (_policy("quorum w1", *_W), 1),
    "quorum-without-name": (_policy("quorum"), 1),
    "quorum-two-names": (_policy(*_W, "quorum w1 w2"), 4),
    "member-undefined": (_policy(*_W, "group g any w1 w9", "quorum g"), 4),
    "member-defined-later": (_policy("group g any w1", *_W, "quorum g"), 1),
    "member-none": (_policy(*_W, "group g any w1 none", "quorum g"), 4),
    "member-twice-in-group": (_policy(*_W, "group g 2 w1 w1 w2", "quorum g"), 4),
    "member-in-two-groups": (
        _policy(*_W, "group a any w1 w2", "group b any w1 w3", "group c all a b", "quorum c"),
        5,
    ),
    "group-in-two-groups": (
        _policy(*_W, "group a any w1", "group b any a", "group c any a w2", "quorum c"),
        6,
    ),
    "group-without-members": (_policy(*_W, "group g all", "quorum g"), 4),
    "group-without-threshold": (_policy(*_W, "group g", "quorum g"), 4),
    "threshold-zero": (_policy(*_W, "group g 0 w1 w2", "quorum g"), 4),
    "threshold-above-n": (_policy(*_W, "group g 3 w1 w2", "quorum g"), 4),
    "threshold-leading-zero": (_policy(*_W, "group g 02 w1 w2", "quorum g"), 4),
    "threshold-negative": (_policy(*_W, "group g -1 w1 w2", "quorum g"), 4),
    "threshold-plus-sign": (_policy(*_W, "group g +1 w1 w2", "quorum g"), 4),
    "threshold-word": (_policy(*_W, "group g some w1 w2", "quorum g"), 4),
    "threshold-uppercase-ALL": (_policy(*_W, "group g ALL w1 w2", "quorum g"), 4),
    "witness-named-none": (_policy(f"witness none {W1.vkey}", "quorum none"), 1),
    "group-named-none": (_policy(*_W, "group none any w1", "quorum none"), 4),
    "duplicate-witness-name": (_policy(*_W, f"witness w1 {WITNESSES['w4'].vkey}", "quorum w1"), 4),
    "group-reuses-witness-name": (_policy(*_W, "group w1 any w2", "quorum w1"), 4),
    "duplicate-group-name": (_policy(*_W, "group g any w1", "group g any w2", "quorum g"), 5),
    "duplicate-log-line": (_policy(f"log {LOG.vkey}", f"log {LOG.vkey}", "quorum none"), 2),
    "duplicate-log-key-other-name": (
        _policy(f"log {LOG.vkey}", f"log {_DUP_LOG_KEY}", "quorum none"),
        2,
    ),
    "duplicate-witness-key-other-name": (
        _policy(*_W, f"witness w9 {_DUP_WITNESS_KEY}", "quorum w9"),
        4,
    ),
    "log-key-of-cosignature-type": (_policy(f"log {_LOG_AS_COSIGNER}", "quorum none"), 1),
    "witness-key-of-ed25519-type": (_policy(f"witness w1 {_W1_AS_LOG}", "quorum w1"), 1),
    "malformed-vkey": (_policy(f"log {LOG.vkey[:-4]}", "quorum none"), 1),
    "vkey-with-wrong-key-id": (
        _policy(f"log {ORIGIN}+00000000+{LOG.vkey.split('+')[2]}", "quorum none"),
        1,
    ),
    "log-without-vkey": (_policy("log", "quorum none"), 1),
    "log-with-extra-field": (_policy(f"log {LOG.vkey} https://l.example/ more", "quorum none"), 1),
    "trailing-comment-is-not-a-comment": (
        _policy(f"log {LOG.vkey} https://l.example/ # note", "quorum none"),
        1,
    ),
    "witness-without-vkey": (_policy("witness w1", "quorum none"), 1),
    "witness-with-extra-field": (_policy(f"witness w1 {W1.vkey} https://x/ y", "quorum w1"), 1),
    "unknown-keyword": (_policy("monitor m https://m.example/", "quorum none"), 1),
    "keyword-is-case-sensitive": (_policy(f"Log {LOG.vkey}", "quorum none"), 1),
    "carriage-return": (f"log {LOG.vkey}\r\nquorum none\r\n", 1),
    "nul-octet": (_policy("quorum none", "# \x00"), 2),
    "del-octet": (_policy("# \x7f", "quorum none"), 1),
    "vertical-tab-is-not-whitespace": (_policy(f"log\x0b{LOG.vkey}", "quorum none"), 1),
    "form-feed-is-not-whitespace": (_policy("quorum\x0cnone"), 1),
    "no-final-newline": (f"log {LOG.vkey}\nquorum none", 2),
    "non-utf8-vkey": (b"log \xff" + LOG.vkey.encode() + b"\nquorum none\n", 1),
}


@pytest.mark.parametrize(("text", "line"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_policy(text: str | bytes, line: int) -> None:
    with pytest.raises(PolicySyntaxError) as e:
        parse_policy(text)
    assert e.value.line == line, e.value.diagnostic
    assert isinstance(e.value, PolicyError) and isinstance(e.value, AttestError)


def test_syntax_error_diagnostic_names_line_and_problem() -> None:
    with pytest.raises(PolicySyntaxError, match=r"line 4: threshold 3 exceeds the group's 2"):
        parse_policy(_policy(*_W, "group g 3 w1 w2", "quorum g"))


# -- quorum: against a naive recursive evaluation ---------------------------------------------

Spec = tuple[list[str], dict[str, tuple[int, list[str]]], str]


@st.composite
def policy_specs(draw: st.DrawFn) -> tuple[str, Spec]:
    """A random valid policy (text) and its structure: witnesses, groups (k, members), quorum."""
    witnesses = [f"w{i}" for i in range(draw(st.integers(1, len(WITNESSES))))]
    free = list(witnesses)  # names not yet a member of any group
    groups: dict[str, tuple[int, list[str]]] = {}
    lines = _witness_lines(*witnesses)
    for g in range(draw(st.integers(0, 4))):
        if not free:
            break
        members = draw(st.lists(st.sampled_from(free), min_size=1, unique=True))
        k = draw(st.integers(1, len(members)))
        spell = str(k)
        if k == len(members) and draw(st.booleans()):
            spell = "all"
        elif k == 1 and draw(st.booleans()):
            spell = "any"
        free = [n for n in free if n not in members] + [f"g{g}"]
        groups[f"g{g}"] = (k, members)
        lines.append(f"group g{g} {spell} {' '.join(members)}")
    quorum = draw(st.sampled_from([NONE, *witnesses, *groups]))
    text = _policy(f"log {LOG.vkey}", *lines, f"quorum {quorum}")
    return text, (witnesses, groups, quorum)


def _naive(name: str, groups: dict[str, tuple[int, list[str]]], signed: set[str]) -> bool:
    if name == NONE:
        return True
    if name in groups:
        k, members = groups[name]
        return sum(_naive(m, groups, signed) for m in members) >= k
    return name in signed


def _naive_shortfall(spec: Spec, signed: set[str]) -> int:
    witnesses, groups, quorum = spec
    unsigned = [w for w in witnesses if w not in signed]
    for extra in range(len(unsigned) + 1):
        if any(_naive(quorum, groups, signed | set(c)) for c in combinations(unsigned, extra)):
            return extra
    raise AssertionError("a valid policy is always satisfiable")


@given(policy_specs(), st.data())
@settings(max_examples=300, deadline=None)
def test_quorum_evaluation_equals_naive_recursion(
    generated: tuple[str, Spec], data: st.DataObject
) -> None:
    text, spec = generated
    signed = data.draw(st.sets(st.sampled_from([*spec[0], "stranger", "g0"])))
    p = parse_policy(text)
    want = _naive(spec[2], spec[1], signed)
    assert p.satisfied_by(signed) == want
    real = {s for s in signed if s in spec[0]}  # names that are not witnesses never count
    assert p.shortfall(signed) == _naive_shortfall(spec, real)
    assert (p.shortfall(signed) == 0) == want


@given(policy_specs(), st.data())
@settings(max_examples=40, deadline=None)
def test_check_accepts_exactly_when_naive_quorum_holds(
    generated: tuple[str, Spec], data: st.DataObject
) -> None:
    text, spec = generated
    signed = data.draw(st.sets(st.sampled_from(spec[0])))
    note = _cosigned(CP, *(WITNESSES[w] for w in sorted(signed)), STRANGER)
    p = parse_policy(text)
    if _naive(spec[2], spec[1], signed):
        assert p.check(note) == CP
    else:
        with pytest.raises(QuorumError):
            p.check(note)


# -- Policy.check ----------------------------------------------------------------------------

TWO_OF_THREE = parse_policy(
    _policy(f"log {LOG.vkey}", *_witness_lines("w1", "w2", "w3"), "group g 2 w1 w2 w3", "quorum g")
)


def test_check_accepts_a_quorum() -> None:
    assert TWO_OF_THREE.check(_cosigned(CP, W1, W3)) == CP


def test_check_with_quorum_none_needs_only_the_log() -> None:
    p = parse_policy(_policy(f"log {LOG.vkey}", "quorum none"))
    assert p.check(sign_checkpoint(CP, LOG)) == CP


def test_check_counts_a_witness_once_even_if_it_signed_twice() -> None:
    note = _with_lines(_cosigned(CP, W1), W1.cosign(CP.body(), TS + 7))
    assert len(parse_note(note).signatures) == 3
    with pytest.raises(QuorumError) as e:
        TWO_OF_THREE.check(note)
    assert e.value.cosigned == {"w1"} and e.value.need == 1


def test_check_ignores_unknown_signers() -> None:
    forged_stranger = NoteSignature(STRANGER.name, STRANGER.key_id, b"\x00" * 72)
    note = _with_lines(_cosigned(CP, W1, STRANGER), forged_stranger)
    with pytest.raises(QuorumError):
        TWO_OF_THREE.check(note)  # the stranger neither counts nor, forged, rejects
    assert TWO_OF_THREE.check(_with_lines(_cosigned(CP, W1, W2), forged_stranger)) == CP


def test_quorum_error_says_how_many_and_which_witnesses_are_missing() -> None:
    p = parse_policy(SPEC_EXAMPLE)
    with pytest.raises(QuorumError) as e:
        p.check(_cosigned(CP, W1))
    assert e.value.need == 2
    assert e.value.missing == ("w2", "w3", "w4", "w5", "w6")
    assert "needs at least 2 more" in e.value.diagnostic and "w1" in e.value.diagnostic


def test_forged_cosignature_by_a_known_witness_rejects_the_note() -> None:
    forged = NoteSignature(W3.name, W3.key_id, TS.to_bytes(8, "big") + b"\x55" * 64)
    note = _with_lines(_cosigned(CP, W1, W2), forged)  # quorum met by W1, W2 regardless
    with pytest.raises(PolicyError, match="invalid signature") as e:
        TWO_OF_THREE.check(note)
    assert not isinstance(e.value, QuorumError)


def test_replayed_cosignature_from_another_checkpoint_is_rejected() -> None:
    other = parse_note(_cosigned(CP_OTHER, W2)).signatures[1]
    assert W2.verifier().verify(CP_OTHER.body().encode(), other.signature)
    with pytest.raises(PolicyError, match="invalid signature"):
        TWO_OF_THREE.check(_with_lines(_cosigned(CP, W1), other))


def test_replayed_cosignature_with_another_timestamp_is_rejected() -> None:
    good = W2.cosign(CP.body(), TS)
    moved = NoteSignature(good.name, good.key_id, (TS + 1).to_bytes(8, "big") + good.signature[8:])
    assert TWO_OF_THREE.check(_with_lines(_cosigned(CP, W1), good)) == CP
    with pytest.raises(PolicyError, match="invalid signature"):
        TWO_OF_THREE.check(_with_lines(_cosigned(CP, W1), moved))


def test_check_requires_a_policy_log_signature() -> None:
    impostor = Ed25519NoteSigner(ORIGIN, _key("impostor"))
    with pytest.raises(PolicyError, match="no signature by a policy log key"):
        TWO_OF_THREE.check(_cosigned(CP, W1, W2, log=impostor))


def test_check_refuses_an_origin_the_policy_lacks() -> None:
    cp = Checkpoint(OTHER_LOG.name, 5, CP.root_hash)
    with pytest.raises(PolicyError, match="no log in the policy"):
        TWO_OF_THREE.check(_cosigned(cp, W1, W2, log=OTHER_LOG))


def test_check_refuses_an_invalid_log_signature() -> None:
    note = _cosigned(CP, W1, W2)
    parsed = parse_note(note)
    log_sig = parsed.signatures[0]
    bad = NoteSignature(log_sig.name, log_sig.key_id, bytes(64))
    with pytest.raises(PolicyError, match="invalid signature"):
        TWO_OF_THREE.check(Note(parsed.text, (bad, *parsed.signatures[1:])).to_bytes())


def test_check_accepts_any_of_two_keys_of_one_origin() -> None:
    rotated = Ed25519NoteSigner(ORIGIN, _key("log 2"))
    p = parse_policy(_policy(f"log {LOG.vkey}", f"log {rotated.vkey}", "quorum none"))
    assert p.check(sign_checkpoint(CP, rotated)) == CP
    assert p.check(sign_checkpoint(CP, LOG)) == CP


def test_check_refuses_a_malformed_note() -> None:
    with pytest.raises(PolicyError, match="checkpoint"):
        TWO_OF_THREE.check(b"not a note\n")


# -- Policy.check_tlog_proof -----------------------------------------------------------------

ENTRIES = [f"entry {i}".encode() for i in range(6)]
TREE = [leaf_hash(e) for e in ENTRIES]
TREE_CP = Checkpoint(ORIGIN, len(ENTRIES), root_hash(TREE))


def _node_at(level: int, index: int) -> bytes:
    return root_hash(TREE[index << level : (index + 1) << level])


def _tlog_proof(index: int, *signers: CosignatureSigner) -> str:
    proof = inclusion_proof(index, len(ENTRIES), _node_at)
    return format_tlog_proof(TlogProof(index, tuple(proof), _cosigned(TREE_CP, *signers)))


def test_tlog_proof_verifies_under_the_policy() -> None:
    assert TWO_OF_THREE.check_tlog_proof(_tlog_proof(4, W2, W3), ENTRIES[4]) == TREE_CP


def test_tlog_proof_of_another_entry_is_rejected() -> None:
    with pytest.raises(PolicyError, match="inclusion proof"):
        TWO_OF_THREE.check_tlog_proof(_tlog_proof(4, W2, W3), ENTRIES[3])


def test_tlog_proof_without_quorum_is_rejected() -> None:
    with pytest.raises(QuorumError):
        TWO_OF_THREE.check_tlog_proof(_tlog_proof(1, W2), ENTRIES[1])


def test_tlog_proof_with_forged_cosignature_is_rejected() -> None:
    text = _tlog_proof(1, W1, W2)
    forged = NoteSignature(W3.name, W3.key_id, bytes(72)).line()
    with pytest.raises(PolicyError, match="invalid signature"):
        TWO_OF_THREE.check_tlog_proof(text + forged, ENTRIES[1])


def test_malformed_tlog_proof_is_rejected() -> None:
    with pytest.raises(PolicyError, match="tlog-proof"):
        TWO_OF_THREE.check_tlog_proof("c2sp.org/tlog-proof@v1\n", ENTRIES[0])
