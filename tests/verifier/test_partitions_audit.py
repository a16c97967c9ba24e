"""The audit node re-validates each partition by its own rules, against a real ledger server.

One `bledger serve` process (module-scoped: starting one costs seconds) hosts the evidence,
attested and anonymous logs. Everything reaches it over HTTP, as it would in production: a lab
registered with `--allow-lab`, two issuers certified with `bledger keys certify`, a Privacy Pass
token key and two credentials published as evidence statements, an attested report, anonymous
reports redeemed with blind-RSA tokens. The node runs in process so tests can read its state.

The last test plays a dishonest operator who rewrites the anonymous log's SQLite rows behind the
server's back (and restores them afterwards). The pure validators are also tested directly on
entries built in process: a forged entry changes the root, so only a node that never saw the
honest tree reaches the partition rules in the log itself.
"""

from __future__ import annotations

import base64
import sqlite3
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import tomli_w
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import merkle
from attest.anonymous import sign_one_time
from attest.dsse import Envelope
from attest.keychain import KeyChain
from attest.keys import generate_private_key, load_private_key, verifier_key, write_key_pair
from attest.note import Ed25519NoteSigner
from attest.predicates import (
    CheckpointRef,
    CredentialEvent,
    FieldReport,
    KeyEvent,
    ModelId,
    TokenKey,
)
from attest.privacypass import (
    TOKEN_TYPE,
    TokenChallenge,
    authorization,
    begin_issuance,
    finalize_issuance,
    issue,
    token_key_bytes,
)
from attest.statement import Statement, parse_statement, sign_statement, statement_bytes
from attest.tiles import decode_bundle, encode_bundle, split_hashes
from clients.cli import main as bledger
from clients.sdk import LedgerClient, LogInfo, verifier_from_vkey
from ledger.config import init_data_dir
from ledger.sequencer import signed_head
from tests.support import (
    ORIGIN_PREFIX,
    LedgerProcess,
    envelope_body,
    overwrite_bundle,
    stored_bundle,
)
from verifier.auditor import (
    AuditNode,
    EntryInvalid,
    LogMisbehaved,
    StepResult,
    follow_log,
    load_node_config,
    save_logs,
    validate_anonymous_entry,
    validate_attested_entry,
    validate_partition_entry,
)
from verifier.gossip import verify_evidence

HOUR = 3600
INTERVAL_MS = 300  # the anonymous log's batch interval: fast, for tests
BATCH_WAIT = 20.0  # generous deadline for a batch, never a performance assertion
EMPTY = merkle.EMPTY_ROOT.hex()


# -- the world: one server, populated over HTTP -----------------------------------------------


@dataclass
class World:
    """The running server, the keys the test holds, and what it wrote where."""

    srv: LedgerProcess
    keys: Path
    logs: dict[str, LogInfo]  # by log name
    token_sk: rsa.RSAPrivateKey
    nurse: Ed25519PrivateKey
    anonymous_size: int = 0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.srv.base_url

    def origin(self, name: str) -> str:
        """The origin of log `name`."""
        return self.logs[name].origin

    def seen(self, name: str) -> CheckpointRef:
        """The latest checkpoint of log `name`, verified, as a statement's seenCheckpoint."""
        info = self.logs[name]
        with LedgerClient(self.url) as c:
            cp, _ = c.checkpoint(name, verifier_from_vkey(info.vkey), info.origin)
        return CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex())

    def submit(self, name: str, env: Envelope) -> int:
        """Post to an evidence or attested log; the tlog-proof is verified by the SDK."""
        info = self.logs[name]
        with LedgerClient(self.url) as c:
            return c.submit(name, env, verifier_from_vkey(info.vkey), info.origin).index

    def token(self) -> str:
        """An Authorization header with a fresh token, for the challenge the anonymous log sets
        for issuer0's token key (`AnonymousRule.challenge_for`)."""
        challenge = TokenChallenge(TOKEN_TYPE, "issuer0", b"", (self.origin("anonymous"),))
        req, state = begin_issuance(self.token_sk.public_key(), challenge)
        return authorization(finalize_issuance(state, issue(self.token_sk, req)))

    def anonymous(self, *texts: str) -> None:
        """Post one anonymous report per text, each with its own token and one-time key, and
        wait until the batch that integrates them is published."""
        for text in texts:
            body = envelope_body(anonymous_report(self.origin("anonymous"), text))
            r = httpx.post(
                f"{self.url}/logs/anonymous/entries",
                content=body,
                headers={"Authorization": self.token()},
                timeout=30,
            )
            assert r.status_code == 202, r.text
        self.anonymous_size += len(texts)
        deadline = time.monotonic() + BATCH_WAIT
        while self.seen("anonymous").size < self.anonymous_size:
            assert time.monotonic() < deadline, "the anonymous batch was never integrated"
            time.sleep(0.05)


