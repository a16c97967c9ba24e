"""The audit node against real ledger servers on loopback: verify, resume, and catch misbehaviour.

The node runs in-process (`AuditNode`), so each test can look at what it recorded; the logs are
real `bledger serve` processes. Faults are injected from outside the log, as an operator or a
network attacker would: an SQL UPDATE behind the server's back, a proxy that replays an old
checkpoint, a key the auditor was never told about, a server that goes away.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import get_args

import httpx
import pytest
import tomli_w
from click.testing import CliRunner
from fastapi.testclient import TestClient

from attest.keys import verifier_key
from attest.tiles import TILE_WIDTH, decode_bundle, encode_bundle
from clients.cli import main as bledger
from clients.verify_cmd import verify, verify_evidence
from ledger.config import init_data_dir
from tests.support import (
    LOG,
    ORIGIN_PREFIX,
    LedgerProcess,
    Signer,
    check_log,
    envelope_body,
    log_identity,
    log_row_id,
    overwrite_bundle,
    running_server,
    stored_bundle,
)
from verifier.auditor import (
    AuditNode,
    FollowedLog,
    LogMisbehaved,
    LogUnavailable,
    Recheck,
    follow_log,
    load_node_config,
    save_logs,
)
from verifier.gossip import (
    Evidence,
    EvidenceEntry,
    EvidenceError,
    EvidenceKind,
    EvidenceNote,
    EvidenceProof,
    InvalidEntryContext,
    SeenProof,
    create_gossip_app,
    origin_hash,
)
from verifier.gossip import verify_evidence as check_evidence

# -- helpers (also used by test_simulation) ---------------------------------------------------


def submit(base_url: str, signer: Signer, tag: str) -> int:
    """Post a field report signed by `signer`; return its index."""
    r = httpx.post(
        f"{base_url}/logs/{LOG}/entries", content=envelope_body(signer.envelope(tag)), timeout=30
    )
    assert r.status_code == 200, r.text
    return int(r.json()["index"])


def signer_vkey(signer: Signer) -> str:
    """The signer's key as the vkey an auditor pins (`--allow-key`)."""
    return verifier_key(signer.name, signer.key.public_key())


def follow(data: Path, url: str, *allowed: Signer, **changes: object) -> FollowedLog:
    """Make DATA an audit node following the evidence log at `url`, allowing `allowed`."""
    fl = follow_log(data, url, LOG)
    fl = replace(fl, allowed_keys=tuple(signer_vkey(s) for s in allowed), **changes)  # type: ignore[arg-type]
    save_logs(data, [*(lg for lg in load_node_config(data).logs if lg.origin != fl.origin), fl])
    return fl


def split_data_dir(data: Path, twin: Path) -> None:
    """Make `twin` a second server data dir with the same log key and origin, but its own db.

    Two servers signing with one key, fed different entries, are one log showing two trees.
    """
    init_data_dir(data, origin_prefix=ORIGIN_PREFIX)
    twin.mkdir(parents=True)
    shutil.copytree(data / "keys", twin / "keys")
    raw = tomllib.loads((data / "config.toml").read_text())
    raw["server"]["db"] = f"sqlite:///{(twin / 'ledger.db').resolve()}"
    (twin / "config.toml").write_text(tomli_w.dumps(raw))


def rewrite_entry(db_path: Path, index: int) -> None:
    """Change entry `index` of the first bundle behind the server's back (SQL UPDATE)."""
    db = sqlite3.connect(db_path)
    log_id = log_row_id(db)
    entries = decode_bundle(stored_bundle(db, log_id, 0))
    entries[index] = entries[index].replace(b'"payload"', b'"payload" ', 1)
    overwrite_bundle(db, log_id, 0, encode_bundle(entries))
    db.commit()
    db.close()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ReplayProxy:
    """A loopback HTTP proxy in front of a log that can replay an old checkpoint response."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.replay: bytes | None = None
        self.last_checkpoint: bytes = b""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/checkpoint") and proxy.replay is not None:
                    status, body = 200, proxy.replay
                else:
                    r = httpx.get(proxy.upstream + self.path, timeout=30)
                    status, body = r.status_code, r.content
                    if self.path.endswith("/checkpoint"):
                        proxy.last_checkpoint = body
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """Where the proxy listens."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ReplayProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alice(tmp_path: Path) -> Signer:
    """A key the ledger servers admit directly (`--allow-key`)."""
    return Signer.create(tmp_path / "keys", "alice")


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[list[AuditNode]]:
    """Nodes opened by a test, closed afterwards."""
    nodes: list[AuditNode] = []
    yield nodes
    for n in nodes:
        n.close()


