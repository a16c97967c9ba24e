"""Entry bundles not yet full are written in parts: `bundle_parts`.

Revision ID: 0007
Revises: 0006

A batch used to rewrite its log's partial entry bundle whole (up to 256 entries, hundreds of
KiB), so a small batch wrote and synced many times the bytes of its own entries. From here on
it writes only the entries it appends, as one `bundle_parts` row, and the bundle is written
whole to `bundles` once full. Existing `bundles` rows, partial ones included, stay as they are:
a bundle reads as its `bundles` row followed by its parts from that row's count on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `bundle_parts`."""
    op.create_table(
        "bundle_parts",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("base", sa.SmallInteger, primary_key=True),
        sa.Column("count", sa.SmallInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    """Join every bundle's parts onto its `bundles` row (earlier revisions read that row
    alone), then drop `bundle_parts`."""
    from ledger.storage import assemble_bundle

    conn = op.get_bind()
    keys = conn.execute(sa.text("SELECT DISTINCT log_id, idx FROM bundle_parts")).all()
    for log_id, idx in keys:
        rows = conn.execute(
            sa.text(
                'SELECT -1, "count", data FROM bundles WHERE log_id = :l AND idx = :i'
                ' UNION ALL SELECT base, "count", data FROM bundle_parts'
                " WHERE log_id = :l AND idx = :i ORDER BY 1"
            ),
            {"l": log_id, "i": idx},
        ).all()
        count, data = assemble_bundle(rows)
        conn.execute(
            sa.text("DELETE FROM bundles WHERE log_id = :l AND idx = :i"), {"l": log_id, "i": idx}
        )
        conn.execute(
            sa.text('INSERT INTO bundles (log_id, idx, "count", data) VALUES (:l, :i, :n, :d)'),
            {"l": log_id, "i": idx, "n": count, "d": data},
        )
    op.drop_table("bundle_parts")
