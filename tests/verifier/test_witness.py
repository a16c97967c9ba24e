"""C2SP tlog-witness: every add-checkpoint answer as a named case, the exact request format, the
HTTP app and client, concurrency (threads and two server processes sharing one database), the
data directory, and the happy path against a real `bledger serve` ledger."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from attest.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from attest.cosignature import CosignatureSigner, CosignatureVerifier
from attest.merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root_hash
from attest.note import (
    Ed25519NoteSigner,
    Note,
    NoteSignature,
    add_signatures,
    encode_base64,
    parse_note,
)
from attest.policy import QuorumError, parse_policy
from attest.tlog_proof import TlogProof, format_tlog_proof, parse_tlog_proof
from attest.vkey import parse_vkey
from tests.support import (
    LOG,
    PROJECT_ROOT,
    START_TIMEOUT,
    Signer,
    envelope_body,
    free_port,
    log_identity,
    running_server,
)
from verifier.errors import (
    VerifierError,
    WitnessConflict,
    WitnessProtocolError,
    WitnessRefused,
)
from verifier.witness import (
    SIZE_CONTENT_TYPE,
    AddCheckpointRequest,
    MalformedRequestError,
    Witness,
    WitnessConfigError,
    create_witness_app,
    init_witness_dir,
    open_witness,
)
from verifier.witness_client import add_checkpoint, verify_cosignatures


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


ORIGIN = "example.test/log"
LOG_KEY = Ed25519NoteSigner(ORIGIN, _key("log"))
SIGNER = CosignatureSigner("witness.test/w", _key("witness"))
T0 = 1_700_000_000


class FakeClock:
    """A clock that ticks one second per reading (thread-safe), so timestamps are predictable."""

    def __init__(self, start: int = T0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.now += 1
            return self.now


@dataclass(frozen=True)
class Tree:
    """An in-memory log: leaf data, signed checkpoints and proofs at any size."""

    entries: tuple[bytes, ...]
    origin: str = ORIGIN

    def extend(self, tag: str, count: int) -> Tree:
        """This tree with `count` more entries tagged `tag` (same tag, same entries)."""
        more = tuple(f"{tag} {len(self.entries) + i}".encode() for i in range(count))
        return Tree(self.entries + more, self.origin)

    def root(self, size: int | None = None) -> bytes:
        return root_hash([leaf_hash(e) for e in self.entries[:size]])

    def node_at(self, level: int, index: int) -> bytes:
        return self.root_of(index << level, (index + 1) << level)

    def root_of(self, begin: int, end: int) -> bytes:
        return root_hash([leaf_hash(e) for e in self.entries[begin:end]])

    @property
    def size(self) -> int:
        return len(self.entries)

    def checkpoint(self, signer: Ed25519NoteSigner = LOG_KEY) -> bytes:
        return sign_checkpoint(Checkpoint(self.origin, self.size, self.root()), signer)

    def proof(self, old: int) -> tuple[bytes, ...]:
        if old == 0:
            return ()
        return tuple(consistency_proof(old, self.size, self.node_at))

    def request(self, old: int, proof: tuple[bytes, ...] | None = None) -> bytes:
        p = self.proof(old) if proof is None else proof
        return AddCheckpointRequest(old, p, self.checkpoint()).to_bytes()


BASE = Tree(()).extend("a", 5)  # size 5
NEXT = BASE.extend("a", 4)  # size 9, extends BASE
FORK = Tree(BASE.entries[:2]).extend("b", 3)  # size 5, another root
FORK_NEXT = FORK.extend("b", 4)  # size 9, extends FORK, not BASE


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    return Witness(tmp_path / "witness.db", SIGNER, {ORIGIN: LOG_KEY.verifier()}, FakeClock())


def _cosigned(w: Witness, tree: Tree, old: int = 0) -> bytes:
    status, _, body = w.add_checkpoint(tree.request(old))
    assert status == 200, body
    return body


def _check_200(body: bytes, checkpoint: bytes) -> list[NoteSignature]:
    """The answer holds exactly one line, a valid cosignature of `checkpoint` by SIGNER."""
    text = body.decode()
    assert text.startswith("\u2014 ") and text.endswith("\n") and text.count("\n") == 1
    sigs = [NoteSignature(SIGNER.name, SIGNER.key_id, base64.b64decode(text.split()[-1])[4:])]
    return verify_cosignatures(checkpoint, sigs, SIGNER.verifier())


# -- 200 -----------------------------------------------------------------------------------------


def test_200_first_checkpoint_from_old_zero(witness: Witness) -> None:
    status, headers, body = witness.add_checkpoint(BASE.request(0))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    (sig,) = _check_200(body, BASE.checkpoint())
    assert SIGNER.verifier().timestamp_of(sig) == T0 + 1  # from the injected clock
    assert witness.latest(ORIGIN) == (5, BASE.root())


def test_200_consistent_extension(witness: Witness) -> None:
    _cosigned(witness, BASE)
    status, _, body = witness.add_checkpoint(NEXT.request(5))
    assert status == 200
    _check_200(body, NEXT.checkpoint())
    assert witness.latest(ORIGIN) == (9, NEXT.root())


def test_200_same_checkpoint_again_is_cosigned_again(witness: Witness) -> None:
    _cosigned(witness, BASE)
    status, _, body = witness.add_checkpoint(BASE.request(5))
    assert status == 200
    (sig,) = _check_200(body, BASE.checkpoint())
    assert SIGNER.verifier().timestamp_of(sig) == T0 + 2


def test_200_empty_tree_then_growth(witness: Witness) -> None:
    empty = Tree(())
    assert empty.root() == EMPTY_ROOT
    _cosigned(witness, empty)
    assert witness.latest(ORIGIN) == (0, EMPTY_ROOT)
    _cosigned(witness, BASE, old=0)


def test_200_ignores_unknown_signatures(witness: Witness) -> None:
    stranger = Ed25519NoteSigner("stranger.test", _key("stranger"))
    junk = NoteSignature("someone.test/w", b"\x01\x02\x03\x04", bytes(72))
    signed = add_signatures(BASE.checkpoint(), [stranger, SIGNER.at(5)])
    parsed = parse_note(signed)
    note = Note(parsed.text, (*parsed.signatures, junk)).to_bytes()
    status, _, body = witness.add_checkpoint(AddCheckpointRequest(0, (), note).to_bytes())
    assert status == 200, body


def test_200_size_above_2_pow_63(witness: Witness) -> None:
    huge = 2**64 - 1
    note = sign_checkpoint(Checkpoint(ORIGIN, huge, BASE.root()), LOG_KEY)
    status, _, _ = witness.add_checkpoint(AddCheckpointRequest(0, (), note).to_bytes())
    assert status == 200
    assert witness.latest(ORIGIN) == (huge, BASE.root())
    status, _, body = witness.add_checkpoint(BASE.request(0))
    assert (status, body) == (409, f"{huge}\n".encode())


# -- 404, 403 ----------------------------------------------------------------------------------


def test_404_unknown_origin(witness: Witness) -> None:
    other = Ed25519NoteSigner("other.test/log", _key("other"))
    note = sign_checkpoint(Checkpoint(other.name, 5, BASE.root()), other)
    status, _, body = witness.add_checkpoint(AddCheckpointRequest(0, (), note).to_bytes())
    assert status == 404, body
    assert b"other.test/log" in body


def test_403_no_signature_by_the_trusted_key(witness: Witness) -> None:
    impostor = Ed25519NoteSigner(ORIGIN, _key("impostor"))
    status, _, body = witness.add_checkpoint(
        AddCheckpointRequest(0, (), BASE.checkpoint(impostor)).to_bytes()
    )
    assert status == 403, body
    assert witness.latest(ORIGIN) is None


def test_403_invalid_signature_by_the_trusted_key(witness: Witness) -> None:
    good = parse_note(BASE.checkpoint())
    bad = NoteSignature(LOG_KEY.name, LOG_KEY.key_id, bytes(64))
    # Even next to a valid line: a failing trusted signature rejects the note (signed-note).
    note = Note(good.text, (*good.signatures, bad)).to_bytes()
    status, _, body = witness.add_checkpoint(AddCheckpointRequest(0, (), note).to_bytes())
    assert status == 403, body


# -- 400 -----------------------------------------------------------------------------------------

_CP = BASE.checkpoint()
_H = encode_base64(hashlib.sha256(b"h").digest())
MALFORMED: dict[str, bytes] = {
    "empty-body": b"",
    "no-old-line": b"\n" + _CP,
    "no-blank-line": b"old 0\n" + _CP.replace(b"\n\n", b"\n"),
    "old-leading-zero": b"old 00\n\n" + _CP,
    "old-plus-sign": b"old +3\n\n" + _CP,
    "old-negative": b"old -1\n\n" + _CP,
    "old-two-spaces": b"old  0\n\n" + _CP,
    "old-tab": b"old\t0\n\n" + _CP,
    "old-uppercase": b"OLD 0\n\n" + _CP,
    "old-over-64-bits": b"old 18446744073709551616\n\n" + _CP,
    "old-not-a-number": b"old five\n\n" + _CP,
    "crlf-lines": b"old 0\r\n\r\n" + _CP,
    "proof-not-base64": b"old 3\nnot base64!\n\n" + _CP,
    "proof-unpadded-base64": b"old 3\n" + _H.rstrip("=").encode() + b"\n\n" + _CP,
    "proof-hash-too-short": b"old 3\n" + encode_base64(b"x" * 31).encode() + b"\n\n" + _CP,
    "proof-64-lines": b"old 3\n" + (_H + "\n").encode() * 64 + b"\n" + _CP,
    "proof-line-with-space": b"old 3\n " + _H.encode() + b"\n\n" + _CP,
    "checkpoint-missing": b"old 0\n\n",
    "checkpoint-not-a-note": b"old 0\n\nexample.test/log\n5\n",
    "checkpoint-not-utf8": b"old 0\n\n\xff\xfe\n\n\xe2\x80\x94 x AAAAAAAA\n",
    "checkpoint-body-not-a-checkpoint": b"old 0\n\n"
    + add_signatures(b"hello\n\n\xe2\x80\x94 x AAAAAAAA\n", [LOG_KEY]),
    "checkpoint-trailing-garbage": b"old 0\n\n" + _CP + b"garbage",
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
def test_400_malformed_request(witness: Witness, body: bytes) -> None:
    status, _, answer = witness.add_checkpoint(body)
    assert status == 400, answer
    assert witness.latest(ORIGIN) is None


def test_400_old_size_above_checkpoint_size(witness: Witness) -> None:
    status, _, body = witness.add_checkpoint(BASE.request(6, proof=()))
    assert status == 400, body
    assert b"old size 6 > checkpoint size 5" in body


def test_63_proof_lines_are_allowed_to_parse() -> None:
    body = b"old 3\n" + (_H + "\n").encode() * 63 + b"\n" + _CP
    assert len(AddCheckpointRequest.parse(body).proof) == 63


def test_request_round_trip_and_spec_example() -> None:
    req = AddCheckpointRequest(5, NEXT.proof(5), NEXT.checkpoint())
    assert AddCheckpointRequest.parse(req.to_bytes()) == req
    example = (
        "old 20852014\n"
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
        "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
        "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
        "\n"
        "example.com/behind-the-sofa\n"
        "20852163\n"
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        "\n"
        "\u2014 example.com/behind-the-sofa "
        "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8="
        "\n"
    ).encode()
    parsed = AddCheckpointRequest.parse(example)
    assert (parsed.old_size, len(parsed.proof)) == (20852014, 4)
    assert parsed.to_bytes() == example


def test_request_model_refuses_what_it_could_not_send() -> None:
    with pytest.raises(MalformedRequestError):
        AddCheckpointRequest(0, (b"short",), _CP)
    with pytest.raises(MalformedRequestError):
        AddCheckpointRequest(-1, (), _CP)


# -- 409 -----------------------------------------------------------------------------------------


def test_409_old_size_is_not_the_latest(witness: Witness) -> None:
    _cosigned(witness, BASE)
    for old in (0, 3):
        status, headers, body = witness.add_checkpoint(NEXT.request(old))
        assert (status, body) == (409, b"5\n")
        assert headers["Content-Type"] == SIZE_CONTENT_TYPE
    assert witness.latest(ORIGIN) == (5, BASE.root())


def test_409_nonzero_old_size_when_never_cosigned(witness: Witness) -> None:
    status, headers, body = witness.add_checkpoint(NEXT.request(5))
    assert (status, headers["Content-Type"], body) == (409, SIZE_CONTENT_TYPE, b"0\n")


def test_409_same_size_with_another_root(witness: Witness) -> None:
    # The spec: "If the old size matches the checkpoint size, the witness MUST check that the
    # root hashes are also identical. If they don't match, [...] 409 Conflict".
    _cosigned(witness, BASE)
    status, headers, body = witness.add_checkpoint(FORK.request(5))
    assert (status, headers["Content-Type"], body) == (409, SIZE_CONTENT_TYPE, b"5\n")
    assert witness.latest(ORIGIN) == (5, BASE.root())
    ((origin, kept_status, reason, request),) = witness.rejected()
    assert (origin, kept_status, request) == (ORIGIN, 409, FORK.request(5))
    assert "root" in reason


def test_409_empty_tree_with_a_nonempty_root(witness: Witness) -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 0, BASE.root()), LOG_KEY)
    status, _, body = witness.add_checkpoint(AddCheckpointRequest(0, (), note).to_bytes())
    assert (status, body) == (409, b"0\n")


# -- 422 -----------------------------------------------------------------------------------------


def test_422_proof_does_not_verify(witness: Witness) -> None:
    _cosigned(witness, BASE)
    proof = list(NEXT.proof(5))
    proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    status, _, body = witness.add_checkpoint(NEXT.request(5, tuple(proof)))
    assert status == 422, body
    assert witness.latest(ORIGIN) == (5, BASE.root())


def test_422_proof_of_the_wrong_length(witness: Witness) -> None:
    _cosigned(witness, BASE)
    status, _, body = witness.add_checkpoint(NEXT.request(5, NEXT.proof(5)[:-1]))
    assert status == 422, body


def test_422_fork_extending_another_tree(witness: Witness) -> None:
    # FORK_NEXT's proof is valid from FORK's root at 5, not from the root the witness cosigned.
    _cosigned(witness, BASE)
    status, _, body = witness.add_checkpoint(FORK_NEXT.request(5))
    assert status == 422, body
    ((_, kept_status, _, request),) = witness.rejected()
    assert (kept_status, request) == (422, FORK_NEXT.request(5))


def test_422_proof_lines_with_old_size_zero(witness: Witness) -> None:
    status, _, body = witness.add_checkpoint(NEXT.request(0, proof=NEXT.proof(5)))
    assert status == 422, body


def test_422_proof_lines_with_equal_sizes(witness: Witness) -> None:
    _cosigned(witness, BASE)
    status, _, body = witness.add_checkpoint(BASE.request(5, proof=NEXT.proof(5)[:1]))
    assert status == 422, body


# -- persistence -------------------------------------------------------------------------------


def test_every_cosigned_checkpoint_is_kept_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    w = Witness(db, SIGNER, {ORIGIN: LOG_KEY.verifier()}, FakeClock())
    _cosigned(w, BASE)
    answer = _cosigned(w, NEXT, old=5)
    again = Witness(db, SIGNER, {ORIGIN: LOG_KEY.verifier()}, FakeClock(T0 + 100))
    assert again.latest(ORIGIN) == (9, NEXT.root())
    assert [(r.size, r.root_hash, r.timestamp) for r in again.history(ORIGIN)] == [
        (5, BASE.root(), T0 + 1),
        (9, NEXT.root(), T0 + 2),
    ]
    assert again.history()[-1].checkpoint == NEXT.checkpoint()
    assert again.history()[-1].cosignature + "\n" == answer.decode()
    status, _, body = again.add_checkpoint(BASE.request(0))
    assert (status, body) == (409, b"9\n")


def test_log_key_must_be_named_after_its_origin(tmp_path: Path) -> None:
    with pytest.raises(WitnessConfigError):
        Witness(tmp_path / "w.db", SIGNER, {"elsewhere": LOG_KEY.verifier()})


# -- concurrency -------------------------------------------------------------------------------


def _history_roots(history: list[tuple[int, bytes]]) -> dict[int, set[bytes]]:
    roots: dict[int, set[bytes]] = defaultdict(set)
    for size, root in history:
        roots[size].add(root)
    return roots


def _race(submit: Callable[[int, bytes], tuple[int, bytes]], rounds: int, per_round: int) -> Tree:
    """Rounds of `per_round` simultaneous requests from one old size: half extend the cosigned
    tree one way, half another way, to the same size. Exactly one may win each round."""
    current = Tree(()).extend("base", 3)
    status, body = submit(0, current.request(0))
    assert status == 200, body
    with ThreadPoolExecutor(per_round) as pool:
        for r in range(rounds):
            forks = [current.extend(f"round {r} fork {i % 2}", 2 + r % 3) for i in range(per_round)]
            bodies = [f.request(current.size) for f in forks]
            gate = threading.Barrier(per_round)

            def go(
                i: int, bodies: list[bytes] = bodies, gate: threading.Barrier = gate
            ) -> tuple[int, bytes]:
                gate.wait()
                return submit(i, bodies[i])

            answers = list(pool.map(go, range(per_round)))
            winners = [i for i, (s, _) in enumerate(answers) if s == 200]
            assert len(winners) == 1, answers
            new_size = forks[0].size
            for i, (s, b) in enumerate(answers):
                if i not in winners:
                    assert (s, b) == (409, f"{new_size}\n".encode()), (s, b)
            current = forks[winners[0]]
    return current


def test_concurrent_threads_never_cosign_two_roots_for_one_size(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    clock = FakeClock()
    # One Witness object per thread, each with its own connections, as separate processes have.
    witnesses = [Witness(db, SIGNER, {ORIGIN: LOG_KEY.verifier()}, clock) for _ in range(8)]

    def submit(i: int, body: bytes) -> tuple[int, bytes]:
        status, _, answer = witnesses[i % len(witnesses)].add_checkpoint(body)
        return status, answer

    final = _race(submit, rounds=12, per_round=8)
    history = witnesses[0].history(ORIGIN)
    assert all(
        len(roots) == 1
        for roots in _history_roots([(r.size, r.root_hash) for r in history]).values()
    )
    assert len(history) == 13
    assert witnesses[0].latest(ORIGIN) == (final.size, final.root())


class WitnessProcess:
    """`python -m clients.witness_cmd serve` on DATA, on a free loopback port."""

    def __init__(self, data: Path, log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = log_dir / f"witness-{self.port}.stderr"
        cmd = [sys.executable, "-m", "clients.witness_cmd", "serve", "--data", str(data)]
        cmd += ["--port", str(self.port), *args]
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=err
            )

    def wait_ready(self) -> dict[str, object]:
        deadline = time.monotonic() + START_TIMEOUT  # a hang guard, not a performance check
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"witness exited: {self.stderr.read_text()}")
            try:
                resp = httpx.get(self.url + "/", timeout=2.0)
                if resp.status_code == 200:
                    info: dict[str, object] = resp.json()
                    return info
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"witness did not start: {self.stderr.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Path, list[WitnessProcess]]]:
    """Two witness servers on one data directory, the first of which creates it (CLI first run)."""
    data = tmp_path / "witness"
    procs = [WitnessProcess(data, tmp_path, "--log", LOG_KEY.vkey, "--name", "witness.test/w")]
    try:
        # The first run creates key, config and database before the second process opens them.
        procs[0].wait_ready()
        procs.append(WitnessProcess(data, tmp_path))
        yield data, procs
    finally:
        for p in procs:
            p.stop()


def test_two_witness_processes_sharing_one_database(
    two_processes: tuple[Path, list[WitnessProcess]],
) -> None:
    data, procs = two_processes
    infos = [p.wait_ready() for p in procs]
    assert infos[0] == infos[1]
    assert infos[0]["name"] == "witness.test/w"
    assert infos[0]["logs"] == [{"origin": ORIGIN, "vkey": LOG_KEY.vkey, "size": None}]
    assert {"config.toml", "witness.key", "witness.db", "witness.vkey"} <= {
        f.name for f in data.iterdir()
    }
    assert (data / "witness.vkey").read_text() == f"{infos[0]['vkey']}\n"
    verifier = parse_vkey(str(infos[0]["vkey"]))
    assert isinstance(verifier, CosignatureVerifier)
    clients = [httpx.Client(base_url=p.url, timeout=60.0) for p in procs]

    def submit(i: int, body: bytes) -> tuple[int, bytes]:
        resp = clients[i % 2].post("/add-checkpoint", content=body)
        if resp.status_code == 409:
            assert resp.headers["content-type"] == SIZE_CONTENT_TYPE
        return resp.status_code, resp.content

    try:
        final = _race(submit, rounds=6, per_round=10)
    finally:
        for c in clients:
            c.close()
    for p in procs:
        p.stop()
    w = open_witness(init_witness_dir(data, default_name="unused"))
    history = w.history(ORIGIN)
    assert len(history) == 7
    roots = _history_roots([(r.size, r.root_hash) for r in history])
    assert all(len(r) == 1 for r in roots.values())
    assert w.latest(ORIGIN) == (final.size, final.root())
    for r in history:  # each answer that won was a valid cosignature by the shared key
        sig = NoteSignature(
            verifier.name, verifier.key_id, base64.b64decode(r.cosignature.split()[-1])[4:]
        )
        verify_cosignatures(r.checkpoint, [sig], verifier)


# -- HTTP app and client -------------------------------------------------------------------------


def _as_client(tc: TestClient) -> httpx.Client:
    """Starlette's TestClient offers httpx.Client's API (on its own fork of httpx), which is
    all `add_checkpoint` uses; mypy cannot know that."""
    return cast(httpx.Client, tc)


@pytest.fixture
def http(witness: Witness) -> Iterator[TestClient]:
    with TestClient(create_witness_app(witness, max_body_bytes=4096)) as client:
        yield client


def test_http_add_checkpoint_and_info(http: TestClient, witness: Witness) -> None:
    resp = http.post("/add-checkpoint", content=BASE.request(0))
    assert resp.status_code == 200
    _check_200(resp.content, BASE.checkpoint())
    resp = http.post("/add-checkpoint", content=BASE.request(3))
    assert (resp.status_code, resp.content) == (409, b"5\n")
    assert resp.headers["content-type"] == SIZE_CONTENT_TYPE
    info = http.get("/").json()
    assert info == {
        "name": SIGNER.name,
        "vkey": SIGNER.vkey,
        "logs": [{"origin": ORIGIN, "vkey": LOG_KEY.vkey, "size": 5}],
    }


def test_http_body_over_the_limit_is_refused(http: TestClient, witness: Witness) -> None:
    body = BASE.request(0) + b"x" * 5000
    assert http.post("/add-checkpoint", content=body).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield BASE.request(0)
        yield b"x" * 5000

    assert http.post("/add-checkpoint", content=chunks()).status_code == 413
    assert witness.latest(ORIGIN) is None


def test_client_returns_cosignatures_that_verify(http: TestClient) -> None:
    sigs = add_checkpoint(_as_client(http), "http://testserver/", 0, (), BASE.checkpoint())
    assert verify_cosignatures(BASE.checkpoint(), sigs, SIGNER.verifier()) == sigs
    sigs = add_checkpoint(
        _as_client(http), "http://testserver", 5, NEXT.proof(5), NEXT.checkpoint()
    )
    verify_cosignatures(NEXT.checkpoint(), sigs, SIGNER.verifier())


def test_client_conflict_carries_the_witness_size(http: TestClient) -> None:
    add_checkpoint(_as_client(http), "http://testserver", 0, (), BASE.checkpoint())
    with pytest.raises(WitnessConflict) as e:
        add_checkpoint(_as_client(http), "http://testserver", 0, (), NEXT.checkpoint())
    assert (e.value.size, e.value.sent_old) == (5, 0)
    # Retrying from the size it names succeeds.
    add_checkpoint(
        _as_client(http), "http://testserver", e.value.size, NEXT.proof(5), NEXT.checkpoint()
    )


@pytest.mark.parametrize(
    ("tree", "old", "status"),
    [(Tree((), "other.test/log").extend("x", 2), 0, 404), (FORK_NEXT, 5, 422)],
    ids=["404", "422"],
)
def test_client_refusal_carries_the_status(
    http: TestClient, tree: Tree, old: int, status: int
) -> None:
    add_checkpoint(_as_client(http), "http://testserver", 0, (), BASE.checkpoint())
    with pytest.raises(WitnessRefused) as e:
        add_checkpoint(
            _as_client(http), "http://testserver", old, tree.proof(old), tree.checkpoint()
        )
    assert e.value.status == status
    assert isinstance(e.value, VerifierError)


_BASE_BODY = Checkpoint(ORIGIN, BASE.size, BASE.root()).body()
_GOOD_LINE = SIGNER.cosign(_BASE_BODY, T0).line().encode()

PROTOCOL_BREAKS: dict[str, tuple[int, bytes, str]] = {
    # name: (status, body, content type) of an answer the protocol does not allow
    "200-empty": (200, b"", "text/plain"),
    "200-not-a-signature-line": (200, b"hello\n", "text/plain"),
    "200-good-line-then-junk": (200, _GOOD_LINE + b"junk\n", "text/plain"),
    "200-no-final-newline": (200, _GOOD_LINE.rstrip(b"\n"), "text/plain"),
    "200-bad-base64": (200, "\u2014 w !!!\n".encode(), "text/plain"),
    "409-without-size-type": (409, b"5\n", "text/plain"),
    "409-size-not-decimal": (409, b"five\n", SIZE_CONTENT_TYPE),
    "409-size-without-newline": (409, b"5", SIZE_CONTENT_TYPE),
}


@pytest.mark.parametrize(("status", "body", "ctype"), PROTOCOL_BREAKS.values(), ids=PROTOCOL_BREAKS)
def test_client_refuses_answers_the_protocol_forbids(status: int, body: bytes, ctype: str) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": ctype})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    with client, pytest.raises(WitnessProtocolError):
        add_checkpoint(client, "http://w.test", 0, (), BASE.checkpoint())


def test_client_sends_exactly_the_request_format() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=_GOOD_LINE)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        sigs = add_checkpoint(client, "http://w.test/prefix/", 5, NEXT.proof(5), NEXT.checkpoint())
    assert [s.line().encode() for s in sigs] == [_GOOD_LINE]
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "http://w.test/prefix/add-checkpoint")
    assert request.content == NEXT.request(5)


def test_client_reports_an_unreachable_witness() -> None:
    with httpx.Client(timeout=2.0) as client, pytest.raises(WitnessProtocolError):
        add_checkpoint(client, f"http://127.0.0.1:{free_port()}", 0, (), BASE.checkpoint())


def test_verify_cosignatures_refuses_forged_and_missing_lines() -> None:
    good = SIGNER.cosign(Checkpoint(ORIGIN, BASE.size, BASE.root()).body(), T0)
    forged = NoteSignature(good.name, good.key_id, good.signature[:-1] + b"\x00")
    with pytest.raises(WitnessProtocolError, match="invalid signature"):
        verify_cosignatures(BASE.checkpoint(), [good, forged], SIGNER.verifier())
    other = CosignatureSigner("other.test/w", _key("other witness"))
    with pytest.raises(WitnessProtocolError, match="no cosignature"):
        verify_cosignatures(
            BASE.checkpoint(),
            [other.cosign(Checkpoint(ORIGIN, 5, BASE.root()).body(), T0)],
            SIGNER.verifier(),
        )


# -- the data directory ------------------------------------------------------------------------


def test_data_dir_refuses_a_bad_name_before_creating_anything(tmp_path: Path) -> None:
    with pytest.raises(WitnessConfigError):
        init_witness_dir(tmp_path / "w", name="not a key name", default_name="x")
    assert not (tmp_path / "w").exists()


def test_data_dir_first_run_and_later_runs(tmp_path: Path) -> None:
    data = tmp_path / "w"
    cfg = init_witness_dir(data, add_logs=[LOG_KEY.vkey], default_name="w.test/witness")
    assert cfg.name == "w.test/witness"
    assert {p.name for p in data.iterdir()} >= {
        "config.toml",
        "witness.key",
        "witness.key.pub",
        "witness.vkey",
    }
    vkey = (data / "witness.vkey").read_text().strip()
    verifier = parse_vkey(vkey)
    assert isinstance(verifier, CosignatureVerifier) and verifier.name == "w.test/witness"
    w = open_witness(cfg)
    assert w.vkey == vkey and set(w.logs) == {ORIGIN}
    # Later run: same key and name; another log is added and remembered.
    other = Ed25519NoteSigner("other.test/log", _key("other"))
    again = init_witness_dir(data, add_logs=[other.vkey], default_name="ignored")
    assert again.name == "w.test/witness" and dict(again.logs) == {
        ORIGIN: LOG_KEY.vkey,
        other.name: other.vkey,
    }
    assert open_witness(again).vkey == vkey
    assert dict(init_witness_dir(data, default_name="x").logs) == dict(again.logs)


@pytest.mark.parametrize(
    "change",
    ["rename", "other-key-for-a-followed-origin", "cosignature-key-as-log", "not-a-vkey"],
)
def test_data_dir_refuses_unsafe_changes(tmp_path: Path, change: str) -> None:
    data = tmp_path / "w"
    init_witness_dir(data, add_logs=[LOG_KEY.vkey], default_name="w.test/witness")
    changes: dict[str, dict[str, Any]] = {
        "rename": {"name": "w.test/renamed"},
        "other-key-for-a-followed-origin": {
            "add_logs": [Ed25519NoteSigner(ORIGIN, _key("rotated")).vkey]
        },
        "cosignature-key-as-log": {"add_logs": [SIGNER.vkey]},
        "not-a-vkey": {"add_logs": ["example.test/log"]},
    }
    with pytest.raises(WitnessConfigError):
        init_witness_dir(data, default_name="w.test/witness", **changes[change])


# -- against a real ledger ---------------------------------------------------------------------


def test_happy_path_against_a_real_ledger(tmp_path: Path) -> None:
    writer = Signer.create(tmp_path / "keys")
    with running_server(tmp_path / "ledger", allow_keys=(writer.pub,)) as srv:
        vkey, origin = log_identity(srv.base_url)
        w = Witness(tmp_path / "w.db", SIGNER, {origin: parse_vkey(vkey)}, FakeClock())
        log_url = f"{srv.base_url}/logs/{LOG}"
        with httpx.Client(timeout=60.0) as ledger, TestClient(create_witness_app(w)) as wit:

            def submit(tag: str) -> dict[str, object]:
                resp = ledger.post(
                    f"{log_url}/entries", content=envelope_body(writer.envelope(tag))
                )
                assert resp.status_code == 200, resp.text
                out: dict[str, object] = resp.json()
                return out

            def head() -> tuple[bytes, Checkpoint]:
                note = ledger.get(f"{log_url}/checkpoint").content
                return note, open_checkpoint(note, parse_vkey(vkey), origin)[0]

            # The witness's published key is what a verifier pins.
            witness_vkey = str(wit.get("/").json()["vkey"])
            witness_key = parse_vkey(witness_vkey)
            assert isinstance(witness_key, CosignatureVerifier)

            for i in range(3):
                submit(f"first {i}")
            note1, cp1 = head()
            sigs1 = add_checkpoint(_as_client(wit), "http://testserver", 0, (), note1)
            verify_cosignatures(note1, sigs1, witness_key)

            last: dict[str, object] = {}
            for i in range(2):
                last = submit(f"second {i}")
            note2, cp2 = head()
            assert cp2.size == cp1.size + 2
            resp = ledger.get(
                f"{log_url}/proof/consistency", params={"first": cp1.size, "second": cp2.size}
            )
            proof = [base64.b64decode(h) for h in resp.json()["consistency_proof"]]
            sigs2 = add_checkpoint(_as_client(wit), "http://testserver", cp1.size, proof, note2)
            assert verify_cosignatures(note2, sigs2, witness_key) == sigs2
            entry_index = int(str(last["index"]))
            entry = base64.b64decode(ledger.get(f"{log_url}/entries/{entry_index}").json()["entry"])

        parsed = parse_note(note2)
        cosigned = Note(parsed.text, parsed.signatures + tuple(sigs2)).to_bytes()
        policy = parse_policy(f"log {vkey}\nwitness w {witness_vkey}\nquorum w\n")
        assert policy.check(cosigned) == cp2
        with pytest.raises(QuorumError):
            policy.check(note2)

        # The write's offline proof, with the witness's cosignature added, verifies under it.
        p = parse_tlog_proof(str(last["tlog_proof"]))
        assert parse_note(p.checkpoint).text == parsed.text
        text = format_tlog_proof(TlogProof(p.index, p.proof, cosigned))
        assert policy.check_tlog_proof(text, entry) == cp2
        assert [r.size for r in w.history(origin)] == [cp1.size, cp2.size]
