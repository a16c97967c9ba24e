"""Backends: one interface for everything that produces text (target, attacker, judge).

A `Backend` turns conversations into `BackendGeneration`s under a `DecodingConfig`, and says
what it is (`identity`: the `ModelRef` a record names and the `BackendRef` that tells a reader
how the answers were produced). Three kinds:

* `LocalBackend` — weights the worker loads with transformers (`clients.probe.model`): greedy or
  seeded sampling, batched with left padding; the only backend whose activations can be read
  (`LocalBackend.emotion_capture`), so the only one whose records carry emotion summaries.
* `OpenAIBackend` — any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp
  server, Ollama, hosted APIs) over httpx. Answers only: the worker sees no weights, template
  or activations, and the record says so. The API key is read from an environment variable the
  user names; it is sent as a bearer token and never logged, printed or recorded.
  Transient faults (HTTP 429 / 5xx, connection errors, a truncated body, no answer within the
  per-request timeout) are retried with exponential backoff; what remains raises a typed error
  whose diagnostic says what the endpoint did. Requests are spaced by an optional rate limit.
* `VLLMBackend` — weights loaded into vLLM on a GPU (optional extra ``[vllm]``, imported only
  when used; a clear `BackendUnavailableError` without it). Batched, seeded. Not exercised by
  this repository's tests (no GPU in CI).

An API model has no weights the worker can hash, so its `ModelRef.weights_sha256` is the SHA-256
of the RFC 8785 canonical JSON ``{"backend", "endpoint", "model"}`` (`api_model_digest`): it
names the endpoint identity, not weights; the record's `BackendRef.kind` says which it is.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from attest.errors import AttestError
from attest.jcs import canonicalize
from attest.predicates import BackendRef, Decoding, ModelRef

if TYPE_CHECKING:
    from clients.probe.emotions import Calibration, EmotionCapture
    from clients.probe.model import LoadedModel

__all__ = [
    "API_KEY_HEADER",
    "BACKEND_KINDS",
    "DEFAULT_TIMEOUT_S",
    "USER_PLACEHOLDER",
    "Backend",
    "BackendError",
    "BackendGeneration",
    "BackendIdentity",
    "BackendUnavailableError",
    "DecodingConfig",
    "EndpointError",
    "EndpointResponseError",
    "EndpointTimeoutError",
    "EndpointUnavailableError",
    "LocalBackend",
    "Message",
    "OpenAIBackend",
    "VLLMBackend",
    "api_model_digest",
    "library_versions",
    "public_endpoint",
    "turns",
]

BACKEND_KINDS: Final = ("local", "openai", "vllm")
"""The backend kinds `bledger probe --backend` accepts."""

DEFAULT_TIMEOUT_S: Final = 60.0
"""Per-request timeout of `OpenAIBackend`: an endpoint silent this long has timed out."""

USER_PLACEHOLDER: Final = "{user}"
"""The user message `LocalBackend.rendered_prompt` renders the chat template with."""

API_KEY_HEADER: Final = "Authorization"


class BackendError(AttestError):
    """Base class of the errors a backend raises."""


class BackendUnavailableError(BackendError):
    """The backend cannot run on this machine (e.g. vLLM not installed, no GPU)."""


class EndpointError(BackendError):
    """An OpenAI-compatible endpoint that did not give an answer (after the retries)."""


class EndpointUnavailableError(EndpointError):
    """The endpoint cannot be reached, or kept answering 429 / 5xx."""


class EndpointTimeoutError(EndpointError):
    """The endpoint accepted the request but answered nothing within the timeout."""


class EndpointResponseError(EndpointError):
    """The endpoint answered something that is not a chat completion: malformed JSON, no
    choices, no message content, a truncated body, a 4xx status, or another model's id."""


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message: `role` and `content`."""

    role: Role
    content: str

    def wire(self) -> dict[str, str]:
        """The message as chat-completions JSON and chat templates take it."""
        return {"role": self.role, "content": self.content}


def turns(system: str | None, user: str) -> tuple[Message, ...]:
    """A one-turn conversation: the optional system prompt, then the user message."""
    head = () if system is None else (Message("system", system),)
    return (*head, Message("user", user))


@dataclass(frozen=True)
class DecodingConfig:
    """How to decode: `temperature` 0 is greedy; `seed` seeds sampling; `batch_size` prompts
    share a forward pass (local, vLLM) — a replay uses the same, as left padding can move the
    last digits of a float. Requires ``max_new_tokens >= 1``, ``batch_size >= 1``,
    ``0 <= temperature <= 10``."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise BackendError("max_new_tokens and batch_size must be at least 1")
        if not 0.0 <= self.temperature <= 10.0 or self.seed < 0:
            raise BackendError("temperature must lie in [0, 10] and seed be non-negative")

    def wire(self) -> Decoding:
        """The signed form (temperature in milli-units: no float in a payload)."""
        return Decoding(
            max_new_tokens=self.max_new_tokens,
            temperature_milli=round(self.temperature * 1000),
            seed=self.seed,
            batch_size=self.batch_size,
        )

    @classmethod
    def from_wire(cls, d: Decoding) -> DecodingConfig:
        """The config a record states."""
        return cls(d.max_new_tokens, d.temperature_milli / 1000, d.seed, d.batch_size)


