"""Parameter effects: slices (objective against each parameter) and parallel coordinates.

Pure data; :mod:`reports.charts` draws it. Parallel coordinates are computed as positions on
normalized axes (0 = bottom, 1 = top) so that they can be drawn as ordinary SVG lines: Plotly's
own ``parcoords`` trace renders with WebGL, which headless and GPU-less browsers — the kind that
open a report on an air-gapped GPU host's jump box — often do not have.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reports.values import Objective, param_value, value
from specs.records import ExperimentRecord


@dataclass(frozen=True)
class Slice:
    param: str
    numeric: bool
    #: one entry per experiment that set the parameter and measured the objective
    xs: list[Any]
    ys: list[float]
    records: list[ExperimentRecord]
    #: median objective per distinct value, in axis order
    medians: list[tuple[Any, float]]

    @property
    def spread(self) -> float:
        """Range of the per-value medians: how much this parameter alone moves the objective."""
        ys = [m for _, m in self.medians]
        return max(ys) - min(ys) if len(ys) > 1 else 0.0


def _order(values: Sequence[Any]) -> tuple[bool, list[Any]]:
    distinct = {json.dumps(v, sort_keys=True, default=str): v for v in values}
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct.values())
    if numeric:
        return True, sorted(distinct.values())
    return False, sorted(distinct.values(), key=param_value)


def parameters(records: Sequence[ExperimentRecord]) -> list[str]:
    """Searched parameters in first-seen order, skipping those that never varied."""
    names: dict[str, set[str]] = {}
    for r in records:
        for k, v in r.config.items():
            names.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return [k for k, vals in names.items() if len(vals) > 1]


def slices(records: Sequence[ExperimentRecord], objective: Objective) -> list[Slice]:
    out = []
    for param in parameters(records):
        rows = [
            (r.config[param], y, r)
            for r in records
            if r.state == "COMPLETE" and param in r.config and (y := value(r, objective.metric)) is not None
        ]
        if not rows:
            continue
        numeric, order = _order([x for x, _, _ in rows])
        medians = []
        for v in order:
            ys = [y for x, y, _ in rows if x == v and type(x) is type(v)]
            if ys:
                medians.append((v, statistics.median(ys)))
        out.append(
            Slice(
                param,
                numeric,
                [x for x, _, _ in rows],
                [y for _, y, _ in rows],
                [r for _, _, r in rows],
                medians,
            )
        )
    return out


@dataclass(frozen=True)
class Axis:
    name: str
    numeric: bool
    #: (position in 0..1, label) of each tick
    ticks: list[tuple[float, str]]


@dataclass(frozen=True)
class Line:
    record: ExperimentRecord
    #: position on each axis, None where the experiment has no value for it
    positions: list[float | None]
    objective: float


@dataclass(frozen=True)
class Parallel:
    axes: list[Axis]
    lines: list[Line]


def parallel(records: Sequence[ExperimentRecord], objective: Objective) -> Parallel | None:
    """Parameter axes plus the objective as the last axis; None with fewer than two lines."""
    measured = [
        (r, y) for r in records if r.state == "COMPLETE" and (y := value(r, objective.metric)) is not None
    ]
    measured = [(r, y) for r, y in measured if r.config]
    params = parameters([r for r, _ in measured])
    if len(measured) < 2 or not params:
        return None
    axes: list[Axis] = []
    scales: list[dict[str, float] | tuple[float, float, bool]] = []
    for p in params:
        numeric, order = _order([r.config[p] for r, _ in measured if p in r.config])
        if numeric and len(order) > 1:
            lo, hi = float(order[0]), float(order[-1])
            use_log = lo > 0 and hi / lo >= 16  # powers of two (batch sizes) read best on a log axis
            scales.append((lo, hi, use_log))
            axes.append(Axis(p, True, [(_scale(float(v), lo, hi, use_log), param_value(v)) for v in order]))
        else:
            n = len(order)
            index = {
                json.dumps(v, sort_keys=True, default=str): (i + 0.5) / n if n > 1 else 0.5
                for i, v in enumerate(order)
            }
            scales.append(index)
            axes.append(
                Axis(p, False, [(pos, param_value(v)) for v, pos in zip(order, index.values(), strict=True)])
            )
    ys = [y for _, y in measured]
    lo_y, hi_y = min(ys), max(ys)
    axes.append(
        Axis(
            objective.metric, True, [(_scale(v, lo_y, hi_y, False), f"{v:,.0f}") for v in _ticks(lo_y, hi_y)]
        )
    )
    lines = []
    for r, y in measured:
        positions: list[float | None] = []
        for p, scale in zip(params, scales, strict=True):
            if p not in r.config:
                positions.append(None)
            elif isinstance(scale, dict):
                positions.append(scale.get(json.dumps(r.config[p], sort_keys=True, default=str)))
            else:
                positions.append(_scale(float(r.config[p]), *scale))
        positions.append(_scale(y, lo_y, hi_y, False))
        lines.append(Line(r, positions, y))
    return Parallel(axes, lines)


def _scale(v: float, lo: float, hi: float, use_log: bool) -> float:
    if hi <= lo:
        return 0.5
    if use_log:
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]
