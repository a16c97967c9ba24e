"""Backends: the OpenAI-compatible client against a scripted fault server on loopback, and the
local backend's identity (tokenizer, template, rendered prompt) on the tiny random model.

Faults are the ones a real server cannot be made to produce on demand (500, 429, malformed
JSON, empty choices, a truncated body, a request never answered); the real server
(llama-cpp-python serving SmolLM2) is exercised in test_openai_llama.py. Backoff sleeps are
recorded, not slept; the one test that waits for a timeout waits 0.3 s per attempt.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from attest.predicates import BackendRef, Decoding
from clients.probe.backends import (
    USER_PLACEHOLDER,
    BackendError,
    BackendUnavailableError,
    DecodingConfig,
    EndpointResponseError,
    EndpointTimeoutError,
    EndpointUnavailableError,
    LocalBackend,
    Message,
    OpenAIBackend,
    VLLMBackend,
    api_model_digest,
    public_endpoint,
    turns,
)
from clients.probe.model import LoadedModel
from tests.clients.probe.fault_server import FaultServer, fault_server

GREEDY = DecodingConfig(max_new_tokens=16, temperature=0.0, seed=7, batch_size=2)
HELLO = [turns(None, "hello")]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with fault_server() as s:
        yield s


def client(server: FaultServer, **kw: object) -> tuple[OpenAIBackend, list[float]]:
    slept: list[float] = []
    kw.setdefault("timeout_s", 5.0)
    backend = OpenAIBackend(server.url, "fault-model", sleep=slept.append, **kw)  # type: ignore[arg-type]
    return backend, slept


def test_openai_answers_with_the_decoding_asked_and_reports_the_model(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret-123")
    backend, _ = client(server, api_key_env="TEST_LLM_KEY")
    assert backend.identity().backend.endpoint_model is None, "unknown before an answer"
    convs = [turns("be brief", "one"), [Message("user", "two")]]
    gens = backend.generate(convs, GREEDY)
    assert [g.text for g in gens] == ["answer to: one", "answer to: two"]
    assert [g.finish_reason for g in gens] == ["stop", "stop"]
    assert gens[0].completion_tokens == 3 and gens[0].answer_ids is None
    sent = server.requests[0]
    assert (sent["temperature"], sent["seed"], sent["max_tokens"]) == (0.0, 7, 16)
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
    ]
    assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    ident = backend.identity()
    assert ident.backend.kind == "openai" and ident.backend.emotions == "not-observable"
    assert ident.backend.endpoint_model == "fault-model"
    assert ident.model.weights_sha256 == api_model_digest("openai", server.url, "fault-model")
    recorded = json.dumps(ident.backend.model_dump(mode="json")) + json.dumps(
        ident.model.model_dump(mode="json")
    )
    assert "sk-secret" not in recorded, "the key is never recorded"


def test_endpoint_url_is_recorded_without_credentials() -> None:
    url = "https://user:pw@api.example.org:8443/v1/?key=abc#frag"
    assert public_endpoint(url) == "https://api.example.org:8443/v1"


def test_a_missing_key_variable_is_a_clear_error(server: FaultServer) -> None:
    with pytest.raises(BackendError, match="NO_SUCH_KEY_VAR"):
        OpenAIBackend(server.url, "m", api_key_env="NO_SUCH_KEY_VAR")


def test_5xx_and_429_are_retried_with_exponential_backoff(server: FaultServer) -> None:
    server.script = ["500", "500", "429", "ok"]
    backend, slept = client(server, retries=4, backoff_s=0.5)
    [g] = backend.generate(HELLO, GREEDY)
    assert g.text == "answer to: hello" and len(server.requests) == 4
    # 0.5, 1.0 from the schedule; the 429 carried Retry-After: 0, which wins.
    assert slept[:3] == [0.5, 1.0, 0.0]


def test_an_endpoint_that_keeps_failing_names_the_status_and_attempts(server: FaultServer) -> None:
    server.default = "500"
    backend, slept = client(server, retries=2)
    with pytest.raises(EndpointUnavailableError, match=r"HTTP 500.*after 3 attempts"):
        backend.generate(HELLO, GREEDY)
    assert len(server.requests) == 3 and len(slept) == 2


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("malformed", "malformed JSON"),
        ("empty", "no choices"),
        ("nocontent", "without message content"),
    ],
)
def test_a_malformed_answer_is_refused_at_once(
    server: FaultServer, behaviour: str, message: str
) -> None:
    server.default = behaviour
    backend, _ = client(server)
    with pytest.raises(EndpointResponseError, match=message) as err:
        backend.generate(HELLO, GREEDY)
    assert len(server.requests) == 1, "a malformed answer is not retried"
    assert err.value.diagnostic.startswith(f"endpoint {server.url}")


def test_a_truncated_body_is_retried_then_named(server: FaultServer) -> None:
    server.default = "truncated"
    backend, _ = client(server, retries=1)
    with pytest.raises(EndpointResponseError, match="truncated body"):
        backend.generate(HELLO, GREEDY)
    assert len(server.requests) == 2


def test_a_truncated_body_then_a_good_one_succeeds(server: FaultServer) -> None:
    server.script = ["truncated"]
    backend, _ = client(server, retries=1)
    assert backend.generate(HELLO, GREEDY)[0].text == "answer to: hello"


def test_an_endpoint_that_never_answers_times_out(server: FaultServer) -> None:
    server.default = "hang"
    backend, _ = client(server, retries=1, timeout_s=0.3)
    with pytest.raises(EndpointTimeoutError, match=r"no answer within 0.3 s \(after 2 attempts\)"):
        backend.generate(HELLO, GREEDY)


def test_an_endpoint_that_is_down_is_named() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", retries=1, sleep=slept.append)
    with pytest.raises(EndpointUnavailableError, match="cannot reach it"):
        backend.generate(HELLO, GREEDY)


def test_an_endpoint_that_switches_models_mid_run_is_refused(server: FaultServer) -> None:
    server.script = ["ok", "other"]
    backend, _ = client(server)
    with pytest.raises(EndpointResponseError, match="switched models"):
        backend.generate([*HELLO, *HELLO], GREEDY)


def test_requests_are_spaced_by_the_rate_limit(server: FaultServer) -> None:
    backend, slept = client(server, requests_per_second=2.0)
    backend.generate([*HELLO, *HELLO, *HELLO], GREEDY)
    assert len(slept) == 2 and all(0 < s <= 0.5 for s in slept)


def test_decoding_round_trips_through_its_signed_form() -> None:
    cfg = DecodingConfig(max_new_tokens=48, temperature=0.7, seed=3, batch_size=16)
    assert cfg.wire() == Decoding(max_new_tokens=48, temperature_milli=700, seed=3, batch_size=16)
    assert DecodingConfig.from_wire(cfg.wire()) == cfg
    with pytest.raises(BackendError):
        DecodingConfig(max_new_tokens=0)


def test_vllm_without_the_package_is_a_clear_error() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match=r"behaviour-ledger\[vllm\]"):
            VLLMBackend("/nonexistent")
    else:  # pragma: no cover - only on a GPU machine with the extra
        pytest.skip("vllm is installed here")


def test_local_backend_names_tokenizer_template_and_rendered_prompt(tiny_lm: LoadedModel) -> None:
    backend = LocalBackend(tiny_lm)
    ref = backend.identity().backend
    assert isinstance(ref, BackendRef) and ref.kind == "local" and ref.emotions == "observed"
    assert (ref.device, ref.dtype) == ("cpu", "float32")
    assert ref.tokenizer_sha256 and ref.chat_template_sha256
    assert {"python", "torch", "transformers"} <= set(ref.libraries)
    rendered = backend.rendered_prompt("You assist clinicians.")
    assert rendered.startswith("<|im_start|>system\nYou assist clinicians.<|im_end|>")
    assert USER_PLACEHOLDER in rendered and rendered.endswith("<|im_start|>assistant\n")
    # Another template is another digest.
    other = LocalBackend(tiny_lm)
    saved = tiny_lm.tokenizer.chat_template
    try:
        tiny_lm.tokenizer.chat_template = saved + " "
        other = LocalBackend(tiny_lm)
    finally:
        tiny_lm.tokenizer.chat_template = saved
    assert other.identity().backend.chat_template_sha256 != ref.chat_template_sha256


def test_local_backend_batched_equals_unbatched_and_messages_equal_turns(
    tiny_lm: LoadedModel,
) -> None:
    backend = LocalBackend(tiny_lm)
    convs = [turns(None, "hi"), turns("sys", "a longer question here"), turns(None, "x")]
    one = backend.generate(convs, DecodingConfig(max_new_tokens=6, batch_size=1))
    many = backend.generate(convs, DecodingConfig(max_new_tokens=6, batch_size=3))
    assert [g.text for g in one] == [g.text for g in many]
    assert all(g.answer_ids is not None for g in many)


def test_local_sampling_is_seeded(tiny_lm: LoadedModel) -> None:
    backend = LocalBackend(tiny_lm)
    hot = DecodingConfig(max_new_tokens=8, temperature=1.0, seed=11)
    a = backend.generate(HELLO, hot)[0].text
    assert backend.generate(HELLO, hot)[0].text == a
    greedy = backend.generate(HELLO, DecodingConfig(max_new_tokens=8))[0].text
    draws = {backend.generate(HELLO, DecodingConfig(8, 1.0, s))[0].text for s in range(4)}
    assert draws - {greedy}, "sampling at temperature 1 differs from greedy for some seed"
