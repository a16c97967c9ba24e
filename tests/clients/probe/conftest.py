"""Shared fixtures: a tiny random Llama (no download, no wheel) and a copy of it on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.probe.model import LoadedModel, tiny_model


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
