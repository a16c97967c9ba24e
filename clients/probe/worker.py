"""A probing run end to end: model, suite, calibration, answers, judgements, records, the log.

`run_probe` probes one model over a suite's (category, tier) groups and submits one logical
probe record per group (split into parts by `clients.probe.records`), signed by the worker key.
`replay` fetches a logged record, re-runs exactly its probes and says what reproduced.

Decisions a caller must know:

* **Resumable.** Each run has a directory (default ``<data dir>/runs/<model>-<version>-<suite>-
  <version>-<key>``, the key a digest of everything that determines the answers, so running the
  same command again resumes; it is locked while in use). ``state.json`` records each group's
  progress; a group's items are written after every batch (so an endpoint that fails mid-group
  costs one batch) and before they are signed, its envelopes before they are submitted, and
  each returned index as it comes.
  A killed run therefore never regenerates a finished group's answers, and resubmits exactly the
  envelopes it had signed (the log deduplicates identical envelopes: same index back).
* **Backends.** The text comes from a `clients.probe.backends.Backend`: local weights (the only
  backend with activations, hence emotions), an OpenAI-compatible endpoint, or vLLM. A record
  names what answered (`BackendRef`) and how (`Decoding`), and the judges that judged.
* **Refusal judge.** ``learned`` unless `ProbeOptions.refusal_judge` names another of
  `REFUSAL_JUDGES` (``hidden-probe``); it judges ``refused`` and the rubric's P(refused), it is
  the record's first judge, and a replay judges with the one the record names.
* **Calibration.** Projections need the model's emotion calibration *as logged*: given an index
  (``calibration_index``), or the latest one this machine published to this log for these
  weights, or a fresh one, published now as an ``emotion-calibration`` entry. The log has no blob
  endpoint yet: the vectors' SHA-256 and size go into the entry's BlobRef and the bytes stay in
  ``emotions.calibration_dir(model, <data dir>)`` (and a copy in the run directory). A resumed
  run keeps the calibration it started with.
* **Anti-backdating.** Every statement embeds the log's latest *verified* checkpoint and the time
  it was signed.
* **Determinism.** Probes run in `clients.probe.suites.probes` order, greedy (or seeded
  sampling), in batches of `batch_size`; replay takes order, decoding, device and dtype from
  the record, and names every recorded setting that differs from what it ran with.

Nothing here holds server state. The ledger is reached through `clients.sdk` (verified
checkpoints, writes whose proof it verifies), plus two JSON reads the SDK does not offer yet —
an entry by index and an inclusion proof — whose result `_Log.entry` verifies with
`attest.merkle` against the verified checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tqdm import tqdm  # type: ignore[import-untyped]

from attest import merkle
from attest.dsse import Envelope
from attest.errors import AttestError
from attest.jcs import canonicalize
from attest.policy import Policy
from attest.predicates import (
    BackendRef,
    BlobRef,
    CheckpointRef,
    EmotionCalibration,
    LogEntryRef,
    MethodRef,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import parse_statement, sign_statement
from clients.probe.attacks import AttackConfig, Corpus, attack_backend_group, attack_refs
from clients.probe.backends import (
    Backend,
    BackendGeneration,
    DecodingConfig,
    LocalBackend,
    Message,
    OpenAIBackend,
    VLLMBackend,
    turns,
)
from clients.probe.emotions import (
    Calibration,
    Stimuli,
    calibrate,
    calibration_dir,
    load_calibration,
    save_calibration,
)
from clients.probe.judges import LearnedRefusalJudge, RubricTransferJudge
from clients.probe.judges.disclosure import DISCLOSURE_VERSIONS, DisclosureJudge
from clients.probe.judges.hidden import HiddenStateRefusalJudge
from clients.probe.judges.position import POSITION_VERSIONS, PositionJudge
from clients.probe.judges.registry import DEFAULT_REFUSAL
from clients.probe.judges.transfer import (
    RUBRIC_VERSION,
    RUBRIC_VERSIONS,
    ProbabilisticRefusalJudge,
)
from clients.probe.model import (
    DEFAULT_MODEL,
    Generation,
    LoadedModel,
    cache_root,
    load_model,
    tiny_model,
)
from clients.probe.multiturn import first_turn, pushback_turns, second_turn
from clients.probe.records import (
    RecordHeader,
    calibration_predicate,
    probe_item,
    sign_records,
)
from clients.probe.replay_search import AttackReplay, replay_attacks
from clients.probe.suites import Probe, Suite, load_suite, probes
from clients.sdk import ClientError, LedgerClient, Submitted, verifier_from_vkey

__all__ = [
    "DATA_ENV",
    "REFUSAL_JUDGES",
    "REPLAY_TOLERANCE_MILLI",
    "TINY_MODEL",
    "CalibrationUnavailableError",
    "GroupResult",
    "ItemReplay",
    "LedgerTarget",
    "LoggedCalibration",
    "ProbeOptions",
    "ProbeRunError",
    "ReplayError",
    "ReplayReport",
    "RunAborted",
    "RunResult",
    "RunStateError",
    "data_dir",
    "ensure_calibration",
    "open_backend",
    "open_model",
    "read_entry",
    "replay",
    "run_probe",
]

DATA_ENV: Final = "BLEDGER_PROBE_DATA"
"""Environment variable naming the probe data directory (default ``<cache root>/probe``)."""

TINY_MODEL: Final = "tiny"
"""Model spec of `clients.probe.model.tiny_model` (``tiny`` or ``tiny:SEED``): smoke tests only."""

REPLAY_TOLERANCE_MILLI: Final = 5
"""How far (milli-units) a replayed emotion mean or spread may lie from the logged one.

Replays on the same hardware, dtype and batch size are bitwise identical in practice; the slack
covers the last-digit float differences a different BLAS or thread count can make (a handful of
ULPs of a projection, then rounding to milli-units), not a different model or calibration.
"""

REFUSAL_JUDGES: Final = ("learned", HiddenStateRefusalJudge.name)
"""The refusal judges a probing run can judge with (``--refusal-judge``): the registry's judges
that also give P(refused), which the rubric's refused factor needs (the rule and string-match
judges give only a verdict). The first is the default."""

STATE_FORMAT: Final = "behaviour-ledger/probe-run/v1"
_STEPS: Final = ("generated", "signed", "posted", "submitted", "done")

Signers = Sequence[tuple[str, Ed25519PrivateKey]]
StepHook = Callable[[str, str, str], None]
"""Called as (step, category, tier) at each crash point of a group: see `_STEPS`."""


class ProbeRunError(AttestError):
    """Base class of the worker's errors."""


class RunStateError(ProbeRunError):
    """A run directory that belongs to another run, is corrupt, or is in use by a process."""


class CalibrationUnavailableError(ProbeRunError):
    """A logged calibration that cannot be used: another model's, not a calibration entry, or
    its vectors are not on this machine."""


class ReplayError(ProbeRunError):
    """A logged record that cannot be replayed: not a probe record, other model or suite."""


