"""Inspect AI in, ledger out: each sample of an Inspect ``.eval`` log as a signed record.

`import_log` reads a log with Inspect's own reader (`inspect_ai.log.read_eval_log`, optional
extra ``[inspect]``), turns every sample into an `attest.predicates.EvalSample` (task and its
version, model, sample id and epoch, input / target / answer digests, the answer text when it
fits in a log entry, every scorer's verdict, the eval's generate config, token usage), signs
them all, and only then submits them to the evidence log.

Decisions a caller must know:

* **All or nothing before the log.** A log that cannot be read (truncated, not a zip, a corrupt
  member), that did not finish (`status` other than ``success``), that has no samples, or a
  sample that cannot become a record, is refused naming the file and what is wrong — before
  anything is signed or submitted.
* **Resumable, no duplicates.** The signed envelopes are written (atomically) to
  ``<data>/imports/<SHA-256 of the log file>/`` before the first submission, and each returned
  index as it comes; importing the same file again submits exactly those envelopes (the log
  deduplicates identical statements: same index back), so an import cut off mid-way never
  logs a sample twice.
* **What it proves.** The records prove who imported what the log file says, when; they do not
  prove that the model named in the log produced the answers (Inspect loaded the model, not us).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from attest.dsse import Envelope
from attest.errors import AttestError
from attest.jcs import canonicalize
from attest.predicates import CheckpointRef, EvalSample, EvalScore, ModelId
from attest.statement import sign_statement
from attest.tiles import MAX_ENTRY_SIZE

__all__ = [
    "IMPORT_FORMAT",
    "ImportResult",
    "InspectImportError",
    "InspectLogError",
    "InspectUnavailableError",
    "import_log",
    "read_inspect_log",
    "sample_predicates",
]

IMPORT_FORMAT: Final = "behaviour-ledger/inspect-import/v1"

Signers = Sequence[tuple[str, Ed25519PrivateKey]]


class InspectImportError(AttestError):
    """Base class of the importer's errors."""


class InspectUnavailableError(InspectImportError):
    """inspect-ai is not installed (the ``[inspect]`` extra)."""


class InspectLogError(InspectImportError):
    """A log file that is not a finished, readable Inspect eval log."""


def read_inspect_log(path: Path) -> Any:
    """The `EvalLog` at `path`, with its samples; `InspectLogError` naming what is wrong."""
    try:
        from inspect_ai.log import read_eval_log
    except ImportError as e:
        raise InspectUnavailableError(
            "reading Inspect logs needs inspect-ai: pip install 'behaviour-ledger[inspect]'"
        ) from e
    if not path.is_file():
        raise InspectLogError(f"{path}: no such file")
    try:
        log = read_eval_log(str(path))
    except Exception as e:  # Inspect raises ValueError, zipfile, zstd and pydantic errors alike
        msg = str(e).splitlines()[0] if str(e) else ""
        hint = " (truncated, or not an .eval zip archive)" if "EOCD" in msg else ""
        raise InspectLogError(
            f"{path}: not a readable Inspect log{hint}: {type(e).__name__}: {msg[:200]}"
        ) from e
    if log.status != "success":
        raise InspectLogError(f"{path}: the eval did not finish (status {log.status!r})")
    if not log.samples:
        raise InspectLogError(f"{path}: the log holds no samples")
    return log


def _digest(value: object) -> str:
    return hashlib.sha256(canonicalize(_plain(value))).hexdigest()