def open_node(data: Path, opened: list[AuditNode], clock: Clock | None = None) -> AuditNode:
    """Open the node of DATA, to be closed by the `node_factory` fixture."""
    node = AuditNode.open(data) if clock is None else AuditNode.open(data, clock=clock)
    opened.append(node)
    return node


# -- following an honest log ------------------------------------------------------------------


def test_verifies_incrementally_replays_key_chain_and_resumes(
    tmp_path: Path, alice: Signer, node_factory: list[AuditNode]
) -> None:
    keys = tmp_path / "keys"
    cli = CliRunner()
    for name in ("lab", "worker"):
        assert (
            cli.invoke(bledger, ["keys", "new", "--out", str(keys / f"{name}.pem")]).exit_code == 0
        )
    srv = LedgerProcess(
        tmp_path / "data",
        allow_keys=(alice.pub,),
        extra_args=("--allow-lab", str(keys / "lab.pem.pub")),
    )
    srv.start()
    try:
        url = srv.base_url
        for i in range(3):
            submit(url, alice, f"a{i}")
        fl = follow(tmp_path / "node", url, alice)
        node = open_node(tmp_path / "node", node_factory)
        res = node.step(fl.origin)
        assert (res.size, res.new_entries, res.witnessed) == (4, 4, True)  # lab + 3 reports
        assert node.state.key_events(fl.origin)[0].index == 0

        # A worker certified by the lab (a key event), then statements that saw a recent
        # checkpoint: the anti-backdating roots come from tiles, the signers from the chain.
        certify = [
            "keys", "certify", "--ledger", url, "--key", str(keys / "lab.pem"),
            "--role", "worker", "--subject", str(keys / "worker.pem"),
        ]  # fmt: skip
        assert cli.invoke(bledger, certify).exit_code == 0
        statement = tmp_path / "s.json"
        for i in range(2):
            statement.write_text(
                json.dumps(
                    {
                        "predicateType": "https://behaviour-ledger.dev/attestation/field-report/v1",
                        "predicate": {
                            "model": {"name": "m", "version": "1"},
                            "category": "grief",
                            "tier": "anonymous",
                            "text": f"worker {i}",
                        },
                    }
                )
            )
            post = ["submit", "--ledger", url, "--key", str(keys / "worker.pem"), str(statement)]
            assert cli.invoke(bledger, post).exit_code == 0
        res = node.step(fl.origin)
        assert (res.size, res.new_entries) == (7, 3)
        assert [e.index for e in node.state.key_events(fl.origin)] == [0, 4]

        # A restarted node replays its stored key events and carries on where it stopped.
        node.close()
        again = open_node(tmp_path / "node", node_factory)
        submit(url, alice, "after restart")
        statement.write_text(statement.read_text().replace("worker 1", "worker 2"))
        assert cli.invoke(bledger, post).exit_code == 0
        res = again.step(fl.origin)
        assert (res.size, res.new_entries) == (9, 2)
        head = again.latest(fl.origin)
        assert head is not None
        assert head.root == check_log(url, fl.vkey, fl.origin).root_hash
        assert again.evidence() == []
        assert f"— {again.cosigner.name} " in head.note.decode()
    finally:
        srv.stop()


