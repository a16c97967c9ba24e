"""A model's history: `build_history` on hand-built statements, then against a real server on
loopback: `fetch_statements`, `LedgerClient.entries` and `verified_checkpoint` gathering witness
cosignatures, and `bledger history` end to end (table, JSON, charts).

The witnesses are a loopback HTTP server answering `GET /{witness}/gossip/{origin-hash}` with a
copy of the log's checkpoint cosigned by that witness, as an audit node does. Faults are
injected there (a bad cosignature line, a witness that is down) and, for the read index, by a
proxy transport rewriting the server's answers (`tests.support.proxied`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest.checkpoint import Checkpoint, origin_hash
from attest.cosignature import CosignatureSigner
from attest.keys import generate_private_key, load_private_key
from attest.note import Ed25519NoteSigner, Note, NoteSignature, add_signatures, parse_note
from attest.policy import Policy
from attest.predicates import (
    CONTINUITY,
    PROBE_RECORD,
    ContinuityStatement,
    FieldReport,
    LogEntryRef,
    ModelId,
    ModelRef,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import sign_statement
from clients import sdk
from clients.cli import main
from clients.history import (
    HistoryError,
    LoggedStatement,
    Version,
    build_history,
    fetch_statements,
    models,
    parse_logged,
)
from clients.probe.records import sign_records
from clients.probe.suites import load_suite
from clients.probe.summary import summarize
from clients.sdk import ClientError, LedgerClient, VerificationError
from tests.support import (
    EMPTY_TREE,
    LOG,
    PROBE_CATEGORY,
    PROBE_TIERS,
    PopulatedModel,
    free_port,
    lab_ledger,
    log_identity,
    model_weights,
    png_pixels,
    populate_model,
    post_entry,
    probe_header,
    probe_items,
    proxied,
    rewrite_json,
)

MODEL = "tiny-chat"
ORIGIN = EMPTY_TREE.origin
SUITE = load_suite("core@1")
LAB = [("lab", generate_private_key())]
COSIGNED_AT = 1_700_000_100


# -- hand-built statements --------------------------------------------------------------------


def logged(index: int, pred: Any, *, verified: bool = True) -> LoggedStatement:
    """`pred` signed by the lab, as the entry at `index` of the test log."""
    s = parse_logged(index, sign_statement(pred, LAB).canonical_bytes(), ORIGIN, verified=verified)
    assert s is not None
    return s


def record(
    version: str,
    tier: str = "anonymous",
    *,
    model: str = MODEL,
    run: str = "run",
    weights: str | None = None,
    suite: SuiteRef | None = None,
) -> ProbeRecord:
    """`model`@`version`'s probe record of (PROBE_CATEGORY, `tier`), items from `probe_items`."""
    header = probe_header(model, version, tier)
    changes: dict[str, Any] = {"run_id": run}
    if weights is not None:
        changes["model"] = ModelRef(name=model, version=version, weights_sha256=weights)
    if suite is not None:
        changes["suite"] = suite
    header = dataclasses.replace(header, **changes)
    vi = int(version.removeprefix("v")) - 1 if version in ("v1", "v2") else 0
    return header.record(probe_items(vi, PROBE_TIERS.index(tier)))


def succession(
    before: str, after: str, *, weights_after: str | None = None, model: str = MODEL, at: int = 0
) -> ContinuityStatement:
    """A continuity statement `before` -> `after` citing made-up records (no diff)."""

    def cite(i: int) -> LogEntryRef:
        return LogEntryRef(origin=ORIGIN, index=i, leaf_hash=hashlib.sha256().hexdigest())

    return ContinuityStatement(
        seen_checkpoint=EMPTY_TREE,
        issued_at=1_700_000_000 + at,
        predecessor=ModelRef(
            name=model, version=before, weights_sha256=model_weights(model, before)
        ),
        successor=ModelRef(
            name=model, version=after, weights_sha256=weights_after or model_weights(model, after)
        ),
        predecessor_records=(cite(1000 + at),),
        successor_records=(cite(2000 + at),),
        diff=(),
    )


def field_report(text: str) -> FieldReport:
    return FieldReport(
        seen_checkpoint=EMPTY_TREE,
        issued_at=1_700_000_000,
        model=ModelId(name=MODEL, version="v1"),
        category="grief",
        tier="anonymous",
        text=text,
    )


def chain(*steps: tuple[str, str] | tuple[str, str, str]) -> list[LoggedStatement]:
    """Continuity statements at indices 0, 1, ...; a step's third field is the successor's
    weights."""
    out = []
    for i, step in enumerate(steps):
        weights = step[2] if len(step) == 3 else None
        out.append(logged(i, succession(step[0], step[1], weights_after=weights, at=i)))
    return out


# -- build_history ----------------------------------------------------------------------------


