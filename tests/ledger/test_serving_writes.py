"""`ledger.serving.GuardedProtocol` sends each response in one write, with the same bytes as
uvicorn's own protocol (the reference, which writes the head and the body apart).

Both protocols serve the same requests from the same app over a recording transport; the bytes
on the wire must be equal, and for a response with a body the guarded protocol must have written
them in one call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ledger.serving import GuardedConfig, GuardedProtocol, Limits


class Transport(asyncio.Transport):
    """Records what is written; closes when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers by path: a JSON body, an empty body, a chunked body, headers then an error."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return
    if path == "/fail-after-head":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("the app failed after its head")
    if path == "/fail":
        raise RuntimeError("the app failed before answering")
    data = b"" if path == "/empty" else b'{"echo":%d}' % len(body)
    headers = [(b"content-length", str(len(data)).encode()), (b"content-type", b"x/y")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


REQUESTS = {
    "post": b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "head": b"HEAD /w HTTP/1.1\r\nHost: x\r\n\r\n",
    "empty": b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
    "close": b"POST /w HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
    "http10": b"GET /w HTTP/1.0\r\nHost: x\r\n\r\n",
    "chunked": b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
    "fail": b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n",
    "fail-after-head": b"GET /fail-after-head HTTP/1.1\r\nHost: x\r\n\r\n",
    "continue": (
        b"POST /w HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab"
    ),
    "pipelined": (
        b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
        b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nbb"
    ),
}


def serve(protocol_class: type[HttpToolsProtocol], request: bytes) -> Transport:
    async def run() -> Transport:
        config = GuardedConfig(app, Limits(), lifespan="off", date_header=False)
        config.load()
        state = ServerState()
        proto = protocol_class(config, state, {})  # type: ignore[arg-type]
        transport = Transport()
        proto.connection_made(transport)
        proto.data_received(request)
        for _ in range(50):
            await asyncio.sleep(0)
        while state.tasks:
            await asyncio.gather(*state.tasks, return_exceptions=True)
            for _ in range(20):
                await asyncio.sleep(0)
        proto.connection_lost(None)
        return transport

    return asyncio.run(run())


@pytest.mark.parametrize("name", list(REQUESTS))
def test_same_bytes_as_uvicorn(name: str) -> None:
    want = serve(HttpToolsProtocol, REQUESTS[name])
    got = serve(GuardedProtocol, REQUESTS[name])
    assert b"".join(got.writes) == b"".join(want.writes)
    assert got.closed == want.closed
    assert b"".join(want.writes), "the reference answered something"


@pytest.mark.parametrize("name", ["post", "close", "http10", "empty"])
def test_a_response_with_a_length_is_one_write(name: str) -> None:
    want = serve(HttpToolsProtocol, REQUESTS[name])
    got = serve(GuardedProtocol, REQUESTS[name])
    assert len(want.writes) == 2  # uvicorn: the head, then the body
    assert len(got.writes) == 1


def test_the_head_of_a_head_request_is_not_held_back() -> None:
    got = serve(GuardedProtocol, REQUESTS["head"])
    assert len(got.writes) == 1 and got.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


def test_uvicorn_still_builds_the_cycle_the_protocol_swaps() -> None:
    # GuardedProtocol replaces the class of the cycle uvicorn just made; a newer uvicorn that
    # made another class would leave responses in two writes (and this test fails).
    got = serve(GuardedProtocol, REQUESTS["pipelined"])
    assert len(got.writes) == 2
    assert uvicorn.__version__
