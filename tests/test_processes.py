"""The suite cleans up after itself: process groups end whole, leftovers fail the run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import (
    PROJECT_ROOT,
    group_alive,
    kill_group,
    leftover_processes,
    spawn,
    stop_group,
)

# A parent that starts a child and waits, as uvicorn's supervisor does with --workers.
PARENT_AND_CHILD = [
    sys.executable,
    "-c",
    "import subprocess, sys, time;"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
    "time.sleep(600)",
]


def _wait_for_members(pgid: int, n: int) -> list[int]:
    deadline = time.monotonic() + 60
    while len(members := group_alive(pgid)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def test_stop_group_ends_the_children_too() -> None:
    proc = spawn(PARENT_AND_CHILD)
    members = _wait_for_members(proc.pid, 2)
    assert len(members) == 2, members
    stop_group(proc, timeout=10)
    assert group_alive(proc.pid) == []


def test_kill_group_ends_the_children_too() -> None:
    proc = spawn(PARENT_AND_CHILD)
    assert len(_wait_for_members(proc.pid, 2)) == 2
    kill_group(proc)
    assert group_alive(proc.pid) == []


def test_an_orphaned_child_is_a_leftover() -> None:
    """Killing only the leader (what the old helpers did) leaves the child: it is reported."""
    proc = spawn(PARENT_AND_CHILD)
    members = _wait_for_members(proc.pid, 2)
    proc.kill()
    proc.wait()
    (child,) = [p for p in members if p != proc.pid]
    try:
        assert child in [pid for pid, _ in leftover_processes()]
    finally:
        kill_group(proc)
    assert child not in [pid for pid, _ in leftover_processes()]


def test_a_process_naming_the_runs_tmp_dir_is_a_leftover(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(tmp_path)])
    try:
        assert proc.pid in [pid for pid, _ in leftover_processes([str(tmp_path)])]
    finally:
        proc.kill()
        proc.wait()


def test_the_run_fails_when_a_test_leaves_a_process_running(tmp_path: Path) -> None:
    """An inner pytest run with this suite's end-of-run check, whose test leaks a process."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_sessionfinish  # noqa: F401\n"
    )
    (tmp_path / "test_leaky.py").write_text(
        "import sys\n"
        "from tests.support import spawn\n\n"
        "def test_leaks():\n"
        "    spawn([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == pytest.ExitCode.TESTS_FAILED, res.stdout + res.stderr
    assert "1 passed" in res.stdout
    assert "processes started by the tests are still running (now killed)" in res.stdout
