"""Plain-text output shared by the commands, and the one format of a figure in every table.

A figure is shown as ``value [low, high] n=N`` — two decimals, the 95 % interval, the count —
in the CLI's tables and on the web page alike (the web page shows the strings `Row.display`
puts in the history's JSON, so the two cannot drift apart):

* a proportion (a refusal rate, a mean capability transfer: values in [0, 1]) gets the Wilson
  score interval of ``value * n`` successes in `n` trials. For 0/1 scores that is the Wilson
  interval of the rate; for scores in between it is conservative, since no mean of values in
  [0, 1] varies more than a proportion does. It never leaves [0, 1] and never has zero width
  (a t interval on 0/1 data collapses to a point when every answer agrees, e.g. 0/4);
* a difference of two such figures (differential transfer: framed - direct, in [-1, 1]) gets
  Newcombe's hybrid score interval from the two Wilson intervals (`difference`);
* a figure from fewer than `MIN_N` items is ``insufficient data (n=N)``: no number at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

MIN_N: Final = 3
"""Below this many items a cell shows no number (with n = 2 a Wilson 95 % interval spans most
of [0, 1] whatever was observed)."""

Z95: Final = 1.959963984540054
"""The 0.975 quantile of the standard normal."""


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """`header` and `rows` as lines of left-aligned columns two spaces apart."""
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    return [
        "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of `successes` (0 <= successes <= n, may be fractional)
    in `n` >= 1 trials."""
    p = min(1.0, max(0.0, successes / n))
    z2 = Z95 * Z95
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def insufficient(n: int) -> str:
    """The cell of a figure from too few items."""
    return f"insufficient data (n={n})"


def proportion(value: float, n: int) -> str:
    """A figure in [0, 1] from `n` items: ``value [low, high] n=N`` with the Wilson interval."""
    if n < MIN_N:
        return insufficient(n)
    low, high = wilson(value * n, n)
    return f"{min(1.0, max(0.0, value)):.2f} [{low:.2f}, {high:.2f}] n={n}"


def difference(p1: float, n1: int, p2: float, n2: int) -> str:
    """The difference ``p1 - p2`` of two figures in [0, 1] (from `n1` and `n2` items) with
    Newcombe's hybrid score interval (Newcombe 1998, method 10), built from the two Wilson
    intervals: it stays inside [-1, 1] and does not collapse to a point when every pair of
    answers differs by the same amount. Treating the two sides as independent makes it
    conservative for paired items (the same prompts, framed and direct). ``n`` is the smaller
    count."""
    n = min(n1, n2)
    if n < MIN_N:
        return insufficient(n)
    l1, u1 = wilson(p1 * n1, n1)
    l2, u2 = wilson(p2 * n2, n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return f"{d:+.2f} [{max(-1.0, low):+.2f}, {min(1.0, high):+.2f}] n={n}"