def test_split_view_is_evidence_offline(
    tmp_path: Path, alice: Signer, node_factory: list[AuditNode]
) -> None:
    split_data_dir(tmp_path / "d1", tmp_path / "d2")
    with (
        running_server(tmp_path / "d1", allow_keys=(alice.pub,)) as s1,
        running_server(tmp_path / "d2", allow_keys=(alice.pub,)) as s2,
    ):
        for i in range(3):
            submit(s1.base_url, alice, f"one {i}")
            submit(s2.base_url, alice, f"two {i}")
        fl = follow(tmp_path / "n1", s1.base_url, alice)
        follow(tmp_path / "n2", s2.base_url, alice)
        n1 = open_node(tmp_path / "n1", node_factory)
        n2 = open_node(tmp_path / "n2", node_factory)
        n1.step(fl.origin)
        n2.step(fl.origin)
        theirs = n2.latest(fl.origin)
        assert theirs is not None
        verdict, ev = n1.check_checkpoint(fl.origin, theirs.note, "peer n2")
        assert verdict == "misbehaviour" and ev is not None and ev.kind == "split-view"
        assert "proven split view" in check_evidence(ev.to_json(), fl.vkey)

        # One more entry on one side: now the sizes differ, and the node whose tree is larger
        # proves the fork with a consistency proof built from its own tiles.
        submit(s2.base_url, alice, "two 3")
        n2.step(fl.origin)
        ours = n1.latest(fl.origin)
        assert ours is not None
        verdict, ev = n2.check_checkpoint(fl.origin, ours.note, "peer n1")
        assert verdict == "misbehaviour" and ev is not None and ev.kind == "inconsistent"
        assert "proven fork" in check_evidence(ev.to_json(), fl.vkey)
        # The smaller side cannot decide alone (its log has no such tree), but it imports the
        # larger side's evidence, which it checks offline first.
        larger = n2.latest(fl.origin)
        assert larger is not None
        assert n1.check_checkpoint(fl.origin, larger.note, "peer n2")[0] == "undecided"
        assert n1.import_evidence(ev.to_json(), "peer n2") is not None

        # Evidence that does not prove what it claims is refused.
        forged = json.loads(ev.to_json())
        forged["checkpoints"].reverse()
        with pytest.raises(EvidenceError):
            check_evidence(json.dumps(forged), fl.vkey)
        same = json.loads(ev.to_json())
        same["kind"], same["checkpoints"][1] = "split-view", same["checkpoints"][0]
        with pytest.raises(EvidenceError, match=r"same root|sizes"):
            check_evidence(json.dumps(same), fl.vkey)
        with pytest.raises(EvidenceError, match="no signature from a trusted key"):
            check_evidence(ev.to_json(), signer_vkey(alice))  # not the log's key


def test_gossip_http_api(tmp_path: Path, alice: Signer, node_factory: list[AuditNode]) -> None:
    split_data_dir(tmp_path / "d1", tmp_path / "d2")
    with (
        running_server(tmp_path / "d1", allow_keys=(alice.pub,)) as s1,
        running_server(tmp_path / "d2", allow_keys=(alice.pub,)) as s2,
    ):
        submit(s1.base_url, alice, "one")
        submit(s2.base_url, alice, "two")
        fl = follow(tmp_path / "n1", s1.base_url, alice)
        follow(tmp_path / "n2", s2.base_url, alice)
        n1 = open_node(tmp_path / "n1", node_factory)
        n2 = open_node(tmp_path / "n2", node_factory)
        n1.step(fl.origin)
        n2.step(fl.origin)
        ours, theirs = n1.latest(fl.origin), n2.latest(fl.origin)
        assert ours is not None and theirs is not None
        with TestClient(create_gossip_app(n1)) as http:
            status = http.get("/").json()
            assert status["alarm"] is False and status["logs"][0]["size"] == 1
            r = http.get(f"/gossip/{origin_hash(fl.origin)}")
            assert r.status_code == 200 and r.content == ours.note
            assert http.get(f"/gossip/{'0' * 64}").status_code == 404

            assert http.post("/gossip", content=ours.note).json() == {"verdict": "consistent"}
            assert http.post("/gossip", content=b"not a note").status_code == 400
            tampered = theirs.note.replace(b"\n1\n", b"\n2\n", 1)
            assert http.post("/gossip", content=tampered).status_code == 403
            other = theirs.note.replace(fl.origin.encode(), b"elsewhere.example/log", 1)
            assert http.post("/gossip", content=other).status_code == 404

            r = http.post("/gossip", content=theirs.note)
            assert r.status_code == 409 and r.json()["verdict"] == "misbehaviour"
            (ev,) = r.json()["evidence"]
            assert check_evidence(json.dumps(ev), fl.vkey).startswith("proven split view")
            assert http.get("/").json()["alarm"] is True
            assert [e["evidence"]["kind"] for e in http.get("/evidence").json()] == ["split-view"]

        with TestClient(create_gossip_app(n2)) as http:
            forged = dict(ev, checkpoints=[ev["checkpoints"][0], ev["checkpoints"][0]])
            assert http.post("/evidence", content=json.dumps(forged)).status_code == 422
            assert http.post("/evidence", content=json.dumps(ev)).status_code == 200
            assert http.get("/").json()["alarm"] is True


