"""Replay from the log alone, on the bundled SmolLM2 (not only the tiny random model).

A record signs everything that decides its answers (backend, decoding, judges, calibration);
`replay` takes each setting from the record — no CLI default can change it — reproduces the
answers bit for bit on CPU, and when a setting is changed says which setting and where each
answer starts to differ. Small on purpose: one group of five prompts, eight tokens each. The
same group probed under a declared adversarial search (`--attack corpus,pair --budget
queries=2,tokens=32,seconds=600`) replays attempt for attempt, and another seed is named with
what it changes (the first attempt, or the corpus template the best attack names).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attest.predicates import ProbeRecord
from attest.statement import parse_statement
from clients.probe.attacks import parse_budget
from clients.probe.backends import USER_PLACEHOLDER
from clients.probe.judges import LearnedRefusalJudge, RubricTransferJudge
from clients.probe.judges.disclosure import DisclosureJudge
from clients.probe.judges.position import PositionJudge
from clients.probe.model import LoadedModel
from clients.probe.worker import ProbeOptions, RunResult, read_entry, replay, run_probe
from clients.probe_cmd import probe as probe_cmd
from tests.clients.probe.support import STIMULI, Ledger

TOKENS = 8
BATCH = 2
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def logged(
    smollm2: LoadedModel,
    ledger: Ledger,
    suite_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[RunResult, Path]:
    """One group (harm/anonymous: five prompts) probed on SmolLM2 and logged."""
    data = tmp_path_factory.mktemp("data")
    opts = ProbeOptions(
        suite="mini",
        suite_path=suite_file,
        categories=("harm",),
        tiers=("anonymous",),
        batch_size=BATCH,
        max_new_tokens=TOKENS,
        seed=3,
        device="cpu",
    )
    res = run_probe(
        opts, ledger.target, ledger.signers, lm=smollm2, data=data, stimuli=STIMULI, progress=False
    )
    return res, data


def test_a_smollm2_record_signs_what_decides_its_answers(
    logged: tuple[RunResult, Path], ledger: Ledger
) -> None:
    res, _ = logged
    rec = parse_statement(read_entry(ledger.target, res.indices[0])[0].payload).predicate
    assert isinstance(rec, ProbeRecord)
    assert rec.decoding is not None and rec.backend is not None
    assert (rec.decoding.max_new_tokens, rec.decoding.batch_size, rec.decoding.seed) == (
        TOKENS,
        BATCH,
        3,
    )
    assert rec.decoding.temperature_milli == 0
    b = rec.backend
    assert (b.kind, b.device, b.dtype, b.emotions) == ("local", "cpu", "float32", "observed")
    assert b.tokenizer_sha256 and b.chat_template_sha256
    assert {"torch", "transformers", "tokenizers"} <= set(b.libraries)
    # The anonymous tier has no system prompt, yet SmolLM2's template adds its own: signed.
    assert b.rendered_prompt is not None and SMOLLM2_DEFAULT_SYSTEM in b.rendered_prompt
    assert USER_PLACEHOLDER in b.rendered_prompt
    refusal, transfer = LearnedRefusalJudge(), RubricTransferJudge(LearnedRefusalJudge())
    position, disclosure = PositionJudge(), DisclosureJudge()
    assert [(j.name, j.version, j.config_digest) for j in rec.judges] == [
        (refusal.name, refusal.version, refusal.config_digest),
        (transfer.name, transfer.version, transfer.config_digest),
        (position.name, position.version, position.config_digest),
        (disclosure.name, disclosure.version, disclosure.config_digest),
    ]
    assert rec.calibration == res.calibration


def test_replay_reproduces_smollm2_bit_for_bit_with_the_records_settings(
    logged: tuple[RunResult, Path], ledger: Ledger, suite_file: Path
) -> None:
    res, data = logged
    # No decoding argument and no model: everything comes from the record (the model is
    # loaded again, by the name the record gives, on the record's device and dtype).
    report = replay(res.indices[0], ledger.target, suite_path=suite_file, data=data)
    assert report.reproduced, report.to_json()
    assert report.settings == (), "every recorded setting is what the replay ran with"
    assert (report.decoding.max_new_tokens, report.decoding.batch_size) == (TOKENS, BATCH)
    assert report.decoding.seed == 3
    assert all(i.answer_matches and i.max_emotion_delta_milli == 0 for i in report.items)


def test_replay_says_which_setting_and_where_each_answer_differs(
    logged: tuple[RunResult, Path], ledger: Ledger, suite_file: Path, smollm2: LoadedModel
) -> None:
    res, data = logged
    report = replay(
        res.indices[0],
        ledger.target,
        lm=smollm2,
        suite_path=suite_file,
        data=data,
        max_new_tokens=TOKENS // 2,
    )
    fields = {d.field: (d.logged, d.now) for d in report.settings}
    assert fields == {"decoding.maxNewTokens": (str(TOKENS), str(TOKENS // 2))}
    shortened = [i for i in report.items if not i.answer_matches]
    assert shortened, "half the tokens changes some answer"
    for i in shortened:
        assert i.first_difference == len(i.replayed_answer), "a prefix: differs where it stops"
        assert i.logged_answer.startswith(i.replayed_answer)
    js = report.to_json()
    assert js["settingsDiffer"][0]["field"] == "decoding.maxNewTokens"
    assert any("firstDifference" in it for it in js["items"])


def test_cli_replay_takes_its_defaults_from_the_record(
    logged: tuple[RunResult, Path], ledger: Ledger, suite_file: Path
) -> None:
    res, data = logged
    args = ["--replay", str(res.indices[0]), "--ledger", ledger.srv.base_url]
    args += ["--vkey", ledger.vkey, "--suite-file", str(suite_file), "--data-dir", str(data)]
    out = CliRunner().invoke(probe_cmd, [*args, "--quiet"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["reproduced"] is True and doc["settingsDiffer"] == []
    assert doc["decoding"] == {
        "maxNewTokens": TOKENS,
        "temperatureMilli": 0,
        "seed": 3,
        "batchSize": BATCH,
    }


# -- an attacked record: replay re-runs its adversarial search ----------------------------------

SEARCH_BUDGET = "queries=2,tokens=32,seconds=600"


@pytest.fixture(scope="module")
def attacked(
    smollm2: LoadedModel,
    ledger: Ledger,
    suite_file: Path,
    logged: tuple[RunResult, Path],
) -> tuple[RunResult, Path, ProbeRecord]:
    """The same group probed again under a declared search; `logged`'s data directory, so the
    calibration that run logged is reused rather than made again."""
    data = logged[1]
    opts = ProbeOptions(
        suite="mini",
        suite_path=suite_file,
        categories=("harm",),
        tiers=("anonymous",),
        batch_size=2,
        max_new_tokens=8,
        seed=3,
        device="cpu",
        attack=parse_budget(f"{SEARCH_BUDGET},seed=3"),
    )
    res = run_probe(
        opts, ledger.target, ledger.signers, lm=smollm2, data=data, stimuli=STIMULI, progress=False
    )
    rec = parse_statement(read_entry(ledger.target, res.indices[0])[0].payload).predicate
    assert isinstance(rec, ProbeRecord)
    return res, data, rec


def test_smollm2_search_replays_attempt_for_attempt(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,
    suite_file: Path,
    smollm2: LoadedModel,
) -> None:
    res, data, rec = attacked
    (result,) = [i.attack for i in rec.items if i.attack is not None]
    assert result.seed == 3 and len(result.attempts) == result.spent.queries > 0
    report = replay(res.indices[0], ledger.target, lm=smollm2, suite_path=suite_file, data=data)
    (a,) = report.attacks
    assert a.reproduced and a.settings == (), a.to_json()
    assert report.reproduced

    other = replay(
        res.indices[0],
        ledger.target,
        lm=smollm2,
        suite_path=suite_file,
        data=data,
        attack_budget="seed=4",
    )
    (b,) = other.attacks
    assert ("attack.seed", "3", "4") in [(s.field, s.logged, s.now) for s in b.settings]
    assert not b.reproduced and not other.reproduced
    # Another seed draws other corpus templates. A past-tense attack rewrites the request
    # without its template's text, so its transcript (and digest) can be the same while the
    # template it names differs: the report names whichever changed.
    if b.first is not None:
        assert b.first.position == b.differing[0] and b.first.field == "transcriptDigest"
    else:
        assert "attack.bestSource" in [s.field for s in b.best], b.to_json()
