"""What an audit node follows: its data directory, config, pinned keys, and `follow_log`."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from attest.cosignature import CosignatureSigner
from attest.dsse import TrustedKey
from attest.errors import AttestError
from attest.keychain import vkey_raw
from attest.keys import dsse_keyid, generate_private_key, load_private_key, write_key_pair
from attest.keys import public_key_from_bytes as _public_key
from attest.note import (
    NoteVerifier,
)
from attest.policy import Policy
from attest.vkey import parse_vkey
from verifier.errors import VerifierError

CONFIG_NAME = "config.toml"
KEY_PATH = "keys/auditor.pem"
VKEY_NAME = "auditor.vkey"
STATE_NAME = "state.db"

NODE_TEMPLATE = """\
# bledger audit node. Add a log with: bledger verify --data DIR --follow URL --log NAME
[node]
name = "{name}"              # key name of this node's cosignatures
key = "{key}"
poll_seconds = 60
timeout_seconds = 10
backoff_base_seconds = 5      # a log that fails is retried after 5, 10, 20, ... seconds
backoff_max_seconds = 600
peers = []                    # other audit nodes' gossip URLs, e.g. "http://10.0.0.2:8090"
recheck_bundles = 4           # verified entry bundles each step re-reads and re-hashes

# [[logs]]
# name = "evidence"
# url = "http://127.0.0.1:8080"
# partition = "evidence"      # evidence, attested or anonymous: the rules entries must meet
# origin = "..."
# vkey = "..."                # the log's checkpoint key
# operator_vkey = "..."       # the operator's root key: it registers lab keys
# allowed_keys = []           # keys the log admits directly (its --allow-key), as vkeys
# witness_policy = "quorum none\\n"   # C2SP tlog-policy; the log line is added if absent
# witnesses = []              # witness submission prefixes to push checkpoints to
# attested_quorum = 2         # attested logs: distinct issuers a holder key needs per tier
"""

PARTITIONS = ("evidence", "attested", "anonymous")
"""The partitions a server hosts; `docs/verifier.md` ("Partitions") says what each gets."""

DEFAULT_ATTESTED_QUORUM = 2
"""Distinct credential issuers an attested report's key needs, unless the config says otherwise
(the server's default quorum for every professional tier)."""


class ConfigError(VerifierError):
    """The node's data directory or config is unusable."""


# -- config -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowedLog:
    """One log the node follows, with the keys it pins for it."""

    name: str
    url: str
    origin: str
    vkey: str
    operator_vkey: str
    allowed_keys: tuple[str, ...] = ()
    witness_policy: str = "quorum none\n"
    witnesses: tuple[str, ...] = ()
    partition: str = "evidence"
    attested_quorum: int = DEFAULT_ATTESTED_QUORUM
    tiles_url: str = ""
    """Where the log publishes its checkpoint, tiles and bundles as static objects (`bledger
    serve --tiles`); empty: read them from `url`. Proofs and entries by index still come from
    `url`."""

    def verifier(self) -> NoteVerifier:
        """The log's checkpoint verifier."""
        return parse_vkey(self.vkey)

    def policy(self) -> Policy:
        """The witness policy, with a `log` line for this log added when it has none."""
        text = self.witness_policy
        if not any(line.split()[:1] == ["log"] for line in text.splitlines()):
            text = f"log {self.vkey}\n{text}"
        return Policy.parse(text if text.endswith("\n") else text + "\n")

    def fixed_keys(self) -> tuple[list[bytes], list[bytes], list[TrustedKey]]:
        """(root keys, allowed keys, their TrustedKeys) as the log's key chain starts with."""
        roots = [vkey_raw(self.operator_vkey)]
        allowed = [vkey_raw(v) for v in self.allowed_keys]
        fixed = [TrustedKey(dsse_keyid(n, _public_key(r)), _public_key(r)) for n, r in roots]
        fixed += [TrustedKey(dsse_keyid(n, _public_key(r)), _public_key(r)) for n, r in allowed]
        return [r for _, r in roots], [r for _, r in allowed], fixed

    def to_toml(self) -> dict[str, Any]:
        """This log as a `[[logs]]` table (`attested_quorum` only for an attested log)."""
        table: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "partition": self.partition,
            "origin": self.origin,
            "vkey": self.vkey,
            "operator_vkey": self.operator_vkey,
            "allowed_keys": list(self.allowed_keys),
            "witness_policy": self.witness_policy,
            "witnesses": list(self.witnesses),
        }
        if self.partition == "attested":
            table["attested_quorum"] = self.attested_quorum
        if self.tiles_url:
            table["tiles_url"] = self.tiles_url
        return table


