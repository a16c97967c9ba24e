"""The batch route passes each envelope's own bytes to admission (`ledger.api._batch_entries`,
`ledger.admission.admit_batch_entry`): the answers must be the ones the route gives when it
re-encodes each envelope (`_batch_bodies`), for honest and hostile bodies alike, with and
without admission workers, against a real server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from attest.dsse import Envelope, sign_envelope
from attest.keys import generate_private_key
from clients.sdk import LedgerClient, verifier_from_vkey
from ledger.admission import AdmissionError, Admitted
from ledger.api import MAX_BATCH, ProofGroups, _batch_entries
from ledger.errors import LedgerError
from ledger.log import InclusionProof, LogRangeError
from ledger.server import AdmissionGroups, HostedLog
from tests.support import Signer, log_identity, running_server, sqlite_evidence_log

# -- the lexical cut, against Python's JSON parser ---------------------------------------------


def _check_cut(raw: bytes) -> list[bytes] | None:
    """`_batch_entries(raw)`, asserting what the route relies on: when it cuts, the body is
    JSON exactly when every piece is, and then the pieces are the array's elements."""
    got = _batch_entries(raw)
    if got is None:
        return None
    try:
        values = [json.loads(e.decode("utf-8", "surrogatepass")) for e in got]
    except ValueError:
        with pytest.raises(ValueError):
            json.loads(raw)
        return got
    assert json.loads(raw) == {"envelopes": values}
    return got


def _env(i: int) -> dict[str, Any]:
    return {
        "payloadType": "application/vnd.in-toto+json",
        "payload": "eyJ4IjogMX0=" * (i + 1),
        "signatures": [{"keyid": f"k{i}", "sig": "c2ln"}, {"sig": "b3RoZXI="}],
    }


def test_cut_is_the_array_elements_for_any_spelling() -> None:
    envs = [_env(i) for i in range(5)]
    tricky = {"payloadType": 'a "quoted" \\ back\\slash ] } [ {', "payload": "é\u2028",
              "signatures": [[], {"y": 1}, ["x", 2.5, None, True]]}  # fmt: skip
    for items in (envs, [*envs, tricky], [tricky]):
        for indent, seps, ascii_ in (
            (None, None, True),
            (None, (",", ":"), False),
            (2, None, True),
        ):
            raw = json.dumps(
                {"envelopes": items}, indent=indent, separators=seps, ensure_ascii=ascii_
            ).encode()
            got = _check_cut(raw)
            assert got is not None and [json.loads(e) for e in got] == items
    spaced = b' \r\n{ "envelopes" :\t[ {"a":"b"} ,\n{"c":["d"]} ] }\n'
    assert _check_cut(spaced) == [b'{"a":"b"}', b'{"c":["d"]}']


def test_cut_never_admits_what_the_parser_refuses() -> None:
    body = json.dumps({"envelopes": [_env(0), _env(1)]}).encode()
    for n in range(len(body)):  # every truncation
        assert _check_cut(body[:n]) is None or n == len(body)
    rng = random.Random(7)
    alphabet = b'{}[]",:\\ abtrue0'
    for _ in range(3000):  # corrupt one byte, insert one, or drop one
        i = rng.randrange(len(body))
        c = alphabet[rng.randrange(len(alphabet)) :][:1]
        for bad in (
            body[:i] + c + body[i + 1 :],
            body[:i] + c + body[i:],
            body[:i] + body[i + 1 :],
        ):
            _check_cut(bad)


def test_cut_leaves_other_bodies_to_the_parser() -> None:
    for raw in (
        b'{"envelopes": []}',
        b'{"x": 1, "envelopes": [{}]}',
        b'{"envelopes": [{}], "envelopes": [{}]}',
        b'{"envelopes": [{}, "not an object"]}',
        b'{"envelopes": [{"a": [[["too deep"]]]}]}',
        b'{"envelopes": [{},]}',
        b"\xef\xbb\xbf" + b'{"envelopes": [{}]}',
        json.dumps({"envelopes": [{}] * (MAX_BATCH + 1)}).encode(),
    ):
        assert _batch_entries(raw) is None, raw
    assert len(_check_cut(json.dumps({"envelopes": [{}] * MAX_BATCH}).encode()) or []) == MAX_BATCH


# -- the route, on a real server ---------------------------------------------------------------


