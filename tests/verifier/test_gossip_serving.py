"""An audit node's gossip server is served like `bledger serve` (`ledger.serving`), tried from
outside: it holds its port before it says "serving", and a request whose headers never arrive
is answered 408 and closed after the header timeout. Deadlines only fail hung tests; nothing
asserts on how long anything took."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import PROJECT_ROOT, Signer
from tests.support import running_server as ledger_server
from tests.verifier.test_auditor import follow
from tests.verifier.test_simulation import Service, running

DEADLINE = 60.0


def _node_args(data: Path) -> list[str]:
    return ["clients.verify_cmd", "verify", "--data", str(data), "--poll", "3600"]


def test_gossip_on_a_taken_port_fails_before_saying_serving(tmp_path: Path) -> None:
    alice = Signer.create(tmp_path, "alice")
    with ledger_server(tmp_path / "ledger", allow_keys=(alice.pub,)) as log:
        follow(tmp_path / "node", log.base_url, alice)
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen(1)
            port = held.getsockname()[1]
            cmd = [sys.executable, "-m", *_node_args(tmp_path / "node"), "--port", str(port)]
            res = subprocess.run(
                cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=DEADLINE
            )
    assert res.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in res.stderr, res.stderr
    assert "serving gossip" not in res.stdout + res.stderr


def test_gossip_request_without_headers_gets_408(tmp_path: Path) -> None:
    alice = Signer.create(tmp_path, "alice")
    with ledger_server(tmp_path / "ledger", allow_keys=(alice.pub,)) as log:
        follow(tmp_path / "node", log.base_url, alice)
        args = [*_node_args(tmp_path / "node"), "--header-timeout", "1"]
        node = Service("node", args, tmp_path / "node", tmp_path / "logs")
        with running(node):
            with socket.create_connection(("127.0.0.1", node.port), timeout=DEADLINE) as silent:
                answer = silent.recv(1024)  # blocks until the server speaks or closes
                assert answer.startswith(b"HTTP/1.1 408"), answer
                assert silent.recv(1024) == b"", "closed after the 408"
            # And the node still answers.
            assert httpx.get(node.url + "/", timeout=DEADLINE).status_code == 200
