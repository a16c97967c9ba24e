"""`bledger serve --workers N`: several processes share one database and take turns."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from attest import merkle
from attest.dsse import Envelope
from tests.support import (
    LOG,
    PROJECT_ROOT,
    LedgerProcess,
    Signer,
    check_log,
    envelope_body,
    log_identity,
)

DEADLINE = 60.0  # for a hung process: fails the test instead of hanging it


def test_two_worker_processes_share_one_log(tmp_path: Path) -> None:
    signer = Signer.create(tmp_path / "keys")
    srv = LedgerProcess(tmp_path / "data", allow_keys=(signer.pub,), extra_args=("--workers", "2"))
    srv.start()
    try:
        bodies = [envelope_body(signer.envelope(f"worker-{i}")) for i in range(200)]
        with httpx.Client(base_url=srv.base_url, timeout=60) as http:

            def post(body: bytes) -> dict[str, object]:
                r = http.post(f"/logs/{LOG}/entries", content=body)
                assert r.status_code == 200, r.text
                return dict(r.json())

            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(post, bodies))
        indices = sorted(int(str(r["index"])) for r in results)
        assert indices == list(range(200)), "every write got its own index"
        vkey, origin = log_identity(srv.base_url)
        cp = check_log(srv.base_url, vkey, origin)
        assert cp.size == 200
        for body, r in zip(bodies, results, strict=True):
            leaf = merkle.leaf_hash(Envelope.from_json(body).canonical_bytes())
            assert r["leaf_hash"] == base64.b64encode(leaf).decode()
    finally:
        srv.stop()


def _children(pid: int) -> list[int]:
    """The direct children of process `pid` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_workers_exit_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of the supervising process: its workers exit, the port is free, and a new server
    starts on the same port and data."""
    srv = LedgerProcess(tmp_path / "data", extra_args=("--workers", "2"))
    srv.start()
    try:
        assert srv.proc is not None
        workers = _children(srv.proc.pid)
        assert len(workers) >= 2, workers
        srv.kill9()
        deadline = time.monotonic() + DEADLINE
        while not all(_gone(w) for w in workers):
            assert time.monotonic() < deadline, "workers kept running without their supervisor"
            time.sleep(0.1)
        # Nobody holds the port any more. Another process's outgoing connection may hold it
        # for a moment as its ephemeral source port (the port came from that range), so the
        # check waits for that; a process of the dead server would hold it until the deadline.
        while True:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", srv.port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the dead server's port stays taken"
            time.sleep(0.1)
        srv.start()
        assert httpx.get(f"{srv.base_url}/logs", timeout=DEADLINE).status_code == 200
    finally:
        srv.stop()


def test_the_servers_import_chain_has_no_torch() -> None:
    """What `bledger serve` and each `--workers` process import (the CLI, the web app, the
    worker factory) loads neither torch nor transformers: workers start in seconds."""
    code = (
        "import sys, clients.cli, clients.web, ledger.asgi; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
