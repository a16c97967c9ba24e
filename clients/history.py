"""A model's behavioural history, from the statements the evidence log holds about it.

`fetch_statements` gets a model's statements through the SDK, each entry proved included in a
checkpoint the caller's trust policy accepts; `build_history` turns them into the history: per
version, category and tier the behaviour metrics of `clients.probe.summary` with the log indices
of the records behind them, and the continuity chain between versions, with what looks wrong
in it flagged (a version with two successors, a rollback).

`build_history` is pure: the CLI feeds it verified entries, the web page's server feeds it the
entries of its own database (and the browser checks their proofs).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attest.dsse import Envelope
from attest.errors import AttestError, PolicyError
from attest.policy import Policy
from attest.predicates import (
    CONTINUITY,
    PROBE_RECORD,
    ContinuityStatement,
    EvalSample,
    ModelRef,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import Statement, parse_statement
from clients.probe.continuity import (
    NOT_MEASURED,
    Continuity,
    ContinuityError,
    NoiseFloor,
    diff,
    repeat_floor,
    with_noise,
)
from clients.probe.suites import Suite, SuiteError, load_suite
from clients.probe.summary import GroupSummary, summarize
from clients.sdk import ClientError, LedgerClient, VerificationError
from clients.text import shown


@dataclass(frozen=True)
class LoggedStatement:
    """A statement of this project at `index` of the log `origin`.

    `verified` is True only when the entry's inclusion was proved under a checkpoint a trust
    policy accepted (`fetch_statements`); statements read from a server's own database are not.
    """

    index: int
    leaf_hash: bytes
    envelope: Envelope
    statement: Statement
    origin: str
    verified: bool = False
    tree_size: int = 0
    """The size of the tree the inclusion was proved in (0 when not verified)."""

    @property
    def signer(self) -> str:
        """The key name in the first signature's keyid: a key that verified, since a log
        refuses an envelope unless every signature verifies under the key its keyid names, and
        audit nodes re-check that rule on every entry (`attest.admission`)."""
        keyid = self.envelope.signatures[0].keyid if self.envelope.signatures else ""
        return keyid.split("+", 1)[0]


def parse_logged(
    index: int, data: bytes, origin: str, *, verified: bool = False, tree_size: int = 0
) -> LoggedStatement | None:
    """The statement in leaf data `data`, or None when the entry is not one of this project's."""
    from attest import merkle

    try:
        env = Envelope.from_json(data)
        stmt = parse_statement(env.payload)
    except (AttestError, ValueError):
        return None
    return LoggedStatement(index, merkle.leaf_hash(data), env, stmt, origin, verified, tree_size)


def _about(stmt: Statement, model: str, version: str | None) -> bool:
    pred = stmt.predicate
    refs: list[ModelRef] = []
    if isinstance(pred, ProbeRecord):
        refs = [pred.model]
    elif isinstance(pred, ContinuityStatement):
        refs = [pred.successor, pred.predecessor]
    elif isinstance(pred, EvalSample):  # imported eval logs (clients.inspect_import)
        return pred.model.name == model and version in (None, pred.model.version)
    return any(r.name == model and version in (None, r.version) for r in refs)


def fetch_statements(
    client: LedgerClient,
    log: str,
    policy: Policy,
    *,
    model: str,
    version: str | None = None,
    predicate_type: str | None = None,
) -> list[LoggedStatement]:
    """The probe records and continuity statements about `model` (optionally one `version`,
    one predicate type) in `log`, each proved included under one checkpoint `policy` accepts.

    The server's read index says where to look; what it points at is checked: an entry that is
    not a statement about `model` raises VerificationError (the index lied). An index that
    leaves entries out cannot be caught here; `bledger log verify` reads every entry.
    """
    types = [predicate_type] if predicate_type else [PROBE_RECORD, CONTINUITY]
    indices: set[int] = set()
    for t in types:
        hits = client.search(log, model=model, version=version, predicate_type=t)
        indices.update(h.index for h in hits)
        if t == CONTINUITY and version is not None:  # successions *from* this version too
            every = client.search(log, model=model, predicate_type=t)
            indices.update(h.index for h in every)
    origin = client.log_info(log).origin
    out = []
    for e in client.entries(log, sorted(indices), policy):
        logged = parse_logged(e.index, e.data, origin, verified=True, tree_size=e.checkpoint.size)
        if logged is None or not _about(logged.statement, model, None):
            raise VerificationError(
                f"the index of {log} names entry {e.index} for {model}, but it "
                "is not a statement about that model"
            )
        out.append(logged)
    return out


