"""`ledger.client.LedgerAPI`, the issuer's client of a ledger, against a real `bledger serve`.

It returns only what verified: a checkpoint under the pinned key and origin, a write whose
tlog-proof ends in such a checkpoint. Answers from the real server are rewritten in transit
(the only way to get a forged proof out of an honest server) and each rewrite must be refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from attest.dsse import Envelope
from attest.keys import generate_private_key, verifier_key
from attest.predicates import CheckpointRef, KeyEvent
from attest.statement import sign_statement
from ledger.client import LedgerAPI, LedgerClientError
from tests.ledger.test_issuer import Lab, running_lab

EVIDENCE = "evidence"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running ledger with a registered lab key."""
    with running_lab(tmp_path_factory.mktemp("client")) as lab:
        yield lab


def _registration(api: LedgerAPI, lab: Lab, vkey: str, origin: str, name: str) -> Envelope:
    """A lab-signed registration of a new issuer key NAME (co-signed by it)."""
    key = generate_private_key()
    cp = api.checkpoint(EVIDENCE, vkey, origin)
    event = KeyEvent(
        seen_checkpoint=CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex()),
        issued_at=int(time.time()),
        action="register",
        role="issuer",
        key=verifier_key(name, key.public_key()),
    )
    return sign_statement(event, [("lab", lab.lab_key), (name, key)])


def _rewriting(base_url: str, change: Callable[[httpx.Request, bytes], bytes]) -> LedgerAPI:
    real = httpx.Client(base_url=base_url, timeout=60.0)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = real.request(request.method, request.url, content=request.content)
        return httpx.Response(answer.status_code, content=change(request, answer.content))

    transport = httpx.MockTransport(handler)
    return LedgerAPI(base_url, client=httpx.Client(base_url=base_url, transport=transport))


def test_write_and_checkpoint_verify(lab: Lab) -> None:
    with LedgerAPI(lab.url) as api:
        log = api.log_info(EVIDENCE)
        env = _registration(api, lab, log.vkey, log.origin, "issuer-a")
        written = api.submit(EVIDENCE, env, log.vkey, log.origin)
        assert written.checkpoint.size > written.index
        again = api.submit(EVIDENCE, env, log.vkey, log.origin)
        assert (again.index, again.duplicate) == (written.index, True)
        with pytest.raises(LedgerClientError, match="no log named"):
            api.log_info("nonexistent")


def test_a_forged_proof_or_checkpoint_is_refused(lab: Lab) -> None:
    with LedgerAPI(lab.url) as api:
        log = api.log_info(EVIDENCE)
        env = _registration(api, lab, log.vkey, log.origin, "issuer-b")

    def forge_proof(request: httpx.Request, body: bytes) -> bytes:
        if request.method != "POST":
            return body
        j = json.loads(body)
        j["tlog_proof"] = j["tlog_proof"].replace(f"index {j['index']}", f"index {j['index'] + 1}")
        return json.dumps(j).encode()

    forged = _rewriting(lab.url, forge_proof)
    with forged, pytest.raises(LedgerClientError, match="tlog-proof"):
        forged.submit(EVIDENCE, env, log.vkey, log.origin)

    def other_root(request: httpx.Request, body: bytes) -> bytes:
        if not request.url.path.endswith("/checkpoint"):
            return body
        lines = body.split(b"\n")
        lines[1] = str(int(lines[1]) + 1).encode()  # another size under the same signature
        return b"\n".join(lines)

    tampered = _rewriting(lab.url, other_root)
    with tampered, pytest.raises(LedgerClientError, match="checkpoint"):
        tampered.checkpoint(EVIDENCE, log.vkey, log.origin)
    with LedgerAPI(lab.url) as api, pytest.raises(LedgerClientError):
        api.checkpoint(EVIDENCE, log.vkey, "another/origin")


def test_an_unreachable_ledger_is_a_client_error() -> None:
    api = LedgerAPI("http://127.0.0.1:9", timeout=5.0)  # the discard port: nobody listens
    with api, pytest.raises(LedgerClientError, match="GET /logs"):
        api.log_info(EVIDENCE)
