"""The single-envelope write path: envelopes admitted in groups (`ledger.server.AdmissionGroups`)
and answered by `ledger.api.WriteRoutes` ahead of FastAPI, with the answers of the routes.

The grouping is checked on its own (which envelopes share a call, what each caller gets back),
then end to end: many concurrent single writes against a real server with admission workers,
good and refused ones mixed, each answered for itself, every acknowledged entry in the log.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from attest import merkle
from ledger.admission import AdmissionError, Admitted
from ledger.errors import LedgerError
from ledger.log import LogRangeError
from ledger.server import AdmissionGroups, HostedLog
from tests.support import Signer, envelope_body, running_server, sqlite_evidence_log


class _Log:
    """Stands in for a hosted log: the grouping reads only its name."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Recorder:
    """An `admit` that records each call's log and bodies, refuses bodies starting with
    b"bad", and fails the whole call for a body b"boom"; `gate` holds calls until set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.running = self.most_running = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()

    def __call__(self, h: HostedLog, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
        with self.lock:
            self.calls.append((h.name, list(bodies)))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.gate.wait(10)
            if b"boom" in bodies:
                raise RuntimeError("worker died")
            return [
                AdmissionError(403, "untrusted_signature", b.decode())
                if b.startswith(b"bad")
                else Admitted(b)
                for b in bodies
            ]
        finally:
            with self.lock:
                self.running -= 1


def _log(name: str) -> HostedLog:
    return cast(HostedLog, _Log(name))


def test_envelopes_arriving_together_share_calls_and_each_gets_its_own_answer() -> None:
    rec = _Recorder()

    async def scenario() -> list[Any]:
        groups = AdmissionGroups(rec, in_flight=2)
        ev, other = _log("evidence"), _log("attested")
        first = asyncio.ensure_future(groups.admit(ev, b"lone"))
        await asyncio.sleep(0.05)  # the first call is held at the gate: the rest queue up
        rest = [
            groups.admit(other if i % 5 == 0 else ev, (b"bad %d" if i % 3 == 0 else b"ok %d") % i)
            for i in range(1, 40)
        ]
        tasks = [asyncio.ensure_future(c) for c in rest]
        await asyncio.sleep(0.05)
        rec.gate.set()
        return await asyncio.gather(first, *tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    # The lone envelope went alone and at once; the 39 that queued behind it took few calls.
    assert rec.calls[0] == ("evidence", [b"lone"])
    assert len(rec.calls) <= 5, rec.calls
    assert sum(len(b) for _, b in rec.calls) == 40
    assert rec.most_running <= 2
    # Each call holds the envelopes of one log, in the order they arrived.
    for name, bodies in rec.calls[1:]:
        want = [i for i in range(1, 40) if (i % 5 == 0) == (name == "attested")]
        got = [int(b.split()[1]) for b in bodies]
        assert got == sorted(got) and set(got) <= set(want)
    assert isinstance(results[0], Admitted) and results[0].leaf == b"lone"
    for i, r in enumerate(results[1:], start=1):
        if i % 3 == 0:
            assert isinstance(r, AdmissionError) and r.diagnostic == f"bad {i}"
        else:
            assert isinstance(r, Admitted) and r.leaf == b"ok %d" % i


def test_a_failed_call_fails_only_its_own_envelopes() -> None:
    rec = _Recorder()
    rec.gate.set()

    async def scenario() -> list[Any]:
        groups = AdmissionGroups(rec, in_flight=1)
        ev = _log("evidence")
        held = asyncio.ensure_future(groups.admit(ev, b"ok 0"))  # goes alone, at once
        boom = [asyncio.ensure_future(groups.admit(ev, b)) for b in (b"ok 1", b"boom")]
        out = await asyncio.gather(held, *boom, return_exceptions=True)
        after = await groups.admit(ev, b"ok 2")  # the grouping still works afterwards
        return [*out, after]

    first, ok1, boom, after = asyncio.run(scenario())
    assert isinstance(first, Admitted)
    assert isinstance(ok1, RuntimeError) and isinstance(boom, RuntimeError)
    assert isinstance(after, Admitted) and after.leaf == b"ok 2"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_concurrent_single_writes_each_get_their_answer(tmp_path: Path, workers: str) -> None:
    writer = Signer.create(tmp_path / "keys")
    stranger = Signer.create(tmp_path / "other", "stranger")  # not allowed by the log
    with running_server(
        tmp_path / "data",
        allow_keys=(writer.pub,),
        extra_args=("--admission-workers", workers),
    ) as srv:
        url = f"{srv.base_url}/logs/evidence/entries"
        bodies = [
            envelope_body((stranger if i % 4 == 3 else writer).envelope(f"concurrent {i}"))
            for i in range(48)
        ]
        bodies.append(b'{"payloadType": 1}')
        with httpx.Client(timeout=60) as c, ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: c.post(url, content=b), bodies))
            again = c.post(url, content=bodies[0])  # a retry: the same entry, not a new one
            head = c.get(f"{srv.base_url}/logs/evidence/checkpoint").text
    ok = {}
    for i, r in enumerate(answers[:48]):
        assert r.headers["content-type"] == "application/json"
        if i % 4 == 3:
            assert (r.status_code, r.json()["error"]) == (403, "untrusted_signature"), r.text
        else:
            assert r.status_code == 200, r.text
            body = r.json()
            assert not body["duplicate"]
            assert body["tlog_proof"].endswith(body["checkpoint"])
            ok[i] = body["index"]
    assert (answers[48].status_code, answers[48].json()["error"]) == (400, "malformed_envelope")
    assert sorted(ok.values()) == list(range(36))  # distinct indices, none lost or skipped
    assert (again.status_code, again.json()["index"], again.json()["duplicate"]) == (
        200,
        ok[0],
        True,
    )
    assert int(head.split("\n")[1]) == 36


def test_proofs_of_a_batch_are_each_entrys_own_proof(tmp_path: Path) -> None:
    """`Log.inclusion_proofs` (one node lookup shared by a batch's proofs) gives, for every
    index and at sizes inside and across tiles, exactly `Log.inclusion_proof`, and each
    verifies against the checkpoint's root."""
    log, seq = sqlite_evidence_log(tmp_path / "ledger.db")
    for start, count in ((0, 1), (1, 300), (301, 5), (306, 400)):
        seq.integrate([b"entry %d" % i for i in range(start, start + count)])
        head = log.head()
        indices = list(range(head.size))
        together = log.inclusion_proofs(indices, head.size)
        assert together == [log.inclusion_proof(i, head.size) for i in indices]
        for p in together:
            leaf = merkle.leaf_hash(b"entry %d" % p.index)
            merkle.verify_inclusion(leaf, p.index, head.size, p.hashes, head.root)
    with pytest.raises(LogRangeError):
        log.inclusion_proofs([0, head.size], head.size)
    log.store.close()


def test_proofs_of_a_batch_at_bundle_edges(tmp_path: Path) -> None:
    """Proofs made together share each entry bundle's part above it: at tree sizes on, just
    past and just short of bundle boundaries (full last bundle, one-leaf last bundle), for
    indices in any order, repeated, and a few from old bundles only, each is exactly the
    entry's own proof."""
    log, seq = sqlite_evidence_log(tmp_path / "ledger.db")
    done = 0
    for size in (255, 256, 257, 511, 512, 513, 1024, 1025, 1300):
        seq.integrate([b"entry %d" % i for i in range(done, size)])
        done = size
        assert log.head().size == size
        everything = list(range(size))
        for indices in (everything[::-1], [size - 1, 0, size - 1, 3, 256 % size], [0, 1, 2]):
            together = log.inclusion_proofs(indices, size)
            assert together == [log.inclusion_proof(i, size) for i in indices]
        # Older published sizes too: the bundle that is partial at `older` is full now.
        for older in (size - 1, size // 2 + 1):
            indices = list(range(older))
            assert log.inclusion_proofs(indices, older) == [
                log.inclusion_proof(i, older) for i in indices
            ]
    log.store.close()
