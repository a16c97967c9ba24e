"""Wiring: a server hosting several logs, each with its store view, signer, sequencer and rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from attest.keys import load_private_key
from ledger import merkle
from ledger.admission import AdmissionRule, AllowedKeysRule
from ledger.config import LogConfig, ServerConfig
from ledger.log import Log
from ledger.note import Ed25519NoteSigner
from ledger.sequencer import Sequencer, signed_head
from ledger.storage import Store


@dataclass
class HostedLog:
    """One log of this server."""

    name: str
    partition: str
    log: Log
    signer: Ed25519NoteSigner
    sequencer: Sequencer
    rule: AdmissionRule

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

    @classmethod
    def from_config(
        cls, cfg: ServerConfig, *, extra_allow_keys: Sequence[Path] = ()
    ) -> LedgerServer:
        """Open (and migrate) the database and set up every configured log."""
        store = Store(cfg.db, synchronous=cfg.sqlite_synchronous)
        store.migrate()
        hosted = [_host(store, cfg, lc, extra_allow_keys) for lc in cfg.logs]
        return cls(store, hosted, cfg.max_body_bytes)

    def start(self) -> None:
        """Start every sequencer on the running event loop."""
        for h in self.logs.values():
            h.sequencer.start()

    async def stop(self) -> None:
        """Stop every sequencer and close the database."""
        for h in self.logs.values():
            await h.sequencer.stop()
        self.store.close()


def _host(store: Store, cfg: ServerConfig, lc: LogConfig, extra: Sequence[Path]) -> HostedLog:
    signer = Ed25519NoteSigner(lc.origin, load_private_key(lc.key))
    empty = signed_head(lc.origin, 0, merkle.EMPTY_ROOT, signer)
    row = store.create_log(lc.name, lc.origin, lc.partition, signer.vkey, empty)
    if row.origin != lc.origin or row.vkey != signer.vkey:
        raise ValueError(f"log {lc.name!r}: database and config disagree on origin or key")
    log = Log(store, row)
    seq = Sequencer(log, signer, batch_size=cfg.batch_size, batch_delay=cfg.batch_delay_ms / 1000)
    if lc.partition != "evidence":
        raise ValueError(f"log {lc.name!r}: partition {lc.partition!r} has no admission rule yet")
    rule = AllowedKeysRule.from_files([*lc.allow_keys, *extra])
    return HostedLog(lc.name, lc.partition, log, signer, seq, rule)
