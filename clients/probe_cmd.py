"""`bledger probe`: run a probing worker, replay a logged record, or work a PostgreSQL job queue.

Three modes, one command (wired into `clients.cli.main`):

* ``bledger probe --model M --suite S --ledger URL --key WORKER.pem`` — probe and log records
  (``--backend openai --endpoint URL --model NAME``: a model behind an OpenAI-compatible API;
  ``--backend vllm``: a local directory loaded into vLLM on a GPU);
* ``bledger probe --replay INDEX --ledger URL`` — re-run a logged record with the settings it
  records (decoding, device, dtype, endpoint), report what reproduced and what differs;
* ``bledger probe --queue DB_URL --enqueue --model M --suite S`` — add jobs, one per (category,
  tier); ``bledger probe --queue DB_URL --ledger URL --key WORKER.pem`` — claim, run, complete.

Errors print their `diagnostic` and exit non-zero; a replay that does not reproduce exits 1.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clients.errors import diagnosed
from clients.options import LedgerArgs
from clients.probe import DEFAULT_MODEL

if TYPE_CHECKING:
    from clients.probe.model import LoadedModel

__all__ = ["REFUSAL_JUDGE_CHOICES", "probe"]

REFUSAL_JUDGE_CHOICES = ("learned", "hidden-probe")
"""`clients.probe.worker.REFUSAL_JUDGES`, spelt out so that ``--help`` does not import the
worker (torch); a test keeps the two equal."""


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise click.BadParameter("give at least one name")
    return names


@click.command("probe")
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Model spec or directory; with --backend openai, the model id to ask the endpoint for.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "openai", "vllm"]),
    default="local",
    show_default=True,
    help="What answers: local weights (transformers), an OpenAI-compatible endpoint, or vLLM.",
)
@click.option("--endpoint", help="With --backend openai: the API base URL, e.g. http://h:p/v1.")
@click.option(
    "--api-key-env", help="With --backend openai: environment variable holding the API key."
)
@click.option(
    "--timeout",
    "timeout_s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="With --backend openai: seconds without an answer before a request times out.",
)
@click.option(
    "--requests-per-second",
    type=click.FloatRange(min=0.001),
    help="With --backend openai: space requests to at most this rate.",
)
@click.option(
    "--temperature",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 10.0),
    help="0 is greedy; above 0 samples, seeded by --seed.",
)
@click.option("--version", default="v1", show_default=True, help="Version label of the model.")
@click.option("--suite", default="core", show_default=True, help="Suite name, NAME@VERSION.")
@click.option(
    "--suite-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Suite file."
)
@click.option("--categories", help="Comma-separated categories (default: all).")
@click.option("--tiers", help="Comma-separated tiers, e.g. anonymous,medical (default: all).")
@click.option("--ledger", help="Server URL, e.g. http://127.0.0.1:8080")
@click.option("--log", "log_name", default="evidence", show_default=True)
@click.option("--vkey", help="Pin the log's verifier key (default: trust what the server says).")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The worker's signing key (PKCS#8 PEM), certified by a lab key.",
)
@click.option("--key-name", help="Key name used in the keyid (default: the file stem).")
@click.option("--passphrase-env", help="Environment variable holding the key's passphrase.")
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: auto; a replay: the record's).")
@click.option("--dtype", help="float32, bfloat16 or float16 (default: per device; replay: record).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="[default: 8; a replay: the record's]"
)
@click.option(
    "--max-new-tokens", type=click.IntRange(min=1), help="[default: 128; a replay: the record's]"
)
@click.option("--seed", type=click.IntRange(min=0), help="[default: 0; a replay: the record's]")
@click.option(
    "--attack",
    help="Budgeted adversarial search on each harmful item: corpus, pair or corpus,pair.",
)
@click.option(
    "--budget",
    help="With --attack, per item: demo, gpu-30min or queries=Q,tokens=T,seconds=S "
    "(also corpus=, rounds=, branches=, items=N|all) [default: demo; a replay: the "
    "record's, these terms overriding it].",
)
@click.option(
    "--refusal-judge",
    type=click.Choice(REFUSAL_JUDGE_CHOICES),
    help="The judge of each answer's refusal and of the rubric's P(refused): learned, or "
    "hidden-probe (a probe on the bundled SmolLM2's hidden states, whatever model is probed; "
    "loads that model unless it is the one probed) [default: learned; a replay: the record's].",
)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Probe data directory: runs, calibrations (default: $BLEDGER_PROBE_DATA or the cache).",
)
@click.option("--calibration", type=click.IntRange(min=0), help="Use this logged calibration.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--replay", type=click.IntRange(min=0), help="Replay the record at this index.")
@click.option("--tolerance-milli", default=None, type=click.IntRange(min=0), help="Replay slack.")
@click.option("--queue", "queue_url", help="PostgreSQL URL of the probe job queue.")
@click.option("--enqueue", is_flag=True, help="With --queue: add jobs and exit.")
@click.option("--worker-name", help="With --queue: this worker's name (default: host:pid).")
@click.option("--lease-seconds", default=300.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--until-done", is_flag=True, help="With --queue: exit when no job is left.")
@click.option("--poll-seconds", default=5.0, show_default=True, type=click.FloatRange(min=0.01))
@diagnosed
def probe(**kw: Any) -> None:
    """Probe a model over a suite and log signed records; or --replay one; or work --queue."""
    if kw["replay"] is not None:
        _replay(kw)
    elif kw["queue_url"] is not None:
        _queue(kw)
    else:
        _probe(kw)


def _need(kw: dict[str, Any], *names: str) -> None:
    for n in names:
        if kw[n] is None:
            raise click.UsageError(f"--{n.replace('_', '-')} is required here")


def _signers(kw: dict[str, Any]) -> list[tuple[str, Any]]:

    args = LedgerArgs(
        kw["ledger"], kw["log_name"], kw["key"], kw["key_name"], kw["passphrase_env"], kw["vkey"]
    )
    return [args.signer()]


def _target(kw: dict[str, Any]) -> Any:
    from clients.probe.worker import LedgerTarget

    return LedgerTarget(kw["ledger"], kw["log_name"], kw["vkey"])


def _options(kw: dict[str, Any], **over: Any) -> Any:
    from clients.probe.worker import ProbeOptions

    values = {
        "model": kw["model"],
        "version": kw["version"],
        "suite": kw["suite"],
        "suite_path": kw["suite_file"],
        "categories": _names(kw["categories"]),
        "tiers": _names(kw["tiers"]),
        "device": kw["device"] or "auto",
        "dtype": kw["dtype"],
        "batch_size": kw["batch_size"] or 8,
        "max_new_tokens": kw["max_new_tokens"] or 128,
        "seed": 0 if kw["seed"] is None else kw["seed"],
        "temperature": kw["temperature"],
        "backend": kw["backend"],
        "endpoint": kw["endpoint"],
        "api_key_env": kw["api_key_env"],
        "timeout_s": kw["timeout_s"],
        "requests_per_second": kw["requests_per_second"],
        "attack": _attack(kw),
        "refusal_judge": kw["refusal_judge"] or REFUSAL_JUDGE_CHOICES[0],
    }
    values.update(over)
    return ProbeOptions(**values)


def _attack(kw: dict[str, Any]) -> Any:
    """The search `--attack` / `--budget` ask for (None without --attack), seeded by --seed
    unless the budget names its own seed."""
    if kw.get("attack") is None:
        if kw.get("budget") is not None:
            raise click.UsageError("--budget needs --attack")
        return None
    from dataclasses import replace

    from clients.probe.attacks import parse_attack, parse_budget

    config = parse_budget(kw["budget"] or "demo")
    if "seed=" not in (kw["budget"] or ""):
        config = replace(config, seed=0 if kw["seed"] is None else kw["seed"])
    return replace(config, methods=parse_attack(kw["attack"]))


def _result_json(res: Any) -> dict[str, Any]:
    return {
        "runId": res.run_id,
        "runDir": str(res.run_dir),
        "model": res.model.model_dump(mode="json"),
        "suite": res.suite.model_dump(mode="json"),
        "calibration": None if res.calibration is None else res.calibration.model_dump(mode="json"),
        "groups": [
            {"category": g.category, "tier": g.tier, "items": g.items, "indices": list(g.indices)}
            for g in res.groups
        ],
    }


def _probe(kw: dict[str, Any]) -> None:
    from clients.probe.worker import run_probe

    _need(kw, "ledger", "key")
    res = run_probe(
        _options(kw),
        _target(kw),
        _signers(kw),
        run_dir=kw["run_dir"],
        data=kw["data_dir"],
        calibration_index=kw["calibration"],
        progress=not kw["quiet"],
    )
    for g in res.groups:
        state = "resumed" if g.resumed else "probed"
        click.echo(
            f"{g.category}/{g.tier}: {state} {g.items} prompts → {list(g.indices)}", err=True
        )
    click.echo(json.dumps(_result_json(res), indent=1))


def _replay(kw: dict[str, Any]) -> None:
    from clients.probe.worker import REPLAY_TOLERANCE_MILLI, replay

    _need(kw, "ledger")
    if kw["refusal_judge"] is not None:
        raise click.UsageError(
            "--refusal-judge does not apply to --replay: a replay judges with the refusal judge "
            "the record names"
        )
    tolerance = kw["tolerance_milli"]
    report = replay(
        kw["replay"],
        _target(kw),
        model=None if kw["model"] == DEFAULT_MODEL else kw["model"],
        suite_path=kw["suite_file"],
        device=kw["device"],
        dtype=kw["dtype"],
        batch_size=kw["batch_size"],
        max_new_tokens=kw["max_new_tokens"],
        seed=kw["seed"],
        endpoint=kw["endpoint"],
        api_key_env=kw["api_key_env"],
        data=kw["data_dir"],
        tolerance_milli=REPLAY_TOLERANCE_MILLI if tolerance is None else tolerance,
        progress=not kw["quiet"],
        attack_budget=kw["budget"],  # a replay's --budget overrides the recorded search's
    )
    for d in report.settings:
        click.echo(f"setting {d.field}: logged {d.logged!r}, now {d.now!r}", err=True)
    for it in report.items:
        mark = "ok  " if it.reproduced else "DIFF"
        answer = "same" if it.answer_matches else f"differs from character {it.first_difference}"
        judged = [
            name
            for name, same in (
                ("refusal", it.refused_matches),
                ("transfer", it.transfer_matches),
                ("verdict", it.verdict_matches),
            )
            if not same
        ]
        differs = f", judgements differ: {', '.join(judged)}" if judged else ""
        click.echo(
            f"{mark} {it.prompt_id} [{it.framing}] answer {answer},"
            f" emotions max Δ {it.max_emotion_delta_milli} milli{differs}",
            err=True,
        )
    for a in report.attacks:
        click.echo(_attack_line(a), err=True)
    click.echo(json.dumps(report.to_json(), indent=1))
    if not report.reproduced:
        raise SystemExit(1)


def _attack_line(a: Any) -> str:
    """One attacked item of a replay: reproduced, or the settings, first attempt and best-attack
    fields that differ."""
    head = f"{'ok  ' if a.reproduced else 'DIFF'} {a.prompt_id} [{a.framing}] search"
    lines = [
        f"{head}: {a.replayed_attempts} of {a.logged_attempts} attempts"
        + (" reproduced, best attack reproduced" if a.reproduced else "")
    ]
    lines += [f"  setting {d.field}: logged {d.logged!r}, now {d.now!r}" for d in a.settings]
    if a.first is not None:
        f = a.first
        part = f" ({f.part} differs)" if f.part else ""
        lines.append(
            f"  first differing attempt {f.position} ({f.source or '-'}): {f.field}{part}, "
            f"logged {f.logged!r}, now {f.now!r}"
        )
    lines += [f"  {d.field}: logged {d.logged!r}, now {d.now!r}" for d in a.best]
    return "\n".join(lines)


def _queue(kw: dict[str, Any]) -> None:
    from clients.probe.queue import ProbeQueue, job_specs

    with ProbeQueue(kw["queue_url"], lease_seconds=kw["lease_seconds"]) as queue:
        queue.create()
        if kw["enqueue"]:
            suite = _options(kw).load_suite()
            cells = _cells(kw, suite)
            pinned = f"{suite.name}@{suite.version}"  # every worker runs the same version
            ids = queue.enqueue(job_specs(kw["model"], kw["version"], pinned, cells))
            click.echo(f"enqueued {len(ids)} jobs: {ids}", err=True)
            return
        _need(kw, "ledger", "key")
        _work(kw, queue)


def _cells(kw: dict[str, Any], suite: Any) -> list[tuple[str, str]]:
    from clients.probe.suites import probes

    seen: list[tuple[str, str]] = []
    for p in probes(suite, categories=_names(kw["categories"]), tiers=_names(kw["tiers"])):
        if (p.item.category, p.tier.name) not in seen:
            seen.append((p.item.category, p.tier.name))
    return seen


def _work(kw: dict[str, Any], queue: Any) -> None:
    from clients.probe.queue import JobOutcome, Lease, work
    from clients.probe.worker import ProbeRunError, open_model, run_probe

    signers, target = _signers(kw), _target(kw)
    name = kw["worker_name"] or f"{socket.gethostname()}:{os.getpid()}"
    loaded: dict[tuple[str, str], LoadedModel] = {}

    def run_job(lease: Lease, lost: threading.Event) -> JobOutcome:
        spec = lease.spec
        if kw["suite_file"] is not None:
            # A worker may carry the suite as a file; it must be the exact suite the job names.
            suite = _options(kw).load_suite()
            if f"{suite.name}@{suite.version}" != spec.suite:
                raise ProbeRunError(
                    f"--suite-file is {suite.name}@{suite.version}, the job wants {spec.suite}"
                )
        if kw["backend"] == "local" and (spec.model, spec.version) not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[(spec.model, spec.version)] = open_model(
                spec.model, version=spec.version, device=kw["device"] or "auto", dtype=kw["dtype"]
            )
        res = run_probe(
            _options(
                kw,
                model=spec.model,
                version=spec.version,
                suite=spec.suite,
                categories=(spec.category,),
                tiers=(spec.tier,),
            ),
            target,
            signers,
            lm=loaded.get((spec.model, spec.version)),
            data=kw["data_dir"],
            calibration_index=kw["calibration"],
            progress=not kw["quiet"],
            stop=lost,
        )
        return JobOutcome(res.run_id, res.indices)

    summary = work(
        queue,
        name,
        run_job,
        until_done=kw["until_done"],
        poll_seconds=kw["poll_seconds"],
        log=lambda msg: click.echo(f"[{name}] {msg}", err=True),
    )
    click.echo(
        json.dumps(
            {
                "worker": name,
                "completed": summary.completed,
                "released": summary.released,
                "lost": summary.lost,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    probe()
