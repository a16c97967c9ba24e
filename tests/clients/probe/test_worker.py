"""The probing worker end to end: the tiny random model against a real ledger server.

The server admits the worker through a key chain (operator → lab → worker), as labs run it.
Runs are followed by a re-audit of the whole log (`check_log`); resumption is tested by
injecting a fault at each crash point of a group and running the same command again.

Calibrating takes most of a run's time, so the module publishes one quick calibration (a subset
of the stimuli) and the `data` fixture gives each test a data dir that already knows it; only
the first test publishes its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from attest.predicates import EmotionCalibration, ProbeRecord
from attest.statement import parse_statement, sign_statement
from clients.probe.emotions import calibration_dir
from clients.probe.model import LoadedModel, tiny_model
from clients.probe.records import parse_part_run_id
from clients.probe.worker import (
    LoggedCalibration,
    ProbeOptions,
    ReplayError,
    RunResult,
    RunStateError,
    ensure_calibration,
    read_entry,
    replay,
    run_probe,
)
from clients.probe_cmd import probe as probe_cmd
from clients.sdk import LedgerClient, verifier_from_vkey
from tests.clients.probe.support import STIMULI, Ledger

MAX_NEW_TOKENS = 12
BATCH = 4
GROUPS = [("grief", "anonymous"), ("harm", "anonymous"), ("harm", "medical")]


@pytest.fixture(scope="module")
def lm(tiny_lm: LoadedModel) -> LoadedModel:
    """The session's tiny model (conftest.py); the worker only reads it."""
    return tiny_lm


@pytest.fixture(scope="module")
def calibrated(
    lm: LoadedModel, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, LoggedCalibration]:
    """A data dir in which one quick calibration was published, and that calibration."""
    root = tmp_path_factory.mktemp("calibrated")
    return root, ensure_calibration(lm, ledger.target, ledger.signers, data=root, stimuli=STIMULI)


@pytest.fixture
def data(calibrated: tuple[Path, LoggedCalibration], lm: LoadedModel, tmp_path: Path) -> Path:
    """A fresh data dir that already knows the module's calibration."""
    shutil.copytree(
        calibration_dir(lm.identity, calibrated[0]), calibration_dir(lm.identity, tmp_path)
    )
    return tmp_path


def options(suite_file: Path, **kw: Any) -> ProbeOptions:
    return ProbeOptions(
        suite="mini", suite_path=suite_file, batch_size=BATCH, max_new_tokens=MAX_NEW_TOKENS, **kw
    )


def run(ledger: Ledger, lm: LoadedModel, data: Path, opts: ProbeOptions, **kw: Any) -> RunResult:
    return run_probe(
        opts, ledger.target, ledger.signers, lm=lm, data=data, stimuli=STIMULI, progress=False, **kw
    )


def replay_here(ledger: Ledger, lm: LoadedModel, data: Path, index: int, suite: Path) -> Any:
    return replay(
        index,
        ledger.target,
        lm=lm,
        suite_path=suite,
        data=data,
        batch_size=BATCH,
        max_new_tokens=MAX_NEW_TOKENS,
    )


def records(ledger: Ledger, indices: tuple[int, ...]) -> list[ProbeRecord]:
    out = []
    for i in indices:
        pred = parse_statement(read_entry(ledger.target, i)[0].payload).predicate
        assert isinstance(pred, ProbeRecord)
        out.append(pred)
    return out


class Crash(Exception):
    """The injected fault."""


def test_run_logs_every_group_and_replay_reproduces(
    lm: LoadedModel, suite_file: Path, ledger: Ledger, tmp_path: Path
) -> None:
    before = ledger.size()
    res = run(ledger, lm, tmp_path, options(suite_file))  # a fresh data dir: calibrates
    ledger.audit()
    assert [(g.category, g.tier) for g in res.groups] == GROUPS
    assert [g.items for g in res.groups] == [2, 5, 5]
    assert ledger.size() - before == 1 + len(res.indices), "one calibration, then the records"

    assert res.calibration is not None, "a local model's run names its calibration"
    cal_env, cal_ref = read_entry(ledger.target, res.calibration.index)
    cal = parse_statement(cal_env.payload).predicate
    assert isinstance(cal, EmotionCalibration) and cal_ref == res.calibration
    stored = (res.run_dir / "calibration.safetensors").read_bytes()
    assert cal.vectors.size == len(stored)
    assert cal.model.weights_sha256 == lm.identity.weights_sha256
    assert cal.validation is not None, "the logged calibration carries its null and held-out n"
    assert cal.validation.held_out_n > 0 and cal.validation.layer_selected_on

    for g, rec in zip(res.groups, records(ledger, res.indices), strict=True):
        assert (rec.category, rec.tier) == (g.category, g.tier)
        assert parse_part_run_id(rec.run_id) == (res.run_id, 1, 1)
        assert rec.calibration == res.calibration
        assert rec.model.weights_sha256 == lm.identity.weights_sha256
        assert rec.suite.name == "mini" and len(rec.items) == g.items
        assert all(set(i.emotions) == set(cal.held_out_scores_milli) for i in rec.items)

    report = replay_here(ledger, lm, tmp_path, res.indices[1], suite_file)
    assert report.reproduced, report.to_json()
    assert [i.prompt_id for i in report.items] == ["h1"] * 5

    # The same command again finds the run done: nothing is generated or submitted twice.
    size = ledger.size()
    again = run(ledger, lm, tmp_path, options(suite_file))
    assert again.indices == res.indices and again.run_id == res.run_id
    assert all(g.resumed for g in again.groups) and ledger.size() == size