def test_rows_per_version_with_their_records() -> None:
    recs = {
        0: record("v1", "anonymous"),
        1: record("v1", "medical"),
        3: record("v2", "anonymous"),
        5: record("v2", "medical"),
        6: record("v1", "anonymous", run="again"),  # a second run of a cell: both count
    }
    statements = [logged(i, r, verified=i != 3) for i, r in recs.items()]
    statements += [
        logged(2, record("v1", model="other")),  # another model's record is left out
        logged(4, succession("v1", "v2")),
        logged(7, field_report("hello")),  # not a record: no row
    ]
    random.Random(7).shuffle(statements)
    h = build_history(MODEL, statements, size=8)

    assert (h.model, h.origin, h.size) == (MODEL, ORIGIN, 8)
    assert h.versions == (
        Version("v1", model_weights(MODEL, "v1"), (0, 1, 6)),
        Version("v2", model_weights(MODEL, "v2"), (3, 5)),
    )
    cells = [(r.summary.version, r.summary.category, r.summary.tier) for r in h.rows]
    assert cells == [
        ("v1", PROBE_CATEGORY, "anonymous"),
        ("v1", PROBE_CATEGORY, "medical"),
        ("v2", PROBE_CATEGORY, "anonymous"),
        ("v2", PROBE_CATEGORY, "medical"),
    ]
    assert [r.records for r in h.rows] == [(0, 6), (1,), (3,), (5,)]
    assert [r.verified for r in h.rows] == [True, True, False, True]
    # Each row's figures are the summary of exactly its records.
    for row in h.rows:
        (want,) = summarize([recs[i] for i in row.records], SUITE)
        assert row.summary == want
    assert h.rows[0].summary.items == 2 * h.rows[1].summary.items

    (c,) = h.continuity
    assert (c.index, c.from_, c.to, c.signer, c.flags, c.verified) == (
        4,
        "v1",
        "v2",
        "lab",
        (),
        True,
    )
    assert h.flags == ()

    out = h.to_json()
    assert json.loads(json.dumps(out)) == out
    assert out["log"] == {"origin": ORIGIN, "size": 8}
    assert out["versions"][0] == {
        "version": "v1",
        "weights_sha256": model_weights(MODEL, "v1"),
        "records": [0, 1, 6],
    }
    first = out["rows"][0]
    assert "model" not in first
    assert (first["version"], first["tier"], first["records"], first["verified"]) == (
        "v1",
        "anonymous",
        [0, 6],
        True,
    )
    assert first["benign_refusal"]["n"] == 8
    assert out["continuity"][0]["records"] == [1000, 2000]


def test_no_statements_about_the_model() -> None:
    h = build_history(MODEL, [logged(0, record("v1", model="other"))], size=1)
    assert (h.versions, h.rows, h.continuity, h.flags) == ((), (), (), ())


def test_two_weights_under_one_version() -> None:
    statements = [
        logged(0, record("v1")),
        logged(1, record("v1", "medical", weights="ab" * 32)),
    ]
    with pytest.raises(HistoryError, match="version v1 of tiny-chat names two weights") as e:
        build_history(MODEL, statements)
    assert "(entry 1)" in e.value.diagnostic


def test_suite_digest_mismatch() -> None:
    other = SuiteRef(name=SUITE.name, version=SUITE.version, sha256="00" * 32)
    with pytest.raises(HistoryError, match="item kinds cannot be trusted") as e:
        build_history(MODEL, [logged(0, record("v1", suite=other))])
    assert SUITE.digest in e.value.diagnostic and "00" * 32 in e.value.diagnostic


def test_unknown_suite() -> None:
    unknown = SuiteRef(name="nosuch", version="9", sha256="00" * 32)
    with pytest.raises(HistoryError, match="records use suite nosuch@9"):
        build_history(MODEL, [logged(0, record("v1", suite=unknown))])


def test_suites_given_by_the_caller() -> None:
    """A suite passed in is used instead of the shipped one, and still checked by digest."""
    h = build_history(MODEL, [logged(0, record("v1"))], suites={("core", "1"): SUITE})
    assert len(h.rows) == 1
    changed = dataclasses.replace(SUITE, digest="11" * 32)
    with pytest.raises(HistoryError, match="SHA-256"):
        build_history(MODEL, [logged(0, record("v1"))], suites={("core", "1"): changed})


def test_a_plain_chain_has_no_flags() -> None:
    h = build_history(MODEL, chain(("v1", "v2"), ("v2", "v3"), ("v3", "v4")))
    assert [(c.from_, c.to) for c in h.continuity] == [("v1", "v2"), ("v2", "v3"), ("v3", "v4")]
    assert all(c.flags == () for c in h.continuity) and h.flags == ()


def test_restating_a_succession_is_not_a_second_successor() -> None:
    h = build_history(MODEL, chain(("v1", "v2"), ("v1", "v2")))
    assert h.flags == ()


