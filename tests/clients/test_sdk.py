"""`LedgerClient` reads verified under a tlog-policy, against a real server on loopback.

Faults are injected by a proxy transport that forwards to the real server and rewrites one
answer: the SDK must refuse each rewrite with `VerificationError`, never return the data.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from attest import merkle
from attest.cosignature import CosignatureSigner
from attest.dsse import Envelope
from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner
from attest.policy import Policy
from attest.vkey import parse_vkey
from clients.sdk import ClientError, LedgerClient, VerificationError, verifier_from_vkey
from tests.support import LOG, Signer, log_identity, proxied, rewrite_json, running_server


@dataclass(frozen=True)
class Ledger:
    """A running server holding `envelopes` at indices 0.., and a `quorum none` policy."""

    base_url: str
    envelopes: tuple[Envelope, ...]
    vkey: str
    policy: Policy


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    root = tmp_path_factory.mktemp("sdk")
    signer = Signer.create(root / "keys")
    with running_server(root / "data", allow_keys=(signer.pub,)) as srv:
        vkey, origin = log_identity(srv.base_url)
        envelopes = tuple(signer.envelope(f"report {i}") for i in range(3))
        with LedgerClient(srv.base_url) as c:
            for i, env in enumerate(envelopes):
                assert c.submit(LOG, env, verifier_from_vkey(vkey), origin).index == i
        yield Ledger(srv.base_url, envelopes, vkey, Policy.parse(f"log {vkey}\nquorum none\n"))


def proof_at(base_url: str, index: int, size: int) -> dict[str, object]:
    """The real server's inclusion proof answer for `index` at `size`."""
    params = {"index": index, "size": size}
    r = httpx.get(f"{base_url}/logs/{LOG}/proof/inclusion", params=params)
    assert r.status_code == 200
    body: dict[str, object] = r.json()
    return body


def test_verified_entry_round_trips(ledger: Ledger) -> None:
    with LedgerClient(ledger.base_url) as c:
        cp, note = c.verified_checkpoint(LOG, ledger.policy)
        assert cp.size == len(ledger.envelopes)
        assert note.startswith(cp.body().encode())
        for i, env in enumerate(ledger.envelopes):
            got = c.entry(LOG, i, ledger.policy)
            assert got.index == i
            assert got.data == env.canonical_bytes()
            assert got.leaf_hash == merkle.leaf_hash(env.canonical_bytes())
            assert got.checkpoint == cp
            merkle.verify_inclusion(got.leaf_hash, i, cp.size, got.inclusion_proof, cp.root_hash)


def test_index_beyond_the_checkpoint_is_a_client_error(ledger: Ledger) -> None:
    with LedgerClient(ledger.base_url) as c, pytest.raises(ClientError) as e:
        c.entry(LOG, len(ledger.envelopes), ledger.policy)
    assert not isinstance(e.value, VerificationError)
    assert "outside" in e.value.diagnostic


def test_refuses_a_tampered_entry(ledger: Ledger) -> None:
    def flip(body: dict[str, object]) -> None:
        data = bytearray(base64.b64decode(str(body["entry"])))
        data[len(data) // 2] ^= 0x01
        body["entry"] = base64.b64encode(bytes(data)).decode()

    with (
        proxied(ledger.base_url, rewrite_json("/entries/", flip)) as c,
        pytest.raises(VerificationError, match="does not match expected"),
    ):
        c.entry(LOG, 1, ledger.policy)


def test_refuses_a_proof_for_another_tree(ledger: Ledger) -> None:
    """The proof of the right index at a smaller tree, relabelled with the checkpoint's size."""
    size = len(ledger.envelopes)
    smaller = proof_at(ledger.base_url, 0, size - 1)

    def swap(body: dict[str, object]) -> None:
        body["inclusion_proof"] = smaller["inclusion_proof"]

    with (
        proxied(ledger.base_url, rewrite_json("/proof/inclusion", swap)) as c,
        pytest.raises(VerificationError, match=f"entry 0 of {LOG} at size {size}"),
    ):
        c.entry(LOG, 0, ledger.policy)


def test_refuses_a_proof_that_says_it_is_for_another_tree(ledger: Ledger) -> None:
    """The server answers honestly, but for a size other than the checkpoint's."""
    size = len(ledger.envelopes)
    smaller = proof_at(ledger.base_url, 0, size - 1)

    def swap(body: dict[str, object]) -> None:
        body.update(smaller)

    with (
        proxied(ledger.base_url, rewrite_json("/proof/inclusion", swap)) as c,
        pytest.raises(VerificationError, match=f"at size {size - 1}"),
    ):
        c.entry(LOG, 0, ledger.policy)


def test_refuses_the_proof_of_another_index(ledger: Ledger) -> None:
    other = proof_at(ledger.base_url, 2, len(ledger.envelopes))

    def swap(body: dict[str, object]) -> None:
        body["inclusion_proof"] = other["inclusion_proof"]

    with (
        proxied(ledger.base_url, rewrite_json("/proof/inclusion", swap)) as c,
        pytest.raises(VerificationError),
    ):
        c.entry(LOG, 1, ledger.policy)


def test_refuses_a_checkpoint_without_quorum(ledger: Ledger) -> None:
    witness = CosignatureSigner("w1.example", generate_private_key())
    policy = Policy.parse(f"log {ledger.vkey}\nwitness w1 {witness.vkey}\nquorum w1\n")
    with LedgerClient(ledger.base_url) as c:
        with pytest.raises(VerificationError, match="quorum w1 not met"):
            c.verified_checkpoint(LOG, policy)
        with pytest.raises(VerificationError, match="quorum w1 not met"):
            c.entry(LOG, 0, policy)


def test_refuses_a_checkpoint_of_another_log(ledger: Ledger) -> None:
    """A policy trusting a different key for the same origin accepts nothing from this log."""
    impostor = Ed25519NoteSigner(parse_vkey(ledger.vkey).name, generate_private_key())
    policy = Policy.parse(f"log {impostor.vkey}\nquorum none\n")
    with LedgerClient(ledger.base_url) as c, pytest.raises(VerificationError):
        c.entry(LOG, 0, policy)
