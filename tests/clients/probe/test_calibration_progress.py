"""Emotion calibration reports progress per stimulus batch and resumes where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import clients.probe.emotions as emotions_mod
from clients.probe.emotions import Stimuli, calibrate, load_stimuli
from clients.probe.model import LoadedModel


@pytest.fixture(scope="module")
def small() -> Stimuli:
    # 20 emotions x (3 train + 2 held out) + 10 neutral = 110 texts: 14 batches of 8.
    return load_stimuli().subset(3, 2, 10)


REAL_FORWARD = emotions_mod.hidden_states_multi


class Interrupt(KeyboardInterrupt):
    """What Ctrl-C raises, injected after a number of forward passes."""


def _counting(monkeypatch: pytest.MonkeyPatch, stop_after: int | None) -> list[int]:
    """Count the batches run through the model; raise `Interrupt` on batch `stop_after + 1`."""
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        if stop_after is not None and len(calls) == stop_after:
            raise Interrupt
        calls.append(len(args[1]))
        return REAL_FORWARD(*args, **kwargs)

    monkeypatch.setattr(emotions_mod, "hidden_states_multi", counted)
    return calls


def test_interrupted_calibration_resumes_where_it_stopped(
    tiny_lm: LoadedModel,
    small: Stimuli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    whole = calibrate(tiny_lm, stimuli=small, n_pcs=2, batch_size=8)
    total = (
        sum(len(t) for t in small.train.values())
        + sum(len(t) for t in small.held_out.values())
        + len(small.neutral)
    )
    batches = -(-total // 8)

    first = _counting(monkeypatch, stop_after=5)
    with pytest.raises(Interrupt):
        calibrate(tiny_lm, stimuli=small, n_pcs=2, batch_size=8, resume=tmp_path)
    assert len(first) == 5
    (partial,) = tmp_path.glob("partial-*")
    assert len(list(partial.glob("*.safetensors"))) == 5

    second = _counting(monkeypatch, stop_after=None)
    capsys.readouterr()
    resumed = calibrate(
        tiny_lm, stimuli=small, n_pcs=2, batch_size=8, resume=tmp_path, progress=True
    )
    # It says so, on stderr (stdout may be a command's data).
    out, err = capsys.readouterr()
    assert "emotion calibration: 40 of 110 texts read earlier" in err and "earlier" not in out
    # Only the batches the interrupted call had not finished are run again ...
    assert len(second) == batches - 5
    # ... and the result is the calibration an uninterrupted call makes.
    assert resumed.layer == whole.layer
    assert torch.allclose(resumed.vectors, whole.vectors, atol=1e-5)
    assert resumed.held_out_accuracy == whole.held_out_accuracy
    # The partial readings are removed once the calibration is complete.
    assert not partial.exists()


def test_partial_readings_of_another_calibration_are_not_reused(
    tiny_lm: LoadedModel, small: Stimuli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _counting(monkeypatch, stop_after=3)
    with pytest.raises(Interrupt):
        calibrate(tiny_lm, stimuli=small, n_pcs=2, batch_size=8, resume=tmp_path)
    # Another batch size reads other batches: nothing saved may be taken for them.
    calls = _counting(monkeypatch, stop_after=None)
    calibrate(tiny_lm, stimuli=small, n_pcs=2, batch_size=16, resume=tmp_path)
    assert sum(calls) == 110


def test_calibration_progress_bar_advances_per_batch(
    tiny_lm: LoadedModel, small: Stimuli, capsys: pytest.CaptureFixture[str]
) -> None:
    calibrate(tiny_lm, stimuli=small, n_pcs=2, batch_size=8, progress=True)
    err = capsys.readouterr().err
    assert "emotion calibration" in err
    assert "110/110" in err
