"""Storage of logs in SQLite (embedded default, WAL) or PostgreSQL (psycopg 3), via SQLAlchemy.

Readers use plain transactions. The one writer path is `Store.writer`: a transaction that first
locks the log's head row (PostgreSQL `SELECT ... FOR UPDATE`; SQLite `BEGIN IMMEDIATE`), so one
process at a time sequences a log however many frontends share the database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from operator import itemgetter
from typing import Any
from urllib.parse import quote

import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry

from attest.tiles import TILE_WIDTH, TileId, decode_bundle
from ledger import schema
from ledger.errors import LedgerError

# SQLite limits bound parameters per statement; stay well below the smallest default.
_IN_CHUNK = 500
# Level-0 tiles read per statement when reading many (8 MiB of leaf hashes).
_TILE_CHUNK = 1024
# PostgreSQL advisory lock key ("bled") held while migrating and creating logs: frontends that
# start together on one database take turns instead of racing on CREATE TABLE / INSERT.
_SETUP_LOCK = 0x626C6564
_ROOT_CACHE = 65536
_HASH_SIZE = 32
# SQLite's WAL is checkpointed by a thread of the store's own (`_WalCheckpointer`) once it
# holds this many pages (~40 MiB at 4 KiB pages) rather than every ~4 MiB: each batch rewrites
# the same hot pages (the leaf-hash index's), and a rarer checkpoint copies each of them back
# once rather than once every few batches (bytes written per 1 KiB entry at 100k entries,
# batch 256: 8.0 KB -> 6.3 KB), with fewer fsyncs.
_WAL_CHECKPOINT_PAGES = 10_000
# The writers' own automatic checkpoint, at a WAL this many pages long: the backstop that
# keeps the WAL bounded should the thread fall behind (or not run), off the common path.
_WAL_BACKSTOP_PAGES = 4 * _WAL_CHECKPOINT_PAGES
_WAL_HEADER, _WAL_FRAME_HEADER = 32, 24

_log = logging.getLogger(__name__)


def leaf_prefix(leaf_hash: bytes) -> int:
    """The leaf-hash index's key for a leaf hash: its first 8 bytes, a big-endian signed
    64-bit integer (what PostgreSQL's bigint and SQLite's INTEGER hold; see `schema.leaves`)."""
    return int.from_bytes(leaf_hash[:8], "big", signed=True)


def leaf_epochs(size: int) -> range:
    """The epochs of `leaves` that entries below `size` can be in (`schema.LEAF_EPOCH_BITS`)."""
    return range(((size - 1) >> schema.LEAF_EPOCH_BITS) + 1 if size > 0 else 0)


class StorageError(LedgerError):
    """The database is missing something the log's invariants say must be there."""


class ConflictError(StorageError):
    """The compare-and-swap on the log head failed: another writer moved it."""


@dataclass(frozen=True)
class LogRow:
    """A log hosted by this database."""

    id: int
    name: str
    origin: str
    partition: str
    vkey: str


@dataclass(frozen=True)
class Head:
    """The latest signed checkpoint of a log."""

    size: int
    root: bytes
    checkpoint: str


