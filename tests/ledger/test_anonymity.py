"""What the anonymous tier keeps: nothing that identifies or links a reporter.

Real anonymous reports are filed from a distinctive loopback source address with a distinctive
User-Agent, through a real issuer and a real ledger. Then every place either server could have
kept something is searched — the ledger's database (every table, row by row, and the raw SQLite
files including the WAL, while running and after shutdown), both data directories, both
processes' stdout and stderr, and every response either server sent — for:

* the client's address and User-Agent (must appear nowhere);
* what issuance saw (blinded messages, blind signatures: never kept by anyone) and what
  redemption carried (the token's authenticator: never kept);
* the token's nonce, which the ledger keeps as its spent-token marker: found (a positive control
  that the search works) only in a row that holds nothing but the marker, never next to anything
  that points at the entry (leaf hash, index, a time).

Stored times of the anonymous log must be whole hours.
"""

from __future__ import annotations

import base64
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from attest import privacypass as pp
from attest.dsse import Envelope
from attest.predicates import FieldReport
from attest.statement import parse_statement
from clients.report_cmd import ReportFields, file_anonymous, wait_for_inclusion
from tests.ledger.test_issuer import HOUR, IssuerProcess, running_issuer, running_lab

ADDRESS = "127.0.0.77"
USER_AGENT = "AnonProbe/7.7 (linkability-check; marker=q7Zx3w)"
REPORTS = 3


# -- what the client sent and received ------------------------------------------------------------


@dataclass
class Wire:
    """Everything that crossed the wire, captured by httpx event hooks."""

    tokens: list[pp.Token] = field(default_factory=list)
    blinded: list[bytes] = field(default_factory=list)
    blind_sigs: list[bytes] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)  # status line, headers and body

    def on_request(self, request: httpx.Request) -> None:
        auth = request.headers.get("authorization")
        if auth is not None:
            self.tokens.append(pp.parse_authorization(auth))
        if request.url.path == "/token-request":
            self.blinded.append(pp.TokenRequest.decode(request.read()).blinded_msg)

    def on_response(self, response: httpx.Response) -> None:
        body = response.read()
        head = f"{response.status_code}\n" + "".join(
            f"{k}: {v}\n" for k, v in response.headers.multi_items()
        )
        self.responses.append(head.encode() + body)
        if response.request.url.path == "/token-request" and response.status_code == 200:
            self.blind_sigs.append(body)


def client(base_url: str, wire: Wire) -> httpx.Client:
    """A client bound to ADDRESS, sending USER_AGENT, recording everything."""
    return httpx.Client(
        base_url=base_url,
        transport=httpx.HTTPTransport(local_address=ADDRESS),
        headers={"User-Agent": USER_AGENT},
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
        timeout=60.0,
    )


def require_source_address() -> None:
    """Skip unless this machine lets a socket bind ADDRESS and shows it as the peer address."""
    with socket.socket() as server, socket.socket() as probe:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        try:
            probe.bind((ADDRESS, 0))
            probe.connect(server.getsockname())
        except OSError as e:
            pytest.skip(f"cannot bind {ADDRESS}: {e}")
        conn, peer = server.accept()
        conn.close()
    assert peer[0] == ADDRESS


# -- searching ------------------------------------------------------------------------------------


def spellings(needle: bytes) -> set[bytes]:
    """`needle` raw, in hex, and in base64 / base64url at each of the three byte alignments it
    could have inside a longer encoded value (only the characters it alone determines)."""
    out = {needle, needle.hex().encode(), needle.hex().upper().encode()}
    for shift in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\0" * shift + needle + b"\0\0\0").rstrip(b"=")
            start = 0 if shift == 0 else 4
            end = (shift + len(needle)) // 3 * 4  # groups made of needle bytes only
            if end - start >= 16:
                out.add(text[start:end])
    return out


def text_spellings(text: str) -> set[bytes]:
    """A string as UTF-8, UTF-16 (SQLite may store either) and in base64."""
    raw = text.encode()
    return {raw, text.encode("utf-16-le"), *spellings(raw)}


def found(haystack: bytes, needles: dict[str, set[bytes]]) -> list[str]:
    """Names of the needles any of whose spellings occurs in `haystack`."""
    return [name for name, forms in needles.items() if any(f in haystack for f in forms)]


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file under `root`."""
    yield from (p for p in sorted(root.rglob("*")) if p.is_file())


def sqlite_rows(db: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """(table, row) for every row of every table, read without writing anything."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            for row in cur:
                yield table, dict(zip(names, row, strict=True))
    finally:
        conn.close()


