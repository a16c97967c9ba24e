"""Reliability: nothing acknowledged is ever lost, on SQLite and PostgreSQL.

Two tests, each on both backends:

* `test_kill_9_under_concurrent_writes`: 16 writer threads post distinct envelopes to a real
  server while it is `kill -9`ed at random moments and restarted on the same data; afterwards
  every acknowledged entry is at its index with a valid inclusion proof under the final
  checkpoint, every checkpoint anyone saw is consistent with the final one, and the whole log
  re-audits (`check_log`).
* `test_crash_point`: a child process drives `Sequencer.integrate` directly and `os._exit`s at
  one crash point of the writer path (table-driven, one case per point). The reopened store
  holds exactly the old or exactly the new checkpoint, every row agrees with it, and what was
  integrated before the crash is intact. "Failed" (the batch is gone) is told apart from
  "failed but actually persisted" (committed, never answered: resubmitting is a duplicate).

Randomness is seeded; the seed is in every failure message (set BLEDGER_TEST_SEED to replay).
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, select

from attest import merkle
from attest import privacypass as pp
from attest.anonymous import sign_one_time
from attest.audit import audit_tree
from attest.checkpoint import Checkpoint, open_checkpoint
from attest.dsse import Envelope
from attest.keys import generate_private_key, write_key_pair
from attest.note import NoteVerifier
from attest.predicates import CheckpointRef, FieldReport, ModelId
from attest.statement import Statement, statement_bytes
from attest.tiles import ENTRIES_LEVEL, TILE_WIDTH, decode_bundle, tile_width, tiles_for_size
from attest.vkey import parse_vkey
from clients.sdk import verify_submission
from ledger import schema
from ledger.config import init_data_dir, load_config
from ledger.log import Log
from ledger.sequencer import Sequenced
from ledger.server import LedgerServer
from ledger.storage import Head, assemble_bundle, leaf_prefix
from tests.ledger.test_issuer import (
    HOUR,
    IssuerProcess,
    Lab,
    _set_anonymous_interval,
    anonymous_info,
    challenges,
    get_token,
)
from tests.support import (
    LOG,
    ORIGIN_PREFIX,
    PROJECT_ROOT,
    LedgerProcess,
    Signer,
    check_log,
    envelope_body,
    log_identity,
)

pytestmark = pytest.mark.slow

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SEED = int(os.environ.get("BLEDGER_TEST_SEED", random.SystemRandom().randrange(2**32)))
PROGRESS_DEADLINE = 60.0  # a hung server fails the test instead of hanging it; not a timing check


@pytest.fixture(params=BACKENDS)
def backend_db(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (the server's default, inside DATA) or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


# -- kill -9 under concurrent writes ----------------------------------------------------------

WRITERS = 16
KILLS = 3
MIN_ACKS_PER_LIFE = 10  # each server life acknowledges at least this many before it is killed
RECENT_PER_KILL = 32  # acks just before each kill, all re-posted as duplicates afterwards
SAMPLE_DUPLICATES = 64  # plus this many other acks, chosen at random


@dataclass(frozen=True)
class Ack:
    """A write the server acknowledged, as the writer received it."""

    envelope: Envelope
    body: bytes
    index: int
    leaf_hash: bytes
    checkpoint: str
    tlog_proof: str
    life: int  # which server process answered (0 = first)


@dataclass
class Record:
    """Everything the writers and the checkpoint watcher saw, shared under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acks: list[Ack] = field(default_factory=list)
    in_doubt: list[tuple[Envelope, bytes, str]] = field(default_factory=list)  # sent, no answer
    refused: int = 0  # connection refused: never sent
    unexpected: list[str] = field(default_factory=list)  # HTTP answers other than 200
    checkpoints: set[str] = field(default_factory=set)

    def acks_in(self, life: int) -> int:
        with self.lock:
            return sum(1 for a in self.acks if a.life == life)


