"""The audit node: follow logs, verify every checkpoint, tile and entry, cosign, push to witnesses.

An `AuditNode` lives in a data directory:

    DATA/config.toml    the followed logs (URL, name, origin, pinned keys, witness policy,
                        witness URLs) and the node's settings (see `NODE_TEMPLATE`)
    DATA/keys/auditor.pem   the node's own Ed25519 key, created on first run; it cosigns
                        (C2SP tlog-cosignature) every checkpoint the node verified
    DATA/auditor.vkey   the node's cosignature verifier key, for others to pin
    DATA/state.db       what the node verified and caught (`verifier.state`)

Each followed log belongs to a partition (`FollowedLog.partition`, pinned from `GET /logs`):
its entries are re-validated by that partition's rules (`validate_partition_entry`). An attested
log's credentials are checked against the key chain of the evidence log of the same server, when
the node follows that log too; see `validate_attested_entry` for exactly what that establishes.

Trust assumptions: the node trusts only what it pins in its config (the log's key, the
operator's root key, the keys the log admits directly) and its own database. It never writes to
a log's database; everything it knows about a log comes over HTTP and is verified before it is
stored. A log that does not answer is retried with exponential back-off and never trusted; a log
that answers something that does not add up produces an evidence record (`verifier.gossip`
documents the format) and an alarm, and the node's verified head does not move.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

import httpx

from attest import admission as rules
from attest import merkle
from attest.admission import AdmissionRefused, EntryAt
from attest.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from attest.dsse import Envelope, TrustedKey
from attest.errors import AttestError, PolicyError
from attest.keychain import STATEFUL, KeyChain
from attest.note import (
    Note,
    NoteSignature,
    NoteVerifier,
    add_signatures,
    encode_base64,
    parse_note,
)
from attest.policy import Policy
from attest.statement import Statement, parse_statement
from attest.tiles import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    TileError,
    TileId,
    decode_bundle,
    split_hashes,
    tile_path,
    tile_width,
    tiles_for_size,
)
from verifier.config import (
    DEFAULT_ATTESTED_QUORUM,
    PARTITIONS,
    STATE_NAME,
    ConfigError,
    FollowedLog,
    NodeConfig,
    follow_log,
    init_node_dir,
    load_node_config,
    node_cosigner,
    save_logs,
)
from verifier.errors import VerifierError, WitnessConflict, WitnessError
from verifier.evidence import (
    PROVABLE_KINDS,
    Evidence,
    EvidenceEntry,
    EvidenceKind,
    EvidenceNote,
    EvidenceProof,
    InvalidEntryContext,
    Partition,
    SeenProof,
    implied_old_root,
    verify_evidence,
)
from verifier.parallel import (
    MIN_PARALLEL,
    ParallelChecker,
    Prechecked,
    ReplayMemo,
    default_workers,
    validate_prechecked,
)
from verifier.revalidate import (
    EntryInvalid,
    RootAt,
    replay_chain,
    validate_anonymous_entry,
    validate_attested_entry,
    validate_entry,
    validate_partition_entry,
    validate_statement,
)
from verifier.state import SeenCheckpoint, State, StateConflict, StoredKeyEvent, VerifiedHead
from verifier.tree import TreeMismatch, TreeTiles
from verifier.witness_client import add_checkpoint, verify_cosignatures

# The node, and the names of its config (verifier.config) and entry rules
# (verifier.revalidate) that callers import from here.
__all__ = [
    "DEFAULT_ATTESTED_QUORUM",
    "PARTITIONS",
    "AuditNode",
    "ConfigError",
    "EntryInvalid",
    "FollowedLog",
    "LogMisbehaved",
    "LogUnavailable",
    "NodeConfig",
    "Recheck",
    "StepResult",
    "TreeTiles",
    "Verdict",
    "follow_log",
    "init_node_dir",
    "load_node_config",
    "replay_chain",
    "save_logs",
    "validate_anonymous_entry",
    "validate_attested_entry",
    "validate_entry",
    "validate_partition_entry",
    "validate_statement",
]

log = logging.getLogger("bledger.verifier")

# -- errors -----------------------------------------------------------------------------------


class LogUnavailable(VerifierError):
    """A log did not answer, or answered something unsigned or unusable: retried, not trusted."""


class LogMisbehaved(VerifierError):
    """A log served something that contradicts what it signed; `evidence` was recorded."""

    def __init__(self, evidence: Evidence) -> None:
        super().__init__(f"ALARM {evidence.origin}: {evidence.kind}: {evidence.reason}")
        self.evidence = evidence


Verdict = Literal["consistent", "undecided", "misbehaviour"]
"""What comparing a gossiped checkpoint with the node's view concluded."""


# -- the node ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What one `step` did for one log."""

    origin: str
    size: int
    new_entries: int = 0
    witnessed: bool = False
    cosigners: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Followed:
    """A followed log at run time: its config, HTTP client and key chain (evidence logs), and
    for an attested log the origin of the followed evidence log of the same server (or None)."""

    cfg: FollowedLog
    http: httpx.Client
    tiles: httpx.Client  # the tile URL's client, or `http` when the log publishes none
    verifier: NoteVerifier
    policy: Policy
    roots: list[bytes]
    allowed: list[bytes]
    fixed: list[TrustedKey]
    chain: KeyChain
    evidence: str | None = None