@dataclass(frozen=True)
class BackendGeneration:
    """One answer: its `text`, why it ended (`finish_reason`: ``stop``, ``length``, …), token
    counts where the backend reports them, and for a local model the answer's token ids (what
    `clients.probe.emotions.EmotionCapture.summaries` matches)."""

    text: str
    finish_reason: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    answer_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BackendIdentity:
    """What a record says about a backend: the model (`ModelRef`) and how it ran (`BackendRef`)."""

    model: ModelRef
    backend: BackendRef


class Backend(Protocol):
    """Anything that produces text: a target model, an attacker, a judge model."""

    def identity(self) -> BackendIdentity:
        """The model and backend a record names (for an endpoint: after the first answer, the
        model id the endpoint reported)."""

    def generate(
        self, conversations: Sequence[Sequence[Message]], config: DecodingConfig
    ) -> list[BackendGeneration]:
        """One answer per conversation, in order."""

    def close(self) -> None:
        """Release what the backend holds (connections, GPU memory)."""


def library_versions(*names: str) -> dict[str, str]:
    """``{"python": …, name: version …}`` for the installed distributions among `names`."""
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


# -- local (transformers) ---------------------------------------------------------------------


def _tokenizer_sha256(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's canonical JSON (vocabulary, merges, normalizer, …) and its
    special tokens: what turns a rendered prompt into ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body: Any = (
        json.loads(backend.to_str()) if backend is not None else {"vocab": tokenizer.get_vocab()}
    )
    specials = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    return hashlib.sha256(canonicalize({"tokenizer": body, "special": specials})).hexdigest()


class LocalBackend:
    """A transformers model loaded by the worker (`clients.probe.model.LoadedModel`)."""

    def __init__(self, lm: LoadedModel) -> None:
        import torch

        self.lm = lm
        dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
        template = lm.tokenizer.chat_template
        self._ref = BackendRef(
            kind="local",
            device=str(lm.device),
            dtype=dtype,
            tokenizer_sha256=_tokenizer_sha256(lm.tokenizer),
            chat_template_sha256=(
                hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None
            ),
            libraries=library_versions("torch", "transformers", "tokenizers"),
            emotions="observed",
        )
        self._torch = torch

    def identity(self) -> BackendIdentity:
        """The loaded weights and where they run."""
        i = self.lm.identity
        model = ModelRef(name=i.name, version=i.version, weights_sha256=i.weights_sha256)
        return BackendIdentity(model, self._ref)

    def rendered_prompt(self, system: str | None) -> str:
        """The chat template applied to `system` and the user message `USER_PLACEHOLDER`: shows
        the system prompt the model really sees (SmolLM2's template adds one when none is given)."""
        msgs = [m.wire() for m in turns(system, USER_PLACEHOLDER)]
        text: str = self.lm.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=False
        )
        return text

    def generate(
        self, conversations: Sequence[Sequence[Message]], config: DecodingConfig
    ) -> list[BackendGeneration]:
        """`clients.probe.model.generate` on the conversations (seeded; greedy at 0)."""
        from clients.probe.model import generate

        self._torch.manual_seed(config.seed)  # greedy needs no RNG; sampling gets a fixed one
        gens = generate(
            self.lm,
            [[m.wire() for m in c] for c in conversations],
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            temperature=config.temperature,
        )
        return [
            BackendGeneration(
                text=g.text,
                finish_reason="length" if len(g.answer_ids) >= config.max_new_tokens else "stop",
                prompt_tokens=g.prompt_tokens,
                completion_tokens=len(g.answer_ids),
                answer_ids=g.answer_ids,
            )
            for g in gens
        ]

    def emotion_capture(self, cal: Calibration) -> AbstractContextManager[EmotionCapture]:
        """`clients.probe.emotions.emotion_capture` on this model: projections of the answer
        tokens while `generate` runs inside."""
        from clients.probe.emotions import emotion_capture

        return emotion_capture(self.lm, cal)

    def close(self) -> None:
        """Nothing to release: the caller owns the loaded model."""


