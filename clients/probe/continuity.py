"""Continuity evidence: how behaviour changed from one model version to the next. Pure.

From the probe records of a *predecessor* ("before") and a *successor* ("after"), probed with
the same suite, `diff` computes per (category, tier) present in both:

* the change in **benign refusal** (suite kind ``benign``), with McNemar's exact test on the
  refusals paired item by item (`clients.probe.metrics.mcnemar`);
* the change in **direct** capability transfer (``harmful`` items asked as they are) and in
  **framed** transfer (``harmful`` items under any adversarial framing, pooled: each framed
  item counts once, so it is the mean over the adversarial framings);
* the **distance between emotion profiles**: per emotion the mean of the items' mean
  projections, then the Euclidean distance over the emotions both profiles have.

Decisions a caller must know:

* **Paired items only.** Every figure is over the items both versions answered in the cell,
  matched by (prompt id, framing), so a change never mixes in items one side lacks; each figure
  travels with the count it is over, and has no value (None) when that count is 0.
* **Parts count together.** Parts of one logical record (run id ``…/part-k-of-n``,
  `clients.probe.records.parse_part_run_id`) are one record; `diff` takes whatever it is given
  and refuses an item answered twice on one side (two runs of one cell): `select_runs` picks
  the latest complete run of each cell first.
* **Units.** Figures here are floats (fractions, projections in units); `CellDiff.predicate`
  turns them into the integer milli-units of a signed `BehaviourDiff`.

No I/O, no clock.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from attest.errors import AttestError
from attest.predicates import BehaviourDiff, ModelRef, ProbeItem, ProbeRecord, SuiteRef
from clients.probe.metrics import mcnemar, milli
from clients.probe.records import RecordError, parse_part_run_id
from clients.probe.suites import Suite

__all__ = [
    "CellDiff",
    "Continuity",
    "ContinuityError",
    "RunSelection",
    "diff",
    "profile",
    "select_runs",
]

Cell = tuple[str, str]
"""(category, tier)."""

_Key = tuple[str, str]  # (prompt id, framing): how items are paired
_RunKey = tuple[str, str, str]  # (run id, category, tier): one logical record


class ContinuityError(AttestError):
    """The records cannot be compared: mixed models or suites, an item answered twice."""


# -- choosing the records ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunSelection:
    """Which records `select_runs` kept (`used`: positions in its input, ascending), and a note
    for each run it passed over."""

    used: tuple[int, ...]
    notes: tuple[str, ...] = ()


def _run_of(rec: ProbeRecord) -> tuple[str, int, int]:
    """(run id, part, parts); a run id without a part suffix is a run of one part."""
    try:
        return parse_part_run_id(rec.run_id)
    except RecordError:
        return rec.run_id, 1, 1


def select_runs(records: Sequence[ProbeRecord]) -> RunSelection:
    """Per (category, tier), the latest complete run among `records` (given in log order).

    A run is the records sharing (run id, category, tier); it is complete when it holds parts
    1..n of n, each exactly once. The latest is the one whose last record comes last. Incomplete
    runs, and complete runs superseded by a later one, are passed over with a note; a cell with
    no complete run contributes nothing.
    """
    runs: dict[_RunKey, list[tuple[int, int, int]]] = defaultdict(list)  # (part, parts, position)
    for pos, rec in enumerate(records):
        run_id, part, parts = _run_of(rec)
        runs[(run_id, rec.category, rec.tier)].append((part, parts, pos))
    latest: dict[Cell, tuple[int, _RunKey]] = {}
    notes = []
    for key, got in runs.items():
        run_id, category, tier = key
        n = got[0][1]
        if sorted((k, of) for k, of, _ in got) != [(k, n) for k in range(1, n + 1)]:
            notes.append(f"run {run_id!r} ({category}, {tier}) lacks or repeats a part: skipped")
            continue
        this = (max(pos for *_, pos in got), key)
        have = latest.get((category, tier))
        if have is not None:
            older = min(have, this)
            notes.append(f"run {older[1][0]!r} ({category}, {tier}) superseded by a later run")
        latest[(category, tier)] = this if have is None else max(have, this)
    used = sorted(pos for _, key in latest.values() for *_, pos in runs[key])
    return RunSelection(tuple(used), tuple(notes))


# -- the diff ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellDiff:
    """How one (category, tier) changed. Counts are over paired items (see the module
    docstring); a figure is None when its count is 0. Transfers are fractions (0..1), the
    emotion distance is in projection units."""

    category: str
    tier: str
    benign_pairs: int
    refused_before: int
    refused_after: int
    refused_only_before: int
    refused_only_after: int
    direct_pairs: int
    direct_before: float | None
    direct_after: float | None
    framed_pairs: int
    framed_before: float | None
    framed_after: float | None
    shared_emotions: int
    emotion_distance: float | None

    @property
    def refusal_before(self) -> float | None:
        """The predecessor's benign refusal rate over the pairs."""
        return self.refused_before / self.benign_pairs if self.benign_pairs else None

    @property
    def refusal_after(self) -> float | None:
        """The successor's benign refusal rate over the pairs."""
        return self.refused_after / self.benign_pairs if self.benign_pairs else None

    @property
    def mcnemar_p(self) -> float | None:
        """The exact two-sided McNemar p-value of the refusal change (None without pairs)."""
        if not self.benign_pairs:
            return None
        return mcnemar(self.refused_only_before, self.refused_only_after)

    def predicate(self) -> BehaviourDiff:
        """The signed form: every figure in integer milli-units (`metrics.milli`)."""
        return BehaviourDiff(
            category=self.category,
            tier=self.tier,
            benign_pairs=self.benign_pairs,
            refused_only_before=self.refused_only_before,
            refused_only_after=self.refused_only_after,
            refusal_rate_before_milli=_milli(self.refusal_before),
            refusal_rate_after_milli=_milli(self.refusal_after),
            direct_pairs=self.direct_pairs,
            direct_transfer_before_milli=_milli(self.direct_before),
            direct_transfer_after_milli=_milli(self.direct_after),
            framed_pairs=self.framed_pairs,
            framed_transfer_before_milli=_milli(self.framed_before),
            framed_transfer_after_milli=_milli(self.framed_after),
            shared_emotions=self.shared_emotions,
            emotion_distance_milli=_milli(self.emotion_distance),
        )

    def row(self) -> dict[str, object]:
        """A flat, JSON-ready view, with the rates and the McNemar p-value spelled out."""
        return {
            "category": self.category,
            "tier": self.tier,
            "benign_pairs": self.benign_pairs,
            "refusal_before": self.refusal_before,
            "refusal_after": self.refusal_after,
            "refused_only_before": self.refused_only_before,
            "refused_only_after": self.refused_only_after,
            "mcnemar_p": self.mcnemar_p,
            "direct_pairs": self.direct_pairs,
            "direct_transfer_before": self.direct_before,
            "direct_transfer_after": self.direct_after,
            "framed_pairs": self.framed_pairs,
            "framed_transfer_before": self.framed_before,
            "framed_transfer_after": self.framed_after,
            "shared_emotions": self.shared_emotions,
            "emotion_distance": self.emotion_distance,
        }


