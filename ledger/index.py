"""The read index: which entries are about which model, version, category and tier.

A convenience for readers, not a source of truth: it is derived from the entries, built after
they are sequenced (lazily, by the first read that finds it behind the head), and answers with
log indices only. A client that needs completeness or authenticity fetches the entries and
verifies their inclusion itself; a server that omits an entry from its index answers
incompletely, and only a full audit of the log can show it.

Several processes may build it at once: each extends it from the size it read, and a
compare-and-swap on the index head keeps one of them (`Store.extend_index`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Final

from attest.predicates import (
    CONTINUITY,
    EMOTION_CALIBRATION,
    EVAL_SAMPLE,
    FIELD_REPORT,
    PREDICATE_NAMESPACE,
    PROBE_RECORD,
)
from attest.tiles import TILE_WIDTH
from ledger.log import Log
from ledger.storage import IndexRow

UNKNOWN: Final = "unknown"
"""The predicate type recorded for an entry that is not a statement of this project."""

FILTERS: Final = ("predicate_type", "model", "version", "category", "tier")
"""The columns a query may name."""

MAX_LIMIT: Final = 1000

_MAX_TEXT: Final = 256  # longer than any label a valid statement has: not indexed


def short_type(predicate_type: str) -> str:
    """``…/attestation/probe-record/v1`` -> ``probe-record``; other URIs unchanged."""
    if predicate_type.startswith(PREDICATE_NAMESPACE):
        return predicate_type[len(PREDICATE_NAMESPACE) :].rsplit("/", 1)[0]
    return predicate_type


def describe(index: int, data: bytes) -> IndexRow:
    """The index row of entry `index` with leaf data `data` (a DSSE envelope's bytes).

    Reads only the fields the index keeps, without validating the statement: the log validated
    it on admission, the row is a hint either way, and a full parse costs about 2 ms per probe
    record (`bench/index_bench.py`), which would make building the index of a large log slow.
    """
    try:
        envelope = json.loads(data)
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        kind = statement["predicateType"]
        pred = statement["predicate"]
        if not isinstance(kind, str) or not isinstance(pred, dict):
            return IndexRow(index, UNKNOWN)
    except (ValueError, TypeError, KeyError, RecursionError):
        return IndexRow(index, UNKNOWN)
    short = short_type(kind)
    if kind == PROBE_RECORD:
        m = _model(pred.get("model"))
        return IndexRow(index, short, *m, _text(pred.get("category")), _text(pred.get("tier")))
    if kind == EMOTION_CALIBRATION:
        return IndexRow(index, short, *_model(pred.get("model")))
    if kind == CONTINUITY:
        before = _model(pred.get("predecessor"))
        return IndexRow(index, short, *_model(pred.get("successor")), predecessor_version=before[1])
    if kind == EVAL_SAMPLE:
        name, version, _ = _model(pred.get("model"))
        return IndexRow(index, short, name, version)
    if kind == FIELD_REPORT:
        name, version, _ = _model(pred.get("model"))
        return IndexRow(
            index, short, name, version, None, _text(pred.get("category")), _text(pred.get("tier"))
        )
    if kind.startswith(PREDICATE_NAMESPACE):
        return IndexRow(index, short)
    return IndexRow(index, UNKNOWN)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= _MAX_TEXT else None


def _model(value: object) -> tuple[str | None, str | None, str | None]:
    """(name, version, weights SHA-256) of a ModelRef / ModelId object; None where absent."""
    if not isinstance(value, dict):
        return None, None, None
    weights = _text(value.get("weightsSha256"))
    return _text(value.get("name")), _text(value.get("version")), weights


def catch_up(log: Log) -> int:
    """Extend the log's index to its current head; returns the size the index now covers.

    Reads whole entry bundles, so catching up costs one row read per 256 entries.
    """
    target = log.head().size
    while True:
        done = log.store.index_size(log.id)
        if done >= target:
            return done
        end = min(target, (done // TILE_WIDTH + 1) * TILE_WIDTH)
        entries = log.bundle(done // TILE_WIDTH, end)
        rows = [describe(i, entries[i % TILE_WIDTH]) for i in range(done, end)]
        # If we crash here nothing is written; if another reader extended the index meanwhile,
        # our rows are dropped and the loop continues from its size.
        log.store.extend_index(log.id, done, end, rows)


def query(
    log: Log, where: Mapping[str, str], *, start: int = 0, limit: int = MAX_LIMIT
) -> tuple[int, list[IndexRow]]:
    """(size covered, rows matching `where` from index `start`), after catching up.

    `where` may name the columns in `FILTERS`; `predicate_type` takes the short name
    (``probe-record``) or the full URI.
    """
    unknown = sorted(set(where) - set(FILTERS))
    if unknown:
        raise ValueError(f"the index has no column {', '.join(unknown)}")
    size = catch_up(log)
    filters = dict(where)
    if "predicate_type" in filters:
        filters["predicate_type"] = short_type(filters["predicate_type"])
    return size, log.store.index_rows(log.id, filters, start=start, limit=min(limit, MAX_LIMIT))


def models(log: Log) -> tuple[int, list[tuple[str, str]]]:
    """(size covered, the (model, version) pairs with probe records), after catching up."""
    size = catch_up(log)
    return size, log.store.index_models(log.id, short_type(PROBE_RECORD))
