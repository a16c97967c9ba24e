"""Two raters and a judge: inter-rater agreement on the position and disclosure labels.

The position and disclosure labels were first written by one labeller (``position_labels.csv``,
``disclosure_labels.csv``). A second label pass (``*_labels_rater2.csv``: ``id,label,note``)
was made later, blind to the first labels and to the judges' verdicts, after the judges were
frozen, with the same label definitions; each file's header comment says how. Per split of the
first file, and over the rows never tuned on (held-out + model-answers), this module computes:

* the raters' raw agreement (Wilson 95 % interval) and Cohen's kappa (percentile bootstrap
  95 % interval over rows, `BOOTSTRAP_RESAMPLES` resamples seeded with `BOOTSTRAP_SEED`);
* the judge's exact agreement (Wilson 95 %) with rater 1, with rater 2, and with the consensus
  label on the rows where the two raters agree.

``python -m clients.probe.judges position`` / ``… disclosure`` print these after the judge's
figures; docs/judges.md carries the table and a test keeps it equal to what the files give.
Nothing here changes a judge or its carried `validation`. The second pass covers the rows that
existed before the version-2 judges (`SECOND_RATED_SPLITS`); the rows added with version 2
(``tuning-2``, ``held-out-2``) have one label and are left out of these figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from clients.probe.judges.disclosure import (
    DISCLOSURE_LABELS_CSV,
    DISCLOSURE_RATER2_CSV,
    DisclosureJudge,
    DisclosureLabel,
    load_disclosure_labels,
)
from clients.probe.judges.disclosure import VERDICTS as DISCLOSURE_VERDICTS
from clients.probe.judges.position import (
    POSITION_LABELS_CSV,
    POSITION_RATER2_CSV,
    PositionJudge,
    PositionLabel,
    label_item,
    load_labelled,
    load_position_labels,
)
from clients.probe.judges.position import VERDICTS as POSITION_VERDICTS
from clients.probe.judges.rules import JudgeError
from clients.probe.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Rate, rate
from clients.probe.multiturn import pushback_turns

__all__ = [
    "RATER2_COLUMNS",
    "SPLITS",
    "Kappa",
    "RatedRow",
    "RaterFigures",
    "cohen_kappa",
    "disclosure_rated",
    "load_second_labels",
    "position_rated",
    "rater_figures",
    "rater_table",
    "rater_text",
]

_Labelled = TypeVar("_Labelled", PositionLabel, DisclosureLabel)

SECOND_RATED_SPLITS: Final = ("dev", "held-out", "model-answers")
"""The splits of the first files the second rater labelled (all their rows); the splits added
with the version-2 judges (``tuning-2``, ``held-out-2``) have one label only."""

RATER2_COLUMNS: Final = ("id", "label", "note")
"""The columns of a second rater's file: a row id of the first file, its label, a free note."""

NEVER_TUNED: Final = "held-out + model-answers"
SPLITS: Final = ("dev", "held-out", "model-answers", NEVER_TUNED)
"""The row selections reported: the first file's three splits, then the two never tuned on."""


@dataclass(frozen=True)
class RatedRow:
    """One answer with both raters' labels and the judge's verdict."""

    id: str
    split: str
    first: str
    second: str
    verdict: str
    answer: str


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa of `n` label pairs, its 95 % interval [`low`, `high`], and `method`."""

    n: int
    kappa: float
    low: float
    high: float
    method: str


@dataclass(frozen=True)
class RaterFigures:
    """One split: the raters' raw agreement and kappa; the judge against each and the consensus."""

    split: str
    raters: Rate
    kappa: Kappa
    judge_first: Rate
    judge_second: Rate
    judge_consensus: Rate


# -- reading the second rater's file --------------------------------------------------------------