@dataclass
class _EntryCheck:
    """What re-validating one step's entries needs across entries."""

    caught_up: bool = False  # attested: the evidence log was stepped once already this step
    # Evidence: the bundle being checked (its entries below the current one are verified),
    # and a few earlier bundles fetched and verified for continuity citations.
    current: tuple[int, list[bytes]] = (-1, [])
    bundles: dict[int, list[bytes]] = field(default_factory=dict)
    # Statement digests of this step's new entries, to their index (one entry per statement).
    digests: dict[bytes, int] = field(default_factory=dict)

    def remember(self, n: int, entries: list[bytes]) -> None:
        """Keep verified bundle `n`, forgetting the oldest beyond `_CITED_BUNDLES`."""
        self.bundles[n] = entries
        while len(self.bundles) > _CITED_BUNDLES:
            del self.bundles[next(iter(self.bundles))]


_CITED_BUNDLES = 8
"""Earlier entry bundles a step keeps for citations (each up to 256 entries of 64 KiB)."""


_CREDENTIAL_STAGES = ("signature", "credentials")
"""Stages of `validate_attested_entry` that depend on how far the evidence log was verified."""

_NO_EVIDENCE_LOG = (
    "the node does not follow the evidence log of this server (same URL): attested entries "
    "are checked for envelope, statement, anti-backdating and partition only, not for their "
    "signature or credentials"
)


