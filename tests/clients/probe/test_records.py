"""Probe records: milli-units, items, splitting under the exact 65535-byte entry limit, parsing."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.dsse import MAX_PAYLOAD_BYTES, TrustedKey
from attest.errors import MalformedEnvelopeError
from attest.keys import generate_private_key
from attest.predicates import (
    BlobRef,
    CheckpointRef,
    LogEntryRef,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import Statement, parse_statement, sign_statement, verify_statement
from attest.tiles import MAX_ENTRY_SIZE
from clients.probe.records import (
    ItemTooLargeError,
    RecordError,
    RecordHeader,
    calibration_predicate,
    parse_part_run_id,
    part_run_id,
    probe_item,
    sign_records,
    to_milli,
)

KEY = generate_private_key()
SIGNERS = [("worker.example/w1", KEY)]


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


HEADER = RecordHeader(
    model=ModelRef(name="smollm2-135m-instruct", version="v1", weights_sha256=sha("w")),
    suite=SuiteRef(name="core", version="1", sha256=sha("s")),
    category="self-harm",
    tier="anonymous",
    run_id="run-20260101T000000Z-0123abcd",
    calibration=LogEntryRef(origin="bledger.test/logs/evidence", index=3, leaf_hash=sha("c")),
    seen_checkpoint=CheckpointRef(origin="bledger.test/logs/evidence", size=4, root=sha("r")),
    issued_at=1_800_000_000,
)
EMOTIONS = {"joy": (0.5, 0.1), "fear": (-1.2345, 0.3), "calm": (0.0, 0.0)}


def item(i: int, answer: str) -> ProbeItem:
    return probe_item(
        f"p{i:04d}", "direct", answer, refused=i % 2 == 0, transfer=0.25, emotions=EMOTIONS
    )


# -- values -----------------------------------------------------------------------------------


def test_to_milli_rounds_half_away_from_zero() -> None:
    assert to_milli(1.0) == 1000
    assert to_milli(-1.2345) == -1235  # the decimal form is rounded, not the binary neighbour
    assert to_milli(0.0126) == 13
    assert to_milli(0.0005) == 1
    assert to_milli(-0.0025) == -3
    assert to_milli(0.0015) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_to_milli_refuses_non_finite(bad: float) -> None:
    with pytest.raises(RecordError, match="non-finite"):
        to_milli(bad)


def test_probe_item_in_milli_units() -> None:
    it = item(0, "I can't help with that.")
    assert it.refused == 1 and it.transfer_milli == 250
    assert it.emotions["fear"].mean_milli == -1235 and it.emotions["fear"].spread_milli == 300
    assert list(it.emotions) == ["calm", "fear", "joy"], "emotions are sorted"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("transfer_milli", {"transfer": 1.5}),
        ("spread_milli", {"emotions": {"joy": (0.0, -0.1)}}),
        ("framing", {"framing": "sarcastic"}),
        ("emotions", {"emotions": {"Not A Token": (0.0, 0.0)}}),
    ],
)
def test_probe_item_out_of_range(field: str, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "framing": "direct",
        "refused": False,
        "transfer": 0.0,
        "emotions": {},
    }
    args.update(kwargs)
    framing = args.pop("framing")
    with pytest.raises(RecordError, match=field):
        probe_item("p1", framing, "a", **args)  # type: ignore[arg-type]


# -- part run ids -----------------------------------------------------------------------------


def test_part_run_id_round_trip() -> None:
    assert part_run_id("run-1", 2, 3) == "run-1/part-2-of-3"
    assert parse_part_run_id("a/b/part-12-of-12") == ("a/b", 12, 12)


@pytest.mark.parametrize("bad", ["run-1", "run-1/part-0-of-1", "run-1/part-3-of-2", "/part-1-of-1"])
def test_parse_part_run_id_refuses(bad: str) -> None:
    with pytest.raises(RecordError):
        parse_part_run_id(bad)


# -- splitting --------------------------------------------------------------------------------


def check_parts(items: list[ProbeItem], signers: list[tuple[str, Ed25519PrivateKey]]) -> None:
    """Every part fits, parts are in order and complete, and no part could have taken one more."""
    parts = sign_records(HEADER, items, signers)
    got = [it for p in parts for it in p.predicate.items]
    assert got == items, "items are kept, in order, none dropped or repeated"
    for k, p in enumerate(parts, 1):
        assert (p.part, p.parts) == (k, len(parts))
        assert p.predicate.run_id == part_run_id(HEADER.run_id, k, len(parts))
        assert len(p.envelope.canonical_bytes()) <= MAX_ENTRY_SIZE
        if k < len(parts):  # greedy: the next item would not have fitted
            more = HEADER.record(
                [*p.predicate.items, parts[k].predicate.items[0]], p.predicate.run_id
            )
            assert _envelope_size(more, signers) > MAX_ENTRY_SIZE


def _envelope_size(predicate: Any, signers: list[tuple[str, Ed25519PrivateKey]]) -> int:
    """Envelope size of `predicate`, or MAX_PAYLOAD_BYTES + 1 when DSSE refuses a payload that
    large (past 65535 payload bytes no envelope could fit an entry anyway)."""
    try:
        return len(sign_statement(predicate, signers).canonical_bytes())
    except MalformedEnvelopeError:
        return MAX_PAYLOAD_BYTES + 1


def test_small_record_is_one_part() -> None:
    parts = sign_records(HEADER, [item(i, "short") for i in range(5)], SIGNERS)
    assert len(parts) == 1 and parts[0].predicate.run_id.endswith("/part-1-of-1")


def test_large_record_splits() -> None:
    items = [item(i, "x" * (i * 997 % 9000)) for i in range(60)]
    check_parts(items, SIGNERS)
    assert len(sign_records(HEADER, items, SIGNERS)) > 1


def test_multibyte_answers_count_in_bytes() -> None:
    # "€" is 3 UTF-8 bytes and one character: a character count would overfill the entry.
    items = [item(i, "€" * 6000) for i in range(12)]
    check_parts(items, SIGNERS)


def test_two_signers_leave_less_room() -> None:
    items = [item(i, "y" * 5000) for i in range(30)]
    check_parts(items, [*SIGNERS, ("lab.example/l1", generate_private_key())])


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20000), min_size=1, max_size=25))
def test_split_property(lengths: list[int]) -> None:
    check_parts([item(i, "z" * n) for i, n in enumerate(lengths)], SIGNERS)


def _signers_with_overhead_residue(residue: int) -> list[tuple[str, Ed25519PrivateKey]]:
    """Signers whose key name makes the envelope size congruent to `residue` mod 4.

    The envelope grows in steps of 4 (base64), so hitting 65535 exactly needs the right residue.
    """
    for n in range(1, 9):
        signers = [("k" * n, KEY)]
        size = len(sign_records(HEADER, [item(0, "")], signers)[0].envelope.canonical_bytes())
        if size % 4 == residue:
            return signers
    raise AssertionError("no key name length gives that residue")


def _longest_answer(signers: list[tuple[str, Ed25519PrivateKey]]) -> str:
    """The longest answer ("€" * 12000 + ASCII) whose one-item record fits in one entry.

    ProbeItem caps answers at 32768 characters, so only multi-byte text can fill an entry.
    """
    prefix = "€" * 12000
    lo, hi = 0, 20000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            sign_records(HEADER, [item(0, prefix + "a" * mid)], signers)
            lo = mid
        except ItemTooLargeError:
            hi = mid - 1
    return prefix + "a" * lo


def test_entry_of_exactly_65535_bytes_is_accepted() -> None:
    signers = _signers_with_overhead_residue(MAX_ENTRY_SIZE % 4)
    answer = _longest_answer(signers)
    [part] = sign_records(HEADER, [item(0, answer)], signers)
    assert len(part.envelope.canonical_bytes()) == MAX_ENTRY_SIZE
    # One base64 step more (3 payload bytes) is 65539 bytes: refused, and not truncated.
    with pytest.raises(ItemTooLargeError) as exc:
        sign_records(HEADER, [item(0, answer + "aaa")], signers)
    assert exc.value.size == MAX_ENTRY_SIZE + 4 and exc.value.prompt_id == "p0000"
    assert "never truncated" in exc.value.diagnostic


def test_item_too_large_names_the_item() -> None:
    items = [item(0, "ok"), item(1, "€" * 30000)]
    with pytest.raises(ItemTooLargeError, match="p0001"):
        sign_records(HEADER, items, SIGNERS)


def test_no_items_no_signers() -> None:
    with pytest.raises(RecordError, match="at least one item"):
        sign_records(HEADER, [], SIGNERS)
    with pytest.raises(RecordError, match="at least one signer"):
        sign_records(HEADER, [item(0, "a")], [])


def test_run_id_too_long_for_a_suffix() -> None:
    header = RecordHeader(**{**HEADER.__dict__, "run_id": "r" * 250})
    with pytest.raises(RecordError, match="no room"):
        sign_records(header, [item(0, "a")], SIGNERS)


# -- round trips ------------------------------------------------------------------------------


def test_record_round_trips_through_parse_statement() -> None:
    items = [item(i, "x" * 8000) for i in range(20)]
    for part in sign_records(HEADER, items, SIGNERS):
        stmt = parse_statement(part.envelope.payload)
        assert stmt == Statement.of(part.predicate)
        assert isinstance(stmt.predicate, ProbeRecord)
        trusted = [TrustedKey.named(SIGNERS[0][0], KEY.public_key())]
        assert verify_statement(part.envelope, trusted)[0] == stmt


def test_calibration_predicate_round_trips() -> None:
    pred = calibration_predicate(
        model=HEADER.model,
        layer=17,
        token_rule="answer-mean",
        vectors=BlobRef(sha256=sha("v"), size=123456),
        held_out_scores={"joy": 0.91, "fear": 0.775},
        seen_checkpoint=HEADER.seen_checkpoint,
        issued_at=HEADER.issued_at,
    )
    assert pred.held_out_scores_milli == {"fear": 775, "joy": 910}
    env = sign_statement(pred, SIGNERS)
    assert parse_statement(env.payload).predicate == pred


def test_probing_doc_examples_run() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "probing.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