def policy_for(
    client: LedgerClient, log: str, policy_file: Path | None, vkey: str | None
) -> Policy:
    """The trust policy: a C2SP tlog-policy file, else `quorum none` around the pinned `vkey`,
    else around the key the server reports (which only shows the server is self-consistent:
    a warning says so on stderr)."""
    try:
        if policy_file is not None:
            return Policy.parse(policy_file.read_bytes())
        if vkey is None:
            vkey = client.log_info(log).vkey
            print(
                f"warning: trusting the key the server reports for {log} ({vkey}); "
                "pin it with --vkey or --policy",
                file=sys.stderr,
            )
        return Policy.parse(f"log {vkey}\nquorum none\n")
    except OSError as e:
        raise ClientError(f"cannot read policy {policy_file}: {e.strerror}") from e
    except PolicyError as e:
        raise ClientError(f"bad policy: {e.diagnostic}") from e


# -- the history ------------------------------------------------------------------------------


def headline_cells(s: GroupSummary) -> dict[str, str]:
    """The seed's headline pair as table cells (`clients.text.shown`: a number only when the
    interval is narrow enough, else "insufficient data (n=…)"): ``optimised_transfer`` with the
    search budget behind it (or the method, when no search ran) and ``paired_benign_refusal``
    on the same category's benign items."""
    h = s.headline
    how = h.budget if h.budget is not None else f"{h.method}, no search"
    return {
        "optimised_transfer": f"{shown(h.transfer)} ({how})",
        "paired_benign_refusal": shown(h.benign_refusal),
    }


def verdict_cells(s: GroupSummary) -> dict[str, str]:
    """The verdict figures as table cells: ``position_held`` on pushback items (with how many
    had no position to hold), ``disclosure_engaged`` with the referral-only and refused shares
    beside it, each naming its judge and version; "-" where the group has no such items."""
    out = {"position_held": "-", "disclosure_engaged": "-"}
    if s.position_held is not None:
        how = s.methods.get("position", "no verdicts")
        out["position_held"] = (
            f"{shown(s.position_held)} (judge {how}; capitulated {shown(s.capitulated)}; "
            f"{s.initially_wrong} initially wrong)"
        )
    if s.disclosure_engaged is not None:
        how = s.methods.get("disclosure", "no verdicts")
        out["disclosure_engaged"] = (
            f"{shown(s.disclosure_engaged)} (judge {how}; referral only "
            f"{shown(s.disclosure_referral_only)}; refused {shown(s.disclosure_refused)})"
        )
    return out


@dataclass(frozen=True)
class Row:
    """The behaviour of one (version, category, tier), and the records it was computed from."""

    summary: GroupSummary
    records: tuple[int, ...]
    verified: bool

    def display(self) -> dict[str, str]:
        """Each figure as the tables show it (`clients.text.shown`), the framed transfers and
        framed - direct as ``framing cell`` joined by ``; ``. The web page shows these strings,
        so the CLI's table and the page's cannot differ."""
        s = self.summary
        direct = s.direct_transfer
        diffs = []
        for f, m in s.differential_transfer.items():
            sides = (s.framed_transfer[f], direct) if f in s.framed_transfer and direct else None
            diffs.append(f"{f} {shown(m, sides=sides)}")
        return {
            **headline_cells(s),
            "benign_refusal": shown(s.benign_refusal),
            "direct_transfer": shown(direct),
            "framed_transfer": "; ".join(f"{f} {shown(m)}" for f, m in s.framed_transfer.items())
            or "-",
            "differential_transfer": "; ".join(diffs) or "-",
            **verdict_cells(s),
        }

    def to_json(self) -> dict[str, Any]:
        """The summary's flat view, plus `records` (log indices), `verified` and `display`."""
        out = self.summary.row()
        del out["model"]
        return {
            **out,
            "records": list(self.records),
            "verified": self.verified,
            "display": self.display(),
        }


