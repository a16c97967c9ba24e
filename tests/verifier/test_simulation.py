"""A small network on loopback, every party a real process: ledger servers, two witnesses
(`bledger witness serve`) and three audit nodes (`bledger verify`) gossiping with each other.

Rounds are driven by hand: a node runs one round at start, then one per SIGUSR1, so a test can
say "after one round each" and mean it (no sleeps, no wall-clock assertions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from attest.policy import Policy, QuorumError
from tests.support import PROJECT_ROOT, START_TIMEOUT, Signer, free_port, log_identity
from tests.support import running_server as ledger_server
from tests.verifier.test_auditor import follow, split_data_dir, submit
from verifier.gossip import origin_hash, verify_evidence

ROUND_TIMEOUT = 60.0  # a deadline for a hung round, never a performance assertion


@dataclass
class Service:
    """A Python subprocess serving HTTP on a loopback port, ready once `GET /` answers 200."""

    name: str
    args: list[str]
    data: Path
    logs: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until it answers."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (
            (self.logs / f"{self.name}.stdout").open("ab") as out,
            (self.logs / f"{self.name}.stderr").open("ab") as err,
        ):
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.args, "--port", str(self.port)],
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.stderr()}")
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer:\n{self.stderr()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGTERM, or `signal.SIGKILL` for a crash)."""
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stderr(self) -> str:
        """The end of the process's stderr."""
        path = self.logs / f"{self.name}.stderr"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def get(self, path: str) -> Any:
        """GET a JSON document from the service."""
        r = httpx.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()


@contextmanager
def running(*services: Service) -> Iterator[None]:
    """Start every service in order; stop them all however the block exits."""
    with ExitStack() as stack:
        for s in services:
            stack.callback(s.stop)
            s.start()
        yield


def witness(tmp: Path, name: str, log_vkey: str) -> Service:
    """A `bledger witness serve` process following the log."""
    data = tmp / name
    args = ["clients.witness_cmd", "serve", "--data", str(data), "--log", log_vkey]
    return Service(name, [*args, "--name", name], data, tmp / "logs")


def witness_policy(witnesses: list[Service]) -> str:
    """Both witnesses must cosign (tlog-policy; the node adds the log line)."""
    lines = [
        f"witness {w.name} {(w.data / 'witness.vkey').read_text().strip()} {w.url}"
        for w in witnesses
    ]
    names = " ".join(w.name for w in witnesses)
    return "\n".join([*lines, f"group all-witnesses all {names}", "quorum all-witnesses", ""])


def audit_node(tmp: Path, name: str, ports: dict[str, int]) -> Service:
    """A `bledger verify` process; it gossips with the other nodes in `ports`."""
    args = ["clients.verify_cmd", "verify", "--data", str(tmp / name), "--poll", "3600"]
    for peer, port in ports.items():
        if peer != name:
            args += ["--peer", f"http://127.0.0.1:{port}"]
    return Service(name, args, tmp / name, tmp / "logs", port=ports[name])


def configure(node: Service, log_url: str, alice: Signer, witnesses: list[Service]) -> None:
    """Point the node's DATA at a log, with alice pinned and the witnesses and their policy."""
    follow(
        node.data,
        log_url,
        alice,
        witnesses=tuple(w.url for w in witnesses),
        witness_policy=witness_policy(witnesses),
    )


def wait_round(node: Service, after: int) -> dict[str, Any]:
    """Wait until the node completed round `after + 1` (or later); return its status."""
    deadline = time.monotonic() + ROUND_TIMEOUT
    while time.monotonic() < deadline:
        status: dict[str, Any] = node.get("/")
        if status["rounds"] > after and not status["in_round"]:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{node.name} did not finish a round:\n{node.stderr()}")


def one_round(node: Service) -> dict[str, Any]:
    """Make the node run exactly one more round (SIGUSR1) and wait for it to finish."""
    before = wait_round(node, 0)["rounds"]
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGUSR1)
    return wait_round(node, before)


