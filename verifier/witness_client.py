"""Client side of C2SP tlog-witness: push a checkpoint to a witness, get its cosignatures.

`add_checkpoint` returns the signature lines the witness sent, *unverified*: the spec has the
client verify them with the witness keys it trusts, which `verify_cosignatures` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from attest.checkpoint import CheckpointError, parse_decimal
from attest.cosignature import CosignatureVerifier
from attest.note import (
    SIGNATURE_PREFIX,
    Note,
    NoteError,
    NoteSignature,
    open_note,
    parse_note,
    parse_signature_line,
)
from verifier.errors import WitnessConflict, WitnessProtocolError, WitnessRefused
from verifier.witness import SIZE_CONTENT_TYPE, AddCheckpointError, AddCheckpointRequest

__all__ = ["add_checkpoint", "parse_cosignature_lines", "verify_cosignatures"]


def add_checkpoint(
    http: httpx.Client,
    url_prefix: str,
    old_size: int,
    proof: Sequence[bytes],
    checkpoint: bytes,
) -> list[NoteSignature]:
    """POST `checkpoint` with a consistency `proof` from `old_size` to `url_prefix`/add-checkpoint.

    Returns the signature lines of a 200 answer (at least one), not yet verified. Raises
    WitnessConflict (409: the witness's latest cosigned size, to retry from), WitnessRefused
    (any other status), WitnessProtocolError (no answer, or one the protocol does not allow).
    """
    try:
        body = AddCheckpointRequest(old_size, tuple(proof), checkpoint).to_bytes()
    except AddCheckpointError as e:
        raise WitnessProtocolError(f"cannot send this request: {e.diagnostic}") from e
    url = url_prefix.rstrip("/") + "/add-checkpoint"
    try:
        resp = http.post(url, content=body)
    except httpx.HTTPError as e:
        raise WitnessProtocolError(f"witness {url}: {e}") from e
    if resp.status_code == 200:
        return parse_cosignature_lines(resp.content)
    if resp.status_code == 409:
        raise WitnessConflict(_conflict_size(resp), old_size)
    raise WitnessRefused(resp.status_code, resp.text.strip())


def _conflict_size(resp: httpx.Response) -> int:
    """The size in a 409 body: `text/x.tlog.size`, ASCII decimal, newline."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip()
    if ctype != SIZE_CONTENT_TYPE:
        raise WitnessProtocolError(
            f"409 answer has content type {ctype!r}, want {SIZE_CONTENT_TYPE}"
        )
    text = resp.content.decode("ascii", "replace")
    if not text.endswith("\n"):
        raise WitnessProtocolError("409 answer does not end in a newline")
    try:
        return parse_decimal(text[:-1], "409 tree size")
    except CheckpointError as e:
        raise WitnessProtocolError(e.diagnostic) from e


def parse_cosignature_lines(body: bytes) -> list[NoteSignature]:
    """Parse a 200 answer: one or more `— <name> <base64>` lines, each ending in a newline."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WitnessProtocolError("cosignature answer is not UTF-8") from e
    if not text.endswith("\n"):
        raise WitnessProtocolError("cosignature answer is empty or does not end in a newline")
    sigs = []
    for line in text[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise WitnessProtocolError(f"answer line {line[:40]!r} is not a signature line")
        try:
            sigs.append(parse_signature_line(line))
        except NoteError as e:
            raise WitnessProtocolError(f"answer: {e.diagnostic}") from e
    return sigs


def verify_cosignatures(
    checkpoint: bytes, sigs: Sequence[NoteSignature], witness: CosignatureVerifier
) -> list[NoteSignature]:
    """The lines of `sigs` that are valid cosignatures of `checkpoint` by `witness`.

    Plan (the spec's "concatenate and verify"):
    1. keep only the lines by `witness` (name and key ID): the client MUST ignore unknown keys;
    2. verify them over the checkpoint's text; one that fails rejects the answer;
    3. require at least one.
    Raises WitnessProtocolError otherwise.
    """
    try:
        text = parse_note(checkpoint).text
    except NoteError as e:
        raise WitnessProtocolError(f"checkpoint: {e.diagnostic}") from e
    mine = tuple(s for s in sigs if (s.name, s.key_id) == (witness.name, witness.key_id))  # (1)
    if not mine:  # (3)
        raise WitnessProtocolError(f"no cosignature by {witness.name} in the witness's answer")
    try:
        # open_note verifies every line of a trusted key, repeated ones included.
        open_note(Note(text, mine).to_bytes(), [witness])  # (2)
    except NoteError as e:
        raise WitnessProtocolError(f"cosignature by {witness.name}: {e.diagnostic}") from e
    return list(mine)
