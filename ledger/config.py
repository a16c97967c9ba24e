"""The server's data directory: a TOML config, one Ed25519 key per log, the SQLite database.

`init_data_dir` creates it on first run; later runs read it back unchanged, so a log keeps its
origin and key for life.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from attest.keys import generate_private_key, write_key_pair
from ledger.errors import LedgerError

CONFIG_NAME = "config.toml"
DEFAULT_MAX_BODY = 256 * 1024
PARTITIONS = ("evidence", "attested", "anonymous")
DEFAULT_TIER_QUORUM = {"medical": 2, "legal": 2, "security-research": 2}


class ConfigError(LedgerError):
    """The data directory or its config file is unusable."""


@dataclass(frozen=True)
class LogConfig:
    """One hosted log: its name (URL segment), origin, partition, signing key, admission keys."""

    name: str
    origin: str
    partition: str
    key: Path
    allow_keys: tuple[Path, ...] = ()
    operator_key: Path | None = None
    allow_labs: tuple[str, ...] = ()
    tier_quorum: tuple[tuple[str, int], ...] = ()  # attested: issuers needed per tier
    interval_ms: int = 60_000  # anonymous: time between batches


@dataclass(frozen=True)
class ServerConfig:
    """Everything `bledger serve` needs."""

    data: Path
    db: str
    logs: tuple[LogConfig, ...]
    max_body_bytes: int = DEFAULT_MAX_BODY
    batch_size: int = 256
    batch_delay_ms: int = 0
    sqlite_synchronous: str = "FULL"
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self, name: str) -> LogConfig:
        """The config of the log called `name`."""
        for lc in self.logs:
            if lc.name == name:
                return lc
        raise ConfigError(f"no log named {name!r} in {self.data / CONFIG_NAME}")


def init_data_dir(data: Path, *, origin_prefix: str, db: str | None = None) -> ServerConfig:
    """Create DATA with a config, an evidence-log key and the database URL; or load it.

    Loading an existing DATA with a `db` other than the one its config names is an error: the
    config is where the URL lives once DATA exists, and quietly serving the old database while
    the operator asked for another would write their entries somewhere they do not expect.
    """
    path = data / CONFIG_NAME
    if path.exists():
        cfg = load_config(data)
        if db is not None and db != cfg.db:
            raise ConfigError(
                f"{path} names the database {cfg.db!r}, not --db {db!r}: DATA already exists, so "
                f"its config decides; edit [server] db there, or give a new --data directory"
            )
        return cfg
    data.mkdir(parents=True, exist_ok=True)
    (data / "keys").mkdir(exist_ok=True)
    for name in PARTITIONS:
        write_key_pair(data / "keys" / f"{name}.pem", generate_private_key())
    # The operator's root key: it registers lab keys in the evidence log.
    write_key_pair(data / "keys" / "operator.pem", generate_private_key())
    raw = {
        "server": {
            "db": db or f"sqlite:///{(data / 'ledger.db').resolve()}",
            "max_body_bytes": DEFAULT_MAX_BODY,
            "sqlite_synchronous": "FULL",
        },
        "sequencer": {"batch_size": 256, "batch_delay_ms": 0},
        "logs": [
            {
                "name": "evidence",
                "partition": "evidence",
                "origin": f"{origin_prefix}/evidence",
                "key": "keys/evidence.pem",
                "operator_key": "keys/operator.pem",
                "allow_keys": [],
                "allow_labs": [],
            },
            {
                "name": "attested",
                "partition": "attested",
                "origin": f"{origin_prefix}/attested",
                "key": "keys/attested.pem",
                # Distinct issuers whose credentials a professional needs, per tier.
                "tier_quorum": dict(DEFAULT_TIER_QUORUM),
            },
            {
                "name": "anonymous",
                "partition": "anonymous",
                "origin": f"{origin_prefix}/anonymous",
                "key": "keys/anonymous.pem",
                "interval_ms": 60_000,
            },
        ],
    }
    path.write_text(tomli_w.dumps(raw))
    return load_config(data)


def load_config(data: Path) -> ServerConfig:
    """Read DATA/config.toml; relative key paths are relative to DATA."""
    path = data / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text())
        server, seq = raw.get("server", {}), raw.get("sequencer", {})
        logs = tuple(_log_config(data, lc) for lc in raw["logs"])
        return ServerConfig(
            data=data,
            db=str(server["db"]),
            logs=logs,
            max_body_bytes=int(server.get("max_body_bytes", DEFAULT_MAX_BODY)),
            batch_size=int(seq.get("batch_size", 256)),
            batch_delay_ms=int(seq.get("batch_delay_ms", 0)),
            sqlite_synchronous=str(server.get("sqlite_synchronous", "FULL")),
        )
    except FileNotFoundError as e:
        raise ConfigError(f"{path} does not exist; run `bledger serve --data {data}`") from e
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def _log_config(data: Path, lc: dict[str, Any]) -> LogConfig:
    partition = str(lc["partition"])
    if partition not in PARTITIONS:
        raise ConfigError(f"log {lc.get('name')!r}: unknown partition {partition!r}")
    return LogConfig(
        name=str(lc["name"]),
        origin=str(lc["origin"]),
        partition=partition,
        key=data / str(lc["key"]),
        allow_keys=tuple(data / str(p) for p in lc.get("allow_keys", [])),
        operator_key=data / str(lc["operator_key"]) if "operator_key" in lc else None,
        allow_labs=tuple(str(v) for v in lc.get("allow_labs", [])),
        tier_quorum=tuple((str(t), int(k)) for t, k in lc.get("tier_quorum", {}).items()),
        interval_ms=int(lc.get("interval_ms", 60_000)),
    )
