"""ASGI factory for serving one data directory from several processes (`bledger serve --workers`).

Each worker process opens the same database and runs its own sequencers; the head-row lock makes
them take turns, so one batch at a time is integrated per log whichever process received it.
The parent process has already migrated the database and registered bootstrap keys, and
holds the listening socket (`ledger.serving.bind`); each worker asks Linux to stop it when the
parent dies (`ledger.serving.die_with_parent`), so a killed supervisor leaves no worker behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI

from ledger.api import create_app
from ledger.config import load_config
from ledger.server import LedgerServer

ENV = "BLEDGER_SERVE_OPTIONS"


def server_from_env() -> LedgerServer:
    """The server of one worker, configured from the JSON in $BLEDGER_SERVE_OPTIONS."""
    opts = json.loads(os.environ[ENV])
    cfg = load_config(Path(opts["data"]))
    return LedgerServer.from_config(
        cfg,
        extra_allow_keys=[Path(p) for p in opts.get("allow_keys", [])],
        anonymous_interval_ms=opts.get("anonymous_interval_ms"),
        tiles=opts.get("tiles"),
    )


def app() -> FastAPI:
    """The app of one worker (API only; `clients.web.asgi_app` adds the web page)."""
    return create_app(server_from_env())
