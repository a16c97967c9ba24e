"""Wiring: a server hosting several logs, each with its store view, signer, sequencer and rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import merkle
from attest.dsse import TrustedKey
from attest.keychain import vkey_raw
from attest.keys import load_private_key, load_public_key, verifier_key
from attest.note import Ed25519NoteSigner
from attest.predicates import CheckpointRef, KeyEvent
from attest.statement import sign_statement
from ledger.admission import (
    AdmissionError,
    AdmissionRule,
    Admitted,
    EvidenceRule,
    admit_batch_entry,
)
from ledger.admitters import AdmissionPool, PoolOptions
from ledger.config import (
    DEFAULT_TIER_QUORUM,
    ConfigError,
    LogConfig,
    ServerConfig,
    load_config,
)
from ledger.errors import LedgerError
from ledger.log import Log
from ledger.partitions import AnonymousQueue, AnonymousRule, AttestedRule, anonymous_sequencer
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store
from ledger.tilestore import Publisher, open_tile_store

OPERATOR_KEY_NAME = "operator"


@dataclass
class HostedLog:
    """One log of this server."""

    name: str
    partition: str
    log: Log
    signer: Ed25519NoteSigner
    sequencer: Sequencer
    rule: AdmissionRule
    operator_vkey: str
    queue: AnonymousQueue | None = None  # the anonymous log's interval batches
    publisher: Publisher | None = None  # where the log's tiles are published, if anywhere

    @property
    def origin(self) -> str:
        """The checkpoint origin line."""
        return self.log.row.origin

    @property
    def vkey(self) -> str:
        """The log's C2SP verifier key."""
        return self.signer.vkey


