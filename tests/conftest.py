"""Shared fixtures: where the published vectors live, and the PostgreSQL server for tests."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
VECTORS = SHARED / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The published test vectors, read in place (never copied into the project)."""
    if not VECTORS.is_dir():
        pytest.fail(f"published vectors not found at {VECTORS}")
    return VECTORS
