"""Two `bledger serve` frontends on one PostgreSQL database.

Two hosts that share a database run one `bledger serve` each, with the same data directory
(config and log keys, copied from the first host). Sequencing is serialised by the lock on the
log's head row (`ledger.storage.Store.writer`), and every read of the head goes to the database,
so each frontend serves the other's checkpoints. Here both run as real processes on loopback:

* `test_two_frontends_under_kill_9`: writer threads post distinct envelopes to both frontends
  (failing over to the other when one refuses connections), a watcher alternates
  `GET checkpoint` between them, and a pair poster sends the same envelope to both at once;
  meanwhile each frontend is `kill -9`ed and restarted in turn. Afterwards every acknowledged
  entry is at its index in the final tree, every checkpoint anyone was served verifies under the
  log key, no size has two roots (no split view), each is consistent with every later one, no
  frontend ever served an older head after a newer one, both end on the same checkpoint, and no
  entry is in the log twice.
* `test_two_frontends_start_together_on_a_fresh_database`: both migrate the empty database
  and create the logs in turn (an advisory lock), and neither dies on the other's DDL.
* `test_a_frontend_with_other_keys_is_refused`: a host whose data directory holds other keys
  does not start on the shared database.
* `test_slow_tile_store_acknowledges_nothing_unpublished`: one frontend's tile store hangs
  after its batch committed; that write waits (not acknowledged), the database already holds
  the entry, the other frontend publishes past it, and the slow one never puts the older
  checkpoint back.

Randomness is seeded; the seed is in every failure message (set BLEDGER_TEST_SEED to replay).
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from attest import merkle
from attest.checkpoint import Checkpoint, open_checkpoint
from attest.dsse import Envelope
from attest.keys import generate_private_key
from attest.note import Ed25519NoteSigner, NoteVerifier
from attest.vkey import parse_vkey
from clients.sdk import verify_submission
from ledger.config import init_data_dir
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store
from ledger.tilestore import DirTileStore, Publisher, Stored
from tests.support import (
    LOG,
    ORIGIN_PREFIX,
    LedgerProcess,
    ServerStartError,
    Signer,
    check_log,
    envelope_body,
    log_identity,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SEED = int(os.environ.get("BLEDGER_TEST_SEED", random.SystemRandom().randrange(2**32)))
DEADLINE = 60.0  # a hung frontend fails the test instead of hanging it; not a timing check
WRITERS = 12
CYCLES = 4  # kill -9 A, B, A, B
MIN_ACKS = 10  # acknowledgements per frontend life (and by the survivor while one is down)
NAMES = ("A", "B")


@dataclass(frozen=True)
class Ack:
    """A write a frontend acknowledged, as the writer received it."""

    envelope: Envelope
    body: bytes
    index: int
    leaf_hash: bytes
    duplicate: bool
    checkpoint: str
    tlog_proof: str
    frontend: str
    life: int


@dataclass
class Seen:
    """What every thread saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acks: list[Ack] = field(default_factory=list)
    in_doubt: list[tuple[Envelope, bytes, str]] = field(default_factory=list)  # sent, no answer
    refused: int = 0  # connection refused by both: never sent
    unexpected: list[str] = field(default_factory=list)  # answers other than 200
    notes: set[str] = field(default_factory=set)  # every checkpoint anyone was served
    regressions: list[str] = field(default_factory=list)  # a head older than one seen before
    pairs: list[tuple[Ack, Ack]] = field(default_factory=list)  # same envelope, both frontends