@pytest.mark.parametrize("step", ["generated", "signed", "posted", "submitted"])
def test_resume_after_a_crash(
    step: str, lm: LoadedModel, suite_file: Path, ledger: Ledger, data: Path
) -> None:
    """Kill the run at `step` of the first group, run it again: nothing done twice or lost."""
    opts = options(suite_file, categories=("harm",))
    before = ledger.size()
    steps: list[tuple[str, str, str]] = []

    def crash(s: str, c: str, t: str) -> None:
        if (s, c, t) == (step, "harm", "anonymous"):
            raise Crash(step)

    with pytest.raises(Crash):
        run(ledger, lm, data, opts, on_step=crash)
    res = run(ledger, lm, data, opts, on_step=lambda s, c, t: steps.append((s, c, t)))
    ledger.audit()
    assert res.groups[0].resumed and not res.groups[1].resumed
    assert ("generated", "harm", "anonymous") not in steps, "answers are never generated twice"
    if step != "generated":
        assert ("signed", "harm", "anonymous") not in steps, "envelopes are never signed twice"
    # Every record is in the log exactly once.
    assert ledger.size() - before == len(res.indices) == len(set(res.indices))
    assert [r.tier for r in records(ledger, res.indices)] == ["anonymous", "medical"]


def test_run_dir_belongs_to_one_run(
    lm: LoadedModel, suite_file: Path, ledger: Ledger, data: Path
) -> None:
    run_dir = data / "run"
    run(ledger, lm, data, options(suite_file, categories=("grief",)), run_dir=run_dir)
    with pytest.raises(RunStateError, match="another run"):
        run(ledger, lm, data, options(suite_file, categories=("harm",)), run_dir=run_dir)


def test_calibration_is_reused(
    lm: LoadedModel,
    suite_file: Path,
    ledger: Ledger,
    data: Path,
    calibrated: tuple[Path, LoggedCalibration],
) -> None:
    before = ledger.size()
    res = run(ledger, lm, data, options(suite_file, tiers=("medical",)))
    assert res.calibration == calibrated[1].ref
    assert ledger.size() - before == len(res.indices), "no second calibration entry"


def test_replay_reports_a_record_that_does_not_reproduce(
    lm: LoadedModel, suite_file: Path, ledger: Ledger, data: Path
) -> None:
    res = run(ledger, lm, data, options(suite_file, categories=("grief",)))
    [rec] = records(ledger, res.indices)
    forged_item = rec.items[0].model_copy(update={"answer": "something the model never said"})
    forged = rec.model_copy(
        update={"items": (forged_item, *rec.items[1:]), "run_id": "forged/part-1-of-1"}
    )
    with LedgerClient(ledger.srv.base_url) as c:
        env = sign_statement(forged, ledger.signers)
        sub = c.submit("evidence", env, verifier_from_vkey(ledger.vkey), ledger.origin)
    report = replay_here(ledger, lm, data, sub.index, suite_file)
    assert not report.reproduced
    assert [i.answer_matches for i in report.items] == [False, True]
    assert report.to_json()["items"][0]["logged"] == "something the model never said"

    with pytest.raises(ReplayError, match="weights"):
        replay_here(ledger, tiny_model(seed=1), data, res.indices[0], suite_file)
    assert res.calibration is not None
    with pytest.raises(ReplayError, match="not a probe record"):
        replay_here(ledger, lm, data, res.calibration.index, suite_file)


def test_cli_probe_and_replay(suite_file: Path, ledger: Ledger, data: Path) -> None:
    common = ["--ledger", ledger.srv.base_url, "--vkey", ledger.vkey, "--model", "tiny"]
    common += ["--suite-file", str(suite_file), "--data-dir", str(data), "--quiet"]
    common += ["--batch-size", str(BATCH), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    key = ["--key", str(ledger.keys / "worker.pem")]
    res = CliRunner().invoke(probe_cmd, [*common, *key, "--tiers", "medical"])
    assert res.exit_code == 0, res.stderr
    [group] = json.loads(res.stdout)["groups"]
    assert (group["category"], group["tier"], group["items"]) == ("harm", "medical", 5)
    res = CliRunner().invoke(probe_cmd, [*common, "--replay", str(group["indices"][0])])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["reproduced"] is True