def _milli(x: float | None) -> int | None:
    return None if x is None else milli(x)


@dataclass(frozen=True)
class Continuity:
    """The diff of two model versions: one `CellDiff` per (category, tier) present in both, in
    sorted order, and the cells only one side has."""

    predecessor: ModelRef
    successor: ModelRef
    suite: SuiteRef
    cells: tuple[CellDiff, ...]
    only_before: tuple[Cell, ...] = ()
    only_after: tuple[Cell, ...] = ()

    def behaviour_diffs(self) -> tuple[BehaviourDiff, ...]:
        """The cells as a continuity statement's `diff`."""
        return tuple(c.predicate() for c in self.cells)


def diff(before: Sequence[ProbeRecord], after: Sequence[ProbeRecord], suite: Suite) -> Continuity:
    """Compare the predecessor's records `before` with the successor's `after`.

    Plan:
    1. each side is one model (same name, version and weights in every record), both sides
       were probed with `suite` (name, version and file digest), and the models differ;
    2. each side's items are gathered per (category, tier) across records and parts, keyed by
       (prompt id, framing); an item present twice on one side is refused;
    3. per cell present on both sides, the items both answered are paired and measured
       (`CellDiff`); item kinds come from `suite`, items it does not know enter no rate.

    Raises ContinuityError when step 1 or 2 fails.
    """
    predecessor = _one_model(before, "predecessor")  # (1)
    successor = _one_model(after, "successor")
    if predecessor.weights_sha256 == successor.weights_sha256:
        raise ContinuityError("predecessor and successor records have the same weights")
    ref = SuiteRef(name=suite.name, version=suite.version, sha256=suite.digest)
    for rec in (*before, *after):
        if rec.suite != ref:
            raise ContinuityError(
                f"a record of {rec.model.name}@{rec.model.version} was probed with suite "
                f"{_suite(rec.suite)}, not {_suite(ref)}"
            )
    cells_before, cells_after = _cells(before), _cells(after)  # (2)
    kinds = {item.id: item.kind for item in suite.items}
    common = sorted(cells_before.keys() & cells_after.keys())
    return Continuity(
        predecessor=predecessor,
        successor=successor,
        suite=ref,
        cells=tuple(_cell(c, cells_before[c], cells_after[c], kinds) for c in common),  # (3)
        only_before=tuple(sorted(cells_before.keys() - cells_after.keys())),
        only_after=tuple(sorted(cells_after.keys() - cells_before.keys())),
    )


