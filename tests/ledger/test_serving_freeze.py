"""A served process freezes what its start-up left alive (`ledger.serving.FreezeAfterStartup`).

A real `ledger.serving.serve` in a child process, on loopback, with an app whose lifespan
allocates a known set of objects at start-up and whose one route reports what the collector
holds: after start-up, everything then alive is in the permanent generation (those objects
included), and a request allocates outside it. The test process itself is never frozen.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.support import PROJECT_ROOT

DEADLINE = 60.0

SERVED = """
import contextlib, gc
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from ledger.serving import Limits, bind, serve

state = {}

@contextlib.asynccontextmanager
async def lifespan(app):
    state["made"] = [[i] for i in range(5000)]  # 5,000 lists, alive for the process's life
    yield

async def collector(request):
    made = state["made"]
    # Frozen objects are in no generation: get_objects(g) lists only those not frozen.
    young = {id(o) for g in range(3) for o in gc.get_objects(g)}
    return JSONResponse({
        "frozen": gc.get_freeze_count(),
        "made_young": sum(id(x) in young for x in made),
        "scope_young": id(request.scope) in young,
    })

sock = bind("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
serve(Starlette(routes=[Route("/collector", collector)], lifespan=lifespan), sock, Limits())
"""


def test_what_start_up_left_alive_is_frozen() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVED],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/collector", timeout=10).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
    # Every object start-up made is frozen; the modules and app make many more.
    assert got["made_young"] == 0
    assert got["frozen"] > 5000
    # What a request allocates stays collectable: the freeze came once, at start-up.
    assert got["scope_young"] is True