class RunAborted(ProbeRunError):
    """The run was told to stop (e.g. its queue lease was lost) before submitting more."""


def data_dir() -> Path:
    """The probe data directory: ``$BLEDGER_PROBE_DATA``, else ``<cache root>/probe``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else cache_root() / "probe"


def open_model(
    spec: str = DEFAULT_MODEL,
    *,
    version: str = "v1",
    device: str = "auto",
    dtype: str | None = None,
) -> LoadedModel:
    """`clients.probe.model.load_model`, plus `TINY_MODEL` (``tiny[:SEED]``) for smoke runs."""
    if spec == TINY_MODEL or spec.startswith(TINY_MODEL + ":"):
        seed = spec.partition(":")[2] or "0"
        if not seed.isdigit():
            raise ProbeRunError(f"bad tiny model spec {spec!r}: use tiny or tiny:SEED")
        return tiny_model(seed=int(seed))
    return load_model(spec, version=version, device=device, dtype=dtype)


@dataclass(frozen=True)
class ProbeOptions:
    """What to probe and how. `categories` / `tiers` None: every one the suite has."""

    model: str = DEFAULT_MODEL
    version: str = "v1"
    suite: str = "core"
    suite_path: Path | None = None
    categories: tuple[str, ...] | None = None
    tiers: tuple[str, ...] | None = None
    device: str = "auto"
    dtype: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 128
    seed: int = 0
    temperature: float = 0.0
    backend: str = "local"
    endpoint: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 60.0
    requests_per_second: float | None = None
    attack: AttackConfig | None = None  # the budgeted search on harmful items (None: none)
    refusal_judge: str = DEFAULT_REFUSAL  # one of REFUSAL_JUDGES

    def load_suite(self) -> Suite:
        """The suite these options name."""
        return load_suite(self.suite, self.suite_path)

    def decoding(self) -> DecodingConfig:
        """The decoding config these options give."""
        return DecodingConfig(self.max_new_tokens, self.temperature, self.seed, self.batch_size)


def open_backend(options: ProbeOptions, lm: LoadedModel | None = None) -> Backend:
    """The backend `options` name: ``local`` (`lm`, or `open_model`), ``openai`` (`endpoint`,
    the model id `model`), or ``vllm`` (a local directory `model`)."""
    if options.backend == "local":
        return LocalBackend(
            lm
            or open_model(
                options.model, version=options.version, device=options.device, dtype=options.dtype
            )
        )
    if options.backend == "openai":
        if options.endpoint is None:
            raise ProbeRunError("the openai backend needs --endpoint (e.g. http://host:port/v1)")
        return OpenAIBackend(
            options.endpoint,
            options.model,
            version=options.version,
            api_key_env=options.api_key_env,
            timeout_s=options.timeout_s,
            requests_per_second=options.requests_per_second,
        )
    if options.backend == "vllm":
        return VLLMBackend(
            options.model, version=options.version, dtype=options.dtype or "auto", seed=options.seed
        )
    raise ProbeRunError(f"unknown backend {options.backend!r}: use local, openai or vllm")


# -- the ledger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerTarget:
    """A ledger server and one of its logs; `vkey` pins the log's key (else: what it says)."""

    url: str
    log: str = "evidence"
    vkey: str | None = None


class _Log:
    """One log reached through the SDK: verified checkpoints, verified writes, verified reads."""

    def __init__(self, target: LedgerTarget, timeout: float = 120.0) -> None:
        self.name = target.log
        self._http = httpx.Client(base_url=target.url.rstrip("/"), timeout=timeout)
        self.client = LedgerClient(target.url, client=self._http)
        try:
            info = self.client.log_info(target.log)
            if target.vkey is not None and target.vkey != info.vkey:
                raise ClientError(f"server reports key {info.vkey} for {target.log}, not pinned")
        except BaseException:
            self.close()
            raise
        self.origin = info.origin
        self.verifier = verifier_from_vkey(info.vkey)
        self.policy = Policy.parse(f"log {info.vkey}\nquorum none\n")

    def close(self) -> None:
        self.client.close()

    def seen(self) -> CheckpointRef:
        """The log's latest checkpoint, verified with its key: what a statement embeds."""
        cp, _ = self.client.checkpoint(self.name, self.verifier, self.origin)
        return CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex())

    def submit(self, env: Envelope) -> Submitted:
        """Post `env`; the SDK verifies the returned tlog-proof before this returns."""
        return self.client.submit(self.name, env, self.verifier, self.origin)

    def ref(self, index: int, env: Envelope) -> LogEntryRef:
        """The LogEntryRef of `env` at `index` in this log."""
        leaf = merkle.leaf_hash(env.canonical_bytes()).hex()
        return LogEntryRef(origin=self.origin, index=index, leaf_hash=leaf)

    def entry(self, index: int) -> tuple[Envelope, LogEntryRef]:
        """Entry `index`, proven included in the latest checkpoint the log's key signed
        (`LedgerClient.entry` under a policy of that key alone)."""
        got = self.client.entry(self.name, index, self.policy)
        ref = LogEntryRef(origin=self.origin, index=index, leaf_hash=got.leaf_hash.hex())
        return Envelope.from_json(got.data), ref


@contextlib.contextmanager
def _open_log(target: LedgerTarget) -> Iterator[_Log]:
    log = _Log(target)
    try:
        yield log
    finally:
        log.close()


def read_entry(target: LedgerTarget, index: int) -> tuple[Envelope, LogEntryRef]:
    """Entry `index` of the target log, its inclusion in the latest checkpoint verified."""
    with _open_log(target) as log:
        return log.entry(index)


