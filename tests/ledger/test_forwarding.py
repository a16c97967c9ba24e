"""Frontends forwarding admitted entries to one sequencer (`ledger.forwarding`,
`bledger serve --workers N`): in process against a real service on a Unix socket, and as the
served command."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from attest import merkle
from attest.tiles import TileId
from ledger.admission import Admitted
from ledger.config import init_data_dir
from ledger.forwarding import (
    MAX_FRAME,
    SequencerLink,
    SequencerService,
    SequencerUnavailable,
    _sendable,
    forward,
    private_socket_path,
)
from ledger.sequencer import PublishError, Sequenced
from ledger.server import LedgerServer
from tests.support import (
    LOG,
    ORIGIN_PREFIX,
    LedgerProcess,
    Signer,
    check_log,
    envelope_body,
    log_identity,
)

DEADLINE = 60.0


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.create(tmp_path / "keys")


def _server(data: Path, signer: Signer) -> LedgerServer:
    cfg = init_data_dir(data, origin_prefix=ORIGIN_PREFIX)
    return LedgerServer.from_config(cfg, extra_allow_keys=[signer.pub])


@pytest.fixture
def service(tmp_path: Path, signer: Signer) -> Iterator[SequencerService]:
    """The supervisor's side: a service sequencing the evidence log of DATA."""
    svc = SequencerService(_server(tmp_path / "data", signer), private_socket_path())
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _admitted(frontend: LedgerServer, signer: Signer, tags: list[str]) -> list[Admitted]:
    rule = frontend.logs[LOG].rule
    return [rule.admit(envelope_body(signer.envelope(t)), None) for t in tags]


def test_forwarded_writes_are_sequenced_by_the_service(
    tmp_path: Path, signer: Signer, service: SequencerService
) -> None:
    """Singles and a group from a frontend land once each, in the service's batches; a repeat
    gets its first index back; the frontend's own sequencer never runs."""
    frontend = _server(tmp_path / "data", signer)
    forward(frontend, SequencerLink(service.path))
    h = frontend.logs[LOG]
    singles = _admitted(frontend, signer, [f"single-{i}" for i in range(40)])
    group = _admitted(frontend, signer, [f"group-{i}" for i in range(25)])

    async def run() -> tuple[list[Sequenced], list[Sequenced | BaseException], Sequenced]:
        frontend.start()
        try:
            one = await asyncio.gather(*(h.sequencer.add(a) for a in singles))
            many = await h.sequencer.submit(group)
            again = await h.sequencer.add(singles[7])
            return one, many, again
        finally:
            await frontend.stop()

    one, many, again = asyncio.run(run())
    assert all(isinstance(s, Sequenced) for s in many)
    done = [*one, *(s for s in many if isinstance(s, Sequenced))]
    assert sorted(s.index for s in done) == list(range(65))
    for a, s in zip([*singles, *group], done, strict=True):
        assert s.leaf_hash == merkle.leaf_hash(a.leaf) and not s.duplicate
    assert again.duplicate and again.index == one[7].index
    # Written by the service's process, read here from the shared database.
    reader = _server(tmp_path / "data", signer)
    try:
        assert reader.logs[LOG].log.head().size == 65
    finally:
        reader.store.close()


