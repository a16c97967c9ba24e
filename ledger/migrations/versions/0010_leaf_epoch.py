"""The leaf-hash index is keyed by epoch first.

Revision ID: 0010
Revises: 0009

Before this revision a `leaves` row was keyed by (log, prefix, index). From here on it is keyed
by (log, epoch, prefix, index), the epoch being the index shifted right by 20 bits
(`ledger.schema.LEAF_EPOCH_BITS`): a flush then writes into the newest epochs' part of the
B-tree only, however long the log is. The rows are the same entries: only their key changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# `ledger.schema.LEAF_EPOCH_BITS`, repeated: a migration keeps the meaning it had when written.
_EPOCH_BITS = 20


def upgrade() -> None:
    """Rebuild `leaves` keyed by (log, epoch, prefix, index), with the same entries."""
    op.create_table(
        "leaves_by_epoch",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("epoch", sa.BigInteger, primary_key=True),
        sa.Column("prefix", sa.BigInteger, primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sqlite_with_rowid=False,
    )
    # In key order, so the new B-tree is written from left to right.
    op.execute(
        "INSERT INTO leaves_by_epoch (log_id, epoch, prefix, idx)"
        f" SELECT log_id, idx >> {_EPOCH_BITS} AS e, prefix, idx FROM leaves"
        " ORDER BY log_id, e, prefix, idx"
    )
    op.drop_table("leaves")
    op.rename_table("leaves_by_epoch", "leaves")


def downgrade() -> None:
    """Rebuild `leaves` keyed by (log, prefix, index), with the same entries."""
    op.create_table(
        "leaves_by_prefix",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("prefix", sa.BigInteger, primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO leaves_by_prefix (log_id, prefix, idx)"
        " SELECT log_id, prefix, idx FROM leaves ORDER BY log_id, prefix, idx"
    )
    op.drop_table("leaves")
    op.rename_table("leaves_by_prefix", "leaves")