# -- misbehaviour -----------------------------------------------------------------------------


def test_rewritten_entry_is_caught(
    tmp_path: Path, alice: Signer, node_factory: list[AuditNode]
) -> None:
    data = tmp_path / "data"
    with running_server(data, allow_keys=(alice.pub,)) as srv:
        for i in range(3):
            submit(srv.base_url, alice, f"n{i}")
        fl = follow(tmp_path / "node", srv.base_url, alice)
        node = open_node(tmp_path / "node", node_factory)
        assert node.step(fl.origin).size == 3

    rewrite_entry(data / "ledger.db", 1)

    with running_server(data, allow_keys=(alice.pub,)) as srv:
        fl = follow(tmp_path / "node", srv.base_url, alice)  # the server's port changed
        node = open_node(tmp_path / "node", node_factory)
        submit(srv.base_url, alice, "n3")
        # The following node re-reads the partial bundle that grew, hashes every entry in it.
        with pytest.raises(LogMisbehaved) as caught:
            node.step(fl.origin)
        ev = caught.value.evidence
        assert ev.kind == "entry-mismatch" and ev.entry is not None and ev.entry.index == 1
        head = node.latest(fl.origin)
        assert head is not None and head.size == 3, "the head does not move past misbehaviour"
        assert "entry 1" in check_evidence(ev.to_json(), fl.vkey)

        # A fresh node's full audit catches it too.
        follow(tmp_path / "fresh", srv.base_url, alice)
        fresh = open_node(tmp_path / "fresh", node_factory)
        with pytest.raises(LogMisbehaved, match="entry 1"):
            fresh.step(fl.origin)
        assert fresh.latest(fl.origin) is None


def test_rollback_is_refused(tmp_path: Path, alice: Signer, node_factory: list[AuditNode]) -> None:
    with (
        running_server(tmp_path / "data", allow_keys=(alice.pub,)) as srv,
        ReplayProxy(srv.base_url) as proxy,
    ):
        submit(srv.base_url, alice, "r0")
        submit(srv.base_url, alice, "r1")
        fl = follow(tmp_path / "node", proxy.base_url, alice)
        node = open_node(tmp_path / "node", node_factory)
        assert node.step(fl.origin).size == 2
        old = proxy.last_checkpoint
        for i in range(2, 5):
            submit(srv.base_url, alice, f"r{i}")
        assert node.step(fl.origin).size == 5

        proxy.replay = old
        with pytest.raises(LogMisbehaved) as caught:
            node.step(fl.origin)
        ev = caught.value.evidence
        assert ev.kind == "rollback"
        head = node.latest(fl.origin)
        assert head is not None and head.size == 5
        assert "not provable offline" in check_evidence(ev.to_json(), fl.vkey)

        # A checkpoint whose signature does not verify is not evidence of anything: the
        # log is just not trusted (and retried later).
        note = bytearray(old)
        note[note.index(b"\n") + 1] ^= 1  # a different size line
        proxy.replay = bytes(note)
        with pytest.raises(LogUnavailable, match="does not verify"):
            node.step(fl.origin)
        assert len(node.evidence()) == 1

        proxy.replay = None
        assert node.step(fl.origin).size == 5


