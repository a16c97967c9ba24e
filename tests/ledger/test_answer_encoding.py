"""The write routes' answers, joined from strings (`ledger.api._answer_json`,
`_entry_result_json`), are byte for byte what the JSON encoder writes for the answer dicts
(`_answer`, `_entry_result`), and fail where those fail."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner
from ledger.api import (
    _answer,
    _answer_json,
    _entry_result,
    _entry_result_json,
    _json_text,
)
from ledger.log import InclusionProof
from ledger.sequencer import Sequenced
from ledger.storage import Head

KEY = generate_private_key()

# Origins as a log may name itself, and some a note cannot carry (the checks must then fail
# on both paths alike): quotes, backslashes, non-ASCII, astral and control characters.
origins = st.one_of(
    st.sampled_from(["bench.invalid/logs/evidence", 'a"b\\c/log', "é/ü\u2028", "\U0001f600/x"]),
    st.text(min_size=1, max_size=30),
)


@st.composite
def entries(draw: st.DrawFn) -> tuple[Sequenced, InclusionProof]:
    origin = draw(origins)
    size = draw(st.integers(1, 2**40))
    index = draw(st.integers(0, size - 1))
    try:
        note = sign_checkpoint(
            Checkpoint(origin, size, draw(st.binary(min_size=32, max_size=32))),
            Ed25519NoteSigner(origin, KEY),
        ).decode()
    except Exception:  # an origin no checkpoint takes: a note that is not one
        note = origin + "\n"
    if draw(st.booleans()) and draw(st.booleans()):
        note = draw(st.text(max_size=60))  # anything at all
    hashes = tuple(draw(st.lists(st.binary(min_size=32, max_size=32), max_size=40)))
    if draw(st.integers(0, 9)) == 0:
        hashes = (*hashes, draw(st.binary(max_size=40)))  # a wrong size: TlogProof refuses
    leaf = draw(st.binary(min_size=32, max_size=32))
    head = Head(size, bytes(32), note)
    return Sequenced(index, leaf, head, draw(st.booleans())), InclusionProof(index, size, hashes)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as e:  # the same failure, type and words, on both paths is the point
        return "raised", (type(e), str(e))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=entries())
def test_single_answer_bytes_are_the_encoders(entry: tuple[Sequenced, InclusionProof]) -> None:
    seq, proof = entry
    want = outcome(lambda: _json_text(_answer(seq, proof)).encode())
    assert outcome(_answer_json, seq, proof) == want


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=entries(), again=st.booleans())
def test_batch_result_text_is_the_encoders(
    entry: tuple[Sequenced, InclusionProof], again: bool
) -> None:
    seq, proof = entry
    proofs = {(seq.index, seq.head.size): proof}
    want = outcome(lambda: _json_text(_entry_result(None, seq, proofs)))  # type: ignore[arg-type]
    escaped: dict[str, tuple[bytes, str]] = {}
    line_of: dict[bytes, str] = {}
    if again:  # the checkpoint's encodings and the hashes' lines remembered from an earlier entry
        outcome(_entry_result_json, seq, proof, escaped, line_of)
    assert outcome(_entry_result_json, seq, proof, escaped, line_of) == want


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=entries(), rest=st.lists(entries(), max_size=6), data=st.data())
def test_batch_results_sharing_caches_are_the_encoders(
    first: tuple[Sequenced, InclusionProof],
    rest: list[tuple[Sequenced, InclusionProof]],
    data: st.DataObject,
) -> None:
    """Entries of one batch answer share the caches: a checkpoint and hashes seen (or
    refused) for an earlier entry must not change a later entry's text or failure."""
    escaped: dict[str, tuple[bytes, str]] = {}
    line_of: dict[bytes, str] = {}
    seq0, proof0 = first
    for seq, proof in [first, *rest]:
        if data.draw(st.booleans()):  # the first entry's checkpoint, and some of its hashes
            seq = Sequenced(seq.index, seq.leaf_hash, seq0.head, seq.duplicate)
            picked = data.draw(st.lists(st.sampled_from(proof0.hashes))) if proof0.hashes else []
            proof = InclusionProof(proof.index, proof.size, (*picked, *proof.hashes))
        proofs = {(seq.index, seq.head.size): proof}
        want = outcome(lambda: _json_text(_entry_result(None, seq, proofs)))  # type: ignore[arg-type]  # noqa: B023
        assert outcome(_entry_result_json, seq, proof, escaped, line_of) == want
