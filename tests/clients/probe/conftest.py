"""Shared fixtures: a tiny random Llama (no download, no wheel), a copy of it on disk, the
bundled SmolLM2 where `bledger model fetch` installed it, and per module a real ledger server
and the mini suite (`support.py`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.probe.model import (
    DEFAULT_MODEL,
    LoadedModel,
    load_model,
    smollm2_gguf_path,
    tiny_model,
)
from tests.clients.probe.support import MINI_SUITE, Ledger, running_ledger


@pytest.fixture(scope="session")
def tiny_lm() -> LoadedModel:
    """A 4-layer, 64-wide random Llama with a byte-level ChatML tokenizer; share, don't mutate."""
    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_model(seed=1)` saved as a Hugging Face directory (safetensors + tokenizer)."""
    lm = tiny_model(seed=1)
    path = tmp_path_factory.mktemp("models") / "tiny-dir"
    lm.model.save_pretrained(str(path), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    """The bundled SmolLM2 on CPU, loaded once per module that asks for it (not held for the
    whole session); skips where it is not installed, fails under CI."""
    if smollm2_gguf_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install the bundled model (bledger model fetch)")
        pytest.skip("the bundled SmolLM2 is not installed (bledger model fetch)")
    return load_model(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`support.MINI_SUITE` written as a suite file, once per module."""
    path = tmp_path_factory.mktemp("suite") / "mini-1.json"
    path.write_text(json.dumps(MINI_SUITE))
    return path


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A real ledger server that admits the worker (`support.start_ledger`), one per module:
    a module's tests may read each other's entries, but never another module's."""
    with running_ledger(tmp_path_factory.mktemp("ledger")) as ledger:
        yield ledger
