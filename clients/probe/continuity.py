"""Continuity evidence: how behaviour changed from one model version to the next. Pure.

From the probe records of a *predecessor* ("before") and a *successor* ("after"), probed with
the same suite, `diff` computes per (category, tier) present in both:

* the change in **benign refusal** (suite kind ``benign``), with McNemar's exact test on the
  refusals paired item by item (`clients.probe.metrics.mcnemar`), **Holm-corrected across the
  cells of the diff** (`CellDiff.holm_p`), and the smallest p-value the cell's n could reach at
  all (`CellDiff.min_p`: four pairs can never go below 0.125);
* the seed's headline pair on both sides: **best-of-framings transfer** on the category's
  harmful items (per item the highest transfer over its framings; see
  `clients.probe.summary.TRANSFER_METHOD`) and benign refusal, each a figure with its interval
  (`CellDiff.best_before` / `best_after`, `benign_before` / `benign_after`), and the paired
  change in best transfer with a cluster-bootstrap interval (`CellDiff.best_change`);
* the change in **direct** capability transfer (``harmful`` items asked as they are) and in
  **framed** transfer (``harmful`` items under any adversarial framing, pooled: each framed
  item counts once, so it is the mean over the adversarial framings);
* the **distance between emotion profiles**: per emotion the mean of the items' mean
  projections, then the Euclidean distance over the emotions both profiles have;
* **position held** on ``pushback`` items (the position judge's ``held``, over the items both
  versions had a position on: neither first answer ``initially-wrong``) and **disclosure
  engaged** on ``disclosure`` items (the disclosure judge's ``engaged``), both sides with
  Wilson intervals, over items carrying a verdict on both sides, with McNemar's exact test on
  the paired verdicts; the judges and versions behind them (`Continuity.verdict_methods`);
* **judge changes**: each judging role (refusal, transfer, each verdict judge) whose judges
  differ between the two sides (`Continuity.judge_changes`), so a change the judge made is not
  read as the model's.

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

`noise_floor` measures how far the *same* weights move between two runs that differ only in
batch size or seed (the share of paired items whose refusal verdict flips, the mean absolute
change in transfer): a change between versions inside that floor is not evidence of drift.
`repeat_runs` finds such a pair among one version's records (a complete re-run of a cell with
the same weights), and `with_noise` attaches a floor to each cell of a diff and decides whether
its change is within it (`CellDiff.within_noise`); a cell without a floor says so
(`NOT_MEASURED`), none is ever guessed. A floor travels as JSON (`NoiseFloor.to_json`,
`noise_floor_from_json`).

No I/O, no clock.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from attest.errors import AttestError
from attest.predicates import BehaviourDiff, ModelRef, ProbeItem, ProbeRecord, SuiteRef
from clients.probe.metrics import (
    Mean,
    Rate,
    cell_text,
    differential_transfer,
    holm,
    mcnemar,
    mean_ci,
    milli,
    min_attainable_p,
    rate,
)
from clients.probe.records import RecordError, parse_part_run_id
from clients.probe.suites import Suite
from clients.probe.summary import TRANSFER_METHOD, VERDICT_KINDS, figure_row

__all__ = [
    "CellDiff",
    "CellNoise",
    "Continuity",
    "ContinuityError",
    "NoiseFloor",
    "RepeatRuns",
    "RunSelection",
    "decoding_text",
    "diff",
    "judge_changes",
    "noise_floor",
    "noise_floor_from_json",
    "profile",
    "repeat_floor",
    "repeat_runs",
    "select_runs",
    "with_noise",
]

Cell = tuple[str, str]
"""(category, tier)."""

NOT_MEASURED = "not measured — one run of these weights"
"""A cell's noise note when no second run of the same weights was given."""
NOISE_FLOOR_FORMAT = "behaviour-ledger/noise-floor/1"
"""The `format` of a noise floor's JSON (`NoiseFloor.to_json`, `noise_floor_from_json`)."""
_EPS = 1e-9  # a change equal to the bound (k/n against k/n) is within it despite rounding

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


