"""The admission pool's pipes hold a whole answer: a worker does not wait for the serving
process to read what it sent before it takes its next task (`AdmissionPool._widen_pipes`)."""

from __future__ import annotations

import fcntl
import random
import sys
import time
from pathlib import Path

import pytest

from ledger.admitters import PIPE_BYTES, AdmissionPool, PoolOptions
from tests.ledger.no_rules import build_no_rules

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="only Linux resizes pipes"
)

ANSWER = 600 * 1024  # an answer for 128 envelopes is about 200 KiB; a default pipe holds 64


def _big_answer(marker: str) -> bytes:
    Path(marker).touch()
    time.sleep(0.2)  # the answer is sent once the test holds the interpreter lock
    return b"x" * ANSWER


def _started() -> float:
    return time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine


def test_the_pipes_are_widened(tmp_path: Path) -> None:
    pool = AdmissionPool(build_no_rules, PoolOptions(str(tmp_path)), 1)
    try:
        pool.warm()
        for name in ("_call_queue", "_result_queue"):
            reader = getattr(pool._pool, name)._reader
            assert fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ) >= PIPE_BYTES
    finally:
        pool.close()


def test_a_worker_takes_its_next_task_while_its_answer_is_unread(tmp_path: Path) -> None:
    pool = AdmissionPool(build_no_rules, PoolOptions(str(tmp_path)), 1)
    marker = tmp_path / "started"
    try:
        pool.warm()
        rng = random.Random(0)
        numbers = [rng.random() for _ in range(6_000_000)]
        first = pool._pool.submit(_big_answer, str(marker))
        second = pool._pool.submit(_started)
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), "the worker never started the first task"
        time.sleep(0.05)  # the pool's threads have queued the second task by now
        # Hold this process's interpreter lock for a second or so: one C call (a sort of
        # floats compares them in C) that never lets the pool's result thread read the first
        # answer meanwhile.
        held_from = time.monotonic()
        sorted(numbers)
        held_until = time.monotonic()
        assert held_until - held_from > 0.5, "too fast a machine for this test's sort"
        assert len(first.result(timeout=60)) == ANSWER
        assert second.result(timeout=60) < held_until
    finally:
        pool.close()