class Cluster:
    """The two frontends, the writers, the watcher and the pair poster."""

    def __init__(self, procs: dict[str, LedgerProcess], signer: Signer) -> None:
        self.procs, self.signer = procs, signer
        self.seen = Seen()
        self.stop = threading.Event()
        self.life = dict.fromkeys(NAMES, 0)
        self.threads: list[threading.Thread] = []

    def url(self, name: str) -> str:
        return self.procs[name].base_url

    def start(self) -> None:
        self.threads = [
            *(threading.Thread(target=self._write, args=(w,), daemon=True) for w in range(WRITERS)),
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._pairs, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=DEADLINE)
            assert not t.is_alive(), "a client thread hung"

    def acks_in(self, name: str, life: int) -> int:
        with self.seen.lock:
            return sum(1 for a in self.seen.acks if a.frontend == name and a.life == life)

    def wait_acks(self, name: str, at_least: int) -> None:
        """Until frontend `name`'s current life acknowledged `at_least` writes."""
        life, deadline = self.life[name], time.monotonic() + DEADLINE
        while self.acks_in(name, life) < at_least:
            assert time.monotonic() < deadline, f"no progress on frontend {name} life {life}"
            time.sleep(0.01)

    # -- client threads ---------------------------------------------------------------------

    def _post(self, http: httpx.Client, name: str, env: Envelope, body: bytes) -> Ack | None:
        """POST to frontend `name`: the Ack, or None (recorded as in doubt or unexpected).
        Raises httpx.ConnectError when the frontend is down (nothing was sent)."""
        life = self.life[name]
        try:
            r = http.post(f"{self.url(name)}/logs/{LOG}/entries", content=body)
        except httpx.ConnectError:
            raise
        except httpx.HTTPError as e:
            with self.seen.lock:
                self.seen.in_doubt.append((env, body, f"{name}: {e!r}"))
            return None
        if r.status_code != 200:
            with self.seen.lock:
                self.seen.unexpected.append(f"{name} HTTP {r.status_code}: {r.text[:300]}")
                self.seen.in_doubt.append((env, body, f"{name}: HTTP {r.status_code}"))
            return None
        j = r.json()
        ack = Ack(
            env,
            body,
            int(j["index"]),
            base64.b64decode(j["leaf_hash"]),
            bool(j["duplicate"]),
            str(j["checkpoint"]),
            str(j["tlog_proof"]),
            name,
            life,
        )
        with self.seen.lock:
            self.seen.acks.append(ack)
            self.seen.notes.add(ack.checkpoint)
        return ack

    def _write(self, w: int) -> None:
        """Post distinct envelopes, alternating frontends; fail over when one is down. A fresh
        entry acknowledged after an earlier acknowledgement must land in a larger tree."""
        n, last = 0, -1
        with httpx.Client(timeout=30.0) as http:
            while not self.stop.is_set():
                env = self.signer.envelope(f"seed{SEED}-writer{w}-{n}")
                body, first = envelope_body(env), NAMES[(w + n) % 2]
                n += 1
                ack = None
                for name in (first, *(x for x in NAMES if x != first)):
                    try:
                        ack = self._post(http, name, env, body)
                        break
                    except httpx.ConnectError:
                        continue
                else:
                    with self.seen.lock:
                        self.seen.refused += 1
                    time.sleep(0.05)
                if ack is None:
                    continue
                size = _size(ack.checkpoint)
                if size <= last:
                    with self.seen.lock:
                        self.seen.regressions.append(
                            f"writer {w}: entry {ack.index} acknowledged by {ack.frontend} in "
                            f"tree {size}, after an acknowledgement in tree {last}"
                        )
                last = size

    def _watch(self) -> None:
        """GET the checkpoint from A, then B, then A...: a later answer is never smaller."""
        last, k = (-1, ""), 0
        with httpx.Client(timeout=30.0) as http:
            while not self.stop.is_set():
                name = NAMES[k % 2]
                k += 1
                try:
                    r = http.get(f"{self.url(name)}/logs/{LOG}/checkpoint")
                except httpx.HTTPError:
                    time.sleep(0.02)
                    continue
                if r.status_code != 200:
                    with self.seen.lock:
                        self.seen.unexpected.append(f"{name} checkpoint HTTP {r.status_code}")
                    continue
                size = _size(r.text)
                with self.seen.lock:
                    self.seen.notes.add(r.text)
                    if size < last[0]:
                        self.seen.regressions.append(
                            f"{name} served size {size} after {last[1]} served {last[0]}"
                        )
                last = (size, name)
                time.sleep(0.005)

    def _pairs(self) -> None:
        """The same envelope to both frontends at once (a client retrying on the other host
        before the first answered): one index, exactly one of the two is not a duplicate."""
        n = 0
        with httpx.Client(timeout=30.0) as http, ThreadPoolExecutor(2) as pool:

            def one(name: str, env: Envelope, body: bytes) -> Ack | None:
                try:
                    return self._post(http, name, env, body)
                except httpx.ConnectError:
                    return None

            while not self.stop.is_set():
                env = self.signer.envelope(f"seed{SEED}-pair-{n}")
                n += 1
                body = envelope_body(env)
                a, b = pool.map(one, NAMES, (env, env), (body, body))
                if a is not None and b is not None:
                    with self.seen.lock:
                        self.seen.pairs.append((a, b))
                time.sleep(0.05)


def _size(note: str) -> int:
    return int(note.split("\n")[1])


@pytest.fixture
def two_frontends(pg_url: str, tmp_path: Path) -> Cluster:
    """A (creating its data directory and the logs in the fresh database) and B, whose data
    directory is a copy of A's: what a second host gets."""
    signer = Signer.create(tmp_path / "keys")
    a = LedgerProcess(tmp_path / "a", pg_url, (signer.pub,))
    b = LedgerProcess(tmp_path / "b", pg_url, (signer.pub,))
    a.start()
    shutil.copytree(a.data, b.data)
    return Cluster({"A": a, "B": b}, signer)


