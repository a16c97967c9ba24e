"""Admission of the privacy partitions: the attested log and the anonymous log.

Both consult the evidence log's key chain (issuers, credentials, token keys), never their own.

* attested — a field report signed by a professional's key, admitted only when k-of-n distinct
  registered issuers hold live credentials for that key in the tier the report claims.
* anonymous — a field report signed by a one-time key, admitted with one unspent Privacy Pass
  token; queued with a signed receipt and integrated in shuffled batches at fixed intervals, so
  neither the response nor the position in the log tells when it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from attest import admission as rules
from attest import merkle
from attest.admission import AdmissionRefused, statement_digest
from attest.note import NoteSigner
from attest.predicates import FieldReport
from attest.privacypass import (
    TOKEN_TYPE,
    PrivacyPassError,
    Token,
    TokenChallenge,
    challenge_digest,
    parse_authorization,
    token_key_from_bytes,
    verify_token,
    www_authenticate,
)
from attest.receipt import Receipt, sign_receipt
from attest.statement import Statement
from ledger.admission import (
    DEFAULT_SKEW,
    AdmissionError,
    Admitted,
    BatchCheck,
    EvidenceRule,
    NoBatchState,
    check_seen,
    leaf_data,
    parse_envelope,
    parse_payload,
    refused,
)
from ledger.log import Log
from ledger.sequencer import Sequencer
from ledger.storage import Store, WriteTxn

HOUR = rules.HOUR
_log = logging.getLogger(__name__)
DEFAULT_QUORUM = 2


def _field_report(stmt: Statement, tier: str) -> FieldReport:
    try:
        return rules.field_report(stmt, tier)
    except AdmissionRefused as e:
        raise refused(e) from e


class AttestedRule:
    """Professional-tier reports: the signer's key needs a k-of-n credential for its tier."""

    partition = "attested"

    def __init__(
        self,
        store: Store,
        log_id: int,
        origin: str,
        evidence: EvidenceRule,
        quorum: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.time,
        skew: int = DEFAULT_SKEW,
    ) -> None:
        self.store, self.log_id, self.origin, self.evidence = store, log_id, origin, evidence
        self.quorum, self.clock, self.skew = dict(quorum), clock, skew

    def admit(self, body: bytes, authorization: str | None = None) -> Admitted:
        """Plan: (1) parse; (2) anti-backdating; (3) a field report in a tier with a quorum;
        (4) every signature by a credential-holder key; (5) enough distinct issuers vouch for
        one of those keys in that tier, now (`attest.admission.admit_attested`)."""
        env = parse_envelope(body)  # (1)
        leaf = leaf_data(env)
        stmt = parse_payload(env)
        _field_report(stmt, "attested")
        now = int(self.clock())
        check_seen(self.store, self.log_id, self.origin, stmt, now, self.skew)  # (2)
        for attempt in range(2):
            try:  # (3)-(5)
                holder = rules.admit_attested(env, stmt, self.evidence.chain, self.quorum.get, now)
            except AdmissionRefused as e:
                if attempt or e.stage not in ("signature", "credentials"):
                    raise refused(e) from e
                self.evidence.refresh()  # a credential logged through another process
                continue
            return Admitted(leaf, stmt, env.payload, frozenset({holder}), statement_digest(env))
        raise AssertionError("unreachable")

    def begin(self, txn: WriteTxn) -> BatchCheck:
        """Credentials are checked at admission; nothing depends on the index."""
        return NoBatchState()


