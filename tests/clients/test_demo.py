"""`bledger demo`: its ports, its feedback while a step runs, and Ctrl-C in the middle of a step.

The whole demo runs in tests/test_readme.py; these run its first steps only.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clients import demo as demo_mod
from tests.support import free_port, running_server, spawn, stop_group

DEMO = [sys.executable, "-m", "clients.cli", "demo"]


def _demo(tmp_path: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, "--data", str(tmp_path / "demo"), "--port", str(port), "--no-serve", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "BEHAVIOUR_LEDGER_CACHE": str(tmp_path / "cache")},
        timeout=600,
    )


def test_demo_refuses_a_port_held_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = _demo(tmp_path, port)
    assert res.returncode != 0
    assert f"port {port} (for the ledger) is held by another process" in res.stderr
    assert not (tmp_path / "demo" / "ledger").exists(), "no ledger was started"


def test_demo_never_talks_to_a_ledger_it_did_not_start(tmp_path: Path) -> None:
    with running_server(tmp_path / "foreign") as srv:
        res = _demo(tmp_path, srv.port)
        size = httpx.get(f"{srv.base_url}/logs/evidence/checkpoint", timeout=30).text
    assert res.returncode != 0
    assert f"port {srv.port} (for the ledger) is held by another process" in res.stderr
    assert size.splitlines()[1] == "0", "the demo registered nothing in the foreign log"


def test_a_quiet_step_prints_that_it_is_still_working(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo_mod, "HEARTBEAT_S", 0.5)
    progress = demo_mod.Progress(2)
    with progress.step("a step that prints nothing"):
        time.sleep(3)  # quiet for several heartbeats
    progress.skip("a finished step", "kept in X")
    err = capsys.readouterr().err
    assert re.search(r"^\[1/2\] … still working \(\d+ s\)$", err, flags=re.M), err
    assert "[2/2] a finished step: done earlier (kept in X)" in err


@pytest.fixture
def demo_until(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A demo started with its own cache and data; its stderr goes to a file."""
    err = tmp_path / "stderr"
    with err.open("wb") as f:
        proc = spawn(
            [*DEMO, "--data", str(tmp_path / "demo"), "--port", str(free_port()), "--no-serve"],
            stdout=subprocess.DEVNULL,
            stderr=f,
            env={**os.environ, "BEHAVIOUR_LEDGER_CACHE": str(tmp_path / "cache")},
        )
    try:
        yield proc, err
    finally:
        stop_group(proc)


def _wait_for(err: Path, pattern: str, proc: subprocess.Popen[bytes]) -> str:
    """The stderr once `pattern` appears in it (the demo must still run)."""
    deadline = time.monotonic() + 1800  # a hang guard: conversion and calibration on a CPU
    while time.monotonic() < deadline:
        text = err.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        assert proc.poll() is None, text
        time.sleep(0.5)
    raise AssertionError(f"no {pattern!r} in:\n{err.read_text(errors='replace')}")


def test_ctrl_c_mid_calibration_says_what_was_kept_and_resumes(
    tmp_path: Path, demo_until: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, err = demo_until
    _wait_for(err, r"emotion calibration: .* (3[2-9]|[4-9]\d|\d{3})/\d+", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    assert proc.wait(timeout=120) == 130
    text = err.read_text()
    assert "Aborted!" not in text
    assert re.search(r"interrupted during \[3/7\] v1: emotion calibration", text), text
    assert re.search(r"\d+ finished batches of the emotion calibration", text), text
    assert f"Run `bledger demo --data {tmp_path / 'demo'} --port" in text

    # The same command continues the calibration where it stopped.
    again = tmp_path / "again"
    with again.open("wb") as f:
        proc2 = spawn(
            proc.args,  # type: ignore[arg-type]
            stdout=subprocess.DEVNULL,
            stderr=f,
            env={**os.environ, "BEHAVIOUR_LEDGER_CACHE": str(tmp_path / "cache")},
        )
    try:
        text = _wait_for(again, r"emotion calibration: \d+ of \d+ texts read earlier", proc2)
        kept = int(re.search(r"emotion calibration: (\d+) of", text).group(1))  # type: ignore[union-attr]
        assert kept >= 32
        assert "[1/7]" in text and "[2/7] model v1" in text
    finally:
        stop_group(proc2)