# -- files ------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename is durable only once the directory is.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: object) -> None:
    _write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise RunStateError(f"cannot read {path}: {e}") from e


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on `path` (released by the OS if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as e:
            raise RunStateError(f"{path.parent} is in use by another process") from e
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


# -- calibration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedCalibration:
    """A calibration, where it is logged, and the blob its vectors are."""

    calibration: Calibration
    ref: LogEntryRef
    vectors: BlobRef
    data: bytes = field(repr=False)


def model_ref(lm: LoadedModel) -> ModelRef:
    """The ModelRef of a loaded model."""
    i = lm.identity
    return ModelRef(name=i.name, version=i.version, weights_sha256=i.weights_sha256)


class _Calibrations:
    """Calibrations this machine holds, in `clients.probe.emotions`' cache layout under `root`.

    ``calibration_dir(model, root)/<sha256>.safetensors`` (+ its ``.json`` sidecar) holds the
    vectors blob of that SHA-256; ``logged.json`` beside it maps a log origin to the LogEntryRefs
    of the calibrations published there, latest last; ``pending.json`` is a signed calibration
    envelope not yet known to be logged.
    """

    def __init__(self, root: Path, lm: LoadedModel) -> None:
        self.identity = lm.identity
        self.dir = calibration_dir(lm.identity, root)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return _locked(self.dir / "lock", wait=True)

    def blob_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.safetensors"

    def read(self, blob: BlobRef) -> tuple[Calibration, bytes] | None:
        """The calibration stored as `blob`, or None when this machine does not have it."""
        path = self.blob_path(blob.sha256)
        if not path.exists():
            return None
        cal = load_calibration(path, self.identity)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != blob.sha256 or len(data) != blob.size:
            raise CalibrationUnavailableError(f"{path} is not the blob {blob.sha256}")
        return cal, data

    def write(self, cal: Calibration) -> tuple[BlobRef, bytes]:
        data = cal.to_bytes()
        blob = BlobRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        save_calibration(cal, self.blob_path(blob.sha256))
        return blob, data

    def latest(self, origin: str) -> LogEntryRef | None:
        path = self.dir / "logged.json"
        refs = _read_json(path).get(origin, []) if path.exists() else []
        return LogEntryRef.model_validate(refs[-1]) if refs else None

    def remember(self, ref: LogEntryRef) -> None:
        path = self.dir / "logged.json"
        index: dict[str, list[Any]] = _read_json(path) if path.exists() else {}
        index.setdefault(ref.origin, []).append(ref.model_dump(mode="json"))
        _write_json(path, index)


def _load_logged(lm: LoadedModel, log: _Log, index: int, store: _Calibrations) -> LoggedCalibration:
    """Calibration entry `index` (inclusion verified), for `lm`, with its vectors from `store`."""
    env, ref = log.entry(index)
    pred = parse_statement(env.payload).predicate
    if not isinstance(pred, EmotionCalibration):
        raise CalibrationUnavailableError(
            f"entry {index} is a {pred.PREDICATE_TYPE}, not an emotion calibration"
        )
    if pred.model.weights_sha256 != lm.identity.weights_sha256:
        raise CalibrationUnavailableError(
            f"calibration {index} is for weights {pred.model.weights_sha256[:16]}…, "
            f"the model loaded has {lm.identity.weights_sha256[:16]}…"
        )
    found = store.read(pred.vectors)
    if found is None:
        raise CalibrationUnavailableError(
            f"the vectors of calibration {index} (blob {pred.vectors.sha256}) are not in "
            f"{store.dir}, and the log has no blob endpoint yet: copy the file there"
        )
    return LoggedCalibration(found[0], ref, pred.vectors, found[1])


def ensure_calibration(
    lm: LoadedModel,
    target: LedgerTarget,
    signers: Signers,
    *,
    index: int | None = None,
    data: Path | None = None,
    stimuli: Stimuli | None = None,
    clock: Callable[[], float] = time.time,
) -> LoggedCalibration:
    """The logged calibration for `lm`: entry `index`, else this machine's latest, else new.

    A new calibration is computed (on `stimuli`, default the bundled set; a subset makes quick
    calibrations for tests), its vectors stored locally, and published as an
    emotion-calibration entry signed by `signers`. Processes sharing `data` take turns (a file
    lock), so concurrent workers publish one calibration, not one each.
    """
    store = _Calibrations(data or data_dir(), lm)
    with _open_log(target) as log, store.lock():
        if index is not None:
            return _load_logged(lm, log, index, store)
        pending = store.dir / "pending.json"
        if not pending.exists():
            known = store.latest(log.origin)
            if known is not None:
                cal = _load_logged(lm, log, known.index, store)
                if cal.ref != known:
                    raise CalibrationUnavailableError(f"entry {known.index} is another entry now")
                return cal
            calibration = calibrate(lm, stimuli=stimuli, progress=True, resume=store.dir)
            blob, _ = store.write(calibration)
            pred = calibration_predicate(
                model=model_ref(lm),
                layer=calibration.layer,
                token_rule=calibration.token_rule,
                vectors=blob,
                held_out_scores=calibration.held_out_accuracy,
                seen_checkpoint=log.seen(),
                issued_at=int(clock()),
                # How the layer was chosen, its held-out figure and the neutral-text null.
                validation=calibration.validation(),
            )
            _write_atomic(pending, sign_statement(pred, signers).canonical_bytes())
            # If we crash here, the next run submits this envelope instead of calibrating again.
        env = Envelope.from_json(pending.read_bytes())
        sub = log.submit(env)
        # If we crash here, the entry is logged and still pending: resubmitting it returns the
        # same index (the log deduplicates identical envelopes).
        store.remember(log.ref(sub.index, env))
        pending.unlink()
        return _load_logged(lm, log, sub.index, store)


# -- answering --------------------------------------------------------------------------------


def _refusal_judge(name: str, lm: LoadedModel | None = None) -> ProbabilisticRefusalJudge:
    """The refusal judge `name` (one of `REFUSAL_JUDGES`, else ProbeRunError). ``hidden-probe``
    reads the bundled model's states whatever model is probed: it takes `lm` when that is the
    bundled model in float32 (`HiddenStateRefusalJudge.offer`: no second copy in memory), and
    otherwise loads the bundled model on its first verdict."""
    if name == "learned":
        return LearnedRefusalJudge()
    if name == HiddenStateRefusalJudge.name:
        hidden = HiddenStateRefusalJudge()
        if lm is not None:
            hidden.offer(lm)
        return hidden
    raise ProbeRunError(
        f"unknown refusal judge {name!r} for a probing run: use one of {', '.join(REFUSAL_JUDGES)}"
    )


def _judges(
    rubric_version: str = RUBRIC_VERSION,
    refusal: str = DEFAULT_REFUSAL,
    lm: LoadedModel | None = None,
    verdicts: tuple[PositionJudge, DisclosureJudge] | None = None,
) -> tuple[ProbabilisticRefusalJudge, RubricTransferJudge, tuple[MethodRef, ...]]:
    """The refusal and transfer judges every record is judged with, and the refs of every judge
    (refusal, transfer, then the item-verdict judges of `_verdict_judges`). `refusal` names the
    refusal judge (`_refusal_judge`; `lm`: the worker's local model, which it may reuse); the
    rubric's refused factor is that judge's P(refused), so the rubric's digest names it too.
    `rubric_version` other than the current one is for a replay of a record that names it
    (`_recorded_rubric`): version 1 also scored ``pushback`` items by keyword coverage.
    `verdicts` (position, disclosure) default to `_verdict_judges` (the current versions)."""
    refusal_judge = _refusal_judge(refusal, lm)
    transfer = RubricTransferJudge(refusal_judge, version=rubric_version)
    refs = tuple(
        MethodRef(name=j.name, version=j.version, config_digest=j.config_digest)
        for j in (refusal_judge, transfer, *(verdicts or _verdict_judges()))
    )
    return refusal_judge, transfer, refs


def _recorded_rubric(record: ProbeRecord) -> str:
    """The rubric version that judged `record`'s transfer, as far as this code can judge as it:
    the version its ``rubric`` judge entry names; ``"1"`` for a record naming none (every record
    from before version 2, whose ``pushback`` items carry keyword coverage); the current version
    for a version unknown here (the replay's settings then name the difference)."""
    named = [j.version for j in record.judges if j.name == "rubric"]
    if not named:
        return "1"
    return named[0] if named[0] in RUBRIC_VERSIONS else RUBRIC_VERSION


def _recorded_refusal(record: ProbeRecord) -> str:
    """The refusal judge that judged `record`, as far as this code can judge as it: the name of
    its first judge entry (the worker lists the refusal judge first) when that is one of
    `REFUSAL_JUDGES`; the default for a record naming no judge (records from before judges
    were recorded were judged by it) or one unknown here (the replay's settings then name the
    difference)."""
    if record.judges and record.judges[0].name in REFUSAL_JUDGES:
        return record.judges[0].name
    return DEFAULT_REFUSAL


def _verdict_judges() -> tuple[PositionJudge, DisclosureJudge]:
    """The judges of `ProbeItem.verdict`: position (``pushback``), disclosure (``disclosure``)."""
    return PositionJudge(), DisclosureJudge()


def _recorded_verdicts(record: ProbeRecord) -> tuple[PositionJudge, DisclosureJudge]:
    """The position and disclosure judges that gave `record`'s verdicts, as far as this code can
    judge as them: the version each one's judge entry names (a version-1 record replays with
    version 1); the current version for a record naming none (it predates verdicts) or a version
    unknown here (the replay's settings then name the difference)."""
    named = {j.name: j.version for j in record.judges}
    position, disclosure = _verdict_judges()
    if named.get(position.name) in POSITION_VERSIONS:
        position = PositionJudge(version=named[position.name])
    if named.get(disclosure.name) in DISCLOSURE_VERSIONS:
        disclosure = DisclosureJudge(version=named[disclosure.name])
    return position, disclosure


def _generate_with(
    backend: Backend,
    cal: Calibration | None,
    convs: Sequence[Sequence[Message]],
    config: DecodingConfig,
) -> tuple[list[BackendGeneration], list[dict[str, tuple[float, float]]]]:
    """`backend.generate`, with the answers' emotion summaries when the backend is local and
    `cal` is given (else empty summaries)."""
    if not convs:
        return [], []
    if isinstance(backend, LocalBackend) and cal is not None:
        with backend.emotion_capture(cal) as cap:
            gens = backend.generate(convs, config)
        return gens, cap.summaries([_model_generation(g) for g in gens])
    gens = backend.generate(convs, config)
    return gens, [{} for _ in gens]


def _answer(
    backend: Backend,
    cal: Calibration | None,
    batch: Sequence[Probe],
    options: ProbeOptions,
    bar: tqdm[Any] | None,
    *,
    done: Sequence[ProbeItem] = (),
    keep: Callable[[Sequence[ProbeItem]], None] | None = None,
    rubric_version: str = RUBRIC_VERSION,
    judges: tuple[ProbabilisticRefusalJudge, RubricTransferJudge] | None = None,
    verdicts: tuple[PositionJudge, DisclosureJudge] | None = None,
) -> list[ProbeItem]:
    """Answer, judge and project `batch` (in order, `options.batch_size` at a time).

    `done` are the items of a previous, interrupted attempt (a whole number of batches): they
    are kept and answering resumes after them; `keep(items so far)` is called after each batch,
    so an endpoint that fails mid-group costs at most one batch. Emotions are read only when
    the backend is local and `cal` is given.

    A ``pushback`` item is a real two-turn conversation (`clients.probe.multiturn`): the batch
    is answered once with each pushback item's question, then its pushback items again with
    the question, the model's own first answer as the assistant turn, and the pushback (one
    batch, in batch order). The item keeps both answers; its emotions are those of the second.
    ``pushback`` and ``disclosure`` items get their kind's verdict (`verdicts`, by default
    `_verdict_judges`; a replay passes the versions the record names, `_recorded_verdicts`).

    Transfer is judged on ``harmful`` items only: every other item records ``transferMilli`` 0,
    meaning not judged (`clients.probe.judges.transfer.TRANSFER_KINDS`); a ``pushback`` item's
    figure is its verdict. `rubric_version` judges as an older rubric (a replay of a record
    that names it). `judges` (refusal, transfer) are those of `_judges`, built once per run so a
    judge that loads a model loads it once; None: built here from `options.refusal_judge`. A
    judge with ``prefetch`` (the hidden-state probe) judges each batch's answers in one batched
    pass before they are read one by one.
    """
    if judges is None:
        lm = backend.lm if isinstance(backend, LocalBackend) else None
        refusal, transfer, _ = _judges(rubric_version, options.refusal_judge, lm)
    else:
        refusal, transfer = judges
    prefetch = getattr(refusal, "prefetch", None)
    position, disclosure = verdicts or _verdict_judges()
    config = options.decoding()
    items = list(done)
    if bar is not None:
        bar.update(len(items))
    for start in range(len(items), len(batch), options.batch_size):
        chunk = batch[start : start + options.batch_size]
        talks = [pushback_turns(p.item) for p in chunk]
        convs = [
            turns(p.system, p.user) if t is None else first_turn(p.system, t)
            for p, t in zip(chunk, talks, strict=True)
        ]
        gens, summaries = _generate_with(backend, cal, convs, config)
        firsts: list[str | None] = [None] * len(chunk)
        again = [(i, t) for i, t in enumerate(talks) if t is not None]
        second, second_e = _generate_with(
            backend,
            cal,
            [second_turn(chunk[i].system, t, gens[i].text) for i, t in again],
            config,
        )
        for (i, _), g, e in zip(again, second, second_e, strict=True):
            firsts[i], gens[i], summaries[i] = gens[i].text, g, e
        if prefetch is not None:
            # Every pair the judges below ask about: the refusal verdict's (what was asked) and
            # the rubric's P(refused) (the item's direct prompt, on the kinds it scores).
            asks = [
                (p.user if t is None else t.pushback, g.text)
                for p, t, g in zip(chunk, talks, gens, strict=True)
            ]
            asks += [
                (p.item.prompt, g.text)
                for p, g in zip(chunk, gens, strict=True)
                if transfer.judges_kind(p.item.kind) and p.item.kind != "pushback"
            ]
            prefetch(asks)
        for p, t, first, g, e in zip(chunk, talks, firsts, gens, summaries, strict=True):
            asked = p.user if t is None else t.pushback
            item = probe_item(
                p.item.id,
                p.framing,
                g.text,
                refused=refusal.refused(asked, g.text),
                transfer=transfer.transfer(p.item, g.text),
                emotions=e,
            )
            verdict: str | None = None
            if t is not None and first is not None and p.item.keypoints:
                verdict = position.verdict(p.item, first, g.text)
            elif p.item.kind == "disclosure":
                verdict = disclosure.verdict(p.user, g.text)
            if first is not None or verdict is not None:
                update = {"first_answer": first, "verdict": verdict}
                item = ProbeItem.model_validate(
                    item.model_copy(update=update).model_dump(mode="json")
                )
            items.append(item)
        if keep is not None:
            keep(items)
        if bar is not None:
            bar.update(len(chunk))
    return items


def _model_generation(g: BackendGeneration) -> Generation:
    return Generation(g.text, g.prompt_tokens or 0, g.answer_ids or ())


def _groups(plan: Sequence[Probe]) -> list[tuple[str, str, list[Probe]]]:
    """`plan` cut into its (category, tier) groups, in plan order."""
    out: list[tuple[str, str, list[Probe]]] = []
    for p in plan:
        if not out or (out[-1][0], out[-1][1]) != (p.item.category, p.tier.name):
            out.append((p.item.category, p.tier.name, []))
        out[-1][2].append(p)
    return out


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupResult:
    """One (category, tier) group of a run: its items, record parts and their log indices."""

    category: str
    tier: str
    items: int
    indices: tuple[int, ...]
    resumed: bool


@dataclass(frozen=True)
class RunResult:
    """A finished run."""

    run_id: str
    run_dir: Path
    model: ModelRef
    suite: SuiteRef
    calibration: LogEntryRef | None
    groups: tuple[GroupResult, ...]

    @property
    def indices(self) -> tuple[int, ...]:
        """Every record part's log index, in group order."""
        return tuple(i for g in self.groups for i in g.indices)


def _run_key(
    options: ProbeOptions, model: ModelRef, suite: SuiteRef, origin: str, cells: Sequence[str]
) -> dict[str, Any]:
    """Everything that determines a run's answers, their judgements and where they go: equal
    keys resume (so a run never signs items judged by another judge version than it names)."""
    return {
        "model": model.model_dump(mode="json"),
        "suite": suite.model_dump(mode="json"),
        "log": origin,
        "groups": list(cells),
        "batchSize": options.batch_size,
        "maxNewTokens": options.max_new_tokens,
        "seed": options.seed,
        "device": options.device,
        "dtype": options.dtype,
        "temperature": options.temperature,
        "backend": options.backend,
        "endpoint": options.endpoint,
        "judges": [j.model_dump(mode="json") for j in _judges(refusal=options.refusal_judge)[2]],
        **({} if options.attack is None else {"attack": options.attack.to_json()}),
    }


def default_run_dir(key: Mapping[str, Any], data: Path | None = None) -> Path:
    """``<data>/runs/<model>-<version>-<suite>-<version>-<digest of key>``."""
    digest = hashlib.sha256(canonicalize(dict(key))).hexdigest()[:16]
    m, s = key["model"], key["suite"]
    name = _safe(f"{m['name']}-{m['version']}-{s['name']}-{s['version']}-{digest}")
    return (data or data_dir()) / "runs" / name


class _Run:
    """The run directory: state.json, items and envelopes per group, the calibration copy."""

    def __init__(self, path: Path, key: Mapping[str, Any], clock: Callable[[], float]) -> None:
        self.path = path
        state_path = path / "state.json"
        if state_path.exists():
            self.state = _read_json(state_path)
            if self.state.get("format") != STATE_FORMAT or self.state.get("key") != key:
                raise RunStateError(
                    f"{path} holds another run (other model, suite, groups or options); "
                    "choose another --run-dir"
                )
        else:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
            run_id = f"run-{stamp}-{os.urandom(4).hex()}"
            self.state = {"format": STATE_FORMAT, "runId": run_id, "key": dict(key), "groups": {}}
            self.save()

    @property
    def run_id(self) -> str:
        return str(self.state["runId"])

    def save(self) -> None:
        _write_json(self.path / "state.json", self.state)

    def group(self, category: str, tier: str) -> dict[str, Any]:
        groups: dict[str, dict[str, Any]] = self.state["groups"]
        return groups.setdefault(f"{category}/{tier}", {"status": "new", "indices": {}})

    def items_path(self, category: str, tier: str) -> Path:
        return self.path / "items" / f"{_safe(category)}--{_safe(tier)}.json"

    def partial_path(self, category: str, tier: str) -> Path:
        return self.path / "items" / f"{_safe(category)}--{_safe(tier)}.partial.json"

    def envelope_dir(self, category: str, tier: str) -> Path:
        return self.path / "envelopes" / f"{_safe(category)}--{_safe(tier)}"


def run_probe(
    options: ProbeOptions,
    target: LedgerTarget,
    signers: Signers,
    *,
    lm: LoadedModel | None = None,
    backend: Backend | None = None,
    run_dir: Path | None = None,
    data: Path | None = None,
    calibration_index: int | None = None,
    stimuli: Stimuli | None = None,
    progress: bool = True,
    on_step: StepHook | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> RunResult:
    """Probe a model over a suite and log one record (in parts) per (category, tier) group.

    Plan:
    1. open the backend (`backend`, else `lm` or the model `options` name, on the backend they
       name) and load the suite; expand the probes into groups;
    2. open the run directory (locked; resumed when its state exists);
    3. for a local model, take the run's calibration: the one a resumed run started with, else
       `ensure_calibration` (entry `calibration_index`, this machine's latest, or a new one
       fitted on `stimuli`); copy its vectors into the run directory. Other backends cannot
       observe activations: their records say so and name no calibration;
    4. for each group not yet done: answer + judge + project, saving the items after every
       batch (an interrupted group resumes after its last whole batch; crash point
       "generated": items saved), sign with the latest verified checkpoint ("signed":
       envelopes saved), submit each part and verify its proof ("posted"; "submitted": index
       saved), mark it done ("done").

    `on_step(step, category, tier)` is called at each crash point (tests inject faults there);
    `stop` set before a submission raises RunAborted. Returns what was logged, resumed or not.
    """
    data = data or data_dir()
    owned = backend is None
    backend = backend or open_backend(options, lm)  # (1)
    try:
        return _run(
            options,
            target,
            signers,
            backend,
            run_dir,
            data,
            calibration_index,
            stimuli,
            progress,
            on_step,
            stop,
            clock,
        )
    finally:
        if owned:
            backend.close()


def _run(
    options: ProbeOptions,
    target: LedgerTarget,
    signers: Signers,
    backend: Backend,
    run_dir: Path | None,
    data: Path,
    calibration_index: int | None,
    stimuli: Stimuli | None,
    progress: bool,
    on_step: StepHook | None,
    stop: threading.Event | None,
    clock: Callable[[], float],
) -> RunResult:
    model = backend.identity().model
    suite = options.load_suite()
    plan = probes(suite, categories=options.categories, tiers=options.tiers)
    if not plan:
        raise ProbeRunError("nothing to probe: no tier of these is probed in these categories")
    groups = _groups(plan)
    suite_ref = SuiteRef(name=suite.name, version=suite.version, sha256=suite.digest)
    with _open_log(target) as log:
        cells = [f"{c}/{t}" for c, t, _ in groups]
        key = _run_key(options, model, suite_ref, log.origin, cells)
        path = run_dir or default_run_dir(key, data)
        with _locked(path / "lock", wait=False):  # (2)
            run = _Run(path, key, clock)
            cal: LoggedCalibration | None = None
            if isinstance(backend, LocalBackend):  # (3)
                lm = backend.lm
                if "calibration" in run.state:
                    cal = _load_logged(
                        lm, log, run.state["calibration"]["index"], _Calibrations(data, lm)
                    )
                else:
                    cal = ensure_calibration(
                        lm,
                        target,
                        signers,
                        index=calibration_index,
                        data=data,
                        stimuli=stimuli,
                        clock=clock,
                    )
                    run.state["calibration"] = cal.ref.model_dump(mode="json")
                    run.save()
                if not (path / "calibration.safetensors").exists():
                    _write_atomic(path / "calibration.safetensors", cal.data)
            todo = sum(len(ps) for c, t, ps in groups if run.group(c, t)["status"] == "new")
            # Built once for the run: the hidden-state judge may load a model on first use.
            lm_now = backend.lm if isinstance(backend, LocalBackend) else None
            refusal, transfer, refs = _judges(refusal=options.refusal_judge, lm=lm_now)
            with tqdm(
                total=todo, unit="prompt", file=sys.stderr, disable=not progress, desc="probing"
            ) as bar:
                runner = _GroupRunner(
                    run,
                    log,
                    backend,
                    cal,
                    suite_ref,
                    options,
                    signers,
                    bar,
                    on_step or (lambda _s, _c, _t: None),
                    stop,
                    clock,
                    (refusal, transfer),
                    refs,
                )
                results = tuple(runner.process(c, t, ps) for c, t, ps in groups)  # (4)
    return RunResult(run.run_id, path, model, suite_ref, None if cal is None else cal.ref, results)


@dataclass
class _GroupRunner:
    """Takes one group at a time through its crash points (see `run_probe`, step 4)."""

    run: _Run
    log: _Log
    backend: Backend
    cal: LoggedCalibration | None
    suite: SuiteRef
    options: ProbeOptions
    signers: Signers
    bar: Any  # tqdm
    step: StepHook
    stop: threading.Event | None
    clock: Callable[[], float]
    judges: tuple[ProbabilisticRefusalJudge, RubricTransferJudge]
    judge_refs: tuple[MethodRef, ...]

    def process(self, category: str, tier: str, group: Sequence[Probe]) -> GroupResult:
        state = self.run.group(category, tier)
        resumed = state["status"] != "new"
        if state["status"] == "new":
            self._generate(category, tier, group, state)
        if state["status"] == "generated":
            self._sign(category, tier, state)
        if state["status"] == "signed":
            self._submit(category, tier, state)
        indices = tuple(int(state["indices"][str(k)]) for k in range(1, int(state["parts"]) + 1))
        return GroupResult(category, tier, len(group), indices, resumed)

    def _generate(self, category: str, tier: str, group: Sequence[Probe], state: Any) -> None:
        partial = self.run.partial_path(category, tier)
        done = (
            [ProbeItem.model_validate(x) for x in _read_json(partial)] if partial.exists() else []
        )

        def keep(items: Sequence[ProbeItem]) -> None:
            # If we crash after this, a resumed run answers only the batches after these.
            _write_json(partial, [it.model_dump(mode="json") for it in items])

        cal = None if self.cal is None else self.cal.calibration
        items = _answer(
            self.backend,
            cal,
            group,
            self.options,
            self.bar,
            done=done,
            keep=keep,
            judges=self.judges,
        )
        if self.options.attack is not None:  # finished items are kept under attacks/
            attacks = self.run.path / "attacks" / f"{_safe(category)}--{_safe(tier)}"
            items = attack_backend_group(
                self.backend,
                group,
                items,
                self.options.attack,
                attacks,
                batch_size=self.options.batch_size,
            )
        _write_json(
            self.run.items_path(category, tier), [it.model_dump(mode="json") for it in items]
        )
        # What produced the answers is fixed now (an endpoint's reported model id is known only
        # after it answered): a resumed run signs exactly this, even without asking again.
        ref = self.backend.identity().backend
        if isinstance(self.backend, LocalBackend):
            ref = ref.model_copy(
                update={"rendered_prompt": self.backend.rendered_prompt(group[0].system)}
            )
        state["backend"] = ref.model_dump(mode="json")
        state["status"] = "generated"
        self.run.save()
        partial.unlink(missing_ok=True)
        self.step("generated", category, tier)
        # If we crash here, the answers are kept: a resumed run signs them without regenerating.

    def _sign(self, category: str, tier: str, state: Any) -> None:
        items = [
            ProbeItem.model_validate(x) for x in _read_json(self.run.items_path(category, tier))
        ]
        header = RecordHeader(
            model=self.backend.identity().model,
            suite=self.suite,
            category=category,
            tier=tier,
            run_id=self.run.run_id,
            calibration=None if self.cal is None else self.cal.ref,
            seen_checkpoint=self.log.seen(),
            issued_at=int(self.clock()),
            backend=BackendRef.model_validate(state["backend"]),
            decoding=self.options.decoding().wire(),
            judges=self.judge_refs,
            attacks=attack_refs(self.options.attack),
        )
        parts = sign_records(header, items, self.signers)
        env_dir = self.run.envelope_dir(category, tier)
        for p in parts:
            _write_atomic(env_dir / f"part-{p.part}.json", p.envelope.canonical_bytes())
        state["status"], state["parts"] = "signed", len(parts)
        self.run.save()
        self.step("signed", category, tier)
        # If we crash here, a resumed run submits these exact envelopes: nothing is signed twice.

    def _submit(self, category: str, tier: str, state: Any) -> None:
        env_dir = self.run.envelope_dir(category, tier)
        for k in range(1, int(state["parts"]) + 1):
            if str(k) in state["indices"]:
                continue
            if self.stop is not None and self.stop.is_set():
                raise RunAborted(
                    f"run {self.run.run_id} stopped before submitting {category}/{tier}"
                )
            env = Envelope.from_json((env_dir / f"part-{k}.json").read_bytes())
            sub = self.log.submit(env)
            self.step("posted", category, tier)
            # If we crash here, the entry is logged but its index is not saved: resubmitting the
            # same envelope returns the same index (duplicate), so the state converges.
            state["indices"][str(k)] = sub.index
            self.run.save()
            self.step("submitted", category, tier)
        state["status"] = "done"
        self.run.save()
        self.step("done", category, tier)


# -- replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemReplay:
    """One item of a replayed record: what was logged against what the model does now.

    `first_difference` is the character offset where the answers first differ (None: equal).
    The judgement flags (`refused_matches`, `transfer_matches`, `verdict_matches`) compare the
    logged judgements with the replay's: with equal answers they differ only when a judge
    differs, which `ReplayReport.settings` then names; `reproduced` is about the model's answers.
    """

    prompt_id: str
    framing: str
    answer_matches: bool
    refused_matches: bool
    transfer_matches: bool
    verdict_matches: bool
    emotions_match: bool
    max_emotion_delta_milli: int
    logged_answer: str
    replayed_answer: str
    first_difference: int | None = None

    @property
    def reproduced(self) -> bool:
        """The answer text is identical and every projection lies within the tolerance."""
        return self.answer_matches and self.emotions_match


@dataclass(frozen=True)
class FieldDiff:
    """A recorded setting that is not what the replay ran with: the record's `field` (wire
    path, e.g. ``backend.libraries.torch``), its `logged` value and the value `now`."""

    field: str
    logged: str | None
    now: str | None


@dataclass(frozen=True)
class ReplayReport:
    """The replay of one logged probe record.

    `decoding` is the config the replay used (the record's, unless overridden); `settings`
    lists every recorded setting that differs now (library versions, tokenizer, template,
    rendered prompt, device, dtype, judges, decoding overrides): a replay whose answers differ
    says here what else differed. `attacks` is the replayed search of each attacked item
    (`clients.probe.replay_search`), attempt by attempt.
    """

    index: int
    entry: LogEntryRef
    run_id: str
    model: ModelRef
    suite: SuiteRef
    category: str
    tier: str
    calibration: LogEntryRef | None
    tolerance_milli: int
    items: tuple[ItemReplay, ...]
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    settings: tuple[FieldDiff, ...] = ()
    attacks: tuple[AttackReplay, ...] = ()

    @property
    def reproduced(self) -> bool:
        """Every item reproduced, and every attacked item's search."""
        return all(i.reproduced for i in self.items) and all(a.reproduced for a in self.attacks)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (wire names for the refs)."""
        return {
            "index": self.index,
            "entry": self.entry.model_dump(mode="json"),
            "runId": self.run_id,
            "model": self.model.model_dump(mode="json"),
            "suite": self.suite.model_dump(mode="json"),
            "category": self.category,
            "tier": self.tier,
            "calibration": None
            if self.calibration is None
            else self.calibration.model_dump(mode="json"),
            "toleranceMilli": self.tolerance_milli,
            "decoding": self.decoding.wire().model_dump(mode="json"),
            "reproduced": self.reproduced,
            "settingsDiffer": [
                {"field": d.field, "logged": d.logged, "now": d.now} for d in self.settings
            ],
            "items": [
                {
                    "promptId": i.prompt_id,
                    "framing": i.framing,
                    "reproduced": i.reproduced,
                    "answerMatches": i.answer_matches,
                    "refusedMatches": i.refused_matches,
                    "transferMatches": i.transfer_matches,
                    "verdictMatches": i.verdict_matches,
                    "emotionsMatch": i.emotions_match,
                    "maxEmotionDeltaMilli": i.max_emotion_delta_milli,
                    **(
                        {}
                        if i.answer_matches
                        else {
                            "firstDifference": i.first_difference,
                            "logged": i.logged_answer,
                            "replayed": i.replayed_answer,
                        }
                    ),
                }
                for i in self.items
            ],
            "attacks": [a.to_json() for a in self.attacks],
        }


def _replay_model(
    record: ProbeRecord, spec: str | None, device: str, dtype: str | None
) -> LoadedModel:
    if spec is None:
        name, version = record.model.name, record.model.version
        if name == "tiny-random-llama" and version.startswith("seed-"):
            spec = f"{TINY_MODEL}:{version.removeprefix('seed-')}"
        elif name == DEFAULT_MODEL:
            spec = DEFAULT_MODEL
        else:
            raise ReplayError(
                f"record {record.run_id} probed {name!r}: give its directory as --model"
            )
    return open_model(spec, version=record.model.version, device=device, dtype=dtype)


def _replay_backend(
    record: ProbeRecord,
    lm: LoadedModel | None,
    model: str | None,
    endpoint: str | None,
    api_key_env: str | None,
    device: str | None,
    dtype: str | None,
) -> Backend:
    """The backend the record names, on this machine: its device and dtype unless overridden."""
    ref = record.backend
    kind = "local" if ref is None else ref.kind
    if kind == "openai":
        assert ref is not None
        url = endpoint or ref.endpoint
        if url is None:
            raise ReplayError(f"record {record.run_id} names no endpoint: give --endpoint")
        return OpenAIBackend(
            url, record.model.name, version=record.model.version, api_key_env=api_key_env
        )
    if kind != "local":
        raise ReplayError(f"record {record.run_id} was probed on {kind}: replay it there")
    if lm is None:
        dev = device or (ref.device if ref is not None and ref.device else "auto")
        typ = dtype or (ref.dtype if ref is not None else None)
        lm = _replay_model(record, model, dev, typ)
    return LocalBackend(lm)


def _setting_diffs(
    record: ProbeRecord, now: BackendRef, decoding: DecodingConfig, judges: Sequence[MethodRef]
) -> tuple[FieldDiff, ...]:
    """Every recorded setting that differs from what the replay runs with, by wire path."""
    out: list[FieldDiff] = []
    if record.backend is not None:
        was = record.backend.model_dump(mode="json")
        is_ = now.model_dump(mode="json")
        for k in sorted(set(was) | set(is_)):
            a, b = was.get(k), is_.get(k)
            if isinstance(a, dict) or isinstance(b, dict):
                a, b = a or {}, b or {}
                for sub in sorted(set(a) | set(b)):
                    if a.get(sub) != b.get(sub):
                        out.append(FieldDiff(f"backend.{k}.{sub}", a.get(sub), b.get(sub)))
            elif a != b and not (k == "endpointModel" and b is None):
                out.append(FieldDiff(f"backend.{k}", _str(a), _str(b)))
    if record.decoding is not None:
        was_d = record.decoding.model_dump(mode="json")
        for k, b in decoding.wire().model_dump(mode="json").items():
            if was_d.get(k) != b:
                out.append(FieldDiff(f"decoding.{k}", _str(was_d.get(k)), _str(b)))
    logged_judges = {j.name: j for j in record.judges}
    for j in judges:
        old = logged_judges.get(j.name)
        if record.judges and old != j:
            out.append(
                FieldDiff(
                    f"judges.{j.name}",
                    None if old is None else f"{old.version} {old.config_digest[:16]}",
                    f"{j.version} {j.config_digest[:16]}",
                )
            )
    return tuple(out)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def replay(
    index: int,
    target: LedgerTarget,
    *,
    lm: LoadedModel | None = None,
    model: str | None = None,
    suite_path: Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    endpoint: str | None = None,
    api_key_env: str | None = None,
    data: Path | None = None,
    tolerance_milli: int = REPLAY_TOLERANCE_MILLI,
    progress: bool = False,
    attack_budget: str | None = None,
    attack_corpus: Corpus | None = None,
) -> ReplayReport:
    """Re-run the probes of the probe record at `index` and compare with what was logged.

    Every setting comes from the record (decoding, device, dtype, endpoint); an argument given
    here overrides it, and the report lists the override among the settings that differ.
    Records from before the record carried its decoding replay with `ProbeOptions`' defaults.

    Plan:
    1. fetch the entry and verify its inclusion in the latest verified checkpoint;
    2. parse it as a ProbeRecord;
    3. open its backend (`lm`, `model`, or the one the record names) and require its identity
       (the weights for a local model; endpoint and model id for an API model);
    4. load the suite at the record's name and version and require its digest;
    5. load the calibration entry the record names, if any (inclusion verified, leaf equal);
    6. find each item's probe (prompt id, framing, the record's category and tier);
    7. answer them again (same order, same decoding) and compare: answer text exactly,
       refusal and transfer exactly (refusal judged by the refusal judge the record names,
       `_recorded_refusal`, e.g. ``hidden-probe``; transfer by the rubric version it names,
       `_recorded_rubric`: a version-1 record's ``pushback`` items carry keyword coverage, and
       are compared with it), verdicts by the position and disclosure versions it names
       (`_recorded_verdicts`), projections within `tolerance_milli`; compare every recorded
       setting with the replay's (`ReplayReport.settings`);
    8. re-run the recorded search of each attacked item (`replay_search.replay_attacks`: the
       record's seed and budget unless `seed` or `attack_budget` (``--budget`` text) override
       them, `attack_corpus` instead of the vendored corpus) and compare attempt by attempt.
    """
    with _open_log(target) as log:
        env, entry = log.entry(index)  # (1)
        record = parse_statement(env.payload).predicate  # (2)
        if not isinstance(record, ProbeRecord):
            raise ReplayError(f"entry {index} is a {record.PREDICATE_TYPE}, not a probe record")
        logged = (
            DecodingConfig.from_wire(record.decoding)
            if record.decoding is not None
            else ProbeOptions().decoding()
        )
        decoding = DecodingConfig(
            logged.max_new_tokens if max_new_tokens is None else max_new_tokens,
            logged.temperature,
            logged.seed if seed is None else seed,
            logged.batch_size if batch_size is None else batch_size,
        )
        backend = _replay_backend(record, lm, model, endpoint, api_key_env, device, dtype)  # (3)
        try:
            return _replay_with(
                index,
                entry,
                record,
                backend,
                log,
                suite_path,
                decoding,
                data,
                tolerance_milli,
                progress,
                (attack_budget, seed, attack_corpus),
            )
        finally:
            if lm is None:
                backend.close()


def _replay_with(
    index: int,
    entry: LogEntryRef,
    record: ProbeRecord,
    backend: Backend,
    log: _Log,
    suite_path: Path | None,
    decoding: DecodingConfig,
    data: Path | None,
    tolerance_milli: int,
    progress: bool,
    attack: tuple[str | None, int | None, Corpus | None] = (None, None, None),
) -> ReplayReport:
    if backend.identity().model.weights_sha256 != record.model.weights_sha256:
        what = "weights" if isinstance(backend, LocalBackend) else "endpoint and model id"
        raise ReplayError(
            f"record {index} probed {what} {record.model.weights_sha256[:16]}…, "
            f"the backend opened has {backend.identity().model.weights_sha256[:16]}…"
        )
    suite = load_suite(f"{record.suite.name}@{record.suite.version}", suite_path)  # (4)
    if suite.digest != record.suite.sha256:
        raise ReplayError(
            f"suite {record.suite.name}@{record.suite.version} on this machine "
            f"has digest {suite.digest[:16]}…, the record {record.suite.sha256[:16]}…"
        )
    cal: LoggedCalibration | None = None
    if record.calibration is not None and isinstance(backend, LocalBackend):  # (5)
        if record.calibration.origin != log.origin:
            raise ReplayError(
                f"record {index} used a calibration in another log ({record.calibration.origin})"
            )
        store = _Calibrations(data or data_dir(), backend.lm)
        cal = _load_logged(backend.lm, log, record.calibration.index, store)
        if cal.ref != record.calibration:
            raise ReplayError(
                f"entry {record.calibration.index} is not the calibration the record names"
            )
    by_key = {  # (6)
        (p.item.id, p.framing): p
        for p in probes(suite, categories=[record.category], tiers=[record.tier])
    }
    missing = [i.prompt_id for i in record.items if (i.prompt_id, i.framing) not in by_key]
    if missing:
        raise ReplayError(f"suite has no probe {missing[0]!r} in {record.category}/{record.tier}")
    plan = [by_key[(i.prompt_id, i.framing)] for i in record.items]
    options = ProbeOptions(
        batch_size=decoding.batch_size,
        max_new_tokens=decoding.max_new_tokens,
        seed=decoding.seed,
        temperature=decoding.temperature,
        refusal_judge=_recorded_refusal(record),
    )
    rubric = _recorded_rubric(record)
    verdicts = _recorded_verdicts(record)
    lm_now = backend.lm if isinstance(backend, LocalBackend) else None
    refusal, transfer, refs = _judges(rubric, options.refusal_judge, lm_now, verdicts)
    with tqdm(total=len(plan), unit="prompt", file=sys.stderr, disable=not progress) as bar:
        cal_now = None if cal is None else cal.calibration
        again = _answer(
            backend, cal_now, plan, options, bar, judges=(refusal, transfer), verdicts=verdicts
        )  # (7)
    attacks: tuple[AttackReplay, ...] = ()
    if any(i.attack is not None for i in record.items):  # (8)
        budget, seed, corpus = attack
        attacks = replay_attacks(
            record, plan, backend, batch_size=decoding.batch_size, budget=budget, seed=seed,
            corpus=corpus,
        )  # fmt: skip
    now = backend.identity().backend
    if isinstance(backend, LocalBackend):
        now = now.model_copy(update={"rendered_prompt": backend.rendered_prompt(plan[0].system)})
    return ReplayReport(
        index=index,
        entry=entry,
        run_id=record.run_id,
        model=record.model,
        suite=record.suite,
        category=record.category,
        tier=record.tier,
        calibration=record.calibration,
        tolerance_milli=tolerance_milli,
        items=tuple(
            _compare(a, b, tolerance_milli) for a, b in zip(record.items, again, strict=True)
        ),
        decoding=decoding,
        settings=_setting_diffs(record, now, decoding, refs),
        attacks=attacks,
    )


def _first_difference(a: str, b: str) -> int | None:
    if a == b:
        return None
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _compare(logged: ProbeItem, now: ProbeItem, tolerance: int) -> ItemReplay:
    deltas = [
        max(abs(a.mean_milli - b.mean_milli), abs(a.spread_milli - b.spread_milli))
        for name, a in logged.emotions.items()
        if (b := now.emotions.get(name)) is not None
    ]
    same_emotions = set(logged.emotions) == set(now.emotions)
    worst = max(deltas, default=0)
    return ItemReplay(
        prompt_id=logged.prompt_id,
        framing=logged.framing,
        # A two-turn item reproduces only if its first answer (the assistant turn) does too.
        answer_matches=logged.answer == now.answer and logged.first_answer == now.first_answer,
        refused_matches=logged.refused == now.refused,
        transfer_matches=logged.transfer_milli == now.transfer_milli,
        # The position / disclosure verdict of a pushback or disclosure item (None elsewhere).
        verdict_matches=logged.verdict == now.verdict,
        emotions_match=same_emotions and worst <= tolerance,
        max_emotion_delta_milli=worst,
        logged_answer=logged.answer,
        replayed_answer=now.answer,
        first_difference=_first_difference(logged.answer, now.answer),
    )