def _plain(value: object) -> Any:
    """A JSON value for `value` (pydantic models dumped, without None fields)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _plain(dump(mode="json", exclude_none=True))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _usage(sample: Any) -> tuple[int | None, int | None]:
    usage = getattr(sample, "model_usage", None) or {}
    if not usage:
        return None, None
    return (
        sum(int(u.input_tokens or 0) for u in usage.values()),
        sum(int(u.output_tokens or 0) for u in usage.values()),
    )


def sample_predicates(
    log: Any,
    path: Path,
    *,
    seen_checkpoint: CheckpointRef,
    issued_at: int,
    model: str | None = None,
    version: str = "v1",
) -> list[EvalSample]:
    """One EvalSample per sample of `log` (read from `path`), in log order.

    `model` names the model (default: the log's, e.g. ``hf/local``), `version` its version
    label. Raises InspectLogError naming the sample when one cannot become a record.
    """
    ev = log.eval
    config = canonicalize(_plain(ev.model_generate_config)).decode()
    tool_version = (ev.packages or {}).get("inspect_ai", "unknown")
    out = []
    for s in log.samples:
        where = f"{path}: sample {s.id!r} epoch {s.epoch}"
        if s.error is not None:
            raise InspectLogError(f"{where} ended in an error: {str(s.error.message)[:200]}")
        answer = s.output.completion if s.output is not None else ""
        try:
            out.append(
                EvalSample(
                    seen_checkpoint=seen_checkpoint,
                    issued_at=issued_at,
                    tool="inspect_ai",
                    tool_version=str(tool_version),
                    task=str(ev.task),
                    task_version=str(ev.task_version),
                    eval_id=str(ev.eval_id),
                    model=ModelId(name=model or str(ev.model), version=version),
                    sample_id=str(s.id),
                    epoch=int(s.epoch),
                    input_sha256=_digest(s.input),
                    target_sha256=_digest(s.target),
                    answer_sha256=hashlib.sha256(answer.encode()).hexdigest(),
                    answer=answer,
                    scores=tuple(
                        EvalScore(
                            scorer=name,
                            value=canonicalize(_plain(score.value)).decode(),
                            answer=None if score.answer is None else str(score.answer)[:8192],
                        )
                        for name, score in sorted((s.scores or {}).items())
                    ),
                    generate_config=config,
                    config_sha256=hashlib.sha256(config.encode()).hexdigest(),
                    input_tokens=_usage(s)[0],
                    output_tokens=_usage(s)[1],
                )
            )
        except (ValidationError, AttestError, TypeError, ValueError) as e:
            raise InspectLogError(f"{where} cannot be recorded: {str(e).splitlines()[0]}") from e
    return out


def _sign_fitting(pred: EvalSample, signers: Signers, path: Path) -> Envelope:
    """Sign `pred`; an entry over the limit drops the answer text (its digest stays)."""
    env = sign_statement(pred, signers)
    if len(env.canonical_bytes()) > MAX_ENTRY_SIZE and pred.answer is not None:
        env = sign_statement(pred.model_copy(update={"answer": None}), signers)
    size = len(env.canonical_bytes())
    if size > MAX_ENTRY_SIZE:
        raise InspectLogError(
            f"{path}: sample {pred.sample_id!r} makes a {size}-byte entry even without its "
            f"answer text, over the {MAX_ENTRY_SIZE}-byte limit"
        )
    return env


@dataclass(frozen=True)
class ImportResult:
    """An import: the log file's SHA-256, its task and model, and each sample's log index."""

    log_sha256: str
    task: str
    model: str
    samples: tuple[tuple[str, int, int], ...]
    """(sample id, epoch, log index), in log order."""
    resumed: bool


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def import_log(
    path: Path,
    signers: Signers,
    *,
    state_dir: Path,
    seen: Callable[[], CheckpointRef],
    submit: Callable[[Envelope], int],
    clock: Callable[[], float],
    model: str | None = None,
    version: str = "v1",
) -> ImportResult:
    """Import the Inspect log at `path` into a log reached through `seen` and `submit`.

    Plan:
    1. hash the file; if ``<state_dir>/<hash>/state.json`` exists, resume with its envelopes;
    2. else read the log (`read_inspect_log`), build every record (`sample_predicates`) and
       sign them all, then write the envelopes and state (crash point: nothing submitted yet);
    3. submit each envelope not yet submitted, saving its index as it comes (crash point: an
       entry logged but its index unsaved is resubmitted; the log answers with the same index).
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    if not digest:
        raise InspectLogError(f"{path}: no such file")
    run = state_dir / digest
    state_path = run / "state.json"
    resumed = state_path.exists()
    if resumed:  # (1)
        state = json.loads(state_path.read_bytes())
        if state.get("format") != IMPORT_FORMAT:
            raise InspectImportError(f"{state_path} is not an import state")
    else:
        log = read_inspect_log(path)  # (2)
        preds = sample_predicates(
            log, path, seen_checkpoint=seen(), issued_at=int(clock()), model=model, version=version
        )
        envs = [_sign_fitting(p, signers, path) for p in preds]
        for k, env in enumerate(envs):
            _write_atomic(run / f"sample-{k}.json", env.canonical_bytes())
        state = {
            "format": IMPORT_FORMAT,
            "task": preds[0].task,
            "model": preds[0].model.name,
            "samples": [[p.sample_id, p.epoch] for p in preds],
            "indices": {},
        }
        _write_atomic(state_path, json.dumps(state).encode())
        # If we crash here, nothing is in the log; the next import submits these envelopes.
    for k in range(len(state["samples"])):  # (3)
        if str(k) in state["indices"]:
            continue
        env = Envelope.from_json((run / f"sample-{k}.json").read_bytes())
        state["indices"][str(k)] = submit(env)
        _write_atomic(state_path, json.dumps(state).encode())
    return ImportResult(
        log_sha256=digest,
        task=state["task"],
        model=state["model"],
        samples=tuple(
            (str(sid), int(ep), int(state["indices"][str(k)]))
            for k, (sid, ep) in enumerate(state["samples"])
        ),
        resumed=resumed,
    )


# -- in the history ---------------------------------------------------------------------------


def eval_rows(statements: Sequence[Any]) -> list[dict[str, Any]]:
    """The imported eval samples among `statements` (`clients.history.LoggedStatement`s,
    each proved included), as rows: log index, task@version, model@version, sample, epoch,
    scores (scorer=value)."""
    rows = []
    for s in statements:
        p = s.statement.predicate
        if not isinstance(p, EvalSample):
            continue
        rows.append(
            {
                "index": s.index,
                "tool": f"{p.tool} {p.tool_version}",
                "task": f"{p.task}@{p.task_version}",
                "model": f"{p.model.name}@{p.model.version}",
                "sample": p.sample_id,
                "epoch": p.epoch,
                "scores": {sc.scorer: json.loads(sc.value) for sc in p.scores},
                "evalId": p.eval_id,
            }
        )
    return rows


def eval_table(rows: Sequence[dict[str, Any]]) -> str:
    """`eval_rows` as the history's second section: one line per sample."""
    lines = [f"imported eval samples ({len(rows)}, verified):"]
    for r in rows:
        scores = " ".join(f"{k}={json.dumps(v)}" for k, v in r["scores"].items()) or "-"
        lines.append(
            f"  #{r['index']}  {r['task']}  {r['model']}  sample {r['sample']} "
            f"epoch {r['epoch']}  {scores}"
        )
    return "\n".join(lines)