@dataclass(frozen=True)
class Version:
    """A version of the model: its weights, suites and records (log indices), in log order."""

    version: str
    weights_sha256: str
    records: tuple[int, ...]


@dataclass(frozen=True)
class Succession:
    """A continuity statement: `to` succeeds `from_`, with the lab's diff."""

    index: int
    from_: str
    to: str
    signer: str
    statement: ContinuityStatement
    verified: bool
    flags: tuple[str, ...] = ()
    noise: tuple[str, ...] = ()
    """Per version (`from_`, then `to`), its noise floor measured from its records here (a
    second complete run of a cell with the same weights, `continuity.repeat_runs`), or that it
    was not measured. Not part of the signed statement."""

    def to_json(self) -> dict[str, Any]:
        """`index`, `from`, `to`, `signer`, `records`, `diff`, `flags`, `verified`,
        `noise_floor` (the lines of `noise`)."""
        s = self.statement
        records = [r.index for r in (*s.predecessor_records, *s.successor_records)]
        return {
            "index": self.index,
            "from": self.from_,
            "to": self.to,
            "signer": self.signer,
            "records": records,
            "diff": [d.model_dump(mode="json", exclude_none=True) for d in s.diff],
            "flags": list(self.flags),
            "verified": self.verified,
            "noise_floor": list(self.noise),
        }


