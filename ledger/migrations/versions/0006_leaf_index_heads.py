"""The leaf-hash index lags the tree: a per-log watermark of the entries it holds.

Revision ID: 0006
Revises: 0005

Before this revision every batch wrote its entries' `leaves` rows, so every existing log starts
with its watermark at its tree size. From here on the sequencer adds `leaves` rows in sorted bulk
flushes, and the entries above the watermark are found through their level-0 tiles.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from attest.tiles import TILE_WIDTH

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_HASH = 32


def upgrade() -> None:
    """Create `leaf_index_heads`, each log's watermark at its tree size."""
    op.create_table(
        "leaf_index_heads",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO leaf_index_heads (log_id, size) SELECT log_id, size FROM heads")


def downgrade() -> None:
    """Write the `leaves` rows of every entry above the watermark (earlier revisions expect a
    row per entry), from the level-0 tiles, then drop `leaf_index_heads`."""
    conn = op.get_bind()
    marks = conn.execute(
        sa.text(
            # A log without a row was never flushed: its watermark is 0.
            "SELECT h.log_id, COALESCE(w.size, 0), h.size FROM heads h"
            " LEFT JOIN leaf_index_heads w ON w.log_id = h.log_id"
        )
    ).all()
    leaves = sa.table("leaves", sa.column("log_id"), sa.column("leaf_hash"), sa.column("idx"))
    for log_id, mark, size in marks:
        tiles = conn.execute(
            sa.text(
                "SELECT idx, data FROM tiles WHERE log_id = :log AND level = 0 AND idx >= :first"
            ),
            {"log": log_id, "first": int(mark) // TILE_WIDTH},
        ).all()
        rows = []
        for n, data in tiles:
            for offset in range(len(data) // _HASH):
                index = int(n) * TILE_WIDTH + offset
                if int(mark) <= index < int(size):
                    h = bytes(data[offset * _HASH : (offset + 1) * _HASH])
                    rows.append({"log_id": log_id, "leaf_hash": h, "idx": index})
        for i in range(0, len(rows), 1000):
            op.bulk_insert(leaves, rows[i : i + 1000])
    op.drop_table("leaf_index_heads")
