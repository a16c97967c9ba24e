"""A rule builder for admission pools whose tests run their own functions on the workers: the
pool needs one to start, and these tests admit nothing (`AdmissionPool(build_no_rules, ...)`)."""

from __future__ import annotations

from ledger.admission import AdmissionRule
from ledger.admitters import PoolOptions


class NoRules:
    """No log has a rule."""

    def rule_of(self, log: str) -> AdmissionRule:
        raise KeyError(log)


def build_no_rules(opts: PoolOptions) -> NoRules:
    """What a worker builds at start-up (module level: the pool sends it by name)."""
    return NoRules()
