"""`bledger import inspect`: a real Inspect AI run on SmolLM2, imported, verified, in the history.

The eval runs offline (HF_HUB_OFFLINE=1) in a subprocess: a three-sample task, Inspect's `hf`
provider on the bundled SmolLM2 converted to a local directory, greedy, 16 tokens. The log is
imported into a real ledger server; every entry is re-audited; damaged logs are refused naming
what is wrong, and nothing reaches the log. Skipped without inspect-ai (the ``[inspect]``
extra) or the bundled model, except under CI=true, where either missing fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from attest.predicates import EvalSample
from attest.statement import parse_statement
from clients.cli import main as cli
from clients.inspect_import import InspectLogError, read_inspect_log
from clients.probe.worker import read_entry
from tests.clients.probe.support import Ledger, running_ledger

TASK = """
from inspect_ai import Task, eval as inspect_eval, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate
import sys

@task
def capitals():
    return Task(
        dataset=[
            Sample(id="fr", input="What is the capital of France? One word.", target="Paris"),
            Sample(id="math", input="What is 2 + 2? Answer with a number.", target="4"),
            Sample(id="sky", input="What colour is the sky? One word.", target="blue"),
        ],
        solver=generate(),
        scorer=includes(),
        version=2,
    )

[log] = inspect_eval(
    capitals(), model="hf/local",
    model_args={"model_path": sys.argv[1], "device": "cpu", "do_sample": False},
    max_tokens=16, seed=0, log_dir=sys.argv[2], log_format="eval", display="none",
)
print(log.location)
"""


def _needed() -> None:
    missing = []
    try:
        import inspect_ai  # noqa: F401
    except ImportError:
        missing.append("inspect-ai (pip install 'behaviour-ledger[inspect]')")
    from clients.probe.bundled import bundled_gguf

    if bundled_gguf() is None:
        missing.append("the bundled model (bledger model fetch)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def eval_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Inspect log of three samples answered by SmolLM2 (hf provider, offline)."""
    _needed()
    from clients.probe.model import DEFAULT_MODEL, cache_root, load_model

    load_model(DEFAULT_MODEL, device="cpu")  # converts the GGUF once into the cache
    model_dir = cache_root() / "models" / DEFAULT_MODEL
    work = tmp_path_factory.mktemp("inspect")
    (work / "task.py").write_text(textwrap.dedent(TASK))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["INSPECT_LOG_LEVEL"] = "warning"
    out = subprocess.run(
        [sys.executable, str(work / "task.py"), str(model_dir), str(work / "logs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1].removeprefix("file://"))


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    with running_ledger(tmp_path_factory.mktemp("ledger")) as ledger:
        yield ledger


def _import(ledger: Ledger, log: Path, data: Path) -> object:
    args = ["import", "inspect", str(log), "--ledger", ledger.srv.base_url, "--vkey", ledger.vkey]
    args += ["--key", str(ledger.keys / "worker.pem"), "--data-dir", str(data)]
    return CliRunner().invoke(cli, args)


def test_a_real_inspect_log_becomes_verified_records(
    eval_log: Path, ledger: Ledger, tmp_path: Path
) -> None:
    before = ledger.size()
    res = _import(ledger, eval_log, tmp_path)
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    out = json.loads(res.stdout)  # type: ignore[attr-defined]
    assert out["task"] == "capitals" and out["model"] == "hf/local"
    assert [s["id"] for s in out["samples"]] == ["fr", "math", "sky"]
    assert ledger.size() - before == 3
    ledger.audit()

    log = read_inspect_log(eval_log)
    for s, sample in zip(out["samples"], log.samples, strict=True):
        pred = parse_statement(read_entry(ledger.target, s["index"])[0].payload).predicate
        assert isinstance(pred, EvalSample)
        assert (pred.tool, pred.task, pred.task_version) == ("inspect_ai", "capitals", "2")
        assert (pred.sample_id, pred.epoch, pred.model.name) == (sample.id, 1, "hf/local")
        assert pred.answer == sample.output.completion and pred.answer
        assert [sc.scorer for sc in pred.scores] == ["includes"]
        assert json.loads(pred.scores[0].value) == sample.scores["includes"].value
        assert json.loads(pred.generate_config) == {"max_tokens": 16, "seed": 0}
        assert pred.output_tokens and pred.output_tokens > 0

    # The same file again: the same envelopes, the same indices, nothing new in the log.
    size = ledger.size()
    again = _import(ledger, eval_log, tmp_path)
    assert json.loads(again.stdout)["samples"] == out["samples"]  # type: ignore[attr-defined]
    assert ledger.size() == size

    hist = CliRunner().invoke(
        cli, ["history", "hf/local", "--ledger", ledger.srv.base_url, "--vkey", ledger.vkey]
    )
    assert hist.exit_code == 0, hist.output
    assert "imported eval samples (3, verified)" in hist.stdout
    assert "capitals@2" in hist.stdout and "sample fr" in hist.stdout


def _damaged(eval_log: Path, tmp_path: Path) -> dict[str, Path]:
    data = eval_log.read_bytes()
    out = {
        "truncated": data[: len(data) // 2],
        "garbage": b"not an eval log",
        "empty": b"",
    }
    # One sample member's compressed bytes flipped inside an otherwise intact archive.
    with zipfile.ZipFile(eval_log) as z:
        info = next(i for i in z.infolist() if i.filename.startswith("samples/"))
    flipped = bytearray(data)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    for i in range(start, start + 40):
        flipped[i] ^= 0xFF
    out["corrupt-member"] = bytes(flipped)
    paths = {}
    for name, blob in out.items():
        paths[name] = tmp_path / f"{name}.eval"
        paths[name].write_bytes(blob)
    return paths


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "corrupt-member"])
def test_a_damaged_log_is_refused_and_nothing_is_logged(
    damage: str, eval_log: Path, ledger: Ledger, tmp_path: Path
) -> None:
    bad = _damaged(eval_log, tmp_path)[damage]
    before = ledger.size()
    res = _import(ledger, bad, tmp_path / "data")
    assert res.exit_code != 0  # type: ignore[attr-defined]
    assert str(bad) in res.output and "not a readable Inspect log" in res.output  # type: ignore[attr-defined]
    if damage in ("truncated", "garbage", "empty"):
        assert "truncated, or not an .eval zip archive" in res.output  # type: ignore[attr-defined]
    assert ledger.size() == before, "nothing half-written reaches the log"
    assert not (tmp_path / "data" / "imports").exists() or not any(
        (tmp_path / "data" / "imports").iterdir()
    ), "nothing is signed either"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    _needed()
    with pytest.raises(InspectLogError, match="no such file"):
        read_inspect_log(tmp_path / "nope.eval")
