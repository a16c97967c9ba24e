"""The web page at `/ui/`: models, behaviour history, continuity chain, and per-record proofs.

The page (static files in `clients/web/`) fetches these documents from this router:

* `GET /ui/api/models` — the models the evidence log holds records of, with their versions;
* `GET /ui/api/history/{model}` — `clients.history.build_history` of that model (its rows
  carry the verdict figures), under each succession's ``noise`` its diff with the noise floors
  applied per cell (`clients.history.succession_noise`, as `bledger lab continuity` applies
  them) and under its ``judge_changes`` the lines `bledger lab continuity` prints as "judges
  differ" (`Continuity.judge_changes`, which the page recounts from the records it verified),
  and under ``evalGroups`` its imported eval samples summarised per task, scorer and
  config (`clients.eval_summary.eval_groups`);
* `GET /ui/api/suites/{name}/{version}` — a shipped probe suite's exact bytes, from which the
  page takes item kinds to recount the verdict figures, once their SHA-256 is the digest the
  records name.

The first two are computed from the statements stored in this server's evidence log, found
through its read index (`ledger.index`) and read directly from the hosted log (the router runs in
the server process). They are the server's *claims*: the page
then checks every record they name against the public JSON API (`/logs/{name}/checkpoint`,
`/entries/{i}`, `/proof/inclusion`) in the browser, exactly as any other client would, so no
endpoint here is trusted for anything but what to look at.

The `ledger` package never imports `clients`; `create_app` wraps `ledger.api.create_app` and adds
this router, and `asgi_app` is the uvicorn factory `bledger serve --workers` uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from attest.predicates import EVAL_SAMPLE
from clients.eval_summary import eval_groups
from clients.history import (
    HistoryError,
    LoggedStatement,
    build_history,
    models,
    parse_logged,
    succession_noise,
)
from clients.probe.suites import SuiteError, suite_path
from ledger import api, index
from ledger.server import HostedLog, LedgerServer

__all__ = [
    "ASSETS",
    "EVIDENCE",
    "STATIC",
    "asgi_app",
    "create_app",
    "statements_about",
    "ui_router",
]

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


def statements_about(hosted: HostedLog, model: str) -> tuple[int, list[LoggedStatement]]:
    """(tree size, the statements about `model`), found through the log's read index and read
    from the log itself: only the entries named are read and parsed."""
    size, rows = index.query(hosted.log, {"model": model}, limit=index.MAX_LIMIT)
    found = list(rows)
    while len(rows) == index.MAX_LIMIT:  # every page
        size, rows = index.query(hosted.log, {"model": model}, start=rows[-1].idx + 1)
        found += rows
    out = []
    for r in found:
        if r.idx < size:
            logged = parse_logged(r.idx, hosted.log.entry(r.idx), hosted.origin)
            if logged is not None:
                out.append(logged)
    return size, out


def _asset(name: str) -> Response:
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=_HEADERS)


def ui_router(server: LedgerServer, *, log: str | None = None) -> APIRouter:
    """The router serving the page and its JSON under `/ui/` for log `log` of `server`
    (default: the log of the evidence partition, whatever the config names it)."""
    router = APIRouter(prefix="/ui", include_in_schema=False)
    if log is None:
        log = next(h.name for h in server.logs.values() if h.partition == EVIDENCE)
    hosted = server.logs[log]

    @router.get("")
    def ui_root() -> RedirectResponse:
        """`/ui` -> `/ui/`, so the page's relative URLs resolve."""
        return RedirectResponse("/ui/", status_code=308)

    @router.get("/")
    def page() -> Response:
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
        size, pairs = index.models(hosted.log)
        pairs += _eval_models(hosted)
        versions: dict[str, list[str]] = {}
        for model, version in pairs:
            if version in versions.get(model, []):
                continue
            versions.setdefault(model, []).append(version)
        found = [{"model": m, "versions": v} for m, v in versions.items()]
        body = {"log": _log_json(hosted, size), "models": found}
        return JSONResponse(body, headers=_HEADERS)

    @router.get("/api/history/{model:path}")
    def history(model: str) -> JSONResponse:
        """`clients.history.build_history(model, ...).to_json()`; 404 for an unknown model."""
        size, statements = statements_about(hosted, model)
        evals = eval_groups(statements, model)
        if not evals and not any(m["model"] == model for m in models(statements)):
            raise api.ApiError(404, "unknown_model", f"no records of model {model!r} in {log}")
        try:
            built = build_history(model, statements, size=size)
            body: dict[str, Any] = built.to_json()
            # Per succession, its diff with the noise floors applied per cell, recomputed from
            # the records the statement names (which the page checks by leaf hash), and the
            # judging roles whose judges differ between its two sides (None: not recomputed).
            for c, out in zip(built.continuity, body["continuity"], strict=True):
                noise = succession_noise(c, statements)
                out["noise"] = noise.to_json()
                out["judge_changes"] = (
                    None if noise.result is None else list(noise.result.judge_changes)
                )
        except HistoryError as e:  # e.g. records of a suite this server does not ship
            raise api.ApiError(422, "no_history", e.diagnostic) from e
        body["log"] = _log_json(hosted, size)  # the page needs the log's name
        body["evalGroups"] = evals  # imported eval samples (bledger import inspect)
        return JSONResponse(body, headers=_HEADERS)

    @router.get("/api/suites/{name}/{version}")
    def suite(name: str, version: str) -> Response:
        """The exact bytes of the shipped probe suite `name`-`version`: the page checks their
        SHA-256 against the digest the records name before reading item kinds from them."""
        if not (_SUITE_NAME.fullmatch(name) and version.isdigit()):
            raise api.ApiError(404, "unknown_suite", f"no suite {name!r} version {version!r}")
        try:
            path = suite_path(name, version)
        except SuiteError as e:
            raise api.ApiError(404, "unknown_suite", str(e)) from e
        return FileResponse(path, media_type="application/json", headers=_HEADERS)

    return router


_SUITE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
"""A suite name as the shipped files spell it (never a path: nothing is joined from it)."""


def _eval_models(hosted: HostedLog) -> list[tuple[str, str]]:
    """The (model, version) pairs with imported eval samples (`bledger import inspect`), from
    the read index (which `index.models` has just caught up)."""
    kind = index.short_type(EVAL_SAMPLE)
    return hosted.log.store.index_models(hosted.log.id, kind)


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
