"""`bledger lab continuity`: a lab's signed statement that MODEL@v2 succeeds MODEL@v1.

    bledger lab continuity --from MODEL@v1 --to MODEL@v2 --key LAB.pem --ledger URL \\
        [--log evidence] [--policy FILE | --vkey VKEY] [--suite-file FILE] \\
        [--noise-floor FILE] [--json]

Plan (each step tagged in `_continuity`):
1. the trust policy (`--policy`, else `--vkey`, else the key the server reports, with a
   warning), and the probe records of both versions, each proved included under a checkpoint
   the policy accepts (`clients.history.fetch_statements`);
2. per (category, tier) the latest complete run of each version (`select_runs`; every part of
   it), all probed with one suite (name, version, digest), which is loaded: `--suite-file`, or
   the shipped file of that name and version, and its digest must be the records';
3. the diff (`clients.probe.continuity.diff`) with a noise floor per cell where one was
   measured (`with_noise`): from a second complete run of the same weights among either
   version's records (`repeat_runs`, e.g. a re-run at another batch size or seed), and from
   `--noise-floor` (the JSON `bench/probe_bench.py noise-floor --json` writes); without either
   a cell says "noise floor: not measured — one run of these weights". Printed as a table (or
   JSON). The signed statement carries the diff only, not the floor;
4. the ContinuityStatement: both models as the records name them (weights included), a
   LogEntryRef to every record used, the diff, and the anti-backdating fields (the latest
   checkpoint the policy accepts, the clock); signed with the lab key, posted, and its
   tlog-proof verified with the policy's log key before the index and the proof are printed.

The log admits it only from a lab key valid at its index, and only when every entry it cites
is a probe record of that model below its index (docs/identity.md); audit nodes re-check that.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from attest.note import NoteVerifier
from attest.policy import Policy
from attest.predicates import (
    PROBE_RECORD,
    CheckpointRef,
    ContinuityStatement,
    LogEntryRef,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import sign_statement
from clients.errors import diagnosed
from clients.history import LoggedStatement, fetch_statements
from clients.options import LedgerArgs
from clients.probe.continuity import (
    NOT_MEASURED,
    CellDiff,
    Continuity,
    ContinuityError,
    NoiseFloor,
    diff,
    noise_floor_from_json,
    repeat_floor,
    select_runs,
    with_noise,
)
from clients.probe.suites import Suite, load_suite, suite_path
from clients.sdk import ClientError, LedgerClient, Submitted
from clients.text import aligned
from clients.trust import trust_options, trusted_client

__all__ = ["format_table", "lab"]


class LabError(ClientError):
    """The records do not allow a continuity statement (none, mixed suites, wrong suite file)."""


@click.group()
def lab() -> None:
    """What labs publish: continuity evidence between model versions."""


def _model_at(value: str) -> tuple[str, str]:
    name, at, version = value.rpartition("@")
    if not at or not name or not version:
        raise click.BadParameter(f"{value!r} is not MODEL@VERSION")
    return name, version


@lab.command("continuity")
@click.option("--from", "from_", required=True, help="The predecessor, MODEL@VERSION.")
@click.option("--to", "to", required=True, help="The successor, MODEL@VERSION.")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The lab's signing key (PKCS#8 PEM), registered as a lab key in the log.",
)
@click.option("--key-name", help="Key name used in the keyid (default: the file stem).")
@click.option("--passphrase-env", help="Environment variable holding the key's passphrase.")
@trust_options
@click.option(
    "--suite-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The suite file the records were probed with (default: the shipped one).",
)
@click.option(
    "--noise-floor",
    "noise_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A noise floor to judge the changes against (bench/probe_bench.py noise-floor --json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the diff and the result as JSON.")
@diagnosed
def continuity(
    from_: str,
    to: str,
    key: Path,
    key_name: str | None,
    passphrase_env: str | None,
    ledger: str,
    log_name: str,
    policy_file: Path | None,
    vkey: str | None,
    witness_urls: tuple[str, ...],
    suite_file: Path | None,
    noise_file: Path | None,
    as_json: bool,
) -> None:
    """Sign and log that the model --to succeeds --from, with the behaviour diff of their
    logged probe records per category and tier."""
    before, after = _model_at(from_), _model_at(to)
    given = _noise_file(noise_file) if noise_file is not None else None
    signer = LedgerArgs(ledger, log_name, key, key_name, passphrase_env, vkey).signer()
    with trusted_client(ledger, log_name, policy_file, vkey, witness_urls) as (  # (1)
        client,
        policy,
    ):
        result, used, notes = _continuity(
            client, log_name, policy, before, after, suite_file, given
        )
        for note in notes:
            click.echo(f"note: {note}", err=True)
        if not as_json:
            click.echo(format_table(result, used))
        submitted = _sign_and_post(client, log_name, policy, result, used, signer)  # (4)
    state = "already present at" if submitted.duplicate else "included at"
    click.echo(
        f"{state} index {submitted.index}; proof verified against tree size "
        f"{submitted.checkpoint.size}",
        err=True,
    )
    if as_json:
        out = _json(result, used, notes)
        out.update(
            index=submitted.index, duplicate=submitted.duplicate, tlog_proof=submitted.tlog_proof
        )
        click.echo(json.dumps(out, indent=2))
    else:
        sys.stdout.write(submitted.tlog_proof)


Used = tuple[list[LoggedStatement], list[LoggedStatement]]
"""The logged records a diff was computed from: (predecessor's, successor's)."""


def _continuity(
    client: LedgerClient,
    log: str,
    policy: Policy,
    before: tuple[str, str],
    after: tuple[str, str],
    suite_file: Path | None,
    given: NoiseFloor | None = None,
) -> tuple[Continuity, Used, list[str]]:
    """Steps (1)-(3): the verified records of both versions, the runs used, the diff, with the
    noise floors measured from the records and `given`."""
    notes: list[str] = []
    sides = []
    everything = []
    for role, (name, version) in (("predecessor", before), ("successor", after)):
        found = _records(client, log, policy, name, version)  # (1)
        if not found:
            raise LabError(f"the log holds no verified probe record of {name}@{version}")
        selection = select_runs([_record(s) for s in found])  # (2)
        notes += [f"{name}@{version}: {n}" for n in selection.notes]
        used = [found[i] for i in selection.used]
        if not used:
            raise LabError(f"no complete probe run of {name}@{version} ({role})")
        sides.append(used)
        everything.append((f"{name}@{version}", [_record(s) for s in found]))
    suite = _suite([_record(s) for side in sides for s in side], suite_file)
    before_records, after_records = ([_record(s) for s in side] for side in sides)
    result = diff(before_records, after_records, suite)  # (3)
    floors = []
    for label, records in everything:
        # Only runs with the suite of the diff: a floor over other prompts is not this one's.
        same_suite = [r for r in records if r.suite == result.suite]
        measured = repeat_floor(same_suite, suite, source=f"records of {label} in the log")
        if measured is None:
            notes.append(f"noise floor of {label}: {NOT_MEASURED}")
            continue
        floors.append(measured[0])
    if given is not None:
        weights = {result.predecessor.weights_sha256, result.successor.weights_sha256}
        if given.model.weights_sha256 not in weights:
            notes.append(
                f"the noise floor in {given.source} is of other weights "
                f"({given.model.weights_sha256[:12]}…) than either version's"
            )
        floors.append(given)
    result = with_noise(result, floors)
    for cells, only in ((result.only_before, before), (result.only_after, after)):
        for category, tier in cells:
            notes.append(f"({category}, {tier}) was probed only on {only[0]}@{only[1]}")
    if not result.cells:
        raise LabError("the two versions share no (category, tier): nothing to compare")
    return result, (sides[0], sides[1]), notes


def _noise_file(path: Path) -> NoiseFloor:
    """The noise floor in `path` (`noise_floor_from_json`); a LabError naming the file when it
    is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LabError(f"cannot read the noise floor {path}: {e}") from e
    try:
        return noise_floor_from_json(data, str(path))
    except ContinuityError as e:
        raise LabError(str(e)) from e


