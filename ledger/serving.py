"""Serving an ASGI app with uvicorn, hardened for the open internet (`bledger serve`, `bledger
issuer serve`, `bledger witness serve`).

uvicorn alone keeps a connection that never completes a request open for ever, has no cap per
client, trusts X-Forwarded-For from loopback by default, prints its address before it has bound
it, and (with `--workers`) leaves its workers serving when the supervisor is killed. Here:

* `bind` takes the listening socket first and fails with `PortInUseError` when the port is
  taken, so a command says "serving on" only once it holds the port.
* `GuardedProtocol` (uvicorn's httptools protocol plus two timers and a counter) closes a
  connection whose request headers are not complete `Limits.header_timeout` seconds after it
  opened (or after the first byte of a later request on a kept-alive connection): a slowloris
  that trickles or never sends its headers is cut off, not just one that sits idle. A third
  timer does the same for the body: it must be complete `Limits.body_timeout` seconds after
  the headers (a 16 MiB batch at 1 MB/s takes 16 s), so a client that declares a large
  Content-Length and trickles it holds no worker for ever. It also
  closes at once any connection beyond `Limits.per_client` open from one peer address, so one
  host's idle sockets cannot lock everyone else out. Trusted proxies are exempt from the cap.
* uvicorn's own `timeout_keep_alive` closes idle kept-alive connections, and its
  `limit_concurrency` answers 503 beyond `Limits.max_connections` connections in all.
* `raise_file_limit` lifts the process's open-file limit (RLIMIT_NOFILE) from its soft to its
  hard value at start, so the connection cap, not the file limit, decides who is served.
* The client address is the socket's. X-Forwarded-For is honoured only from the networks named
  in `Limits.trusted_proxies` (`--trusted-proxy CIDR`); without any, proxy headers are ignored.
* Workers (`serve(..., workers=N)`) ask Linux to SIGTERM them when their supervisor dies
  (`prctl(PR_SET_PDEATHSIG)`), so a `kill -9` of the supervisor frees the port.
* Each serving process freezes what its start-up left alive (`FreezeAfterStartup`), so that
  the collector's full passes, which pause every request in flight, walk only what requests
  allocated since.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import ipaddress
import multiprocessing
import os
import resource
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from ledger.errors import LedgerError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
BACKLOG = 4096
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


class ServeError(LedgerError):
    """The server cannot start as asked."""


class PortInUseError(ServeError):
    """The address and port are held by another process."""


@dataclass(frozen=True)
class Limits:
    """Connection limits of one server process.

    `header_timeout`: seconds a connection may take to deliver a request's headers;
    `body_timeout`: seconds from the end of the headers to the end of the body;
    `keep_alive`: seconds an idle kept-alive connection stays open; `max_connections`: open
    connections in all before new requests get 503; `per_client`: open connections per peer
    address (trusted proxies exempt); `trusted_proxies`: CIDRs whose X-Forwarded-For is
    believed; `graceful_shutdown`: seconds in-flight requests get on SIGTERM.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive: int = 5
    max_connections: int = 2048
    per_client: int = 64
    trusted_proxies: tuple[str, ...] = ()
    graceful_shutdown: int = 10

    def __post_init__(self) -> None:
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as e:
                raise ServeError(f"--trusted-proxy {cidr!r} is not an address or CIDR") from e
        if min(self.header_timeout, self.body_timeout) <= 0:
            raise ServeError("timeouts must be positive")
        if self.per_client < 1 or self.max_connections < 1:
            raise ServeError("connection caps must be positive")

    def is_trusted(self, host: str) -> bool:
        """Whether `host` (a peer address) is one of the trusted proxies."""
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(
            addr in ipaddress.ip_network(cidr, strict=False) for cidr in self.trusted_proxies
        )


def raise_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on HOST:PORT; `PortInUseError` when another process holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR lets a restart take over a port whose old connections are in TIME_WAIT;
    # it does not let two live listeners share it (that is SO_REUSEPORT, left off).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"{host}:{port} is already in use by another process; stop it or pick --port"
            ) from e
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.set_inheritable(True)
    return sock


# -- the protocol: header timeout and per-client cap --------------------------------------------

