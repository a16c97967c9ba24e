"""Errors of the `verifier` package: one base, `VerifierError`, whose `diagnostic` the CLI prints.

Subclasses are small and specific, so callers catch exactly what they can handle. Errors that
callers outside one module need (policy verdicts, witness answers) live here; errors only one
module raises live beside it (e.g. `verifier.witness.AddCheckpointError`).
"""

from __future__ import annotations


class VerifierError(Exception):
    """Base error of the verifier package; `diagnostic` is a one-line message for people."""

    def __init__(self, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic


class WitnessError(VerifierError):
    """Talking to a tlog-witness did not yield a cosignature."""


class WitnessConflict(WitnessError):
    """The witness answered 409: its latest cosigned size is `size`, not the `old` we sent.

    Retry with `old = size` and a consistency proof from `size`. When `size` equals the size of
    the submitted checkpoint, the witness holds a *different root* for that size: a fork.
    """

    def __init__(self, size: int, sent_old: int) -> None:
        super().__init__(f"witness's latest cosigned size is {size}, we sent old {sent_old}")
        self.size = size
        self.sent_old = sent_old


class WitnessRefused(WitnessError):
    """The witness answered with an error `status` other than 409; `detail` is its body."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"witness refused the checkpoint: HTTP {status}: {detail[:200]}")
        self.status = status
        self.detail = detail


class WitnessProtocolError(WitnessError):
    """The witness could not be reached, or answered something the protocol does not allow."""
