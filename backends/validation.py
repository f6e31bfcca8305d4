"""Engine-level validation of a schema-valid spec: every problem, located, before anything runs.

The schema (``specs``) knows nothing about engines; this module asks the spec's engine mapping:

1. flag-level problems (:meth:`Engine.check`): unknown or misspelled flags with the closest real
   flag, values of the wrong type or outside the engine's choices, flags the autotuner owns,
   model settings the engine cannot express, a flag set both directly and by ``parallel`` /
   ``quantization``;
2. combination rules, by walking the search space: each configuration is put to
   :meth:`Engine.config_problems` (parallel rules, quantization support, GPU counts against an
   explicit ``backend.gpus``). A value every one of whose configurations is rejected is an error
   at that value's line; a space where nothing can run is an error that says how many
   combinations were tried. A value that works with *some* of the other settings is fine: the
   study skips the combinations the engine refuses.

Only the axes the rules can depend on are enumerated (quantization, parallelism, the engine
flags those rules read, and whatever the constraints name); the other axes are held at their
first value. That keeps the walk small even for large spaces, and exact, because the skipped
axes cannot change a verdict. Spaces beyond :data:`MAX_COMBINATIONS` are only checked statically.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.engines import Engine, get_engine
from specs.errors import Rejection, SpecProblem, UnsafePath
from specs.loader import LoadedSpec
from specs.model import Scalar, TuningSpec
from specs.paths import inside_roots
from specs.schema_problems import Path_
from specs.space import Axis, axes, constraint_view, constraints

#: rule-relevant combinations walked at most; above this only the static checks run
MAX_COMBINATIONS = 5000
#: longest example message quoted inside a summary
_QUOTE = 160


def check_flag_paths(loaded: LoadedSpec, roots: Sequence[Path], checkout: Path | None) -> list[SpecProblem]:
    """Engine flags whose table type is ``path`` (a tokenizer, a draft model, a download folder)
    name files the engine reads or writes as the daemon's user: like dataset paths they must
    resolve, symlinks followed, inside ``roots`` (the checkout and the operator's ``dataRoots``;
    docs/security.md). Relative values start at ``checkout``."""
    spec = loaded.spec
    engine = get_engine(spec.spec.engine.name, spec.spec.engine.variant)
    values: list[tuple[Path_, str, Scalar]] = [
        (("spec", "engine", "args", flag), flag, value) for flag, value in spec.spec.engine.args.items()
    ]
    for flag, param in spec.spec.search.parameters.items():
        values += [
            (("spec", "search", "parameters", flag, "values", i), flag, v)
            for i, v in enumerate(param.values or [])
        ]
    out: list[SpecProblem] = []
    for path, flag, value in values:
        info = engine.flags.get(flag)
        if info is None or info.type != "path" or not isinstance(value, str):
            continue
        if checkout is None and not Path(value).is_absolute() and ".." not in Path(value).parts:
            continue
        try:
            inside_roots(value, roots, base=checkout)
        except UnsafePath:
            out.append(
                loaded.problem(
                    path,
                    f"--{info.name} {value!r} resolves outside the folders a spec may use (the "
                    "repository, and dataRoots of the operator policy)",
                )
            )
    return out


def check_spec(loaded: LoadedSpec) -> list[SpecProblem]:
    """Every engine-level problem of a schema-valid spec, located with ``loaded.problem``."""
    spec = loaded.spec
    engine = get_engine(spec.spec.engine.name, spec.spec.engine.variant)
    static = engine.check(loaded)
    seen = {p.message for p in static}
    out = list(static)
    for problem in _check_space(loaded, engine):
        if problem.message not in seen:
            seen.add(problem.message)
            out.append(problem)
    return out


# --------------------------------------------------------------------------------------------- the walk


@dataclass
class _Point:
    index: tuple[int, ...]
    #: None: excluded by the constraints; []: runnable
    rejections: list[Rejection] | None


def _samples(axis: Axis) -> tuple[Scalar, ...]:
    if axis.values is not None:
        return axis.values
    param = axis.param
    assert param is not None and param.low is not None and param.high is not None
    low, high = param.low, param.high
    middle = math.sqrt(low * high) if param.log else (low + high) / 2
    if param.is_int:
        middle = round(middle)
    return (low, middle, high)


def _capacity(spec: TuningSpec) -> int | None:
    gpus = spec.spec.backend.gpus
    if isinstance(gpus, list):
        return len(gpus)
    if isinstance(gpus, int):
        return gpus
    return None


def _relevant(engine: Engine, axis: Axis, constraint_names: set[str]) -> bool:
    if axis.name.startswith(("quant.", "parallel.")):
        return True
    info = engine.flags.get(axis.name)
    if info is not None and info.name in engine.rule_flags():
        return True
    return axis.name in constraint_names


def _check_space(loaded: LoadedSpec, engine: Engine) -> list[SpecProblem]:
    spec = loaded.spec
    cons = constraints(spec)
    constraint_names = {name for c in cons for name in c.names.values()}
    every = axes(spec)
    walked = [a for a in every if _relevant(engine, a, constraint_names)]
    held = {a.name: _samples(a)[0] for a in every if a not in walked}
    choices = [_samples(a) for a in walked]
    total = math.prod(len(c) for c in choices)
    if total > MAX_COMBINATIONS:
        return []
    capacity = None if getattr(engine, "simulated", False) else _capacity(spec)
    # parallel axes first: they are what a "too many GPUs" error should point at
    gpu_fields = (
        *(a.name for a in walked if a.name.startswith("parallel.")),
        *(a.name for a in walked if _drives_gpus(engine, a) and not a.name.startswith("parallel.")),
        "backend.gpus",
    )
    points: list[_Point] = []
    for index in itertools.product(*(range(len(c)) for c in choices)):
        config = dict(held)
        config.update({a.name: choices[i][j] for i, (a, j) in enumerate(zip(walked, index, strict=True))})
        if not all(c.evaluate(constraint_view(config)) for c in cons):
            points.append(_Point(index, None))
            continue
        rejections = list(engine.config_problems(spec, config))
        if capacity is not None:
            needed = engine.gpus_for(spec, config)
            if needed > capacity:
                rejections.append(
                    Rejection(
                        f"this needs {needed} GPU{'s' if needed != 1 else ''} per experiment, but "
                        f"backend.gpus allows {capacity}",
                        gpu_fields,
                    )
                )
        points.append(_Point(index, rejections))
    return _report(loaded, walked, choices, points)


def _drives_gpus(engine: Engine, axis: Axis) -> bool:
    if axis.name.startswith("parallel."):
        return True
    info = engine.flags.get(axis.name)
    return info is not None and info.name in engine.rule_flags()


# --------------------------------------------------------------------------------------------- reporting


def _report(
    loaded: LoadedSpec,
    walked: Sequence[Axis],
    choices: Sequence[tuple[Scalar, ...]],
    points: Sequence[_Point],
) -> list[SpecProblem]:
    """Three steps, each only when the one before leaves the question open: (a) values no
    configuration can run with, (b) if nothing runs, reasons no axis is responsible for, and
    (c) the summary that the space is empty."""
    considered = [p for p in points if p.rejections is not None]
    seen: set[str] = set()
    out = _value_problems(loaded, walked, choices, considered, seen)
    if any(not p.rejections for p in considered):
        return out
    out += _shared_problems(loaded, {a.name for a in walked}, considered, seen)
    out.append(_empty_space(loaded, walked, len(points), considered, quote_example=not out))
    return out


def _value_problems(
    loaded: LoadedSpec,
    walked: Sequence[Axis],
    choices: Sequence[tuple[Scalar, ...]],
    considered: Sequence[_Point],
    seen: set[str],
) -> list[SpecProblem]:
    """(a) a value whose every configuration is rejected, for a reason that involves that value."""
    candidates: list[tuple[int, int, int, Rejection]] = []
    for ai, axis in enumerate(walked):
        for vi in range(len(choices[ai])):
            group = [p.rejections for p in considered if p.index[ai] == vi]
            if not group or any(not g for g in group):
                continue
            involved = [r for g in group for r in (g or []) if axis.name in r.fields]
            if involved:
                primary = 0 if involved[0].fields[0] == axis.name else 1
                candidates.append((primary, ai, vi, involved[0]))
    out: list[SpecProblem] = []
    for _, ai, vi, rejection in sorted(candidates, key=lambda c: (c[0], c[1], c[2])):
        if rejection.message in seen:
            continue
        seen.add(rejection.message)
        out.append(loaded.problem(_value_path(loaded.spec, walked[ai].name, vi), rejection.message))
    return out


def _shared_problems(
    loaded: LoadedSpec, names: set[str], considered: Sequence[_Point], seen: set[str]
) -> list[SpecProblem]:
    """(b) reasons shared by every configuration that no search axis is responsible for."""
    out: list[SpecProblem] = []
    if not considered:
        return out
    for rejection in considered[0].rejections or []:
        if rejection.message in seen or any(f in names for f in rejection.fields):
            continue
        if all(any(r.message == rejection.message for r in (p.rejections or [])) for p in considered):
            seen.add(rejection.message)
            path = _field_path(rejection.fields[0]) if rejection.fields else ("spec", "search")
            out.append(loaded.problem(path, rejection.message))
    return out


def _empty_space(
    loaded: LoadedSpec,
    walked: Sequence[Axis],
    total: int,
    considered: Sequence[_Point],
    *,
    quote_example: bool,
) -> SpecProblem:
    """(c) the summary: nothing in this space can run; ``quote_example`` when nothing above
    already says why."""
    excluded = total - len(considered)
    over = " × ".join(a.name for a in walked)
    of = f" of {over}" if over else ""
    if not considered:
        where: Path_ = ("spec", "search", "constraints")
        if len(loaded.spec.spec.search.constraints) == 1:
            where = (*where, 0)
        what = "the only combination" if total == 1 else f"all {total} combinations{of} tried"
        return loaded.problem(where, f"the search space is empty: the constraints exclude {what}")
    n = len(considered)
    message = "the search space is empty: " + (
        f"the only combination{of} tried is rejected by the engine rules"
        if n == 1 and not excluded
        else f"all {n} combinations{of} tried{' that the constraints allow' if excluded else ''} are "
        "rejected by the engine rules"
    )
    if excluded:
        message += f" ({excluded} more are excluded by the constraints)"
    if quote_example:
        example = next(r.message for p in considered for r in (p.rejections or []))
        if len(example) > _QUOTE:
            example = example[: _QUOTE - 3] + "..."
        message += f", e.g. {example}"
    return loaded.problem(("spec", "search"), message)


def _value_path(spec: TuningSpec, axis: str, index: int) -> Path_:
    search = spec.spec.search
    for prefix, block_name, block in (
        ("quant.", "quantization", search.quantization),
        ("parallel.", "parallel", search.parallel),
    ):
        if axis.startswith(prefix):
            name = axis.removeprefix(prefix)
            base: Path_ = ("spec", "search", block_name, name)
            return (*base, index) if isinstance(getattr(block, name, None), list) else base
    param = search.parameters.get(axis)
    base = ("spec", "search", "parameters", axis)
    if param is not None and param.values is not None:
        return (*base, "values", index)
    return base


def _field_path(where: str) -> Path_:
    """``engine.args.tp-size`` → ``("spec", "engine", "args", "tp-size")``; flag names may hold dots
    only in the last part, so the known prefixes are split off first."""
    for prefix in ("engine.args.", "model.", "backend."):
        if where.startswith(prefix):
            return ("spec", *prefix.rstrip(".").split("."), where.removeprefix(prefix))
    return ("spec", "search")


# --------------------------------------------------------------------------------------------- warnings

#: configurations walked at most for the start-up warnings
MAX_WARNING_WALK = 20_000


def startup_warnings(loaded: LoadedSpec, *, gpu: str | None = None) -> list[SpecProblem]:
    """Configurations the engine accepts as flags but would refuse at start-up, or that cannot fit
    in memory (:mod:`backends.engines.startup`): a warning, not an error, since the rest of the
    space runs and the study skips these unmeasured. One warning per spec, located at the search
    axis the first such rule names, with the share of the space it excludes."""
    from specs.space import grid

    spec = loaded.spec
    engine = get_engine(spec.spec.engine.name, spec.spec.engine.variant)
    total = 0
    refused: list[Rejection] = []
    for config in itertools.islice(grid(spec), MAX_WARNING_WALK):
        if engine.config_problems(spec, config):
            continue
        total += 1
        found = engine.startup_problems(spec, config, gpu=gpu)
        if found:
            refused.append(found[0])
    if not refused:
        return []
    first = refused[0]
    names = set(spec.spec.search.parameters)
    axis = next((f for f in first.fields if f in names), None)
    path: Path_ = ("spec", "search", "parameters", axis) if axis else ("spec", "search")
    example = first.message if len(first.message) <= 2 * _QUOTE else first.message[: 2 * _QUOTE - 3] + "..."
    return [
        loaded.problem(
            path,
            f"{len(refused)} of {total} configurations would be refused at start-up, e.g. {example}; "
            "the search skips them",
        )
    ]
