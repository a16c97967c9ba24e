"""Probe records as signed log entries: building items, splitting a run into entries, signing.

A probing run of one model over one suite yields, for each (category, tier) group, one *logical*
record: every item's prompt id, framing, answer, refusal, capability transfer and emotion
projections. A log entry is at most 65535 bytes (`attest.tiles.MAX_ENTRY_SIZE`: the uint16 length
prefix of tlog-tiles entry bundles), measured on the DSSE envelope's canonical bytes, so a logical
record is split into *parts*, each its own signed `ProbeRecord`.

Decisions a caller must know:

* **Parts are named in `runId`.** `ProbeRecord` has no part field, so part k of n carries the run
  id ``<run id>/part-<k>-of-<n>`` (`part_run_id`, `parse_part_run_id`); every record has the
  suffix, also a record that fits in one entry (``…/part-1-of-1``), so a reader never guesses and
  can tell whether it holds every part of a run.
* **Sizes are exact.** Items are packed in order, greedily, using the exact canonical length of
  each item (RFC 8785 serializes array elements independently, so a part's payload length is a
  sum) and the exact envelope overhead of the signers (Ed25519 signatures have a fixed length);
  every signed part is then measured again with `Envelope.canonical_bytes()`.
* **Nothing is truncated.** An item whose answer alone makes an entry too large raises
  `ItemTooLargeError`: content-addressed blobs for long answers do not exist yet.
* **Units.** Every number is an integer; fractions are milli-units (`to_milli`, rounded half
  away from zero like `clients.probe.metrics.milli`).

Pure: no I/O, no clock (the caller passes `seen_checkpoint` and `issued_at`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from attest.dsse import Envelope
from attest.errors import AttestError
from attest.jcs import canonicalize
from attest.predicates import (
    BackendRef,
    BlobRef,
    CheckpointRef,
    Decoding,
    EmotionCalibration,
    EmotionProjection,
    EmotionValidation,
    LogEntryRef,
    MethodRef,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import Statement, sign_statement, statement_bytes
from attest.tiles import MAX_ENTRY_SIZE
from clients.probe.metrics import milli

__all__ = [
    "MAX_ITEMS_PER_RECORD",
    "ItemTooLargeError",
    "RecordError",
    "RecordHeader",
    "SignedRecord",
    "calibration_predicate",
    "item_size",
    "parse_part_run_id",
    "part_run_id",
    "probe_item",
    "sign_records",
    "to_milli",
]

Signers = Sequence[tuple[str, Ed25519PrivateKey]]

MAX_ITEMS_PER_RECORD: Final = 4096
"""`ProbeRecord.items` holds at most this many items (its schema bound)."""

_MAX_LABEL = 256
_PART_RE = re.compile(r"^(?P<run>.+)/part-(?P<k>[1-9][0-9]*)-of-(?P<n>[1-9][0-9]*)$")


class RecordError(AttestError):
    """A probe record cannot be built: a value out of range, a bad run id, no items."""


class ItemTooLargeError(RecordError):
    """One item alone does not fit in a log entry, even in a record of its own.

    `prompt_id` names the item, `size` is the canonical envelope size a record holding only it
    would have, `limit` the entry limit.
    """

    def __init__(self, prompt_id: str, size: int, limit: int) -> None:
        super().__init__(
            f"item {prompt_id!r} alone makes a {size}-byte log entry, over the {limit}-byte limit; "
            "answers are never truncated and the log has no blob store for long answers yet: "
            "lower --max-new-tokens"
        )
        self.prompt_id = prompt_id
        self.size = size
        self.limit = limit


# -- values -----------------------------------------------------------------------------------


def to_milli(x: float) -> int:
    """`x` in milli-units as `clients.probe.metrics.milli` rounds it (half away from zero, on
    the shortest decimal form of `x`), so every milli-unit in the project rounds alike.

    Raises RecordError for NaN and infinities: a record never carries a silent zero.
    """
    if not math.isfinite(x):
        raise RecordError(f"cannot record a non-finite value ({x!r}) in milli-units")
    return milli(x)


def probe_item(
    prompt_id: str,
    framing: str,
    answer: str,
    *,
    refused: bool,
    transfer: float,
    emotions: Mapping[str, tuple[float, float]],
) -> ProbeItem:
    """The wire item for one answered probe.

    `transfer` is the judged capability transfer in [0, 1]; `emotions` maps an emotion to the
    (mean, spread) of its projection over the answer's tokens (spread >= 0). An answer without
    tokens has no projection: pass an empty mapping. Raises RecordError on a value out of range.
    """
    try:
        return ProbeItem(
            prompt_id=prompt_id,
            framing=framing,  # type: ignore[arg-type]  # validated by the model
            answer=answer,
            refused=int(refused),
            transfer_milli=to_milli(transfer),
            emotions={
                name: EmotionProjection(mean_milli=to_milli(mean), spread_milli=to_milli(spread))
                for name, (mean, spread) in sorted(emotions.items())
            },
        )
    except ValidationError as exc:
        raise RecordError(f"item {prompt_id!r}: {_first_error(exc)}") from exc


def calibration_predicate(
    *,
    model: ModelRef,
    layer: int,
    token_rule: str,
    vectors: BlobRef,
    held_out_scores: Mapping[str, float],
    seen_checkpoint: CheckpointRef,
    issued_at: int,
    validation: EmotionValidation | None = None,
) -> EmotionCalibration:
    """The EmotionCalibration predicate for vectors stored as the blob `vectors`.

    `held_out_scores` maps each emotion to its validation score on held-out data (a fraction);
    `validation` (`Calibration.validation()`) says how the layer was chosen and gives the null.
    """
    try:
        return EmotionCalibration(
            seen_checkpoint=seen_checkpoint,
            issued_at=issued_at,
            model=model,
            layer=layer,
            token_rule=token_rule,
            vectors=vectors,
            held_out_scores_milli={k: to_milli(v) for k, v in sorted(held_out_scores.items())},
            validation=validation,
        )
    except ValidationError as exc:
        raise RecordError(f"calibration: {_first_error(exc)}") from exc


# -- parts ------------------------------------------------------------------------------------


def part_run_id(run_id: str, part: int, parts: int) -> str:
    """The run id that part `part` (1-based) of `parts` carries: ``<run_id>/part-<k>-of-<n>``."""
    if not 1 <= part <= parts:
        raise RecordError(f"part {part} of {parts} does not exist")
    return f"{run_id}/part-{part}-of-{parts}"


def parse_part_run_id(run_id: str) -> tuple[str, int, int]:
    """Split a part's run id into (run id, part, parts); RecordError if it names no part."""
    m = _PART_RE.fullmatch(run_id)
    if m is None or not 1 <= int(m["k"]) <= int(m["n"]):
        raise RecordError(f"run id {run_id[:300]!r} does not end in /part-<k>-of-<n>")
    return m["run"], int(m["k"]), int(m["n"])


