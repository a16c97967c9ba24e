"""Shared fixtures: where the published vectors live, and the PostgreSQL server for tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from ledger.storage import Store
from tests.support import handle_sigint

# Ctrl-C must reach the processes the tests start, however the run itself was started.
handle_sigint()

# Tests never assert on wall-clock time: Hypothesis's per-example deadline is one such assertion,
# and flaky on a loaded two-core machine.
settings.register_profile("bledger", deadline=None)
settings.load_profile("bledger")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
VECTORS = SHARED / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The published test vectors, read in place (never copied into the project)."""
    if not VECTORS.is_dir():
        pytest.fail(f"published vectors not found at {VECTORS}")
    return VECTORS


PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_admin_dsn() -> str:
    import os

    from sqlalchemy.engine import make_url

    url = make_url(os.environ.get("BLEDGER_TEST_PG", PG_DEFAULT))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_available() -> str:
    """The admin DSN of the test PostgreSQL server; skips (fails under CI) when unreachable."""
    import os

    import psycopg

    dsn = _pg_admin_dsn()
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            pass
    except psycopg.Error as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {dsn} unreachable under CI: {e}")
        pytest.skip(f"PostgreSQL at {dsn} unreachable: {e}")
    return dsn


@pytest.fixture
def pg_url(pg_available: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    name = f"bl_{secrets.token_hex(6)}"
    with psycopg.connect(pg_available, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        url = make_url(pg_available).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(pg_available, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each backend: SQLite in a temp dir, and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated `Store` on each backend of `db_url`, closed after the test."""
    s = Store(db_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


# -- no process of ours outlives the run ------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process the suite started is still alive at its end (and end it).

    Two ways to recognise one: a member of a process group started through
    `tests.support.spawn`, or a process whose command line names the run's temporary
    directory (servers get `--data` under it). Both catch uvicorn `--workers` children whose
    supervisor was stopped alone.
    """
    import signal
    import time

    from tests.support import leftover_processes

    factory = getattr(session.config, "_tmp_path_factory", None)
    # With a trailing slash: pytest-5/ must not match another run's pytest-50/.
    paths = [f"{factory.getbasetemp()}/"] if factory is not None else []
    # A process stopped a moment ago may still be exiting: give stragglers a few seconds.
    deadline = time.monotonic() + 5
    left = leftover_processes(paths)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_processes(paths)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  pid {pid}: {cmd[:200]}" for pid, cmd in left]
    message = "processes started by the tests are still running (now killed):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_line(message, red=True)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
