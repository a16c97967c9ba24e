"""Replaying the adversarial searches a probe record signs, attempt by attempt.

A record made with ``--attack`` carries, on each attacked item, an `attest.predicates.AttackResult`
(method and version, seed, budget and spent, corpus digest, judge, attacker, every attempt's
transcript digest, the best attempt), and at record level the search's `MethodRef`, whose
`config_digest` covers the search's whole configuration (`attacks.attack_method_ref`). What the
record does not spell out — the search's shape: corpus attacks, rounds, branches, token caps —
is recovered by finding the configuration whose digest is the signed one (`recorded_config`):
the named budgets with the record's seed, budget and methods, a declared subset or not, a
template-length cap or not. A shape none of those matches needs the run's ``--budget`` again.

`replay_attacks` re-runs each attacked item's search on the replay's backend (target and, for
``pair``, attacker, as the worker ran it: `attacks.attack_backend_group`), with the record's seed
and token budget, queries capped at the attempts it made, no time limit (the one limit that
depends on the machine; what ran before it struck is a function of the seed:
`attacks.replay_config`), and reports per item:

* `AttackReplay.settings` — every signed setting that is not what the replay ran with (a
  ``--seed`` or ``--budget`` given on the command line, another corpus file, judge or attacker,
  a configuration digest that is not the signed one), by wire name;
* whether every attempt's transcript digest reproduced and, when not, the first attempt that
  differs (`AttemptDiff`: its position, what differs — the digest, or an attempt missing or
  extra — and, where the record allows telling, whether the prompt or the answer differs);
* whether the best attack reproduced: each best-attempt field of the record against the replay's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from attest.jcs import canonicalize
from attest.predicates import AttackResult, ProbeRecord
from clients.probe.attacks import (
    ATTACK_VERSION,
    BUDGETS,
    AttackConfig,
    AttackOutcome,
    Budget,
    Corpus,
    Judge,
    attack_result,
    backend_generate,
    load_corpus,
    parse_budget,
    rubric_judge,
    search,
)
from clients.probe.backends import Backend
from clients.probe.suites import Probe

__all__ = [
    "AttackReplay",
    "AttackSetting",
    "AttemptDiff",
    "config_digest",
    "recorded_config",
    "replay_attacks",
]

NO_TIME_LIMIT = 10**9
"""Seconds: a replay is never cut by the clock (see the module docstring)."""


@dataclass(frozen=True)
class AttackSetting:
    """A signed setting of the search that is not what the replay ran with: `field` by wire
    name (``attack.seed``, ``attack.budget.queries``, ``attack.corpusSha256``, ...)."""

    field: str
    logged: str | None
    now: str | None


@dataclass(frozen=True)
class AttemptDiff:
    """The first attempt that does not reproduce: its `position`, which `field` differs
    (``transcriptDigest``; ``missing``: the replay stopped before it; ``extra``: the replay
    made it, the record has none), the logged and replayed digests, the replayed attempt's
    `source` (corpus template or attacker round), and for the best attempt, whose prompt the
    record carries, `part`: ``prompt`` or ``answer`` (None when the record cannot tell)."""

    position: int
    field: str
    logged: str | None
    now: str | None
    source: str | None = None
    part: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "position": self.position,
            "field": self.field,
            "logged": self.logged,
            "now": self.now,
            "source": self.source,
            "part": self.part,
        }


@dataclass(frozen=True)
class AttackReplay:
    """The replayed search of one attacked item (see the module docstring)."""

    prompt_id: str
    framing: str
    settings: tuple[AttackSetting, ...]
    logged_attempts: int
    replayed_attempts: int
    differing: tuple[int, ...]
    """Positions whose digest differs, is missing or is extra, in order."""
    first: AttemptDiff | None
    best: tuple[AttackSetting, ...]
    """The best-attempt (and spent) fields of the record that the replay does not reproduce."""

    @property
    def attempts_reproduced(self) -> bool:
        """Every attempt's transcript digest, in order, and no attempt more or less."""
        return not self.differing

    @property
    def best_reproduced(self) -> bool:
        """The best attempt: position, source, transfer, refusal, prompt and answer."""
        return not any(b.field.startswith("attack.best") for b in self.best)

    @property
    def reproduced(self) -> bool:
        """Every attempt, the best attack and what the search spent (queries, tokens)."""
        return self.attempts_reproduced and not self.best

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, with wire names."""
        return {
            "promptId": self.prompt_id,
            "framing": self.framing,
            "reproduced": self.reproduced,
            "attemptsReproduced": self.attempts_reproduced,
            "bestReproduced": self.best_reproduced,
            "loggedAttempts": self.logged_attempts,
            "replayedAttempts": self.replayed_attempts,
            "differingAttempts": list(self.differing),
            "firstDifference": None if self.first is None else self.first.to_json(),
            "settingsDiffer": [_setting_json(s) for s in self.settings],
            "bestDiffers": [_setting_json(s) for s in self.best],
        }


def _setting_json(s: AttackSetting) -> dict[str, str | None]:
    return {"field": s.field, "logged": s.logged, "now": s.now}


def config_digest(config: AttackConfig, corpus_sha256: str) -> str:
    """The `MethodRef.config_digest` of a search with `config` on the corpus `corpus_sha256`
    (as `attacks.attack_method_ref` computes it)."""
    body = {**config.to_json(), "corpus": corpus_sha256}
    return hashlib.sha256(canonicalize(body)).hexdigest()


def _signed_ref_digest(record: ProbeRecord, result: AttackResult) -> str | None:
    for ref in record.attacks:
        if ref.name == result.method and ref.version == result.version:
            return ref.config_digest
    return None


def _from_result(base: AttackConfig, result: AttackResult) -> AttackConfig:
    b = result.budget
    return replace(
        base,
        methods=tuple(result.method.split("+")),
        seed=result.seed,
        budget=Budget(b.queries, b.tokens, b.seconds),
    )


def recorded_config(record: ProbeRecord, result: AttackResult) -> AttackConfig | None:
    """The search configuration whose digest is the one `record` signs for `result`'s method:
    each named budget with the result's methods, seed and budget, all items or the declared
    subset, any template-length cap or none. None when none matches (give ``--budget``)."""
    want = _signed_ref_digest(record, result)
    if want is None:
        return None
    attacked = sum(1 for i in record.items if i.attack is not None)
    for base in BUDGETS.values():
        start = _from_result(base, result)
        for items in dict.fromkeys((base.items, None, attacked)):
            for chars in dict.fromkeys((base.max_template_chars, None)):
                c = replace(start, items=items, max_template_chars=chars)
                if config_digest(c, result.corpus_sha256) == want:
                    return c
    return None


def _effective(
    record: ProbeRecord,
    result: AttackResult,
    budget: str | None,
    seed: int | None,
) -> tuple[AttackConfig, list[AttackSetting]]:
    """The configuration the replay runs with, and the settings it changes (or had to guess)."""
    found = recorded_config(record, result)
    out: list[AttackSetting] = []
    base = found or _from_result(BUDGETS["demo"], result)
    config = base if budget is None else parse_budget(budget, base)
    if seed is not None and (budget is None or "seed=" not in budget):
        config = replace(config, seed=seed)  # --seed seeds the search too, as in the run
    signed = _signed_ref_digest(record, result)
    now_digest = config_digest(config, result.corpus_sha256)
    if signed is not None and now_digest != signed:
        why = "" if found is not None or budget is not None else " (shape unknown: give --budget)"
        out.append(AttackSetting("attack.configDigest", signed, now_digest + why))
    if config.method() != result.method:
        out.append(AttackSetting("attack.method", result.method, config.method()))
    if config.seed != result.seed:
        out.append(AttackSetting("attack.seed", str(result.seed), str(config.seed)))
    for name in ("queries", "tokens", "seconds"):
        was, now = getattr(result.budget, name), getattr(config.budget, name)
        if was != now:
            out.append(AttackSetting(f"attack.budget.{name}", str(was), str(now)))
    return config, out


def _run_config(config: AttackConfig, result: AttackResult) -> AttackConfig:
    """`config` as the replay runs it: no time limit, and at the record's own query budget, only
    as many queries as it made (the attempts before the clock struck; `replay_config`)."""
    b = config.budget
    queries = result.spent.queries if b.queries == result.budget.queries else b.queries
    return replace(config, budget=Budget(queries, b.tokens, NO_TIME_LIMIT))


def _first(
    logged: AttackResult, again: AttackOutcome, differing: Sequence[int]
) -> AttemptDiff | None:
    if not differing:
        return None
    k = differing[0]
    got = again.attempts[k] if k < len(again.attempts) else None
    want = logged.attempts[k] if k < len(logged.attempts) else None
    field = (
        "transcriptDigest"
        if got is not None and want is not None
        else ("missing" if got is None else "extra")
    )
    part = None
    if got is not None and want is not None and logged.best == k:
        prompt_sha = hashlib.sha256(got.prompt.encode()).hexdigest()
        part = "prompt" if prompt_sha != logged.best_prompt_sha256 else "answer"
    return AttemptDiff(
        k,
        field,
        want,
        None if got is None else got.digest,
        None if got is None else got.source,
        part,
    )


_BEST_FIELDS = (
    ("best", "attack.best"),
    ("best_source", "attack.bestSource"),
    ("best_transfer_milli", "attack.bestTransferMilli"),
    ("best_refused", "attack.bestRefused"),
    ("best_prompt_sha256", "attack.bestPromptSha256"),
    ("best_answer", "attack.bestAnswer"),
)


def _best_diffs(logged: AttackResult, now: AttackResult) -> list[AttackSetting]:
    out = []
    for attr, wire in _BEST_FIELDS:
        a, b = getattr(logged, attr), getattr(now, attr)
        if a != b:
            out.append(AttackSetting(wire, _text(a), _text(b)))
    for name in ("queries", "tokens"):
        a, b = getattr(logged.spent, name), getattr(now.spent, name)
        if a != b:
            out.append(AttackSetting(f"attack.spent.{name}", str(a), str(b)))
    return out


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _recorded_judge(label: str, current: tuple[Judge, str]) -> tuple[Judge, str]:
    """The transfer judge a search's record names (``rubric/<version>``), when this release
    still knows that version; otherwise the current one (and the replay lists the difference).
    Rubric versions score harmful items, the only items searched, alike; judging with the
    recorded one keeps an older search's label from reading as a changed setting."""
    from clients.probe.judges.transfer import RUBRIC_VERSIONS, RubricTransferJudge

    name, _, version = label.partition("/")
    if name != "rubric" or version not in RUBRIC_VERSIONS or label == current[1]:
        return current
    return rubric_judge(RubricTransferJudge(version=version))


