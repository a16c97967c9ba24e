"""`bledger serve --workers N`: several processes share one database and take turns."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from attest import merkle
from attest.dsse import Envelope
from tests.support import (
    LOG,
    LedgerProcess,
    Signer,
    check_log,
    envelope_body,
    log_identity,
)


def test_two_worker_processes_share_one_log(tmp_path: Path) -> None:
    signer = Signer.create(tmp_path / "keys")
    srv = LedgerProcess(tmp_path / "data", allow_keys=(signer.pub,), extra_args=("--workers", "2"))
    srv.start()
    try:
        bodies = [envelope_body(signer.envelope(f"worker-{i}")) for i in range(200)]
        with httpx.Client(base_url=srv.base_url, timeout=60) as http:

            def post(body: bytes) -> dict[str, object]:
                r = http.post(f"/logs/{LOG}/entries", content=body)
                assert r.status_code == 200, r.text
                return dict(r.json())

            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(post, bodies))
        indices = sorted(int(str(r["index"])) for r in results)
        assert indices == list(range(200)), "every write got its own index"
        vkey, origin = log_identity(srv.base_url)
        cp = check_log(srv.base_url, vkey, origin)
        assert cp.size == 200
        for body, r in zip(bodies, results, strict=True):
            leaf = merkle.leaf_hash(Envelope.from_json(body).canonical_bytes())
            assert r["leaf_hash"] == base64.b64encode(leaf).decode()
    finally:
        srv.stop()
