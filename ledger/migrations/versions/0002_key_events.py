"""Key events of the evidence log, for rebuilding its key chain.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `key_events`."""
    op.create_table(
        "key_events",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("statement", sa.LargeBinary, nullable=False),
        sa.Column("signers", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    """Drop `key_events`."""
    op.drop_table("key_events")