def _complete_runs(
    records: Sequence[ProbeRecord],
) -> tuple[dict[Cell, list[tuple[int, _RunKey, tuple[int, ...]]]], list[str]]:
    """Per (category, tier), its complete runs as (position of the last record, run key,
    positions of its records), oldest first; and a note for each incomplete run."""
    runs: dict[_RunKey, list[tuple[int, int, int]]] = defaultdict(list)  # (part, parts, position)
    for pos, rec in enumerate(records):
        run_id, part, parts = _run_of(rec)
        runs[(run_id, rec.category, rec.tier)].append((part, parts, pos))
    complete: dict[Cell, list[tuple[int, _RunKey, tuple[int, ...]]]] = defaultdict(list)
    notes = []
    for key, got in runs.items():
        run_id, category, tier = key
        n = got[0][1]
        if sorted((k, of) for k, of, _ in got) != [(k, n) for k in range(1, n + 1)]:
            notes.append(f"run {run_id!r} ({category}, {tier}) lacks or repeats a part: skipped")
            continue
        positions = tuple(sorted(pos for *_, pos in got))
        complete[(category, tier)].append((positions[-1], key, positions))
    for found in complete.values():
        found.sort()
    return complete, notes


def select_runs(records: Sequence[ProbeRecord]) -> RunSelection:
    """Per (category, tier), the latest complete run among `records` (given in log order).

    A run is the records sharing (run id, category, tier); it is complete when it holds parts
    1..n of n, each exactly once. The latest is the one whose last record comes last. Incomplete
    runs, and complete runs superseded by a later one, are passed over with a note; a cell with
    no complete run contributes nothing.
    """
    complete, notes = _complete_runs(records)
    used: list[int] = []
    for (category, tier), found in complete.items():
        for _, (run_id, *_), _ in found[:-1]:
            notes.append(f"run {run_id!r} ({category}, {tier}) superseded by a later run")
        used += found[-1][2]
    return RunSelection(tuple(sorted(used)), tuple(notes))


@dataclass(frozen=True)
class RepeatRuns:
    """Two complete runs of the same weights per cell, for `noise_floor`: `first` (the earlier)
    and `second` (the latest, the one `select_runs` keeps), as positions in the input; `runs`
    says what each side was (run ids with their decoding, see `decoding_text`)."""

    first: tuple[int, ...]
    second: tuple[int, ...]
    runs: tuple[str, str]


def decoding_text(rec: ProbeRecord) -> str:
    """The record's decoding as the noise floor names a run: batch size, seed, temperature."""
    d = rec.decoding
    if d is None:
        return "decoding not recorded"
    sampling = "greedy" if d.temperature_milli == 0 else f"T={d.temperature_milli / 1000:g}"
    return f"batch {d.batch_size}, seed {d.seed}, {sampling}"


def repeat_runs(records: Sequence[ProbeRecord]) -> RepeatRuns | None:
    """Per (category, tier), the latest complete run and the latest complete run before it with
    the same weights (`weights_sha256`), among `records` (in log order); None when no cell has
    two. These are what `noise_floor` compares: a re-run of the same weights at another batch
    size or seed. Cells with a single complete run contribute nothing."""
    complete, _ = _complete_runs(records)
    first: list[int] = []
    second: list[int] = []
    labels: tuple[set[str], set[str]] = (set(), set())
    for found in complete.values():
        *older, latest = found
        weights = records[latest[2][0]].model.weights_sha256
        same = [r for r in older if records[r[2][0]].model.weights_sha256 == weights]
        if not same:
            continue
        for side, label, (_, _, positions) in zip(
            (first, second), labels, (same[-1], latest), strict=True
        ):
            side.extend(positions)
            rec = records[positions[0]]
            label.add(f"{_run_of(rec)[0]} ({decoding_text(rec)})")
    if not first:
        return None
    runs = ("; ".join(sorted(labels[0])), "; ".join(sorted(labels[1])))
    return RepeatRuns(tuple(sorted(first)), tuple(sorted(second)), runs)


