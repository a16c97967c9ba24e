"""Helpers for tests that run real servers: a `bledger serve` subprocess, signers, PostgreSQL.

* `spawn` starts a process in its own process group (recorded in `STARTED_GROUPS`);
  `stop_group` / `kill_group` end the whole group, so `--workers` children never outlive a
  test, and `leftover_processes` is what tests/conftest.py checks at the end of the run.
* `LedgerProcess` starts `python -m clients.cli serve` on a free loopback port, waits until
  `GET /logs` answers (within `start_timeout`, which scales with the time `import clients.cli`
  takes here and with the number of processes), and can stop it (SIGTERM), kill it (`kill -9`)
  and start it again on the same data directory, database and port. Each start's
  stdout/stderr go to files next to DATA.
* `Signer` makes signed DSSE envelopes quickly (one key, distinct payloads).
* `check_log` re-audits the whole published log through HTTP (sunlight's `CheckLog` habit).
* `proxied` gives a `LedgerClient` whose answers from the real server pass through a rewrite
  (fault injection: the SDK must refuse each rewrite).
* `populate_model` logs probe records of two versions of a model (worker key certified by a
  lab key) and the lab's continuity statement between them: what `bledger history` and the web
  page show.
* `png_pixels` decodes a PNG (stdlib only), to check a chart is not one colour.

PostgreSQL databases come from the `pg_url` fixture in `tests/conftest.py`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import httpx
from alembic import command
from alembic.config import Config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import merkle
from attest.checkpoint import Checkpoint
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, sign_envelope
from attest.keys import generate_private_key, load_private_key, write_key_pair
from attest.note import Ed25519NoteSigner
from attest.predicates import (
    CheckpointRef,
    ContinuityStatement,
    FieldReport,
    LogEntryRef,
    ModelId,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import Statement, sign_statement, statement_bytes
from attest.tiles import decode_bundle
from attest.vkey import parse_vkey
from clients.probe.records import RecordHeader, probe_item, sign_records
from clients.probe.suites import load_suite
from clients.sdk import ClientError, LedgerClient
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store, assemble_bundle, bundle_sql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOG = "evidence"
ORIGIN_PREFIX = "bledger.test/logs"
START_TIMEOUT = 60.0  # generous: a deadline for a hung start, never a performance assertion


# -- processes the suite starts ---------------------------------------------------------------

STARTED_GROUPS: set[int] = set()
"""Process groups of every process started through `spawn` (checked at the end of the run)."""


def handle_sigint() -> bool:
    """Give SIGINT Python's own handler in this process if it arrived ignored; says whether it
    had to.

    A process started with SIGINT ignored (a background job of a non-interactive shell, and
    whatever that job starts) passes it on ignored to every child, and a Python child then
    installs no KeyboardInterrupt handler: Ctrl-C does nothing to it. The tests that stop
    `bledger demo` with Ctrl-C saw it run on (once its calibration ended it exited 1, not 130;
    the README demo did not exit at all). An ignored signal stays ignored across `exec`, a
    handled one is reset to the default there, so after this every child starts as it would
    from a terminal."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(args, **kwargs)` in a new session, so the process and everything it
    starts (uvicorn's `--workers` children) form one process group that `stop_group` and
    `kill_group` end together, and that the end-of-run check in tests/conftest.py watches."""
    proc: subprocess.Popen[Any] = subprocess.Popen(args, start_new_session=True, **kwargs)
    STARTED_GROUPS.add(proc.pid)
    return proc


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of group `pgid`, from /proc."""
    return [pid for pid, group, _ in _processes() if group == pgid]


def _processes() -> Iterator[tuple[int, int, str]]:
    """(pid, process group, command line) of every live, non-zombie process (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            yield int(entry.name), int(fields[2]), cmdline.strip()


def stop_group(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM to `proc`'s whole process group, then SIGKILL to what is left after `timeout`."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_group(proc)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL to `proc`'s whole process group (the leader and every child), then reap it."""
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def leftover_processes(paths: Sequence[Path | str] = ()) -> list[tuple[int, str]]:
    """Live processes the suite started and did not stop: members of a group `spawn` made,
    and any process whose command line names one of `paths` (the run's temporary
    directories, which only the suite's own processes name)."""
    me = os.getpid()
    needles = [str(p) for p in paths]
    return [
        (pid, cmd)
        for pid, group, cmd in _processes()
        if pid != me and (group in STARTED_GROUPS or any(n in cmd for n in needles))
    ]


_IMPORT_SECONDS: list[float] = []


def import_seconds() -> float:
    """How long `import clients.cli` (what `bledger serve` imports) takes on this machine now,
    measured once per run in a fresh interpreter."""
    if not _IMPORT_SECONDS:
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "import clients.cli"], cwd=PROJECT_ROOT, check=True)
        _IMPORT_SECONDS.append(time.monotonic() - t)
    return _IMPORT_SECONDS[0]