# -- OpenAI-compatible endpoints --------------------------------------------------------------


def public_endpoint(url: str) -> str:
    """`url` without user info, query or fragment: what may be recorded and printed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def api_model_digest(kind: str, endpoint: str, model: str) -> str:
    """The `ModelRef.weights_sha256` of a model behind an API: SHA-256 of the canonical JSON
    ``{"backend": kind, "endpoint": public URL, "model": model}``."""
    body = {"backend": kind, "endpoint": public_endpoint(endpoint), "model": model}
    return hashlib.sha256(canonicalize(body)).hexdigest()


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint.

    `endpoint` is the API base URL (``http://host:port/v1``); requests go to
    ``<endpoint>/chat/completions`` with ``temperature``, ``seed`` and ``max_tokens``.
    `api_key_env` names the environment variable holding the key (None: no key); the key is
    read once, sent as a bearer token, and appears in no error, log line or record.
    `timeout_s` bounds each request (connect, and each wait for bytes); `retries` is how many
    times a transient fault (429, 5xx, connection error, truncated body, timeout) is retried,
    sleeping ``backoff_s * 2**attempt`` (at most `max_backoff_s`, or the 429's Retry-After);
    `requests_per_second` spaces requests (None: no limit). `sleep` and `transport` let tests
    run the schedule without waiting and inject faults a real server cannot produce.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        version: str = "v1",
        api_key_env: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        requests_per_second: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if urlsplit(endpoint).scheme not in ("http", "https"):
            raise BackendError(f"endpoint {public_endpoint(endpoint)!r} is not an http(s) URL")
        headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise BackendError(f"environment variable {api_key_env} (the API key) is not set")
            headers[API_KEY_HEADER] = f"Bearer {key}"
        self.endpoint = public_endpoint(endpoint)
        self.model = model
        self.version = version
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._interval = 0.0 if not requests_per_second else 1.0 / requests_per_second
        self._last = 0.0
        self._lock = threading.Lock()
        self._sleep = sleep
        self._reported: str | None = None
        self._http = httpx.Client(
            base_url=endpoint.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    @property
    def reported_model(self) -> str | None:
        """The model id the endpoint reported in its answers (None before the first)."""
        return self._reported

    def identity(self) -> BackendIdentity:
        """The model as named by the user, digested with the endpoint; the reported id."""
        model = ModelRef(
            name=self.model,
            version=self.version,
            weights_sha256=api_model_digest("openai", self.endpoint, self.model),
        )
        ref = BackendRef(
            kind="openai",
            endpoint=self.endpoint,
            endpoint_model=self._reported,
            libraries=library_versions("httpx"),
            emotions="not-observable",
        )
        return BackendIdentity(model, ref)

    def generate(
        self, conversations: Sequence[Sequence[Message]], config: DecodingConfig
    ) -> list[BackendGeneration]:
        """One request per conversation, in order (the endpoint batches as it likes)."""
        return [self._complete(c, config) for c in conversations]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # -- one request, with retries

    def _complete(
        self, conversation: Sequence[Message], config: DecodingConfig
    ) -> BackendGeneration:
        body = {
            "model": self.model,
            "messages": [m.wire() for m in conversation],
            "temperature": config.temperature,
            "seed": config.seed,
            "max_tokens": config.max_new_tokens,
            "stream": False,
        }
        resp = self._post_with_retries(body)
        return self._parse(resp)

    def _pace(self) -> None:
        with self._lock:
            wait = self._last + self._interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last = time.monotonic()

    def _post_with_retries(self, body: Mapping[str, Any]) -> bytes:
        last = ""
        for attempt in range(self.retries + 1):
            self._pace()
            retry_after: float | None = None
            try:
                resp = self._http.post("/chat/completions", json=body)
                data = resp.read()
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_s:g} s"
                kind: type[EndpointError] = EndpointTimeoutError
            except httpx.RemoteProtocolError as e:
                last = f"the connection broke mid-response (truncated body: {e})"
                kind = EndpointResponseError
            except httpx.TransportError as e:
                last = f"cannot reach it ({type(e).__name__}: {e})"
                kind = EndpointUnavailableError
            else:
                if resp.status_code == 200:
                    return data
                if resp.status_code != 429 and resp.status_code < 500:
                    raise EndpointResponseError(
                        f"endpoint {self.endpoint} answered HTTP {resp.status_code}: "
                        f"{_snippet(data)}"
                    )
                last = f"HTTP {resp.status_code}: {_snippet(data)}"
                kind = EndpointUnavailableError
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            if attempt < self.retries:
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                self._sleep(delay if retry_after is None else min(retry_after, self.max_backoff_s))
        raise kind(f"endpoint {self.endpoint}: {last} (after {self.retries + 1} attempts)")

    def _parse(self, data: bytes) -> BackendGeneration:
        where = f"endpoint {self.endpoint}"
        try:
            doc = json.loads(data)
        except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
            raise EndpointResponseError(
                f"{where} answered malformed JSON ({e}): {_snippet(data)}"
            ) from e
        if not isinstance(doc, dict):
            raise EndpointResponseError(f"{where} answered JSON that is not an object")
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices:
            raise EndpointResponseError(f"{where} answered no choices (empty 'choices')")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise EndpointResponseError(f"{where} answered a choice without message content")
        reported = doc.get("model")
        if isinstance(reported, str) and reported:
            if self._reported is not None and reported != self._reported:
                raise EndpointResponseError(
                    f"{where} reported model {reported!r}, earlier answers {self._reported!r}: "
                    "it switched models mid-run"
                )
            self._reported = reported
        raw_usage = doc.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        finish = choice.get("finish_reason")
        return BackendGeneration(
            text=content,
            finish_reason=finish if isinstance(finish, str) else "unknown",
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            completion_tokens=_int_or_none(usage.get("completion_tokens")),
        )


def _snippet(data: bytes, limit: int = 120) -> str:
    text = data[:limit].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("…" if len(data) > limit else ""))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff schedule


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- vLLM -------------------------------------------------------------------------------------


class VLLMBackend:
    """Weights loaded into vLLM (GPU). Batched generation; no activations.

    `path` is a local Hugging Face directory (the worker hashes its weight files for the
    identity, as for a local model). Needs the ``[vllm]`` extra and a GPU; without them
    `BackendUnavailableError`. Not exercised by the test suite (no GPU there).
    """

    def __init__(
        self, path: str, *, version: str = "v1", dtype: str = "auto", seed: int = 0
    ) -> None:
        try:
            import vllm  # type: ignore[import-not-found]
        except ImportError as e:
            raise BackendUnavailableError(
                "the vllm backend needs the vllm package and a GPU: pip install "
                "'behaviour-ledger[vllm]' on a CUDA machine"
            ) from e
        from pathlib import Path

        from clients.probe.model import _weight_files, weights_sha256

        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise BackendError(f"vllm backend: {path!r} is not a local model directory")
        self._vllm = vllm
        self._llm = vllm.LLM(model=str(directory), dtype=dtype, seed=seed)
        self._model = ModelRef(
            name=directory.resolve().name,
            version=version,
            weights_sha256=weights_sha256(_weight_files(directory)),
        )
        self._ref = BackendRef(
            kind="vllm",
            device="cuda",
            dtype=dtype if dtype != "auto" else None,
            libraries=library_versions("vllm", "torch", "transformers"),
            emotions="not-observable",
        )

    def identity(self) -> BackendIdentity:
        """The weights vLLM loaded."""
        return BackendIdentity(self._model, self._ref)

    def generate(
        self, conversations: Sequence[Sequence[Message]], config: DecodingConfig
    ) -> list[BackendGeneration]:
        """All conversations in one `LLM.chat` call (vLLM schedules the batches)."""
        params = self._vllm.SamplingParams(
            temperature=config.temperature, seed=config.seed, max_tokens=config.max_new_tokens
        )
        outs = self._llm.chat(
            [[m.wire() for m in c] for c in conversations], params, use_tqdm=False
        )
        return [
            BackendGeneration(
                text=o.outputs[0].text,
                finish_reason=str(o.outputs[0].finish_reason),
                prompt_tokens=len(o.prompt_token_ids),
                completion_tokens=len(o.outputs[0].token_ids),
            )
            for o in outs
        ]

    def close(self) -> None:
        """Drop the engine (frees GPU memory when nothing else holds it)."""
        del self._llm
