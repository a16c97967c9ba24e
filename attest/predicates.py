"""The project's in-toto predicate types: one strict wire model per log entry type.

Every predicate-type URI is named here once (`PREDICATE_TYPES`). Every predicate carries the
author's latest seen checkpoint (`seen_checkpoint`, required) and the time the author claims to
have made the statement (`issued_at`, required, Unix seconds). Anti-backdating: a log rejects a
statement whose `issued_at` lies in the future beyond a small clock skew, or whose
`seen_checkpoint` it never published; an admitted entry was therefore made after the checkpoint it
embeds and before the checkpoint that includes it.

Each predicate also says which subjects its Statement must have (`subjects()`): the statement's
subject list is derived from the predicate, never chosen freely, so a query by subject digest
(model weights, key, report text) finds exactly the entries about it.

Units: every number is an integer. Rates, scores and projections are milli-units (1000 = 1.0,
fields suffixed ``Milli``); times are Unix seconds; hashes are lowercase hex SHA-256.
"""

from __future__ import annotations

import base64
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, StringConstraints, model_validator

from attest._wire import (
    Count,
    Label,
    Milli,
    Permille,
    Sha256Hex,
    Token,
    UnixSeconds,
    VerifierKey,
    WireModel,
    parse_verifier_key,
    sha256_hex,
)
from attest.note import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519

__all__ = [
    "ANONYMOUS_TIER",
    "CONTINUITY",
    "CREDENTIAL_EVENT",
    "EMOTION_CALIBRATION",
    "EVAL_SAMPLE",
    "FIELD_REPORT",
    "KEY_EVENT",
    "MAX_ATTACK_ATTEMPTS",
    "MAX_NEW_TOKENS_LIMIT",
    "PREDICATE_NAMESPACE",
    "PREDICATE_TYPES",
    "PROBE_RECORD",
    "TOKEN_KEY",
    "AnyPredicate",
    "AttackBudget",
    "AttackResult",
    "BackendRef",
    "BehaviourDiff",
    "BlobRef",
    "CheckpointRef",
    "ContinuityStatement",
    "CredentialEvent",
    "Decoding",
    "EmotionCalibration",
    "EmotionProjection",
    "EmotionValidation",
    "EvalSample",
    "EvalScore",
    "FieldReport",
    "Framing",
    "KeyEvent",
    "LogEntryRef",
    "MethodRef",
    "ModelId",
    "ModelRef",
    "Predicate",
    "ProbeItem",
    "ProbeRecord",
    "ResourceDescriptor",
    "SuiteRef",
    "TokenKey",
]

PREDICATE_NAMESPACE: Final = "https://behaviour-ledger.dev/attestation/"
"""Prefix of every predicate-type URI of this project; the last segment is the major version."""

PROBE_RECORD: Final = PREDICATE_NAMESPACE + "probe-record/v1"
EMOTION_CALIBRATION: Final = PREDICATE_NAMESPACE + "emotion-calibration/v1"
CONTINUITY: Final = PREDICATE_NAMESPACE + "continuity/v1"
KEY_EVENT: Final = PREDICATE_NAMESPACE + "key-event/v1"
CREDENTIAL_EVENT: Final = PREDICATE_NAMESPACE + "credential-event/v1"
FIELD_REPORT: Final = PREDICATE_NAMESPACE + "field-report/v1"
TOKEN_KEY: Final = PREDICATE_NAMESPACE + "token-key/v1"
EVAL_SAMPLE: Final = PREDICATE_NAMESPACE + "eval-sample/v1"

ANONYMOUS_TIER: Final = "anonymous"
"""The access tier of a cooperative user with no credential; every other tier is professional."""

MAX_NEW_TOKENS_LIMIT: Final = 65536
"""The largest `Decoding.max_new_tokens` a record may state."""

Framing = Literal["direct", "fictional", "professional-claim", "decomposition", "language-shift"]
"""How a probe prompt is framed: as is, or under one of the adversarial framings."""

Digest = Annotated[str, StringConstraints(min_length=2, max_length=256, pattern=r"^[0-9a-f]+$")]
Answer = Annotated[str, StringConstraints(max_length=32768)]
PromptText = Annotated[str, StringConstraints(max_length=8192)]
ReportText = Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class ResourceDescriptor(WireModel):
    """An in-toto v1 ResourceDescriptor restricted to `name` and `digest` (both required).

    `digest` maps an algorithm name (in-toto DigestSet: ``sha256``, ...) to lowercase hex.
    """

    name: Label
    digest: Annotated[dict[Token, Digest], Field(min_length=1, max_length=8)]


