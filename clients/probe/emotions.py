"""Emotion concept vectors: calibrate them on a model, then read them off its residual stream.

The method (after Anthropic's 2026 emotion-concepts work, applied to open models):

1. Stimuli: `clients/probe/data/emotions/stimuli.jsonl`, written for this project — for each of
   `EMOTIONS`, 40 short everyday texts that convey the emotion without naming it (a fixed split:
   20 train, 10 select, 10 held out), plus neutral, factual texts (half for the neutral
   components, half for the neutral-text null).
2. Reading a text: its tokens' residual-stream vectors at one decoder layer, each at the token's
   own position, averaged over the text (`TOKEN_RULE`). Texts are read after `READING_PREFIX`,
   a start-of-turn token, so no text's first token is the model's attention sink (whose huge,
   content-free activation would otherwise swamp the mean of a short text).
3. Difference of means: per emotion, the mean over its train texts minus the mean over all
   emotions (that grand mean is kept as the calibration's `center`). With ``method="lda"`` the
   differences are then whitened by a shrunk covariance of the within-emotion and neutral
   readings (a regularised linear discriminant).
4. Neutral directions: the top `n_pcs` principal components of the neutral texts' readings
   (centred) are projected out of every vector, which is then scaled to unit length. They are
   projected out of the vectors only: since the vectors are orthogonal to them, those
   directions cannot move a projection, and activations need no such step.
5. Projection: ``(reading - center) · vector``. Subtracting `center` is the one thing done to
   activations at projection time. It matters: the residual stream has a large common
   component, and its dot product with each unit vector is a different constant per emotion
   that would otherwise decide the argmax (on SmolLM2, held-out accuracy falls from about 0.6
   to 0.1-0.4 without it; see docs/emotions.md). A score of 0 thus means "as much of this
   emotion as the average emotional stimulus".
6. Layer: every layer in 30-80 % of the depth is fitted on the train texts; the one whose
   vectors classify the *select* texts best (argmax projection, top-1) is kept, refitted on
   train + select, and scored on the held-out texts, which neither fitting nor the choice of
   layer ever sees. Per-emotion held-out accuracy and chance (1/E) are reported with it.
7. What noise gives: the projections of the null texts (neutral texts used for nothing else)
   onto every vector, and `RANDOM_DIRECTIONS` seeded random unit directions in the vectors'
   subspace, are kept with the calibration, so any projection can be read against both
   (`Calibration.interpret`): a projection is a position along a direction, relative to
   neutral text, not a measure of what the model feels.

`emotion_capture` then reads the projections of every generated answer token while `generate`
runs, and `score_texts` reads whole texts. Both use `residual_hook`, so no hook outlives them.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import torch

from attest.errors import AttestError
from attest.predicates import EmotionValidation
from clients.probe.metrics import milli, rate
from clients.probe.model import (
    Generation,
    LoadedModel,
    ModelIdentity,
    cache_root,
    hidden_states_multi,
    residual_hook,
)

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_N_PCS",
    "DEFAULT_SHRINKAGE",
    "EMOTIONS",
    "METHODS",
    "RANDOM_DIRECTIONS",
    "READING_PREFIX",
    "TOKEN_RULE",
    "Calibration",
    "CalibrationError",
    "CalibrationMismatchError",
    "CaptureError",
    "EmotionCapture",
    "EmotionsError",
    "Interpretation",
    "Stimuli",
    "StimuliError",
    "StimulusReadings",
    "calibrate",
    "calibration_chunks",
    "calibration_dir",
    "classify",
    "difference_of_means",
    "emotion_capture",
    "fit_calibration",
    "fit_layer",
    "grand_mean",
    "interpret_texts",
    "latest_calibration",
    "load_calibration",
    "load_stimuli",
    "neutral_components",
    "project_out",
    "random_directions",
    "read_stimuli",
    "save_calibration",
    "score_texts",
    "shrunk_covariance",
    "sweep_layers",
    "text_means",
]

EMOTIONS: Final[tuple[str, ...]] = (
    "calm",
    "desperate",
    "afraid",
    "angry",
    "joyful",
    "sad",
    "gloomy",
    "broody",
    "reflective",
    "enthusiastic",
    "exasperated",
    "guilty",
    "hopeful",
    "anxious",
    "ashamed",
    "lonely",
    "tender",
    "proud",
    "grateful",
    "disgusted",
)
"""The emotions calibrated, in the order of `Calibration.vectors`' rows."""

NEUTRAL: Final = "neutral"
TOKEN_RULE: Final = "token-mean"
"""A reading is the mean over a text's (or an answer's) tokens of their residual vectors."""

READING_PREFIX: Final = "<|im_start|>"
"""Context put before every stimulus and scored text where the tokenizer has it as one token
(ChatML models); other models get their BOS token, if any. Recorded in each calibration."""

SWEEP: Final = (0.3, 0.8)
"""The fraction of the depth whose layers `calibrate` sweeps by default."""

STIMULI: Final = "stimuli.jsonl"
_FORMAT: Final = "behaviour-ledger/emotion-calibration/v2"
_FORMATS: Final = ("behaviour-ledger/emotion-calibration/v1", _FORMAT)

METHODS: Final = ("dom", "lda")
"""How vectors are fitted: ``dom`` plain difference of means, ``lda`` difference of means
whitened by a shrunk covariance (see `fit_layer`)."""

DEFAULT_METHOD: Final = "lda"
DEFAULT_SHRINKAGE: Final = 0.6
DEFAULT_N_PCS: Final = 0
"""The fitting `calibrate` uses unless told otherwise: of the variants of
`clients.probe.emotion_eval.VARIANTS`, the one with the best select-split accuracy on SmolLM2
(docs/emotions.md, "Variants"); the outside scenarios played no part in the choice."""

RANDOM_DIRECTIONS: Final = 64
"""How many seeded random unit directions a calibration keeps as its random-direction baseline."""

MEASURES: Final = (
    "projection of the mean residual-stream reading onto each emotion direction, relative to "
    "the calibration's center; read it against the neutral-text null and the random-direction "
    "baseline, not as what the model feels"
)
"""What a summary measures, in the words every summary file and CLI output carries."""