def anonymous_report(
    origin: str, text: str, issued_at: int | None = None, seen: CheckpointRef | None = None
) -> Envelope:
    """A field report filed anonymously (coarse time), signed by a throw-away one-time key."""
    p = FieldReport(
        seen_checkpoint=seen or CheckpointRef(origin=origin, size=0, root=EMPTY),
        issued_at=int(time.time()) // HOUR * HOUR if issued_at is None else issued_at,
        model=ModelId(name="m", version="1"),
        category="grief",
        tier="anonymous",
        text=text,
    )
    return sign_one_time(statement_bytes(Statement.of(p)))


def attested_report(origin: str, signer: tuple[str, Ed25519PrivateKey], text: str) -> Envelope:
    """A medical-tier attested field report signed by a professional's key."""
    p = FieldReport(
        seen_checkpoint=CheckpointRef(origin=origin, size=0, root=EMPTY),
        issued_at=int(time.time()),
        model=ModelId(name="m", version="1"),
        category="medical-dosage",
        tier="attested",
        text=text,
        credential_tier="medical",
    )
    return sign_statement(p, [signer])


def new_key(keys: Path, name: str) -> Ed25519PrivateKey:
    """An Ed25519 key written to KEYS/NAME.pem (and .pem.pub), for the CLI to read."""
    key = generate_private_key()
    write_key_pair(keys / f"{name}.pem", key)
    return key


def start_server(tmp: Path, lab_pub: Path) -> LedgerProcess:
    """A server with fast anonymous batches and the lab key registered by the operator."""
    data = tmp / "data"
    # `--anonymous-interval-ms` is passed too, but the interval is also written into the config,
    # so the batches are fast whichever of the two the serve command honours.
    init_data_dir(data, origin_prefix=ORIGIN_PREFIX)
    raw = tomllib.loads((data / "config.toml").read_text())
    for lc in raw["logs"]:
        if lc["partition"] == "anonymous":
            lc["interval_ms"] = INTERVAL_MS
    (data / "config.toml").write_text(tomli_w.dumps(raw))
    srv = LedgerProcess(
        data,
        extra_args=("--allow-lab", str(lab_pub), "--anonymous-interval-ms", str(INTERVAL_MS)),
    )
    srv.start()
    return srv


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The server, populated: 2 issuers, a token key, 2 credentials, 1 attested report,
    2 anonymous reports."""
    tmp = tmp_path_factory.mktemp("partitions")
    keys = tmp / "keys"
    keys.mkdir()
    new_key(keys, "lab")
    srv = start_server(tmp, keys / "lab.pem.pub")
    try:
        with LedgerClient(srv.base_url) as c:
            logs = {info.name: info for info in c.logs()}
        w = World(
            srv,
            keys,
            logs,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            new_key(keys, "nurse"),
        )
        cli = CliRunner()
        for i in range(2):
            new_key(keys, f"issuer{i}")
            certify = [
                "keys", "certify", "--ledger", w.url, "--key", str(keys / "lab.pem"),
                "--role", "issuer", "--subject", str(keys / f"issuer{i}.pem"),
            ]  # fmt: skip
            res = cli.invoke(bledger, certify)
            assert res.exit_code == 0, res.output
        issuers = [(f"issuer{i}", load_private_key(keys / f"issuer{i}.pem")) for i in range(2)]
        now = int(time.time())
        spki = base64.b64encode(token_key_bytes(w.token_sk.public_key())).decode()
        publish = TokenKey(
            action="publish",
            token_key=spki,
            not_after=now + 86400,
            seen_checkpoint=w.seen("evidence"),
            issued_at=now,
        )
        w.submit("evidence", sign_statement(publish, [issuers[0]]))
        for name, key in issuers:
            cred = CredentialEvent(
                action="issue",
                credential_id=f"cred-{name}",
                tier="medical",
                holder_key=verifier_key("nurse", w.nurse.public_key()),
                expires_at=now + 86400,
                seen_checkpoint=w.seen("evidence"),
                issued_at=now,
            )
            w.submit("evidence", sign_statement(cred, [(name, key)]))
        w.submit("attested", attested_report(w.origin("attested"), ("nurse", w.nurse), "dose"))
        w.anonymous("first", "second")
        yield w
    finally:
        srv.stop()
        srv.kill9()


@pytest.fixture
def nodes() -> Iterator[list[AuditNode]]:
    """Nodes opened by a test, closed afterwards."""
    opened: list[AuditNode] = []
    yield opened
    for n in opened:
        n.close()


def open_node(
    data: Path, w: World, names: tuple[str, ...], opened: list[AuditNode], **changes: object
) -> AuditNode:
    """A node at DATA following logs `names` of the world's server (`changes` to each config)."""
    for name in names:
        fl = replace(follow_log(data, w.url, name), **changes)  # type: ignore[arg-type]
        others = [lg for lg in load_node_config(data).logs if lg.origin != fl.origin]
        save_logs(data, [*others, fl])
    node = AuditNode.open(data)
    opened.append(node)
    return node


