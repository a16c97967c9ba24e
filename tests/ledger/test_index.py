"""The read index (`ledger.index`) on SQLite and PostgreSQL, and its route `GET /logs/{name}/index`.

The index is derived from the entries: every test states, independently of `describe`, which
row each entry it logs must get, and checks the index against that. It is built lazily, by the
first read that finds it behind the head, one entry bundle at a time; two readers building it at
once must leave exactly one row per entry (the compare-and-swap of `Store.extend_index`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from attest import merkle
from attest.dsse import sign_envelope
from attest.keys import generate_private_key, verifier_key
from attest.note import Ed25519NoteSigner
from attest.predicates import (
    CONTINUITY,
    EMOTION_CALIBRATION,
    FIELD_REPORT,
    KEY_EVENT,
    PROBE_RECORD,
    AnyPredicate,
    BlobRef,
    CheckpointRef,
    ContinuityStatement,
    FieldReport,
    KeyEvent,
    LogEntryRef,
    ModelId,
    ModelRef,
)
from attest.statement import sign_statement
from attest.tiles import TILE_WIDTH
from clients.probe.records import calibration_predicate, probe_item
from ledger import index
from ledger.api import create_app
from ledger.config import init_data_dir
from ledger.index import UNKNOWN, catch_up, describe, query, short_type
from ledger.log import Log
from ledger.sequencer import Sequencer, signed_head
from ledger.server import LedgerServer
from ledger.storage import IndexRow, Store
from tests.support import PROBE_CATEGORY, model_weights, probe_header

ORIGIN = "index.test/logs/evidence"
EMPTY = CheckpointRef(origin=ORIGIN, size=0, root=hashlib.sha256().hexdigest())
SIGNERS = [("tester", generate_private_key())]
ISSUED = 1_700_000_000
SIZE = 300  # more than one entry bundle: 256 + 44


# -- statements, and the row each must get ----------------------------------------------------


def entry(pred: AnyPredicate) -> bytes:
    """The leaf bytes of `pred` signed as a statement (what the evidence log stores)."""
    return sign_statement(pred, SIGNERS).canonical_bytes()


def probe_record(model: str, version: str, tier: str, run: str) -> tuple[bytes, IndexRow]:
    header = dataclasses.replace(probe_header(model, version, tier, ORIGIN), run_id=run)
    item = probe_item("x", "direct", "ok", refused=False, transfer=0.0, emotions={})
    row = IndexRow(
        0, "probe-record", model, version, model_weights(model, version), PROBE_CATEGORY, tier
    )
    return entry(header.record([item])), row


def calibration(model: str, version: str, layer: int) -> tuple[bytes, IndexRow]:
    pred = calibration_predicate(
        model=ModelRef(name=model, version=version, weights_sha256=model_weights(model, version)),
        layer=layer,
        token_rule="answer",
        vectors=BlobRef(sha256=hashlib.sha256(b"vectors").hexdigest(), size=7),
        held_out_scores={"calm": 0.8},
        seen_checkpoint=EMPTY,
        issued_at=ISSUED,
    )
    row = IndexRow(0, "emotion-calibration", model, version, model_weights(model, version))
    return entry(pred), row


def continuity(model: str, before: str, after: str, at: int) -> tuple[bytes, IndexRow]:
    def ref(v: str) -> ModelRef:
        return ModelRef(name=model, version=v, weights_sha256=model_weights(model, v))

    def cite(i: int) -> LogEntryRef:
        return LogEntryRef(origin=ORIGIN, index=i, leaf_hash=hashlib.sha256().hexdigest())

    pred = ContinuityStatement(
        seen_checkpoint=EMPTY,
        issued_at=at,
        predecessor=ref(before),
        successor=ref(after),
        predecessor_records=(cite(0),),
        successor_records=(cite(1),),
        diff=(),
    )
    row = IndexRow(
        0, "continuity", model, after, model_weights(model, after), predecessor_version=before
    )
    return entry(pred), row


def field_report(
    text: str,
    model: str = "m",
    version: str = "1",
    category: str = "grief",
    tier: str = "anonymous",
) -> tuple[bytes, IndexRow]:
    pred = FieldReport(
        seen_checkpoint=EMPTY,
        issued_at=ISSUED,
        model=ModelId(name=model, version=version),
        category=category,
        tier=tier,  # type: ignore[arg-type]  # validated by the model
        text=text,
        credential_tier="medical" if tier == "attested" else None,
    )
    return entry(pred), IndexRow(0, "field-report", model, version, None, category, tier)


def key_event() -> tuple[bytes, IndexRow]:
    key = verifier_key("worker", generate_private_key().public_key())
    pred = KeyEvent(
        seen_checkpoint=EMPTY, issued_at=ISSUED, action="register", role="worker", key=key
    )
    return entry(pred), IndexRow(0, "key-event")


def corpus(n: int, start: int = 0) -> tuple[list[bytes], list[IndexRow]]:
    """`n` distinct entries of every kind (mostly cheap field reports), with their rows,
    for indices `start`, `start + 1`, ..."""
    entries, rows = [], []
    for i in range(start, start + n):
        k = i % 50
        if k == 7:
            data, row = probe_record(
                "alpha", f"v{i // 50 % 2 + 1}", ("anonymous", "medical")[i % 3 % 2], f"r{i}"
            )
        elif k == 8:
            data, row = continuity("alpha", "v1", "v2", ISSUED + i)
        elif k == 9:
            data, row = calibration("alpha", "v1", i)
        elif k == 10:
            data, row = key_event()
        elif k == 11:
            data, row = f"not a statement {i}".encode(), IndexRow(0, UNKNOWN)
        else:
            data, row = field_report(
                f"report {i}",
                model=("beta", "alpha")[i % 2],
                version=f"v{i % 3}",
                category="fraud" if i % 5 == 0 else "grief",
                tier="attested" if i % 7 == 0 else "anonymous",
            )
        entries.append(data)
        rows.append(dataclasses.replace(row, idx=i))
    return entries, rows


def matching(rows: Sequence[IndexRow], where: Mapping[str, str]) -> list[IndexRow]:
    """The rows whose fields equal `where` (a type given by its short name)."""
    return [r for r in rows if all(getattr(r, k) == v for k, v in where.items())]


# -- a log on each backend --------------------------------------------------------------------


def new_log(store: Store) -> tuple[Log, Sequencer]:
    signer = Ed25519NoteSigner(ORIGIN, generate_private_key())
    empty = signed_head(ORIGIN, 0, merkle.EMPTY_ROOT, signer)
    log = Log(store, store.create_log("evidence", ORIGIN, "evidence", signer.vkey, empty))
    return log, Sequencer(log, signer, clock=lambda: ISSUED)


def sequence(seq: Sequencer, entries: Sequence[bytes]) -> None:
    results = seq.integrate(entries)
    start = seq.log.head().size - len(entries)
    assert [getattr(r, "index", None) for r in results] == list(range(start, start + len(entries)))


@dataclasses.dataclass
class Spy:
    """Records every `extend_index` call on a store: (old size, new size, rows, swapped)."""

    calls: list[tuple[int, int, int, bool]] = dataclasses.field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
        real = store.extend_index

        def extend(log_id: int, old: int, new: int, rows: Sequence[IndexRow]) -> bool:
            ok = real(log_id, old, new, rows)
            self.calls.append((old, new, len(rows), ok))
            return ok

        monkeypatch.setattr(store, "extend_index", extend)


# -- describe ---------------------------------------------------------------------------------


def test_describe_a_probe_record() -> None:
    data, want = probe_record("m", "v2", "medical", "run")
    assert describe(5, data) == dataclasses.replace(want, idx=5)
    assert want.category == PROBE_CATEGORY and want.weights_sha256 == model_weights("m", "v2")


def test_describe_a_calibration() -> None:
    data, want = calibration("m", "v1", 12)
    got = describe(0, data)
    assert got == want
    assert (got.category, got.tier, got.predecessor_version) == (None, None, None)


def test_describe_a_continuity_statement() -> None:
    """A succession is indexed under its successor, and names the predecessor's version."""
    data, want = continuity("m", "v1", "v2", ISSUED)
    got = describe(3, data)
    assert got == dataclasses.replace(want, idx=3)
    assert (got.model, got.version, got.predecessor_version) == ("m", "v2", "v1")


