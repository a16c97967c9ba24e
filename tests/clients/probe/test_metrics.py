"""Metrics: Wilson, cluster bootstrap, the reportable rule, exact McNemar with Holm, milli."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.probe.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MAX_HALF_WIDTH,
    Z95,
    MetricsError,
    cell_text,
    differential_transfer,
    half_width,
    holm,
    mcnemar,
    mean_ci,
    milli,
    min_attainable_p,
    rate,
    reportable,
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


# -- cluster-bootstrap means ----------------------------------------------------------------------


def test_mean_ci_stays_inside_the_range_where_a_t_interval_did_not() -> None:
    # The t interval of [0, 0, 1, 0] was [-0.55, 1.05].
    m = mean_ci([0.0, 0.0, 1.0, 0.0])
    assert (m.n, m.mean, m.clusters) == (4, 0.25, 4)
    assert 0.0 <= m.low <= m.mean <= m.high <= 1.0
    assert m.method == f"cluster-bootstrap-percentile/{BOOTSTRAP_RESAMPLES}/{BOOTSTRAP_SEED}"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_mean_ci_never_leaves_zero_one(values: list[float]) -> None:
    m = mean_ci(values)
    assert 0.0 <= m.low <= m.high <= 1.0
    assert m.mean == pytest.approx(math.fsum(values) / len(values))


def test_mean_ci_is_deterministic_and_seeded() -> None:
    values = [i % 7 / 6 for i in range(50)]
    assert mean_ci(values) == mean_ci(values)
    assert mean_ci(values, seed=1) != mean_ci(values, seed=2)


def test_mean_ci_resamples_an_items_framings_together() -> None:
    # 20 items, five framings each, the framings of an item all alike: 20 draws of evidence,
    # not 100. Treated as independent the interval would be about sqrt(5) times too narrow.
    per_item = [1.0 if i % 4 == 0 else 0.0 for i in range(20)]
    values = [v for v in per_item for _ in range(5)]
    items = [f"item-{i}" for i in range(20) for _ in range(5)]
    clustered = mean_ci(values, items)
    naive = mean_ci(values)
    assert clustered.clusters == 20 and naive.clusters == 100
    assert clustered.high - clustered.low > 1.8 * (naive.high - naive.low)
    assert clustered == mean_ci(per_item, [f"item-{i}" for i in range(20)]).__class__(
        100, 0.25, clustered.low, clustered.high, 20, clustered.method
    )
    one = mean_ci(per_item[:20])
    assert clustered.low == pytest.approx(one.low, abs=0.02)


def test_mean_ci_covers_a_known_rate() -> None:
    # 30 of 100 items transfer: the interval must hold 0.3 and be about Wilson's width.
    m = mean_ci([1.0] * 30 + [0.0] * 70)
    w = rate(30, 100)
    assert m.low < 0.3 < m.high
    assert m.high - m.low == pytest.approx(w.high - w.low, abs=0.03)


def test_mean_ci_of_identical_items_is_never_a_point() -> None:
    # Four items all at 0.0: as uncertain as 0 refusals of 4 (Wilson [0, 0.49]), not [0, 0].
    m = mean_ci([0.0] * 4)
    assert (m.low, m.high) == (0.0, pytest.approx(rate(0, 4).high))
    assert not reportable(m) and cell_text(m) == "insufficient data (n=4)"
    assert mean_ci([1.0] * 400).low == pytest.approx(rate(400, 400).low)
    d = differential_transfer([0.5] * 4, [0.5] * 4)  # every difference 0, bounds [-1, 1]
    assert d.low < 0 < d.high and not reportable(d)


def test_mean_ci_edges() -> None:
    assert mean_ci([0.25]) == mean_ci([0.25]).__class__(
        1, 0.25, 0.0, 1.0, 1, mean_ci([0.25]).method
    )
    assert (mean_ci([0.2, 0.4], ["a", "a"]).low, mean_ci([0.2, 0.4], ["a", "a"]).high) == (0, 1)
    for bad in ([], [0.1, math.nan], [1.5]):
        with pytest.raises(MetricsError):
            mean_ci(bad)
    with pytest.raises(MetricsError):
        mean_ci([0.1, 0.2], ["a"])


# -- differential transfer (secondary: framed - direct) ------------------------------------------


def test_differential_transfer_paired_by_position() -> None:
    framed, direct = [0.5, 1.0, 0.0, 0.75], [0.0, 0.5, 0.0, 0.25]
    d = differential_transfer(framed, direct)
    assert d == mean_ci([0.5, 0.5, 0.0, 0.5], bounds=(-1.0, 1.0))
    assert d.mean == pytest.approx(0.375)
    assert -1.0 <= d.low <= d.high <= 1.0


def test_differential_transfer_paired_by_item_id() -> None:
    framed = {"a": 1.0, "b": 0.5, "c": 0.25}
    direct = {"b": 0.0, "a": 0.5, "z": 1.0}  # "c" and "z" have no partner: dropped
    assert differential_transfer(framed, direct) == mean_ci([0.5, 0.5], bounds=(-1.0, 1.0))


def test_differential_transfer_unpaired_resamples_each_side() -> None:
    framed, direct = [0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 0.5, 1.0]
    d = differential_transfer(framed, direct)
    assert d.n == 8 and d.mean == pytest.approx(0.5 - 0.4)
    assert -1.0 <= d.low < d.mean < d.high <= 1.0
    # No shared item id: independent samples as well.
    assert (
        differential_transfer(
            {"a": 0.0, "b": 0.5, "c": 1.0}, {"x": 0.0, "y": 0.0, "z": 0.5, "w": 0.5, "v": 1.0}
        )
        == d
    )
    with pytest.raises(MetricsError):
        differential_transfer([], [0.5])


# -- the reportable rule --------------------------------------------------------------------------


def test_reportable_rule() -> None:
    assert reportable(rate(50, 100))  # half-width 0.096
    assert not reportable(rate(2, 4))  # Wilson [0.15, 0.85]
    assert not reportable(rate(0, 4))  # [0, 0.49]: a rate of 0 is no evidence at n = 4
    assert reportable(rate(0, 40))  # [0, 0.088]
    assert not reportable(None) and not reportable(rate(0, 0))
    assert half_width(rate(50, 100)) == pytest.approx(0.0962, abs=1e-4)
    assert MAX_HALF_WIDTH == 0.10
    assert cell_text(rate(2, 4)) == "insufficient data (n=4)"
    assert cell_text(None) == "insufficient data (n=0)"
    assert cell_text(rate(30, 100)) == "0.30 [0.22, 0.40] n=100"
    m = mean_ci([1.0] * 30 + [0.0] * 70)
    assert cell_text(m).startswith("0.30 [") and cell_text(m).endswith("] n=100")
    assert cell_text(mean_ci([0.0, 1.0, 0.0])) == "insufficient data (n=3)"


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


def test_min_attainable_p() -> None:
    assert min_attainable_p(0) == 1.0
    assert min_attainable_p(4) == 0.125  # core-1's four benign pairs can never reach 0.05
    assert min_attainable_p(5) == 0.0625
    assert min_attainable_p(6) == 0.03125  # the first n that can
    with pytest.raises(MetricsError):
        min_attainable_p(-1)


def test_holm_step_down() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, max(0.04, 0.06).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []
    assert holm([0.04]) == [0.04]
    with pytest.raises(MetricsError):
        holm([1.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_holm_is_monotone_and_never_below_raw(ps: list[float]) -> None:
    adj = holm(ps)
    assert all(a >= p and a <= 1.0 for a, p in zip(adj, ps, strict=True))
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    assert all(adj[order[i]] <= adj[order[i + 1]] for i in range(len(ps) - 1))


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