# -- an honest server -------------------------------------------------------------------------


def test_node_validates_every_partition_clean(
    world: World, tmp_path: Path, nodes: list[AuditNode]
) -> None:
    node = open_node(tmp_path / "node", world, ("evidence", "attested", "anonymous"), nodes)
    assert {lg.partition for lg in load_node_config(tmp_path / "node").logs} == {
        "evidence",
        "attested",
        "anonymous",
    }
    results: dict[str, StepResult] = {}
    for origin, res in node.audit_round(force=True).items():
        assert isinstance(res, StepResult), f"{origin}: {res}"
        assert res.witnessed and res.warnings == [], res
        assert node.cosigner.name in res.cosigners
        results[origin] = res
    ev, att, anon = (world.origin(n) for n in ("evidence", "attested", "anonymous"))
    # lab, 2 issuers, token key, 2 credentials; one attested report; two anonymous reports.
    assert [(results[o].size, results[o].new_entries) for o in (ev, att, anon)] == [
        (6, 6),
        (1, 1),
        (world.anonymous_size, world.anonymous_size),
    ]
    assert node.evidence() == []
    assert node.logs[ev].chain.credentials, "the evidence chain holds the credentials"

    # The anonymous log's next batch: consistency from the verified size, new tiles, cosigned.
    world.anonymous("third")
    res = node.step(anon)
    assert (res.size, res.new_entries) == (world.anonymous_size, 1)
    head = node.latest(anon)
    assert head is not None and f"— {node.cosigner.name} " in head.note.decode()
    assert node.step(anon).new_entries == 0
    assert node.evidence() == []


def test_attested_credentials_come_from_the_evidence_log(
    world: World, tmp_path: Path, nodes: list[AuditNode]
) -> None:
    # Stepped before the evidence log was verified at all: the node catches the evidence log up
    # (once) before it judges the credentials.
    node = open_node(tmp_path / "n1", world, ("evidence", "attested"), nodes)
    res = node.step(world.origin("attested"))
    assert (res.new_entries, res.warnings) == (1, [])
    assert node.latest(world.origin("evidence")) is not None

    # A node that wants three issuers per key catches the entry the server admitted with two.
    strict = open_node(tmp_path / "n2", world, ("evidence", "attested"), nodes, attested_quorum=3)
    results = strict.audit_round(force=True)
    assert isinstance(results[world.origin("evidence")], StepResult)
    caught = results[world.origin("attested")]
    assert isinstance(caught, LogMisbehaved)
    ev = caught.evidence
    assert ev.kind == "invalid-entry" and ev.context is not None
    assert ev.context.stage == "credentials"
    assert "2 distinct issuer(s)" in ev.reason and "3 needed" in ev.reason

    # Without the evidence log there is nothing to check credentials against: it says so.
    alone = open_node(tmp_path / "n3", world, ("attested",), nodes)
    res = alone.step(world.origin("attested"))
    assert res.new_entries == 1
    assert any("does not follow the evidence log" in w for w in res.warnings)


