"""Which experiments are best: the single winner, or the Pareto set when there are several
objectives. Shared by the study (``best/``), ``status`` and the report so they always agree.

Only COMPLETE experiments whose summary meets every hard SLO are ranked. Values compared are the
penalized objective values stored in each record (see :mod:`specs.slo`).
"""

from __future__ import annotations

from collections.abc import Sequence

from specs.records import ExperimentRecord


def rankable(records: Sequence[ExperimentRecord]) -> list[ExperimentRecord]:
    return [
        r
        for r in records
        if r.state == "COMPLETE"
        and r.confirms is None
        and r.feasible
        and r.objectives
        and all(o.value is not None for o in r.objectives)
    ]


def _key(r: ExperimentRecord) -> list[float]:
    """Objective values turned so that larger is better."""
    return [(o.value or 0.0) if o.direction == "maximize" else -(o.value or 0.0) for o in r.objectives]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_front(records: Sequence[ExperimentRecord]) -> list[ExperimentRecord]:
    """Non-dominated rankable records, sorted by the first objective (best first). Records with
    identical objective values are all kept."""
    pool = rankable(records)
    keys = [_key(r) for r in pool]
    front = [
        r
        for i, r in enumerate(pool)
        if not any(dominates(keys[j], keys[i]) for j in range(len(pool)) if j != i)
    ]
    return sorted(front, key=lambda r: (-_key(r)[0], r.id))


def best(records: Sequence[ExperimentRecord]) -> ExperimentRecord | None:
    """The recommendation: the best on the first objective among the Pareto set (for one
    objective, simply the best)."""
    front = pareto_front(records)
    return front[0] if front else None
