"""A C2SP tlog-witness (https://c2sp.org/tlog-witness): checks a log's new checkpoint against the
latest one it cosigned, and cosigns it (C2SP tlog-cosignature v1) if it is consistent.

    POST <prefix>/add-checkpoint

    old <size>
    <base64 consistency proof hash>     (0 to 63 lines)

    <checkpoint note>

Answers, as the spec has them: 400 malformed request or old size > checkpoint size; 404 unknown
origin; 403 no verifying signature by the origin's trusted key (or an invalid one); 409 `old` is
not the latest cosigned size (body: that size and a newline, `Content-Type: text/x.tlog.size`);
422 the consistency proof does not verify; 409 again, with the same body, when the checkpoint has
the latest cosigned size but another root; 200 with the cosignature line.

Trust and durability:

* the witness key only ever signs a checkpoint after it *committed* it as the latest cosigned
  one for its origin; the compare-and-persist is one conditional statement in one SQLite
  transaction, so two requests -- from two threads or two processes sharing the database
  file -- can never both move the state forward from the same old state, and the witness never
  cosigns two roots for one size (sizes only grow, and an equal size needs an equal root);
* every cosigned checkpoint is kept (`cosigned` table), and requests that carried a valid log
  signature but an inconsistent tree are kept as evidence of log misbehaviour (`rejected`);
* time comes from an injectable clock, so tests never depend on the wall clock.
"""

from __future__ import annotations

import os
import sqlite3
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from attest.checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_decimal
from attest.cosignature import CosignatureSigner
from attest.errors import KeyFileError
from attest.keys import generate_private_key, load_private_key, write_key_pair
from attest.merkle import EMPTY_ROOT, HASH_SIZE, ProofError, verify_consistency
from attest.note import (
    Ed25519NoteVerifier,
    NoteError,
    NoteSignature,
    NoteVerifier,
    decode_base64,
    encode_base64,
    is_valid_name,
    parse_note,
)
from attest.vkey import parse_vkey
from verifier.errors import VerifierError

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpointError",
    "AddCheckpointRequest",
    "CosignedRecord",
    "InconsistentCheckpointError",
    "MalformedRequestError",
    "OldSizeConflictError",
    "RootConflictError",
    "UnknownOriginError",
    "UntrustedCheckpointError",
    "Witness",
    "WitnessConfig",
    "WitnessConfigError",
    "create_witness_app",
    "init_witness_dir",
    "open_witness",
    "wall_clock",
]

MAX_PROOF_LINES = 63
"""The spec: a client MUST NOT send more than 63 consistency proof lines."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""Content type of a 409 answer, whose body is the latest cosigned size and a newline."""

COSIGNATURE_CONTENT_TYPE = "text/plain; charset=utf-8"

DEFAULT_MAX_BODY = 64 * 1024
"""Request bodies over this many bytes get 413: 63 proof lines and a checkpoint with a hundred
Ed25519 signature lines fit many times over."""

Clock = Callable[[], int]
"""Returns the current POSIX time in seconds."""


def wall_clock() -> int:
    """The system's POSIX time in whole seconds."""
    return int(time.time())


# -- errors: one class per answer, mapped to HTTP statuses in `_STATUS` only -----------------


class AddCheckpointError(VerifierError):
    """The witness refuses an add-checkpoint request; the class decides the HTTP status."""


class MalformedRequestError(AddCheckpointError):
    """The body is not `old` line, proof lines, blank line, checkpoint; or old > size (400)."""


class UnknownOriginError(AddCheckpointError):
    """The checkpoint's origin is not a log this witness follows (404)."""


class UntrustedCheckpointError(AddCheckpointError):
    """No signature by the origin's trusted key verifies, or one of its signatures fails (403)."""


class OldSizeConflictError(AddCheckpointError):
    """`old` is not the latest cosigned `size` of the origin (409, body: `size`)."""

    def __init__(self, diagnostic: str, size: int) -> None:
        super().__init__(diagnostic)
        self.size = size


