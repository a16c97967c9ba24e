"""Probing throughput: tokens/s and prompts/min, with and without emotion capture.

    python bench/probe_bench.py                 # SmolLM2-135M-Instruct on the CPU
    python bench/probe_bench.py --tiny          # the tiny random model: a smoke run
    python bench/probe_bench.py --batch-sizes 1,8 --prompts 16 --json
    python bench/probe_bench.py judges [--answers N]       # judge throughput, answers/s
    python bench/probe_bench.py suite-cost [--tiny] [--prompts N]   # cost of the full suite
    python bench/probe_bench.py noise-floor [--suite full] [--prompts N] [--batch-sizes 1,8]
    python bench/probe_bench.py noise-floor --seeds 1,2 [--temperature 0.7]  # same weights, twice
    python bench/probe_bench.py attacks [--tiny] [--items N] [--budget demo]  # attacks per minute
    python bench/probe_bench.py backends [--prompts N] [--endpoint URL]  # answers/s per backend

For each batch size, the same prompts (the first ``--prompts`` probes of the core suite, in
suite order) are answered greedily twice per repetition: plain `generate`, then `generate` inside
`emotion_capture` followed by `summaries` (what a probing run does). The peer is the plain run in
the same process on the same prompts; the overhead column is capture time / plain time - 1
(target: at most 10 %). Medians over ``--reps`` with the range. The answers of both runs are
compared: capture must not change what the model says. The calibration comes from the emotions
cache (``~/.cache/behaviour-ledger/calibrations``) or is made and cached; its time is reported
(``--tiny`` calibrates on a subset of the stimuli: capture costs the same whatever the vectors).
Repetitions alternate which of the two runs first, so drift in machine load favours neither.
Nothing here asserts on time: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from clients.probe.emotions import (
    Calibration,
    calibrate,
    calibration_dir,
    emotion_capture,
    latest_calibration,
    load_calibration,
    load_stimuli,
    save_calibration,
)
from clients.probe.model import DEFAULT_MODEL, ChatTurns, Generation, LoadedModel, generate
from clients.probe.suites import load_suite, probes
from clients.probe.worker import open_model

TARGET_OVERHEAD = 0.10


@dataclass
class Row:
    """One batch size's figures (medians over repetitions; ranges as [min, max])."""

    batch_size: int
    prompts: int
    tokens: int
    plain_s: float
    capture_s: float
    plain_tok_s: float
    capture_tok_s: float
    plain_prompts_min: float
    capture_prompts_min: float
    overhead: float
    overhead_range: tuple[float, float]
    same_answers: bool


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _plain(lm: LoadedModel, prompts: Sequence[ChatTurns], bs: int, mnt: int) -> list[Generation]:
    return generate(lm, prompts, max_new_tokens=mnt, batch_size=bs)


def _capture(
    lm: LoadedModel, cal: Calibration, prompts: Sequence[ChatTurns], bs: int, mnt: int
) -> list[Generation]:
    with emotion_capture(lm, cal) as cap:
        gens = generate(lm, prompts, max_new_tokens=mnt, batch_size=bs)
        cap.summaries(gens)
    return gens


def _calibration(lm: LoadedModel, *, tiny: bool, fresh: bool) -> Calibration:
    """The model's cached calibration (`clients.probe.emotions` cache), else a new one, cached.

    Capture costs the same whatever the vectors' quality: the smoke run calibrates on a subset
    and caches nothing.
    """
    if tiny:
        return calibrate(lm, stimuli=load_stimuli().subset(6, 2, 8))
    cached = None if fresh else latest_calibration(lm.identity)
    if cached is not None:
        return load_calibration(cached, lm.identity)
    cal = calibrate(lm)
    save_calibration(cal, calibration_dir(lm.identity) / f"{cal.digest}.safetensors")
    return cal


