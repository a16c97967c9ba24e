"""`bledger emotions`: calibrate emotion concept vectors on a model, and score texts with them.

Also runnable on its own: `python -m clients.emotions_cmd calibrate --model smollm2-135m-instruct`.
Calibrations are cached under ``<cache>/calibrations/<model>-<weights sha256 prefix>/``; `score`
uses the newest one there when no ``--calibration`` is given, and makes one when there is none.
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
) -> tuple[Any, Path]:
    from clients.probe.emotions import calibrate, calibration_dir, load_stimuli, save_calibration

    layer_list = [int(x) for x in layers.split(",")] if layers else None
    stim = load_stimuli(stimuli) if stimuli else None
    start = time.perf_counter()
    # Readings are kept batch by batch under the cache: Ctrl-C and run again to continue.
    resume = calibration_dir(lm.identity, args.root())
    cal = calibrate(lm, layers=layer_list, n_pcs=n_pcs, stimuli=stim, progress=True, resume=resume)
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
    default=4,
    show_default=True,
    type=click.IntRange(min=0),
    help="Neutral principal components projected out of the vectors.",
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
) -> None:
    """Calibrate emotion vectors on a model and write them (safetensors + JSON sidecar)."""
    args = ModelArgs(model, model_version, device, cache_dir)
    lm = args.load()
    start = time.perf_counter()
    cal, path = _calibrate_and_save(args, lm, out, layers, n_pcs, stimuli)
    seconds = time.perf_counter() - start
    mean = cal.layer_scores[cal.layer]
    click.echo(f"model     {lm.identity.name} {lm.identity.version} ({lm.identity.weights_sha256})")
    click.echo(
        f"layer     {cal.layer} of {lm.num_layers} (swept {min(cal.layer_scores)}-"
        f"{max(cal.layer_scores)})"
    )
    click.echo(f"held-out  top-1 accuracy {mean:.3f} (chance {cal.chance:.3f})")
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
    """Print one JSON line per input line: {"text": ..., "scores": {emotion: projection}}."""
    from clients.probe.emotions import latest_calibration, load_calibration, score_texts

    args = ModelArgs(model, model_version, device, cache_dir)
    texts = [line.rstrip("\r\n") for line in input_file if line.strip()]
    lm = args.load()
    if calibration is None:
        calibration = latest_calibration(lm.identity, args.root())
        if calibration is None:
            click.echo(
                f"no cached calibration for {lm.identity.name}: calibrating now "
                "(minutes on a CPU) …",
                err=True,
            )
            _, calibration = _calibrate_and_save(args, lm, None, None, 4, stimuli)
            click.echo(f"cached the calibration at {calibration}", err=True)
        else:
            click.echo(f"using cached calibration {calibration}", err=True)
    cal = load_calibration(calibration, lm.identity)
    for text, scores in zip(texts, score_texts(lm, cal, texts), strict=True):
        rounded = {e: round(v, 4) for e, v in scores.items()}
        click.echo(json.dumps({"text": text, "scores": rounded}, ensure_ascii=False))
    sys.stdout.flush()


if __name__ == "__main__":
    emotions()