def test_unauthorised_entry_raises_an_alarm(
    tmp_path: Path, alice: Signer, node_factory: list[AuditNode]
) -> None:
    with running_server(tmp_path / "data", allow_keys=(alice.pub,)) as srv:
        submit(srv.base_url, alice, "who signed this?")
        fl = follow(tmp_path / "node", srv.base_url)  # the node was never told about alice
        node = open_node(tmp_path / "node", node_factory)
        with pytest.raises(LogMisbehaved, match="entry 0 fails signature") as caught:
            node.step(fl.origin)
        ev = caught.value.evidence
        assert ev.kind == "invalid-entry"
        described = check_evidence(ev.to_json(), fl.vkey)
        assert "entry 0 is in" in described and "relative to" in described

        # Under keys that do authorise the entry, the same record proves nothing.
        claimed = json.loads(ev.to_json())
        claimed["context"]["allowed_keys"] = [signer_vkey(alice)]
        with pytest.raises(EvidenceError, match="re-validates"):
            check_evidence(json.dumps(claimed), fl.vkey)

        # Told about the key, the node accepts the log.
        follow(tmp_path / "node", srv.base_url, alice)
        assert open_node(tmp_path / "node", node_factory).step(fl.origin).size == 1


def test_unavailable_log_is_retried_with_backoff(
    tmp_path: Path, alice: Signer, node_factory: list[AuditNode]
) -> None:
    clock = Clock()
    srv = LedgerProcess(tmp_path / "data", allow_keys=(alice.pub,))
    srv.start()
    try:
        submit(srv.base_url, alice, "x")
        fl = follow(tmp_path / "node", srv.base_url, alice)
        node = open_node(tmp_path / "node", node_factory, clock=clock)
        assert node.step(fl.origin).size == 1
        srv.stop()

        results = node.audit_round()
        assert isinstance(results[fl.origin], LogUnavailable)
        failure = node.state.failure(fl.origin)
        assert failure is not None and failure.count == 1
        assert failure.retry_after == clock.now + 5
        skipped = node.audit_round()[fl.origin]
        assert isinstance(skipped, LogUnavailable) and "backing off" in skipped.diagnostic
        assert node.state.failure(fl.origin) == failure, "a skipped round does not count"

        clock.now += 5
        node.audit_round()
        failure = node.state.failure(fl.origin)
        assert failure is not None and failure.count == 2
        assert failure.retry_after == clock.now + 10
        assert node.evidence() == [], "a log that does not answer is not trusted, nor accused"

        srv.start()  # same port
        submit(srv.base_url, alice, "y")
        clock.now += 10
        assert node.audit_round()[fl.origin].size == 2  # type: ignore[union-attr]
        assert node.state.failure(fl.origin) is None
    finally:
        srv.stop()


# -- the command line -------------------------------------------------------------------------


def test_verify_once_and_verify_evidence_commands(tmp_path: Path, alice: Signer) -> None:
    runner = CliRunner()
    data = tmp_path / "node"
    res = runner.invoke(verify, ["--data", str(data)])
    assert res.exit_code == 0, res.output
    assert "created" in res.output and (data / "auditor.vkey").read_text().startswith("bledger-")
    with running_server(tmp_path / "srv", allow_keys=(alice.pub,)) as srv:
        submit(srv.base_url, alice, "cli")
        vkey, origin = log_identity(srv.base_url)
        res = runner.invoke(verify, ["--data", str(data), "--follow", srv.base_url])
        assert res.exit_code == 0, res.output
        assert f"vkey     {vkey}" in res.output and f"origin   {origin}" in res.output

        res = runner.invoke(verify, ["--data", str(data), "--once", "--audit-workers", "1"])
        assert res.exit_code == 2, res.output  # alice is not pinned: entry 0 is unauthorised
        assert "ALARM " + origin in res.output
        assert "signature checks when catching up: in this process" in res.output
        res = runner.invoke(verify, ["--data", str(data), "--once", "--audit-workers", "3"])
        assert "signature checks when catching up: 3 worker processes" in res.output
        assert res.exit_code == 2 and "ALARM " + origin in res.output, res.output

        node = AuditNode.open(data)
        try:
            (ev,) = node.evidence()
        finally:
            node.close()
        evidence_file = tmp_path / "evidence.json"
        evidence_file.write_text(ev.to_json())
        res = runner.invoke(verify_evidence, [str(evidence_file), "--log-vkey", vkey])
        assert res.exit_code == 0, res.output
        assert "fails signature" in res.output
        res = runner.invoke(verify_evidence, [str(evidence_file), "--log-vkey", signer_vkey(alice)])
        assert res.exit_code != 0

        good = tmp_path / "good"
        res = runner.invoke(
            verify,
            ["--data", str(good), "--follow", srv.base_url, "--allow-key", signer_vkey(alice)],
        )
        assert res.exit_code == 0, res.output
        res = runner.invoke(verify, ["--data", str(good), "--once"])
        assert res.exit_code == 0, res.output
        assert f"ok {origin} size 1 (+1 entries), witnessed" in res.output
    res = runner.invoke(verify, ["--data", str(good), "--once"])
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output


