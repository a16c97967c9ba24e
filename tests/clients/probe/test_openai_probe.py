"""`bledger probe --backend openai` end to end, against a real ledger server on loopback.

Two endpoints: the scripted fault server (an endpoint that fails mid-run, then recovers: the
run resumes after its last whole batch and logs each record once), and a real
llama-cpp-python server serving the bundled SmolLM2 GGUF (records verify, the history shows
the model, a replay against the endpoint reproduces the answers). The real server is skipped
when llama_cpp is not installed, except under CI=true, where its absence fails.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from attest.predicates import ProbeRecord
from attest.statement import parse_statement
from clients.cli import main as cli
from clients.probe.backends import EndpointUnavailableError, OpenAIBackend
from clients.probe.model import smollm2_gguf_path
from clients.probe.worker import ProbeOptions, read_entry, replay, run_probe
from tests.clients.probe.fault_server import fault_server
from tests.clients.probe.support import Ledger


def records(ledger: Ledger, indices: tuple[int, ...]) -> list[ProbeRecord]:
    out = []
    for i in indices:
        pred = parse_statement(read_entry(ledger.target, i)[0].payload).predicate
        assert isinstance(pred, ProbeRecord)
        out.append(pred)
    return out


def test_an_endpoint_that_fails_mid_group_resumes_without_duplicates(
    ledger: Ledger, suite_file: Path, tmp_path: Path
) -> None:
    opts = ProbeOptions(
        model="fault-model",
        suite="mini",
        suite_path=suite_file,
        categories=("harm",),
        tiers=("anonymous",),
        batch_size=2,
        max_new_tokens=8,
        backend="openai",
    )
    with fault_server() as srv:
        # Batch 1 (2 prompts) answers; batch 2's second prompt meets an endpoint that is down.
        srv.script = ["ok", "ok", "ok"]
        srv.default = "500"
        opts = ProbeOptions(**{**opts.__dict__, "endpoint": srv.url})
        down = OpenAIBackend(srv.url, "fault-model", retries=1, sleep=lambda _s: None)
        before = ledger.size()
        with pytest.raises(EndpointUnavailableError, match="HTTP 500"):
            run_probe(
                opts, ledger.target, ledger.signers, backend=down, data=tmp_path, progress=False
            )
        assert ledger.size() == before, "nothing half-done reaches the log"
        first = srv.answered()
        srv.default = "ok"
        up = OpenAIBackend(srv.url, "fault-model", sleep=lambda _s: None)
        res = run_probe(
            opts, ledger.target, ledger.signers, backend=up, data=tmp_path, progress=False
        )
        second = srv.answered()[len(first) :]
    ledger.audit()
    assert len(first) == 5 and len(second) == 3, "the resumed run asks only the unfinished batches"
    assert ledger.size() - before == len(res.indices) == 1
    [rec] = records(ledger, res.indices)
    assert len(rec.items) == 5 and len({(i.prompt_id, i.framing) for i in rec.items}) == 5
    assert rec.calibration is None and all(not i.emotions for i in rec.items)
    assert rec.backend is not None and rec.backend.kind == "openai"
    assert rec.backend.endpoint == srv.url and rec.backend.endpoint_model == "fault-model"
    assert rec.backend.emotions == "not-observable"
    assert rec.decoding is not None and rec.decoding.batch_size == 2
    assert [j.name for j in rec.judges] and rec.items[0].answer.startswith("answer to: ")


# -- a real OpenAI-compatible server: llama-cpp-python on the bundled GGUF ---------------------


def _llama_available() -> bool:
    try:
        importlib.import_module("llama_cpp.server.app")
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on 127.0.0.1 serving the bundled SmolLM2 GGUF; its /v1 URL."""
    gguf = smollm2_gguf_path()
    if not _llama_available() or gguf is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install llama-cpp-python[server] and the bundled GGUF")
        pytest.skip("llama-cpp-python[server] or the bundled GGUF is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "2048", "--seed", "0", "--n_threads", "2"]
    cmd += ["--verbose", "False"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"llama server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("llama server not ready in 120 s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_probe_a_model_behind_a_real_openai_compatible_server(
    llama_server: str, ledger: Ledger, tmp_path: Path
) -> None:
    # A shipped suite (the history reads item kinds from it): one group of eight prompts.
    args = ["probe", "--backend", "openai", "--endpoint", llama_server, "--model", "smollm2-api"]
    args += ["--ledger", ledger.srv.base_url, "--vkey", ledger.vkey]
    args += ["--suite", "core", "--categories", "grief", "--tiers", "anonymous"]
    args += ["--max-new-tokens", "16", "--batch-size", "4", "--quiet"]
    args += ["--data-dir", str(tmp_path), "--key", str(ledger.keys / "worker.pem")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["calibration"] is None
    [group] = out["groups"]
    ledger.audit()
    [rec] = records(ledger, tuple(group["indices"]))
    assert rec.model.name == "smollm2-api" and rec.backend is not None
    assert rec.backend.kind == "openai" and rec.backend.endpoint == llama_server
    assert rec.backend.endpoint_model == "smollm2-api", "llama.cpp echoes the requested id"
    assert all(i.answer for i in rec.items), "SmolLM2 answered every prompt"

    hist = CliRunner().invoke(
        cli, ["history", "smollm2-api", "--ledger", ledger.srv.base_url, "--vkey", ledger.vkey]
    )
    assert hist.exit_code == 0, hist.output
    assert "grief" in hist.stdout and "anonymous" in hist.stdout

    report = replay(group["indices"][0], ledger.target, data=tmp_path)
    assert report.reproduced, report.to_json()
    assert report.settings == (), "the endpoint, its model id and the decoding are the record's"
    assert report.decoding.max_new_tokens == 16 and report.decoding.batch_size == 4
