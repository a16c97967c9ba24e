"""Fit the learned refusal judge's parameters and write them as JSON (no pickles).

    python -m clients.probe.judges train --xstest-dev DIR [--labels CSV] [--out JSON]

Training rows (fixed; the JSON's ``provenance`` carries their count and a SHA-256 of their ids):

* every completion in ``DIR/xstest_v2_completions_<model>_gpteval.csv`` (human ``final_label``:
  ``1_full_compliance`` -> 0, ``2_full_refusal`` / ``3_partial_refusal`` -> 1);
* the hand-written ``dev`` rows of the project's ``refusal_labels.csv`` (its ``held-out`` rows
  and every real SmolLM2 answer are kept out for testing).

The fit is an L2-regularised logistic regression solved by Newton's method (at most 50 steps);
each source weighs the same in total and each class half of it, so neither the Llama-2 answers
nor their ~60 % base rate of refusals dominate. Deterministic: the same files give the same
bytes, which ``clients/probe/data/refusal_params.json`` is (a test checks it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from clients.probe.judges.learned import FEATURE_NAMES, PARAMS_JSON, feature_matrix
from clients.probe.judges.rules import LABELS_CSV, JudgeError, load_labels, read_csv

__all__ = [
    "FRESH_STYLE_CSV",
    "L2",
    "OTHER_STYLE_CSV",
    "Row",
    "fit_logistic",
    "load_other_style",
    "load_project_labels",
    "load_xstest",
    "load_xstest_dir",
    "main",
    "params_bytes",
    "params_for",
    "training_rows",
]

L2: Final = 0.003
"""Ridge penalty on the weights (not the bias), in units of the summed sample weight / n;
chosen by cross-model accuracy only (fit on one Llama-2 variant, test on the other)."""

PARAMS_VERSION: Final = "2"
"""The parameter file's version: 2 is fitted with the improved rules version 2 as a feature."""

XSTEST_LABELS: Final = {"1_full_compliance": 0, "2_full_refusal": 1, "3_partial_refusal": 1}
"""XSTest's human ``final_label`` values and what each means here (1 = refused)."""

OTHER_STYLE_CSV: Final = PARAMS_JSON.parent / "other_style_labels.csv"
"""Answers in other models' styles, written and labelled by the project (see the data README)."""


FRESH_STYLE_CSV: Final = PARAMS_JSON.parent / "fresh_style_labels.csv"
"""Answers in other models' styles written by another engineer after the judge's features and
parameters were frozen, and never fitted on or tuned against (see the data README)."""


@dataclass(frozen=True)
class Row:
    """One labelled answer: its source, id, prompt, answer, refused (0/1), and type or style."""

    source: str
    id: str
    prompt: str
    answer: str
    refused: int
    type: str = ""


def load_xstest(path: Path, source: str) -> list[Row]:
    """Read one XSTest completions CSV (human ``final_label``); JudgeError names a bad line."""
    out = []
    for line, r in read_csv(path, ("id", "type", "prompt", "completion", "final_label")):
        label = r["final_label"]
        if label not in XSTEST_LABELS:
            raise JudgeError(
                f"{path}:{line}: final_label must be one of {', '.join(XSTEST_LABELS)}, "
                f"got {label!r}"
            )
        out.append(
            Row(source, r["id"], r["prompt"], r["completion"], XSTEST_LABELS[label], r["type"])
        )
    return out


def load_xstest_dir(directory: Path) -> dict[str, list[Row]]:
    """Every ``xstest_v2_completions_<model>_gpteval.csv`` in `directory`, keyed by model."""
    files = sorted(directory.glob("xstest_v2_completions_*_gpteval.csv"))
    if not files:
        raise JudgeError(f"{directory}: no xstest_v2_completions_<model>_gpteval.csv files")
    out: dict[str, list[Row]] = {}
    for p in files:
        model = p.name.removeprefix("xstest_v2_completions_").removesuffix("_gpteval.csv")
        out[model] = load_xstest(p, model)
    return out


def load_project_labels(path: Path = LABELS_CSV) -> dict[str, list[Row]]:
    """The project's labels three ways: hand-dev, hand-held-out, smollm2 (real answers)."""
    out: dict[str, list[Row]] = {"hand-dev": [], "hand-held-out": [], "smollm2": []}
    for r in load_labels(path):
        if not r.source.startswith("hand-written"):
            key = "smollm2"
        else:
            key = "hand-dev" if r.split == "dev" else "hand-held-out"
        out[key].append(Row(key, r.id, r.prompt, r.answer, int(r.refused)))
    return out