class Recheck:
    """Which entry bundles the node verified before are re-read and re-hashed at each step.

    Each log is swept in a random order (`rng`, injectable for tests), `per_round` bundles a
    step, without replacement: a sweep re-reads every bundle below the verified head when it
    started within ceil(B / per_round) steps, B bundles, and the next sweep starts over. So a
    bundle edited in place after the node verified it is caught within `bound(B)` =
    2 * ceil(B / per_round) steps (it may be edited just after this sweep read it), and the log
    cannot tell which bundle comes next. `per_round` None: every bundle, every step (`--full`);
    0: none.
    """

    def __init__(self, per_round: int | None, rng: random.Random | None = None) -> None:
        self.per_round, self.rng = per_round, rng or random.SystemRandom()
        self._sweeps: dict[str, list[int]] = {}

    def bound(self, bundles: int) -> int | None:
        """Steps within which an edit of any of `bundles` bundles is re-read (None: never)."""
        if self.per_round is None:
            return 1
        return 2 * -(-bundles // self.per_round) if self.per_round > 0 else None

    def pick(self, origin: str, size: int) -> list[int]:
        """The bundles of the tree of `size` to re-read at this step of log `origin`."""
        bundles = -(-size // TILE_WIDTH)
        if self.per_round is None:
            return list(range(bundles))
        want = min(self.per_round, bundles)
        sweep = [n for n in self._sweeps.get(origin, []) if n < bundles]
        picked: list[int] = []
        while len(picked) < want:
            if not sweep:
                rest = [n for n in range(bundles) if n not in picked]
                self.rng.shuffle(rest)
                sweep = [*picked, *rest]  # pop() takes from the end: this step's come last
            picked.append(sweep.pop())
        self._sweeps[origin] = sweep
        return picked


class AuditNode:
    """An audit node following the logs of its config; see the module docstring.

    Thread-safe for one thread calling `step` / `audit_round` and any number calling
    `check_checkpoint` and the read methods (each state access is its own transaction).
    """

    def __init__(
        self,
        cfg: NodeConfig,
        state: State,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        full: bool = False,
        rng: random.Random | None = None,
        workers: int | None = None,
    ) -> None:
        self.cfg, self.state, self.clock = cfg, state, clock
        # Catching up on many evidence entries: signatures on worker processes (started on
        # first use), the key chain in order (`verifier.parallel`). 1 (or one core): serially.
        workers = default_workers() if workers is None else workers
        self.checker = ParallelChecker(workers) if workers > 1 else None
        self.recheck = Recheck(None if full else cfg.recheck_bundles, rng)
        self.cosigner = node_cosigner(cfg)
        self._transport = transport
        self.logs: dict[str, _Followed] = {}
        for lc in cfg.logs:
            self.logs[lc.origin] = self._open(lc)
        for f in self.logs.values():
            if f.cfg.partition == "attested":
                f.evidence = self._evidence_log_of(f.cfg)
                if f.evidence is None:
                    log.warning("%s: %s", f.cfg.origin, _NO_EVIDENCE_LOG)

    @classmethod
    def open(
        cls,
        data: Path,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        full: bool = False,
        rng: random.Random | None = None,
        workers: int | None = None,
    ) -> AuditNode:
        """The node of DATA (creating DATA on first run); `full`: re-read every verified entry
        bundle at every step (`Recheck`); `workers`: processes that check signatures when the
        node catches up on many evidence entries (default: one per core; 1: none)."""
        cfg = init_node_dir(data)
        state = State(data / STATE_NAME)
        return cls(
            cfg, state, clock=clock, transport=transport, full=full, rng=rng, workers=workers
        )

    def _open(self, lc: FollowedLog) -> _Followed:
        http = httpx.Client(
            base_url=lc.url, timeout=self.cfg.timeout_seconds, transport=self._transport
        )
        tiles = (
            httpx.Client(
                base_url=lc.tiles_url, timeout=self.cfg.timeout_seconds, transport=self._transport
            )
            if lc.tiles_url
            else http
        )
        roots, allowed, fixed = lc.fixed_keys()
        chain = replay_chain(roots, allowed, self.state.key_events(lc.origin))
        return _Followed(
            lc,
            http,
            tiles,
            lc.verifier(),
            lc.policy(),
            roots,
            allowed,
            fixed,
            chain,
        )

    def _evidence_log_of(self, lc: FollowedLog) -> str | None:
        """The origin of the followed evidence log served at the same URL as `lc`, if any."""
        for f in self.logs.values():
            if f.cfg.partition == "evidence" and f.cfg.url == lc.url:
                return f.cfg.origin
        return None

    def close(self) -> None:
        """Close every HTTP client and stop the signature workers."""
        if self.checker is not None:
            self.checker.close()
        for f in self.logs.values():
            f.http.close()
            if f.tiles is not f.http:
                f.tiles.close()

    @property
    def vkey(self) -> str:
        """The node's cosignature verifier key."""
        return self.cosigner.vkey

    def followed(self, origin: str) -> FollowedLog:
        """The config of the followed log with this origin (KeyError if none)."""
        return self.logs[origin].cfg

    def _now(self) -> int:
        return int(self.clock())

    # -- one round ----------------------------------------------------------------------------

    def audit_round(self, *, force: bool = False) -> dict[str, StepResult | VerifierError]:
        """`step` every followed log whose back-off allows it (all of them when `force`)."""
        out: dict[str, StepResult | VerifierError] = {}
        # Evidence logs first: the attested logs' credentials are checked against their chains.
        order = sorted(self.logs, key=lambda o: self.logs[o].cfg.partition != "evidence")
        for origin in order:
            failure = self.state.failure(origin)
            if not force and failure is not None and failure.retry_after > self.clock():
                out[origin] = LogUnavailable(
                    f"{origin}: backing off after {failure.count} failure(s): {failure.error}"
                )
                continue
            try:
                out[origin] = self.step(origin)
            except VerifierError as e:
                out[origin] = e
        return out

    def step(self, origin: str) -> StepResult:
        """Fetch, verify and persist the log's latest checkpoint; then cosign and push it.

        Plan (each step tagged in `_step`):
        0. re-read and re-hash a sample of the entry bundles verified before (`Recheck`): an
           entry edited in place is misbehaviour (entry-mismatch);
        1. fetch the checkpoint (LogUnavailable, with back-off, when the log does not answer);
        2. verify the log's signature and origin (LogUnavailable: an unsigned answer proves
           nothing about the log);
        3. compare with the last verified checkpoint: a smaller size (rollback) or a different
           root at the same size is misbehaviour;
        4. fetch and verify the consistency proof from the last verified size;
        5. fetch the new tiles (those the node does not hold at their width) and recompute the
           root from the tiles; on a mismatch refetch every tile before concluding;
        6. recompute the old root from the new tiles (consistency, independently of step 4);
        7. fetch the new entry bundles and hash every entry against its level-0 tile;
        8. re-validate every new entry in index order by its partition's rules
           (`validate_partition_entry`); for an attested log whose entry fails its credential
           checks, first bring the followed evidence log up to date (once per step) and retry;
        9. persist head, tiles and key events atomically (compare-and-swap), cosigned by the node;
        10. push the checkpoint to the configured witnesses and check the witness policy.

        Steps 3-8 raise LogMisbehaved after recording evidence; the head does not move.
        """
        f = self.logs[origin]
        try:
            result = self._step(f)
        except LogUnavailable as e:
            self._fail(origin, e.diagnostic)
            raise
        self.state.clear_failure(origin)
        return result

    def _fail(self, origin: str, error: str) -> None:
        prev = self.state.failure(origin)
        count = 1 if prev is None else prev.count + 1
        delay = min(self.cfg.backoff_base_seconds * 2 ** (count - 1), self.cfg.backoff_max_seconds)
        self.state.record_failure(origin, count, self.clock() + delay, error)
        log.warning(
            "%s unavailable (%d in a row, retry in %.0f s): %s", origin, count, delay, error
        )

    def _step(self, f: _Followed) -> StepResult:
        origin = f.cfg.origin
        head = self.state.head(origin)
        if head is not None:
            self._recheck(f, head)  # (0)
        note = self._get(f, f"/logs/{f.cfg.name}/checkpoint", static=True).content  # (1)
        try:
            cp, _ = open_checkpoint(note, f.verifier, origin)  # (2)
        except CheckpointError as e:
            raise LogUnavailable(f"{origin}: checkpoint does not verify: {e.diagnostic}") from e
        seen = EvidenceNote.of(note.decode(), f"{f.cfg.url} GET checkpoint", self._now())
        old_size = 0 if head is None else head.size
        old_root = merkle.EMPTY_ROOT if head is None else head.root
        stored = TreeTiles(lambda t: self.state.tile(origin, t))
        if head is not None and cp.size < head.size:  # (3)
            self._refuse_rollback(f, head, cp, seen, stored)
        if head is not None and cp.size == head.size:
            if cp.root_hash != head.root:
                self._misbehaved(self._split_view(f, head, seen))
            return self._finish(f, head, 0)
        proof_problem = self._check_proof(f, old_size, old_root, cp)  # (4)
        tree = self._fetch_tree(f, cp, seen)  # (5)
        if tree.root(old_size) != old_root:  # (6)
            ours = self._head_note(f, head)
            self._misbehaved(self._inconsistent(f, ours, seen, tree, old_size, cp.size))
        if proof_problem is not None:
            self._misbehaved(self._observation(f, "bad-proof", seen, proof_problem))
        chain = f.chain.copy()
        check = _EntryCheck()
        events = self._check_entries(f, cp, seen, tree, old_size, chain, check)  # (7), (8)
        now = self._now()
        signed = add_signatures(note, [self.cosigner.at(now)])
        new = VerifiedHead(cp.size, cp.root_hash, signed, now)
        expect = None if head is None else (head.size, head.root)
        try:
            digests = [(d, i) for d, i in check.digests.items()]
            self.state.advance(origin, expect, new, tree.fetched, events, digests)  # (9)
        except StateConflict:
            f.chain = replay_chain(f.roots, f.allowed, self.state.key_events(origin))
            raise
        # Crash here: the head is stored and cosigned; witnesses get it on the next step.
        chain.size = cp.size
        f.chain = chain
        log.info("%s verified at size %d (+%d entries)", origin, cp.size, cp.size - old_size)
        self.recheck_seen(origin)
        return self._finish(f, new, cp.size - old_size)  # (10)

    def _get(self, f: _Followed, path: str, *, static: bool = False) -> httpx.Response:
        """GET from the log's server, or (`static`: checkpoint, tiles, bundles) from its tile
        URL when it publishes one."""
        http = f.tiles if static else f.http
        try:
            r = http.get(path)
        except httpx.HTTPError as e:
            raise LogUnavailable(f"{f.cfg.origin}: GET {http.base_url}{path}: {e!r}") from e
        if r.status_code != 200:
            raise LogUnavailable(f"{f.cfg.origin}: GET {http.base_url}{path}: HTTP {r.status_code}")
        return r

    # -- (0): entries verified before ------------------------------------------------------------

    def _recheck(self, f: _Followed, head: VerifiedHead) -> int:
        """Re-read the bundles `Recheck` picks and hash each entry against the leaf the node
        verified under `head`; misbehaviour on a difference. Returns how many were re-read."""
        picked = self.recheck.pick(f.cfg.origin, head.size)
        tree = TreeTiles(lambda t: self.state.tile(f.cfg.origin, t))
        ours = self._head_note(f, head)
        for n in picked:
            width = tile_width(0, n, head.size)
            entries = self._bundle(f, n, width, ours)
            leaves = split_hashes(tree.read(TileId(0, n)))[:width]
            for i, entry in enumerate(entries):
                if merkle.leaf_hash(entry) != leaves[i]:
                    index = n * TILE_WIDTH + i
                    self._misbehaved(self._entry_mismatch(f, ours, tree, head.size, index, entry))
        return len(picked)

    # -- (3)-(6): the tree ----------------------------------------------------------------------

    def _refuse_rollback(
        self,
        f: _Followed,
        head: VerifiedHead,
        cp: Checkpoint,
        seen: EvidenceNote,
        stored: TreeTiles,
    ) -> NoReturn:
        """The log went back to a smaller tree: inconsistent if its root is not our prefix."""
        ours = self._head_note(f, head)
        if stored.root(cp.size) != cp.root_hash:
            self._misbehaved(self._inconsistent(f, seen, ours, stored, cp.size, head.size))
        reason = f"the log served size {cp.size} after the node verified size {head.size}"
        self._misbehaved(self._evidence(f, "rollback", (ours, seen), reason))

    def _check_proof(
        self, f: _Followed, old_size: int, old_root: bytes, cp: Checkpoint
    ) -> str | None:
        """Fetch and verify the consistency proof; return what is wrong with it, or None."""
        if old_size == 0:
            return None
        path = f"/logs/{f.cfg.name}/proof/consistency?first={old_size}&second={cp.size}"
        try:
            body = self._get(f, path).json()
            hashes = [base64.b64decode(h, validate=True) for h in body["consistency_proof"]]
            merkle.verify_consistency(old_size, cp.size, hashes, old_root, cp.root_hash)
        except (ValueError, KeyError, TypeError) as e:
            return f"consistency proof {old_size} -> {cp.size} is malformed: {e}"
        except merkle.ProofError as e:
            return f"consistency proof {old_size} -> {cp.size} fails: {e.diagnostic}"
        return None

    def _fetch_tree(self, f: _Followed, cp: Checkpoint, seen: EvidenceNote) -> TreeTiles:
        """(5): the tiles of the new tree, verified against its root; misbehaviour if they fail."""
        origin = f.cfg.origin
        tree = TreeTiles(lambda t: self.state.tile(origin, t))
        try:
            self._load_tiles(f, tree, cp, refetch=False)
            return tree
        except TreeMismatch as first:
            log.warning("%s: %s; refetching every tile", origin, first)
        # The node's stored tiles may be what disagrees (a forked history): start afresh.
        fresh = TreeTiles(lambda t: None)
        try:
            self._load_tiles(f, fresh, cp, refetch=True)
        except TreeMismatch as e:
            self._misbehaved(self._observation(f, "bad-data", seen, str(e)))
        return fresh

    def _load_tiles(self, f: _Followed, tree: TreeTiles, cp: Checkpoint, *, refetch: bool) -> None:
        """Fetch the tiles `tree` lacks at their width, check full ones and the root."""
        for tid, width in tiles_for_size(cp.size):
            have = None if refetch else tree.stored(tid)
            if have is not None and len(have) == width * merkle.HASH_SIZE:
                continue
            data = self._get(f, f"/logs/{f.cfg.name}/{tile_path(tid, width)}", static=True).content
            if len(data) != width * merkle.HASH_SIZE:
                raise TreeMismatch(f"tile {tid.level}/{tid.index} has {len(data)} bytes")
            tree.fetched[tid] = data
        for tid, data in tree.fetched.items():
            if len(data) == TILE_WIDTH * merkle.HASH_SIZE:
                parent = tree.read(TileId(tid.level + 1, tid.index // TILE_WIDTH))
                off = (tid.index % TILE_WIDTH) * merkle.HASH_SIZE
                if merkle.root_hash(split_hashes(data)) != parent[off : off + merkle.HASH_SIZE]:
                    raise TreeMismatch(f"tile {tid.level}/{tid.index} does not hash to its parent")
        try:
            root = tree.root(cp.size)
        except TileError as e:
            raise TreeMismatch(e.diagnostic) from e
        if root != cp.root_hash:
            raise TreeMismatch(
                f"tiles give root {root.hex()}, the checkpoint says {cp.root_hash.hex()}"
            )

    # -- (7)-(8): the entries -----------------------------------------------------------------

    def _check_entries(
        self,
        f: _Followed,
        cp: Checkpoint,
        seen: EvidenceNote,
        tree: TreeTiles,
        old_size: int,
        chain: KeyChain,
        check: _EntryCheck,
    ) -> list[StoredKeyEvent]:
        """Hash and re-validate entries [old_size, cp.size) in order; return the key events."""
        events: list[StoredKeyEvent] = []

        def entry_at(index: int) -> bytes:
            """An entry below the one being validated, verified against its leaf hash."""
            n, offset = divmod(index, TILE_WIDTH)
            if n == check.current[0]:
                return check.current[1][offset]
            if n not in check.bundles:
                entries = self._bundle(f, n, tile_width(0, n, cp.size), seen)
                leaves = split_hashes(tree.read(TileId(0, n)))
                for i, entry in enumerate(entries):
                    if merkle.leaf_hash(entry) != leaves[i]:
                        problem = self._entry_mismatch(
                            f, seen, tree, cp.size, n * TILE_WIDTH + i, entry
                        )
                        self._misbehaved(problem)
                check.remember(n, entries)
            return check.bundles[n][offset]

        # Many new evidence entries: windows of bundles fetched ahead, their signatures checked
        # on worker processes while the entries are replayed here in order.
        parallel = (
            self.checker is not None
            and f.cfg.partition == "evidence"
            and cp.size - old_size >= MIN_PARALLEL
        )
        ahead: dict[int, list[bytes]] = {}
        pre: Prechecked | None = None
        memo = ReplayMemo()
        try:
            for n in range(old_size // TILE_WIDTH, -(-cp.size // TILE_WIDTH)):
                width = tile_width(0, n, cp.size)
                if parallel and n not in ahead:
                    if pre is not None:
                        pre.cancel()
                    ahead, pre = self._prefetch(f, n, cp.size, old_size, chain)
                got = ahead.pop(n, None)
                entries = got if got is not None else self._bundle(f, n, width, seen)
                check.current = (n, entries)
                leaves = split_hashes(tree.read(TileId(0, n)))[:width]
                for i, entry in enumerate(entries):
                    index = n * TILE_WIDTH + i
                    if merkle.leaf_hash(entry) != leaves[i]:  # (7)
                        problem = self._entry_mismatch(f, seen, tree, cp.size, index, entry)
                        self._misbehaved(problem)
                    if index < old_size:
                        continue
                    try:  # (8)
                        stmt: Statement | None
                        digest = None
                        if pre is not None:
                            stmt, signers, digest = validate_prechecked(
                                index,
                                entry,
                                f.cfg.origin,
                                chain,
                                f.fixed,
                                tree.root,
                                pre.get(index),
                                memo,
                                entry_at,
                            )
                        else:
                            stmt, signers = self._validate(
                                f, index, entry, chain, tree.root, check, entry_at
                            )
                        self._one_entry(f, index, entry, check, digest)
                    except EntryInvalid as e:
                        cited = [] if e.cited is None else [(e.cited, entry_at(e.cited))]
                        self._misbehaved(
                            self._invalid_entry(f, seen, tree, cp.size, e, entry, events, cited)
                        )
                    # Every statement that changes the chain (key, credential and token-key
                    # events) is kept for replay after a restart; only evidence logs have them.
                    # (The parallel path returns no statement for the others.)
                    if (
                        f.cfg.partition == "evidence"
                        and stmt is not None
                        and isinstance(stmt.predicate, STATEFUL)
                    ):
                        events.append(StoredKeyEvent(index, entry, signers))
        finally:
            if pre is not None:
                pre.cancel()
        return events

    _PREFETCH_BUNDLES = 64
    """Bundles a parallel catch-up fetches and submits at once (16,384 entries)."""

    def _prefetch(
        self, f: _Followed, first: int, size: int, old_size: int, chain: KeyChain
    ) -> tuple[dict[int, list[bytes]], Prechecked | None]:
        """Fetch bundles `first`, `first` + 1, ... (up to `_PREFETCH_BUNDLES`) and submit their
        new entries to the workers, with `chain` as the replay has it now. Stops at the first
        bundle that does not come back whole: the ordered pass fetches that one itself, and
        reports it as the serial pass would."""
        assert self.checker is not None
        ahead: dict[int, list[bytes]] = {}
        last = min(-(-size // TILE_WIDTH), first + self._PREFETCH_BUNDLES)
        for n in range(first, last):
            width = tile_width(0, n, size)
            path = f"/logs/{f.cfg.name}/{tile_path(TileId(ENTRIES_LEVEL, n), width)}"
            try:
                entries = decode_bundle(self._get(f, path, static=True).content)
            except (LogUnavailable, TileError):
                break
            if len(entries) != width:
                break
            ahead[n] = entries
        start = max(old_size, first * TILE_WIDTH)
        new = [
            e
            for n, entries in ahead.items()
            for i, e in enumerate(entries)
            if n * TILE_WIDTH + i >= old_size
        ]
        if len(new) < MIN_PARALLEL // 4:
            return ahead, None
        return ahead, self.checker.precheck(start, new, chain, f.fixed)

    def _one_entry(
        self,
        f: _Followed,
        index: int,
        entry: bytes,
        check: _EntryCheck,
        digest: bytes | None = None,
    ) -> None:
        """(8) one entry per statement: no earlier entry the node verified holds the statement
        of entry `index` (`attest.admission.check_one_entry`, stage "duplicate"). `digest`:
        the entry's statement digest when a worker computed it already."""
        if f.cfg.partition == "anonymous":
            return  # every token buys an entry: two people may file the same report
        if digest is None:
            digest = rules.entry_statement_digest(entry)
        if digest is None:
            return
        first = check.digests.get(digest)
        if first is None:
            first = self.state.statement_at(f.cfg.origin, digest)
        try:
            rules.check_one_entry(index, digest, first)
        except AdmissionRefused as e:
            raise EntryInvalid(index, e.stage, e.diagnostic, e.cited) from e
        check.digests[digest] = index

    def _validate(
        self,
        f: _Followed,
        index: int,
        entry: bytes,
        chain: KeyChain,
        root_at: RootAt,
        check: _EntryCheck,
        entry_at: EntryAt,
    ) -> tuple[Statement, frozenset[bytes]]:
        """(8) for one entry, by the partition's rules (see `validate_partition_entry`)."""
        try:
            return validate_partition_entry(
                f.cfg.partition,
                index,
                entry,
                f.cfg.origin,
                root_at,
                chain=chain,
                fixed=f.fixed,
                evidence=self._evidence_chain(f),
                quorum=f.cfg.attested_quorum,
                entry_at=entry_at,
            )
        except EntryInvalid as e:
            if f.evidence is None or check.caught_up or e.stage not in _CREDENTIAL_STAGES:
                raise
        # The credentials may be in evidence entries the node has not verified yet: the
        # evidence log's checkpoint fetched now holds everything the server could have consulted
        # when it admitted this entry (it was in a checkpoint fetched earlier), so catch up once.
        check.caught_up = True
        try:
            self.step(f.evidence)
        except VerifierError as e:
            raise LogUnavailable(
                f"{f.cfg.origin}: entry {index}: credentials not checkable, the evidence log "
                f"{f.evidence} did not verify: {e.diagnostic}"
            ) from e
        return validate_partition_entry(
            "attested",
            index,
            entry,
            f.cfg.origin,
            root_at,
            chain=chain,
            evidence=self._evidence_chain(f),
            quorum=f.cfg.attested_quorum,
        )

    def _evidence_chain(self, f: _Followed) -> KeyChain | None:
        """The verified key chain of the evidence log an attested log's credentials live in."""
        return None if f.evidence is None else self.logs[f.evidence].chain

    def _bundle(self, f: _Followed, n: int, width: int, seen: EvidenceNote) -> list[bytes]:
        path = f"/logs/{f.cfg.name}/{tile_path(TileId(ENTRIES_LEVEL, n), width)}"
        try:
            entries = decode_bundle(self._get(f, path, static=True).content)
        except TileError as e:  # the bundle does not even decode
            self._misbehaved(self._observation(f, "bad-data", seen, f"bundle {n}: {e.diagnostic}"))
        if len(entries) != width:
            problem = f"entry bundle {n} has {len(entries)} entries, want {width}"
            self._misbehaved(self._observation(f, "bad-data", seen, problem))
        return entries

    # -- (10): cosign and push ----------------------------------------------------------------

    def _finish(self, f: _Followed, head: VerifiedHead, new_entries: int) -> StepResult:
        """Make sure the head carries the node's cosignature, push it to witnesses, check policy."""
        result = StepResult(f.cfg.origin, head.size, new_entries)
        if f.cfg.partition == "attested" and f.evidence is None:
            result.warnings.append(_NO_EVIDENCE_LOG)
        note = head.note
        if not self._has_own_cosignature(note):
            note = add_signatures(note, [self.cosigner.at(self._now())])
        for url in f.cfg.witnesses:
            try:
                note = self._push(f, url, head, note)
            except WitnessError as e:
                result.warnings.append(f"witness {url}: {e.diagnostic}")
                log.warning("%s: witness %s: %s", f.cfg.origin, url, e.diagnostic)
        if note != head.note:
            # StateConflict: another process moved the head on; its note is newer than ours.
            with contextlib.suppress(StateConflict):
                self.state.set_note(f.cfg.origin, head.size, head.root, note)
        try:
            f.policy.check(note)
            result.witnessed = True
        except PolicyError as e:
            result.warnings.append(f"witness policy: {e.diagnostic}")
        result.cosigners = [s.name for s in parse_note(note).signatures]
        return result

    def _has_own_cosignature(self, note: bytes) -> bool:
        return any(
            (s.name, s.key_id) == (self.cosigner.name, self.cosigner.key_id)
            for s in parse_note(note).signatures
        )

    def _push(self, f: _Followed, url: str, head: VerifiedHead, note: bytes) -> bytes:
        """Push `note` to one witness; return it with the witness's cosignatures added.

        The old size is the one the witness last cosigned for us (0 at first); on 409 the push
        is retried once from the size the witness reports, with a fresh consistency proof from
        the node's tiles. A witness already at this size is not asked again.
        """
        origin = f.cfg.origin
        old = self.state.witness_size(origin, url)
        if old == head.size:
            # Crash window: a crash after set_witness_size below and before the note is stored
            # loses this witness's cosignature for this size only; the next size brings it back.
            return note
        try:
            sigs = self._add_checkpoint(f, url, old, head, note)
        except WitnessConflict as e:
            if e.size > head.size:
                raise WitnessError(f"the witness is ahead of us, at size {e.size}") from e
            try:
                sigs = self._add_checkpoint(f, url, e.size, head, note)
            except WitnessConflict as again:
                if again.size == head.size:
                    log.warning("%s: witness %s holds another root at size %d", origin, url, e.size)
                    raise WitnessError(
                        f"the witness holds a different root at size {head.size}: a split view?"
                    ) from again
                raise
        self.state.set_witness_size(origin, url, head.size)
        return _with_signatures(note, self._verified_cosignatures(f, url, note, sigs))

    def _verified_cosignatures(
        self, f: _Followed, url: str, note: bytes, sigs: Sequence[NoteSignature]
    ) -> list[NoteSignature]:
        """The cosignatures in a witness's answer by witnesses of the policy that verify; the
        protocol has clients ignore unknown keys (a witness outside the policy adds nothing)."""
        names = {(s.name, s.key_id) for s in sigs}
        kept: list[NoteSignature] = []
        for w in f.policy.witnesses.values():
            if (w.verifier.name, w.verifier.key_id) in names:
                kept += verify_cosignatures(note, sigs, w.verifier)
        if not kept:
            raise WitnessError(f"{url} answered with no cosignature by a witness of the policy")
        return kept

    def _add_checkpoint(
        self, f: _Followed, url: str, old: int, head: VerifiedHead, note: bytes
    ) -> list[NoteSignature]:
        tree = TreeTiles(lambda t: self.state.tile(f.cfg.origin, t))
        return add_checkpoint(f.http, url, old, tree.consistency(old, head.size), note)

    # -- gossip -------------------------------------------------------------------------------

    def latest(self, origin: str) -> VerifiedHead | None:
        """The latest verified head of `origin`."""
        return self.state.head(origin)

    def check_checkpoint(
        self, origin: str, note: bytes, source: str
    ) -> tuple[Verdict, Evidence | None]:
        """Check a checkpoint someone showed us against the node's verified view.

        Plan:
        1. verify the log's signature (VerifierError: an unsigned note proves nothing);
        2. remember it as the latest seen from `source`;
        3. same size as ours: a different root is a split view;
        4. smaller than ours: its root must be our tree's root at that size (from our tiles);
        5. larger than ours: the log's consistency proof from our size must reproduce both roots;
           a proof that reproduces its root from another root at our size proves a fork. If the
           log cannot serve a proof (it does not have that tree), the verdict is "undecided"
           until the node verifies that far (`recheck_seen`).

        Returns the verdict and the evidence recorded (for "misbehaviour"). It does not raise
        LogMisbehaved: gossip is not the log's answer to us.
        """
        f = self.logs[origin]
        try:
            cp, _ = open_checkpoint(note, f.verifier, origin)  # (1)
        except CheckpointError as e:
            raise VerifierError(f"gossiped checkpoint does not verify: {e.diagnostic}") from e
        now = self._now()
        self.state.record_seen(origin, SeenCheckpoint(source, cp.size, cp.root_hash, note, now))
        theirs = EvidenceNote.of(note.decode(), source, now)  # (2)
        verdict, ev = self._compare(f, theirs, cp)
        if ev is not None:
            self._record(ev)
        return verdict, ev

    def _compare(
        self, f: _Followed, theirs: EvidenceNote, cp: Checkpoint
    ) -> tuple[Verdict, Evidence | None]:
        head = self.state.head(f.cfg.origin)
        if head is None:
            return "undecided", None
        ours = self._head_note(f, head)
        if cp.size == head.size:  # (3)
            if cp.root_hash == head.root:
                return "consistent", None
            return "misbehaviour", self._split_view(f, head, theirs)
        if cp.size < head.size:  # (4)
            tree = TreeTiles(lambda t: self.state.tile(f.cfg.origin, t))
            if tree.root(cp.size) == cp.root_hash:
                return "consistent", None
            return "misbehaviour", self._inconsistent(f, theirs, ours, tree, cp.size, head.size)
        if head.size == 0:  # (5)
            return "consistent", None
        path = f"/logs/{f.cfg.name}/proof/consistency?first={head.size}&second={cp.size}"
        try:
            body = self._get(f, path).json()
            hashes = [base64.b64decode(h, validate=True) for h in body["consistency_proof"]]
            merkle.verify_consistency(head.size, cp.size, hashes, head.root, cp.root_hash)
            return "consistent", None
        except (LogUnavailable, ValueError, KeyError, TypeError):
            return "undecided", None
        except merkle.ProofError:
            pass
        try:
            implied = implied_old_root(head.size, cp.size, hashes, cp.root_hash)
        except merkle.ProofError:
            implied = None  # the proof does not even reproduce their root: proves nothing
        if implied is None or implied == head.root:
            return "undecided", None
        proof = EvidenceProof.of(head.size, cp.size, implied, hashes)
        return "misbehaviour", self._make_inconsistent(f, ours, theirs, proof)

    def recheck_seen(self, origin: str) -> list[Evidence]:
        """Re-check the checkpoints peers showed against the current verified view (local)."""
        f = self.logs[origin]
        head = self.state.head(origin)
        found = []
        for s in self.state.seen(origin):
            if head is None or s.size > head.size:
                continue
            cp = Checkpoint(origin, s.size, s.root)
            _, ev = self._compare(f, EvidenceNote.of(s.note.decode(), s.source, s.seen_at), cp)
            if ev is not None:
                self._record(ev)
                found.append(ev)
        return found

    def import_evidence(self, body: str, source: str) -> Evidence | None:
        """Store a peer's evidence if it proves misbehaviour offline of a log we follow."""
        ev = Evidence.from_json(body)
        if ev.origin not in self.logs or ev.kind not in PROVABLE_KINDS:
            return None
        verify_evidence(body, self.logs[ev.origin].cfg.vkey)
        imported = ev.relayed(source)
        self._record(imported)
        return imported

    def evidence(self) -> list[Evidence]:
        """Every evidence record this node holds."""
        return [Evidence.from_json(r.body) for r in self.state.evidence()]

    # -- evidence -----------------------------------------------------------------------------

    def _head_note(self, f: _Followed, head: VerifiedHead | None) -> EvidenceNote:
        if head is None:
            raise VerifierError(f"{f.cfg.origin}: no verified head")
        return EvidenceNote.of(head.note.decode(), f"{f.cfg.url} (verified)", head.verified_at)

    def _evidence(
        self,
        f: _Followed,
        kind: EvidenceKind,
        notes: Sequence[EvidenceNote],
        reason: str,
        **extra: Any,
    ) -> Evidence:
        return Evidence(
            kind=kind,
            origin=f.cfg.origin,
            log_vkey=f.cfg.vkey,
            checkpoints=tuple(notes),
            reason=reason,
            observer=self.vkey,
            created_at=self._now(),
            **extra,
        )

    def _split_view(self, f: _Followed, head: VerifiedHead, theirs: EvidenceNote) -> Evidence:
        reason = f"two different roots for size {head.size}"
        return self._evidence(f, "split-view", (self._head_note(f, head), theirs), reason)

    def _inconsistent(
        self,
        f: _Followed,
        smaller: EvidenceNote,
        larger: EvidenceNote,
        tree: TreeTiles,
        first: int,
        second: int,
    ) -> Evidence:
        """Evidence that the tree of `second` leaves (whose tiles are `tree`) does not extend the
        checkpoint of `first` leaves, with a proof from `tree` that reproduces the larger root."""
        proof = EvidenceProof.of(first, second, tree.root(first), tree.consistency(first, second))
        return self._make_inconsistent(f, smaller, larger, proof)

    def _make_inconsistent(
        self, f: _Followed, smaller: EvidenceNote, larger: EvidenceNote, proof: EvidenceProof
    ) -> Evidence:
        reason = (
            f"the tree of size {proof.second} does not extend the checkpoint of size {proof.first}"
        )
        return self._evidence(f, "inconsistent", (smaller, larger), reason, consistency_proof=proof)

    def _observation(
        self, f: _Followed, kind: EvidenceKind, seen: EvidenceNote, reason: str
    ) -> Evidence:
        return self._evidence(f, kind, (seen,), reason)

    def _entry_mismatch(
        self,
        f: _Followed,
        seen: EvidenceNote,
        tree: TreeTiles,
        size: int,
        index: int,
        entry: bytes,
    ) -> Evidence:
        committed = EvidenceEntry.of(index, entry, tree.leaf(index), tree.inclusion(index, size))
        reason = f"entry {index} as served does not hash to the leaf the checkpoint commits to"
        return self._evidence(f, "entry-mismatch", (seen,), reason, entry=committed)

    def _invalid_entry(
        self,
        f: _Followed,
        seen: EvidenceNote,
        tree: TreeTiles,
        size: int,
        err: EntryInvalid,
        entry: bytes,
        batch_events: Sequence[StoredKeyEvent],
        cited: Sequence[tuple[int, bytes]] = (),
    ) -> Evidence:
        def included(index: int, data: bytes) -> EvidenceEntry:
            return EvidenceEntry.of(index, data, tree.leaf(index), tree.inclusion(index, size))

        events = [*self.state.key_events(f.cfg.origin), *batch_events]
        seen_proof: SeenProof | None = None
        try:
            env = Envelope.from_json(entry)
            ref = parse_statement(env.payload).predicate.seen_checkpoint
        except AttestError:
            ref = None  # it failed before the seen checkpoint mattered
        if ref is not None and 0 < ref.size < size:
            seen_proof = SeenProof(
                size=ref.size,
                old_root=encode_base64(tree.root(ref.size)),
                hashes=tuple(encode_base64(h) for h in tree.consistency(ref.size, size)),
            )
        context = InvalidEntryContext(
            stage=err.stage,
            operator_vkey=f.cfg.operator_vkey,
            allowed_keys=f.cfg.allowed_keys,
            key_events=tuple(included(e.index, e.entry) for e in events if e.index < err.index),
            seen_proof=seen_proof,
            partition=cast(Partition, f.cfg.partition),
            cited=tuple(included(index, data) for index, data in cited),
        )
        return self._evidence(
            f,
            "invalid-entry",
            (seen,),
            err.diagnostic,
            entry=included(err.index, entry),
            context=context,
        )

    def _record(self, ev: Evidence) -> bool:
        new = self.state.add_evidence(ev.origin, ev.kind, ev.digest(), ev.to_json(), self._now())
        if new:
            log.error("ALARM %s: %s: %s", ev.origin, ev.kind, ev.reason)
        return new

    def _misbehaved(self, ev: Evidence) -> NoReturn:
        """Record `ev` and raise LogMisbehaved."""
        self._record(ev)
        raise LogMisbehaved(ev)


def _with_signatures(note: bytes, sigs: Sequence[NoteSignature]) -> bytes:
    """`note` with the signature lines `sigs` appended (replacing lines of the same key)."""
    parsed = parse_note(note)
    new = {(s.name, s.key_id) for s in sigs}
    kept = tuple(s for s in parsed.signatures if (s.name, s.key_id) not in new)
    return Note(parsed.text, kept + tuple(sigs)).to_bytes()
