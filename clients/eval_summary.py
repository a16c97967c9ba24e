"""Imported eval samples summarised per (task, model, scorer, generate config), for the web page.

`bledger import inspect` logs one `attest.predicates.EvalSample` per sample of an Inspect log;
`eval_groups` groups a model's samples by task and version, model and version, scorer and the
eval's generate config (its SHA-256: samples run under two configs are two groups, never one
figure), and summarises each scorer's values:

* **binary** — every value is Inspect's ``"C"`` / ``"I"`` (correct / incorrect), a JSON boolean,
  or the number 0 or 1: the proportion correct with its Wilson score 95 % interval
  (`clients.probe.metrics.rate`, inside [0, 1]);
* **numeric** — numbers (Inspect's ``"P"`` partial counts 0.5 and ``"N"`` no-answer 0 among
  ``"C"`` / ``"I"``, as Inspect's own ``value_to_float`` does): the mean with a percentile
  bootstrap 95 % interval (`metrics.mean_ci`) bounded by [0, 1] when every value lies there, else
  by the observed [min, max];
* **categorical** — anything else (other strings, lists, objects): the count of each value (its
  RFC 8785 JSON text), no interval.

A binary or numeric figure is shown as a number only under the rule every other figure of the
page follows (`metrics.reportable`: a 95 % interval at most ±0.10 wide; for a numeric score
outside [0, 1] the half-width is measured as a fraction of the observed range), else as
``insufficient data (n=…)``, through `clients.text.shown` as the probe figures are.

Pure: the caller passes statements it read (the web page's server) or verified (the CLI).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Final

from attest.predicates import EvalSample
from clients.history import LoggedStatement
from clients.probe.metrics import Mean, half_width, mean_ci, rate, reportable
from clients.text import shown

__all__ = ["INSPECT_VALUES", "eval_groups", "summarise_scores"]

INSPECT_VALUES: Final = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}
"""Inspect's score letters (CORRECT, INCORRECT, PARTIAL, NOANSWER), as its `value_to_float`
reads them."""

WILSON: Final = "wilson-score-95"
"""The interval method of a binary score."""


def _as_number(value: Any) -> float | None:
    """`value` as a number when it is one (bool and Inspect letters included), else None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in INSPECT_VALUES:
        return INSPECT_VALUES[value]
    return None


def _binary(values: list[Any]) -> bool:
    return all(
        (isinstance(v, str) and v in ("C", "I"))
        or isinstance(v, bool)
        or (isinstance(v, int | float) and v in (0, 1))
        for v in values
    )


def summarise_scores(values: list[Any]) -> dict[str, Any]:
    """The summary of one scorer's `values` (parsed JSON, one per sample): ``kind``, ``n``,
    the figure (``rate`` / ``mean`` with ``low``, ``high``, ``method``, or ``counts``),
    ``reportable`` and the ``display`` string (see the module docstring)."""
    n = len(values)
    if n and _binary(values):
        k = sum(1 for v in values if _as_number(v) == 1.0)
        r = rate(k, n)
        return {
            "kind": "binary",
            "n": n,
            "k": k,
            "rate": r.rate,
            "low": r.low,
            "high": r.high,
            "method": WILSON,
            "reportable": reportable(r),
            "display": shown(r),
        }
    numbers = [_as_number(v) for v in values]
    if n and all(x is not None for x in numbers):
        xs = [float(x) for x in numbers if x is not None]
        lo, hi = (0.0, 1.0) if all(0.0 <= x <= 1.0 for x in xs) else (min(xs), max(xs))
        if lo == hi:  # one value outside [0, 1], repeated: no scale to put an interval on
            m = Mean(n, lo, lo, hi, n, "none: every value is the same, outside [0, 1]")
            ok, display = False, f"insufficient data (n={n})"
        else:
            m = mean_ci(xs, bounds=(lo, hi))
            if (lo, hi) == (0.0, 1.0):
                ok, display = reportable(m), shown(m)
            else:  # the reportable rule on the observed range, the figure in its own units
                scaled = replace(m, low=(m.low - lo) / (hi - lo), high=(m.high - lo) / (hi - lo))
                ok = reportable(scaled)
                display = (
                    f"{m.mean:.2f} [{m.low:.2f}, {m.high:.2f}] n={n}"
                    if ok
                    else f"insufficient data (n={n})"
                )
        return {
            "kind": "numeric",
            "n": n,
            "mean": m.mean,
            "low": m.low,
            "high": m.high,
            "bounds": [lo, hi],
            "method": m.method,
            "halfWidth": half_width(m),
            "reportable": ok,
            "display": display,
        }
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "kind": "categorical",
        "n": n,
        "counts": dict(ranked),
        "reportable": False,
        "display": " · ".join(f"{k} {c}" for k, c in ranked) + f" (n={n})",
    }


def eval_groups(statements: Iterable[LoggedStatement], model: str) -> list[dict[str, Any]]:
    """The eval samples about `model` among `statements`, one group per (task, task version,
    model version, scorer, config digest), in log order of each group's first sample.

    Each group: ``task``, ``taskVersion``, ``model``, ``modelVersion``, ``scorer``, ``tool``,
    ``configSha256``, ``generateConfig``, ``evalIds``, ``n``, ``summary``
    (`summarise_scores`), ``records`` (log indices, in order) and ``samples`` (``index``,
    ``sample``, ``epoch``, ``value``: the scorer's canonical JSON text, as signed), and
    ``verified`` (every sample's inclusion proved)."""
    groups: dict[tuple[str, ...], list[tuple[LoggedStatement, EvalSample, str]]] = {}
    for s in sorted(statements, key=lambda s: s.index):
        p = s.statement.predicate
        if not isinstance(p, EvalSample) or p.model.name != model:
            continue
        for sc in p.scores:
            key = (p.task, p.task_version, p.model.version, sc.scorer, p.config_sha256)
            groups.setdefault(key, []).append((s, p, sc.value))
    out = []
    for (task, task_version, version, scorer, config), rows in groups.items():
        first = rows[0][1]
        out.append(
            {
                "task": task,
                "taskVersion": task_version,
                "model": model,
                "modelVersion": version,
                "scorer": scorer,
                "tool": f"{first.tool} {first.tool_version}",
                "configSha256": config,
                "generateConfig": first.generate_config,
                "evalIds": list(dict.fromkeys(p.eval_id for _, p, _ in rows)),
                "n": len(rows),
                "summary": summarise_scores([json.loads(v) for _, _, v in rows]),
                "records": [s.index for s, _, _ in rows],
                "samples": [
                    {"index": s.index, "sample": p.sample_id, "epoch": p.epoch, "value": v}
                    for s, p, v in rows
                ],
                "verified": all(s.verified for s, _, _ in rows),
            }
        )
    return out
