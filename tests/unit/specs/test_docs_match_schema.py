"""docs/spec-reference.md names every field of the schema (docs that match the code)."""

from __future__ import annotations

import re

from pydantic import BaseModel

from specs import model as m
from tests.conftest import REPO


def _models() -> list[type[BaseModel]]:
    return [
        v for v in vars(m).values() if isinstance(v, type) and issubclass(v, m._Strict) and v is not m._Strict
    ]


def test_every_field_is_documented() -> None:
    text = (REPO / "docs" / "spec-reference.md").read_text()
    missing = []
    for model in _models():
        for name, info in model.model_fields.items():
            key = info.alias or name
            if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", text):
                missing.append(f"{model.__name__}.{key}")
    assert not missing, f"undocumented fields: {missing}"