def repeat_floor(
    records: Sequence[ProbeRecord], suite: Suite, source: str = ""
) -> tuple[NoiseFloor, RepeatRuns] | None:
    """The noise floor of the repeat runs among `records` (`repeat_runs`, then `noise_floor` on
    the two sides), with the runs it compared; None when no cell has two complete runs of the
    same weights. The one place history, the web page and `bledger lab continuity` measure a
    floor from the log's own records."""
    repeat = repeat_runs(records)
    if repeat is None:
        return None
    first, second = ([records[i] for i in side] for side in (repeat.first, repeat.second))
    return noise_floor(first, second, suite, runs=repeat.runs, source=source), repeat


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
    benign_before: Rate | None = None
    benign_after: Rate | None = None
    best_before: Mean | None = None
    best_after: Mean | None = None
    best_change: Mean | None = None
    holm_p: float | None = None
    held_before: Rate | None = None
    held_after: Rate | None = None
    held_only_before: int = 0
    held_only_after: int = 0
    engaged_before: Rate | None = None
    engaged_after: Rate | None = None
    engaged_only_before: int = 0
    engaged_only_after: int = 0
    noise: CellNoise | None = None
    """This cell of the noise floor applied (`with_noise`), None when none was measured."""
    noise_floor: NoiseFloor | None = None
    """The floor `noise` comes from: whose weights, which two runs."""
    noise_note: str = NOT_MEASURED
    """Why `noise` is None."""

    @property
    def refusal_within_noise(self) -> bool | None:
        """|benign refusal after - before| <= the upper bound of the floor's flip rate (None
        without benign pairs or without a floor with pairs in this cell)."""
        b, a = self.refusal_before, self.refusal_after
        if self.noise is None or self.noise.pairs == 0 or b is None or a is None:
            return None
        return abs(a - b) <= self.noise.flip_rate.high + _EPS

    @property
    def transfer_within_noise(self) -> bool | None:
        """|mean change in best-of-framings transfer| <= the upper bound of the floor's mean
        absolute transfer change (None when either is missing)."""
        if self.noise is None or self.noise.transfer_change is None or self.best_change is None:
            return None
        return abs(self.best_change.mean) <= self.noise.transfer_change.high + _EPS

    @property
    def within_noise(self) -> bool | None:
        """True when every change the floor can judge (refusal, transfer) is within it; False
        when one exceeds it; None when the floor judges neither."""
        judged = [
            x for x in (self.refusal_within_noise, self.transfer_within_noise) if x is not None
        ]
        return all(judged) if judged else None

    def noise_row(self) -> dict[str, object]:
        """The floor applied to this cell, JSON-ready: `measured` false with the reason, or
        the floor's n, flip rate and transfer change (with intervals), the two runs, whose
        weights, and the verdicts."""
        if self.noise is None or self.noise_floor is None:
            return {"measured": False, "note": f"noise floor: {self.noise_note}"}
        n, f = self.noise, self.noise_floor
        return {
            "measured": True,
            "model": f.model.model_dump(mode="json"),
            "runs": list(f.runs),
            "source": f.source,
            "pairs": n.pairs,
            "flips": n.flips,
            "flip_rate": figure_row(n.flip_rate),
            "transfer_change": figure_row(n.transfer_change),
            "refusal_within_noise": self.refusal_within_noise,
            "transfer_within_noise": self.transfer_within_noise,
            "within_noise": self.within_noise,
        }

    def noise_text(self) -> str:
        """A table cell: the floor's upper bounds and n, and whether the change is within it."""
        if self.noise is None:
            return self.noise_note
        n = self.noise
        bounds = [f"flips <= {n.flip_rate.high:.2f}"]
        if n.transfer_change is not None:
            bounds.append(f"|dT| <= {n.transfer_change.high:.2f}")
        verdict = {True: "within noise", False: "beyond noise", None: "not judged"}
        return f"{', '.join(bounds)} (n={n.pairs}): {verdict[self.within_noise]}"

    @property
    def position_pairs(self) -> int:
        """Pushback items both versions had a position on (verdicts on both sides)."""
        return 0 if self.held_before is None else self.held_before.n

    @property
    def disclosure_pairs(self) -> int:
        """Disclosure items with a verdict on both sides."""
        return 0 if self.engaged_before is None else self.engaged_before.n

    def verdict_change(self, which: str) -> str:
        """``position`` or ``disclosure``: the share held / engaged before -> after as table
        cells (`metrics.cell_text`: "insufficient data (n=…)" below the reportable rule), "-"
        without pairs."""
        b, a = (
            (self.held_before, self.held_after)
            if which == "position"
            else (self.engaged_before, self.engaged_after)
        )
        return "-" if b is None or a is None else f"{cell_text(b)} -> {cell_text(a)}"

    @property
    def best_pairs(self) -> int:
        """Harmful items with a best-of-framings transfer on both sides."""
        return 0 if self.best_change is None else self.best_change.n

    @property
    def min_p(self) -> float | None:
        """The smallest McNemar p-value `benign_pairs` could give (None without pairs)."""
        return min_attainable_p(self.benign_pairs) if self.benign_pairs else None

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
            **_verdict_group(
                ("position_pairs", "held_only_before", "held_only_after", "held_rate"),
                self.held_before,
                self.held_after,
                (self.held_only_before, self.held_only_after),
            ),
            **_verdict_group(
                ("disclosure_pairs", "engaged_only_before", "engaged_only_after", "engaged_rate"),
                self.engaged_before,
                self.engaged_after,
                (self.engaged_only_before, self.engaged_only_after),
            ),
        )

    def row(self) -> dict[str, object]:
        """A flat, JSON-ready view: rates, McNemar p (raw, Holm-corrected, minimum attainable),
        and the headline figures with intervals (`summary.figure_row`)."""
        return {
            "category": self.category,
            "tier": self.tier,
            "benign_pairs": self.benign_pairs,
            "refusal_before": self.refusal_before,
            "refusal_after": self.refusal_after,
            "refused_only_before": self.refused_only_before,
            "refused_only_after": self.refused_only_after,
            "mcnemar_p": self.mcnemar_p,
            "holm_p": self.holm_p,
            "min_p": self.min_p,
            "benign_refusal_before": figure_row(self.benign_before),
            "benign_refusal_after": figure_row(self.benign_after),
            "best_pairs": self.best_pairs,
            "best_transfer_before": figure_row(self.best_before),
            "best_transfer_after": figure_row(self.best_after),
            "best_transfer_change": figure_row(self.best_change),
            "transfer_method": TRANSFER_METHOD,
            "direct_pairs": self.direct_pairs,
            "direct_transfer_before": self.direct_before,
            "direct_transfer_after": self.direct_after,
            "framed_pairs": self.framed_pairs,
            "framed_transfer_before": self.framed_before,
            "framed_transfer_after": self.framed_after,
            "shared_emotions": self.shared_emotions,
            "emotion_distance": self.emotion_distance,
            "position_pairs": self.position_pairs,
            "position_held_before": figure_row(self.held_before),
            "position_held_after": figure_row(self.held_after),
            "position_mcnemar_p": (
                mcnemar(self.held_only_before, self.held_only_after)
                if self.position_pairs
                else None
            ),
            "disclosure_pairs": self.disclosure_pairs,
            "disclosure_engaged_before": figure_row(self.engaged_before),
            "disclosure_engaged_after": figure_row(self.engaged_after),
            "disclosure_mcnemar_p": (
                mcnemar(self.engaged_only_before, self.engaged_only_after)
                if self.disclosure_pairs
                else None
            ),
        }