def test_two_frontends_under_kill_9(two_frontends: Cluster, pg_url: str) -> None:
    cluster, rng = two_frontends, random.Random(SEED)
    a, b = cluster.procs["A"], cluster.procs["B"]
    try:
        b.start()
        identity = log_identity(a.base_url)
        assert log_identity(b.base_url) == identity, "the frontends disagree on the log key"
        cluster.start()
        for cycle in range(CYCLES):
            victim = NAMES[cycle % 2]
            survivor = NAMES[(cycle + 1) % 2]
            time.sleep(rng.uniform(0.2, 1.0))
            for name in NAMES:
                cluster.wait_acks(name, MIN_ACKS)
            cluster.procs[victim].kill9()
            cluster.life[victim] += 1
            # The survivor alone sequences; its life goes on.
            already = cluster.acks_in(survivor, cluster.life[survivor])
            cluster.wait_acks(survivor, already + MIN_ACKS)
            cluster.procs[victim].start()
            assert log_identity(cluster.url(victim)) == identity, "the log changed its key"
        for name in NAMES:
            cluster.wait_acks(name, MIN_ACKS)
        cluster.join()
        _check(cluster, identity, pg_url, rng)
        for name, proc in cluster.procs.items():
            assert "Traceback" not in proc.stderr_all(), f"{name}:\n{proc.stderr_all()[-4000:]}"
    except BaseException as e:
        tails = "\n".join(f"{n} stderr:\n{p.stderr_tail(2000)}" for n, p in cluster.procs.items())
        e.add_note(f"seed {SEED}\n{tails}")
        raise
    finally:
        cluster.stop.set()
        for proc in cluster.procs.values():
            try:
                proc.stop()
            finally:
                proc.kill9()


def _check(cluster: Cluster, identity: tuple[str, str], pg_url: str, rng: random.Random) -> None:
    seen, (vkey, origin) = cluster.seen, identity
    verifier = parse_vkey(vkey)
    unexpected, regressions = seen.unexpected, seen.regressions
    assert not unexpected, f"{len(unexpected)} unexpected answers, first: {unexpected[:3]}"
    assert not regressions, f"{len(regressions)} older heads after newer, first: {regressions[:3]}"
    assert seen.pairs, "no envelope was answered by both frontends: the pair check saw nothing"
    for x, y in seen.pairs:
        assert (x.index, x.leaf_hash) == (y.index, y.leaf_hash), (x.index, y.index)
        assert sorted([x.duplicate, y.duplicate]) == [False, True], "sequenced twice, or never"
    for name in NAMES:
        assert any(a.frontend == name and a.life > 0 for a in seen.acks), f"{name} never came back"
    persisted = _resolve_in_doubt(cluster, verifier, origin)
    # Distinct envelopes got distinct indices; the same envelope always the same index.
    by_index: dict[int, bytes] = {}
    for ack in seen.acks:
        leaf = by_index.setdefault(ack.index, ack.leaf_hash)
        assert leaf == ack.leaf_hash, f"index {ack.index} acknowledged for two entries"
        assert ack.leaf_hash == merkle.leaf_hash(ack.envelope.canonical_bytes())
        cp = verify_submission(ack.tlog_proof, ack.envelope, verifier, origin)
        assert ack.index < cp.size
    assert len(set(by_index.values())) == len(by_index), "one entry at two indices"
    # Re-posted to the frontend that did not acknowledge them: duplicates at the same index.
    sample = rng.sample(seen.acks, min(64, len(seen.acks)))
    _repost(cluster, sample)
    finals = {name: check_log(cluster.url(name), vkey, origin) for name in NAMES}
    final = finals["A"]
    assert finals["B"] == final, f"A ends on {final}, B on {finals['B']}"
    # The log holds exactly the acknowledged entries, each once.
    assert sorted(by_index) == list(range(final.size)), (final.size, len(by_index), persisted)
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            # One row per entry, and no entry under two indices (distinct prefixes: among this
            # many hashes, two sharing their first 8 bytes by chance is a ~1e-13 event).
            rows, indices, prefixes = conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT idx), count(DISTINCT prefix) FROM leaves l"
                    " JOIN logs g ON g.id = l.log_id WHERE g.name = :n"
                ),
                {"n": LOG},
            ).one()
    finally:
        engine.dispose()
    assert rows == indices == prefixes == final.size, (rows, indices, prefixes, final.size)
    _check_acks_at_final(cluster, seen.acks, final)
    _check_checkpoints(cluster, seen.notes, final, verifier, origin)
    print(
        f"seed {SEED}: {len(seen.acks)} acks ({sum(a.frontend == 'A' for a in seen.acks)} by A), "
        f"{len(seen.pairs)} pairs, {len(seen.notes)} checkpoints, {seen.refused} refused by "
        f"both, in doubt: {persisted.count(True)} persisted, {persisted.count(False)} lost; "
        f"final size {final.size}"
    )