def start_timeout(processes: int = 1) -> float:
    """A deadline for a hung start that scales with what the server must import: `processes`
    interpreters importing the CLI on this machine, with room to spare (never a performance
    assertion; the floor is `START_TIMEOUT`)."""
    cores = os.cpu_count() or 1
    return max(START_TIMEOUT, 30.0 + 10.0 * import_seconds() * max(1, processes / cores + 1))


# -- the server subprocess --------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerStartError(RuntimeError):
    """The server process exited, or never answered its readiness request."""


@dataclass
class ServiceProcess:
    """A service subprocess on a free loopback port, restartable on the same DATA and port.

    Subclasses give the command line, the path that answers 200 once it is ready, and a label
    for its output files (each start's stdout/stderr go to files next to DATA).
    """

    data: Path
    port: int = field(default_factory=free_port, kw_only=True)
    proc: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)
    starts: int = field(default=0, kw_only=True)

    label: ClassVar[str] = "service"
    ready_path: ClassVar[str] = "/"

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line of the process."""
        raise NotImplementedError

    def log_path(self, n: int, stream: str) -> Path:
        """Where start `n`'s stdout or stderr goes."""
        return self.data.parent / f"{self.data.name}.{self.label}-{n}.{stream}"

    def start(self, *, wait: bool = True) -> None:
        """Start; with `wait`, return once `ready_path` answers 200 (ServerStartError if not)."""
        if self.proc is not None:
            raise RuntimeError(f"{self.label} already running")
        self.starts += 1
        out = self.log_path(self.starts, "stdout").open("wb")
        err = self.log_path(self.starts, "stderr").open("wb")
        with out, err:
            self.proc = spawn(
                self.command(), cwd=PROJECT_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        if wait:
            self._wait_ready()

    def processes(self) -> int:
        """How many interpreters a start imports the CLI in (the supervisor and its workers)."""
        cmd = self.command()
        n = int(cmd[cmd.index("--workers") + 1]) if "--workers" in cmd else 0
        return 1 + n

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + start_timeout(self.processes())
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                raise ServerStartError(f"{self.label} exited with {rc}:\n{self.stderr_tail()}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill9()
        raise ServerStartError(
            f"{self.label} did not answer GET {self.ready_path}:\n{self.stderr_tail()}"
        )

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for the process to exit by itself; its exit code (its group is then ended)."""
        assert self.proc is not None
        rc = self.proc.wait(timeout=timeout)
        kill_group(self.proc)
        self.proc = None
        return rc

    def stop(self) -> None:
        """Stop gracefully (SIGTERM to the process group: the server and its `--workers`);
        kill -9 what is left if it does not exit within a while."""
        if self.proc is None:
            return
        stop_group(self.proc)
        self.proc = None

    def kill9(self) -> None:
        """`kill -9` the whole process group: no cleanup, no flush, connections reset."""
        if self.proc is None:
            return
        kill_group(self.proc)
        self.proc = None

    def stderr(self) -> str:
        """The stderr of the latest start."""
        path = self.log_path(self.starts, "stderr")
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr_tail(self, chars: int = 4000) -> str:
        """The end of the latest start's stderr (for failure messages)."""
        return self.stderr()[-chars:]

    def stderr_all(self) -> str:
        """The stderr of every start, concatenated."""
        return "".join(
            self.log_path(n, "stderr").read_text(errors="replace")
            for n in range(1, self.starts + 1)
            if self.log_path(n, "stderr").exists()
        )

    def outputs(self) -> bytes:
        """stdout and stderr of every start, concatenated."""
        return b"".join(
            self.log_path(n, s).read_bytes()
            for n in range(1, self.starts + 1)
            for s in ("stdout", "stderr")
            if self.log_path(n, s).exists()
        )


@dataclass
class LedgerProcess(ServiceProcess):
    """One `bledger serve` process, restartable on the same DATA, database and port."""

    db: str | None = None
    allow_keys: tuple[Path, ...] = ()
    extra_args: tuple[str, ...] = ()

    label: ClassVar[str] = "server"
    ready_path: ClassVar[str] = "/logs"

    def command(self) -> list[str]:
        """The command line of the server process."""
        cmd = [sys.executable, "-m", "clients.cli", "serve", "--data", str(self.data)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--origin-prefix", ORIGIN_PREFIX]
        if self.db is not None:
            cmd += ["--db", self.db]
        for k in self.allow_keys:
            cmd += ["--allow-key", str(k)]
        return [*cmd, *self.extra_args]


@contextmanager
def running_server(
    data: Path,
    *,
    db: str | None = None,
    allow_keys: tuple[Path, ...] = (),
    extra_args: tuple[str, ...] = (),
) -> Iterator[LedgerProcess]:
    """A started server that is stopped (or killed) when the block exits, however it exits."""
    srv = LedgerProcess(data, db, allow_keys, extra_args)
    try:
        srv.start()
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            srv.kill9()


@contextmanager
def lab_ledger(base: Path) -> Iterator[tuple[LedgerProcess, Path]]:
    """A running server under `base` whose operator registered the lab key; `base/keys` holds
    `lab.pem` and `worker.pem` (the worker is not certified yet)."""
    keys = base / "keys"
    keys.mkdir()
    for name in ("lab", "worker"):
        write_key_pair(keys / f"{name}.pem", generate_private_key())
    lab_pub = str(keys / "lab.pem.pub")
    with running_server(base / "data", extra_args=("--allow-lab", lab_pub)) as srv:
        yield srv, keys


# -- signed envelopes -------------------------------------------------------------------------


def statement_payload(tag: str, origin: str = f"{ORIGIN_PREFIX}/{LOG}") -> bytes:
    """A field-report Statement whose text is `tag` (distinct tags give distinct payloads).

    It embeds the empty-tree checkpoint of `origin`, which every log publishes at creation.
    """
    report = FieldReport(
        seen_checkpoint=CheckpointRef(origin=origin, size=0, root=hashlib.sha256().hexdigest()),
        issued_at=1_700_000_000,
        model=ModelId(name="test-model", version="1"),
        category="test",
        tier="anonymous",
        text=tag,
    )
    return statement_bytes(Statement.of(report))


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key written to disk (for `--allow-key`), signing envelopes in memory."""

    name: str
    key: Ed25519PrivateKey
    pub: Path

    @classmethod
    def create(cls, directory: Path, name: str = "writer") -> Signer:
        """A new key pair at DIRECTORY/NAME.pem(.pub); the key name is NAME."""
        directory.mkdir(parents=True, exist_ok=True)
        key = generate_private_key()
        pub = write_key_pair(directory / f"{name}.pem", key)
        return cls(name, key, pub)

    def envelope(self, payload: bytes | str, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> Envelope:
        """Sign `payload` (a str is taken as a tag for `statement_payload`)."""
        raw = statement_payload(payload) if isinstance(payload, str) else payload
        return sign_envelope(payload_type, raw, [(self.name, self.key)])


def envelope_body(env: Envelope) -> bytes:
    """The JSON body to POST for `env`."""
    return json.dumps(env.to_json()).encode()


# -- re-auditing the published log ------------------------------------------------------------


def log_identity(base_url: str, name: str = LOG) -> tuple[str, str]:
    """(vkey, origin) the server claims for log `name`: pin them once, then verify with them."""
    with LedgerClient(base_url) as c:
        info = c.log_info(name)
    return info.vkey, info.origin


def check_log(base_url: str, vkey: str, origin: str, name: str = LOG) -> Checkpoint:
    """Re-audit the whole published log: the checkpoint verifies with the pinned `vkey`, and every
    tile and entry bundle, fetched over HTTP, recomputes its root. Returns that checkpoint.

    Raises `clients.sdk.ClientError` (or its `VerificationError`) when anything does not add up.
    """
    with LedgerClient(base_url, timeout=60.0) as c:
        info = c.log_info(name)
        if (info.vkey, info.origin) != (vkey, origin):
            raise ClientError(f"log {name} now claims {info.vkey} / {info.origin}")
        return c.audit(name, parse_vkey(vkey), origin)


# -- fault injection between a client and the real server ------------------------------------

Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


@contextmanager
def proxied(
    base_url: str, rewrite: Rewrite, *, witness_urls: Sequence[str] = ()
) -> Iterator[LedgerClient]:
    """A client whose every answer from the real server passes through `rewrite`."""
    with httpx.Client(base_url=base_url) as real:

        def handler(request: httpx.Request) -> httpx.Response:
            answer = real.request(request.method, request.url, content=request.content)
            return rewrite(request, answer)

        transport = httpx.MockTransport(handler)
        with LedgerClient(
            base_url,
            client=httpx.Client(base_url=base_url, transport=transport),
            witness_urls=witness_urls,
        ) as c:
            yield c


def rewrite_json(path_part: str, change: Callable[[dict[str, Any]], None]) -> Rewrite:
    """Apply `change` to the JSON body of answers whose path contains `path_part`."""

    def rewrite(request: httpx.Request, answer: httpx.Response) -> httpx.Response:
        if path_part not in request.url.path:
            return answer
        body = answer.json()
        change(body)
        return httpx.Response(answer.status_code, content=json.dumps(body).encode())

    return rewrite


# -- probe records of two versions of a model, and a continuity statement ---------------------

PROBE_CATEGORY = "medical-dosage"
PROBE_TIERS = ("anonymous", "medical")
PROBE_VERSIONS = ("v1", "v2")
EMPTY_TREE = CheckpointRef(
    origin=f"{ORIGIN_PREFIX}/{LOG}", size=0, root=hashlib.sha256().hexdigest()
)
"""The empty-tree checkpoint every log publishes at creation (anti-backdating reference)."""


def model_weights(model: str, version: str) -> str:
    """A made-up weights digest of `model` at `version` (distinct per model and version)."""
    return hashlib.sha256(f"weights of {model} {version}".encode()).hexdigest()


def probe_items(version: int, tier: int) -> list[ProbeItem]:
    """Benign and harmful `PROBE_CATEGORY` items of the suite, with refusals and transfers that
    differ by version and tier (so the charts have something to show), and emotion projections.
    `version` and `tier` are 0-based positions."""
    suite = load_suite("core@1")
    items, benign = [], 0
    for k, it in enumerate(i for i in suite.items if i.category == PROBE_CATEGORY):
        if it.kind == "benign":
            refused = benign < 3 - 2 * version + tier  # v1: 3 and 4 of 4; v2: 1 and 2 of 4
            benign += 1
            emotions = {"afraid": (0.3 - 0.2 * version, 0.1), "calm": (0.1 + 0.25 * version, 0.1)}
            items.append(
                probe_item(it.id, "direct", "ok", refused=refused, transfer=0.0, emotions=emotions)
            )
            continue
        for f, framing in enumerate(it.framed):
            transfer = min(1.0, 0.05 + 0.12 * f + 0.1 * version + 0.05 * tier + 0.03 * k)
            emotions = {"afraid": (0.2, 0.1), "calm": (-0.1 + 0.1 * version, 0.1)}
            items.append(
                probe_item(
                    it.id,
                    framing,
                    "an answer",
                    refused=False,
                    transfer=transfer,
                    emotions=emotions,
                )
            )
    return items


def probe_header(
    model: str, version: str, tier: str, origin: str = EMPTY_TREE.origin
) -> RecordHeader:
    """The header of `model`@`version`'s record of (`PROBE_CATEGORY`, `tier`), suite core@1."""
    suite = load_suite("core@1")
    empty = EMPTY_TREE.model_copy(update={"origin": origin})
    return RecordHeader(
        model=ModelRef(name=model, version=version, weights_sha256=model_weights(model, version)),
        suite=SuiteRef(name=suite.name, version=suite.version, sha256=suite.digest),
        category=PROBE_CATEGORY,
        tier=tier,
        run_id=f"run-{version}-{tier}",
        calibration=LogEntryRef(origin=origin, index=0, leaf_hash=hashlib.sha256().hexdigest()),
        seen_checkpoint=empty,
        issued_at=1_700_000_000,
    )


def post_entry(base_url: str, body: bytes, name: str = LOG) -> dict[str, Any]:
    """POST `body` to log `name`; the 200 answer's JSON (fails the test otherwise)."""
    resp = httpx.post(f"{base_url}/logs/{name}/entries", content=body, timeout=60.0)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


@dataclass(frozen=True)
class PopulatedModel:
    """What `populate_model` logged: the index of each (version, tier) record, and of the
    continuity statement."""

    probe_records: dict[tuple[str, str], int]
    continuity: int


def populate_model(base_url: str, keys: Path, model: str) -> PopulatedModel:
    """Certify KEYS/worker.pem with KEYS/lab.pem (the server must allow the lab key), post one
    probe record of `model` per (version, tier) of `PROBE_VERSIONS` x `PROBE_TIERS`, then the
    lab's continuity statement v1 -> v2 naming them by leaf hash."""
    # Imported here, not at the top: the CLI imports every command, and most tests need none.
    from click.testing import CliRunner

    from clients.cli import main
    from clients.probe.continuity import diff

    res = CliRunner().invoke(
        main,
        ["keys", "certify", "--ledger", base_url, "--key", str(keys / "lab.pem"),
         "--role", "worker", "--subject", str(keys / "worker.pem")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    worker = [("worker", load_private_key(keys / "worker.pem"))]
    lab = [("lab", load_private_key(keys / "lab.pem"))]
    indices: dict[tuple[str, str], int] = {}
    refs: dict[str, list[LogEntryRef]] = {v: [] for v in PROBE_VERSIONS}
    records: dict[str, list[ProbeRecord]] = {v: [] for v in PROBE_VERSIONS}
    for vi, version in enumerate(PROBE_VERSIONS):
        for ti, tier in enumerate(PROBE_TIERS):
            (part,) = sign_records(probe_header(model, version, tier), probe_items(vi, ti), worker)
            records[version].append(part.predicate)
            got = post_entry(base_url, part.envelope.canonical_bytes())
            indices[(version, tier)] = got["index"]
            leaf = base64.b64decode(got["leaf_hash"]).hex()
            refs[version].append(
                LogEntryRef(origin=EMPTY_TREE.origin, index=got["index"], leaf_hash=leaf)
            )
    v1, v2 = PROBE_VERSIONS
    statement = ContinuityStatement(
        seen_checkpoint=EMPTY_TREE,
        issued_at=1_700_000_000,
        predecessor=ModelRef(name=model, version=v1, weights_sha256=model_weights(model, v1)),
        successor=ModelRef(name=model, version=v2, weights_sha256=model_weights(model, v2)),
        predecessor_records=tuple(refs[v1]),
        successor_records=tuple(refs[v2]),
        diff=diff(records[v1], records[v2], load_suite("core@1")).behaviour_diffs(),
    )
    continuity = post_entry(base_url, envelope_body(sign_statement(statement, lab)))["index"]
    return PopulatedModel(indices, continuity)


# -- images -----------------------------------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, pixels) of an 8-bit RGB or RGBA, non-interlaced PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pred) & 0xFF
        pixels += [tuple(line[i : i + 3]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


def sqlite_evidence_log(path: Path) -> tuple[Log, Sequencer]:
    """An empty evidence log in a fresh SQLite database at `path`, with its sequencer (a random
    signing key, origin test.example/evidence): for tests of the log core without a server."""
    signer = Ed25519NoteSigner("test.example/evidence", generate_private_key())
    store = Store(f"sqlite:///{path}")
    store.migrate()
    empty = signed_head(signer.name, 0, merkle.EMPTY_ROOT, signer)
    log = Log(store, store.create_log("evidence", signer.name, "evidence", signer.vkey, empty))
    return log, Sequencer(log, signer)


def stored_bundle(db: sqlite3.Connection, log_id: int, index: int) -> bytes:
    """Entry bundle `index` of log `log_id` as a SQLite store holds it: its `bundles` row and
    its parts (`ledger.schema.bundle_parts`), joined as the store reads them."""
    rows = db.execute(bundle_sql("?"), (log_id, index, log_id, index)).fetchall()
    return assemble_bundle(rows)[1]


def overwrite_bundle(db: sqlite3.Connection, log_id: int, index: int, data: bytes) -> None:
    """Replace entry bundle `index` of log `log_id` behind the server's back: one whole row,
    no parts (the caller commits)."""
    db.execute("DELETE FROM bundle_parts WHERE log_id = ? AND idx = ?", (log_id, index))
    db.execute(
        'INSERT INTO bundles (log_id, idx, "count", data) VALUES (?, ?, ?, ?)'
        ' ON CONFLICT (log_id, idx) DO UPDATE SET "count" = excluded."count", data = excluded.data',
        (log_id, index, len(decode_bundle(data)), data),
    )


def log_row_id(db: sqlite3.Connection, name: str = LOG) -> int:
    """The database id of log `name` in a SQLite store."""
    (log_id,) = db.execute("SELECT id FROM logs WHERE name = ?", (name,)).fetchone()
    return int(log_id)


def move_schema(store: Store, revision: str, *, down: bool = False) -> None:
    """Upgrade (with `down`, downgrade) the schema of `store` to Alembic `revision`, as
    `Store.migrate` runs its migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("ledger") / "migrations"))
    with store._write.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
