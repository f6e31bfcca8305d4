"""Full validation of spec files: the schema (``specs``) and then the engine rules
(``backends.validation``). The one entry point used by ``validate``, ``plan``, ``run`` and the
reconciler, so that every path reports the same located problems."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from backends.validation import check_spec
from specs.errors import SpecError
from specs.loader import LoadedSpec, load_spec, load_specs_from_paths


def check_loaded(loaded: LoadedSpec) -> LoadedSpec:
    """Raise :class:`SpecError` when the engine rules reject a schema-valid spec."""
    problems = check_spec(loaded)
    if problems:
        raise SpecError(problems)
    return loaded


def load_checked(path: str | os.PathLike[str]) -> LoadedSpec:
    return check_loaded(load_spec(path))


def check_paths(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, LoadedSpec | SpecError]]:
    out: list[tuple[Path, LoadedSpec | SpecError]] = []
    for path, result in load_specs_from_paths(paths):
        if isinstance(result, LoadedSpec):
            try:
                result = check_loaded(result)
            except SpecError as exc:
                out.append((path, exc))
                continue
        out.append((path, result))
    return out