def _resolve_in_doubt(cluster: Cluster, verifier: NoteVerifier, origin: str) -> list[bool]:
    """A write that got no answer either failed or was persisted: look it up, then re-post it
    (to the other frontend) and check the answer agrees. Returns, per write, whether it was."""
    seen: dict[bytes, bool] = {}
    with httpx.Client(timeout=30.0) as http:
        for k, (env, body, _why) in enumerate(cluster.seen.in_doubt):
            leaf = merkle.leaf_hash(env.canonical_bytes())
            if leaf in seen:
                continue
            q = http.get(
                f"{cluster.url(NAMES[k % 2])}/logs/{LOG}/proof/inclusion-by-hash",
                params={"leaf_hash": base64.b64encode(leaf).decode()},
            )
            assert q.status_code in (200, 404), q.text
            seen[leaf] = q.status_code == 200
            ack = cluster._post(http, NAMES[(k + 1) % 2], env, body)
            assert ack is not None, cluster.seen.unexpected[-1:]
            assert ack.duplicate is seen[leaf], (seen[leaf], ack)
            if seen[leaf]:
                assert ack.index == q.json()["index"]
            verify_submission(ack.tlog_proof, env, verifier, origin)
    return list(seen.values())


def _repost(cluster: Cluster, acks: Sequence[Ack]) -> None:
    with httpx.Client(timeout=30.0) as http:

        def one(a: Ack) -> None:
            other = NAMES[1 - NAMES.index(a.frontend)]
            r = http.post(f"{cluster.url(other)}/logs/{LOG}/entries", content=a.body)
            assert r.status_code == 200, r.text
            j = r.json()
            assert (j["index"], j["duplicate"]) == (a.index, True), (a.index, j)
            assert base64.b64decode(j["leaf_hash"]) == a.leaf_hash

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, acks))


def _check_acks_at_final(cluster: Cluster, acks: Sequence[Ack], final: Checkpoint) -> None:
    """Every acknowledged entry is the entry at its index, with an inclusion proof under
    `final` (asked of the frontend that did not acknowledge it)."""
    with httpx.Client(timeout=30.0) as http:

        def one(a: Ack) -> None:
            base = cluster.url(NAMES[1 - NAMES.index(a.frontend)])
            r = http.get(f"{base}/logs/{LOG}/entries/{a.index}")
            assert r.status_code == 200, r.text
            assert base64.b64decode(r.json()["entry"]) == a.envelope.canonical_bytes()
            p = http.get(
                f"{base}/logs/{LOG}/proof/inclusion", params={"index": a.index, "size": final.size}
            )
            assert p.status_code == 200, p.text
            proof = [base64.b64decode(h) for h in p.json()["inclusion_proof"]]
            merkle.verify_inclusion(a.leaf_hash, a.index, final.size, proof, final.root_hash)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, acks))


def _check_checkpoints(
    cluster: Cluster, notes: set[str], final: Checkpoint, verifier: NoteVerifier, origin: str
) -> None:
    """Every checkpoint served verifies; one root per size (no split view); each is consistent
    with the next larger one and with the final one (proofs from alternating frontends)."""
    roots: dict[int, bytes] = {}
    for note in notes:
        cp, _ = open_checkpoint(note.encode(), verifier, origin)
        assert roots.setdefault(cp.size, cp.root_hash) == cp.root_hash, f"split view at {cp.size}"
    roots.setdefault(final.size, final.root_hash)
    assert roots[final.size] == final.root_hash, f"split view at {final.size}"
    sizes = sorted(roots)
    pairs = [*itertools.pairwise(sizes), *((s, final.size) for s in sizes)]
    with httpx.Client(timeout=30.0) as http:

        def one(k: int) -> None:
            first, second = pairs[k]
            if first == 0:
                assert roots[0] == merkle.EMPTY_ROOT
                return
            r = http.get(
                f"{cluster.url(NAMES[k % 2])}/logs/{LOG}/proof/consistency",
                params={"first": first, "second": second},
            )
            assert r.status_code == 200, r.text
            proof = [base64.b64decode(h) for h in r.json()["consistency_proof"]]
            merkle.verify_consistency(first, second, proof, roots[first], roots[second])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(len(pairs))))


