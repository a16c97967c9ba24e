"""The errors `ledger` raises: one base class whose `diagnostic` the CLI prints.

Subclasses live beside the code that raises them (`storage.StorageError`,
`admission.AdmissionError`, ...); the HTTP layer maps them to status codes in one place
(`ledger.api`).
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class for every error raised by `ledger`.

    `diagnostic` is one human-readable line (no trailing newline) that the CLI prints as is.
    """

    diagnostic: str

    def __init__(self, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic
