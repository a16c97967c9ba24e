"""ASGI factory for serving one data directory from several processes (`bledger serve --workers`).

Each worker process opens the same database, admits what its connections post, and forwards it
to the sequencers the parent runs (`ledger.forwarding`), named in the options by the path of
their socket; without one (or for the anonymous log) it runs its own sequencers, and the
head-row lock makes the processes take turns. The parent process has already migrated the
database and registered bootstrap keys, and holds the listening socket (`ledger.serving.bind`);
each worker asks Linux to stop it when the parent dies (`ledger.serving.die_with_parent`), so a
killed supervisor leaves no worker behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI

from ledger.api import create_app
from ledger.config import load_config
from ledger.forwarding import SequencerLink, forward
from ledger.server import LedgerServer

ENV = "BLEDGER_SERVE_OPTIONS"


def server_from_env() -> LedgerServer:
    """The server of one worker, configured from the JSON in $BLEDGER_SERVE_OPTIONS."""
    opts = json.loads(os.environ[ENV])
    cfg = load_config(Path(opts["data"]))
    server = LedgerServer.from_config(
        cfg,
        extra_allow_keys=[Path(p) for p in opts.get("allow_keys", [])],
        anonymous_interval_ms=opts.get("anonymous_interval_ms"),
        tiles=opts.get("tiles"),
    )
    if opts.get("sequencer"):
        forward(server, SequencerLink(opts["sequencer"]))
    return server


def app() -> FastAPI:
    """The app of one worker (API only; `clients.web.asgi_app` adds the web page)."""
    return create_app(server_from_env())