def test_a_second_successor_is_flagged() -> None:
    h = build_history(MODEL, chain(("v1", "v2"), ("v1", "v3")))
    first, second = h.continuity
    assert first.flags == ()
    assert second.flags == ("second successor: v1 already has v2 (index 0)",)
    assert h.flags == ("index 1: second successor: v1 already has v2 (index 0)",)
    assert h.to_json()["continuity"][1]["flags"] == list(second.flags)


def test_a_rollback_to_the_predecessor_is_flagged() -> None:
    h = build_history(MODEL, chain(("v1", "v2"), ("v2", "v1")))
    assert h.continuity[0].flags == ()
    assert h.continuity[1].flags == ("rollback: v1 returns to v1, an ancestor of v2",)
    assert h.flags == ("index 1: rollback: v1 returns to v1, an ancestor of v2",)


def test_a_rollback_to_a_distant_ancestor_is_flagged() -> None:
    h = build_history(MODEL, chain(("v1", "v2"), ("v2", "v3"), ("v3", "v1")))
    assert [c.flags for c in h.continuity[:2]] == [(), ()]
    assert h.continuity[2].flags == ("rollback: v1 returns to v1, an ancestor of v3",)


def test_a_successor_with_an_ancestors_weights_is_a_rollback() -> None:
    """v3 is a new name for v1's weights: the records say which weights v1 had."""
    v1 = model_weights(MODEL, "v1")
    statements = [logged(10, record("v1")), *chain(("v1", "v2"), ("v2", "v3", v1))]
    h = build_history(MODEL, statements)
    assert h.continuity[1].flags == ("rollback: v3 returns to v1, an ancestor of v2",)
    assert h.flags == ("index 1: rollback: v3 returns to v1, an ancestor of v2",)


def test_a_rollback_by_weights_without_the_ancestors_records() -> None:
    """The continuity statements alone name v1's weights (e.g. `bledger history --version v3`
    fetches v3's records and every succession, not v1's records)."""
    v1 = model_weights(MODEL, "v1")
    h = build_history(MODEL, chain(("v1", "v2"), ("v2", "v3", v1)))
    assert h.continuity[1].flags == ("rollback: v3 returns to v1, an ancestor of v2",)


def test_both_flags_at_once_and_other_models_ignored() -> None:
    statements = chain(("v1", "v2"), ("v2", "v3"), ("v2", "v1"))
    statements.append(logged(3, succession("v1", "v2", model="other", at=3)))
    h = build_history(MODEL, statements)
    assert len(h.continuity) == 3
    assert h.continuity[2].flags == (
        "second successor: v2 already has v3 (index 1)",
        "rollback: v1 returns to v1, an ancestor of v2",
    )
    assert len(h.flags) == 2 and all(f.startswith("index 2: ") for f in h.flags)


def test_models() -> None:
    statements = [
        logged(0, record("v1", model="b")),
        logged(1, record("v2", model="a")),
        logged(2, succession("v7", "v8", model="c")),  # no record: not listed
        logged(3, record("v1", model="a")),
        logged(4, field_report("x")),
        logged(5, record("v2", "medical", model="a")),
    ]
    random.Random(1).shuffle(statements)
    assert models(statements) == [
        {"model": "a", "versions": ["v2", "v1"]},  # in log order
        {"model": "b", "versions": ["v1"]},
    ]
    assert models([]) == []


# -- witnesses on loopback --------------------------------------------------------------------

WITNESSES = {n: CosignatureSigner(f"{n}.test", generate_private_key()) for n in ("w1", "w2", "w3")}


class WitnessStub:
    """A loopback HTTP server playing audit nodes: `GET /{name}/gossip/{origin-hash}` answers
    `serve[name]` (a signed note), 404 for anything else. `requests` lists the paths asked."""

    def __init__(self, origin: str) -> None:
        self.serve: dict[str, bytes] = {}
        self.requests: list[str] = []
        stub = self
        want = origin_hash(origin)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(self.path)
                name, _, rest = self.path.lstrip("/").partition("/")
                body = stub.serve.get(name)
                if body is None or rest != f"gossip/{want}":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        """Where witness `name`'s audit node is."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def down_url(name: str) -> str:
    """A witness URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/{name}"


def cosigned(note: bytes, *names: str) -> bytes:
    """`note` with cosignatures of the named witnesses added (as an audit node serves it)."""
    return add_signatures(note, [WITNESSES[n].at(COSIGNED_AT) for n in names])


def spoiled(note: bytes, name: str) -> bytes:
    """`note` with a cosignature line of witness `name` whose signature does not verify."""
    parsed = parse_note(cosigned(note, name))
    *rest, line = parsed.signatures
    bad = line.signature[:-1] + bytes([line.signature[-1] ^ 1])
    return Note(parsed.text, (*rest, NoteSignature(line.name, line.key_id, bad))).to_bytes()


