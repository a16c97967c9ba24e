"""`bledger probe --refusal-judge`: which refusal judge a probing run judges with, what its
record and run key name, and that a replay judges with the one the record names.

The tiny random model runs the worker end to end against a real ledger server; the hidden-state
probe reads the bundled SmolLM2's states, so the tests that judge with it need those weights and
probe only one small group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from attest.predicates import MethodRef, ProbeRecord
from attest.statement import parse_statement, sign_statement
from clients.probe.judges.hidden import HiddenStateRefusalJudge
from clients.probe.judges.learned import LearnedRefusalJudge
from clients.probe.judges.transfer import RUBRIC_VALIDATION, RUBRIC_VERSION
from clients.probe.model import LoadedModel
from clients.probe.suites import probes
from clients.probe.worker import (
    REFUSAL_JUDGES,
    ProbeOptions,
    ProbeRunError,
    RunResult,
    RunStateError,
    _judges,
    _recorded_refusal,
    read_entry,
    replay,
    run_probe,
)
from clients.probe_cmd import REFUSAL_JUDGE_CHOICES
from clients.probe_cmd import probe as probe_cmd
from clients.sdk import LedgerClient, verifier_from_vkey
from tests.clients.probe.support import MINI_SUITE, STIMULI, Ledger

BATCH = 2
TOKENS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the module: its first run publishes a calibration, the rest reuse it."""
    return tmp_path_factory.mktemp("data")


def options(suite_file: Path, **kw: Any) -> ProbeOptions:
    given: dict[str, Any] = {"categories": ("grief",), **kw}
    return ProbeOptions(
        suite="mini", suite_path=suite_file, batch_size=BATCH, max_new_tokens=TOKENS, **given
    )


def run(ledger: Ledger, lm: LoadedModel, data: Path, opts: ProbeOptions, **kw: Any) -> RunResult:
    given: dict[str, Any] = {"stimuli": STIMULI, **kw}
    return run_probe(opts, ledger.target, ledger.signers, lm=lm, data=data, progress=False, **given)


def record_at(ledger: Ledger, index: int) -> ProbeRecord:
    pred = parse_statement(read_entry(ledger.target, index)[0].payload).predicate
    assert isinstance(pred, ProbeRecord)
    return pred


def submit(ledger: Ledger, record: ProbeRecord) -> int:
    with LedgerClient(ledger.srv.base_url) as c:
        env = sign_statement(record, ledger.signers)
        return c.submit("evidence", env, verifier_from_vkey(ledger.vkey), ledger.origin).index


# -- judges, without running a model -------------------------------------------------------------


def test_the_named_refusal_judge_judges_and_the_refs_name_it(tiny_lm: LoadedModel) -> None:
    learned, rubric_l, refs_l = _judges(RUBRIC_VERSION)
    hidden, rubric_h, refs_h = _judges(RUBRIC_VERSION, refusal="hidden-probe", lm=tiny_lm)
    assert isinstance(learned, LearnedRefusalJudge)
    assert isinstance(hidden, HiddenStateRefusalJudge)
    assert [r.name for r in refs_h[:2]] == ["hidden-probe", "rubric"]
    assert refs_h[0].config_digest == hidden.config_digest
    assert [r.name for r in refs_l[:2]] == ["learned", "rubric"]
    # The rubric's refused factor is the refusal judge's P(refused): its digest says which.
    assert refs_h[1].version == refs_l[1].version
    assert refs_h[1].config_digest != refs_l[1].config_digest
    assert rubric_h.refusal is hidden and rubric_l.refusal is learned
    # The rubric's figures were measured on the learned judge only.
    assert rubric_l.validation == RUBRIC_VALIDATION and rubric_h.validation == ()
    # The tiny model is not the bundled one: the hidden judge does not read its states, and
    # nothing is loaded until a verdict is asked for.
    assert not hidden.offer(tiny_lm)
    assert hidden._lm is None
    with pytest.raises(ProbeRunError, match=r"unknown refusal judge 'improved'.*learned"):
        _judges(RUBRIC_VERSION, refusal="improved")


def test_the_cli_lists_the_workers_refusal_judges() -> None:
    assert REFUSAL_JUDGE_CHOICES == REFUSAL_JUDGES
    assert REFUSAL_JUDGES[0] == "learned"
    res = CliRunner().invoke(probe_cmd, ["--refusal-judge", "improved", "--ledger", "x"])
    assert res.exit_code == 2
    assert "Invalid value for '--refusal-judge'" in res.stderr
    assert "'learned'" in res.stderr and "'hidden-probe'" in res.stderr
    help_text = CliRunner().invoke(probe_cmd, ["--help"]).stdout
    assert "--refusal-judge [learned|hidden-probe]" in help_text
    res = CliRunner().invoke(
        probe_cmd, ["--replay", "1", "--ledger", "x", "--refusal-judge", "learned"]
    )
    assert res.exit_code == 2 and "the refusal judge the record names" in res.stderr


# -- runs on the tiny model ---------------------------------------------------------------------