RANDOM_SEED: Final = 20260
"""The default seed of those directions (recorded in each calibration)."""


class EmotionsError(AttestError):
    """Base class of the errors this module raises."""


class StimuliError(EmotionsError):
    """A stimulus file that breaks its schema: unknown label or split, duplicate id, bad JSON."""


class CalibrationError(EmotionsError):
    """Calibration bytes or files that do not decode, or whose digest does not match."""


class CalibrationMismatchError(CalibrationError):
    """A calibration used with a model other than the one it was made on.

    `got` is the model the calibration names, `want` the model in use.
    """

    got: ModelIdentity
    want: ModelIdentity

    def __init__(self, got: ModelIdentity, want: ModelIdentity) -> None:
        super().__init__(
            f"calibration made on {got.name} {got.version} (weights {got.weights_sha256[:12]}…), "
            f"not on {want.name} {want.version} (weights {want.weights_sha256[:12]}…)"
        )
        self.got = got
        self.want = want


class CaptureError(EmotionsError):
    """`EmotionCapture.summaries` given generations other than the ones it saw produced."""


# -- stimuli ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stimuli:
    """The stimulus set and the file's digest.

    Per emotion: `train` texts (fit the vectors), `select` texts (choose the layer) and
    `held_out` texts (the test split: never used to fit or choose anything). `neutral` texts
    give the neutral components; `null` neutral texts give the neutral-text null and nothing
    else. A set without `select` texts has its layer chosen on `train` (recorded as such); one
    without `null` texts takes its null from `neutral` (recorded as such).
    """

    train: Mapping[str, tuple[str, ...]]
    held_out: Mapping[str, tuple[str, ...]]
    neutral: tuple[str, ...]
    sha256: str
    select: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    null: tuple[str, ...] = ()

    @property
    def emotions(self) -> tuple[str, ...]:
        """The emotions present, in `EMOTIONS` order."""
        return tuple(e for e in EMOTIONS if e in self.train)

    def subset(
        self, train: int, held_out: int, neutral: int, *, select: int = 0, null: int = 0
    ) -> Stimuli:
        """The first `train` / `select` / `held_out` texts per emotion, `neutral` neutral and
        `null` null texts.

        For quick calibrations (tests); the digest marks the result as a subset.
        """
        tag = f"{self.sha256}:subset:{train}:{held_out}:{neutral}"
        if select or null:
            tag += f":{select}:{null}"
        return Stimuli(
            train={e: t[:train] for e, t in self.train.items()},
            held_out={e: t[:held_out] for e, t in self.held_out.items()},
            neutral=self.neutral[:neutral],
            sha256=hashlib.sha256(tag.encode()).hexdigest(),
            select={e: t[:select] for e, t in self.select.items() if select and t},
            null=self.null[:null],
        )


def stimuli_path() -> Path:
    """The bundled stimulus file."""
    return Path(str(resources.files("clients.probe").joinpath("data", "emotions", STIMULI)))