def _milli(x: float | None) -> int | None:
    return None if x is None else milli(x)


def _verdict_group(
    names: tuple[str, str, str, str], before: Rate | None, after: Rate | None, only: tuple[int, int]
) -> dict[str, int]:
    """The signed fields of one verdict figure (pairs, discordant pairs, both rates in milli),
    or none at all without pairs (`BehaviourDiff` leaves the group out)."""
    if before is None or after is None or before.n == 0:
        return {}
    pairs, only_before, only_after, rate_ = names
    return {
        pairs: before.n,
        only_before: only[0],
        only_after: only[1],
        f"{rate_}_before_milli": milli(before.rate),
        f"{rate_}_after_milli": milli(after.rate),
    }


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
    verdict_methods: tuple[str, ...] = ()
    """The verdict judges the two sides' records name (``name version``, sorted): two versions
    of one judge here mean the verdict figures mix judges."""
    noise_floors: tuple[NoiseFloor, ...] = ()
    """The noise floors given to `with_noise` (none: not measured)."""
    judge_changes: tuple[str, ...] = ()
    """Per judging role (``refusal``, ``transfer``, each verdict judge) whose judges differ
    between the two sides' records, one line naming both sides' judges (`judge_changes`): the
    change in that role's figures may be the judge's, not the model's."""

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
       (`CellDiff`); item kinds come from `suite`, items it does not know enter no rate;
    4. the McNemar p-values of the cells with benign pairs are Holm-corrected together.

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
    cells = [_cell(c, cells_before[c], cells_after[c], kinds) for c in common]  # (3)
    return Continuity(
        predecessor=predecessor,
        successor=successor,
        suite=ref,
        cells=_with_holm(cells),  # (4)
        only_before=tuple(sorted(cells_before.keys() - cells_after.keys())),
        only_after=tuple(sorted(cells_after.keys() - cells_before.keys())),
        verdict_methods=tuple(
            sorted(
                {
                    f"{j.name} {j.version}"
                    for rec in (*before, *after)
                    for j in rec.judges
                    if j.name in VERDICT_KINDS.values()
                }
            )
        ),
        judge_changes=judge_changes(before, after),
    )


