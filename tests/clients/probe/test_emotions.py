"""clients.probe.emotions: stimulus set, calibration math, capture, files, the real model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from clients.probe.emotions import (
    EMOTIONS,
    RANDOM_DIRECTIONS,
    Calibration,
    CalibrationError,
    CalibrationMismatchError,
    CaptureError,
    Stimuli,
    StimuliError,
    StimulusReadings,
    calibrate,
    calibration_dir,
    classify,
    difference_of_means,
    emotion_capture,
    fit_calibration,
    fit_layer,
    interpret_texts,
    latest_calibration,
    load_calibration,
    load_stimuli,
    neutral_components,
    project_out,
    save_calibration,
    score_texts,
    stimuli_path,
    sweep_layers,
)
from clients.probe.model import (
    LoadedModel,
    ModelIdentity,
    generate,
    hidden_states,
    load_model,
    residual_hook,
)
from tests.clients.probe.test_model import PROMPTS, early_stopper

# Each emotion's name and its obvious synonyms (as regexes matched at a word start). No stimulus
# may contain any of them: a text must convey its emotion, never name it, and must not name
# another one either (that would blur the label).
NAMED = {
    "calm": r"calm|peace|seren|tranquil|relax|placid|composure",
    "desperate": r"desperat|despair|hopeless",
    "afraid": r"afraid|fear|scar(e|ed|es|y|ier|iest|ing)\b|terrif|fright|panic",
    "angry": r"angr|anger|furious|fury|rag(e|ed|es|ing)\b|enrag|mad\b|livid|irate|outrage",
    "joyful": r"joy|happ(y|ier|iest|ily|iness)\b|delight|glad|elat(ed|ion)\b|cheerful",
    "sad": r"sad(ly|ness|der|dest)?\b|sorrow|unhapp|melanchol",
    "gloomy": r"gloom|bleak|dreary|dismal",
    "broody": r"brood|sulk|mood(y|ily|iness)",
    "reflective": r"reflect|pensive|contemplat|ponder",
    "enthusiastic": r"enthusias|excit|eager|thrill",
    "exasperated": r"exasperat|fed up|irritat|annoy|frustrat",
    "guilty": r"guilt|remorse",
    "hopeful": r"hop(e|ed|es|ing|eful|efully)\b|optimis",
    "anxious": r"anxi|nervous|worr(y|ied|ies|ying)\b|uneas",
    "ashamed": r"asham|shame|embarrass|humiliat|mortif",
    "lonely": r"lonel|alone\b|isolat|lonesome",
    "tender": r"tender|affection|fond(ly|ness)?\b",
    "proud": r"proud|pride",
    "grateful": r"grate(ful|fully)?\b|gratitude|thank|appreciat",
    "disgusted": r"disgust|revolt|gross|sicken|nause|repuls",
}
REQUIRED = [
    "calm",
    "desperate",
    "afraid",
    "angry",
    "joyful",
    "sad",
    "gloomy",
    "broody",
    "reflective",
    "enthusiastic",
    "exasperated",
    "guilty",
    "hopeful",
    "anxious",
    "ashamed",
    "lonely",
    "tender",
]


@pytest.fixture(scope="module")
def stimuli() -> Stimuli:
    return load_stimuli()


@pytest.fixture(scope="module")
def tiny_cal(tiny_lm: LoadedModel, stimuli: Stimuli) -> Calibration:
    """A calibration of the tiny model on a small subset of the stimuli (fast, meaningless)."""
    return calibrate(tiny_lm, stimuli=stimuli.subset(3, 2, 10), n_pcs=2)


@pytest.fixture(scope="module")
def split_cal(tiny_lm: LoadedModel, stimuli: Stimuli) -> Calibration:
    """A tiny-model calibration with all five splits (train, select, held out, neutral, null)."""
    return calibrate(tiny_lm, stimuli=stimuli.subset(3, 2, 10, select=2, null=10), n_pcs=2)


# -- the stimulus set -------------------------------------------------------------------------


def test_emotion_list() -> None:
    assert len(EMOTIONS) >= 20 and len(set(EMOTIONS)) == len(EMOTIONS)
    assert set(REQUIRED) <= set(EMOTIONS)
    assert set(NAMED) == set(EMOTIONS)
    assert all(re.fullmatch(r"[a-z]+", e) for e in EMOTIONS)  # predicate Tokens


def test_stimulus_counts(stimuli: Stimuli) -> None:
    assert stimuli.emotions == EMOTIONS
    for e in EMOTIONS:
        got = (len(stimuli.train[e]), len(stimuli.select[e]), len(stimuli.held_out[e]))
        assert got == (20, 10, 10), e
    assert len(stimuli.neutral) >= 40 and len(stimuli.null) >= 40
    every = [
        t for e in EMOTIONS for t in stimuli.train[e] + stimuli.select[e] + stimuli.held_out[e]
    ]
    every += stimuli.neutral + stimuli.null
    assert len(set(every)) == len(every)


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_no_text_names_an_emotion(stimuli: Stimuli, emotion: str) -> None:
    texts = stimuli.train[emotion] + stimuli.select[emotion] + stimuli.held_out[emotion]
    for text in texts + stimuli.neutral + stimuli.null:
        for named, pattern in NAMED.items():
            assert not re.search(rf"\b(?:{named}|{pattern})", text, re.I), (named, text)


def test_texts_are_short(stimuli: Stimuli) -> None:
    for e in EMOTIONS:
        for text in stimuli.train[e] + stimuli.select[e] + stimuli.held_out[e]:
            sentences = len(re.findall(r"[.!?](?:\s|$)", text))
            assert 1 <= sentences <= 3 and len(text) <= 300, text


def test_split_is_fixed_in_the_file() -> None:
    rows = [json.loads(line) for line in stimuli_path().read_text().splitlines()]
    for row in rows:
        label, number = row["id"].rsplit("-", 1)
        assert label == row["label"]
        n = int(number)
        if label == "neutral":
            want = "null" if n % 2 == 0 else "neutral"
        else:
            want = {0: "held_out", 2: "select"}.get(n % 4, "train")
        assert row["split"] == want, row["id"]
    assert load_stimuli().sha256 == hashlib.sha256(stimuli_path().read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a-1", "label": "bored", "split": "train", "text": "x"}', "unknown label"),
        ('{"id": "a-1", "label": "calm", "split": "test", "text": "x"}', "unknown label"),
        ('{"id": "a-1", "label": "calm", "split": "train"}', "keys"),
        ("not json", "not JSON"),
    ],
)
def test_bad_stimuli_rejected(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(StimuliError, match=message):
        load_stimuli(path)


def test_duplicate_stimulus_id_rejected(tmp_path: Path) -> None:
    row = '{"id": "a-1", "label": "calm", "split": "train", "text": "x"}\n'
    (tmp_path / "s.jsonl").write_text(row + row)
    with pytest.raises(StimuliError, match="duplicate"):
        load_stimuli(tmp_path / "s.jsonl")


# -- the outside scenarios --------------------------------------------------------------------


def test_outside_scenarios(stimuli: Stimuli) -> None:
    from clients.probe.emotion_eval import OUTSIDE_EMOTIONS, load_outside

    rows = load_outside()
    assert [r.label for r in rows].count("joyful") == 25
    assert sorted({r.label for r in rows}) == sorted(OUTSIDE_EMOTIONS)
    assert all(sum(r.label == e for r in rows) == 25 for e in OUTSIDE_EMOTIONS)
    assert len({r.register for r in rows}) >= 10  # varied registers, unlike the stimuli
    stimulus_texts = {
        t for e in EMOTIONS for t in stimuli.train[e] + stimuli.select[e] + stimuli.held_out[e]
    }
    for r in rows:
        assert r.text not in stimulus_texts
        for named, pattern in NAMED.items():
            assert not re.search(rf"\b(?:{named}|{pattern})", r.text, re.I), (named, r.id)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "label": "calm", "register": "news", "text": "x"}', "label"),
        ('{"id": "a", "label": "sad", "text": "x"}', "keys"),
        ("{", "line 1: not JSON"),
    ],
)
def test_bad_outside_rows_rejected(tmp_path: Path, line: str, message: str) -> None:
    from clients.probe.emotion_eval import load_outside

    path = tmp_path / "o.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(StimuliError, match=message):
        load_outside(path)


def test_top1_among_and_topic_fixed() -> None:
    from clients.probe.emotion_eval import top1_among, topic_fixed

    emotions = ("calm", "joyful", "sad", "angry", "afraid")
    proj = torch.tensor([[9.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0, 0.0]])
    # "calm" is not among the four, so its large score cannot make the first row wrong.
    got = top1_among(proj, ["joyful", "angry"], emotions)
    assert (got.k, got.n) == (1, 2)
    among = ("joyful", "sad")
    z = torch.tensor([[2.0, 0.0], [1.0, 3.0], [0.0, 1.0], [0.5, 0.0]])
    fixed = topic_fixed(z, ["a", "a", "b", "b"], ["joyful", "sad", "joyful", "sad"], among)
    # topic a: joyful ranks its joyful answer first, sad its sad answer; topic b: neither.
    assert (fixed["rank"].k, fixed["rank"].n) == (2, 4)
    assert (fixed["argmax"].k, fixed["argmax"].n) == (2, 4)


# -- the math on synthetic activations --------------------------------------------------------


def _planted(
    seed: int = 0, d: int = 48, n: int = 40, spread: float = 5.0, confound: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Five emotions along orthonormal directions `u`, and a neutral direction `w` along which
    every reading varies with std `spread` (with `confound`, plus an offset per emotion)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, 6, generator=g, dtype=torch.float64))
    u, w = basis[:, :5].T.float(), basis[:, 5].float()
    base = torch.randn(d, generator=g)

    def readings(e: int) -> torch.Tensor:
        noise = 0.3 * torch.randn(n, d, generator=g)
        along_w = (spread * torch.randn(n, 1, generator=g) + confound * (e - 2)) * w
        out: torch.Tensor = base + 2.0 * u[e] + noise + along_w
        return out

    train = [readings(e) for e in range(5)]
    held = [readings(e) for e in range(5)]
    neutral = (
        base + 0.3 * torch.randn(n, d, generator=g) + spread * torch.randn(n, 1, generator=g) * w
    )
    return u, w, train, held, neutral


def test_difference_of_means_recovers_planted_directions() -> None:
    u, _, train, held, neutral = _planted(spread=0.0)
    want = u - u.mean(dim=0, keepdim=True)
    got = difference_of_means(train)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=1)
    assert bool((cos > 0.95).all()), cos
    fit = fit_layer("abcde", train, held, neutral, n_pcs=0)
    assert fit.held_out_accuracy == dict.fromkeys("abcde", 1.0)
    torch.testing.assert_close(fit.vectors.norm(dim=1), torch.ones(5))


def test_planted_directions_recovered_through_neutral_noise() -> None:
    u, _, train, held, neutral = _planted(spread=5.0)
    want = u - u.mean(dim=0, keepdim=True)
    fit = fit_layer("abcde", train, held, neutral, n_pcs=1)
    cos = torch.nn.functional.cosine_similarity(fit.vectors, want, dim=1)
    assert bool((cos > 0.95).all()), cos


def test_projecting_out_neutral_pcs_removes_the_neutral_direction() -> None:
    _, w, train, held, neutral = _planted(confound=4.0)
    raw = difference_of_means(train)
    assert bool((raw @ w).abs().max() > 1.0)  # the confound is in the raw vectors
    pcs = neutral_components(neutral, 1)
    assert abs(float(pcs[0] @ w)) > 0.99
    cleaned = project_out(raw, pcs)
    assert float((cleaned @ w).abs().max()) < 0.1
    fit = fit_layer("abcde", train, held, neutral, n_pcs=1)
    assert float((fit.vectors @ w).abs().max()) < 0.1
    # Without the projection, the high-variance neutral direction ruins classification.
    assert fit_layer("abcde", train, held, neutral, n_pcs=0).score < fit.score == 1.0


def test_neutral_components_are_orthonormal() -> None:
    x = torch.randn(30, 16, generator=torch.Generator().manual_seed(1))
    pcs = neutral_components(x, 4)
    torch.testing.assert_close(pcs @ pcs.T, torch.eye(4), atol=1e-5, rtol=0)
    v = torch.randn(3, 16)
    once = project_out(v, pcs)
    torch.testing.assert_close(project_out(once, pcs), once, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        neutral_components(x[:3], 4)


def test_classify_is_argmax_projection() -> None:
    vectors = torch.eye(3)
    readings = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]])
    assert classify(readings, vectors).tolist() == [1, 0]
    assert classify(readings, vectors, torch.tensor([0.0, 0.0, 5.0])).tolist() == [1, 0]
    assert classify(readings, vectors, torch.tensor([2.0, 0.0, 0.0])).tolist() == [1, 2]


def test_centering_matters_when_the_mean_is_large() -> None:
    # A large common component (as in a real residual stream) has a different dot product with
    # each vector; without subtracting the grand mean it, not the emotion, picks the argmax.
    u, _, train, held, neutral = _planted(spread=0.0)
    shift = 40 * torch.randn(u.shape[1], generator=torch.Generator().manual_seed(5))
    train, held = [t + shift for t in train], [h + shift for h in held]
    fit = fit_layer("abcde", train, held, neutral + shift, n_pcs=0)
    assert fit.score == 1.0
    raw = [float((classify(h, fit.vectors) == i).float().mean()) for i, h in enumerate(held)]
    assert sum(raw) / 5 < 1.0


@pytest.mark.parametrize(
    ("layers", "want"), [(30, list(range(9, 25))), (4, [2, 3]), (10, [3, 4, 5, 6, 7, 8]), (1, [0])]
)
def test_sweep_layers(layers: int, want: list[int]) -> None:
    assert sweep_layers(layers) == want


def test_lda_discounts_a_noisy_direction_that_dom_follows() -> None:
    # A confound along w (large variance, offset per emotion) and no neutral PCs projected out:
    # the plain difference of means points partly along w and misclassifies; whitening by the
    # shrunk within-emotion + neutral covariance weights w down.
    _, w, train, held, neutral = _planted(confound=4.0, spread=8.0)
    dom = fit_layer("abcde", train, held, neutral, n_pcs=0)
    lda = fit_layer("abcde", train, held, neutral, n_pcs=0, method="lda", shrinkage=0.1)
    assert lda.score > dom.score
    assert float((lda.vectors @ w).abs().max()) < float((dom.vectors @ w).abs().max())
    with pytest.raises(ValueError):
        fit_layer("abcde", train, held, neutral, n_pcs=0, method="ridge")


# -- calibration on the tiny model ------------------------------------------------------------


def test_calibrate_tiny(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    cal = tiny_cal
    assert cal.model == tiny_lm.identity and cal.emotions == EMOTIONS
    assert cal.vectors.shape == (20, 64) and cal.vectors.dtype == torch.float32
    assert cal.neutral_pcs.shape == (2, 64)
    torch.testing.assert_close(cal.vectors.norm(dim=1), torch.ones(20))
    assert float((cal.vectors @ cal.neutral_pcs.T).abs().max()) < 1e-5
    assert sorted(cal.layer_scores) == sweep_layers(4) and cal.layer in cal.layer_scores
    assert cal.layer_scores[cal.layer] == max(cal.layer_scores.values())
    assert cal.chance == 1 / 20 and set(cal.held_out_accuracy) == set(EMOTIONS)
    assert all(0.0 <= a <= 1.0 for a in cal.held_out_accuracy.values())
    assert cal.reading_prefix == "<|im_start|>"


def _synthetic_readings(
    held_value: float | None, layers: tuple[int, ...] = (1, 2), seed: int = 3
) -> tuple[Stimuli, dict[int, StimulusReadings]]:
    """Readings of a 20-emotion stimulus set (3 train, 2 select, 2 held out per emotion), with
    every held-out reading replaced by `held_value` when it is given."""
    g = torch.Generator().manual_seed(seed)
    stim = Stimuli(
        train={e: ("t",) * 3 for e in EMOTIONS},
        held_out={e: ("h",) * 2 for e in EMOTIONS},
        neutral=("n",) * 8,
        sha256="0" * 64,
        select={e: ("s",) * 2 for e in EMOTIONS},
        null=("z",) * 6,
    )
    dirs = torch.randn(20, 64, generator=g)
    out = {}
    for layer in layers:

        def group(n: int, i: int) -> torch.Tensor:
            return dirs[i] + torch.randn(n, 64, generator=g)

        held = [group(2, i) for i in range(20)]
        if held_value is not None:
            held = [torch.full_like(h, held_value) for h in held]
        out[layer] = StimulusReadings(
            train=[group(3, i) for i in range(20)],
            select=[group(2, i) for i in range(20)],
            held_out=held,
            neutral=torch.randn(8, 64, generator=g),
            null=torch.randn(6, 64, generator=g),
        )
    return stim, out


@pytest.mark.parametrize("method", ["dom", "lda"])
def test_held_out_texts_never_reach_fitting_or_layer_choice(
    tiny_lm: LoadedModel, method: str
) -> None:
    # NaN held-out readings would poison any mean, covariance or score they entered; the fit and
    # the layer choice must come out finite and identical to those of ordinary held-out texts.
    stim, clean = _synthetic_readings(None)
    _, poisoned = _synthetic_readings(float("nan"))
    a = fit_calibration(tiny_lm, stim, clean, n_pcs=2, method=method)
    b = fit_calibration(tiny_lm, stim, poisoned, n_pcs=2, method=method)
    assert a.selected_on == "select" and b.layer == a.layer
    assert b.layer_scores == a.layer_scores
    for name in ("vectors", "center", "neutral_pcs", "null_projections", "random_directions"):
        got, want = getattr(b, name), getattr(a, name)
        assert bool(torch.isfinite(got).all()) and torch.equal(got, want), name
    assert a.held_out_score is not None and 0.0 <= a.held_out_score <= 1.0


def test_layer_is_chosen_on_select_texts(tiny_lm: LoadedModel) -> None:
    # Make layer 2's select texts unclassifiable (all equal): the sweep must prefer layer 1,
    # whatever the held-out texts say, and the test figure is the held-out one.
    stim, readings = _synthetic_readings(None)
    r = readings[2]
    readings[2] = dataclasses.replace(r, select=[torch.zeros_like(x) for x in r.select])
    cal = fit_calibration(tiny_lm, stim, readings, n_pcs=2)
    assert cal.layer_scores[1] > cal.layer_scores[2] and cal.layer == 1
    hits = sum(round(a * 2) for a in cal.held_out_accuracy.values())
    assert cal.held_out_score == hits / 40


def test_null_and_random_baseline(
    tiny_lm: LoadedModel, stimuli: Stimuli, split_cal: Calibration, tiny_cal: Calibration
) -> None:
    cal = split_cal
    assert cal.null_source == "null" and cal.selected_on == "select"
    assert cal.null_projections is not None and cal.random_directions is not None
    null_texts = stimuli.subset(3, 2, 10, select=2, null=10).null
    # The null is the projection of the null texts, read like any other text.
    want = torch.tensor([list(x.values()) for x in score_texts(tiny_lm, cal, list(null_texts))])
    torch.testing.assert_close(cal.null_projections, want, atol=1e-4, rtol=1e-4)
    rand = cal.random_directions
    assert rand.shape == (RANDOM_DIRECTIONS, 64)
    torch.testing.assert_close(rand.norm(dim=1), torch.ones(RANDOM_DIRECTIONS))
    assert float((rand @ cal.neutral_pcs.T).abs().max()) < 1e-5  # the vectors' subspace
    # A set without null or select texts takes its null from the neutral texts and chooses
    # its layer on the train texts, and says so.
    assert (tiny_cal.null_source, tiny_cal.selected_on) == ("neutral", "train")


def test_baseline_is_deterministic_for_a_seed(
    tiny_lm: LoadedModel, stimuli: Stimuli, split_cal: Calibration
) -> None:
    stim = stimuli.subset(3, 2, 10, select=2, null=10)
    again = calibrate(tiny_lm, stimuli=stim, n_pcs=2)
    assert again.to_bytes() == split_cal.to_bytes()
    other = calibrate(tiny_lm, stimuli=stim, n_pcs=2, seed=7)
    assert other.random_directions is not None and split_cal.random_directions is not None
    assert not torch.equal(other.random_directions, split_cal.random_directions)
    assert torch.equal(other.vectors, split_cal.vectors) and other.random_seed == 7


def test_interpret_against_null_and_random(split_cal: Calibration) -> None:
    cal = dataclasses.replace(
        split_cal, null_projections=torch.arange(10.0).repeat(20, 1).T.contiguous()
    )
    projections = torch.full((20,), 7.5)
    random = torch.linspace(-10, 10, 101)
    got = cal.interpret(projections, random)["calm"]
    assert got.projection == 7.5
    assert got.neutral_z == pytest.approx((7.5 - 4.5) / float(torch.arange(10.0).std()))
    assert got.neutral_percentile == 0.8  # 0..7 of 0..9 lie below
    assert got.neutral_interval[0] < 0.8 < got.neutral_interval[1]
    assert got.random_interval == pytest.approx((-9.5, 9.5))
    assert got.random_percentile == pytest.approx(88 / 101)
    with pytest.raises(CalibrationError, match="null"):
        dataclasses.replace(cal, null_projections=None).interpret(projections, random)


def test_interpret_texts_and_round_trip(tiny_lm: LoadedModel, split_cal: Calibration) -> None:
    back = Calibration.from_bytes(split_cal.to_bytes(), tiny_lm.identity)
    assert back.null_source == "null" and back.method == split_cal.method
    assert back.null_projections is not None and split_cal.null_projections is not None
    assert torch.equal(back.null_projections, split_cal.null_projections)
    texts = ["The kettle boiled.", "She laughed and laughed."]
    (first, _) = interpret_texts(tiny_lm, back, texts)
    (scores, _) = score_texts(tiny_lm, back, texts)
    assert list(first) == list(EMOTIONS)
    assert all(first[e].projection == pytest.approx(scores[e], abs=1e-5) for e in EMOTIONS)
    summary = back.summary()
    assert summary["null"]["n"] == 10 and summary["layer_selected_on"] == "select"
    # What the logged EmotionCalibration carries: the test figure with the split the layer
    # was chosen on, and the null in milli-units.
    v = back.validation()
    assert v.layer_selected_on == "select" and v.held_out_n == 40 and v.null_n == 10
    assert v.held_out_milli == round(1000 * (back.held_out_score or 0.0))
    assert v.null_mean_milli["calm"] == round(1000 * float(back.null_projections[:, 0].mean()))
    assert v.random_directions == RANDOM_DIRECTIONS
    assert "not as what the model feels" in summary["measures"]


def test_calibration_predicate_carries_validation(split_cal: Calibration) -> None:
    from attest.predicates import BlobRef, CheckpointRef, EmotionCalibration, ModelRef
    from clients.probe.records import calibration_predicate

    m = split_cal.model
    common: dict[str, Any] = {
        "model": ModelRef(name=m.name, version=m.version, weights_sha256=m.weights_sha256),
        "layer": split_cal.layer,
        "token_rule": split_cal.token_rule,
        "vectors": BlobRef(sha256=split_cal.digest, size=len(split_cal.to_bytes())),
        "held_out_scores": split_cal.held_out_accuracy,
        "seen_checkpoint": CheckpointRef(origin="o", size=1, root="0" * 64),
        "issued_at": 1,
    }
    pred = calibration_predicate(**common, validation=split_cal.validation())
    wire = pred.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["validation"]["layerSelectedOn"] == "select"
    assert EmotionCalibration.model_validate(wire) == pred
    # Without it the entry is what it was before the field existed.
    old = calibration_predicate(**common).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert "validation" not in old


def test_score_texts_is_mean_projection(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    texts = ["The kettle boiled.", "She laughed and laughed."]
    scores = score_texts(tiny_lm, tiny_cal, texts)
    prefix = [tiny_lm.tokenizer.convert_tokens_to_ids("<|im_start|>")]
    for text, got in zip(texts, scores, strict=True):
        (h,) = hidden_states(tiny_lm, [text], tiny_cal.layer, prefix_ids=prefix)
        assert tiny_cal.center is not None
        want = (h.mean(dim=0) - tiny_cal.center) @ tiny_cal.vectors.T
        assert list(got) == list(EMOTIONS)
        torch.testing.assert_close(torch.tensor(list(got.values())), want, atol=1e-4, rtol=1e-4)


def test_calibration_bytes_round_trip(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    data = tiny_cal.to_bytes()
    assert data == tiny_cal.to_bytes()
    assert tiny_cal.digest == hashlib.sha256(data).hexdigest()
    back = Calibration.from_bytes(data, tiny_lm.identity)
    assert back.to_bytes() == data
    assert torch.equal(back.vectors, tiny_cal.vectors)
    assert back.center is not None and tiny_cal.center is not None
    assert torch.equal(back.center, tiny_cal.center)
    assert back.layer_scores == tiny_cal.layer_scores
    assert back.held_out_accuracy == tiny_cal.held_out_accuracy
    assert back.held_out_scores_milli() == {
        e: round(a * 1000) for e, a in tiny_cal.held_out_accuracy.items()
    }


def test_calibration_refuses_another_model(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    other = ModelIdentity(tiny_lm.identity.name, "v2", tiny_lm.identity.weights_sha256)
    with pytest.raises(CalibrationMismatchError):
        Calibration.from_bytes(tiny_cal.to_bytes(), other)
    wrong = dataclasses.replace(tiny_cal, model=other)
    with pytest.raises(CalibrationMismatchError):
        score_texts(tiny_lm, wrong, ["x"])
    with pytest.raises(CalibrationMismatchError), emotion_capture(tiny_lm, wrong):
        pass


@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"\x08" + b"\x00" * 7 + b"{}"])
def test_calibration_garbage_rejected(tiny_lm: LoadedModel, data: bytes) -> None:
    with pytest.raises(CalibrationError):
        Calibration.from_bytes(data, tiny_lm.identity)


def test_calibration_files(tmp_path: Path, tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    directory = calibration_dir(tiny_lm.identity, tmp_path)
    assert latest_calibration(tiny_lm.identity, tmp_path) is None
    first, sidecar = save_calibration(tiny_cal, directory / "a.safetensors", {"seconds": 1.5})
    summary = json.loads(sidecar.read_text())
    assert summary["sha256"] == tiny_cal.digest and summary["seconds"] == 1.5
    assert summary["layer"] == tiny_cal.layer
    assert load_calibration(first, tiny_lm.identity).to_bytes() == tiny_cal.to_bytes()
    time.sleep(0.01)
    second, _ = save_calibration(tiny_cal, directory / "b.safetensors")
    assert latest_calibration(tiny_lm.identity, tmp_path) == second
    first.write_bytes(first.read_bytes() + b" ")
    with pytest.raises(CalibrationError, match="sidecar"):
        load_calibration(first, tiny_lm.identity)


# -- emotion_capture --------------------------------------------------------------------------


def _reference_rows(
    lm: LoadedModel,
    cal: Calibration,
    prompt: tuple[str | None, str],
    answer: tuple[int, ...],
    *,
    random: bool = False,
) -> torch.Tensor:
    """Projections of `answer`'s tokens read at their own positions after the prompt: one
    unpadded forward pass over prompt + answer, no generation, no cache (onto the random
    directions instead of the emotions with `random`)."""
    from clients.probe.model import _prompt_ids

    prompt_ids = _prompt_ids(lm, prompt)
    ids = torch.tensor([prompt_ids + list(answer)])
    seen: list[torch.Tensor] = []
    with residual_hook(lm, cal.layer, seen.append), torch.inference_mode():
        lm.model(input_ids=ids)
    answer_rows = seen[0][0, len(prompt_ids) :]
    return cal.random_projections(answer_rows) if random else cal.projections(answer_rows)


def test_capture_reads_answer_tokens_only(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    lm, _ = early_stopper(tiny_lm)
    with emotion_capture(lm, tiny_cal) as cap:
        gens = generate(lm, PROMPTS, max_new_tokens=10, batch_size=5)
    rows = cap.token_projections()
    for prompt, gen, got in zip(PROMPTS, gens, rows, strict=True):
        # An answer cut off by max_new_tokens loses its last token: it is never fed back.
        n = len(gen.answer_ids) - (len(gen.answer_ids) == 10)
        assert got.shape == (n, len(EMOTIONS))
        want = _reference_rows(lm, tiny_cal, prompt, gen.answer_ids[:n])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert len(gens[0].answer_ids) == 2  # one answer ended early, padding after it was skipped


def test_capture_batched_equals_unbatched(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    lm, _ = early_stopper(tiny_lm)
    with emotion_capture(lm, tiny_cal) as cap:
        gens = generate(lm, PROMPTS, max_new_tokens=8, batch_size=3)
    batched = cap.summaries(gens)
    with emotion_capture(lm, tiny_cal) as cap1:
        gens1 = generate(lm, PROMPTS, max_new_tokens=8, batch_size=1)
    single = cap1.summaries(gens1)
    assert gens == gens1
    for a, b in zip(batched, single, strict=True):
        assert list(a) == list(EMOTIONS)
        got, want = torch.tensor(list(a.values())), torch.tensor(list(b.values()))
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
    for summary, rows in zip(batched, cap.token_projections(), strict=True):
        mean, spread = summary["calm"]
        assert mean == pytest.approx(float(rows[:, 0].mean()), abs=1e-6)
        assert spread == pytest.approx(float(rows[:, 0].std(correction=0)), abs=1e-6)


def test_capture_interpretations(tiny_lm: LoadedModel, split_cal: Calibration) -> None:
    lm, _ = early_stopper(tiny_lm)
    with emotion_capture(lm, split_cal) as cap:
        gens = generate(lm, PROMPTS, max_new_tokens=6, batch_size=3)
    summaries, readings = cap.summaries(gens), cap.interpretations(gens)
    assert split_cal.random_directions is not None
    for prompt, gen, summary, reading in zip(PROMPTS, gens, summaries, readings, strict=True):
        assert {e: r.projection for e, r in reading.items()} == pytest.approx(
            {e: m for e, (m, _) in summary.items()}, abs=1e-5
        )
        # The random baseline is the same answer tokens projected onto the random directions.
        n = len(gen.answer_ids) - (len(gen.answer_ids) == 6)
        rows = _reference_rows(lm, split_cal, prompt, gen.answer_ids[:n], random=True)
        lo, hi = torch.quantile(rows.mean(dim=0).double(), torch.tensor([0.025, 0.975]).double())
        assert reading["calm"].random_interval == pytest.approx((float(lo), float(hi)), abs=1e-4)


def test_capture_empty_answer(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    (g,) = generate(tiny_lm, [PROMPTS[3]], max_new_tokens=1)
    lm = dataclasses.replace(tiny_lm, stop_ids=(g.answer_ids[0],))
    with emotion_capture(lm, tiny_cal) as cap:
        gens = generate(lm, [PROMPTS[3]], max_new_tokens=4)
    assert gens[0].answer_ids == ()
    assert cap.summaries(gens) == [dict.fromkeys(EMOTIONS, (0.0, 0.0))]


def test_capture_checks_its_generations(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    with emotion_capture(tiny_lm, tiny_cal) as cap:
        gens = generate(tiny_lm, PROMPTS[:2], max_new_tokens=3)
        score_texts(tiny_lm, tiny_cal, ["a forward pass outside generate is not captured"])
        gens += generate(tiny_lm, PROMPTS[2:3], max_new_tokens=3)
    assert len(cap.summaries(gens)) == 3
    with pytest.raises(CaptureError):
        cap.summaries(gens[:2])
    with pytest.raises(CaptureError):
        cap.summaries(list(reversed(gens)))


def test_capture_cleans_up_on_error(tiny_lm: LoadedModel, tiny_cal: Calibration) -> None:
    layer = tiny_lm.decoder_layers()[tiny_cal.layer]
    before = len(layer._forward_hooks)
    with pytest.raises(KeyboardInterrupt), emotion_capture(tiny_lm, tiny_cal):
        assert len(tiny_lm.observers) == 1
        raise KeyboardInterrupt
    assert len(layer._forward_hooks) == before and tiny_lm.observers == []


# -- the real SmolLM2 -------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load (convert, then reuse the cache), generate, calibrate on a subset, capture, score."""
    import clients.probe.model as model_mod

    lm = load_model(cache_dir=tmp_path / "smollm2", device="cpu")
    assert (lm.num_layers, lm.hidden_size) == (30, 576)

    def no_conversion(*args: object) -> None:
        raise AssertionError("the cached copy should have been reused")

    monkeypatch.setattr(model_mod, "_convert_gguf", no_conversion)
    again = load_model(cache_dir=tmp_path / "smollm2", device="cpu")
    assert again.identity == lm.identity
    del again

    prompts = [(None, "What is the capital of France?"), (None, "Say hello in one word.")]
    stim = load_stimuli().subset(4, 2, 12)
    cal = calibrate(lm, layers=[12, 15], stimuli=stim)
    assert cal.layer in (12, 15) and cal.vectors.shape == (20, 576)
    with emotion_capture(lm, cal) as cap:
        gens = generate(lm, prompts, max_new_tokens=12)
    assert "Paris" in gens[0].text
    summaries = cap.summaries(gens)
    assert len(summaries) == 2 and all(len(s) == 20 for s in summaries)
    scores = score_texts(lm, cal, ["The train leaves at nine.", "We laughed and danced all night."])
    assert len(scores) == 2 and all(set(s) == set(EMOTIONS) for s in scores)