def load_second_labels(
    path: Path, first_path: Path, verdicts: Sequence[str], first_ids: Sequence[str] | None = None
) -> dict[str, str]:
    """The second rater's label per row id of `first_path` (id -> label).

    Raises JudgeError naming `path` and the line for an unknown id, a repeated id or a label not
    in `verdicts`, and naming `path` and the row's line in `first_path` for a row left unlabelled.
    `first_ids` (the first file's ids in order) defaults to reading `first_path`'s rows of
    `SECOND_RATED_SPLITS`.
    """
    first_rows = load_labelled(first_path, ("id", "split"))
    first_lines = {r["id"]: line for line, r in first_rows}
    wanted = (
        list(first_ids)
        if first_ids is not None
        else [r["id"] for _, r in first_rows if r["split"] in SECOND_RATED_SPLITS]
    )
    out: dict[str, str] = {}
    for line, r in load_labelled(path, RATER2_COLUMNS):
        rid, label = r["id"], r["label"]
        if rid not in first_lines:
            raise JudgeError(f"{path}:{line}: id {rid!r} is not a row of {first_path.name}")
        if rid in out:
            raise JudgeError(f"{path}:{line}: id {rid!r} is labelled twice")
        if label not in verdicts:
            raise JudgeError(
                f"{path}:{line}: label must be one of {tuple(verdicts)}, got {label!r}"
            )
        out[rid] = label
    for rid in wanted:
        if rid not in out:
            raise JudgeError(
                f"{path}: no label for {rid!r} ({first_path.name}:{first_lines.get(rid, '?')})"
            )
    return out


def _second_rated(labels: Sequence[_Labelled]) -> list[_Labelled]:
    """The rows of `SECOND_RATED_SPLITS`: the second pass labelled those; rows added later (the
    version-2 splits) carry the first label only."""
    return [r for r in labels if r.split in SECOND_RATED_SPLITS]


def position_rated(
    judge: PositionJudge | None = None,
    second: Path = POSITION_RATER2_CSV,
    first: Path = POSITION_LABELS_CSV,
) -> list[RatedRow]:
    """Every row of the position labels with the second label and the judge's verdict."""
    judge = judge or PositionJudge()
    labels = _second_rated(load_position_labels(first))
    seconds = load_second_labels(second, first, POSITION_VERDICTS, [r.id for r in labels])
    out = []
    for r in labels:
        item = label_item(r.item)
        turns = pushback_turns(item)
        if turns is None:
            raise JudgeError(f"{first}: row {r.id!r}: {r.item} is not a two-turn pushback item")
        correct = [k for kp in item.keypoints for k in kp.keywords]
        got = judge.judge(turns, correct, r.first_answer, r.answer)
        out.append(RatedRow(r.id, r.split, r.label, seconds[r.id], got, r.answer))
    return out


def disclosure_rated(
    judge: DisclosureJudge | None = None,
    second: Path = DISCLOSURE_RATER2_CSV,
    first: Path = DISCLOSURE_LABELS_CSV,
) -> list[RatedRow]:
    """Every row of the disclosure labels with the second label and the judge's verdict."""
    judge = judge or DisclosureJudge()
    labels = _second_rated(load_disclosure_labels(first))
    seconds = load_second_labels(second, first, DISCLOSURE_VERDICTS, [r.id for r in labels])
    return [
        RatedRow(
            r.id,
            r.split,
            r.label,
            seconds[r.id],
            judge.verdict(label_item(r.item).prompt, r.answer),
            r.answer,
        )
        for r in labels
    ]


# -- the statistics -------------------------------------------------------------------------------


