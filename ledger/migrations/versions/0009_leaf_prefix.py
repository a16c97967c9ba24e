"""The leaf-hash index is keyed by the hash's first 8 bytes.

Revision ID: 0009
Revises: 0008

Before this revision a `leaves` row held the whole 32-byte hash as its key (with SQLite's rowid
beside it, and the key again in a second B-tree). From here on it holds (log, prefix, index),
the prefix being the hash's first 8 bytes as a signed big-endian 64-bit integer
(`ledger.storage.leaf_prefix`), in one B-tree; a lookup confirms each candidate against the
leaf hash in its level-0 tile. The rows are the same entries: only their key changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from attest.tiles import TILE_WIDTH

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_HASH = 32
_CHUNK = 10_000


def _prefix(leaf_hash: bytes) -> int:
    # `ledger.storage.leaf_prefix`, repeated: a migration keeps the meaning it had when written.
    return int.from_bytes(leaf_hash[:8], "big", signed=True)


def upgrade() -> None:
    """Rebuild `leaves` keyed by (log, prefix, index), with the same entries."""
    conn = op.get_bind()
    op.create_table(
        "leaves_by_prefix",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("prefix", sa.BigInteger, primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sqlite_with_rowid=False,
    )
    if conn.dialect.name == "postgresql":
        # The first 8 bytes as a two's-complement bigint: what `_prefix` computes.
        op.execute(
            "INSERT INTO leaves_by_prefix (log_id, prefix, idx) SELECT log_id,"
            " ('x' || encode(substring(leaf_hash from 1 for 8), 'hex'))::bit(64)::bigint, idx"
            " FROM leaves"
        )
    else:
        # Inside SQLite, streamed, in key order: the prefix by a function of this connection.
        raw = conn.connection.dbapi_connection
        raw.create_function("leaf_prefix", 1, _prefix, deterministic=True)  # type: ignore[union-attr]
        op.execute(
            "INSERT INTO leaves_by_prefix (log_id, prefix, idx)"
            " SELECT log_id, leaf_prefix(leaf_hash) AS p, idx FROM leaves ORDER BY log_id, p, idx"
        )
    op.drop_table("leaves")
    op.rename_table("leaves_by_prefix", "leaves")


def downgrade() -> None:
    """Rebuild `leaves` keyed by the whole hash: the hashes of the indexed entries (those below
    each log's watermark) from their level-0 tiles."""
    conn = op.get_bind()
    op.create_table(
        "leaves_by_hash",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("leaf_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column("idx", sa.BigInteger, nullable=False),
    )
    table = sa.table(
        "leaves_by_hash", sa.column("log_id"), sa.column("leaf_hash"), sa.column("idx")
    )
    logs = conn.execute(sa.text("SELECT DISTINCT log_id FROM leaves")).all()
    for (log_id,) in logs:
        indices = sorted(
            int(i)
            for (i,) in conn.execute(
                sa.text("SELECT idx FROM leaves WHERE log_id = :l"), {"l": log_id}
            )
        )
        tiles = {
            int(n): bytes(d)
            for n, d in conn.execute(
                sa.text("SELECT idx, data FROM tiles WHERE log_id = :l AND level = 0"),
                {"l": log_id},
            )
        }
        rows = []
        for index in indices:
            n, at = divmod(index, TILE_WIDTH)
            h = tiles[n][at * _HASH : (at + 1) * _HASH]
            rows.append({"log_id": log_id, "leaf_hash": h, "idx": index})
        for i in range(0, len(rows), _CHUNK):
            op.bulk_insert(table, rows[i : i + _CHUNK])
    op.drop_table("leaves")
    op.rename_table("leaves_by_hash", "leaves")