@pytest.mark.slow
def test_smollm2_null_baseline_and_outside(smollm2: LoadedModel) -> None:
    """On the real model: a calibration with every split, read against its null and baseline,
    and measured on a few outside scenarios it never saw."""
    from clients.probe.emotion_eval import OUTSIDE_EMOTIONS, load_outside, top1_among

    lm = smollm2
    stim = load_stimuli().subset(4, 2, 12, select=2, null=12)
    cal = calibrate(lm, layers=[15, 19], stimuli=stim)
    assert cal.method == "lda" and cal.selected_on == "select" and cal.null_source == "null"
    v = cal.validation()
    assert v.null_n == 12 and v.held_out_n == 40 and v.layer_selected_on == "select"
    rows = [r for r in load_outside() if r.id.endswith(("-01", "-02", "-03"))]
    (flat, refusal) = interpret_texts(
        lm, cal, ["The train leaves at nine.", "I can't help with that."]
    )
    for reading in (flat, refusal):
        for r in reading.values():
            lo, hi = r.neutral_interval
            assert 0.0 <= lo <= r.neutral_percentile <= hi <= 1.0
            assert r.random_interval[0] < 0.0 < r.random_interval[1]
    readings = torch.tensor(
        [list(x.values()) for x in score_texts(lm, cal, [r.text for r in rows])]
    )
    got = top1_among(readings, [r.label for r in rows], cal.emotions)
    assert got.n == 3 * len(OUTSIDE_EMOTIONS) and got.low <= got.rate <= got.high


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def small_stimuli(tmp_path: Path) -> Path:
    """2 train + 1 select + 1 held-out texts per emotion, 6 neutral and 6 null texts from the
    bundled set."""
    keep = []
    for line in stimuli_path().read_text().splitlines():
        row = json.loads(line)
        number = int(row["id"].rsplit("-", 1)[1])
        if number <= 12 if row["label"] == "neutral" else number <= 4:
            keep.append(line)
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path


