"""Optimization history: each experiment's objective in the order it ran, and the best so far.

"Best so far" is :func:`specs.ranking.best` over the experiments up to that point, so the line
ends exactly at the recommendation and an SLO-violating run never raises it. Each generation of
a spec is its own study, so each gets its own best-so-far line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.values import Objective, value
from specs.ranking import best, pareto_front
from specs.records import ExperimentRecord


@dataclass(frozen=True)
class Step:
    index: int
    record: ExperimentRecord
    #: the objective's measured (raw) value, None for failed runs
    value: float | None
    #: raw value of the best record so far in this generation, None until one is feasible
    best_so_far: float | None
    best_id: str | None


def history(records: Sequence[ExperimentRecord], objective: Objective) -> list[Step]:
    steps: list[Step] = []
    # The front of a prefix plus one record is the front of (the prefix's front + that record):
    # a dominated record stays dominated. Keeping only the front makes this linear, not quadratic.
    fronts: dict[str, list[ExperimentRecord]] = {}
    for i, r in enumerate(records, start=1):
        current = pareto_front([*fronts.get(r.generation, []), r])
        fronts[r.generation] = current
        top = best(current)
        steps.append(
            Step(
                i,
                r,
                value(r, objective.metric) if r.state == "COMPLETE" else None,
                value(top, objective.metric) if top is not None else None,
                top.id if top is not None else None,
            )
        )
    return steps


def experiments_to_best(steps: Sequence[Step], generation: str) -> int | None:
    """How many experiments of ``generation`` ran before its final best was found."""
    gen = [s for s in steps if s.record.generation == generation]
    if not gen or gen[-1].best_id is None:
        return None
    final = gen[-1].best_id
    return next(i for i, s in enumerate(gen, start=1) if s.record.id == final)