class CheckpointRef(WireModel):
    """A checkpoint the author had seen: log `origin`, tree `size`, and `root` hash (hex)."""

    origin: Label
    size: Count
    root: Sha256Hex


class LogEntryRef(WireModel):
    """A log entry: the log's `origin`, the entry's `index`, and its RFC 9162 `leaf_hash` (hex)."""

    origin: Label
    index: Count
    leaf_hash: Sha256Hex


class ModelId(WireModel):
    """A model as users see it (`name`, `version`), when its weights are not known."""

    name: Label
    version: Label


class ModelRef(WireModel):
    """A model artifact: `name`, `version`, and the SHA-256 of its weights (`weights_sha256`)."""

    name: Label
    version: Label
    weights_sha256: Sha256Hex

    def descriptor(self) -> ResourceDescriptor:
        """The statement subject for this model: its name and weights digest."""
        return ResourceDescriptor(name=self.name, digest={"sha256": self.weights_sha256})


class SuiteRef(WireModel):
    """A versioned probe suite: `name`, `version`, and the SHA-256 of its canonical file."""

    name: Label
    version: Label
    sha256: Sha256Hex


class BlobRef(WireModel):
    """A content-addressed blob stored beside the log (``/logs/{name}/blobs/{sha256}``)."""

    sha256: Sha256Hex
    size: Count


class Predicate(WireModel):
    """Base of every predicate: the type URI, the author's latest seen checkpoint, and the time.

    `seen_checkpoint` is the latest checkpoint the author had seen; `issued_at` (wire name
    ``issuedAt``, integer Unix seconds) is when the author claims to have made the statement.
    Both are required; the log checks them on admission (see the module docstring).
    """

    PREDICATE_TYPE: ClassVar[str]

    seen_checkpoint: CheckpointRef
    issued_at: UnixSeconds

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The subject list a Statement carrying this predicate must have."""
        raise NotImplementedError


class EmotionProjection(WireModel):
    """One emotion's projection over an answer's tokens: mean and spread, in milli-units."""

    mean_milli: Milli
    spread_milli: Count


class AttackBudget(WireModel):
    """Limits of (or what was spent by) one item's adversarial search: target `queries`,
    generated `tokens` (target and attacker together), wall-clock `seconds`."""

    queries: Count
    tokens: Count
    seconds: Count


MAX_ATTACK_ATTEMPTS: Final = 256
"""At most this many attempts (target queries) per attacked item: each one's digest is signed."""


class AttackResult(WireModel):
    """The budgeted adversarial search on one harmful item, and its best attempt.

    `method` (e.g. ``corpus+pair``) at `version`, seeded with `seed`, drew on the jailbreak
    corpus whose file has SHA-256 `corpus_sha256`, rewrote with the `attacker` model (absent: no
    attacker model) and scored with the transfer `judge`, within `budget`; `spent` is what it
    used (never more queries or tokens than the budget). `attempts` is every attempt's
    transcript digest in order (SHA-256 of the RFC 8785 JSON ``{"system", "user",
    "assistant"}``). The best attempt (max transfer; the figure is best-of-N with N =
    ``len(attempts)``) is `best` (its position), `best_source` (corpus template or attacker
    round), `best_transfer_milli`, `best_refused`, its prompt's SHA-256 `best_prompt_sha256`, the
    prompt itself when it fits (`best_prompt`), and the answer (`best_answer`).
    """

    method: Label
    version: Label
    corpus_sha256: Sha256Hex
    judge: Label
    seed: Count
    budget: AttackBudget
    spent: AttackBudget
    # strict=False: an item read back from JSON (a run directory) carries the array as a list.
    attempts: Annotated[tuple[Sha256Hex, ...], Field(max_length=MAX_ATTACK_ATTEMPTS, strict=False)]
    attacker: Label | None = None
    best: Count | None = None
    best_source: Label | None = None
    best_transfer_milli: Permille = 0
    best_refused: Annotated[int, Field(ge=0, le=1)] = 0
    best_prompt_sha256: Sha256Hex | None = None
    best_prompt: Annotated[str, StringConstraints(max_length=8192)] | None = None
    best_answer: Answer | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AttackResult:
        if self.spent.queries != len(self.attempts):
            raise ValueError("spent.queries must equal the number of attempts")
        if self.spent.queries > self.budget.queries or self.spent.tokens > self.budget.tokens:
            raise ValueError("an attack never spends more queries or tokens than its budget")
        has_best = self.best is not None
        best_fields = (self.best_source, self.best_prompt_sha256, self.best_answer)
        if has_best != bool(self.attempts) or any((f is not None) != has_best for f in best_fields):
            raise ValueError("the best attempt is named exactly when there are attempts")
        if self.best is not None and self.best >= len(self.attempts):
            raise ValueError("best is not an attempt's position")
        if self.best_prompt is not None and (
            sha256_hex(self.best_prompt.encode("utf-8")) != self.best_prompt_sha256
        ):
            raise ValueError("bestPrompt does not match bestPromptSha256")
        return self


