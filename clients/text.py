"""Plain-text output shared by the commands, and the one way a figure is shown in a table.

Every figure of the CLI's tables and of the web page's (which shows the strings
`clients.history.Row.display` puts in the history's JSON, so the two cannot drift apart) goes
through `shown`: `clients.probe.metrics.cell_text` writes it — ``value [low, high] n=N`` with the
95 % interval when the reportable rule allows a number (`metrics.reportable`), else
``insufficient data (n=N)`` — after one presentation check of our own:

* an interval of **zero width** is not a 95 % interval (a resampling or t interval collapses to
  a point when every answer agrees, e.g. 0 of 4). A figure in [0, 1] (a rate, a mean transfer)
  is then given the Wilson score interval of ``value * n`` in `n` — exact for 0/1 scores,
  conservative for scores in between — and a difference in [-1, 1] Newcombe's hybrid score
  interval of its two sides; the reportable rule then decides as for any figure;
* intervals are clipped to the figure's range ([0, 1], or [-1, 1] for a difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from clients.probe.metrics import Mean, Rate, cell_text

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


def newcombe(p1: float, n1: int, p2: float, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score 95 % interval (Newcombe 1998, method 10) of ``p1 - p2``, from
    the two Wilson intervals; treating the sides as independent makes it conservative for
    paired items."""
    l1, u1 = wilson(p1 * n1, n1)
    l2, u2 = wilson(p2 * n2, n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def shown(figure: Rate | Mean | None, *, sides: tuple[Mean, Mean] | None = None) -> str:
    """The cell of `figure` (see the module docstring). `sides` are (framed, direct) when
    `figure` is their difference."""
    if figure is None:
        return "-"
    lo_bound = -1.0 if sides is not None else 0.0
    low, high = max(lo_bound, figure.low), min(1.0, figure.high)
    if figure.n > 0 and high - low < 1e-9:  # zero up to the float dust of a resampling
        if sides is not None:
            (framed, direct) = sides
            low, high = newcombe(framed.mean, framed.n, direct.mean, direct.n)
        else:
            value = figure.rate if isinstance(figure, Rate) else figure.mean
            low, high = wilson(value * figure.n, figure.n)
    return cell_text(replace(figure, low=low, high=high))
