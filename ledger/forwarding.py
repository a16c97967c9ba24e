"""Several HTTP frontends feeding one sequencer per log (`bledger serve --workers N`).

A single serving process spends about one core per write on HTTP, admission and the answer's
proof, so it caps single-envelope writes whatever the machine has. With `--workers N` the
supervisor keeps the logs' sequencers (`SequencerService`, on a thread of its own event loop)
and N frontend processes accept connections on the one listening socket (the kernel spreads
them), admit each envelope themselves, and forward what they admitted to the supervisor over a
Unix socket (`SequencerLink`); the sequencer answers with each entry's `Sequenced`, and the
frontend makes the proofs and answers. Batches stay whole across the link, so the log is
sequenced in the batches one process would have made, rather than in the small ones that
several processes taking turns on the database's write lock make.

The wire: each frame is a 4-byte big-endian length and a pickle of a list of messages, one
frame per pass of the sender's event loop. A request is `(id, log name, entries)`, a reply
`(id, results, edge)` with one `Sequenced` or exception per entry, as `Sequencer.submit` gives
them, and the log's right-edge tiles as of the reply (`Log.edge`): the tree the proofs are made
from, which the frontend would otherwise read back from the database for every batch (more than
half of what seven single writes' proofs cost together). Tiles only grow, so an edge at least as
new as the results serves their proofs.
Pickle is safe here because both ends are this server's own processes: the socket lives in a
directory only the server's user can enter (`private_socket_path`).

Durability is unchanged: the sequencer replies after its batch committed (and was published),
and the frontend answers after the reply. A link that breaks fails its waiting writes with
`SequencerUnavailable` (503): their entries may or may not have been sequenced, and a retry
gets the same index back (the log keeps one entry per statement).

The anonymous log is not forwarded: its entries wait for interval batches in each frontend
(`ledger.partitions.AnonymousQueue`), and those frontends take turns on its head row.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import pickle
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

from attest.tiles import TileId
from ledger.admission import Admitted
from ledger.errors import LedgerError
from ledger.sequencer import Sequenced
from ledger.server import LedgerServer

_HEADER = 4  # bytes of frame length
MAX_FRAME = 1 << 30  # a frame longer than this is a broken peer, not a big batch
SOCKET_NAME = "sequencer.sock"

Results = list[Sequenced | BaseException]


class SequencerUnavailable(LedgerError):
    """The frontend lost its link to the sequencer before the write was answered."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"the sequencer did not answer ({problem}); the entry may or may not be in the "
            "log, and a retry returns its index either way"
        )
        self.problem = problem

    def __reduce__(self) -> tuple[type[SequencerUnavailable], tuple[str]]:
        return (type(self), (self.problem,))


def private_socket_path() -> str:
    """A path for the service's socket, in a new directory only this user may enter (mode
    0700, `tempfile.mkdtemp`): no other local user can connect and feed it pickles."""
    return os.path.join(tempfile.mkdtemp(prefix="bledger-"), SOCKET_NAME)


def forwarded(server: LedgerServer) -> list[str]:
    """The logs whose writes frontends forward: all but the anonymous log."""
    return [h.name for h in server.logs.values() if h.queue is None]


# -- framing ----------------------------------------------------------------------------------


def _frame(messages: list[Any]) -> bytes:
    payload = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_HEADER, "big") + payload


async def _read_frame(reader: asyncio.StreamReader) -> list[Any]:
    size = int.from_bytes(await reader.readexactly(_HEADER), "big")
    if size > MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes")
    messages = pickle.loads(await reader.readexactly(size))
    if not isinstance(messages, list):
        raise ConnectionError("a frame that is not a list of messages")
    return messages


