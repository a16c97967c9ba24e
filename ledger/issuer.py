"""A Privacy Pass issuer for the anonymous tier: RFC 9578 token type 0x0002 (blind RSA).

The issuer hands out blind-signed tokens; the anonymous log accepts a write carrying one. Which
token keys the log accepts is public: each key is announced in the ledger's evidence log as a
`TokenKey` statement signed by this issuer's Ed25519 key (registered there with
`bledger keys certify --role issuer`), so every client can check that it was given the same key
as everyone else.

Endpoints (RFC 9578 §4 and §6):

    GET  /.well-known/private-token-issuer-directory   application/private-token-issuer-directory
    POST /token-request   application/private-token-request -> application/private-token-response

Key lifecycle, run at start and every `check_interval_s` (`Issuer.rotate`):

1. a key whose publication or retirement was interrupted (its signed envelope is stored) is
   re-submitted: the ledger deduplicates identical envelopes, so this is safe to repeat;
2. a key whose `not_after` has passed is announced with a TokenKey ``retire`` and dropped;
3. when no served key has more than `overlap_s` left, a new key is generated and published
   (`not_after` = now + `lifetime_s`), so old and new are served side by side until the old one
   expires; a new key's truncated key id never collides with a live key's (RFC 9578 §5.5).

A key is served only once the ledger has admitted its publication, and never after the issuer
has decided to retire it.

Privacy decisions a caller must know:

* **The client's address is seen in one place only**: `ClientContext`, handed to the pluggable
  `Attester` just before signing. The default `TokenBucketAttester` keys its in-memory buckets by
  an HMAC of the address under a per-process random key, and forgets a bucket once it has
  refilled. Nothing about a client is logged or written to disk: `serve` runs uvicorn without an
  access log, and this module logs only its own key events.
* **Blinded messages are never kept**: `Issuer.issue` signs and forgets (blindness makes them
  unlinkable to tokens anyway; not keeping them removes the question).

Data directory (`init_issuer_dir`): ``config.toml`` (settings), ``state.toml`` (token keys and
the pinned evidence log, written by the issuer), ``token-keys/<key id>.pem`` (RSA-2048 PKCS#8 PEM,
mode 0600).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from attest import privacypass as pp
from attest.dsse import Envelope
from attest.errors import AttestError
from attest.keys import load_private_key, verifier_key
from attest.predicates import CheckpointRef, TokenKey
from attest.statement import sign_statement
from ledger.client import LedgerAPI, LedgerClientError
from ledger.errors import LedgerError

__all__ = [
    "CONFIG_NAME",
    "DIRECTORY_MEDIA_TYPE",
    "DIRECTORY_PATH",
    "REQUEST_MEDIA_TYPE",
    "REQUEST_PATH",
    "RESPONSE_MEDIA_TYPE",
    "STATE_NAME",
    "AttestationRefusedError",
    "Attester",
    "ClientContext",
    "EvidencePublisher",
    "Issuer",
    "IssuerConfig",
    "IssuerConfigError",
    "IssuerError",
    "KeyStore",
    "MalformedRequestError",
    "NoTokenKeyError",
    "PublicationError",
    "RateLimitedError",
    "TokenBucketAttester",
    "TokenKeyRecord",
    "UnprocessableRequestError",
    "UnsupportedMediaTypeError",
    "create_issuer_app",
    "init_issuer_dir",
    "issuer_vkey",
    "open_issuer",
    "parse_rate",
]

DIRECTORY_PATH: Final = "/.well-known/private-token-issuer-directory"
REQUEST_PATH: Final = "/token-request"
DIRECTORY_MEDIA_TYPE: Final = "application/private-token-issuer-directory"
REQUEST_MEDIA_TYPE: Final = "application/private-token-request"
RESPONSE_MEDIA_TYPE: Final = "application/private-token-response"

CONFIG_NAME: Final = "config.toml"
STATE_NAME: Final = "state.toml"
KEYS_DIR: Final = "token-keys"

DEFAULT_RATE_PER_HOUR: Final = 10
DEFAULT_LIFETIME_S: Final = 30 * 24 * 3600
DEFAULT_OVERLAP_S: Final = 7 * 24 * 3600
DEFAULT_CHECK_INTERVAL_S: Final = 60.0
EVIDENCE_LOG: Final = "evidence"

_RSA_BITS = pp.NK * 8
_MAX_REQUEST_BYTES = 4096  # a TokenRequest is 259 bytes; anything much larger is not one
_DIRECTORY_MAX_AGE = 60  # seconds a client may cache the directory (RFC 9578 §4: cacheable)

# Only the issuer's own key events are logged; never anything about a client.
_log = logging.getLogger("bledger.issuer")


# -- errors -------------------------------------------------------------------------------------


class IssuerError(LedgerError):
    """Base class of the issuer's errors. `diagnostic` is one printable line."""

    status: int = 500
    error: str = "issuer_error"

    def __init__(self, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic


class IssuerConfigError(IssuerError):
    """The data directory, its files or the command-line settings are unusable."""


class PublicationError(IssuerError):
    """The ledger refused (or could not be asked) to publish or retire a token key."""


class NoTokenKeyError(IssuerError):
    """No published token key is current: the issuer cannot issue (HTTP 503)."""

    status = 503
    error = "no_token_key"


class MalformedRequestError(IssuerError):
    """A request body that is not a TokenRequest at all (HTTP 400)."""

    status = 400
    error = "malformed_request"


class UnsupportedMediaTypeError(IssuerError):
    """A token request without Content-Type application/private-token-request (HTTP 415)."""

    status = 415
    error = "unsupported_media_type"


class UnprocessableRequestError(IssuerError):
    """RFC 9578 §6.2: another token type, an unknown truncated key id, or a bad blinded_msg
    (HTTP 422)."""

    status = 422
    error = "unprocessable_request"


class AttestationRefusedError(IssuerError):
    """The attester will not vouch for this client now (HTTP 403, or a subclass's status)."""

    status = 403
    error = "attestation_refused"


class RateLimitedError(AttestationRefusedError):
    """The client used up its issuance budget; `retry_after` is in whole seconds (HTTP 429)."""

    status = 429
    error = "rate_limited"

    def __init__(self, diagnostic: str, retry_after: int) -> None:
        super().__init__(diagnostic)
        self.retry_after = retry_after


# -- attestation: the one place a client's address is seen ---------------------------------------


@dataclass(frozen=True)
class ClientContext:
    """What an attester may know about the client asking for a token. Never stored, never logged.

    `address` is the peer address of the connection (None when the server does not know it).
    """

    address: str | None = field(repr=False)


class Attester(Protocol):
    """Decides whether a client may have a token now (RFC 9576 §3.2, the Attester role)."""

    def attest(self, client: ClientContext) -> None:
        """Return to let issuance proceed; raise `AttestationRefusedError` to refuse it."""
        ...


class TokenBucketAttester:
    """At most `per_hour` tokens per client address per hour, bursts up to `per_hour`.

    Buckets live in memory only and are keyed by HMAC-SHA-256 of the address under a random key
    drawn at start, so even this process's memory holds no address; a bucket that has refilled is
    forgotten (it carries no information any more). `clock` returns seconds (monotonic).
    """

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_hour < 1:
            raise IssuerConfigError(f"rate must be at least 1 token per hour, got {per_hour}")
        self.capacity = float(per_hour)
        self.refill_per_s = per_hour / 3600.0
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._calls = 0

    def attest(self, client: ClientContext) -> None:
        """Take one token from the client's bucket, or raise `RateLimitedError`."""
        key = hmac.new(self._secret, (client.address or "").encode(), hashlib.sha256).digest()
        now = self._clock()
        with self._lock:
            tokens = self._level(key, now)
            if tokens < 1.0:
                wait = math.ceil((1.0 - tokens) / self.refill_per_s)
                raise RateLimitedError(
                    f"issuance limit of {int(self.capacity)} tokens per hour reached; "
                    f"retry in {wait} s",
                    wait,
                )
            self._buckets[key] = (tokens - 1.0, now)
            self._calls += 1
            if self._calls % 256 == 0:
                self._forget_full(now)

    def _level(self, key: bytes, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.refill_per_s)

    def _forget_full(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self.capacity]
        for k in full:
            del self._buckets[k]


def parse_rate(text: str) -> int:
    """Tokens per hour from ``N/hour`` (also ``N/h``, ``N/day``, ``N/d`` or a bare ``N``)."""
    count, _, unit = text.strip().partition("/")
    per = {"": 1, "h": 1, "hour": 1, "d": 24, "day": 24}.get(unit.strip().lower())
    if per is None or not count.strip().isdigit():
        raise IssuerConfigError(f"rate {text!r}: want N/hour or N/day")
    if per == 24:  # a daily budget, spread over hours; at least one token an hour
        return max(1, int(count) // 24)
    return int(count)


# -- configuration and state on disk --------------------------------------------------------------


@dataclass(frozen=True)
class IssuerConfig:
    """Settings of one issuer (DATA/config.toml).

    `ledger` is the ledger's base URL, `key`/`key_name` the issuer's Ed25519 signing key and the
    name it is registered under, `rate_per_hour` the default attester's budget, `lifetime_s` how
    long a token key is valid, `overlap_s` how long before its expiry its successor is published,
    `check_interval_s` how often the lifecycle runs.
    """

    data: Path
    ledger: str
    key: Path
    key_name: str
    rate_per_hour: int = DEFAULT_RATE_PER_HOUR
    lifetime_s: int = DEFAULT_LIFETIME_S
    overlap_s: int = DEFAULT_OVERLAP_S
    check_interval_s: float = DEFAULT_CHECK_INTERVAL_S

    def __post_init__(self) -> None:
        if not 0 < self.overlap_s < self.lifetime_s:
            raise IssuerConfigError(
                f"key overlap ({self.overlap_s} s) must be positive and shorter than the key "
                f"lifetime ({self.lifetime_s} s)"
            )
        if self.check_interval_s <= 0 or self.check_interval_s >= self.overlap_s:
            raise IssuerConfigError(
                f"check interval ({self.check_interval_s} s) must be positive and shorter than "
                f"the overlap ({self.overlap_s} s), or a rotation could be missed"
            )
        if self.rate_per_hour < 1:
            raise IssuerConfigError("rate must be at least 1 token per hour")


def init_issuer_dir(data: Path, **overrides: Any) -> IssuerConfig:
    """Create DATA with a config from `overrides` (first run), or load it and apply `overrides`.

    `overrides` are IssuerConfig fields; None values are ignored. The first run needs `ledger`
    and `key`; `key_name` defaults to the key file's stem. Later runs keep what the config says
    unless overridden, and write nothing back.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    path = data / CONFIG_NAME
    if path.exists():
        return _config_from(data, {**_read_toml(path), **given})
    if "ledger" not in given or "key" not in given:
        raise IssuerConfigError(f"{path} does not exist: the first run needs --ledger and --key")
    given["key"] = Path(given["key"]).resolve()
    given.setdefault("key_name", _stem(given["key"]))
    cfg = _config_from(data, given)
    data.mkdir(parents=True, exist_ok=True)
    (data / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
    raw = {
        "ledger": cfg.ledger,
        "key": str(cfg.key),
        "key_name": cfg.key_name,
        "rate_per_hour": cfg.rate_per_hour,
        "lifetime_s": cfg.lifetime_s,
        "overlap_s": cfg.overlap_s,
        "check_interval_s": cfg.check_interval_s,
    }
    _write_atomic(path, tomli_w.dumps({"issuer": raw}).encode(), 0o644)
    return cfg


def _config_from(data: Path, raw: Mapping[str, Any]) -> IssuerConfig:
    section = raw.get("issuer", {})
    merged = {**section, **{k: v for k, v in raw.items() if k != "issuer"}}
    try:
        return IssuerConfig(
            data=data,
            ledger=str(merged["ledger"]).rstrip("/"),
            key=Path(merged["key"]),
            key_name=str(merged.get("key_name") or _stem(Path(merged["key"]))),
            rate_per_hour=int(merged.get("rate_per_hour", DEFAULT_RATE_PER_HOUR)),
            lifetime_s=int(merged.get("lifetime_s", DEFAULT_LIFETIME_S)),
            overlap_s=int(merged.get("overlap_s", DEFAULT_OVERLAP_S)),
            check_interval_s=float(merged.get("check_interval_s", DEFAULT_CHECK_INTERVAL_S)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise IssuerConfigError(f"{data / CONFIG_NAME}: bad or missing setting: {e}") from e


def _stem(path: Path) -> str:
    return path.name.removesuffix(".pub").removesuffix(".pem")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise IssuerConfigError(f"{path}: {e}") from e


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class TokenKeyRecord:
    """One token key as the issuer tracks it (a row of state.toml).

    `publish` / `retire` hold the signed TokenKey envelopes (JSON) once decided, so an interrupted
    submission is retried with the very same bytes; `published` / `retired` say the ledger
    admitted them.
    """

    token_key_id: str  # lowercase hex SHA-256 of the SPKI
    not_before: int
    not_after: int
    publish: str
    published: bool = False
    retire: str = ""
    retired: bool = False

    @property
    def file_name(self) -> str:
        """The private key's file name under DATA/token-keys/."""
        return f"{self.token_key_id}.pem"

    def served_at(self, now: int) -> bool:
        """Published, not being retired, and `not_before <= now < not_after`."""
        return self.published and not self.retire and self.not_before <= now < self.not_after


class KeyStore:
    """DATA/state.toml and DATA/token-keys/: the token keys and the pinned evidence log.

    Not thread-safe by itself: `Issuer` serialises every write.
    """

    def __init__(self, data: Path) -> None:
        self.data = data
        self.keys_dir = data / KEYS_DIR
        self.path = data / STATE_NAME
        raw = _read_toml(self.path) if self.path.exists() else {}
        ledger = raw.get("ledger", {})
        self.evidence_vkey: str | None = ledger.get("evidence_vkey")
        self.evidence_origin: str | None = ledger.get("evidence_origin")
        try:
            self.records = [TokenKeyRecord(**r) for r in raw.get("token_keys", [])]
        except TypeError as e:
            raise IssuerConfigError(f"{self.path}: bad token key record: {e}") from e

    def save(self) -> None:
        """Write state.toml atomically."""
        raw: dict[str, Any] = {"token_keys": [asdict(r) for r in self.records]}
        if self.evidence_vkey is not None and self.evidence_origin is not None:
            raw["ledger"] = {
                "evidence_vkey": self.evidence_vkey,
                "evidence_origin": self.evidence_origin,
            }
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(self.path, tomli_w.dumps(raw).encode(), 0o600)

    def write_private_key(self, key: rsa.RSAPrivateKey) -> str:
        """Write a new token key as PKCS#8 PEM (mode 0600); returns its token key id (hex)."""
        kid = pp.token_key_id(key.public_key()).hex()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(self.keys_dir / f"{kid}.pem", pem, 0o600)
        return kid

    def load_private_key(self, record: TokenKeyRecord) -> rsa.RSAPrivateKey:
        """The RSA private key of `record`, checked against its recorded key id."""
        path = self.keys_dir / record.file_name
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            raise IssuerConfigError(f"{path}: cannot load token key: {e}") from e
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != _RSA_BITS:
            raise IssuerConfigError(f"{path}: not an RSA-{_RSA_BITS} private key")
        if pp.token_key_id(key.public_key()).hex() != record.token_key_id:
            raise IssuerConfigError(f"{path}: key does not match token key id in {self.path}")
        return key


# -- publishing to the evidence log ---------------------------------------------------------------


class EvidencePublisher:
    """Signs TokenKey statements with the issuer key and submits them to the evidence log.

    The evidence log's key and origin are pinned in `store` the first time (trust on first use,
    reported on stderr by the caller); afterwards a ledger reporting another key is refused.
    Every submission's tlog-proof is verified before it counts as published.
    """

    def __init__(
        self,
        ledger_url: str,
        signer: tuple[str, Ed25519PrivateKey],
        store: KeyStore,
        *,
        client: LedgerAPI | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger_url = ledger_url
        self.signer = signer
        self.store = store
        self._client = client
        self._clock = clock

    def _open(self) -> LedgerAPI:
        return self._client or LedgerAPI(self.ledger_url, timeout=30.0)

    def sign(self, action: str, token_key: bytes, not_after: int) -> Envelope:
        """A TokenKey statement about `token_key` (SPKI DER), signed by the issuer key."""
        with contextlib.ExitStack() as stack:
            client = self._open()
            if self._client is None:
                stack.callback(client.close)
            vkey, origin = self._pinned(client)
            cp = client.checkpoint(EVIDENCE_LOG, vkey, origin)
        predicate = TokenKey(
            seen_checkpoint=CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex()),
            issued_at=int(self._clock()),
            action="publish" if action == "publish" else "retire",
            token_key=base64.b64encode(token_key).decode("ascii"),
            not_after=not_after,
        )
        return sign_statement(predicate, [self.signer])

    def submit(self, env: Envelope) -> None:
        """Post `env` to the evidence log and verify its proof; `PublicationError` if refused."""
        with contextlib.ExitStack() as stack:
            client = self._open()
            if self._client is None:
                stack.callback(client.close)
            vkey, origin = self._pinned(client)
            client.submit(EVIDENCE_LOG, env, vkey, origin)

    def _pinned(self, client: LedgerAPI) -> tuple[str, str]:
        info = client.log_info(EVIDENCE_LOG)
        if self.store.evidence_vkey is None or self.store.evidence_origin is None:
            self.store.evidence_vkey, self.store.evidence_origin = info.vkey, info.origin
            self.store.save()
            _log.warning("pinned the evidence log's key on first use: %s", info.vkey)
        elif (info.vkey, info.origin) != (self.store.evidence_vkey, self.store.evidence_origin):
            raise PublicationError(
                f"the ledger now reports key {info.vkey} for {info.origin}, but "
                f"{self.store.path} pins {self.store.evidence_vkey} for "
                f"{self.store.evidence_origin}"
            )
        return self.store.evidence_vkey, self.store.evidence_origin


# -- the issuer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LiveKey:
    record: TokenKeyRecord
    private_key: rsa.RSAPrivateKey = field(repr=False)
    spki: bytes


class Issuer:
    """Token keys, their lifecycle, and issuance. Thread-safe.

    `publisher` announces keys (an `EvidencePublisher`), `attester` vouches for clients,
    `clock` returns Unix seconds, `generate` makes RSA keys (tests may pass a faster one).
    """

    def __init__(
        self,
        cfg: IssuerConfig,
        store: KeyStore,
        publisher: EvidencePublisher,
        attester: Attester,
        *,
        clock: Callable[[], float] = time.time,
        generate: Callable[[], rsa.RSAPrivateKey] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.publisher = publisher
        self.attester = attester
        self._clock = clock
        self._generate = generate or (lambda: rsa.generate_private_key(65537, _RSA_BITS))
        # One lifecycle run (or retirement) at a time; slow, it talks to the ledger.
        self._rotation = threading.RLock()
        self._state = threading.Lock()  # guards _live; held only briefly
        self._live: dict[str, _LiveKey] = {}
        for record in store.records:
            if not record.retired:
                self._load(record)

    def _load(self, record: TokenKeyRecord) -> _LiveKey:
        key = self.store.load_private_key(record)
        live = _LiveKey(record, key, pp.token_key_bytes(key.public_key()))
        self._live[record.token_key_id] = live
        return live

    # -- lifecycle --------------------------------------------------------------------------

    def rotate(self) -> None:
        """Run the key lifecycle once (see the module docstring); `PublicationError` on refusal.

        Safe to call concurrently and repeatedly; a failure leaves what was decided on disk, to
        be retried by the next call.
        """
        with self._rotation:
            now = int(self._clock())
            for live in self._snapshot():  # (1) finish what was interrupted
                if live.record.publish and not live.record.published:
                    self._submit_publish(live)
                if live.record.retire and not live.record.retired:
                    self._submit_retire(live)
            for live in self._snapshot():  # (2) retire what expired
                rec = live.record
                if rec.published and not rec.retire and rec.not_after <= now:
                    self.retire(rec.token_key_id)
            # (3) publish a successor before the newest key enters its overlap window
            served = [lk for lk in self._snapshot() if lk.record.served_at(now)]
            if not any(lk.record.not_after - now > self.cfg.overlap_s for lk in served):
                self._publish_new(now)

    def retire(self, token_key_id: str) -> None:
        """Stop serving a key now and announce its retirement (also used before expiry, e.g.
        when a key is compromised). `NoTokenKeyError` for a key this issuer does not hold."""
        with self._rotation:
            with self._state:
                live = self._live.get(token_key_id)
            if live is None:
                raise NoTokenKeyError(f"no live token key {token_key_id}")
            if not live.record.retire:
                env = self._sign("retire", live.spki, live.record.not_after)
                # Crash point: once this is saved the key is no longer served, and the
                # retirement is re-submitted (same bytes) by the next `rotate` if the post fails.
                live = self._update(replace(live.record, retire=_env_json(env)))
            self._submit_retire(live)

    def _publish_new(self, now: int) -> None:
        with self._state:
            taken = {bytes.fromhex(k)[-1] for k in self._live}
        key = self._generate()
        # RFC 9578 §5.5: the truncated ids of keys in rotation must not collide.
        while pp.token_key_id(key.public_key())[-1] in taken:
            key = self._generate()
        spki = pp.token_key_bytes(key.public_key())
        not_after = now + self.cfg.lifetime_s
        env = self._sign("publish", spki, not_after)
        # Crash point: a key file without a state record is never used (and never published).
        kid = self.store.write_private_key(key)
        record = TokenKeyRecord(kid, now, not_after, publish=_env_json(env))
        with self._state:
            self.store.records.append(record)
            self.store.save()
            live = self._load(record)
        # Crash point: the record is on disk, unpublished; the next `rotate` re-submits it.
        self._submit_publish(live)
        _log.info("published token key %s, valid until %d", kid, not_after)

    def _submit_publish(self, live: _LiveKey) -> None:
        self._submit(live.record.publish, "publish", live.record.token_key_id)
        self._update(replace(live.record, published=True))

    def _submit_retire(self, live: _LiveKey) -> None:
        self._submit(live.record.retire, "retire", live.record.token_key_id)
        self._update(replace(live.record, retired=True))
        with self._state:
            self._live.pop(live.record.token_key_id, None)
        _log.info("retired token key %s", live.record.token_key_id)

    def _sign(self, action: str, spki: bytes, not_after: int) -> Envelope:
        try:
            return self.publisher.sign(action, spki, not_after)
        except LedgerClientError as e:
            raise PublicationError(
                f"cannot prepare the token key {action}: ledger at {self.cfg.ledger}: "
                f"{e.diagnostic}"
            ) from e

    def _submit(self, env_json: str, action: str, kid: str) -> None:
        try:
            self.publisher.submit(Envelope.from_json(env_json))
        except LedgerClientError as e:
            hint = ""
            if "not_authorised" in e.diagnostic or "untrusted_signature" in e.diagnostic:
                hint = (
                    f" (is the issuer key {self.cfg.key_name!r} registered? a lab certifies it "
                    "with `bledger keys certify --role issuer --subject ISSUER_KEY --key LAB_KEY`)"
                )
            raise PublicationError(
                f"the ledger at {self.cfg.ledger} refused to {action} token key {kid}: "
                f"{e.diagnostic}{hint}"
            ) from e

    def _update(self, record: TokenKeyRecord) -> _LiveKey:
        """Replace `record`'s row on disk and in memory; returns the live key."""
        with self._state:
            self.store.records = [
                record if r.token_key_id == record.token_key_id else r for r in self.store.records
            ]
            self.store.save()
            old = self._live[record.token_key_id]
            live = replace(old, record=record)
            self._live[record.token_key_id] = live
            return live

    def _snapshot(self) -> list[_LiveKey]:
        with self._state:
            return list(self._live.values())

    # -- serving ------------------------------------------------------------------------------

    def served(self) -> list[tuple[TokenKeyRecord, bytes]]:
        """(record, SPKI) of the keys served now, preferred (newest) first."""
        now = int(self._clock())
        keys = [lk for lk in self._snapshot() if lk.record.served_at(now)]
        keys.sort(key=lambda lk: (lk.record.not_before, lk.record.not_after), reverse=True)
        return [(lk.record, lk.spki) for lk in keys]

    def directory(self) -> dict[str, Any]:
        """The RFC 9578 §4 issuer directory: request URI and the served keys, preferred first."""
        return {
            "issuer-request-uri": REQUEST_PATH,
            "token-keys": [
                {
                    "token-type": pp.TOKEN_TYPE,
                    "token-key": base64.urlsafe_b64encode(spki).decode("ascii"),
                    "not-before": record.not_before,
                }
                for record, spki in self.served()
            ],
        }

    def issue(self, body: bytes, client: ClientContext) -> bytes:
        """RFC 9578 §6.2: the TokenResponse bytes for a TokenRequest body.

        Plan:
        1. a body too short to hold a token type is malformed (400);
        2. another token type, a body of the wrong size, or a truncated key id that is no served
           key's is unprocessable (422, as the RFC requires);
        3. the attester vouches for the client (or refuses: 429 / 403);
        4. blind-sign; a blinded_msg not below the modulus is unprocessable (422).
        Nothing about the request or the client is kept.
        """
        if len(body) < 3:  # (1)
            raise MalformedRequestError(f"a TokenRequest is {3 + pp.NK} bytes, got {len(body)}")
        try:  # (2)
            request = pp.TokenRequest.decode(body)
        except pp.PrivacyPassError as e:
            raise UnprocessableRequestError(e.diagnostic) from None
        now = int(self._clock())
        truncated = request.truncated_token_key_id
        live = [
            lk
            for lk in self._snapshot()
            if lk.record.served_at(now) and bytes.fromhex(lk.record.token_key_id)[-1] == truncated
        ]
        if not live:
            raise UnprocessableRequestError(
                f"truncated_token_key_id 0x{request.truncated_token_key_id:02x} names no token "
                "key this issuer serves; fetch the directory again"
            )
        self.attester.attest(client)  # (3)
        try:  # (4)
            return pp.issue(live[0].private_key, request).encode()
        except pp.PrivacyPassError as e:
            raise UnprocessableRequestError(e.diagnostic) from None


def _env_json(env: Envelope) -> str:
    return env.canonical_bytes().decode("utf-8")


def open_issuer(cfg: IssuerConfig, *, passphrase: bytes | None = None) -> Issuer:
    """The issuer of `cfg`, with the default publisher and token-bucket attester.

    Runs nothing: call `Issuer.rotate` (as `create_issuer_app` does on start) to publish a key.
    """
    try:
        signing_key = load_private_key(cfg.key, passphrase)
    except AttestError as e:
        raise IssuerConfigError(e.diagnostic) from e
    store = KeyStore(cfg.data)
    publisher = EvidencePublisher(cfg.ledger, (cfg.key_name, signing_key), store)
    return Issuer(cfg, store, publisher, TokenBucketAttester(cfg.rate_per_hour))


def issuer_vkey(cfg: IssuerConfig, *, passphrase: bytes | None = None) -> str:
    """The issuer key's C2SP verifier key (the name in it is the TokenChallenge issuer_name)."""
    return verifier_key(cfg.key_name, load_private_key(cfg.key, passphrase).public_key())


# -- HTTP -----------------------------------------------------------------------------------------


def create_issuer_app(issuer: Issuer, *, rotate_on_start: bool = True) -> FastAPI:
    """The issuer's ASGI app. With `rotate_on_start`, the lifecycle runs once before serving
    (a refusal by the ledger aborts the start) and then every `check_interval_s` in background.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if rotate_on_start:
            await run_in_threadpool(issuer.rotate)
        task = asyncio.create_task(_rotate_forever(issuer))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="behaviour-ledger token issuer", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(IssuerError)
    async def issuer_error(_: Request, e: IssuerError) -> JSONResponse:
        headers = {"Retry-After": str(e.retry_after)} if isinstance(e, RateLimitedError) else None
        return JSONResponse(
            {"error": e.error, "detail": e.diagnostic}, status_code=e.status, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": "http_error", "detail": str(e.detail)},
            status_code=e.status_code,
            headers=getattr(e, "headers", None),
        )

    @app.get(DIRECTORY_PATH)
    def directory() -> Response:
        """RFC 9578 §4: the issuer directory."""
        body = _json_bytes(issuer.directory())
        return Response(
            body,
            media_type=DIRECTORY_MEDIA_TYPE,
            headers={"Cache-Control": f"public, max-age={_DIRECTORY_MAX_AGE}"},
        )

    @app.post(REQUEST_PATH)
    async def token_request(request: Request) -> Response:
        """RFC 9578 §6.2: blind-sign a TokenRequest."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != REQUEST_MEDIA_TYPE:
            raise UnsupportedMediaTypeError(f"Content-Type must be {REQUEST_MEDIA_TYPE}")
        body = await _read_limited(request, _MAX_REQUEST_BYTES)
        # The peer address goes to the attester and nowhere else.
        client = ClientContext(request.client.host if request.client else None)
        response = await run_in_threadpool(issuer.issue, body, client)
        return Response(response, media_type=RESPONSE_MEDIA_TYPE)

    return app


async def _rotate_forever(issuer: Issuer) -> None:
    while True:
        await asyncio.sleep(issuer.cfg.check_interval_s)
        try:
            await run_in_threadpool(issuer.rotate)
        except IssuerError as e:
            # The served keys stay valid until their not_after; the next run retries.
            _log.error("token key lifecycle failed, will retry: %s", e.diagnostic)
        except Exception as e:
            _log.error("token key lifecycle failed, will retry: %r", e)


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise MalformedRequestError(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