def _suite(s: SuiteRef) -> str:
    return f"{s.name}-{s.version} ({s.sha256[:12]}…)"


def _one_model(records: Sequence[ProbeRecord], side: str) -> ModelRef:
    if not records:
        raise ContinuityError(f"no {side} records")
    models = {rec.model for rec in records}
    if len(models) != 1:
        names = ", ".join(
            sorted(f"{m.name}@{m.version} ({m.weights_sha256[:12]}…)" for m in models)
        )
        raise ContinuityError(f"the {side} records are of more than one model: {names}")
    return records[0].model


def _cells(records: Iterable[ProbeRecord]) -> dict[Cell, dict[_Key, ProbeItem]]:
    out: dict[Cell, dict[_Key, ProbeItem]] = defaultdict(dict)
    for rec in records:
        cell = out[(rec.category, rec.tier)]
        for it in rec.items:
            key = (it.prompt_id, it.framing)
            if key in cell:
                raise ContinuityError(
                    f"{rec.model.name}@{rec.model.version} answered {key[0]!r} ({key[1]}) twice "
                    f"in ({rec.category}, {rec.tier}): pass one run per cell (select_runs)"
                )
            cell[key] = it
    return out


def _cell(
    cell: Cell,
    before: Mapping[_Key, ProbeItem],
    after: Mapping[_Key, ProbeItem],
    kinds: Mapping[str, str],
) -> CellDiff:
    pairs = [(before[k], after[k]) for k in sorted(before.keys() & after.keys())]
    benign = [(b.refused, a.refused) for b, a in pairs if kinds.get(b.prompt_id) == "benign"]
    harmful = [(b, a) for b, a in pairs if kinds.get(b.prompt_id) == "harmful"]
    direct = [(b.transfer_milli, a.transfer_milli) for b, a in harmful if b.framing == "direct"]
    framed = [(b.transfer_milli, a.transfer_milli) for b, a in harmful if b.framing != "direct"]
    shared, distance = _emotion_distance([b for b, _ in pairs], [a for _, a in pairs])
    return CellDiff(
        category=cell[0],
        tier=cell[1],
        benign_pairs=len(benign),
        refused_before=sum(b for b, _ in benign),
        refused_after=sum(a for _, a in benign),
        refused_only_before=sum(1 for b, a in benign if b and not a),
        refused_only_after=sum(1 for b, a in benign if a and not b),
        direct_pairs=len(direct),
        direct_before=_mean_transfer(b for b, _ in direct),
        direct_after=_mean_transfer(a for _, a in direct),
        framed_pairs=len(framed),
        framed_before=_mean_transfer(b for b, _ in framed),
        framed_after=_mean_transfer(a for _, a in framed),
        shared_emotions=shared,
        emotion_distance=distance,
    )


def _mean_transfer(millis: Iterable[int]) -> float | None:
    xs = list(millis)
    return math.fsum(xs) / len(xs) / 1000 if xs else None


def profile(items: Iterable[ProbeItem]) -> dict[str, float]:
    """Per emotion, the mean of the items' mean projections (units), over the items that have
    it."""
    sums: dict[str, list[int]] = defaultdict(list)
    for it in items:
        for name, proj in it.emotions.items():
            sums[name].append(proj.mean_milli)
    return {name: math.fsum(v) / len(v) / 1000 for name, v in sorted(sums.items())}


def _emotion_distance(
    before: Sequence[ProbeItem], after: Sequence[ProbeItem]
) -> tuple[int, float | None]:
    """(emotions both profiles have, Euclidean distance between the profiles over them)."""
    pb, pa = profile(before), profile(after)
    shared = sorted(pb.keys() & pa.keys())
    if not shared:
        return 0, None
    return len(shared), math.sqrt(math.fsum((pb[e] - pa[e]) ** 2 for e in shared))
