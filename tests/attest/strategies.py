"""Hypothesis strategies for every attest wire model (valid values only)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from attest.note import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, format_vkey
from attest.predicates import (
    BehaviourDiff,
    BlobRef,
    CheckpointRef,
    ContinuityStatement,
    CredentialEvent,
    EmotionCalibration,
    EmotionProjection,
    EvalSample,
    EvalScore,
    FieldReport,
    KeyEvent,
    LogEntryRef,
    ModelId,
    ModelRef,
    Predicate,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
    TokenKey,
)

MAX_SAFE = 2**53 - 1
M = TypeVar("M")


def builds(cls: type[M], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[M]:
    """`cls(**fields)` by Python field name (st.builds would also fill in the JSON aliases)."""
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


# Any Unicode text JSON can carry: no lone surrogates.
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
# Labels: no control characters.
labels = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20)
tokens = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)
sha256s = st.binary(min_size=32, max_size=32).map(bytes.hex)
counts = st.integers(min_value=0, max_value=MAX_SAFE)
millis = st.integers(min_value=-MAX_SAFE, max_value=MAX_SAFE)
permille = st.integers(min_value=0, max_value=1000)
unix_seconds = st.integers(min_value=0, max_value=MAX_SAFE)
key_names = st.from_regex(r"[a-z0-9.-]{1,12}(/[a-z0-9]{1,8})?", fullmatch=True)


def vkeys(sig_type: int) -> st.SearchStrategy[str]:
    """Verifier key strings of `sig_type` for random Ed25519 keys."""

    def make(name: str, seed: bytes) -> str:
        raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        return format_vkey(name, sig_type, raw)

    return st.builds(make, key_names, st.binary(min_size=32, max_size=32))


checkpoints = builds(CheckpointRef, origin=labels, size=counts, root=sha256s)
entry_refs = builds(LogEntryRef, origin=labels, index=counts, leaf_hash=sha256s)
model_refs = builds(ModelRef, name=labels, version=labels, weights_sha256=sha256s)
model_ids = builds(ModelId, name=labels, version=labels)
suites = builds(SuiteRef, name=labels, version=labels, sha256=sha256s)
blobs = builds(BlobRef, sha256=sha256s, size=counts)
projections = builds(EmotionProjection, mean_milli=millis, spread_milli=counts)
framings = st.sampled_from(
    ["direct", "fictional", "professional-claim", "decomposition", "language-shift"]
)

probe_items = builds(
    ProbeItem,
    prompt_id=labels,
    framing=framings,
    answer=text,
    refused=st.integers(0, 1),
    transfer_milli=permille,
    emotions=st.dictionaries(tokens, projections, max_size=3),
)

probe_records = builds(
    ProbeRecord,
    seen_checkpoint=checkpoints,
    issued_at=unix_seconds,
    model=model_refs,
    suite=suites,
    category=tokens,
    tier=tokens,
    run_id=labels,
    calibration=entry_refs,
    items=st.lists(probe_items, min_size=1, max_size=3).map(tuple),
)

calibrations = builds(
    EmotionCalibration,
    seen_checkpoint=checkpoints,
    issued_at=unix_seconds,
    model=model_refs,
    layer=st.integers(0, 200),
    token_rule=tokens,
    vectors=blobs,
    held_out_scores_milli=st.dictionaries(tokens, millis, min_size=1, max_size=4),
)


def _figures(draw: st.DrawFn, count: int, n: int, values: st.SearchStrategy[int]) -> list[Any]:
    """`n` figures drawn from `values` when `count` > 0, else `n` Nones (absent figures)."""
    return [draw(values) if count else None for _ in range(n)]


@st.composite
def diffs(draw: st.DrawFn) -> BehaviourDiff:
    """A BehaviourDiff whose discordant pairs fit in its benign pairs, and whose figures are
    present exactly where their counts are non-zero."""
    pairs = draw(st.integers(0, 10_000))
    before = draw(st.integers(0, pairs))
    after = draw(st.integers(0, pairs - before))
    direct, framed, emotions = (draw(st.integers(0, 1000)) for _ in range(3))
    rb, ra = _figures(draw, pairs, 2, permille)
    db, da = _figures(draw, direct, 2, permille)
    fb, fa = _figures(draw, framed, 2, permille)
    (distance,) = _figures(draw, emotions, 1, st.integers(0, 10**9))
    return BehaviourDiff(
        category=draw(tokens),
        tier=draw(tokens),
        benign_pairs=pairs,
        refused_only_before=before,
        refused_only_after=after,
        refusal_rate_before_milli=rb,
        refusal_rate_after_milli=ra,
        direct_pairs=direct,
        direct_transfer_before_milli=db,
        direct_transfer_after_milli=da,
        framed_pairs=framed,
        framed_transfer_before_milli=fb,
        framed_transfer_after_milli=fa,
        shared_emotions=emotions,
        emotion_distance_milli=distance,
    )


@st.composite
def continuities(draw: st.DrawFn) -> ContinuityStatement:
    """A continuity statement between two models with different weights, citing distinct
    entries."""
    predecessor, successor = draw(
        st.lists(model_refs, min_size=2, max_size=2, unique_by=lambda m: m.weights_sha256)
    )
    cited = draw(
        st.lists(entry_refs, min_size=2, max_size=6, unique_by=lambda r: (r.origin, r.index))
    )
    split = draw(st.integers(1, len(cited) - 1))
    return ContinuityStatement(
        seen_checkpoint=draw(checkpoints),
        issued_at=draw(unix_seconds),
        predecessor=predecessor,
        successor=successor,
        predecessor_records=tuple(cited[:split]),
        successor_records=tuple(cited[split:]),
        diff=tuple(draw(st.lists(diffs(), max_size=3, unique_by=lambda d: (d.category, d.tier)))),
    )


@st.composite
def key_events(draw: st.DrawFn) -> KeyEvent:
    """A register, rotate or revoke event of any role, with keys of the matching type."""
    role = draw(st.sampled_from(["lab", "worker", "issuer", "witness"]))
    sig_type = SIG_TYPE_COSIGNATURE_V1 if role == "witness" else SIG_TYPE_ED25519
    action = draw(st.sampled_from(["register", "rotate", "revoke"]))
    key = draw(vkeys(sig_type))
    previous = draw(vkeys(sig_type).filter(lambda k: k != key)) if action == "rotate" else None
    return KeyEvent.model_validate(
        {
            "seen_checkpoint": draw(checkpoints),
            "issued_at": draw(unix_seconds),
            "action": action,
            "role": role,
            "key": key,
            "previous_key": previous,
        }
    )


credential_events = builds(
    CredentialEvent,
    seen_checkpoint=checkpoints,
    issued_at=unix_seconds,
    action=st.sampled_from(["issue", "revoke"]),
    credential_id=labels,
    tier=tokens.filter(lambda t: t != "anonymous"),
    holder_key=vkeys(SIG_TYPE_ED25519),
    expires_at=counts,
)


@st.composite
def field_reports(draw: st.DrawFn) -> FieldReport:
    tier = draw(st.sampled_from(["anonymous", "attested"]))
    return FieldReport(
        seen_checkpoint=draw(checkpoints),
        issued_at=draw(unix_seconds),
        model=draw(model_ids),
        category=draw(tokens),
        tier=tier,
        text=draw(
            st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)
        ),
        credential_tier=(
            draw(tokens.filter(lambda t: t != "anonymous")) if tier == "attested" else None
        ),
    )


token_keys = builds(
    TokenKey,
    seen_checkpoint=checkpoints,
    issued_at=unix_seconds,
    action=st.sampled_from(["publish", "retire"]),
    token_key=st.binary(min_size=1, max_size=400).map(lambda b: base64.b64encode(b).decode()),
    not_after=unix_seconds,
)


@st.composite
def eval_samples(draw: st.DrawFn) -> EvalSample:
    """Eval-sample records whose digests match the texts they carry."""
    answer = draw(st.none() | text)
    config = draw(text.filter(bool))
    return EvalSample(
        seen_checkpoint=draw(checkpoints),
        issued_at=draw(unix_seconds),
        tool=draw(tokens),
        tool_version=draw(labels),
        task=draw(labels),
        task_version=draw(labels),
        eval_id=draw(labels),
        model=draw(model_ids),
        sample_id=draw(labels),
        epoch=draw(counts),
        input_sha256=draw(sha256s),
        target_sha256=draw(sha256s),
        answer_sha256=hashlib.sha256(
            (answer if answer is not None else draw(text)).encode()
        ).hexdigest(),
        answer=answer,
        scores=tuple(
            draw(
                st.lists(
                    builds(
                        EvalScore,
                        scorer=labels,
                        value=st.sampled_from(['"C"', "1", "0", "true"]),
                        answer=st.none() | text,
                    ),
                    max_size=3,
                )
            )
        ),
        generate_config=config,
        config_sha256=hashlib.sha256(config.encode()).hexdigest(),
        input_tokens=draw(st.none() | counts),
        output_tokens=draw(st.none() | counts),
    )


PREDICATES: dict[type[Predicate], st.SearchStrategy[Predicate]] = {
    ProbeRecord: probe_records,
    EmotionCalibration: calibrations,
    ContinuityStatement: continuities(),
    KeyEvent: key_events(),
    CredentialEvent: credential_events,
    FieldReport: field_reports(),
    TokenKey: token_keys,
    EvalSample: eval_samples(),
}
"""One strategy per predicate model; the tests check it covers every registered type."""
