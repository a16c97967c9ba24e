"""clients.probe.emotions: stimulus set, calibration math, capture, files, the real model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path

import pytest
import torch

from clients.probe.emotions import (
    EMOTIONS,
    Calibration,
    CalibrationError,
    CalibrationMismatchError,
    CaptureError,
    Stimuli,
    StimuliError,
    calibrate,
    calibration_dir,
    classify,
    difference_of_means,
    emotion_capture,
    fit_layer,
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


# -- the stimulus set -------------------------------------------------------------------------


def test_emotion_list() -> None:
    assert len(EMOTIONS) >= 20 and len(set(EMOTIONS)) == len(EMOTIONS)
    assert set(REQUIRED) <= set(EMOTIONS)
    assert set(NAMED) == set(EMOTIONS)
    assert all(re.fullmatch(r"[a-z]+", e) for e in EMOTIONS)  # predicate Tokens


def test_stimulus_counts(stimuli: Stimuli) -> None:
    assert stimuli.emotions == EMOTIONS
    for e in EMOTIONS:
        assert (len(stimuli.train[e]), len(stimuli.held_out[e])) == (30, 10), e
    assert len(stimuli.neutral) >= 80
    every = [t for e in EMOTIONS for t in stimuli.train[e] + stimuli.held_out[e]]
    every += stimuli.neutral
    assert len(set(every)) == len(every)


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_no_text_names_an_emotion(stimuli: Stimuli, emotion: str) -> None:
    texts = stimuli.train[emotion] + stimuli.held_out[emotion]
    for text in texts + stimuli.neutral:
        for named, pattern in NAMED.items():
            assert not re.search(rf"\b(?:{named}|{pattern})", text, re.I), (named, text)


def test_texts_are_short(stimuli: Stimuli) -> None:
    for e in EMOTIONS:
        for text in stimuli.train[e] + stimuli.held_out[e]:
            sentences = len(re.findall(r"[.!?](?:\s|$)", text))
            assert 1 <= sentences <= 3 and len(text) <= 300, text


def test_split_is_fixed_in_the_file() -> None:
    rows = [json.loads(line) for line in stimuli_path().read_text().splitlines()]
    for row in rows:
        label, number = row["id"].rsplit("-", 1)
        assert label == row["label"]
        want = "neutral" if label == "neutral" else "held_out" if int(number) % 4 == 0 else "train"
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
        return base + 2.0 * u[e] + noise + along_w

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
    lm: LoadedModel, cal: Calibration, prompt: tuple[str | None, str], answer: tuple[int, ...]
) -> torch.Tensor:
    """Projections of `answer`'s tokens read at their own positions after the prompt: one
    unpadded forward pass over prompt + answer, no generation, no cache."""
    from clients.probe.model import _prompt_ids

    prompt_ids = _prompt_ids(lm, prompt)
    ids = torch.tensor([prompt_ids + list(answer)])
    seen: list[torch.Tensor] = []
    with residual_hook(lm, cal.layer, seen.append), torch.inference_mode():
        lm.model(input_ids=ids)
    return cal.projections(seen[0][0, len(prompt_ids) :])


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


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def small_stimuli(tmp_path: Path) -> Path:
    """3 train + 1 held-out texts per emotion and 6 neutral texts from the bundled set."""
    keep = []
    for line in stimuli_path().read_text().splitlines():
        row = json.loads(line)
        number = int(row["id"].rsplit("-", 1)[1])
        if number <= 3 or (row["label"] == "neutral" and number <= 6) or number == 4:
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


def test_docs_example_runs() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "emotions.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