def _records(
    client: LedgerClient, log: str, policy: Policy, name: str, version: str
) -> list[LoggedStatement]:
    """The verified probe records of `name`@`version`, in log order (the read index is only a
    hint: what it points at is checked again here)."""
    found = fetch_statements(
        client, log, policy, model=name, version=version, predicate_type=PROBE_RECORD
    )
    return sorted(
        (
            s
            for s in found
            if isinstance(s.statement.predicate, ProbeRecord)
            and (s.statement.predicate.model.name, s.statement.predicate.model.version)
            == (name, version)
        ),
        key=lambda s: s.index,
    )


def _record(s: LoggedStatement) -> ProbeRecord:
    pred = s.statement.predicate
    assert isinstance(pred, ProbeRecord)  # `_records` keeps nothing else
    return pred


def _suite(records: Sequence[ProbeRecord], suite_file: Path | None) -> Suite:
    """The one suite every record was probed with, loaded and checked against its digest."""
    refs = sorted({r.suite for r in records}, key=lambda s: (s.name, s.version, s.sha256))
    if len(refs) != 1:
        raise LabError(
            "the records were probed with different suites: " + ", ".join(map(_show, refs))
        )
    (ref,) = refs
    suite = load_suite(path=suite_file or suite_path(ref.name, ref.version))
    if (suite.name, suite.version, suite.digest) != (ref.name, ref.version, ref.sha256):
        raise LabError(
            f"the records were probed with suite {_show(ref)}; the file "
            f"{suite_file or suite_path(ref.name, ref.version)} is "
            f"{_show(SuiteRef(name=suite.name, version=suite.version, sha256=suite.digest))}: "
            "pass the suite file they were probed with (--suite-file)"
        )
    return suite


def _show(s: SuiteRef) -> str:
    return f"{s.name}-{s.version} ({s.sha256[:12]}…)"


def _refs(records: Sequence[LoggedStatement]) -> tuple[LogEntryRef, ...]:
    return tuple(
        LogEntryRef(origin=s.origin, index=s.index, leaf_hash=s.leaf_hash.hex()) for s in records
    )


