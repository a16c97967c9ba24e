"""The audit node's own SQLite database: what it verified, and what it caught. Never a log's.

Per followed log (keyed by origin) it keeps:

* the latest verified head: size, root, and the signed checkpoint note (the log's signature, then
  the node's cosignature and the witnesses' as they are collected), moved forward only by a
  compare-and-swap (`advance`), together with the tiles and key events that justify it;
* the hash tiles of the verified tree, so the next audit fetches only new tiles;
* the key events verified so far (entry bytes and the keys that signed), enough to replay the key
  chain on restart exactly as the log replays it;
* each witness's last cosigned size, transient failures with their back-off deadline, the
  checkpoints peers gossiped, and the evidence records of misbehaviour.

One connection per call, `synchronous=FULL` and WAL: a write either commits whole or leaves the
previous state, so a crash loses nothing that was acknowledged (crash points are commented).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from attest.tiles import TileId
from verifier.errors import VerifierError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS heads (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    verified_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    origin TEXT NOT NULL,
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (origin, level, idx)
);
CREATE TABLE IF NOT EXISTS key_events (
    origin TEXT NOT NULL,
    idx INTEGER NOT NULL,
    entry BLOB NOT NULL,
    signers BLOB NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE TABLE IF NOT EXISTS statements (
    origin TEXT NOT NULL,
    digest BLOB NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (origin, digest)
);
CREATE TABLE IF NOT EXISTS witnesses (
    origin TEXT NOT NULL,
    url TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (origin, url)
);
CREATE TABLE IF NOT EXISTS failures (
    origin TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    retry_after REAL NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    origin TEXT NOT NULL,
    source TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (origin, source)
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""


class StateError(VerifierError):
    """The node's database is unusable or contradicts itself."""


class StateConflict(StateError):
    """A compare-and-swap failed: another process moved the head since it was read."""


@dataclass(frozen=True)
class VerifiedHead:
    """The latest checkpoint of a log this node verified in full."""

    size: int
    root: bytes
    note: bytes
    verified_at: int


@dataclass(frozen=True)
class StoredKeyEvent:
    """A key event entry as verified: its index, canonical entry bytes, the raw keys that signed."""

    index: int
    entry: bytes
    signers: frozenset[bytes]


@dataclass(frozen=True)
class Failure:
    """Consecutive transient failures of a log, and when to try it again (Unix seconds)."""

    count: int
    retry_after: float
    error: str


@dataclass(frozen=True)
class SeenCheckpoint:
    """The latest checkpoint a source (a peer, a gossip POST) showed for a log."""

    source: str
    size: int
    root: bytes
    note: bytes
    seen_at: int


@dataclass(frozen=True)
class EvidenceRow:
    """A stored evidence record: `body` is the evidence JSON (see `verifier.gossip`)."""

    id: int
    origin: str
    kind: str
    digest: str
    body: str
    created_at: int


