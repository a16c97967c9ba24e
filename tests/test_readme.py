"""The README's examples run as written (only the venv path and the port are adapted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_run_a_ledger(tmp_path: Path) -> None:
    """`bledger serve` as in "Run a ledger": three logs, the API and the web page answer."""
    import time

    import httpx

    command = _block_after("## Run a ledger").strip()
    assert command == ".venv/bin/bledger serve --data ./ledger-data", command
    port = free_port()
    bledger = str(Path(sys.executable).parent / "bledger")
    args = [bledger, *command.split()[1:], "--port", str(port)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                logs = httpx.get(f"http://127.0.0.1:{port}/logs", timeout=5).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        page = httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert sorted(lg["partition"] for lg in logs) == ["anonymous", "attested", "evidence"]
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert (tmp_path / "ledger-data" / "config.toml").exists()
    for lg in logs:
        assert f"log {lg['name']} ({lg['partition']}) origin {lg['origin']}" in out


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


def _first_command(heading: str) -> str:
    """The indented command under the bold paragraph `heading` of the README's first screen."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return next(line[4:] for line in section.splitlines() if line.startswith("    "))


def test_the_main_job_runs_as_the_readme_says(tmp_path: Path) -> None:
    """`bledger demo` as in the README's first command, on the bundled SmolLM2 on the CPU.

    The install part of the command is what `.ci/run` runs before the tests; this runs the part
    after it with this environment's `bledger`, on a free port, and stops the demo with Ctrl-C
    (SIGINT) once it serves the web page.
    """
    import signal
    import time

    import httpx

    command = _first_command("**Run the whole system**")
    install, _, run = command.rpartition(" && ")
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -e .")
    assert run == ".venv/bin/bledger demo", run
    port = free_port()
    args = [str(Path(sys.executable).parent / "bledger"), "demo", "--port", str(port)]
    # stderr (progress bars) to a file: an unread pipe would fill and block the demo.
    err_path = tmp_path / "demo.stderr"
    with err_path.open("w") as err:
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the demo exits (a failure) or serves the page
            out.append(line)
            if line.startswith("web page:"):
                break
        page = httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=30)
        history = httpx.get(
            f"http://127.0.0.1:{port}/ui/api/history/smollm2-135m-instruct", timeout=120
        )
        sdk_history = _run_sdk_example(port, tmp_path / "bledger-demo")
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = err_path.read_text()
    text = "".join(out)
    assert proc.returncode == 0, text + stderr
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert history.status_code == 200, history.text
    rows = history.json()["rows"]
    # Both versions, the suite's 8 categories, two tiers, every figure from logged records.
    assert {r["version"] for r in rows} == {"v1", "v2"}
    assert {r["tier"] for r in rows} == {"anonymous", "medical"}
    assert len({r["category"] for r in rows}) == 8
    assert all(r["records"] for r in rows)
    table = [ln for ln in out if ln.startswith(("v1 ", "v2 "))]
    assert len(table) == len(rows) and all(ln.rstrip().endswith(" verified") for ln in table)
    assert re.search(r"^  v1 -> v2  by lab  index \d+  verified$", text, flags=re.M), text
    assert (tmp_path / "bledger-demo" / "history.png").stat().st_size > 10_000
    assert "[7/7] done" in stderr
    # docs/history.md's SDK example, run against the demo while it served.
    assert [v.version for v in sdk_history.versions] == ["v1", "v2"]
    assert all(r.verified for r in sdk_history.rows)
    assert [(c.from_, c.to, c.verified) for c in sdk_history.continuity] == [("v1", "v2", True)]


def _run_sdk_example(port: int, data: Path) -> Any:
    """Run the Python example of docs/history.md against a demo on `port` with data in `data`;
    returns the `history` it builds."""
    text = (PROJECT_ROOT / "docs" / "history.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    block = block.replace("8080", str(port)).replace('"bledger-demo/', f'"{data}/')
    scope: dict[str, Any] = {}
    exec(compile(block, "docs/history.md", "exec"), scope)
    return scope["history"]