class _Outbox:
    """Messages queued in one pass of the event loop, written as one frame after it."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self._queued: list[Any] = []

    def put(self, message: Any) -> None:
        if not self._queued:
            asyncio.get_running_loop().call_soon(self.flush)
        self._queued.append(message)

    def flush(self) -> None:
        """Write what is queued, if connected (else it waits for the next flush)."""
        if self.writer is None or not self._queued:
            return
        queued, self._queued = self._queued, []
        self.writer.write(_frame(queued))

    def drop(self) -> list[Any]:
        """Forget (and return) what was never written."""
        queued, self._queued = self._queued, []
        return queued


# -- the supervisor's side ----------------------------------------------------------------------


class SequencerService:
    """The sequencers of `server`'s forwarded logs, run on an event loop in a thread of their
    own and answering frontends on the Unix socket `path`."""

    def __init__(self, server: LedgerServer, path: str) -> None:
        self.server, self.path = server, path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self) -> None:
        """Start the thread; returns once the socket is listening (or raises why it is not)."""
        self._thread = threading.Thread(target=self._run, name="sequencer-service", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Stop accepting, stop the sequencers (their queued entries fail, never
        acknowledged), close the database, and end the thread."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(FileNotFoundError, OSError):
            os.unlink(self.path)
            os.rmdir(os.path.dirname(self.path))

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to `start`, or said here
            if self._ready.is_set():  # after start: the frontends' writes now answer 503
                print(f"sequencer service stopped: {e!r}", file=sys.stderr, flush=True)
            self._failure = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        names = forwarded(self.server)
        for name in names:
            self.server.logs[name].sequencer.start()
        try:
            listener = await asyncio.start_unix_server(self._serve, path=self.path)
            self._ready.set()
            async with listener:
                await self._stopping.wait()
        finally:
            self._closing = True
            for name in names:
                await self.server.logs[name].sequencer.stop()
            await self._end_handlers()
            self.server.store.close()

    async def _end_handlers(self) -> None:
        """End every connection handler while this loop still runs. A connection the listener
        accepted just before it closed gets its handler a few loop passes later (accept, make
        the transport, `connection_made`), after `asyncio.run` has taken its list of tasks to
        cancel; left alone, that handler would be collected after the loop closed, and its
        `writer.close()` would raise there. So: give those passes (the accept's task, the
        transport's `connection_made`, the handler's first step: three, and one to spare), then
        cancel what is left. The listener is closed by now: no connection is accepted after."""
        for _ in range(4):
            await asyncio.sleep(0)
        while self._handlers:
            pending = list(self._handlers)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One frontend's link: submit each request's entries, reply when they are settled."""
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.close()
            return
        self._handlers.add(task)
        out = _Outbox()
        out.writer = writer
        try:
            while True:
                for rid, name, entries in await _read_frame(reader):
                    self._submit(out, rid, name, entries)
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError):
            pass  # the frontend went away (or broke the framing): its replies have no reader
        except (TypeError, ValueError):
            pass  # a message that is not (id, log, entries): the peer is not a frontend
        finally:
            out.writer = None
            writer.close()
            self._handlers.discard(task)

    def _submit(self, out: _Outbox, rid: int, name: str, entries: list[bytes | Admitted]) -> None:
        h = self.server.logs.get(name)
        if h is None or h.queue is not None:
            err = SequencerUnavailable(f"log {name!r} is not sequenced here")
            out.put((rid, [err] * len(entries), {}))
            return
        fut = h.sequencer.submit(entries)
        # The edge is taken when the results are: after their batch's commit, so it holds
        # their tree.
        fut.add_done_callback(lambda f: out.put((rid, _sendable(f, len(entries)), h.log.edge())))


def _sendable(fut: asyncio.Future[Results], n: int) -> Results:
    """The `n` results of a settled submit, each exception one that survives pickling (an
    exception class whose constructor its pickle cannot call becomes a RuntimeError naming
    it, which the frontend answers as a 500, as it would have answered the original)."""
    if fut.cancelled():
        return [RuntimeError("sequencer stopped")] * n
    results = fut.result()
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            try:
                pickle.loads(pickle.dumps(r))
            except Exception:
                results[i] = RuntimeError(f"{type(r).__name__}: {r}")
    return results


# -- a frontend's side ----------------------------------------------------------------------------


class SequencerLink:
    """A frontend's connection to the `SequencerService` at `path`, made on first use and
    again after it breaks. `submit(name)` is what `Sequencer.forward_to` plugs in."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._out = _Outbox()
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[asyncio.Future[Results], int, str]] = {}
        # Per log name, what takes the edge tiles a reply brings (`Log.remember_edge`).
        self.edges: dict[str, Callable[[dict[TileId, bytes]], None]] = {}
        self._connecting: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None

    def submit(self, name: str, entries: Sequence[bytes | Admitted]) -> asyncio.Future[Results]:
        """Send `entries` of log `name` to be sequenced; their results, as
        `Sequencer.submit` gives them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Results] = loop.create_future()
        if not entries:
            fut.set_result([])
            return fut
        rid = next(self._ids)
        self._waiting[rid] = (fut, len(entries), name)
        self._out.put((rid, name, list(entries)))
        if self._out.writer is None and self._connecting is None:
            self._connecting = loop.create_task(self._connect())
        return fut

    async def close(self) -> None:
        """Close the connection; writes still waiting fail (503: the frontend is stopping)."""
        self._fail("the frontend is stopping")
        for task in (self._connecting, self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _connect(self) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path)
        except OSError as e:
            self._fail(f"cannot connect to {self.path}: {e.strerror or e}")
            return
        finally:
            self._connecting = None
        self._out.writer = writer
        self._out.flush()
        self._reading = asyncio.get_running_loop().create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        problem = "the link closed"
        try:
            while True:
                for rid, results, edge in await _read_frame(reader):
                    fut, _, name = self._waiting.pop(rid, (None, 0, ""))
                    remember = self.edges.get(name)
                    if remember is not None and edge:  # before the writers ask for proofs
                        remember(edge)
                    if fut is not None and not fut.done():
                        fut.set_result(results)
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError) as e:
            problem = f"the link broke: {type(e).__name__}"
        except (TypeError, ValueError) as e:  # a reply that is not (id, results, edge)
            problem = f"the link broke: {type(e).__name__}"
        finally:
            self._out.writer = None
            writer.close()
            self._reading = None
            self._fail(problem)

    def _fail(self, problem: str) -> None:
        """Every write sent or queued gets `SequencerUnavailable`: none is answered as
        sequenced, and none is left waiting for a reply that cannot come."""
        self._out.drop()
        waiting, self._waiting = self._waiting, {}
        err = SequencerUnavailable(problem)
        for fut, n, _ in waiting.values():
            if not fut.done():
                fut.set_result([err] * n)


def forward(server: LedgerServer, link: SequencerLink) -> None:
    """Make a frontend's forwarded logs send their entries through `link`, closed when the
    frontend stops (its writes still waiting then fail with `SequencerUnavailable`, a 503)."""
    for name in forwarded(server):
        server.logs[name].sequencer.forward_to(functools.partial(link.submit, name))
        link.edges[name] = server.logs[name].log.remember_edge
    server.on_stop.append(link.close)
