"""Behaviour metrics: rates and means with 95 % intervals, McNemar with Holm, the reportable rule.

Everything here is deterministic and stays inside the range of what it measures:

* **rates** (refusals of n items): Wilson score intervals, clipped to [0, 1] (`rate`);
* **means of scores in [0, 1]** (capability transfer): a percentile **cluster bootstrap**
  (`mean_ci`), items as clusters — the framings or attack attempts of one item are resampled
  together, never as independent draws — seeded, so the same values give the same interval;
  a percentile interval of values in [0, 1] never leaves [0, 1]. Differences of paired scores
  (framed - direct) the same way, inside [-1, 1] (`differential_transfer`);
* **change between two versions**: McNemar's exact test per cell (`mcnemar`), Holm's step-down
  correction across the cells of a diff (`holm`), and the smallest p-value a cell's n can reach
  at all (`min_attainable_p`), so "not significant" is not read into a cell that never could be;
* **the reportable rule** (`reportable`, `cell_text`): a figure is printed as a number only when
  its 95 % interval's half-width is at most `MAX_HALF_WIDTH` (0.10); otherwise it is
  "insufficient data (n=…)". History, web page and continuity all call these two functions.

The Student-t interval of earlier versions is gone: on 0/1 or bounded data it gave intervals such
as [-0.55, 1.05]. Signed payloads carry no floats: `milli` turns a value into integer milli-units,
rounding half away from zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from attest.errors import AttestError

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MAX_HALF_WIDTH",
    "Z95",
    "Mean",
    "MetricsError",
    "Rate",
    "cell_text",
    "differential_transfer",
    "half_width",
    "holm",
    "mcnemar",
    "mean_ci",
    "milli",
    "min_attainable_p",
    "rate",
    "reportable",
]

Z95: Final = 1.959963984540054
"""The 0.975 quantile of the standard normal distribution (two-sided 95 %)."""

MAX_HALF_WIDTH: Final = 0.10
"""The reportable rule's bound: a figure is printed only when its 95 % interval's half-width is at
most this (about 100 items for a rate near one half)."""

BOOTSTRAP_RESAMPLES: Final = 2000
"""Bootstrap resamples per interval: the 2.5 % and 97.5 % percentiles move by well under 0.01
between seeds at this count for the cell sizes the suites have."""

BOOTSTRAP_SEED: Final = 20240601
"""The fixed seed of every bootstrap here, so an interval is a function of its values."""


class MetricsError(AttestError):
    """A metric asked of impossible input: negative counts, k > n, no values, NaN."""


@dataclass(frozen=True)
class Rate:
    """`k` of `n`, the proportion `rate`, and its Wilson score 95 % interval [`low`, `high`]."""

    k: int
    n: int
    rate: float
    low: float
    high: float


def rate(k: int, n: int) -> Rate:
    """The proportion k/n with its Wilson score 95 % interval (Wilson 1927).

    Requires 0 <= k <= n. For n == 0 the rate is 0.0 and the interval is [0, 1] (no evidence).
    Wilson rather than the normal (Wald) interval: it stays inside [0, 1] and does not collapse
    to a point at k = 0 or k = n, which small probe categories hit often.
    """
    if n < 0 or k < 0 or k > n:
        raise MetricsError(f"rate needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, 0.0, 0.0, 1.0)
    p = k / n
    z2 = Z95 * Z95
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp the rounding dust at the ends (k = 0 gives a low of ~1e-17, not 0).
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k, n, p, low, high)


@dataclass(frozen=True)
class Mean:
    """The mean of `n` values (in `clusters` items) and its 95 % interval [`low`, `high`].

    `method` names how the interval was computed (``cluster-bootstrap-percentile/2000/seed``).
    """

    n: int
    mean: float
    low: float
    high: float
    clusters: int = 0
    method: str = ""


def _finite(values: Sequence[float]) -> list[float]:
    xs = [float(v) for v in values]
    if any(not math.isfinite(x) for x in xs):
        raise MetricsError("values must be finite numbers")
    return xs


def _method(resamples: int, seed: int) -> str:
    return f"cluster-bootstrap-percentile/{resamples}/{seed}"


def mean_ci(
    values: Sequence[float],
    clusters: Sequence[str] | None = None,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Mean:
    """The mean of `values` with a percentile cluster-bootstrap 95 % interval.

    `clusters[i]` names the item `values[i]` belongs to (default: each value its own item).
    Each resample draws items with replacement and takes the mean over all their values, so the
    several framings or attempts of one item move together. Requires values inside `bounds`
    (default [0, 1]); the interval then stays inside them. With fewer than two items there is
    no spread to resample: the interval is the whole of `bounds` (no evidence). When every item
    has the same mean (all 0.0, say) the bootstrap interval would be a point; it is then the
    Wilson interval of a 0/1 variable with that mean over the items (at four items [0, 0.49]).
    Deterministic: numpy's PCG64 generator seeded with `seed`.
    """
    xs = _finite(values)
    if not xs:
        raise MetricsError("mean of no values")
    lo, hi = bounds
    if any(x < lo or x > hi for x in xs):
        raise MetricsError(f"values must lie in [{lo}, {hi}]")
    ids = list(clusters) if clusters is not None else [str(i) for i in range(len(xs))]
    if len(ids) != len(xs):
        raise MetricsError(f"{len(xs)} values but {len(ids)} cluster ids")
    index = {c: j for j, c in enumerate(dict.fromkeys(ids))}
    k = len(index)
    sum_of = [0.0] * k
    count_of = [0] * k
    for c, x in zip(ids, xs, strict=True):
        sum_of[index[c]] += x
        count_of[index[c]] += 1
    m = math.fsum(xs) / len(xs)
    method = _method(resamples, seed)
    if k < 2:
        return Mean(len(xs), m, lo, hi, k, method)
    import numpy as np  # here, not at the top: the command line starts without numpy

    rng = np.random.default_rng(seed)
    sums, counts = np.asarray(sum_of), np.asarray(count_of, dtype=np.float64)
    draw = rng.integers(0, k, size=(resamples, k))
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = (float(q) for q in np.quantile(means, [0.025, 0.975]))
    if high - low < 1e-12:
        # Every item alike (all refused, all 0.0): resampling has no spread to show, yet four
        # items are no evidence. Use the Wilson interval of a 0/1 variable with this mean over
        # these items: the widest the data allow, never a point.
        w = rate(round((m - lo) / (hi - lo) * k), k)
        low, high = lo + w.low * (hi - lo), lo + w.high * (hi - lo)
    return Mean(len(xs), m, max(lo, low), min(hi, high), k, method)


def differential_transfer(
    framed: Sequence[float] | Mapping[str, float],
    direct: Sequence[float] | Mapping[str, float],
    *,
    seed: int = BOOTSTRAP_SEED,
) -> Mean:
    """Transfer under a framing minus transfer direct, with a 95 % interval in [-1, 1].

    A *secondary* figure (the seed's metric is optimised transfer beside benign refusal; see
    `clients.probe.summary`). Pairing: two Mappings (item id -> score) pair the ids present in
    both; two equal-length sequences pair by position. The interval is the cluster bootstrap of
    the per-item differences. Without a pairing (no shared id, or lengths differ) the two
    samples are resampled independently and the interval is that of the difference of means.
    """
    if isinstance(framed, Mapping) and isinstance(direct, Mapping):
        common = sorted(set(framed) & set(direct))
        if common:
            return mean_ci([framed[i] - direct[i] for i in common], bounds=(-1.0, 1.0), seed=seed)
        return _independent(list(framed.values()), list(direct.values()), seed)
    f = list(framed.values()) if isinstance(framed, Mapping) else list(framed)
    d = list(direct.values()) if isinstance(direct, Mapping) else list(direct)
    paired = not isinstance(framed, Mapping) and not isinstance(direct, Mapping)
    if paired and len(f) == len(d) and f:
        diffs = [a - b for a, b in zip(f, d, strict=True)]
        return mean_ci(diffs, bounds=(-1.0, 1.0), seed=seed)
    return _independent(f, d, seed)


def _independent(a: Sequence[float], b: Sequence[float], seed: int) -> Mean:
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        raise MetricsError("differential transfer needs values on both sides")
    diff = math.fsum(xa) / len(xa) - math.fsum(xb) / len(xb)
    n, method = len(xa) + len(xb), _method(BOOTSTRAP_RESAMPLES, seed)
    if len(xa) < 2 or len(xb) < 2:
        return Mean(n, diff, -1.0, 1.0, n, method)
    import numpy as np  # here, not at the top: the command line starts without numpy

    rng = np.random.default_rng(seed)
    va, vb = np.asarray(xa), np.asarray(xb)
    ma = va[rng.integers(0, len(xa), size=(BOOTSTRAP_RESAMPLES, len(xa)))].mean(axis=1)
    mb = vb[rng.integers(0, len(xb), size=(BOOTSTRAP_RESAMPLES, len(xb)))].mean(axis=1)
    low, high = np.quantile(ma - mb, [0.025, 0.975])
    return Mean(n, diff, max(-1.0, float(low)), min(1.0, float(high)), n, method)


# -- the reportable rule ------------------------------------------------------------------------


def half_width(figure: Rate | Mean) -> float:
    """Half the width of `figure`'s 95 % interval."""
    return (figure.high - figure.low) / 2