class LedgerServer:
    """All logs of one server process, sharing one `Store`."""

    def __init__(self, store: Store, logs: Sequence[HostedLog], max_body_bytes: int) -> None:
        self.store = store
        self.logs = {h.name: h for h in logs}
        self.max_body_bytes = max_body_bytes
        # Phase 1 of admission in worker processes (`ledger.admitters`), when the operator
        # asks for it; None: in this process.
        self.admission_pool: AdmissionPool | None = None
        self._grouper: AdmissionGroups | None = None
        # Run first by `stop`: what a frontend's forwarding added (`ledger.forwarding.forward`
        # closes its link there, so the writes still waiting are answered, not dropped).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    def from_config(
        cls,
        cfg: ServerConfig,
        *,
        extra_allow_keys: Sequence[Path] = (),
        extra_allow_labs: Sequence[str] = (),
        anonymous_interval_ms: int | None = None,
        tiles: str | None = None,
    ) -> LedgerServer:
        """Open (and migrate) the database, set up every log, register bootstrap lab keys.

        `tiles` names a tile store (`ledger.tilestore.open_tile_store`: `dir:PATH`,
        `s3://BUCKET/PREFIX?endpoint=URL`) to which every log is published after each batch;
        None or `db`: the database serves the tiles through the API only.

        The evidence log comes first: the other partitions consult its key chain.
        """
        store = Store(cfg.db, synchronous=cfg.sqlite_synchronous)
        store.migrate()
        evidence_cfg = [lc for lc in cfg.logs if lc.partition == "evidence"]
        if len(evidence_cfg) != 1:
            raise ConfigError("the config must hold exactly one log of partition 'evidence'")
        ev, operator = _host_evidence(store, cfg, evidence_cfg[0], extra_allow_keys)
        assert isinstance(ev.rule, EvidenceRule)
        for lab in (*evidence_cfg[0].allow_labs, *extra_allow_labs):
            register_lab(ev, ev.rule, lab_vkey(lab), operator)
        hosted = [ev]
        for lc in cfg.logs:
            if lc.partition != "evidence":
                hosted.append(_host_partition(store, cfg, lc, ev, anonymous_interval_ms))
        tile_store = open_tile_store(tiles or "db")
        if tile_store is not None:
            for h in hosted:
                h.publisher = Publisher(store, h.log.id, h.name, h.origin, tile_store)
                h.sequencer.publish = h.publisher.publish
        return cls(store, hosted, cfg.max_body_bytes)

    def catch_up_tiles(self) -> list[str]:
        """Publish what the database holds beyond the tile store's checkpoint (a crash between
        a commit and its upload); returns one warning per log whose store did not answer."""
        problems = []
        for h in self.logs.values():
            if h.publisher is None:
                continue
            try:
                h.publisher.catch_up()
            except LedgerError as e:
                problems.append(f"log {h.name}: {e.diagnostic}")
        return problems

    def start(self) -> None:
        """Start every sequencer (and the anonymous batches) on the running event loop."""
        for h in self.logs.values():
            h.sequencer.start()
            if h.queue is not None:
                h.queue.start()

    async def stop(self) -> None:
        """Stop every sequencer and the admission workers, and close the database."""
        for close in self.on_stop:
            await close()
        for h in self.logs.values():
            if h.queue is not None:
                await h.queue.stop()
            await h.sequencer.stop()
        if self.admission_pool is not None:
            self.admission_pool.close()
        self.store.close()

    def rule_of(self, log: str) -> AdmissionRule:
        """The admission rule of log `log` (what an admission worker needs)."""
        return self.logs[log].rule

    def start_admission_workers(self, opts: PoolOptions, workers: int) -> None:
        """Run phase 1 of admission in `workers` processes from now on (`ledger.admitters`)."""
        self.admission_pool = AdmissionPool(admission_worker_rules, opts, workers)
        self.admission_pool.warm()

    async def admit_one(self, h: HostedLog, body: bytes) -> Admitted:
        """Phase 1 of admission for one posted envelope (not for the anonymous log), grouped
        with the envelopes that arrive with it (`AdmissionGroups`); raises its refusal."""
        if self._grouper is None:
            pool = self.admission_pool
            self._grouper = AdmissionGroups(
                self.admit,
                1 if pool is None else pool.workers,
                None if pool is None else self._admit_in_workers,
            )
        return await self._grouper.admit(h, body)

    async def _admit_in_workers(
        self, h: HostedLog, bodies: Sequence[bytes]
    ) -> list[Admitted | LedgerError]:
        """`admit`, awaiting the admission workers on the event loop rather than in a thread."""
        if self.admission_pool is not None and h.queue is None:
            return await self.admission_pool.admit_async(h.name, bodies)
        return await asyncio.to_thread(self.admit, h, bodies)

    async def admit_entries(
        self, h: HostedLog, entries: Sequence[bytes]
    ) -> list[Admitted | LedgerError | None]:
        """Phase 1 of admission for the envelopes of a batch request, given as their bytes in
        it (`ledger.admission.admit_batch_entry`: None for one that is not JSON), in the worker
        processes when there are any, else in a thread; one answer per entry, in order."""
        if self.admission_pool is not None and h.queue is None:
            return await self.admission_pool.admit_entries(h.name, entries)
        return await asyncio.to_thread(lambda: [admit_batch_entry(h.rule, e) for e in entries])

    def admit(self, h: HostedLog, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
        """Phase 1 of admission for `bodies` (no token: not for the anonymous log), in the
        worker processes when there are any; one result or refusal per body, in order."""
        if self.admission_pool is not None and h.queue is None:
            return self.admission_pool.admit(h.name, bodies)
        out: list[Admitted | LedgerError] = []
        for body in bodies:
            try:
                out.append(h.rule.admit(body, None))
            except LedgerError as e:
                out.append(e)
        return out


class AdmissionGroups:
    """Single-envelope writes admitted in groups: envelopes that arrive while earlier groups
    are being admitted form the next group, one call of `admit` (in a thread; spread over the
    admission workers when there are any). So the per-call costs (a thread hop, and with
    workers the pickling and the round trip through the pool's queues) are paid once per group
    rather than per request, and every worker verifies even when clients post one envelope at
    a time. No envelope waits for a timer: a group is cut as soon as a call slot is free, so an
    idle server admits a lone envelope at once. `in_flight` calls run at a time (one per
    admission worker keeps each busy while results travel back)."""

    MAX_GROUP = 256

    def __init__(
        self,
        admit: Callable[[HostedLog, Sequence[bytes]], list[Admitted | LedgerError]],
        in_flight: int,
        admit_async: Callable[[HostedLog, Sequence[bytes]], Awaitable[list[Admitted | LedgerError]]]
        | None = None,
    ) -> None:
        """`admit` runs in a thread; `admit_async`, when given, is awaited instead (the
        admission workers' futures: no thread hop per group)."""
        self._admit, self._admit_async = admit, admit_async
        self._in_flight, self._running = max(1, in_flight), 0
        self._pending: list[tuple[HostedLog, bytes, asyncio.Future[Admitted]]] = []

    async def admit(self, h: HostedLog, body: bytes) -> Admitted:
        """Admit `body` for log `h`; raises its LedgerError when refused."""
        fut: asyncio.Future[Admitted] = asyncio.get_running_loop().create_future()
        self._pending.append((h, body, fut))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        while self._pending and self._running < self._in_flight:
            group = self._pending[: self.MAX_GROUP]
            del self._pending[: self.MAX_GROUP]
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(group))

    async def _run(self, group: list[tuple[HostedLog, bytes, asyncio.Future[Admitted]]]) -> None:
        try:
            by_log: dict[str, list[tuple[HostedLog, bytes, asyncio.Future[Admitted]]]] = {}
            for item in group:
                by_log.setdefault(item[0].name, []).append(item)
            for items in by_log.values():
                bodies = [b for _, b, _ in items]
                try:
                    if self._admit_async is not None:
                        got = await self._admit_async(items[0][0], bodies)
                    else:
                        got = await asyncio.to_thread(self._admit, items[0][0], bodies)
                except Exception as exc:  # the call failed (a worker died): none was admitted
                    for _, _, fut in items:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), res in zip(items, got, strict=True):
                    if fut.done():
                        continue
                    if isinstance(res, LedgerError):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._running -= 1
            self._dispatch()