def test_a_reply_brings_the_tree_the_frontend_proves_from(
    tmp_path: Path, signer: Signer, service: SequencerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reply carries the log's right-edge tiles: the frontend makes its writes' proofs
    from them, and reads a tile from the database only once it is full (the edge holds the
    newest tile of each level, and a batch that completes one moves on past it; a full tile
    is then kept), and the proofs verify against the checkpoints the service signed."""
    frontend = _server(tmp_path / "data", signer)
    forward(frontend, SequencerLink(service.path))
    h = frontend.logs[LOG]
    # Batches of 40: the level-0 tile 0 grows, fills in the seventh, and tile 1 starts.
    batches = [_admitted(frontend, signer, [f"edge-{b}-{i}" for i in range(40)]) for b in range(7)]

    reads: list[TileId] = []
    read_tile = frontend.store.read_tile

    def counted(log_id: int, tile: TileId) -> bytes:
        reads.append(tile)
        return read_tile(log_id, tile)

    monkeypatch.setattr(frontend.store, "read_tile", counted)

    async def run() -> list[tuple[Sequenced, list[bytes]]]:
        frontend.start()
        try:
            out = []
            for batch in batches:
                for s in await h.sequencer.submit(batch):
                    assert isinstance(s, Sequenced), s
                    out.append((s, list(h.log.inclusion_proofs([s.index], s.head.size)[0].hashes)))
            return out
        finally:
            await frontend.stop()

    proved = asyncio.run(run())
    assert len(proved) == 280
    for (s, hashes), a in zip(proved, [a for b in batches for a in b], strict=True):
        assert s.leaf_hash == merkle.leaf_hash(a.leaf)
        merkle.verify_inclusion(s.leaf_hash, s.index, s.head.size, hashes, s.head.root)
    assert reads == [TileId(0, 0)], reads  # full once the seventh batch passed it


def test_a_link_that_cannot_connect_fails_its_writes(tmp_path: Path, signer: Signer) -> None:
    frontend = _server(tmp_path / "data", signer)
    try:
        link = SequencerLink(str(tmp_path / "nobody-listens.sock"))
        (entry,) = _admitted(frontend, signer, ["lonely"])

        async def run() -> list[Sequenced | BaseException]:
            return await link.submit(LOG, [entry, entry])

        got = asyncio.run(run())
        assert len(got) == 2
        assert all(isinstance(r, SequencerUnavailable) for r in got)
        assert "cannot connect" in str(got[0]) and "retry" in str(got[0])
    finally:
        frontend.store.close()


def test_a_broken_link_fails_the_writes_it_carried_and_reconnects(
    tmp_path: Path, signer: Signer, service: SequencerService
) -> None:
    """A peer that reads a request and hangs up: that write fails with 503's error, none is
    left waiting; the next write connects again and is sequenced."""
    frontend = _server(tmp_path / "data", signer)
    try:
        first, second = _admitted(frontend, signer, ["cut-off", "after"])
        path = str(tmp_path / "rude.sock")

        async def run() -> tuple[list[Sequenced | BaseException], list[Sequenced | BaseException]]:
            async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.read(1)
                writer.close()

            rude_server = await asyncio.start_unix_server(rude, path=path)
            async with rude_server:
                link = SequencerLink(path)
                cut = await asyncio.wait_for(link.submit(LOG, [first]), DEADLINE)
            link.path = service.path  # the sequencer is back, at its address
            later = await asyncio.wait_for(link.submit(LOG, [second]), DEADLINE)
            await link.close()
            return cut, later

        cut, later = asyncio.run(run())
        assert isinstance(cut[0], SequencerUnavailable), cut
        assert isinstance(later[0], Sequenced) and later[0].index == 0, later
    finally:
        frontend.store.close()


def test_a_stopping_frontend_answers_the_writes_it_forwarded(
    tmp_path: Path, signer: Signer
) -> None:
    """A frontend stopped while its writes wait on a sequencer that has not answered: each
    gets a 503's `SequencerUnavailable` saying the frontend stopped, none is left hanging."""
    frontend = _server(tmp_path / "data", signer)
    entries = _admitted(frontend, signer, ["waiting-1", "waiting-2"])
    path = str(tmp_path / "silent.sock")

    async def run() -> list[Sequenced | BaseException]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # takes the request and never answers

        silent_server = await asyncio.start_unix_server(silent, path=path)
        async with silent_server:
            forward(frontend, SequencerLink(path))
            frontend.start()
            writes = [asyncio.ensure_future(frontend.logs[LOG].sequencer.add(e)) for e in entries]
            await asyncio.sleep(0.2)
            assert not any(w.done() for w in writes)
            await frontend.stop()
            return await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), DEADLINE)

    got = asyncio.run(run())
    assert len(got) == 2 and all(isinstance(r, SequencerUnavailable) for r in got), got
    assert all("the frontend is stopping" in str(r) for r in got), got