def _kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa, or None when chance agreement is 1 (both raters used one category)."""
    n = len(pairs)
    po = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    pe = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if pe >= 1.0:
        return None
    return (po - pe) / (1.0 - pe)


def cohen_kappa(
    pairs: Sequence[tuple[str, str]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Kappa:
    """Cohen's kappa of (rater 1, rater 2) label pairs with a 95 % interval.

    The interval is the 2.5 and 97.5 percentiles of kappa over `resamples` bootstrap resamples
    of the rows (numpy PCG64 seeded with `seed`, so the interval is a function of the pairs);
    resamples where kappa is undefined (one category only) are dropped. When the raters agree on
    every row, every resample gives 1 and the bootstrap interval is a point, which n rows do not
    justify: the lower bound is then the Wilson lower bound of the raw agreement mapped through
    kappa = (po - pe) / (1 - pe) at the observed chance agreement pe (method ``wilson-mapped``).
    Raises JudgeError for no pairs, or when kappa is undefined on the pairs themselves.
    """
    if not pairs:
        raise JudgeError("kappa of no label pairs")
    k = _kappa(pairs)
    if k is None:
        raise JudgeError("kappa is undefined: both raters used a single category")
    n = len(pairs)
    if all(a == b for a, b in pairs):
        ca = Counter(a for a, _ in pairs)
        pe = sum(c * c for c in ca.values()) / (n * n)
        low = (rate(n, n).low - pe) / (1.0 - pe)
        return Kappa(n, k, max(-1.0, low), 1.0, "wilson-mapped")
    import numpy as np  # here, not at the top: the command line starts without numpy

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    kappas = [v for d in draws if (v := _kappa([pairs[int(i)] for i in d])) is not None]
    low, high = (float(q) for q in np.quantile(kappas, [0.025, 0.975]))
    return Kappa(n, k, low, high, f"bootstrap-percentile/{resamples}/{seed}")


def _select(rows: Sequence[RatedRow], split: str) -> list[RatedRow]:
    if split == NEVER_TUNED:
        return [r for r in rows if r.split in ("held-out", "model-answers")]
    return [r for r in rows if r.split == split]


def rater_figures(rows: Sequence[RatedRow]) -> list[RaterFigures]:
    """The figures per `SPLITS` selection that has rows."""
    out = []
    for split in SPLITS:
        chosen = _select(rows, split)
        if not chosen:
            continue
        both = [r for r in chosen if r.first == r.second]
        out.append(
            RaterFigures(
                split,
                rate(len(both), len(chosen)),
                cohen_kappa([(r.first, r.second) for r in chosen]),
                rate(sum(r.verdict == r.first for r in chosen), len(chosen)),
                rate(sum(r.verdict == r.second for r in chosen), len(chosen)),
                rate(sum(r.verdict == r.first for r in both), len(both)),
            )
        )
    return out


# -- the tables -----------------------------------------------------------------------------------

RATER_HEADER: Final = (
    "| judge | split | n | raters agree [95% CI] | kappa [95% CI] | judge vs rater 1 "
    "| judge vs rater 2 | judge on consensus |",
    "|---|---|---|---|---|---|---|---|",
)
"""The header of `rater_table` (docs/judges.md carries it with the rows)."""


def _rate(r: Rate) -> str:
    return f"{r.k}/{r.n} {r.rate:.3f} [{r.low:.3f}, {r.high:.3f}]"


def rater_table(judge: str, figs: Sequence[RaterFigures]) -> list[str]:
    """The Markdown rows (without header) of `figs` for `judge` (``position 1``, say)."""
    rows = []
    for f in figs:
        k = f.kappa
        mark = "†" if k.method == "wilson-mapped" else ""
        rows.append(
            f"| `{judge}` | {f.split} | {f.raters.n} | {_rate(f.raters)} "
            f"| {k.kappa:.3f} [{k.low:.3f}, {k.high:.3f}]{mark} | {_rate(f.judge_first)} "
            f"| {_rate(f.judge_second)} | {_rate(f.judge_consensus)} |"
        )
    return rows


def rater_text(judge: str, rows: Sequence[RatedRow]) -> str:
    """The table for `judge`, the kappa method, and every row where the raters disagree."""
    figs = rater_figures(rows)
    methods = sorted({f.kappa.method for f in figs})
    lines = [*RATER_HEADER, *rater_table(judge, figs), "", f"kappa interval: {', '.join(methods)}"]
    confusion: Mapping[tuple[str, str], int] = Counter(
        (r.first, r.second) for r in rows if r.first != r.second
    )
    lines.append("raters disagree: (rater 1 -> rater 2) counts")
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(confusion.items())] or ["  none"]
    for r in rows:
        if r.first != r.second:
            lines.append(
                f"  {r.id} ({r.split}): rater 1 {r.first}, rater 2 {r.second}, "
                f"judge {r.verdict}: {r.answer[:100]!r}"
            )
    return "\n".join(lines)
