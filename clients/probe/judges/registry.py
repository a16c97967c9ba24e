"""The shipped refusal judges by name, and the default (what ``--judge`` choices list)."""

from __future__ import annotations

from typing import Final

from clients.probe.judges.hidden import HiddenStateRefusalJudge
from clients.probe.judges.learned import LearnedRefusalJudge
from clients.probe.judges.rules import ImprovedRefusalJudge, RefusalJudge, StringMatchRefusalJudge

__all__ = ["DEFAULT_JUDGE_COMMAND", "DEFAULT_REFUSAL", "needs_model", "refusal_judges"]

DEFAULT_REFUSAL: Final = "learned"
"""The refusal judge the probing worker judges with unless told otherwise (``bledger probe
--refusal-judge``), and so the one probe records name by default. It runs no model: a probing
run against an endpoint or another local model would otherwise have to load SmolLM2 beside it
for the verdicts alone."""

DEFAULT_JUDGE_COMMAND: Final = "hidden-probe"
"""The refusal judge `bledger judge` uses unless ``--judge`` names another: the one that agrees
best with human labels on other models' answers (docs/judges.md), worth loading the bundled
model once for a file of answers."""


def refusal_judges() -> dict[str, RefusalJudge]:
    """Every shipped refusal judge by name: the baselines, the rules, the learned judge (the
    worker's default), then the hidden-state probe (`bledger judge`'s default; built without its
    model: it loads it on first use)."""
    judges: list[RefusalJudge] = [
        StringMatchRefusalJudge("xstest"),
        StringMatchRefusalJudge("jailbreakbench"),
        ImprovedRefusalJudge(),
        LearnedRefusalJudge(),
        HiddenStateRefusalJudge(),
    ]
    return {j.name: j for j in judges}


def needs_model(judge: RefusalJudge) -> bool:
    """Whether `judge` runs a language model to judge (``needs_model`` set on its class): tables
    that run every judge on the hand labels skip those unless asked, to stay cheap."""
    return bool(getattr(judge, "needs_model", False))
