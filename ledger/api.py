"""HTTP API (FastAPI): C2SP tlog-tiles reads, writes with proofs, JSON proofs by index or hash.

Domain errors map to HTTP statuses in one place (`_ERRORS`); every error body is
`{"error": <code>, "detail": <message>}`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attest import merkle
from attest.checkpoint import MAX_TREE_SIZE
from attest.tiles import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    TileError,
    TileId,
    decode_bundle,
    encode_bundle,
    parse_index,
    parse_level,
)
from attest.tlog_proof import HEADER, MAX_PROOF_HASHES, TlogProof, format_tlog_proof
from ledger import index
from ledger.admission import AdmissionError, Admitted
from ledger.errors import LedgerError
from ledger.forwarding import SequencerUnavailable
from ledger.log import InclusionProof, Log, LogRangeError
from ledger.sequencer import PublishError, Sequenced
from ledger.server import HostedLog, LedgerServer
from ledger.storage import StorageError

MAX_INDEX = (1 << 63) - 1
Index = Annotated[int, Query(ge=0, le=MAX_INDEX)]
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
MUTABLE = {"Cache-Control": "no-cache"}
OCTETS = "application/octet-stream"


class ErrorBody(BaseModel):
    """Every error answer: a stable code and a human-readable line."""

    error: str
    detail: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: each is an `ErrorBody` in JSON."""
    return {s: {"model": ErrorBody, "description": _WHY[s]} for s in statuses}


_WHY = {
    400: "Malformed request or statement",
    401: "A token is required (the anonymous log); see WWW-Authenticate",
    403: "Not authorised: signature, key chain, credential or token refused",
    404: "No such log, entry, tile or tree size",
    413: "Request body or entry too large",
    422: "A citation in the statement does not resolve",
    503: "Committed but not yet published to the tile store, or the sequencer did not answer; "
    "a retry returns the same index",
}


def _body(media_type: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": schema}}}


_BINARY = {"type": "string", "format": "binary"}
_ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["payloadType", "payload", "signatures"],
    "properties": {
        "payloadType": {"type": "string"},
        "payload": {"type": "string", "description": "base64 of the in-toto Statement"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sig"],
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string"}},
            },
        },
    },
}
_JSON_OBJECT = {"type": "object"}


