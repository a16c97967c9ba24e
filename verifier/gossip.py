"""Gossip between audit nodes, and evidence of log misbehaviour that anyone can check offline.

Audit nodes exchange the latest checkpoint each verified, so a log that shows one tree to some
and another tree to others (a split view) is caught as soon as two nodes compare notes:

    GET  /gossip/{origin-hash}   the node's latest verified checkpoint of that log, as a signed
                                 note (text), with the node's and witnesses' cosignatures;
                                 origin-hash = lowercase hex SHA-256 of the origin line
    POST /gossip                 a signed checkpoint note: the node verifies the log signature
                                 and checks it against its own view; 200 consistent, 202
                                 undecided (it cannot tell yet), 409 misbehaviour proven (the
                                 body carries the evidence), 403 bad signature, 404 unknown log
    GET  /evidence               every evidence record the node holds (JSON list)
    POST /evidence               an evidence record of a followed log: stored if it proves
                                 misbehaviour offline (`PROVABLE_KINDS`); 200, else 422 / 404
    GET  /                       the node's status (JSON)

A round (`gossip_round`) pulls each peer's checkpoint of every followed log, pushes ours, imports
the peer's evidence that proves misbehaviour offline (`PROVABLE_KINDS`), and pushes the provable
evidence the peer lacks: so once any node can prove a split view, every peer it reaches knows
within the same round.

Evidence records are JSON (docs/verifier.md describes every field); `verify_evidence` checks one
with nothing but the log's verifier key.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from attest.checkpoint import Checkpoint, origin_hash
from attest.note import NoteError
from verifier.auditor import AuditNode, StepResult
from verifier.errors import VerifierError
from verifier.evidence import (
    MAX_NOTE,
    MAX_POSTED_EVIDENCE,
    PROVABLE_KINDS,
    Evidence,
    EvidenceEntry,
    EvidenceError,
    EvidenceKind,
    EvidenceNote,
    EvidenceProof,
    InvalidEntryContext,
    SeenProof,
    note_body,
    verify_evidence,
)

# Gossip, and the names of the evidence format (verifier.evidence) that callers import from here.
__all__ = [
    "PROVABLE_KINDS",
    "Evidence",
    "EvidenceEntry",
    "EvidenceError",
    "EvidenceKind",
    "EvidenceNote",
    "EvidenceProof",
    "InvalidEntryContext",
    "NodeLoop",
    "RoundReport",
    "SeenProof",
    "create_gossip_app",
    "gossip_round",
    "origin_hash",
    "status",
    "verify_evidence",
]

log = logging.getLogger("bledger.verifier")

# -- the node's HTTP app ----------------------------------------------------------------------


@dataclass
class RoundReport:
    """What one round (audit of every log, then gossip with every peer) found."""

    number: int
    audits: dict[str, StepResult | VerifierError] = field(default_factory=dict)
    gossip: list[str] = field(default_factory=list)
    evidence: int = 0

    @property
    def alarm(self) -> bool:
        """Whether the node holds any evidence of misbehaviour."""
        return self.evidence > 0


class NodeLoop:
    """Runs rounds: now, then every `poll` seconds, or at once when `wake` is called."""

    def __init__(self, node: AuditNode, peers: Sequence[str], poll: float) -> None:
        self.node, self.peers, self.poll = node, list(peers), poll
        self.rounds = 0
        self.in_round = False
        self.last: RoundReport | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=node.cfg.timeout_seconds)

    def run_round(self) -> RoundReport:
        """One round: audit every log whose back-off allows it, then gossip with every peer."""
        with self._lock:
            self.in_round = True
            try:
                report = RoundReport(self.rounds + 1)
                report.audits = self.node.audit_round()
                report.gossip = gossip_round(self.node, self.peers, self._http)
                report.evidence = len(self.node.state.evidence())
                self.last = report
                self.rounds += 1
                return report
            finally:
                self.in_round = False

    def wake(self) -> None:
        """Start a round now (from a signal handler, or another thread)."""
        self._wake.set()

    def start(self) -> None:
        """Run rounds in a background thread until `stop`."""
        self._thread = threading.Thread(target=self._run, name="audit-rounds", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_round()
            except Exception:  # a bug must not stop the node from serving what it verified
                log.exception("audit round failed")
            self._wake.wait(self.poll)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the background thread (after the round in progress) and close clients."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._http.close()


def gossip_round(node: AuditNode, peers: Sequence[str], http: httpx.Client) -> list[str]:
    """Exchange checkpoints and evidence with every peer; return the problems met (not fatal).

    Per peer and followed log: pull its checkpoint and check it, push ours (a 409 answer carries
    evidence, imported when it verifies offline); then import the peer's provable evidence.
    """
    problems: list[str] = []
    for peer in peers:
        peer = peer.rstrip("/")
        try:
            for origin in node.logs:
                _exchange(node, peer, origin, http)
            r = http.get(f"{peer}/evidence")
            r.raise_for_status()
            theirs = set()
            for item in r.json():
                body = json.dumps(item["evidence"])
                theirs.add(Evidence.from_json(body).digest())
                _import(node, body, peer, problems)
            for ev in node.evidence():
                ours = ev.kind in PROVABLE_KINDS and ev.origin in node.logs
                if ours and ev.digest() not in theirs:
                    _push_evidence(ev, peer, http, problems)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            problems.append(f"peer {peer}: {e!r}")
        except VerifierError as e:
            problems.append(f"peer {peer}: {e.diagnostic}")
    for p in problems:
        log.warning("gossip: %s", p)
    return problems


def _exchange(node: AuditNode, peer: str, origin: str, http: httpx.Client) -> None:
    path = f"{peer}/gossip/{origin_hash(origin)}"
    r = http.get(path)
    if r.status_code == 200:
        node.check_checkpoint(origin, r.content, f"peer {peer}")
    head = node.latest(origin)
    if head is None:
        return
    r = http.post(f"{peer}/gossip", content=head.note, headers={"Content-Type": "text/plain"})
    if r.status_code == 409:
        for ev in r.json().get("evidence", []):
            _import(node, json.dumps(ev), peer, [])


def _push_evidence(ev: Evidence, peer: str, http: httpx.Client, problems: list[str]) -> None:
    r = http.post(
        f"{peer}/evidence", content=ev.to_json(), headers={"Content-Type": "application/json"}
    )
    if r.status_code != 200:
        problems.append(f"peer {peer} refused evidence: HTTP {r.status_code}: {r.text[:200]}")


def _import(node: AuditNode, body: str, peer: str, problems: list[str]) -> None:
    try:
        node.import_evidence(body, f"peer {peer}")
    except VerifierError as e:
        problems.append(f"peer {peer} evidence refused: {e.diagnostic}")


def status(node: AuditNode, loop: NodeLoop | None) -> dict[str, Any]:
    """The node's status as served at `GET /`."""
    logs = []
    for origin, f in node.logs.items():
        head = node.latest(origin)
        failure = node.state.failure(origin)
        logs.append(
            {
                "name": f.cfg.name,
                "url": f.cfg.url,
                "origin": origin,
                "origin_hash": origin_hash(origin),
                "size": None if head is None else head.size,
                "root": None if head is None else head.root.hex(),
                "verified_at": None if head is None else head.verified_at,
                "failures": 0 if failure is None else failure.count,
                "last_error": None if failure is None else failure.error,
            }
        )
    evidence = node.state.evidence()
    return {
        "node": node.cosigner.name,
        "vkey": node.vkey,
        "rounds": 0 if loop is None else loop.rounds,
        "in_round": False if loop is None else loop.in_round,
        "alarm": bool(evidence),
        "evidence": len(evidence),
        "logs": logs,
    }