def witness_policy(vkey: str, group: str, urls: dict[str, str] | None = None) -> str:
    """A tlog-policy text: the log, witnesses w1..w3 (at `urls`), `group q <group>`, `quorum q`."""
    lines = [f"log {vkey}"]
    for name, w in WITNESSES.items():
        url = (urls or {}).get(name)
        lines.append(f"witness {name} {w.vkey}" + (f" {url}" if url else ""))
    return "\n".join([*lines, f"group q {group}", "quorum q", ""])


# -- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """The populated server, its pinned identity, and the checkpoints it signed."""

    base_url: str
    vkey: str
    origin: str
    populated: PopulatedModel
    others: tuple[int, ...]  # records of another model
    old_note: bytes  # the checkpoint before the last entry
    old_size: int
    head_note: bytes
    size: int

    @property
    def policy(self) -> Policy:
        """The log key pinned, no witnesses."""
        return Policy.parse(f"log {self.vkey}\nquorum none\n")

    def indices(self) -> list[int]:
        """The entries about MODEL: its records and the continuity statement."""
        return sorted([*self.populated.probe_records.values(), self.populated.continuity])


def _note(base_url: str) -> bytes:
    r = httpx.get(f"{base_url}/logs/{LOG}/checkpoint", timeout=30.0)
    assert r.status_code == 200
    return r.content


def _size(note: bytes) -> int:
    return Checkpoint.parse(parse_note(note).text).size


def _other_record(base_url: str, worker: list[tuple[str, Ed25519PrivateKey]], v: str) -> int:
    (part,) = sign_records(probe_header("other", v, "anonymous"), probe_items(0, 0), worker)
    return int(post_entry(base_url, part.envelope.canonical_bytes())["index"])


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A `bledger serve` holding MODEL's history (`populate_model`), a record of another model,
    then one more entry after the checkpoint kept as `old_note`."""
    with lab_ledger(tmp_path_factory.mktemp("history")) as (srv, keys):
        populated = populate_model(srv.base_url, keys, MODEL)
        worker = [("worker", load_private_key(keys / "worker.pem"))]
        first = _other_record(srv.base_url, worker, "v1")
        old_note = _note(srv.base_url)
        second = _other_record(srv.base_url, worker, "v2")
        head_note = _note(srv.base_url)
        vkey, origin = log_identity(srv.base_url)
        assert origin == ORIGIN
        old, head = _size(old_note), _size(head_note)
        assert old == second and head == second + 1
        yield Ledger(
            srv.base_url, vkey, origin, populated, (first, second), old_note, old, head_note, head
        )


@pytest.fixture
def witnesses(ledger: Ledger) -> Iterator[WitnessStub]:
    stub = WitnessStub(ledger.origin)
    try:
        yield stub
    finally:
        stub.close()


# -- fetch_statements and the SDK -------------------------------------------------------------


def test_fetch_statements_returns_verified_statements(ledger: Ledger) -> None:
    with LedgerClient(ledger.base_url) as c:
        got = fetch_statements(c, LOG, ledger.policy, model=MODEL)
    assert [s.index for s in got] == ledger.indices()
    assert all(s.verified and s.origin == ORIGIN for s in got)
    by_index = {s.index: s for s in got}
    for (version, tier), i in ledger.populated.probe_records.items():
        pred = by_index[i].statement.predicate
        assert isinstance(pred, ProbeRecord)
        assert (pred.model.name, pred.model.version, pred.tier) == (MODEL, version, tier)
        assert by_index[i].signer == "worker"
    cont = by_index[ledger.populated.continuity]
    assert cont.statement.predicate_type == CONTINUITY and cont.signer == "lab"

    h = build_history(MODEL, got, size=ledger.size)
    assert [v.version for v in h.versions] == ["v1", "v2"]
    assert len(h.rows) == 4 and all(r.verified for r in h.rows)
    assert [c.index for c in h.continuity] == [ledger.populated.continuity]


def test_fetch_statements_of_one_version(ledger: Ledger) -> None:
    """One version's records, and every succession of the model (to and from it)."""
    with LedgerClient(ledger.base_url) as c:
        got = fetch_statements(c, LOG, ledger.policy, model=MODEL, version="v1")
        records = fetch_statements(c, LOG, ledger.policy, model=MODEL, predicate_type=PROBE_RECORD)
    v1 = [i for (v, _), i in ledger.populated.probe_records.items() if v == "v1"]
    assert [s.index for s in got] == sorted([*v1, ledger.populated.continuity])
    assert [s.index for s in records] == sorted(ledger.populated.probe_records.values())


@pytest.mark.parametrize("target", ["another model's record", "a key event"])
def test_an_index_naming_an_entry_about_something_else(ledger: Ledger, target: str) -> None:
    """The server's index says entry X is about MODEL; the verified entry says otherwise."""
    wrong = ledger.others[0] if target == "another model's record" else 0

    def lie(body: dict[str, Any]) -> None:
        for e in body["entries"]:
            if e["index"] == ledger.populated.probe_records[("v2", "medical")]:
                e["index"] = wrong
        body["entries"].sort(key=lambda e: e["index"])

    with (
        proxied(ledger.base_url, rewrite_json("/index", lie)) as c,
        pytest.raises(VerificationError, match=f"names entry {wrong} for {MODEL}, but it is not"),
    ):
        fetch_statements(c, LOG, ledger.policy, model=MODEL)


