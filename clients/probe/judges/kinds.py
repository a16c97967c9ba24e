"""Agreement of the position and disclosure judges with their hand labels, per split.

``python -m clients.probe.judges position`` and ``… disclosure`` print, per split of the labels
file, the judge's exact agreement with the label (with n and the Wilson 95 % interval), the
confusion counts, and every disagreement. The ``dev`` split is what the rules were tuned on;
``held-out`` (written in the same sitting, never looked at while tuning) and ``model-answers``
(a real model's answers, labelled before the judge ran on them) are the validation figures the
judges carry (`POSITION_VALIDATION`, `DISCLOSURE_VALIDATION`; a test keeps them equal).
Version 2 of each judge was also tuned on ``tuning-2`` (written after version 1's failures were
seen) and carries ``held-out-2`` (written after version 2 froze) beside the two above.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from clients.probe.judges.disclosure import (
    DisclosureJudge,
    figure_split,
    load_disclosure_labels,
)
from clients.probe.judges.position import PositionJudge, label_item, load_position_labels
from clients.probe.judges.position import figure_split as position_figure_split
from clients.probe.judges.rules import Validation
from clients.probe.multiturn import PushbackTurns, pushback_turns

__all__ = ["Disagreement", "KindFigures", "disclosure_figures", "figures_text", "position_figures"]


@dataclass(frozen=True)
class Disagreement:
    """A labelled answer the judge got wrong."""

    id: str
    label: str
    verdict: str
    answer: str


@dataclass(frozen=True)
class KindFigures:
    """One split's agreement: `validation` (correct of n), the (label, verdict) counts, and the
    disagreements."""

    split: str
    validation: Validation
    confusion: Counter[tuple[str, str]]
    wrong: tuple[Disagreement, ...]


def _split(split: str, rows: Sequence[tuple[str, str, str, str]], dataset: str) -> KindFigures:
    confusion: Counter[tuple[str, str]] = Counter((label, got) for _, label, got, _ in rows)
    wrong = tuple(Disagreement(i, lab, got, a) for i, lab, got, a in rows if lab != got)
    return KindFigures(
        split, Validation(dataset, len(rows), len(rows) - len(wrong)), confusion, wrong
    )


def _turns(item_id: str) -> tuple[PushbackTurns, list[str]]:
    item = label_item(item_id)
    turns = pushback_turns(item)
    assert turns is not None, f"{item_id} is not a two-turn pushback item"
    return turns, [k for kp in item.keypoints for k in kp.keywords]


_DATASETS = {
    "dev": "{kind} labels, dev split (tuned on)",
    "held-out": "{kind} labels, held-out split (never tuned on)",
    "model-answers": "{kind} labels, {model} (never tuned on)",
    "tuning-2": "{kind} labels, tuning-2 split (written after version 1's failures; tuned on)",
    "held-out-2": "{kind} labels, held-out-2 split (written after version 2 froze; never tuned on)",
    "smollm2-full3": "{kind} labels, {run}, suite full@3 (labelled blind; never tuned on)",
    # Each judge's run in two halves (`FULL3_HALVES` of disclosure and of position): version 3
    # of each was tuned on the odd-numbered rows; versions 1 and 2 on neither.
    "smollm2-full3-odd": "{kind} labels, {run}, suite full@3, odd-numbered rows"
    " (labelled blind; version 3 tuned on them)",
    "smollm2-full3-even": "{kind} labels, {run}, suite full@3, even-numbered rows"
    " (labelled blind; never tuned on)",
}
_MODEL_SETS = {
    "position": "SmolLM2-135M-Instruct two-turn answers",
    "disclosure": "SmolLM2-135M-Instruct medical-tier answers",
}
# The full@3 runs differ from the `model-answers` rows for disclosure: that run used the
# anonymous tier (no system prompt), the older rows the medical tier.
_RUN_SETS = {
    "position": "SmolLM2-135M-Instruct two-turn answers",
    "disclosure": "SmolLM2-135M-Instruct anonymous-tier answers",
}


def _dataset(kind: str, split: str) -> str:
    return _DATASETS[split].format(kind=kind, model=_MODEL_SETS[kind], run=_RUN_SETS[kind])


def position_figures(judge: PositionJudge | None = None) -> list[KindFigures]:
    """The position judge against `data/position_labels.csv`, per split (items of the core
    or full suite, `label_item`; the SmolLM2 full@3 rows in their two halves,
    `clients.probe.judges.position.figure_split`)."""
    judge = judge or PositionJudge()
    by_split: dict[str, list[tuple[str, str, str, str]]] = {}
    for r in load_position_labels():
        turns, correct = _turns(r.item)
        got = judge.judge(turns, correct, r.first_answer, r.answer)
        by_split.setdefault(position_figure_split(r), []).append((r.id, r.label, got, r.answer))
    return [_split(s, rows, _dataset("position", s)) for s, rows in by_split.items()]


def disclosure_figures(judge: DisclosureJudge | None = None) -> list[KindFigures]:
    """The disclosure judge against `data/disclosure_labels.csv`, per split (the SmolLM2 full@3
    rows in their two halves, `figure_split`)."""
    judge = judge or DisclosureJudge()
    by_split: dict[str, list[tuple[str, str, str, str]]] = {}
    for r in load_disclosure_labels():
        got = judge.verdict(label_item(r.item).prompt, r.answer)
        by_split.setdefault(figure_split(r), []).append((r.id, r.label, got, r.answer))
    return [_split(s, rows, _dataset("disclosure", s)) for s, rows in by_split.items()]


def figures_text(figs: Sequence[KindFigures]) -> str:
    """The figures as a Markdown table, then the confusion counts and disagreements."""
    lines = ["| split | n | agree | agreement [95% CI] |", "|---|---|---|---|"]
    for f in figs:
        a = f.validation.accuracy
        lines.append(f"| {f.split} | {a.n} | {a.k} | {a.rate:.3f} [{a.low:.3f}, {a.high:.3f}] |")
    for f in figs:
        lines.append("")
        lines.append(f"{f.split}: (label -> verdict) counts")
        for (lab, got), n in sorted(f.confusion.items()):
            lines.append(f"  {lab} -> {got}: {n}")
        for w in f.wrong:
            lines.append(f"  wrong {w.id}: {w.label} judged {w.verdict}: {w.answer[:100]!r}")
    return "\n".join(lines)
