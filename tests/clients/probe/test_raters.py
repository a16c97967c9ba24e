"""The second rater: the published inter-rater table is what the files give, kappa against a
naive reference, and a malformed second-rater file fails naming its file and line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.probe.judges.disclosure import (
    DISCLOSURE_LABELS_CSV,
    DISCLOSURE_RATER2_CSV,
    DisclosureJudge,
)
from clients.probe.judges.disclosure import VERDICTS as DISCLOSURE_VERDICTS
from clients.probe.judges.position import (
    POSITION_LABELS_CSV,
    POSITION_RATER2_CSV,
    PositionJudge,
    PositionLabel,
    load_labelled,
    load_position_labels,
)
from clients.probe.judges.position import VERDICTS as POSITION_VERDICTS
from clients.probe.judges.raters import (
    RATER_HEADER,
    SECOND_RATED_SPLITS,
    RatedRow,
    cohen_kappa,
    disclosure_rated,
    load_second_labels,
    position_rated,
    rater_figures,
    rater_table,
)
from clients.probe.judges.rules import JudgeError
from clients.probe.judges.validation import main
from clients.probe.metrics import rate

DOCS = Path(__file__).resolve().parents[3] / "docs" / "judges.md"


def _reference_kappa(pairs: Sequence[tuple[str, str]]) -> float:
    """Cohen (1960) from the confusion matrix: (N*diag - chance) / (N*N - chance)."""
    cats = sorted({c for p in pairs for c in p})
    m = {(a, b): 0 for a in cats for b in cats}
    for a, b in pairs:
        m[(a, b)] += 1
    n = len(pairs)
    rows = {a: sum(m[(a, b)] for b in cats) for a in cats}
    cols = {b: sum(m[(a, b)] for a in cats) for b in cats}
    chance = sum(rows[c] * cols[c] for c in cats)
    return (n * sum(m[(c, c)] for c in cats) - chance) / (n * n - chance)


# -- the published figures ------------------------------------------------------------------------


def test_published_rater_table_matches_the_files() -> None:
    """docs/judges.md carries exactly the rows the labels files and each judge version give."""
    docs = DOCS.read_text(encoding="utf-8").splitlines()
    names = (
        "position 1",
        "disclosure 1",
        "position 2",
        "disclosure 2",
        "position 3",
        "disclosure 3",
    )
    published = [line for line in docs if line.startswith(tuple(f"| `{n}` |" for n in names))]
    expected = []
    for v in ("1", "2"):
        p, d = PositionJudge(version=v), DisclosureJudge(version=v)
        expected += rater_table(f"position {v}", rater_figures(position_rated(p)))
        expected += rater_table(f"disclosure {v}", rater_figures(disclosure_rated(d)))
    p3, d3 = PositionJudge(version="3"), DisclosureJudge(version="3")
    expected += rater_table("position 3", rater_figures(position_rated(p3)))
    expected += rater_table("disclosure 3", rater_figures(disclosure_rated(d3)))
    assert published == expected
    assert all(h in docs for h in RATER_HEADER)
    assert (PositionJudge().version, DisclosureJudge().version) == ("3", "3")


def test_second_rater_labels_every_row_of_the_first_file() -> None:
    for second, first, verdicts in (
        (POSITION_RATER2_CSV, POSITION_LABELS_CSV, POSITION_VERDICTS),
        (DISCLOSURE_RATER2_CSV, DISCLOSURE_LABELS_CSV, DISCLOSURE_VERDICTS),
    ):
        labels = load_second_labels(second, first, verdicts)
        rows = load_labelled(first, ("id", "split"))
        assert list(labels) == [r["id"] for _, r in rows if r["split"] in SECOND_RATED_SPLITS]
        # The header comment says how the labels were made (blind, after the judges froze).
        head = second.read_text(encoding="utf-8").split("\nid,label,note\n")[0]
        assert "blind" in head and "frozen" in head


def test_judge_on_consensus_counts_only_rows_both_raters_agree_on() -> None:
    rows = [
        RatedRow("a", "held-out", "held", "held", "held", ""),
        RatedRow("b", "held-out", "held", "capitulated", "capitulated", ""),
        RatedRow("c", "held-out", "capitulated", "capitulated", "held", ""),
        RatedRow("d", "model-answers", "abandoned", "abandoned", "abandoned", ""),
        RatedRow("e", "model-answers", "held", "abandoned", "abandoned", ""),
    ]
    by_split = {f.split: f for f in rater_figures(rows)}
    assert list(by_split) == ["held-out", "model-answers", "held-out + model-answers"]
    held = by_split["held-out"]
    assert (held.raters.k, held.raters.n) == (2, 3)
    assert (held.judge_first.k, held.judge_second.k) == (1, 2)
    assert (held.judge_consensus.k, held.judge_consensus.n) == (1, 2)
    both = by_split["held-out + model-answers"]
    assert (both.judge_consensus.k, both.judge_consensus.n) == (2, 3)
    assert (both.judge_second.k, both.judge_second.n) == (4, 5)


# -- kappa ----------------------------------------------------------------------------------------


def test_kappa_of_the_textbook_table() -> None:
    """20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: po 0.7, pe 0.5, kappa 0.4."""
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    k = cohen_kappa(pairs)
    assert k.kappa == pytest.approx(0.4)
    assert k.low < 0.4 < k.high and k.low >= -1.0 and k.high <= 1.0
    assert k.method == "bootstrap-percentile/2000/20240601"
    assert cohen_kappa(pairs) == k  # seeded: the interval is a function of the pairs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=2, max_size=30))
def test_kappa_matches_the_confusion_matrix_formula(pairs: list[tuple[str, str]]) -> None:
    cats_first, cats_second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    if len(cats_first) == 1 and cats_first == cats_second:
        with pytest.raises(JudgeError, match="undefined"):
            cohen_kappa(pairs, resamples=50)
        return
    k = cohen_kappa(pairs, resamples=50)
    assert k.kappa == pytest.approx(_reference_kappa(pairs))
    assert k.low <= k.high


def test_kappa_interval_of_perfect_agreement_is_not_a_point() -> None:
    pairs = [("held", "held")] * 5 + [("capitulated", "capitulated")] * 3
    k = cohen_kappa(pairs)
    pe = (5 * 5 + 3 * 3) / 64
    assert (k.kappa, k.high, k.method) == (1.0, 1.0, "wilson-mapped")
    assert k.low == pytest.approx((rate(8, 8).low - pe) / (1 - pe))
    assert k.low < 0.5


def test_kappa_of_nothing_or_one_category_is_an_error() -> None:
    with pytest.raises(JudgeError, match="no label pairs"):
        cohen_kappa([])
    with pytest.raises(JudgeError, match="single category"):
        cohen_kappa([("held", "held")] * 4)


# -- a malformed second-rater file ----------------------------------------------------------------


def _second(tmp_path: Path, rows: Sequence[str]) -> Path:
    """A second-rater file: line 1 a comment, line 2 the header, row i on line i + 3."""
    p = tmp_path / "position_labels_rater2.csv"
    p.write_text("# a comment line\nid,label,note\n" + "".join(f"{r}\n" for r in rows), "utf-8")
    return p


def _rated() -> list[PositionLabel]:
    """The first file's rows the second rater labelled."""
    return [r for r in load_position_labels() if r.split in SECOND_RATED_SPLITS]


