"""Full validation of spec files: the schema (``specs``) and then the engine rules
(``backends.validation``). The one entry point used by ``validate``, ``plan``, ``run`` and the
reconciler, so that every path reports the same located problems."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from backends.validation import check_spec
from reconciler.artifacts import DEFAULT_IMAGES
from specs.errors import SpecError, SpecProblem
from specs.loader import LoadedSpec, load_spec, load_specs_from_paths


def check_loaded(loaded: LoadedSpec) -> LoadedSpec:
    """Raise :class:`SpecError` when the engine rules reject a schema-valid spec."""
    problems = check_spec(loaded) + _backend_problems(loaded)
    if problems:
        raise SpecError(problems)
    return loaded


def _backend_problems(loaded: LoadedSpec) -> list[SpecProblem]:
    """What a backend needs from the spec that the schema cannot say alone."""
    body = loaded.spec.spec
    if body.backend.kind == "kubernetes" and not body.engine.image and body.engine.name not in DEFAULT_IMAGES:
        return [
            loaded.problem(
                ("spec", "engine", "image"),
                f"the kubernetes backend runs the engine from a container image, and {body.engine.name} "
                "has no default image: set engine.image",
            )
        ]
    return []


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
