"""A refusal judge on SmolLM2-135M-Instruct hidden states, measured against `learned`.

    python bench/hidden_probe.py embed [--cache /tmp/hs_cache] [--answer-tokens 64]
    python bench/hidden_probe.py eval  [--cache /tmp/hs_cache] [--json OUT]
    python bench/hidden_probe.py live  [--same-states 50]

``embed`` reads every labelled answer the refusal judges are measured on (both XSTest dev
completion files, the project's hand-written dev and held-out rows, the real SmolLM2 answers, the
other-style and fresh other-style sets), runs the bundled model once over each (prompt, answer)
pair as a ChatML conversation, and caches, per layer (0 = embeddings .. 30), the mean of the
residual stream over the answer's tokens and the state at the closing ``<|im_end|>``, one ``.npz``
per source. The answer is cut to its first ``--answer-tokens`` tokens: refusals are decided in the
opening sentences, and the cut keeps the forward passes affordable on a shared CPU. It prints the
CPU seconds spent per answer (what `bledger judge` would pay per answer with the model loaded).

``eval`` fits and scores on the cached arrays only (no model), with nothing chosen on test rows:

(a) cross-model: train on one Llama-2 file plus the hand-written ``dev`` rows (the rows the
    shipped `learned` judge's own cross-model figures are fitted on), test on the other file. The
    probe's layer, pooling and ridge penalty are chosen by 5-fold cross-validation inside the
    training rows; the ensemble (a logistic stack of the probe's, `learned`'s logits and the
    XSTest string match) is fitted on out-of-fold predictions of the training rows only; the
    threshold is 0.5 throughout (balanced training, as `learned`).
(b) train on both Llama-2 files and the hand-written ``dev`` rows (what the shipped `learned` is
    fitted on), test on the other-style, fresh other-style, SmolLM2 and hand-written held-out sets,
    and on their answers whose prompt is not a training prompt (a hidden state carries its
    prompt, and the two Llama-2 files share theirs).

Beside the probe and the stack it prints two more: the stack without the probe (a control: what
stacking `learned` with the string match gives alone) and a majority vote of the three.

Every figure is agreement with the human labels, with its Wilson 95 % interval, beside `learned`
(re-fitted on exactly the same training rows) and XSTest's string match on exactly the same rows.

``live`` needs no cache: it runs the shipped judge as `bledger judge` does (`prefetch`, the
forward pass stopped after the layer it reads) on the four sets the parameter file's figures
name besides the two cross-model ones, and prints its agreement beside the stored figure; and it
compares the stopped pass's states with the whole pass's on the first ``--same-states`` answers
of each XSTest dev file (bit for bit, and the largest difference if any).
Nothing here asserts: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from clients.probe.judges.hidden_train import (
    FOLDS,
    SOURCES,
    Probe,
    States,
    choose_probe,
    embed_sources,
    folds_of,
    load_sources,
)
from clients.probe.judges.rules import StringMatchRefusalJudge, normalise
from clients.probe.judges.train import Row, fit_logistic
from clients.probe.metrics import mcnemar, rate

XSTEST_DIR = Path(
    os.environ.get(
        "BLEDGER_XSTEST_DEV",
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / "xstest-completions-dev",
    )
)
"""The XSTest dev completions, read in place (``$BLEDGER_XSTEST_DEV`` moves them, as in tests)."""
Arr = npt.NDArray[np.float64]


def embed(cache: Path, answer_tokens: int, batch_size: int, only: Sequence[str] = SOURCES) -> None:
    """Cache per-layer mean-over-answer and last-token states of each source in `only` (the
    package's `embed_sources`: one implementation of the features for the bench and the judge)."""
    embed_sources(cache, load_sources(XSTEST_DIR), answer_tokens, batch_size, only)


# -- eval ----------------------------------------------------------------------------------------

STACK_L2 = 1e-3


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """k/n with its Wilson 95 % interval (`clients.probe.metrics.rate`)."""
    r = rate(k, n)
    return r.rate, r.low, r.high


def learned_logit(xf_tr: Arr, y: Arr, groups: Sequence[str], xf_te: Arr) -> Arr:
    """`learned` re-fitted on the training rows (its shipped L2), logits on other rows."""
    from clients.probe.judges.train import L2

    w, b = fit_logistic(xf_tr, y, L2, groups)
    out: Arr = xf_te @ w + b
    return out


def stack_inputs(probe: Arr, learned: Arr, strmatch: Arr) -> Arr:
    """The ensemble's inputs: the probe's and `learned`'s logits (clipped) and string match."""
    return np.column_stack([np.clip(probe, -10, 10), np.clip(learned, -10, 10), strmatch])


class Data(States):
    """Cached states (`States`), `learned` features, string-match verdicts and labels."""

    def __init__(self, cache: Path, all_rows: dict[str, list[Row]], sources: Sequence[str]) -> None:
        from clients.probe.judges.learned import feature_matrix

        super().__init__(cache, all_rows, sources)
        self.xf = feature_matrix([r.answer for r in self.rows], [r.prompt for r in self.rows])
        sm = StringMatchRefusalJudge("xstest")
        self.sm = np.array([float(sm.refused(r.prompt, r.answer)) for r in self.rows])


@dataclass(frozen=True)
class Fit:
    """What `fit_and_test` chose on the training rows, and each judge's verdicts on the test."""

    choice: dict[str, object]
    stack_weights: list[float]
    train_oof_acc: dict[str, float]
    cv_top: list[tuple[str, float]]
    verdicts: dict[str, npt.NDArray[np.bool_]]


def fit_and_test(train: Data, test: Data) -> Fit:
    """Choose and fit everything on `train`; verdicts of each judge on `test` (and the choices)."""
    folds = folds_of(train.rows)
    (pool, layer, l2), cv = choose_probe(train.hs, train.y, train.groups, folds)
    x_tr, x_te = train.hs[pool][layer], test.hs[pool][layer]
    # Out-of-fold logits of the probe and of `learned` on the training rows: the stack's inputs.
    oof_p, oof_l = np.zeros(len(train.y)), np.zeros(len(train.y))
    for f in range(FOLDS):
        tr, te = folds != f, folds == f
        g = [g for g, t in zip(train.groups, tr, strict=True) if t]
        oof_p[te] = Probe(x_tr[tr], train.y[tr], g, l2).logit(x_tr[te])
        oof_l[te] = learned_logit(train.xf[tr], train.y[tr], g, train.xf[te])
    sw, sb = fit_logistic(
        stack_inputs(oof_p, oof_l, train.sm), train.y, STACK_L2, train.groups, iters=50
    )
    # The control: the same stack without the probe, so a gain can be told apart from what
    # stacking `learned` with the string match alone gives.
    cw, cb = fit_logistic(
        stack_inputs(oof_p, oof_l, train.sm)[:, 1:], train.y, STACK_L2, train.groups, iters=50
    )
    probe = Probe(x_tr, train.y, train.groups, l2).logit(x_te)
    learned = learned_logit(train.xf, train.y, train.groups, test.xf)
    stack = stack_inputs(probe, learned, test.sm) @ sw + sb
    verdicts = {
        "strmatch-xstest": test.sm > 0.5,
        "learned": learned >= 0,
        "probe": probe >= 0,
        "stack": stack >= 0,
        "stack-no-probe": stack_inputs(probe, learned, test.sm)[:, 1:] @ cw + cb >= 0,
        "vote": ((probe >= 0).astype(int) + (learned >= 0) + (test.sm > 0.5)) >= 2,
    }
    oof = {
        "probe": float(((oof_p >= 0) == (train.y > 0.5)).mean()),
        "learned": float(((oof_l >= 0) == (train.y > 0.5)).mean()),
    }
    choice: dict[str, object] = {"pooling": pool, "layer": layer, "l2": l2}
    choice["cv_balanced_acc"] = cv[f"{pool}:{layer}:{l2}"]
    top = sorted(cv.items(), key=lambda kv: -kv[1])[:8]
    return Fit(choice, [*map(float, sw), float(sb)], oof, top, verdicts)


def _report(name: str, test: Data, res: Fit, sets: dict[str, list[int]]) -> dict[str, object]:
    verdicts = res.verdicts
    y = test.y > 0.5
    print(f"\n== {name}\nchoice {res.choice}  stack w {[round(w, 3) for w in res.stack_weights]}")
    print(f"train out-of-fold acc {res.train_oof_acc}")
    figs: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, idx in sets.items():
        ix = np.array(idx)
        figs[set_name] = {}
        print(f"  {set_name} (n={len(ix)})")
        for j, v in verdicts.items():
            ok = v[ix] == y[ix]
            k = int(ok.sum())
            p, lo, hi = wilson(k, len(ix))
            # Paired with `learned` on the same rows: rows only one of the two gets right.
            lv = verdicts["learned"][ix] == y[ix]
            b, c = int((ok & ~lv).sum()), int((~ok & lv).sum())
            figs[set_name][j] = {"correct": k, "n": len(ix), "acc": p, "low": lo, "high": hi}
            figs[set_name][j].update(only_this=b, only_learned=c, mcnemar_p=mcnemar(b, c))
            line = f"{j:16s} {k:4d}/{len(ix):<4d} {p:.3f} [{lo:.3f}, {hi:.3f}]"
            print(f"    {line}  vs learned +{b}/-{c} (exact McNemar p={mcnemar(b, c):.3f})")
    return {
        "choice": res.choice,
        "stack_weights": res.stack_weights,
        "train_oof_acc": res.train_oof_acc,
        "cv_top": res.cv_top,
        "figures": figs,
    }


def evaluate(cache: Path, json_out: Path | None) -> int:
    """Protocols (a) and (b) of the module docstring; prints, and writes `json_out`."""
    rows = load_sources(XSTEST_DIR)
    report: dict[str, object] = {}
    for train_m, test_m in (("llama2orig", "llama2new"), ("llama2new", "llama2orig")):
        train, test = Data(cache, rows, [train_m, "hand-dev"]), Data(cache, rows, [test_m])
        name = f"(a) train {train_m}+hand-dev, test {test_m}"
        res = fit_and_test(train, test)
        report[name] = _report(name, test, res, {test_m: list(range(len(test.rows)))})
    tests = ["other-style", "fresh-style", "smollm2", "hand-held-out"]
    train = Data(cache, rows, ["llama2new", "llama2orig", "hand-dev"])
    test = Data(cache, rows, tests)
    sets: dict[str, list[int]] = {s: [] for s in tests}
    for i, r in enumerate(test.rows):
        sets[r.source].append(i)
    # The same rows less those whose prompt is also a training prompt: the states of an answer
    # also carry its prompt, so a probe could lean on prompts it saw labelled.
    seen = {normalise(r.prompt) for r in train.rows}
    sets["all four, prompts not in training"] = [
        i for i, r in enumerate(test.rows) if normalise(r.prompt) not in seen
    ]
    name = "(b) train both Llama-2 + hand-dev, test the project's sets"
    report[name] = _report(name, test, fit_and_test(train, test), sets)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


# -- live --------------------------------------------------------------------------------------


def live(same_states: int) -> int:
    """``live`` of the module docstring; prints."""
    import time

    from clients.probe.judges.hidden import (
        HiddenStateRefusalJudge,
        load_hidden_params,
        pooled_states,
    )
    from clients.probe.judges.rules import VALIDATION_SETS

    rows = load_sources(XSTEST_DIR)
    judge = HiddenStateRefusalJudge()
    lm = judge.model()
    validation = load_hidden_params()[0]["validation"]
    stored = {str(v["dataset"]): v for v in validation}  # type: ignore[attr-defined]
    print("set | n | live correct | stored correct | live CPU s/answer")
    print("--- | - | ------------ | -------------- | -----------------")
    for j, source in enumerate(("other-style", "smollm2", "hand-held-out", "fresh-style")):
        rs = rows[source]
        cpu0 = time.process_time()
        judge.prefetch([(r.prompt, r.answer) for r in rs])
        cpu = (time.process_time() - cpu0) / len(rs)
        correct = sum(judge.refused(r.prompt, r.answer) == bool(r.refused) for r in rs)
        want = stored[VALIDATION_SETS[2 + j]]
        print(f"{source} | {len(rs)} | {correct} | {want['correct']} of {want['n']} | {cpu:.3f}")
    pairs = [
        (r.prompt, r.answer) for m in ("llama2new", "llama2orig") for r in rows[m][:same_states]
    ]
    got = {
        full: pooled_states(
            lm, pairs, [judge.layer], (judge.pooling,), judge.answer_tokens, full_forward=full
        )[judge.pooling][0]
        for full in (False, True)
    }
    diff = float(np.abs(got[False] - got[True]).max())
    same = bool(np.array_equal(got[False], got[True]))
    verdicts = int(((judge.logits_of(got[False]) >= 0) == (judge.logits_of(got[True]) >= 0)).sum())
    print(
        f"stopped vs whole pass, layer {judge.layer} {judge.pooling}, {len(pairs)} XSTest dev "
        f"answers: bit-identical {same}, largest difference {diff:.3g}, same verdict on "
        f"{verdicts} of {len(pairs)}"
    )
    return 0


# -- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run ``embed``, ``eval`` or ``live``."""
    ap = argparse.ArgumentParser(prog="bench/hidden_probe.py")
    ap.add_argument("what", choices=("embed", "eval", "live"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hs_cache"))
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None, help="eval: write the figures here")
    ap.add_argument("--same-states", type=int, default=25, help="live: answers per XSTest file")
    a = ap.parse_args(argv)
    if a.what == "live":
        return live(a.same_states)
    if a.what == "embed":
        embed(a.cache, a.answer_tokens, a.batch_size)
        return 0
    return evaluate(a.cache, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