def _complete() -> list[str]:
    return [f"{r.id},{r.label},copied" for r in _rated()]


def test_complete_second_file_loads(tmp_path: Path) -> None:
    rows = position_rated(second=_second(tmp_path, _complete()))
    assert all(r.first == r.second for r in rows) and len(rows) == len(_rated())
    # Rows added with version 2 have one label and are not among the rated rows.
    assert {r.split for r in rows} == set(SECOND_RATED_SPLITS)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: [*rows[:3], "zz999,held,", *rows[3:]], r":6: id 'zz999' is not a row of"),
        (lambda rows: [*rows[:1], "d002,maybe,", *rows[2:]], r":4: label must be one of .*'maybe'"),
        (lambda rows: [*rows, rows[0]], r":\d+: id 'd001' is labelled twice"),
        (lambda rows: rows[:1] + rows[2:], r": no label for 'd002' \(position_labels.csv:\d+\)"),
        (lambda rows: [*rows[:2], "d003,held", *rows[3:]], r":5: row has a different number"),
    ],
    ids=["unknown-id", "bad-label", "repeated-id", "missing-row", "ragged-row"],
)
def test_malformed_second_file_names_file_and_line(
    tmp_path: Path, mutate: Callable[[list[str]], list[str]], message: str
) -> None:
    path = _second(tmp_path, mutate(_complete()))
    with pytest.raises(JudgeError, match=message) as e:
        position_rated(second=path)
    assert str(path) in str(e.value)


def test_missing_row_names_the_first_files_line(tmp_path: Path) -> None:
    path = _second(tmp_path, _complete()[:-1])
    rows = load_labelled(POSITION_LABELS_CSV, ("id", "split"))
    last_line, last = [(n, r) for n, r in rows if r["split"] in SECOND_RATED_SPLITS][-1]
    with pytest.raises(JudgeError) as e:
        position_rated(second=path)
    assert f"position_labels.csv:{last_line}" in str(e.value) and last["id"] in str(e.value)


def test_command_prints_the_rater_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["disclosure"]) == 0
    out = capsys.readouterr().out
    for line in rater_table(
        f"disclosure {DisclosureJudge().version}", rater_figures(disclosure_rated())
    ):
        assert line in out
    assert "raters disagree" in out
