"""Initial schema: logs, heads, checkpoint history, tiles, entry bundles, leaf-hash index.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables of `ledger.schema` as of revision 0001."""
    op.create_table(
        "logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("origin", sa.String(255), nullable=False, unique=True),
        sa.Column("partition", sa.String(32), nullable=False),
        sa.Column("vkey", sa.Text, nullable=False),
    )
    op.create_table(
        "heads",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("size", sa.BigInteger, primary_key=True),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tiles",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "bundles",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.SmallInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "leaves",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("leaf_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column("idx", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop every table of revision 0001."""
    for table in ("leaves", "bundles", "tiles", "checkpoints", "heads", "logs"):
        op.drop_table(table)
