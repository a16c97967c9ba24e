"""One entry per signed statement: the statement-digest index, filled from the stored entries.

Revision ID: 0005
Revises: 0004

A log that sequenced several envelopes of one statement before this revision (the same payload
with other signatures) keeps them all — the log is append-only — and the index names the first:
a later re-post of that statement answers with the first entry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from attest.admission import entry_statement_digest
from attest.tiles import TILE_WIDTH, decode_bundle

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `statements` and fill it from every log's entry bundles."""
    table = op.create_table(
        "statements",
        sa.Column("log_id", sa.Integer, sa.ForeignKey("logs.id"), primary_key=True),
        sa.Column("digest", sa.LargeBinary(32), primary_key=True),
        sa.Column("idx", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    bundles = sa.table("bundles", sa.column("log_id"), sa.column("idx"), sa.column("data"))
    first: dict[tuple[int, bytes], int] = {}
    q = sa.select(bundles.c.log_id, bundles.c.idx, bundles.c.data).order_by(
        bundles.c.log_id, bundles.c.idx
    )
    for log_id, n, data in conn.execute(q):
        for offset, entry in enumerate(decode_bundle(bytes(data))):
            digest = entry_statement_digest(entry)
            if digest is not None:
                first.setdefault((int(log_id), digest), int(n) * TILE_WIDTH + offset)
    rows = [{"log_id": log, "digest": d, "idx": i} for (log, d), i in first.items()]
    for i in range(0, len(rows), 1000):
        op.bulk_insert(table, rows[i : i + 1000])


def downgrade() -> None:
    """Drop `statements`."""
    op.drop_table("statements")
