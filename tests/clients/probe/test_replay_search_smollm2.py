"""Replay of an attacked record on the bundled SmolLM2 (not only the tiny random model).

One group (harm/anonymous: five prompts, 8 tokens) probed with `--attack corpus,pair --budget
queries=2,tokens=32,seconds=600` and logged; `replay` re-runs the search from the record alone and
reproduces every attempt on CPU; another seed is named with what it changes (the first attempt,
or the corpus template the best attack names).
Skipped without the bundled model, except under CI=true (`test_replay.smollm2`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attest.predicates import ProbeRecord
from attest.statement import parse_statement
from clients.probe.attacks import parse_budget
from clients.probe.model import LoadedModel
from clients.probe.worker import ProbeOptions, RunResult, read_entry, replay, run_probe
from tests.clients.probe.test_replay import ledger, smollm2, suite_file  # noqa: F401
from tests.clients.probe.test_worker import STIMULI, Ledger

BUDGET = "queries=2,tokens=32,seconds=600"


@pytest.fixture(scope="module")
def attacked(
    smollm2: LoadedModel,  # noqa: F811
    ledger: Ledger,  # noqa: F811
    suite_file: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[RunResult, Path, ProbeRecord]:
    data = tmp_path_factory.mktemp("data")
    opts = ProbeOptions(
        suite="mini",
        suite_path=suite_file,
        categories=("harm",),
        tiers=("anonymous",),
        batch_size=2,
        max_new_tokens=8,
        seed=3,
        device="cpu",
        attack=parse_budget(f"{BUDGET},seed=3"),
    )
    res = run_probe(
        opts, ledger.target, ledger.signers, lm=smollm2, data=data, stimuli=STIMULI, progress=False
    )
    rec = parse_statement(read_entry(ledger.target, res.indices[0])[0].payload).predicate
    assert isinstance(rec, ProbeRecord)
    return res, data, rec


def test_smollm2_search_replays_attempt_for_attempt(
    attacked: tuple[RunResult, Path, ProbeRecord],
    ledger: Ledger,  # noqa: F811
    suite_file: Path,  # noqa: F811
    smollm2: LoadedModel,  # noqa: F811
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