def test_follow_pins_the_partition(world: World, tmp_path: Path) -> None:
    fl = follow_log(tmp_path / "node", world.url, "anonymous")
    assert fl.partition == "anonymous"
    cfg = load_node_config(tmp_path / "node")
    assert [lg.partition for lg in cfg.logs] == ["anonymous"]
    # A log that later claims another partition is refused, like one that changes its keys.
    save_logs(tmp_path / "node", [replace(fl, partition="evidence")])
    with pytest.raises(Exception, match="partition"):
        follow_log(tmp_path / "node", world.url, "anonymous")
    # Configs from before partitions existed still load, as evidence logs.
    path = tmp_path / "node" / "config.toml"
    raw = tomllib.loads(path.read_text())
    del raw["logs"][0]["partition"]
    path.write_text(tomli_w.dumps(raw))
    assert load_node_config(tmp_path / "node").logs[0].partition == "evidence"


# -- a dishonest operator ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """The anonymous log's rows an operator rewrites: bundle 0, level-0 tile 0, the head."""

    bundle: bytes
    tile: bytes
    root: bytes
    checkpoint: str


class Operator:
    """Edits the anonymous log's SQLite rows behind the server's back (it reads them per
    request: partial tiles and bundles are not cached)."""

    def __init__(self, w: World) -> None:
        self.db = sqlite3.connect(w.srv.data / "ledger.db")
        (self.log_id,) = self.db.execute("SELECT id FROM logs WHERE name = 'anonymous'").fetchone()
        self.key = load_private_key(w.srv.data / "keys" / "anonymous.pem")
        self.origin = w.origin("anonymous")

    def rows(self) -> Rows:
        one = self.db.execute
        bundle = stored_bundle(self.db, self.log_id, 0)
        (tile,) = one(
            "SELECT data FROM tiles WHERE log_id=? AND level=0 AND idx=0", (self.log_id,)
        ).fetchone()
        root, cp = one(
            "SELECT root, checkpoint FROM heads WHERE log_id=?", (self.log_id,)
        ).fetchone()
        return Rows(bytes(bundle), bytes(tile), bytes(root), str(cp))

    def write(self, rows: Rows) -> None:
        overwrite_bundle(self.db, self.log_id, 0, rows.bundle)
        self.db.execute(
            "UPDATE tiles SET data=? WHERE log_id=? AND level=0 AND idx=0", (rows.tile, self.log_id)
        )
        self.db.execute(
            "UPDATE heads SET root=?, checkpoint=? WHERE log_id=?",
            (rows.root, rows.checkpoint, self.log_id),
        )
        self.db.commit()

    def forge(self, honest: Rows, index: int, entry: bytes, *, resign: bool) -> Rows:
        """`honest` with entry `index` replaced; with `resign`, also its leaf hash in the tile
        and a new root, signed with the log's own key (what only the operator can do)."""
        entries = decode_bundle(honest.bundle)
        entries[index] = entry
        forged = replace(honest, bundle=encode_bundle(entries))
        if not resign:
            return forged
        leaves = split_hashes(honest.tile)
        assert len(leaves) == len(entries), "a log under 256 entries has one partial tile"
        leaves[index] = merkle.leaf_hash(entry)
        root = merkle.root_hash(leaves)
        head = signed_head(self.origin, len(leaves), root, Ed25519NoteSigner(self.origin, self.key))
        return replace(forged, tile=b"".join(leaves), root=root, checkpoint=head.checkpoint)