def measure(
    lm: LoadedModel,
    cal: Calibration,
    prompts: Sequence[ChatTurns],
    batch_size: int,
    max_new_tokens: int,
    reps: int,
) -> Row:
    """Plain and captured generation of `prompts`, alternated `reps` times."""
    plain_t, cap_t, same = [], [], True
    tokens = 0
    for rep in range(reps):
        # Alternate which runs first, so a drift in machine load does not favour one side.
        first_plain = rep % 2 == 0
        if not first_plain:
            tc, captured = _timed(lambda: _capture(lm, cal, prompts, batch_size, max_new_tokens))
        tp, plain = _timed(lambda: _plain(lm, prompts, batch_size, max_new_tokens))
        if first_plain:
            tc, captured = _timed(lambda: _capture(lm, cal, prompts, batch_size, max_new_tokens))
        plain_t.append(tp)
        cap_t.append(tc)
        same = same and [g.answer_ids for g in plain] == [g.answer_ids for g in captured]
        tokens = sum(len(g.answer_ids) for g in plain)
    overheads = [c / p - 1 for p, c in zip(plain_t, cap_t, strict=True)]
    p, c = statistics.median(plain_t), statistics.median(cap_t)
    return Row(
        batch_size=batch_size,
        prompts=len(prompts),
        tokens=tokens,
        plain_s=p,
        capture_s=c,
        plain_tok_s=tokens / p,
        capture_tok_s=tokens / c,
        plain_prompts_min=60 * len(prompts) / p,
        capture_prompts_min=60 * len(prompts) / c,
        overhead=statistics.median(overheads),
        overhead_range=(min(overheads), max(overheads)),
        same_answers=same,
    )


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["judges"]:
        return judges_main(args_in[1:])
    if args_in[:1] == ["suite-cost"]:
        return suite_cost_main(args_in[1:])
    if args_in[:1] == ["noise-floor"]:
        return noise_floor_main(args_in[1:])
    if args_in[:1] == ["attacks"]:
        return attacks_main(args_in[1:])
    if args_in[:1] == ["backends"]:
        return backends_main(args_in[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (smoke run)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--recalibrate", action="store_true", help="ignore the cached calibration")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)

    spec = "tiny" if args.tiny else args.model
    load_s, lm = _timed(lambda: open_model(spec, device=args.device, dtype=args.dtype))
    plan = probes(load_suite("core"))[: args.prompts]
    prompts: list[ChatTurns] = [(p.system, p.user) for p in plan]
    cal_s, cal = _timed(lambda: _calibration(lm, tiny=args.tiny, fresh=args.recalibrate))
    _plain(lm, prompts[:2], 2, 4)  # warm-up: first-call allocations stay out of the figures
    print(f"loaded in {load_s:.1f} s, calibrated in {cal_s:.1f} s", file=sys.stderr)
    rows = []
    for bs in args.batch_sizes.split(","):
        rows.append(measure(lm, cal, prompts, int(bs), args.max_new_tokens, args.reps))
        print(f"batch {bs}: done ({rows[-1].plain_tok_s:.1f} tok/s plain)", file=sys.stderr)
    result = {
        "model": lm.identity.name,
        "weights_sha256": lm.identity.weights_sha256,
        "device": str(lm.device),
        "dtype": str(next(lm.model.parameters()).dtype),
        "max_new_tokens": args.max_new_tokens,
        "reps": args.reps,
        "load_s": load_s,
        "calibrate_s": cal_s,
        "calibration_layer": cal.layer,
        "machine": machine(),
        "command": " ".join(["python", "bench/probe_bench.py", *(argv or sys.argv[1:])]),
        "rows": [asdict(r) for r in rows],
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"model {result['model']} on {result['device']} ({result['dtype']}), "
        f"{args.prompts} core prompts, max {args.max_new_tokens} new tokens, "
        f"median of {args.reps}; load {load_s:.1f} s, calibrate {cal_s:.1f} s "
        f"(layer {cal.layer})"
    )
    head = (
        "batch",
        "tokens",
        "tok/s plain",
        "tok/s capture",
        "prompts/min plain",
        "prompts/min capture",
        "overhead (range)",
        "same answers",
    )
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for r in rows:
        lo, hi = r.overhead_range
        print(
            f"{r.batch_size} | {r.tokens} | {r.plain_tok_s:.1f} | {r.capture_tok_s:.1f} | "
            f"{r.plain_prompts_min:.1f} | {r.capture_prompts_min:.1f} | "
            f"{100 * r.overhead:+.1f} % ({100 * lo:+.1f}…{100 * hi:+.1f}) | "
            f"{'yes' if r.same_answers else 'NO'}"
        )
    worst = max(r.overhead for r in rows)
    verdict = "meets" if worst <= TARGET_OVERHEAD else "misses"
    print(f"capture overhead: worst median {100 * worst:+.1f} % — {verdict} the ≤ 10 % target")
    print(f"machine: {result['machine']}")
    return 0


# -- judges and suite cost -----------------------------------------------------------------------


def _answer_set(n: int) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs: the XSTest dev completions when present (real answers of
    ~180 words on average), else the project's labels, repeated to length `n`."""
    from pathlib import Path

    from clients.probe.judges import load_labels
    from clients.probe.judges.train import load_xstest_dir

    dev = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "xstest-completions-dev"
    if dev.is_dir():
        pairs = [(r.prompt, r.answer) for rows in load_xstest_dir(dev).values() for r in rows]
    else:
        pairs = [(r.prompt, r.answer) for r in load_labels()]
    return [pairs[i % len(pairs)] for i in range(n)]


MODEL_JUDGE_ANSWERS = 64
"""Answers a judge that runs the model is timed on (`judge_throughput`)."""


def judge_throughput(pairs: Sequence[tuple[str, str]], reps: int = 3) -> list[dict[str, Any]]:
    """Answers per second of every refusal judge and of the rubric transfer judge on `pairs`
    (one thread, one answer at a time, as the worker calls them), median of `reps`; the
    XSTest string match, the baseline, runs in the same process on the same answers."""
    from clients.probe.judges import LearnedRefusalJudge, RubricTransferJudge, refusal_judges
    from clients.probe.judges.registry import needs_model

    learned = LearnedRefusalJudge()
    rubric = RubricTransferJudge(learned)
    runs: list[tuple[str, Any]] = [
        (n, j.refused) for n, j in refusal_judges().items() if not needs_model(j)
    ]
    runs.append(("learned (batch: probabilities)", None))
    runs.append(("rubric transfer (score)", rubric.score))
    rows: list[dict[str, Any]] = []
    for name, fn in runs:
        times = []
        for _ in range(reps):
            if fn is None:
                t, _ = _timed(
                    lambda: learned.probabilities([p for p, _ in pairs], [a for _, a in pairs])
                )
            else:
                t, _ = _timed(lambda fn=fn: [fn(p, a) for p, a in pairs])
            times.append(t)
        med = statistics.median(times)
        rows.append({"judge": name, "answers": len(pairs), "s": med, "answers_s": len(pairs) / med})
    # A judge that runs the model costs a fraction of a second of CPU per answer here: timed
    # once, on the first MODEL_JUDGE_ANSWERS answers, batched as `bledger judge` calls it
    # (prefetch), with the model load (once per process) timed apart. CPU seconds are printed
    # beside wall seconds: on a shared machine the wall time moves with the other jobs' load.
    few = list(pairs[:MODEL_JUDGE_ANSWERS])
    for name, judge in refusal_judges().items():
        if not needs_model(judge):
            continue
        load_s, _ = _timed(lambda judge=judge: judge.refused(*few[0]))  # loads the model
        prefetch = judge.prefetch  # type: ignore[attr-defined]  # the model judges have it
        cpu0 = time.process_time()
        t, _ = _timed(lambda j=judge, f=prefetch: (f(few), [j.refused(*x) for x in few]))
        cpu = (time.process_time() - cpu0) / len(few)
        rows.append(
            {
                "judge": f"{name} (batched, {len(few)} answers, {cpu:.3f} CPU s each, "
                f"model load {load_s:.1f} s apart)",
                "answers": len(few),
                "s": t,
                "answers_s": len(few) / t,
            }
        )
    base = float(next(r for r in rows if r["judge"] == "strmatch-xstest")["answers_s"])
    for r in rows:
        r["vs_strmatch"] = r["answers_s"] / base
    return rows


def judges_main(argv: Sequence[str]) -> int:
    """``python bench/probe_bench.py judges``: judge throughput against the string match."""
    ap = argparse.ArgumentParser(prog="probe_bench.py judges")
    ap.add_argument("--answers", type=int, default=900)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    pairs = _answer_set(args.answers)
    words = statistics.mean(len(a.split()) for _, a in pairs)
    rows = judge_throughput(pairs, args.reps)
    print(f"{len(pairs)} answers (mean {words:.0f} words), median of {args.reps}, one thread")
    print("judge | s | answers/s | vs strmatch-xstest")
    print("----- | - | --------- | ------------------")
    for r in rows:
        rate = f"{r['answers_s']:.1f}" if r["answers_s"] < 100 else f"{r['answers_s']:.0f}"
        print(f"{r['judge']} | {r['s']:.3f} | {rate} | {r['vs_strmatch']:.4f}x")
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    return 0


def suite_cost_main(argv: Sequence[str]) -> int:
    """``python bench/probe_bench.py suite-cost``: probes in each shipped suite and the
    generation time they would take here, from a rate measured on the full suite's first
    prompts (plain greedy generation, the worker's defaults unless given)."""
    ap = argparse.ArgumentParser(prog="probe_bench.py suite-cost")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (smoke run)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    # The newest version of each shipped suite, named with its version (full-3 is 1134 probes).
    # The estimate counts probes, not generations: full-3's 134 pushback probes are asked in
    # two turns (1268 generations), so its real cost is higher than the line printed here.
    loaded = [load_suite(name) for name in ("core", "xstest", "full")]
    suites = {f"{x.name}-{x.version}": probes(x) for x in loaded}
    lm = open_model("tiny" if args.tiny else args.model, device="cpu")
    sample = [(p.system, p.user) for p in probes(loaded[-1])[: args.prompts]]
    _plain(lm, sample[:2], 2, 4)  # warm-up
    t, gens = _timed(lambda: _plain(lm, sample, args.batch_size, args.max_new_tokens))
    per_prompt = t / len(sample)
    tokens = sum(len(g.answer_ids) for g in gens)
    print(
        f"model {lm.identity.name}, batch {args.batch_size}, max {args.max_new_tokens} new "
        f"tokens: {len(sample)} full-suite prompts in {t:.1f} s ({tokens / t:.1f} tok/s, "
        f"{per_prompt:.2f} s/prompt)"
    )
    print("suite | probes | estimated generation time here")
    print("----- | ------ | ------------------------------")
    for name, plan in suites.items():
        est = len(plan) * per_prompt
        print(f"{name} | {len(plan)} | {est / 60:.1f} min")
    print(f"machine: {machine()}")
    return 0


def attacks_main(argv: Sequence[str]) -> int:
    """``python bench/probe_bench.py attacks``: budgeted searches per minute on the core suite's
    first harmful items (anonymous tier), against plain generation of the same items' direct
    prompts in the same run (same model, batch size and answer length). The search's time
    budget is lifted so that only queries and tokens bound it: the figure is the machine's."""
    from dataclasses import replace

    from clients.probe.attacks import (
        backend_generate,
        load_corpus,
        parse_budget,
        rubric_judge,
        search,
    )
    from clients.probe.backends import LocalBackend

    ap = argparse.ArgumentParser(prog="probe_bench.py attacks")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (smoke run)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--budget", default="demo", help="as bledger probe --budget")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    config = parse_budget(args.budget)
    config = replace(config, budget=replace(config.budget, seconds=10**9))
    lm = open_model("tiny" if args.tiny else args.model, device="cpu")
    gen = backend_generate(LocalBackend(lm), batch_size=args.batch_size)
    plan = [p for p in probes(load_suite("core"), tiers=["anonymous"]) if p.framing == "direct"]
    harmful = [p for p in plan if p.item.kind == "harmful"][: args.items]
    corpus, (judge, _) = load_corpus(), rubric_judge()
    gen([(None, "warm up")], 2)
    t_plain, replies = _timed(
        lambda: gen([(p.system, p.user) for p in harmful], config.max_new_tokens)
    )
    t_attack, outs = _timed(
        lambda: [
            search(p.item, p.system, gen, judge, config, corpus, attacker=gen, attacker_name="self")
            for p in harmful
        ]
    )
    queries = sum(o.queries for o in outs)
    tokens = sum(o.tokens for o in outs)
    plain_tokens = sum(r.tokens for r in replies)
    print(
        f"model {lm.identity.name}, budget {config.budget.text()} (time lifted), corpus "
        f"{config.corpus}, rounds {config.rounds} x branches {config.branches}, "
        f"{config.max_new_tokens} new tokens per answer, batch {args.batch_size}"
    )
    print("run | items | target queries | tokens | s | items/min | queries/min")
    print("--- | ----- | -------------- | ------ | - | --------- | -----------")
    n = len(harmful)
    print(
        f"plain generation | {n} | {n} | {plain_tokens} | {t_plain:.1f} | "
        f"{60 * n / t_plain:.1f} | {60 * n / t_plain:.1f}"
    )
    print(
        f"attack (corpus+pair) | {n} | {queries} | {tokens} | {t_attack:.1f} | "
        f"{60 * n / t_attack:.2f} | {60 * queries / t_attack:.1f}"
    )
    best = [o.best.transfer if o.best else 0.0 for o in outs]
    print(f"best transfer per item: {', '.join(f'{b:.2f}' for b in best)}")
    print(f"machine: {machine()}")
    return 0


def noise_floor_main(argv: Sequence[str]) -> int:
    """``python bench/probe_bench.py noise-floor``: the same weights answer the same prompts
    twice, the runs differing only in batch size (greedy, ``--batch-sizes A,B``) or only in the
    sampling seed (``--seeds A,B --temperature T`` at one ``--batch-size``); the answers are judged
    as a probing run judges them and compared with `clients.probe.continuity.noise_floor`
    (records built in memory, never logged). Prints the overall and per-cell refusal flips with
    Wilson intervals and the mean absolute transfer change on harmful items; the prompts are
    every k-th anonymous-tier probe of ``--suite``, spread over its categories."""
    import hashlib

    from attest.predicates import CheckpointRef, LogEntryRef, ModelRef, ProbeRecord, SuiteRef
    from clients.probe.continuity import noise_floor
    from clients.probe.judges import LearnedRefusalJudge, RubricTransferJudge
    from clients.probe.metrics import cell_text
    from clients.probe.records import probe_item

    ap = argparse.ArgumentParser(prog="probe_bench.py noise-floor")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (smoke run)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--suite", default="core", help="suite name or NAME@VERSION")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--batch-sizes", default="1,8", help="two greedy runs at these batch sizes")
    ap.add_argument("--seeds", default=None, help="A,B: two sampled runs with these torch seeds")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling, with --seeds")
    ap.add_argument("--batch-size", type=int, default=8, help="the batch size, with --seeds")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument(
        "--json", action="store_true", help="print the floor as JSON (for lab --noise-floor)"
    )
    args = ap.parse_args(argv)
    # Each run: (label, batch size, seed or None for greedy).
    runs_spec: list[tuple[str, int, int | None]]
    if args.seeds is not None:
        seeds = [int(x) for x in args.seeds.split(",")]
        runs_spec = [(f"seed-{x}", args.batch_size, x) for x in seeds]
        varied = f"seeds {args.seeds} at T={args.temperature}, batch {args.batch_size}"
    else:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        runs_spec = [(f"batch-{b}", b, None) for b in sizes]
        varied = f"batch sizes {args.batch_sizes}, greedy"
    if len(runs_spec) != 2:
        ap.error("a noise floor compares exactly two runs")
    suite = load_suite(args.suite)
    plan = probes(suite, tiers=["anonymous"])
    step = max(1, len(plan) // args.prompts)
    plan = plan[::step][: args.prompts]  # spread over the suite's categories
    lm = open_model("tiny" if args.tiny else args.model, device="cpu")
    refusal = LearnedRefusalJudge()
    transfer = RubricTransferJudge(refusal)
    model = ModelRef(name="m", version="v", weights_sha256=lm.identity.weights_sha256)
    ref = SuiteRef(name=suite.name, version=suite.version, sha256=suite.digest)
    runs: list[list[ProbeRecord]] = []
    texts: list[list[str]] = []
    refused_lines: list[str] = []
    for label, bs, seed in runs_spec:
        if seed is not None:
            torch.manual_seed(seed)
        temperature = args.temperature if seed is not None else 0.0
        t, gens = _timed(
            lambda bs=bs, temperature=temperature: generate(
                lm,
                [(p.system, p.user) for p in plan],
                max_new_tokens=args.max_new_tokens,
                batch_size=bs,
                temperature=temperature,
            )
        )
        print(f"{label}: {len(plan)} answers in {t:.0f} s", file=sys.stderr, flush=True)
        texts.append([g.text for g in gens])
        by_cell: dict[tuple[str, str], list[Any]] = {}
        refused_by_kind: dict[str, list[int]] = {}
        for p, g in zip(plan, gens, strict=True):
            it = probe_item(
                p.item.id,
                p.framing,
                g.text,
                refused=refusal.refused(p.user, g.text),
                transfer=transfer.transfer(p.item, g.text),
                emotions={},
            )
            by_cell.setdefault((p.item.category, p.tier.name), []).append(it)
            counts = refused_by_kind.setdefault(p.item.kind, [0, 0])
            counts[0] += int(it.refused)
            counts[1] += 1
        # Flips can only come from answers near the verdict's boundary: a model that refuses
        # nothing (or everything) flips nothing, so the prevalence belongs beside the floor.
        refused_lines.append(
            f"{label}: refused "
            + ", ".join(f"{k} {c[0]} of {c[1]}" for k, c in sorted(refused_by_kind.items()))
        )
        runs.append(
            [
                ProbeRecord(
                    seen_checkpoint=CheckpointRef(
                        origin="bench", size=0, root=hashlib.sha256().hexdigest()
                    ),
                    issued_at=0,
                    model=model,
                    suite=ref,
                    category=cat,
                    tier=tier,
                    run_id=label,
                    calibration=LogEntryRef(origin="bench", index=0, leaf_hash="00" * 32),
                    items=tuple(items),
                )
                for (cat, tier), items in by_cell.items()
            ]
        )
    described = tuple(
        f"{label} (batch {bs}, "
        + ("greedy" if seed is None else f"seed {seed}, T={args.temperature:g}")
        + ")"
        for label, bs, seed in runs_spec
    )
    floor = noise_floor(runs[0], runs[1], suite, runs=described)
    if args.json:
        print(json.dumps(floor.to_json(), indent=1))
        return 0
    same = sum(a == b for a, b in zip(texts[0], texts[1], strict=True))
    print(
        f"model {lm.identity.name}, {len(plan)} {suite.name}-{suite.version} prompts (one "
        f"anonymous probe in {step}), {varied}, max {args.max_new_tokens} new tokens: {same} of "
        f"{len(plan)} answers identical"
    )
    for line in refused_lines:
        print(line)
    print("cell | pairs | refusal flips | flip rate [95 % Wilson] | mean abs transfer change")
    print("---- | ----- | ------------- | ------------------------ | ------------------------")
    for c in floor.cells:
        change = (
            "n/a (no harmful items)" if c.transfer_change is None else _mean_text(c.transfer_change)
        )
        print(
            f"{c.category}/{c.tier} | {c.pairs} | {c.flips} | "
            f"{c.flip_rate.rate:.3f} [{c.flip_rate.low:.3f}, {c.flip_rate.high:.3f}] "
            f"({cell_text(c.flip_rate)}) | {change}"
        )
    o = floor.overall
    print(f"refusal verdict flips: {o.k} of {o.n} ({o.rate:.3f} [{o.low:.3f}, {o.high:.3f}])")
    if floor.transfer_change is not None:
        print(f"mean |transfer change| on harmful items: {_mean_text(floor.transfer_change)}")
    print(f"machine: {machine()}")
    return 0


def _mean_text(m: Any) -> str:
    return f"{m.mean:.3f} [{m.low:.3f}, {m.high:.3f}] (n={m.n})"


# -- backends ---------------------------------------------------------------------------------


def _llama_server(port: int, threads: int) -> Any:
    """``python -m llama_cpp.server`` on the bundled GGUF at 127.0.0.1:`port` (a Popen)."""
    import subprocess

    import httpx

    from clients.probe.model import ensure_smollm2_wheel

    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(ensure_smollm2_wheel())]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--seed", "0"]
    cmd += ["--n_threads", str(threads), "--verbose", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("llama server did not start in 120 s")


def backends_main(argv: Sequence[str]) -> int:
    """``python bench/probe_bench.py backends``: answers/s per backend on the core suite's first
    prompts — `local` (the worker's LocalBackend) and `openai` (an OpenAI-compatible endpoint:
    ``--endpoint``, else a llama-cpp-python server this script starts on the bundled GGUF) —
    against plain `generate` on the same prompts in the same run (the peer)."""
    import socket

    from clients.probe.backends import DecodingConfig, LocalBackend, OpenAIBackend, turns

    ap = argparse.ArgumentParser(prog="probe_bench.py backends")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (smoke run)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--endpoint", help="an OpenAI-compatible /v1 URL (default: start llama.cpp)")
    ap.add_argument("--endpoint-model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads")
    args = ap.parse_args(argv)
    lm = open_model("tiny" if args.tiny else args.model, device="cpu")
    plan = probes(load_suite("core"))[: args.prompts]
    prompts: list[ChatTurns] = [(p.system, p.user) for p in plan]
    convs = [turns(s, u) for s, u in prompts]
    cfg = DecodingConfig(args.max_new_tokens, 0.0, 0, args.batch_size)
    _plain(lm, prompts[:2], 2, 4)  # warm-up
    rows: list[tuple[str, float, int]] = []
    t, gens = _timed(lambda: _plain(lm, prompts, args.batch_size, args.max_new_tokens))
    rows.append(("plain generate (peer)", t, sum(len(g.answer_ids) for g in gens)))
    local = LocalBackend(lm)
    t, out = _timed(lambda: local.generate(convs, cfg))
    rows.append(("local backend", t, sum(g.completion_tokens or 0 for g in out)))
    proc = None
    url = args.endpoint
    try:
        if url is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            proc = _llama_server(port, args.threads)
            url = f"http://127.0.0.1:{port}/v1"
        api = OpenAIBackend(url, args.endpoint_model)
        api.generate(convs[:1], DecodingConfig(4))  # warm-up
        t, out = _timed(lambda: api.generate(convs, cfg))
        rows.append((f"openai backend ({url})", t, sum(g.completion_tokens or 0 for g in out)))
        api.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
    peer = rows[0][1]
    print(
        f"model {lm.identity.name} (local: float32 transformers; llama.cpp: the Q4_1 GGUF, "
        f"{args.threads} threads), {len(prompts)} core prompts, max {args.max_new_tokens} new "
        f"tokens, batch {args.batch_size}, greedy"
    )
    print("backend | s | answers/s | tokens | tok/s | vs plain")
    print("------- | - | --------- | ------ | ----- | --------")
    for name, secs, tokens in rows:
        print(
            f"{name} | {secs:.1f} | {len(prompts) / secs:.2f} | {tokens} | {tokens / secs:.1f} | "
            f"{peer / secs:.2f}x"
        )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