class State:
    """The audit node's database at `path` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, timeout=30)
            try:
                db.executescript(_SCHEMA)  # idempotent; commits on its own
            finally:
                db.close()
        except sqlite3.Error as e:
            raise StateError(f"cannot create {path}: {e}") from e

    @contextmanager
    def _txn(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction: commit on success, else roll back.

        Writers take the write lock up front (BEGIN IMMEDIATE), so a compare-and-swap reads the
        row it replaces; readers take a snapshot (BEGIN) and never block the writer under WAL.
        """
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise StateError(f"cannot open {self.path}: {e}") from e
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StateError(f"{self.path}: {e}") from e
        finally:
            db.close()

    # -- the verified head --------------------------------------------------------------------

    def head(self, origin: str) -> VerifiedHead | None:
        """The latest verified head of `origin`, or None before the first verification."""
        with self._txn(write=False) as db:
            r = db.execute(
                "SELECT size, root, note, verified_at FROM heads WHERE origin = ?", (origin,)
            ).fetchone()
        return None if r is None else VerifiedHead(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]))

    def advance(
        self,
        origin: str,
        expect: tuple[int, bytes] | None,
        new: VerifiedHead,
        tiles: Mapping[TileId, bytes],
        key_events: Sequence[StoredKeyEvent],
        statements: Sequence[tuple[bytes, int]] = (),
    ) -> None:
        """Move the head from `expect` (None: no head yet) to `new`, with its tiles, key events
        and the statement digests of the new entries, (digest, index).

        Compare-and-swap: raises StateConflict, writing nothing, when the stored head is not
        `expect`. Requires `new.size >= expect size` and `tiles` to be every tile that is new or
        wider at `new.size`.
        """
        with self._txn() as db:
            # The swap comes first, so a stale writer fails before writing anything else.
            if expect is None:
                cur = db.execute(
                    "INSERT OR IGNORE INTO heads VALUES (?, ?, ?, ?, ?)",
                    (origin, new.size, new.root, new.note, new.verified_at),
                )
            else:
                cur = db.execute(
                    "UPDATE heads SET size = ?, root = ?, note = ?, verified_at = ? "
                    "WHERE origin = ? AND size = ? AND root = ?",
                    (new.size, new.root, new.note, new.verified_at, origin, *expect),
                )
            if cur.rowcount != 1:
                raise StateConflict(f"the verified head of {origin} moved away from {expect}")
            db.executemany(
                "INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?)",
                [(origin, t.level, t.index, d) for t, d in tiles.items()],
            )
            db.executemany(
                "INSERT INTO key_events VALUES (?, ?, ?, ?)",
                [(origin, k.index, k.entry, b"".join(sorted(k.signers))) for k in key_events],
            )
            db.executemany(
                "INSERT OR IGNORE INTO statements VALUES (?, ?, ?)",
                [(origin, d, i) for d, i in statements],
            )
            # Crash here: the transaction rolls back whole; the previous head, its tiles and key
            # events are intact, and the next step re-verifies the same checkpoint.
        # Committed: the head, tiles and key events moved together.

    def set_note(self, origin: str, size: int, root: bytes, note: bytes) -> None:
        """Replace the stored note of the head (size, root) by `note`, e.g. with cosignatures.

        Raises StateConflict when the head is no longer (size, root).
        """
        with self._txn() as db:
            cur = db.execute(
                "UPDATE heads SET note = ? WHERE origin = ? AND size = ? AND root = ?",
                (note, origin, size, root),
            )
            if cur.rowcount != 1:
                raise StateConflict(f"the verified head of {origin} is no longer size {size}")

    def tile(self, origin: str, tile: TileId) -> bytes | None:
        """The stored (verified) tile, at the width of the verified size; None if absent."""
        with self._txn(write=False) as db:
            r = db.execute(
                "SELECT data FROM tiles WHERE origin = ? AND level = ? AND idx = ?",
                (origin, tile.level, tile.index),
            ).fetchone()
        return None if r is None else bytes(r[0])

    def key_events(self, origin: str) -> list[StoredKeyEvent]:
        """Every verified key event of `origin`, in index order."""
        with self._txn(write=False) as db:
            rows = db.execute(
                "SELECT idx, entry, signers FROM key_events WHERE origin = ? ORDER BY idx",
                (origin,),
            ).fetchall()
        return [
            StoredKeyEvent(
                int(i), bytes(e), frozenset(bytes(s[j : j + 32]) for j in range(0, len(s), 32))
            )
            for i, e, s in rows
        ]

    # -- witnesses ----------------------------------------------------------------------------

    def statement_at(self, origin: str, digest: bytes) -> int | None:
        """The index of the verified entry of `origin` holding this statement digest, if any
        (entries verified since the node kept digests)."""
        with self._txn(write=False) as db:
            row = db.execute(
                "SELECT idx FROM statements WHERE origin = ? AND digest = ?", (origin, digest)
            ).fetchone()
        return None if row is None else int(row[0])

    def witness_size(self, origin: str, url: str) -> int:
        """The size the witness at `url` last cosigned for `origin` as far as we know (0: none)."""
        with self._txn(write=False) as db:
            r = db.execute(
                "SELECT size FROM witnesses WHERE origin = ? AND url = ?", (origin, url)
            ).fetchone()
        return 0 if r is None else int(r[0])

    def set_witness_size(self, origin: str, url: str, size: int) -> None:
        """Record that the witness at `url` cosigned `origin` at `size`."""
        with self._txn() as db:
            db.execute("INSERT OR REPLACE INTO witnesses VALUES (?, ?, ?)", (origin, url, size))

    # -- transient failures -------------------------------------------------------------------

    def failure(self, origin: str) -> Failure | None:
        """The current run of transient failures of `origin`, if any."""
        with self._txn(write=False) as db:
            r = db.execute(
                "SELECT count, retry_after, error FROM failures WHERE origin = ?", (origin,)
            ).fetchone()
        return None if r is None else Failure(int(r[0]), float(r[1]), str(r[2]))

    def record_failure(self, origin: str, count: int, retry_after: float, error: str) -> None:
        """Store a failure run: `count` failures in a row, next try at `retry_after`."""
        with self._txn() as db:
            db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                (origin, count, retry_after, error),
            )

    def clear_failure(self, origin: str) -> None:
        """Forget the failure run of `origin` (it answered and verified)."""
        with self._txn() as db:
            db.execute("DELETE FROM failures WHERE origin = ?", (origin,))

    # -- gossip -------------------------------------------------------------------------------

    def record_seen(self, origin: str, seen: SeenCheckpoint) -> None:
        """Remember the latest checkpoint `seen.source` showed for `origin` (replacing older)."""
        with self._txn() as db:
            db.execute(
                "INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?, ?, ?)",
                (origin, seen.source, seen.size, seen.root, seen.note, seen.seen_at),
            )

    def seen(self, origin: str) -> list[SeenCheckpoint]:
        """The checkpoints sources showed for `origin`, smallest size first."""
        with self._txn(write=False) as db:
            rows = db.execute(
                "SELECT source, size, root, note, seen_at FROM seen WHERE origin = ? "
                "ORDER BY size, source",
                (origin,),
            ).fetchall()
        return [
            SeenCheckpoint(str(s), int(n), bytes(r), bytes(t), int(a)) for s, n, r, t, a in rows
        ]

    # -- evidence -----------------------------------------------------------------------------

    def add_evidence(self, origin: str, kind: str, digest: str, body: str, now: int) -> bool:
        """Store an evidence record unless one with the same `digest` exists; True if new."""
        with self._txn() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO evidence (origin, kind, digest, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (origin, kind, digest, body, now),
            )
            return cur.rowcount == 1

    def evidence(self, origin: str | None = None) -> list[EvidenceRow]:
        """Every evidence record (of `origin`, when given), oldest first."""
        sql = "SELECT id, origin, kind, digest, body, created_at FROM evidence"
        args: tuple[str, ...] = ()
        if origin is not None:
            sql, args = sql + " WHERE origin = ?", (origin,)
        with self._txn(write=False) as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            EvidenceRow(int(i), str(o), str(k), str(d), str(b), int(c)) for i, o, k, d, b, c in rows
        ]
