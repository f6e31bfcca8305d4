"""Per-experiment curves over load: SLO attainment, goodput, and throughput against latency.

A summary value hides how a configuration degrades: two configurations with the same peak
throughput can differ in whether they fall off a cliff one load level later. These curves show
every measured load point. With a hundred experiments a chart of a hundred lines says nothing,
so :func:`highlighted` picks the few worth drawing (the recommendation, the engine's default, the
next best) and the data table under each chart lists the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.values import Objective, metric_of, value
from specs.ranking import best
from specs.records import ExperimentRecord


@dataclass(frozen=True)
class Curve:
    record: ExperimentRecord
    load_kind: str
    loads: list[float]
    #: metric -> one value per load point (None where it was not measured)
    series: dict[str, list[float | None]]
    #: whether each load point met every hard SLO
    feasible: list[bool | None]


def curve(record: ExperimentRecord, metrics: Sequence[str]) -> Curve:
    points = sorted(record.load_points, key=lambda p: p.load_value)
    kind = points[0].load_kind if points else "concurrency"
    return Curve(
        record,
        kind,
        [p.load_value for p in points],
        {m: [metric_of(p.metrics, m, record.gpu.count) for p in points] for m in metrics},
        [p.feasible for p in points],
    )


def highlighted(
    records: Sequence[ExperimentRecord], objective: Objective, limit: int = 6
) -> list[ExperimentRecord]:
    """The recommendation first, then the engine's default, then the best others by objective."""
    measured = [r for r in records if r.state == "COMPLETE" and r.load_points]
    ids = {r.id for r in measured}
    chosen: list[ExperimentRecord] = []
    top = best(records)
    if top is not None and top.id in ids:
        chosen.append(top)
    chosen += [r for r in measured if r.baseline and all(r.id != c.id for c in chosen)][:1]

    def key(r: ExperimentRecord) -> tuple[bool, float]:
        v = value(r, objective.metric)
        score = float("-inf") if v is None else (v if objective.direction == "maximize" else -v)
        return (not bool(r.feasible), -score)

    taken = {c.id for c in chosen}
    for r in sorted(measured, key=key):
        if len(chosen) >= limit:
            break
        if r.id not in taken:
            chosen.append(r)
            taken.add(r.id)
    return chosen


def curves(records: Sequence[ExperimentRecord], metrics: Sequence[str]) -> list[Curve]:
    return [curve(r, metrics) for r in records if r.load_points]


def peak(c: Curve, metric: str) -> tuple[float, float] | None:
    """(load, value) where ``metric`` is highest among the SLO-compliant load points."""
    pairs = [
        (load, v)
        for load, v, ok in zip(c.loads, c.series.get(metric, []), c.feasible, strict=False)
        if v is not None and ok
    ]
    return max(pairs, key=lambda p: p[1]) if pairs else None


def max_compliant_load(c: Curve) -> float | None:
    """The highest load level whose point met every hard SLO."""
    ok = [load for load, f in zip(c.loads, c.feasible, strict=False) if f]
    return max(ok) if ok else None
