"""Key chains of the evidence log: which keys may sign what, at each log index. Pure.

The chain is a state machine replayed over the log's entries in index order; the log applies it
under the sequencer lock, and an auditor replaying the same entries reaches the same state.

Rules (each tagged in the code):
  (R1) a *lab* key is registered by an operator root key;
  (R2) a *worker*, *issuer* or *witness* key is registered by a valid lab key or an operator
       root, and signs its own registration (proof of possession);
  (R3) a rotation is signed by the old *and* the new key (the TUF rule); the identity, its role
       and everything it certified carry over to the new key;
  (R4) a revocation is signed by the key itself, by a valid key up its chain, or by an operator
       root; it takes effect from its own index, for the key and everything below it;
  (R5) a key once used is never registered again;
  (R6) any other statement needs a signer whose key is valid now, whose role may make that
       statement, and whose chain of certifiers is unrevoked up to an operator root;
       keys the operator allows directly (`--allow-key`) may sign what a worker may (probe
       records, calibrations, field reports), never a lab's continuity statement;
  (R7) an issuer's credential events and token keys are recorded against that issuer; only the
       issuer that issued a credential (or published a token key) may revoke (or retire) it;
  (R8) what is revoked stays revoked: a credential id is issued once per issuer (and a token key
       published once, a key registered once, R5), so an issuance replayed after its revocation
       is refused, whatever signatures it carries.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable
from dataclasses import dataclass, replace

from attest._wire import parse_verifier_key
from attest.dsse import TrustedKey
from attest.errors import AttestError
from attest.keys import dsse_keyid, public_key_from_bytes
from attest.predicates import (
    CONTINUITY,
    CREDENTIAL_EVENT,
    EMOTION_CALIBRATION,
    EVAL_SAMPLE,
    FIELD_REPORT,
    PROBE_RECORD,
    TOKEN_KEY,
    CredentialEvent,
    KeyEvent,
    TokenKey,
)
from attest.statement import Statement

ROLES = ("lab", "worker", "issuer", "witness")
# (R6): who may make which statement.
SIGNER_ROLES: dict[str, frozenset[str]] = {
    PROBE_RECORD: frozenset({"lab", "worker"}),
    EMOTION_CALIBRATION: frozenset({"lab", "worker"}),
    CONTINUITY: frozenset({"lab"}),
    CREDENTIAL_EVENT: frozenset({"issuer"}),
    TOKEN_KEY: frozenset({"issuer"}),
    FIELD_REPORT: frozenset(ROLES),
    EVAL_SAMPLE: frozenset({"lab", "worker"}),
}

# Statements that change the chain's state, and so are stored for replay.
STATEFUL = (KeyEvent, CredentialEvent, TokenKey)


class KeyChainError(AttestError):
    """A statement is not authorised by the key chain at its index."""


@dataclass(frozen=True)
class Identity:
    """A registered key holder: the key may rotate, the identity stays.

    `id` is the log index of its registration; `certifier` the identity that registered it
    (None: an operator root).
    """

    id: int
    role: str
    name: str
    raw: bytes
    certifier: int | None
    revoked_at: int | None = None


@dataclass(frozen=True)
class Credential:
    """One issuer's credential for a holder key and tier (R7)."""

    credential_id: str
    issuer: int  # identity id of the issuer
    expires_at: int
    index: int
    revoked_at: int | None = None


@dataclass(frozen=True)
class PublishedTokenKey:
    """A token key an issuer published for the anonymous tier (R7)."""

    spki: bytes
    issuer: int
    not_after: int
    index: int
    retired_at: int | None = None


def vkey_raw(vkey: str) -> tuple[str, bytes]:
    """The name and raw Ed25519 public key inside a C2SP verifier key (0x01 or 0x04)."""
    name, _, raw = parse_verifier_key(vkey)
    return name, raw