@dataclass(frozen=True)
class History:
    """What the log shows about one model."""

    model: str
    origin: str
    size: int
    versions: tuple[Version, ...]
    rows: tuple[Row, ...]
    continuity: tuple[Succession, ...]
    flags: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The JSON the CLI (`--json`) and the web page show."""
        return {
            "model": self.model,
            "log": {"origin": self.origin, "size": self.size},
            "versions": [
                {
                    "version": v.version,
                    "weights_sha256": v.weights_sha256,
                    "records": list(v.records),
                }
                for v in self.versions
            ],
            "rows": [r.to_json() for r in self.rows],
            "continuity": [c.to_json() for c in self.continuity],
            "flags": list(self.flags),
        }


class HistoryError(ClientError):
    """The statements cannot make a history (e.g. a record's suite is unknown here)."""


def build_history(
    model: str,
    statements: Iterable[LoggedStatement],
    *,
    size: int = 0,
    suites: Mapping[tuple[str, str], Suite] | None = None,
) -> History:
    """The history of `model` from `statements` (others are ignored). `size` is the tree size
    they were read at; `suites` the probe suites by (name, version), default the shipped ones.
    """
    stmts = sorted(statements, key=lambda s: s.index)
    records = [s for s in stmts if isinstance(s.statement.predicate, ProbeRecord)]
    records = [s for s in records if _pred(s).model.name == model]
    origin = stmts[0].origin if stmts else ""
    versions = _versions(records)
    rows: list[Row] = []
    by_suite: dict[SuiteRef, list[LoggedStatement]] = defaultdict(list)
    for r in records:
        by_suite[_pred(r).suite].append(r)
    for ref, recs in sorted(by_suite.items(), key=lambda kv: kv[1][0].index):
        suite = _suite(ref, suites)
        for summary in summarize([_pred(r) for r in recs], suite):
            used = [r for r in recs if _cell(_pred(r)) == _cell_of(summary)]
            rows.append(Row(summary, tuple(r.index for r in used), all(r.verified for r in used)))
    order = {v.version: i for i, v in enumerate(versions)}
    rows.sort(key=lambda r: (order[r.summary.version], r.summary.category, r.summary.tier))
    chain, flags = _continuity(model, stmts, versions)
    chain = tuple(
        dataclasses.replace(
            c, noise=(*_noise_floor(c.from_, records, suites), *_noise_floor(c.to, records, suites))
        )
        for c in chain
    )
    return History(model, origin, size, tuple(versions), tuple(rows), chain, flags)


def _pred(s: LoggedStatement) -> ProbeRecord:
    pred = s.statement.predicate
    assert isinstance(pred, ProbeRecord)
    return pred


def _cell(p: ProbeRecord) -> tuple[str, str, str]:
    return (p.model.version, p.category, p.tier)


def _cell_of(g: GroupSummary) -> tuple[str, str, str]:
    return (g.version, g.category, g.tier)


def _versions(records: Sequence[LoggedStatement]) -> list[Version]:
    seen: dict[str, tuple[str, list[int]]] = {}
    for r in records:
        m = _pred(r).model
        weights, indices = seen.setdefault(m.version, (m.weights_sha256, []))
        if weights != m.weights_sha256:
            raise HistoryError(
                f"version {m.version} of {m.name} names two weights: {weights[:16]}… and "
                f"{m.weights_sha256[:16]}… (entry {r.index})"
            )
        indices.append(r.index)
    return [Version(v, w, tuple(ix)) for v, (w, ix) in seen.items()]


def _suite(ref: SuiteRef, suites: Mapping[tuple[str, str], Suite] | None) -> Suite:
    found = (suites or {}).get((ref.name, ref.version))
    if found is None:
        try:
            found = load_suite(f"{ref.name}@{ref.version}")
        except SuiteError as e:
            raise HistoryError(f"records use suite {ref.name}@{ref.version}: {e}") from e
    if found.digest != ref.sha256:
        raise HistoryError(
            f"suite {ref.name}@{ref.version} here has SHA-256 {found.digest}, the records name "
            f"{ref.sha256}: item kinds cannot be trusted"
        )
    return found


def _continuity(
    model: str, stmts: Sequence[LoggedStatement], versions: Sequence[Version]
) -> tuple[tuple[Succession, ...], tuple[str, ...]]:
    """The successions of `model`, in log order, with flags: a version that got a second,
    different successor, and a rollback (a successor that is already an ancestor of, or has
    the same weights as an ancestor of, its predecessor)."""
    successors: dict[str, list[tuple[str, int]]] = defaultdict(list)
    parents: dict[str, set[str]] = defaultdict(set)
    weights_of = {v.version: v.weights_sha256 for v in versions}
    chain: list[Succession] = []
    flags: list[str] = []
    for s in stmts:
        pred = s.statement.predicate
        if not isinstance(pred, ContinuityStatement) or pred.successor.name != model:
            continue
        old, new = pred.predecessor.version, pred.successor.version
        # The statement names the predecessor's weights: known even without its records.
        weights_of.setdefault(old, pred.predecessor.weights_sha256)
        mine: list[str] = []
        others = [(v, i) for v, i in successors[old] if v != new]
        if others:
            earlier = ", ".join(f"{v} (index {i})" for v, i in others)
            mine.append(f"second successor: {old} already has {earlier}")
        ancestors = _ancestors(old, parents)
        same_weights = [
            a for a in ancestors if weights_of.get(a, "") == pred.successor.weights_sha256
        ]
        if new in ancestors or new == old or same_weights:
            back_to = new if new in ancestors or new == old else same_weights[0]
            mine.append(f"rollback: {new} returns to {back_to}, an ancestor of {old}")
        successors[old].append((new, s.index))
        parents[new].add(old)
        chain.append(Succession(s.index, old, new, s.signer, pred, s.verified, tuple(mine)))
        flags.extend(f"index {s.index}: {f}" for f in mine)
    return tuple(chain), tuple(flags)


def _noise_floor(
    version: str,
    records: Sequence[LoggedStatement],
    suites: Mapping[tuple[str, str], Suite] | None,
) -> list[str]:
    """A line per suite `version` was probed with: the noise floor of two complete runs of the
    same weights among its `records` (in log order), or that there is none."""
    mine = [_pred(r) for r in records if _pred(r).model.version == version]
    if not mine:
        return [f"noise floor of {version}: not measured — no probe records of it here"]
    by_suite: dict[SuiteRef, list[ProbeRecord]] = defaultdict(list)
    for p in mine:
        by_suite[p.suite].append(p)
    lines = []
    for ref, recs in by_suite.items():
        measured = repeat_floor(recs, _suite(ref, suites))
        if measured is None:
            lines.append(f"noise floor of {version}: {NOT_MEASURED}")
            continue
        f = measured[0]
        o, t = f.overall, f.transfer_change
        change = "-" if t is None else f"{t.mean:.3f} (upper bound {t.high:.3f}, n={t.n})"
        lines.append(
            f"noise floor of {version} ({ref.name}-{ref.version}): {' vs '.join(f.runs)}; "
            f"refusal flips {o.k} of {o.n} (upper bound {o.high:.3f}), "
            f"|transfer change| {change}"
        )
    return lines


@dataclass(frozen=True)
class SuccessionNoise:
    """A succession's diff recomputed from the records its statement names, with the noise
    floors of both versions applied per cell, as `bledger lab continuity` applies them
    (`continuity.with_noise`); `result` is None when it cannot be recomputed (`note` says why).
    `records` are the log indices of the runs each floor compares. Not part of the signed
    statement: the server's arithmetic on records the reader can check."""

    result: Continuity | None
    note: str = ""
    records: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """`cells` (per (category, tier): `text`, the lab command's noise-floor cell, and
        `noise_floor`, `CellDiff.noise_row`), `records`, `note`."""
        cells = [] if self.result is None else self.result.cells
        return {
            "cells": [
                {
                    "category": c.category,
                    "tier": c.tier,
                    "text": c.noise_text(),
                    "noise_floor": c.noise_row(),
                }
                for c in cells
            ],
            "records": list(self.records),
            "note": self.note,
        }


def succession_noise(
    succession: Succession,
    statements: Iterable[LoggedStatement],
    suites: Mapping[tuple[str, str], Suite] | None = None,
) -> SuccessionNoise:
    """The diff of `succession` recomputed (`continuity.diff`) from the records its statement
    names, found among `statements` by index and leaf hash, with a noise floor per version
    where its records here hold a second complete run of a cell with the same weights and the
    diff's suite (`repeat_runs`, `noise_floor`): the steps (2)-(3) of `bledger lab continuity`
    on the records the lab cited instead of the latest runs."""
    s = succession.statement
    by_index = {x.index: x for x in statements if isinstance(x.statement.predicate, ProbeRecord)}
    sides = []
    for refs in (s.predecessor_records, s.successor_records):
        found = [by_index.get(r.index) for r in refs]
        if not refs or any(
            x is None or (x.origin, x.leaf_hash.hex()) != (r.origin, r.leaf_hash)
            for x, r in zip(found, refs, strict=True)
        ):
            return SuccessionNoise(None, "not judged — the records it names are not all here")
        sides.append([_pred(x) for x in found if x is not None])
    floors: list[NoiseFloor] = []
    used: list[int] = []
    try:  # a diff or a floor the records cannot make (e.g. an item answered twice) is said so
        result = diff(sides[0], sides[1], _suite(sides[0][0].suite, suites))
        for ref in (s.predecessor, s.successor):
            mine = sorted(
                (
                    x
                    for x in by_index.values()
                    if (_pred(x).model, _pred(x).suite) == (ref, result.suite)
                ),
                key=lambda x: x.index,
            )
            measured = repeat_floor(
                [_pred(x) for x in mine],
                _suite(result.suite, suites),
                source=f"records of {ref.name}@{ref.version} in the log",
            )
            if measured is None:
                continue
            floors.append(measured[0])
            used += [mine[i].index for i in (*measured[1].first, *measured[1].second)]
    except ContinuityError as e:
        return SuccessionNoise(None, f"not judged — {e}")
    return SuccessionNoise(with_noise(result, floors), "", tuple(sorted(used)))


def _ancestors(version: str, parents: Mapping[str, set[str]]) -> set[str]:
    out: set[str] = set()
    todo = [version]
    while todo:
        for p in parents.get(todo.pop(), set()):
            if p not in out:
                out.add(p)
                todo.append(p)
    return out


def models(statements: Iterable[LoggedStatement]) -> list[dict[str, Any]]:
    """The models the statements' probe records are about: `{"model", "versions"}`, sorted."""
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for s in sorted(statements, key=lambda s: s.index):
        pred = s.statement.predicate
        if isinstance(pred, ProbeRecord):
            found[pred.model.name][pred.model.version] = None
    return [{"model": m, "versions": list(v)} for m, v in sorted(found.items())]