def test_cli_calibrate_then_score(tmp_path: Path, tiny_dir: Path, small_stimuli: Path) -> None:
    from click.testing import CliRunner

    from clients.emotions_cmd import emotions

    runner = CliRunner()
    common = ["--model", str(tiny_dir), "--cache-dir", str(tmp_path / "cache")]
    common += ["--stimuli", str(small_stimuli)]
    texts = tmp_path / "texts.txt"
    texts.write_text("The kettle boiled.\n\nWe danced all night.\n")

    # No calibration cached yet: score makes one and says so on stderr.
    result = runner.invoke(emotions, ["score", *common, "--input", str(texts)])
    assert result.exit_code == 0, result.output
    assert "calibrating now" in result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["text"] for x in lines] == ["The kettle boiled.", "We danced all night."]
    assert all(list(x["scores"]) == list(EMOTIONS) for x in lines)
    # Each score comes with what it measures, its place in the neutral null and the random
    # baseline of the same text.
    first = lines[0]
    assert "relative to the calibration's center" in first["measures"]
    assert set(first["relative_to_neutral"]) == set(EMOTIONS)
    low, high = first["relative_to_neutral"]["calm"]["interval"]
    assert 0.0 <= low <= first["relative_to_neutral"]["calm"]["percentile"] <= high <= 1.0
    lo, hi = first["random_direction"]["interval"]
    assert lo < hi and set(first["random_direction"]["percentile"]) == set(EMOTIONS)

    out = tmp_path / "cal.safetensors"
    result = runner.invoke(emotions, ["calibrate", *common, "--out", str(out), "--n-pcs", "2"])
    assert result.exit_code == 0, result.output
    assert "held-out  top-1 accuracy" in result.stdout
    assert json.loads(out.with_suffix(".json").read_text())["n_pcs"] == 2

    result = runner.invoke(
        emotions, ["score", *common, "--input", str(texts), "--calibration", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2

    # The cached calibration is reused when no file is named.
    result = runner.invoke(emotions, ["score", *common, "--input", str(texts)])
    assert result.exit_code == 0 and "using cached calibration" in result.stderr

    # A calibration of another model is refused with a one-line diagnostic.
    result = runner.invoke(
        emotions,
        ["score", *common, "--version", "v9", "--input", str(texts), "--calibration", str(out)],
    )
    assert result.exit_code != 0 and "calibration made on" in result.output


def test_cli_evaluate(tmp_path: Path, tiny_dir: Path, small_stimuli: Path) -> None:
    from click.testing import CliRunner

    from clients.emotions_cmd import emotions
    from clients.probe.emotion_eval import FRAMINGS, TOPICS, outside_path

    outside = tmp_path / "outside.jsonl"
    rows = outside_path().read_text().splitlines()
    keep = [r for r in rows if json.loads(r)["id"].endswith(("-01", "-02"))]
    outside.write_text("\n".join(keep) + "\n")
    common = ["--model", str(tiny_dir), "--cache-dir", str(tmp_path / "cache")]
    common += ["--stimuli", str(small_stimuli), "--outside", str(outside)]
    result = CliRunner().invoke(emotions, ["evaluate", *common, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outside"]["n"] == 8 and report["chance"] == 0.25
    assert report["outside"]["top1"]["n"] == 8
    assert len(report["topic_fixed"]["answers"]) == len(TOPICS) * len(FRAMINGS)
    assert report["topic_fixed"]["rank"]["n"] == len(TOPICS) * len(FRAMINGS)

    result = CliRunner().invoke(emotions, ["evaluate", *common, "--variants"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = [v["variant"] for v in report["variants"]]
    assert report["chosen_on_select"] in names and len(names) == len(set(names)) >= 2


def test_cli_defaults_are_the_library_defaults() -> None:
    import clients.emotions_cmd as cmd
    import clients.probe.emotions as lib

    for name in ("DEFAULT_METHOD", "DEFAULT_SHRINKAGE", "DEFAULT_N_PCS"):
        assert getattr(cmd, name) == getattr(lib, name), name


def test_docs_example_runs() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "emotions.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
