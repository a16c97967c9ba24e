"""Behaviour metrics: rates and means with 95 % intervals, differential transfer, McNemar, milli.

Everything here is pure Python and exact where it can be: Wilson intervals in closed form,
Student-t quantiles from a table (checked against numeric integration in the tests), McNemar's
exact test with integer binomial sums. Signed payloads carry no floats: `milli` turns a value into
integer milli-units, rounding half away from zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from attest.errors import AttestError

__all__ = [
    "Z95",
    "Mean",
    "MetricsError",
    "Rate",
    "differential_transfer",
    "mcnemar",
    "mean_ci",
    "milli",
    "rate",
    "t95",
]

Z95: Final = 1.959963984540054
"""The 0.975 quantile of the standard normal distribution (two-sided 95 %)."""

# Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..30, to 9 decimals.
_T95: Final = (
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
)


class MetricsError(AttestError):
    """A metric asked of impossible input: negative counts, k > n, no values, NaN."""


def t95(df: float) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1).

    Integer df <= 30: the table. Otherwise the Cornish-Fisher expansion in 1/df to the fourth
    term (error < 1e-6 for df > 30; the tests integrate the density to check). Non-integer df
    (Welch) at or below 30 is interpolated linearly in 1/df between the table entries.
    """
    if not df >= 1:
        raise MetricsError(f"t quantile needs df >= 1, got {df}")
    if df <= 30:
        lo = math.floor(df)
        if lo == df:
            return _T95[lo - 1]
        a, b = _T95[lo - 1], _T95[lo]
        w = (1 / lo - 1 / df) / (1 / lo - 1 / (lo + 1))
        return a + w * (b - a)
    z = Z95
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return float(z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4)


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
    """The mean of `n` values and its 95 % interval [`low`, `high`]."""

    n: int
    mean: float
    low: float
    high: float


def _finite(values: Sequence[float]) -> list[float]:
    xs = [float(v) for v in values]
    if any(not math.isfinite(x) for x in xs):
        raise MetricsError("values must be finite numbers")
    return xs


def mean_ci(values: Sequence[float]) -> Mean:
    """The mean with a Student-t 95 % interval: mean ± t(0.975, n-1) · s / √n.

    `s` is the sample standard deviation (n - 1 denominator). Student's t, not the normal,
    because a category holds ~8-10 items and z would understate the width by ~15 % there.
    n == 1 gives a zero-width interval at the value (there is no spread to estimate from);
    no values raise MetricsError. The interval is not clipped to the values' range.
    """
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        raise MetricsError("mean of no values")
    m = math.fsum(xs) / n
    if n == 1:
        return Mean(1, m, m, m)
    var = math.fsum((x - m) ** 2 for x in xs) / (n - 1)
    half = t95(n - 1) * math.sqrt(var / n)
    return Mean(n, m, m - half, m + half)


def differential_transfer(
    framed: Sequence[float] | Mapping[str, float],
    direct: Sequence[float] | Mapping[str, float],
) -> Mean:
    """Transfer under a framing minus transfer direct, with a 95 % interval.

    Pairing: with two Mappings (item id -> score) the items present in both are paired and the
    result is the t interval of the per-item differences (items in only one are dropped). Two
    sequences of equal length are paired by position (the caller lists the same items in the
    same order). Otherwise, or when no id is shared, the samples are treated as independent:
    difference of means with Welch's standard error and Welch-Satterthwaite degrees of freedom.
    Pairing removes the between-item variance (some prompts are simply easier), so it is used
    whenever the items line up.
    """
    if isinstance(framed, Mapping) and isinstance(direct, Mapping):
        common = sorted(set(framed) & set(direct))
        if common:
            return mean_ci([framed[i] - direct[i] for i in common])
        return _welch(list(framed.values()), list(direct.values()))
    f = list(framed.values()) if isinstance(framed, Mapping) else list(framed)
    d = list(direct.values()) if isinstance(direct, Mapping) else list(direct)
    paired = not isinstance(framed, Mapping) and not isinstance(direct, Mapping)
    if paired and len(f) == len(d):
        return mean_ci([a - b for a, b in zip(f, d, strict=True)])
    return _welch(f, d)


def _welch(a: Sequence[float], b: Sequence[float]) -> Mean:
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        raise MetricsError("differential transfer needs values on both sides")
    ma, mb = math.fsum(xa) / len(xa), math.fsum(xb) / len(xb)
    diff = ma - mb
    if len(xa) < 2 or len(xb) < 2:
        return Mean(len(xa) + len(xb), diff, diff, diff)
    va = math.fsum((x - ma) ** 2 for x in xa) / (len(xa) - 1) / len(xa)
    vb = math.fsum((x - mb) ** 2 for x in xb) / (len(xb) - 1) / len(xb)
    se2 = va + vb
    if se2 == 0:
        return Mean(len(xa) + len(xb), diff, diff, diff)
    df = se2**2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = t95(max(1.0, df)) * math.sqrt(se2)
    return Mean(len(xa) + len(xb), diff, diff - half, diff + half)


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