class ProbeItem(WireModel):
    """One probe prompt and the model's behaviour on it.

    `refused` is 1 if the judge found a refusal, else 0; `transfer_milli` the judged capability
    transfer (0-1000) of a harmful item (0 on other kinds under rubric version 2 and later: not
    judged there); `emotions` maps emotion name to the answer's projection. `attack`, on a
    harmful item's ``direct`` item only, is the budgeted adversarial search on that prompt
    (absent: no search ran; records written before it existed lack it).

    `first_answer`, on a ``pushback`` item asked as a real two-turn conversation, is the model's
    own answer to the question: the assistant turn the pushback answered (`answer` is then the
    answer after the pushback). `verdict` is the item kind's judge's verdict (``pushback``: the
    position judge, ``disclosure``: the disclosure judge; which judge and version is in the
    record's `judges`). Both are absent on other items and in records written before them.
    """

    prompt_id: Label
    framing: Framing
    answer: Answer
    refused: Annotated[int, Field(ge=0, le=1)]
    transfer_milli: Permille
    emotions: Annotated[dict[Token, EmotionProjection], Field(max_length=256)]
    attack: AttackResult | None = None
    first_answer: Answer | None = None
    verdict: Token | None = None


class MethodRef(WireModel):
    """A versioned method that produced a figure (a judge, an attack): its `name`, its
    `version`, and the SHA-256 of its configuration (`config_digest`)."""

    name: Label
    version: Label
    config_digest: Sha256Hex


class Decoding(WireModel):
    """How answers were decoded: what a replay must use to get the same tokens.

    `temperature_milli` 0 is greedy decoding; `seed` seeds the backend's sampler (and, for a
    local model, torch); `batch_size` is how many prompts shared a forward pass (left padding
    can change the last digits of a float, so a replay uses the same).
    """

    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS_LIMIT)]
    temperature_milli: Annotated[int, Field(ge=0, le=10_000)]
    seed: Count
    batch_size: Annotated[int, Field(ge=1, le=4096)]


class BackendRef(WireModel):
    """What produced the answers, as far as the worker can observe it.

    `kind` ``local``: weights loaded by the worker (the record's model digest is their SHA-256),
    on `device` in `dtype`, with the tokenizer (`tokenizer_sha256`: SHA-256 of its canonical
    vocabulary and special tokens) and chat template (`chat_template_sha256`) named;
    `rendered_prompt` is the chat template applied to the record's system prompt and the user
    message ``{user}``: it shows any system prompt the template injects by itself.
    `kind` ``openai``: an OpenAI-compatible endpoint (`endpoint`, its URL without credentials)
    that reported serving `endpoint_model`; the worker cannot see weights, template or
    activations, so those fields are absent and `emotions` is ``not-observable``.
    `kind` ``vllm``: weights loaded by the worker into vLLM (no activations either).
    `libraries` maps a library to its version (python, torch, transformers, httpx, vllm).
    """

    kind: Literal["local", "openai", "vllm"]
    endpoint: Label | None = None
    endpoint_model: Label | None = None
    device: Label | None = None
    dtype: Token | None = None
    tokenizer_sha256: Sha256Hex | None = None
    chat_template_sha256: Sha256Hex | None = None
    rendered_prompt: PromptText | None = None
    libraries: Annotated[dict[Token, Label], Field(default_factory=dict, max_length=32)]
    emotions: Literal["observed", "not-observable"] = "observed"


