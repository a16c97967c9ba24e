"""Start-up cost of the command line: what `bledger` pays before it does anything.

Prints one table: wall time of `bledger --help` (median of --runs), the import time that
`python -X importtime` reports for `clients.cli`, and whether torch was imported, for this
checkout, for the bare interpreter (`python -c pass`, the floor no command can go below) and,
with `--against DIR`, for another checkout of the project (e.g. an earlier commit made with
`git worktree add DIR COMMIT`), measured interleaved so all rows see the same machine load.

    .venv/bin/python bench/startup_bench.py --runs 7 [--against /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELP = "import clients.cli, sys; sys.argv = ['bledger', '--help']; clients.cli.main()"
PROBE = "import sys, clients.cli; print(int('torch' in sys.modules))"


def _wall(code: str, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t


def _import_us(cwd: Path) -> int:
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import clients.cli"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    last = [ln for ln in res.stderr.splitlines() if ln.rstrip().endswith("| clients.cli")][-1]
    return int(last.split("|")[1])


def _torch(cwd: Path) -> bool:
    res = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True
    )
    return res.stdout.strip() == "1"


def main() -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--against", type=Path, help="another checkout of the project")
    args = ap.parse_args()
    rows: dict[str, tuple[Path, str]] = {
        "python -c pass": (ROOT, "pass"),
        "bledger --help (this checkout)": (ROOT, HELP),
    }
    if args.against:
        rows[f"bledger --help ({args.against})"] = (args.against, HELP)
    walls: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.runs):  # interleaved: every row sees the same load
        for name, (cwd, code) in rows.items():
            walls[name].append(_wall(code, cwd))
    print(f"load average {os.getloadavg()[0]:.2f} over 1 min, {args.runs} runs per row")
    print(f"{'what':<48} {'wall median':>12} {'min':>8} {'import (ms)':>12} {'torch':>6}")
    for name, (cwd, code) in rows.items():
        imp = "" if code == "pass" else f"{_import_us(cwd) / 1000:.0f}"
        torch = "" if code == "pass" else ("yes" if _torch(cwd) else "no")
        w = walls[name]
        print(f"{name:<48} {statistics.median(w):>11.3f}s {min(w):>7.3f}s {imp:>12} {torch:>6}")


if __name__ == "__main__":
    main()