def test_a_run_is_never_resumed_under_another_refusal_judge(
    tiny_lm: LoadedModel, suite_file: Path, ledger: Ledger, data: Path
) -> None:
    run_dir = data / "run-learned"
    res = run(ledger, tiny_lm, data, options(suite_file), run_dir=run_dir)
    assert record_at(ledger, res.indices[0]).judges[0].name == "learned"
    with pytest.raises(RunStateError, match="another run"):
        run(
            ledger,
            tiny_lm,
            data,
            options(suite_file, refusal_judge="hidden-probe"),
            run_dir=run_dir,
        )


def test_the_cli_probes_with_the_refusal_judge_it_is_given(
    suite_file: Path, ledger: Ledger, data: Path
) -> None:
    common = ["--ledger", ledger.srv.base_url, "--vkey", ledger.vkey, "--model", "tiny"]
    common += ["--suite-file", str(suite_file), "--data-dir", str(data), "--quiet"]
    common += ["--batch-size", str(BATCH), "--max-new-tokens", str(TOKENS)]
    common += ["--categories", "grief", "--key", str(ledger.keys / "worker.pem")]
    res = CliRunner().invoke(probe_cmd, [*common, "--refusal-judge", "learned"])
    assert res.exit_code == 0, res.stderr
    [group] = json.loads(res.stdout)["groups"]
    rec = record_at(ledger, group["indices"][0])
    assert rec.judges[0] == _judges(refusal="learned")[2][0]


def test_replay_judges_with_the_refusal_judge_the_record_names(
    tiny_lm: LoadedModel, suite_file: Path, ledger: Ledger, data: Path
) -> None:
    res = run(ledger, tiny_lm, data, options(suite_file))
    rec = record_at(ledger, res.indices[0])
    assert _recorded_refusal(rec) == "learned"
    hidden_refs = _judges(refusal="hidden-probe")[2]
    assert _recorded_refusal(rec.model_copy(update={"judges": hidden_refs})) == "hidden-probe"
    assert _recorded_refusal(rec.model_copy(update={"judges": ()})) == "learned"

    # A judge unknown here: the replay judges with the default and says so in its settings.
    grader = MethodRef(name="llm-grader", version="3", config_digest="ab" * 32)
    unknown = rec.model_copy(
        update={"judges": (grader, *rec.judges[1:]), "run_id": "unknown-judge/part-1-of-1"}
    )
    assert _recorded_refusal(unknown) == "learned"
    report = replay(
        submit(ledger, unknown), ledger.target, lm=tiny_lm, suite_path=suite_file, data=data
    )
    assert all(i.refused_matches and i.answer_matches for i in report.items)
    learned_ref = rec.judges[0]
    assert [(d.field, d.logged, d.now) for d in report.settings] == [
        ("judges.learned", None, f"{learned_ref.version} {learned_ref.config_digest[:16]}")
    ]


# -- the hidden-state probe on the bundled model ------------------------------------------------


@pytest.fixture(scope="module")
def harm_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini suite's harmful item under two framings only: two answers to judge."""
    suite = json.loads(json.dumps(MINI_SUITE))
    suite["framings"] = ["direct", "fictional"]
    [h1] = [it for it in suite["items"] if it["id"] == "h1"]
    h1["framed"] = {"fictional": h1["framed"]["fictional"]}
    path = tmp_path_factory.mktemp("harm-suite") / "mini-1.json"
    path.write_text(json.dumps(suite))
    return path


def test_a_hidden_probe_run_on_smollm2_replays_bit_for_bit(
    smollm2: LoadedModel, harm_suite: Path, ledger: Ledger, data: Path
) -> None:
    hidden = _judges(refusal="hidden-probe", lm=smollm2)[0]
    assert isinstance(hidden, HiddenStateRefusalJudge)
    assert hidden._lm is smollm2, "the probed model is the bundled one: read, not loaded again"

    opts = options(
        harm_suite, categories=("harm",), tiers=("medical",), refusal_judge="hidden-probe"
    )
    # An even quicker calibration than the module's (it is not what is tested here).
    res = run(ledger, smollm2, data, opts, stimuli=STIMULI.subset(train=2, held_out=1, neutral=2))
    [index] = res.indices
    rec = record_at(ledger, index)
    assert [j.name for j in rec.judges[:2]] == ["hidden-probe", "rubric"]
    assert rec.judges[0].config_digest == hidden.config_digest
    # The refused verdicts are the probe's, asked one answer at a time here (the run asked in
    # batches, one per generation batch).
    plan = probes(opts.load_suite(), categories=["harm"], tiers=["medical"])
    one_by_one = HiddenStateRefusalJudge(smollm2)
    assert [i.refused for i in rec.items] == [
        one_by_one.refused(p.user, i.answer) for p, i in zip(plan, rec.items, strict=True)
    ]
    assert len(rec.items) == len(plan) == 2
    report = replay(index, ledger.target, lm=smollm2, suite_path=harm_suite, data=data)
    assert report.reproduced, report.to_json()
    assert report.settings == ()
