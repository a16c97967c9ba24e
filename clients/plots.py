"""Charts of a history (`bledger history --plot`): matplotlib, written to a file, no screen.

Three panels: benign refusal rate per cell (category/tier) and version, with 95 % intervals;
capability transfer direct and framed (mean over the adversarial framings) per cell and
version; and the emotion profile per version (mean over its cells).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from clients.history import History, Row


def _cells(rows: list[Row]) -> list[tuple[str, str]]:
    return sorted({(r.summary.category, r.summary.tier) for r in rows})


def _grouped_bars(
    ax: Any,
    cells: list[tuple[str, str]],
    series: list[tuple[str, dict[tuple[str, str], tuple[float, float, float]]]],
) -> None:
    """Bars per cell, one colour per series; `series` maps a cell to (value, low, high).
    Cells no series has a value for are left out."""
    cells = [c for c in cells if any(c in values for _, values in series)]
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series):
        xs, ys, err_lo, err_hi = [], [], [], []
        for i, cell in enumerate(cells):
            if cell in values:
                v, lo, hi = values[cell]
                xs.append(i + k * width - 0.4 + width / 2)
                ys.append(v)
                err_lo.append(max(0.0, v - lo))
                err_hi.append(max(0.0, hi - v))
        ax.bar(xs, ys, width, label=label, yerr=[err_lo, err_hi], capsize=2)
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([f"{c}\n{t}" for c, t in cells], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)


def plot_history(history: History, path: Path) -> None:
    """Write the charts of `history` to `path` (format from its suffix: .png, .svg, .pdf)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the file is the output
    import matplotlib.pyplot as plt

    rows = list(history.rows)
    cells = _cells(rows)
    versions = [v.version for v in history.versions]
    fig, (ax_r, ax_t, ax_e) = plt.subplots(3, 1, figsize=(11, 13))
    fig.suptitle(f"{history.model}: behaviour per version ({history.origin}, size {history.size})")

    refusal = []
    for v in versions:
        values = {}
        for r in rows:
            b = r.summary.benign_refusal
            if r.summary.version == v and b is not None:
                values[(r.summary.category, r.summary.tier)] = (b.rate, b.low, b.high)
        refusal.append((v, values))
    _grouped_bars(ax_r, cells, refusal)
    ax_r.set_title("benign refusal rate (friction on cooperative users), 95% CI", fontsize=10)

    transfer = []
    for v in versions:
        direct, framed = {}, {}
        for r in rows:
            if r.summary.version != v:
                continue
            cell = (r.summary.category, r.summary.tier)
            d = r.summary.direct_transfer
            if d is not None:
                direct[cell] = (d.mean, d.low, d.high)
            f = list(r.summary.framed_transfer.values())
            if f:
                m = sum(x.mean for x in f) / len(f)
                framed[cell] = (m, min(x.low for x in f), max(x.high for x in f))
        transfer += [(f"{v} direct", direct), (f"{v} framed", framed)]
    _grouped_bars(ax_t, cells, transfer)
    ax_t.set_title(
        "capability transfer on harmful prompts: direct (95% CI) vs framed "
        "(mean over framings; whiskers span the framings' 95% CIs)",
        fontsize=10,
    )

    profiles: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for name, value in r.summary.emotions.items():
            profiles[r.summary.version][name].append(value)
    emotions = sorted({e for p in profiles.values() for e in p})
    width = 0.8 / max(1, len(versions))
    for k, v in enumerate(versions):
        means = [
            sum(profiles[v][e]) / len(profiles[v][e]) if profiles[v][e] else 0.0 for e in emotions
        ]
        ax_e.bar(
            [i + k * width - 0.4 + width / 2 for i in range(len(emotions))], means, width, label=v
        )
    ax_e.set_xticks(range(len(emotions)))
    ax_e.set_xticklabels(emotions, rotation=45, ha="right", fontsize=7)
    ax_e.axhline(0, color="black", linewidth=0.5)
    ax_e.set_title("emotion profile: mean projection over answer tokens", fontsize=10)
    if versions:
        ax_e.legend(fontsize=7)

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
