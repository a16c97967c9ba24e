"""A small client of a ledger's HTTP API, for services that talk to a ledger (the token issuer).

Only what a service needs: the logs a server claims (`log_info`), a log's latest checkpoint
verified with its key (`checkpoint`), and a write whose tlog-proof is verified offline before it
counts (`submit`). Verification is attest's; this module only fetches. Applications use the
fuller SDK (`clients.sdk`), which reads, audits and gathers cosignatures as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from attest.checkpoint import Checkpoint, open_checkpoint
from attest.dsse import Envelope
from attest.errors import AttestError
from attest.note import NoteVerifier
from attest.tlog_proof import parse_tlog_proof, verify_tlog_proof
from attest.vkey import parse_vkey
from ledger.errors import LedgerError


class LedgerClientError(LedgerError):
    """A request to a ledger failed, or what came back did not verify."""


@dataclass(frozen=True)
class RemoteLog:
    """A log as the server describes it (not yet trusted: pin `vkey` and `origin`)."""

    name: str
    origin: str
    vkey: str


@dataclass(frozen=True)
class Written:
    """A write the log acknowledged, and the checkpoint its verified tlog-proof ends in."""

    index: int
    duplicate: bool
    checkpoint: Checkpoint


class LedgerAPI:
    """Talks to the ledger at `base_url`; `client` replaces the HTTP client (tests)."""

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, client: httpx.Client | None = None
    ) -> None:
        self._http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> LedgerAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_info(self, name: str) -> RemoteLog:
        """The server's description of log `name` (LedgerClientError if it has none)."""
        for log in self._get("/logs").json():
            if log.get("name") == name:
                return RemoteLog(str(log["name"]), str(log["origin"]), str(log["vkey"]))
        raise LedgerClientError(f"the ledger hosts no log named {name!r}")

    def checkpoint(self, name: str, vkey: str, origin: str) -> Checkpoint:
        """The latest checkpoint of `name`, verified with `vkey` for `origin`."""
        note = self._get(f"/logs/{name}/checkpoint").content
        try:
            cp, _ = open_checkpoint(note, _verifier(vkey), origin)
        except AttestError as e:
            raise LedgerClientError(f"checkpoint of {name}: {e.diagnostic}") from e
        return cp

    def submit(self, name: str, envelope: Envelope, vkey: str, origin: str) -> Written:
        """Post `envelope` to `name` and verify the returned tlog-proof before returning."""
        path = f"/logs/{name}/entries"
        try:
            r = self._http.post(path, json=envelope.to_json())
        except httpx.HTTPError as e:
            raise LedgerClientError(f"POST {path}: {e}") from e
        if r.status_code != 200:
            raise LedgerClientError(
                f"the log refused the entry: HTTP {r.status_code}: {_detail(r)}"
            )
        body: dict[str, Any] = r.json()
        try:
            proof = parse_tlog_proof(str(body["tlog_proof"]))
            cp = verify_tlog_proof(proof, envelope.canonical_bytes(), _verifier(vkey), origin)
        except (AttestError, KeyError) as e:
            raise LedgerClientError(f"tlog-proof of the write does not verify: {e}") from e
        return Written(int(body["index"]), bool(body.get("duplicate")), cp)

    def _get(self, path: str) -> httpx.Response:
        try:
            r = self._http.get(path)
        except httpx.HTTPError as e:
            raise LedgerClientError(f"GET {path}: {e}") from e
        if r.status_code != 200:
            raise LedgerClientError(f"GET {path}: HTTP {r.status_code}: {_detail(r)}")
        return r


def _verifier(vkey: str) -> NoteVerifier:
    try:
        return parse_vkey(vkey)
    except AttestError as e:
        raise LedgerClientError(f"bad verifier key {vkey!r}: {e.diagnostic}") from e


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        return f"{body.get('error')}: {body.get('detail')}"
    except ValueError:
        return r.text[:200]