def test_describe_a_field_report() -> None:
    data, want = field_report("hello", model="m", version="7", category="fraud", tier="attested")
    got = describe(9, data)
    assert got == dataclasses.replace(want, idx=9)
    assert got.weights_sha256 is None, "a field report names no weights"


def test_describe_another_statement_by_type_only() -> None:
    data, want = key_event()
    assert describe(1, data) == dataclasses.replace(want, idx=1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'{"payload": 1}',
        b'{"a":' * 1000,
        sign_envelope("text/plain", b"hello", SIGNERS).canonical_bytes(),
        sign_envelope("application/vnd.in-toto+json", b"{}", SIGNERS).canonical_bytes(),
    ],
    ids=[
        "empty",
        "text",
        "not-utf8",
        "array",
        "null",
        "bad-payload",
        "deep",
        "plain-envelope",
        "empty-statement",
    ],
)
def test_describe_a_non_statement_as_unknown(data: bytes) -> None:
    assert describe(4, data) == IndexRow(4, UNKNOWN)


def test_short_type() -> None:
    assert short_type(PROBE_RECORD) == "probe-record"
    assert short_type(CONTINUITY) == "continuity"
    assert short_type(EMOTION_CALIBRATION) == "emotion-calibration"
    assert short_type(FIELD_REPORT) == "field-report"
    assert short_type(KEY_EVENT) == "key-event"
    assert short_type("probe-record") == "probe-record"
    assert short_type("https://example.com/other/v1") == "https://example.com/other/v1"