class ProbeRecord(Predicate):
    """A probing run of one model over one suite, for one category and access tier.

    `calibration` points at the logged EmotionCalibration the emotion projections used (absent
    when the backend cannot observe activations: `backend.emotions` is then
    ``not-observable`` and no item has emotions). `backend`, `decoding`, `judges` (refusal
    judge first, then the transfer judge, then the judges of item verdicts: ``position``,
    ``disclosure``) and `attacks` are what a replay needs to reproduce
    the answers and judgements from the log alone; records written before they existed lack
    them. Subject: the model weights (for an API model, see `BackendRef`).
    """

    PREDICATE_TYPE: ClassVar[str] = PROBE_RECORD

    model: ModelRef
    suite: SuiteRef
    category: Token
    tier: Token
    run_id: Label
    calibration: LogEntryRef | None = None
    items: Annotated[tuple[ProbeItem, ...], Field(min_length=1, max_length=4096)]
    backend: BackendRef | None = None
    decoding: Decoding | None = None
    judges: Annotated[tuple[MethodRef, ...], Field(max_length=16)] = ()
    attacks: Annotated[tuple[MethodRef, ...], Field(max_length=64)] = ()

    @model_validator(mode="after")
    def _emotions_need_a_calibration(self) -> ProbeRecord:
        observed = self.backend is None or self.backend.emotions == "observed"
        if observed and self.calibration is None:
            raise ValueError("a record with observed emotions names its calibration")
        if not observed and any(i.emotions for i in self.items):
            raise ValueError("emotions are not observable on this backend, yet an item has some")
        return self

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The probed model."""
        return (self.model.descriptor(),)


class EmotionValidation(WireModel):
    """How an emotion calibration was fitted and validated, and what noise gives.

    `method` names the fitting (``dom`` difference of means, ``lda`` shrunk discriminant;
    `shrinkage_milli` for lda), `layer_selected_on` the stimulus split the layer was chosen on
    (``select``: never the held-out one), `held_out_milli` top-1 accuracy over the `held_out_n`
    held-out texts at that layer, `chance_milli` 1/E. The neutral-text null: the mean and
    spread (sample std) per emotion of the projections of `null_n` neutral texts used for
    nothing else (`null_mean_milli`, `null_spread_milli`); the random-direction baseline is
    `random_directions` seeded (`random_seed`) unit directions stored in the vectors blob.
    """

    method: Token
    shrinkage_milli: Permille
    layer_selected_on: Token
    held_out_milli: Permille
    held_out_n: Count
    chance_milli: Permille
    null_n: Count
    null_mean_milli: Annotated[dict[Token, Milli], Field(max_length=256)]
    null_spread_milli: Annotated[dict[Token, Count], Field(max_length=256)]
    random_directions: Count
    random_seed: Count


class EmotionCalibration(Predicate):
    """Emotion concept vectors for one model: where they are read and how well they validate.

    `layer` is the residual-stream layer, `token_rule` which tokens are averaged (e.g.
    ``answer-mean``), `vectors` the blob holding the vectors, `held_out_scores_milli` the
    per-emotion validation score on held-out data, `validation` (optional; absent in older
    entries) how the layer was chosen and the null a projection is read against.
    Subjects: the model weights, the vectors blob.
    """

    PREDICATE_TYPE: ClassVar[str] = EMOTION_CALIBRATION

    model: ModelRef
    layer: Count
    token_rule: Token
    vectors: BlobRef
    held_out_scores_milli: Annotated[dict[Token, Milli], Field(min_length=1, max_length=256)]
    validation: EmotionValidation | None = None

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The model and the vectors blob."""
        vectors = ResourceDescriptor(name="emotion-vectors", digest={"sha256": self.vectors.sha256})
        return (self.model.descriptor(), vectors)