def gossiped_note(node: Service, origin: str) -> bytes:
    """The node's latest verified checkpoint, as it gossips it."""
    r = httpx.get(f"{node.url}/gossip/{origin_hash(origin)}", timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def evidence(node: Service) -> list[dict[str, Any]]:
    """The evidence records the node serves."""
    return [item["evidence"] for item in node.get("/evidence")]


# -- an honest network ------------------------------------------------------------------------


def test_honest_network_agrees_cosigns_and_survives_a_crash(tmp_path: Path) -> None:
    alice = Signer.create(tmp_path / "keys", "alice")
    with ledger_server(tmp_path / "srv", allow_keys=(alice.pub,)) as srv:
        vkey, origin = log_identity(srv.base_url)
        for i in range(5):
            submit(srv.base_url, alice, f"honest {i}")
        ws = [witness(tmp_path, f"w{i}", vkey) for i in (1, 2)]
        ports = {f"n{i}": free_port() for i in (1, 2, 3)}
        nodes = [audit_node(tmp_path, n, ports) for n in ports]
        with running(*ws):
            for n in nodes:
                configure(n, srv.base_url, alice, ws)
            with running(*nodes):
                for n in nodes:
                    wait_round(n, 0)
                # Past a full tile; concurrent posts share the sequencer's batches.
                with ThreadPoolExecutor(16) as pool:
                    tags = [f"honest {i}" for i in range(5, 300)]
                    list(pool.map(lambda t: submit(srv.base_url, alice, t), tags))
                statuses = [one_round(n) for n in nodes]
                for st in statuses:
                    assert not st["alarm"], st
                    assert st["logs"][0]["size"] == 300

                policy = Policy.parse(f"log {vkey}\n{witness_policy(ws)}")
                notes = [gossiped_note(n, origin) for n in nodes]
                for note in notes:
                    assert policy.check(note).size == 300, "both witnesses cosigned"
                node_names = [n.get("/")["node"] for n in nodes]
                for name in node_names:
                    assert f"— {name} ".encode() in notes[node_names.index(name)]

                # A node killed (-9) and restarted resumes from its database.
                nodes[0].stop(signal.SIGKILL)
                submit(srv.base_url, alice, "after the crash")
                nodes[0].start()
                st = wait_round(nodes[0], 0)
                assert st["logs"][0]["size"] == 301 and not st["alarm"]
                for n in nodes[1:]:
                    assert not one_round(n)["alarm"]
                assert all(evidence(n) == [] for n in nodes)
                for w in ws:
                    assert w.get("/")["logs"][0]["size"] == 301


# -- a log that shows two trees ---------------------------------------------------------------


def test_split_view_is_caught_within_one_gossip_round(tmp_path: Path) -> None:
    alice = Signer.create(tmp_path / "keys", "alice")
    split_data_dir(tmp_path / "d1", tmp_path / "d2")
    with (
        ledger_server(tmp_path / "d1", allow_keys=(alice.pub,)) as s1,
        ledger_server(tmp_path / "d2", allow_keys=(alice.pub,)) as s2,
    ):
        vkey, origin = log_identity(s1.base_url)
        assert log_identity(s2.base_url) == (vkey, origin), "one log key, one origin"
        # The same entries in the same order: so far one tree, signed identically twice.
        for i in range(3):
            submit(s1.base_url, alice, f"shared {i}")
            submit(s2.base_url, alice, f"shared {i}")
        ws = [witness(tmp_path, f"w{i}", vkey) for i in (1, 2)]
        ports = {f"n{i}": free_port() for i in (1, 2, 3)}
        nodes = [audit_node(tmp_path, n, ports) for n in ports]
        log_of = {"n1": s1, "n2": s2, "n3": s1}
        with running(*ws):
            for n in nodes:
                configure(n, log_of[n.name].base_url, alice, ws)
            with running(*nodes):
                for n in nodes:
                    assert not wait_round(n, 0)["alarm"]
                # Then the log forks: n1 and n3 see one history, n2 another, larger one.
                submit(s1.base_url, alice, "only the first tree")
                for i in range(3):
                    submit(s2.base_url, alice, f"only the second tree {i}")

                for n in nodes:  # one round each, in turn
                    one_round(n)
                statuses = [n.get("/") for n in nodes]

                for n, st in zip(nodes, statuses, strict=True):
                    assert st["alarm"], f"{n.name} did not raise the alarm: {st}"
                    proofs = [ev for ev in evidence(n) if ev["kind"] == "inconsistent"]
                    assert proofs, evidence(n)
                    for ev in proofs:
                        described = verify_evidence(json.dumps(ev), vkey)
                        assert described.startswith("proven fork"), described
                assert {st["logs"][0]["size"] for st in statuses} == {4, 6}
                # The witnesses cosigned one tree only: the second one is not witnessed.
                policy = Policy.parse(f"log {vkey}\n{witness_policy(ws)}")
                assert policy.check(gossiped_note(nodes[0], origin)).size == 4
                with pytest.raises(QuorumError):
                    policy.check(gossiped_note(nodes[1], origin))
                for w in ws:
                    assert w.get("/")["logs"][0]["size"] == 4
