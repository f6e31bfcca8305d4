"""Comparison between generations of a spec and between engine versions.

Editing a spec starts a new study (a new *generation*); upgrading the engine usually does too.
The question after either is "did it get better?", answered per group with the same ranking the
tool uses everywhere else (:func:`specs.ranking.best`): its best SLO-compliant result, how many
experiments were within SLO, and how many failed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reports.values import Objective, value
from specs.ranking import best
from specs.records import ExperimentRecord


@dataclass(frozen=True)
class Group:
    key: str
    records: list[ExperimentRecord]
    best: ExperimentRecord | None
    best_value: float | None
    median_value: float | None
    #: raw objective values of COMPLETE records, in record order
    values: list[float]

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def feasible(self) -> int:
        return sum(bool(r.state == "COMPLETE" and r.feasible) for r in self.records)

    @property
    def failed(self) -> int:
        return sum(r.state == "FAILED" for r in self.records)


def _groups(
    records: Sequence[ExperimentRecord], key: Callable[[ExperimentRecord], str], objective: Objective
) -> list[Group]:
    order: dict[str, list[ExperimentRecord]] = {}
    for r in records:
        order.setdefault(key(r), []).append(r)
    out = []
    for k, members in order.items():
        top = best(members)
        vals = [v for r in members if r.state == "COMPLETE" and (v := value(r, objective.metric)) is not None]
        out.append(
            Group(
                k,
                members,
                top,
                value(top, objective.metric) if top is not None else None,
                statistics.median(vals) if vals else None,
                vals,
            )
        )
    return out


def by_generation(records: Sequence[ExperimentRecord], objective: Objective) -> list[Group]:
    """Groups in the order the generations first ran (oldest first)."""
    return _groups(records, lambda r: r.generation, objective)


def engine_version(r: ExperimentRecord) -> str:
    name = str(r.engine.get("name") or "engine")
    version = r.engine.get("version")
    return f"{name} {version}" if version else f"{name} (version not recorded)"


def by_engine_version(records: Sequence[ExperimentRecord], objective: Objective) -> list[Group]:
    return _groups(records, engine_version, objective)


def change(groups: Sequence[Group], objective: Objective) -> float | None:
    """Relative change of the best value from the first group to the last (positive = better)."""
    if len(groups) < 2 or groups[0].best_value is None or groups[-1].best_value is None:
        return None
    return objective.gain(groups[-1].best_value, groups[0].best_value)