def _spellings(env: Envelope) -> list[bytes]:
    """The same envelope in spellings the route must treat as it always did."""
    obj = env.to_json()
    pretty = json.dumps(obj, indent=3).encode()
    dup = json.dumps(obj)[:-1] + ', "payloadType": ' + json.dumps(obj["payloadType"]) + "}"
    escaped = json.dumps(obj).replace("/", "\\/")  # same strings, spelled with escapes
    compact = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    return [pretty, dup.encode(), escaped.encode(), compact.encode()]


def _results(answer: httpx.Response) -> list[tuple[Any, ...]]:
    assert answer.status_code == 200, answer.text
    out = []
    for r in answer.json()["results"]:
        if "error" in r:
            out.append((r["status"], r["error"]))
        else:
            out.append((r["index"], r["leaf_hash"]))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_answers_as_if_each_envelope_were_reencoded(tmp_path: Path, workers: int) -> None:
    writer = Signer.create(tmp_path / "keys")
    stranger = Signer.create(tmp_path / "other", "stranger")
    ok = writer.envelope("honest")
    forged_sig = sign_envelope(ok.payload_type, ok.payload, [("writer", generate_private_key())])
    forged = Envelope(ok.payload_type, ok.payload, forged_sig.signatures)
    wrong_type = writer.envelope("typed", payload_type="text/plain")
    items: list[bytes] = [json.dumps(ok.to_json()).encode()]
    items += _spellings(writer.envelope("spelled"))
    items += _spellings(forged) + _spellings(wrong_type)
    items += [
        json.dumps(forged.to_json()).encode(),
        json.dumps(stranger.envelope("unknown key").to_json()).encode(),
        json.dumps(writer.envelope("again").to_json()).encode(),
        json.dumps(writer.envelope("again").to_json()).encode(),  # a duplicate in the batch
        b'{"payloadType": 1}',
        b'{"payloadType": "x", "payload": "not base64!", "signatures": []}',
        b"{}",
    ]
    fast = b'{"envelopes": [' + b", ".join(items) + b"]}"
    slow = b'{"first": 0, "envelopes": [' + b", ".join(items) + b"]}"  # `_batch_bodies`
    assert _batch_entries(fast) is not None and _batch_entries(slow) is None
    args = ("--admission-workers", str(workers))
    with running_server(tmp_path / "data", allow_keys=(writer.pub,), extra_args=args) as srv:
        url = f"{srv.base_url}/logs/evidence/entries/batch"
        first = _results(httpx.post(url, content=slow, timeout=60))
        again = _results(httpx.post(url, content=fast, timeout=60))
    assert first == again  # the second post finds each admitted entry at the same index
    assert first[0] == (0, first[0][1]) and first[1][0] == 1
    assert all(r == first[1] for r in first[1:5])  # one statement, four spellings
    assert {r for r in first[5:9]} == {(403, "untrusted_signature")}
    assert first[13:15] == [(403, "untrusted_signature")] * 2
    assert first[15] == first[16] and isinstance(first[15][0], int)
    assert first[17:] == [(400, "malformed_envelope")] * 3


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_refuses_bad_bodies_whole(tmp_path: Path, workers: int) -> None:
    writer = Signer.create(tmp_path / "keys")
    envs = [json.dumps(writer.envelope(f"e {i}").to_json()).encode() for i in range(4)]
    body = b'{"envelopes": [' + b", ".join(envs) + b"]}"
    args = ("--admission-workers", str(workers))
    with running_server(tmp_path / "data", allow_keys=(writer.pub,), extra_args=args) as srv:
        url = f"{srv.base_url}/logs/evidence/entries/batch"
        cut_inside = body[: len(body) - len(envs[-1]) // 2]
        cut_after = body[: body.rindex(b"}, ") + 3]
        bad_element = body.replace(b'"payloadType"', b"payloadType", 1)  # still cut, not JSON
        no_value = b'{"envelopes": [{"payloadType": tru}]}'
        for bad in (cut_inside, cut_after, bad_element, no_value, b'{"envelopes": [{}'):
            try:
                json.loads(bad)
            except ValueError as e:
                why = f"body is not JSON: {e}"
            r = httpx.post(url, content=bad, timeout=60)
            assert (r.status_code, r.json()) == (400, {"error": "bad_request", "detail": why})
        huge = b'{"envelopes": [{"payload": "' + b"x" * (17 * 1024 * 1024) + b'"}]}'
        r = httpx.post(url, content=huge, timeout=60)
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
        many = json.dumps({"envelopes": [{}] * (MAX_BATCH + 1)}).encode()
        r = httpx.post(url, content=many, timeout=60)
        assert (r.status_code, r.json()["error"]) == (400, "bad_request")
        # Nothing above was logged: the honest batch still starts at index 0.
        r = httpx.post(url, content=body, timeout=60)
        assert [x.get("index") for x in r.json()["results"]] == [0, 1, 2, 3]


# -- single-entry writes: proofs made together ------------------------------------------------


def test_proof_groups_give_each_writer_its_own_proof(tmp_path: Path) -> None:
    """Proofs asked in one pass of the loop, at two tree sizes, are each `Log.inclusion_proof`
    of their own index; a bad one fails its own size's writers, not the other size's."""
    log, seq = sqlite_evidence_log(tmp_path / "ledger.db")
    seq.integrate([b"entry %d" % i for i in range(300)])
    first = log.head().size
    seq.integrate([b"entry %d" % i for i in range(300, 310)])
    second = log.head().size

    async def ask() -> tuple[list[InclusionProof | BaseException], list[BaseException | Any]]:
        groups = ProofGroups(log)
        asked = [(i, second) for i in range(300, 310)] + [(i, first) for i in (0, 7, 299)]
        good = await asyncio.gather(*(groups.proof(i, n) for i, n in asked))
        bad = await asyncio.gather(
            groups.proof(first, first), groups.proof(1, first), groups.proof(2, second),
            return_exceptions=True,
        )  # fmt: skip
        return list(good), list(bad)

    good, bad = asyncio.run(ask())
    want = [log.inclusion_proof(i, second) for i in range(300, 310)]
    want += [log.inclusion_proof(i, first) for i in (0, 7, 299)]
    assert good == want
    assert isinstance(bad[0], LogRangeError) and isinstance(bad[1], LogRangeError)
    assert bad[2] == log.inclusion_proof(2, second)
    log.store.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_concurrent_single_writes_get_proofs_that_verify(tmp_path: Path, workers: int) -> None:
    writer = Signer.create(tmp_path / "keys")
    args = ("--admission-workers", str(workers))
    with running_server(tmp_path / "data", allow_keys=(writer.pub,), extra_args=args) as srv:
        vkey, origin = log_identity(srv.base_url)
        envs = [writer.envelope(f"single {i}") for i in range(40)]
        with LedgerClient(srv.base_url) as c, ThreadPoolExecutor(20) as pool:
            got = list(
                pool.map(lambda e: c.submit("evidence", e, verifier_from_vkey(vkey), origin), envs)
            )
    assert sorted(s.index for s in got) == list(range(40))  # every proof verified offline


def test_admission_groups_await_the_workers_without_a_thread() -> None:
    """With `admit_async` (the admission workers' futures), groups are awaited on the loop's
    own thread; envelopes arriving together still share a call, and a failed call fails
    only its own envelopes."""
    calls: list[list[bytes]] = []
    threads: set[str] = set()
    gate = asyncio.Event()

    def in_a_thread(h: HostedLog, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
        raise AssertionError("admit_async was given: no thread")

    async def admit_async(h: HostedLog, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
        threads.add(threading.current_thread().name)
        calls.append(list(bodies))
        await gate.wait()
        if b"boom" in bodies:
            raise RuntimeError("a worker died")
        return [AdmissionError(403, "untrusted_signature", "x") if b == b"bad" else Admitted(b)
                for b in bodies]  # fmt: skip

    async def scenario() -> list[Any]:
        groups = AdmissionGroups(in_a_thread, 1, admit_async)
        log = cast(HostedLog, SimpleNamespace(name="evidence"))
        first = asyncio.ensure_future(groups.admit(log, b"boom"))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(groups.admit(log, b)) for b in (b"a", b"bad", b"c")]
        await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    boom, a, bad, c = asyncio.run(scenario())
    assert calls == [[b"boom"], [b"a", b"bad", b"c"]]
    assert threads == {threading.main_thread().name}
    assert isinstance(boom, RuntimeError)
    assert isinstance(a, Admitted) and a.leaf == b"a" and isinstance(c, Admitted)
    assert isinstance(bad, AdmissionError) and bad.status == 403
