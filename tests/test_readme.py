"""The README's examples run as written (only the venv path and the port are adapted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import PROJECT_ROOT, free_port


def _block_after(heading: str) -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    lines = []
    for line in section.splitlines()[1:]:
        if line.startswith("    "):
            lines.append(line[4:])
        elif lines and line.strip():
            break
    return "\n".join(lines) + "\n"


def test_try_it_by_hand(tmp_path: Path) -> None:
    script = _block_after("## Try it by hand")
    assert "bledger serve" in script and "bledger submit" in script
    port = free_port()
    bindir = str(Path(sys.executable).parent)
    script = script.replace(".venv/bin/", f"{bindir}/").replace("8080", str(port))
    script = re.sub(r"^(.*bledger serve .*)&", rf"\1--port {port} &", script, flags=re.M)
    wrapped = f"set -e\ntrap 'kill %1 2>/dev/null || true' EXIT\n{script}"
    res = subprocess.run(
        ["bash", "-c", wrapped], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "c2sp.org/tlog-proof@v1" in res.stdout
    assert re.search(r"ok: .* size 3 root [0-9a-f]{64} recomputed from tiles", res.stdout), (
        res.stdout
    )
