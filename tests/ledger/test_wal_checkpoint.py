"""SQLite's WAL is checkpointed by the store's own thread, off the sequencer's path.

The writers' automatic checkpoint is only a backstop (`_WAL_BACKSTOP_PAGES`); a thread with a
connection of its own (`ledger.storage._WalCheckpointer`) runs PASSIVE checkpoints once the
WAL passes `_WAL_CHECKPOINT_PAGES`. These tests shrink both bounds, load a log, and check that
the thread keeps the WAL near its bound where, without it, the WAL would hold every frame
written; that `Store.close()` stops the thread after checkpointing; and that PostgreSQL has no
such thread. Crash safety is `test_reliability`'s and `test_leaf_index`'s kill -9 tests.
"""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import merkle
from attest.note import Ed25519NoteSigner
from ledger import storage
from ledger.log import Log
from ledger.sequencer import Sequenced, Sequencer, signed_head
from ledger.storage import Store

ORIGIN = "test.example/wal"
SEED = bytes(range(32))
THRESHOLD = 64  # pages: the checkpointer's bound in these tests
BATCHES, BATCH = 60, 64  # some 2,000 pages of WAL frames in all, 1 KiB entries
LOOSE = 8  # the bound the thread keeps the WAL to, in THRESHOLDs, with room for a slow disk


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpointer bound of THRESHOLD pages, and a backstop the load never reaches."""
    monkeypatch.setattr(storage, "_WAL_CHECKPOINT_PAGES", THRESHOLD)
    monkeypatch.setattr(storage, "_WAL_BACKSTOP_PAGES", 1_000_000)


def load(url: str, batches: int = BATCHES) -> Store:
    """A migrated store on `url` whose log was given `batches` batches of BATCH entries."""
    store = Store(url)
    store.migrate()
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(SEED))
    empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer)
    log = Log(store, store.create_log("evidence", ORIGIN, "evidence", signer.vkey, empty))
    seq = Sequencer(log, signer, batch_size=BATCH, leaf_index_lag=4 * BATCH)
    for b in range(batches):
        chunk = [b"%d-%d-" % (b, i) + bytes(1000) for i in range(BATCH)]
        assert all(isinstance(r, Sequenced) for r in seq.integrate(chunk))
    return store


def wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it checkpointed), from a PASSIVE checkpoint of our own."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    assert busy == 0
    return int(frames), int(done)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ledger.db"


def test_the_thread_keeps_the_wal_near_its_bound(small_wal: None, db: Path) -> None:
    store = load(f"sqlite:///{db}")
    wal = store._wal
    try:
        assert wal is not None and wal.checkpoints > 0
        wal.stop()  # (its last checkpoint leaves the WAL as long as it was)
        wal_bytes = (db.parent / (db.name + "-wal")).stat().st_size
        frames, _ = wal_frames(db)
    finally:
        store.close()
    # The WAL starts over once a checkpoint has emptied it, and its file is cut back to the
    # bound then: it holds little more than the bound plus what was committed while a
    # checkpoint ran, where the control below holds every frame written.
    assert frames < LOOSE * THRESHOLD, frames
    assert wal_bytes < LOOSE * THRESHOLD * (4096 + 24), wal_bytes


def test_without_the_thread_the_wal_holds_every_frame(
    small_wal: None, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test above: the same load, nothing woken after the commits, grows
    # the WAL to every frame written (the backstop is out of reach), so the bound above is
    # the thread's doing.
    monkeypatch.setattr(storage._WalCheckpointer, "committed", lambda self: None)
    store = load(f"sqlite:///{db}")
    try:
        frames, _ = wal_frames(db)
    finally:
        store.close()
    assert frames > 2 * LOOSE * THRESHOLD, frames


def test_close_stops_the_thread_after_a_checkpoint(small_wal: None, db: Path) -> None:
    store = load(f"sqlite:///{db}", batches=10)
    wal = store._wal
    assert wal is not None and wal._thread is not None and wal._thread.is_alive()
    store.close()
    assert not wal._thread.is_alive()
    store.close()  # idempotent
    # The last connection to close checkpointed the WAL into the database and removed it.
    wal_file = db.parent / (db.name + "-wal")
    assert not wal_file.exists() or wal_file.stat().st_size == 0
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT size FROM heads").fetchone() == (10 * BATCH,)
    finally:
        conn.close()


def test_writers_keep_a_backstop(db: Path) -> None:
    store = load(f"sqlite:///{db}", batches=1)
    try:
        with store._write.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
            limit = conn.exec_driver_sql("PRAGMA journal_size_limit").scalar_one()
    finally:
        store.close()
    assert pages == storage._WAL_BACKSTOP_PAGES > storage._WAL_CHECKPOINT_PAGES
    assert limit == 32 + storage._WAL_CHECKPOINT_PAGES * (4096 + 24)


def test_a_store_dropped_unclosed_stops_its_thread(db: Path) -> None:
    store = load(f"sqlite:///{db}", batches=2)
    wal = store._wal
    assert wal is not None and wal._thread is not None
    store._read.dispose()
    store._write.dispose()
    del store
    gc.collect()
    assert not wal._thread.is_alive()


def test_postgresql_has_no_checkpointer(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        assert store._wal is None
    finally:
        store.close()