def _sign_and_post(
    client: LedgerClient,
    log: str,
    policy: Policy,
    result: Continuity,
    used: Used,
    signer: tuple[str, Any],
) -> Submitted:
    """(4): build, show, sign and post the statement; the tlog-proof is verified on return."""
    origin = client.log_info(log).origin
    cp, _ = client.verified_checkpoint(log, policy)
    statement = ContinuityStatement(
        seen_checkpoint=CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex()),
        issued_at=int(time.time()),
        predecessor=result.predecessor,
        successor=result.successor,
        predecessor_records=_refs(used[0]),
        successor_records=_refs(used[1]),
        diff=result.behaviour_diffs(),
    )
    env = sign_statement(statement, [signer])
    click.echo(f"signing as {signer[0]}:", err=True)
    click.echo(env.payload.decode(), err=True)
    return client.submit(log, env, _log_key(policy, origin), origin)


def _log_key(policy: Policy, origin: str) -> NoteVerifier:
    for entry in policy.logs:
        if entry.origin == origin:
            return entry.verifier
    raise LabError(f"the trust policy names no log with origin {origin!r}")


# -- output -------------------------------------------------------------------------------------


def _rate(before: float | None, after: float | None) -> str:
    return "-" if before is None or after is None else f"{before:.2f} -> {after:.2f}"


def _refusal(c: CellDiff) -> str:
    if c.benign_pairs == 0:
        return "-"
    fewer, more = c.refused_only_before, c.refused_only_after
    return f"{_rate(c.refusal_before, c.refusal_after)} (-{fewer} +{more})"


def _p(c: CellDiff) -> str:
    p = c.mcnemar_p
    return "-" if p is None else f"{p:.3f}"


def _distance(c: CellDiff) -> str:
    d = c.emotion_distance
    return "-" if d is None else f"{d:.3f} ({c.shared_emotions})"


COLUMNS = (
    ("category", lambda c: c.category),
    ("tier", lambda c: c.tier),
    ("pairs b/d/f", lambda c: f"{c.benign_pairs}/{c.direct_pairs}/{c.framed_pairs}"),
    ("benign refusal", _refusal),
    ("McNemar p", _p),
    ("direct transfer", lambda c: _rate(c.direct_before, c.direct_after)),
    ("framed transfer", lambda c: _rate(c.framed_before, c.framed_after)),
    ("emotion distance (n)", _distance),
    ("position held", lambda c: c.verdict_change("position")),
    ("disclosure engaged", lambda c: c.verdict_change("disclosure")),
    ("noise floor", lambda c: c.noise_text()),
)
"""The table's columns: header and cell text of a CellDiff."""


def format_table(result: Continuity, used: Used) -> str:
    """The diff as a plain-text table: per (category, tier) the paired counts (benign, direct,
    framed), benign refusal before -> after with the discordant pairs and the exact McNemar p,
    direct and framed transfer before -> after, and the emotion-profile distance."""
    b, a = result.predecessor, result.successor
    header = [name for name, _ in COLUMNS]
    body = [[fn(c) for _, fn in COLUMNS] for c in result.cells]
    lines = [
        f"{b.name}@{b.version} -> {a.name}@{a.version}, suite {_show(result.suite)}, "
        f"{len(used[0])} + {len(used[1])} records",
        *aligned(header, body),
    ]
    for f in result.noise_floors:
        change = "-" if f.transfer_change is None else f"{f.transfer_change.high:.3f}"
        lines.append(
            f"noise floor of {f.model.name}@{f.model.version} ({f.source}): "
            f"{' vs '.join(f.runs) or 'runs not named'}; refusal flips {f.overall.k} of "
            f"{f.overall.n} (upper bound {f.overall.high:.3f}), |transfer change| upper bound "
            f"{change}"
        )
    lines += [
        f"judges differ: {change} (a change in these figures may be the judge's, not the model's)"
        for change in result.judge_changes
    ]
    if not result.noise_floors:
        lines.append("noise floor: not measured — one run of these weights")
    else:
        lines.append(
            "within noise: |change in benign refusal| <= the floor's flip-rate upper bound and "
            "|change in best transfer| <= its transfer-change upper bound"
        )
    return "\n".join(lines)


def _json(result: Continuity, used: Used, notes: Sequence[str]) -> dict[str, Any]:
    return {
        "predecessor": result.predecessor.model_dump(mode="json"),
        "successor": result.successor.model_dump(mode="json"),
        "suite": result.suite.model_dump(mode="json"),
        "predecessor_records": [s.index for s in used[0]],
        "successor_records": [s.index for s in used[1]],
        "cells": [{**c.row(), "noise_floor": c.noise_row()} for c in result.cells],
        "noise_floors": [f.to_json() | {"source": f.source} for f in result.noise_floors],
        "only_before": [list(c) for c in result.only_before],
        "only_after": [list(c) for c in result.only_after],
        "verdict_methods": list(result.verdict_methods),
        "judge_changes": list(result.judge_changes),
        "notes": list(notes),
    }
