"""Replay of a record made with ``--attack``: the recorded search, attempt by attempt.

The tiny random model probes one group with a small declared search (corpus then one attacker
round; 2 queries, 64 tokens per item) against a real ledger server; `replay` must re-run the
search from what the record signs and report it reproduced, and report precisely what differs
when a setting is changed: a seed or budget given on the command line, another corpus.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from attest.predicates import AttackResult, ProbeRecord
from clients.probe.attacks import Corpus, load_corpus, parse_budget
from clients.probe.model import LoadedModel
from clients.probe.replay_search import AttackReplay, config_digest, recorded_config
from clients.probe.worker import ReplayReport, RunResult, replay
from clients.probe_cmd import probe as probe_cmd
from tests.clients.probe.test_worker import (  # the worker's fixtures and helpers
    BATCH,
    MAX_NEW_TOKENS,
    Ledger,
    calibrated,  # noqa: F401
    lm,  # noqa: F401
    options,
    records,
    run,
)

BUDGET = "queries=2,tokens=64,seconds=600"
"""The search as `bledger probe --attack corpus,pair --budget BUDGET` declares it (demo shape:
corpus attacks of at most 1,500 characters, one attacker round, the first harmful item)."""


@pytest.fixture(scope="module")
def attacked(
    lm: LoadedModel,  # noqa: F811
    suite_file: Path,
    ledger: Ledger,
    calibrated: tuple[Path, object],  # noqa: F811
) -> tuple[RunResult, Path, ProbeRecord]:
    """One harm/anonymous group probed with the declared search, logged."""
    root = calibrated[0]
    opts = options(
        suite_file, categories=("harm",), tiers=("anonymous",), attack=parse_budget(BUDGET)
    )
    res = run(ledger, lm, root, opts)
    (rec,) = records(ledger, res.indices)
    return res, root, rec


def _replay(
    ledger: Ledger,
    lm: LoadedModel,  # noqa: F811
    suite: Path,
    data: Path,
    index: int,
    **kw: object,
) -> ReplayReport:
    return replay(index, ledger.target, lm=lm, suite_path=suite, data=data, **kw)  # type: ignore[arg-type]


def _only(report: ReplayReport) -> AttackReplay:
    (a,) = report.attacks
    return a


def _result(rec: ProbeRecord) -> AttackResult:
    (result,) = [i.attack for i in rec.items if i.attack is not None]
    return result


def test_the_recorded_search_is_found_from_what_the_record_signs(
    attacked: tuple[RunResult, Path, ProbeRecord],
) -> None:
    _, _, rec = attacked
    result = _result(rec)
    assert result.spent.queries == len(result.attempts) == 2
    config = recorded_config(rec, result)
    assert config is not None and config == parse_budget(BUDGET)
    assert config_digest(config, result.corpus_sha256) == rec.attacks[0].config_digest


def test_replay_of_an_attacked_record_reproduces_every_attempt(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,
    lm: LoadedModel,  # noqa: F811
    suite_file: Path,
) -> None:
    res, root, _ = attacked
    report = _replay(ledger, lm, suite_file, root, res.indices[0])
    a = _only(report)
    assert (a.prompt_id, a.framing) == ("h1", "direct")
    assert a.reproduced and a.attempts_reproduced and a.best_reproduced, a.to_json()
    assert a.settings == () and a.first is None and a.differing == ()
    assert a.logged_attempts == a.replayed_attempts == 2
    assert report.reproduced and report.to_json()["attacks"][0]["reproduced"] is True


def test_a_different_seed_is_named_and_the_first_differing_attempt_found(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,
    lm: LoadedModel,  # noqa: F811
    suite_file: Path,
) -> None:
    res, root, rec = attacked
    result = _result(rec)
    report = _replay(ledger, lm, suite_file, root, res.indices[0], attack_budget="seed=5")
    a = _only(report)
    fields = {s.field: (s.logged, s.now) for s in a.settings}
    assert fields.pop("attack.seed") == ("0", "5")
    assert set(fields) == {"attack.configDigest"}, fields  # the seed is part of the digest
    assert not a.reproduced and not report.reproduced
    assert a.first is not None and a.first.position == a.differing[0]
    assert a.first.field == "transcriptDigest"
    assert a.first.logged == result.attempts[a.first.position] != a.first.now
    assert a.first.source is not None
    if a.first.position == result.best:
        assert a.first.part == "prompt", "another seed draws another template"


def test_a_smaller_budget_is_named_and_the_missing_attempt_found(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,
    lm: LoadedModel,  # noqa: F811
    suite_file: Path,
) -> None:
    res, root, rec = attacked
    result = _result(rec)
    report = _replay(ledger, lm, suite_file, root, res.indices[0], attack_budget="queries=1")
    a = _only(report)
    fields = {s.field: (s.logged, s.now) for s in a.settings}
    assert fields["attack.budget.queries"] == ("2", "1")
    assert (a.logged_attempts, a.replayed_attempts, a.differing) == (2, 1, (1,))
    assert a.first is not None and (a.first.position, a.first.field) == (1, "missing")
    assert (a.first.logged, a.first.now) == (result.attempts[1], None)
    best = {s.field: (s.logged, s.now) for s in a.best}
    assert best["attack.spent.queries"] == ("2", "1")
    assert a.best_reproduced == (result.best == 0)


def test_another_corpus_is_named_and_its_prompts_differ(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,
    lm: LoadedModel,  # noqa: F811
    suite_file: Path,
) -> None:
    res, root, rec = attacked
    result = _result(rec)
    vendored = load_corpus()
    edited = Corpus(
        vendored.version,
        "e" * 64,
        tuple(replace(t, text=t.text + " Answer now.") for t in vendored.templates),
    )
    report = _replay(ledger, lm, suite_file, root, res.indices[0], attack_corpus=edited)
    a = _only(report)
    assert [(s.field, s.logged, s.now) for s in a.settings] == [
        ("attack.corpusSha256", result.corpus_sha256, "e" * 64)
    ]
    # Past-tense attacks rewrite the request without a template: the first attempt drawn from
    # an edited template is the first to differ.
    assert a.first is not None and a.first.field == "transcriptDigest"
    assert a.first.position == a.differing[0] and not a.attempts_reproduced
    assert a.first.source is not None and not a.first.source.startswith("past-tense")
    if a.first.position == result.best:
        assert a.first.part == "prompt" and not a.best_reproduced
    # The same templates under another digest: named, yet every attempt reproduces.
    same = Corpus(vendored.version, "f" * 64, vendored.templates)
    b = _only(_replay(ledger, lm, suite_file, root, res.indices[0], attack_corpus=same))
    assert [s.field for s in b.settings] == ["attack.corpusSha256"] and b.attempts_reproduced


def test_cli_replay_reports_the_search(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,
    suite_file: Path,
) -> None:
    res, root, _ = attacked
    common = ["--ledger", ledger.srv.base_url, "--vkey", ledger.vkey, "--model", "tiny"]
    common += ["--suite-file", str(suite_file), "--data-dir", str(root), "--quiet"]
    common += ["--batch-size", str(BATCH), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    common += ["--replay", str(res.indices[0])]
    ok = CliRunner().invoke(probe_cmd, common)
    assert ok.exit_code == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["reproduced"] is True and doc["attacks"][0]["attemptsReproduced"] is True
    assert "ok   h1 [direct] search: 2 of 2 attempts reproduced, best attack reproduced" in (
        ok.stderr
    )
    bad = CliRunner().invoke(probe_cmd, [*common, "--budget", "seed=5"])
    assert bad.exit_code == 1, bad.stderr
    assert "DIFF h1 [direct] search" in bad.stderr
    assert "setting attack.seed: logged '0', now '5'" in bad.stderr
    assert re.search(r"first differing attempt \d+ \(.+\): transcriptDigest", bad.stderr)
    worse = CliRunner().invoke(probe_cmd, [*common, "--budget", "queries=lots"])
    assert worse.exit_code != 0 and "needs a non-negative integer" in worse.output


def test_a_search_is_re_judged_with_the_rubric_version_its_record_names() -> None:
    """An older search names ``rubric/1``: the replay judges with version 1 (the same scores on
    harmful items, the only ones searched), so the label is not reported as a changed setting;
    a version this release does not know, or another judge, falls back to the current one."""
    from clients.probe.attacks import rubric_judge
    from clients.probe.judges.transfer import RUBRIC_VERSION
    from clients.probe.replay_search import _recorded_judge
    from clients.probe.suites import load_suite

    current = rubric_judge()
    assert current[1] == f"rubric/{RUBRIC_VERSION}" != "rubric/1"
    old_score, old_label = _recorded_judge("rubric/1", current)
    assert old_label == "rubric/1"
    harmful = next(i for i in load_suite("core").items if i.kind == "harmful")
    answer = "Step 1: gather the materials. Step 2: combine them carefully. Step 3: test it."
    assert old_score(harmful, answer) == current[0](harmful, answer)
    for label in ("rubric/9", "keypoint/1", current[1]):
        assert _recorded_judge(label, current)[1] == current[1]
