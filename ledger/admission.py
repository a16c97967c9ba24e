"""Admission rules: what each log accepts, and the leaf bytes it stores for it.

Every rule turns a request body into the RFC 8785 canonical bytes of a verified DSSE envelope
(the leaf data), or raises `AdmissionError`. Rules are per log, chosen by its partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from attest.dsse import Envelope, TrustedKey, verify_envelope
from attest.errors import AttestError
from attest.keys import dsse_keyid, load_public_key
from ledger.tiles import MAX_ENTRY_SIZE


class AdmissionError(Exception):
    """The log refuses an entry. `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, error: str, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.status, self.error, self.diagnostic = status, error, diagnostic


class AdmissionRule(Protocol):
    """Decides whether a log admits a request body; returns the leaf data to store."""

    partition: str

    def admit(self, body: bytes) -> bytes:
        """Return the canonical leaf bytes, or raise AdmissionError."""
        ...


def parse_envelope(body: bytes) -> Envelope:
    """Parse a posted DSSE envelope, mapping every parse failure to a 400."""
    try:
        return Envelope.from_json(body)
    except AttestError as e:
        raise AdmissionError(400, "malformed_envelope", e.diagnostic) from e


def leaf_data(env: Envelope) -> bytes:
    """The canonical bytes the log stores, checked against the tiles' 64 KiB entry limit."""
    data = env.canonical_bytes()
    if len(data) > MAX_ENTRY_SIZE:
        raise AdmissionError(
            413,
            "entry_too_large",
            f"canonical entry is {len(data)} bytes; entries are at most {MAX_ENTRY_SIZE}",
        )
    return data


@dataclass
class AllowedKeysRule:
    """The evidence log's rule until key chains land: signed by a key the operator allows."""

    keys: Sequence[TrustedKey]
    partition: str = "evidence"

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> AllowedKeysRule:
        """Trust each `.pub` PEM file, named after its file stem."""
        keys = []
        for p in paths:
            pub = load_public_key(p)
            keys.append(TrustedKey(dsse_keyid(p.stem, pub), pub))
        return cls(keys)

    def admit(self, body: bytes) -> bytes:
        """Admit an envelope with at least one valid signature by an allowed key."""
        env = parse_envelope(body)
        data = leaf_data(env)
        if not self.keys:
            raise AdmissionError(403, "no_trusted_keys", "this log allows no signing keys yet")
        try:
            verify_envelope(env, self.keys, threshold=1)
        except AttestError as e:
            raise AdmissionError(403, "untrusted_signature", e.diagnostic) from e
        return data