def _open_log(store: Store, lc: LogConfig) -> tuple[Log, Ed25519NoteSigner]:
    signer = Ed25519NoteSigner(lc.origin, load_private_key(lc.key))
    empty = signed_head(lc.origin, 0, merkle.EMPTY_ROOT, signer)
    row = store.create_log(lc.name, lc.origin, lc.partition, signer.vkey, empty)
    if row.origin != lc.origin or row.vkey != signer.vkey or row.partition != lc.partition:
        raise ConfigError(f"log {lc.name!r}: database and config disagree on origin or key")
    return Log(store, row), signer


def _host_evidence(
    store: Store, cfg: ServerConfig, lc: LogConfig, extra: Sequence[Path]
) -> tuple[HostedLog, Ed25519PrivateKey]:
    if lc.operator_key is None:
        raise ConfigError(f"log {lc.name!r}: no operator_key in the config")
    log, signer = _open_log(store, lc)
    operator = load_private_key(lc.operator_key)
    rule = EvidenceRule(
        store,
        log.id,
        lc.origin,
        roots=[TrustedKey.named(OPERATOR_KEY_NAME, operator.public_key())],
        allowed=[TrustedKey.named(p.stem, load_public_key(p)) for p in (*lc.allow_keys, *extra)],
    )
    seq = Sequencer(
        log, signer, batch_size=cfg.batch_size, batch_delay=cfg.batch_delay_ms / 1000, rule=rule
    )
    op_vkey = verifier_key(OPERATOR_KEY_NAME, operator.public_key())
    return HostedLog(lc.name, lc.partition, log, signer, seq, rule, op_vkey), operator


def _host_partition(
    store: Store, cfg: ServerConfig, lc: LogConfig, ev: HostedLog, interval_ms: int | None
) -> HostedLog:
    log, signer = _open_log(store, lc)
    assert isinstance(ev.rule, EvidenceRule)
    rule: AdmissionRule
    queue = None
    if lc.partition == "attested":
        quorum = dict(lc.tier_quorum) or DEFAULT_TIER_QUORUM
        rule = AttestedRule(store, log.id, lc.origin, ev.rule, quorum)
        seq = Sequencer(log, signer, batch_size=cfg.batch_size, rule=rule)
    elif lc.partition == "anonymous":
        rule = AnonymousRule(store, log.id, lc.origin, ev.rule)
        seq = anonymous_sequencer(log, signer, rule, batch_size=cfg.batch_size)
        interval = (interval_ms if interval_ms is not None else lc.interval_ms) / 1000
        queue = AnonymousQueue(seq, signer, interval=interval)
    else:
        raise ConfigError(f"log {lc.name!r}: unknown partition {lc.partition!r}")
    return HostedLog(lc.name, lc.partition, log, signer, seq, rule, ev.operator_vkey, queue)


def lab_vkey(spec: str) -> str:
    """A lab key given as a C2SP verifier key, or as a `.pub` PEM file named after the lab."""
    path = Path(spec)
    if path.is_file():
        return verifier_key(
            path.name.removesuffix(".pub").removesuffix(".pem"), load_public_key(path)
        )
    try:
        vkey_raw(spec)
    except ValueError as e:
        raise ConfigError(f"--allow-lab {spec!r}: neither a .pub file nor a verifier key") from e
    return spec


def register_lab(h: HostedLog, rule: EvidenceRule, vkey: str, operator: Ed25519PrivateKey) -> None:
    """Register a lab key in the evidence log, signed by the operator (once; idempotent)."""
    _, raw = vkey_raw(vkey)
    chain = rule.chain
    if chain.active(raw) is not None:
        return
    if raw in chain.used:
        raise ConfigError(f"lab key {vkey} was revoked or rotated away; it cannot return")
    head = h.log.head()
    event = KeyEvent(
        seen_checkpoint=CheckpointRef(origin=h.origin, size=head.size, root=head.root.hex()),
        issued_at=int(time.time()),
        action="register",
        role="lab",
        key=vkey,
    )
    env = sign_statement(event, [(OPERATOR_KEY_NAME, operator)])
    (res,) = h.sequencer.integrate([rule.admit(env.canonical_bytes())])
    if isinstance(res, AdmissionError):
        # Another frontend on the same database may have registered the key between our check
        # above and the sequencer's lock: the batch check replayed its entry and refused ours
        # ("registered once"). Catch up as that check did; if the key is now active, the
        # registration we wanted is in the log.
        rule.refresh()
        if rule.chain.active(raw) is not None:
            return
        raise ConfigError(f"registering lab key {vkey}: {res.diagnostic}")


def admission_worker_rules(opts: PoolOptions) -> LedgerServer:
    """An admission worker's rules: the same server, built from the same data directory (its
    sequencers are never started; the serving process already migrated and registered)."""
    return LedgerServer.from_config(
        load_config(Path(opts.data)), extra_allow_keys=[Path(p) for p in opts.allow_keys]
    )
