"""Pareto fronts over any two or three metrics, for the trade-off charts.

When the metrics are exactly the spec's objectives, the front is :func:`specs.ranking.pareto_front`
itself, so the chart marks the same configurations that ``best/pareto.json`` and ``autotuner
status`` list (ranking uses the SLO-penalized objective values stored in each record). For other
pairs (a single-objective spec plotted against its latency SLO, or per-GPU efficiency), the same
dominance test runs on the summary values, among the same rankable records (COMPLETE and within
every hard SLO): a configuration that breaks an SLO is drawn, never put on the front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.values import Objective, value
from specs.ranking import dominates, pareto_front, rankable
from specs.records import ExperimentRecord


@dataclass(frozen=True)
class Point:
    record: ExperimentRecord
    values: tuple[float, ...]
    on_front: bool
    feasible: bool


@dataclass(frozen=True)
class Front:
    objectives: tuple[Objective, ...]
    #: every COMPLETE record that has all the metrics, front members first
    points: list[Point]

    @property
    def front(self) -> list[Point]:
        """Front members, best first on the first metric."""
        members = [p for p in self.points if p.on_front]
        first = self.objectives[0]
        return sorted(members, key=lambda p: -p.values[0] if first.direction == "maximize" else p.values[0])


def _larger_is_better(values: Sequence[float], objectives: Sequence[Objective]) -> list[float]:
    return [v if o.direction == "maximize" else -v for v, o in zip(values, objectives, strict=True)]


def front(records: Sequence[ExperimentRecord], objectives: Sequence[Objective]) -> Front:
    """The records' points on ``objectives`` (2 or 3) and which of them are non-dominated."""
    objs = tuple(objectives)
    if not 1 <= len(objs) <= 3:
        raise ValueError("a Pareto front needs one to three metrics")
    points: list[tuple[ExperimentRecord, tuple[float, ...]]] = []
    for r in records:
        if r.state != "COMPLETE":
            continue
        vals = [value(r, o.metric) for o in objs]
        if all(v is not None for v in vals):
            points.append((r, tuple(float(v) for v in vals if v is not None)))
    pool = {r.id for r in rankable(records)}
    spec_objectives = _spec_objectives(records)
    if spec_objectives == objs:
        members = {r.id for r in pareto_front(records)}
    else:
        candidates = [(r, _larger_is_better(v, objs)) for r, v in points if r.id in pool]
        members = {
            r.id for r, k in candidates if not any(dominates(k2, k) for r2, k2 in candidates if r2.id != r.id)
        }
    out = [Point(r, v, r.id in members, bool(r.feasible)) for r, v in points]
    out.sort(key=lambda p: (not p.on_front, p.record.id))
    return Front(objs, out)


def _spec_objectives(records: Sequence[ExperimentRecord]) -> tuple[Objective, ...]:
    for r in records:
        if r.objectives:
            return tuple(Objective(o.metric, o.direction) for o in r.objectives)
    return ()


def per_gpu(metric: str) -> str:
    """The per-GPU counterpart of a rate metric (``output_throughput`` -> ``..._per_gpu``)."""
    if metric.endswith("_per_gpu") or not metric.endswith(("throughput", "goodput")):
        return metric
    return f"{metric}_per_gpu"


def gpu_counts_vary(records: Sequence[ExperimentRecord]) -> bool:
    return len({r.gpu.count for r in records if r.state == "COMPLETE"}) > 1
