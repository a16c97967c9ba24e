"""The read index: statements by predicate type, model, version, category and tier.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `statement_index` and `index_heads`."""
    op.create_table(
        "statement_index",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("predicate_type", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=True),
        sa.Column("version", sa.Text, nullable=True),
        sa.Column("weights_sha256", sa.String(64), nullable=True),
        sa.Column("category", sa.Text, nullable=True),
        sa.Column("tier", sa.Text, nullable=True),
        sa.Column("predecessor_version", sa.Text, nullable=True),
    )
    op.create_index(
        "statement_index_by_model", "statement_index", ["log_id", "model", "version", "idx"]
    )
    op.create_table(
        "index_heads",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop `index_heads` and `statement_index`."""
    op.drop_table("index_heads")
    op.drop_index("statement_index_by_model", table_name="statement_index")
    op.drop_table("statement_index")