@dataclass
class Batch:
    """Everything one sequencing step writes, committed in one transaction."""

    old_size: int
    new_head: Head
    tiles: Mapping[TileId, bytes]
    bundles: Mapping[int, tuple[int, bytes]]  # index -> (entry count, bundle bytes): written whole
    # (leaf hash, index) rows added to the leaf-hash index by this batch: the whole unindexed
    # tail up to the new head when the sequencer flushes it, else none (`leaf_index_size`).
    leaves: Sequence[tuple[bytes, int]]
    created_at: int
    key_events: Sequence[KeyEventRow] = ()
    pending_done: Sequence[bytes] = ()  # leaf hashes leaving the anonymous log's queue
    # (statement digest, index) rows, written when the leaf-hash index is flushed: those of
    # the entries below `leaf_index_size` not yet in `statements` (`WriteTxn.index_leaves`).
    statements: Sequence[tuple[bytes, int]] = ()
    # The leaf-hash index's new watermark when `leaves` is a flush of the tail below it; the
    # rows and the watermark commit together, so a flush is all there or not at all.
    leaf_index_size: int | None = None
    # index -> (entries before, entries appended, their bundle encoding): appended to a
    # bundle that is still partial after the batch, as a part (`schema.bundle_parts`).
    bundle_parts: Mapping[int, tuple[int, int, bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyEventRow:
    """A key event as stored for replay: its index, statement bytes and verified signers."""

    index: int
    statement: bytes
    signers: frozenset[bytes]


@dataclass(frozen=True)
class IndexRow:
    """What one statement is about (`ledger.index`); fields absent from a statement are None."""

    idx: int
    predicate_type: str
    model: str | None = None
    version: str | None = None
    weights_sha256: str | None = None
    category: str | None = None
    tier: str | None = None
    predecessor_version: str | None = None


def _wal_limit(page_size: int) -> int:
    """The WAL's length in bytes at `_WAL_CHECKPOINT_PAGES` frames."""
    return _WAL_HEADER + _WAL_CHECKPOINT_PAGES * (page_size + _WAL_FRAME_HEADER)


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's begin hooks, not the driver, decide when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        # The WAL is checkpointed off the writer's path (`_WalCheckpointer`); the writer's own
        # automatic checkpoint is only the backstop. Durability is the same: every commit
        # still syncs the WAL.
        cur.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
        # Once a checkpoint has emptied the WAL, the next commit starts it over from the top
        # and cuts the file back to this length: the file's length is then how far the WAL
        # has grown since, which is what tells the checkpointer (a stat, no lock) it is due.
        page_size = cur.execute("PRAGMA page_size").fetchone()[0]
        cur.execute(f"PRAGMA journal_size_limit={_wal_limit(int(page_size))}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return on_connect


def _make_engine(url: str, *, writer: bool, synchronous: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        # Reads are single statements: autocommit spares the BEGIN/ROLLBACK round trips.
        level = "READ COMMITTED" if writer else "AUTOCOMMIT"
        # No server-side prepared statements: psycopg's automatic ones get generic plans that
        # stop using the leaf index as the table grows.
        return create_engine(
            u,
            pool_pre_ping=True,
            pool_size=8,
            max_overflow=16,
            isolation_level=level,
            connect_args={"prepare_threshold": None},
        )
    engine = create_engine(u, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas(synchronous))
    if writer:
        # Writers take the database write lock up front, so the head they read is the head
        # they replace. Readers run each statement on its own snapshot and, under WAL, never
        # block the writer.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


class Store:
    """All logs of one database. Thread-safe: each call takes its own connection."""

    def __init__(self, url: str, *, synchronous: str = "FULL", tile_cache: int = 4096) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"bad SQLite synchronous mode {synchronous!r}")
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self._read = _make_engine(url, writer=False, synchronous=synchronous.upper())
        self._write = _make_engine(url, writer=True, synchronous=synchronous.upper())
        self._full_tiles: OrderedDict[tuple[int, TileId], bytes] = OrderedDict()
        self._cache_size = tile_cache
        self._cache_lock = threading.Lock()
        self._roots: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._wal: _WalCheckpointer | None = None
        path = make_url(url).database
        if self.dialect == "sqlite" and path and path != ":memory:":
            self._wal = _WalCheckpointer(path, synchronous.upper())
            # A store dropped without close() still stops its thread.
            weakref.finalize(self, self._wal.stop)

    def close(self) -> None:
        """Release every pooled connection; on SQLite, stop the WAL checkpointer once it has
        checkpointed what the WAL holds."""
        self._read.dispose()
        self._write.dispose()
        if self._wal is not None:
            self._wal.stop()

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("ledger") / "migrations"))
        with self._write.begin() as conn:
            self._setup_lock(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def _setup_lock(self, conn: Connection) -> None:
        """Serialise schema and log set-up across processes until the transaction ends
        (PostgreSQL; SQLite writers already begin with BEGIN IMMEDIATE)."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK})")

    # -- logs ---------------------------------------------------------------------------------

    def create_log(self, name: str, origin: str, partition: str, vkey: str, head: Head) -> LogRow:
        """Register a log with its empty-tree checkpoint, or return it if it already exists."""
        with self._write.begin() as conn:
            self._setup_lock(conn)
            row = self._log_row(conn, name)
            if row is not None:
                return row
            ins = schema.logs.insert().values(
                name=name, origin=origin, partition=partition, vkey=vkey
            )
            log_id = conn.execute(ins.returning(schema.logs.c.id)).scalar_one()
            conn.execute(
                schema.heads.insert().values(
                    log_id=log_id, size=head.size, root=head.root, checkpoint=head.checkpoint
                )
            )
            conn.execute(
                schema.checkpoints.insert().values(
                    log_id=log_id,
                    size=head.size,
                    root=head.root,
                    checkpoint=head.checkpoint,
                    created_at=0,
                )
            )
            return LogRow(int(log_id), name, origin, partition, vkey)

    def get_log(self, name: str) -> LogRow | None:
        """The log called `name`, or None."""
        with self._read.connect() as conn:
            return self._log_row(conn, name)

    @staticmethod
    def _log_row(conn: Connection, name: str) -> LogRow | None:
        r = conn.execute(select(schema.logs).where(schema.logs.c.name == name)).first()
        return None if r is None else LogRow(r.id, r.name, r.origin, r.partition, r.vkey)

    # -- reads --------------------------------------------------------------------------------

    def head(self, log_id: int) -> Head:
        """The log's latest checkpoint."""
        with self._read.connect() as conn:
            return _read_head(conn, log_id, lock=False)

    def checkpoint(self, log_id: int, size: int) -> str | None:
        """The checkpoint the log signed at `size`, if it ever published one."""
        q = select(schema.checkpoints.c.checkpoint).where(
            schema.checkpoints.c.log_id == log_id, schema.checkpoints.c.size == size
        )
        with self._read.connect() as conn:
            return conn.execute(q).scalar_one_or_none()

    def published_root(self, log_id: int, size: int) -> bytes | None:
        """The root of the checkpoint the log signed at `size`, if it ever published one.

        Asked on every admission (anti-backdating); a published root never changes, so found
        ones are cached.
        """
        key = (log_id, size)
        with self._cache_lock:
            root = self._roots.get(key)
        if root is not None:
            return root
        c = schema.checkpoints.c
        q = select(c.root).where(c.log_id == log_id, c.size == size)
        with self._read.connect() as conn:
            found = conn.execute(q).scalar_one_or_none()
        if found is None:
            return None
        with self._cache_lock:
            self._roots[key] = bytes(found)
            while len(self._roots) > _ROOT_CACHE:
                self._roots.popitem(last=False)
        return bytes(found)

    def key_events(self, log_id: int, since: int) -> list[KeyEventRow]:
        """Key events of a log at indices >= `since`, in index order."""
        with self._read.connect() as conn:
            return _key_events(conn, log_id, since)

    def read_tile(self, log_id: int, tile: TileId, conn: Connection | None = None) -> bytes:
        """The widest stored version of a hash tile, or b"" when it does not exist (read on
        `conn` when given: a caller that holds a read connection takes no second one)."""
        key = (log_id, tile)
        with self._cache_lock:
            data = self._full_tiles.get(key)
            if data is not None:
                self._full_tiles.move_to_end(key)
                return data
        t = schema.tiles.c
        q = select(t.data).where(t.log_id == log_id, t.level == tile.level, t.idx == tile.index)
        if conn is not None:
            data = conn.execute(q).scalar_one_or_none() or b""
        else:
            with self._read.connect() as own:
                data = own.execute(q).scalar_one_or_none() or b""
        self.remember_tiles(log_id, {tile: data})
        return data

    def remember_tiles(self, log_id: int, tiles: Mapping[TileId, bytes]) -> None:
        """Cache full tiles: they never change once complete."""
        with self._cache_lock:
            for tile, data in tiles.items():
                if len(data) == TILE_WIDTH * 32:
                    self._full_tiles[(log_id, tile)] = data
            while len(self._full_tiles) > self._cache_size:
                self._full_tiles.popitem(last=False)

    def read_bundle(self, log_id: int, index: int) -> bytes:
        """The widest stored version of an entry bundle, or b"" (its `bundles` row and parts,
        read in one statement: a bundle completed meanwhile cannot lose its parts in between)."""
        sql = bundle_sql("%s" if self.dialect == "postgresql" else "?")
        with self._read.connect() as conn:
            rows = conn.exec_driver_sql(sql, (log_id, index, log_id, index)).all()
        return assemble_bundle(rows)[1]

    def leaf_index_size(self, log_id: int) -> int:
        """How many entries of the log the leaf-hash index (`leaves`) holds; the leaf hashes of
        the entries above are in the level-0 tiles."""
        w = schema.leaf_index_heads.c
        with self._read.connect() as conn:
            v = conn.execute(select(w.size).where(w.log_id == log_id)).scalar_one_or_none()
        return int(v or 0)

    def leaf_index(self, log_id: int, leaf_hash: bytes) -> int | None:
        """The index of the entry with this leaf hash, if the log has it.

        Exact although the leaf-hash index lags the tree: one statement reads the watermark,
        the tree size and the `leaves` rows under the hash's prefix together (one snapshot);
        each row is a candidate, confirmed against the leaf hash its level-0 tile holds (a
        prefix is 8 of the hash's 32 bytes, `schema.leaves`); on a miss, the entries in
        [watermark, size) are searched in their level-0 tiles. Entries below the watermark
        were indexed in the same transaction that moved it, and tiles only grow, so reading
        the tiles after that statement cannot lose an entry the statement did not see.

        Cost of a miss (a hash the log does not hold, or one in the tail): the tail is at most
        the sequencer's `leaf_index_lag` plus a batch, 64 full tiles by default, taken from the
        store's tile cache (full tiles never change), plus one range query for the tiles not
        cached (always the partial right-edge tile), and a byte search of up to ~0.5 MiB:
        about 80 us more than a hit for a tail of 32 tiles on SQLite. A hit costs the statement
        and its tile (cached once full): 106-145 us at the median on SQLite, 200,000 entries all
        indexed, 2,000 random ones, a slow 2-core machine (`docs/benchmarks.md`). Both pay one
        B-tree seek per epoch of 2^20 entries (`schema.leaves`), about 2.5 us each on SQLite.
        """
        # One statement, one snapshot: the watermark, the tree size and the index's candidates
        # (rows sharing the hash's prefix; nearly always none or the one), sought in every
        # epoch below the tree size (`schema.leaves`), which the same statement reads.
        bits = int(schema.LEAF_EPOCH_BITS)
        if self.dialect == "postgresql":
            # An uncorrelated ARRAY(...) is computed once; `epoch = ANY(it)` is then an index
            # condition (EXPLAIN on PostgreSQL 15, 3,000,000 rows analysed).
            sql = (
                "SELECT w.size, h.size, l.idx FROM heads h"
                " LEFT JOIN leaf_index_heads w ON w.log_id = h.log_id"
                " LEFT JOIN leaves l ON l.log_id = h.log_id AND l.epoch = ANY(ARRAY("
                f"SELECT generate_series(0, (SELECT (size - 1) >> {bits} FROM heads"
                " WHERE log_id = %s))))"
                " AND l.prefix = %s"
                " WHERE h.log_id = %s"
            )
        else:
            sql = (
                "WITH RECURSIVE e(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM e"
                f" WHERE n < (SELECT (size - 1) >> {bits} FROM heads WHERE log_id = ?))"
                " SELECT w.size, h.size, l.idx FROM heads h"
                " LEFT JOIN leaf_index_heads w ON w.log_id = h.log_id"
                " LEFT JOIN leaves l ON l.log_id = h.log_id AND l.epoch IN (SELECT n FROM e)"
                " AND l.prefix = ?"
                " WHERE h.log_id = ?"
            )
        args = (log_id, leaf_prefix(leaf_hash), log_id)
        with self._read.connect() as conn:
            rows = conn.exec_driver_sql(sql, args).all()
            if not rows:
                return None
            for _, _, index in rows:
                if index is not None and self._leaf_hash_at(conn, log_id, int(index)) == leaf_hash:
                    return int(index)
            mark, size = rows[0][0], rows[0][1]
            return self._tail_index(conn, log_id, int(mark or 0), int(size), leaf_hash)

    def _leaf_hash_at(self, conn: Connection, log_id: int, index: int) -> bytes:
        """The leaf hash of entry `index` (below the tree size), from its level-0 tile, read on
        `conn` (the lookup's own: holding one pooled connection while waiting for a second
        could starve the pool under many concurrent lookups)."""
        at = (index % TILE_WIDTH) * _HASH_SIZE
        tile = self.read_tile(log_id, TileId(0, index // TILE_WIDTH), conn)
        return tile[at : at + _HASH_SIZE]

    def _tail_index(
        self, conn: Connection, log_id: int, mark: int, size: int, leaf_hash: bytes
    ) -> int | None:
        """The index in [mark, size) of `leaf_hash`, searched in the level-0 tiles there."""
        if mark >= size:
            return None
        first, last = mark // TILE_WIDTH, (size - 1) // TILE_WIDTH
        tiles: dict[int, bytes] = {}
        with self._cache_lock:
            for n in range(first, last + 1):
                data = self._full_tiles.get((log_id, TileId(0, n)))
                if data is not None:
                    tiles[n] = data
        missing = [n for n in range(first, last + 1) if n not in tiles]
        if missing:
            t = schema.tiles.c
            q = select(t.idx, t.data).where(
                t.log_id == log_id, t.level == 0, t.idx >= missing[0], t.idx <= missing[-1]
            )
            read = {int(n): bytes(d) for n, d in conn.execute(q)}
            self.remember_tiles(log_id, {TileId(0, n): d for n, d in read.items()})
            tiles.update(read)
        for n in range(first, last + 1):
            offset = _find_hash(tiles.get(n, b""), leaf_hash)
            if offset is not None:
                return n * TILE_WIDTH + offset
        return None

    # -- the anonymous log ----------------------------------------------------------------------

    def redeem(
        self,
        log_id: int,
        token_key_id: bytes,
        nonce: bytes,
        leaf_hash: bytes,
        entry: bytes,
        hour: int,
    ) -> bool:
        """Spend a token and queue its entry for the anonymous log's next batch, in one
        transaction: a crash at any point leaves both written or neither.

        Returns True when the entry is queued (or already queued, or already in the log);
        False when the token was spent before and the entry is neither queued nor logged
        (the token was spent on another entry). So a client that retries the same write
        with the same token after a crash gets its receipt again, never `token_spent`.
        The spent-token row holds only the token's key id and nonce: nothing links it to
        the entry it paid for.
        """
        spent = schema.spent_tokens.insert().values(
            log_id=log_id, token_key_id=token_key_id, nonce=nonce
        )
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        queued = dialect.insert(schema.pending).values(
            log_id=log_id, leaf_hash=leaf_hash, entry=entry, received_hour=hour
        )
        try:
            with self._write.begin() as conn:
                conn.execute(spent)
                # Crash point: nothing is committed; the token is unspent, the entry unqueued.
                conn.execute(queued.on_conflict_do_nothing())
            # Crash point: both committed; the receipt the caller signs is a promise the log
            # can keep, and a retry with the same token finds the entry below.
            return True
        except IntegrityError:
            return self.holds_leaf(log_id, leaf_hash)

    def holds_leaf(self, log_id: int, leaf_hash: bytes) -> bool:
        """Whether the anonymous log has this entry queued or integrated."""
        p = schema.pending.c
        queued = select(p.leaf_hash).where(p.log_id == log_id, p.leaf_hash == leaf_hash)
        with self._read.connect() as conn:
            if conn.execute(queued).first() is not None:
                return True
        # Queued entries leave the queue in the transaction that logs them, so asked in this
        # order a concurrent batch cannot hide the entry from both reads.
        return self.leaf_index(log_id, leaf_hash) is not None

    def pending(self, log_id: int, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` queued (leaf hash, entry) pairs, in no meaningful order."""
        p = schema.pending.c
        q = select(p.leaf_hash, p.entry).where(p.log_id == log_id).limit(limit)
        with self._read.connect() as conn:
            return [(bytes(h), bytes(e)) for h, e in conn.execute(q)]

    # -- the read index -----------------------------------------------------------------------

    def index_size(self, log_id: int) -> int:
        """How many entries of the log the read index covers (0 before the first build)."""
        with self._read.connect() as conn:
            q = select(schema.index_heads.c.size).where(schema.index_heads.c.log_id == log_id)
            return int(conn.execute(q).scalar_one_or_none() or 0)

    def extend_index(
        self, log_id: int, old_size: int, new_size: int, rows: Sequence[IndexRow]
    ) -> bool:
        """Add the index rows of entries [old_size, new_size), in one transaction.

        Compare-and-swap on the index head: returns False, writing nothing, when another reader
        has already extended the index from `old_size` (its rows are the same: they are derived
        from the same entries).
        """
        h = schema.index_heads
        with self._write.begin() as conn:
            if old_size == 0:
                dialect = postgresql if self.dialect == "postgresql" else sqlite
                ins = dialect.insert(h).values(log_id=log_id, size=0)
                conn.execute(ins.on_conflict_do_nothing(index_elements=[h.c.log_id]))
            res = conn.execute(
                update(h).where(h.c.log_id == log_id, h.c.size == old_size).values(size=new_size)
            )
            if res.rowcount != 1:
                conn.rollback()
                return False
            if rows:
                conn.execute(
                    schema.statement_index.insert(),
                    [{"log_id": log_id, **r.__dict__} for r in rows],
                )
            return True

    def index_models(self, log_id: int, predicate_type: str) -> list[tuple[str, str]]:
        """Distinct (model, version) of the index rows of `predicate_type`, by first index."""
        t = schema.statement_index.c
        q = (
            select(t.model, t.version, func.min(t.idx).label("first"))
            .where(t.log_id == log_id, t.predicate_type == predicate_type, t.model.is_not(None))
            .group_by(t.model, t.version)
            .order_by(t.model, "first")
        )
        with self._read.connect() as conn:
            return [(str(r.model), str(r.version)) for r in conn.execute(q)]

    def index_rows(
        self, log_id: int, where: Mapping[str, str], *, start: int = 0, limit: int = 1000
    ) -> list[IndexRow]:
        """Index rows of the log whose columns equal `where`, from index `start`, in order."""
        t = schema.statement_index
        q = select(t).where(t.c.log_id == log_id, t.c.idx >= start)
        for column, value in where.items():
            q = q.where(t.c[column] == value)
        q = q.order_by(t.c.idx).limit(limit)
        with self._read.connect() as conn:
            return [
                IndexRow(**{k: v for k, v in r._mapping.items() if k != "log_id"})
                for r in conn.execute(q)
            ]

    # -- the one writer path ------------------------------------------------------------------

    @contextmanager
    def writer(self, log_id: int) -> Iterator[WriteTxn]:
        """A write transaction holding the log's sequencer lock; commits on clean exit."""
        with self._write.begin() as conn:
            yield WriteTxn(self, conn, log_id, self._lock_head(conn, log_id))
        if self._wal is not None and self._wal.committed():
            self._wal_catch_up()

    def _wal_catch_up(self) -> None:
        """Checkpoint the frames committed while the checkpointer's last checkpoint ran (one
        batch or a few), so that the WAL is all in the database file when the next writer
        begins, and that writer starts it over (`_WalCheckpointer`)."""
        raw = self._write.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cur.fetchall()
            cur.close()
        except sqlite3.Error as e:  # the next round (or the backstop) checkpoints them
            _log.warning("WAL checkpoint of %s failed: %s", self.url, e)
        finally:
            raw.close()

    def _lock_head(self, conn: Connection, log_id: int) -> Head:
        """The log's head, locked for this transaction (driver-level: once per batch)."""
        if self.dialect == "postgresql":
            sql = "SELECT size, root, checkpoint FROM heads WHERE log_id = %s FOR UPDATE"
        else:  # the transaction began with BEGIN IMMEDIATE, which locked the database
            sql = "SELECT size, root, checkpoint FROM heads WHERE log_id = ?"
        # On the driver connection, as `WriteTxn._fetch` (SQLAlchemy's execution cost more
        # than the statement).
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(sql, (log_id,))
            r = cur.fetchone()
        finally:
            cur.close()
        if r is None:
            raise StorageError(f"log {log_id} has no head")
        return Head(int(r[0]), bytes(r[1]), str(r[2]))


class WriteTxn:
    """Reads and writes inside the sequencer's transaction."""

    def __init__(self, store: Store, conn: Connection, log_id: int, head: Head) -> None:
        self.store, self.conn, self.log_id, self.head = store, conn, log_id, head
        # The driver's parameter marker, for the statements sent without SQLAlchemy's compiler.
        self._mark = "%s" if store.dialect == "postgresql" else "?"
        # The driver connection under `conn`, in the same transaction: the statements every
        # batch sends go to it directly, as SQLAlchemy's execution of even a textual statement
        # cost some 17 us each (about 0.3 us an entry at 256 entries a batch). The head's
        # compare-and-swap and the checkpoint insert stay with `conn`: statement events see
        # those (the crash tests stop a sequencer after each).
        self._raw: Any = conn.connection.dbapi_connection

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The rows of a statement run on the driver connection."""
        cur = self._raw.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def _write_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per row on the driver connection."""
        cur = self._raw.cursor()
        try:
            cur.executemany(sql, rows)
        finally:
            cur.close()

    def read_tile(self, tile: TileId) -> bytes:
        """A tile as of this transaction (right-edge tiles may have moved since last batch)."""
        m = self._mark
        sql = f"SELECT data FROM tiles WHERE log_id = {m} AND level = {m} AND idx = {m}"
        rows = self._fetch(sql, (self.log_id, tile.level, tile.index))
        return bytes(rows[0][0]) if rows else b""

    def read_bundle(self, index: int) -> bytes:
        """An entry bundle as of this transaction."""
        args = (self.log_id, index, self.log_id, index)
        return assemble_bundle(self.conn.exec_driver_sql(bundle_sql(self._mark), args).all())[1]

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """The entries [start, end), from their bundles as of this transaction (one read per
        bundle). Raises StorageError when a bundle holds fewer than the range needs."""
        out: list[bytes] = []
        if start >= end:
            return out
        for n in range(start // TILE_WIDTH, (end - 1) // TILE_WIDTH + 1):
            base = n * TILE_WIDTH
            lo, hi = max(start, base) - base, min(end, base + TILE_WIDTH) - base
            entries = decode_bundle(self.read_bundle(n))
            if len(entries) < hi:
                raise StorageError(f"entry bundle {n} holds {len(entries)} entries, not {hi}")
            out += entries[lo:hi]
        return out

    def leaf_index_size(self) -> int:
        """The leaf-hash index's watermark as of this transaction (entries below it are in
        `leaves`); 0 when the log has none yet."""
        m = self._mark
        sql = f"SELECT size FROM leaf_index_heads WHERE log_id = {m}"
        rows = self._fetch(sql, (self.log_id,))
        return int(rows[0][0]) if rows else 0

    def read_leaf_hashes(self, start: int, end: int) -> dict[bytes, int]:
        """Leaf hash -> index of the entries in [start, end), from their level-0 tiles (one
        range query): the tail the leaf-hash index does not hold yet."""
        data = self.leaf_hash_bytes(start, end)
        size = _HASH_SIZE
        out = {data[k : k + size]: i for i, k in enumerate(range(0, len(data), size), start)}
        if len(out) != end - start:
            raise StorageError(f"level-0 tiles hold {len(out)} of entries [{start}, {end})")
        return out

    def leaf_hash_bytes(self, start: int, end: int) -> bytes:
        """The leaf hashes of the entries in [start, end), end to end, from their level-0
        tiles (one range query per `_TILE_CHUNK` tiles). Raises StorageError when a tile in
        the range is missing or short."""
        if start >= end:
            return b""
        m = self._mark
        sql = (
            f"SELECT idx, data FROM tiles WHERE log_id = {m} AND level = 0"
            f" AND idx >= {m} AND idx <= {m} ORDER BY idx"
        )
        first, last = start // TILE_WIDTH, (end - 1) // TILE_WIDTH
        parts: list[bytes] = []
        for lo in range(first, last + 1, _TILE_CHUNK):
            hi = min(lo + _TILE_CHUNK - 1, last)
            rows = self._fetch(sql, (self.log_id, lo, hi))
            if [int(n) for n, _ in rows] != list(range(lo, hi + 1)):
                raise StorageError(f"level-0 tiles {lo}..{hi} are not all stored")
            parts += (bytes(d) for _, d in rows)
        if any(len(d) != TILE_WIDTH * _HASH_SIZE for d in parts[:-1]):
            raise StorageError(f"a level-0 tile below entry {end} is not full")
        data = b"".join(parts)
        base = first * TILE_WIDTH
        lo_at, hi_at = (start - base) * _HASH_SIZE, (end - base) * _HASH_SIZE
        if len(data) < hi_at:
            held = base + len(data) // _HASH_SIZE
            raise StorageError(f"level-0 tiles hold entries up to {held}, not {end}")
        return data[lo_at:hi_at]

    def lookup_leaves(
        self, hashes: Iterable[bytes], tail: Mapping[bytes, int] | None = None
    ) -> dict[bytes, int]:
        """Indices of the leaf hashes this log already holds (deduplication): from `leaves`
        for the entries below the watermark, and from the unindexed tail above it.

        `tail` is the caller's map of that tail (the sequencer keeps it in memory, see
        `ledger.sequencer._LeafTail`); without one it is read from the tiles.

        On the hot path of every batch, so it talks to the driver directly: one array
        parameter on PostgreSQL (answered from the primary key whatever the statistics say),
        chunks of `?` parameters on SQLite.
        """
        if tail is None:
            tail = self.read_leaf_hashes(self.leaf_index_size(), self.head.size)
        found: dict[bytes, int] = {}
        wanted = []
        for h in hashes:
            ix = tail.get(h)
            if ix is None:
                wanted.append(h)
            else:
                found[h] = ix
        epochs = leaf_epochs(self.head.size)
        if not wanted or not epochs:
            return found
        by_prefix: dict[int, list[bytes]] = {}
        for h in wanted:
            by_prefix.setdefault(leaf_prefix(h), []).append(h)
        prefixes = list(by_prefix)
        # Every epoch the indexed entries can be in (those below the watermark, itself at most
        # the tree size): one seek per epoch and prefix.
        if self.store.dialect == "postgresql":
            sql = (
                "SELECT prefix, idx FROM leaves"
                " WHERE log_id = %s AND epoch = ANY(%s) AND prefix = ANY(%s)"
            )
            rows = self._fetch(sql, (self.log_id, list(epochs), prefixes))
        else:
            rows = []
            in_epochs = ", ".join(map(str, epochs))  # integers of ours, inline
            for i in range(0, len(prefixes), _IN_CHUNK):
                chunk = prefixes[i : i + _IN_CHUNK]
                sql = (
                    f"SELECT prefix, idx FROM leaves WHERE log_id = ? AND epoch IN ({in_epochs})"
                    f" AND prefix IN ({', '.join('?' * len(chunk))})"
                )
                rows += self._fetch(sql, (self.log_id, *chunk))
        # A prefix only names candidates: each is confirmed against its level-0 tile, read
        # once per tile however many candidates it holds.
        tiles: dict[int, bytes] = {}
        for prefix, ix in rows:
            index = int(ix)
            n, at = divmod(index, TILE_WIDTH)
            data = tiles.get(n)
            if data is None:
                data = tiles[n] = self.leaf_hash_bytes(
                    n * TILE_WIDTH, min((n + 1) * TILE_WIDTH, self.head.size)
                )
            held = data[at * _HASH_SIZE : (at + 1) * _HASH_SIZE]
            for h in by_prefix[int(prefix)]:
                if h == held:
                    found[h] = index
        return found

    def lookup_statements(self, digests: Iterable[bytes]) -> dict[bytes, int]:
        """Indices of the entries holding these statement digests (one entry per statement,
        whatever its signatures: `attest.admission.statement_digest`). Driver-level, as
        `lookup_leaves`: it runs on every batch."""
        wanted, found = list(digests), {}
        if self.store.dialect == "postgresql":
            sql = "SELECT digest, idx FROM statements WHERE log_id = %s AND digest = ANY(%s)"
            rows = self.conn.exec_driver_sql(sql, (self.log_id, wanted)).all()
            return {bytes(d): int(ix) for d, ix in rows}
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            sql = (
                "SELECT digest, idx FROM statements WHERE log_id = ? AND digest IN "
                f"({', '.join('?' * len(chunk))})"
            )
            rows = self.conn.exec_driver_sql(sql, (self.log_id, *chunk)).all()
            found.update({bytes(d): int(ix) for d, ix in rows})
        return found

    def _insert_statements(self, statements: Sequence[tuple[bytes, int]]) -> None:
        """Statement-digest rows: COPY on PostgreSQL, executemany on SQLite, in digest order
        (as `index_leaves`: each B-tree page is then written once however many rows land on
        it)."""
        statements = sorted(statements, key=itemgetter(0))
        if self.store.dialect == "postgresql":
            raw = self.conn.connection.driver_connection
            copy_sql = "COPY statements (log_id, digest, idx) FROM STDIN"
            with raw.cursor() as cur, cur.copy(copy_sql) as copy:  # type: ignore[union-attr]
                for d, i in statements:
                    copy.write_row((self.log_id, d, i))
            return
        # As `_insert_leaves`: the log id inline, the (digest, index) pairs as given.
        self._write_rows(
            f"INSERT INTO statements (log_id, digest, idx) VALUES ({int(self.log_id)}, ?, ?)",
            statements,
        )

    def index_leaves(
        self,
        leaves: Sequence[tuple[bytes, int]],
        size: int,
        statements: Sequence[tuple[bytes, int]] = (),
    ) -> None:
        """Flush the unindexed tail into the leaf-hash index: `leaves` are the rows of every
        entry from the watermark up to `size`, which becomes the watermark, and `statements`
        the statement-digest rows of those entries (the same watermark covers both).

        Written in key order (`_insert_leaves`), so the B-tree takes them in order and each of
        its pages is written once per flush, however many of the rows land on it (one row at a
        time in hash order is one page per row: the cost this lag exists to avoid). Idempotent
        by construction: the rows and the watermark commit together, so after a crash
        mid-flush neither is there and the next flush writes exactly these rows again; the
        caller holds the writer lock, so no other flush runs from the same watermark.
        """
        if leaves:
            self._insert_leaves(leaves)
        if statements:
            self._insert_statements(statements)
        self._upsert(schema.leaf_index_heads, [(self.log_id, size)], ["log_id"], ["size"])

    def _insert_leaves(self, leaves: Sequence[tuple[bytes, int]]) -> None:
        """Leaf-hash index rows for (leaf hash, index) pairs, in key order (`schema.leaves`):
        COPY on PostgreSQL, executemany on SQLite."""
        # The keys of all rows at once (`leaf_prefix` of each hash: its first 8 of 32 bytes,
        # big-endian, signed), sorted by (prefix, index): 12 ms for a flush of 16,384 rows on
        # a slow 2-core machine, against 18 ms row by row in Python.
        count = len(leaves)
        prefixes = np.frombuffer(b"".join(h for h, _ in leaves), dtype=">i8")[::4]
        indices = np.fromiter((i for _, i in leaves), dtype=np.int64, count=count)
        epochs = indices >> schema.LEAF_EPOCH_BITS
        order = np.lexsort((indices, prefixes, epochs))
        rows = list(
            zip(
                epochs[order].tolist(),
                prefixes[order].tolist(),
                indices[order].tolist(),
                strict=True,
            )
        )
        if self.store.dialect == "postgresql":
            raw = self.conn.connection.driver_connection
            copy_sql = "COPY leaves (log_id, epoch, prefix, idx) FROM STDIN"
            with raw.cursor() as cur, cur.copy(copy_sql) as copy:  # type: ignore[union-attr]
                for e, p, i in rows:
                    copy.write_row((self.log_id, e, p, i))
            return
        # The log id inline (an int), so the (epoch, prefix, index) rows are the parameters.
        self._write_rows(
            f"INSERT INTO leaves (log_id, epoch, prefix, idx) VALUES ({int(self.log_id)}, ?, ?, ?)",
            rows,
        )

    def key_events(self, since: int) -> list[KeyEventRow]:
        """Key events at indices >= `since`, in index order, as of this transaction."""
        return _key_events(self.conn, self.log_id, since)

    def commit_batch(self, batch: Batch) -> None:
        """Write a batch: leaves, bundles, tiles, checkpoint, and the head (compare-and-swap).

        Nothing is visible to readers until the surrounding transaction commits; a crash at any
        point before that leaves the previous head, tiles and bundles untouched.
        """
        c, log_id, h = self.conn, self.log_id, batch.new_head
        mark = self._mark
        # Compare-and-swap first: a stale batch fails before it writes anything else.
        # Driver-level SQL, as `lookup_leaves`: these run once per batch, and building them
        # through SQLAlchemy's expression language each time showed in profiles.
        res = c.exec_driver_sql(
            f"UPDATE heads SET size = {mark}, root = {mark}, checkpoint = {mark}"
            f" WHERE log_id = {mark} AND size = {mark}",
            (h.size, h.root, h.checkpoint, log_id, batch.old_size),
        )
        if res.rowcount != 1:
            raise ConflictError(f"log head moved away from size {batch.old_size}")
        if batch.leaf_index_size is not None:
            self.index_leaves(batch.leaves, batch.leaf_index_size)
        elif batch.leaves:
            self._insert_leaves(batch.leaves)
        if batch.statements:
            # The primary key (log, digest) is what keeps one entry per statement should two
            # writers ever sequence the same statement: the second batch fails as a whole.
            self._insert_statements(batch.statements)
        if batch.bundle_parts:
            self._write_rows(
                f'INSERT INTO bundle_parts (log_id, idx, base, "count", data)'
                f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
                [(log_id, i, b, n, d) for i, (b, n, d) in batch.bundle_parts.items()],
            )
        if batch.bundles:
            self._upsert(
                schema.bundles,
                [(log_id, i, n, d) for i, (n, d) in batch.bundles.items()],
                ["log_id", "idx"],
                ["count", "data"],
            )
            # The whole bundle replaces its parts (once per bundle, when it fills).
            self._write_rows(
                f"DELETE FROM bundle_parts WHERE log_id = {mark} AND idx = {mark}",
                [(log_id, i) for i in batch.bundles],
            )
        if batch.tiles:
            self._upsert(
                schema.tiles,
                [(log_id, t.level, t.index, d) for t, d in batch.tiles.items()],
                ["log_id", "level", "idx"],
                ["data"],
            )
        if batch.key_events:
            c.execute(
                schema.key_events.insert(),
                [
                    {
                        "log_id": log_id,
                        "idx": k.index,
                        "statement": k.statement,
                        "signers": b"".join(sorted(k.signers)),
                    }
                    for k in batch.key_events
                ],
            )
        if batch.pending_done:
            self.delete_pending(batch.pending_done)
        c.exec_driver_sql(
            f"INSERT INTO checkpoints (log_id, size, root, checkpoint, created_at)"
            f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            (log_id, h.size, h.root, h.checkpoint, batch.created_at),
        )

    def delete_pending(self, hashes: Sequence[bytes]) -> None:
        """Remove entries from the anonymous log's queue (they are in the log now)."""
        p = schema.pending.c
        for i in range(0, len(hashes), _IN_CHUNK):
            chunk = list(hashes[i : i + _IN_CHUNK])
            self.conn.execute(
                schema.pending.delete().where(p.log_id == self.log_id, p.leaf_hash.in_(chunk))
            )

    def _upsert(
        self, table: Table, rows: list[tuple[Any, ...]], keys: list[str], cols: list[str]
    ) -> None:
        """Insert `rows` (values of `keys` then `cols`), replacing `cols` where the keys exist.

        Driver-level, as `lookup_leaves`: it runs on every batch, and building the statement
        through SQLAlchemy each time showed in profiles of single-envelope writes. The syntax
        is the same on SQLite and PostgreSQL; only the parameter marker differs."""
        mark = self._mark
        names = ", ".join(f'"{c}"' for c in (*keys, *cols))
        marks = ", ".join([mark] * (len(keys) + len(cols)))
        sql = (
            f"INSERT INTO {table.name} ({names}) VALUES ({marks})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f'"{c}" = excluded."{c}"' for c in cols)
        )
        self._write_rows(sql, rows)


def bundle_sql(mark: str) -> str:
    """One statement reading a bundle's `bundles` row (as base -1) and its parts, in order;
    parameters: log id, index, log id, index."""
    return (
        f'SELECT -1, "count", data FROM bundles WHERE log_id = {mark} AND idx = {mark}'
        f' UNION ALL SELECT base, "count", data FROM bundle_parts'
        f" WHERE log_id = {mark} AND idx = {mark} ORDER BY 1"
    )


def assemble_bundle(rows: Iterable[Sequence[Any]]) -> tuple[int, bytes]:
    """A bundle's entry count and bytes from its rows as `bundle_sql` reads them: the whole
    row (base -1), then each part that continues where the bundle so far ends. Bundle
    encodings concatenate (each entry carries its own length), so the parts are joined as
    they are. A part below that end is one the whole row already holds; one beyond it would
    be a gap, and the bundle ends before it."""
    count, chunks = 0, []
    for base, n, data in rows:
        if base < 0:
            count, chunks = int(n), [bytes(data)]
        elif base == count:
            count += int(n)
            chunks.append(bytes(data))
        elif base > count:
            break
    return count, b"".join(chunks)


class _WalCheckpointer:
    """Checkpoints a SQLite database's WAL on a thread with a connection of its own, so that
    the sequencer's commits do not wait for it (sqlite3 releases the GIL while a statement
    runs: the copy runs on another core).

    Woken after each commit of `Store.writer`, it runs a PASSIVE checkpoint (it waits for no
    reader or writer: the writer goes on appending to the WAL meanwhile) when the WAL file is
    longer than `_WAL_CHECKPOINT_PAGES` frames. The file's length says so because the writers
    cut it back to that length (`journal_size_limit`) whenever they start the WAL over.

    A writer starts the WAL over only if it was all in the database file when the writer's
    transaction began, and the writer commits again before a checkpoint of any size is done:
    so once the thread has checkpointed what it saw, the next commit checkpoints the few
    frames committed meanwhile itself (`committed` says so; `Store._wal_catch_up`), once per
    `_WAL_CHECKPOINT_PAGES`. Should the thread fall behind, the writers' own automatic
    checkpoint (`_WAL_BACKSTOP_PAGES`) keeps the WAL bounded.

    Not part of durability: with WAL, a commit is durable once its frames are synced to the
    WAL (synchronous=FULL syncs at every commit), and the database file is only ever updated
    from frames already there. A checkpoint cut short by a crash (kill -9 included) is
    redone from the WAL by whoever opens the database next. The thread's connection syncs as
    the store's do, so the WAL is never started over before the database file holding its
    pages is synced.
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        self.checkpoints = 0  # PASSIVE checkpoints run so far (tests, benchmarks)
        # Set when a checkpoint of the thread's brought the database file up to the WAL it
        # saw: the next commit then checkpoints what was committed meanwhile.
        self._caught_up = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def committed(self) -> bool:
        """A writer committed: check the WAL's length (the thread starts with the first).
        True when the writer is to checkpoint the frames committed during the thread's last
        checkpoint (`Store._wal_catch_up`)."""
        if self._thread is None:
            self._start()
        if not self._wake.is_set():
            self._wake.set()
        if self._caught_up:
            self._caught_up = False
            return True
        return False

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite-wal-checkpoint", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint (idempotent)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            if thread is not threading.current_thread():  # a finalizer may run on it
                thread.join()

    def _run(self) -> None:
        try:
            # mode=rw: the database exists (a writer committed); never create an empty one.
            conn = sqlite3.connect(
                f"file:{quote(self.path)}?mode=rw", uri=True, isolation_level=None
            )
        except sqlite3.Error as e:
            _log.warning("WAL checkpointer of %s did not start: %s", self.path, e)
            return
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            limit = _wal_limit(int(conn.execute("PRAGMA page_size").fetchone()[0]))
            wal = self.path + "-wal"
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    break
                try:
                    due = os.stat(wal).st_size > limit
                except OSError:
                    continue
                if due and self._checkpoint(conn):
                    self._caught_up = True
            self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        """Run a PASSIVE checkpoint; whether it checkpointed every frame it saw."""
        self.checkpoints += 1
        try:
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:  # the backstop still bounds the WAL; try again next time
            _log.warning("WAL checkpoint of %s failed: %s", self.path, e)
            return False
        return bool(busy == 0 and frames == done)


def _find_hash(tile: bytes, leaf_hash: bytes) -> int | None:
    """The position of `leaf_hash` among the hashes of a tile (a match must start on a hash
    boundary: one spanning two hashes is not a leaf)."""
    at = tile.find(leaf_hash)
    while at >= 0:
        if at % _HASH_SIZE == 0:
            return at // _HASH_SIZE
        at = tile.find(leaf_hash, at + 1)
    return None


def _key_events(conn: Connection, log_id: int, since: int) -> list[KeyEventRow]:
    k = schema.key_events.c
    q = (
        select(k.idx, k.statement, k.signers)
        .where(k.log_id == log_id, k.idx >= since)
        .order_by(k.idx)
    )
    return [
        KeyEventRow(
            int(i), bytes(st), frozenset(bytes(sg[j : j + 32]) for j in range(0, len(sg), 32))
        )
        for i, st, sg in conn.execute(q)
    ]


def _read_head(conn: Connection, log_id: int, *, lock: bool) -> Head:
    q = select(schema.heads).where(schema.heads.c.log_id == log_id)
    if lock:
        q = q.with_for_update()
    r = conn.execute(q).first()
    if r is None:
        raise StorageError(f"log {log_id} has no head")
    return Head(int(r.size), bytes(r.root), r.checkpoint)