def cell_bytes(value: object) -> bytes:
    """A cell as bytes to search in."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


# -- the test -------------------------------------------------------------------------------------


def test_anonymous_reports_leave_no_identifying_or_linking_trace(tmp_path: Path) -> None:
    require_source_address()
    wire = Wire()
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        ledger_db = lab.ledger.data / "ledger.db"
        with client(lab.url, wire) as ledger_http, client(iss.base_url, wire) as issuer_http:
            accepted = [
                file_anonymous(
                    ledger_http,
                    issuer_http,
                    ReportFields("chat-model", "1", "grief", f"anonymity probe report {i}"),
                )
                for i in range(REPORTS)
            ]
            indexes = {
                wait_for_inclusion(
                    ledger_http, a.leaf_hash, deadline=time.time() + 120
                ).index: a.leaf_hash
                for a in accepted
            }
        assert len(wire.tokens) == len(wire.blinded) == len(wire.blind_sigs) == REPORTS
        assert sorted(indexes) == list(range(REPORTS))

        anon_id = next(
            int(str(row["id"]))
            for table, row in sqlite_rows(ledger_db)
            if table == "logs" and row["name"] == "anonymous"
        )
        inspect_database(ledger_db, wire, indexes, anon_id)  # while running: WAL is live
        inspect_entries(lab.url)
        inspect_files(lab.ledger.data, wire, ledger=True)
        inspect_files(iss.data, wire, ledger=False)
    # After shutdown the WAL is folded into the database file: search again, and the logs.
    inspect_database(ledger_db, wire, indexes, anon_id)
    inspect_files(lab.ledger.data, wire, ledger=True)
    inspect_logs(lab.ledger.stderr_all().encode() + ledger_stdout(lab.ledger.data), iss, wire)
    for response in wire.responses:
        assert found(response, identity_needles()) == [], response[:300]


def identity_needles() -> dict[str, set[bytes]]:
    """The client's address and User-Agent (and the UA's distinctive marker alone)."""
    return {
        "client address": text_spellings(ADDRESS),
        "user agent": text_spellings(USER_AGENT),
        "user agent marker": text_spellings("q7Zx3w"),
    }


def issuance_needles(wire: Wire) -> dict[str, set[bytes]]:
    """What only issuance saw, and the secret half of each token."""
    needles: dict[str, set[bytes]] = {}
    for i, (b, s, t) in enumerate(zip(wire.blinded, wire.blind_sigs, wire.tokens, strict=True)):
        needles[f"blinded_msg {i}"] = spellings(b[:64])
        needles[f"blind_sig {i}"] = spellings(s[:64])
        needles[f"authenticator {i}"] = spellings(t.authenticator[:64])
    return needles


def nonce_needles(wire: Wire) -> dict[str, set[bytes]]:
    """The tokens' nonces (stored by the ledger as spent-token markers)."""
    return {f"nonce {i}": spellings(t.nonce) for i, t in enumerate(wire.tokens)}


def inspect_database(db: Path, wire: Wire, indexes: dict[int, bytes], anon_id: int) -> None:
    """Row by row: no identity, no issuance secret, nonces only in bare spent-token rows, and
    whole-hour times in every row of the anonymous log."""
    forbidden = identity_needles() | issuance_needles(wire)
    nonces = nonce_needles(wire)
    token_key_ids = {t.token_key_id for t in wire.tokens}
    leaf_forms = {name: spellings(h) for name, h in ((str(i), h) for i, h in indexes.items())}
    nonce_rows = timed = 0
    for table, row in sqlite_rows(db):
        for column, value in row.items():
            hits = found(cell_bytes(value), forbidden)
            assert hits == [], f"{table}.{column} holds {hits}"
        holds_nonce = any(found(cell_bytes(v), nonces) for v in row.values())
        if holds_nonce:
            nonce_rows += 1
            for column, value in row.items():
                if column == "log_id":
                    assert value == anon_id
                    continue
                is_marker = bool(found(cell_bytes(value), nonces)) or value in token_key_ids
                assert is_marker, f"{table}.{column} = {value!r} sits next to a token nonce"
                assert found(cell_bytes(value), leaf_forms) == [], "nonce linked to a leaf"
        if row.get("log_id") == anon_id:
            for column, value in row.items():
                if isinstance(value, int) and 1_000_000_000 <= value < 10_000_000_000:
                    assert value % HOUR == 0, f"{table}.{column} = {value}: finer than the hour"
                    timed += 1
    assert nonce_rows == REPORTS, "positive control: each spent token is remembered once"
    assert timed > 0, "positive control: the anonymous log's checkpoints carry a time"
    # Positive control for the raw search below: the leaf hashes are in the database.
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert all(found(raw, {"leaf": spellings(h)}) for h in indexes.values())


def inspect_entries(ledger_url: str) -> None:
    """The public entries: whole-hour issuedAt, and no identity anywhere in them."""
    size = int(httpx.get(f"{ledger_url}/logs/anonymous/checkpoint").text.split("\n")[1])
    for i in range(size):
        raw = base64.b64decode(
            httpx.get(f"{ledger_url}/logs/anonymous/entries/{i}").json()["entry"]
        )
        assert found(raw, identity_needles()) == []
        stmt = parse_statement(Envelope.from_json(raw).payload)
        assert isinstance(stmt.predicate, FieldReport)
        assert stmt.predicate.issued_at % HOUR == 0


def inspect_files(root: Path, wire: Wire, *, ledger: bool) -> None:
    """Raw bytes of every file under a data directory (the SQLite files and WAL included).

    The issuer keeps no nonce either; the ledger's nonces were checked row by row.
    """
    needles = identity_needles() | issuance_needles(wire)
    if not ledger:
        needles |= nonce_needles(wire)
    for path in files_under(root):
        hits = found(path.read_bytes(), needles)
        assert hits == [], f"{path} holds {hits}"


def ledger_stdout(data: Path) -> bytes:
    """stdout of every start of the ledger process."""
    return b"".join(p.read_bytes() for p in sorted(data.parent.glob(f"{data.name}.server-*")))


def inspect_logs(ledger_logs: bytes, iss: IssuerProcess, wire: Wire) -> None:
    """Neither process printed anything about a client or a token."""
    needles = identity_needles() | issuance_needles(wire) | nonce_needles(wire)
    assert found(ledger_logs, needles) == [], "ledger output"
    assert found(iss.outputs(), needles) == [], "issuer output"
