"""The search space of a spec: named axes, their size, and the configurations in grid order.

Axis names: engine flags by their spec name, ``quant.<field>`` and ``parallel.<field>`` for the
engine-agnostic blocks (``quant.preset`` / ``parallel.preset`` when presets are searched). A
*configuration* is a flat ``dict`` from axis name to value; engines turn it into a command line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

from specs.constraints import Constraint, parse_constraint
from specs.model import PARALLEL_BOOL_FIELDS, PARALLEL_FIELDS, QUANT_FIELDS, ParamSpec, Scalar, TuningSpec

Config = dict[str, Scalar]


@dataclass(frozen=True)
class Axis:
    name: str
    #: finite values in order, or None for a continuous range
    values: tuple[Scalar, ...] | None
    param: ParamSpec | None = None

    @property
    def size(self) -> float:
        return math.inf if self.values is None else len(self.values)


def axes(spec: TuningSpec) -> list[Axis]:
    search = spec.spec.search
    out = []
    for name, p in search.parameters.items():
        grid = p.grid()
        out.append(Axis(name, tuple(grid) if grid is not None else None, p))
    if search.quantization:
        out += [Axis(f"quant.{k}", tuple(v)) for k, v in search.quantization.axes().items()]
    if search.parallel:
        out += [Axis(f"parallel.{k}", tuple(v)) for k, v in search.parallel.axes().items()]
    return out


def constraints(spec: TuningSpec) -> list[Constraint]:
    search = spec.spec.search
    names = set(search.parameters) | set(PARALLEL_FIELDS) | set(PARALLEL_BOOL_FIELDS) | set(QUANT_FIELDS)
    return [parse_constraint(c, names) for c in search.constraints]


def constraint_view(config: Config) -> dict[str, Scalar]:
    """Names as constraints use them: ``tp`` rather than ``parallel.tp``."""
    return {k.split(".", 1)[1] if k.startswith(("quant.", "parallel.")) else k: v for k, v in config.items()}


def raw_size(spec: TuningSpec) -> float:
    """Number of combinations before constraints; ``inf`` when a range is continuous."""
    return math.prod((a.size for a in axes(spec)), start=1)


def grid(spec: TuningSpec, *, limit: int | None = None) -> Iterator[Config]:
    """Configurations of a finite space in grid order that satisfy the spec's constraints.

    Continuous axes are represented by their low, middle and high values so that a planner can
    still show command lines.
    """
    ax = axes(spec)
    cons = constraints(spec)
    choices: list[tuple[Scalar, ...]] = []
    for a in ax:
        if a.values is not None:
            choices.append(a.values)
        else:
            assert a.param is not None and a.param.low is not None and a.param.high is not None
            lo, hi = a.param.low, a.param.high
            mid = math.sqrt(lo * hi) if a.param.log else (lo + hi) / 2
            choices.append((lo, round(mid, 6), hi))
    count = 0
    for combo in itertools.product(*choices):
        config = dict(zip((a.name for a in ax), combo, strict=True))
        view = constraint_view(config)
        if all(c.evaluate(view) for c in cons):
            yield config
            count += 1
            if limit is not None and count >= limit:
                return


def feasible_count(spec: TuningSpec, *, cap: int = 200_000) -> int | None:
    """Configurations left after constraints, or None when the space is continuous or too large to
    enumerate (above ``cap``)."""
    size = raw_size(spec)
    if math.isinf(size) or size > cap:
        return None
    return sum(1 for _ in grid(spec))


def _same(a: Scalar, b: Scalar) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def in_space(spec: TuningSpec, config: dict[str, Scalar]) -> bool:
    """True when ``config`` names exactly the spec's axes and each value is one the axis can take
    (a listed value, or a number inside a range on its step), so it can be told to a sampler."""
    ax = axes(spec)
    if set(config) != {a.name for a in ax}:
        return False
    for a in ax:
        v = config[a.name]
        if a.values is not None:
            if not any(_same(v, w) for w in a.values):
                return False
            continue
        p = a.param
        if p is None or p.low is None or p.high is None or isinstance(v, bool | str):
            return False
        if not p.low <= v <= p.high:
            return False
        if p.is_int and not float(v).is_integer():
            return False
    return True
