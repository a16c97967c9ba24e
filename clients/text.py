"""Plain-text output shared by the commands."""

from __future__ import annotations

from collections.abc import Sequence


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """`header` and `rows` as lines of left-aligned columns two spaces apart."""
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    return [
        "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]
