"""HTTP SDK for a behaviour-ledger server. Everything it returns has been verified.

Verification is the pure code of `ledger` (checkpoints, tlog-proof, audit); this module only
fetches. A log is trusted through its verifier key, given by the caller; `LedgerClient.logs()`
shows the keys a server claims, for the caller to pin.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from attest import merkle
from attest.admission import statement_digest
from attest.audit import AuditError, audit_tree
from attest.checkpoint import Checkpoint, open_checkpoint, origin_hash
from attest.dsse import Envelope
from attest.errors import PolicyError
from attest.note import (
    MAX_SIGNATURES,
    Note,
    NoteError,
    NoteSignature,
    NoteVerifier,
    parse_note,
)
from attest.policy import Policy
from attest.tiles import ENTRIES_LEVEL, TileError, TileId, decode_bundle, tile_path
from attest.tlog_proof import TlogProof, parse_tlog_proof, verify_tlog_proof
from attest.vkey import parse_vkey


class ClientError(Exception):
    """A request failed or what came back did not verify. `diagnostic` is printable."""

    def __init__(self, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic


class VerificationError(ClientError):
    """The server answered, but its answer does not verify."""


@dataclass(frozen=True)
class LogInfo:
    """A log as the server describes it (not yet trusted)."""

    name: str
    origin: str
    vkey: str
    partition: str
    operator_vkey: str = ""


@dataclass(frozen=True)
class Submitted:
    """A verified write: the entry's index and the offline proof that it is in the log."""

    index: int
    duplicate: bool
    checkpoint: Checkpoint
    tlog_proof: str


@dataclass(frozen=True)
class Refused:
    """An envelope of a batch that the log refused, as the single-entry route would answer."""

    status: int
    error: str
    detail: str


@dataclass(frozen=True)
class VerifiedEntry:
    """An entry proved to be leaf `index` of the tree of `checkpoint`, which a policy accepted.

    `data` are the leaf bytes (an envelope's canonical bytes); `leaf_hash` is computed from them
    here, never taken from the server.
    """

    index: int
    data: bytes
    leaf_hash: bytes
    checkpoint: Checkpoint
    inclusion_proof: tuple[bytes, ...]


