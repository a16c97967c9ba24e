"""The web page at `/ui/`: models, behaviour history, continuity chain, and per-record proofs.

The page (static files in `clients/web/`) fetches two JSON documents from this router:

* `GET /ui/api/models` — the models the evidence log holds records of, with their versions;
* `GET /ui/api/history/{model}` — `clients.history.build_history` of that model.

Both are computed from the statements stored in this server's evidence log, read directly from
the hosted log (the router runs in the server process). They are the server's *claims*: the page
then checks every record they name against the public JSON API (`/logs/{name}/checkpoint`,
`/entries/{i}`, `/proof/inclusion`) in the browser, exactly as any other client would, so no
endpoint here is trusted for anything but what to look at.

The `ledger` package never imports `clients`; `create_app` wraps `ledger.api.create_app` and adds
this router, and `asgi_app` is the uvicorn factory `bledger serve --workers` uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from clients.history import HistoryError, LoggedStatement, build_history, models, parse_logged
from ledger import api
from ledger.server import HostedLog, LedgerServer
from ledger.tiles import TILE_WIDTH

__all__ = ["ASSETS", "EVIDENCE", "STATIC", "StatementCache", "asgi_app", "create_app", "ui_router"]

STATIC: Final = Path(__file__).resolve().parent / "web"
"""Where the page's static files live."""

EVIDENCE: Final = "evidence"
"""The partition whose log's statements the page shows."""

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The only files served under `/ui/` (a fixed list: no path is ever joined from a request)."""

# Nothing outside this origin may load, and the page cannot be framed; `connect-src 'self'` keeps
# every fetch on this server. Inline SVG built through the DOM needs no exception.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Parser = Callable[[int, bytes, str], LoggedStatement | None]


class StatementCache:
    """The parsed statements of one hosted log, each entry read and parsed once.

    The log is append-only, so the parse of index i never changes; each call reads only the
    entries added since the last one. Entries that are not statements of this project parse to
    None and are skipped.
    """

    def __init__(self, hosted: HostedLog, parse: Parser = parse_logged) -> None:
        self.hosted, self.parse = hosted, parse
        self._parsed: list[LoggedStatement | None] = []
        self._lock = threading.Lock()

    def statements(self) -> tuple[int, list[LoggedStatement]]:
        """(tree size, every statement below it) as of the latest checkpoint."""
        size = self.hosted.log.head().size
        with self._lock:
            self._extend(size)
            parsed = self._parsed[:size]
        return size, [s for s in parsed if s is not None]

    def _extend(self, size: int) -> None:
        log, origin = self.hosted.log, self.hosted.origin
        while len(self._parsed) < size:
            start = len(self._parsed)
            bundle = log.bundle(start // TILE_WIDTH, size)  # one read per 256 entries
            for i in range(start, start // TILE_WIDTH * TILE_WIDTH + len(bundle)):
                self._parsed.append(self.parse(i, bundle[i % TILE_WIDTH], origin))


def _asset(name: str) -> Response:
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=_HEADERS)


def ui_router(server: LedgerServer, *, log: str | None = None) -> APIRouter:
    """The router serving the page and its JSON under `/ui/` for log `log` of `server`
    (default: the log of the evidence partition, whatever the config names it)."""
    router = APIRouter(prefix="/ui", include_in_schema=False)
    if log is None:
        log = next(h.name for h in server.logs.values() if h.partition == EVIDENCE)
    cache = StatementCache(server.logs[log])

    @router.get("")
    def ui_root() -> RedirectResponse:
        """`/ui` -> `/ui/`, so the page's relative URLs resolve."""
        return RedirectResponse("/ui/", status_code=308)

    @router.get("/")
    def index() -> Response:
        """The page."""
        return _asset("index.html")

    @router.get("/app.js")
    def script() -> Response:
        """The page's script."""
        return _asset("app.js")

    @router.get("/style.css")
    def style() -> Response:
        """The page's style sheet."""
        return _asset("style.css")

    @router.get("/api/models")
    def list_models() -> JSONResponse:
        """`{"log": {name, origin, size}, "models": [{model, versions}]}`."""
        size, statements = cache.statements()
        body = {"log": _log_json(cache.hosted, size), "models": models(statements)}
        return JSONResponse(body, headers=_HEADERS)

    @router.get("/api/history/{model:path}")
    def history(model: str) -> JSONResponse:
        """`clients.history.build_history(model, ...).to_json()`; 404 for an unknown model."""
        size, statements = cache.statements()
        if not any(m["model"] == model for m in models(statements)):
            raise api.ApiError(404, "unknown_model", f"no records of model {model!r} in {log}")
        try:
            body: dict[str, Any] = build_history(model, statements, size=size).to_json()
        except HistoryError as e:  # e.g. records of a suite this server does not ship
            raise api.ApiError(422, "no_history", e.diagnostic) from e
        body["log"] = _log_json(cache.hosted, size)  # the page needs the log's name
        return JSONResponse(body, headers=_HEADERS)

    return router


def _log_json(hosted: HostedLog, size: int) -> dict[str, object]:
    return {"name": hosted.name, "origin": hosted.origin, "size": size}


def create_app(server: LedgerServer) -> FastAPI:
    """`ledger.api.create_app(server)` with the web page at `/ui/`."""
    app = api.create_app(server)
    app.include_router(ui_router(server))
    return app


def asgi_app() -> FastAPI:
    """The uvicorn factory of one `bledger serve --workers` process: the API and the page."""
    from ledger.asgi import server_from_env

    return create_app(server_from_env())
