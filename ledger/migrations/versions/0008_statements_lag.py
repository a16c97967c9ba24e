"""The statement-digest index lags the tree with the leaf-hash index, under its watermark.

Revision ID: 0008
Revises: 0007

Before this revision every batch wrote its entries' `statements` rows, one random-keyed B-tree
insert each. From here on they are written when the leaf-hash index is flushed, sorted, and hold
exactly the entries below `leaf_index_heads`; the sequencer finds the statements above it in its
tail, rebuilt from their bundles. So the rows an earlier revision wrote above the watermark go:
a flush writes them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from attest.admission import entry_statement_digest
from attest.tiles import TILE_WIDTH, decode_bundle

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Each log's watermark: 0 for a log whose leaf-hash index was never flushed (it has no row).
_MARKS = (
    "SELECT h.log_id, COALESCE(w.size, 0), h.size FROM heads h"
    " LEFT JOIN leaf_index_heads w ON w.log_id = h.log_id"
)


def upgrade() -> None:
    """Delete the `statements` rows at or above each log's watermark."""
    conn = op.get_bind()
    for log_id, mark, _size in conn.execute(sa.text(_MARKS)).all():
        conn.execute(
            sa.text("DELETE FROM statements WHERE log_id = :l AND idx >= :m"),
            {"l": log_id, "m": mark},
        )


def downgrade() -> None:
    """Write the `statements` rows of the entries above each watermark (earlier revisions
    expect a row per statement as soon as its entry is sequenced), from the entry bundles and
    their parts: the first entry of a statement, unless a row below names an earlier one."""
    from ledger.storage import assemble_bundle

    conn = op.get_bind()
    table = sa.table("statements", sa.column("log_id"), sa.column("digest"), sa.column("idx"))
    for log_id, mark, size in conn.execute(sa.text(_MARKS)).all():
        first: dict[bytes, int] = {}
        for n in range(int(mark) // TILE_WIDTH, (int(size) + TILE_WIDTH - 1) // TILE_WIDTH):
            rows = conn.execute(
                sa.text(
                    'SELECT -1, "count", data FROM bundles WHERE log_id = :l AND idx = :i'
                    ' UNION ALL SELECT base, "count", data FROM bundle_parts'
                    " WHERE log_id = :l AND idx = :i ORDER BY 1"
                ),
                {"l": log_id, "i": n},
            ).all()
            for offset, entry in enumerate(decode_bundle(assemble_bundle(rows)[1])):
                index = n * TILE_WIDTH + offset
                digest = entry_statement_digest(entry)
                if int(mark) <= index < int(size) and digest is not None:
                    first.setdefault(digest, index)
        held = conn.execute(
            sa.text("SELECT digest FROM statements WHERE log_id = :l"), {"l": log_id}
        ).all()
        for (digest,) in held:
            first.pop(bytes(digest), None)
        rows_out = [{"log_id": log_id, "digest": d, "idx": i} for d, i in first.items()]
        for i in range(0, len(rows_out), 1000):
            op.bulk_insert(table, rows_out[i : i + 1000])