@dataclass(frozen=True)
class NodeConfig:
    """Everything an audit node needs, as read from DATA/config.toml."""

    data: Path
    name: str
    key: Path
    logs: tuple[FollowedLog, ...] = ()
    peers: tuple[str, ...] = ()
    poll_seconds: float = 60.0
    timeout_seconds: float = 10.0
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    recheck_bundles: int = 4


def init_node_dir(data: Path) -> NodeConfig:
    """Create DATA (config template, the node's key and DATA/auditor.vkey) or load it."""
    path = data / CONFIG_NAME
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        (data / "keys").mkdir(exist_ok=True)
        key = generate_private_key()
        pub = key.public_key().public_bytes_raw()
        name = f"bledger-auditor-{pub[:4].hex()}"
        if not (data / KEY_PATH).exists():
            write_key_pair(data / KEY_PATH, key)
        # The config is written last: its presence means the directory is complete.
        path.write_text(NODE_TEMPLATE.format(name=name, key=KEY_PATH))
    cfg = load_node_config(data)
    vkey = node_cosigner(cfg).vkey
    if not (data / VKEY_NAME).exists():
        (data / VKEY_NAME).write_text(vkey + "\n")
    return cfg


def load_node_config(data: Path) -> NodeConfig:
    """Read DATA/config.toml (key paths are relative to DATA)."""
    path = data / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text())
        node = raw["node"]
        logs = tuple(_followed(lc) for lc in raw.get("logs", []))
        origins = [lg.origin for lg in logs]
        if len(set(origins)) != len(origins):
            raise ConfigError(f"{path}: two logs share an origin")
        return NodeConfig(
            data=data,
            name=str(node["name"]),
            key=data / str(node["key"]),
            logs=logs,
            peers=tuple(str(p) for p in node.get("peers", [])),
            poll_seconds=float(node.get("poll_seconds", 60)),
            timeout_seconds=float(node.get("timeout_seconds", 10)),
            backoff_base_seconds=float(node.get("backoff_base_seconds", 5)),
            backoff_max_seconds=float(node.get("backoff_max_seconds", 600)),
            recheck_bundles=int(node.get("recheck_bundles", 4)),
        )
    except FileNotFoundError as e:
        raise ConfigError(f"{path} does not exist; run `bledger verify --data {data}`") from e
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def _followed(lc: dict[str, Any]) -> FollowedLog:
    fl = FollowedLog(
        name=str(lc["name"]),
        url=str(lc["url"]).rstrip("/"),
        origin=str(lc["origin"]),
        vkey=str(lc["vkey"]),
        operator_vkey=str(lc["operator_vkey"]),
        allowed_keys=tuple(str(v) for v in lc.get("allowed_keys", [])),
        witness_policy=str(lc.get("witness_policy", "quorum none\n")),
        witnesses=tuple(str(w).rstrip("/") for w in lc.get("witnesses", [])),
        # Configs written before partitions existed followed evidence logs only.
        partition=str(lc.get("partition", "evidence")),
        attested_quorum=int(lc.get("attested_quorum", DEFAULT_ATTESTED_QUORUM)),
        tiles_url=str(lc.get("tiles_url", "")).rstrip("/"),
    )
    if fl.partition not in PARTITIONS:
        raise ConfigError(f"log {fl.name}: unknown partition {fl.partition!r}")
    if fl.attested_quorum < 1:
        raise ConfigError(f"log {fl.name}: attested_quorum must be at least 1")
    try:
        if fl.verifier().name != fl.origin:
            raise ConfigError(f"log {fl.name}: vkey name is not the origin {fl.origin!r}")
        fl.fixed_keys()
        fl.policy()
    except ConfigError:
        raise
    except (AttestError, ValueError, VerifierError) as e:
        raise ConfigError(f"log {fl.name}: {getattr(e, 'diagnostic', e)}") from e
    return fl