def test_search_follows_pages(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """With pages of two (the proxy truncates each answer), search still gets every hit."""
    with LedgerClient(ledger.base_url) as c:
        whole = c.search(LOG, model=MODEL)
    assert [h.index for h in whole] == ledger.indices()
    assert {h.predicate_type for h in whole} == {"probe-record", "continuity"}

    def truncate(body: dict[str, Any]) -> None:
        body["entries"] = body["entries"][:2]

    monkeypatch.setattr(sdk, "_INDEX_PAGE", 2)
    with proxied(ledger.base_url, rewrite_json("/index", truncate)) as c:
        assert c.search(LOG, model=MODEL) == whole


def test_entries_refuses_a_tampered_entry(ledger: Ledger) -> None:
    target = ledger.populated.probe_records[("v1", "medical")]

    def flip(body: dict[str, Any]) -> None:
        if body["index"] == target:
            data = bytearray(base64.b64decode(body["entry"]))
            data[len(data) // 2] ^= 0x01
            body["entry"] = base64.b64encode(bytes(data)).decode()

    with (
        proxied(ledger.base_url, rewrite_json("/entries/", flip)) as c,
        pytest.raises(VerificationError, match=f"entry {target} of {LOG} at size {ledger.size}"),
    ):
        c.entries(LOG, ledger.indices(), ledger.policy)
    with proxied(ledger.base_url, rewrite_json("/entries/", flip)) as c:
        c.entries(LOG, [i for i in ledger.indices() if i != target], ledger.policy)


def test_entries_refuses_an_index_beyond_the_checkpoint(ledger: Ledger) -> None:
    with LedgerClient(ledger.base_url) as c:
        got = c.entries(LOG, [0, ledger.size - 1], ledger.policy)
        assert [e.checkpoint.size for e in got] == [ledger.size] * 2
        with pytest.raises(ClientError, match=f"outside log {LOG}'s tree of size {ledger.size}"):
            c.entries(LOG, [0, ledger.size], ledger.policy)
        with pytest.raises(ClientError, match="outside"):
            c.entries(LOG, [-1], ledger.policy)


# -- verified_checkpoint gathering cosignatures -----------------------------------------------


def _client(
    ledger: Ledger, stub: WitnessStub, *names: str, down: Sequence[str] = ()
) -> LedgerClient:
    urls = [down_url(n) if n in down else stub.url(n) for n in names]
    return LedgerClient(ledger.base_url, witness_urls=urls)


def _cosigners(note: bytes) -> set[str]:
    return {s.name for s in parse_note(note).signatures} - {ORIGIN}


def test_gathers_and_merges_cosignatures(ledger: Ledger, witnesses: WitnessStub) -> None:
    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    with LedgerClient(ledger.base_url) as c, pytest.raises(VerificationError, match="quorum q"):
        c.verified_checkpoint(LOG, policy)  # the log's own checkpoint has no cosignature

    witnesses.serve = {
        "w1": cosigned(ledger.head_note, "w1"),
        "w2": cosigned(ledger.head_note, "w2"),
    }
    with _client(ledger, witnesses, "w1", "w2") as c:
        cp, note = c.verified_checkpoint(LOG, policy)
    assert cp.size == ledger.size
    assert _cosigners(note) == {"w1.test", "w2.test"}, "one note with both cosignatures"
    assert policy.check(note) == cp
    assert parse_note(note).text == parse_note(ledger.head_note).text
    assert sorted(witnesses.requests) == [
        f"/{n}/gossip/{origin_hash(ORIGIN)}" for n in ("w1", "w2")
    ]


def test_a_copy_cosigned_by_the_quorum_alone_is_enough(
    ledger: Ledger, witnesses: WitnessStub
) -> None:
    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve = {"w2": cosigned(ledger.head_note, "w1", "w2")}
    with _client(ledger, witnesses, "w1", "w2", down=["w1"]) as c:
        cp, note = c.verified_checkpoint(LOG, policy)
    assert cp.size == ledger.size and _cosigners(note) == {"w1.test", "w2.test"}


@pytest.mark.parametrize("how", ["nothing listens", "404", "garbage"])
def test_one_witness_down_leaves_the_quorum_unmet(
    ledger: Ledger, witnesses: WitnessStub, how: str
) -> None:
    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve = {"w1": cosigned(ledger.head_note, "w1")}
    if how == "garbage":
        witnesses.serve["w2"] = b"not a note"  # served with 200, but not a signed note
    down = ["w2"] if how == "nothing listens" else []
    with (
        _client(ledger, witnesses, "w1", "w2", down=down) as c,
        pytest.raises(VerificationError, match=r"quorum q not met") as e,
    ):
        c.verified_checkpoint(LOG, policy)
    assert "checkpoint of evidence" in e.value.diagnostic
    with _client(ledger, witnesses, "w1", "w2", down=down) as c, pytest.raises(VerificationError):
        c.entries(LOG, [0], policy)


@pytest.mark.parametrize("order", ["bad last", "bad first"])
def test_a_bad_cosignature_line_does_not_spoil_the_others(
    ledger: Ledger, witnesses: WitnessStub, order: str
) -> None:
    """w3 serves a cosignature line that does not verify; w1 and w2 meet the 2-of-3 quorum."""
    policy = Policy.parse(witness_policy(ledger.vkey, "2 w1 w2 w3"))
    witnesses.serve = {
        "w1": cosigned(ledger.head_note, "w1"),
        "w2": cosigned(ledger.head_note, "w2"),
        "w3": spoiled(ledger.head_note, "w3"),
    }
    names = ("w1", "w2", "w3") if order == "bad last" else ("w3", "w1", "w2")
    with _client(ledger, witnesses, *names) as c:
        cp, note = c.verified_checkpoint(LOG, policy)
    assert cp.size == ledger.size
    assert policy.check(note) == cp
    assert {"w1.test", "w2.test"} <= _cosigners(note)


def test_a_forged_line_for_another_witness_does_not_spoil_it(
    ledger: Ledger, witnesses: WitnessStub
) -> None:
    """w3, asked first, serves a bad line under w1's key; w1's own copy has the good one."""
    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve = {
        "w3": spoiled(ledger.head_note, "w1"),
        "w1": cosigned(ledger.head_note, "w1"),
        "w2": cosigned(ledger.head_note, "w2"),
    }
    with _client(ledger, witnesses, "w3", "w1", "w2") as c:
        cp, note = c.verified_checkpoint(LOG, policy)
    assert cp.size == ledger.size and policy.check(note) == cp


def test_bad_lines_alone_do_not_meet_the_quorum(ledger: Ledger, witnesses: WitnessStub) -> None:
    policy = Policy.parse(witness_policy(ledger.vkey, "2 w1 w2 w3"))
    witnesses.serve = {
        "w1": cosigned(ledger.head_note, "w1"),
        "w2": spoiled(ledger.head_note, "w2"),
        "w3": spoiled(ledger.head_note, "w3"),
    }
    with (
        _client(ledger, witnesses, "w1", "w2", "w3") as c,
        pytest.raises(VerificationError, match="quorum q not met"),
    ):
        c.verified_checkpoint(LOG, policy)


def test_a_bad_log_signature_is_refused_not_merged_away(
    ledger: Ledger, witnesses: WitnessStub
) -> None:
    """The log's checkpoint arrives with its signature flipped: refused as it is, whatever the
    merge leaves out; the witnesses' copies carry the log's good signature line, and verify."""

    def flip(request: httpx.Request, answer: httpx.Response) -> httpx.Response:
        if not request.url.path.endswith("/checkpoint"):
            return answer
        parsed = parse_note(answer.content)
        (line,) = parsed.signatures
        bad = NoteSignature(
            line.name, line.key_id, bytes([line.signature[0] ^ 1]) + line.signature[1:]
        )
        return httpx.Response(200, content=Note(parsed.text, (bad,)).to_bytes())

    with (
        proxied(ledger.base_url, flip) as c,
        pytest.raises(VerificationError, match="checkpoint of evidence: "),
    ):
        c.verified_checkpoint(LOG, ledger.policy)

    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve = {
        "w1": cosigned(ledger.head_note, "w1"),
        "w2": cosigned(ledger.head_note, "w2"),
    }
    urls = [witnesses.url("w1"), witnesses.url("w2")]
    with proxied(ledger.base_url, flip, witness_urls=urls) as c:
        cp, note = c.verified_checkpoint(LOG, policy)
    assert cp.size == ledger.size and policy.check(note) == cp


def test_the_largest_accepted_checkpoint_wins(ledger: Ledger, witnesses: WitnessStub) -> None:
    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve = {
        "w1": cosigned(ledger.old_note, "w1", "w2"),
        "w2": cosigned(ledger.head_note, "w1", "w2"),
    }
    for order in (("w1", "w2"), ("w2", "w1")):
        with _client(ledger, witnesses, *order) as c:
            cp, _ = c.verified_checkpoint(LOG, policy)
        assert cp.size == ledger.size, order


def test_witnesses_behind_the_log(ledger: Ledger, witnesses: WitnessStub) -> None:
    """The witnesses cosigned only an older checkpoint: that one is accepted, and an entry
    after it cannot be proved under the policy yet."""
    policy = Policy.parse(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve = {
        "w1": cosigned(ledger.old_note, "w1"),
        "w2": cosigned(ledger.old_note, "w2"),
    }
    with _client(ledger, witnesses, "w1", "w2") as c:
        cp, _ = c.verified_checkpoint(LOG, policy)
        assert cp.size == ledger.old_size < ledger.size
        got = c.entries(LOG, ledger.indices(), policy)
        assert all(e.checkpoint.size == ledger.old_size for e in got)
        with pytest.raises(ClientError, match=f"tree of size {ledger.old_size}") as e:
            c.entries(LOG, [ledger.old_size], policy)
        assert not isinstance(e.value, VerificationError)


# -- bledger history --------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["history", *args])
    return res.exit_code, res.stdout, res.stderr


def test_history_table(ledger: Ledger) -> None:
    code, out, err = run(MODEL, "--ledger", ledger.base_url, "--vkey", ledger.vkey)
    assert code == 0, err
    assert "trusting the key" not in err
    lines = out.splitlines()
    assert lines[0] == f"{MODEL}: 2 version(s), 4 cells, log {ORIGIN} at size {ledger.size}"
    header = lines[1].split()
    # The seed's headline pair leads: optimised transfer (with its budget), paired benign refusal.
    assert header[:5] == ["version", "category", "tier", "optimised", "transfer"]
    assert "paired" in header and "items" in header and "records" in header
    for (version, tier), index in ledger.populated.probe_records.items():
        (line,) = [x for x in lines[2:6] if x.split()[:3] == [version, PROBE_CATEGORY, tier]]
        assert line.split()[-2:] == [str(index), "verified"], line
    assert lines[6] == "continuity:"
    assert lines[7].split() == ["v1", "->", "v2", "by", "lab", "index",
                                str(ledger.populated.continuity), "verified"]  # fmt: skip
    assert any(x.strip().startswith(f"{PROBE_CATEGORY}/anonymous: ") for x in lines[8:])
    assert "FLAG" not in out and "NOT VERIFIED" not in out


def test_history_json_matches_build_history(ledger: Ledger, tmp_path: Path) -> None:
    code, out, err = run(MODEL, "--ledger", ledger.base_url, "--vkey", ledger.vkey, "--json")
    assert code == 0, err
    got = json.loads(out)
    with LedgerClient(ledger.base_url) as c:
        statements = fetch_statements(c, LOG, ledger.policy, model=MODEL)
    assert got == build_history(MODEL, statements, size=ledger.size).to_json()
    assert [r["records"] for r in got["rows"]] == [
        [ledger.populated.probe_records[(v, t)]] for v in ("v1", "v2") for t in PROBE_TIERS
    ]

    code, out, err = run(
        MODEL, "--ledger", ledger.base_url, "--vkey", ledger.vkey, "--json", "--version", "v2"
    )
    assert code == 0, err
    one = json.loads(out)
    assert [v["version"] for v in one["versions"]] == ["v2"]
    assert [c["index"] for c in one["continuity"]] == [ledger.populated.continuity]


def test_history_under_a_witness_policy(
    ledger: Ledger, witnesses: WitnessStub, tmp_path: Path
) -> None:
    urls = {n: witnesses.url(n) for n in ("w1", "w2")}
    policy = tmp_path / "policy.txt"
    policy.write_text(witness_policy(ledger.vkey, "all w1 w2", urls))
    witnesses.serve = {
        "w1": cosigned(ledger.head_note, "w1"),
        "w2": cosigned(ledger.head_note, "w2"),
    }
    code, out, err = run(MODEL, "--ledger", ledger.base_url, "--policy", str(policy), "--json")
    assert code == 0, err
    assert all(r["verified"] for r in json.loads(out)["rows"])

    del witnesses.serve["w2"]
    code, out, err = run(MODEL, "--ledger", ledger.base_url, "--policy", str(policy))
    assert code != 0 and out == ""
    assert "quorum q not met" in err

    # --witness-url names where to gather, whatever the policy file says.
    bare = tmp_path / "bare.txt"
    bare.write_text(witness_policy(ledger.vkey, "all w1 w2"))
    witnesses.serve["w2"] = cosigned(ledger.head_note, "w2")
    args = [MODEL, "--ledger", ledger.base_url, "--policy", str(bare), "--json"]
    code, _, err = run(*args)
    assert code != 0 and "quorum q not met" in err
    code, out, err = run(*args, "--witness-url", urls["w1"], "--witness-url", urls["w2"])
    assert code == 0, err


def test_history_of_a_model_without_records_is_an_error(ledger: Ledger) -> None:
    code, out, err = run("no-such-model", "--ledger", ledger.base_url, "--vkey", ledger.vkey)
    assert code != 0 and out == ""
    assert "holds no probe records of no-such-model" in err
    code, out, err = run(
        MODEL, "--ledger", ledger.base_url, "--vkey", ledger.vkey, "--version", "v9"
    )
    assert code != 0 and f"holds no probe records of {MODEL}@v9" in err


def test_history_trusting_the_server_key_says_so(ledger: Ledger) -> None:
    code, out, err = run(MODEL, "--ledger", ledger.base_url)
    assert code == 0, err
    assert "trusting the key the server reports" in err
    assert out.startswith(f"{MODEL}: 2 version(s)")


def test_history_with_the_wrong_key_fails(ledger: Ledger) -> None:
    """A wrong --vkey is reported as what the user did: the key they pinned does not match the
    log's signature (never as a policy problem: they gave no policy)."""
    mismatch = f"does not match the signature of log {LOG} at {ledger.base_url} (origin {ORIGIN}"
    log_key = "+".join(ledger.vkey.split("+")[:2])
    impostor = Ed25519NoteSigner(ORIGIN, generate_private_key())  # the log's name, another key
    stranger = Ed25519NoteSigner("alice", generate_private_key())  # a key of another name
    witness_key = CosignatureSigner(ORIGIN, generate_private_key()).vkey  # not a log key
    for vkey in (impostor.vkey, stranger.vkey, witness_key):
        code, out, err = run(MODEL, "--ledger", ledger.base_url, "--vkey", vkey)
        assert code != 0 and out == ""
        pinned = "+".join(vkey.split("+")[:2])
        assert f"the key given with --vkey ({pinned}) {mismatch}, signed by {log_key})" in err
        assert "policy" not in err


def test_history_plot(ledger: Ledger, tmp_path: Path) -> None:
    png = tmp_path / "charts" / "out.png"
    code, out, err = run(MODEL, "--ledger", ledger.base_url, "--vkey", ledger.vkey,
                         "--plot", str(png))  # fmt: skip
    assert code == 0, err
    assert f"charts: {png}" in err
    assert out.startswith(f"{MODEL}: 2 version(s)"), "the table is printed too"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, pixels = png_pixels(data)
    assert (width, height) == (1100, 1300)  # figsize (11, 13) at 100 dpi
    colours = set(pixels)
    assert len(colours) > 50, "the charts are not one colour"
    # matplotlib's first two series colours (tab:blue, tab:orange) fill bars of each version.
    assert (0x1F, 0x77, 0xB4) in colours and (0xFF, 0x7F, 0x0E) in colours


# -- one format for every figure (CLI and web page) -------------------------------------------


def test_a_zero_width_interval_is_never_shown() -> None:
    """Every answer agreeing gives a resampling interval of zero width: the cell gets the
    Wilson interval instead, and the reportable rule decides on that."""
    from clients.probe.metrics import Mean, rate
    from clients.text import shown

    assert shown(Mean(4, 0.0, 0.0, 0.0)) == "insufficient data (n=4)"  # Wilson [0, 0.49]
    assert shown(Mean(400, 0.0, 0.0, 0.0)) == "0.00 [0.00, 0.01] n=400"
    assert shown(rate(0, 4)) == "insufficient data (n=4)"
    assert shown(None) == "-"


def test_an_interval_is_clipped_to_the_figures_range() -> None:
    from clients.probe.metrics import Mean
    from clients.text import shown

    assert shown(Mean(200, 0.02, -0.01, 0.05)) == "0.02 [0.00, 0.05] n=200"
    half = Mean(400, 0.5, 0.45, 0.55)
    assert shown(Mean(400, -0.99, -1.05, -0.93), sides=(half, half)) == "-0.99 [-1.00, -0.93] n=400"


def test_a_zero_width_difference_gets_newcombes_interval() -> None:
    from clients.probe.metrics import Mean
    from clients.text import shown

    half = Mean(400, 0.5, 0.45, 0.55)
    assert shown(Mean(400, 0.0, 0.0, 0.0), sides=(half, half)) == "0.00 [-0.07, 0.07] n=400"


def test_every_figure_of_the_table_has_its_interval_and_n(ledger: Ledger) -> None:
    code, out, err = run(MODEL, "--ledger", ledger.base_url, "--vkey", ledger.vkey)
    assert code == 0, err
    header, *rows = out.splitlines()[1:6]
    assert "direct transfer [95% CI]" in header and "framed transfer [95% CI]" in header
    number = r"[+-]?\d\.\d\d \[([+-]?\d\.\d\d), ([+-]?\d\.\d\d)\] n=\d+"
    figure = rf"(?:{number}|insufficient data \(n=\d+\))"
    for row in rows:
        # at least: benign refusal, direct, 4 framings, 4 framed - direct
        assert len(re.findall(figure, row)) >= 10, row
        for low, high in re.findall(number, row):
            assert float(low) < float(high), f"zero-width interval in {row}"
    with LedgerClient(ledger.base_url) as c:
        statements = fetch_statements(c, LOG, ledger.policy, model=MODEL)
    shown = build_history(MODEL, statements, size=ledger.size).to_json()["rows"]
    # The JSON the web page shows carries the very strings of the CLI's cells.
    for r in shown:
        (line,) = [x for x in rows if x.split()[:3] == [r["version"], r["category"], r["tier"]]]
        for cell in r["display"].values():
            assert cell in line, (cell, line)
