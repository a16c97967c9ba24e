"""Ctrl-C reaches the processes the tests start, even when the run began with SIGINT ignored.

`tests.support.handle_sigint` (called by tests/conftest.py) is run in a child that starts with
SIGINT ignored, as a background job of a non-interactive shell would; a grandchild then reports
what it found, before and after.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

CHILD = """
import signal, subprocess, sys
from tests.support import handle_sigint
probe = [sys.executable, "-c",
         "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
before = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
changed = handle_sigint()
after = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
print(before, changed, after, handle_sigint())
"""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_a_run_started_with_sigint_ignored_gives_its_children_ctrl_c() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=PROJECT_ROOT,
        preexec_fn=_ignore_sigint,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    # Before: the grandchild inherited the ignored SIGINT and has no KeyboardInterrupt.
    # After: it starts with the default, so Python installs its handler; a second call
    # finds nothing to do.
    assert out == ["False", "True", "True", "False"]