def load_stimuli(path: Path | None = None) -> Stimuli:
    """Read the stimulus file (JSON lines: ``id``, ``label``, ``split``, ``text``).

    ``label`` is an emotion of `EMOTIONS` or ``neutral``; ``split`` is ``train``, ``select`` or
    ``held_out`` for an emotion and ``neutral`` or ``null`` for a neutral text. The split is in
    the file, so it is fixed.
    """
    data = (path or stimuli_path()).read_bytes()
    parts: dict[str, dict[str, list[str]]] = {
        split: {e: [] for e in EMOTIONS} for split in ("train", "select", "held_out")
    }
    neutral: dict[str, list[str]] = {NEUTRAL: [], "null": []}
    seen: set[str] = set()
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = _stimulus_row(line, n)
        if row["id"] in seen:
            raise StimuliError(f"stimuli line {n}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        label, split, text = row["label"], row["split"], row["text"]
        if label == NEUTRAL and split in neutral:
            neutral[split].append(text)
        elif label in EMOTIONS and split in parts:
            parts[split][label].append(text)
        else:
            raise StimuliError(f"stimuli line {n}: unknown label/split {label!r}/{split!r}")
    train, select, held = (
        {e: tuple(t) for e, t in parts[k].items() if t} for k in ("train", "select", "held_out")
    )
    return Stimuli(
        train=train,
        held_out=held,
        neutral=tuple(neutral[NEUTRAL]),
        sha256=hashlib.sha256(data).hexdigest(),
        select=select,
        null=tuple(neutral["null"]),
    )


def _stimulus_row(line: str, n: int) -> dict[str, str]:
    try:
        row = json.loads(line)
    except ValueError as e:
        raise StimuliError(f"stimuli line {n}: not JSON: {e}") from e
    keys = {"id", "label", "split", "text"}
    if not isinstance(row, dict) or set(row) != keys:
        raise StimuliError(f"stimuli line {n}: want exactly the keys {sorted(keys)}")
    if not all(isinstance(v, str) and v for v in row.values()):
        raise StimuliError(f"stimuli line {n}: every value must be a non-empty string")
    return row


# -- the calibration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpretation:
    """One projection onto one emotion direction, put against what noise gives.

    `projection` is ``(reading - center) · vector`` (the summary's mean). Against the
    neutral-text null (the same projection of the calibration's null texts): `neutral_z` is
    ``(projection - null mean) / null std``, `neutral_percentile` the share of null texts that
    project lower, with its Wilson 95 % interval (`neutral_interval`; the null has finitely many
    texts). Against the random-direction baseline (the same reading projected onto the
    calibration's seeded random unit directions): `random_interval` is their 2.5-97.5 %
    range and `random_percentile` the share of them the reading projects onto less.
    """

    projection: float
    neutral_z: float
    neutral_percentile: float
    neutral_interval: tuple[float, float]
    random_interval: tuple[float, float]
    random_percentile: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded to 4 decimals."""
        return {
            "projection": round(self.projection, 4),
            "neutral_z": round(self.neutral_z, 4),
            "neutral_percentile": round(self.neutral_percentile, 4),
            "neutral_interval": [round(x, 4) for x in self.neutral_interval],
            "random_interval": [round(x, 4) for x in self.random_interval],
            "random_percentile": round(self.random_percentile, 4),
        }


@dataclass
class Calibration:
    """Emotion vectors for one model and where they are read.

    `vectors` [E, d] float32 are unit length, one row per emotion of `emotions`, orthogonal to
    `neutral_pcs` [k, d] (orthonormal rows); `center` [d] is subtracted from a reading before
    projecting (None: nothing is). `held_out_accuracy` is top-1 accuracy per emotion on
    the held-out stimuli at `layer` (the test split: `layer` was chosen on `selected_on`),
    `held_out_score` the same over all held-out texts, `chance` is 1/E, `layer_scores` the
    accuracy on the `selected_on` texts of every layer swept. `reading_prefix` is put before
    every text read. `method` and `shrinkage` say how the vectors were fitted (`fit_layer`).
    `null_projections` [n, E] are the projections of the null texts (`null_source` says which
    texts), `random_directions` [K, d] the random-direction baseline (seed `random_seed`).
    """

    model: ModelIdentity
    layer: int
    token_rule: str
    emotions: tuple[str, ...]
    vectors: torch.Tensor
    neutral_pcs: torch.Tensor
    held_out_accuracy: dict[str, float]
    chance: float
    layer_scores: dict[int, float]
    center: torch.Tensor | None = None
    reading_prefix: str = ""
    stimuli_sha256: str = ""
    method: str = "dom"
    shrinkage: float = 0.0
    selected_on: str = "held_out"
    held_out_score: float | None = None
    held_out_n: int = 0
    null_projections: torch.Tensor | None = None
    null_source: str = ""
    random_directions: torch.Tensor | None = None
    random_seed: int = RANDOM_SEED

    def centred_projections(self, readings: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """``(readings - center) @ directions.T`` for any directions [m, d] (float32)."""
        directions = directions.float().to(readings.device)
        out = readings.float() @ directions.T
        if self.center is not None:
            out = out - self.center.float().to(readings.device) @ directions.T
        return out

    def random_projections(self, readings: torch.Tensor) -> torch.Tensor:
        """[n, d] readings onto the random-direction baseline: [n, K] (K = 0 without one)."""
        if self.random_directions is None:
            return torch.zeros(readings.shape[0], 0)
        return self.centred_projections(readings, self.random_directions)

    def interpret(
        self, projections: torch.Tensor, random: torch.Tensor
    ) -> dict[str, Interpretation]:
        """Per emotion, one reading's projection [E] against the neutral null and against its
        own projections onto the random directions [K] (see `Interpretation`).

        Raises `CalibrationError` when the calibration has no null (a v1 file).
        """
        if self.null_projections is None or self.null_projections.shape[0] < 2:
            raise CalibrationError("this calibration has no neutral-text null: calibrate again")
        null = self.null_projections.double()
        mean, std = null.mean(dim=0), null.std(dim=0).clamp_min(1e-12)
        rand = random.double().flatten()
        lo, hi = (
            (float(torch.quantile(rand, 0.025)), float(torch.quantile(rand, 0.975)))
            if rand.numel()
            else (math.nan, math.nan)
        )
        out = {}
        for i, emotion in enumerate(self.emotions):
            x = float(projections[i])
            below = int((null[:, i] < x).sum())
            r = rate(below, null.shape[0])
            out[emotion] = Interpretation(
                projection=x,
                neutral_z=(x - float(mean[i])) / float(std[i]),
                neutral_percentile=r.rate,
                neutral_interval=(r.low, r.high),
                random_interval=(lo, hi),
                random_percentile=float((rand < x).double().mean()) if rand.numel() else math.nan,
            )
        return out

    def validation(self) -> EmotionValidation:
        """What the EmotionCalibration predicate's `validation` carries (milli-units): the
        method, the split the layer was chosen on, the held-out accuracy and its n, and the
        neutral-text null per emotion. Raises `CalibrationError` without a null (a v1 file)."""
        if self.null_projections is None or self.null_projections.shape[0] < 2:
            raise CalibrationError("this calibration has no neutral-text null: calibrate again")
        null = self.null_projections.double()
        return EmotionValidation(
            method=self.method,
            shrinkage_milli=milli(self.shrinkage),
            layer_selected_on=self.selected_on,
            held_out_milli=milli(self.held_out_score or 0.0),
            held_out_n=self.held_out_n,
            chance_milli=milli(self.chance),
            null_n=int(null.shape[0]),
            null_mean_milli={
                e: milli(float(null[:, i].mean())) for i, e in enumerate(self.emotions)
            },
            null_spread_milli={
                e: milli(float(null[:, i].std())) for i, e in enumerate(self.emotions)
            },
            random_directions=0
            if self.random_directions is None
            else int(self.random_directions.shape[0]),
            random_seed=self.random_seed,
        )

    def null_summary(self) -> dict[str, Any]:
        """The neutral-text null per emotion (n, mean, std, 2.5 / 97.5 % quantiles) and the
        random-direction baseline over the same texts (K, seed, 2.5 / 97.5 % quantiles)."""
        if self.null_projections is None:
            return {}
        null = self.null_projections.double()
        per = {
            e: {
                "mean": round(float(null[:, i].mean()), 4),
                "std": round(float(null[:, i].std()), 4),
                "q025": round(float(torch.quantile(null[:, i], 0.025)), 4),
                "q975": round(float(torch.quantile(null[:, i], 0.975)), 4),
            }
            for i, e in enumerate(self.emotions)
        }
        out: dict[str, Any] = {"n": int(null.shape[0]), "source": self.null_source, "emotions": per}
        if self.random_directions is not None:
            out["random_directions"] = {
                "k": int(self.random_directions.shape[0]),
                "seed": self.random_seed,
            }
        return out

    def projections(self, readings: torch.Tensor) -> torch.Tensor:
        """``(readings - center) @ vectors.T``: [n, d] readings to [n, E] scores (float32)."""
        vectors = self.vectors.float().to(readings.device)
        out = readings.float() @ vectors.T
        if self.center is not None:
            out = out - self.center.float().to(readings.device) @ vectors.T
        return out

    def to_bytes(self) -> bytes:
        """The safetensors encoding: both tensors, and every other field as one JSON metadata
        value (one key, sorted JSON, so the bytes — and `digest` — are reproducible).
        """
        from safetensors.torch import save

        meta = {
            "format": _FORMAT,
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "weights_sha256": self.model.weights_sha256,
            },
            "layer": self.layer,
            "token_rule": self.token_rule,
            "emotions": list(self.emotions),
            "held_out_accuracy": self.held_out_accuracy,
            "chance": self.chance,
            "layer_scores": {str(k): v for k, v in sorted(self.layer_scores.items())},
            "reading_prefix": self.reading_prefix,
            "stimuli_sha256": self.stimuli_sha256,
            "method": self.method,
            "shrinkage": self.shrinkage,
            "selected_on": self.selected_on,
            "held_out_score": self.held_out_score,
            "held_out_n": self.held_out_n,
            "null_source": self.null_source,
            "random_seed": self.random_seed,
        }
        tensors = {"vectors": _plain(self.vectors), "neutral_pcs": _plain(self.neutral_pcs)}
        optional = {
            "center": self.center,
            "null_projections": self.null_projections,
            "random_directions": self.random_directions,
        }
        tensors |= {k: _plain(t) for k, t in optional.items() if t is not None}
        blob: bytes = save(tensors, metadata={"calibration": json.dumps(meta, sort_keys=True)})
        return blob

    @property
    def digest(self) -> str:
        """SHA-256 (lowercase hex) of `to_bytes()`: what a log entry names the vectors blob by."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, model: ModelIdentity) -> Calibration:
        """Decode `to_bytes()` output, checking that it was made on `model`.

        Raises `CalibrationError` for bytes that do not decode and `CalibrationMismatchError`
        when the calibration names another model.
        """
        meta, tensors = _decode(data)
        got = ModelIdentity(**meta["model"])
        if got != model:
            raise CalibrationMismatchError(got, model)
        return cls(
            model=got,
            layer=int(meta["layer"]),
            token_rule=str(meta["token_rule"]),
            emotions=tuple(meta["emotions"]),
            vectors=tensors["vectors"],
            neutral_pcs=tensors["neutral_pcs"],
            held_out_accuracy={str(k): float(v) for k, v in meta["held_out_accuracy"].items()},
            chance=float(meta["chance"]),
            layer_scores={int(k): float(v) for k, v in meta["layer_scores"].items()},
            center=tensors.get("center"),
            reading_prefix=str(meta["reading_prefix"]),
            stimuli_sha256=str(meta["stimuli_sha256"]),
            # A v1 file has none of what follows: its layer was chosen on the held-out texts.
            method=str(meta.get("method", "dom")),
            shrinkage=float(meta.get("shrinkage", 0.0)),
            selected_on=str(meta.get("selected_on", "held_out")),
            held_out_score=_opt_float(meta.get("held_out_score")),
            held_out_n=int(meta.get("held_out_n", 0)),
            null_projections=tensors.get("null_projections"),
            null_source=str(meta.get("null_source", "")),
            random_directions=tensors.get("random_directions"),
            random_seed=int(meta.get("random_seed", RANDOM_SEED)),
        )

    def held_out_scores_milli(self) -> dict[str, int]:
        """`held_out_accuracy` in milli-units, as the EmotionCalibration predicate carries it
        (rounded as every milli-unit of the project is: `metrics.milli`)."""
        return {e: milli(a) for e, a in self.held_out_accuracy.items()}

    def summary(self) -> dict[str, Any]:
        """The fields a person reads (no tensors): the sidecar JSON's body."""
        return {
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "weights_sha256": self.model.weights_sha256,
            },
            "layer": self.layer,
            "token_rule": self.token_rule,
            "emotions": list(self.emotions),
            "n_pcs": int(self.neutral_pcs.shape[0]),
            "method": self.method,
            "shrinkage": self.shrinkage,
            "layer_selected_on": self.selected_on,
            "held_out_accuracy": self.held_out_accuracy,
            "mean_held_out_accuracy": self.held_out_score
            if self.held_out_score is not None
            else _mean(self.held_out_accuracy.values()),
            "chance": self.chance,
            "layer_scores": {str(k): v for k, v in sorted(self.layer_scores.items())},
            "reading_prefix": self.reading_prefix,
            "stimuli_sha256": self.stimuli_sha256,
            "null": self.null_summary(),
            "measures": MEASURES,
            "sha256": self.digest,
        }


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32, copy=True).contiguous().cpu()


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _decode(data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load

    try:
        tensors = load(data)
        meta = json.loads(_metadata(data)["calibration"])
        vectors, pcs = tensors["vectors"], tensors["neutral_pcs"]
        center = tensors.get("center")
    except Exception as e:  # safetensors raises its own and builtin errors alike
        raise CalibrationError(f"not an emotion calibration: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") not in _FORMATS:
        raise CalibrationError(f"not an emotion calibration: format is not one of {_FORMATS}")
    if vectors.dim() != 2 or vectors.shape[0] != len(meta["emotions"]):
        raise CalibrationError("calibration vectors do not match its emotion list")
    if pcs.dim() != 2 or pcs.shape[1] != vectors.shape[1]:
        raise CalibrationError("calibration neutral components do not match its vectors")
    if center is not None and center.shape != (vectors.shape[1],):
        raise CalibrationError("calibration center does not match its vectors")
    null, rand = tensors.get("null_projections"), tensors.get("random_directions")
    if null is not None and (null.dim() != 2 or null.shape[1] != vectors.shape[0]):
        raise CalibrationError("calibration null does not match its emotion list")
    if rand is not None and (rand.dim() != 2 or rand.shape[1] != vectors.shape[1]):
        raise CalibrationError("calibration random directions do not match its vectors")
    return meta, tensors


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta: dict[str, str] = header.get("__metadata__") or {}
    return meta


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


# -- the math (pure: tensors in, tensors out) -------------------------------------------------


def difference_of_means(groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per group [n_i, d] of readings: its mean minus the mean of the group means. [G, d]."""
    means = torch.stack([g.mean(dim=0) for g in groups])
    return means - means.mean(dim=0, keepdim=True)


def neutral_components(readings: torch.Tensor, k: int) -> torch.Tensor:
    """The top `k` principal components [k, d] (orthonormal rows) of `readings` [n, d].

    Requires ``0 <= k <= min(n - 1, d)``: centred readings span at most n - 1 directions.
    """
    if not 0 <= k <= min(readings.shape[0] - 1, readings.shape[1]):
        raise ValueError(f"cannot take {k} components of {tuple(readings.shape)} readings")
    centred = readings - readings.mean(dim=0, keepdim=True)
    vh: torch.Tensor = torch.linalg.svd(centred.double(), full_matrices=False).Vh
    return vh[:k].to(readings.dtype)


def project_out(vectors: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """`vectors` [E, d] with their parts along the orthonormal rows of `components` removed."""
    out: torch.Tensor = vectors - (vectors @ components.T) @ components
    return out


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return out


def grand_mean(groups: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of the group means [d]: what `difference_of_means` subtracts."""
    return torch.stack([g.mean(dim=0) for g in groups]).mean(dim=0)


def classify(
    readings: torch.Tensor, vectors: torch.Tensor, center: torch.Tensor | None = None
) -> torch.Tensor:
    """Index of the vector each reading [n, d] (minus `center`) projects onto most (top-1)."""
    if center is not None:
        readings = readings - center
    return (readings @ vectors.T).argmax(dim=1)


@dataclass(frozen=True)
class LayerFit:
    """What `fit_layer` finds at one layer."""

    vectors: torch.Tensor
    neutral_pcs: torch.Tensor
    center: torch.Tensor
    held_out_accuracy: dict[str, float]
    correct: int
    total: int

    @property
    def score(self) -> float:
        """Held-out accuracy over all held-out texts: what the layer sweep maximises.

        A ratio of integers, so equal scores are exactly equal and ties go by layer order.
        """
        return self.correct / self.total if self.total else 0.0


def shrunk_covariance(groups: Sequence[torch.Tensor], shrinkage: float) -> torch.Tensor:
    """The pooled covariance [d, d] of `groups` (each centred on its own mean), shrunk towards
    the identity scaled to the same trace: ``(1 - shrinkage) S + shrinkage tr(S)/d I``.

    Requires ``0 < shrinkage <= 1`` (the result is then invertible).
    """
    if not 0 < shrinkage <= 1:
        raise ValueError(f"shrinkage must lie in (0, 1], got {shrinkage}")
    resid = torch.cat([g.double() - g.double().mean(dim=0, keepdim=True) for g in groups])
    cov = resid.T @ resid / max(resid.shape[0], 1)
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype)
    out: torch.Tensor = (1 - shrinkage) * cov + shrinkage * cov.trace() / d * eye
    return out


def fit_layer(
    emotions: Sequence[str],
    train: Sequence[torch.Tensor],
    held_out: Sequence[torch.Tensor],
    neutral: torch.Tensor,
    n_pcs: int,
    *,
    method: str = "dom",
    shrinkage: float = 0.5,
) -> LayerFit:
    """Vectors from per-emotion train readings, cleaned of `n_pcs` neutral components, scored
    on held-out readings. `train[i]` / `held_out[i]` are [n, d] readings of `emotions[i]`.

    ``method="dom"``: the differences of means. ``method="lda"``: the differences of means
    multiplied by the inverse of `shrunk_covariance` of the within-emotion train readings and
    the neutral readings, so directions along which texts vary for reasons other than the
    emotion (topic, length, register) are weighted down — a regularised linear discriminant.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; want one of {METHODS}")
    pcs = neutral_components(neutral, n_pcs)
    diffs = difference_of_means(train)
    if method == "lda":
        cov = shrunk_covariance([*train, neutral], shrinkage)
        diffs = torch.linalg.solve(cov, diffs.double().T).T.to(diffs.dtype)
    vectors = _unit(project_out(diffs, pcs))
    center = grand_mean(train)
    accuracy, correct, total = {}, 0, 0
    for i, (emotion, readings) in enumerate(zip(emotions, held_out, strict=True)):
        hits = int((classify(readings, vectors, center) == i).sum())
        accuracy[emotion] = hits / len(readings) if len(readings) else 0.0
        correct, total = correct + hits, total + len(readings)
    return LayerFit(vectors, pcs, center, accuracy, correct, total)


def random_directions(k: int, pcs: torch.Tensor, seed: int) -> torch.Tensor:
    """`k` seeded random unit directions [k, d] orthogonal to the rows of `pcs` [n, d]: the
    subspace the emotion vectors live in. Deterministic for a seed (a CPU generator)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(k, pcs.shape[1], generator=g, dtype=torch.float64)
    return _unit(project_out(raw, pcs.double())).float()


def sweep_layers(num_layers: int, span: tuple[float, float] = SWEEP) -> list[int]:
    """The decoder layers whose depth lies in `span` (fractions of `num_layers`), at least one."""
    lo = math.ceil(span[0] * num_layers)
    hi = min(math.floor(span[1] * num_layers), num_layers - 1)
    return list(range(lo, hi + 1)) or [min(lo, num_layers - 1)]


# -- reading texts ----------------------------------------------------------------------------


def _prefix_ids(lm: LoadedModel, prefix: str) -> list[int]:
    if not prefix:
        return []
    ids: list[int] = lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    return ids


def _default_prefix(lm: LoadedModel) -> str:
    """`READING_PREFIX` where the tokenizer has it as one token, else its BOS token, else ""."""
    if len(_prefix_ids(lm, READING_PREFIX)) == 1:
        return READING_PREFIX
    bos = lm.tokenizer.bos_token
    return bos if isinstance(bos, str) and len(_prefix_ids(lm, bos)) == 1 else ""


def text_means(
    lm: LoadedModel,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    prefix: str = "",
    batch_size: int = 16,
    progress: bool = False,
    chunks: Path | None = None,
    desc: str = "reading texts",
) -> dict[int, torch.Tensor]:
    """Per layer, the readings [len(texts), d] (mean over each text's tokens), after `prefix`.

    With `progress`, a bar on stderr advances per batch. With `chunks` (a directory), each
    batch's readings are saved there as soon as they are computed, and batches already saved
    are read back instead of run again: an interrupted call, repeated with the same arguments,
    continues where it stopped (`chunks` must be used for these texts, layers, prefix and batch
    size only; see `calibrate`, which names the directory after all of them).
    """
    from tqdm import tqdm  # type: ignore[import-untyped]

    prefix_ids = _prefix_ids(lm, prefix)
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    starts = range(0, len(texts), batch_size)
    saved = [s for s in starts if chunks is not None and _chunk_path(chunks, s).is_file()]
    done = sum(min(batch_size, len(texts) - s) for s in saved)
    with tqdm(
        total=len(texts),
        initial=done,
        unit="text",
        desc=desc,
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        if saved and progress:
            message = f"{desc}: {done} of {len(texts)} texts read earlier, kept in {chunks}"
            bar.write(message, file=sys.stderr)  # tqdm.write defaults to stdout
        # Reduce batch by batch: the per-token activations of every layer would not fit in memory.
        for start in starts:
            chunk = texts[start : start + batch_size]
            means = _load_chunk(chunks, start, layers) if start in saved else None
            if means is None:
                per_layer = hidden_states_multi(
                    lm, chunk, layers, batch_size, prefix_ids=prefix_ids
                )
                means = {
                    layer: torch.stack([h.mean(dim=0) for h in hs])
                    for layer, hs in per_layer.items()
                }
                if chunks is not None:
                    _save_chunk(chunks, start, means)
                bar.update(len(chunk))
            for layer in layers:
                out[layer].extend(means[layer])
    d = lm.hidden_size
    return {layer: torch.stack(v) if v else torch.empty(0, d) for layer, v in out.items()}


def _chunk_path(chunks: Path, start: int) -> Path:
    return chunks / f"{start:06d}.safetensors"


def _save_chunk(chunks: Path, start: int, means: Mapping[int, torch.Tensor]) -> None:
    """Write one batch's readings atomically (a crash leaves the batch absent, never partial)."""
    from safetensors.torch import save_file

    chunks.mkdir(parents=True, exist_ok=True)
    path = _chunk_path(chunks, start)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({str(layer): _plain(m) for layer, m in means.items()}, str(tmp))
    tmp.replace(path)


def _load_chunk(
    chunks: Path | None, start: int, layers: Sequence[int]
) -> dict[int, torch.Tensor] | None:
    """A batch's saved readings, or None when absent or unreadable (it is then read again)."""
    from safetensors.torch import load_file

    if chunks is None:
        return None
    try:
        tensors = load_file(str(_chunk_path(chunks, start)))
        return {layer: tensors[str(layer)] for layer in layers}
    except Exception:  # a torn or foreign file: recompute the batch rather than fail
        return None


def calibration_chunks(
    root: Path, lm: LoadedModel, stim: Stimuli, layers: Sequence[int], prefix: str, batch_size: int
) -> Path:
    """Where `calibrate` keeps the readings of an unfinished calibration under `root`: one
    directory per (model weights, stimuli, layers, prefix, batch size), so a resumed call
    only ever reads back batches computed by the same call."""
    key = json.dumps(
        [lm.identity.weights_sha256, stim.sha256, list(layers), prefix, batch_size]
    ).encode()
    return root / f"partial-{hashlib.sha256(key).hexdigest()[:16]}"


@dataclass(frozen=True)
class StimulusReadings:
    """One layer's readings of a stimulus set, cut into its splits: per emotion (in the order
    of `Stimuli.emotions`) `train`, `select` and `held_out` [n, d]; `neutral` and `null` [n, d]."""

    train: list[torch.Tensor]
    select: list[torch.Tensor]
    held_out: list[torch.Tensor]
    neutral: torch.Tensor
    null: torch.Tensor


def read_stimuli(
    lm: LoadedModel,
    stim: Stimuli,
    layers: Sequence[int],
    *,
    batch_size: int = 16,
    progress: bool = False,
    resume: Path | None = None,
) -> dict[int, StimulusReadings]:
    """Per layer, the readings of every text of `stim` (one forward pass per text, all layers
    read in the same pass), cut into splits. `progress` and `resume` as for `calibrate`; the
    partial readings stay under `resume` until the caller removes them (`calibration_chunks`).
    """
    emotions = stim.emotions
    prefix = _default_prefix(lm)
    groups = [stim.train, stim.select, stim.held_out]
    texts = [t for g in groups for e in emotions for t in g.get(e, ())]
    texts += list(stim.neutral) + list(stim.null)
    chunks = (
        None if resume is None else calibration_chunks(resume, lm, stim, layers, prefix, batch_size)
    )
    means = text_means(
        lm,
        texts,
        layers,
        prefix=prefix,
        batch_size=batch_size,
        progress=progress,
        chunks=chunks,
        desc="emotion calibration",
    )
    out = {}
    for layer in layers:
        rows, at = means[layer], 0
        cut: list[list[torch.Tensor]] = []
        for g in groups:
            cut.append([])
            for e in emotions:
                n = len(g.get(e, ()))
                cut[-1].append(rows[at : at + n])
                at += n
        n_neutral = len(stim.neutral)
        out[layer] = StimulusReadings(
            train=cut[0],
            select=cut[1],
            held_out=cut[2],
            neutral=rows[at : at + n_neutral],
            null=rows[at + n_neutral :],
        )
    return out


def fit_calibration(
    lm: LoadedModel,
    stim: Stimuli,
    readings: Mapping[int, StimulusReadings],
    *,
    n_pcs: int = DEFAULT_N_PCS,
    method: str = DEFAULT_METHOD,
    shrinkage: float = DEFAULT_SHRINKAGE,
    seed: int = RANDOM_SEED,
) -> Calibration:
    """The calibration `readings` (of `read_stimuli`) give: per layer, vectors fitted on the
    train texts and scored on the select texts (on the train texts when the set has none);
    the best layer (ties to the shallower) refitted on train + select and scored on the
    held-out texts, which nothing here fits or chooses on. Its neutral-text null and
    random-direction baseline are attached (see `Calibration`).
    """
    emotions = stim.emotions
    sweep = sorted(readings)
    selected_on = "select" if any(stim.select.get(e) for e in emotions) else "train"

    def fit(
        train: Sequence[torch.Tensor], score_on: Sequence[torch.Tensor], r: StimulusReadings
    ) -> LayerFit:
        return fit_layer(
            emotions, train, score_on, r.neutral, n_pcs, method=method, shrinkage=shrinkage
        )

    scores: dict[int, float] = {}
    for layer in sweep:
        r = readings[layer]
        scores[layer] = fit(r.train, r.select if selected_on == "select" else r.train, r).score
    # Ties go to the shallower layer: max() keeps the first maximum in sweep order.
    best = max(sweep, key=lambda layer: scores[layer])
    r = readings[best]
    train = [torch.cat([t, s]) for t, s in zip(r.train, r.select, strict=True)]
    final = fit(train, r.held_out, r)
    null, null_source = (r.null, "null") if r.null.shape[0] >= 2 else (r.neutral, "neutral")
    cal = Calibration(
        model=lm.identity,
        layer=best,
        token_rule=TOKEN_RULE,
        emotions=emotions,
        vectors=final.vectors.float(),
        neutral_pcs=final.neutral_pcs.float(),
        held_out_accuracy=final.held_out_accuracy,
        chance=1.0 / len(emotions),
        layer_scores=scores,
        center=final.center.float(),
        reading_prefix=_default_prefix(lm),
        stimuli_sha256=stim.sha256,
        method=method,
        shrinkage=shrinkage if method == "lda" else 0.0,
        selected_on=selected_on,
        held_out_score=final.score,
        held_out_n=final.total,
        null_source=null_source,
        random_directions=random_directions(RANDOM_DIRECTIONS, final.neutral_pcs, seed),
        random_seed=seed,
    )
    cal.null_projections = cal.projections(null)
    return cal


def calibrate(
    lm: LoadedModel,
    *,
    layers: Sequence[int] | None = None,
    n_pcs: int = DEFAULT_N_PCS,
    stimuli: Stimuli | None = None,
    batch_size: int = 16,
    progress: bool = False,
    resume: Path | None = None,
    method: str = DEFAULT_METHOD,
    shrinkage: float = DEFAULT_SHRINKAGE,
    seed: int = RANDOM_SEED,
) -> Calibration:
    """Calibrate emotion vectors on `lm` (see the module docstring for the method).

    `layers` defaults to `sweep_layers(lm.num_layers)`; `stimuli` to `load_stimuli()`. Each
    text is run through the model once, all swept layers read in the same pass. With
    `progress`, a bar on stderr advances per stimulus batch. With `resume` (a directory), the
    readings are kept there batch by batch (`calibration_chunks`) until the calibration is
    complete, so an interrupted calibration continues where it stopped; they are removed once
    the calibration is returned. `method`, `shrinkage` and `seed`: see `fit_calibration`.
    """
    stim = stimuli or load_stimuli()
    sweep = list(layers) if layers is not None else sweep_layers(lm.num_layers)
    readings = read_stimuli(
        lm, stim, sweep, batch_size=batch_size, progress=progress, resume=resume
    )
    cal = fit_calibration(
        lm, stim, readings, n_pcs=n_pcs, method=method, shrinkage=shrinkage, seed=seed
    )
    if resume is not None:
        # The caller stores the finished calibration; the partial readings are debris now.
        chunks = calibration_chunks(resume, lm, stim, sweep, _default_prefix(lm), batch_size)
        shutil.rmtree(chunks, ignore_errors=True)
    return cal


def _check_model(lm: LoadedModel, cal: Calibration) -> None:
    if cal.model != lm.identity:
        raise CalibrationMismatchError(cal.model, lm.identity)


def score_texts(lm: LoadedModel, cal: Calibration, texts: Sequence[str]) -> list[dict[str, float]]:
    """Per text, per emotion: the projection of the text's reading (mean over its tokens)."""
    _check_model(lm, cal)
    if not texts:
        return []
    readings = text_means(lm, texts, [cal.layer], prefix=cal.reading_prefix)[cal.layer]
    projections = cal.projections(readings)
    return [dict(zip(cal.emotions, row.tolist(), strict=True)) for row in projections]


def interpret_texts(
    lm: LoadedModel, cal: Calibration, texts: Sequence[str]
) -> list[dict[str, Interpretation]]:
    """Per text, per emotion: its projection against the neutral null and the random-direction
    baseline (`Calibration.interpret`). Raises `CalibrationError` for a calibration without a
    null."""
    _check_model(lm, cal)
    if not texts:
        return []
    readings = text_means(lm, texts, [cal.layer], prefix=cal.reading_prefix)[cal.layer]
    projections, random = cal.projections(readings), cal.random_projections(readings)
    return [cal.interpret(p, r) for p, r in zip(projections, random, strict=True)]


# -- reading answers while they are generated -------------------------------------------------


@dataclass
class EmotionCapture:
    """Per answer token, its projection onto every emotion, collected during `generate`.

    Built by `emotion_capture`. It learns from `generate` (as a `GenerationObserver`) where each
    batch's prompt ends, and keeps, per answer, the projections of the answer's own tokens:
    generated token j is read at its own position, i.e. in the forward pass that feeds it back.
    The last token of an answer cut off by ``max_new_tokens`` is never fed back, so it is not
    read; stop tokens, and the padding after an answer that ended early, are never read.
    """

    calibration: Calibration
    device: torch.device
    _vectors: torch.Tensor = field(init=False, repr=False)
    _offset: torch.Tensor = field(init=False, repr=False)
    _n: int = field(init=False, repr=False)
    _passes: list[torch.Tensor] = field(default_factory=list, repr=False)
    _prompt_len: int | None = field(default=None, repr=False)
    _answers: list[tuple[int, ...]] = field(default_factory=list, repr=False)
    _rows: list[torch.Tensor] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        cal = self.calibration
        # The random-direction baseline is read in the same matrix product as the emotions:
        # columns [0, E) are the emotions, [E, E + K) the random directions.
        directions = cal.vectors.float()
        if cal.random_directions is not None:
            directions = torch.cat([directions, cal.random_directions.float()])
        self._n = cal.vectors.shape[0]
        self._vectors = directions.to(self.device)
        # (h - center) @ V.T == h @ V.T + offset, offset = -center @ V.T (one number per row).
        zero = torch.zeros(1, directions.shape[1])
        self._offset = cal.centred_projections(zero, directions)[0]

    # the residual hook
    def on_hidden(self, hidden: torch.Tensor) -> None:
        """Keep the projections [batch, seq, E] of one forward pass (inside a batch only)."""
        if self._prompt_len is not None:
            self._passes.append((hidden.float() @ self._vectors.T).cpu() + self._offset)

    # GenerationObserver
    def begin_batch(self, prompt_len: int) -> None:
        """A batch starts; its prompt fills positions ``0 .. prompt_len - 1``."""
        self._passes = []
        self._prompt_len = prompt_len

    def end_batch(self, answers: Sequence[tuple[int, ...]]) -> None:
        """Keep each row's answer-token projections: prompt and padding columns are dropped."""
        if self._prompt_len is None:
            raise CaptureError("end of a batch that never began")
        p = self._prompt_len
        self._prompt_len = None
        if not self._passes or self._passes[0].shape[1] != p:
            raise CaptureError("the first forward pass of a batch did not cover its prompt")
        # Column p + j holds generated token j (the pass that fed it back).
        proj = torch.cat(self._passes, dim=1)
        self._passes = []
        for i, ans in enumerate(answers):
            self._answers.append(tuple(ans))
            self._rows.append(proj[i, p : p + len(ans)].clone())

    def token_projections(self) -> list[torch.Tensor]:
        """Per answer so far, its read tokens' projections [tokens, E]."""
        return [rows[:, : self._n] for rows in self._rows]

    def interpretations(self, generations: Sequence[Generation]) -> list[dict[str, Interpretation]]:
        """Per generation, per emotion: its summary's mean against the neutral-text null and
        the random-direction baseline (`Calibration.interpret`); same contract as `summaries`.
        An answer with no token read is interpreted as a projection of 0 everywhere.
        """
        self._check(generations)
        out = []
        for rows in self._rows:
            mean = rows.mean(dim=0) if rows.shape[0] else torch.zeros(rows.shape[1])
            out.append(self.calibration.interpret(mean[: self._n], mean[self._n :]))
        return out

    def _check(self, generations: Sequence[Generation]) -> None:
        if [g.answer_ids for g in generations] != self._answers:
            raise CaptureError(
                f"summaries() given {len(generations)} generation(s) that are not the "
                f"{len(self._answers)} this capture saw produced"
            )

    def summaries(self, generations: Sequence[Generation]) -> list[dict[str, tuple[float, float]]]:
        """Per generation, per emotion: (mean, spread = population std) over its answer tokens.

        `generations` must be exactly what `generate` returned inside this capture, in order
        (several calls concatenated); an answer with no token read gets (0.0, 0.0).
        """
        self._check(generations)
        out = []
        for rows in self.token_projections():
            if rows.shape[0] == 0:
                out.append({e: (0.0, 0.0) for e in self.calibration.emotions})
                continue
            mean, std = rows.mean(dim=0), rows.std(dim=0, correction=0)
            out.append(
                {
                    e: (float(m), float(s))
                    for e, m, s in zip(self.calibration.emotions, mean, std, strict=True)
                }
            )
        return out


@contextmanager
def emotion_capture(lm: LoadedModel, cal: Calibration) -> Iterator[EmotionCapture]:
    """Collect answer-token emotion projections while `generate(lm, ...)` runs inside.

    Usage::

        with emotion_capture(lm, cal) as cap:
            gens = generate(lm, prompts)
        summaries = cap.summaries(gens)

    The hook and the observer are removed on exit, on errors too.
    """
    _check_model(lm, cal)
    cap = EmotionCapture(cal, lm.device)
    with lm.observing(cap), residual_hook(lm, cal.layer, cap.on_hidden):
        yield cap


# -- files ------------------------------------------------------------------------------------


def calibration_dir(model: ModelIdentity, root: Path | None = None) -> Path:
    """Where calibrations of `model` are cached: ``<root>/calibrations/<name>-<weights[:16]>``."""
    base = root or cache_root()
    return base / "calibrations" / f"{model.name}-{model.weights_sha256[:16]}"


def save_calibration(
    cal: Calibration, path: Path, extra: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write `cal` as safetensors at `path` and its summary (+ `extra`) as JSON beside it.

    The sidecar is ``path`` with the suffix ``.json``; it is written last, so a sidecar names
    only complete calibration files. Returns (calibration path, sidecar path).
    """
    data = cal.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    sidecar = path.with_suffix(".json")
    summary = cal.summary() | dict(extra or {})
    sidecar.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path, sidecar


def load_calibration(path: Path, model: ModelIdentity) -> Calibration:
    """Read a calibration file made on `model`; its sidecar, when present, must name its digest."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CalibrationError(f"cannot read calibration {path}: {e}") from e
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        want = json.loads(sidecar.read_text()).get("sha256")
        got = hashlib.sha256(data).hexdigest()
        if want != got:
            raise CalibrationError(f"{path}: sha256 {got} but its sidecar says {want}")
    return Calibration.from_bytes(data, model)


def latest_calibration(model: ModelIdentity, root: Path | None = None) -> Path | None:
    """The most recently written cached calibration of `model`, or None."""
    directory = calibration_dir(model, root)
    if not directory.is_dir():
        return None
    files = [p for p in directory.glob("*.safetensors") if p.with_suffix(".json").is_file()]
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)
