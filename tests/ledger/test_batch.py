"""The batch write route (`POST /logs/{name}/entries/batch`) against a real server.

One request, many envelopes, one answer per envelope in order: each admitted one with its own
tlog-proof (verified offline by the SDK), each refused one with the status and error the
single-entry route gives it; the anonymous log has no batch route.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from attest.dsse import Envelope, sign_envelope
from clients.sdk import LedgerClient, Refused, Submitted, verifier_from_vkey
from tests.support import Signer, envelope_body, log_identity, post_entry, running_server


def test_batch_answers_each_envelope_in_order_with_its_own_proof(tmp_path: Path) -> None:
    writer = Signer.create(tmp_path / "keys")
    stranger = Signer.create(tmp_path / "other", "stranger")  # not allowed by the log
    with running_server(tmp_path / "data", allow_keys=(writer.pub,)) as srv:
        first = writer.envelope("already logged")
        post_entry(srv.base_url, envelope_body(first))
        junk = writer.envelope("junk signature")
        junk = Envelope(junk.payload_type, junk.payload, (*junk.signatures, stranger_sig(junk)))
        batch = [
            *(writer.envelope(f"batch {i}") for i in range(40)),
            first,
            stranger.envelope("not allowed"),
            junk,
            writer.envelope("batch 0"),  # the same statement twice in one request
        ]
        vkey, origin = log_identity(srv.base_url)
        with LedgerClient(srv.base_url) as c:
            res = c.submit_batch("evidence", batch, verifier_from_vkey(vkey), origin)
    ok = [r for r in res if isinstance(r, Submitted)]
    assert [r.index for r in ok[:40]] == list(range(1, 41))
    assert not any(r.duplicate for r in ok[:40])
    assert isinstance(res[40], Submitted) and (res[40].index, res[40].duplicate) == (0, True)
    assert isinstance(res[41], Refused) and (res[41].status, res[41].error) == (
        403,
        "untrusted_signature",
    )
    assert isinstance(res[42], Refused) and res[42].status == 403
    assert isinstance(res[43], Submitted) and (res[43].index, res[43].duplicate) == (1, True)


def stranger_sig(env: Envelope) -> object:
    """A signature by an unknown key over the same statement, labelled as the writer's."""
    from attest.keys import generate_private_key

    other = sign_envelope(env.payload_type, env.payload, [("writer", generate_private_key())])
    return other.signatures[0]


def test_batch_bad_requests(tmp_path: Path) -> None:
    writer = Signer.create(tmp_path / "keys")
    with running_server(tmp_path / "data", allow_keys=(writer.pub,)) as srv:
        url = f"{srv.base_url}/logs/evidence/entries/batch"
        for body in (b"not json", b"[]", b'{"envelopes": []}', b'{"envelopes": 5}'):
            r = httpx.post(url, content=body)
            assert (r.status_code, r.json()["error"]) == (400, "bad_request"), body
        too_many = json.dumps({"envelopes": [{}] * 1025}).encode()
        assert httpx.post(url, content=too_many).status_code == 400
        huge = b'{"envelopes": ["' + b"x" * (17 * 1024 * 1024) + b'"]}'
        r = httpx.post(url, content=huge, timeout=60)
        assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
        anon = httpx.post(
            f"{srv.base_url}/logs/anonymous/entries/batch",
            json={"envelopes": [writer.envelope("x").to_json()]},
        )
        assert (anon.status_code, anon.json()["error"]) == (400, "no_batch")
        one = httpx.post(url, json={"envelopes": [{"payloadType": 1}]})
        assert one.status_code == 200
        [only] = one.json()["results"]
        assert (only["status"], only["error"]) == (400, "malformed_envelope")


def test_admission_workers_admit_and_refuse_like_the_serving_process(tmp_path: Path) -> None:
    writer = Signer.create(tmp_path / "keys")
    stranger = Signer.create(tmp_path / "other", "stranger")
    with running_server(
        tmp_path / "data",
        allow_keys=(writer.pub,),
        extra_args=("--admission-workers", "2"),
    ) as srv:
        vkey, origin = log_identity(srv.base_url)
        one = post_entry(srv.base_url, envelope_body(writer.envelope("single")))
        assert one["index"] == 0
        refused = httpx.post(
            f"{srv.base_url}/logs/evidence/entries",
            content=envelope_body(stranger.envelope("no")),
        )
        assert (refused.status_code, refused.json()["error"]) == (403, "untrusted_signature")
        batch = [writer.envelope(f"w {i}") for i in range(30)] + [stranger.envelope("no")]
        with LedgerClient(srv.base_url) as c:
            res = c.submit_batch("evidence", batch, verifier_from_vkey(vkey), origin)
    assert [r.index for r in res[:30] if isinstance(r, Submitted)] == list(range(1, 31))
    assert isinstance(res[30], Refused) and res[30].status == 403
