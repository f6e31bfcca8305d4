"""docs/spec-reference.md names every field of the schema (docs that match the code)."""

from __future__ import annotations

import importlib
import pkgutil
import re

from pydantic import BaseModel

from specs import model as m
from specs.model.base import StrictModel
from tests.conftest import REPO


def _models() -> list[type[BaseModel]]:
    """Every model of every section module, private bases included (their fields are the
    subclasses' too)."""
    modules = [
        importlib.import_module(f"{m.__name__}.{info.name}") for info in pkgutil.iter_modules(m.__path__)
    ]
    found = {
        v
        for mod in modules
        for v in vars(mod).values()
        if isinstance(v, type) and issubclass(v, StrictModel) and v is not StrictModel
    }
    return sorted(found, key=lambda v: (v.__module__, v.__name__))


def test_every_field_is_documented() -> None:
    text = (REPO / "docs" / "spec-reference.md").read_text()
    missing = []
    for model in _models():
        for name, info in model.model_fields.items():
            key = info.alias or name
            if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", text):
                missing.append(f"{model.__name__}.{key}")
    assert not missing, f"undocumented fields: {missing}"
