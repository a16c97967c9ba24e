"""The shipped refusal judges by name, and the default (what ``--judge`` choices list)."""

from __future__ import annotations

from typing import Final

from clients.probe.judges.learned import LearnedRefusalJudge
from clients.probe.judges.rules import ImprovedRefusalJudge, RefusalJudge, StringMatchRefusalJudge

__all__ = ["DEFAULT_REFUSAL", "refusal_judges"]

DEFAULT_REFUSAL: Final = "learned"
"""The refusal judge `bledger judge` and the probing worker use unless told otherwise."""


def refusal_judges() -> dict[str, RefusalJudge]:
    """Every shipped refusal judge by name: the baselines, the rules, then the learned default."""
    judges: list[RefusalJudge] = [
        StringMatchRefusalJudge("xstest"),
        StringMatchRefusalJudge("jailbreakbench"),
        ImprovedRefusalJudge(),
        LearnedRefusalJudge(),
    ]
    return {j.name: j for j in judges}