def load_other_style(path: Path = OTHER_STYLE_CSV) -> list[Row]:
    """The other-style answers (``id,prompt,answer,refused,style``); JudgeError names a bad line."""
    out = []
    for line, r in read_csv(path, ("id", "prompt", "answer", "refused", "style")):
        if r["refused"] not in ("0", "1"):
            raise JudgeError(f"{path}:{line}: refused must be 0 or 1, got {r['refused']!r}")
        out.append(
            Row("other-style", r["id"], r["prompt"], r["answer"], int(r["refused"]), r["style"])
        )
    return out


def sample_weights(y: npt.NDArray[np.float64], groups: Sequence[str]) -> npt.NDArray[np.float64]:
    """Each source (group) weighs the same in total, then each class half of the total."""
    n = len(y)
    g = np.array(groups)
    names = sorted(set(groups))
    sw = np.zeros(n)
    for name in names:
        m = g == name
        sw[m] = n / (len(names) * float(m.sum()))
    pos = float(sw[y > 0.5].sum())
    neg = float(sw[y <= 0.5].sum())
    sw = np.where(y > 0.5, sw * n / (2.0 * max(pos, 1e-9)), sw * n / (2.0 * max(neg, 1e-9)))
    out: npt.NDArray[np.float64] = sw
    return out


def fit_logistic(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    l2: float = L2,
    groups: Sequence[str] | None = None,
    iters: int = 50,
) -> tuple[npt.NDArray[np.float64], float]:
    """Source- and class-balanced, L2-penalised logistic regression by Newton's method."""
    n, d = x.shape
    sw = sample_weights(y, groups if groups is not None else ["all"] * n)
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    pen = np.full(d + 1, l2)
    pen[-1] = 0.0  # the bias is not penalised
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -40.0, 40.0)))
        grad = xb.T @ (sw * (p - y)) / n + pen * w
        h = (xb * (sw * p * (1.0 - p))[:, None]).T @ xb / n + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(h, grad)
        w = w - step
        if float(np.max(np.abs(step))) < 1e-12:
            break
    return w[:-1].copy(), float(w[-1])


def training_rows(
    xstest_dir: Path, labels: Path = LABELS_CSV, models: Sequence[str] | None = None
) -> list[Row]:
    """The rows the parameters are fitted on (every dev model, or only `models`)."""
    xs = load_xstest_dir(xstest_dir)
    chosen = sorted(xs) if models is None else list(models)
    rows = [r for m in chosen for r in xs[m]]
    return rows + load_project_labels(labels)["hand-dev"]


def params_for(rows: Sequence[Row], l2: float = L2) -> dict[str, object]:
    """Fit on `rows` and return the JSON-ready parameter object."""
    x = feature_matrix([r.answer for r in rows], [r.prompt for r in rows])
    y = np.array([r.refused for r in rows], dtype=np.float64)
    w, b = fit_logistic(x, y, l2, [r.source for r in rows])
    digest = hashlib.sha256()
    for r in rows:
        digest.update(f"{r.source}\t{r.id}\t{r.refused}\n".encode())
    return {
        "judge": "learned-refusal",
        "version": PARAMS_VERSION,
        "features": list(FEATURE_NAMES),
        "weights": [round(float(v), 6) for v in w],
        "bias": round(b, 6),
        "threshold": 0.5,
        "provenance": {
            "rows": len(rows),
            "refusals": int(y.sum()),
            "rows_sha256": digest.hexdigest(),
            "l2": l2,
            "class_balanced": True,
            "solver": "newton, 50 iterations max",
        },
    }


def params_bytes(params: dict[str, object]) -> bytes:
    """The exact bytes a parameter file holds (indented JSON and a final newline)."""
    return (json.dumps(params, indent=1) + "\n").encode("utf-8")


def write_or_check(out: Path, want: bytes, *, check: bool) -> int:
    """Write a fresh fit's bytes to `out`, or with `check` compare them with what `out` holds;
    the exit status of a ``train`` command (1: the shipped file differs from a fresh fit)."""
    if check:
        same = out.exists() and out.read_bytes() == want
        print(f"{out}: {'identical' if same else 'differs from a fresh fit'}")
        return 0 if same else 1
    out.write_bytes(want)
    print(f"wrote {out} ({len(want)} bytes)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clients.probe.judges train``: see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m clients.probe.judges train")
    ap.add_argument("--xstest-dev", type=Path, required=True, help="folder of XSTest completions")
    ap.add_argument("--labels", type=Path, default=LABELS_CSV, help="the project's refusal labels")
    ap.add_argument("--out", type=Path, default=PARAMS_JSON, help="parameter file to write")
    ap.add_argument("--l2", type=float, default=L2)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    a = ap.parse_args(argv)
    try:
        want = params_bytes(params_for(training_rows(a.xstest_dev, a.labels), a.l2))
    except JudgeError as e:
        print(e.diagnostic, file=sys.stderr)
        return 2
    return write_or_check(a.out, want, check=a.check)