_open_per_peer: Counter[str] = Counter()  # one uvicorn server per process
# The event loop runs a timer this close to its time (asyncio's own clock resolution): a
# clock whose timer fires that early has expired, as a timer set for its deadline would have.
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request-header and request-body timeouts and a
    per-peer cap."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._limits = getattr(config, "limits", Limits())
        self._peer: str | None = None
        # Each clock is a deadline (None: not running) and at most one loop timer that
        # fires no later than it. A request moves the deadlines (an attribute each) rather
        # than scheduling and cancelling a timer per clock per request; a timer that fires
        # before its clock's deadline sets itself again for that deadline. A clock's
        # successive deadlines only move later (now plus a fixed timeout), so a pending
        # timer never fires after one.
        self._header_deadline: float | None = None
        self._body_deadline: float | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the peer's connections (closing one over the cap) and start the header clock."""
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        if peer is not None and not self._limits.is_trusted(peer):
            if _open_per_peer[peer] >= self._limits.per_client:
                transport.close()
                return
            _open_per_peer[peer] += 1
            self._peer = peer
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clocks and uncount the connection."""
        self._header_deadline = self._body_deadline = None
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        if self._peer is not None:
            _open_per_peer[self._peer] -= 1
            if _open_per_peer[self._peer] <= 0:
                del _open_per_peer[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """A kept-alive connection's next request starts its own header clock."""
        if self._awaiting_headers and self._header_deadline is None:
            self._arm()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The headers arrived in time: the request is handed to the app."""
        self._awaiting_headers = False
        self._header_deadline = None
        super().on_headers_complete()
        # httptools calls on_message_complete at once for a request without a body.
        self._body_deadline = when = self.loop.time() + self._limits.body_timeout
        if self._body_timer is None:
            self._body_timer = self.loop.call_at(when, self._clock, "body")

    def on_message_complete(self) -> None:
        """The whole body arrived in time."""
        self._body_deadline = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Between requests the keep-alive timeout applies; a pipelined request already has
        its headers."""
        self._awaiting_headers = not self.pipeline
        super().on_response_complete()

    def _arm(self) -> None:
        self._header_deadline = when = self.loop.time() + self._limits.header_timeout
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(when, self._clock, "header")

    def _clock(self, name: str) -> None:
        """The timer of clock `name` ("header" or "body"): the connection expires once that
        clock's deadline has passed; a timer that fires before it sets itself again for it."""
        setattr(self, f"_{name}_timer", None)
        when: float | None = getattr(self, f"_{name}_deadline")
        if when is None:
            return
        if self.loop.time() + _CLOCK_RESOLUTION < when:
            setattr(self, f"_{name}_timer", self.loop.call_at(when, self._clock, name))
            return
        self._expire()

    def _expire(self) -> None:
        self._header_deadline = self._body_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


class GuardedConfig(uvicorn.Config):
    """uvicorn's config carrying `Limits` (pickled into each worker with the rest)."""

    def __init__(self, app: Any, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        self.supervisor_pid = os.getpid()
        trusted = list(limits.trusted_proxies)
        super().__init__(
            app,
            http=GuardedProtocol,
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or [],
            timeout_keep_alive=limits.keep_alive,
            limit_concurrency=limits.max_connections,
            timeout_graceful_shutdown=limits.graceful_shutdown,
            # A worker may take a while to import and open the database on a loaded machine;
            # the supervisor must not kill it for that (uvicorn's default is 5 s).
            timeout_worker_healthcheck=60,
            backlog=BACKLOG,
            log_level="warning",
            access_log=False,  # no log records who connected (the anonymous log's promise)
            **kwargs,
        )

    def load(self) -> None:
        """Load the app (in each process that serves it), wrapped in `FreezeAfterStartup`."""
        super().load()
        self.loaded_app = FreezeAfterStartup(self.loaded_app)

    def configure_logging(self) -> None:
        """Also the first thing uvicorn runs in each spawned worker: tie it to the supervisor."""
        super().configure_logging()
        if multiprocessing.parent_process() is not None:
            die_with_parent(self.supervisor_pid)


class FreezeAfterStartup:
    """ASGI middleware: once the app's lifespan startup is complete, every object then alive is
    moved to the collector's permanent generation (`gc.freeze`).

    A serving process holds tens of thousands of objects that live as long as it does
    (modules, pydantic's schemas, the routes, the server's logs and caches), and every full
    collection walks them again; requests allocate enough (parsed JSON, models, proofs) to
    start one every few thousand. Frozen, a collection walks only what was allocated since.
    A frozen object that later becomes cyclic garbage is never freed, so this is only for a
    process that does nothing but serve (`serve`), where what start-up leaves alive is kept.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def sent(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                gc.freeze()
            await send(message)

        await self.app(scope, receive, sent)


def die_with_parent(parent_pid: int) -> None:
    """Have Linux send this process SIGTERM when its parent exits; exit now if it already has.

    Elsewhere (no prctl) a thread polls the parent pid instead.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        _watch_parent(parent_pid)
    # The parent may have died before prctl took effect: then no signal will ever come.
    if os.getppid() != parent_pid:
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(
    app: Any, sock: socket.socket, limits: Limits, *, workers: int = 1, factory: bool = False
) -> None:
    """Serve `app` (an ASGI app, or an import string with `factory`) on the bound `sock`."""
    raise_file_limit()
    config = GuardedConfig(app, limits, workers=workers, factory=factory)
    if workers == 1:
        config.load_app()
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()
