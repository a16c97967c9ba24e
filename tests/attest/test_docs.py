"""The examples in docs/data_model.md run, and the document names every predicate type."""

from __future__ import annotations

import re
from pathlib import Path

import attest.predicates
from attest._wire import WireModel
from attest.predicates import PREDICATE_TYPES

DATA_MODEL = Path(__file__).resolve().parents[2] / "docs" / "data_model.md"


def test_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DATA_MODEL.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DATA_MODEL), "exec"), {})


def test_every_predicate_type_is_documented() -> None:
    text = DATA_MODEL.read_text()
    for uri in PREDICATE_TYPES:
        assert "…/" + uri.rsplit("/", 2)[1] + "/v1" in text


def test_every_wire_field_is_documented() -> None:
    text = DATA_MODEL.read_text()
    models = [
        obj
        for obj in vars(attest.predicates).values()
        if isinstance(obj, type) and issubclass(obj, WireModel) and obj is not WireModel
    ]
    assert len(models) > len(PREDICATE_TYPES)
    for cls in models:
        for name, field in cls.model_fields.items():
            assert f"`{field.alias or name}`" in text, (cls.__name__, name)
