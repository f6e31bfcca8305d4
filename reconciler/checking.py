"""Full validation of spec files: the schema (``specs``) and then the engine rules
(``backends.validation``). The one entry point used by ``validate``, ``plan``, ``run`` and the
reconciler, so that every path reports the same located problems."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from backends.engines import get_engine
from backends.engines.common import TableEngine
from backends.validation import check_flag_paths, check_spec
from specs.errors import SpecError, SpecProblem
from specs.loader import LoadedSpec, load_spec, load_specs_from_paths
from specs.policy import Policy, check_policy


def check_loaded(
    loaded: LoadedSpec, *, policy: Policy | None = None, checkout: Path | None = None
) -> LoadedSpec:
    """Raise :class:`SpecError` when the engine rules reject a schema-valid spec, or, given a
    ``policy``, when the spec oversteps it (``checkout``: where its relative paths start)."""
    problems = check_spec(loaded) + _backend_problems(loaded)
    if policy is not None:
        problems += check_policy(loaded, policy, checkout=checkout)
        roots = policy.data_roots_for(checkout) if checkout is not None else policy.data_roots
        problems += check_flag_paths(loaded, roots, checkout)
    if problems:
        raise SpecError(problems)
    return loaded


def load_checked(
    path: str | os.PathLike[str], *, policy: Policy | None = None, checkout: Path | None = None
) -> LoadedSpec:
    return check_loaded(load_spec(path), policy=policy, checkout=checkout)


def _backend_problems(loaded: LoadedSpec) -> list[SpecProblem]:
    """What a backend needs from the spec that the schema cannot say alone."""
    body = loaded.spec.spec
    engine = get_engine(body.engine.name, body.engine.variant)
    image = engine.image(loaded.spec) if isinstance(engine, TableEngine) else body.engine.image
    if body.backend.kind == "kubernetes" and image is None:
        return [
            loaded.problem(
                ("spec", "engine", "image"),
                f"the kubernetes backend runs the engine from a container image, and {body.engine.name} "
                "has no default image: set engine.image",
            )
        ]
    return []


def check_paths(
    paths: Iterable[str | os.PathLike[str]], *, policy: Policy | None = None
) -> list[tuple[Path, LoadedSpec | SpecError]]:
    """Check every spec file; with a ``policy``, relative paths start at each file's repository."""
    from reconciler.cli.run import spec_base_dir

    out: list[tuple[Path, LoadedSpec | SpecError]] = []
    for path, result in load_specs_from_paths(paths):
        if isinstance(result, LoadedSpec):
            try:
                checkout = spec_base_dir(path) if policy is not None else None
                result = check_loaded(result, policy=policy, checkout=checkout)
            except SpecError as exc:
                out.append((path, exc))
                continue
        out.append((path, result))
    return out
