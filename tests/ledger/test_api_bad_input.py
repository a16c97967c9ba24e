"""Bad input against a real server on loopback (SQLite): every refusal is a clear 4xx with a JSON
`{error, detail}` body, nothing refused is stored, and the log still re-audits (`check_log`).

One server serves the whole module: the cases only read, or write what must be refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from attest import merkle
from attest.checkpoint import open_checkpoint
from attest.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope
from attest.tiles import MAX_ENTRY_SIZE
from attest.vkey import parse_vkey
from ledger.config import DEFAULT_MAX_BODY
from tests.support import (
    LOG,
    LedgerProcess,
    Signer,
    check_log,
    envelope_body,
    log_identity,
    running_server,
    statement_payload,
)

ENTRIES = f"/logs/{LOG}/entries"
SEEDED = 3  # entries in the log before the bad input starts: every tile is partial


@dataclass
class Ledger:
    """The module's server, its pinned identity and the signers the cases use."""

    srv: LedgerProcess
    http: httpx.Client
    vkey: str
    origin: str
    allowed: Signer
    stranger: Signer

    def size(self) -> int:
        """The size of the latest checkpoint, verified with the pinned key."""
        r = self.http.get(f"/logs/{LOG}/checkpoint")
        r.raise_for_status()
        cp, _ = open_checkpoint(r.content, parse_vkey(self.vkey), self.origin)
        return cp.size


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    root = tmp_path_factory.mktemp("bad-input")
    allowed = Signer.create(root / "keys", "allowed")
    stranger = Signer.create(root / "keys", "stranger")
    with (
        running_server(root / "data", allow_keys=(allowed.pub,)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=30.0) as http,
    ):
        vkey, origin = log_identity(srv.base_url)
        led = Ledger(srv, http, vkey, origin, allowed, stranger)
        for i in range(SEEDED):
            r = http.post(ENTRIES, content=envelope_body(allowed.envelope(f"seed-{i}")))
            assert r.status_code == 200, r.text
        assert led.size() == SEEDED
        yield led
        # After every case (whatever ran, in whatever order): nothing refused was stored.
        assert "Traceback" not in srv.stderr_all(), srv.stderr_all()


@pytest.fixture
def unchanged(ledger: Ledger) -> Iterator[Ledger]:
    """The log's size is the same after the test as before it, and the log re-audits."""
    before = ledger.size()
    yield ledger
    assert ledger.size() == before
    check_log(ledger.srv.base_url, ledger.vkey, ledger.origin)


def assert_refused(r: httpx.Response, status: int, error: str) -> None:
    """`r` is the 4xx `status` with a JSON body `{"error": error, "detail": <non-empty>}`."""
    assert 400 <= status < 500
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error, body
    assert isinstance(body["detail"], str) and body["detail"], body


def _forge(env: Envelope, **changes: object) -> bytes:
    obj = env.to_json()
    obj.update(changes)
    return json.dumps(obj).encode()


def _flip_sig(env: Envelope) -> bytes:
    obj = env.to_json()
    sig = bytearray(base64.b64decode(obj["signatures"][0]["sig"]))  # type: ignore[index,call-overload]
    sig[0] ^= 1
    obj["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()  # type: ignore[index,call-overload]
    return json.dumps(obj).encode()


# -- writes -----------------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes]] = [
    ("truncated-json", b'{"payload": '),
    ("not-json", b"hello"),
    ("empty-body", b""),
    ("json-array", b"[]"),
    ("json-string", b'"envelope"'),
    ("not-utf8", b'{"payload": "\xff\xfe"}'),
    ("missing-signatures", b'{"payload": "", "payloadType": "x"}'),
    ("empty-signatures", b'{"payload": "", "payloadType": "x", "signatures": []}'),
    ("bad-base64", b'{"payload": "!!!", "payloadType": "x", "signatures": [{"sig": "AA=="}]}'),
    (
        "extra-field",
        b'{"payload": "", "payloadType": "x", "signatures": [{"sig": "AA=="}], "x": 1}',
    ),
    (
        "duplicate-key",
        b'{"payload": "", "payload": "", "payloadType": "x", "signatures": [{"sig": "AA=="}]}',
    ),
]