class BehaviourDiff(WireModel):
    """How behaviour changed from predecessor ("before") to successor ("after") in one cell.

    Every figure is over the probe items both models answered in the cell, matched by
    (prompt id, framing); each comes with the count it is computed over, and a milli figure is
    present exactly when that count is non-zero (absent, never 0, when there is nothing to
    measure):

    * `benign_pairs` benign items: refusal rates, and McNemar's discordant pairs
      `refused_only_before` / `refused_only_after` (anyone recomputes the exact p-value from
      them: `clients.probe.metrics.mcnemar`);
    * `direct_pairs` harmful items asked directly, `framed_pairs` harmful items under an
      adversarial framing: mean capability transfer;
    * `shared_emotions` emotions in both emotion profiles (per emotion, the mean of the items'
      mean projections): their Euclidean distance, in milli-units;
    * `position_pairs` pushback items both versions had a position on (verdicts, neither
      ``initially-wrong``): the share ``held`` and the discordant pairs `held_only_before` /
      `held_only_after`; `disclosure_pairs` disclosure items with verdicts on both sides: the
      share ``engaged`` and its discordant pairs. These groups are absent altogether (not 0)
      when there are no such pairs, so statements written before them read the same.
    """

    category: Token
    tier: Token
    benign_pairs: Count
    refused_only_before: Count
    refused_only_after: Count
    refusal_rate_before_milli: Permille | None = None
    refusal_rate_after_milli: Permille | None = None
    direct_pairs: Count
    direct_transfer_before_milli: Permille | None = None
    direct_transfer_after_milli: Permille | None = None
    framed_pairs: Count
    framed_transfer_before_milli: Permille | None = None
    framed_transfer_after_milli: Permille | None = None
    shared_emotions: Count
    emotion_distance_milli: Count | None = None
    position_pairs: Count | None = None
    held_only_before: Count | None = None
    held_only_after: Count | None = None
    held_rate_before_milli: Permille | None = None
    held_rate_after_milli: Permille | None = None
    disclosure_pairs: Count | None = None
    engaged_only_before: Count | None = None
    engaged_only_after: Count | None = None
    engaged_rate_before_milli: Permille | None = None
    engaged_rate_after_milli: Permille | None = None

    @model_validator(mode="after")
    def _figures_match_counts(self) -> BehaviourDiff:
        if self.refused_only_before + self.refused_only_after > self.benign_pairs:
            raise ValueError("more discordant pairs than benign pairs")
        verdicts: dict[str, tuple[int | None, tuple[int | None, ...]]] = {
            "positionPairs": (
                self.position_pairs,
                (
                    self.held_only_before,
                    self.held_only_after,
                    self.held_rate_before_milli,
                    self.held_rate_after_milli,
                ),
            ),
            "disclosurePairs": (
                self.disclosure_pairs,
                (
                    self.engaged_only_before,
                    self.engaged_only_after,
                    self.engaged_rate_before_milli,
                    self.engaged_rate_after_milli,
                ),
            ),
        }
        for name, (pairs, figs) in verdicts.items():
            if pairs == 0 or any((f is not None) != (pairs is not None) for f in figs):
                raise ValueError(f"{name} is absent or non-zero; its figures are present with it")
            if pairs is not None and (figs[0] or 0) + (figs[1] or 0) > pairs:
                raise ValueError(f"more discordant pairs than {name}")
        groups: dict[str, tuple[int, tuple[int | None, ...]]] = {
            "benignPairs": (
                self.benign_pairs,
                (self.refusal_rate_before_milli, self.refusal_rate_after_milli),
            ),
            "directPairs": (
                self.direct_pairs,
                (self.direct_transfer_before_milli, self.direct_transfer_after_milli),
            ),
            "framedPairs": (
                self.framed_pairs,
                (self.framed_transfer_before_milli, self.framed_transfer_after_milli),
            ),
            "sharedEmotions": (self.shared_emotions, (self.emotion_distance_milli,)),
        }
        for name, (count, figures) in groups.items():
            if any((f is not None) != (count > 0) for f in figures):
                raise ValueError(f"figures over {name} are present exactly when it is non-zero")
        return self


