"""A tiny OpenAI-compatible chat-completions server on loopback that misbehaves on request.

Faults a real server does not produce on demand (HTTP 500, 429, malformed JSON, an empty choice
list, a body cut short, a request accepted and never answered) are scripted per request:
`FaultServer.script` is consumed one behaviour per request, then `default` applies. A good
answer is ``answer to: <last user message>`` with usage counts, and the model id `model`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = ("ok", "500", "429", "malformed", "empty", "truncated", "hang", "nocontent", "other")


@dataclass
class FaultServer:
    """State shared with the handler: the script, what was asked, and the release for hangs."""

    default: str = "ok"
    model: str = "fault-model"
    script: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def next_behaviour(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def answered(self) -> list[str]:
        """The last user message of every request received, in order."""
        return [r["messages"][-1]["content"] for r in self.requests]


def _completion(server: FaultServer, body: dict[str, Any], model: str) -> bytes:
    user = body["messages"][-1]["content"]
    doc = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answer to: {user}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 3, "total_tokens": 0},
    }
    return json.dumps(doc).encode()


def _handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.loads(raw)
            with server.lock:
                server.requests.append(body)
                server.headers.append(dict(self.headers))
            what = server.next_behaviour()
            if what == "ok":
                self._send(200, _completion(server, body, server.model))
            elif what == "other":
                self._send(200, _completion(server, body, "another-model"))
            elif what in ("500", "429"):
                self._send(int(what), b'{"error": "injected"}')
            elif what == "malformed":
                self._send(200, b'{"choices": [{"message": ')
            elif what == "empty":
                self._send(200, json.dumps({"model": server.model, "choices": []}).encode())
            elif what == "nocontent":
                self._send(200, json.dumps({"choices": [{"message": {"role": "x"}}]}).encode())
            elif what == "truncated":
                full = _completion(server, body, server.model)
                self._send(200, full[: len(full) // 2], length=len(full))
                self.close_connection = True
            elif what == "hang":
                server.release.wait(30)  # bounded: the test sets it on teardown
                self.close_connection = True
            else:
                raise AssertionError(what)

    return Handler


@contextmanager
def fault_server(**kw: Any) -> Iterator[FaultServer]:
    """A `FaultServer` listening on 127.0.0.1 (a free port); `url` is its ``/v1`` base."""
    state = FaultServer(**kw)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