@dataclass(frozen=True)
class RecordHeader:
    """Everything a probe record holds besides its items: one (category, tier) group of a run.

    `backend`, `decoding`, `judges` and `attacks` are what a replay needs (see `ProbeRecord`);
    `calibration` is None exactly when the backend cannot observe emotions.
    """

    model: ModelRef
    suite: SuiteRef
    category: str
    tier: str
    run_id: str
    calibration: LogEntryRef | None
    seen_checkpoint: CheckpointRef
    issued_at: int
    backend: BackendRef | None = None
    decoding: Decoding | None = None
    judges: tuple[MethodRef, ...] = ()
    attacks: tuple[MethodRef, ...] = ()

    def record(self, items: Sequence[ProbeItem], run_id: str | None = None) -> ProbeRecord:
        """The ProbeRecord holding `items`, under `run_id` (default: the header's)."""
        try:
            return ProbeRecord(
                seen_checkpoint=self.seen_checkpoint,
                issued_at=self.issued_at,
                model=self.model,
                suite=self.suite,
                category=self.category,
                tier=self.tier,
                run_id=self.run_id if run_id is None else run_id,
                calibration=self.calibration,
                items=tuple(items),
                backend=self.backend,
                decoding=self.decoding,
                judges=self.judges,
                attacks=self.attacks,
            )
        except ValidationError as exc:
            raise RecordError(f"probe record: {_first_error(exc)}") from exc