def test_forged_anonymous_entry_is_caught(
    world: World, tmp_path: Path, nodes: list[AuditNode]
) -> None:
    anon = world.origin("anonymous")
    honest_node = open_node(tmp_path / "honest", world, ("anonymous",), nodes)
    assert honest_node.step(anon).size == world.anonymous_size
    op = Operator(world)
    honest = op.rows()
    # An entry the log would never admit: an exact-second issuedAt, re-signed with a one-time
    # key so that its signature still verifies.
    exact = int(time.time()) // HOUR * HOUR + 17
    bad = anonymous_report(anon, "rewritten", issued_at=exact).canonical_bytes()
    try:
        # (a) Only the bundle row: the entry no longer hashes to the leaf the tiles commit to.
        op.write(op.forge(honest, 0, bad, resign=False))
        with pytest.raises(LogMisbehaved) as e:
            open_node(tmp_path / "a", world, ("anonymous",), nodes).step(anon)
        assert e.value.evidence.kind == "entry-mismatch"

        # (b) Bundle, tile and a checkpoint re-signed with the log's key: a node that verified
        # the honest tree sees two roots for one size; a fresh node sees a consistent tree whose
        # entry 0 breaks the anonymous partition's coarse-time rule.
        op.write(op.forge(honest, 0, bad, resign=True))
        honest_node.recheck.per_round = 0  # else it re-reads bundle 0 first (entry-mismatch)
        with pytest.raises(LogMisbehaved) as e:
            honest_node.step(anon)
        assert e.value.evidence.kind == "split-view"
        assert "proven split view" in verify_evidence(
            e.value.evidence.to_json(), world.logs["anonymous"].vkey
        )
        with pytest.raises(LogMisbehaved) as e:
            open_node(tmp_path / "b", world, ("anonymous",), nodes).step(anon)
        ev = e.value.evidence
        assert ev.kind == "invalid-entry" and ev.entry is not None and ev.entry.index == 0
        assert ev.context is not None and ev.context.stage == "coarse-time"
    finally:
        op.write(honest)
        op.db.close()
    # Restored, a fresh node verifies it clean again (and the test leaves the world as it was).
    assert open_node(tmp_path / "c", world, ("anonymous",), nodes).step(anon).new_entries > 0


# -- the pure validators ----------------------------------------------------------------------

ANON = "test.example/anonymous"
ATT = "test.example/attested"


def _raises(stage: str, fn: object, *args: object) -> EntryInvalid:
    with pytest.raises(EntryInvalid) as e:
        fn(*args)  # type: ignore[operator]
    assert e.value.stage == stage, e.value.diagnostic
    return e.value


def test_anonymous_rules_on_single_entries() -> None:
    ok = anonymous_report(ANON, "fine").canonical_bytes()
    assert validate_anonymous_entry(0, ok, ANON, None).predicate.tier == "anonymous"  # type: ignore[union-attr]
    root_at = lambda size: merkle.EMPTY_ROOT  # noqa: E731
    _, signers = validate_partition_entry("anonymous", 3, ok, ANON, root_at, chain=KeyChain())
    assert signers == frozenset()

    exact = int(time.time()) // HOUR * HOUR + 17
    bad = anonymous_report(ANON, "exact", issued_at=exact).canonical_bytes()
    err = _raises("coarse-time", validate_anonymous_entry, 0, bad, ANON, None)
    assert str(exact) in err.problem

    # A named (non one-time) key, a second signature, an altered payload.
    named = generate_private_key()
    report = parse_statement(Envelope.from_json(ok).payload).predicate
    assert isinstance(report, FieldReport)
    by_name = sign_statement(report, [("alice", named)]).canonical_bytes()
    _raises("signature", validate_anonymous_entry, 0, by_name, ANON, None)
    env = Envelope.from_json(ok)
    twice = Envelope(env.payload_type, env.payload, (*env.signatures, *env.signatures))
    _raises("signature", validate_anonymous_entry, 0, twice.canonical_bytes(), ANON, None)
    other = anonymous_report(ANON, "other")
    swapped = Envelope(env.payload_type, other.payload, env.signatures)
    _raises("signature", validate_anonymous_entry, 0, swapped.canonical_bytes(), ANON, None)

    # An attested report, or a statement of another kind, in the anonymous log.
    att = attested_report(ANON, ("nurse", named), "x").canonical_bytes()
    _raises("partition", validate_anonymous_entry, 0, att, ANON, None)
    key_event = KeyEvent(
        seen_checkpoint=CheckpointRef(origin=ANON, size=0, root=EMPTY),
        issued_at=exact,
        action="register",
        role="lab",
        key=verifier_key("lab", named.public_key()),
    )
    ke = sign_one_time(statement_bytes(Statement.of(key_event))).canonical_bytes()
    _raises("partition", validate_anonymous_entry, 0, ke, ANON, None)

    # Steps 1-3 as everywhere: another log's checkpoint, a root the log never had.
    elsewhere = anonymous_report("elsewhere.example/x", "y").canonical_bytes()
    _raises("backdating", validate_anonymous_entry, 0, elsewhere, ANON, None)
    _raises("backdating", validate_anonymous_entry, 0, ok, ANON, lambda s: b"\x01" * 32)
    _raises("envelope", validate_anonymous_entry, 0, ok + b" ", ANON, None)


