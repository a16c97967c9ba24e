"""The statement-digest index lags the tree with the leaf-hash index (`ledger.schema.statements`,
revision 0008), on SQLite and PostgreSQL: full batches write no `statements` rows, a flush
writes those of the whole tail, and one entry per statement holds on both sides of the
watermark, in a fresh process, and across two processes sharing the database."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from attest.admission import statement_digest
from attest.dsse import Envelope, sign_envelope
from ledger.log import Log
from ledger.sequencer import Sequenced
from ledger.storage import Store
from tests.attest.test_keychain import Signer, key
from tests.ledger.test_leaf_index import integrate, open_log, sequencer
from tests.support import move_schema

ONE, TWO = key("one"), key("two")


def envelopes(n: int, tag: str, signer: Signer = ONE) -> list[bytes]:
    """Envelopes of `n` statements; another `signer` gives other envelopes (other leaves) of
    the same statements."""
    return [
        sign_envelope("application/x-test", f"{tag}-{i}".encode(), [signer]).canonical_bytes()
        for i in range(n)
    ]


def digest(entry: bytes) -> bytes:
    return statement_digest(Envelope.from_json(entry))


def statement_rows(url: str, log_id: int) -> dict[bytes, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            q = sa.text("SELECT digest, idx FROM statements WHERE log_id = :l")
            rows = conn.execute(q, {"l": log_id}).all()
    finally:
        engine.dispose()
    return {bytes(d): int(i) for d, i in rows}


def indices(results: Sequence[Sequenced]) -> list[int]:
    return [r.index for r in results]


def test_statements_wait_for_the_flush_and_stay_one_entry_each(store: Store) -> None:
    log = open_log(store)
    seq = sequencer(log, batch_size=16, lag=40)
    a = envelopes(48, "a")
    for i in range(0, 48, 16):
        integrate(seq, a[i : i + 16])
    # The third full batch reached the bound: every statement so far has its row.
    assert store.leaf_index_size(log.id) == 48
    assert statement_rows(store.url, log.id) == {digest(e): i for i, e in enumerate(a)}
    b = envelopes(32, "b")
    integrate(seq, b[:16])
    integrate(seq, b[16:])
    assert store.leaf_index_size(log.id) == 48
    assert len(statement_rows(store.url, log.id)) == 48  # full batches wrote none
    # Other envelopes (other leaves) of statements below and above the watermark, and one
    # repeated within the batch: each answers with its statement's first entry.
    again = [*envelopes(4, "a", TWO), *envelopes(4, "b", TWO), *envelopes(8, "c")]
    again[-1] = again[-2]
    res = integrate(seq, again)
    assert indices(res[:8]) == [0, 1, 2, 3, 48, 49, 50, 51]
    assert all(r.duplicate for r in res[:8])
    assert indices(res[8:]) == [*range(80, 87), 86]
    # A fresh process rebuilds the tail's statements from its bundles.
    fresh = sequencer(Log(store, log.row), batch_size=16, lag=40)
    res = integrate(fresh, [*envelopes(8, "b", TWO)[4:], *envelopes(7, "c", TWO), b[31]])
    assert indices(res) == [52, 53, 54, 55, *range(80, 87), 79]
    assert all(r.duplicate for r in res)
    # A short batch flushes: the rows of the whole tail, each at its first entry.
    integrate(fresh, envelopes(3, "d"))
    size = log.head().size
    assert size == 90 and store.leaf_index_size(log.id) == size
    firsts = [*a, *b, *envelopes(7, "c"), *envelopes(3, "d")]
    want = {digest(e): i for i, e in enumerate(firsts)}
    assert statement_rows(store.url, log.id) == want


def test_two_processes_share_the_statements_tail(db_url: str) -> None:
    s1, s2 = Store(db_url), Store(db_url)
    s1.migrate()
    try:
        log1, log2 = open_log(s1), open_log(s2)
        seq1 = sequencer(log1, batch_size=16, lag=1000)
        seq2 = sequencer(log2, batch_size=16, lag=1000)
        integrate(seq2, envelopes(16, "first"))  # seq2 keeps a tail of its own
        a = envelopes(32, "a")
        integrate(seq1, a[:16])
        integrate(seq1, a[16:])
        assert statement_rows(db_url, log1.id) == {}
        # seq2's kept tail is behind the stored tree: extended from seq1's bundles.
        res = integrate(seq2, [*envelopes(8, "a", TWO), *envelopes(8, "b")])
        assert indices(res) == [*range(16, 24), *range(48, 56)]
        assert [r.duplicate for r in res] == [True] * 8 + [False] * 8
        assert seq1.flush_leaf_index() == 56
        want = [*envelopes(16, "first"), *a, *envelopes(8, "b")]
        assert statement_rows(db_url, log1.id) == {digest(e): i for i, e in enumerate(want)}
        # seq2's tail starts below the watermark now: pruned, its rows not written again.
        res = integrate(seq2, [*envelopes(8, "b", TWO), *envelopes(8, "c")])
        assert indices(res) == [*range(48, 56), *range(56, 64)]
        assert seq2.flush_leaf_index() == 8
        want += envelopes(8, "c")
        assert statement_rows(db_url, log1.id) == {digest(e): i for i, e in enumerate(want)}
    finally:
        s1.close()
        s2.close()


def test_migration_keeps_rows_below_the_watermark_only(db_url: str) -> None:
    store = Store(db_url)
    store.migrate()
    try:
        log = open_log(store)
        seq = sequencer(log, batch_size=16, lag=40)
        a = envelopes(80, "a")
        for i in range(0, 80, 16):
            integrate(seq, a[i : i + 16])
        assert store.leaf_index_size(log.id) == 48
        below = {digest(e): i for i, e in enumerate(a[:48])}
        assert statement_rows(db_url, log.id) == below
        # Down: a row per statement, as revisions before 0008 keep them.
        move_schema(store, "0007", down=True)
        assert statement_rows(db_url, log.id) == {digest(e): i for i, e in enumerate(a)}
        # Up again: the rows above the watermark go, and the tail finds those statements.
        move_schema(store, "head")
        assert statement_rows(db_url, log.id) == below
        fresh = sequencer(Log(store, log.row), batch_size=16, lag=40)
        res = integrate(fresh, envelopes(56, "a", TWO)[40:56])
        assert indices(res) == list(range(40, 56)) and all(r.duplicate for r in res)
    finally:
        store.close()
