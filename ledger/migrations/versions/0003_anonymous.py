"""Anonymous log: entries waiting for their batch, and spent tokens.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `pending` and `spent_tokens`."""
    op.create_table(
        "pending",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("leaf_hash", sa.LargeBinary(32), primary_key=True),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("received_hour", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "spent_tokens",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("token_key_id", sa.LargeBinary(32), primary_key=True),
        sa.Column("nonce", sa.LargeBinary(32), primary_key=True),
    )


def downgrade() -> None:
    """Drop `pending` and `spent_tokens`."""
    op.drop_table("spent_tokens")
    op.drop_table("pending")