@pytest.mark.parametrize(("body"), [b for _, b in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_envelope_is_400(unchanged: Ledger, body: bytes) -> None:
    r = unchanged.http.post(ENTRIES, content=body)
    assert_refused(r, 400, "malformed_envelope")


def test_forged_signature_is_403(unchanged: Ledger) -> None:
    env = unchanged.allowed.envelope("forged")
    assert_refused(unchanged.http.post(ENTRIES, content=_flip_sig(env)), 403, "untrusted_signature")


def test_payload_changed_after_signing_is_403(unchanged: Ledger) -> None:
    env = unchanged.allowed.envelope("original")
    other = base64.b64encode(unchanged.allowed.envelope("changed").payload).decode()
    r = unchanged.http.post(ENTRIES, content=_forge(env, payload=other))
    assert_refused(r, 403, "untrusted_signature")


def test_key_not_allowed_is_403(unchanged: Ledger) -> None:
    env = unchanged.stranger.envelope("stranger")
    r = unchanged.http.post(ENTRIES, content=envelope_body(env))
    assert_refused(r, 403, "untrusted_signature")


def test_payload_type_swapped_after_signing_is_403(unchanged: Ledger) -> None:
    # Signed as application/json, relabelled in-toto: PAE binds the type, so nothing verifies.
    env = unchanged.allowed.envelope("swapped", payload_type="application/json")
    r = unchanged.http.post(ENTRIES, content=_forge(env, payloadType=IN_TOTO_PAYLOAD_TYPE))
    assert_refused(r, 403, "untrusted_signature")


def test_payload_type_signed_but_not_in_toto_is_400(unchanged: Ledger) -> None:
    env = unchanged.allowed.envelope("other-type", payload_type="application/json")
    r = unchanged.http.post(ENTRIES, content=envelope_body(env))
    assert_refused(r, 400, "wrong_payload_type")


def test_oversize_body_with_content_length_is_413(unchanged: Ledger) -> None:
    body = b" " * (DEFAULT_MAX_BODY + 1)
    r = unchanged.http.post(ENTRIES, content=body)
    assert r.request.headers["content-length"] == str(len(body))
    assert_refused(r, 413, "body_too_large")


def test_oversize_body_chunked_is_413(unchanged: Ledger) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(DEFAULT_MAX_BODY // 4096 + 2):
            yield b" " * 4096

    r = unchanged.http.post(ENTRIES, content=chunks())
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_refused(r, 413, "body_too_large")


def test_entry_over_65535_canonical_bytes_is_413(unchanged: Ledger) -> None:
    payload = b"\x00" * 50_000  # base64 grows it past the 64 KiB entry limit
    env = unchanged.allowed.envelope(payload)
    assert len(env.canonical_bytes()) > MAX_ENTRY_SIZE
    body = envelope_body(env)
    assert len(body) < DEFAULT_MAX_BODY  # refused for the entry size, not the body size
    assert_refused(unchanged.http.post(ENTRIES, content=body), 413, "entry_too_large")


def test_unknown_log_is_404(unchanged: Ledger) -> None:
    body = envelope_body(unchanged.allowed.envelope("unknown-log"))
    assert_refused(unchanged.http.post("/logs/nope/entries", content=body), 404, "unknown_log")
    for path in ["/logs/nope/checkpoint", "/logs/nope/tile/0/000.p/1", "/logs/nope/entries/0"]:
        assert_refused(unchanged.http.get(path), 404, "unknown_log")


# -- reads: entries, proofs, tiles ------------------------------------------------------------

HUGE = str(2**70)

OUT_OF_RANGE_READS = [
    f"entries/{SEEDED}",
    "entries/-1",
    f"entries/{HUGE}",
    f"entries/-{HUGE}",
    f"proof/inclusion?index={SEEDED}&size={SEEDED}",
    f"proof/inclusion?index=0&size={SEEDED + 1}",
    "proof/inclusion?index=1&size=1",
    "proof/inclusion?index=0&size=0",
    f"proof/consistency?first=1&second={SEEDED + 1}",
    "proof/consistency?first=2&second=1",
    "proof/consistency?first=0&second=1",
    f"proof/inclusion-by-hash?leaf_hash={base64.b64encode(b'0' * 32).decode()}",
]


@pytest.mark.parametrize("path", OUT_OF_RANGE_READS)
def test_read_beyond_the_tree_is_404(unchanged: Ledger, path: str) -> None:
    assert_refused(unchanged.http.get(f"/logs/{LOG}/{path}"), 404, "out_of_range")


BAD_QUERIES = [
    "proof/inclusion?index=-1",
    f"proof/inclusion?index={HUGE}",
    f"proof/inclusion?index=0&size={HUGE}",
    "proof/inclusion?index=0&size=-1",
    "proof/inclusion?index=x",
    "proof/inclusion",
    "proof/consistency?first=-1&second=1",
    f"proof/consistency?first=1&second={HUGE}",
    "proof/consistency?first=1",
    "proof/inclusion-by-hash?leaf_hash=!!!",
    "proof/inclusion-by-hash?leaf_hash=AAAA",
    "entries/x",
]


@pytest.mark.parametrize("path", BAD_QUERIES)
def test_malformed_read_is_400(unchanged: Ledger, path: str) -> None:
    assert_refused(unchanged.http.get(f"/logs/{LOG}/{path}"), 400, "bad_request")


BAD_TILE_PATHS = [
    "tile/0/1",
    "tile/0/01",
    "tile/0/0000",
    "tile/64/000",
    "tile/00/000",
    "tile/-1/000",
    "tile/x/000",
    "tile/0/x000/001",
    "tile/0/x1/001",
    "tile/0/000.p/0",
    "tile/0/000.p/256",
    "tile/0/000.p/01",
    "tile/0/000.p/",
    "tile/0/000.p/x",
    "tile/entries/000.p/0",
    "tile/entries/000.p/256",
    "tile/entries/1",
    "tile/0/",
]


@pytest.mark.parametrize("path", BAD_TILE_PATHS)
def test_bad_tile_path_is_404(unchanged: Ledger, path: str) -> None:
    assert_refused(unchanged.http.get(f"/logs/{LOG}/{path}"), 404, "bad_tile_path")


MISSING_TILES = [
    f"tile/0/000.p/{SEEDED + 1}",
    "tile/0/000.p/255",
    "tile/0/000",
    "tile/0/001.p/1",
    "tile/1/000.p/1",
    "tile/63/000.p/1",
    f"tile/entries/000.p/{SEEDED + 1}",
    "tile/entries/000",
    "tile/entries/001.p/1",
    # Far beyond any tree: the index does not even fit a signed 64-bit database column.
    "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
    "tile/entries/x999/x999/x999/x999/x999/x999/x999/999.p/1",
]


@pytest.mark.parametrize("path", MISSING_TILES)
def test_tile_wider_than_the_tree_is_404(unchanged: Ledger, path: str) -> None:
    assert_refused(unchanged.http.get(f"/logs/{LOG}/{path}"), 404, "out_of_range")


def test_existing_partial_tiles_are_served(unchanged: Ledger) -> None:
    """The contrast to the refusals above: the tiles the tree has are there, at their width."""
    tile = unchanged.http.get(f"/logs/{LOG}/tile/0/000.p/{SEEDED}")
    assert tile.status_code == 200 and len(tile.content) == SEEDED * 32
    bundle = unchanged.http.get(f"/logs/{LOG}/tile/entries/000.p/{SEEDED}")
    assert bundle.status_code == 200


# -- duplicates -------------------------------------------------------------------------------


def _urlsafe(env: Envelope) -> bytes:
    """`env` as JSON with URL-safe, unpadded base64: other bytes, the same envelope."""
    obj = env.to_json()

    def enc(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    obj["payload"] = enc(env.payload)
    obj["signatures"] = [{"keyid": s.keyid, "sig": enc(s.sig)} for s in env.signatures]
    return json.dumps(obj).encode()


def test_reposting_the_same_envelope_returns_its_index(ledger: Ledger) -> None:
    # A payload whose base64 holds '+' and '/', so the URL-safe spelling really differs.
    tag = next(
        t
        for t in (f"duplicate {i} ~~~ ??? >>>" for i in range(1000))
        if {"+", "/"} <= set(base64.b64encode(statement_payload(t)).decode())
    )
    env = ledger.allowed.envelope(tag)
    first = ledger.http.post(ENTRIES, content=envelope_body(env))
    assert first.status_code == 200, first.text
    index, size = first.json()["index"], ledger.size()
    assert first.json()["duplicate"] is False

    again = ledger.http.post(ENTRIES, content=envelope_body(env))
    assert again.status_code == 200, again.text
    assert (again.json()["index"], again.json()["duplicate"]) == (index, True)

    urlsafe = _urlsafe(env)
    assert urlsafe != envelope_body(env) and b"-" in urlsafe and b"_" in urlsafe
    third = ledger.http.post(ENTRIES, content=urlsafe)
    assert third.status_code == 200, third.text
    assert (third.json()["index"], third.json()["duplicate"]) == (index, True)
    assert third.json()["leaf_hash"] == first.json()["leaf_hash"]

    assert ledger.size() == size  # the duplicates added nothing
    stored = ledger.http.get(f"{ENTRIES}/{index}").json()
    assert base64.b64decode(stored["entry"]) == env.canonical_bytes()
    assert base64.b64decode(stored["leaf_hash"]) == merkle.leaf_hash(env.canonical_bytes())
    check_log(ledger.srv.base_url, ledger.vkey, ledger.origin)


def test_nothing_refused_was_stored(ledger: Ledger) -> None:
    """Every leaf in the log is a seed or the duplicate-test entry: no refused body got in."""
    cp = check_log(ledger.srv.base_url, ledger.vkey, ledger.origin)
    entries = [
        base64.b64decode(ledger.http.get(f"{ENTRIES}/{i}").json()["entry"]) for i in range(cp.size)
    ]
    payloads = [Envelope.from_json(e).payload for e in entries]
    allowed_tags = [b"seed-", b"duplicate "]
    for p in payloads:
        assert any(tag in p for tag in allowed_tags), p[:80]