@dataclass
class Fleet:
    """The writer threads and the checkpoint watcher, pointed at one server."""

    srv: LedgerProcess
    signer: Signer
    rec: Record = field(default_factory=Record)
    stop: threading.Event = field(default_factory=threading.Event)
    life: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for w in range(WRITERS):
            self.threads.append(threading.Thread(target=self._write, args=(w,), daemon=True))
        self.threads.append(threading.Thread(target=self._watch, daemon=True))
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=PROGRESS_DEADLINE)
            assert not t.is_alive(), "a writer thread hung"

    def _write(self, w: int) -> None:
        n = 0
        with httpx.Client(timeout=30.0) as http:
            while not self.stop.is_set():
                env = self.signer.envelope(f"seed{SEED}-writer{w}-{n}")
                n += 1
                self._post(http, env, envelope_body(env))

    def _post(self, http: httpx.Client, env: Envelope, body: bytes) -> None:
        life = self.life
        try:
            r = http.post(f"{self.srv.base_url}/logs/{LOG}/entries", content=body)
        except httpx.ConnectError:
            with self.rec.lock:
                self.rec.refused += 1
            time.sleep(0.05)  # the server is down: do not spin
            return
        except httpx.HTTPError as e:
            with self.rec.lock:
                self.rec.in_doubt.append((env, body, repr(e)))
            return
        if r.status_code != 200:
            with self.rec.lock:
                self.rec.unexpected.append(f"HTTP {r.status_code}: {r.text[:300]}")
                self.rec.in_doubt.append((env, body, f"HTTP {r.status_code}"))
            return
        j = r.json()
        ack = Ack(
            env,
            body,
            int(j["index"]),
            base64.b64decode(j["leaf_hash"]),
            str(j["checkpoint"]),
            str(j["tlog_proof"]),
            life,
        )
        with self.rec.lock:
            self.rec.acks.append(ack)
            self.rec.checkpoints.add(ack.checkpoint)

    def _watch(self) -> None:
        with httpx.Client(timeout=30.0) as http:
            while not self.stop.is_set():
                try:
                    r = http.get(f"{self.srv.base_url}/logs/{LOG}/checkpoint")
                except httpx.HTTPError:
                    time.sleep(0.02)
                    continue
                if r.status_code == 200:
                    with self.rec.lock:
                        self.rec.checkpoints.add(r.text)
                time.sleep(0.01)

    def run_life(self, rng: random.Random) -> None:
        """Let the writers run for a random while, and until this life acknowledged enough."""
        time.sleep(rng.uniform(0.3, 1.5))
        deadline = time.monotonic() + PROGRESS_DEADLINE
        while self.rec.acks_in(self.life) < MIN_ACKS_PER_LIFE:
            assert time.monotonic() < deadline, f"no progress in server life {self.life}"
            time.sleep(0.01)


