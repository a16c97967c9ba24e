"""SQLAlchemy tables of the log. Rows only: no wire models, no signing.

The Merkle tree is stored the way it is served: as C2SP tiles (up to 256 hashes per row) and
entry bundles (up to 256 entries per row; a bundle not yet full may be split in parts), so a
read of `/tile/...` is one primary-key lookup.
Alembic migrations in `ledger/migrations/versions/` create and evolve these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

logs = Table(
    "logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("origin", String(255), nullable=False, unique=True),
    Column("partition", String(32), nullable=False),
    Column("vkey", Text, nullable=False),
)

# The head of each log. Locking this row is the sequencer lock: one writer per log at a time,
# across every process that shares the database.
heads = Table(
    "heads",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("checkpoint", Text, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("size", BigInteger, primary_key=True),
    Column("root", LargeBinary(32), nullable=False),
    Column("checkpoint", Text, nullable=False),
    # Unix seconds at which the sequencer signed it; kept for operators, never signed.
    Column("created_at", BigInteger, nullable=False),
)

tiles = Table(
    "tiles",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    # The widest version written so far; narrower partial tiles are its prefixes.
    Column("data", LargeBinary, nullable=False),
)

bundles = Table(
    "bundles",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("count", SmallInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# The entries appended to a bundle that is not full yet, one row per batch that appended them
# (`base`: how many entries the bundle held before), so that a small batch writes its own
# entries rather than the whole partial bundle again. A bundle reads as its `bundles` row, if
# any, followed by its parts from that row's count on (`ledger.storage.assemble_bundle`); once
# full it is written whole to `bundles` and its parts deleted, in the same transaction.
bundle_parts = Table(
    "bundle_parts",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("base", SmallInteger, primary_key=True),
    Column("count", SmallInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# Leaf-hash index: deduplication and inclusion proofs by hash (up to `leaf_index_heads`). Keyed
# by the hash's first 8 bytes (`ledger.storage.leaf_prefix`), not the whole hash: the index
# takes about a fifth of the bytes (262,144 entries on SQLite: 24.1 -> 5.2 MB), and a flush,
# which touches nearly every page of it (a B-tree on random keys), rewrites that many fewer.
# A prefix names candidates only: each is confirmed against the leaf hash its level-0 tile
# holds at `idx`, so two hashes sharing a prefix (by chance, or ground for 2^32 work) cost a
# tile read, never a wrong answer. One B-tree (no rowid): the key is the row.
# This key does not refuse a second row of one hash (the whole-hash key did, below the
# watermark only): one entry per leaf hash rests on the sequencer's deduplication under the
# head lock, as it always has for the tail above the watermark. `statements` keeps its
# whole-digest key, which refuses a second entry of one statement (and audit nodes check one
# entry per statement).
# The key leads with the entry's epoch (`idx >> LEAF_EPOCH_BITS`): a flush's rows all land in
# the newest epoch or two, so it touches the pages of at most 2^20 entries' rows, however long
# the log. Keyed by prefix alone, every flush touched nearly every page of the whole index and
# its cost grew with the log (at 2,000,000 entries a flush took 3-4 times what it took at
# 200,000). A lookup seeks the prefix in each epoch below the watermark: one B-tree seek per
# 2^20 entries of the log.
leaves = Table(
    "leaves",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("epoch", BigInteger, primary_key=True),
    Column("prefix", BigInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    sqlite_with_rowid=False,
)
# Entries per epoch of `leaves`, as a power of two. Stored rows depend on it: changing it
# takes a migration that rewrites every row's epoch.
LEAF_EPOCH_BITS = 20

# How far each log's leaf-hash index reaches: entries below `size` have their row in `leaves`.
# The index lags the tree (the sequencer adds rows in sorted bulk flushes, not per batch); the
# leaf hashes of entries in [size, tree size) are the level-0 tile hashes there, so a lookup
# that misses `leaves` reads them from the tiles (`ledger.storage.Store.leaf_index`). A log
# without a row (none flushed since it was created) has its watermark at 0.
leaf_index_heads = Table(
    "leaf_index_heads",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("size", BigInteger, nullable=False),
)

# Statement-digest index: one entry per signed statement, whatever its signatures. The digest
# is SHA-256 of the DSSE PAE bytes (`attest.admission.statement_digest`). It holds the entries
# below the leaf-hash index's watermark (`leaf_index_heads`) and is flushed with it; the
# sequencer finds the statements above it in its tail (`ledger.sequencer._LeafTail`, rebuilt
# from their bundles). The primary key refuses a second row of one statement.
statements = Table(
    "statements",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("digest", LargeBinary(32), primary_key=True),
    Column("idx", BigInteger, nullable=False),
)

# Key events of the evidence log, in index order: the key chain is rebuilt from these rows
# (replayed with `attest.keychain`) when a process starts or another process has sequenced.
key_events = Table(
    "key_events",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("statement", LargeBinary, nullable=False),
    # The raw public keys whose signatures verified, concatenated (32 bytes each).
    Column("signers", LargeBinary, nullable=False),
)

# Anonymous log: receipted entries waiting for the next batch. Only the hour is kept.
pending = Table(
    "pending",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("leaf_hash", LargeBinary(32), primary_key=True),
    Column("entry", LargeBinary, nullable=False),
    Column("received_hour", BigInteger, nullable=False),
)

# Redeemed Privacy Pass tokens. The primary key is what refuses a double spend, also under
# concurrency; nothing here refers to an entry.
spent_tokens = Table(
    "spent_tokens",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("token_key_id", LargeBinary(32), primary_key=True),
    Column("nonce", LargeBinary(32), primary_key=True),
)

# The read index: what each statement is about, so a reader can ask "the probe records of model
# M, version V" without scanning the log. Derived from the entries (any process can rebuild it),
# written after sequencing, never read by the writer path.
statement_index = Table(
    "statement_index",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("predicate_type", Text, nullable=False),
    Column("model", Text, nullable=True),
    Column("version", Text, nullable=True),
    Column("weights_sha256", String(64), nullable=True),
    Column("category", Text, nullable=True),
    Column("tier", Text, nullable=True),
    # A continuity statement's predecessor version (its `version` is the successor's).
    Column("predecessor_version", Text, nullable=True),
)

# How far each log's read index has been built: entries below `size` are in `statement_index`.
index_heads = Table(
    "index_heads",
    metadata,
    Column("log_id", Integer, ForeignKey("logs.id"), primary_key=True),
    Column("size", BigInteger, nullable=False),
)