class ApiError(LedgerError):
    """An error the API reports as `{error, detail}` with `status`."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


# Domain error -> (status, error code). The single place where statuses are decided.
_ERRORS: dict[type[Exception], tuple[int, str]] = {
    LogRangeError: (404, "out_of_range"),
    TileError: (404, "bad_tile_path"),
    StorageError: (500, "storage_inconsistent"),
    merkle.ProofError: (400, "bad_proof_request"),
    PublishError: (503, "not_published"),
    SequencerUnavailable: (503, "sequencer_unavailable"),
}


def b64(data: bytes) -> str:
    """Standard base64, as every JSON field of this API uses."""
    return base64.b64encode(data).decode()


BATCH_BODY_LIMIT = 16 * 1024 * 1024
"""Request body limit of the batch route (the others have the config's max_body_bytes)."""


class BodyLimit:
    """Refuse request bodies over the route's limit with 413, before the handler reads them:
    `limit` bytes, or `BATCH_BODY_LIMIT` on the batch route."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = BATCH_BODY_LIMIT if scope["path"].endswith("/entries/batch") else self.limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            resp = _error(413, "body_too_large", f"request body exceeds {limit} bytes")
            await resp(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
            return msg

        await self.app(scope, limited, send)


def create_app(server: LedgerServer) -> FastAPI:
    """The ASGI app serving every log of `server` under `/logs/{name}`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            await server.stop()

    app = LedgerApp(server, title="behaviour-ledger", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=server.max_body_bytes)
    _install_error_handlers(app)
    _install_routes(app, server)
    _document_errors_as_served(app)
    return app


def _document_errors_as_served(app: FastAPI) -> None:
    """FastAPI documents a 422 validation error on every route with parameters; this API
    answers 400 `{error, detail}` instead (`_install_error_handlers`). Drop those 422s (a
    route that does answer 422, like a write with a bad citation, lists its own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        for path in doc.get("paths", {}).values():
            for op in path.values():
                res = op.get("responses", {})
                if "HTTPValidationError" in str(res.get("422", {})):
                    del res["422"]
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.error, e.detail)

    @app.exception_handler(AdmissionError)
    async def admission_error(_: Request, e: AdmissionError) -> JSONResponse:
        resp = _error(e.status, e.error, e.diagnostic)
        resp.headers.update(e.headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return _error(400, "bad_request", "; ".join(_describe(err) for err in e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, "http_error", str(e.detail))

    for exc_type, (status, code) in _ERRORS.items():
        app.add_exception_handler(exc_type, _domain_handler(status, code))


def _domain_handler(status: int, code: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(_: Request, e: Exception) -> Response:
        return _error(status, code, getattr(e, "diagnostic", str(e)))

    return handler


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', 'invalid')}"


def _install_routes(app: FastAPI, server: LedgerServer) -> None:
    def hosted(name: str) -> HostedLog:
        h = server.logs.get(name)
        if h is None:
            raise ApiError(404, "unknown_log", f"no log named {name!r}")
        return h

    @app.get("/logs", responses=_errors(400))
    def list_logs() -> list[dict[str, str]]:
        """Every log of this server: name, origin, verifier key, partition."""
        return [
            {
                "name": h.name,
                "origin": h.origin,
                "vkey": h.vkey,
                "partition": h.partition,
                "operator_vkey": h.operator_vkey,
            }
            for h in server.logs.values()
        ]

    @app.get(
        "/logs/{name}/checkpoint",
        response_class=Response,
        responses={
            200: _body("text/plain", "The signed checkpoint note", {"type": "string"}),
            **_errors(400, 404),
        },
    )
    def checkpoint(name: str) -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
        head = hosted(name).log.head()
        return Response(head.checkpoint, media_type="text/plain; charset=utf-8", headers=MUTABLE)

    @app.get(
        "/logs/{name}/tile/{level}/{path:path}",
        response_class=Response,
        responses={200: _body(OCTETS, "Tile or entry bundle bytes", _BINARY), **_errors(400, 404)},
    )
    def tile(name: str, level: str, path: str, request: Request) -> Response:
        """A hash tile or entry bundle (C2SP tlog-tiles), full or partial. Entry bundles are
        gzip-compressed on the wire for clients that accept it (tlog-tiles: SHOULD)."""
        h = hosted(name)
        lvl = parse_level(level)
        index, width = parse_index(path)
        if index > MAX_INDEX:  # no such tile, and the database's signed 64-bit index overflows
            raise LogRangeError(f"tile {level}/{path} does not exist")
        if lvl == ENTRIES_LEVEL:
            data = _bundle(h, index, width)
            if not _accepts_gzip(request.headers.get("accept-encoding", "")):
                return Response(data, media_type=OCTETS, headers={**IMMUTABLE, **VARY})
            return Response(
                gzip.compress(data, compresslevel=6, mtime=0),
                media_type=OCTETS,
                headers={**IMMUTABLE, **VARY, "Content-Encoding": "gzip"},
            )
        data = h.log.store.read_tile(h.log.id, TileId(lvl, index))
        if len(data) < width * 32:
            raise LogRangeError(f"tile {level}/{path} does not exist (yet)")
        return Response(data[: width * 32], media_type=OCTETS, headers=IMMUTABLE)

    @app.post(
        "/logs/{name}/entries",
        response_model=None,
        responses={
            200: _body("application/json", "Sequenced, with its proofs", _JSON_OBJECT),
            202: _body("application/json", "Anonymous log: queued, with a receipt", _JSON_OBJECT),
            **_errors(400, 401, 403, 404, 413, 422, 503),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ENVELOPE_SCHEMA}},
            }
        },
    )
    async def add_entry(name: str, request: Request) -> dict[str, Any] | JSONResponse:
        """Admit, sequence and prove one DSSE envelope; returns once it is in a checkpoint.

        The anonymous log instead answers 202 with a signed receipt at once, and integrates
        the entry in its next shuffled batch.
        """
        h = hosted(name)
        body, auth = await request.body(), request.headers.get("authorization")
        # Admission verifies signatures and reads the database: keep it off the event loop
        # (and, with admission workers, off this process).
        if h.queue is None and server.admission_pool is not None:
            [one] = await asyncio.to_thread(server.admit, h, [body])
            if isinstance(one, LedgerError):
                raise one
            admitted = one
        else:
            admitted = await asyncio.to_thread(h.rule.admit, body, auth)
        if h.queue is not None:
            acc = await asyncio.to_thread(h.queue.accept, admitted)
            return JSONResponse(
                {
                    "leaf_hash": b64(acc.leaf_hash),
                    "receipt": acc.receipt,
                    "integrate_by": acc.integrate_by,
                },
                status_code=202,
            )
        return _entry_answer(h, await h.sequencer.add(admitted))

    @app.post(
        "/logs/{name}/entries/batch",
        response_model=None,
        responses={
            200: _body(
                "application/json",
                "One result per envelope, in order: sequenced with its tlog-proof, or refused",
                _JSON_OBJECT,
            ),
            **_errors(400, 404, 413),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["envelopes"],
                            "properties": {
                                "envelopes": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": MAX_BATCH,
                                    "items": _ENVELOPE_SCHEMA,
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def add_entries(name: str, request: Request) -> dict[str, Any]:
        """Admit, sequence and prove up to MAX_BATCH envelopes in one request (what probe
        workers and bulk importers use); returns once every admitted one is in a checkpoint.

        Each envelope is judged on its own: the answer lists, in order, either the entry
        (`index`, `leaf_hash`, `duplicate`, `tlog_proof`) or the refusal (`status`, `error`,
        `detail`, as the single-entry route would answer). The anonymous log takes one token
        per entry and has no batch route.
        """
        h = hosted(name)
        if h.queue is not None:
            raise ApiError(400, "no_batch", "the anonymous log takes one token per entry")
        return await _add_batch(server, h, await request.body())

    @app.get("/logs/{name}/entries/{index}", responses=_errors(400, 404))
    def get_entry(name: str, index: int) -> dict[str, Any]:
        """The entry at `index`: its canonical bytes (base64) and leaf hash."""
        if not 0 <= index <= MAX_INDEX:
            raise LogRangeError(f"index {index} out of range")
        data = hosted(name).log.entry(index)
        return {"index": index, "leaf_hash": b64(merkle.leaf_hash(data)), "entry": b64(data)}

    @app.get("/logs/{name}/proof/inclusion", responses=_errors(400, 404))
    def inclusion(name: str, index: Index, size: Index | None = None) -> dict[str, Any]:
        """RFC 9162 inclusion proof of entry `index` in the tree of `size` (default: latest)."""
        log = hosted(name).log
        size = log.head().size if size is None else size
        p = log.inclusion_proof(index, size)
        return {"index": p.index, "size": p.size, "inclusion_proof": [b64(x) for x in p.hashes]}

    @app.get("/logs/{name}/proof/inclusion-by-hash", responses=_errors(400, 404))
    def inclusion_by_hash(name: str, leaf_hash: str, size: Index | None = None) -> dict[str, Any]:
        """Inclusion proof of the entry whose leaf hash is `leaf_hash` (base64)."""
        log = hosted(name).log
        want = _decode_hash(leaf_hash)
        size = log.head().size if size is None else size
        index = log.index_of(want)
        if index is None or index >= size:
            raise LogRangeError(f"no entry with leaf hash {leaf_hash} in the tree of size {size}")
        p = log.inclusion_proof(index, size)
        return {"index": p.index, "size": p.size, "inclusion_proof": [b64(x) for x in p.hashes]}

    @app.get("/logs/{name}/proof/consistency", responses=_errors(400, 404))
    def consistency(name: str, first: Index, second: Index) -> dict[str, Any]:
        """RFC 9162 consistency proof between two tree sizes."""
        p = hosted(name).log.consistency_proof(first, second)
        return {
            "first": p.first,
            "second": p.second,
            "consistency_proof": [b64(x) for x in p.hashes],
        }

    @app.get("/logs/{name}/index", responses=_errors(400, 404))
    def statement_index(
        name: str,
        model: str | None = None,
        version: str | None = None,
        category: str | None = None,
        tier: str | None = None,
        predicate_type: Annotated[str | None, Query(alias="type")] = None,
        start: Index = 0,
        limit: Annotated[int, Query(ge=1, le=index.MAX_LIMIT)] = index.MAX_LIMIT,
    ) -> dict[str, Any]:
        """The read index: indices of the statements about a model (version, category, tier,
        type). Unverified hints: fetch each entry and verify its inclusion. `size` is how far
        the index reaches; page with `start` = last index + 1 while `entries` is full."""
        given = {
            "model": model,
            "version": version,
            "category": category,
            "tier": tier,
            "predicate_type": predicate_type,
        }
        where = {k: v for k, v in given.items() if v is not None}
        size, rows = index.query(hosted(name).log, where, start=start, limit=limit)
        return {
            "size": size,
            "entries": [
                {
                    "index": r.idx,
                    "type": r.predicate_type,
                    "model": r.model,
                    "version": r.version,
                    "weights_sha256": r.weights_sha256,
                    "category": r.category,
                    "tier": r.tier,
                    "predecessor_version": r.predecessor_version,
                }
                for r in rows
            ],
        }


MAX_BATCH = 1024
"""Envelopes one batch request may carry."""


def _batch_entries(raw: bytes) -> list[bytes] | None:
    """The envelopes of a batch request as their bytes in it, without parsing them: for a body
    `{"envelopes": [...]}` (JSON whitespace anywhere between tokens) of 1 to `MAX_BATCH`
    objects nested at most 3 deep; None for any other body, which `_batch_bodies` reads.

    The cut is only lexical: strings are skipped whole and brackets counted, so for valid JSON
    it falls exactly between the array's elements, and the whole body is valid JSON if and only
    if every element is (the text around them is checked here). The admission workers parse
    each element anyway (`ledger.admission.admit_batch_entry`, None for one that is not JSON,
    after which `_batch_bodies` words the request's error), so the serving process neither
    decodes the request nor re-encodes each envelope."""
    m = _BATCH_START.match(raw)
    if m is None:
        return None
    # Without a backslash no string holds an escaped quote: a string ends at the next quote,
    # which the pattern finds at memchr speed (about 3 times faster than checking escapes).
    element = _BATCH_ELEMENT if b"\\" in raw else _BATCH_ELEMENT_UNESCAPED
    entries: list[bytes] = []
    pos = m.end()
    while True:
        m = element.match(raw, pos)
        if m is None:
            return None
        entries.append(m.group(1))
        pos = m.end()
        if m.group(2) is None:
            break
        if len(entries) == MAX_BATCH:
            return None
    return entries if _BATCH_END.fullmatch(raw, pos) else None


_WS = rb"[ \t\n\r]*"  # JSON's whitespace


def _batch_element(string: bytes) -> re.Pattern[bytes]:
    """`_batch_entries`' pattern of one element and what follows it (a comma, or the end of
    the array ahead), given the pattern of a JSON string."""
    other = rb'[^{}\[\]"]++'  # anything but brackets and strings; a parser checks it
    inner = rb"(?:" + other + rb"|" + string + rb")*+"
    for _ in range(2):  # objects and arrays nested at most 3 deep
        nested = rb"\{" + inner + rb"\}|\[" + inner + rb"\]"
        inner = rb"(?:" + other + rb"|" + string + rb"|" + nested + rb")*+"
    return re.compile(rb"(\{" + inner + rb"\})" + _WS + rb"(?:(,)" + _WS + rb"|(?=\]))", re.DOTALL)


_BATCH_START = re.compile(_WS + rb"\{" + _WS + rb'"envelopes"' + _WS + rb":" + _WS + rb"\[" + _WS)
_BATCH_ELEMENT = _batch_element(rb'"(?:[^"\\]++|\\.)*+"')  # an escape is skipped whole
_BATCH_ELEMENT_UNESCAPED = _batch_element(rb'"[^"]*+"')
_BATCH_END = re.compile(rb"\]" + _WS + rb"\}" + _WS)


def _batch_bodies(raw: bytes) -> list[bytes]:
    """The envelopes of a batch request, each re-encoded as the single-entry route's body."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, "bad_request", f"body is not JSON: {e}") from e
    envs = doc.get("envelopes") if isinstance(doc, dict) else None
    if not isinstance(envs, list) or not 1 <= len(envs) <= MAX_BATCH:
        raise ApiError(
            400, "bad_request", f'want {{"envelopes": [1 to {MAX_BATCH} DSSE envelopes]}}'
        )
    return [json.dumps(e).encode() for e in envs]


def _entry_answer(h: HostedLog, seq: Sequenced) -> dict[str, Any]:
    """The answer to a single-entry write: the entry, its checkpoint and proofs."""
    return _answer(seq, h.log.inclusion_proof(seq.index, seq.head.size, checked=True))


def _answer(seq: Sequenced, proof: InclusionProof) -> dict[str, Any]:
    """`_entry_answer`, given the entry's inclusion proof."""
    note = seq.head.checkpoint.encode()
    return {
        "index": seq.index,
        "leaf_hash": b64(seq.leaf_hash),
        "duplicate": seq.duplicate,
        "checkpoint": seq.head.checkpoint,
        "inclusion_proof": [b64(x) for x in proof.hashes],
        "tlog_proof": format_tlog_proof(TlogProof(seq.index, proof.hashes, note)),
    }


async def _add_batch(server: LedgerServer, h: HostedLog, raw: bytes) -> dict[str, Any]:
    """Admit, sequence and prove the envelopes of one batch request; its answer."""
    admitted, added, proofs = await _sequence_batch(server, h, raw)
    results: list[dict[str, Any]] = []
    sequenced = iter(added)
    for a in admitted:
        r: BaseException | Sequenced | LedgerError = (
            a if isinstance(a, LedgerError) else next(sequenced)
        )
        results.append(_entry_result(h, r, proofs))
    return {"results": results}


async def _add_batch_json(server: LedgerServer, h: HostedLog, raw: bytes) -> bytes:
    """`_add_batch`'s answer as the bytes `_send_json` would encode it, built without the JSON
    encoder walking a dict per entry: each sequenced entry's object is joined from strings
    (`_entry_result_json`); a refusal's object goes through the encoder as before."""
    admitted, added, proofs = await _sequence_batch(server, h, raw)
    parts: list[str] = []
    sequenced = iter(added)
    escaped: dict[str, tuple[bytes, str]] = {}  # checkpoint note -> UTF-8, JSON-escaped
    line_of: dict[bytes, str] = {}  # proof hash -> its line in a tlog-proof
    for a in admitted:
        r: BaseException | Sequenced | LedgerError = (
            a if isinstance(a, LedgerError) else next(sequenced)
        )
        if isinstance(r, Sequenced):
            proof = proofs[(r.index, r.head.size)]
            parts.append(_entry_result_json(r, proof, escaped, line_of))
        else:
            parts.append(_json_text(_entry_result(h, r, proofs)))
    # The frame joins onto the first and last parts: the answer (hundreds of KiB) is copied
    # once by the join and once by the encoding, not again for each piece added to it.
    parts[0] = '{"results":[' + parts[0]
    parts[-1] += "]}"
    return ",".join(parts).encode()


async def _sequence_batch(
    server: LedgerServer, h: HostedLog, raw: bytes
) -> tuple[
    list[Admitted | LedgerError],
    list[Sequenced | BaseException],
    dict[tuple[int, int], InclusionProof],
]:
    """Admit and sequence the envelopes of one batch request: the admission results, the
    sequencing results of the admitted ones (in order), and their proofs by index and size."""
    admitted = await _admit_batch(server, h, raw)
    added = await h.sequencer.submit([a for a in admitted if not isinstance(a, LedgerError)])
    # The entries of one request mostly land in one or two sequencer batches: prove those
    # together, one proof set per checkpoint.
    by_size: dict[int, list[int]] = {}
    for s in added:
        if isinstance(s, Sequenced):
            by_size.setdefault(s.head.size, []).append(s.index)
    proofs = {
        (p.index, size): p
        for size, indices in by_size.items()
        for p in h.log.inclusion_proofs(indices, size)
    }
    return admitted, added, proofs


async def _admit_batch(
    server: LedgerServer, h: HostedLog, raw: bytes
) -> list[Admitted | LedgerError]:
    """Phase 1 of admission for the envelopes of one batch request, in order; raises the
    request's ApiError when it is not a batch of 1 to `MAX_BATCH` envelopes."""
    entries = _batch_entries(raw)
    if entries is not None:
        got = await server.admit_entries(h, entries)
        admitted = [a for a in got if a is not None]
        if len(admitted) == len(got):
            return admitted
        # An element is not JSON, so neither is the body: `_batch_bodies` says why.
    return await asyncio.to_thread(server.admit, h, _batch_bodies(raw))


_WRITE_PATH = re.compile(r"/logs/([^/]+)/entries(/batch)?")


class LedgerApp(FastAPI):
    """The FastAPI app, with the two write routes (`WriteRoutes`) answered before FastAPI's
    middleware stack, router, request objects, dependency solving and response encoding: on a
    single-envelope write those layers cost more CPU than the signature check. Everything else
    (and what `WriteRoutes` passes on) goes through FastAPI as usual."""

    def __init__(self, server: LedgerServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._writes = WriteRoutes(server)
        self._limited_writes = BodyLimit(self._writes, server.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a write to a log `WriteRoutes` takes; pass anything else to FastAPI."""
        if self._writes.takes(scope):
            await self._limited_writes(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class WriteRoutes:
    """`POST /logs/{name}/entries` and `.../entries/batch` as a bare ASGI app (`LedgerApp`).

    The answers (bodies, statuses, error bodies and headers) are the routes' own: the same
    functions build them, and errors map through the same table as the app's exception
    handlers (`_error_answer`); an exception no handler takes gets the plain 500 that
    Starlette's ServerErrorMiddleware sends, and is raised on to the server, which logs it.
    The routes stay declared in FastAPI for the OpenAPI document, and serve what this class
    does not take: the anonymous log (202 receipts, tokens) and unknown logs.

    Single envelopes are admitted in groups with the ones that arrive alongside them
    (`LedgerServer.admit_one`), so with admission workers every core verifies them.
    """

    def __init__(self, server: LedgerServer) -> None:
        self.server = server
        self._proofs: dict[str, ProofGroups] = {}

    def _route(self, scope: Scope) -> tuple[HostedLog, bool] | None:
        """The log and whether it is the batch route, for a write this class answers."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        m = _WRITE_PATH.fullmatch(scope["path"])
        h = None if m is None else self.server.logs.get(m.group(1))
        if m is None or h is None or h.queue is not None:
            return None
        return h, bool(m.group(2))

    def takes(self, scope: Scope) -> bool:
        """Whether this request is a write this class answers."""
        return self._route(scope) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        assert route is not None, "WriteRoutes called for a request it does not take"
        h, batch = route
        try:
            body = await _read_body(receive)
            if body is None:
                return  # the client went away before its body arrived: nothing to answer
            if batch:
                answer = await _add_batch_json(self.server, h, body)
            else:
                admitted = await self.server.admit_one(h, body)
                seq = await h.sequencer.add(admitted)
                proofs = self._proofs.get(h.name) or self._proofs.setdefault(
                    h.name, ProofGroups(h.log)
                )
                answer = _answer_json(seq, await proofs.proof(seq.index, seq.head.size))
        except Exception as e:
            resp = _error_answer(e)
            if resp is None:
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                raise
            await resp(scope, receive, send)
            return
        await _send_json(send, answer)


class ProofGroups:
    """Inclusion proofs for single-entry writes, made together for the writes that ask in one
    pass of the event loop.

    The sequencer acknowledges a whole batch of entries at once, so their writers resume in
    the same pass and each asks for its proof against the same checkpoint: made together
    (`Log.inclusion_proofs`), the proofs look each shared node up once, rather than once per
    writer. The proofs are made by a callback the loop runs right after those writers, so no
    writer waits for a timer or for more writes."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self._asked: dict[int, list[tuple[int, asyncio.Future[InclusionProof]]]] = {}

    def proof(self, index: int, size: int) -> asyncio.Future[InclusionProof]:
        """The inclusion proof of entry `index` in the published tree of `size` entries."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[InclusionProof] = loop.create_future()
        if not self._asked:
            loop.call_soon(self._prove)
        self._asked.setdefault(size, []).append((index, fut))
        return fut

    def _prove(self) -> None:
        asked, self._asked = self._asked, {}
        for size, items in asked.items():
            try:
                proofs = self.log.inclusion_proofs([i for i, _ in items], size)
            except Exception as e:  # each writer answers as it would have alone
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), p in zip(items, proofs, strict=True):
                if not fut.done():
                    fut.set_result(p)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _json_text(answer: dict[str, Any]) -> str:
    """`answer` as FastAPI's JSONResponse encodes it (before UTF-8)."""
    return json.dumps(
        answer, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )


_json_str = json.encoder.encode_basestring
"""A str as `_json_text` writes it, quotes included (the encoder's own escaping, and JSON
escapes character by character: the escape of a concatenation is the concatenation of the
escapes)."""


def _proof_json(
    index: int, hashes: tuple[bytes, ...], lines: str, note: bytes, escaped_note: str
) -> str:
    """`_json_str(format_tlog_proof(TlogProof(index, hashes, note)))`, given the hashes'
    `lines` (each one's base64 and an escaped newline) and the note's escape `escaped_note`
    (`_json_str(note.decode())` without its quotes, computed once per checkpoint). The
    TlogProof is still built, so its checks (index, hash sizes, the note) still run."""
    TlogProof(index, hashes, note)
    return f'"{_HEADER_JSON}\\nindex {index}\\n{lines}\\n{escaped_note}"'


_HEADER_JSON = _json_str(HEADER)[1:-1]


def _answer_json(seq: Sequenced, proof: InclusionProof) -> bytes:
    """`_answer(seq, proof)` as the bytes `_send_json` would encode it."""
    note = seq.head.checkpoint
    esc = _json_str(note)
    texts = [b64(x) for x in proof.hashes]
    hashes = ",".join(f'"{x}"' for x in texts)
    lines = "".join(x + "\\n" for x in texts)
    tlog = _proof_json(seq.index, proof.hashes, lines, note.encode(), esc[1:-1])
    return (
        f'{{"index":{seq.index:d},"leaf_hash":"{b64(seq.leaf_hash)}",'
        f'"duplicate":{"true" if seq.duplicate else "false"},"checkpoint":{esc},'
        f'"inclusion_proof":[{hashes}],"tlog_proof":{tlog}}}'
    ).encode()


def _entry_result_json(
    seq: Sequenced,
    proof: InclusionProof,
    escaped: dict[str, tuple[bytes, str]],
    line_of: dict[bytes, str],
) -> str:
    """`_json_text(_entry_result(h, seq, proofs))` for a sequenced entry whose proof is
    `proof`. Across the entries of a batch, `escaped` remembers each checkpoint's escape and
    `line_of` each proof hash's line in a tlog-proof (its base64 and the escaped newline; the
    proofs of one batch share most of their nodes).

    The TlogProof's checks run without building one per entry: a note enters `escaped` only
    once a whole TlogProof with it was built, and a hash enters `line_of` only when it is a
    hash's size; what is left per entry (the index's range, the number of hashes, the size
    of each hash not seen before) is checked here, and any entry failing it builds the
    TlogProof, which raises as it would have."""
    index, hashes, note = seq.index, proof.hashes, seq.head.checkpoint
    got = escaped.get(note)
    if got is None:
        raw = note.encode()
        TlogProof(index, hashes, raw)
        got = escaped[note] = (raw, _json_str(note)[1:-1])
    elif not 0 <= index < MAX_TREE_SIZE or len(hashes) > MAX_PROOF_HASHES:
        TlogProof(index, hashes, got[0])
    try:
        lines = "".join([line_of[x] for x in hashes])
    except KeyError:
        for x in hashes:
            if x not in line_of:
                if len(x) != merkle.HASH_SIZE:
                    TlogProof(index, hashes, got[0])
                line_of[x] = b64(x) + "\\n"
        lines = "".join([line_of[x] for x in hashes])
    return (
        f'{{"index":{index:d},"leaf_hash":"{b64(seq.leaf_hash)}",'
        f'"duplicate":{"true" if seq.duplicate else "false"},'
        f'"tlog_proof":"{_HEADER_JSON}\\nindex {index}\\n{lines}\\n{got[1]}"}}'
    )


async def _send_json(send: Send, answer: dict[str, Any] | bytes) -> None:
    """A 200 JSON answer, encoded as FastAPI's JSONResponse encodes it (`answer` as a dict, or
    already encoded so)."""
    data = answer if isinstance(answer, bytes) else _json_text(answer).encode()
    headers = [(b"content-length", str(len(data)).encode()), (b"content-type", JSON_TYPE)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


JSON_TYPE = b"application/json"


def _error_answer(e: Exception) -> Response | None:
    """The app's answer to exception `e`, as its exception handlers give it (the first class
    of `e`'s MRO with a handler decides); None for an exception they leave to the server."""
    for cls in type(e).__mro__:
        if cls is ApiError:
            assert isinstance(e, ApiError)
            return _error(e.status, e.error, e.detail)
        if cls is AdmissionError:
            assert isinstance(e, AdmissionError)
            resp = _error(e.status, e.error, e.diagnostic)
            resp.headers.update(e.headers)
            return resp
        if cls in _ERRORS:
            status, code = _ERRORS[cls]
            return _error(status, code, getattr(e, "diagnostic", str(e)))
    return None


def _entry_result(
    h: HostedLog, r: BaseException | Sequenced, proofs: dict[tuple[int, int], InclusionProof]
) -> dict[str, Any]:
    """One element of a batch answer (`proofs`: by index and tree size)."""
    if isinstance(r, Sequenced):
        proof = proofs[(r.index, r.head.size)]
        note = r.head.checkpoint.encode()
        return {
            "index": r.index,
            "leaf_hash": b64(r.leaf_hash),
            "duplicate": r.duplicate,
            "tlog_proof": format_tlog_proof(TlogProof(r.index, proof.hashes, note)),
        }
    if isinstance(r, AdmissionError):
        return {"status": r.status, "error": r.error, "detail": r.diagnostic}
    status, code = next(
        ((st, c) for t, (st, c) in _ERRORS.items() if isinstance(r, t)), (500, "internal")
    )
    if status == 500:
        raise r  # not a refusal of this entry: the server's own failure
    return {"status": status, "error": code, "detail": getattr(r, "diagnostic", str(r))}


VARY = {"Vary": "Accept-Encoding"}


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 §12.5.3; `q=0` refuses it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return False
    return False


def _bundle(h: HostedLog, index: int, width: int) -> bytes:
    data = h.log.store.read_bundle(h.log.id, index)
    if width == TILE_WIDTH:
        if len(decode_bundle(data)) != TILE_WIDTH:
            raise LogRangeError(f"entry bundle {index} is not full (yet)")
        return data
    entries = decode_bundle(data)
    if len(entries) < width:
        raise LogRangeError(f"entry bundle {index} has fewer than {width} entries")
    return encode_bundle(entries[:width])


def _decode_hash(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, "bad_request", f"leaf_hash is not base64: {e}") from e
    if len(raw) != merkle.HASH_SIZE:
        raise ApiError(400, "bad_request", f"leaf_hash is {len(raw)} bytes, want 32")
    return raw