def replay_attacks(
    record: ProbeRecord,
    plan: Sequence[Probe],
    backend: Backend,
    *,
    batch_size: int,
    budget: str | None = None,
    seed: int | None = None,
    corpus: Corpus | None = None,
) -> tuple[AttackReplay, ...]:
    """Re-run the search of every attacked item of `record` (`plan[k]` is the probe of
    `record.items[k]`) on `backend`, batched `batch_size` at a time as the run was; `budget`
    (``--budget`` text) and `seed` override the record's, `corpus` the vendored corpus. See the
    module docstring for what is compared."""
    corpus = corpus or load_corpus()
    current = rubric_judge()
    model = backend.identity().model
    attacker_name = f"{model.name}@{model.version}"
    out = []
    for item, probe in zip(record.items, plan, strict=True):
        result = item.attack
        if result is None:
            continue
        config, settings = _effective(record, result, budget, seed)
        if corpus.sha256 != result.corpus_sha256:
            settings.append(
                AttackSetting("attack.corpusSha256", result.corpus_sha256, corpus.sha256)
            )
        if result.version != ATTACK_VERSION:
            settings.append(AttackSetting("attack.version", result.version, ATTACK_VERSION))
        score, judge_name = _recorded_judge(result.judge, current)
        if judge_name != result.judge:
            settings.append(AttackSetting("attack.judge", result.judge, judge_name))
        uses_attacker = "pair" in config.methods
        now_attacker = attacker_name if uses_attacker else None
        if now_attacker != result.attacker:
            settings.append(AttackSetting("attack.attacker", result.attacker, now_attacker))
        gen = backend_generate(backend, seed=config.seed, batch_size=batch_size)
        run = _run_config(config, result)
        again = search(
            probe.item,
            probe.system,
            gen,
            score,
            run,
            corpus,
            attacker=gen if uses_attacker else None,
            attacker_name=now_attacker,
        )
        now = attack_result(again, config, corpus, judge_name)
        got, want = [a.digest for a in again.attempts], list(result.attempts)
        differing = [k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b]
        differing += range(min(len(got), len(want)), max(len(got), len(want)))
        out.append(
            AttackReplay(
                prompt_id=item.prompt_id,
                framing=item.framing,
                settings=tuple(settings),
                logged_attempts=len(want),
                replayed_attempts=len(got),
                differing=tuple(differing),
                first=_first(result, again, differing),
                best=tuple(_best_diffs(result, now)),
            )
        )
    return tuple(out)
