"""`bledger emotions`: calibrate emotion concept vectors on a model, and score texts with them.

Also runnable on its own: `python -m clients.emotions_cmd calibrate --model smollm2-135m-instruct`.
Calibrations are cached under ``<cache>/calibrations/<model>-<weights sha256 prefix>/``; `score`
and `evaluate` use the newest one there when no ``--calibration`` is given, and make one when
there is none. `evaluate` measures a calibration on text it was never fitted on (outside
scenarios, and the model's own answers with the topic held fixed); with ``--variants`` it
compares every fitting method on the same readings (see docs/emotions.md).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from clients.errors import diagnosed as _diagnosed
from clients.probe import DEFAULT_MODEL

F = TypeVar("F", bound=Callable[..., Any])

# The fitting `calibrate` uses by default (clients.probe.emotions.DEFAULT_*), repeated here so
# that `bledger --help` need not import torch.
DEFAULT_METHOD = "lda"
DEFAULT_SHRINKAGE = 0.6
DEFAULT_N_PCS = 0

# Imports of torch/transformers happen inside the commands: `bledger --help` stays fast.


@dataclass(frozen=True)
class ModelArgs:
    """The options naming the model and where things are cached."""

    model: str
    version: str
    device: str
    cache_dir: Path | None

    def root(self) -> Path:
        """The cache root: --cache-dir, else $BEHAVIOUR_LEDGER_CACHE, else ~/.cache/..."""
        from clients.probe.model import cache_root

        return self.cache_dir or cache_root()

    def load(self) -> Any:
        """Load the model (converting and caching the bundled SmolLM2 on first use)."""
        from clients.probe.model import load_model

        model_cache = (
            self.root() / "models" / DEFAULT_MODEL if self.model == DEFAULT_MODEL else None
        )
        click.echo(f"loading {self.model} …", err=True)
        return load_model(
            self.model, version=self.version, device=self.device, cache_dir=model_cache
        )


def _model_options(fn: F) -> F:
    options = [
        click.option(
            "--model",
            default=DEFAULT_MODEL,
            show_default=True,
            help=f"{DEFAULT_MODEL!r} (the bundled SmolLM2) or a local Hugging Face directory.",
        ),
        click.option(
            "--version",
            "model_version",
            default="v1",
            show_default=True,
            help="Version label recorded in the model's identity.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto (CUDA if available), cpu, cuda, cuda:1, ...",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Cache root (default $BEHAVIOUR_LEDGER_CACHE or ~/.cache/behaviour-ledger).",
        ),
        click.option(
            "--stimuli",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            default=None,
            help="Stimulus file to calibrate on (default: the bundled set).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group()
def emotions() -> None:
    """Emotion concept vectors: calibrate them on a model, score texts with them."""


def _calibrate_and_save(
    args: ModelArgs,
    lm: Any,
    out: Path | None,
    layers: str | None,
    n_pcs: int,
    stimuli: Path | None,
    method: str = DEFAULT_METHOD,
    shrinkage: float = DEFAULT_SHRINKAGE,
) -> tuple[Any, Path]:
    from clients.probe.emotions import calibrate, calibration_dir, load_stimuli, save_calibration

    layer_list = [int(x) for x in layers.split(",")] if layers else None
    stim = load_stimuli(stimuli) if stimuli else None
    start = time.perf_counter()
    # Readings are kept batch by batch under the cache: Ctrl-C and run again to continue.
    resume = calibration_dir(lm.identity, args.root())
    cal = calibrate(
        lm,
        layers=layer_list,
        n_pcs=n_pcs,
        stimuli=stim,
        progress=True,
        resume=resume,
        method=method,
        shrinkage=shrinkage,
    )
    seconds = time.perf_counter() - start
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = calibration_dir(lm.identity, args.root()) / f"{stamp}-{cal.digest[:12]}.safetensors"
    extra = {"seconds": round(seconds, 1), "device": str(lm.device), "file": out.name}
    path, _ = save_calibration(cal, out, extra)
    return cal, path


@emotions.command("calibrate")
@_model_options
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Calibration file to write (default: in the cache); FILE.json beside it gets a summary.",
)
@click.option(
    "--layers",
    default=None,
    help="Comma-separated layers to sweep (default: the layers at 30-80 %% of the depth).",
)
@click.option(
    "--n-pcs",
    default=DEFAULT_N_PCS,
    show_default=True,
    type=click.IntRange(min=0),
    help="Neutral principal components projected out of the vectors.",
)
@click.option(
    "--method",
    type=click.Choice(["dom", "lda"]),
    default=DEFAULT_METHOD,
    show_default=True,
    help="dom: difference of means; lda: difference of means whitened by a shrunk covariance.",
)
@click.option(
    "--shrinkage",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=DEFAULT_SHRINKAGE,
    show_default=True,
    help="For --method lda: how far the covariance is shrunk towards the identity.",
)
@_diagnosed
def calibrate_cmd(
    model: str,
    model_version: str,
    device: str,
    cache_dir: Path | None,
    stimuli: Path | None,
    out: Path | None,
    layers: str | None,
    n_pcs: int,
    method: str,
    shrinkage: float,
) -> None:
    """Calibrate emotion vectors on a model and write them (safetensors + JSON sidecar)."""
    args = ModelArgs(model, model_version, device, cache_dir)
    lm = args.load()
    start = time.perf_counter()
    cal, path = _calibrate_and_save(args, lm, out, layers, n_pcs, stimuli, method, shrinkage)
    seconds = time.perf_counter() - start
    mean = cal.held_out_score if cal.held_out_score is not None else 0.0
    click.echo(f"model     {lm.identity.name} {lm.identity.version} ({lm.identity.weights_sha256})")
    click.echo(
        f"layer     {cal.layer} of {lm.num_layers} (swept {min(cal.layer_scores)}-"
        f"{max(cal.layer_scores)}; chosen on the {cal.selected_on} texts, "
        f"accuracy {cal.layer_scores[cal.layer]:.3f})"
    )
    click.echo(
        f"method    {cal.method}" + (f" (shrinkage {cal.shrinkage})" if cal.method == "lda" else "")
    )
    click.echo(
        f"held-out  top-1 accuracy {mean:.3f} (chance {cal.chance:.3f}; never fitted or chosen on)"
    )
    for emotion, acc in cal.held_out_accuracy.items():
        click.echo(f"  {emotion:<14} {acc:.2f}")
    click.echo(f"time      {seconds:.1f} s on {lm.device}")
    click.echo(f"wrote     {path}\n          {path.with_suffix('.json')}")
    click.echo(f"sha256    {cal.digest}")


@emotions.command("score")
@_model_options
@click.option(
    "--input",
    "input_file",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help="Text file, one text per line ('-' for stdin); blank lines are skipped.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Calibration file (default: the newest cached one for the model, or a new one).",
)
@_diagnosed
def score_cmd(
    model: str,
    model_version: str,
    device: str,
    cache_dir: Path | None,
    stimuli: Path | None,
    input_file: Any,
    calibration: Path | None,
) -> None:
    """Print one JSON line per input line: {"text", "scores", "relative_to_neutral", ...}.

    ``scores`` are the projections onto each emotion direction (what a probe record's mean
    holds); ``relative_to_neutral`` gives each as a z-score and percentile (with its 95 %
    interval) against the calibration's neutral texts, and ``random_direction`` the 95 % range
    of the same text's projections onto random directions and each emotion's percentile in it.
    """
    from clients.probe.emotions import MEASURES, interpret_texts, load_calibration

    args = ModelArgs(model, model_version, device, cache_dir)
    texts = [line.rstrip("\r\n") for line in input_file if line.strip()]
    lm = args.load()
    cal = load_calibration(_calibration_file(args, lm, calibration, stimuli), lm.identity)
    for text, per in zip(texts, interpret_texts(lm, cal, texts), strict=True):
        first = next(iter(per.values()))
        line = {
            "text": text,
            "measures": MEASURES,
            "scores": {e: round(r.projection, 4) for e, r in per.items()},
            "relative_to_neutral": {
                e: {
                    "z": round(r.neutral_z, 4),
                    "percentile": round(r.neutral_percentile, 4),
                    "interval": [round(x, 4) for x in r.neutral_interval],
                }
                for e, r in per.items()
            },
            "random_direction": {
                "interval": [round(x, 4) for x in first.random_interval],
                "percentile": {e: round(r.random_percentile, 4) for e, r in per.items()},
            },
        }
        click.echo(json.dumps(line, ensure_ascii=False))
    sys.stdout.flush()


def _calibration_file(args: ModelArgs, lm: Any, given: Path | None, stimuli: Path | None) -> Path:
    """`given`, else the newest cached calibration of the model, else a new one."""
    from clients.probe.emotions import latest_calibration

    if given is not None:
        return given
    cached = latest_calibration(lm.identity, args.root())
    if cached is not None:
        click.echo(f"using cached calibration {cached}", err=True)
        return cached
    click.echo(
        f"no cached calibration for {lm.identity.name}: calibrating now (minutes on a CPU) …",
        err=True,
    )
    _, path = _calibrate_and_save(
        args, lm, None, None, DEFAULT_N_PCS, stimuli, DEFAULT_METHOD, DEFAULT_SHRINKAGE
    )
    click.echo(f"cached the calibration at {path}", err=True)
    return path


@emotions.command("evaluate")
@_model_options
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Calibration file (default: the newest cached one for the model, or a new one).",
)
@click.option(
    "--outside",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Outside-scenario file (default: the bundled one).",
)
@click.option(
    "--variants",
    is_flag=True,
    help="Instead: fit every fitting variant on the same readings and measure each.",
)
@click.option(
    "--max-new-tokens",
    default=48,
    show_default=True,
    type=click.IntRange(min=1),
    help="Length of each topic-held-fixed answer.",
)
@_diagnosed
def evaluate_cmd(
    model: str,
    model_version: str,
    device: str,
    cache_dir: Path | None,
    stimuli: Path | None,
    calibration: Path | None,
    outside: Path | None,
    variants: bool,
    max_new_tokens: int,
) -> None:
    """Measure a calibration on outside scenarios and on the model's own answers (JSON)."""
    from clients.probe.emotion_eval import (
        best_on_select,
        compare_variants,
        evaluate_calibration,
        load_outside,
    )
    from clients.probe.emotions import load_calibration, load_stimuli

    args = ModelArgs(model, model_version, device, cache_dir)
    rows = load_outside(outside)
    lm = args.load()
    report: dict[str, Any]
    if variants:
        results = compare_variants(lm, load_stimuli(stimuli), rows, progress=True)
        report = {"variants": results, "chosen_on_select": best_on_select(results)}
    else:
        cal = load_calibration(_calibration_file(args, lm, calibration, stimuli), lm.identity)
        report = evaluate_calibration(lm, cal, rows, max_new_tokens=max_new_tokens)
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    emotions()