@dataclass(frozen=True)
class SignedRecord:
    """One part of a logical record: the predicate, its signed envelope, and its position."""

    predicate: ProbeRecord
    envelope: Envelope
    part: int
    parts: int


def item_size(item: ProbeItem) -> int:
    """The bytes `item` takes in a record's canonical payload (without the separating comma)."""
    return len(canonicalize(item.model_dump(mode="json", by_alias=True, exclude_none=True)))


def sign_records(
    header: RecordHeader,
    items: Sequence[ProbeItem],
    signers: Signers,
    *,
    limit: int = MAX_ENTRY_SIZE,
) -> list[SignedRecord]:
    """Split `items` (in order) into as few parts as fit, sign each part, return them in order.

    Plan:
    1. reserve the longest part suffix the split could need (``/part-N-of-N``, N = len(items));
    2. measure the payload of a one-item record and the envelope overhead of `signers`;
    3. pack greedily: a part takes the next item while its envelope stays <= `limit` bytes and it
       has fewer than `MAX_ITEMS_PER_RECORD` items (ItemTooLargeError if one item never fits);
    4. sign every part under its real run id and measure `canonical_bytes()` again.

    Requires at least one item and one signer (RecordError otherwise).
    """
    if not items:
        raise RecordError("a probe record needs at least one item")
    if not signers:
        raise RecordError("a probe record needs at least one signer")
    reserved = part_run_id(header.run_id, len(items), len(items))  # (1)
    if len(reserved) > _MAX_LABEL:
        raise RecordError(f"run id {header.run_id[:80]!r}… leaves no room for a part suffix")
    sizes = [item_size(item) for item in items]  # (2)
    one = statement_bytes(Statement.of(header.record(items[:1], reserved)))
    bare = len(one) - sizes[0]  # the payload with an empty items array
    overhead = len(sign_statement(header.record(items[:1], reserved), signers).canonical_bytes())
    overhead -= _b64_len(len(one))

    def envelope_size(payload_len: int) -> int:
        return overhead + _b64_len(payload_len)

    groups: list[list[ProbeItem]] = []  # (3)
    current: list[ProbeItem] = []
    payload = bare
    for item, size in zip(items, sizes, strict=True):
        alone = envelope_size(bare + size)
        if alone > limit:
            raise ItemTooLargeError(item.prompt_id, alone, limit)
        grown = payload + size + (1 if current else 0)
        if current and (envelope_size(grown) > limit or len(current) >= MAX_ITEMS_PER_RECORD):
            groups.append(current)
            current, grown = [], bare + size
        current.append(item)
        payload = grown
    groups.append(current)
    return [_sign_part(header, g, k, len(groups), signers, limit) for k, g in enumerate(groups, 1)]


def _sign_part(
    header: RecordHeader,
    items: Sequence[ProbeItem],
    part: int,
    parts: int,
    signers: Signers,
    limit: int,
) -> SignedRecord:
    predicate = header.record(items, part_run_id(header.run_id, part, parts))
    envelope = sign_statement(predicate, signers)
    size = len(envelope.canonical_bytes())  # (4)
    if size > limit:  # the packing arithmetic is exact; this is a tripwire, not a code path
        raise RecordError(f"part {part} of {parts} is {size} bytes, over the {limit}-byte limit")
    return SignedRecord(predicate, envelope, part, parts)


def _b64_len(n: int) -> int:
    """Length of the padded standard base64 encoding of `n` bytes."""
    return 4 * ((n + 2) // 3)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"