def _evidence_chain(holder: Ed25519PrivateKey, issuers: int) -> KeyChain:
    """An evidence key chain where `issuers` issuers each credentialed `holder` for medical."""
    op, lab = generate_private_key(), generate_private_key()
    chain = KeyChain([_raw(op)])
    seen = CheckpointRef(origin="test.example/evidence", size=0, root=EMPTY)
    index = iter(range(1_000))

    def apply(predicate: KeyEvent | CredentialEvent, *signers: Ed25519PrivateKey) -> None:
        chain.apply(next(index), Statement.of(predicate), frozenset(map(_raw, signers)))

    def register(role: str, name: str, key: Ed25519PrivateKey) -> KeyEvent:
        vkey = verifier_key(name, key.public_key())
        return KeyEvent(seen_checkpoint=seen, issued_at=0, action="register", role=role, key=vkey)  # type: ignore[arg-type]

    apply(register("lab", "lab", lab), op)
    for i in range(issuers):
        iss = generate_private_key()
        apply(register("issuer", f"i{i}", iss), lab, iss)
        cred = CredentialEvent(
            seen_checkpoint=seen,
            issued_at=0,
            action="issue",
            credential_id="c",
            tier="medical",
            holder_key=verifier_key("nurse", holder.public_key()),
            expires_at=1,  # long expired: expiry is not the auditor's to judge (see docstring)
        )
        apply(cred, iss)
    return chain


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def test_attested_rules_on_single_entries() -> None:
    nurse = generate_private_key()
    ok = attested_report(ATT, ("nurse", nurse), "r").canonical_bytes()
    two = _evidence_chain(nurse, 2)
    _, signers = validate_attested_entry(0, ok, ATT, None, two, 2)
    assert signers == {nurse.public_key().public_bytes_raw()}
    err = _raises(
        "credentials", validate_attested_entry, 0, ok, ATT, None, _evidence_chain(nurse, 1), 2
    )
    assert "1 distinct issuer(s)" in err.problem
    _raises("credentials", validate_attested_entry, 0, ok, ATT, None, two, 3)

    # A key no credential names (even under the holder's keyid), and an altered payload.
    stranger = generate_private_key()
    unknown = attested_report(ATT, ("stranger", stranger), "r").canonical_bytes()
    _raises("signature", validate_attested_entry, 0, unknown, ATT, None, two)
    impostor = attested_report(ATT, ("nurse", stranger), "r").canonical_bytes()
    _raises("signature", validate_attested_entry, 0, impostor, ATT, None, two)
    env = Envelope.from_json(ok)
    other = attested_report(ATT, ("nurse", nurse), "other")
    forged = Envelope(env.payload_type, other.payload, env.signatures).canonical_bytes()
    _raises("signature", validate_attested_entry, 0, forged, ATT, None, two)

    # Without the evidence chain: steps 1-4 only (shape), signatures and credentials unchecked.
    assert validate_attested_entry(0, impostor, ATT, None, None)[1] == frozenset()
    anon = anonymous_report(ATT, "a").canonical_bytes()
    _raises("partition", validate_attested_entry, 0, anon, ATT, None, None)


def test_partition_rules_are_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "verifier.md").read_text()
    for stage in ("partition", "coarse-time", "signature", "credentials", "attested_quorum"):
        assert f"`{stage}`" in text, stage
    for partition in ("evidence", "attested", "anonymous"):
        assert f"| `{partition}` |" in text, partition
