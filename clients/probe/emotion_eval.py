"""Validate emotion calibrations on text they were never fitted on or chosen by.

Two checks, both with 4 emotions (`OUTSIDE_EMOTIONS`, chance 0.25) and Wilson 95 % intervals:

* **Outside scenarios** (`clients/probe/data/emotions/outside.jsonl`, written for this project,
  never used to fit vectors, choose a layer or choose a method): 25 third-person scenarios per
  emotion in registers unlike the stimuli (news, tales, clinical notes, police reports, sports
  commentary, ...). A scenario counts as right when, of the 4 emotions' projections of its
  reading, its own emotion's is the largest (`top1_among`).
* **Generated text, topic held fixed**: the model writes about each of `TOPICS` four times,
  framed by each emotion (`FRAMINGS`), and its answers are read while it generates them, as
  probe records read answers (`emotion_capture`). Per topic and emotion, the right framing
  should project furthest onto that emotion's direction among the topic's 4 answers (`rank`);
  per answer, its framing's emotion should have the largest neutral-text z-score of the 4
  (`argmax`). The topic is the same across the 4 answers, so topic cannot explain a hit.

`compare_variants` fits every variant of `VARIANTS` on the same stimulus readings and measures
each on the same outside set; the variant a calibration uses is chosen on the select split
(`best_on_select`), never on the outside set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import torch

from clients.probe.emotions import (
    Calibration,
    Stimuli,
    StimuliError,
    emotion_capture,
    fit_calibration,
    read_stimuli,
    sweep_layers,
    text_means,
)
from clients.probe.metrics import Rate, rate
from clients.probe.model import LoadedModel, generate

__all__ = [
    "FRAMINGS",
    "OUTSIDE_EMOTIONS",
    "TOPICS",
    "VARIANTS",
    "OutsideText",
    "Variant",
    "best_on_select",
    "compare_variants",
    "evaluate_calibration",
    "load_outside",
    "outside_path",
    "rate_dict",
    "top1_among",
    "topic_fixed",
    "topic_prompts",
]

OUTSIDE_EMOTIONS: Final = ("joyful", "sad", "angry", "afraid")
"""The emotions of the outside checks; chance is 1/4."""

TOPICS: Final = (
    "their morning commute",
    "a visit to the dentist",
    "the weather today",
    "a letter they just received",
    "their neighbour's dog",
    "the last day of school",
    "a phone call from their brother",
    "the new office building",
    "a walk by the river",
    "dinner last night",
    "moving to a new city",
    "the results of a test",
)
"""Topics held fixed while the framing changes."""

FRAMINGS: Final = {
    "joyful": "overjoyed",
    "sad": "heartbroken",
    "angry": "furious",
    "afraid": "terrified",
}
"""The word that frames each emotion in a topic prompt (only answer tokens are read)."""

OUTSIDE: Final = "outside.jsonl"


@dataclass(frozen=True)
class OutsideText:
    """One outside scenario: `id`, emotion `label`, `register` (news, tale, ...), `text`."""

    id: str
    label: str
    register: str
    text: str


def outside_path() -> Path:
    """The bundled outside-scenario file."""
    return Path(str(resources.files("clients.probe").joinpath("data", "emotions", OUTSIDE)))


def load_outside(path: Path | None = None) -> tuple[OutsideText, ...]:
    """Read an outside-scenario file (JSON lines: ``id``, ``label``, ``register``, ``text``).

    Raises `StimuliError` naming the line of a row that breaks the schema.
    """
    where = path or outside_path()
    keys = {"id", "label", "register", "text"}
    rows, seen = [], set()
    for n, line in enumerate(where.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise StimuliError(f"{where} line {n}: not JSON: {e}") from e
        if not isinstance(row, dict) or set(row) != keys:
            raise StimuliError(f"{where} line {n}: want exactly the keys {sorted(keys)}")
        if not all(isinstance(v, str) and v for v in row.values()):
            raise StimuliError(f"{where} line {n}: every value must be a non-empty string")
        if row["label"] not in OUTSIDE_EMOTIONS:
            raise StimuliError(
                f"{where} line {n}: label {row['label']!r} not in {OUTSIDE_EMOTIONS}"
            )
        if row["id"] in seen:
            raise StimuliError(f"{where} line {n}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        rows.append(OutsideText(**row))
    return tuple(rows)


def rate_dict(r: Rate) -> dict[str, Any]:
    """A Rate as JSON: k, n, rate and its Wilson 95 % interval."""
    return {
        "k": r.k,
        "n": r.n,
        "rate": round(r.rate, 4),
        "interval": [round(r.low, 4), round(r.high, 4)],
    }


def top1_among(
    projections: torch.Tensor,
    labels: Sequence[str],
    emotions: Sequence[str],
    among: Sequence[str] = OUTSIDE_EMOTIONS,
) -> Rate:
    """How often, of the `among` columns of `projections` [n, E] (columns named by `emotions`),
    the text's own label's is the largest."""
    cols = [list(emotions).index(e) for e in among]
    pred = projections[:, cols].argmax(dim=1).tolist()
    hits = sum(among[p] == label for p, label in zip(pred, labels, strict=True))
    return rate(hits, len(labels))


def topic_prompts() -> list[tuple[str, str, str]]:
    """(topic, emotion, prompt) for every topic of `TOPICS` and framing of `FRAMINGS`."""
    return [
        (topic, emotion, f"Write three sentences about {topic}, told by someone who is {word}.")
        for topic in TOPICS
        for emotion, word in FRAMINGS.items()
    ]


def topic_fixed(
    z: torch.Tensor, topics: Sequence[str], labels: Sequence[str], among: Sequence[str]
) -> dict[str, Rate]:
    """The two topic-held-fixed scores of answers' z-scores `z` [n, len(among)] (columns in
    `among` order): ``rank`` (per topic and emotion, the answer framed by it scores highest on
    it among the topic's answers) and ``argmax`` (per answer, its framing scores highest)."""
    rank_hits = rank_n = 0
    for topic in dict.fromkeys(topics):
        rows = [i for i, t in enumerate(topics) if t == topic]
        for j, emotion in enumerate(among):
            framed = [i for i in rows if labels[i] == emotion]
            if not framed:
                continue
            best = max(rows, key=lambda i: float(z[i, j]))
            rank_hits += best in framed
            rank_n += 1
    pred = z.argmax(dim=1).tolist()
    arg_hits = sum(among[p] == label for p, label in zip(pred, labels, strict=True))
    return {"rank": rate(rank_hits, rank_n), "argmax": rate(arg_hits, len(labels))}


def _neutral_z(cal: Calibration, projections: torch.Tensor) -> torch.Tensor:
    """Projections [n, E] as z-scores against the calibration's neutral-text null."""
    if cal.null_projections is None:
        return projections
    null = cal.null_projections.double()
    return (projections.double() - null.mean(dim=0)) / null.std(dim=0).clamp_min(1e-12)


def evaluate_calibration(
    lm: LoadedModel,
    cal: Calibration,
    outside: Sequence[OutsideText] | None = None,
    *,
    max_new_tokens: int = 48,
    batch_size: int = 12,
) -> dict[str, Any]:
    """Both outside checks of `cal` on `lm` (see the module docstring), as JSON-ready data:
    the outside scenarios (raw projections and neutral z-scores, overall and per emotion), and
    the topic-held-fixed generations (with every answer, so a figure can be traced to them)."""
    rows = list(outside if outside is not None else load_outside())
    among = [e for e in OUTSIDE_EMOTIONS if e in cal.emotions]
    readings = text_means(lm, [r.text for r in rows], [cal.layer], prefix=cal.reading_prefix)
    proj = cal.projections(readings[cal.layer])
    labels = [r.label for r in rows]
    per = {
        e: rate_dict(
            top1_among(
                proj[[i for i, x in enumerate(labels) if x == e]],
                [e] * labels.count(e),
                cal.emotions,
                among,
            )
        )
        for e in among
    }
    prompts = topic_prompts()
    with emotion_capture(lm, cal) as cap:
        gens = generate(
            lm,
            [(None, p) for _, _, p in prompts],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
    summaries = cap.summaries(gens)
    means = torch.tensor([[s[e][0] for e in cal.emotions] for s in summaries])
    cols = [list(cal.emotions).index(e) for e in among]
    z = _neutral_z(cal, means)[:, cols]
    fixed = topic_fixed(z, [t for t, _, _ in prompts], [e for _, e, _ in prompts], among)
    return {
        "calibration": cal.digest,
        "layer": cal.layer,
        "method": cal.method,
        "emotions": among,
        "chance": 1 / len(among),
        "outside": {
            "n": len(rows),
            "top1": rate_dict(top1_among(proj, labels, cal.emotions, among)),
            "top1_neutral_z": rate_dict(
                top1_among(_neutral_z(cal, proj), labels, cal.emotions, among)
            ),
            "per_emotion": per,
        },
        "topic_fixed": {
            "max_new_tokens": max_new_tokens,
            "rank": rate_dict(fixed["rank"]),
            "argmax_neutral_z": rate_dict(fixed["argmax"]),
            "answers": [
                {"topic": t, "framing": e, "answer": g.text}
                for (t, e, _), g in zip(prompts, gens, strict=True)
            ],
        },
    }


@dataclass(frozen=True)
class Variant:
    """One way of fitting vectors: `method` (``dom`` / ``lda``), `shrinkage`, `n_pcs`."""

    name: str
    method: str
    shrinkage: float
    n_pcs: int


VARIANTS: Final = (
    Variant("dom, 4 neutral PCs (v1 method)", "dom", 0.0, 4),
    Variant("dom, no neutral PCs", "dom", 0.0, 0),
    Variant("lda, shrinkage 0.1", "lda", 0.1, 0),
    Variant("lda, shrinkage 0.3", "lda", 0.3, 0),
    Variant("lda, shrinkage 0.6", "lda", 0.6, 0),
    Variant("lda, shrinkage 0.9", "lda", 0.9, 0),
    Variant("lda, shrinkage 0.6, 4 neutral PCs", "lda", 0.6, 4),
)
"""The variants `compare_variants` measures, all on the same readings."""


def best_on_select(results: Sequence[Mapping[str, Any]]) -> str:
    """The name of the variant with the highest select-split accuracy at its chosen layer
    (ties to the earlier variant): how a method is chosen without looking at the outside set."""
    return str(max(results, key=lambda r: float(r["select"]))["variant"])


def compare_variants(
    lm: LoadedModel,
    stim: Stimuli,
    outside: Sequence[OutsideText] | None = None,
    *,
    variants: Sequence[Variant] = VARIANTS,
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per variant: its chosen layer, select-split and held-out (test) accuracy, and its
    outside-scenario top-1 of 4 (raw and neutral z), all from one reading of every text."""
    rows = list(outside if outside is not None else load_outside())
    sweep = list(layers) if layers is not None else sweep_layers(lm.num_layers)
    readings = read_stimuli(lm, stim, sweep, progress=progress)
    probe = [r.text for r in rows]
    outside_readings = text_means(lm, probe, sweep, prefix=_prefix(lm), progress=progress)
    labels = [r.label for r in rows]
    out = []
    for v in variants:
        cal = fit_calibration(
            lm, stim, readings, n_pcs=v.n_pcs, method=v.method, shrinkage=v.shrinkage
        )
        among = [e for e in OUTSIDE_EMOTIONS if e in cal.emotions]
        proj = cal.projections(outside_readings[cal.layer])
        out.append(
            {
                "variant": v.name,
                "layer": cal.layer,
                "select": round(cal.layer_scores[cal.layer], 4),
                "held_out": round(cal.held_out_score or 0.0, 4),
                "outside_top1": rate_dict(top1_among(proj, labels, cal.emotions, among)),
                "outside_top1_neutral_z": rate_dict(
                    top1_among(_neutral_z(cal, proj), labels, cal.emotions, among)
                ),
            }
        )
    return out


def _prefix(lm: LoadedModel) -> str:
    from clients.probe.emotions import _default_prefix

    return _default_prefix(lm)
