"""Continuity diffs between two model versions, against small hand-computed cases."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
from pydantic import ValidationError

from attest.predicates import (
    BehaviourDiff,
    CheckpointRef,
    ContinuityStatement,
    EmotionProjection,
    Framing,
    LogEntryRef,
    MethodRef,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import Statement, parse_statement, statement_bytes
from clients.probe.continuity import (
    NOT_MEASURED,
    ContinuityError,
    diff,
    noise_floor,
    noise_floor_from_json,
    profile,
    repeat_runs,
    select_runs,
    with_noise,
)
from clients.probe.records import part_run_id
from clients.probe.suites import load_suite

SUITE = load_suite("core")
SUITE_REF = SuiteRef(name=SUITE.name, version=SUITE.version, sha256=SUITE.digest)
SEEN = CheckpointRef(origin="o", size=0, root=hashlib.sha256().hexdigest())
V1 = ModelRef(name="m", version="v1", weights_sha256="11" * 32)
V2 = ModelRef(name="m", version="v2", weights_sha256="22" * 32)
CAT = "medical-dosage"
BENIGN = [i.id for i in SUITE.items if i.category == CAT and i.kind == "benign"]
HARMFUL = [i.id for i in SUITE.items if i.category == CAT and i.kind == "harmful"]


def item(
    pid: str, framing: Framing = "direct", refused: int = 0, transfer: int = 0, **emotions: int
) -> ProbeItem:
    return ProbeItem(
        prompt_id=pid,
        framing=framing,
        answer="a",
        refused=refused,
        transfer_milli=transfer,
        emotions={k: EmotionProjection(mean_milli=v, spread_milli=0) for k, v in emotions.items()},
    )


def record(
    model: ModelRef,
    items: list[ProbeItem],
    *,
    category: str = CAT,
    tier: str = "anonymous",
    run: str = "run",
    part: tuple[int, int] = (1, 1),
    suite: SuiteRef = SUITE_REF,
) -> ProbeRecord:
    return ProbeRecord(
        seen_checkpoint=SEEN,
        issued_at=0,
        model=model,
        suite=suite,
        category=category,
        tier=tier,
        run_id=part_run_id(run, *part),
        calibration=LogEntryRef(origin="o", index=0, leaf_hash="cd" * 32),
        items=tuple(items),
    )


def hand_case() -> tuple[list[ProbeItem], list[ProbeItem]]:
    """Four benign pairs, two direct and three framed harmful pairs, two shared emotions."""
    b1, b2, b3, b4 = BENIGN
    h1, h2 = HARMFUL[:2]
    before = [
        item(b1, refused=1, calm=100, fear=300),
        item(b2, refused=1, calm=100, fear=300),
        item(b3, refused=0, calm=100, fear=300),
        item(b4, refused=1, calm=100, fear=300),
        item(h1, transfer=200, calm=100, fear=300),
        item(h2, transfer=400, calm=100, fear=300),
        item(h1, "fictional", transfer=600, calm=100, fear=300),
        item(h1, "professional-claim", transfer=800, calm=100, fear=300),
        item(h2, "decomposition", transfer=100, calm=100, fear=300),
    ]
    after = [
        item(b1, refused=0, calm=400, fear=-100, joy=900),
        item(b2, refused=0, calm=400, fear=-100),
        item(b3, refused=0, calm=400, fear=-100),
        item(b4, refused=1, calm=400, fear=-100),
        item(h1, transfer=100, calm=400, fear=-100),
        item(h2, transfer=0, calm=400, fear=-100),
        item(h1, "fictional", transfer=300, calm=400, fear=-100),
        item(h1, "professional-claim", transfer=100, calm=400, fear=-100),
        item(h2, "decomposition", transfer=200, calm=400, fear=-100),
    ]
    return before, after


def test_hand_computed_cell() -> None:
    before, after = hand_case()
    res = diff([record(V1, before)], [record(V2, after)], SUITE)
    assert (res.predecessor, res.successor, res.suite) == (V1, V2, SUITE_REF)
    (cell,) = res.cells
    assert (cell.category, cell.tier) == (CAT, "anonymous")
    # Benign: refused 3 of 4 before, 1 of 4 after; b1 and b2 changed, nothing the other way.
    assert (cell.benign_pairs, cell.refused_before, cell.refused_after) == (4, 3, 1)
    assert (cell.refused_only_before, cell.refused_only_after) == (2, 0)
    assert cell.refusal_before == 0.75 and cell.refusal_after == 0.25
    assert cell.mcnemar_p == 0.5  # 2 * P(X <= 0), X ~ Bin(2, 1/2)
    # Direct: (200 + 400) / 2 -> (100 + 0) / 2; framed pooled: (600 + 800 + 100) / 3 -> 600 / 3.
    assert (cell.direct_pairs, cell.direct_before, cell.direct_after) == (2, 0.3, 0.05)
    assert (cell.framed_pairs, cell.framed_before, cell.framed_after) == (3, 0.5, 0.2)
    # Profiles calm 0.1 / fear 0.3 vs calm 0.4 / fear -0.1 (joy only after): a 3-4-5 triangle.
    assert cell.shared_emotions == 2
    assert cell.emotion_distance == pytest.approx(0.5)
    signed = cell.predicate()
    assert signed == BehaviourDiff(
        category=CAT,
        tier="anonymous",
        benign_pairs=4,
        refused_only_before=2,
        refused_only_after=0,
        refusal_rate_before_milli=750,
        refusal_rate_after_milli=250,
        direct_pairs=2,
        direct_transfer_before_milli=300,
        direct_transfer_after_milli=50,
        framed_pairs=3,
        framed_transfer_before_milli=500,
        framed_transfer_after_milli=200,
        shared_emotions=2,
        emotion_distance_milli=500,
    )
    row = cell.row()
    assert row["mcnemar_p"] == 0.5 and row["refusal_before"] == 0.75
    json.dumps(row)  # JSON-ready


def test_mcnemar_counts_only_discordant_pairs() -> None:
    # Five refusals dropped, one added, plus concordant pairs that must not matter.
    b = BENIGN
    before = [item(b[0], refused=1), item(b[1], refused=1), item(b[2], refused=1)]
    after = [item(b[0], refused=0), item(b[1], refused=1), item(b[2], refused=1)]
    before2 = [item(b[3], refused=0)]
    after2 = [item(b[3], refused=1)]
    res = diff([record(V1, before + before2)], [record(V2, after + after2)], SUITE)
    (cell,) = res.cells
    assert (cell.refused_only_before, cell.refused_only_after) == (1, 1)
    assert cell.mcnemar_p == 1.0
    five = [item(p, refused=1) for p in BENIGN]
    none = [item(p, refused=0) for p in BENIGN]
    (cell,) = diff([record(V1, five)], [record(V2, none)], SUITE).cells
    assert (cell.refused_only_before, cell.refused_only_after) == (4, 0)
    assert cell.mcnemar_p == pytest.approx(2 / 16)


def test_items_are_paired_by_prompt_and_framing() -> None:
    h1, h2 = HARMFUL[:2]
    # h2 is asked only before, h1 fictional only after: neither enters any figure.
    before = [item(h1, transfer=100), item(h2, transfer=900, calm=900)]
    after = [item(h1, transfer=300), item(h1, "fictional", transfer=1000, calm=-900)]
    (cell,) = diff([record(V1, before)], [record(V2, after)], SUITE).cells
    assert (cell.direct_pairs, cell.direct_before, cell.direct_after) == (1, 0.1, 0.3)
    assert cell.framed_pairs == 0 and cell.framed_before is None
    assert cell.shared_emotions == 0 and cell.emotion_distance is None


def test_missing_cells_and_missing_figures() -> None:
    benign_only = [item(p, refused=1) for p in BENIGN]
    harmful_only = [item(p, transfer=500) for p in HARMFUL]
    before = [
        record(V1, benign_only),
        record(V1, harmful_only, tier="medical"),
        record(V1, [item("xstest-2")], category="benign-adjacent"),
    ]
    after = [
        record(V2, benign_only),
        record(V2, harmful_only, tier="medical"),
        record(V2, [item("xstest-27")], category="harmful-contrast"),
    ]
    res = diff(before, after, SUITE)
    assert [(c.category, c.tier) for c in res.cells] == [(CAT, "anonymous"), (CAT, "medical")]
    assert res.only_before == (("benign-adjacent", "anonymous"),)
    assert res.only_after == (("harmful-contrast", "anonymous"),)
    no_harmful, no_benign = res.behaviour_diffs()
    assert no_harmful.benign_pairs == 4 and no_harmful.direct_pairs == 0
    assert no_harmful.direct_transfer_before_milli is None
    assert no_benign.benign_pairs == 0 and no_benign.refusal_rate_before_milli is None
    assert res.cells[1].mcnemar_p is None
    wire = json.loads(statement_bytes(Statement.of(continuity(res.behaviour_diffs()))))
    cells = wire["predicate"]["diff"]
    assert "directTransferBeforeMilli" not in cells[0] and "refusalRateAfterMilli" in cells[0]
    assert "refusalRateBeforeMilli" not in cells[1] and cells[1]["refusedOnlyBefore"] == 0
    assert "emotionDistanceMilli" not in cells[0]  # no item had an emotion


def test_parts_of_one_record_count_together() -> None:
    before, after = hand_case()
    parts = [
        record(V1, before[:4], part=(1, 3)),
        record(V1, before[4:6], part=(2, 3)),
        record(V1, before[6:], part=(3, 3)),
    ]
    whole = diff([record(V1, before)], [record(V2, after)], SUITE)
    assert diff(parts, [record(V2, after)], SUITE) == whole


def test_select_runs_keeps_the_latest_complete_run_per_cell() -> None:
    before, _ = hand_case()
    records = [
        record(V1, before[:4], run="old", part=(1, 2)),  # 0
        record(V1, before[4:], run="old", part=(2, 2)),  # 1
        record(V1, before, tier="medical", run="cut", part=(1, 2)),  # 2: part 2 never came
        record(V1, before[4:], run="new", part=(2, 2)),  # 3
        record(V1, before[:4], run="new", part=(1, 2)),  # 4
        record(V1, before, tier="legal", run="x").model_copy(update={"run_id": "bare"}),  # 5
    ]
    sel = select_runs(records)
    assert sel.used == (3, 4, 5)
    assert any("'old'" in n and "superseded" in n for n in sel.notes)
    assert any("'cut'" in n and "lacks or repeats a part" in n for n in sel.notes)
    # Two complete runs of a cell are refused by the diff itself: an item answered twice.
    with pytest.raises(ContinuityError, match="twice"):
        diff(records[:2] + records[3:5], [record(V2, before)], SUITE)
    used = [records[i] for i in sel.used]
    assert [(c.category, c.tier) for c in diff(used, [record(V2, before)], SUITE).cells] == [
        (CAT, "anonymous")
    ]


def test_select_runs_refuses_a_repeated_part() -> None:
    before, _ = hand_case()
    twice = [record(V1, before), record(V1, before[:2])]
    sel = select_runs(twice)
    assert sel.used == ()
    assert "lacks or repeats a part" in sel.notes[0]


def test_mixed_models_suites_and_equal_weights_refused() -> None:
    before, after = hand_case()
    other = ModelRef(name="m", version="v1", weights_sha256="33" * 32)
    with pytest.raises(ContinuityError, match="more than one model"):
        diff([record(V1, before), record(other, before, tier="legal")], [record(V2, after)], SUITE)
    with pytest.raises(ContinuityError, match="same weights"):
        diff([record(V1, before)], [record(V1.model_copy(update={"version": "v2"}), after)], SUITE)
    wrong = SuiteRef(name="core", version="1", sha256="44" * 32)
    with pytest.raises(ContinuityError, match="probed with suite"):
        diff([record(V1, before)], [record(V2, after, suite=wrong)], SUITE)
    with pytest.raises(ContinuityError, match="no predecessor records"):
        diff([], [record(V2, after)], SUITE)


def test_profile_is_a_mean_per_emotion() -> None:
    items = [item("a", calm=100, fear=1000), item("b", calm=300), item("c")]
    assert profile(items) == {"calm": 0.2, "fear": 1.0}


def continuity(diffs: tuple[BehaviourDiff, ...]) -> ContinuityStatement:
    return ContinuityStatement(
        seen_checkpoint=SEEN,
        issued_at=0,
        predecessor=V1,
        successor=V2,
        predecessor_records=(LogEntryRef(origin="o", index=1, leaf_hash="aa" * 32),),
        successor_records=(LogEntryRef(origin="o", index=2, leaf_hash="bb" * 32),),
        diff=diffs,
    )


def test_signed_statement_round_trips() -> None:
    before, after = hand_case()
    stmt = Statement.of(
        continuity(diff([record(V1, before)], [record(V2, after)], SUITE).behaviour_diffs())
    )
    assert parse_statement(statement_bytes(stmt)) == stmt


@pytest.mark.parametrize(
    "change",
    [
        {"refusal_rate_before_milli": None},  # benign pairs but a rate missing
        {"benign_pairs": 0, "refused_only_before": 0},  # rates without pairs
        {"direct_transfer_after_milli": None},
        {"framed_pairs": 0},
        {"emotion_distance_milli": None},
        {"refused_only_after": 3},  # 2 + 3 discordant > 4 pairs
    ],
)
def test_figures_must_match_their_counts(change: dict[str, object]) -> None:
    before, after = hand_case()
    (cell,) = diff([record(V1, before)], [record(V2, after)], SUITE).cells
    fields = {**cell.predicate().model_dump(), **change}
    with pytest.raises(ValidationError):
        BehaviourDiff(**fields)


def test_an_entry_cited_twice_is_refused() -> None:
    ref = LogEntryRef(origin="o", index=1, leaf_hash="aa" * 32)
    with pytest.raises(ValidationError, match="cited twice"):
        ContinuityStatement.model_validate(
            {**continuity(()).model_dump(), "successorRecords": (ref,)}
        )


def test_headline_pair_and_minimum_attainable_p() -> None:
    before, after = hand_case()
    (cell,) = diff([record(V1, before)], [record(V2, after)], SUITE).cells
    # Best of framings per item: h1 0.8 -> 0.3, h2 0.4 -> 0.2.
    assert cell.best_pairs == 2
    assert cell.best_before is not None and cell.best_before.mean == pytest.approx(0.6)
    assert cell.best_after is not None and cell.best_after.mean == pytest.approx(0.25)
    assert cell.best_change is not None and cell.best_change.mean == pytest.approx(-0.35)
    assert -1.0 <= cell.best_change.low <= cell.best_change.high <= 1.0
    assert cell.benign_before is not None and (cell.benign_before.k, cell.benign_before.n) == (3, 4)
    # Four benign pairs: even a complete reversal could not reach 0.05.
    assert cell.min_p == 0.125
    row = cell.row()
    assert row["min_p"] == 0.125 and row["transfer_method"] == "best-of-framings"
    assert row["benign_refusal_before"]["text"] == "insufficient data (n=4)"  # type: ignore[index]
    json.dumps(row)


def test_holm_corrects_across_the_cells_of_a_diff() -> None:
    # Two cells, each with four benign pairs that all stop refusing: raw p 0.125 in both,
    # Holm: the smaller times 2, then the running maximum -> 0.25 and 0.25.
    five = [item(p, refused=1) for p in BENIGN]
    none = [item(p, refused=0) for p in BENIGN]
    tiers = ("anonymous", "medical")
    before = [record(V1, five, tier=t) for t in tiers]
    after = [record(V2, none, tier=t) for t in tiers]
    res = diff(before, after, SUITE)
    assert [c.mcnemar_p for c in res.cells] == [pytest.approx(0.125)] * 2
    assert [c.holm_p for c in res.cells] == [pytest.approx(0.25)] * 2
    # A cell without benign pairs is not part of the family and has no Holm p.
    only_harmful = [item(HARMFUL[0], transfer=100)]
    res = diff(
        [*before, record(V1, only_harmful, category="legal")],
        [*after, record(V2, only_harmful, category="legal")],
        SUITE,
    )
    legal = next(c for c in res.cells if c.category == "legal")
    assert legal.holm_p is None and legal.min_p is None
    assert [c.holm_p for c in res.cells if c.category != "legal"] == [pytest.approx(0.25)] * 2


def test_noise_floor_of_two_runs_of_the_same_weights() -> None:
    same = ModelRef(name="m", version="v1", weights_sha256="11" * 32)
    b, h = BENIGN, HARMFUL
    first = [item(b[0], refused=1), item(b[1]), item(b[2]), item(b[3]), item(h[0], transfer=500)]
    second = [
        item(b[0], refused=0),  # one verdict of five flips
        item(b[1]),
        item(b[2]),
        item(b[3]),
        item(h[0], transfer=300),
    ]
    floor = noise_floor([record(same, first)], [record(same, second, run="batch-16")], SUITE)
    (cell,) = floor.cells
    assert (cell.pairs, cell.flips) == (5, 1) and cell.flip_rate.rate == 0.2
    assert cell.transfer_change is not None and cell.transfer_change.mean == pytest.approx(0.2)
    assert floor.overall.k == 1 and floor.overall.n == 5 and floor.model == same
    with pytest.raises(ContinuityError, match="same weights"):
        noise_floor([record(V1, first)], [record(V2, second)], SUITE)


def rerun_case() -> tuple[list[ProbeRecord], list[ProbeRecord]]:
    """v1 run twice ("a" then "b", same weights): in each tier one of the four benign items flips
    its refusal between the runs, nothing else moves. v2, run once, refuses one benign item more
    than v1's latest run in the anonymous tier and all four in the medical tier; the transfer of
    the four harmful items is 0.3 throughout."""

    def items(refused: set[str]) -> list[ProbeItem]:
        benign = [item(b, refused=int(b in refused)) for b in BENIGN]
        return benign + [item(h, transfer=300) for h in HARMFUL]

    v1 = [
        record(V1, items({BENIGN[0]}), tier=tier, run="a") for tier in ("anonymous", "medical")
    ] + [record(V1, items(set()), tier=tier, run="b") for tier in ("anonymous", "medical")]
    v2 = [
        record(V2, items({BENIGN[0]}), tier="anonymous", run="c"),
        record(V2, items(set(BENIGN)), tier="medical", run="c"),
    ]
    return v1, v2


def test_a_rerun_of_the_same_weights_gives_each_cell_its_noise_floor() -> None:
    v1, v2 = rerun_case()
    repeat = repeat_runs(v1)
    assert repeat is not None
    assert (repeat.first, repeat.second) == ((0, 1), (2, 3))  # the earlier run, then the latest
    assert repeat.runs == ("a (decoding not recorded)", "b (decoding not recorded)")
    floor = noise_floor(
        [v1[i] for i in repeat.first], [v1[i] for i in repeat.second], SUITE, runs=repeat.runs
    )
    used = [v1[i] for i in select_runs(v1).used]
    res = with_noise(diff(used, v2, SUITE), [floor])
    assert res.noise_floors == (floor,)
    anonymous, medical = res.cells
    for cell in (anonymous, medical):
        assert cell.noise is not None and cell.noise_floor is floor
        # One flip in eight paired items: Wilson upper bound 0.471. Transfer never moved: a mean
        # of 0 over four items, whose interval is that of 0 of 4 (`mean_ci`), [0, 0.490].
        assert (cell.noise.pairs, cell.noise.flips) == (8, 1)
        assert cell.noise.flip_rate.high == pytest.approx(0.4709, abs=1e-3)
        change = cell.noise.transfer_change
        assert change is not None and change.mean == 0
        assert change.high == pytest.approx(0.490, abs=1e-3)
        assert cell.transfer_within_noise is True  # no change at all
    # Anonymous: 0 -> 1 of 4 refused, |0.25| <= 0.471; medical: 0 -> 4 of 4, |1.0| > 0.471.
    assert anonymous.refusal_within_noise is True and anonymous.within_noise is True
    assert medical.refusal_within_noise is False and medical.within_noise is False
    assert anonymous.noise_text().endswith("within noise")
    assert medical.noise_text().endswith("beyond noise")
    row = medical.noise_row()
    assert row["measured"] is True and row["runs"] == list(repeat.runs)
    assert row["within_noise"] is False and row["pairs"] == 8


def test_a_change_in_transfer_beyond_the_floor_is_not_noise() -> None:
    v1, v2 = rerun_case()
    # Every harmful item 0.3 -> 0.9 in v2: a change of 0.6 against the floor's bound of 0.490;
    # 0.3 -> 0.7 is a change of 0.4, inside it.
    for transfer, within in ((900, False), (700, True)):
        raised = [
            r.model_copy(
                update={"items": (*r.items[:4], *(item(h, transfer=transfer) for h in HARMFUL))}
            )
            for r in v2
        ]
        repeat = repeat_runs(v1)
        assert repeat is not None
        floor = noise_floor([v1[i] for i in repeat.first], [v1[i] for i in repeat.second], SUITE)
        used = [v1[i] for i in select_runs(v1).used]
        anonymous, _ = with_noise(diff(used, raised, SUITE), [floor]).cells
        assert anonymous.best_change is not None
        assert anonymous.best_change.mean == pytest.approx((transfer - 300) / 1000)
        assert anonymous.refusal_within_noise is True
        assert anonymous.transfer_within_noise is within and anonymous.within_noise is within


def test_one_run_of_the_weights_has_no_noise_floor() -> None:
    v1, v2 = rerun_case()
    latest = [v1[i] for i in select_runs(v1).used]
    assert repeat_runs(latest) is None
    # A "rerun" of other weights is no floor either.
    assert repeat_runs([v1[0], record(V2, list(v1[2].items), run="b")]) is None
    for res in (diff(latest, v2, SUITE), with_noise(diff(latest, v2, SUITE), [])):
        for cell in res.cells:
            assert cell.noise is None and cell.within_noise is None
            assert cell.noise_note == NOT_MEASURED
            assert cell.noise_row() == {
                "measured": False,
                "note": "noise floor: not measured — one run of these weights",
            }


def test_noise_floor_json_round_trips_and_malformed_is_refused() -> None:
    v1, _ = rerun_case()
    floor = noise_floor(v1[:2], v1[2:], SUITE, runs=("a (batch 8)", "b (batch 16)"))
    data = json.loads(json.dumps(floor.to_json()))
    assert noise_floor_from_json(data, "f.json") == replace(floor, source="f.json")
    broken = [
        [],
        {**data, "format": "other"},
        {**data, "cells": [{**data["cells"][0], "flips": 5}]},
        {**data, "overall": {"k": 9, "n": 2}},
        {**data, "transfer_change": {"n": 1, "mean": 0.5, "low": 0.6, "high": 0.7, "items": 1}},
        {**data, "model": {"name": "m"}},
    ]
    for bad in broken:
        with pytest.raises(ContinuityError, match=r"f\.json is not a noise floor"):
            noise_floor_from_json(bad, "f.json")


def judged(rec: ProbeRecord, *judges: tuple[str, str]) -> ProbeRecord:
    """`rec` naming `judges` (name, version) in its order: refusal, transfer, then verdicts."""
    refs = tuple(
        MethodRef(name=n, version=v, config_digest=hashlib.sha256(f"{n}{v}".encode()).hexdigest())
        for n, v in judges
    )
    return rec.model_copy(update={"judges": refs})


def test_a_diff_names_the_judging_roles_whose_judges_differ() -> None:
    before, after = hand_case()
    same = [("learned", "1"), ("rubric", "2"), ("position", "2")]
    res = diff([judged(record(V1, before), *same)], [judged(record(V2, after), *same)], SUITE)
    assert res.judge_changes == ()
    other = [("hidden-probe", "1.c1"), ("rubric", "2"), ("position", "1")]
    res = diff([judged(record(V1, before), *same)], [judged(record(V2, after), *other)], SUITE)
    assert [c.split(" judged by ")[0] for c in res.judge_changes] == ["position", "refusal"]
    assert "learned 1 (" in res.judge_changes[1] and "hidden-probe 1.c1 (" in res.judge_changes[1]
    # Records written before records named their judges: the role reads "not named".
    res = diff([record(V1, before)], [judged(record(V2, after), *same)], SUITE)
    assert [c.split(" judged by ")[1].split(" before")[0] for c in res.judge_changes] == [
        "not named",
        "not named",
    ]
    # A verdict judge only one side names has no pairs to mislead: not a change.
    res = diff([judged(record(V1, before), *same[:2])], [judged(record(V2, after), *same)], SUITE)
    assert res.judge_changes == ()