def save_logs(data: Path, logs: Sequence[FollowedLog]) -> None:
    """Rewrite the `[[logs]]` of DATA/config.toml, keeping the `[node]` table as it is."""
    path = data / CONFIG_NAME
    raw = tomllib.loads(path.read_text())
    raw["logs"] = [lg.to_toml() for lg in logs]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(raw))
    tmp.replace(path)  # atomic: a crash leaves the old config or the new one


def follow_log(data: Path, url: str, name: str, *, timeout: float = 10.0) -> FollowedLog:
    """Add (or refresh) log `name` of the server at `url`, pinning the keys it reports now.

    Trust on first use: the keys are printed by the CLI so the operator can compare them with
    what the log's operator publishes.
    """
    cfg = init_node_dir(data)
    try:
        r = httpx.get(url.rstrip("/") + "/logs", timeout=timeout)
        r.raise_for_status()
        info = next(_LogInfo.of(x) for x in r.json() if x.get("name") == name)
    except (httpx.HTTPError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"cannot follow {url} log {name}: {e!r}") from e
    except StopIteration as e:
        raise ConfigError(f"{url} hosts no log named {name!r}") from e
    old = next((lg for lg in cfg.logs if lg.origin == info.origin), None)
    fl = FollowedLog(
        name=info.name,
        url=url.rstrip("/"),
        origin=info.origin,
        vkey=info.vkey,
        operator_vkey=info.operator_vkey,
        allowed_keys=old.allowed_keys if old else (),
        witness_policy=old.witness_policy if old else "quorum none\n",
        witnesses=old.witnesses if old else (),
        partition=info.partition,
        attested_quorum=old.attested_quorum if old else DEFAULT_ATTESTED_QUORUM,
        tiles_url=old.tiles_url if old else "",
    )
    if old is not None and (old.vkey, old.operator_vkey) != (fl.vkey, fl.operator_vkey):
        raise ConfigError(f"log {info.origin} now reports different keys than pinned; refusing")
    if old is not None and old.partition != fl.partition:
        raise ConfigError(
            f"log {info.origin} now reports partition {fl.partition!r}, pinned "
            f"{old.partition!r}; refusing"
        )
    _followed(fl.to_toml())  # validate before writing
    save_logs(data, [*(lg for lg in cfg.logs if lg.origin != fl.origin), fl])
    return fl


@dataclass(frozen=True)
class _LogInfo:
    """A log as `GET /logs` describes it (unverified: pinned on first use)."""

    name: str
    origin: str
    vkey: str
    operator_vkey: str
    partition: str

    @classmethod
    def of(cls, x: dict[str, Any]) -> _LogInfo:
        """Read the fields the node pins (others are ignored; a server that names no partition
        predates them and hosts evidence logs only)."""
        return cls(
            str(x["name"]),
            str(x["origin"]),
            str(x["vkey"]),
            str(x["operator_vkey"]),
            str(x.get("partition", "evidence")),
        )


def node_cosigner(cfg: NodeConfig) -> CosignatureSigner:
    """The node's cosigning key."""
    try:
        return CosignatureSigner(cfg.name, load_private_key(cfg.key))
    except AttestError as e:
        raise ConfigError(e.diagnostic) from e