def _judges_by_role(records: Iterable[ProbeRecord]) -> dict[str, set[str]]:
    """Per role, the judges (``name version (config digest prefix)``) `records` name. A record
    lists its refusal judge first, then its transfer judge, then its verdict judges (named by
    the judge's name); a record naming none (written before records named their judges) counts
    as ``not named`` for refusal and transfer."""
    roles: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        if not rec.judges:
            roles["refusal"].add("not named")
            roles["transfer"].add("not named")
        for k, j in enumerate(rec.judges):
            role = ("refusal", "transfer")[k] if k < 2 else j.name
            roles[role].add(f"{j.name} {j.version} ({j.config_digest[:12]})")
    return roles


def judge_changes(before: Sequence[ProbeRecord], after: Sequence[ProbeRecord]) -> tuple[str, ...]:
    """One line per judging role whose judges differ between `before` and `after` (a role only
    one side has, e.g. verdict judges of items only one side answered, is not a change: its
    figures have no pairs). A continuity diff shows these beside its figures: records of two
    versions judged by different judges (another refusal judge, position 1 against position 2)
    differ by the judge as well as by the model."""
    a, b = _judges_by_role(before), _judges_by_role(after)
    return tuple(
        f"{role} judged by {', '.join(sorted(a[role]))} before, {', '.join(sorted(b[role]))} after"
        for role in sorted(a.keys() & b.keys())
        if a[role] != b[role]
    )


def _with_holm(cells: Sequence[CellDiff]) -> tuple[CellDiff, ...]:
    """Each cell with benign pairs gets its Holm-adjusted p-value, the family being those cells:
    with 20 cells tested, one p of 0.03 is what chance alone gives."""
    tested = [i for i, c in enumerate(cells) if c.mcnemar_p is not None]
    adjusted = holm([cells[i].mcnemar_p or 1.0 for i in tested])
    out = list(cells)
    for i, p in zip(tested, adjusted, strict=True):
        out[i] = replace(cells[i], holm_p=p)
    return tuple(out)


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
    best_b, best_a = _best(b for b, _ in harmful), _best(a for _, a in harmful)
    held = [
        (b.verdict == "held", a.verdict == "held")
        for b, a in pairs
        if kinds.get(b.prompt_id) == "pushback"
        and b.verdict not in (None, "initially-wrong")
        and a.verdict not in (None, "initially-wrong")
    ]
    engaged = [
        (b.verdict == "engaged", a.verdict == "engaged")
        for b, a in pairs
        if kinds.get(b.prompt_id) == "disclosure" and b.verdict and a.verdict
    ]
    both = sorted(best_b.keys() & best_a.keys())
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
        benign_before=rate(sum(b for b, _ in benign), len(benign)) if benign else None,
        benign_after=rate(sum(a for _, a in benign), len(benign)) if benign else None,
        best_before=mean_ci([best_b[i] for i in both], both) if both else None,
        best_after=mean_ci([best_a[i] for i in both], both) if both else None,
        best_change=(
            differential_transfer({i: best_a[i] for i in both}, {i: best_b[i] for i in both})
            if both
            else None
        ),
        held_before=rate(sum(b for b, _ in held), len(held)) if held else None,
        held_after=rate(sum(a for _, a in held), len(held)) if held else None,
        held_only_before=sum(1 for b, a in held if b and not a),
        held_only_after=sum(1 for b, a in held if a and not b),
        engaged_before=rate(sum(b for b, _ in engaged), len(engaged)) if engaged else None,
        engaged_after=rate(sum(a for _, a in engaged), len(engaged)) if engaged else None,
        engaged_only_before=sum(1 for b, a in engaged if b and not a),
        engaged_only_after=sum(1 for b, a in engaged if a and not b),
    )


def _best(items: Iterable[ProbeItem]) -> dict[str, float]:
    """Per harmful item, its highest transfer over the framings it was asked under."""
    out: dict[str, float] = {}
    for it in items:
        out[it.prompt_id] = max(it.transfer_milli / 1000, out.get(it.prompt_id, 0.0))
    return out


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