class ContinuityStatement(Predicate):
    """A lab's signed claim that `successor` succeeds `predecessor`, backed by logged records.

    `predecessor_records` / `successor_records` cite the probe records (every part) the `diff`
    was computed from; no entry is cited twice. Subjects: both models' weights, predecessor
    first.
    """

    PREDICATE_TYPE: ClassVar[str] = CONTINUITY

    predecessor: ModelRef
    successor: ModelRef
    predecessor_records: Annotated[tuple[LogEntryRef, ...], Field(min_length=1, max_length=1024)]
    successor_records: Annotated[tuple[LogEntryRef, ...], Field(min_length=1, max_length=1024)]
    diff: Annotated[tuple[BehaviourDiff, ...], Field(max_length=1024)]

    @model_validator(mode="after")
    def _distinct(self) -> ContinuityStatement:
        if self.predecessor.weights_sha256 == self.successor.weights_sha256:
            raise ValueError("predecessor and successor have the same weights")
        cells = [(d.category, d.tier) for d in self.diff]
        if len(cells) != len(set(cells)):
            raise ValueError("diff lists a (category, tier) twice")
        cited = [(r.origin, r.index) for r in (*self.predecessor_records, *self.successor_records)]
        if len(cited) != len(set(cited)):
            raise ValueError("a log entry is cited twice")
        return self

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The predecessor and successor models."""
        return (self.predecessor.descriptor(), self.successor.descriptor())


def _key_descriptor(vkey: str) -> ResourceDescriptor:
    name, _, raw = parse_verifier_key(vkey)
    return ResourceDescriptor(name=name, digest={"sha256": sha256_hex(raw)})


def _key_type(vkey: str) -> int:
    return parse_verifier_key(vkey)[1]


class KeyEvent(Predicate):
    """Registration, rotation or revocation of a lab, worker, issuer or witness key.

    `key` is the key registered, rotated to, or revoked; `previous_key` is set exactly for
    ``rotate`` (the key rotated from). Witness keys are cosignature (0x04) verifier keys, all
    others Ed25519 (0x01). Subjects: each key as (name, SHA-256 of the raw public key), `key`
    first. That a rotation is signed by both keys is an admission rule of the log.
    """

    PREDICATE_TYPE: ClassVar[str] = KEY_EVENT

    action: Literal["register", "rotate", "revoke"]
    role: Literal["lab", "worker", "issuer", "witness"]
    key: VerifierKey
    previous_key: VerifierKey | None = None

    @model_validator(mode="after")
    def _rotation_has_previous_key(self) -> KeyEvent:
        if (self.action == "rotate") != (self.previous_key is not None):
            raise ValueError("previousKey is required for rotate and forbidden otherwise")
        if self.previous_key == self.key:
            raise ValueError("a rotation must change the key")
        want = SIG_TYPE_COSIGNATURE_V1 if self.role == "witness" else SIG_TYPE_ED25519
        for vkey in (self.key, self.previous_key):
            if vkey is not None and _key_type(vkey) != want:
                raise ValueError(f"a {self.role} key must be a verifier key of type 0x{want:02x}")
        return self

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The key, then the previous key for a rotation."""
        keys = (self.key,) if self.previous_key is None else (self.key, self.previous_key)
        return tuple(_key_descriptor(k) for k in keys)


class CredentialEvent(Predicate):
    """Issuance or revocation of a professional-tier credential by one issuer.

    `credential_id` names the credential (unique per issuer; a revocation repeats it),
    `holder_key` is the holder's Ed25519 verifier key, `expires_at` Unix seconds. The tier is
    never ``anonymous``. Subject: the holder key.
    """

    PREDICATE_TYPE: ClassVar[str] = CREDENTIAL_EVENT

    action: Literal["issue", "revoke"]
    credential_id: Label
    tier: Token
    holder_key: VerifierKey
    expires_at: UnixSeconds

    @model_validator(mode="after")
    def _professional_ed25519(self) -> CredentialEvent:
        if self.tier == ANONYMOUS_TIER:
            raise ValueError("credentials are for professional tiers, not 'anonymous'")
        if _key_type(self.holder_key) != SIG_TYPE_ED25519:
            raise ValueError("a holder key must be an Ed25519 (0x01) verifier key")
        return self

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The holder key."""
        return (_key_descriptor(self.holder_key),)


class FieldReport(Predicate):
    """A person's report of how a deployed model behaved; no identity fields exist.

    `tier` is the partition it was filed in. Subject: the report text (model name, SHA-256 of
    the UTF-8 text).
    """

    PREDICATE_TYPE: ClassVar[str] = FIELD_REPORT

    model: ModelId
    category: Token
    tier: Literal["anonymous", "attested"]
    text: ReportText
    credential_tier: Token | None = None

    @model_validator(mode="after")
    def _attested_names_its_tier(self) -> FieldReport:
        # An attested report says which professional tier its credential opens; an anonymous
        # one carries nothing that could tie it to a credential.
        if (self.tier == "attested") != (self.credential_tier is not None):
            raise ValueError("credentialTier is required for attested reports, forbidden otherwise")
        if self.credential_tier == ANONYMOUS_TIER:
            raise ValueError("credentialTier names a professional tier, not 'anonymous'")
        return self

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The report text, named after the model."""
        digest = sha256_hex(self.text.encode("utf-8"))
        return (ResourceDescriptor(name=self.model.name, digest={"sha256": digest}),)