@dataclass(frozen=True)
class IndexHit:
    """A read-index row: the server says entry `index` is about this model. Not verified."""

    index: int
    predicate_type: str
    model: str | None
    version: str | None
    category: str | None
    tier: str | None

    @classmethod
    def from_json(cls, e: dict[str, Any]) -> IndexHit:
        """From one element of `GET /logs/{name}/index`'s `entries`."""
        index = e["index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"bad index {index!r}")
        return cls(
            index,
            str(e["type"]),
            e.get("model"),
            e.get("version"),
            e.get("category"),
            e.get("tier"),
        )


class LedgerClient:
    """Talks to one server at `base_url` (e.g. `http://127.0.0.1:8080`)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
        witness_urls: Sequence[str] = (),
        tiles_url: str | None = None,
    ):
        """`witness_urls`: where to gather cosignatures when the log's own checkpoint does not
        meet a policy (audit nodes' URLs); by default none. `tiles_url`: where the log's
        checkpoint, tiles and entry bundles are published as static objects (a directory behind
        a web server, an S3 bucket, a CDN; C2SP tlog-tiles paths under `logs/<name>/`); by
        default the server itself."""
        self._http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self._tiles = (
            httpx.Client(base_url=tiles_url.rstrip("/"), timeout=timeout)
            if tiles_url
            else self._http
        )
        self._witness_urls = tuple(witness_urls)

    def close(self) -> None:
        """Close the HTTP connection pools."""
        if self._tiles is not self._http:
            self._tiles.close()
        self._http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, *, static: bool = False) -> httpx.Response:
        """GET `path` from the server, or from the tile URL when `static` and one is set."""
        http = self._tiles if static else self._http
        try:
            r = http.get(path)
        except httpx.HTTPError as e:
            raise ClientError(f"GET {http.base_url}{path}: {e}") from e
        if r.status_code != 200:
            raise ClientError(f"GET {http.base_url}{path}: HTTP {r.status_code}: {_detail(r)}")
        return r

    def logs(self) -> list[LogInfo]:
        """The logs the server hosts, with the keys it claims for them."""
        return [LogInfo(**x) for x in self._get("/logs").json()]

    def log_info(self, name: str) -> LogInfo:
        """One log's description, or ClientError when the server has no such log."""
        for info in self.logs():
            if info.name == name:
                return info
        raise ClientError(f"the server hosts no log named {name!r}")

    def checkpoint(
        self, name: str, verifier: NoteVerifier, origin: str
    ) -> tuple[Checkpoint, bytes]:
        """The latest checkpoint, verified with the log's key; also its signed note bytes."""
        note = self._get(f"/logs/{name}/checkpoint", static=True).content
        try:
            cp, _ = open_checkpoint(note, verifier, origin)
        except NoteError as e:
            raise VerificationError(f"checkpoint of {name}: {e.diagnostic}") from e
        return cp, note

    def verified_checkpoint(self, name: str, policy: Policy) -> tuple[Checkpoint, bytes]:
        """The latest checkpoint that `policy` accepts (log signature and witness quorum); also
        its signed note bytes. Raises VerificationError when the policy accepts none.

        Plan:
        1. fetch the log's checkpoint; if the policy accepts it as served, that is the answer;
        2. else gather cosigned copies from the policy's witnesses that have a URL and serve
           their latest cosigned checkpoint (`GET {url}/gossip/{origin-hash}`, as audit nodes
           do); a witness that cannot be reached is skipped;
        3. merge the signature lines of copies with the same checkpoint body (a cosignature is
           over the body, so lines from different copies combine), and return the largest
           checkpoint the policy accepts, merged or as one copy served it.
        """
        note = self._get(f"/logs/{name}/checkpoint", static=True).content  # (1)
        try:
            return policy.check(note), note
        except PolicyError as e:
            first = e
        bodies: dict[str, list[Note]] = {}
        for copy in [note, *self._cosigned_copies(note)]:  # (2)
            try:
                parsed = parse_note(copy)
            except NoteError:
                continue
            bodies.setdefault(parsed.text, []).append(parsed)
        accepted: list[tuple[Checkpoint, bytes]] = []
        keys = [k.verifier for k in policy.logs] + [w.verifier for w in policy.witnesses.values()]
        for copies in bodies.values():  # (3)
            for candidate in _merged_then_single(copies, keys):
                try:
                    accepted.append((policy.check(candidate), candidate))
                    break
                except PolicyError:
                    continue
        if not accepted:
            raise VerificationError(f"checkpoint of {name}: {first.diagnostic}")
        return max(accepted, key=lambda a: a[0].size)

    def _cosigned_copies(self, note: bytes) -> list[bytes]:
        """Cosigned copies of the log's latest checkpoint held by the policy's witnesses."""
        try:
            origin = parse_note(note).text.split("\n", 1)[0]
        except NoteError:
            return []
        copies = []
        for url in self._witness_urls:
            try:
                r = self._http.get(f"{url.rstrip('/')}/gossip/{origin_hash(origin)}")
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                copies.append(r.content)
        return copies

    def entry(self, name: str, index: int, policy: Policy) -> VerifiedEntry:
        """Entry `index` of log `name`, proved included in a checkpoint that `policy` accepts.

        Plan:
        1. fetch the latest checkpoint and require `policy` to accept it;
        2. fetch the entry's bytes (the server's leaf hash is ignored: we hash them ourselves);
        3. fetch an inclusion proof of `index` at the checkpoint's size;
        4. verify the proof from the leaf hash of the bytes to the checkpoint's root.

        Raises ClientError when `index` is not below the checkpoint's size, and VerificationError
        when any step does not verify: unverified data is never returned.
        """
        return self.entries(name, [index], policy)[0]

    def entries(self, name: str, indices: Iterable[int], policy: Policy) -> list[VerifiedEntry]:
        """Entries `indices` of log `name`, each proved included in one checkpoint that `policy`
        accepts (the plan of `entry`, with one checkpoint for all). Raises like `entry`."""
        cp, _ = self.verified_checkpoint(name, policy)  # (1): a checkpoint the policy accepts
        out = []
        for index in indices:
            if not 0 <= index < cp.size:
                raise ClientError(
                    f"index {index} is outside log {name}'s tree of size {cp.size} "
                    "(not yet in a checkpoint the policy accepts?)"
                )
            data = self._entry_bytes(name, index)  # (2): the entry's bytes
            proof = self._inclusion_proof(name, index, cp.size)  # (3): a proof at the checkpoint
            leaf = merkle.leaf_hash(data)
            try:  # (4): the bytes are leaf `index` of the tree the policy accepted
                merkle.verify_inclusion(leaf, index, cp.size, proof, cp.root_hash)
            except merkle.ProofError as e:
                raise VerificationError(
                    f"entry {index} of {name} at size {cp.size}: {e.diagnostic}"
                ) from e
            out.append(VerifiedEntry(index, data, leaf, cp, proof))
        return out

    def search(
        self,
        name: str,
        *,
        model: str | None = None,
        version: str | None = None,
        category: str | None = None,
        tier: str | None = None,
        predicate_type: str | None = None,
    ) -> list[IndexHit]:
        """The server's read index: which entries are about `model` (and version, category,
        tier, type). Unverified hints, every page of them: pass the indices to `entries`."""
        params = {
            "model": model,
            "version": version,
            "category": category,
            "tier": tier,
            "type": predicate_type,
        }
        query = {k: v for k, v in params.items() if v is not None}
        hits: list[IndexHit] = []
        while True:
            body = self._json(f"/logs/{name}/index?{urlencode({**query, 'start': _next(hits)})}")
            try:
                page = [IndexHit.from_json(e) for e in body["entries"]]
            except (KeyError, TypeError, ValueError) as e:
                raise VerificationError(f"index of {name}: malformed answer: {e}") from e
            if any(h.index < _next(hits) for h in page):
                raise VerificationError(f"index of {name}: entries out of order")
            hits.extend(page)
            if not page or len(page) < _INDEX_PAGE:
                return hits

    def _entry_bytes(self, name: str, index: int) -> bytes:
        """The (unverified) bytes the server returns for entry `index`."""
        body = self._json(f"/logs/{name}/entries/{index}")
        try:
            if body["index"] != index:
                raise VerificationError(f"asked for entry {index}, got entry {body['index']}")
            return b64decode(str(body["entry"]))
        except (KeyError, TypeError, ValueError) as e:
            raise VerificationError(f"entry {index} of {name}: malformed answer: {e}") from e

    def _inclusion_proof(self, name: str, index: int, size: int) -> tuple[bytes, ...]:
        """The (unverified) proof hashes the server returns for `index` at `size`."""
        path = f"/logs/{name}/proof/inclusion?index={index}&size={size}"
        body = self._json(path)
        try:
            if (body["index"], body["size"]) != (index, size):
                raise VerificationError(
                    f"asked for a proof of {index} at size {size}, "
                    f"got one of {body['index']} at size {body['size']}"
                )
            return tuple(b64decode(str(h)) for h in body["inclusion_proof"])
        except (KeyError, TypeError, ValueError) as e:
            raise VerificationError(f"inclusion proof of {index}: malformed answer: {e}") from e

    def _json(self, path: str) -> dict[str, Any]:
        """GET `path` and return its JSON object (VerificationError if it is not one)."""
        try:
            body = self._get(path).json()
        except ValueError as e:
            raise VerificationError(f"GET {path}: not JSON: {e}") from e
        if not isinstance(body, dict):
            raise VerificationError(f"GET {path}: want a JSON object")
        return body

    def tile(self, name: str, tile: TileId, width: int) -> bytes:
        """A hash tile at `width` (unverified bytes: verify them against a checkpoint)."""
        return self._get(f"/logs/{name}/{tile_path(tile, width)}", static=True).content

    def bundle(self, name: str, index: int, width: int) -> list[bytes]:
        """An entry bundle at `width` (unverified: check against the level-0 tile)."""
        path = f"/logs/{name}/{tile_path(TileId(ENTRIES_LEVEL, index), width)}"
        data = self._get(path, static=True).content
        try:
            return decode_bundle(data)
        except TileError as e:
            raise VerificationError(f"entry bundle {index}: {e.diagnostic}") from e

    def submit(
        self, name: str, envelope: Envelope, verifier: NoteVerifier, origin: str
    ) -> Submitted:
        """Post an envelope and verify the returned tlog-proof offline before returning."""
        try:
            r = self._http.post(f"/logs/{name}/entries", json=envelope.to_json())
        except httpx.HTTPError as e:
            raise ClientError(f"POST /logs/{name}/entries: {e}") from e
        if r.status_code != 200:
            raise ClientError(f"the log refused the entry: HTTP {r.status_code}: {_detail(r)}")
        body: dict[str, Any] = r.json()
        return self._submitted(name, body, envelope, verifier, origin)

    def submit_batch(
        self, name: str, envelopes: Sequence[Envelope], verifier: NoteVerifier, origin: str
    ) -> list[Submitted | Refused]:
        """Post up to 1,024 envelopes in one request (`POST /logs/{name}/entries/batch`) and
        verify every returned tlog-proof offline; one result per envelope, in order."""
        path = f"/logs/{name}/entries/batch"
        try:
            r = self._http.post(path, json={"envelopes": [e.to_json() for e in envelopes]})
        except httpx.HTTPError as e:
            raise ClientError(f"POST {path}: {e}") from e
        if r.status_code != 200:
            raise ClientError(f"the log refused the batch: HTTP {r.status_code}: {_detail(r)}")
        results = r.json().get("results")
        if not isinstance(results, list) or len(results) != len(envelopes):
            raise VerificationError(f"POST {path}: want one result per envelope")
        out: list[Submitted | Refused] = []
        for env, res in zip(envelopes, results, strict=True):
            if "tlog_proof" in res:
                out.append(self._submitted(name, res, env, verifier, origin))
            else:
                out.append(Refused(int(res["status"]), str(res["error"]), str(res["detail"])))
        return out

    def _submitted(
        self,
        name: str,
        body: dict[str, Any],
        envelope: Envelope,
        verifier: NoteVerifier,
        origin: str,
    ) -> Submitted:
        """Check a write's answer: its tlog-proof proves `envelope`, or, for a duplicate, an
        entry that carries the same statement (the log keeps one entry per statement, with the
        signatures it was first posted with)."""
        text, index = str(body["tlog_proof"]), int(body["index"])
        duplicate = bool(body.get("duplicate"))
        try:
            cp = verify_submission(text, envelope, verifier, origin)
        except VerificationError:
            if not duplicate:
                raise
            logged = Envelope.from_json(self._entry_bytes(name, index))
            if statement_digest(logged) != statement_digest(envelope):
                raise VerificationError(
                    f"entry {index}, answered as a duplicate, holds another statement"
                ) from None
            cp = verify_submission(text, logged, verifier, origin)
        return Submitted(index, duplicate, cp, text)

    def audit(self, name: str, verifier: NoteVerifier, origin: str) -> Checkpoint:
        """Fetch the latest checkpoint, every tile and entry bundle, and recompute the root."""
        cp, _ = self.checkpoint(name, verifier, origin)
        try:
            audit_tree(
                cp.size,
                cp.root_hash,
                lambda t, w: self.tile(name, t, w),
                lambda i, w: self.bundle(name, i, w),
            )
        except AuditError as e:
            raise VerificationError(f"log {name} at size {cp.size}: {e.diagnostic}") from e
        return cp


def verify_submission(
    text: str, envelope: Envelope, verifier: NoteVerifier, origin: str
) -> Checkpoint:
    """Verify a tlog-proof for `envelope` (its canonical bytes are the leaf data)."""
    try:
        proof: TlogProof = parse_tlog_proof(text)
        return verify_tlog_proof(proof, envelope.canonical_bytes(), verifier, origin)
    except NoteError as e:
        raise VerificationError(f"tlog-proof: {e.diagnostic}") from e


def verifier_from_vkey(vkey: str) -> NoteVerifier:
    """Parse a C2SP verifier key, turning errors into ClientError."""
    try:
        return parse_vkey(vkey)
    except NoteError as e:
        raise ClientError(f"bad verifier key: {e.diagnostic}") from e


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{body.get('error')}: {body.get('detail')}"
    except ValueError:
        return r.text[:200]


def b64decode(text: str) -> bytes:
    """Standard base64 as the API's JSON uses."""
    return base64.b64decode(text, validate=True)


_INDEX_PAGE = 1000  # the server's page size (ledger.index.MAX_LIMIT)


def _next(hits: Sequence[IndexHit]) -> int:
    return hits[-1].index + 1 if hits else 0


def _merged_then_single(copies: Sequence[Note], keys: Sequence[NoteVerifier]) -> Iterator[bytes]:
    """The copies' signature lines merged into one note, then each copy as served (a copy
    with a bad line must not spoil the others). A line by one of `keys` that does not verify is
    left out of the merge (the policy refuses a note with a failing line by a key it trusts), and
    so are lines by keys the policy does not know."""
    trusted = {(k.name, k.key_id): k for k in keys}
    lines: dict[tuple[str, bytes], NoteSignature] = {}
    for c in copies:
        message = c.text.encode("utf-8")
        for sig in c.signatures:
            key = trusted.get((sig.name, sig.key_id))
            # Only lines the policy can use: a failing one would reject the whole note, and
            # lines by unknown keys could crowd trusted ones out of the 100 a note may hold.
            if key is None or not key.verify(message, sig.signature):
                continue
            lines.setdefault((sig.name, sig.key_id), sig)
    merged = tuple(lines.values())[:MAX_SIGNATURES]
    if merged:  # else every line failed: a note needs one
        yield Note(copies[0].text, merged).to_bytes()
    for c in copies:
        yield c.to_bytes()