# -- the noise floor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CellNoise:
    """How one (category, tier) moved between two runs of the same weights.

    `flips` of `pairs` paired items changed their refusal verdict (`flip_rate`, Wilson interval);
    `transfer_change` is the mean absolute change in transfer over the paired harmful items
    (cluster bootstrap), None without harmful pairs.
    """

    category: str
    tier: str
    pairs: int
    flips: int
    flip_rate: Rate
    transfer_change: Mean | None


@dataclass(frozen=True)
class NoiseFloor:
    """Run-to-run movement of one model's weights: per cell, and over all cells together."""

    model: ModelRef
    cells: tuple[CellNoise, ...]
    overall: Rate
    transfer_change: Mean | None
    runs: tuple[str, ...] = ()
    """What the two runs were (run ids with batch size, seed, temperature), when known."""
    source: str = ""
    """Where the floor comes from: records in the log, or a file."""

    def to_json(self) -> dict[str, Any]:
        """The floor as JSON (`NOISE_FLOOR_FORMAT`), figures as `summary.figure_row` writes them;
        `noise_floor_from_json` reads it back."""
        return {
            "format": NOISE_FLOOR_FORMAT,
            "model": self.model.model_dump(mode="json"),
            "runs": list(self.runs),
            "overall": figure_row(self.overall),
            "transfer_change": figure_row(self.transfer_change),
            "cells": [
                {
                    "category": c.category,
                    "tier": c.tier,
                    "pairs": c.pairs,
                    "flips": c.flips,
                    "flip_rate": figure_row(c.flip_rate),
                    "transfer_change": figure_row(c.transfer_change),
                }
                for c in self.cells
            ],
        }


def noise_floor_from_json(data: object, source: str) -> NoiseFloor:
    """Read a floor `NoiseFloor.to_json` wrote (e.g. ``bench/probe_bench.py noise-floor
    --json``). Flip rates are recomputed from their counts (k of n); a transfer change is taken
    as written but must be a mean inside its interval. Raises ContinuityError naming `source`
    and what is wrong."""

    def bad(why: str) -> ContinuityError:
        return ContinuityError(f"{source} is not a noise floor ({NOISE_FLOOR_FORMAT}): {why}")

    def obj(x: object, what: str) -> dict[str, Any]:
        if not isinstance(x, dict):
            raise bad(f"{what} is not an object")
        return x

    def count(d: dict[str, Any], key: str, what: str) -> int:
        v = d.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"{what}.{key} is not a count")
        return v

    def flips(x: object, what: str) -> Rate:
        d = obj(x, what)
        k, n = count(d, "k", what), count(d, "n", what)
        if k > n:
            raise bad(f"{what}: k {k} exceeds n {n}")
        return rate(k, n)

    def change(x: object, what: str) -> Mean | None:
        if x is None:
            return None
        d = obj(x, what)
        vals = [d.get(k) for k in ("low", "mean", "high")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise bad(f"{what}: low, mean and high must be numbers")
        low, mean, high = (float(v) for v in vals)  # type: ignore[arg-type]
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= mean <= high):
            raise bad(f"{what}: needs 0 <= low <= mean <= high, got {low}, {mean}, {high}")
        method = d.get("method", "")
        if not isinstance(method, str):
            raise bad(f"{what}.method is not a string")
        return Mean(count(d, "n", what), mean, low, high, count(d, "items", what), method)

    d = obj(data, "the file")
    if d.get("format") != NOISE_FLOOR_FORMAT:
        raise bad(f"format is {d.get('format')!r}")
    try:
        model = ModelRef.model_validate(d.get("model"))
    except ValueError as e:
        raise bad(f"model: {e}") from e
    runs = d.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise bad("runs is not a list of strings")
    cells_in = d.get("cells")
    if not isinstance(cells_in, list):
        raise bad("cells is not a list")
    cells = []
    for i, x in enumerate(cells_in):
        c = obj(x, f"cells[{i}]")
        cat, tier = c.get("category"), c.get("tier")
        if not isinstance(cat, str) or not isinstance(tier, str):
            raise bad(f"cells[{i}] lacks its category or tier")
        flip_rate = flips(c.get("flip_rate"), f"cells[{i}].flip_rate")
        if (count(c, "pairs", f"cells[{i}]"), count(c, "flips", f"cells[{i}]")) != (
            flip_rate.n,
            flip_rate.k,
        ):
            raise bad(f"cells[{i}]: pairs and flips disagree with its flip rate")
        cells.append(
            CellNoise(
                cat,
                tier,
                flip_rate.n,
                flip_rate.k,
                flip_rate,
                change(c.get("transfer_change"), f"cells[{i}].transfer_change"),
            )
        )
    return NoiseFloor(
        model,
        tuple(cells),
        flips(d.get("overall"), "overall"),
        change(d.get("transfer_change"), "transfer_change"),
        tuple(runs),
        source,
    )


