"""Receipts of the anonymous log: a signed promise to integrate an entry by a deadline. Pure.

The anonymous log does not answer a write with an inclusion proof (that would reveal when the
entry was written); it answers at once with a receipt, a C2SP signed note by the log's key:

    <origin>/receipt
    <base64 leaf hash>
    <integrate-by, Unix seconds>

Its second line is never a decimal number, so a receipt can never be mistaken for a checkpoint.
A log that fails to include a receipted entry by its deadline is caught by the receipt alone.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from attest.checkpoint import parse_decimal
from attest.merkle import HASH_SIZE
from attest.note import NoteError, NoteSigner, NoteVerifier, open_note, sign_note

SUFFIX = "/receipt"


class ReceiptError(NoteError):
    """A receipt is malformed or not signed by the log."""


@dataclass(frozen=True)
class Receipt:
    """The log `origin` promises to include the entry with `leaf_hash` by `integrate_by`."""

    origin: str
    leaf_hash: bytes
    integrate_by: int

    def text(self) -> str:
        """The note text that the log signs."""
        leaf = base64.b64encode(self.leaf_hash).decode()
        return f"{self.origin}{SUFFIX}\n{leaf}\n{self.integrate_by}\n"

    @classmethod
    def parse(cls, text: str) -> Receipt:
        """Parse a receipt's note text (ReceiptError if it is not one)."""
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "" or not lines[0].endswith(SUFFIX):
            raise ReceiptError("not a receipt: want '<origin>/receipt', leaf hash, deadline")
        try:
            leaf = base64.b64decode(lines[1], validate=True)
        except binascii.Error as e:
            raise ReceiptError(f"receipt leaf hash is not base64: {e}") from e
        if len(leaf) != HASH_SIZE:
            raise ReceiptError(f"receipt leaf hash is {len(leaf)} bytes, want {HASH_SIZE}")
        return cls(lines[0].removesuffix(SUFFIX), leaf, parse_decimal(lines[2], "deadline"))


def sign_receipt(receipt: Receipt, signer: NoteSigner) -> str:
    """The receipt as a signed note."""
    return sign_note(receipt.text(), [signer]).decode()


def open_receipt(note: str, verifier: NoteVerifier) -> Receipt:
    """Verify a receipt with the log's key and parse it."""
    opened, _ = open_note(note.encode(), [verifier])
    return Receipt.parse(opened.text)