class KeyChain:
    """The key state of one log after the entries applied so far."""

    def __init__(self, roots: Iterable[bytes] = (), allowed: Iterable[bytes] = ()) -> None:
        self.roots = frozenset(roots)
        self.allowed = frozenset(allowed)
        self.identities: dict[int, Identity] = {}
        self.current: dict[bytes, int] = {}  # raw key -> identity id
        self.used: set[bytes] = set(self.roots)  # (R5)
        self.by_keyid: dict[str, bytes] = {}
        # (holder raw key, tier) -> {issuer identity id: credential}
        self.credentials: dict[tuple[bytes, str], dict[int, Credential]] = {}
        self.holder_keyids: dict[str, bytes] = {}
        self.credential_ids: set[tuple[int, str]] = set()  # (issuer id, credential id) (R8)
        self.token_keys: dict[str, PublishedTokenKey] = {}  # token key id (hex) -> key
        self.size = 0  # log size this state corresponds to (maintained by the caller)

    def copy(self) -> KeyChain:
        """An independent copy (records are immutable, so copying the maps is enough)."""
        c = copy.copy(self)
        c.identities, c.current = dict(self.identities), dict(self.current)
        c.used, c.by_keyid = set(self.used), dict(self.by_keyid)
        c.credentials = {k: dict(v) for k, v in self.credentials.items()}
        c.holder_keyids, c.token_keys = dict(self.holder_keyids), dict(self.token_keys)
        c.credential_ids = set(self.credential_ids)
        return c

    # -- lookups ------------------------------------------------------------------------------

    def candidates(self, keyids: Iterable[str], stmt: Statement | None) -> list[TrustedKey]:
        """Keys that may have signed an envelope: those its keyids name, plus a key event's own."""
        out = []
        for kid in keyids:
            raw = self.by_keyid.get(kid)
            if raw is not None:
                out.append(TrustedKey(kid, public_key_from_bytes(raw)))
        if stmt is not None and isinstance(stmt.predicate, KeyEvent):
            for vkey in (stmt.predicate.key, stmt.predicate.previous_key):
                if vkey is not None:
                    name, raw = vkey_raw(vkey)
                    pub = public_key_from_bytes(raw)
                    out.append(TrustedKey(dsse_keyid(name, pub), pub))
        return out

    def active(self, raw: bytes) -> Identity | None:
        """The identity whose current key is `raw`, if its whole chain is unrevoked."""
        ident_id = self.current.get(raw)
        if ident_id is None:
            return None
        ident = self.identities[ident_id]
        return ident if self._chain_ok(ident) else None

    def _chain_ok(self, ident: Identity) -> bool:
        node: Identity | None = ident
        while node is not None:
            if node.revoked_at is not None:
                return False
            node = None if node.certifier is None else self.identities[node.certifier]
        return True

    def _ancestors(self, ident: Identity) -> list[Identity]:
        out, node = [], ident
        while node.certifier is not None:
            node = self.identities[node.certifier]
            out.append(node)
        return out

    # -- transitions --------------------------------------------------------------------------

    def apply(self, index: int, stmt: Statement, signers: frozenset[bytes]) -> None:
        """Authorise `stmt` signed by `signers` (raw keys that verified) at `index`; update state.

        Raises KeyChainError and leaves the state unchanged when it is not authorised.
        """
        p = stmt.predicate
        if not isinstance(p, KeyEvent):
            issuer = self._authorise(index, stmt.predicate_type, signers)  # (R6)
            if isinstance(p, CredentialEvent):
                self._credential(index, p, issuer)
            elif isinstance(p, TokenKey):
                self._token_key(index, p, issuer)
        elif p.action == "register":
            self._register(index, p, signers)
        elif p.action == "rotate":
            self._rotate(index, p, signers)
        else:
            self._revoke(index, p, signers)

    def authorise(self, index: int, predicate_type: str, signers: frozenset[bytes]) -> None:
        """`apply` for a statement whose predicate is not one of `STATEFUL` (it changes no
        state): whether `signers` may make a statement of `predicate_type` at `index` (raises
        KeyChainError). All `apply` reads of such a statement is its type."""
        self._authorise(index, predicate_type, signers)

    def _authorise(
        self, index: int, predicate_type: str, signers: frozenset[bytes]
    ) -> Identity | None:
        """The identity that may make this statement (None: a directly allowed key)."""
        roles = SIGNER_ROLES.get(predicate_type, frozenset())
        for raw in sorted(signers):
            ident = self.active(raw)
            if ident is not None and ident.role in roles:
                return ident
        # A directly allowed key stands outside every chain: it may vouch for what a worker
        # may, but a continuity statement is a lab's word and an issuer's events name an issuer.
        if signers & self.allowed and "worker" in roles:
            return None
        raise KeyChainError(
            f"no signature by a key valid at index {index} with a role allowed to make "
            f"{predicate_type.rsplit('/', 2)[-2]} statements ({', '.join(sorted(roles))})"
        )

    def _credential(self, index: int, p: CredentialEvent, issuer: Identity | None) -> None:
        assert issuer is not None  # credential events need a registered issuer (R6)
        name, holder = vkey_raw(p.holder_key)
        slot = self.credentials.setdefault((holder, p.tier), {})
        have = slot.get(issuer.id)
        if p.action == "issue":
            if (issuer.id, p.credential_id) in self.credential_ids:  # (R8)
                raise KeyChainError(
                    f"credential {p.credential_id!r} was issued before; an id is issued once"
                )
            if have is not None and have.revoked_at is None:
                raise KeyChainError(f"issuer already holds a live credential for {p.tier}")
            slot[issuer.id] = Credential(p.credential_id, issuer.id, p.expires_at, index)
            self.credential_ids.add((issuer.id, p.credential_id))
            self.holder_keyids[dsse_keyid(name, public_key_from_bytes(holder))] = holder
        else:  # (R7)
            if have is None or have.credential_id != p.credential_id or have.revoked_at:
                raise KeyChainError(f"no live credential {p.credential_id!r} of this issuer")
            slot[issuer.id] = replace(have, revoked_at=index)

    def _token_key(self, index: int, p: TokenKey, issuer: Identity | None) -> None:
        assert issuer is not None  # token keys need a registered issuer (R6)
        kid = p.token_key_id()
        have = self.token_keys.get(kid)
        if p.action == "publish":
            if have is not None:
                raise KeyChainError(f"token key {kid} was published before")
            spki = base64.b64decode(p.token_key)
            self.token_keys[kid] = PublishedTokenKey(spki, issuer.id, p.not_after, index)
        else:  # (R7)
            if have is None or have.issuer != issuer.id or have.retired_at is not None:
                raise KeyChainError(f"token key {kid} is not a live key of this issuer")
            self.token_keys[kid] = replace(have, retired_at=index)

    def credential_issuers(self, holder: bytes, tier: str, now: int) -> set[int]:
        """Distinct issuer identities with a live credential for `holder` in `tier` at `now`.

        Live: not revoked, not expired, and the issuer's own chain is valid.
        """
        out = set()
        for issuer_id, cred in self.credentials.get((holder, tier), {}).items():
            issuer = self.identities[issuer_id]
            if cred.revoked_at is None and cred.expires_at > now and self.active(issuer.raw):
                out.add(issuer_id)
        return out

    def live_token_keys(self, now: int) -> dict[str, tuple[PublishedTokenKey, Identity]]:
        """Token keys usable at `now`: published, not retired, not expired, issuer valid."""
        out = {}
        for kid, tk in self.token_keys.items():
            issuer = self.identities[tk.issuer]
            if tk.retired_at is None and tk.not_after > now and self.active(issuer.raw):
                out[kid] = (tk, issuer)
        return out

    def _register(self, index: int, p: KeyEvent, signers: frozenset[bytes]) -> None:
        name, raw = vkey_raw(p.key)
        if raw in self.used:  # (R5)
            raise KeyChainError(f"key {p.key} was registered before; a key is registered once")
        if p.role == "lab":  # (R1)
            if not signers & self.roots:
                raise KeyChainError("a lab key must be registered by an operator root key")
            certifier = None
        else:  # (R2)
            certifier = self._certifier(signers, index)
            if raw not in signers:
                raise KeyChainError(f"the {p.role} key did not sign its own registration")
        self._add(Identity(index, p.role, name, raw, certifier))

    def _certifier(self, signers: frozenset[bytes], index: int) -> int | None:
        if signers & self.roots:
            return None
        for raw in signers:
            ident = self.active(raw)
            if ident is not None and ident.role == "lab":
                return ident.id
        raise KeyChainError(f"not signed by a lab key valid at index {index} or an operator root")

    def _rotate(self, index: int, p: KeyEvent, signers: frozenset[bytes]) -> None:
        assert p.previous_key is not None  # the model enforces it for rotations
        _, old = vkey_raw(p.previous_key)
        name, new = vkey_raw(p.key)
        ident = self.active(old)
        if ident is None or ident.role != p.role:
            raise KeyChainError(f"{p.previous_key} is not a valid {p.role} key at index {index}")
        if new in self.used:  # (R5)
            raise KeyChainError(f"key {p.key} was registered before; a key is registered once")
        if old not in signers or new not in signers:  # (R3)
            raise KeyChainError("a rotation must be signed by both the old and the new key")
        del self.current[old]
        self._drop_keyid(old)
        self._add(replace(ident, name=name, raw=new))

    def _revoke(self, index: int, p: KeyEvent, signers: frozenset[bytes]) -> None:
        _, raw = vkey_raw(p.key)
        ident_id = self.current.get(raw)
        ident = None if ident_id is None else self.identities[ident_id]
        if ident is None or ident.role != p.role:
            raise KeyChainError(f"{p.key} is not a current {p.role} key")
        allowed = {raw} | self.roots  # (R4)
        allowed |= {a.raw for a in self._ancestors(ident) if self.active(a.raw) is not None}
        if not signers & allowed:
            raise KeyChainError("a revocation must be signed by the key, its chain, or a root")
        self.identities[ident.id] = replace(ident, revoked_at=index)
        del self.current[raw]
        self._drop_keyid(raw)

    def _add(self, ident: Identity) -> None:
        self.identities[ident.id] = ident
        self.current[ident.raw] = ident.id
        self.used.add(ident.raw)
        self.by_keyid[dsse_keyid(ident.name, public_key_from_bytes(ident.raw))] = ident.raw

    def _drop_keyid(self, raw: bytes) -> None:
        for kid in [k for k, r in self.by_keyid.items() if r == raw]:
            del self.by_keyid[kid]