def test_a_bad_frame_closes_that_link_only(
    tmp_path: Path, signer: Signer, service: SequencerService, caplog: pytest.LogCaptureFixture
) -> None:
    """An oversize length, a frame that is not a list of messages, and one whose message is not
    a request: the service drops the connection that sent it and goes on serving the others."""
    frontend = _server(tmp_path / "data", signer)
    try:
        (entry,) = _admitted(frontend, signer, ["still-served"])

        async def bad(payload: bytes) -> bytes:
            reader, writer = await asyncio.open_unix_connection(service.path)
            writer.write(payload)
            got = await asyncio.wait_for(reader.read(), DEADLINE)  # b"" once it is closed
            writer.close()
            return got

        async def run() -> list[Sequenced | BaseException]:
            assert await bad((MAX_FRAME + 1).to_bytes(4, "big")) == b""
            not_a_list = pickle.dumps({"id": 1})
            assert await bad(len(not_a_list).to_bytes(4, "big") + not_a_list) == b""
            not_a_request = pickle.dumps([(1, "evidence")])
            assert await bad(len(not_a_request).to_bytes(4, "big") + not_a_request) == b""
            link = SequencerLink(service.path)
            try:
                return await asyncio.wait_for(link.submit(LOG, [entry]), DEADLINE)
            finally:
                await link.close()

        (res,) = asyncio.run(run())
        assert isinstance(res, Sequenced), res
        # Each was a refusal the service expected, not a crash of its connection handler.
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        frontend.store.close()


