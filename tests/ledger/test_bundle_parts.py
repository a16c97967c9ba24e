"""Entry bundles written in parts (`ledger.schema.bundle_parts`, revision 0007): a batch writes
the entries it appends, a full bundle is one row, and every read sees the bundle whole."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select

from attest.tiles import TILE_WIDTH, encode_bundle
from ledger import schema
from ledger.log import Log
from ledger.sequencer import Sequencer
from ledger.storage import Store, assemble_bundle
from tests.ledger.test_leaf_index import entries, integrate, open_log, sequencer
from tests.support import move_schema


def stored_rows(url: str, log_id: int) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]]]:
    """A log's `bundles` rows (index -> count) and parts (index -> [(base, count)])."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            b, p = schema.bundles.c, schema.bundle_parts.c
            whole = conn.execute(select(b.idx, b.count).where(b.log_id == log_id)).all()
            parts = conn.execute(
                select(p.idx, p.base, p.count).where(p.log_id == log_id).order_by(p.idx, p.base)
            ).all()
    finally:
        engine.dispose()
    out: dict[int, list[tuple[int, int]]] = {}
    for i, base, n in parts:
        out.setdefault(int(i), []).append((int(base), int(n)))
    return {int(i): int(n) for i, n in whole}, out


def stored_bytes(url: str, log_id: int) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            total = 0
            for t in (schema.bundles, schema.bundle_parts):
                q = select(func.coalesce(func.sum(func.length(t.c.data)), 0))
                total += int(conn.execute(q.where(t.c.log_id == log_id)).scalar_one())
            return total
    finally:
        engine.dispose()


def check_bundles(log: Log, want: list[bytes]) -> None:
    """Every bundle of the tree reads as the entries `want` holds, at every width."""
    size = len(want)
    for idx in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        got = log.bundle(idx, size)
        assert got == want[idx * TILE_WIDTH : (idx + 1) * TILE_WIDTH], idx
        if len(got) > 1:  # a narrower (older) version of it is its prefix
            assert log.bundle(idx, idx * TILE_WIDTH + len(got) - 1) == got[:-1]


def test_small_batches_append_parts_and_fill_a_bundle_once(store: Store) -> None:
    """Batches of 7: the partial bundle is parts, one per batch, in order; a filled bundle is
    one row with no parts; the stored bytes are each entry's encoding once (the full bundle's
    row replaced its parts), not a partial bundle rewritten per batch."""
    log = open_log(store)
    seq = sequencer(log, batch_size=7, lag=10_000)
    want: list[bytes] = []
    for k in range(43):  # 301 entries: bundle 0 full, bundle 1 at 45
        batch = entries(7, f"b{k}")
        integrate(seq, batch)
        want += batch
        check_bundles(log, want)
    whole, parts = stored_rows(store.url, log.id)
    assert whole == {0: TILE_WIDTH}
    assert set(parts) == {1}
    # The batch that filled bundle 0 (entries 252-258) began bundle 1 with its last 3.
    assert parts[1] == [(0, 3), *((b, 7) for b in range(3, 45, 7))]
    assert stored_bytes(store.url, log.id) == len(encode_bundle(want))
    # A sequencer without the kept edge reads the partial bundle from its parts and goes on.
    fresh = sequencer(Log(store, log.row), batch_size=300, lag=10_000)
    more = entries(250, "fresh")
    integrate(fresh, more)
    want += more
    check_bundles(log, want)
    whole, parts = stored_rows(store.url, log.id)
    assert whole == {0: TILE_WIDTH, 1: TILE_WIDTH} and parts == {2: [(0, 39)]}


def test_migration_joins_the_parts_both_ways(db_url: str) -> None:
    """Down to 0006 a bundle's parts are joined onto its one row; back up, that row (a
    partial one) is the base later parts continue, until the bundle fills."""
    store = Store(db_url)
    store.migrate()
    try:
        log = open_log(store)
        seq = sequencer(log, batch_size=10, lag=10_000)
        want: list[bytes] = []
        for k in range(10):
            want += integrate_batch(seq, entries(10, f"up{k}"))
        move_schema(store, "0006", down=True)
        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                b = schema.bundles.c
                rows = conn.execute(select(b.idx, b.count, b.data)).all()
        finally:
            engine.dispose()
        assert [(int(i), int(n)) for i, n, _ in rows] == [(0, 100)]
        assert bytes(rows[0][2]) == encode_bundle(want)
        store.migrate()
        fresh = sequencer(Log(store, log.row), batch_size=9, lag=10_000)
        for k in range(20):
            want += integrate_batch(fresh, entries(9, f"again{k}"))
        check_bundles(log, want)
        whole, parts = stored_rows(db_url, log.id)
        assert whole == {0: TILE_WIDTH} and sum(n for _, n in parts[1]) == 280 - TILE_WIDTH
    finally:
        store.close()


def integrate_batch(seq: Sequencer, batch: list[bytes]) -> list[bytes]:
    integrate(seq, batch)
    return batch


def test_assembly_skips_what_the_row_holds_and_stops_at_a_gap() -> None:
    a, b, c, d = (encode_bundle([x]) for x in (b"a", b"b", b"c", b"d"))
    assert assemble_bundle([]) == (0, b"")
    assert assemble_bundle([(0, 1, a), (1, 1, b)]) == (2, a + b)
    # A part the whole row already holds is not joined twice.
    assert assemble_bundle([(-1, 2, a + b), (1, 1, b), (2, 1, c)]) == (3, a + b + c)
    # Nothing after a gap: the bundle ends where its parts stop continuing it.
    assert assemble_bundle([(0, 1, a), (2, 1, c), (3, 1, d)]) == (1, a)