def test_evidence_format_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "verifier.md").read_text()
    models = (Evidence, EvidenceNote, EvidenceProof, EvidenceEntry, InvalidEntryContext, SeenProof)
    for model in models:
        for name in model.model_fields:
            assert f"`{name}`" in text or f'"{name}"' in text, (model.__name__, name)
    for kind in get_args(EvidenceKind):
        assert f"`{kind}`" in text, kind


# -- finding 9: entries verified before are read again ---------------------------------------


def test_in_place_edit_of_an_audited_bundle_is_caught(
    tmp_path: Path, alice: Signer, node_factory: list[AuditNode]
) -> None:
    """An entry edited in place after the node verified it, with the log not growing since, is
    caught by the node's next step (it re-reads a sample of verified bundles each step); and
    `bledger verify --full` re-reads all of them."""
    data = tmp_path / "data"
    with running_server(data, allow_keys=(alice.pub,)) as srv:
        for i in range(3):
            submit(srv.base_url, alice, f"n{i}")
        fl = follow(tmp_path / "node", srv.base_url, alice)
        follow(tmp_path / "full", srv.base_url, alice)
        node = open_node(tmp_path / "node", node_factory)
        assert node.step(fl.origin).size == 3
        assert node.step(fl.origin).new_entries == 0  # re-read, nothing changed
        full = AuditNode.open(tmp_path / "full", full=True)
        try:
            assert full.step(fl.origin).size == 3
        finally:
            full.close()

    rewrite_entry(data / "ledger.db", 1)

    with running_server(data, allow_keys=(alice.pub,)) as srv:
        fl = follow(tmp_path / "node", srv.base_url, alice)  # the server's port changed
        node = open_node(tmp_path / "node", node_factory)
        with pytest.raises(LogMisbehaved) as caught:
            node.step(fl.origin)
        ev = caught.value.evidence
        assert ev.kind == "entry-mismatch" and ev.entry is not None and ev.entry.index == 1
        assert "entry 1" in check_evidence(ev.to_json(), fl.vkey)

        follow(tmp_path / "full", srv.base_url, alice)
        res = CliRunner().invoke(verify, ["--data", str(tmp_path / "full"), "--once", "--full"])
        assert res.exit_code == 2, res.output
        assert f"ALARM {fl.origin}: entry-mismatch" in res.output


@pytest.mark.parametrize("per_round", [1, 3, 4, 16])
@pytest.mark.parametrize("bundles", [1, 2, 5, 37])
def test_recheck_rereads_every_bundle_within_its_bound(per_round: int, bundles: int) -> None:
    """Whenever a bundle is edited, the sweep re-reads it within `Recheck.bound` steps, and no
    step reads a bundle twice (random order, seeded here)."""
    recheck = Recheck(per_round, random.Random(per_round * 1000 + bundles))
    bound = recheck.bound(bundles)
    assert bound is not None
    steps = [recheck.pick("log", bundles * TILE_WIDTH - 1) for _ in range(6 * bound)]
    for picked in steps:
        assert len(picked) == len(set(picked)) == min(per_round, bundles)
    for edited in range(bundles):
        for t0 in range(len(steps) - bound):
            assert any(edited in steps[t] for t in range(t0, t0 + bound)), (edited, t0)


def test_recheck_full_and_none() -> None:
    assert Recheck(None).pick("log", 3 * TILE_WIDTH) == [0, 1, 2]
    assert Recheck(0).pick("log", 3 * TILE_WIDTH) == [] and Recheck(0).bound(3) is None
