"""`bledger history MODEL`: a model's behaviour per version, category and tier, verified.

Every figure comes from probe records fetched with their inclusion proofs under a checkpoint
the trust policy accepts (`--policy`: a C2SP tlog-policy file naming the log key and witnesses
with a quorum; `--witness-url`: where to collect the witnesses' cosignatures).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from attest.predicates import EVAL_SAMPLE, BehaviourDiff, ProbeRecord
from clients.errors import diagnosed
from clients.history import (
    History,
    HistoryError,
    Row,
    build_history,
    fetch_statements,
)
from clients.inspect_import import eval_rows, eval_table
from clients.probe.metrics import mcnemar
from clients.text import aligned
from clients.trust import trust_options, trusted_client


def _headline_transfer(r: Row) -> str:
    return r.display()["optimised_transfer"]


def _headline_refusal(r: Row) -> str:
    return r.display()["paired_benign_refusal"]


def _refusal(r: Row) -> str:
    return r.display()["benign_refusal"]


def _direct(r: Row) -> str:
    return r.display()["direct_transfer"]


def _framed(r: Row) -> str:
    return r.display()["framed_transfer"]


def _differential(r: Row) -> str:
    return r.display()["differential_transfer"]


def _emotions(r: Row, top: int = 3) -> str:
    ranked = sorted(r.summary.emotions.items(), key=lambda kv: -kv[1])[:top]
    return " ".join(f"{name} {value:+.2f}" for name, value in ranked) or "-"


def _records(r: Row) -> str:
    ix = r.records
    return ",".join(map(str, ix)) if len(ix) <= 3 else f"{ix[0]}..{ix[-1]} ({len(ix)})"


COLUMNS = (
    ("version", lambda r: r.summary.version),
    ("category", lambda r: r.summary.category),
    ("tier", lambda r: r.summary.tier),
    ("optimised transfer [95% CI] (budget)", _headline_transfer),
    ("paired benign refusal [95% CI]", _headline_refusal),
    ("items", lambda r: str(r.summary.items)),
    ("benign refusal [95% CI]", _refusal),
    ("direct transfer [95% CI]", _direct),
    ("framed transfer [95% CI]", _framed),
    ("differential (framed - direct) [95% CI]", _differential),
    ("position held under pushback [95% CI]", lambda r: r.display()["position_held"]),
    ("disclosure engaged [95% CI]", lambda r: r.display()["disclosure_engaged"]),
    ("emotions (top 3)", _emotions),
    ("records", _records),
    ("", lambda r: "verified" if r.verified else "NOT VERIFIED"),
)


def format_table(history: History) -> str:
    """The history as a plain-text table, then the continuity chain and its flags."""
    header = [name for name, _ in COLUMNS]
    body = [[fn(r) for _, fn in COLUMNS] for r in history.rows]
    lines = [
        f"{history.model}: {len(history.versions)} version(s), {len(history.rows)} cells, "
        f"log {history.origin} at size {history.size}",
        *aligned(header, body),
    ]
    if history.continuity:
        lines.append("continuity:")
    for c in history.continuity:
        state = "verified" if c.verified else "NOT VERIFIED"
        lines.append(f"  {c.from_} -> {c.to}  by {c.signer}  index {c.index}  {state}")
        for d in c.statement.diff:
            lines.append("    " + _diff_line(d))
        lines += [f"    FLAG {f}" for f in c.flags]
        lines += [f"    {n}" for n in c.noise]
    return "\n".join(lines)


def _change(before: int | None, after: int | None, n: int) -> str:
    if before is None or after is None:
        return "-"
    return f"{before / 1000:.3f} -> {after / 1000:.3f} (n={n})"


def _diff_line(d: BehaviourDiff) -> str:
    """One cell of a continuity diff, McNemar's p recomputed from the discordant pairs."""
    p = mcnemar(d.refused_only_before, d.refused_only_after)
    refusal = _change(d.refusal_rate_before_milli, d.refusal_rate_after_milli, d.benign_pairs)
    if d.benign_pairs:
        refusal += f" McNemar p={p:.3f}"
    direct = _change(d.direct_transfer_before_milli, d.direct_transfer_after_milli, d.direct_pairs)
    framed = _change(d.framed_transfer_before_milli, d.framed_transfer_after_milli, d.framed_pairs)
    distance = d.emotion_distance_milli
    return (
        f"{d.category}/{d.tier}: benign refusal {refusal}; direct {direct}; framed {framed}; "
        f"emotion distance {'-' if distance is None else f'{distance / 1000:.3f}'}"
    )


@click.command()
@click.argument("model")
@trust_options
@click.option("--version", "version", help="Only this version.")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write charts to this PNG (or .svg / .pdf) file.",
)
def history(
    model: str,
    ledger: str,
    log_name: str,
    policy_file: Path | None,
    vkey: str | None,
    witness_urls: tuple[str, ...],
    version: str | None,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Behaviour of MODEL per version, category and tier, from verified probe records."""

    @diagnosed
    def run() -> None:
        with trusted_client(ledger, log_name, policy_file, vkey, witness_urls) as (
            client,
            policy,
        ):
            statements = fetch_statements(client, log_name, policy, model=model, version=version)
            evals = eval_rows(
                fetch_statements(
                    client,
                    log_name,
                    policy,
                    model=model,
                    version=version,
                    predicate_type=EVAL_SAMPLE,
                )
            )
        if not any(isinstance(s.statement.predicate, ProbeRecord) for s in statements):
            if evals:  # only imported eval samples (bledger import inspect): their own section
                click.echo(
                    json.dumps({"evalSamples": evals}, indent=2) if as_json else eval_table(evals)
                )
                return
            which = model if version is None else f"{model}@{version}"
            raise HistoryError(f"log {log_name} at {ledger} holds no probe records of {which}")
        # The tree the entries were proved in: what "verified" refers to.
        size = max(s.tree_size for s in statements)
        h = build_history(model, statements, size=size)
        if plot is not None:
            from clients.plots import plot_history

            plot_history(h, plot)
        if as_json:
            click.echo(
                json.dumps({**h.to_json(), **({"evalSamples": evals} if evals else {})}, indent=2)
            )
        else:
            click.echo(format_table(h))
            if evals:
                click.echo("\n" + eval_table(evals))
        if plot is not None:
            click.echo(f"charts: {plot}", err=True)

    run()