def create_gossip_app(node: AuditNode, loop: NodeLoop | None = None) -> FastAPI:
    """The node's HTTP app: gossip, evidence and status (see the module docstring).

    When `loop` is given it runs in the background for the app's lifetime.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                await run_in_threadpool(loop.stop)

    app = FastAPI(title="bledger audit node", version="0.1.0", lifespan=lifespan)
    by_hash = {origin_hash(o): o for o in node.logs}

    def error(status_code: int, code: str, detail: str) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status_code)

    @app.get("/")
    def get_status() -> dict[str, Any]:
        """The node's key, rounds, alarm flag and the verified head of every followed log."""
        return status(node, loop)

    @app.get("/gossip/{digest}")
    def get_checkpoint(digest: str) -> Response:
        """The latest verified checkpoint of the log whose origin hashes to `digest`."""
        origin = by_hash.get(digest)
        head = None if origin is None else node.latest(origin)
        if head is None:
            return error(404, "unknown_log", f"no verified checkpoint for {digest}")
        return Response(head.note, media_type="text/plain; charset=utf-8")

    @app.post("/gossip")
    async def post_checkpoint(request: Request) -> Response:
        """Check a gossiped signed checkpoint against this node's view."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_NOTE):
            return error(413, "too_large", f"a checkpoint note is at most {MAX_NOTE} bytes")
        body = await request.body()
        if len(body) > MAX_NOTE:
            return error(413, "too_large", f"a checkpoint note is at most {MAX_NOTE} bytes")
        try:
            origin = Checkpoint.parse(note_body(body.decode("utf-8"))).origin
        except (UnicodeDecodeError, NoteError) as e:
            return error(400, "malformed", getattr(e, "diagnostic", str(e)))
        if origin not in node.logs:
            return error(404, "unknown_log", f"this node does not follow {origin!r}")
        client = request.client
        source = f"gossip POST from {client.host}:{client.port}" if client else "gossip POST"
        try:
            verdict, ev = await run_in_threadpool(node.check_checkpoint, origin, body, source)
        except VerifierError as e:
            return error(403, "bad_signature", e.diagnostic)
        if ev is not None:
            return JSONResponse(
                {"verdict": verdict, "evidence": [json.loads(ev.to_json())]}, status_code=409
            )
        return JSONResponse(
            {"verdict": verdict}, status_code=200 if verdict == "consistent" else 202
        )

    @app.get("/evidence")
    def get_evidence() -> list[dict[str, Any]]:
        """Every evidence record this node holds, oldest first."""
        return [{"id": r.id, "evidence": json.loads(r.body)} for r in node.state.evidence()]

    @app.post("/evidence")
    async def post_evidence(request: Request) -> Response:
        """Store a peer's evidence if it proves, offline, that a followed log misbehaved."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_POSTED_EVIDENCE):
            return error(413, "too_large", f"evidence is at most {MAX_POSTED_EVIDENCE} bytes")
        body = await request.body()
        if len(body) > MAX_POSTED_EVIDENCE:
            return error(413, "too_large", f"evidence is at most {MAX_POSTED_EVIDENCE} bytes")
        client = request.client
        source = f"evidence POST from {client.host}:{client.port}" if client else "evidence POST"
        try:
            text = body.decode("utf-8")
            ev = await run_in_threadpool(node.import_evidence, text, source)
        except UnicodeDecodeError:
            return error(400, "malformed", "evidence is not UTF-8")
        except VerifierError as e:
            return error(422, "not_proven", e.diagnostic)
        if ev is None:
            return error(404, "not_followed", "not a provable record of a log this node follows")
        return JSONResponse({"imported": ev.digest()}, status_code=200)

    return app