class AnonymousRule:
    """Anonymous reports: one-time signature, coarse time, and one unspent token."""

    partition = "anonymous"

    def __init__(
        self,
        store: Store,
        log_id: int,
        origin: str,
        evidence: EvidenceRule,
        *,
        clock: Callable[[], float] = time.time,
        skew: int = DEFAULT_SKEW,
    ) -> None:
        self.store, self.log_id, self.origin, self.evidence = store, log_id, origin, evidence
        self.clock, self.skew = clock, skew

    def challenge_for(self, issuer_name: str) -> TokenChallenge:
        """The challenge this log sets for tokens of `issuer_name` (no redemption context:
        a per-request context would let the log link a token to the request that asked)."""
        return TokenChallenge(TOKEN_TYPE, issuer_name, b"", (self.origin,))

    def www_authenticate(self) -> str:
        """One PrivateToken challenge per usable token key."""
        live = self.evidence.chain.live_token_keys(int(self.clock()))
        return ", ".join(
            www_authenticate(self.challenge_for(issuer.name), token_key_from_bytes(tk.spki))
            for tk, issuer in live.values()
        )

    def admit(self, body: bytes, authorization: str | None = None) -> Admitted:
        """Plan: (1) parse; (3) anti-backdating; (2) a field report filed anonymously at a whole
        hour and (4) one signature by its one-time key (`attest.admission.admit_anonymous`, the
        cheap check before the signature, as `verifier.revalidate` orders them); (5) a valid
        token; (6) spend it and queue the entry, in one transaction.

        After (6) the entry is durably queued for the next batch (`AnonymousQueue.accept` only
        signs its receipt). The same write retried with the same token is admitted again (the
        entry is already queued or logged), so a client whose answer was lost to a crash gets
        its receipt; the token on another entry is refused with `token_spent`.
        """
        env = parse_envelope(body)  # (1)
        leaf = leaf_data(env)
        stmt = parse_payload(env)
        check_seen(self.store, self.log_id, self.origin, stmt, int(self.clock()), self.skew)  # (3)
        try:  # (2) and (4): the same rule, in the same order, that audit nodes re-check
            rules.admit_anonymous(env, stmt)
        except AdmissionRefused as e:
            raise refused(e) from e
        token = self._token(authorization)  # (5)
        hour = int(self.clock()) // HOUR * HOUR
        leaf_hash = merkle.leaf_hash(leaf)
        if not self.store.redeem(  # (6)
            self.log_id, token.token_key_id, token.nonce, leaf_hash, leaf, hour
        ):
            raise AdmissionError(403, "token_spent", "this token was already redeemed")
        return Admitted(leaf, stmt, env.payload, frozenset())

    def _token(self, authorization: str | None) -> Token:
        if authorization is None:
            raise AdmissionError(
                401,
                "token_required",
                "the anonymous log admits an entry with one Privacy Pass token",
                {"WWW-Authenticate": self.www_authenticate()},
            )
        try:
            token = parse_authorization(authorization)
        except PrivacyPassError as e:
            raise AdmissionError(400, "bad_token", e.diagnostic) from e
        kid = token.token_key_id.hex()
        now = int(self.clock())
        live = self.evidence.chain.live_token_keys(now)
        if kid not in live:
            self.evidence.refresh()  # a key published through another process
            live = self.evidence.chain.live_token_keys(now)
        if kid not in live:
            raise AdmissionError(
                403, "bad_token", f"token key {kid} is unknown, retired or expired"
            )
        tk, issuer = live[kid]
        digest = challenge_digest(self.challenge_for(issuer.name))
        try:
            verify_token(token_key_from_bytes(tk.spki), token, digest)
        except PrivacyPassError as e:
            raise AdmissionError(403, "bad_token", e.diagnostic) from e
        return token

    def begin(self, txn: WriteTxn) -> BatchCheck:
        """Tokens are spent at admission; nothing depends on the index."""
        return NoBatchState()


def coarse_clock() -> float:
    """Wall-clock time rounded down to the hour: the anonymous log keeps nothing finer."""
    return float(int(time.time()) // HOUR * HOUR)


def anonymous_sequencer(
    log: Log, signer: NoteSigner, rule: AnonymousRule, *, batch_size: int = 4096
) -> Sequencer:
    """The anonymous log's sequencer: its checkpoints record only the hour they were made."""
    return Sequencer(
        log,
        signer,
        batch_size=batch_size,
        rule=rule,
        clock=coarse_clock,
        one_entry_per_statement=False,  # each token buys an entry; its receipt must come true
    )


@dataclass(frozen=True)
class Accepted:
    """What an anonymous write gets at once: the leaf hash and a signed receipt."""

    leaf_hash: bytes
    receipt: str
    integrate_by: int


class AnonymousQueue:
    """The anonymous log's writer: durable queue, receipts, interval batches, shuffle."""

    def __init__(
        self,
        sequencer: Sequencer,
        signer: NoteSigner,
        *,
        interval: float = 60.0,
        batch_limit: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sequencer, self.signer = sequencer, signer
        self.interval, self.batch_limit, self.clock = interval, batch_limit, clock
        self._task: asyncio.Task[None] | None = None
        self._shuffle = random.SystemRandom()

    @property
    def _log(self) -> tuple[Store, int, str]:
        log = self.sequencer.log
        return log.store, log.id, log.row.origin

    def accept(self, admitted: Admitted) -> Accepted:
        """Sign a receipt for an entry `AnonymousRule.admit` has queued (with its token spent,
        in the same transaction): the receipt is a promise the log can keep across a crash."""
        _, _, origin = self._log
        leaf = merkle.leaf_hash(admitted.leaf)
        now = int(self.clock())
        # The deadline is rounded to the batch interval: it says which batch, not which second.
        step = max(1, int(self.interval))
        deadline = (now // step + 2) * step
        receipt = Receipt(origin, leaf, deadline)
        return Accepted(leaf, sign_receipt(receipt, self.signer), deadline)

    def integrate_pending(self) -> int:
        """Integrate everything queued, in a random order, in one transaction. Returns a count."""
        store, log_id, _ = self._log
        rows = store.pending(log_id, self.batch_limit)
        if not rows:
            return 0
        self._shuffle.shuffle(rows)
        self.sequencer.integrate([e for _, e in rows], pending_done=[h for h, _ in rows])
        return len(rows)

    def start(self) -> None:
        """Start integrating at fixed intervals on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop (queued entries stay queued for the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.integrate_pending)
            except Exception:  # the batch stays queued and is retried at the next interval
                _log.exception("anonymous batch failed; entries stay queued")
