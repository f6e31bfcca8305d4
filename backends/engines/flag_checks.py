"""The flag-level checks of a spec for one table engine, located at the YAML lines: unknown or
reserved flags, values the flag table refuses, ranges a flag cannot take, a flag given twice or
also written by the ``parallel`` or ``quantization`` block.

Apart from :class:`~backends.engines.common.TableEngine` because they read the spec as written
(paths, ranges), where the pipeline reads one configuration; combination rules over the whole
search space are :func:`backends.validation.check_spec`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from backends.engines import parallel, quantization
from backends.engines.base import FlagInfo
from backends.engines.values import check_value
from specs.errors import SpecProblem
from specs.loader import LoadedSpec
from specs.model import ParamSpec
from specs.schema_problems import Path_

if TYPE_CHECKING:
    from backends.engines.common import TableEngine


def check_flags(engine: TableEngine, loaded: LoadedSpec) -> list[SpecProblem]:
    """Flag-level problems of the spec, located; combination rules are checked over the whole
    search space by ``backends.validation.check_spec``."""
    spec = loaded.spec
    body = spec.spec
    problems: list[SpecProblem] = []
    if body.backend.kind == "docker" and engine.image(spec) is None:
        problems.append(
            loaded.problem(
                ("spec", "engine", "name"),
                f"the docker backend runs an image, and {engine.title} has no official one: set engine.image",
            )
        )
    for where, message in engine.model_problems(spec):
        problems.append(loaded.problem(("spec", *where.split(".")), message))
    canonical: dict[str, list[Path_]] = {}
    for name, value in body.engine.args.items():
        path: Path_ = ("spec", "engine", "args", name)
        info = _known(engine, loaded, path, name, problems)
        if info is None:
            continue
        canonical.setdefault(info.name, []).append(path)
        problem = check_value(info, value)
        if problem is not None:
            problems.append(loaded.problem(path, problem))
    for name, param in body.search.parameters.items():
        path = ("spec", "search", "parameters", name)
        info = _known(engine, loaded, path, name, problems)
        if info is None:
            continue
        canonical.setdefault(info.name, []).append(path)
        problems += _check_param(engine, loaded, path, info, param)
    for flag, paths in canonical.items():
        for path in paths[1:]:
            problems.append(
                loaded.problem(
                    path, f"{engine.spell(flag)} is given twice (as {paths[0][-1]!r} and {path[-1]!r})"
                )
            )
    problems += _static_conflicts(engine, loaded, canonical)
    return problems


def _known(
    engine: TableEngine, loaded: LoadedSpec, path: Path_, name: str, problems: list[SpecProblem]
) -> FlagInfo | None:
    info = engine.flags.get(name)
    if info is None:
        problems.append(loaded.problem(path, engine.unknown_message(name)))
        return None
    if info.name in engine.reserved():
        problems.append(loaded.problem(path, engine.reserved_message(info.name)))
        return None
    return info


def _check_param(
    engine: TableEngine, loaded: LoadedSpec, path: Path_, info: FlagInfo, param: ParamSpec
) -> list[SpecProblem]:
    shown = engine.spell(info.name)
    if param.values is not None:
        out = []
        for i, value in enumerate(param.values):
            problem = check_value(info, value)
            if problem is not None:
                out.append(loaded.problem((*path, "values", i), problem))
        return out
    if info.type not in ("int", "float"):
        kind = {"bool": "boolean", "str": "string", "path": "path", "json": "JSON"}[info.type]
        return [
            loaded.problem(
                path, f"{shown} is a {kind} flag: a low/high range needs a number flag; list values"
            )
        ]
    if info.type == "int" and not param.is_int:
        return [loaded.problem(path, f"{shown} takes whole numbers (int): give integer low, high and step")]
    if info.choices is not None:
        grid = param.grid()
        if grid is None:
            return [loaded.problem(path, f"{shown} takes one of {list(info.choices)}: list them with values")]
        bad = [v for v in grid if check_value(info, v) is not None]
        if bad:
            return [
                loaded.problem(
                    path,
                    f"this range gives {', '.join(map(str, bad[:5]))}, which {shown} does not take "
                    f"(choices: {', '.join(map(str, info.choices))}): list the values instead",
                )
            ]
    return []


def _static_conflicts(
    engine: TableEngine, loaded: LoadedSpec, canonical: Mapping[str, list[Path_]]
) -> list[SpecProblem]:
    search = loaded.spec.spec.search
    out: list[SpecProblem] = []
    if search.parallel is not None:
        for name, flags in parallel.owned_flags(engine.name).items():
            if getattr(search.parallel, name) is None:
                continue
            for flag in flags:
                for path in canonical.get(flag, []):
                    out.append(loaded.problem(path, parallel.twice_message(flag, name)))
    if search.quantization is not None:
        for name, flags in quantization.owned_flags(engine.name, engine.variant).items():
            if getattr(search.quantization, name) is None:
                continue
            for flag in flags:
                for path in canonical.get(flag, []):
                    out.append(loaded.problem(path, quantization.twice_message(engine.flags, flag, name)))
    return out