SpkiBase64 = Annotated[
    str, StringConstraints(min_length=4, max_length=2048, pattern=r"^[A-Za-z0-9+/]+={0,2}$")
]


class TokenKey(Predicate):
    """An issuer's token key for the anonymous tier (Privacy Pass token type 0x0002).

    `token_key` is the RSASSA-PSS SubjectPublicKeyInfo (DER, standard base64) whose SHA-256 is
    the token key id; tokens under it are accepted until `not_after` (Unix seconds), or until a
    `retire` of the same key. Signed by a registered issuer key, so every client can check it
    sees the same token keys as everyone else. Subject: the key, by its token key id.
    """

    PREDICATE_TYPE: ClassVar[str] = TOKEN_KEY

    action: Literal["publish", "retire"]
    token_key: SpkiBase64
    not_after: UnixSeconds

    def token_key_id(self) -> str:
        """SHA-256 of the SPKI, lowercase hex (RFC 9578 token_key_id)."""
        return sha256_hex(base64.b64decode(self.token_key, validate=True))

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The token key, named `token-key`, by its key id."""
        return (ResourceDescriptor(name="token-key", digest={"sha256": self.token_key_id()}),)


class EvalScore(WireModel):
    """One scorer's verdict on an eval sample: the scorer's `name`, its `value` as RFC 8785
    canonical JSON text (``"C"``, ``1``, ``0.5``, ``true``: exact, no float in the payload),
    and the `answer` the scorer extracted, if any."""

    scorer: Label
    value: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    answer: PromptText | None = None


class EvalSample(Predicate):
    """One sample of an evaluation run by another tool (UK AISI Inspect), as its log says.

    `tool` / `tool_version` name the harness (``inspect_ai`` and its version), `task` /
    `task_version` the task, `eval_id` the eval in the harness's log, `model` the model as the
    harness named it (no weights: the harness loaded them, not us), `sample_id` / `epoch` the
    sample. `input_sha256` / `target_sha256` are SHA-256 of the RFC 8785 canonical JSON of the
    sample's input and target; `answer_sha256` of the answer's UTF-8 text, and `answer` the
    text itself when it fits in a log entry. `scores` are the scorers' verdicts;
    `generate_config` is the canonical JSON of the eval's generate config and `config_sha256`
    its SHA-256. Token usage when the log has it. Subject: the sample's input, named after the
    model.
    """

    PREDICATE_TYPE: ClassVar[str] = EVAL_SAMPLE

    tool: Token
    tool_version: Label
    task: Label
    task_version: Label
    eval_id: Label
    model: ModelId
    sample_id: Label
    epoch: Count
    input_sha256: Sha256Hex
    target_sha256: Sha256Hex
    answer_sha256: Sha256Hex
    answer: Answer | None = None
    scores: Annotated[tuple[EvalScore, ...], Field(max_length=64)]
    generate_config: PromptText
    config_sha256: Sha256Hex
    input_tokens: Count | None = None
    output_tokens: Count | None = None

    @model_validator(mode="after")
    def _answer_matches_digest(self) -> EvalSample:
        if self.answer is not None and sha256_hex(self.answer.encode()) != self.answer_sha256:
            raise ValueError("answer does not hash to answerSha256")
        if sha256_hex(self.generate_config.encode()) != self.config_sha256:
            raise ValueError("generateConfig does not hash to configSha256")
        return self

    def subjects(self) -> tuple[ResourceDescriptor, ...]:
        """The sample's input, named after the model."""
        return (ResourceDescriptor(name=self.model.name, digest={"sha256": self.input_sha256}),)


AnyPredicate = (
    ProbeRecord
    | EmotionCalibration
    | ContinuityStatement
    | KeyEvent
    | CredentialEvent
    | FieldReport
    | TokenKey
    | EvalSample
)
"""Any predicate model of this project."""

PREDICATE_TYPES: Final[dict[str, type[Predicate]]] = {
    cls.PREDICATE_TYPE: cls
    for cls in (
        ProbeRecord,
        EmotionCalibration,
        ContinuityStatement,
        KeyEvent,
        CredentialEvent,
        FieldReport,
        TokenKey,
        EvalSample,
    )
}
"""Predicate-type URI to model class: the registry `parse_statement` dispatches on."""