class RootConflictError(OldSizeConflictError):
    """The checkpoint has the latest cosigned size but another root: a fork (409, body: size)."""


class InconsistentCheckpointError(AddCheckpointError):
    """The consistency proof does not verify from the latest cosigned checkpoint (422)."""


# The single place where errors become statuses (most specific class first).
_STATUS: tuple[tuple[type[AddCheckpointError], int], ...] = (
    (MalformedRequestError, 400),
    (UntrustedCheckpointError, 403),
    (UnknownOriginError, 404),
    (OldSizeConflictError, 409),
    (InconsistentCheckpointError, 422),
)


def _status_of(e: AddCheckpointError) -> int:
    for cls, status in _STATUS:
        if isinstance(e, cls):
            return status
    raise TypeError(f"no HTTP status for {type(e).__name__}")  # a bug, not a request problem


# -- the request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddCheckpointRequest:
    """An add-checkpoint request body: `old_size`, consistency `proof`, `checkpoint` note.

    Validated on construction: a uint64 old size, at most 63 proof hashes of 32 bytes each, a
    checkpoint that parses as a signed note (nothing is verified here).
    """

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.old_size < 1 << 64:
            raise MalformedRequestError(f"old size {self.old_size} is outside 0..2^64-1")
        if len(self.proof) > MAX_PROOF_LINES:
            raise MalformedRequestError(
                f"{len(self.proof)} proof lines, at most {MAX_PROOF_LINES} are allowed"
            )
        for i, h in enumerate(self.proof):
            if len(h) != HASH_SIZE:
                raise MalformedRequestError(f"proof line {i} is {len(h)} bytes, want {HASH_SIZE}")
        try:
            parse_note(self.checkpoint)
        except NoteError as e:
            raise MalformedRequestError(f"checkpoint: {e.diagnostic}") from e

    def to_bytes(self) -> bytes:
        """The request body: `old <size>\\n`, one base64 line per proof hash, `\\n`, checkpoint."""
        head = f"old {self.old_size}\n" + "".join(encode_base64(h) + "\n" for h in self.proof)
        return head.encode("ascii") + b"\n" + self.checkpoint

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpointRequest:
        """Parse a request body exactly; raise MalformedRequestError otherwise."""
        # Every line before the separator is non-empty, so the first blank line is the separator;
        # the checkpoint's own blank line (before its signatures) comes after it.
        head, sep, checkpoint = body.partition(b"\n\n")
        if not sep:
            raise MalformedRequestError("no blank line between the old size and the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as e:
            raise MalformedRequestError("old size or proof lines are not ASCII") from e
        if not lines[0].startswith("old "):
            raise MalformedRequestError(f"first line is {lines[0][:40]!r}, want `old <size>`")
        try:
            old = parse_decimal(lines[0][len("old ") :], "old size")
        except CheckpointError as e:
            raise MalformedRequestError(e.diagnostic) from e
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise MalformedRequestError(
                f"{len(lines) - 1} proof lines, at most {MAX_PROOF_LINES} are allowed"
            )
        return cls(old, tuple(_proof_hash(line, i) for i, line in enumerate(lines[1:])), checkpoint)


def _proof_hash(line: str, i: int) -> bytes:
    try:
        return decode_base64(line)
    except ValueError as e:
        raise MalformedRequestError(f"proof line {i} is not base64: {e}") from e


# -- storage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CosignedRecord:
    """One checkpoint the witness cosigned: origin, size, root, time, note as received, line."""

    origin: str
    size: int
    root_hash: bytes
    timestamp: int
    checkpoint: bytes
    cosignature: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    checkpoint BLOB NOT NULL,
    timestamp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cosigned (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    checkpoint BLOB NOT NULL,
    cosignature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cosigned_by_size ON cosigned (origin, size);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    received INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    request BLOB NOT NULL
);
"""


def _to_sql(size: int) -> int:
    """A uint64 as the signed 64-bit integer SQLite stores (two's complement, order-free)."""
    return size - (1 << 64) if size >= 1 << 63 else size


def _from_sql(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


class _Store:
    """The witness's SQLite database. One connection per operation, so threads need no locks
    and several processes may share the file (WAL mode, busy timeout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            with _immediate(db):
                # One statement at a time: executescript() would commit the transaction first.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions; every write below opens its own.
        with closing(sqlite3.connect(self.path, timeout=60.0, isolation_level=None)) as db:
            # FULL: a commit is on disk before we answer, as the spec's "persist" requires.
            db.execute("PRAGMA synchronous=FULL")
            yield db

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """(size, root) of the latest checkpoint cosigned for `origin`; None if never."""
        with self._connect() as db:
            row = db.execute("SELECT size, root FROM latest WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else (_from_sql(row[0]), bytes(row[1]))

    def advance(
        self, expect: tuple[int, bytes] | None, record: CosignedRecord
    ) -> tuple[int, bytes] | None:
        """Atomically: if `origin`'s latest is still `expect`, make `record` the latest and keep
        it in the history. Returns None on success, else the latest state that won the race."""
        r = record
        new = (_to_sql(r.size), r.root_hash, r.checkpoint, r.timestamp)
        with self._connect() as db, _immediate(db):
            if expect is None:
                cur = db.execute(
                    "INSERT INTO latest (size, root, checkpoint, timestamp, origin)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO NOTHING",
                    (*new, r.origin),
                )
            else:
                cur = db.execute(
                    "UPDATE latest SET size = ?, root = ?, checkpoint = ?, timestamp = ?"
                    " WHERE origin = ? AND size = ? AND root = ?",
                    (*new, r.origin, _to_sql(expect[0]), expect[1]),
                )
            if cur.rowcount != 1:
                row = db.execute(
                    "SELECT size, root FROM latest WHERE origin = ?", (r.origin,)
                ).fetchone()
                return _from_sql(row[0]), bytes(row[1])  # nothing was written: commits empty
            db.execute(
                "INSERT INTO cosigned (origin, size, root, timestamp, checkpoint, cosignature)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (r.origin, _to_sql(r.size), r.root_hash, r.timestamp, r.checkpoint, r.cosignature),
            )
        # Committed. If we crash before answering, the client retries, gets 409 with this size,
        # and asks again with old = this size: an equal checkpoint is cosigned again.
        return None

    def reject(self, origin: str, received: int, status: int, reason: str, request: bytes) -> None:
        """Keep a log-signed request that failed consistency: evidence of misbehaviour."""
        with self._connect() as db, _immediate(db):
            db.execute(
                "INSERT INTO rejected (origin, received, status, reason, request)"
                " VALUES (?, ?, ?, ?, ?)",
                (origin, received, status, reason, request),
            )

    def history(self, origin: str | None = None) -> list[CosignedRecord]:
        """Every cosigned checkpoint (of `origin`, or all), oldest first."""
        sql = "SELECT origin, size, root, timestamp, checkpoint, cosignature FROM cosigned"
        args: tuple[str, ...] = ()
        if origin is not None:
            sql, args = sql + " WHERE origin = ?", (origin,)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            CosignedRecord(str(o), _from_sql(s), bytes(r), int(t), bytes(c), str(line))
            for o, s, r, t, c, line in rows
        ]

    def rejected(self) -> list[tuple[str, int, str, bytes]]:
        """(origin, status, reason, request) of every kept rejected request, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT origin, status, reason, request FROM rejected ORDER BY id")
            return [(str(o), int(s), str(why), bytes(req)) for o, s, why, req in rows]


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so a
    read-then-write inside cannot interleave with another writer's."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# -- the witness -------------------------------------------------------------------------------


class Witness:
    """A tlog-witness for the logs in `logs` (origin -> the log's checkpoint-signing key).

    State lives in the SQLite file `store_path` (created if missing); any number of `Witness`
    objects, in any number of processes, may share it. `clock` gives cosignature timestamps.
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        signer: CosignatureSigner,
        logs: Mapping[str, NoteVerifier],
        clock: Clock = wall_clock,
    ) -> None:
        for origin, key in logs.items():
            if key.name != origin:
                raise WitnessConfigError(f"log {origin!r}: its key is named {key.name!r}")
        self.signer = signer
        self.logs = dict(logs)
        self.clock = clock
        self._store = _Store(Path(store_path))

    @property
    def name(self) -> str:
        """The witness's name (the key name of its cosignatures)."""
        return self.signer.name

    @property
    def vkey(self) -> str:
        """The witness's cosignature verifier key (type 0x04)."""
        return self.signer.vkey

    def add_checkpoint(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer an add-checkpoint request body: (HTTP status, headers, response body)."""
        try:
            sigs = self.cosign_request(body)
        except OldSizeConflictError as e:
            return 409, {"Content-Type": SIZE_CONTENT_TYPE}, f"{e.size}\n".encode("ascii")
        except AddCheckpointError as e:
            headers = {"Content-Type": COSIGNATURE_CONTENT_TYPE}
            return _status_of(e), headers, (e.diagnostic + "\n").encode("utf-8")
        lines = "".join(s.line() for s in sigs)
        return 200, {"Content-Type": COSIGNATURE_CONTENT_TYPE}, lines.encode("utf-8")

    def cosign_request(self, body: bytes) -> list[NoteSignature]:
        """Check an add-checkpoint request and cosign its checkpoint; raise AddCheckpointError.

        Plan (the spec's checks, in its order):
        1. parse the request exactly (400);
        2. the checkpoint's origin must be a known log (404);
        3. a signature by that log's key must verify, and none may fail (403);
        4. old size <= checkpoint size (400);
        5. old size == the latest cosigned size, 0 if none (409 with that size);
        6. the proof: empty when old is 0; when old == size, empty and the same root as the
           latest (409 if another root); else an RFC 6962 consistency proof from the latest
           cosigned root (422); failures of a log-signed request are kept as evidence;
        7. cosign, then compare-and-persist atomically (409 if the latest moved since step 5);
           return the cosignature only once it is committed.
        """
        req = AddCheckpointRequest.parse(body)  # (1)
        cp, log_key = self._trusted_log(req.checkpoint)  # (2)
        try:
            open_checkpoint(req.checkpoint, log_key, cp.origin)  # (3)
        except CheckpointError as e:
            raise UntrustedCheckpointError(e.diagnostic) from e
        if req.old_size > cp.size:  # (4)
            raise MalformedRequestError(f"old size {req.old_size} > checkpoint size {cp.size}")
        stored = self._store.latest(cp.origin)
        size, root = stored if stored is not None else (0, EMPTY_ROOT)
        if req.old_size != size:  # (5)
            raise OldSizeConflictError(
                f"old size {req.old_size} is not the latest cosigned size {size}", size
            )
        try:
            self._check_proof(req, cp, root)  # (6)
        except (RootConflictError, InconsistentCheckpointError) as e:
            self._store.reject(cp.origin, self.clock(), _status_of(e), e.diagnostic, body)
            raise
        return [self._commit(cp, req.checkpoint, stored)]  # (7)

    def _trusted_log(self, checkpoint: bytes) -> tuple[Checkpoint, NoteVerifier]:
        """The checkpoint (parsed, not yet verified) and its origin's key (404 if unknown)."""
        try:
            cp = Checkpoint.parse(parse_note(checkpoint).text)
        except NoteError as e:
            raise MalformedRequestError(f"checkpoint: {e.diagnostic}") from e
        key = self.logs.get(cp.origin)
        if key is None:
            raise UnknownOriginError(f"unknown log origin {cp.origin!r}")
        return cp, key

    @staticmethod
    def _check_proof(req: AddCheckpointRequest, cp: Checkpoint, root: bytes) -> None:
        """Step 6 of `cosign_request`: the new tree extends the latest cosigned (size, root)."""
        if req.old_size == 0 or req.old_size == cp.size:
            if req.proof:
                raise InconsistentCheckpointError(
                    f"proof has {len(req.proof)} lines, want none from size {req.old_size}"
                )
            if req.old_size == cp.size and cp.root_hash != root:
                raise RootConflictError(
                    f"size {cp.size} was cosigned with root {root.hex()}, "
                    f"got root {cp.root_hash.hex()}",
                    cp.size,
                )
            return
        try:
            verify_consistency(req.old_size, cp.size, req.proof, root, cp.root_hash)
        except ProofError as e:
            raise InconsistentCheckpointError(f"consistency proof: {e.diagnostic}") from e

    def _commit(
        self, cp: Checkpoint, checkpoint: bytes, expect: tuple[int, bytes] | None
    ) -> NoteSignature:
        """Step 7: cosign, then persist as the latest only if the latest is still `expect`."""
        timestamp = self.clock()
        # Signing before the commit is safe: the signature leaves this function only after it.
        sig = self.signer.cosign(cp.body(), timestamp)
        record = CosignedRecord(
            cp.origin, cp.size, cp.root_hash, timestamp, checkpoint, sig.line().rstrip("\n")
        )
        winner = self._store.advance(expect, record)
        if winner is not None:
            raise OldSizeConflictError(
                f"another request moved the latest cosigned size to {winner[0]} meanwhile",
                winner[0],
            )
        return sig

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """(size, root) of the latest checkpoint cosigned for `origin`; None if never."""
        return self._store.latest(origin)

    def history(self, origin: str | None = None) -> list[CosignedRecord]:
        """Every checkpoint this witness cosigned (of `origin`, or of all logs), oldest first."""
        return self._store.history(origin)

    def rejected(self) -> list[tuple[str, int, str, bytes]]:
        """(origin, status, reason, request) of log-signed requests refused as inconsistent."""
        return self._store.rejected()

    def info(self) -> dict[str, Any]:
        """What `GET /` shows: name, vkey, and the logs followed (origin, vkey, latest size)."""
        logs = []
        for origin, key in self.logs.items():
            latest = self._store.latest(origin)
            logs.append(
                {
                    "origin": origin,
                    "vkey": getattr(key, "vkey", None),
                    "size": None if latest is None else latest[0],
                }
            )
        return {"name": self.name, "vkey": self.vkey, "logs": logs}


# -- HTTP --------------------------------------------------------------------------------------


def create_witness_app(witness: Witness, max_body_bytes: int = DEFAULT_MAX_BODY) -> FastAPI:
    """The ASGI app: `POST /add-checkpoint` (bodies over `max_body_bytes` get 413), `GET /`."""
    app = FastAPI(title="behaviour-ledger witness", version="0.1.0")

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        """C2SP tlog-witness add-checkpoint."""
        body = await _read_limited(request, max_body_bytes)
        if body is None:
            return PlainTextResponse(f"request body exceeds {max_body_bytes} bytes\n", 413)
        # SQLite and Ed25519 block: run them off the event loop.
        status, headers, content = await run_in_threadpool(witness.add_checkpoint, body)
        return Response(content, status_code=status, headers=headers)

    @app.get("/")
    def info() -> dict[str, Any]:
        """The witness's name, cosignature vkey and the logs it follows."""
        return witness.info()

    return app


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# -- the data directory ------------------------------------------------------------------------

CONFIG_NAME = "config.toml"
KEY_NAME = "witness.key"
DB_NAME = "witness.db"
VKEY_NAME = "witness.vkey"


class WitnessConfigError(VerifierError):
    """The witness's data directory, config or a log key given to it is unusable."""


@dataclass(frozen=True)
class WitnessConfig:
    """A witness data directory: its `name` and the `logs` it follows as (origin, vkey)."""

    data: Path
    name: str
    logs: tuple[tuple[str, str], ...]

    @property
    def key_path(self) -> Path:
        """The witness's Ed25519 private key (PKCS#8 PEM)."""
        return self.data / KEY_NAME

    @property
    def db_path(self) -> Path:
        """The SQLite database."""
        return self.data / DB_NAME

    @property
    def vkey_path(self) -> Path:
        """Where the cosignature verifier key is published for policy writers."""
        return self.data / VKEY_NAME


def log_verifier(vkey: str) -> Ed25519NoteVerifier:
    """A log's checkpoint key from its vkey: must be Ed25519 (type 0x01); name = origin."""
    try:
        key = parse_vkey(vkey)
    except NoteError as e:
        raise WitnessConfigError(f"log key {vkey[:80]!r}: {e.diagnostic}") from e
    if not isinstance(key, Ed25519NoteVerifier):
        raise WitnessConfigError(f"log key {key.name}: not an Ed25519 (type 0x01) key")
    return key


def init_witness_dir(
    data: Path, *, name: str | None = None, add_logs: Sequence[str] = (), default_name: str
) -> WitnessConfig:
    """Open the data directory `data`, creating it on first run; add the logs `add_logs`.

    First run: a key (`witness.key`, `.pub`), `config.toml` (name, logs) and `witness.vkey`.
    Later runs keep the name (a different `name` is an error: the key ID depends on it) and
    add logs not yet listed; a listed origin with another key is an error, never replaced.
    The database is created by `open_witness`. Not safe against two concurrent *first* runs.
    """
    # Check the arguments before touching the disk, so a typo leaves nothing behind.
    new_logs = [(log_verifier(vkey).name, vkey) for vkey in add_logs]
    if name is not None and not is_valid_name(name):
        raise WitnessConfigError(f"invalid witness name {name!r}: no spaces or '+'")
    data.mkdir(parents=True, exist_ok=True)
    config = data / CONFIG_NAME
    cfg = _read_config(data) if config.exists() else None
    if cfg is not None and name is not None and name != cfg.name:
        raise WitnessConfigError(f"{config}: witness is named {cfg.name!r}, not {name!r}")
    logs = dict(cfg.logs) if cfg is not None else {}
    for origin, vkey in new_logs:
        if logs.get(origin, vkey) != vkey:
            raise WitnessConfigError(f"log {origin!r} is already followed with another key")
        logs[origin] = vkey
    new = WitnessConfig(data, cfg.name if cfg else (name or default_name), tuple(logs.items()))
    signer = _load_or_create_key(new)
    if new != cfg:
        # Written last and atomically: a crash before leaves no config, and the next run
        # finishes the job with the key already made.
        _write_atomic(config, tomli_w.dumps(_config_toml(new)).encode("utf-8"))
    if not new.vkey_path.exists() or new.vkey_path.read_text().strip() != signer.vkey:
        _write_atomic(new.vkey_path, (signer.vkey + "\n").encode("ascii"))
    return new


def open_witness(cfg: WitnessConfig, clock: Clock = wall_clock) -> Witness:
    """The Witness of a data directory made by `init_witness_dir`."""
    logs: dict[str, NoteVerifier] = {o: log_verifier(v) for o, v in cfg.logs}
    return Witness(cfg.db_path, _load_or_create_key(cfg), logs, clock)


def _load_or_create_key(cfg: WitnessConfig) -> CosignatureSigner:
    try:
        if not cfg.key_path.exists():
            write_key_pair(cfg.key_path, generate_private_key())
        return CosignatureSigner(cfg.name, load_private_key(cfg.key_path))
    except (KeyFileError, NoteError) as e:
        raise WitnessConfigError(e.diagnostic) from e


def _config_toml(cfg: WitnessConfig) -> dict[str, Any]:
    return {
        "name": cfg.name,
        "logs": [{"origin": o, "vkey": v} for o, v in cfg.logs],
    }


def _read_config(data: Path) -> WitnessConfig:
    path = data / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        name = raw["name"]
        logs = tuple((str(e["origin"]), str(e["vkey"])) for e in raw.get("logs", []))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise WitnessConfigError(f"{path}: unreadable witness config: {e}") from e
    if not isinstance(name, str):
        raise WitnessConfigError(f"{path}: `name` is not a string")
    for origin, vkey in logs:
        if log_verifier(vkey).name != origin:
            raise WitnessConfigError(f"{path}: log {origin!r} has a key named otherwise")
    return WitnessConfig(data, name, logs)


def _write_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
