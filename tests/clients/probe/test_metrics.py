"""Metrics: Wilson intervals, t intervals, differential transfer, exact McNemar, milli rounding."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from clients.probe.metrics import (
    Z95,
    MetricsError,
    differential_transfer,
    mcnemar,
    mean_ci,
    milli,
    rate,
    t95,
)

# -- Wilson ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # k = 0: the upper bound is z^2 / (n + z^2) in closed form.
        (0, 10, 0.0, Z95**2 / (10 + Z95**2)),
        (5, 10, 0.2365930905, 0.7634069095),
        (10, 10, 1 - Z95**2 / (10 + Z95**2), 1.0),
    ],
)
def test_wilson_known_values(k: int, n: int, low: float, high: float) -> None:
    r = rate(k, n)
    assert (r.k, r.n, r.rate) == (k, n, k / n)
    assert r.low == pytest.approx(low, abs=1e-7)
    assert r.high == pytest.approx(high, abs=1e-7)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score).
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_against_newcombe(k: int, n: int, low: float, high: float) -> None:
    r = rate(k, n)
    assert (round(r.low, 4), round(r.high, 4)) == (low, high)


def test_wilson_edges() -> None:
    assert rate(0, 0) == rate(0, 0).__class__(0, 0, 0.0, 0.0, 1.0)
    assert rate(0, 3).low == 0.0 and rate(3, 3).high == 1.0
    for bad in ((-1, 3), (4, 3), (0, -1)):
        with pytest.raises(MetricsError):
            rate(*bad)


# -- t quantiles and means ------------------------------------------------------------------------


def _t_cdf(x: float, df: float, steps: int = 4000) -> float:
    """P(T <= x) for x > 0 by Simpson's rule on the density: an independent check of t95."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def f(t: float) -> float:
        return float(c * (1 + t * t / df) ** (-(df + 1) / 2))

    h = x / steps
    s = f(0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return 0.5 + s * h / 3


@pytest.mark.parametrize("df", [*range(1, 31), 31, 45, 100, 1000])
def test_t95_is_the_0975_quantile(df: int) -> None:
    assert _t_cdf(t95(df), df) == pytest.approx(0.975, abs=2e-7)


def test_t95_between_table_entries_and_errors() -> None:
    assert t95(7) > t95(7.5) > t95(8)
    assert t95(1e9) == pytest.approx(Z95, abs=1e-8)
    with pytest.raises(MetricsError):
        t95(0.5)


def test_mean_ci() -> None:
    m = mean_ci([1.0, 2.0, 3.0])
    assert (m.n, m.mean) == (3, 2.0)
    assert m.high - m.mean == pytest.approx(4.302652730 / math.sqrt(3))
    assert m.mean - m.low == pytest.approx(m.high - m.mean)
    assert mean_ci([0.25]) == mean_ci([0.25]).__class__(1, 0.25, 0.25, 0.25)
    with pytest.raises(MetricsError):
        mean_ci([])
    with pytest.raises(MetricsError):
        mean_ci([0.1, math.nan])


# -- differential transfer -----------------------------------------------------------------------


def test_differential_transfer_paired_by_position() -> None:
    framed, direct = [0.5, 1.0, 0.0, 0.75], [0.0, 0.5, 0.0, 0.25]
    d = differential_transfer(framed, direct)
    assert d == mean_ci([0.5, 0.5, 0.0, 0.5])
    assert d.mean == pytest.approx(0.375)


def test_differential_transfer_paired_by_item_id() -> None:
    framed = {"a": 1.0, "b": 0.5, "c": 0.25}
    direct = {"b": 0.0, "a": 0.5, "z": 1.0}  # "c" and "z" have no partner: dropped
    assert differential_transfer(framed, direct) == mean_ci([0.5, 0.5])


def test_differential_transfer_unpaired_is_welch() -> None:
    framed, direct = [0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 0.5, 1.0]
    d = differential_transfer(framed, direct)
    va, vb = 0.25 / 3, 0.175 / 5  # sample variances over n
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 4)
    assert d.n == 8 and d.mean == pytest.approx(0.5 - 0.4)
    assert d.high - d.mean == pytest.approx(t95(df) * math.sqrt(va + vb))
    # No shared item id: independent samples as well.
    assert (
        differential_transfer(
            {"a": 0.0, "b": 0.5, "c": 1.0}, {"x": 0.0, "y": 0.0, "z": 0.5, "w": 0.5, "v": 1.0}
        )
        == d
    )
    with pytest.raises(MetricsError):
        differential_transfer([], [0.5])


# -- McNemar --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 0, Fraction(1)),
        (0, 5, Fraction(2, 2**5)),  # 2 * C(5,0) / 2^5
        (1, 5, Fraction(2 * (1 + 6), 2**6)),  # 2 * (C(6,0) + C(6,1)) / 2^6 = 0.21875
        (8, 2, Fraction(2 * (1 + 10 + 45), 2**10)),  # 0.109375
        (3, 3, Fraction(1)),  # 2 * P(X <= 3) > 1 is capped at 1
        (0, 20, Fraction(2, 2**20)),
        (7, 12, Fraction(2 * sum(math.comb(19, i) for i in range(8)), 2**19)),
    ],
)
def test_mcnemar_exact(b: int, c: int, p: Fraction) -> None:
    assert mcnemar(b, c) == pytest.approx(float(p), rel=1e-12)
    assert mcnemar(c, b) == mcnemar(b, c)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(MetricsError):
        mcnemar(-1, 2)


# -- milli ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "want"),
    [
        (0.0, 0),
        (1.0, 1000),
        (0.1234, 123),
        (0.0005, 1),  # half away from zero, not to even
        (0.0015, 2),
        (0.0025, 3),
        (-0.0005, -1),
        (-0.0025, -3),
        (0.0125, 13),  # the decimal that prints, not its binary neighbour
        (0.9994999, 999),
        (-1.2345, -1235),
        (2, 2000),
    ],
)
def test_milli_rounds_half_away_from_zero(x: float, want: int) -> None:
    assert milli(x) == want
    assert isinstance(milli(x), int)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_milli_rejects_non_finite(bad: float) -> None:
    with pytest.raises(MetricsError):
        milli(bad)