def test_two_frontends_start_together_on_a_fresh_database(pg_url: str, tmp_path: Path) -> None:
    """Two hosts started at the same moment on an empty database: both migrate it and create
    the logs, one after the other, and both serve the same log (neither dies on the other's
    CREATE TABLE or INSERT)."""
    init_data_dir(tmp_path / "a", origin_prefix=ORIGIN_PREFIX, db=pg_url)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    procs = [LedgerProcess(tmp_path / n, pg_url) for n in ("a", "b")]
    try:
        for p in procs:
            p.start(wait=False)
        for p in procs:
            p._wait_ready()
        a, b = (log_identity(p.base_url) for p in procs)
        assert a == b
        for p in procs:
            assert "Traceback" not in p.stderr_all(), p.stderr_all()[-4000:]
    finally:
        for p in procs:
            try:
                p.stop()
            finally:
                p.kill9()


def test_a_frontend_with_other_keys_is_refused(pg_url: str, tmp_path: Path) -> None:
    """A second host must run with the first host's keys: one initialised on its own (new log
    keys, same origins) refuses to start on the shared database, and says why."""
    a = LedgerProcess(tmp_path / "a", pg_url)
    stranger = LedgerProcess(tmp_path / "c", pg_url)
    try:
        a.start()
        with pytest.raises(ServerStartError, match="database and config disagree"):
            stranger.start()
        assert httpx.get(f"{a.base_url}/logs/{LOG}/checkpoint", timeout=DEADLINE).status_code == 200
    finally:
        a.stop()
        stranger.kill9()


# -- a slow tile store ----------------------------------------------------------------------


class StalledStore(DirTileStore):
    """A directory store whose writes hang until released: a tile store that is slow to answer
    (a real directory cannot be made slow on demand)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.entered, self.release = threading.Event(), threading.Event()

    def put(self, key: str, data: bytes, *, content_type: str, gzipped: bool = False) -> None:
        self.entered.set()
        assert self.release.wait(DEADLINE), "never released"
        super().put(key, data, content_type=content_type, gzipped=gzipped)

    def replace_checkpoint(self, key: str, data: bytes, previous: Stored | None) -> bool:
        assert self.release.wait(DEADLINE), "never released"
        return super().replace_checkpoint(key, data, previous)


def test_slow_tile_store_acknowledges_nothing_unpublished(pg_url: str, tmp_path: Path) -> None:
    origin = "frontends.test/logs/evidence"
    signer = Ed25519NoteSigner(origin, generate_private_key())
    static = tmp_path / "static"
    stalled = StalledStore(static)
    frontends: list[tuple[Store, Sequencer]] = []
    for tiles in (stalled, DirTileStore(static)):  # A's view of the store hangs, B's answers
        store = Store(pg_url)
        store.migrate()
        empty = signed_head(origin, 0, merkle.EMPTY_ROOT, signer)
        row = store.create_log(LOG, origin, "evidence", signer.vkey, empty)
        publisher = Publisher(store, row.id, LOG, origin, tiles)
        frontends.append((store, Sequencer(Log(store, row), signer, publish=publisher.publish)))
    (db_a, seq_a), (db_b, seq_b) = frontends
    answer: list[object] = []
    try:
        writer = threading.Thread(
            target=lambda: answer.append(seq_a.integrate([b"entry on A"])[0]), daemon=True
        )
        writer.start()
        assert stalled.entered.wait(DEADLINE), "A never reached its tile store"
        time.sleep(0.3)
        assert writer.is_alive() and not answer, "A acknowledged before its batch was published"
        assert db_b.head(seq_b.log.id).size == 1, "the database holds A's committed entry"
        assert not (static / "logs" / LOG / "checkpoint").exists()
        # B goes on; publishing its tree publishes A's entry too.
        (got_b,) = seq_b.integrate([b"entry on B"])
        assert not isinstance(got_b, Exception) and got_b.index == 1
        published = (static / "logs" / LOG / "checkpoint").read_text()
        assert _size(published) == 2
        stalled.release.set()
        writer.join(DEADLINE)
        (got_a,) = answer
        assert not isinstance(got_a, Exception)
        assert getattr(got_a, "index", None) == 0
        after = (static / "logs" / LOG / "checkpoint").read_text()
        assert after == published, "the slow frontend put an older checkpoint back"
        cp, _ = open_checkpoint(after.encode(), signer.verifier(), origin)
        assert (cp.size, cp.root_hash) == (2, seq_b.log.root(2))
    finally:
        stalled.release.set()
        db_a.close()
        db_b.close()