def test_kill_9_under_concurrent_writes(backend_db: str | None, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    signer = Signer.create(tmp_path / "keys")
    srv = LedgerProcess(tmp_path / "data", backend_db, (signer.pub,))
    fleet = Fleet(srv, signer)
    try:
        srv.start()
        vkey, origin = log_identity(srv.base_url)
        fleet.start()
        before_kills: list[Ack] = []
        for _ in range(KILLS):
            fleet.run_life(rng)
            srv.kill9()
            before_kills += _last_acks(fleet.rec, fleet.life)
            fleet.life += 1
            srv.start()
            assert log_identity(srv.base_url) == (vkey, origin), "the log changed its key"
        fleet.run_life(rng)
        fleet.join()
        _check_after_crashes(srv, fleet.rec, before_kills, vkey, origin, rng)
        assert "Traceback" not in srv.stderr_all(), srv.stderr_all()[-4000:]
    except BaseException as e:
        e.add_note(f"seed {SEED}; server stderr tail:\n{srv.stderr_tail()}")
        raise
    finally:
        fleet.stop.set()
        try:
            srv.stop()
        finally:
            srv.kill9()


def _last_acks(rec: Record, life: int) -> list[Ack]:
    with rec.lock:
        return [a for a in rec.acks if a.life == life][-RECENT_PER_KILL:]


def _repost_duplicates(base_url: str, acks: Sequence[Ack]) -> None:
    """Re-post acknowledged envelopes: each is a duplicate at the index first acknowledged."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:

        def one(a: Ack) -> None:
            r = http.post(f"/logs/{LOG}/entries", content=a.body)
            assert r.status_code == 200, r.text
            j = r.json()
            assert (j["index"], j["duplicate"]) == (a.index, True), (a.index, j)
            assert base64.b64decode(j["leaf_hash"]) == a.leaf_hash

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, acks))


def _check_after_crashes(
    srv: LedgerProcess,
    rec: Record,
    before_kills: Sequence[Ack],
    vkey: str,
    origin: str,
    rng: random.Random,
) -> None:
    verifier = parse_vkey(vkey)
    assert not rec.unexpected, rec.unexpected[:5]
    assert rec.acks, "nothing was acknowledged"
    # (1): a write that got no answer either failed or was persisted; re-posting tells which.
    persisted = _resolve_in_doubt(srv.base_url, rec, verifier, origin)
    # (2): distinct entries got distinct indices, each acknowledged once.
    by_index: dict[int, Ack] = {}
    for a in rec.acks:
        other = by_index.setdefault(a.index, a)
        assert other is a, f"index {a.index} acknowledged for two different entries"
    # (3): each acknowledgement carried a proof that verifies offline.
    for a in rec.acks:
        cp = verify_submission(a.tlog_proof, a.envelope, verifier, origin)
        assert a.index < cp.size and a.leaf_hash == merkle.leaf_hash(a.envelope.canonical_bytes())
    # (4): re-posted after the restarts, the writes acknowledged just before each kill and a
    # random sample of the others are duplicates at the index they were acknowledged with.
    sample = rng.sample(rec.acks, min(SAMPLE_DUPLICATES, len(rec.acks)))
    _repost_duplicates(srv.base_url, [*before_kills, *sample])
    # (5): the whole log re-audits; the final checkpoint is the one everything is checked against.
    final = check_log(srv.base_url, vkey, origin)
    # (6): the log holds exactly the acknowledged entries: none lost, none unaccounted for.
    assert sorted(by_index) == list(range(final.size)), (final.size, len(by_index), persisted)
    with httpx.Client(base_url=srv.base_url, timeout=30.0) as http:
        _check_acks_at_final(http, rec.acks, final)
        _check_checkpoints_consistent(http, rec.checkpoints, final, verifier, origin)
    print(
        f"seed {SEED}: {len(rec.acks)} acks, {len(rec.checkpoints)} checkpoints, "
        f"{rec.refused} refused, in doubt: {persisted.count(True)} persisted, "
        f"{persisted.count(False)} lost; final size {final.size}"
    )


def _resolve_in_doubt(
    base_url: str, rec: Record, verifier: NoteVerifier, origin: str
) -> list[bool]:
    """For each write that got no answer: was it persisted? Re-post it to find out and finish it.

    Persisted ones come back as duplicates at the index the lookup found; the others are new.
    Returns, per in-doubt write, whether it had been persisted.
    """
    seen: dict[bytes, bool] = {}
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        for env, body, _why in rec.in_doubt:
            leaf = merkle.leaf_hash(env.canonical_bytes())
            if leaf in seen:
                continue
            q = http.get(
                f"/logs/{LOG}/proof/inclusion-by-hash",
                params={"leaf_hash": base64.b64encode(leaf).decode()},
            )
            assert q.status_code in (200, 404), q.text
            was_there = q.status_code == 200
            seen[leaf] = was_there
            r = http.post(f"/logs/{LOG}/entries", content=body)
            assert r.status_code == 200, r.text
            j = r.json()
            assert j["duplicate"] is was_there, (was_there, j)
            if was_there:
                assert j["index"] == q.json()["index"]
            ack = Ack(env, body, j["index"], leaf, j["checkpoint"], j["tlog_proof"], life=-1)
            verify_submission(ack.tlog_proof, env, verifier, origin)
            rec.acks.append(ack)
            rec.checkpoints.add(ack.checkpoint)
    return list(seen.values())


def _check_acks_at_final(http: httpx.Client, acks: Sequence[Ack], final: Checkpoint) -> None:
    """Every acknowledged entry is at its index and has an inclusion proof under `final`."""

    def one(a: Ack) -> None:
        r = http.get(f"/logs/{LOG}/entries/{a.index}")
        assert r.status_code == 200, r.text
        entry = base64.b64decode(r.json()["entry"])
        assert merkle.leaf_hash(entry) == a.leaf_hash, f"entry {a.index} is not what was acked"
        assert entry == a.envelope.canonical_bytes()
        p = http.get(f"/logs/{LOG}/proof/inclusion", params={"index": a.index, "size": final.size})
        assert p.status_code == 200, p.text
        proof = [base64.b64decode(h) for h in p.json()["inclusion_proof"]]
        merkle.verify_inclusion(a.leaf_hash, a.index, final.size, proof, final.root_hash)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, acks))


def _check_checkpoints_consistent(
    http: httpx.Client,
    notes: set[str],
    final: Checkpoint,
    verifier: NoteVerifier,
    origin: str,
) -> None:
    """Every checkpoint anyone saw verifies and is a prefix of `final` (no fork, no rollback)."""
    roots: dict[int, bytes] = {}
    for note in notes:
        cp, _ = open_checkpoint(note.encode(), verifier, origin)
        assert roots.setdefault(cp.size, cp.root_hash) == cp.root_hash, f"fork at {cp.size}"
        assert cp.size <= final.size, f"checkpoint {cp.size} beyond the final {final.size}"

    def one(size: int) -> None:
        if size == 0:
            assert roots[0] == merkle.EMPTY_ROOT
            return
        r = http.get(f"/logs/{LOG}/proof/consistency", params={"first": size, "second": final.size})
        assert r.status_code == 200, r.text
        proof = [base64.b64decode(h) for h in r.json()["consistency_proof"]]
        merkle.verify_consistency(size, final.size, proof, roots[size], final.root_hash)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, sorted(roots)))


# -- crash points of the writer path ----------------------------------------------------------

CHILD = textwrap.dedent(
    '''
    """Integrate batch A, then integrate batch B and die (os._exit) at crash point POINT."""
    import base64, json, os, sys
    from pathlib import Path

    from sqlalchemy import event

    from ledger import schema
    from ledger.config import init_data_dir
    from ledger.log import Log
    from ledger.server import LedgerServer
    from ledger.storage import WriteTxn

    data, db, point, batches = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4]
    a, b = ([base64.b64decode(x) for x in xs] for xs in json.loads(Path(batches).read_text()))


    def say(**kw):
        print(json.dumps(kw), flush=True)


    def crash():
        say(crashed=point)
        os._exit(137)


    cfg = init_data_dir(Path(data), origin_prefix="crash.test/logs", db=db)
    hosted = LedgerServer.from_config(cfg).logs["evidence"]
    hosted.sequencer.rule = None  # the writer path alone; admission has its own tests
    say(a=[r.index for r in hosted.sequencer.integrate(a)], head=hosted.log.head().checkpoint)

    commit_batch, upsert = WriteTxn.commit_batch, WriteTxn._upsert


    def crashing_commit_batch(self, batch):
        say(pending=batch.new_head.checkpoint)
        if point == "before_commit_batch":
            crash()
        commit_batch(self, batch)
        if point == "after_commit_batch":
            crash()


    def crashing_upsert(self, table, *args):
        if point == f"before_{table.name}_upsert":
            crash()
        upsert(self, table, *args)
        if point == f"after_{table.name}_upsert":
            crash()


    insert_leaves = WriteTxn._insert_leaves


    def crashing_insert_leaves(self, leaves):
        # The leaf index is written through the driver (COPY on PostgreSQL), which no
        # SQLAlchemy statement event sees: patch the method instead.
        insert_leaves(self, leaves)
        if point == "after_leaves_insert":
            crash()


    write_rows = WriteTxn._write_rows


    def crashing_write_rows(self, sql, rows):
        # Parts of partial bundles go through the driver too (`ledger.schema.bundle_parts`).
        write_rows(self, sql, rows)
        if point == "after_bundle_parts_insert" and sql.startswith("INSERT INTO bundle_parts"):
            crash()


    WriteTxn.commit_batch, WriteTxn._upsert = crashing_commit_batch, crashing_upsert
    WriteTxn._insert_leaves, WriteTxn._write_rows = crashing_insert_leaves, crashing_write_rows
    engine = hosted.log.store._write
    statements = {
        "after_checkpoints_insert": "INSERT INTO checkpoints",
        "after_heads_update": "UPDATE heads",
    }


    @event.listens_for(engine, "after_cursor_execute")
    def after_statement(conn, cursor, statement, params, context, executemany):
        if point in statements and statement.lstrip().startswith(statements[point]):
            crash()


    @event.listens_for(engine, "commit")
    def before_commit(conn):
        if point == "before_db_commit":
            crash()


    if point == "after_db_commit":
        Log.remember_edge = lambda self, tiles: crash()
    results = hosted.sequencer.integrate(b)
    if point == "after_integrate":
        crash()
    say(b=[r.index for r in results])
    '''
)


@dataclass(frozen=True)
class CrashPoint:
    """Where the child dies, and whether batch B is in the log afterwards."""

    name: str
    persisted: bool


# In writer-path order (ledger.sequencer.Sequencer.integrate -> ledger.storage.WriteTxn).
CRASH_POINTS = [
    CrashPoint("before_commit_batch", persisted=False),  # batch signed, nothing written
    CrashPoint("after_leaves_insert", persisted=False),
    CrashPoint("after_bundle_parts_insert", persisted=False),  # bundle 1's first part
    CrashPoint("before_bundles_upsert", persisted=False),  # bundle 0, filled by batch B
    CrashPoint("after_bundles_upsert", persisted=False),
    CrashPoint("after_tiles_upsert", persisted=False),
    CrashPoint("after_checkpoints_insert", persisted=False),
    CrashPoint("after_heads_update", persisted=False),
    CrashPoint("after_commit_batch", persisted=False),  # every row written, not committed
    CrashPoint("before_db_commit", persisted=False),
    CrashPoint("after_db_commit", persisted=True),  # committed, the caller never answered
    CrashPoint("after_integrate", persisted=True),  # integrate returned, nobody acknowledged
]

BATCH_A = 250  # the crashing batch B crosses the first tile and bundle boundary (256)
BATCH_B = 20


def _child_crash(
    tmp_path: Path, db: str | None, point: str, a: list[bytes], b: list[bytes]
) -> subprocess.CompletedProcess[str]:
    batches = tmp_path / "batches.json"
    batches.write_text(json.dumps([[base64.b64encode(e).decode() for e in xs] for xs in (a, b)]))
    script = tmp_path / "crash_child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), str(tmp_path / "data"), db or "", point, str(batches)]
    return subprocess.run(
        args, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=PROGRESS_DEADLINE
    )


@pytest.mark.parametrize("point", CRASH_POINTS, ids=lambda p: p.name)
def test_crash_point(point: CrashPoint, backend_db: str | None, tmp_path: Path) -> None:
    signer = Signer.create(tmp_path / "keys")
    a = [signer.envelope(f"a-{i}").canonical_bytes() for i in range(BATCH_A)]
    b = [signer.envelope(f"b-{i}").canonical_bytes() for i in range(BATCH_B)]
    child = _child_crash(tmp_path, backend_db, point.name, a, b)
    said = [json.loads(line) for line in child.stdout.splitlines()]
    assert child.returncode == 137, f"child exited with {child.returncode}:\n{child.stderr}"
    assert said[-1] == {"crashed": point.name}, said  # it died where the case says, not before
    old, new = said[0]["head"], said[1]["pending"]
    assert said[0]["a"] == list(range(BATCH_A))

    server = LedgerServer.from_config(load_config(tmp_path / "data"))
    try:
        hosted = server.logs[LOG]
        verifier = hosted.signer.verifier()
        # (1): the head is exactly the old or exactly the new checkpoint, as the case says.
        head = hosted.log.head()
        assert head.checkpoint == (new if point.persisted else old), point
        open_checkpoint(head.checkpoint.encode(), verifier, hosted.origin)
        # (2): every row agrees with the head, and the tiles and entries re-audit to its root.
        check_store(hosted.log, head)
        # (3): what was integrated before the crash is intact.
        for i, e in enumerate(a):
            assert hosted.log.entry(i) == e
        # (4): "failed" vs "failed but persisted": re-submitting B (the caller never got an
        # answer) appends it where it would have gone, or finds it there already.
        hosted.sequencer.rule = None  # as in the child: the writer path alone
        results = hosted.sequencer.integrate(b)
        again = [r for r in results if isinstance(r, Sequenced)]
        assert len(again) == len(results), results
        assert [r.index for r in again] == list(range(BATCH_A, BATCH_A + BATCH_B))
        assert all(r.duplicate is point.persisted for r in again)
        after = hosted.log.head()
        assert after.checkpoint == new  # deterministic: the same tree, the same signature
        check_store(hosted.log, after)
        for i, e in enumerate(b):
            assert hosted.log.entry(BATCH_A + i) == e
    finally:
        server.store.close()


def test_no_crash_control(backend_db: str | None, tmp_path: Path) -> None:
    """The child without a crash point: both batches land, the same way the cases expect."""
    signer = Signer.create(tmp_path / "keys")
    a = [signer.envelope(f"a-{i}").canonical_bytes() for i in range(BATCH_A)]
    b = [signer.envelope(f"b-{i}").canonical_bytes() for i in range(BATCH_B)]
    child = _child_crash(tmp_path, backend_db, "none", a, b)
    assert child.returncode == 0, child.stderr
    said = [json.loads(line) for line in child.stdout.splitlines()]
    assert said[-1] == {"b": list(range(BATCH_A, BATCH_A + BATCH_B))}
    server = LedgerServer.from_config(load_config(tmp_path / "data"))
    try:
        head = server.logs[LOG].log.head()
        assert head.checkpoint == said[1]["pending"]
        check_store(server.logs[LOG].log, head)
    finally:
        server.store.close()


def check_store(log: Log, head: Head) -> None:
    """The database holds the tree of `head` and nothing else, and it re-audits to its root.

    (1) the checkpoints table ends at the head, with the head's checkpoint; (2) one leaf row
    per index below the head, with the prefix of the hash of the entry at that index; (3) each
    bundle of the tree stored at its width: a full one as one `bundles` row and no parts, the
    partial one at the right edge as parts (or a row) that add up to its width, nothing beyond;
    (4) one tile row per tile of the tree, at its width; (5) `audit_tree` recomputes the root
    from those tiles and bundles.
    """
    size, lid = head.size, log.id
    engine = create_engine(log.store.url)
    try:
        with engine.connect() as conn:
            cps = conn.execute(
                select(schema.checkpoints.c.size, schema.checkpoints.c.checkpoint).where(
                    schema.checkpoints.c.log_id == lid
                )
            ).all()
            leaves = conn.execute(
                select(schema.leaves.c.idx, schema.leaves.c.prefix).where(
                    schema.leaves.c.log_id == lid
                )
            ).all()
            bundles = conn.execute(
                select(schema.bundles.c.idx, schema.bundles.c.count, schema.bundles.c.data).where(
                    schema.bundles.c.log_id == lid
                )
            ).all()
            p = schema.bundle_parts.c
            parts = conn.execute(
                select(p.idx, p.base, p.count, p.data).where(p.log_id == lid).order_by(p.base)
            ).all()
            tiles = conn.execute(
                select(schema.tiles.c.level, schema.tiles.c.idx, schema.tiles.c.data).where(
                    schema.tiles.c.log_id == lid
                )
            ).all()
    finally:
        engine.dispose()
    assert max(s for s, _ in cps) == size and dict(cps)[size] == head.checkpoint  # (1)
    entries: dict[int, bytes] = {}
    stored: dict[int, list[tuple[int, int, bytes]]] = {}
    for i, count, data in bundles:
        stored[i] = [(-1, count, bytes(data))]
    for i, base, count, data in parts:
        stored.setdefault(i, []).append((base, count, bytes(data)))
    assert sorted(stored) == list(range((size + TILE_WIDTH - 1) // TILE_WIDTH))  # (3)
    for i, rows in stored.items():
        width = tile_width(ENTRIES_LEVEL, i, size)
        if width == TILE_WIDTH:
            assert [b for b, _, _ in rows] == [-1], f"full bundle {i} kept parts"
        assert sum(n for _, n, _ in rows) == width, f"bundle {i} holds more or less than {width}"
        count, data = assemble_bundle(rows)
        assert count == width == len(decode_bundle(data)), i
        entries.update(enumerate(decode_bundle(data), start=i * TILE_WIDTH))
    assert sorted(i for i, _ in leaves) == list(range(size))  # (2)
    for i, prefix in leaves:
        assert prefix == leaf_prefix(merkle.leaf_hash(entries[i])), f"leaf row {i} is not entry {i}"
    want = {(t.level, t.index): w for t, w in tiles_for_size(size)}  # (4)
    assert {(lv, i): len(d) // 32 for lv, i, d in tiles} == want
    audit_tree(  # (5)
        size,
        head.root,
        lambda t, w: log.tile(t, size),
        lambda i, w: log.bundle(i, size),
    )


# -- kill -9 with anonymous tokens in flight ----------------------------------------------------

ANON_KILLS = 20
ANON_WRITERS = 6
TOKENS_PER_WRITER = 40


@dataclass
class TokenWrite:
    """One anonymous write: its envelope, the token paying for it, and how it ended."""

    envelope: Envelope
    auth: str
    nonce: bytes
    leaf_hash: bytes
    outcome: str = "unsent"  # "receipt", an error code, or "unsent"
    retries: int = 0  # attempts whose answer was lost (connection reset or refused)


def _anonymous_lab(root: Path, db: str | None) -> tuple[LedgerProcess, Ed25519PrivateKey]:
    """A ledger (data in ROOT/ledger, the anonymous log batching every 200 ms) that registers
    the returned lab key at start; not started."""
    root.mkdir(parents=True, exist_ok=True)
    lab_key = generate_private_key()
    pub = write_key_pair(root / "lab.pem", lab_key)
    init_data_dir(root / "ledger", origin_prefix=ORIGIN_PREFIX, db=db)
    _set_anonymous_interval(root / "ledger", 200)
    extra = ("--allow-lab", str(pub), "--anonymous-interval-ms", "200")
    return LedgerProcess(root / "ledger", db, extra_args=extra), lab_key


def _token_writes(lab_url: str, issuer_url: str, n: int) -> list[TokenWrite]:
    """`n` anonymous reports, each with its own token from the issuer (minted up front)."""
    _, origin = anonymous_info(lab_url)
    challenge = challenges(lab_url)[0]
    empty = CheckpointRef(origin=origin, size=0, root=merkle.EMPTY_ROOT.hex())
    out = []
    with httpx.Client(timeout=60.0) as http:
        for i in range(n):
            report = FieldReport(
                seen_checkpoint=empty,
                issued_at=int(time.time()) // HOUR * HOUR,
                model=ModelId(name="test-model", version="1"),
                category="grief",
                tier="anonymous",
                text=f"seed {SEED} report {i}",
            )
            env = sign_one_time(statement_bytes(Statement.of(report)))
            token = get_token(issuer_url, challenge, client=http)
            leaf = merkle.leaf_hash(env.canonical_bytes())
            out.append(TokenWrite(env, pp.authorization(token), token.nonce, leaf))
    return out


def _redeem_until_answered(srv: LedgerProcess, w: TokenWrite) -> None:
    """Post `w` until the server answers (a crash loses answers, not the write's token)."""
    headers = {"Content-Type": "application/json", "Authorization": w.auth}
    deadline = time.monotonic() + 10 * PROGRESS_DEADLINE
    with httpx.Client(timeout=30.0) as http:
        while time.monotonic() < deadline:
            try:
                r = http.post(
                    f"{srv.base_url}/logs/anonymous/entries",
                    content=w.envelope.canonical_bytes(),
                    headers=headers,
                )
            except httpx.HTTPError:
                w.retries += 1
                time.sleep(0.05)  # the server is down or died mid-request: retry, same token
                continue
            w.outcome = "receipt" if r.status_code == 202 else str(r.json().get("error"))
            return
    w.outcome = "no answer"


def test_kill_9_with_anonymous_tokens_in_flight(backend_db: str | None, tmp_path: Path) -> None:
    """Writers redeem one token per report while the ledger is `kill -9`ed 20 times. Each write
    is retried with its own token until answered: every one ends with a receipt (a retry after
    a crash never meets `token_spent`), every receipted report reaches the log, and every token
    the database marks spent paid for an entry that is in the log."""
    rng = random.Random(SEED)
    srv, lab_key = _anonymous_lab(tmp_path, backend_db)
    iss: IssuerProcess | None = None
    try:
        srv.start()
        key_path, _ = Lab(tmp_path, srv, lab_key).certify_issuer("issuer1")
        iss = IssuerProcess(tmp_path / "issuer", srv.base_url, key_path, ("--rate", "9999/hour"))
        iss.start()
        writes = _token_writes(srv.base_url, iss.base_url, ANON_WRITERS * TOKENS_PER_WRITER)
        iss.stop()  # every token is minted: the issuer plays no part in the crashes

        def writer(k: int) -> None:
            for w in writes[k::ANON_WRITERS]:
                _redeem_until_answered(srv, w)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(ANON_WRITERS)]
        for t in threads:
            t.start()
        for _ in range(ANON_KILLS):
            time.sleep(rng.uniform(0.1, 0.6))
            srv.kill9()
            srv.start()
        for t in threads:
            t.join(timeout=10 * PROGRESS_DEADLINE)
            assert not t.is_alive(), "a writer thread hung"
        _check_anonymous_after_crashes(srv, writes)
        assert "Traceback" not in srv.stderr_all(), srv.stderr_all()[-4000:]
    except BaseException as e:
        e.add_note(f"seed {SEED}; server stderr tail:\n{srv.stderr_tail()}")
        raise
    finally:
        if iss is not None:
            iss.stop()
        try:
            srv.stop()
        finally:
            srv.kill9()


def _check_anonymous_after_crashes(srv: LedgerProcess, writes: Sequence[TokenWrite]) -> None:
    outcomes = Counter(w.outcome for w in writes)
    assert outcomes == {"receipt": len(writes)}, outcomes
    assert sum(w.retries for w in writes) > 0, "positive control: crashes hit writes in flight"
    with httpx.Client(base_url=srv.base_url, timeout=30.0) as http:
        for w in writes:  # (1) every receipted report reaches the log
            leaf = base64.urlsafe_b64encode(w.leaf_hash).decode()
            path = f"/logs/anonymous/proof/inclusion-by-hash?leaf_hash={leaf}"
            deadline = time.monotonic() + PROGRESS_DEADLINE
            while http.get(path).status_code != 200:
                assert time.monotonic() < deadline, "a receipted report never reached the log"
                time.sleep(0.1)
    vkey, origin = log_identity(srv.base_url, "anonymous")
    assert check_log(srv.base_url, vkey, origin, "anonymous").size == len(writes)
    # (2) no token burnt without its entry: the spent tokens are exactly the writes' tokens.
    engine = create_engine(load_config(srv.data).db)
    try:
        with engine.connect() as conn:
            log_id = conn.execute(
                select(schema.logs.c.id).where(schema.logs.c.name == "anonymous")
            ).scalar_one()
            t = schema.spent_tokens.c
            q = select(t.nonce).where(t.log_id == log_id)
            spent = [bytes(n) for n in conn.execute(q).scalars()]
    finally:
        engine.dispose()
    assert sorted(spent) == sorted(w.nonce for w in writes)


# -- crash points of a redemption ---------------------------------------------------------------

REDEEM_CHILD = textwrap.dedent(
    '''
    """Redeem one token for one entry in the anonymous log and die (os._exit) at POINT."""
    import json, os, sys
    from pathlib import Path

    from sqlalchemy import event

    from ledger.config import init_data_dir
    from ledger.server import LedgerServer
    from ledger.storage import Store

    data, db, point = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    kid, nonce, leaf = (bytes.fromhex(x) for x in sys.argv[4:7])


    def crash():
        print(json.dumps({"crashed": point}), flush=True)
        os._exit(137)


    cfg = init_data_dir(Path(data), origin_prefix="crash.test/logs", db=db)
    log_id = LedgerServer.from_config(cfg).logs["anonymous"].log.id  # migrated, logs created
    store = Store(cfg.db)  # a store of its own, whose statements the hooks below watch
    statements = {
        "after_spend_insert": "INSERT INTO spent_tokens",
        "after_queue_insert": "INSERT INTO pending",
    }


    @event.listens_for(store._write, "after_cursor_execute")
    def after_statement(conn, cursor, statement, params, context, executemany):
        if point in statements and statement.lstrip().startswith(statements[point]):
            crash()


    @event.listens_for(store._write, "commit")
    def before_commit(conn):
        if point == "before_db_commit":
            crash()


    store.redeem(log_id, kid, nonce, leaf, b"entry bytes", 3600)
    crash()  # "after_redeem": committed, the caller never answered
    '''
)

# In the order `Store.redeem` passes them; True where the redemption is committed.
REDEEM_POINTS = [
    ("after_spend_insert", False),
    ("after_queue_insert", False),
    ("before_db_commit", False),
    ("after_redeem", True),
]


@pytest.mark.parametrize(("point", "persisted"), REDEEM_POINTS, ids=[p for p, _ in REDEEM_POINTS])
def test_redeem_crash_point(
    point: str, persisted: bool, backend_db: str | None, tmp_path: Path
) -> None:
    """Whatever point a redemption dies at, the token is spent exactly when its entry is
    queued; retrying it then succeeds, and the token on another entry is refused."""
    kid, nonce, leaf = b"k" * 32, os.urandom(32), merkle.leaf_hash(b"entry bytes")
    script = tmp_path / "redeem_child.py"
    script.write_text(REDEEM_CHILD)
    args = [str(tmp_path / "data"), backend_db or "", point, kid.hex(), nonce.hex(), leaf.hex()]
    child = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=PROGRESS_DEADLINE,
    )
    assert child.returncode == 137, f"child exited with {child.returncode}:\n{child.stderr}"
    assert child.stdout.splitlines()[-1] == json.dumps({"crashed": point})

    server = LedgerServer.from_config(load_config(tmp_path / "data"))
    try:
        store, log_id = server.store, server.logs["anonymous"].log.id
        t = schema.spent_tokens.c
        with store._read.connect() as conn:
            spent = conn.execute(select(t.nonce).where(t.log_id == log_id)).scalars().all()
        assert (len(spent) == 1) is persisted, "the token is spent iff the redemption committed"
        assert store.holds_leaf(log_id, leaf) is persisted, "queued iff the token is spent"
        assert [r[0] for r in store.pending(log_id, 10)] == ([leaf] if persisted else [])
        # The client retries the same write with the same token: it goes through.
        assert store.redeem(log_id, kid, nonce, leaf, b"entry bytes", 3600)
        assert store.holds_leaf(log_id, leaf)
        other = merkle.leaf_hash(b"another entry")
        assert not store.redeem(log_id, kid, nonce, other, b"another entry", 3600)
        assert not store.holds_leaf(log_id, other)
    finally:
        server.store.close()
