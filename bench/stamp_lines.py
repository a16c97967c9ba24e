"""Time-stamp a command's output, line by line: `CMD 2> >(python bench/stamp_lines.py OUT)`.

Reads stdin as it comes, splits it at newlines and at the carriage returns progress bars redraw
with, and writes each non-empty line to OUT prefixed by the seconds since the start; the last
line of OUT is JSON with the number of lines and the longest gap between two of them (what
docs/benchmarks.md reports for a cold `bledger demo`).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(out_path: str) -> None:
    """Stamp stdin into `out_path` until end of input."""
    t0 = last = time.monotonic()
    gaps: list[float] = []
    buf = b""
    with open(out_path, "w") as out:
        while chunk := os.read(0, 4096):
            now = time.monotonic()
            *lines, buf = (buf + chunk).replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                if line.strip():
                    gaps.append(now - last)
                    last = now
                    out.write(f"{now - t0:8.1f} {line.decode(errors='replace')}\n")
                    out.flush()
        out.write(json.dumps({"lines": len(gaps), "max_gap_s": max(gaps, default=0.0)}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