# -- building it ------------------------------------------------------------------------------


def test_catches_up_lazily_bundle_by_bundle(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    log, seq = new_log(store)
    spy = Spy()
    spy.install(monkeypatch, store)
    entries, rows = corpus(100)
    sequence(seq, entries)
    assert store.index_size(log.id) == 0, "sequencing does not build the index"
    assert catch_up(log) == 100
    assert spy.calls == [(0, 100, 100, True)]

    more, more_rows = corpus(SIZE - 100, start=100)
    sequence(seq, more)
    rows += more_rows
    assert store.index_size(log.id) == 100, "still behind until someone reads"
    size, got = query(log, {})
    assert size == SIZE == store.index_size(log.id)
    # The rest of the first bundle, then the partial second one: one bundle read each.
    assert spy.calls[1:] == [
        (100, TILE_WIDTH, TILE_WIDTH - 100, True),
        (TILE_WIDTH, SIZE, SIZE - TILE_WIDTH, True),
    ]
    assert got == rows
    assert got == [describe(i, log.entry(i)) for i in range(SIZE)]

    assert catch_up(log) == SIZE
    assert len(spy.calls) == 3, "an index at the head writes nothing"


def test_catches_up_from_empty_across_bundles(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, seq = new_log(store)
    spy = Spy()
    spy.install(monkeypatch, store)
    assert query(log, {}) == (0, []), "an empty log has an empty index"
    entries, rows = corpus(2 * TILE_WIDTH + 3)
    sequence(seq, entries)
    size, got = query(log, {})
    assert size == 2 * TILE_WIDTH + 3 and got == rows
    assert [(old, new) for old, new, _, _ in spy.calls] == [
        (0, TILE_WIDTH),
        (TILE_WIDTH, 2 * TILE_WIDTH),
        (2 * TILE_WIDTH, 2 * TILE_WIDTH + 3),
    ]


@pytest.fixture
def indexed(store: Store) -> tuple[Log, list[IndexRow]]:
    """A log of `SIZE` entries of every kind, and the rows its index must hold."""
    log, seq = new_log(store)
    entries, rows = corpus(SIZE)
    sequence(seq, entries)
    return log, rows


FILTERS: list[dict[str, str]] = [
    {},
    {"model": "alpha"},
    {"model": "beta"},
    {"model": "alpha", "version": "v2"},
    {"model": "beta", "version": "v0"},
    {"category": "fraud"},
    {"category": PROBE_CATEGORY},
    {"tier": "attested"},
    {"tier": "medical"},
    {"model": "beta", "category": "fraud", "tier": "attested"},
    {"predicate_type": "probe-record"},
    {"predicate_type": "continuity"},
    {"predicate_type": "emotion-calibration"},
    {"predicate_type": "key-event"},
    {"predicate_type": UNKNOWN},
    {"predicate_type": "field-report", "model": "alpha", "tier": "attested"},
    {"predicate_type": "continuity", "model": "alpha", "version": "v2"},
    {"model": "nobody"},
]


@pytest.mark.parametrize("where", FILTERS, ids=lambda w: ",".join(f"{k}={v}" for k, v in w.items()))
def test_filters(indexed: tuple[Log, list[IndexRow]], where: dict[str, str]) -> None:
    log, rows = indexed
    size, got = query(log, where)
    assert size == SIZE
    assert got == matching(rows, where)
    if where and where != {"model": "nobody"}:
        assert 0 < len(got) < SIZE, "the corpus makes every filter select something"


@pytest.mark.parametrize(
    "short", ["probe-record", "continuity", "emotion-calibration", "field-report", "key-event"]
)
def test_type_by_full_uri(indexed: tuple[Log, list[IndexRow]], short: str) -> None:
    log, rows = indexed
    uri = f"https://behaviour-ledger.dev/attestation/{short}/v1"
    by_uri = query(log, {"predicate_type": uri})[1]
    assert (
        by_uri
        == query(log, {"predicate_type": short})[1]
        == matching(rows, {"predicate_type": short})
    )
    assert by_uri


def test_paging(indexed: tuple[Log, list[IndexRow]]) -> None:
    log, rows = indexed
    want = matching(rows, {"model": "alpha"})
    pages: list[IndexRow] = []
    start = 0
    while True:
        _, page = query(log, {"model": "alpha"}, start=start, limit=7)
        assert len(page) <= 7
        pages += page
        if len(page) < 7:
            break
        start = page[-1].idx + 1
    assert pages == want

    middle = want[len(want) // 2].idx
    assert query(log, {"model": "alpha"}, start=middle)[1] == [r for r in want if r.idx >= middle]
    assert query(log, {}, start=SIZE)[1] == []
    assert query(log, {}, start=10, limit=3)[1] == rows[10:13]
    assert query(log, {}, limit=10**6)[1] == rows, "the limit is capped, not refused, in process"


def test_models_with_probe_records(store: Store) -> None:
    """`index.models`: the (model, version) pairs that have probe records, by model, then by
    first index; field reports, calibrations and successions name no model here."""
    log, seq = new_log(store)
    beta, _ = probe_record("beta", "v9", "anonymous", "first")
    sequence(seq, [beta, *corpus(SIZE, start=1)[0]])
    want = [("alpha", "v1"), ("alpha", "v2"), ("beta", "v9")]  # alpha v1's record comes first
    assert index.models(log) == (SIZE + 1, want)
    assert store.index_size(log.id) == SIZE + 1


# -- two builders at once ---------------------------------------------------------------------


def test_extend_index_is_a_compare_and_swap(store: Store) -> None:
    log, seq = new_log(store)
    entries, rows = corpus(3)
    sequence(seq, entries)
    assert store.extend_index(log.id, 0, 2, rows[:2])
    assert not store.extend_index(log.id, 0, 2, rows[:2]), "the head already moved from 0"
    assert not store.extend_index(log.id, 1, 3, rows[1:]), "a stale old size"
    assert store.index_size(log.id) == 2
    assert store.index_rows(log.id, {}) == rows[:2]
    assert store.extend_index(log.id, 2, 3, rows[2:])
    assert store.index_rows(log.id, {}) == rows


def test_two_concurrent_catch_ups_write_one_row_per_entry(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores on one database (as two server processes): both read the index head before
    either writes, both describe the same bundle, and one compare-and-swap loses."""
    stores = [Store(db_url), Store(db_url)]
    try:
        stores[0].migrate()
        log, seq = new_log(stores[0])
        entries, rows = corpus(SIZE)
        sequence(seq, entries)
        logs = [log, Log(stores[1], log.row)]

        barrier = threading.Barrier(2, timeout=60)
        spies = [Spy(), Spy()]
        for s, spy in zip(stores, spies, strict=True):
            spy.install(monkeypatch, s)
            monkeypatch.setattr(s, "index_size", _meet_once(s.index_size, barrier))

        results: list[int] = []
        errors: list[BaseException] = []

        def build(lg: Log) -> None:
            try:
                results.append(catch_up(lg))
            except BaseException as e:  # reported below: a thread's exception is otherwise lost
                errors.append(e)

        threads = [threading.Thread(target=build, args=(lg,)) for lg in logs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert results == [SIZE, SIZE]

        calls = [c for spy in spies for c in spy.calls]
        first = [ok for old, new, _, ok in calls if (old, new) == (0, TILE_WIDTH)]
        assert sorted(first) == [False, True], calls
        assert sum(ok for *_, ok in calls) == 2, "two extensions in all: [0, 256), [256, 300)"
        for s in stores:
            assert s.index_size(log.id) == SIZE
            assert s.index_rows(log.id, {}) == rows
    finally:
        for s in stores:
            s.close()


def _meet_once(read: Callable[[int], int], barrier: threading.Barrier) -> Callable[[int], int]:
    """`read`, whose first call waits, after reading, until the other thread's has read too."""
    met = False

    def index_size(log_id: int) -> int:
        nonlocal met
        size = read(log_id)
        if not met:
            met = True
            barrier.wait()
        return size

    return index_size


# -- the HTTP route ---------------------------------------------------------------------------


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, list[IndexRow]]]:
    """The app of a server whose evidence log holds `SIZE` entries of every kind."""
    cfg = init_data_dir(tmp_path / "data", origin_prefix="index.test/logs", db=db_url)
    server = LedgerServer.from_config(cfg)
    hosted = server.logs["evidence"]
    assert hosted.origin == ORIGIN
    entries, rows = corpus(SIZE)
    sequence(Sequencer(hosted.log, hosted.signer), entries)  # the writer path, no admission
    with TestClient(create_app(server)) as http:
        yield http, rows


def _json_row(r: IndexRow) -> dict[str, Any]:
    return {
        "index": r.idx,
        "type": r.predicate_type,
        "model": r.model,
        "version": r.version,
        "weights_sha256": r.weights_sha256,
        "category": r.category,
        "tier": r.tier,
        "predecessor_version": r.predecessor_version,
    }


def test_route_answers_rows_as_json(api: tuple[TestClient, list[IndexRow]]) -> None:
    http, rows = api
    r = http.get("/logs/evidence/index")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"size", "entries"}
    assert body == {"size": SIZE, "entries": [_json_row(x) for x in rows]}

    r = http.get("/logs/evidence/index", params={"model": "alpha", "version": "v2"})
    want = [_json_row(x) for x in matching(rows, {"model": "alpha", "version": "v2"})]
    assert r.json()["entries"] == want
    want = [_json_row(x) for x in matching(rows, {"category": "fraud", "tier": "attested"})]
    assert http.get("/logs/evidence/index?category=fraud&tier=attested").json()["entries"] == want


def test_route_type_by_short_name_and_full_uri(api: tuple[TestClient, list[IndexRow]]) -> None:
    http, rows = api
    want = [_json_row(x) for x in matching(rows, {"predicate_type": "probe-record"})]
    assert want
    for t in ("probe-record", PROBE_RECORD):
        body = http.get("/logs/evidence/index", params={"type": t}).json()
        assert body["entries"] == want, t
    assert all(e["type"] == "probe-record" for e in want)


def test_route_pages(api: tuple[TestClient, list[IndexRow]]) -> None:
    http, rows = api
    body = http.get("/logs/evidence/index", params={"start": 250, "limit": 10}).json()
    assert body == {"size": SIZE, "entries": [_json_row(x) for x in rows[250:260]]}
    body = http.get("/logs/evidence/index", params={"start": SIZE}).json()
    assert body == {"size": SIZE, "entries": []}
    body = http.get("/logs/evidence/index", params={"limit": index.MAX_LIMIT}).json()
    assert len(body["entries"]) == SIZE


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": str(index.MAX_LIMIT + 1)},
        {"limit": "-1"},
        {"limit": "ten"},
        {"start": "-1"},
        {"start": str(1 << 63)},
        {"start": "x"},
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
def test_route_refuses_bad_parameters(
    api: tuple[TestClient, list[IndexRow]], params: dict[str, str]
) -> None:
    http, _ = api
    r = http.get("/logs/evidence/index", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_request" and next(iter(params)) in body["detail"], body


def test_route_unknown_log(api: tuple[TestClient, list[IndexRow]]) -> None:
    http, _ = api
    r = http.get("/logs/nope/index")
    assert r.status_code == 404 and r.json()["error"] == "unknown_log"
