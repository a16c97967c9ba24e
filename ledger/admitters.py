"""Admission on every core: a pool of processes that run the stateless phase of admission.

A write's CPU goes mostly to phase 1 of admission (`ledger.admission`): parsing the envelope and
its statement (pydantic, RFC 8785) and verifying Ed25519 signatures, about 0.2 ms an entry, all
under one interpreter lock. `bledger serve --admission-workers N` runs that phase in N worker
processes instead, each holding its own copy of the server's rules over the same database.

Why that is safe: phase 1 only *reads* (the key chain to find keys by keyid, the published roots
for anti-backdating). A worker whose chain is behind refreshes it from the database before
refusing a signature (`EvidenceRule.admit`), exactly as a second server process would; and the
decision that depends on the entry's position — is the key authorised, unrevoked, *at this
index* — stays in phase 2, under the sequencer's lock in the serving process. A worker that
dies takes only its requests with it (they get a 500; nothing was acknowledged).

The anonymous log is never admitted here: redeeming its token writes to the database.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from ledger.admission import AdmissionRule, Admitted, EvidenceRule, admit_batch_entry
from ledger.errors import LedgerError
from ledger.serving import die_with_parent

__all__ = ["AdmissionPool", "PoolOptions", "Rules"]

log = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20
"""Capacity asked of the pipes to and from the workers (`AdmissionPool._widen_pipes`); Linux's
default most an unprivileged process may set (`/proc/sys/fs/pipe-max-size`)."""


@dataclass(frozen=True)
class PoolOptions:
    """What a worker needs to build the same rules as the serving process."""

    data: str
    allow_keys: tuple[str, ...] = ()


class Rules(Protocol):
    """What a worker admits with: the server's rule per log name."""

    def rule_of(self, log: str) -> AdmissionRule:
        """The admission rule of log `log`."""
        ...


_RULES: Rules | None = None  # this worker process's rules (set by its initializer)


def _init(build: Callable[[PoolOptions], Rules], opts: PoolOptions, parent: int) -> None:
    global _RULES
    # Ctrl-C goes to the whole process group: let the serving process decide, not the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    _RULES = build(opts)
    # Everything alive now (modules, pydantic's schemas, the rules: tens of thousands of
    # objects) lives as long as the worker, yet each full collection walks it again, and
    # admission allocates enough (parsed JSON, statement models) to start one every few
    # thousand entries. Frozen, a collection walks only what admission allocated since: in a
    # loop admitting and pickling 128-entry tasks as a worker does, 6% less CPU per entry
    # (146 against 155 us, medians of 8 paired rounds).
    gc.freeze()


def _ready(_: int) -> bool:
    return _RULES is not None


def _admit(log: str, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
    assert _RULES is not None, "worker not initialised"
    rule = _RULES.rule_of(log)
    # Pickled back to the serving process: an entry may come without the statement it drops.
    admit = (
        partial(rule.admit, keep_statement=False) if isinstance(rule, EvidenceRule) else rule.admit
    )
    out: list[Admitted | LedgerError] = []
    for body in bodies:
        try:
            out.append(admit(body, None))
        except LedgerError as e:
            out.append(e)
    return out


def _admit_entries(log: str, entries: Sequence[bytes]) -> list[Admitted | LedgerError | None]:
    assert _RULES is not None, "worker not initialised"
    rule = _RULES.rule_of(log)
    # Pickled back to the serving process: an entry may come without the statement it drops.
    return [admit_batch_entry(rule, entry, keep_statement=False) for entry in entries]


class AdmissionPool:
    """N worker processes admitting envelopes for the logs of one data directory."""

    def __init__(
        self, build: Callable[[PoolOptions], Rules], opts: PoolOptions, workers: int
    ) -> None:
        """`build(opts)` runs once in each worker and returns its rules; it must be a
        module-level function (workers are spawned fresh, never forked from a server with
        open database connections and threads)."""
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(build, opts, os.getpid()),
        )
        self._widen_pipes()

    def _widen_pipes(self) -> None:
        """Give the pipes that carry tasks and results room for a whole message.

        A worker writes its answer to the result pipe itself, and blocks until the serving
        process has read all but a pipe's capacity of it. An answer for half of a 256-envelope
        batch request is about 200 KiB and a pipe holds 64 KiB by default, so the worker sat
        idle through several rounds of the serving process's result thread waking and taking
        the interpreter lock from its event loop and sequencer. With room for the whole answer
        the worker goes on to its next task at once: 4 clients posting 256-envelope batches
        through 2 workers, 9,011-11,945 -> 9,797-13,585 entries/s, faster in each of 3
        alternating pairs (`bench/ledger_bench.py --only batch --admission-workers 2`).

        Only Linux can resize a pipe, and `concurrent.futures` names these pipes privately
        (`_call_queue`, `_result_queue`, CPython 3.11 to 3.13): anywhere else, or if the
        kernel refuses the size, the pipes stay as they are and only the speed differs."""
        set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
        if set_size is None:  # pragma: no cover - not Linux
            return
        for name in ("_call_queue", "_result_queue"):
            reader = getattr(getattr(self._pool, name, None), "_reader", None)
            try:
                fcntl.fcntl(reader.fileno(), set_size, PIPE_BYTES)  # type: ignore[union-attr]
            except (AttributeError, OSError) as e:  # pragma: no cover - see the docstring
                log.debug("admission pool: %s keeps its pipe size (%s)", name, e)

    def warm(self) -> None:
        """Start every worker now and wait until each has built its rules (a worker is a fresh
        interpreter: seconds of imports), so the first requests do not pay for it."""
        list(self._pool.map(_ready, range(self.workers)))

    def admit(self, log: str, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
        """Admit `bodies` (in order) for log `log`, spread over the workers; blocks."""
        parts = self._parts(bodies)
        out: list[Admitted | LedgerError] = []
        for got in self._pool.map(_admit, [log] * len(parts), parts):
            out.extend(got)
        return out

    async def admit_async(self, log: str, bodies: Sequence[bytes]) -> list[Admitted | LedgerError]:
        """`admit`, awaited on the event loop (see `admit_entries`)."""
        parts = self._parts(bodies)
        futs = [asyncio.wrap_future(self._pool.submit(_admit, log, p)) for p in parts]
        out: list[Admitted | LedgerError] = []
        for got in await asyncio.gather(*futs):
            out.extend(got)
        return out

    async def admit_entries(
        self, log: str, entries: Sequence[bytes]
    ) -> list[Admitted | LedgerError | None]:
        """`ledger.admission.admit_batch_entry` of each of `entries` (the envelopes of a batch
        request, as their bytes in it), in order, spread over the workers. Awaited on the
        event loop, not in a thread: a batch request waiting for the workers holds none of
        the default executor's few threads, which the sequencer needs to commit (with a thread
        per request in flight, enough concurrent batches would leave it none)."""
        parts = self._parts(entries)
        futs = [asyncio.wrap_future(self._pool.submit(_admit_entries, log, p)) for p in parts]
        out: list[Admitted | LedgerError | None] = []
        for got in await asyncio.gather(*futs):
            out.extend(got)
        return out

    def _parts(self, items: Sequence[bytes]) -> list[Sequence[bytes]]:
        """`items` cut into one run per worker (fewer when there are fewer items)."""
        chunk = max(1, -(-len(items) // self.workers))
        return [items[i : i + chunk] for i in range(0, len(items), chunk)]

    def close(self) -> None:
        """Stop the workers (requests in flight finish first)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0))