def reportable(figure: Rate | Mean | None, max_half_width: float = MAX_HALF_WIDTH) -> bool:
    """Whether `figure` may be printed as a number: its 95 % interval's half-width is at most
    `max_half_width` (0.10). None (nothing measured) is not reportable."""
    return figure is not None and figure.n > 0 and half_width(figure) <= max_half_width + 1e-12


def cell_text(figure: Rate | Mean | None, digits: int = 2) -> str:
    """How a table cell shows `figure`: ``0.12 [0.07, 0.20] n=100`` when `reportable`, else
    ``insufficient data (n=4)`` (``n=0`` when nothing was measured)."""
    if figure is None or not reportable(figure):
        return f"insufficient data (n={0 if figure is None else figure.n})"
    value = figure.rate if isinstance(figure, Rate) else figure.mean
    return f"{value:.{digits}f} [{figure.low:.{digits}f}, {figure.high:.{digits}f}] n={figure.n}"


# -- change between versions ----------------------------------------------------------------------


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for `b` and `c` discordant pairs.

    `b` = refused only before, `c` = refused only after. Under no change each discordant pair is
    a fair coin, so p = min(1, 2 · P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2), computed
    with integers (exact up to the final division). b = c = 0 gives 1.0.
    """
    if b < 0 or c < 0:
        raise MetricsError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << n))


def min_attainable_p(pairs: int) -> float:
    """The smallest two-sided exact McNemar p-value `pairs` paired items can give: every pair
    discordant in the same direction, 2 · 2^-pairs (1.0 for no pairs). Four pairs can never go
    below 0.125, so a cell with n < 6 cannot show a change at the 0.05 level, whatever happened.
    """
    if pairs < 0:
        raise MetricsError(f"pairs must be >= 0, got {pairs}")
    return mcnemar(0, pairs)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    Sort ascending; the i-th smallest (0-based) becomes max over j <= i of (m - j) · p_(j),
    capped at 1. Controls the family-wise error rate at any level across the m tests (here: the
    cells of one continuity diff) without assuming independence.
    """
    ps = [float(p) for p in pvalues]
    if any(not 0.0 <= p <= 1.0 for p in ps):
        raise MetricsError("p-values must lie in [0, 1]")
    m = len(ps)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def milli(x: float) -> int:
    """`x` in integer milli-units, rounded half away from zero (0.0005 -> 1, -0.0025 -> -3).

    Rounds the shortest decimal representation of `x` (its ``repr``), so a value that prints
    as 0.0125 rounds as 0.0125 rather than as its binary neighbour; NaN and infinities raise
    MetricsError.
    """
    if isinstance(x, float) and not math.isfinite(x):
        raise MetricsError(f"cannot express {x} in milli-units")
    d = Decimal(repr(x)) * 1000
    return int(d.quantize(Decimal(1), rounding=ROUND_HALF_UP))