class _Stubborn(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def test_results_travel_as_exceptions_the_frontend_can_answer() -> None:
    """A `PublishError` and `SequencerUnavailable` arrive as themselves (503s); an exception
    whose pickle cannot rebuild it arrives as a RuntimeError naming it (a 500)."""

    async def settled() -> asyncio.Future[list[Sequenced | BaseException]]:
        fut: asyncio.Future[list[Sequenced | BaseException]] = (
            asyncio.get_running_loop().create_future()
        )
        fut.set_result(
            [PublishError(7, "store down"), SequencerUnavailable("gone"), _Stubborn(1, 2)]
        )
        return fut

    got = pickle.loads(pickle.dumps(_sendable(asyncio.run(settled()), 3)))
    assert isinstance(got[0], PublishError) and got[0].size == 7
    assert got[0].diagnostic == PublishError(7, "store down").diagnostic
    assert isinstance(got[1], SequencerUnavailable) and "gone" in got[1].diagnostic
    assert type(got[2]) is RuntimeError and str(got[2]) == "_Stubborn: 1/2"

    async def cancelled() -> asyncio.Future[list[Sequenced | BaseException]]:
        fut: asyncio.Future[list[Sequenced | BaseException]] = (
            asyncio.get_running_loop().create_future()
        )
        fut.cancel()
        return fut

    # One answer per entry sent, whatever became of the submit.
    stopped = _sendable(asyncio.run(cancelled()), 4)
    assert len(stopped) == 4 and all(isinstance(r, RuntimeError) for r in stopped)


def test_the_socket_is_private(service: SequencerService) -> None:
    mode = os.stat(os.path.dirname(service.path)).st_mode & 0o777
    assert mode == 0o700, oct(mode)


def test_connections_at_shutdown_end_on_the_services_loop(tmp_path: Path, signer: Signer) -> None:
    """Frontends connecting while the service stops: every connection handler ends before the
    service's loop closes, none is left for the garbage collector to close on a dead loop."""
    unraisable: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(f"{u.exc_value!r} in {u.object!r}")
    try:
        for round_ in range(10):
            server = _server(tmp_path / f"data-{round_}", signer)
            svc = SequencerService(server, private_socket_path())
            svc.start()
            stop = threading.Event()

            def connect(path: str = svc.path, stop: threading.Event = stop) -> int:
                held: list[socket.socket] = []
                made = 0
                while not stop.is_set():
                    s = socket.socket(socket.AF_UNIX)
                    try:
                        s.connect(path)
                    except OSError:
                        s.close()
                        continue
                    held.append(s)
                    made += 1
                    if len(held) > 50:  # within the process's file limit, both ends in it
                        held.pop(0).close()
                for s in held:
                    s.close()
                return made

            with ThreadPoolExecutor(4) as pool:
                made = [pool.submit(connect) for _ in range(4)]
                time.sleep(0.05)
                svc.stop()
                stop.set()
                assert sum(f.result() for f in made) > 0
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not unraisable, unraisable


# -- as served ----------------------------------------------------------------------------------


def test_frontends_wait_for_the_supervisors_sequencer(tmp_path: Path, signer: Signer) -> None:
    """With the supervisor stopped (SIGSTOP) the frontends still read, but a write is not
    answered until it runs again: the supervisor sequences, not the frontend that took it."""
    srv = LedgerProcess(tmp_path / "data", allow_keys=(signer.pub,), extra_args=("--workers", "2"))
    srv.start()
    assert srv.proc is not None
    body = envelope_body(signer.envelope("held"))
    try:
        with httpx.Client(base_url=srv.base_url, timeout=DEADLINE) as http:
            os.kill(srv.proc.pid, signal.SIGSTOP)
            try:
                assert http.get(f"/logs/{LOG}/checkpoint").status_code == 200
                with pytest.raises(httpx.ReadTimeout):
                    http.post(f"/logs/{LOG}/entries", content=body, timeout=2.0)
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            r = http.post(f"/logs/{LOG}/entries", content=body)
            assert r.status_code == 200, r.text
            assert r.json()["index"] == 0  # the held write was sequenced once it ran
    finally:
        srv.stop()


def test_acknowledged_writes_survive_kill_9_of_the_supervisor(
    tmp_path: Path, signer: Signer
) -> None:
    """Writers keep posting through two frontends while the supervisor is killed: every
    write answered 200 is in the log after a restart, at its index, under a consistent
    checkpoint; writes in flight fail (503 or a dropped connection), never a wrong answer."""
    srv = LedgerProcess(tmp_path / "data", allow_keys=(signer.pub,), extra_args=("--workers", "2"))
    srv.start()
    bodies = [envelope_body(signer.envelope(f"kill-{i}")) for i in range(600)]
    acked: dict[int, str] = {}
    try:
        with httpx.Client(base_url=srv.base_url, timeout=10) as http:

            def post(i: int) -> None:
                try:
                    r = http.post(f"/logs/{LOG}/entries", content=bodies[i])
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked[i] = f"{r.json()['index']}:{r.json()['leaf_hash']}"
                else:
                    assert r.status_code == 503, r.text

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(post, i) for i in range(len(bodies))]
                deadline = time.monotonic() + DEADLINE
                while len(acked) < 100:
                    assert time.monotonic() < deadline, "no writes were acknowledged"
                    time.sleep(0.01)
                srv.kill9()
                for f in futures:
                    f.result()
        assert 100 <= len(acked) < len(bodies)
        srv.start()
        vkey, origin = log_identity(srv.base_url)
        cp = check_log(srv.base_url, vkey, origin)
        with httpx.Client(base_url=srv.base_url, timeout=DEADLINE) as http:
            for i, where in acked.items():
                index = int(where.split(":")[0])
                assert index < cp.size
                r = http.post(f"/logs/{LOG}/entries", content=bodies[i])
                assert r.status_code == 200 and r.json()["duplicate"], r.text
                assert f"{r.json()['index']}:{r.json()['leaf_hash']}" == where
    finally:
        srv.stop()