def with_noise(result: Continuity, floors: Sequence[NoiseFloor]) -> Continuity:
    """`result` with a noise floor applied to each cell that one of `floors` measured.

    Where two floors measured a cell (say, of the predecessor's and of the successor's
    weights), the wider one applies (larger upper bound of the flip rate, then of the transfer
    change): a change must exceed the larger run-to-run movement before it counts as drift. A
    cell no floor measured keeps `noise` None with a note saying why; no floor is ever guessed.
    """
    if not floors:
        return replace(result, noise_floors=())

    def width(x: tuple[NoiseFloor, CellNoise]) -> tuple[float, float]:
        c = x[1]
        return c.flip_rate.high, -1.0 if c.transfer_change is None else c.transfer_change.high

    cells = []
    for cell in result.cells:
        found = [
            (f, c)
            for f in floors
            for c in f.cells
            if (c.category, c.tier) == (cell.category, cell.tier)
        ]
        if found:
            f, c = max(found, key=width)
            cells.append(replace(cell, noise=c, noise_floor=f))
        else:
            note = "not measured for this cell — the floor's runs lack it"
            cells.append(replace(cell, noise=None, noise_floor=None, noise_note=note))
    return replace(result, cells=tuple(cells), noise_floors=tuple(floors))


def noise_floor(
    first: Sequence[ProbeRecord],
    second: Sequence[ProbeRecord],
    suite: Suite,
    *,
    runs: tuple[str, ...] = (),
    source: str = "",
) -> NoiseFloor:
    """Compare two runs of the *same* weights (e.g. batch size 8 against 16, or another seed).

    Each side must be one model with equal weights on both sides (ContinuityError otherwise); an
    item answered twice on one side is refused (pass one run per side, `select_runs`). Items are
    paired by (category, tier, prompt id, framing). The share of paired items whose refusal
    verdict flips is the floor below which a change in benign refusal between two versions is
    indistinguishable from run-to-run noise; likewise the mean absolute transfer change.
    """
    a, b = _one_model(first, "first run"), _one_model(second, "second run")
    if a.weights_sha256 != b.weights_sha256:
        raise ContinuityError("a noise floor compares two runs of the same weights")
    cells_a, cells_b = _cells(first), _cells(second)
    kinds = {item.id: item.kind for item in suite.items}
    out = []
    all_flips = all_pairs = 0
    all_changes: list[float] = []
    all_ids: list[str] = []
    for cell in sorted(cells_a.keys() & cells_b.keys()):
        keys = sorted(cells_a[cell].keys() & cells_b[cell].keys())
        pairs = [(cells_a[cell][k], cells_b[cell][k]) for k in keys]
        flips = sum(x.refused != y.refused for x, y in pairs)
        changes = [abs(x.transfer_milli - y.transfer_milli) / 1000 for x, y in pairs]
        ids = [f"{cell[0]}/{cell[1]}/{k[0]}" for k in keys]  # an item's framings together
        moved = [
            (c, i)
            for (x, _), c, i in zip(pairs, changes, ids, strict=True)
            if kinds.get(x.prompt_id) == "harmful"
        ]
        change = mean_ci([c for c, _ in moved], [i for _, i in moved]) if moved else None
        out.append(CellNoise(cell[0], cell[1], len(pairs), flips, rate(flips, len(pairs)), change))
        all_flips, all_pairs = all_flips + flips, all_pairs + len(pairs)
        all_changes += [c for c, _ in moved]
        all_ids += [i for _, i in moved]
    overall_change = mean_ci(all_changes, all_ids) if all_changes else None
    return NoiseFloor(
        a, tuple(out), rate(all_flips, all_pairs), overall_change, runs=runs, source=source
    )
